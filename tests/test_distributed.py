"""Data-parallel training under torchrun (gloo on CPU) matches a single process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_fixture_worker.py")


def run_worker(out: Path, nproc: int) -> dict[str, torch.Tensor]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out / "final.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    single = run_worker(tmp_path / "one", 1)
    double = run_worker(tmp_path / "two", 2)
    for k in single:
        # gradients are averaged over ranks instead of over one batch: equal up to float summation order
        torch.testing.assert_close(double[k], single[k], rtol=1e-4, atol=1e-5)
    assert (tmp_path / "two" / "work" / "checkpoint" / "weights.safetensors").exists()
