"""Codec isolation: a codec whose encode segfaults on one clip and hangs on another costs those two clips, not the
run; both are reported with their reason, the others are measured, and the run's log says where it crashed."""

from __future__ import annotations

import pandas as pd
import pytest

from hitvideo_bench.cli import main
from hitvideo_bench.isolation import IsolatedWorker, WorkerFailed, exit_reason
from hitbench_fixture_plugin import FixtureCrashCodec, FixtureCrashConfig

pytestmark = pytest.mark.usefixtures("fixture_plugin")

RECIPE = """\
version: 1
recipe: fixture-crash
seeds: [0]
dataset: {name: fixture-noise, config: {val_clips: 6}, eval_clips: 6}
evaluate: {reconstruction: [fixture-mae], batch_size: 3}
variants:
  plain: {codec: {name: fixture-quantize}}
  crashy: {codec: {name: fixture-crash, config: {segfault_clip: 1, hang_clip: 4, time_limit_s: 1.5}}}
table: {columns: [fixture-mae, clips, clips_failed]}
"""


def test_a_segfault_and_a_hang_cost_their_clips_and_the_rest_is_measured(tmp_path):
    recipe = tmp_path / "crash.yaml"
    recipe.write_text(RECIPE)
    assert main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = next((tmp_path / "out" / "fixture-crash").iterdir())
    metrics = pd.read_csv(out / "metrics.csv").set_index(["variant", "metric"])["value"]
    assert metrics["crashy", "clips"] == 4 and metrics["crashy", "clips_failed"] == 2
    per_clip = pd.read_csv(out / "per_clip.csv")
    crashy = per_clip[per_clip.variant == "crashy"].set_index("clip")["value"]
    plain = per_clip[per_clip.variant == "plain"].set_index("clip")["value"]
    assert list(crashy.index) == [0, 2, 3, 5]  # the clips keep their numbers: paired with the plain variant's
    pd.testing.assert_series_equal(crashy, plain[[0, 2, 3, 5]])
    assert metrics["crashy", "fixture-mae"] == pytest.approx(crashy.mean())
    reasons = pd.read_csv(out / "metrics.csv").set_index(["variant", "metric"])["text"]["crashy", "clips_failed"]
    assert "clip 1: compress: the worker was killed by SIGSEGV; retried in a fresh worker: compress: the " \
           "worker was killed by SIGSEGV" in reasons
    assert "clip 4: compress used more than 1.5 s of CPU time (the worker was killed)" in reasons
    assert "crashy/seed-0: values cover the clips measured; 2 failed" in (out / "table.md").read_text()
    log = (out / "logs" / "crashy-seed-0.log").read_text()
    assert "crashy/seed-0: reconstruction: clips 0-2" in log
    assert "Fatal Python error: Segmentation fault" in log
    crash = log.index("Fatal Python error: Segmentation fault")
    assert "in compress" in log[crash:]  # the worker's Python stack at the crash, after where the run was
    assert "in compress" in log[log.index("reconstruction: clips 3-5"):]  # the hung worker's stack before its kill


def test_an_exception_in_the_worker_is_raised_as_it_was_not_retried():
    codec = FixtureCrashCodec(FixtureCrashConfig(fail=True))
    import torch

    with IsolatedWorker(codec) as worker, pytest.raises(RuntimeError, match="fixture-quantize asked to fail"):
        worker.call("compress", torch.rand(1, 3, 4, 16, 16), limit_s=30)
    with pytest.raises(TypeError, match="cannot run isolated: it does not pickle"):
        IsolatedWorker(lambda: None)
    assert exit_reason(-11) == "the worker was killed by SIGSEGV" and exit_reason(3) == "the worker exited with status 3"
    assert isinstance(WorkerFailed("x"), Exception)
