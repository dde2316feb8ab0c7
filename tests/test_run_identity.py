"""A run's identity: the versions of the components it uses (and of the plugins providing them) are recorded in
its folder, the manifest and the table notes; bumping one component's version re-runs exactly the runs that use
it, in the same results folder."""

from __future__ import annotations

import json
import sys
import textwrap
import types

import pandas as pd
import pytest

from hitvideo_bench.manager import get_catalog, get_plugins
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.report import COLUMNS
from hitvideo_bench.runner import RunOptions, component_identity, run_recipe

#: fixture recipe: variant ``plain`` uses fixture-quantize, variant ``versioned`` the fixture-versioned codec
RECIPE = """\
version: 1
recipe: fixture-identity
seeds: [0]
dataset: {name: fixture-noise, eval_clips: 2}
evaluate: {reconstruction: [fixture-mae], batch_size: 2}
variants:
  plain: {codec: {name: fixture-quantize}}
  versioned: {codec: {name: fixture-versioned}}
"""

#: the fixture plugin that registers fixture-versioned at the module's VERSION
VERSIONED_PLUGIN = """\
from hitvideo_bench import hookimpl

VERSION = "1"

@hookimpl
def hitbench_register_components(catalog):
    catalog.add("codec", "fixture-versioned", "hitbench_fixture_plugin:FixtureQuantizeCodec", version=VERSION)
"""

PLUGINS = ["hitbench_fixture_plugin", "fixture_versioned_plugin"]


@pytest.fixture
def versioned(monkeypatch):
    """Fixture: the module ``fixture_versioned_plugin`` loaded with the fixture plugin; ``versioned(v)`` reloads
    the plugins with fixture-versioned registered at version ``v``."""
    module = types.ModuleType("fixture_versioned_plugin")
    exec(VERSIONED_PLUGIN, module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def register(version: str) -> None:
        module.VERSION = version
        get_plugins([])  # a fresh plugin manager, so that the registration runs again
        get_plugins(PLUGINS)

    yield register
    get_plugins([])


def run(path, out):
    return run_recipe(load_recipe(path), RunOptions(out=out, progress=False))


def test_a_version_bump_reruns_the_runs_that_use_the_component_and_reuses_the_others(versioned, tmp_path, capsys):
    """Kills: the runner ignoring identity.json when deciding what is finished (the bumped run would be reused),
    or comparing every run with one identity (the unaffected run would re-run)."""
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    versioned("1")
    first = run(path, tmp_path / "out")
    recorded = json.loads((first.out_dir / "runs" / "versioned" / "seed-0" / "identity.json").read_text())
    assert recorded["components"]["codec"] == {"name": "fixture-versioned", "version": "1",
                                               "plugin": "fixture_versioned_plugin", "plugin_version": "local"}
    capsys.readouterr()

    versioned("2")
    second = run(path, tmp_path / "out")
    assert second.out_dir == first.out_dir  # the recipe's results folder (its run id) is stable
    assert second.reused == ["plain/seed-0"]
    assert ("hitbench: versioned/seed-0: re-running: its components changed: codec fixture-versioned version 1 "
            "(fixture_versioned_plugin local) -> fixture-versioned version 2 (fixture_versioned_plugin local)"
            in capsys.readouterr().err)
    manifest = json.loads((second.out_dir / "manifest.json").read_text())
    assert manifest["runs"]["versioned/seed-0"]["components"]["codec"]["version"] == "2"
    assert manifest["runs"]["plain/seed-0"]["components"] == {
        "codec": {"name": "fixture-quantize", "version": "1", "plugin": "hitbench_fixture_plugin",
                  "plugin_version": "local"},
        "dataset": {"name": "fixture-noise", "version": "1", "plugin": "hitbench_fixture_plugin",
                    "plugin_version": "local"},
        "metric.fixture-mae": {"name": "fixture-mae", "version": "1", "plugin": "hitbench_fixture_plugin",
                               "plugin_version": "local"}}
    summary = json.loads((second.out_dir / "runs" / "versioned" / "seed-0" / "summary.json").read_text())
    assert summary["components"]["codec"]["version"] == "2"
    assert ("- Component versions: fixture_versioned_plugin local: fixture-versioned 2; hitbench_fixture_plugin "
            "local: fixture-mae 1, fixture-noise 1, fixture-quantize 1\n" in (second.out_dir / "table.md").read_text())
    assert list(pd.read_csv(second.out_dir / "metrics.csv").columns) == COLUMNS  # the results schema is unchanged

    third = run(path, tmp_path / "out")
    assert third.reused == ["plain/seed-0", "versioned/seed-0"]
    assert "re-running" not in capsys.readouterr().err


def test_a_finished_run_without_a_recorded_identity_is_rerun_saying_why(versioned, tmp_path, capsys):
    """Kills: a missing identity.json read as "unchanged" (results of unknown component versions reused)."""
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    versioned("1")
    out_dir = run(path, tmp_path / "out").out_dir
    (out_dir / "runs" / "plain" / "seed-0" / "identity.json").unlink()
    capsys.readouterr()
    assert run(path, tmp_path / "out").reused == ["versioned/seed-0"]
    assert ("hitbench: plain/seed-0: re-running: it records no component versions (identity.json)"
            in capsys.readouterr().err)


def test_the_identity_names_every_component_a_variant_uses_with_a_wrapper_tokenizers_base(fixture_plugin, tmp_path):
    """Kills: component_identity leaving out the base a wrapper tokenizer wraps, the generator, the evaluation
    dataset or the metrics of a stage."""
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        recipe: fixture-identity-parts
        dataset: {name: fixture-noise, eval_clips: 2}
        eval_dataset: {name: fixture-noise, config: {seed: 1}}
        evaluate:
          reconstruction: [fixture-mae]
          curve: [fixture-mae]
          generation: {metrics: [fixture-mean]}
        variants:
          m:
            tokenizer: {name: masked, config: {base: {name: fixture-pool}}}
            generator: {name: fixture-unigram}
        """))
    (variant,) = load_recipe(path).variants
    identity = component_identity(variant, get_catalog())
    assert {field: part["name"] for field, part in identity.items()} == {
        "tokenizer": "masked", "tokenizer.base": "fixture-pool", "generator": "fixture-unigram",
        "dataset": "fixture-noise", "eval_dataset": "fixture-noise", "metric.fixture-mae": "fixture-mae",
        "metric.fixture-mean": "fixture-mean"}
    assert identity["tokenizer"]["plugin"] == "hitvideo-bench"  # a distribution's components name it
    assert identity["tokenizer.base"]["plugin"] == "hitbench_fixture_plugin"  # a -p module's, the module
