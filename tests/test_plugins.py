"""Plugin manager and catalog: discovery, -p / -p no:, failures, duplicates, did-you-mean."""

from __future__ import annotations

import sys
import types

import pluggy
import pytest

import hitvideo_bench as hb
from hitvideo_bench.catalog import Catalog
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import load_plugins

BUILTIN_NAMES = {
    "tokenizer": {"hitvideo", "single-layer"},
    "codec": {"x264", "x265", "svtav1"},
    "generator": {"ar-llama"},
    "metric": {"bpp", "bpp-entropy", "psnr", "ssim", "ms-ssim", "lpips", "fvd", "clipsim", "probe-fd", "prompt-acc"},
    "dataset": {"synthetic-shapes", "video-folder"},
}


def _module(name: str, source: str, monkeypatch) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(source, module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_builtins_register_through_the_entry_point_group():
    plugins = load_plugins()
    assert "builtin" in plugins.info
    assert plugins.info["builtin"][0] == "hitvideo-bench"
    for kind, names in BUILTIN_NAMES.items():
        assert names <= set(plugins.catalog.names(kind)), kind
        for name in names:
            assert plugins.catalog.get(kind, name).plugin == "builtin"


def test_every_builtin_component_loads_and_has_a_config():
    catalog = load_plugins().catalog
    for spec in catalog.specs():
        cls = spec.load()
        config = cls.Config.from_preset("tiny")
        assert config.preset == "tiny"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BadInput, match=r"did you mean 'psnr'\?.*Allowed: .*ssim"):
        hb.create_metric("pnsr")


def test_dash_p_loads_a_module_and_no_blocks_it(monkeypatch):
    plugins = load_plugins(["hitbench_fixture_plugin"])
    assert "fixture-quantize" in plugins.catalog.names("codec")
    blocked = load_plugins(["hitbench_fixture_plugin", "no:hitbench_fixture_plugin"])
    assert "fixture-quantize" not in blocked.catalog.names("codec")
    no_builtin = load_plugins(["no:builtin"])
    assert no_builtin.catalog.names("codec") == []


def test_missing_dash_p_module_is_bad_input():
    with pytest.raises(BadInput, match="no module named 'no_such_plugin_xyz'"):
        load_plugins(["no_such_plugin_xyz"])


def test_broken_plugin_is_reported_and_others_still_load(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_fixture.py").write_text("import hitvideo_bench\nraise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="broken_plugin_fixture"):
        plugins = load_plugins(["broken_plugin_fixture"])
    assert [f.name for f in plugins.failures] == ["broken_plugin_fixture"]
    assert "boom at import" in plugins.failures[0].error
    assert "x264" in plugins.catalog.names("codec")


def test_duplicate_component_names_both_providers(monkeypatch):
    _module("dup_plugin_fixture", (
        "from hitvideo_bench import hookimpl\n"
        "@hookimpl\n"
        "def hitbench_register_components(catalog):\n"
        "    catalog.add('codec', 'x264', 'somewhere:Else')\n"), monkeypatch)
    with pytest.raises(BadInput, match=r"codec 'x264' is registered twice: by plugin builtin .* by plugin dup_plugin_fixture"):
        load_plugins(["dup_plugin_fixture"])


def test_hookimpl_with_a_wrong_signature_is_rejected_by_name(monkeypatch):
    _module("wrong_sig_fixture", (
        "from hitvideo_bench import hookimpl\n"
        "@hookimpl\n"
        "def hitbench_register_components(catalog, nonsense):\n"
        "    pass\n"), monkeypatch)
    with pytest.warns(UserWarning):
        plugins = load_plugins(["wrong_sig_fixture"])
    failure = plugins.failures[0]
    assert failure.name == "wrong_sig_fixture" and "nonsense" in failure.error


def test_catalog_rejects_a_target_of_the_wrong_base():
    catalog = Catalog()
    catalog.add("codec", "not-a-codec", "collections:OrderedDict")
    with pytest.raises(BadInput, match="not a subclass of hitvideo_bench.api.Codec"):
        catalog.get("codec", "not-a-codec").load()


def test_list_components_and_patterns():
    assert set(hb.list_components("codec")) >= {"x264", "x265", "svtav1"}
    assert hb.list_components("metric", "bpp*") == ["bpp", "bpp-entropy"]
    everything = hb.list_components()
    assert set(everything) == {"tokenizer", "codec", "generator", "metric", "dataset"}


def test_config_unknown_key_names_the_field():
    with pytest.raises(BadInput, match=r"levelz: unknown field. \(did you mean 'levels'\?\)"):
        load_plugins(["hitbench_fixture_plugin"]).catalog.create("codec", "fixture-quantize",
                                                                 overrides={"levelz": 3})


def test_pluggy_marker_project_name():
    assert isinstance(hb.hookimpl, pluggy.HookimplMarker)
