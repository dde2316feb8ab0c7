"""Training throughput of the ar-llama generator under DDP and FSDP (``run.strategy``), through the shared trainer.

Starts ``torchrun`` once per strategy (gloo on CPU, nccl on CUDA), trains the generator at a preset's width on
random token sequences with random caption features (no text encoder loaded) for ``--steps`` steps, and times
the steps after ``--warmup`` (the final checkpoint left out). Prints a markdown table: seconds per step, tokens
per second (global batch x tokens per clip / step time), and the peak memory of one process (the largest over
processes: resident set size on CPU, ``max_memory_allocated`` on CUDA).

    .venv/bin/python benchmarks/bench_fsdp.py                      # tiny generator, 2 gloo processes on CPU
    .venv/bin/python benchmarks/bench_fsdp.py --preset paper --device cuda --nproc 8 --micro-batch 8 --batch 64

``tiny``: the tiny preset over the tiny hitvideo pyramid (332 tokens per clip, codebooks 2^12..2^6);
``paper``: the paper preset (24 layers x 3200, bf16) over Table 4's grids and codebooks (2448 tokens per clip,
5.22 B parameters), for GPUs. The execution settings are the run's (an ``Execution``, as a recipe's ``run:``
section gives them): ``--strategies``, ``--micro-batch`` and ``--grad-checkpointing`` (activation checkpointing,
default on for ``paper``, off for ``tiny``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

GRIDS = {"tiny": [(4, 8, 8), (4, 4, 4), (2, 2, 2), (1, 2, 2)],  # the tiny hitvideo tokenizer on 16x64x64 clips
         "paper": [(8, 16, 16), (4, 8, 8), (2, 8, 8), (1, 4, 4)]}  # Table 4, densest first
CODEBOOKS = {"tiny": [4096, 1024, 256, 64], "paper": [262144, 65536, 16384, 4096]}
CLIPS = {"tiny": (16, 64, 64), "paper": (64, 256, 256)}  # (T, H, W) the grids are the tokenizer's for


def pyramid(preset: str) -> SimpleNamespace:
    """The tokenizer as the generator sees it (its codebooks, its grids for the preset's clips), without building it."""
    return SimpleNamespace(codebook_sizes=CODEBOOKS[preset], token_grid_shapes=lambda t, h, w: GRIDS[preset])


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss if platform.system() == "Darwin" else rss * 1024


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun launch: train, time, report (rank 0 prints one JSON line)."""
    from hitbench_builtin.generators.ar_llama import ARLlamaGenerator, _SequenceDataset, _Task
    from hitvideo_bench.manager import get_catalog
    from hitvideo_bench.training import Execution, init_distributed, is_main_process, train, world

    device = init_distributed(torch.device(args.device))
    config = get_catalog().make_config("generator", "ar-llama", args.preset, {
        "train": {"steps": args.warmup + args.steps, "batch_size": args.batch, "warmup_steps": 0}})
    execution = Execution(strategy=args.strategy, micro_batch=args.micro_batch,
                          grad_checkpointing=grad_checkpointing(args), checkpoint_every=10 ** 6, log_every=10 ** 6)
    torch.manual_seed(0)
    with torch.device(device):
        gen = ARLlamaGenerator(config, tokenizer=pyramid(args.preset), clip_shape=CLIPS[args.preset])
    clips = max(args.batch, 16)
    g = torch.Generator().manual_seed(0)
    layers = [torch.randint(0, size, (clips, math.prod(grid)), generator=g)
              for grid, size in zip(GRIDS[args.preset], CODEBOOKS[args.preset])]
    order = gen.layout()[0]  # coarse to fine
    tokens = torch.cat([layers[i] for i in order], dim=1)
    feats = torch.randn(clips, config.text_len, gen.text_proj.in_features, generator=g).to(device)
    mask = torch.ones(clips, config.text_len, dtype=torch.bool, device=device)
    task = _Task(gen, feats, mask, _SequenceDataset(tokens, torch.arange(clips)))
    ends: list[tuple[int, float]] = []
    step_fn = task.training_step

    def timed(batch, step, trainer):
        logs = step_fn(batch, step, trainer)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ends.append((step, time.perf_counter()))
        return logs

    task.training_step = timed
    with tempfile.TemporaryDirectory() as folder:
        train(task, task.data, config.train, workdir=Path(folder) / "work", device=device, seed=0, progress=False,
              execution=execution)
    last = {step: t for step, t in ends}  # the end of each step's last micro-batch
    seconds = (last[args.warmup + args.steps - 1] - last[args.warmup - 1]) / args.steps
    peak = torch.tensor(_peak_memory_bytes(device), dtype=torch.float64)
    if world()[1] > 1:
        peak = peak.to(device)
        torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
    if is_main_process():
        per_clip = tokens.shape[1]
        print(json.dumps({"strategy": args.strategy, "processes": world()[1], "device": device.type,
                          "preset": args.preset, "params": sum(p.numel() for p in gen.parameters()),
                          "batch": args.batch, "micro_batch": args.micro_batch,
                          "grad_checkpointing": execution.grad_checkpointing, "tokens_per_clip": per_clip,
                          "s_per_step": seconds, "tokens_per_s": args.batch * per_clip / seconds,
                          "peak_bytes": int(peak.item())}), flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def grad_checkpointing(args: argparse.Namespace) -> bool:
    """``--grad-checkpointing`` as given, else on for the paper preset (as its runs train), off for tiny."""
    return args.preset == "paper" if args.grad_checkpointing is None else args.grad_checkpointing


def launch(args: argparse.Namespace, strategy: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           __file__, "--worker", "--strategy", strategy, "--preset", args.preset, "--device", args.device,
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--grad-checkpointing" if grad_checkpointing(args) else "--no-grad-checkpointing",
           *(("--micro-batch", str(args.micro_batch)) if args.micro_batch else ())]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{strategy} run failed:\n{proc.stderr[-4000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="global batch (train.batch_size)")
    parser.add_argument("--micro-batch", type=int, default=None, help="run.micro_batch (default: none)")
    parser.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="run.grad_checkpointing (default: on for --preset paper, off for tiny)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--strategies", default="ddp,fsdp")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = [launch(args, strategy) for strategy in args.strategies.split(",")]
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    print(f"{rows[0]['preset']} ar-llama ({rows[0]['params'] / 1e6:.2f} M parameters, {rows[0]['tokens_per_clip']} "
          f"tokens per clip), global batch {args.batch}, {args.nproc} processes on {args.device} "
          f"({'gloo' if args.device == 'cpu' else 'nccl'}, {threads} thread(s) each), activation checkpointing "
          f"{'on' if rows[0]['grad_checkpointing'] else 'off'}, torch {torch.__version__}\n")
    print("| strategy | micro-batch | s / step | tokens / s | peak memory per process |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['strategy']} | {row['micro_batch'] or 'none'} | {row['s_per_step']:.3f} | "
              f"{row['tokens_per_s']:.0f} | {row['peak_bytes'] / 2 ** 20:.0f} MiB |")


if __name__ == "__main__":
    main()
