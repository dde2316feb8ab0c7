"""Registration: the only hook this plugin needs."""

from hitvideo_bench import hookimpl


@hookimpl
def hitbench_register_components(catalog):
    # a "module:Class" string: the model is imported only when a recipe uses it
    catalog.add("tokenizer", "patch-binary", "hitbench_example.tokenizer:PatchBinaryTokenizer",
                description="example plugin: 1x4x4 patches -> binary codes (LFQ-style), one layer", version="1")
