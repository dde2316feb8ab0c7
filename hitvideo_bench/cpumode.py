"""Reproducible CPU mode: on x86-64, every process caps its CPU kernels to AVX2, so that a result does not
depend on which x86-64 CPU computed it.

PyTorch picks kernels by the CPU's instruction set (ATen's vectorised loops, oneDNN's convolutions, MKL's
BLAS), and AVX-512 kernels round differently from AVX2 ones. Each library reads its cap from the environment
once, at its first kernel call, so :func:`apply`, the first thing the ``hitbench`` command does, takes effect
although torch is already imported; the processes it starts (``--jobs`` workers, torchrun ranks) inherit the
caps. On by default; off with ``HITBENCH_REPRODUCIBLE_CPU=0`` or ``hitbench run --native-cpu`` (then the
caps already in the environment, if any, are left as they are). Without effect on other architectures (ARM)
and on GPU kernels. docs/running.md says what is reproducible where.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import allocator
from .switches import switch

SWITCH = "HITBENCH_REPRODUCIBLE_CPU"
#: the environment each library reads its instruction-set cap from, and the common x86-64 level
CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
#: torch's kernel levels above the cap (``torch.backends.cpu.get_cpu_capability()``)
ABOVE_CAP = ("AVX512",)
LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the mode is asked for (``HITBENCH_REPRODUCIBLE_CPU``: 1, the default, or 0)."""
    return switch(SWITCH, "kernels capped at AVX2 on x86-64", "the CPU's own kernels", environ)


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the caps put in when the mode is on (per ``environ``) and the CPU is x86-64, replacing
    caps set by hand: one common level is the point."""
    return {**environ, **CAPS} if enabled(environ) and is_x86_64() else dict(environ)


def apply() -> None:
    """Put the caps into this process's environment (see :func:`environment`); the processes it starts inherit
    them."""
    os.environ.update(environment(os.environ))


def not_in_force() -> str | None:
    """Why torch in this process runs kernels above the cap although the mode is on; None when it does not."""
    import torch

    level = torch.backends.cpu.get_cpu_capability()
    if enabled() and is_x86_64() and level in ABOVE_CAP:
        return (f"torch already chose its {level} kernels in this process before the cap was set, so its numbers "
                "can differ from an AVX2 machine's; start hitbench as a process of its own")
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def lock_hash() -> str | None:
    """sha256 of the requirements.lock beside the package (None when installed without it)."""
    return hashlib.sha256(LOCK.read_bytes()).hexdigest() if LOCK.exists() else None


def kernel_level(machine: dict[str, Any]) -> str:
    """What decides a CPU result's rounding: torch's kernel level, and whether the mode capped the others."""
    mode = "reproducible mode" if machine.get("reproducible_cpu") else "native"
    return f"{machine.get('cpu_capability', 'unknown')} ({mode})"


def machine() -> dict[str, Any]:
    """The machine a process computes on, for the manifest: CPU, kernel level, caps in force, threads, lock, and
    whether malloc is tuned (speed only: see hitvideo_bench/allocator.py)."""
    import torch

    level = torch.backends.cpu.get_cpu_capability()
    return {"cpu": cpu_model(), "arch": platform.machine(), "cpu_capability": level,
            "reproducible_cpu": enabled() and is_x86_64() and level not in ABOVE_CAP,
            "cpu_caps": {name: os.environ[name] for name in CAPS if name in os.environ},
            "threads": torch.get_num_threads(), "lock_sha256": lock_hash(), "malloc_tuned": allocator.in_force()}
