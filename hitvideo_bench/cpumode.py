"""Reproducible CPU mode: on x86-64, every process caps its CPU kernels to AVX2, so that a result does not
depend on which x86-64 CPU computed it.

PyTorch picks kernels by the CPU's instruction set (ATen's vectorised loops, oneDNN's convolutions, MKL's
BLAS), and AVX-512 kernels round differently from AVX2 ones. Each library reads its cap from the environment
once, at its first kernel call, so :func:`apply`, the first thing the ``hitbench`` command does, takes effect
although torch is already imported; the processes it starts (``--jobs`` workers, torchrun ranks) inherit the
caps. On by default; off with ``HITBENCH_REPRODUCIBLE_CPU=0`` or ``hitbench run --native-cpu`` (then the
caps already in the environment, if any, are left as they are). MKL keeps its AVX2 branch on Intel CPUs only;
``HITBENCH_REPRODUCIBLE_CPU=any-vendor`` gives it the branch it keeps on every x86-64 CPU (slower). Without
effect on other architectures (ARM) and on GPU kernels. docs/running.md says what is reproducible where.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import allocator
from .switches import choice

SWITCH = "HITBENCH_REPRODUCIBLE_CPU"
#: the environment each library reads its instruction-set cap from, and the common x86-64 level
CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
#: MKL's branch under ``any-vendor``: MKL keeps a CNR branch (MKL_CBWR) on non-Intel CPUs only if it is COMPATIBLE
ANY_VENDOR_MKL = "COMPATIBLE"
INTEL = "GenuineIntel"
#: torch's kernel levels above the cap (``torch.backends.cpu.get_cpu_capability()``)
ABOVE_CAP = ("AVX512",)
LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def setting(environ: Mapping[str, str] = os.environ) -> str:
    """``HITBENCH_REPRODUCIBLE_CPU``: 1 (the default), any-vendor or 0."""
    return choice(SWITCH, {"1": "kernels capped at AVX2 on x86-64; MKL keeps its AVX2 branch on Intel CPUs only",
                           "any-vendor": f"the same with MKL at its {ANY_VENDOR_MKL} branch, which it keeps on every "
                                         "x86-64 CPU; slower matrix products",
                           "0": "the CPU's own kernels"}, environ)


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the mode is asked for (``HITBENCH_REPRODUCIBLE_CPU`` 1 or any-vendor)."""
    return setting(environ) != "0"


def caps(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The caps the mode sets, per ``HITBENCH_REPRODUCIBLE_CPU`` in ``environ``."""
    return {**CAPS, "MKL_CBWR": ANY_VENDOR_MKL} if setting(environ) == "any-vendor" else dict(CAPS)


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the caps put in when the mode is on (per ``environ``) and the CPU is x86-64, replacing
    caps set by hand: one common level is the point."""
    return {**environ, **caps(environ)} if enabled(environ) and is_x86_64() else dict(environ)


def apply() -> None:
    """Put the caps into this process's environment (see :func:`environment`); the processes it starts inherit
    them."""
    os.environ.update(environment(os.environ))


def not_in_force() -> str | None:
    """Why this process's numbers can differ from another x86-64 machine's although the mode is on: torch chose
    kernels above the cap, or MKL does not keep its branch on this CPU's vendor; None when neither."""
    import torch

    if not (enabled() and is_x86_64()):
        return None
    level = torch.backends.cpu.get_cpu_capability()
    if level in ABOVE_CAP:
        return (f"torch already chose its {level} kernels in this process before the cap was set, so its numbers "
                "can differ from an AVX2 machine's; start hitbench as a process of its own")
    vendor, branch = cpu_vendor(), os.environ.get("MKL_CBWR")
    if mkl_follows_the_cpu(vendor, branch):
        return (f"MKL keeps its {branch} branch on Intel CPUs only, so on this {vendor} CPU its matrix products "
                f"can round differently from an Intel machine's; {SWITCH}=any-vendor gives MKL its "
                f"{ANY_VENDOR_MKL} branch on every x86-64 CPU (slower matrix products; docs/running.md)")
    return None


def mkl_follows_the_cpu(vendor: str | None, branch: str | None) -> bool:
    """Whether MKL picks its own branch on a CPU of ``vendor`` under ``MKL_CBWR=branch``: it keeps a branch other
    than COMPATIBLE on Intel CPUs only (an unrecorded vendor counts as Intel's)."""
    return vendor not in (None, INTEL) and branch != ANY_VENDOR_MKL


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    """Linux ``/proc/cpuinfo``, read once a process (empty elsewhere)."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return ()


def _cpuinfo(*keys: str) -> str | None:
    """The first ``/proc/cpuinfo`` field whose name starts with one of ``keys`` (lower case)."""
    for line in _cpuinfo_lines():
        if line.lower().startswith(keys):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` knows."""
    return _cpuinfo("model name", "hardware", "cpu model") or platform.processor() or platform.machine()


def cpu_vendor() -> str | None:
    """The x86 CPU's vendor (``GenuineIntel``, ``AuthenticAMD``, ...; Linux ``/proc/cpuinfo``), None elsewhere."""
    return _cpuinfo("vendor_id")


def lock_hash() -> str | None:
    """sha256 of the requirements.lock beside the package (None when installed without it)."""
    return hashlib.sha256(LOCK.read_bytes()).hexdigest() if LOCK.exists() else None


def kernel_level(machine: dict[str, Any]) -> str:
    """What decides a CPU result's rounding: torch's kernel level, whether the mode capped the others, and MKL's
    branch where it is not the mode's AVX2 one (runs recorded before the vendor was count as Intel's)."""
    level = machine.get("cpu_capability", "unknown")
    if not machine.get("reproducible_cpu"):
        return f"{level} (native)"
    branch, vendor = (machine.get("cpu_caps") or {}).get("MKL_CBWR"), machine.get("cpu_vendor")
    if branch == ANY_VENDOR_MKL:
        return f"{level} (reproducible mode, any vendor)"
    if mkl_follows_the_cpu(vendor, branch):
        return f"{level} (reproducible mode, MKL's own branch on {vendor})"
    return f"{level} (reproducible mode)"


def machine() -> dict[str, Any]:
    """The machine a process computes on, for the manifest: CPU and its vendor, kernel level, caps in force,
    threads, lock, and whether malloc is tuned (speed only: see hitvideo_bench/allocator.py)."""
    import torch

    level = torch.backends.cpu.get_cpu_capability()
    return {"cpu": cpu_model(), "cpu_vendor": cpu_vendor(), "arch": platform.machine(), "cpu_capability": level,
            "reproducible_cpu": enabled() and is_x86_64() and level not in ABOVE_CAP,
            "cpu_caps": {name: os.environ[name] for name in CAPS if name in os.environ},
            "threads": torch.get_num_threads(), "lock_sha256": lock_hash(), "malloc_tuned": allocator.in_force()}
