"""Recipes: safe YAML, extends, --set, sweeps, scale, and located errors that list allowed values."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_plugins
from hitvideo_bench.recipe import load_recipe, parse_set


@pytest.fixture(autouse=True)
def fixture_plugin():
    get_plugins(["hitbench_fixture_plugin"])
    yield
    get_plugins([])


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
version: 1
seeds: [0]
dataset: {name: fixture-noise, eval_clips: 2}
evaluate: {reconstruction: [fixture-mae], batch_size: 2}
"""


def test_extends_set_and_sweep(tmp_path):
    write(tmp_path, "_base/base.yaml", BASE)
    path = write(tmp_path, "r.yaml", """\
        extends: _base/base.yaml
        variants:
          q: {codec: {name: fixture-quantize}}
        sweep: {codec.config.levels: [2, 8]}
        """)
    resolved = load_recipe(path, ["seeds=[1, 2]", "dataset.eval_clips=3"])
    assert resolved.name == "r"
    assert resolved.recipe.seeds == [1, 2]
    assert [v.name for v in resolved.variants] == ["q-levels=2", "q-levels=8"]
    assert [v.spec.codec.config["levels"] for v in resolved.variants] == [2, 8]
    assert all(v.spec.dataset.eval_clips == 3 for v in resolved.variants)
    assert resolved.variants[0].clip_shape == (4, 16, 16)
    # the run id follows the resolved content, not the file
    assert load_recipe(path, ["seeds=[1, 2]", "dataset.eval_clips=3"]).run_id() == resolved.run_id()
    assert load_recipe(path).run_id() != resolved.run_id()


def test_scale_sets_every_preset(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "scale: small\nvariants:\n  q: {codec: {name: fixture-quantize}}\n")
    variant = load_recipe(path).variants[0]
    assert variant.spec.dataset.preset == "small" and variant.spec.codec.preset == "small"
    assert variant.clip_shape == (4, 32, 32)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(BadInput, match=r"r.yaml:5: invalid YAML"):
        load_recipe(path)


def test_unknown_field_located_with_suggestion(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}}\ntabel: {}\n")
    with pytest.raises(BadInput) as err:
        load_recipe(path)
    assert f"{path.resolve()}:7: tabel: unknown field. (did you mean 'table'?)" in str(err.value)


def test_wrong_type_and_bad_component_config_collected_together(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants:\n"
                 "  a: {codec: {name: fixture-quantize, config: {levels: many}}}\n"
                 "  b: {codec: {name: fixture-quantise}}\n")
    with pytest.raises(BadInput) as err:
        load_recipe(path)
    text = str(err.value)
    assert ":6: variants.a.codec.config.levels: Input should be a valid integer" in text
    assert ":7: variants.b.codec.name: unknown codec 'fixture-quantise'. (did you mean 'fixture-quantize'?)" in text
    assert len(err.value.problems) == 2


def test_inherited_field_errors_point_at_the_recipe_level_line(tmp_path):
    path = write(tmp_path, "r.yaml", BASE.replace("fixture-mae", "fixture-mea")
                 + "variants:\n  a: {codec: {name: fixture-quantize}}\n  b: {codec: {name: fixture-quantize}}\n")
    with pytest.raises(BadInput) as err:
        load_recipe(path)
    assert len(err.value.problems) == 1
    assert ":4: evaluate.reconstruction.0: unknown metric 'fixture-mea'" in str(err.value)


def test_extends_cycle_and_missing_file(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(BadInput, match="extends cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_recipe(tmp_path / "a.yaml")
    with pytest.raises(BadInput, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    write(tmp_path, "c.yaml", "extends: gone.yaml\n")
    with pytest.raises(BadInput, match="extended recipe not found: .*gone.yaml"):
        load_recipe(tmp_path / "c.yaml")


def test_sweep_over_a_missing_key(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}}\n"
                 "sweep: {codec.confg.levels: [2, 3]}\n")
    with pytest.raises(BadInput, match=r":7: sweep.codec.confg.levels: sweep over a key that does not exist: "
                                       r"'codec.confg' \(allowed here: name\)"):
        load_recipe(path)
    path = write(tmp_path, "r2.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}}\n"
                 "sweep: {codec.config.levelz: [2, 3]}\n")
    with pytest.raises(BadInput, match=r"variants.q.codec.config.levelz: unknown field"):
        load_recipe(path)


def test_shape_a_component_cannot_take(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}}\n"
                 "  r: {codec: {name: fixture-quantize}, dataset: {config: {height: 12}}}\n")
    with pytest.raises(BadInput, match=r":7: variants.r.codec: clip shape 4x12x16 .* needs height divisible by 8"):
        load_recipe(path)


def test_training_crop_a_tokenizer_cannot_take(tmp_path):
    """single-layer resizes 64 px to 72 before encoding and crops after that: a 36-pixel crop is 4.5 tokens,
    which its 8x down-sampling cannot take; the recipe is rejected before anything trains."""
    recipe = ("version: 1\nseeds: [0]\ndataset: {name: synthetic-shapes}\nevaluate: {reconstruction: [psnr]}\n"
              "variants:\n  s: {tokenizer: {name: single-layer, config: {crop_size: 36}}}\n")
    with pytest.raises(BadInput, match=r":6: variants.s.tokenizer: .*crop_frames None / crop_size 36 on 16x64x64 "
                                       r"clips: height 36 does not suit"):
        load_recipe(write(tmp_path, "r.yaml", recipe))
    load_recipe(write(tmp_path, "ok.yaml", recipe.replace("crop_size: 36", "crop_size: 40")))


def test_training_clips_of_another_dataset_are_checked_and_named(tmp_path):
    """With an eval_dataset, the tokenizer trains on the training dataset's clips: those are checked (8 frames
    do not suit hitvideo's 16-frame temporal down-sampling) and the message names them."""
    recipe = ("version: 1\nseeds: [0]\ndataset: {name: synthetic-shapes, config: {frames: 8}}\n"
              "eval_dataset: {name: synthetic-shapes}\nevaluate: {reconstruction: [psnr]}\n"
              "variants:\n  h: {tokenizer: {name: hitvideo}}\n")
    with pytest.raises(BadInput, match=r"variants.h.tokenizer: clip shape 8x64x64 \(training dataset "
                                       r"synthetic-shapes\): .*frames 8 does not suit"):
        load_recipe(write(tmp_path, "r.yaml", recipe))
    load_recipe(write(tmp_path, "ok.yaml", recipe.replace("frames: 8", "frames: 32")))


@pytest.mark.parametrize("item, message", [("seeds", "malformed override"), ("=3", "malformed override"),
                                           ("a..b=1", "malformed override"), ("a=[1,", "not valid YAML")])
def test_malformed_set(item, message):
    with pytest.raises(BadInput, match=message):
        parse_set(item)


def test_set_values_are_typed():
    assert parse_set("a.b=3") == ("a.b", 3)
    assert parse_set("a=[1, 2]") == ("a", [1, 2])
    assert parse_set("a=paper") == ("a", "paper")
    assert parse_set("a=") == ("a", "")


def test_variant_rules(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q: {dataset: {name: fixture-noise}}\n")
    with pytest.raises(BadInput, match="exactly one of 'tokenizer' or 'codec'"):
        load_recipe(path)
    path = write(tmp_path, "r2.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}}\n"
                 "plots: [{kind: pie, metric: psnr}]\n")
    with pytest.raises(BadInput, match=r"plots.0.kind: Input should be 'bar', 'line', 'layers', 'rd' or 'sweep', got 'pie'"):
        load_recipe(path)


def test_bundled_recipes_validate_and_stay_inside_the_project(monkeypatch):
    """Every recipe shipped in recipes/ is a valid recipe (shapes included) from the repository root, and
    none names a path outside the project (a fresh clone has nothing beside it)."""
    project = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(project)
    for path in sorted((project / "recipes").glob("*.yaml")):
        assert "../" not in path.read_text(encoding="utf-8"), path
        load_recipe(path)
