"""The plugin surface: plugins import only ``hitvideo_bench.api``, and every way a plugin can break the contract stops
``validate`` and ``run`` with exit 2 and a message naming the plugin, the component and what to do."""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest

from hitvideo_bench import api
from hitvideo_bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: every plugin module: the built-ins, the example plugin and the test fixture plugin
PLUGIN_MODULES = sorted([*(ROOT / "plugins").rglob("*.py"),
                         *(ROOT / "examples" / "hitbench-example-plugin" / "hitbench_example").rglob("*.py"),
                         ROOT / "tests" / "hitbench_fixture_plugin.py"])


def core_imports(path: Path) -> set[str]:
    """The ``hitvideo_bench`` modules ``path`` imports, at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                     if node.module == "hitvideo_bench" else [])
            found |= {n for n in names if n.split(".")[0] == "hitvideo_bench"}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hitvideo_bench"}
    return found


def test_every_plugin_module_imports_only_the_api_from_the_core():
    """Kills: a built-in (or the example, or the fixture) reaching into a core module a third-party plugin is not
    promised, so that what a built-in gets and what the docs offer drift apart."""
    assert len(PLUGIN_MODULES) > 20
    offending = {str(p.relative_to(ROOT)): sorted(core_imports(p) - {"hitvideo_bench.api"}) for p in PLUGIN_MODULES}
    assert {k: v for k, v in offending.items() if v} == {}
    assert any(core_imports(p) == {"hitvideo_bench.api"} for p in PLUGIN_MODULES)


def test_the_api_names_resolve_and_the_contract_version_is_checked():
    assert all(hasattr(api, name) for name in api.__all__)
    api.require_contract(api.CONTRACT_VERSION, "fixture")
    with pytest.raises(api.BadInput, match="plugin fixture is written for contract version 1.*Changelog"):
        api.require_contract(1, "fixture")


#: a recipe over the broken fixture components below: 2 train and 2 val clips of 4x16x16 noise
RECIPE = """\
version: 1
recipe: broken
dataset: {name: fixture-noise, eval_clips: 2}
evaluate: {batch_size: 2, reconstruction: [fixture-mae]}
variants:
  it: {tokenizer: {name: TOKENIZER}}
"""

#: fixture plugin modules, each breaking the contract in one way (the fixture plugin's pool tokenizer, changed)
BROKEN = {
    "wrong-task-type": ("""
class Broken(FixturePoolTokenizer):
    def training_task(self, data, device, *, shapes_only=False):
        return object()
""", r"Broken.training_task\(\) returned a object, not a TrainingTask: subclass hitvideo_bench.api.TrainingTask"),
    "missing-method": ("""
class Broken(FixturePoolTokenizer):
    pass
Broken.decode = Tokenizer.decode
Broken.__abstractmethods__ = frozenset({"decode"})
""", r"Broken does not implement decode"),
    "undeclared-train-settings": ("""
class Broken(FixturePoolTokenizer):
    train_settings = None
""", r"Broken implements training_task\(\) but does not declare train_settings"),
    "shapes-only-reads-data": ("""
class Broken(FixturePoolTokenizer):
    def training_task(self, data, device, *, shapes_only=False):
        len(data)  # reads the data even when built shapes_only (data None)
        return super().training_task(data, device, shapes_only=shapes_only)
""", r"shapes_only=True\) failed \(TypeError.*must not read data"),
    "hook-raises": ("""
Broken = FixturePoolTokenizer

@hookimpl
def hitbench_recipe_loaded(recipe, path):
    raise RuntimeError("the fixture hook breaks")
""", r"plugin broken_\w+: its hook hitbench_recipe_loaded raised RuntimeError: the fixture hook breaks"),
}
#: the cases only ``validate`` meets: a shapes_only task is built for the memory estimate alone
VALIDATE_ONLY = {"shapes-only-reads-data"}


def broken_plugin(case: str, monkeypatch) -> str:
    """Register the fixture module of ``case`` (``-p`` name): it registers tokenizer ``broken``."""
    source, _ = BROKEN[case]
    name = f"broken_{case.replace('-', '_')}"
    module = types.ModuleType(name)
    fixture = __import__("hitbench_fixture_plugin")
    module.__dict__.update({"FixturePoolTokenizer": fixture.FixturePoolTokenizer, "Tokenizer": api.Tokenizer,
                            "hookimpl": api.hookimpl})
    exec(source + """
@hookimpl
def hitbench_register_components(catalog):
    catalog.add("tokenizer", "broken", Broken)
""", module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return name


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_contract_stops_with_exit_2_naming_the_plugin_and_the_component(case, command, tmp_path, monkeypatch,
                                                                              capsys, isolated_cache):
    """Kills: a contract failure surfacing as a raw AttributeError/TypeError mid-run (exit 1, no component named)."""
    if command == "run" and case in VALIDATE_ONLY:
        pytest.skip("run builds no shapes_only task")
    plugin = broken_plugin(case, monkeypatch)
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(RECIPE.replace("TOKENIZER", "broken"))
    args = ["-p", "hitbench_fixture_plugin", "-p", plugin, command, str(recipe)]
    code = main(args + (["--out", str(tmp_path / "out")] if command == "run" else []))
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"plugin {plugin}" in err, err
    if case != "hook-raises":
        assert "tokenizer 'broken'" in err, err
    assert re.search(BROKEN[case][1], err), err


def test_validate_says_a_component_that_trains_through_its_own_fit_is_trained_not_untrainable(tmp_path, capsys):
    """Kills: validate calling a component "not trainable" when it trains through its own fit() (run trains it)."""
    recipe = tmp_path / "fit.yaml"
    recipe.write_text(RECIPE.replace("  it: {tokenizer: {name: TOKENIZER}}",
                                     "  it: {tokenizer: {name: fixture-pool}, generator: {name: fixture-unigram}}"))
    assert main(["-p", "hitbench_fixture_plugin", "validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "FixtureUnigramGenerator trains through its own fit(), not the shared trainer" in out, out
    assert "not trainable" not in out
