"""Which strategy, number of GPUs and micro-batch make a component fit an 80 GB GPU."""

from __future__ import annotations



from .estimate import MemoryEstimate, TrainingTrace, gib, per_gpu_batch

# ------------------------------------------------------------------------------------------ what fits

#: the GPU :func:`fit_advice` fits components on (80 GB, as an H100 or A100 80GB has)
GPU_BYTES = 80 * 10 ** 9
#: the largest number of GPUs :func:`fit_advice` tries
MAX_GPUS = 64


def fit_advice(trace: TrainingTrace, world_size: int) -> str:
    """Which strategy, number of GPUs and micro-batch make the component fit an 80 GB GPU (its estimate's
    :attr:`~MemoryEstimate.peak_bytes`): the configured settings if they fit, else the first that does, trying
    ``world_size`` GPUs then twice as many up to :data:`MAX_GPUS`, the configured strategy before the other, and the
    largest micro-batch (a power of two, or the whole share) that fits."""
    train = trace.train
    current = trace.estimate(world_size=world_size)
    setting = _setting(current)
    if current.peak_bytes <= GPU_BYTES:
        return f"fits 80 GB as configured ({setting}; ~{gib(current.peak_bytes)} GiB at peak)"
    worlds = [world_size * 2 ** k for k in range(8)
              if world_size * 2 ** k <= min(MAX_GPUS, train.batch_size)] or [world_size]
    configured = trace.execution.strategy
    strategies = [configured] + [s for s in ("ddp", "fsdp") if s != configured]
    for world in worlds:
        share = per_gpu_batch(train.batch_size, world)
        micro = sorted({2 ** k for k in range(share.bit_length()) if 2 ** k <= share} | {share})
        for strategy in strategies:
            fitting = _largest_fitting(trace, world, strategy, micro)
            if fitting is not None:
                return (f"fits 80 GB with: {_setting(fitting)} (run.strategy {strategy}, run.micro_batch "
                        f"{fitting.micro_batch or share}; ~{gib(fitting.peak_bytes)} GiB at peak)")
    return (f"does not fit 80 GB: not with ddp or fsdp over up to {worlds[-1]} GPUs at micro-batch 1 "
            f"({setting} needs ~{gib(current.peak_bytes)} GiB at peak)")


def _setting(estimate: MemoryEstimate) -> str:
    gpus = f"{estimate.world_size} GPU" + ("s" if estimate.world_size > 1 else "")
    return f"{estimate.strategy} over {gpus}, micro-batch {estimate.micro_batch or estimate.batch}"


def _largest_fitting(trace: TrainingTrace, world: int, strategy: str, micro: list[int]) -> MemoryEstimate | None:
    """The estimate at the largest of the ascending ``micro`` batches that fits (bisection: activations grow with
    the micro-batch), or None."""
    def at(m: int) -> MemoryEstimate:
        return trace.estimate(world_size=world, strategy=strategy, micro_batch=m)

    if at(micro[0]).peak_bytes > GPU_BYTES:
        return None
    lo, hi = 0, len(micro) - 1  # micro[lo] fits; find the last that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at(micro[mid]).peak_bytes <= GPU_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return at(micro[lo])
