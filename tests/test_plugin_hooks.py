"""Registration through pluggy: a misspelled hook name is an error naming the plugin and the hook (bad input for a
``-p`` module, a plugin failure for an entry point), and the catalog learns who registers through its public
``registering`` block."""

from __future__ import annotations

import importlib.metadata as md
import sys
import types

import pytest

from hitvideo_bench import manager
from hitvideo_bench.catalog import Catalog
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import load_plugins

#: fixture plugin source: registers a codec, and implements a hook whose name has a typo
MISSPELLED = """\
from hitvideo_bench import hookimpl

@hookimpl
def hitbench_register_components(catalog):
    catalog.add("codec", "fixture-typo-codec", "hitbench_fixture_plugin:FixtureQuantizeCodec")

@hookimpl
def hitbench_run_finish(recipe, variant, seed, metrics, run_dir):
    pass
"""


@pytest.fixture
def misspelled_plugin(monkeypatch) -> str:
    """Fixture: the module ``fixture_misspelled_plugin`` (source :data:`MISSPELLED`) importable by name."""
    module = types.ModuleType("fixture_misspelled_plugin")
    exec(MISSPELLED, module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_a_misspelled_hook_in_a_dash_p_module_is_bad_input_naming_module_and_hook(misspelled_plugin):
    """Kills: dropping the unknown-hook check (pluggy registers such a hook silently, and it is never called)."""
    with pytest.raises(BadInput) as info:
        load_plugins([misspelled_plugin])
    assert str(info.value).startswith(
        "-p fixture_misspelled_plugin: @hookimpl 'hitbench_run_finish' is not a hitbench hook. "
        "(did you mean 'hitbench_run_finished'?) Allowed: hitbench_recipe_loaded, hitbench_register_components,")


def test_a_misspelled_hook_in_an_entry_point_plugin_is_a_plugin_failure_and_the_others_load(misspelled_plugin,
                                                                                           monkeypatch):
    """Kills: an entry-point plugin with an unknown hook kept registered (its components would be used) or taking
    the other plugins down."""
    real = md.entry_points

    def with_the_fixture(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == manager.ENTRY_POINT_GROUP:
            found.append(md.EntryPoint("fixture-typo", misspelled_plugin, manager.ENTRY_POINT_GROUP))
        return found

    monkeypatch.setattr(manager.md, "entry_points", with_the_fixture)
    with pytest.warns(UserWarning, match="hitbench plugin 'fixture-typo' failed to load: @hookimpl "
                                         "'hitbench_run_finish' is not a hitbench hook"):
        plugins = load_plugins()
    assert [(f.name, f.error.split(".")[0]) for f in plugins.failures] == \
        [("fixture-typo", "@hookimpl 'hitbench_run_finish' is not a hitbench hook")]
    assert "fixture-typo" not in plugins.info and plugins.pm.get_plugin("fixture-typo") is None
    assert "fixture-typo-codec" not in plugins.catalog.names("codec")  # nothing of the rejected plugin is used
    assert "x264" in plugins.catalog.names("codec")
    plugins.pm.check_pending()  # what is left has a spec for every hook


def test_registering_names_the_provider_of_what_is_added_and_restores_the_previous_one():
    """Kills: registering() not restoring the provider on leaving (a later add would be credited to the plugin
    before), or not applying it at all."""
    catalog = Catalog()
    with catalog.registering("outer", "outer-dist", "1.0") as same:
        assert same is catalog
        with catalog.registering("inner", "inner-dist", "2.0"):
            catalog.add("codec", "a", "hitbench_fixture_plugin:FixtureQuantizeCodec")
        catalog.add("codec", "b", "hitbench_fixture_plugin:FixtureQuantizeCodec")
    catalog.add("codec", "c", "hitbench_fixture_plugin:FixtureQuantizeCodec")
    providers = {s.name: (s.plugin, s.distribution, s.dist_version) for s in catalog.specs("codec")}
    assert providers == {"a": ("inner", "inner-dist", "2.0"), "b": ("outer", "outer-dist", "1.0"),
                         "c": ("?", "?", "?")}


def test_the_plugin_manager_sets_no_private_state_on_the_catalog():
    """Kills: manager.py going back to setting the catalog's private attributes instead of ``registering``."""
    source = open(manager.__file__, encoding="utf-8").read()
    assert "catalog._" not in source
    plugins = load_plugins(["hitbench_fixture_plugin"])
    spec = plugins.catalog.get("codec", "fixture-quantize")
    assert (spec.plugin, spec.distribution, spec.dist_version) == ("hitbench_fixture_plugin", "-p", "local")
    assert plugins.catalog.get("codec", "x264").distribution == "hitvideo-bench"
