"""A recipe with a failing run: the other runs still execute and are reported (table, claims, manifest), the
failed run is named with its error and log (stderr, manifest, a note under the table), the command exits 1, a
re-run retries only the failed run, and ``hitbench table`` renders the folder."""

from __future__ import annotations

import json

import pytest

import hitvideo_bench as hb
from hitvideo_bench.cli import main
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.runner import RunOptions, RunsFailed, run_recipe
from test_runner import RECIPE as FIXTURE_RECON_RECIPE

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe: two fixture-codec variants, one seed; the first (q-fail=True) raises in compress, so the run
#: after it shows that a failure does not stop the others; a claim contrasts the two
FAILS_FIRST = FIXTURE_RECON_RECIPE.replace("seeds: [0, 1]", "seeds: [0]").replace(
    "sweep: {codec.config.levels: [2, 16]}", "sweep: {codec.config.fail: [true, false]}") + """\
claims:
  - {id: fixture-claim, claim: "fixture: failing beats working", metric: fixture-mae,
     contrast: {q-fail=True: 1, q-fail=False: -1}}
"""
ERROR = "run q-fail=True (seed 0) failed: RuntimeError: fixture-quantize asked to fail"


def cli(*args) -> int:
    return main(["-p", "hitbench_fixture_plugin", *map(str, args)])


def table_variants(markdown: str) -> list[str]:
    """The variant cells of a markdown table."""
    return [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ")][1:]


def test_a_failed_run_leaves_the_others_reported_and_exits_1_naming_it_and_its_log(tmp_path, capsys):
    """Kills: run_recipe re-raising the first RunFailed (no later run, no report), or the report leaving out
    the failed runs' note, the manifest's failed_runs or the error log."""
    path = tmp_path / "fails-first.yaml"
    path.write_text(FAILS_FIRST)
    assert cli("run", path, "--out", tmp_path / "out", "--quiet") == 1
    out, err = capsys.readouterr()
    out_dir = next((tmp_path / "out").glob("fixture-recon/*"))
    log = out_dir / "runs" / "q-fail=True" / "seed-0" / "error.log"
    assert f"hitbench: error:\n1 of 2 runs failed; the runs that finished (1) are reported in {out_dir}\n" in err
    assert f"  q-fail=True/seed-0: {ERROR}\n    log: {log}\n" in err
    assert "RuntimeError: fixture-quantize asked to fail" in log.read_text() and "Traceback" in log.read_text()
    df = hb.load_results(out_dir)
    assert set(df[df.source == "measured"]["variant"]) == {"q-fail=False"}  # the run after the failure ran
    table = (out_dir / "table.md").read_text()
    assert table in out and table_variants(table) == ["q-fail=False", "Some paper codec"]
    assert f"- Failed runs, not in this table (re-run the recipe to retry them): q-fail=True/seed-0 ({ERROR})" in table
    claims = (out_dir / "claims.md").read_text()
    assert "not measured: no per-clip values for q-fail=True (fixture-mae)" in claims
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["failed_runs"] == {"q-fail=True/seed-0": {"error": ERROR, "log": str(log)}}
    assert list(manifest["runs"]) == ["q-fail=False/seed-0"]
    assert "failed runs: q-fail=True/seed-0" in out

    (out_dir / "table.md").unlink()
    assert cli("table", out_dir) == 0
    assert "Failed runs, not in this table" in capsys.readouterr().out  # the note, from the manifest

    with pytest.raises(RunsFailed) as info:  # the retry: the failed run again, the finished one reused
        run_recipe(load_recipe(path), RunOptions(out=tmp_path / "out", progress=False))
    assert info.value.result.reused == ["q-fail=False/seed-0"]
    assert list(info.value.result.failed) == ["q-fail=True/seed-0"]


def test_when_every_run_fails_there_is_no_table_but_a_manifest(tmp_path, capsys):
    """Kills: writing a table of nothing (or crashing on it) when no run finished."""
    path = tmp_path / "all-fail.yaml"
    path.write_text(FAILS_FIRST.replace("[true, false]", "[true]").split("claims:")[0])
    assert cli("run", path, "--out", tmp_path / "out", "--quiet") == 1
    out, err = capsys.readouterr()
    out_dir = next((tmp_path / "out").glob("fixture-recon/*"))
    assert "1 of 1 runs failed\n" in err and not (out_dir / "table.md").exists()
    assert list(json.loads((out_dir / "manifest.json").read_text())["failed_runs"]) == ["q-fail=True/seed-0"]
    assert "failed runs: q-fail=True/seed-0" in out


def test_table_renders_a_folder_left_without_its_report_from_the_runs_that_finished(tmp_path, capsys):
    """Kills: rerender requiring the top-level metrics.csv (a folder whose run was interrupted before its report
    could not be shown)."""
    path = tmp_path / "fails-first.yaml"
    path.write_text(FAILS_FIRST)
    with pytest.raises(RunsFailed):
        run_recipe(load_recipe(path), RunOptions(out=tmp_path / "out", progress=False))
    out_dir = next((tmp_path / "out").glob("fixture-recon/*"))
    for name in ("metrics.csv", "timings.csv", "per_clip.csv", "table.md", "claims.md"):
        (out_dir / name).unlink()
    assert cli("table", out_dir) == 0
    df = hb.load_results(out_dir)
    assert set(df["variant"]) == {"q-fail=False", "Some paper codec"}  # the finished run and the reference rows
    assert (out_dir / "per_clip.csv").is_file()
    assert table_variants(capsys.readouterr().out) == ["q-fail=False", "Some paper codec"]


def test_a_failed_workers_error_is_its_hitbench_error_else_the_end_of_its_log(tmp_path):
    """Kills: worker_error dropping the lines after a multi-line ``hitbench: error:``, or giving nothing for a
    worker that died without one (killed, out of memory)."""
    from hitvideo_bench.jobs import worker_error

    log = tmp_path / "w.log"
    log.write_text("loading\r\ntrain:  50%|##  | 2/4\rhitbench: error:\nr.yaml:3: a: bad\nr.yaml:4: b: bad\n")
    assert worker_error(log, 2) == "worker exit 2: r.yaml:3: a: bad\nr.yaml:4: b: bad"
    log.write_text("".join(f"step {i}\n" for i in range(40)))
    assert worker_error(log, -9) == "worker exit -9; last lines of its log:\n" + "\n".join(
        f"step {i}" for i in range(25, 40))
    assert worker_error(tmp_path / "never-written.log", 1) == "worker exit 1; its log is empty"
