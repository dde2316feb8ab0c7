"""The catalog in detail: what a registration records, its errors, glob listing, string targets, and the
"did you mean ... Allowed: ..." of an unknown field at any depth of a config or a recipe."""

from __future__ import annotations

import pytest

from hitvideo_bench.catalog import Catalog
from hitvideo_bench.components import Codec, EmptyConfig
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("fixture_plugin")


class FixtureCodec(Codec):
    """Fixture: a codec class for registrations made in these tests (never compresses anything)."""

    Config = EmptyConfig

    def __init__(self, config, **dependencies):
        super().__init__(config)
        self.dependencies = dependencies

    def compress(self, video):
        raise AssertionError("fixture codec: made for registrations, never asked to compress")


def fixture_catalog():
    """Fixture: an empty catalog registering as plugin ``p`` of distribution ``dist`` 1.2 (``with ... as catalog``)."""
    return Catalog().registering("p", "dist", "1.2")


def test_a_registration_records_everything_about_its_provider():
    """Kills: add() dropping the description, version, plugin, distribution or its version from the spec."""
    with fixture_catalog() as catalog:
        catalog.add("codec", "c", FixtureCodec, description="a fixture codec", version="3")
        spec = catalog.get("codec", "c")
        assert (spec.kind, spec.name, spec.description, spec.version) == ("codec", "c", "a fixture codec", "3")
        assert (spec.plugin, spec.distribution, spec.dist_version) == ("p", "dist", "1.2")
        assert catalog.specs("codec") == [spec] and catalog.names("tokenizer") == []
        catalog.add("codec", "plain", FixtureCodec)
        assert (catalog.get("codec", "plain").description, catalog.get("codec", "plain").version) == ("", "1")


def test_create_builds_the_preset_asked_for():
    """Kills: Catalog.create passing no preset on (every component would be built at its default, tiny)."""
    assert get_catalog().create("dataset", "fixture-noise", preset="small").clip_shape == (4, 32, 32)
    assert get_catalog().create("dataset", "fixture-noise").clip_shape == (4, 16, 16)


def test_registration_and_lookup_errors_name_what_is_wrong():
    """Kills: the kind checks of add / get / specs removed, or their messages and suggestions lost."""
    with fixture_catalog() as catalog:
        with pytest.raises(BadInput, match=r"^plugin p: unknown component kind 'codex'. \(did you mean 'codec'\?\) "
                                           r"Allowed: codec, dataset, generator, metric, tokenizer$"):
            catalog.add("codex", "c", FixtureCodec)
        catalog.add("codec", "c", FixtureCodec)
        with catalog.registering("q", "other", "0.1"), \
                pytest.raises(BadInput, match=r"^codec 'c' is registered twice: by plugin p \(dist\) and by plugin q "
                                              r"\(other\). Disable one with -p no:NAME.$"):
            catalog.add("codec", "c", FixtureCodec)
        for call in (lambda: catalog.get("codex", "c"), lambda: catalog.specs("codex")):
            with pytest.raises(BadInput, match=r"^unknown component kind 'codex'. \(did you mean 'codec'\?\)"):
                call()
        with pytest.raises(BadInput, match=r"^unknown codec 'd'. Allowed: c$"):
            catalog.get("codec", "d")


def test_specs_filter_by_kind_and_glob_in_name_order():
    """Kills: specs() ignoring its pattern or kind, or listing unsorted."""
    with fixture_catalog() as catalog:
        for name in ("zeta-2", "alpha-1", "alpha-2"):
            catalog.add("codec", name, FixtureCodec)
        catalog.add("metric", "alpha-3", "hitbench_fixture_plugin:FixtureMAE")
        assert [s.name for s in catalog.specs("codec")] == ["alpha-1", "alpha-2", "zeta-2"]
        assert [s.name for s in catalog.specs("codec", "alpha*")] == ["alpha-1", "alpha-2"]
        assert [(s.kind, s.name) for s in catalog.specs(pattern="alpha-*")] == \
            [("codec", "alpha-1"), ("codec", "alpha-2"), ("metric", "alpha-3")]


def test_a_string_target_is_imported_once_and_checked():
    """Kills: load() not following dotted attributes, not caching the class, or accepting a missing target."""
    with fixture_catalog() as catalog:
        catalog.add("codec", "nested", "test_catalog:FixtureCodec.Config")  # a class, but not a codec
        catalog.add("codec", "missing", "test_catalog:NoSuchThing")
        catalog.add("codec", "ok", "test_catalog:FixtureCodec")
        with pytest.raises(BadInput, match=r"codec 'nested' \(plugin p\): .*EmptyConfig.* is not a subclass of "
                                           r"hitvideo_bench.api.Codec"):
            catalog.get("codec", "nested").load()
        with pytest.raises(BadInput, match=r"codec 'missing' \(plugin p\): cannot load 'test_catalog:NoSuchThing': "):
            catalog.get("codec", "missing").load()
        spec = catalog.get("codec", "ok")
        assert spec.load() is FixtureCodec and spec._cls is FixtureCodec and spec.config_cls is EmptyConfig
        codec = catalog.create("codec", "ok", tokenizer="a dependency")
        assert codec.dependencies == {"tokenizer": "a dependency"} and codec.config.preset == "tiny"


@pytest.mark.parametrize("overrides, field, allowed", [
    ({"widht": 2}, "cfg.widht", "(did you mean 'width'?) Allowed: preset, train, width"),
    ({"train": {"stepz": 2}}, "cfg.train.stepz",
     "(did you mean 'steps'?) Allowed: batch_size, betas, ema"),
])
def test_an_unknown_config_field_at_any_depth_lists_the_fields_there(overrides, field, allowed):
    """Kills: _allowed_fields not descending into a nested model (train:) or listing the wrong model's fields."""
    with pytest.raises(BadInput) as info:
        get_catalog().make_config("tokenizer", "fixture-pool", None, overrides, field_prefix="cfg")
    (problem,) = info.value.problems
    assert problem.field == field and problem.message.startswith("unknown field. " + allowed)


def test_an_unknown_field_inside_a_list_of_models_and_a_bad_literal(tmp_path):
    """Kills: _allowed_fields stopping at a list index (plots.0), or the literal error losing the value given."""
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nrecipe: r\nscale: huge\ndataset: {name: fixture-noise}\n"
                    "variants: {q: {codec: {name: fixture-quantize}}}\nplots: [{kindd: bar, metric: m}]\n")
    with pytest.raises(BadInput) as info:
        load_recipe(path)
    text = str(info.value)
    assert f"{path}:6: plots.0.kindd: unknown field. (did you mean 'kind'?) Allowed: by, file, groups, kind, " \
           "metric, title, x" in text
    assert f"{path}:3: scale: Input should be 'tiny', 'small' or 'paper', got 'huge'" in text
