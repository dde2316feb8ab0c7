"""Processes of a distributed training: who this process is (:func:`world`), collective helpers, and
:func:`local_training` for what one rank trains alone. Outside ``torchrun`` every function is a no-op or answers
for one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

_local_only = 0  # depth of nested local_training() blocks


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside ``torchrun`` and inside :func:`local_training`."""
    if not _local_only and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def local_training() -> Iterator[None]:
    """Train in this process alone, with no collective calls, even under ``torchrun``: for what one
    rank trains on its own (e.g. an evaluation probe, which only rank 0 needs) while the others wait."""
    global _local_only
    _local_only += 1
    try:
        yield
    finally:
        _local_only -= 1


def is_main_process() -> bool:
    return world()[0] == 0


def init_distributed(device: torch.device | None = None) -> torch.device:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

    Returns the device this process should use (its local GPU under nccl).
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return device or default_device()
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every process (a no-op outside ``torchrun``)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes (one flat all-reduce, as DDP's reducer does)."""
    _, size = world()
    grads = [p.grad for p in params if p.grad is not None]
    if size == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_modules(modules: dict[str, torch.nn.Module]) -> None:
    """Start every rank from rank 0's weights."""
    if world()[1] == 1:
        return
    for module in modules.values():
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=0)
