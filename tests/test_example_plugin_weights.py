"""The worked example's metric weights as a user meets them: the pip-installed plugin's file is listed with
its distribution, imported, and then listed as present (the entry-point route, not -p)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_example_plugin import ROOT, site  # noqa: F401 (the example pip-installed into its own folder)
from test_weights_plugins import FILE, fixture_projection

#: pip-installs the example package and starts hitbench (and torch) in subprocesses
pytestmark = pytest.mark.slow


def hitbench(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:  # noqa: F811
    """``hitbench ARGS`` with the installed example, this checkout's built-ins and empty weight caches."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "plugins")]),
           "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_CACHE": str(tmp_path / "hf")}
    return subprocess.run([sys.executable, "-m", "hitvideo_bench", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def test_installed_plugin_declares_its_weights_to_hitbench_weights(site, tmp_path):  # noqa: F811
    listing = hitbench(site, tmp_path, "weights")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("example-projection "))
    assert "MISSING" in lines[at]
    assert "declared: by plugin example (hitbench-example-plugin 0.1.0)" in "\n".join(lines[at:at + 5])
    assert "declared: by plugin builtin (hitvideo-bench" in listing.stdout

    source = tmp_path / "downloads" / FILE
    fixture_projection(source)
    imported = hitbench(site, tmp_path, "weights", "--import", str(source))
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "torch" / "hub" / "checkpoints" / FILE).read_bytes() == source.read_bytes()
    assert "example-projection present" in hitbench(site, tmp_path, "weights").stdout
    blocked = hitbench(site, tmp_path, "-p", "no:example", "weights")
    assert blocked.returncode == 0 and "example-projection" not in blocked.stdout
