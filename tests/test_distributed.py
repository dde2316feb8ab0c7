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


def python_path() -> str:
    """The tests folder, then the caller's own path (so that the workers import the code under test)."""
    return os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])


def run_worker(out: Path, nproc: int) -> dict[str, torch.Tensor]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path()}
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


RECIPE = """\
version: 1
recipe: ddp-fixture
dataset: {name: fixture-noise, config: {frames: 16, height: 32, width: 32, train_clips: 4, val_clips: 2}, eval_clips: 2}
evaluate: {reconstruction: [fixture-mae], batch_size: 2}
run: {checkpoint_every: 1, log_every: 1}
variants:
  codec: {codec: {name: fixture-quantize}}
  tokenizer:
    tokenizer:
      name: hitvideo
      config: {channels: 8, z_channels: 16, quant_dims: [6, 5, 4, 3], disc_channels: 8,
               train: {steps: 2, batch_size: 2}}
"""


@pytest.mark.slow
def test_a_recipe_runs_and_resumes_under_torchrun(tmp_path):
    """hitbench run --nproc 2: a codec variant (nothing to train) beside a trained tokenizer, then a
    re-run that reuses both finished runs: every rank must call the same collectives in both."""
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path(),
           "HITBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "hitvideo_bench", "-p", "hitbench_fixture_plugin", "run", str(recipe),
           "--nproc", "2", "--device", "cpu", "--out", str(tmp_path / "out"), "--quiet"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused finished runs: codec/seed-0, tokenizer/seed-0" in second.stdout
