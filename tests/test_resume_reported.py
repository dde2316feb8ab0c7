"""A training run that resumed from a checkpoint says so: on stderr (the run's log) and in its summary,
which the manifest gathers."""

from __future__ import annotations

from hitvideo_bench.runner import resumed_training
from test_training import run


def test_a_resumed_training_says_so_in_the_log_and_the_summary(tmp_path, capfd):
    _, straight = run(tmp_path / "a", 15)
    assert straight["resumed_from_step"] is None
    assert "resuming" not in capfd.readouterr().err
    run(tmp_path / "b", 10)  # leaves its checkpoint at step 10, as a run killed after it would
    _, resumed = run(tmp_path / "b", 15)
    assert resumed["resumed_from_step"] == 10
    assert "resuming training from the checkpoint at step 10 of 15" in capfd.readouterr().err
    summaries = {"a/seed-0": {"tokenizer": straight}, "b/seed-0": {"tokenizer": resumed, "seed": 0}}
    assert resumed_training(summaries) == {"b/seed-0": {"tokenizer": 10}}
