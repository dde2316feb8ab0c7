"""Runner: outputs, tidy results, resume after interruption, atomic writes, hooks, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import hitvideo_bench as hb
from hitvideo_bench import runner as runner_mod
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_plugins
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.report import COLUMNS
from hitvideo_bench.runner import RunOptions, run_recipe

pytestmark = pytest.mark.usefixtures("fixture_plugin")

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """\
version: 1
recipe: fixture-recon
description: "fixture recipe"
seeds: [0, 1]
dataset: {name: fixture-noise, eval_clips: 3}
evaluate: {reconstruction: [fixture-mae], batch_size: 2}
variants:
  q: {codec: {name: fixture-quantize}}
sweep: {codec.config.levels: [2, 16]}
table: {columns: [fixture-mae], sort_by: fixture-mae}
plots: [{kind: bar, metric: fixture-mae}]
references:
  - {variant: "Some paper codec", source: paper, values: {fixture-mae: 0.5, note-col: "n/a"}}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "fixture-recon.yaml"
    path.write_text(RECIPE)
    return path


def run(recipe_path, out, **kw):
    return run_recipe(load_recipe(recipe_path), RunOptions(out=out, progress=False, **kw))


def test_outputs_and_tidy_results(recipe, tmp_path):
    result = run(recipe, tmp_path / "out")
    out = result.out_dir
    assert out.parent.name == "fixture-recon"
    for name in ["resolved.yaml", "metrics.csv", "table.md", "table.csv", "table.html", "manifest.json",
                 "bar_fixture-mae.png"]:
        assert (out / name).is_file(), name
    for variant in ["q-levels=2", "q-levels=16"]:
        for seed in (0, 1):
            assert (out / "runs" / variant / f"seed-{seed}" / "metrics.csv").is_file()
    df = hb.load_results(out)
    assert list(df.columns) == COLUMNS
    mae = df[(df.metric == "fixture-mae") & (df.source == "measured")].set_index(["variant", "seed"])["value"]
    # uniform quantisation of U(0,1) to L levels: mean abs error 1/(4(L-1))
    assert mae["q-levels=2", 0] == pytest.approx(1 / 4, abs=0.01)
    assert mae["q-levels=16", 1] == pytest.approx(1 / 60, abs=0.002)
    assert df[df.source == "paper"]["variant"].unique().tolist() == ["Some paper codec"]
    table = (out / "table.md").read_text()
    assert "fixture-mae ↓" in table and "Some paper codec" in table and "paper" in table
    wide = pd.read_csv(out / "table.csv")
    assert wide["variant"].tolist()[:2] == ["q-levels=16", "q-levels=2"]  # sorted by the metric
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["versions"]["torch"]
    assert manifest["device"] == "cpu" and "peak_memory" in manifest and manifest["wall_time_s"] >= 0
    assert set(manifest["runs"]) == {"q-levels=2/seed-0", "q-levels=2/seed-1", "q-levels=16/seed-0",
                                     "q-levels=16/seed-1"}
    assert {run["machine"]["cpu_capability"] for run in manifest["runs"].values()} == {
        manifest["machine"]["cpu_capability"]}
    assert not list(out.rglob("*.tmp")), "no temporary files left behind"


def test_rerun_reuses_and_fresh_reruns(recipe, tmp_path):
    first = run(recipe, tmp_path / "out")
    second = run(recipe, tmp_path / "out")
    assert len(second.reused) == 4 and second.out_dir == first.out_dir
    fresh = run(recipe, tmp_path / "out", resume=False)
    assert fresh.reused == []


def test_interrupted_run_resumes_to_identical_results(recipe, tmp_path, monkeypatch):
    reference = run(recipe, tmp_path / "ref").out_dir
    calls = {"n": 0}
    real = runner_mod.execute_run

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            (args[4] / "half-written-checkpoint").write_text("partial")
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "execute_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "out")
    monkeypatch.setattr(runner_mod, "execute_run", real)
    result = run(recipe, tmp_path / "out")
    assert len(result.reused) == 2
    assert not list(result.out_dir.rglob("half-written-checkpoint"))
    assert (result.out_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def test_hooks_observe_runs(recipe, tmp_path, monkeypatch):
    """Kills: calling hitbench_run_finished for some runs only, or with another run's variant or seed."""
    seen, started = [], []

    class Observer:
        @hb.hookimpl
        def hitbench_run_start(self, variant, seed, run_dir):
            started.append((variant, seed, run_dir.relative_to(run_dir.parents[2]).as_posix()))

        @hb.hookimpl
        def hitbench_run_finished(self, variant, seed, metrics):
            seen.append((variant, seed, len(metrics), sorted(set(metrics.seed)), sorted(set(metrics.variant))))

    pm = get_plugins().pm
    observer = Observer()
    pm.register(observer)
    try:
        run(recipe, tmp_path / "out")
    finally:
        pm.unregister(observer)
    runs = [(v, s) for v in ("q-levels=16", "q-levels=2") for s in (0, 1)]
    # each run once, with its own rows: the metric row and the timing row
    assert sorted(seen) == [(v, s, 2, [s], [v]) for v, s in runs]
    assert sorted(started) == [(v, s, f"runs/{v}/seed-{s}") for v, s in runs]


def test_output_dir_not_writable(recipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="output directory not writable"):
        run(recipe, blocker / "out")


def test_cli_run_table_and_exit_codes(recipe, tmp_path, capsys):
    assert main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "fixture-mae ↓" in printed and "results: " in printed
    out_dir = Path(printed.strip().splitlines()[-1].split("results: ")[1])
    (out_dir / "table.md").unlink()
    assert main(["table", str(out_dir)]) == 0
    assert (out_dir / "table.md").exists()
    assert main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--set", "seeds"]) == 2
    assert "malformed override" in capsys.readouterr().err
    assert main(["table", str(tmp_path / "nowhere")]) == 2
    assert main(["run", str(recipe), "--device", "tpu"]) == 2


@pytest.mark.slow  # starts hitbench (and torch) in subprocesses
def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        version: 1
        dataset: {name: synthetic-shapez}
        variants: {a: {codec: {name: x264}}}
        """))
    env = {"PYTHONPATH": str(ROOT / "tests"), "PATH": "/usr/bin:/bin", "HITBENCH_CACHE": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-m", "hitvideo_bench", "validate", str(bad)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{bad}:2: variants.a.dataset.name" in proc.stderr or f"{bad}:2: dataset.name" in proc.stderr
    assert "did you mean 'synthetic-shapes'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hitvideo_bench", "validate", str(bad)], capture_output=True,
                          text=True, env={**env, "HITBENCH_FULL_ERROR": "1"}, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def hitbench(*args, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    """``hitbench -p hitbench_fixture_plugin ARGS`` in a fresh process, on this checkout's code."""
    env = {"PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, ROOT / "plugins", ROOT / "tests")),
           "PATH": "/usr/bin:/bin", "HITBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "hitvideo_bench", "-p", "hitbench_fixture_plugin", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def measured(out_dir: Path) -> pd.Series:
    df = hb.load_results(out_dir)
    return df[df.source == "measured"].set_index(["variant", "seed", "metric"])["value"].sort_index()


@pytest.mark.slow  # starts hitbench (and torch) in subprocesses
def test_jobs_run_each_variant_seed_in_a_worker_with_the_sequential_results(recipe, tmp_path):
    sequential = run(recipe, tmp_path / "seq").out_dir
    proc = hitbench("run", recipe, "--jobs", "3", "--out", tmp_path / "par", cwd=tmp_path, cache=tmp_path / "c")
    assert proc.returncode == 0, proc.stderr
    out_dir = Path(proc.stdout.strip().splitlines()[-1].split("results: ")[1])
    runs = [f"{v}/seed-{s}" for v in ("q-levels=2", "q-levels=16") for s in (0, 1)]
    for name in runs:
        assert f"{name}: started" in proc.stderr and f"{name}: finished in" in proc.stderr
        assert "finished run " + name in (out_dir / "logs" / (name.replace("/", "-") + ".log")).read_text()
    pd.testing.assert_series_equal(measured(out_dir), measured(sequential))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["reused_runs"] == [] and sorted(manifest["runs"]) == sorted(runs)
    assert "fixture-mae ↓" in proc.stdout
    again = hitbench("run", recipe, "--jobs", "3", "--out", tmp_path / "par", cwd=tmp_path, cache=tmp_path / "c")
    assert again.returncode == 0 and "started" not in again.stderr
    assert "reused finished runs: " + ", ".join(runs) in again.stdout


@pytest.mark.slow  # starts hitbench (and torch) in subprocesses
def test_jobs_a_failing_worker_fails_the_command_naming_its_run_and_log(tmp_path):
    """Kills: dropping execute_run's RunFailed wrapper (the worker would die with a traceback in its log), or the
    parent dropping the report of the runs that finished."""
    path = tmp_path / "fails.yaml"
    path.write_text(RECIPE.replace("sweep: {codec.config.levels: [2, 16]}", "sweep: {codec.config.fail: [false, true]}")
                    .replace("seeds: [0, 1]", "seeds: [0]"))
    proc = hitbench("run", path, "--jobs", "2", "--out", tmp_path / "o", cwd=tmp_path, cache=tmp_path / "c")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    log = next((tmp_path / "o").glob("*/*/logs/q-fail=True-seed-0.log"))
    # the worker's short error from the RunFailed wrapper, no traceback, and its log
    assert ("  q-fail=True/seed-0: worker exit 1: run q-fail=True (seed 0) failed: RuntimeError: fixture-quantize "
            f"asked to fail\n    log: {log}") in proc.stderr
    assert "Traceback" not in log.read_text()
    out_dir = log.parent.parent
    assert (out_dir / "runs" / "q-fail=False" / "seed-0" / "metrics.csv").is_file()  # the other finished
    assert set(hb.load_results(out_dir).query("source == 'measured'")["variant"]) == {"q-fail=False"}
    assert "| q-fail=False " in proc.stdout and "failed runs: q-fail=True/seed-0" in proc.stdout
    failed = json.loads((out_dir / "manifest.json").read_text())["failed_runs"]
    assert failed == {"q-fail=True/seed-0": {"error": "worker exit 1: run q-fail=True (seed 0) failed: RuntimeError: "
                                                      "fixture-quantize asked to fail", "log": str(log)}}


def test_cache_training_lock_makes_others_wait_until_the_component_is_complete(tmp_path, capfd):
    import threading

    from hitvideo_bench import cache

    folder = tmp_path / "tokenizer" / "fixture-abc"
    held, events = threading.Event(), []

    def trainer():
        with cache.training_lock(folder):
            held.set()
            time.sleep(0.5)
            cache.mark_complete(folder, {"steps": 1})
            events.append("trained")

    thread = threading.Thread(target=trainer)
    thread.start()
    held.wait()
    with cache.training_lock(folder):  # a separate open file: flock makes it wait as another process would
        events.append("complete" if cache.is_complete(folder) else "incomplete")
    thread.join()
    assert events == ["trained", "complete"]
    assert f"waiting for another process to finish {folder}" in capfd.readouterr().err
    with cache.training_lock(folder):  # free again, no wait
        pass
    assert "waiting" not in capfd.readouterr().err


def test_jobs_progress_of_a_worker_is_its_latest_progress_bar(tmp_path):
    from hitvideo_bench.jobs import progress_of

    log = tmp_path / "w.log"
    assert progress_of(log) == ""  # not written yet
    log.write_text("hitbench: loading\n" + "".join(f"\rtrain:  {i // 15}%|##   | {i}/1500 [00:0{i % 9}<01:00, l2=0.01]"
                                                    for i in range(1, 400)))
    assert progress_of(log) == "train 399/1500"
    log.write_text(log.read_text() + "\nevaluate: 100%|#####| 8/8 [00:03<00:00, 2.1batch/s]\n")
    assert progress_of(log) == "evaluate 8/8"


def test_jobs_bad_arguments(recipe, tmp_path, capsys):
    args = ["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(tmp_path / "o")]
    assert main([*args, "--jobs", "0"]) == 2
    assert "--jobs 0: needs 1 or more" in capsys.readouterr().err
    assert main([*args, "--jobs", "2", "--nproc", "2"]) == 2
    assert "use one of them" in capsys.readouterr().err
    assert main([*args, "--only", "q-levels=3/seed-0"]) == 2
    assert "allowed: q-levels=2/seed-0, q-levels=2/seed-1, q-levels=16/seed-0" in capsys.readouterr().err


def test_a_metric_that_needs_token_pyramids_is_not_applicable_to_a_codec(tmp_path):
    path = tmp_path / "codec-entropy.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        recipe: codec-entropy
        dataset: {name: fixture-noise, eval_clips: 2}
        evaluate: {reconstruction: [fixture-mae, bpp-entropy], batch_size: 2}
        variants:
          q: {codec: {name: fixture-quantize}}
        """))
    result = run(path, tmp_path / "out")
    df = pd.read_csv(result.out_dir / "metrics.csv")
    entropy = df[df.metric == "bpp-entropy"]
    assert len(entropy) == 1 and entropy.value.isna().all()
    assert entropy.text.iloc[0] == "n/a: needs pyramid"
    assert df[df.metric == "fixture-mae"].value.notna().all()


def test_markdown_letters_each_unavailable_hint_and_keeps_it_in_the_notes(tmp_path):
    from hitvideo_bench.recipe.schema import TableSpec
    from hitvideo_bench.report import write_tables

    def cell(variant, metric, value, text=""):
        return {"recipe": "r", "variant": variant, "seed": 0, "metric": metric, "value": value,
                "higher_is_better": True, "step": None, "text": text, "provenance": "", "source": "measured"}

    df = pd.DataFrame([cell("a", "psnr", 20.0), cell("a", "lpips", float("nan"), "unavailable: get LPIPS"),
                       cell("b", "psnr", 21.0), cell("b", "lpips", float("nan"), "unavailable: get LPIPS"),
                       cell("b", "fvd", float("nan"), "unavailable: get I3D"),
                       cell("a", "clipsim", float("nan"), "unavailable: get CLIP"), cell("b", "clipsim", 0.3)],
                      columns=COLUMNS)
    md_file, csv_file, _ = write_tables(df, TableSpec(), ["a", "b"], tmp_path, "t")
    md = md_file.read_text()
    # lpips: unavailable for every variant, fvd for every variant that measures it (a does not): one mention
    # each in the notes instead of a column; clipsim has a number, so it stays, with a lettered cell
    header = md.split("\n\n")[1].splitlines()[0]
    assert "lpips" not in header and "fvd" not in header and "clipsim" in header
    assert "left out of this table" in md and "lpips (c)" in md and "fvd (b)" in md
    assert md.count("unavailable (a)") == 1 + 1 and md.count("unavailable (c)") == 1  # cell + note, note
    assert "- unavailable (b): get I3D" in md and "- unavailable (c): get LPIPS" in md
    assert "- unavailable (a): get CLIP" in md
    assert "unavailable: get LPIPS" in csv_file.read_text()  # csv keeps the column and the full text


def test_sample_sheet_pastes_the_picked_frames_enlarged_under_each_prompt(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from hitvideo_bench.report import save_sample_sheet

    # fixture clips: every frame one flat colour, so each pasted frame can be checked by a pixel
    videos = torch.zeros(2, 3, 5, 8, 8)
    for i in range(2):
        for t in range(5):
            videos[i, :, t] = torch.tensor([t / 4, i, 1 - t / 4]).view(3, 1, 1)
    files = save_sample_sheet(videos, ["first prompt", "second prompt"], tmp_path, frames_shown=3, min_frame_size=20)
    assert [f.name for f in files] == ["sample_sheet.png", "sample_000.gif", "sample_001.gif"]
    assert all(f.is_file() for f in files) and not list(tmp_path.glob("*.tmp"))
    sheet = np.asarray(Image.open(files[0]).convert("RGB"))
    zoom, pad, caption = 3, 2, 14  # 8 px frames enlarged 3x to reach 20 px
    assert sheet.shape == (pad + 2 * (caption + 24 + pad), pad + 3 * (24 + pad), 3)
    for i in range(2):
        for j, t in enumerate([0, 2, 4]):  # frames 0, 2 and 4 of 5
            top, left = pad + i * (caption + 24 + pad) + caption, pad + j * (24 + pad)
            block = sheet[top:top + 8 * zoom, left:left + 8 * zoom].reshape(-1, 3)
            expected = (videos[i, :, t, 0, 0] * 255).round().to(torch.uint8).numpy()
            assert (block == expected).all()
    assert (sheet[pad:pad + caption, pad:pad + 60] < 128).any()  # the prompt is written above its row
    # with the real clips: the same rows, the real clip of each caption to the right after a gap
    real = 1 - videos
    files = save_sample_sheet(videos, ["first prompt", "second prompt"], tmp_path / "r", frames_shown=3,
                              min_frame_size=20, real=real)
    sheet = np.asarray(Image.open(files[0]).convert("RGB"))
    width, gap = 3 * (24 + pad), 4 * pad
    assert sheet.shape == (pad + 2 * (caption + 24 + pad), pad + 2 * width + gap, 3)
    for i in range(2):
        for j, t in enumerate([0, 2, 4]):
            top, left = pad + i * (caption + 24 + pad) + caption, pad + width + gap + j * (24 + pad)
            expected = (real[i, :, t, 0, 0] * 255).round().to(torch.uint8).numpy()
            assert (sheet[top:top + 8 * zoom, left:left + 8 * zoom].reshape(-1, 3) == expected).all()


WORKER = """import sys, time
from hitvideo_bench.jobs import bind_to_parent
bind_to_parent()
print("bound", flush=True)
time.sleep(120)
"""

PARENT = """import sys
from hitvideo_bench.jobs import run_workers
run_workers(["a/seed-0"], [sys.executable, "-c", sys.argv[1]], 1, sys.argv[2], status_every=3600)
"""


def _stat(stat: Path) -> list[str]:
    """The fields of a ``/proc/PID/stat`` file after the command's name (state, parent pid, ...); [] when gone."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    """Running or sleeping: a process that has died but waits to be reaped (a zombie) is not."""
    return _stat(Path(f"/proc/{pid}/stat"))[:1] not in ([], ["Z"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_jobs_a_worker_dies_with_its_parent_killed_by_sigkill(tmp_path):
    """Kills: a ``kill -9`` of ``hitbench run --jobs N`` leaving its workers running beside the re-run (their
    runs would race the re-run's workers for the same folders)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, WORKER, str(tmp_path)])
    log = tmp_path / "a-seed-0.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "bound" in log.read_text()):
        assert time.monotonic() < deadline and parent.poll() is None, "the worker did not start"
        time.sleep(0.1)
    workers = [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
               if _stat(stat)[1:2] == [str(parent.pid)]]
    assert len(workers) == 1
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(workers[0]), "the worker outlived its parent"
