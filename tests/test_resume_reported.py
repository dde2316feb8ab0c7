"""A training run that resumed from a checkpoint says so: on stderr (the run's log) and in its summary,
which the manifest gathers."""

from __future__ import annotations

import pytest

from hitvideo_bench.runner import resumed_training
from test_training import FixtureTask, run


def test_a_resumed_training_says_so_in_the_log_and_the_summary(tmp_path, capfd):
    _, straight = run(tmp_path / "a", 15)
    assert straight["resumed_from_step"] is None
    assert "resuming" not in capfd.readouterr().err
    original = FixtureTask.training_step

    def crash_at_12(self, batch, step, trainer):
        if step == 12:
            raise KeyboardInterrupt
        return original(self, batch, step, trainer)

    FixtureTask.training_step = crash_at_12
    try:
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "b", 15)
    finally:
        FixtureTask.training_step = original
    _, resumed = run(tmp_path / "b", 15)
    assert resumed["resumed_from_step"] == 10  # the last checkpoint before the crash
    assert "resuming training from the checkpoint at step 10 of 15" in capfd.readouterr().err
    summaries = {"a/seed-0": {"tokenizer": straight}, "b/seed-0": {"tokenizer": resumed, "seed": 0}}
    assert resumed_training(summaries) == {"b/seed-0": {"tokenizer": 10}}
