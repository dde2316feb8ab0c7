"""Metric throughput (clips/s) on tiny clips on this machine, and the overhead of the BenchMetric wrapper.

Run: ``.venv/bin/python benchmarks/bench_metrics.py``. Prints a markdown table. LPIPS and the probe are
timed with randomly initialised stand-in networks of the real architectures (timing only: no score from
them is meaningful). The wrapper overhead compares ``metric.update`` + ``compute`` with calling the
underlying library function directly on the same frames (target <= 10%).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins"))

from pytorch_msssim import ssim as lib_ssim  # noqa: E402

import hitvideo_bench as hb  # noqa: E402
from hitbench_builtin.metrics.lpips_metric import LPIPS  # noqa: E402
from hitbench_builtin.metrics.pixel import frames_of  # noqa: E402
from hitbench_builtin.metrics.probe import Probe, ProbeConfig, ProbeFD, ProbeNet  # noqa: E402

CLIPS, SHAPE = 8, (16, 64, 64)


def best_of(fn, repeat: int = 3) -> float:
    """Fastest of ``repeat`` runs (seconds), after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best(a, b, rounds: int = 9) -> tuple[float, float]:
    """Fastest time of ``a`` and of ``b``, run alternately so that machine load hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(ta), min(tb)


def run_metric(make, pred, target):
    def go():
        metric = make()
        metric.update(pred=pred, target=target)
        metric.compute()
    return go


def main() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(CLIPS, 3, *SHAPE, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    import lpips

    torch.manual_seed(0)
    lpips_net = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False)
    probe = Probe(ProbeNet(), ProbeConfig(), {"heldout_accuracy": {"all": float("nan")}})

    def probe_fd():
        metric = ProbeFD()
        metric._probe = probe  # timing only: an untrained probe of the real architecture
        return metric

    rows = []
    for name, make in [("psnr", lambda: hb.create_metric("psnr")), ("ssim", lambda: hb.create_metric("ssim")),
                       ("ms-ssim", lambda: hb.create_metric("ms-ssim")),
                       ("lpips (alex, stand-in weights)", lambda: LPIPS(network=lpips_net)),
                       ("probe-fd (untrained stand-in)", probe_fd)]:
        seconds = best_of(run_metric(make, pred, target))
        rows.append(f"| {name} | {CLIPS / seconds:.1f} |")

    def direct_psnr():  # the same per-frame PSNR computed by hand on the same video tensors
        mse = (pred.double() - target.double()).pow(2).mean(dim=(1, 3, 4))
        (10 * torch.log10(1.0 / mse.clamp(min=1e-10))).mean()

    def direct_ssim():  # the library on the same video tensors (frames laid out as it needs them)
        lib_ssim(frames_of(pred), frames_of(target), data_range=1.0, size_average=False, win_size=11,
                 win_sigma=1.5).double().mean()

    overhead = []
    for name, direct in (("psnr", direct_psnr), ("ssim", direct_ssim)):
        metric = hb.create_metric(name)

        def wrapped_call(metric=metric):
            metric.reset()
            metric.update(pred=pred, target=target)
            metric.compute()

        wrapped, bare = interleaved_best(wrapped_call, direct)
        overhead.append(f"| {name} | {bare * 1e3:.1f} | {wrapped * 1e3:.1f} | {100 * (wrapped / bare - 1):+.1f}% |")

    print(f"Metric throughput on {CLIPS} clips of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} "
          f"({torch.get_num_threads()} CPU threads)\n")
    print("| metric | clips/s |\n|---|---|")
    print("\n".join(rows))
    print("\nBenchMetric wrapper overhead (reset + update + compute vs the library call; target <= 10%)\n")
    print("| metric | direct ms | wrapped ms | overhead |\n|---|---|---|---|")
    print("\n".join(overhead))


if __name__ == "__main__":
    main()
