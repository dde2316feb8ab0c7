"""Tokenizer benchmarks: encode/decode throughput at tiny, LFQ quantise throughput, paper-preset forward.

Run: ``.venv/bin/python benchmarks/bench_tokenizer.py [--paper] [--device cpu|cuda]``. Prints a markdown
table; the figures go to benchmarks/RESULTS.md by hand, with the machine they came from.
The paper-preset forward (1x3x64x256x256, inference) runs in a child process so that its peak
resident memory is measured on its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_tiny(device: torch.device, batch: int = 8, repeats: int = 3) -> list[tuple[str, str]]:
    from hitbench_builtin.tokenizers.hitvideo import HiTVideoTokenizer, SingleLayerTokenizer

    rows = []
    video = torch.rand(batch, 3, 16, 64, 64, device=device)
    for cls in (HiTVideoTokenizer, SingleLayerTokenizer):
        torch.manual_seed(0)
        tok = cls(cls.Config.from_preset("tiny")).to(device).eval()
        with torch.no_grad():
            pyramid = tok.encode(video)
            enc = timed(lambda: tok.encode(video), repeats, device)
            dec = timed(lambda: tok.decode(pyramid), repeats, device)
        name = cls.__name__.replace("Tokenizer", "")
        rows += [(f"{name} tiny encode (16x64x64, batch {batch})", f"{batch / enc:.1f} clips/s"),
                 (f"{name} tiny decode (16x64x64, batch {batch})", f"{batch / dec:.1f} clips/s")]
        tok.train()
        step = timed(lambda: tok(video)[0].mean().backward(), 1, device)
        rows.append((f"{name} tiny forward+backward (batch {batch})", f"{step:.2f} s"))
    return rows


def bench_lfq(device: torch.device, repeats: int = 5) -> list[tuple[str, str]]:
    """The library LFQ (what the tokenizers use) against a bare sign-and-pack quantiser, inference."""
    from vector_quantize_pytorch import LFQ

    rows = []
    for dim, shape in ((12, (8, 4, 8, 8)), (18, (1, 8, 16, 16))):
        x = torch.randn(shape[0], dim, *shape[1:], device=device)
        lfq = LFQ(dim=dim, codebook_size=2 ** dim, channel_first=True).to(device).eval()
        powers = 2 ** torch.arange(dim - 1, -1, -1, device=device).view(1, -1, 1, 1, 1)

        def bare():
            return ((x > 0).long() * powers).sum(1)

        assert torch.equal(bare(), lfq(x)[1].long())
        tokens = x[:, 0].numel()
        with torch.no_grad():
            lib = timed(lambda: lfq(x), repeats, device)
            own = timed(bare, repeats, device)
        rows += [(f"LFQ quantise, vector-quantize-pytorch (d={dim}, {tokens} tokens)", f"{tokens / lib / 1e6:.1f} M tok/s"),
                 (f"sign-and-pack reference (d={dim}, same tokens)", f"{tokens / own / 1e6:.1f} M tok/s")]
    return rows


def paper_forward_child(device: str) -> None:
    """Inference forward of the paper preset on 1x3x64x256x256; prints JSON with time and peak memory."""
    from hitbench_builtin.tokenizers.hitvideo import HiTVideoTokenizer

    dev = torch.device(device)
    torch.manual_seed(0)
    tok = HiTVideoTokenizer(HiTVideoTokenizer.Config.from_preset("paper")).to(dev).eval()
    video = torch.rand(1, 3, 64, 256, 256, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.no_grad():
        sync()
        start = time.perf_counter()
        pyramid = tok.encode(video)
        sync()
        mid = time.perf_counter()
        out = tok.decode(pyramid)
        sync()
        end = time.perf_counter()
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    print(json.dumps({"encode_s": mid - start, "decode_s": end - mid, "peak_gib": peak,
                      "params_m": sum(p.numel() for p in tok.parameters()) / 1e6, "out": list(out.shape)}))


def bench_paper(device: str) -> list[tuple[str, str]]:
    proc = subprocess.run([sys.executable, __file__, "--paper-child", "--device", device],
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    what = "GPU peak allocated" if device == "cuda" else "peak RSS"
    return [(f"paper preset ({res['params_m']:.0f} M params) encode 1x3x64x256x256, {device}", f"{res['encode_s']:.1f} s"),
            (f"paper preset decode to 1x3x64x256x256, {device}", f"{res['decode_s']:.1f} s"),
            (f"paper preset inference {what}", f"{res['peak_gib']:.1f} GiB")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paper", action="store_true", help="also run the paper-preset forward (minutes on CPU)")
    parser.add_argument("--paper-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paper_child:
        paper_forward_child(args.device)
        return
    device = torch.device(args.device)
    rows = bench_tiny(device) + bench_lfq(device)
    if args.paper:
        rows += bench_paper(args.device)
    print(f"| measurement ({device}, torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
