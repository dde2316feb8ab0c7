"""hitbench-example-plugin: a patch tokenizer with binary codes, trained by hitbench's shared trainer."""
