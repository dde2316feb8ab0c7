"""Sampling speed of the ar-llama generator: KV-cache vs recomputing the prefix, and the cost of CFG.

Builds an (untrained) generator at a preset's width over a pyramid of given grids and codebooks
(default: the paper's Table 4 grids, 2448 tokens, with the tiny tokenizer's codebooks 2^12..2^6;
``--codebooks 262144,65536,16384,4096`` gives the paper's), samples one clip per
prompt greedily with the KV-cache and by recomputing the whole prefix at every step, checks that
both give the same tokens, then samples with CFG (conditional + unconditional streams in one
batch). Prints a markdown table: seconds per clip, tokens/s, peak memory, speed-up.

    .venv/bin/python benchmarks/bench_sampling.py                       # tiny width, 2448 tokens, CPU
    .venv/bin/python benchmarks/bench_sampling.py --grids 2x8x8,1x4x4,1x2x2 --codebooks 1024,256,64
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import sys
import time
from types import SimpleNamespace

import torch

from hitbench_builtin.generators.ar_llama import ARLlamaConfig, ARLlamaGenerator

PAPER_GRIDS = "8x16x16,4x8x8,2x8x8,1x4x4"  # SPEC Table 4, densest first: 2048 + 256 + 128 + 16 = 2448 tokens
PAPER_CODEBOOKS = "262144,65536,16384,4096"
TINY_CODEBOOKS = "4096,1024,256,64"  # the tiny hitvideo tokenizer


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if platform.system() == "Darwin" else 2**10)


def _run(gen: ARLlamaGenerator, prompts: list[str], device: torch.device, **kwargs) -> tuple[torch.Tensor, float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    feats, mask = gen.encode_text(prompts, device)  # encoded outside the timing: same for every mode
    start = time.perf_counter()
    tokens = gen.generate(feats, mask, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return tokens.cpu(), time.perf_counter() - start, _peak_memory_mb(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
    ap.add_argument("--grids", default=PAPER_GRIDS, help="per-layer TxHxW token grids, densest first")
    ap.add_argument("--codebooks", default=TINY_CODEBOOKS,
                    help=f"per-layer codebook sizes, densest first (paper Table 4: {PAPER_CODEBOOKS}; at tiny width "
                         "on a CPU the 2^18-way head then dominates every step, cached or not)")
    ap.add_argument("--batch", type=int, default=1, help="prompts sampled together")
    ap.add_argument("--cfg-scale", type=float, default=3.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave as is)")
    ap.add_argument("--skip-uncached", action="store_true", help="skip the slow recompute-the-prefix run")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grids = [tuple(int(v) for v in g.split("x")) for g in args.grids.split(",")]
    sizes = [int(s) for s in args.codebooks.split(",")]
    if len(grids) != len(sizes) or any(len(g) != 3 for g in grids):
        raise SystemExit("--grids and --codebooks need one TxHxW grid and one size per layer")
    torch.manual_seed(0)
    config = ARLlamaConfig.from_preset(args.preset)
    tokens_of = SimpleNamespace(codebook_sizes=list(sizes), token_grid_shapes=lambda t, h, w: grids)  # as it sees them
    gen = ARLlamaGenerator(config, tokens_of, clip_shape=(0, 0, 0)).to(device).eval()
    n_tokens = sum(math.prod(g) for g in grids)
    prompts = [f"a big red circle moves left on a blue background {i}" for i in range(args.batch)]
    params = sum(p.numel() for p in gen.parameters())

    gen.generate(*gen.encode_text(prompts[:1], device), temperature=0.0)  # warm-up (kernels, allocator)
    rows = []
    cached, t_cached, mem_cached = _run(gen, prompts, device, temperature=0.0, use_cache=True)
    rows.append(("KV-cache, greedy", 1, t_cached, mem_cached))
    uncached = None
    if not args.skip_uncached:
        uncached, t_full, mem_full = _run(gen, prompts, device, temperature=0.0, use_cache=False)
        rows.append(("recompute prefix, greedy", 1, t_full, mem_full))
    _, t_cfg, mem_cfg = _run(gen, prompts, device, temperature=0.0, use_cache=True, guide=True,
                             cfg_scale=args.cfg_scale)
    rows.append((f"KV-cache, greedy, CFG {args.cfg_scale:g}", 2, t_cfg, mem_cfg))
    _, t_samp, mem_samp = _run(gen, prompts, device, temperature=1.0, top_k=100, top_p=0.95, seed=0,
                               use_cache=True, guide=True, cfg_scale=args.cfg_scale)
    rows.append((f"KV-cache, top-k 100 / top-p 0.95, CFG {args.cfg_scale:g}", 2, t_samp, mem_samp))

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"ar-llama `{args.preset}` width {config.hidden_size}, {config.num_layers} layers, {params / 1e6:.1f} M "
          f"parameters; {n_tokens} tokens per clip (grids {args.grids}, codebooks {args.codebooks}); "
          f"batch {args.batch}; device {device} ({threads} threads); torch {torch.__version__}, "
          f"python {sys.version.split()[0]}\n")
    mem_kind = "peak CUDA MiB" if device.type == "cuda" else "process peak RSS MiB"
    print(f"| mode | streams per prompt | s per clip | tokens/s | {mem_kind} |")
    print("|---|---|---|---|---|")
    for name, streams, seconds, mem in rows:
        print(f"| {name} | {streams} | {seconds / args.batch:.2f} | {n_tokens * args.batch / seconds:.0f} | {mem:.0f} |")
    print()
    if uncached is not None:
        print(f"KV-cache speed-up over recomputing the prefix: {t_full / t_cached:.1f}x; "
              f"same greedy tokens: {torch.equal(cached, uncached)}")
    print(f"CFG overhead (guided / plain, both cached, greedy): {t_cfg / t_cached:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
