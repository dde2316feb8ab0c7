"""The shared trainer: deterministic order, bit-identical resume, schedules, EMA, atomic checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hitvideo_bench import training
from hitvideo_bench.training import Execution, StepBatches, TrainConfig, TrainingTask, lr_factor, train


class FixtureClips(torch.utils.data.Dataset):
    """Fixture: 12 random 'clips' whose target is a fixed linear map of the input."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 3, 2, 4, 4, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"video": self.x[i], "caption": f"clip {i}", "attrs": {}}


class FixtureTask(TrainingTask):
    """Fixture task: a conv with dropout (so the global RNG matters) fits x -> 0.5 x."""

    def __init__(self):
        self.net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 1), torch.nn.Dropout(0.2), torch.nn.Conv3d(8, 3, 1))

    def modules(self):
        return {"net": self.net}

    def param_groups(self):
        return {"main": list(self.net.parameters())}

    def training_step(self, batch, step, trainer):
        with trainer.autocast():
            loss = (self.net(batch["video"]) - 0.5 * batch["video"]).pow(2).mean()
        trainer.step(loss, "main")
        return {"mse": loss.item()}


def run(tmp_path, steps, cfg=None, seed=0):
    torch.manual_seed(123)  # the task's initial weights
    task = FixtureTask()
    cfg = cfg or TrainConfig(steps=steps, batch_size=4, lr=1e-2, warmup_steps=2)
    summary = train(task, FixtureClips(), cfg.model_copy(update={"steps": steps}), workdir=tmp_path,
                    device="cpu", seed=seed, progress=False, execution=Execution(checkpoint_every=5, log_every=1))
    return task.net.state_dict(), summary


def test_training_reduces_the_loss_and_checkpoints(tmp_path):
    _, summary = run(tmp_path, 20)
    assert summary["losses"][-1]["mse"] < summary["losses"][0]["mse"] * 0.5
    assert (tmp_path / "checkpoint" / "weights.safetensors").exists()
    assert set(load_file(str(tmp_path / "checkpoint" / "weights.safetensors"))) == \
        {f"net.{k}" for k in FixtureTask().net.state_dict()}
    assert not list(tmp_path.glob(".checkpoint*"))  # no temporary folders left behind


def run_killed_at_step_12_then_resumed(folder, steps, cfg=None):
    """Train to ``steps``, killed at step 12 (after the step-10 checkpoint, mid-way to the next), then resumed."""
    original = FixtureTask.training_step

    def crash_at_12(self, batch, step, trainer):
        if step == 12:
            raise KeyboardInterrupt
        return original(self, batch, step, trainer)

    FixtureTask.training_step = crash_at_12
    try:
        with pytest.raises(KeyboardInterrupt):
            run(folder, steps, cfg)
    finally:
        FixtureTask.training_step = original
    return run(folder, steps, cfg)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight, _ = run(tmp_path / "a", 15)
    resumed, summary = run_killed_at_step_12_then_resumed(tmp_path / "b", 15)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert [p["step"] for p in summary["losses"]] == list(range(1, 16))


def test_the_summary_gives_wall_and_cpu_time_summed_over_a_resume(tmp_path, monkeypatch, one_thread):
    """CPU time counts the work done in steps, not time spent waiting: a step that sleeps 20 ms and burns 20 ms of
    CPU gives about half as much CPU as wall time; a resumed run adds the part before the kill. One thread: no idle
    worker thread spins on the CPU clock."""
    import time

    original = FixtureTask.training_step

    def sleep_and_burn(self, batch, step, trainer):
        time.sleep(0.02)
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        return original(self, batch, step, trainer)

    monkeypatch.setattr(FixtureTask, "training_step", sleep_and_burn)
    _, straight = run(tmp_path / "a", 15)
    assert 15 * 0.04 <= straight["seconds"] and 15 * 0.02 <= straight["cpu_seconds"] < straight["seconds"] - 15 * 0.015
    _, resumed = run_killed_at_step_12_then_resumed(tmp_path / "b", 15)
    # steps 0-9 before the kill (checkpointed at 10) plus 10-14 after it
    assert 15 * 0.02 <= resumed["cpu_seconds"] and 15 * 0.04 <= resumed["seconds"]


def test_a_different_seed_gives_a_different_result(tmp_path):
    a, _ = run(tmp_path / "a", 5, seed=0)
    b, _ = run(tmp_path / "b", 5, seed=1)
    assert not torch.equal(a["0.weight"], b["0.weight"])


def test_batches_depend_only_on_seed_and_step():
    full = list(StepBatches(10, 4, seed=3, start=0, steps=9))
    later = list(StepBatches(10, 4, seed=3, start=5, steps=9))
    assert later == full[5:]
    assert sorted(sum(full[:2], [])) == sorted(set(sum(full[:2], [])))  # no repeats within an epoch
    assert all(len(b) == 4 for b in full)


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.55)


def test_ema_weights_are_kept_at_the_end(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=4, lr=1e-2, ema=0.5)
    with_ema, _ = run(tmp_path / "ema", 10, cfg)
    without, _ = run(tmp_path / "plain", 10, cfg.model_copy(update={"ema": None}))
    assert not torch.equal(with_ema["0.weight"], without["0.weight"])


def test_eval_fn_builds_a_curve(tmp_path):
    torch.manual_seed(0)
    task = FixtureTask()
    cfg = TrainConfig(steps=6, batch_size=4, eval_every=3)
    summary = train(task, FixtureClips(), cfg, workdir=tmp_path, device="cpu", seed=0, progress=False,
                    eval_fn=lambda step: {"psnr": float(step)})
    assert summary["curve"] == [{"step": 3, "psnr": 3.0}, {"step": 6, "psnr": 6.0}]


def test_unknown_group_is_a_clear_error(tmp_path):
    class Bad(FixtureTask):
        def training_step(self, batch, step, trainer):
            trainer.step(self.net(batch["video"]).mean(), "disc")

    with pytest.raises(KeyError, match="disc"):
        train(Bad(), FixtureClips(), TrainConfig(steps=1), workdir=tmp_path, device="cpu", seed=0, progress=False)


def test_training_works_inside_a_no_grad_block(tmp_path):
    torch.manual_seed(0)
    task = FixtureTask()
    with torch.no_grad():
        summary = train(task, FixtureClips(), TrainConfig(steps=2, batch_size=4), workdir=tmp_path, device="cpu",
                        seed=0, progress=False)
    assert summary["steps"] == 2


def test_local_training_hides_the_process_group(monkeypatch):
    """Under torchrun a rank that trains alone (the evaluation probe on rank 0) must make no collective call."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert training.world() == (1, 2)
    with training.local_training():
        assert training.world() == (0, 1)
        assert len(StepBatches(8, 4, seed=0, start=0, steps=1).batch(0)) == 4  # the whole batch, not a share
    assert training.world() == (1, 2)


def test_ema_update_weighs_the_old_average_by_decay():
    """Kills: swapping ``decay`` and ``1 - decay`` in Trainer.update_ema (a decay of 0.9 tells them apart)."""
    torch.manual_seed(123)
    task = FixtureTask()
    trainer = training.Trainer(task, TrainConfig(steps=2, batch_size=4, lr=1e-1, ema=0.9), torch.device("cpu"))
    batch = training.collate_videos([FixtureClips()[i] for i in range(4)])
    expected = {k: v.clone() for k, v in trainer.ema.items()}
    for step in range(2):
        task.training_step(batch, step, trainer)
        trainer.update_ema()
        for k, v in trainer._state().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v
    for k, v in expected.items():
        torch.testing.assert_close(trainer.ema[k], v)
    assert not torch.allclose(trainer.ema["net.0.weight"], task.net.state_dict()["0.weight"])


def test_resume_with_ema_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    """Kills: not restoring ``ema.safetensors`` in Trainer.load (the average would restart from the resumed weights)."""
    cfg = TrainConfig(steps=15, batch_size=4, lr=1e-2, ema=0.9)
    straight, _ = run(tmp_path / "a", 15, cfg)
    resumed, _ = run_killed_at_step_12_then_resumed(tmp_path / "b", 15, cfg)
    assert (tmp_path / "b" / "checkpoint" / "ema.safetensors").exists()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


class CheckpointingFixtureTask(FixtureTask):
    """Fixture task that implements activation checkpointing: records each switch and each step, in order."""

    def __init__(self):
        super().__init__()
        self.events = []

    def checkpoint_activations(self, on):
        self.events.append(on)

    def training_step(self, batch, step, trainer):
        self.events.append(f"step {step}")
        return super().training_step(batch, step, trainer)


def test_grad_checkpointing_reaches_a_task_that_can_and_is_said_to_skip_one_that_cannot(tmp_path, capsys):
    """run.grad_checkpointing switches the task's checkpointing on before the first step and off at the end; a task
    that does not implement it trains without it, said on stderr."""
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-2)
    able, unable = CheckpointingFixtureTask(), FixtureTask()
    assert able.can_checkpoint_activations and not unable.can_checkpoint_activations
    for task, folder in ((able, "able"), (unable, "unable")):
        train(task, FixtureClips(), cfg, workdir=tmp_path / folder, device="cpu", seed=0, progress=False,
              execution=Execution(grad_checkpointing=True))
    assert able.events == [True, "step 0", "step 1", False]
    said = [line for line in capsys.readouterr().err.splitlines() if "does not implement checkpoint_activations" in line]
    assert len(said) == 1 and said[0].startswith("hitbench: FixtureTask does not implement checkpoint_activations(): "
                                                 "it trains without activation checkpointing")
