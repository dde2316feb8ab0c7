"""glibc malloc tuned for training loops: freed tensor memory is reused instead of faulted in afresh, the weights a
training gives do not change, the switch, and training turns it on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from hitvideo_bench import allocator
from hitvideo_bench.errors import BadInput

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning sets glibc's malloc thresholds")

#: a training step's pattern: several 8 MB buffers and one of 40 MB (glibc maps a block over 32 MiB on its own), all
#: freed at the step's end; prints whether the tuning is in force, then the minor page faults of the steps after
#: the first
FAULTS = """
import resource, torch
from hitvideo_bench import allocator
print(allocator.apply())
def step():
    buffers = [torch.ones(2_000_000) for _ in range(8)] + [torch.ones(10_000_000)]
    del buffers
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

#: a short training of the tiny hitvideo tokenizer (batch 2, 4 steps: all its layers in); prints the sha256 of its
#: weights and whether the manifest says malloc was tuned (the training tunes it)
TRAIN = """
import hashlib, tempfile, torch
import hitvideo_bench as hb
from hitvideo_bench import cpumode
torch.set_num_threads(1)
torch.manual_seed(0)
tok = hb.create_tokenizer("hitvideo", preset="tiny", train={"steps": 4, "batch_size": 2})
data = hb.create_dataset("synthetic-shapes", preset="tiny", split="train", train_clips=8)
tok.fit(data, workdir=tempfile.mkdtemp(), device="cpu", seed=0, progress=False)
digest = hashlib.sha256()
for name, tensor in sorted(tok.state_dict().items()):
    digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
print(digest.hexdigest(), cpumode.machine()["malloc_tuned"])
"""


def run_python(code: str, tune: str) -> list[str]:
    env = {**os.environ, allocator.SWITCH: tune, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@glibc_only
def test_tuned_malloc_reuses_freed_tensor_memory_and_the_default_faults_it_in_again():
    tuned_on, tuned_faults = run_python(FAULTS, "1")
    default_on, default_faults = run_python(FAULTS, "0")
    assert (tuned_on, default_on) == ("True", "False")
    # a step's buffers span about 25,400 pages of 4 KiB. Measured over 10 steps: with glibc's defaults 115,000 to
    # 254,000 faults (the memory goes back to the kernel every step); tuned 0, or about 9,800 on some address layouts
    # (the heap grows once more, for the 40 MB block); keeping only the blocks under 32 MiB (a fixed mmap threshold)
    # left about 99,600 (the 40 MB block faulted in every step)
    step_pages = (8 * 8_000_000 + 40_000_000) // 4096
    assert int(tuned_faults) < step_pages, f"tuned, the freed buffers are reused: {tuned_faults} faults"
    assert int(default_faults) > 2 * step_pages, f"glibc's defaults give the memory back: {default_faults} faults"


@glibc_only
def test_training_tunes_malloc_and_trains_the_same_weights_as_without():
    (tuned_weights, tuned), (default_weights, default) = run_python(TRAIN, "1"), run_python(TRAIN, "0")
    assert (tuned, default) == ("True", "False")
    assert tuned_weights == default_weights


def test_the_switch_is_1_or_0(monkeypatch):
    monkeypatch.setenv(allocator.SWITCH, "yes")
    with pytest.raises(BadInput, match=r"HITBENCH_TUNE_MALLOC='yes'.*allowed values are 1 .* and 0"):
        allocator.enabled()
    monkeypatch.setenv(allocator.SWITCH, "0")
    assert not allocator.enabled()
    monkeypatch.delenv(allocator.SWITCH)
    assert allocator.enabled()
