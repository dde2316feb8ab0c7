"""Sharded training (``run.strategy: fsdp``) and gradient accumulation (``run.micro_batch``) in the shared
trainer: two gloo processes under torchrun match one process on the same global batch, a run killed with SIGKILL
(mid-step, or with a checkpoint half written) resumes to the weights of an uninterrupted run, at the same or
another number of processes, and ``hitbench run --nproc 2`` leaves every result to rank 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.recipe.resolve import load_recipe
from hitvideo_bench.training import Execution, StepBatches, TrainConfig, TrainingTask, train

from ddp_fixture_worker import FixtureData  # noqa: I001 (test helpers, from the tests folder)
from test_distributed import RECIPE

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "fsdp_fixture_worker.py"


def worker_env(**extra: str) -> dict[str, str]:
    """The tests' environment for a subprocess: this checkout's packages first (as the tests import them)."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def run_worker(out: Path, task: str, nproc: int, *args: str, ok: bool = True) -> dict:
    """Train ``task`` in ``nproc`` processes (torchrun for 2 or more); returns the worker's summary (nothing when
    ``ok`` is False: the run is meant to be killed)."""
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), task, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), str(out), task, *args]
    proc = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    if not ok:
        assert proc.returncode != 0, "the run was meant to be killed"
        return {}
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def final(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final.safetensors"))


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], exact: bool = False) -> None:
    assert set(got) == set(want)
    for k in want:
        if exact:
            assert torch.equal(got[k], want[k]), k
        else:  # gradients averaged over processes instead of one batch: equal up to float summation order
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=5e-5, msg=k)


FSDP = ("--set", 'strategy="fsdp"')


@pytest.mark.slow
def test_fsdp_generator_matches_one_process_and_resumes_after_kill_9(tmp_path):
    """The tiny ar-llama (decoder layers, embeddings and heads sharded; activation checkpointing; micro-batches of 1)
    on 2 processes matches one process with the whole batch; killed (SIGKILL) right after the shards of its second
    checkpoint are written, before the folder is renamed into place, it resumes from the first to the same bits."""
    micro = ("--set", "micro_batch=1")
    two = run_worker(tmp_path / "two", "generator", 2, *FSDP, *micro)
    run_worker(tmp_path / "one", "generator", 1)
    assert_same(final(tmp_path / "two"), final(tmp_path / "one"))
    assert (two["processes"], two["strategy"]) == (2, "fsdp")
    assert two["param_types"] == ["Parameter"] and not any(c.startswith("FSDP") for c in two["classes"])
    checkpoint = tmp_path / "two" / "work" / "checkpoint"
    assert {p.name for p in checkpoint.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp", "state.pt"}

    killed = tmp_path / "killed"
    run_worker(killed, "generator", 2, *FSDP, *micro, "--die-in-save", "2", ok=False)
    assert (killed / "work" / ".checkpoint.tmp" / ".metadata").exists()  # the half-written one, never picked up
    assert torch.load(killed / "work" / "checkpoint" / "state.pt", weights_only=True)["step"] == 2
    resumed = run_worker(killed, "generator", 2, *FSDP, *micro)
    assert resumed["resumed_from_step"] == 2
    assert_same(final(killed), final(tmp_path / "two"), exact=True)


@pytest.mark.slow
def test_fsdp_tokenizer_killed_on_2_processes_resumes_on_1(tmp_path):
    """The tiny hitvideo tokenizer with its discriminator, sharded per block on 2 processes, is killed (SIGKILL)
    mid-run; its checkpoint (written by both) resumes in one process, which ends where one process alone ends.
    The progressive schedule leaves the densest layers without optimizer state at the checkpoint: they stay so."""
    run_worker(tmp_path / "one", "tokenizer", 1)
    out = tmp_path / "run"
    run_worker(out, "tokenizer", 2, *FSDP, "--die-at", "3", ok=False)
    assert torch.load(out / "work" / "checkpoint" / "state.pt", weights_only=True)["step"] == 2
    resumed = run_worker(out, "tokenizer", 1, *FSDP)
    assert (resumed["resumed_from_step"], resumed["processes"]) == (2, 1)
    assert resumed["final"]["d_hinge"] > 0  # the discriminator trained
    assert_same(final(out), final(tmp_path / "one"))


AUDIT = """\
import os, sys
if os.environ.get("RANK", "0") != "0" and os.environ.get("HITBENCH_AUDIT"):
    _log = open(os.environ["HITBENCH_AUDIT"] + "." + os.environ["RANK"], "a")
    _roots = tuple(os.environ["HITBENCH_AUDIT_ROOTS"].split(os.pathsep))

    def _audit(event, args):
        if event == "open":
            path, mode, flags = args[0], str(args[1] or ""), args[2]
            writes = isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if not (writes or any(c in mode for c in "wax+")):
                return
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"):
            path = args[0]
        else:
            return
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(_roots):
            _log.write(event + " " + os.path.abspath(path) + "\\n")
            _log.flush()

    sys.addaudithook(_audit)
"""


@pytest.mark.slow
def test_rank_0_alone_writes_results_under_fsdp(tmp_path):
    """hitbench run --nproc 2 with a tokenizer trained under fsdp in bf16: every rank writes its shards of each
    checkpoint; the results, the logs and the component cache are rank 0's alone (an audit hook on rank 1 records
    every file it writes), and the cached component is a plain safetensors folder. The strategy is the run's
    (run.strategy), not the component's: a run under ddp reuses it."""
    from hitvideo_bench.cache import read_summary
    from hitvideo_bench.checkpoint import load_tokenizer

    recipe = tmp_path / "fsdp.yaml"
    recipe.write_text(RECIPE)  # a codec, and a tiny hitvideo trained for 2 steps: here under fsdp, in bf16
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = worker_env(HITBENCH_CACHE=str(cache), HITBENCH_AUDIT=str(tmp_path / "audit"),
                     HITBENCH_AUDIT_ROOTS=os.pathsep.join([str(out), str(cache)]))
    env["PYTHONPATH"] = os.pathsep.join([str(hooks), env["PYTHONPATH"]])
    train = "variants.tokenizer.tokenizer.config.train"
    cmd = [sys.executable, "-m", "hitvideo_bench", "-p", "hitbench_fixture_plugin", "run", str(recipe),
           "--set", "run.strategy=fsdp", "--set", f"{train}.precision=bf16",
           "--nproc", "2", "--device", "cpu", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fixture-mae" in proc.stdout
    written = (tmp_path / "audit.1").read_text().splitlines() if (tmp_path / "audit.1").exists() else []
    shards = [line for line in written if "/train/.checkpoint.tmp" in line]
    assert shards and all(line.endswith((".checkpoint.tmp", "__1_0.distcp")) for line in shards), written
    assert not [line for line in written if line not in shards], written  # nothing else from rank 1
    [folder] = (cache / "tokenizer").glob("hitvideo-*")
    assert (folder / "train" / "checkpoint" / ".metadata").exists()
    assert read_summary(folder)["strategy"] == "fsdp"
    assert "strategy" not in type(load_tokenizer(folder).config.train).model_fields

    # the same recipe under run.strategy ddp (the default), in one process, to another results folder: the tokenizer
    # trained under fsdp is the same component (same cache folder), loaded, not trained again
    cmd = [sys.executable, "-m", "hitvideo_bench", "-p", "hitbench_fixture_plugin", "run", str(recipe),
           "--set", f"{train}.precision=bf16", "--device", "cpu", "--out", str(tmp_path / "ddp"), "--quiet"]
    proc = subprocess.run(cmd, env=worker_env(HITBENCH_CACHE=str(cache)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [summary] = [json.loads(p.read_text()) for p in (tmp_path / "ddp").rglob("summary.json")
                 if "tokenizer" in json.loads(p.read_text())]
    assert summary["tokenizer"]["cached"] == str(folder) and "trained_now" not in summary["tokenizer"]
    assert [p.name for p in (cache / "tokenizer").iterdir() if not p.name.startswith(".")] == [folder.name]


# ------------------------------------------------------------------------------------------ one process


class TwoGroupTask(TrainingTask):
    """A net trained on every micro-batch, and a bias trained (group ``aux``) on the first micro-batch of a step
    only: the trainer updates ``aux`` after the step's last micro-batch all the same. ``crash_at``: the step at
    which the run is interrupted (KeyboardInterrupt)."""

    def __init__(self, crash_at: int | None = None):
        torch.manual_seed(123)
        self.crash_at = crash_at
        self.net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 1), torch.nn.GELU(), torch.nn.Conv3d(8, 3, 1))
        self.bias = torch.nn.Module()
        self.bias.value = torch.nn.Parameter(torch.zeros(3, 1, 1, 1))
        self.calls, self.last_step = 0, -1

    def modules(self):
        return {"net": self.net, "bias": self.bias}

    def param_groups(self):
        return {"main": list(self.net.parameters()), "aux": [self.bias.value]}

    def training_step(self, batch, step, trainer):
        if step == self.crash_at:
            raise KeyboardInterrupt
        loss = (self.net(batch["video"]) - 0.5 * batch["video"]).pow(2).mean()
        trainer.step(loss, "main")
        if step != self.last_step:  # the step's first micro-batch
            trainer.step((batch["video"] - self.bias.value).abs().mean(), "aux")
        self.calls, self.last_step = self.calls + 1, step
        return {"mse": loss.detach()}


def fit(tmp_path, steps: int = 6, crash_at: int | None = None, run: dict | None = None, **settings):
    """TwoGroupTask trained with ``settings`` (its TrainConfig), executed with ``run`` (the Execution's settings)."""
    task = TwoGroupTask(crash_at)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, **settings)
    execution = Execution(checkpoint_every=3, log_every=1, **(run or {}))
    summary = train(task, FixtureData(), cfg, workdir=tmp_path, device="cpu", seed=0, progress=False,
                    execution=execution)
    return task, summary


def test_micro_batches_give_the_update_of_the_whole_batch(tmp_path):
    whole, summary = fit(tmp_path / "whole")
    micro, micro_summary = fit(tmp_path / "micro", run={"micro_batch": 2})
    for a, b in zip(micro.net.parameters(), whole.net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(micro.bias.value, torch.zeros_like(micro.bias.value))  # aux: updated once a step
    assert all(p.grad is None for p in [*micro.net.parameters(), micro.bias.value])
    assert micro_summary["losses"][-1]["mse"] == pytest.approx(summary["losses"][-1]["mse"], rel=1e-5)
    assert micro_summary["micro_batch"] == 2 and micro.calls == 12


def test_micro_batches_of_the_generator_match_its_whole_batch(tmp_path):
    import fsdp_fixture_worker as worker

    results = []
    for micro in (None, 1):
        task, cfg, execution = worker.generator_task({"micro_batch": micro})
        train(task, task.data, cfg, workdir=tmp_path / str(micro), device="cpu", seed=0, progress=False,
              execution=execution)
        results.append(task.gen.state_dict())
    for k, v in results[0].items():
        torch.testing.assert_close(results[1][k], v, rtol=1e-4, atol=1e-5)


def test_fsdp_on_one_process_writes_sharded_checkpoints_and_resumes_bit_identically(tmp_path):
    """One process has nothing to shard over: it trains unwrapped, with the sharded checkpoint format (which
    resumes at any number of processes)."""
    fsdp = {"strategy": "fsdp"}
    straight, _ = fit(tmp_path / "straight", run=fsdp, ema=0.9)
    folder = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fit(folder, crash_at=4, run=fsdp, ema=0.9)
    assert (folder / "checkpoint" / ".metadata").exists() and not (folder / "checkpoint" / "weights.safetensors").exists()
    resumed, summary = fit(folder, run=fsdp, ema=0.9)
    assert summary["resumed_from_step"] == 3
    for a, b in zip([*resumed.net.parameters(), resumed.bias.value], [*straight.net.parameters(), straight.bias.value]):
        assert torch.equal(a, b)
    with pytest.raises(BadInput, match="a checkpoint of run.strategy fsdp, but this run has run.strategy ddp"):
        fit(folder, steps=8)


def test_strategy_settings_are_checked_with_the_field_and_allowed_values(tmp_path):
    """The execution settings are the recipe's run: section, checked there with the field and the allowed values; a
    component's train: block that still sets one is refused with a message pointing to run:."""
    recipe = TESTS.parent / "recipes" / "ablation_layers.yaml"
    with pytest.raises(BadInput, match=r"run.strategy: Input should be 'ddp' or 'fsdp', got 'zero'"):
        load_recipe(recipe, ["run.strategy=zero"], check_shapes=False)
    with pytest.raises(BadInput, match="cpu_offload: true needs strategy fsdp"):
        load_recipe(recipe, ["run.cpu_offload=true"], check_shapes=False)
    with pytest.raises(BadInput, match="run.micro_batch"):
        load_recipe(recipe, ["run.micro_batch=0"], check_shapes=False)
    assert load_recipe(recipe, ["run.strategy=fsdp", "run.cpu_offload=true", "run.micro_batch=2"],
                       check_shapes=False).recipe.run == Execution(strategy="fsdp", cpu_offload=True, micro_batch=2)
    # fp16 is the component's precision, fsdp the run's strategy: the combination is refused where both meet
    with pytest.raises(BadInput, match="precision fp16 is not supported with run.strategy fsdp"):
        Execution(strategy="fsdp").check(TrainConfig(precision="fp16"), "ARLlamaGenerator")
    with pytest.raises(BadInput, match="precision fp16 is not supported with run.strategy fsdp"):
        train(TwoGroupTask(), FixtureData(), TrainConfig(steps=1, batch_size=4, precision="fp16"),
              workdir=tmp_path / "fp16", device="cpu", seed=0, progress=False, execution=Execution(strategy="fsdp"))
    # no longer a component's: a train: block setting it is refused, naming the run's field
    with pytest.raises(BadInput, match=r"train.strategy: .*recipe's run: section \(run.strategy\)"):
        get_catalog().make_config("generator", "ar-llama", "tiny", {"train": {"strategy": "fsdp"}})
    with pytest.raises(BadInput, match=r"run.strategy"):
        load_recipe(recipe, ["variants.hitvideo.tokenizer.config.train.strategy=fsdp"], check_shapes=False)


def test_shard_units_must_lie_inside_the_task_modules(tmp_path):
    task = TwoGroupTask()
    task.shard_units = lambda: [torch.nn.Linear(2, 2)]
    with pytest.raises(BadInput, match="shard unit Linear is not part of the task's modules"):
        train(task, FixtureData(), TrainConfig(steps=1, batch_size=4), workdir=tmp_path, device="cpu", seed=0,
              progress=False, execution=Execution(strategy="fsdp"))


def test_the_sampler_cuts_each_share_into_micro_batches(monkeypatch):
    monkeypatch.setattr(sys.modules[StepBatches.__module__], "world", lambda: (1, 2))  # rank 1 of 2 (where it asks)
    sampler = StepBatches(12, 10, seed=0, start=0, steps=2, micro_batch=2)
    assert sampler.weights == [0.4, 0.4, 0.2]  # a share of 5 in micro-batches of 2, 2, 1
    chunks = list(sampler)
    assert [len(c) for c in chunks] == [2, 2, 1] * 2
    assert sum(chunks[:3], []) == sampler.batch(0)
