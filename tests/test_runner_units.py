"""The runner's parts, each on its own and fast: devices, seeding, the list of runs, why a finished run is
re-run, the failure message, a --jobs worker's single run, the other ranks under torchrun, a run's summary,
and the provenance in ``manifest.json``."""

from __future__ import annotations

import json
import random
import re
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hitvideo_bench import cpumode
from hitvideo_bench import runner as runner_mod
from hitvideo_bench.errors import BadInput
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.runner import (PACKAGES, RecipeResult, RunOptions, RunsFailed, outdated, recipe_runs,
                                   resolve_device, run_recipe)
from test_runner import RECIPE

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe: one fixture-codec variant, seeds 0 and 1
ONE_VARIANT = (RECIPE.replace("sweep: {codec.config.levels: [2, 16]}\n", "")
               .replace("plots: [{kind: bar, metric: fixture-mae}]\n", ""))


@pytest.fixture
def resolved(tmp_path):
    path = tmp_path / "fixture-recon.yaml"
    path.write_text(ONE_VARIANT)
    return load_recipe(path)


def test_devices_auto_and_cpu_are_taken_and_others_refused_with_the_allowed_names(monkeypatch):
    """Kills: resolve_device picking CUDA without one, accepting a device it cannot use, or messages that do not
    say what is allowed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(BadInput) as info:
            resolve_device(name)
        assert str(info.value) == f"--device {name}: CUDA is not available on this machine (allowed: cpu, auto)"
    with pytest.raises(BadInput) as info:
        resolve_device("tpu")
    assert str(info.value) == "--device 'tpu': allowed values are cpu, cuda, cuda:N, auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BadInput, match="allowed values are"):
        resolve_device("cudaa")


def test_seeding_repeats_python_numpy_and_torch_draws():
    """Kills: seed_everything leaving one of the three generators unseeded, or seeding numpy with another value
    (a seed past 2**32 wraps)."""
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    runner_mod.seed_everything(7)
    first = draws()
    runner_mod.seed_everything(7)
    assert draws() == first
    runner_mod.seed_everything(8)
    assert all(a != b for a, b in zip(draws(), first))
    runner_mod.seed_everything(2**32 + 7)
    assert draws()[1] == first[1]
    np.random.seed(7)
    assert float(np.random.rand()) == first[1]


def test_the_runs_are_every_variant_by_every_seed_in_the_recipes_order(tmp_path):
    """Kills: recipe_runs dropping a seed or a variant, ordering seed-major, or naming a run otherwise than its
    folder ``VARIANT/seed-S``."""
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("seeds: [0, 1]", "seeds: [3, 1]"))
    runs = recipe_runs(load_recipe(path))
    assert [(v.name, seed, name) for v, seed, name in runs] == [
        ("q-levels=2", 3, "q-levels=2/seed-3"), ("q-levels=2", 1, "q-levels=2/seed-1"),
        ("q-levels=16", 3, "q-levels=16/seed-3"), ("q-levels=16", 1, "q-levels=16/seed-1")]


def test_the_failure_message_counts_names_each_run_its_indented_error_and_log(tmp_path):
    """Kills: RunsFailed miscounting, saying the others are reported when no report was written, or losing a
    run's error lines or its log."""
    failed = {"a/seed-0": {"error": "boom\nsecond line", "log": "a.log"}, "b/seed-1": {"error": "bad", "log": "b.log"}}
    reported = RunsFailed(RecipeResult(tmp_path, pd.DataFrame(), [tmp_path / "table.md"], [], failed), 5)
    assert str(reported) == (f"2 of 5 runs failed; the runs that finished (3) are reported in {tmp_path}\n"
                             "  a/seed-0: boom\n    second line\n    log: a.log\n  b/seed-1: bad\n    log: b.log")
    assert reported.result.failed is failed and reported.exit_code == 1
    alone = RunsFailed(RecipeResult(tmp_path, pd.DataFrame(), [], [], {"a/seed-0": failed["a/seed-0"]}), 1)
    assert str(alone).splitlines()[0] == "1 of 1 runs failed"


def test_a_finished_run_is_outdated_by_each_component_that_changed_came_or_went(tmp_path):
    """Kills: outdated judging a run that has not finished, reading a damaged identity.json as unchanged,
    missing a component that was added or removed, or describing a change without its version and plugin."""
    part = {"name": "c", "version": "1", "plugin": "p", "plugin_version": "0.1"}
    assert outdated(tmp_path, {"codec": part}) is None  # not finished: nothing to compare
    (tmp_path / "metrics.csv").write_text("")
    why = "it records no component versions (identity.json), so they cannot be compared"
    assert outdated(tmp_path, {"codec": part}) == why
    for damaged in ("{", "[]", '{"other": 1}'):
        (tmp_path / "identity.json").write_text(damaged)
        assert outdated(tmp_path, {"codec": part}) == why
    (tmp_path / "identity.json").write_text(json.dumps({"components": {"codec": part, "metric.x": part}}))
    assert outdated(tmp_path, {"codec": part, "metric.x": part}) is None
    assert runner_mod.is_finished(tmp_path, {"codec": part, "metric.x": part})
    changed = {"codec": {**part, "version": "2"}, "dataset": part}
    assert outdated(tmp_path, changed) == ("its components changed: codec c version 1 (p 0.1) -> c version 2 (p 0.1); "
                                           "metric.x c version 1 (p 0.1) -> (none); dataset (none) -> c version 1 "
                                           "(p 0.1)")
    assert not runner_mod.is_finished(tmp_path, changed)
    (tmp_path / "metrics.csv").unlink()
    assert not runner_mod.is_finished(tmp_path, {"codec": part, "metric.x": part})


def test_resumed_training_lists_the_components_that_resumed_by_run():
    """Kills: resumed_training listing components that trained from scratch (step None) or other summary
    entries."""
    summaries = {"a/seed-0": {"tokenizer": {"resumed_from_step": 40}, "generator": {"resumed_from_step": None},
                              "wall_s": 1.0},
                 "b/seed-0": {"tokenizer": {"trained_now": True}}, "c/seed-0": None,
                 "d/seed-0": {"generator": {"resumed_from_step": 0}}}
    assert runner_mod.resumed_training(summaries) == {"a/seed-0": {"tokenizer": 40}, "d/seed-0": {"generator": 0}}


def test_versions_name_python_the_suite_and_every_package_results_depend_on(monkeypatch):
    """Kills: versions() leaving out a package, or failing on one that is not installed."""
    monkeypatch.setattr(runner_mod, "PACKAGES", (*PACKAGES, "surely-not-installed-pkg"))
    found = runner_mod.versions()
    assert list(found)[:3] == ["python", "platform", "hitvideo-bench"]
    assert set(found) == {"python", "platform", "hitvideo-bench", *PACKAGES, "surely-not-installed-pkg"}
    assert found["surely-not-installed-pkg"] == "not installed" and found["torch"] == metadata.version("torch")
    assert found["python"].count(".") == 2 and found["hitvideo-bench"] == runner_mod.__version__


def test_the_manifest_records_the_recipe_machine_and_runs(resolved):
    """Kills: manifest() losing or mislabelling a field (recipe file, run id, seeds, scale, device, runs, reused
    and failed runs, wall time)."""
    started = time.time() - 2.0
    summaries = {"q/seed-0": {"wall_s": 1.0, "tokenizer": {"resumed_from_step": 3}}}
    manifest = runner_mod.manifest(resolved, torch.device("cpu"), started, summaries, ["q/seed-1"])
    assert {k: manifest[k] for k in ("recipe", "recipe_file", "run_id", "seeds", "scale", "device", "reused_runs",
                                     "failed_runs", "resumed_training", "runs")} == {
        "recipe": "fixture-recon", "recipe_file": str(resolved.path), "run_id": resolved.run_id(), "seeds": [0, 1],
        "scale": "tiny", "device": "cpu", "reused_runs": ["q/seed-1"], "failed_runs": {},
        "resumed_training": {"q/seed-0": {"tokenizer": 3}}, "runs": summaries}
    assert 2.0 <= manifest["wall_time_s"] < 3600
    assert manifest["device_name"] == cpumode.cpu_model()
    assert manifest["machine"] == cpumode.machine()  # CPU, kernel level, caps, threads, the lock's hash
    assert 10 < manifest["peak_memory"]["cpu_max_rss_mib"] < 2**20  # MiB: more than a bare interpreter, < 1 TiB
    assert manifest["plugin_failures"] == {}
    assert manifest["versions"]["hitvideo-bench"] == runner_mod.__version__
    assert manifest["plugins"]["hitbench_fixture_plugin"] == {"distribution": "-p", "version": "local"}
    commit = manifest["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
    failed = {"q/seed-0": {"error": "x", "log": "y"}}
    assert runner_mod.manifest(resolved, torch.device("cpu"), started, {}, [], failed)["failed_runs"] == failed


def test_a_run_writes_its_summary_rows_and_identity(resolved, tmp_path):
    """Kills: execute_run's summary losing the variant, seed, wall time, thread count or clip shape; the rows
    losing their recipe, variant, seed or source; identity.json not written before the run."""
    result = run_recipe(resolved, RunOptions(out=tmp_path, progress=False))
    run_dir = result.out_dir / "runs" / "q" / "seed-1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {k: summary[k] for k in ("variant", "seed", "torch_threads", "clip_shape")} == {
        "variant": "q", "seed": 1, "torch_threads": torch.get_num_threads(), "clip_shape": [4, 16, 16]}
    assert 0 <= summary["wall_s"] < 3600
    assert json.loads((run_dir / "identity.json").read_text())["components"] == summary["components"]
    rows = pd.read_csv(run_dir / "metrics.csv")
    assert rows[["recipe", "variant", "seed", "metric", "source"]].values.tolist() == [
        ["fixture-recon", "q", 1, "fixture-mae", "measured"]]
    timings = pd.read_csv(run_dir / "timings.csv")
    assert set(timings["source"]) == {"timing"} and set(timings["variant"]) == {"q"} and len(timings) >= 1
    per_clip = pd.read_csv(run_dir / "per_clip.csv")
    assert per_clip[["recipe", "variant", "seed"]].drop_duplicates().values.tolist() == [["fixture-recon", "q", 1]]
    assert sorted(per_clip["clip"]) == [0, 1, 2]
    assert result.reused == [] and set(json.loads((result.out_dir / "manifest.json").read_text())["runs"]) == {
        "q/seed-0", "q/seed-1"}


def test_a_jobs_worker_runs_its_one_run_and_writes_no_report(resolved, tmp_path):
    """Kills: run_recipe under ``--only`` running other runs, writing the report or the manifest, or returning
    another run's rows."""
    result = run_recipe(resolved, RunOptions(out=tmp_path, progress=False, only="q/seed-1"))
    assert result.files == [] and set(result.results["seed"]) == {1}
    assert [p.relative_to(result.out_dir).as_posix() for p in sorted(result.out_dir.glob("runs/*/*"))] == [
        "runs/q/seed-1"]
    assert not (result.out_dir / "manifest.json").exists() and not (result.out_dir / "table.md").exists()
    again = run_recipe(resolved, RunOptions(out=tmp_path, progress=False, only="q/seed-1"))
    assert again.reused == ["q/seed-1"]


def test_a_worker_under_only_raises_its_own_failure(tmp_path):
    """Kills: a ``--only`` worker keeping its failure to itself (its parent would see it succeed)."""
    path = tmp_path / "r.yaml"
    path.write_text(ONE_VARIANT.replace("q: {codec: {name: fixture-quantize}}",
                                        "q: {codec: {name: fixture-quantize, config: {fail: true}}}"))
    with pytest.raises(runner_mod.RunFailed) as info:
        run_recipe(load_recipe(path), RunOptions(out=tmp_path, progress=False, only="q/seed-0"))
    assert not isinstance(info.value, RunsFailed)
    assert str(info.value) == "run q (seed 0) failed: RuntimeError: fixture-quantize asked to fail"


def test_other_ranks_help_train_and_write_nothing(resolved, tmp_path, monkeypatch):
    """Kills: run_recipe letting a rank other than 0 write files, measure (``train_only`` unset), or skip the
    runs that are not finished."""
    calls = []
    monkeypatch.setattr(runner_mod, "is_main_process", lambda: False)
    monkeypatch.setattr(runner_mod, "execute_run", lambda *args, **kwargs: calls.append((args[2], kwargs)))
    result = run_recipe(resolved, RunOptions(out=tmp_path / "out", progress=False))
    assert calls == [(0, {"train_only": True}), (1, {"train_only": True})]
    assert result.results.empty and list(result.results.columns) == runner_mod.COLUMNS and result.files == []
    assert not (tmp_path / "out").exists()


def test_a_fresh_run_removes_the_finished_runs_and_a_resumed_one_keeps_them(resolved, tmp_path):
    """Kills: run_recipe removing finished runs when resuming, or keeping them when asked not to resume."""
    first = run_recipe(resolved, RunOptions(out=tmp_path, progress=False))
    marker = first.out_dir / "runs" / "q" / "seed-0" / "kept.txt"
    marker.write_text("x")
    assert run_recipe(resolved, RunOptions(out=tmp_path, progress=False)).reused == ["q/seed-0", "q/seed-1"]
    assert marker.exists()
    assert run_recipe(resolved, RunOptions(out=tmp_path, progress=False, resume=False)).reused == []
    assert not marker.exists()


def test_an_unwritable_output_folder_is_named_with_the_reason(resolved, tmp_path):
    """Kills: _check_writable's message losing the folder or the system's reason."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput) as info:
        run_recipe(resolved, RunOptions(out=tmp_path / "file", progress=False))
    out_dir = tmp_path / "file" / "fixture-recon" / resolved.run_id()
    assert str(info.value) == f"output directory not writable: {out_dir} (Not a directory)"
    assert Path(tmp_path / "file").read_text() == "x"


def test_jobs_give_workers_the_unfinished_runs_and_report_a_failed_worker_with_its_log(resolved, tmp_path,
                                                                                       monkeypatch):
    """Kills: run_recipe under ``--jobs`` handing workers finished runs too (or none), counting a worker's run as
    reused, or losing a failed worker's error and log. The workers are stood in for by in-process ``--only`` runs."""
    calls = []

    def workers(names, command, jobs, logs):
        calls.append((list(names), command, jobs, logs))
        for name in names:
            if name != "q/seed-1":  # q/seed-1's worker fails
                run_recipe(resolved, RunOptions(out=tmp_path, progress=False, only=name))
        return {"q/seed-1": "worker exit 1: boom"}

    monkeypatch.setattr(runner_mod, "run_workers", workers)
    options = RunOptions(out=tmp_path, progress=False, jobs=2, worker_command=["hitbench", "run"])
    with pytest.raises(RunsFailed) as info:
        run_recipe(resolved, options)
    result = info.value.result
    assert calls == [(["q/seed-0", "q/seed-1"], ["hitbench", "run"], 2, result.out_dir / "logs")]
    assert result.failed == {"q/seed-1": {"error": "worker exit 1: boom",
                                          "log": str(result.out_dir / "logs" / "q-seed-1.log")}}
    assert result.reused == [] and set(result.results.query("source == 'measured'")["seed"]) == {0}
    calls.clear()
    monkeypatch.setattr(runner_mod, "run_workers", lambda names, *args: calls.append(list(names)) or {})
    again = run_recipe(resolved, options)  # the worker "succeeds" without a result: the parent runs it itself
    assert calls == [["q/seed-1"]] and again.reused == ["q/seed-0"] and again.failed == {}
    assert set(again.results.query("source == 'measured'")["seed"]) == {0, 1}
