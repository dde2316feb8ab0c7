"""glibc malloc tuned for training loops: freed tensor memory stays in the process for the next step.

PyTorch's CPU tensors come straight from malloc. With glibc's defaults a training step's buffers are returned to the
kernel when freed (the heap's top trimmed, blocks of 32 MiB and more always unmapped) and faulted in afresh, zeroed,
on the next step: at tiny a tokenizer step spent about a tenth of its CPU time so, a generator step (its logits over
the 4096 codes are 32 MiB) 12-21 % (benchmarks/RESULTS.md). :func:`apply` sets malloc's options (``mallopt``):
every block comes from the heap, none from a mapping of its own, and up to 1 GiB of free heap is kept. Numbers do not
change (PyTorch aligns every buffer to 64 bytes either way); a process's memory stays at its peak instead of
shrinking between steps. On by default in the ``hitbench`` command and in training; ``HITBENCH_TUNE_MALLOC=0`` leaves
glibc's defaults. Without effect where the C library is not glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from .switches import switch

SWITCH = "HITBENCH_TUNE_MALLOC"
#: mallopt's parameter numbers (glibc's malloc.h) and the values set
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
SETTINGS = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 1 << 30}

_applied: bool | None = None


def enabled() -> bool:
    """Whether the tuning is asked for (``HITBENCH_TUNE_MALLOC``: 1, the default, or 0)."""
    return switch(SWITCH, "keep freed memory for the next step", "glibc's own malloc options")


def apply() -> bool:
    """Set the options once per process when enabled and on glibc; whether they are in force."""
    global _applied
    if _applied is None:
        _applied = False
        if enabled() and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _applied = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _applied


def in_force() -> bool:
    """Whether :func:`apply` has tuned this process's malloc (for the manifest)."""
    return _applied is True
