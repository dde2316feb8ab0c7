"""The worked example in examples/: a third-party tokenizer package installs, is listed, trains through
the shared trainer and runs through a recipe, all as a user would do it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: every test here pip-installs the example package and starts hitbench (and torch) in a subprocess
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hitbench-example-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package pip-installed into its own folder (the project's venv stays untouched)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)], check=True,
                   capture_output=True)
    return target


def hitbench(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HITBENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "hitvideo_bench", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


def test_installed_plugin_is_listed_with_its_distribution(site, tmp_path):
    proc = hitbench(site, tmp_path, "ls", "tokenizer")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if "patch-binary" in line)
    assert "hitbench-example-plugin 0.1.0" in line
    blocked = hitbench(site, tmp_path, "-p", "no:example", "ls", "tokenizer")
    assert "patch-binary" not in blocked.stdout


def test_plugin_tokenizer_trains_and_runs_through_its_recipe(site, tmp_path):
    proc = hitbench(site, tmp_path, "run", str(EXAMPLE / "recipe.yaml"), "--out", str(tmp_path / "out"),
                    "--quiet", "--set", "dataset.eval_clips=2",
                    "--set", "variants.patch-binary.tokenizer.config.train.steps=20",
                    "--set", "variants.patch-binary-masked.tokenizer.config.base.config.train.steps=20")
    assert proc.returncode == 0, proc.stderr
    assert "patch-binary" in proc.stdout and "x264" in proc.stdout
    import hitvideo_bench as hb

    out_dir = Path(proc.stdout.strip().splitlines()[-1].split("results: ")[1])
    df = hb.load_results(out_dir)
    psnr = df[(df.metric == "psnr") & (df.variant == "patch-binary")]["value"].item()
    bpp = df[(df.metric == "bpp") & (df.variant == "patch-binary")]["value"].item()
    assert bpp == pytest.approx(8 / 16)  # 8 bits per 4x4 patch
    assert psnr > 12  # trained, not random: a random decoder sits far below
    cached = list((tmp_path / "cache" / "tokenizer").glob("patch-binary-*"))
    assert len(cached) == 1 and (cached[0] / "COMPLETE").exists()
    # dynamic encoding over the plugin's tokenizer: its learned fill trained, fewer bits than the base
    masked = df[df.variant == "patch-binary-masked"].set_index("metric")["value"]
    assert masked["fill_train_steps"] == 10 and masked["bpp"] < bpp and masked["psnr"] > 10
