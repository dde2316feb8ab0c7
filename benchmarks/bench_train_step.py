"""One ar-llama training step against a bare transformers ``LlamaForCausalLM`` of the same width, depth and
sequence length.

``ours``: the generator's own training task (text prefix, 3D RoPE, per-layer heads and weighted cross-entropies,
caption dropout) on the tiny hitvideo pyramid (332 tokens after a 24-token text prefix and the start slot), one
AdamW step. ``llama``: ``LlamaForCausalLM`` with the same hidden size, layers, heads and FFN, a vocabulary the
size of all codebooks together, on a 357-token sequence (its standard 1D RoPE, one head), one AdamW step. Both
in fp32 with dropout as configured for ours (the bare model: none). Prints seconds per step (median of
``--steps`` after ``--warmup``); pair the two with a whole-process timer for a ratio:

    .venv/bin/python benchmarks/bench_train_step.py --impl ours
    .venv/bin/python benchmarks/bench_train_step.py --impl llama
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch
from transformers import LlamaForCausalLM

from hitbench_builtin.generators.ar_llama import ARLlamaConfig, ARLlamaGenerator

GRIDS = [(4, 8, 8), (4, 4, 4), (2, 2, 2), (1, 2, 2)]  # the tiny hitvideo pyramid, densest first: 332 tokens
CODEBOOKS = [4096, 1024, 256, 64]


def ours(batch: int):
    tokens_of = SimpleNamespace(codebook_sizes=CODEBOOKS, token_grid_shapes=lambda t, h, w: GRIDS)  # as it sees them
    gen = ARLlamaGenerator(ARLlamaConfig.from_preset("tiny"), tokens_of, clip_shape=(16, 64, 64))
    task = gen.training_task(None, torch.device("cpu"), shapes_only=True)
    example = task.example_batch(batch, GRIDS)
    example["tokens"] = torch.cat([torch.randint(0, s, (batch, n)) for s, n in
                                   zip(CODEBOOKS[::-1], [4, 8, 64, 256])], dim=1)  # coarse-to-fine order
    task.feats = torch.randn_like(task.feats)
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)

    class Step:  # the trainer's part of a step: backward and the optimiser
        @staticmethod
        def autocast():
            return torch.autocast("cpu", enabled=False)

        @staticmethod
        def step(loss, group="main"):
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return lambda: task.training_step(example, 0, Step), gen.config, sum(p.numel() for p in gen.parameters())


def llama(batch: int, config: ARLlamaConfig):
    lc = config.llama_config()
    lc.vocab_size = sum(CODEBOOKS)
    model = LlamaForCausalLM(lc)
    seq = config.text_len + 1 + sum(t * h * w for t, h, w in GRIDS)
    ids = torch.randint(0, lc.vocab_size, (batch, seq))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["ours", "llama"], required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    step, config, params = ours(args.batch)
    if args.impl == "llama":
        step, params = llama(args.batch, config)
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    print(f"{args.impl}: {params / 1e6:.2f} M parameters, batch {args.batch}, "
          f"{statistics.median(times):.3f} s per step (median of {args.steps}; min {min(times):.3f}, "
          f"max {max(times):.3f})")


if __name__ == "__main__":
    main()
