"""Shared test set-up: the reproducible CPU mode, an isolated component cache, the bundled real clip, one CPU
thread."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from hitvideo_bench import cpumode

# before any kernel runs, as the hitbench command does: a test's numbers are those of every x86-64 CPU with
# AVX2 (HITBENCH_REPRODUCIBLE_CPU=0 runs the suite at the host's own kernel level)
cpumode.apply()

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT / "examples" / "clips"  # the real clip bundled with the project (see its README)
TESTS = Path(__file__).resolve().parent


def pytest_configure(config):
    # trained components from tests never land in (or come from) the user's cache
    config._hitbench_cache = tempfile.mkdtemp(prefix="hitbench-test-cache-")
    os.environ["HITBENCH_CACHE"] = config._hitbench_cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SVT_LOG", "1")
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_hitbench_cache", ""), ignore_errors=True)


@pytest.fixture
def shared_clip() -> Path:
    """The real Big Buck Bunny clip bundled in examples/clips/."""
    return CLIPS / "bigbuckbunny.mp4"


@pytest.fixture
def fixture_plugin():
    """The test fixture plugin (tests/hitbench_fixture_plugin.py) loaded for one test and unloaded after it
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("fixture_plugin")``)."""
    from hitvideo_bench.manager import get_plugins

    get_plugins(["hitbench_fixture_plugin"])
    yield
    get_plugins([])


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty component cache for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("HITBENCH_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one intra-op thread is faster, and immune to oversubscribed shared CPUs
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
