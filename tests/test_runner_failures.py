"""Runner failure paths: a failing variant in a sequential run, Ctrl-C (exit 130) and resuming after it, and
writes that reach their file only by an atomic rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hitvideo_bench import io
from hitvideo_bench import runner as runner_mod
from hitvideo_bench.cli import main
from hitvideo_bench.errors import RunFailed
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.runner import RunOptions, run_recipe
from test_runner import RECIPE as FIXTURE_RECON_RECIPE

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe: two fixture-codec variants (levels 2 and 16), one seed
TWO_VARIANTS = FIXTURE_RECON_RECIPE.replace("seeds: [0, 1]", "seeds: [0]")
#: the same, but the second variant raises in compress
FAILING_RECIPE = TWO_VARIANTS.replace("sweep: {codec.config.levels: [2, 16]}",
                                      "sweep: {codec.config.fail: [false, true]}")


@pytest.fixture
def failing_recipe(tmp_path) -> Path:
    path = tmp_path / "fixture-recon.yaml"
    path.write_text(FAILING_RECIPE)
    return path


def cli_run(recipe: Path, out: Path) -> int:
    return main(["-p", "hitbench_fixture_plugin", "run", str(recipe), "--out", str(out), "--quiet"])


def test_a_failing_variant_in_a_sequential_run_is_run_failed_with_its_name(failing_recipe, tmp_path, capsys):
    """Kills: dropping execute_run's ``except Exception: raise RunFailed`` (the error would escape as RuntimeError)."""
    with pytest.raises(RunFailed, match=r"run q-fail=True \(seed 0\) failed: RuntimeError: fixture-quantize asked"):
        run_recipe(load_recipe(failing_recipe), RunOptions(out=tmp_path / "direct", progress=False))
    assert cli_run(failing_recipe, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "  q-fail=True/seed-0: run q-fail=True (seed 0) failed: RuntimeError: fixture-quantize asked to fail" in err
    assert "Traceback" not in err
    out_dir = next((tmp_path / "out").glob("fixture-recon/*"))
    assert (out_dir / "runs" / "q-fail=False" / "seed-0" / "metrics.csv").is_file()  # the run before it finished
    assert not (out_dir / "runs" / "q-fail=True" / "seed-0" / "metrics.csv").exists()
    assert "q-fail=True" not in (out_dir / "table.md").read_text().split("\n- ")[0]  # the table: finished runs only


def test_ctrl_c_exits_130_keeps_finished_runs_and_the_rerun_resumes(failing_recipe, tmp_path, capsys, monkeypatch):
    """Kills: dropping cli.main's ``except KeyboardInterrupt: return 130`` (the interrupt would escape)."""
    recipe = tmp_path / "two.yaml"
    recipe.write_text(TWO_VARIANTS)
    real, calls = runner_mod.execute_run, []

    def interrupted_on_the_second_run(*args, **kwargs):
        calls.append(args[1].name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "execute_run", interrupted_on_the_second_run)
    try:
        code = cli_run(recipe, tmp_path / "out")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped hitbench's main instead of exiting 130")
    assert code == 130
    assert "interrupted; finished runs are kept, re-run to resume" in capsys.readouterr().err
    monkeypatch.setattr(runner_mod, "execute_run", real)
    assert cli_run(recipe, tmp_path / "out") == 0
    assert "reused finished runs: q-levels=2/seed-0\n" in capsys.readouterr().out


def test_write_text_replaces_the_file_only_by_a_rename(tmp_path, monkeypatch):
    """Kills: io.write_text writing straight into the target (a crash would leave half a file)."""
    target = tmp_path / "table.md"
    target.write_text("old and complete")

    def crash(*args):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        io.write_text(target, "new")
    with pytest.raises(OSError, match="simulated crash"):
        io.write_json(target, {"new": 1})
    assert target.read_text() == "old and complete"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]  # no temporary file left behind


def test_every_file_of_a_run_arrives_by_an_atomic_rename(failing_recipe, tmp_path, monkeypatch):
    """Kills: any result file (resolved.yaml, metrics.csv, summary.json, tables, plots, manifest) written directly.
    The logs under logs/ are the exception: append-only streams that the fault handler writes into as a process
    dies, so a half-written line there is the point, not a defect."""
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(TWO_VARIANTS)
    renamed, real_replace = set(), os.replace

    def recording_replace(src, dst):
        assert Path(src).parent == Path(dst).parent, "the temporary file lies beside its target"
        renamed.add(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    out_dir = run_recipe(load_recipe(recipe), RunOptions(out=tmp_path / "out", progress=False)).out_dir
    files = {p for p in out_dir.rglob("*") if p.is_file()}
    assert {out_dir / n for n in ("resolved.yaml", "metrics.csv", "table.md", "manifest.json",
                                  "bar_fixture-mae.png")} <= files
    logs = {p for p in files if p.parent == out_dir / "logs"}
    assert logs, "each variant leaves its log"
    assert files - logs - renamed == set()
