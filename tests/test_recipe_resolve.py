"""Resolving a recipe in detail: the expanded recipe written to resolved.yaml and its run id, sweeps through
nested and missing keys, and the shape checks of tokenizers (training data, layer counts)."""

from __future__ import annotations

import pytest

from hitvideo_bench.errors import BadInput
from hitvideo_bench.recipe import load_recipe
from test_recipe import BASE, write

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe: one fixture-codec variant swept over two levels
SWEPT = (BASE + "description: first\nvariants:\n  q: {codec: {name: fixture-quantize}}\n"
         "sweep: {codec.config.levels: [2, 8]}\n")


def test_the_resolved_recipe_lists_each_expanded_variant_and_no_sweep(tmp_path):
    """Kills: as_dict keeping the sweep, dropping a variant or its values, or writing unset (None) fields."""
    resolved = load_recipe(write(tmp_path, "r.yaml", SWEPT))
    data = resolved.as_dict()
    assert "sweep" not in data and data["recipe"] == "r" and data["seeds"] == [0]
    assert list(data["variants"]) == ["q-levels=2", "q-levels=8"]
    variant = data["variants"]["q-levels=8"]
    assert variant["codec"] == {"name": "fixture-quantize", "preset": "tiny", "config": {"levels": 8, "fail": False}}
    assert variant["dataset"]["eval_clips"] == 2 and "label" not in variant and "eval_dataset" not in variant


def test_the_run_id_ignores_the_description_only(tmp_path):
    """Kills: run_id hashing the description (a reworded recipe would re-run) or ignoring what was resolved."""
    first = load_recipe(write(tmp_path, "r.yaml", SWEPT)).run_id()
    assert load_recipe(write(tmp_path, "r.yaml", SWEPT.replace("first", "second"))).run_id() == first
    assert load_recipe(write(tmp_path, "r.yaml", SWEPT.replace("[2, 8]", "[2, 9]"))).run_id() != first
    assert load_recipe(write(tmp_path, "r.yaml", SWEPT), ["seeds=[1]"]).run_id() != first


def test_a_sweep_creates_nested_config_keys_but_not_recipe_keys(tmp_path):
    """Kills: _set_dotted refusing new keys inside a component config, or accepting them outside one."""
    nested = SWEPT.replace("codec.config.levels: [2, 8]", "dataset.config.seed: [1, 2]")
    resolved = load_recipe(write(tmp_path, "r.yaml", nested))
    assert [v.spec.dataset.config["seed"] for v in resolved.variants] == [1, 2]
    missing = SWEPT.replace("codec.config.levels: [2, 8]", "evaluate.batch_sise: [1, 2]")
    with pytest.raises(BadInput, match=r"sweep.evaluate.batch_sise: sweep over a key that does not exist: "
                                       r"'evaluate.batch_sise' \(allowed here: batch_size, compression, curve, "):
        load_recipe(write(tmp_path, "r.yaml", missing))
    deep_missing = SWEPT.replace("codec.config.levels: [2, 8]", "evaluate.nope.x: [1, 2]")
    with pytest.raises(BadInput, match=r"sweep over a key that does not exist: 'evaluate.nope' \(allowed here: "):
        load_recipe(write(tmp_path, "r.yaml", deep_missing))
    through_a_value = SWEPT.replace("codec.config.levels: [2, 8]", "dataset.name.x: [1]")
    with pytest.raises(BadInput, match=r"sweep over a key that does not exist: 'dataset.name' \(allowed here: "
                                       r"config, eval_clips, eval_split, name, train_split\)"):
        load_recipe(write(tmp_path, "r.yaml", through_a_value))


def test_tokenizer_shape_checks_name_the_layers_and_the_training_data(tmp_path):
    """Kills: _check_shapes skipping the layer-count check, or the training shape of an eval_dataset variant."""
    too_many = BASE + "variants:\n  t: {tokenizer: {name: fixture-pool}, evaluate: {layers: [1, 3]}}\n"
    with pytest.raises(BadInput, match=r":6: variants.t.evaluate.layers: fixture-pool has 2 layers; cannot decode "
                                       r"from \[3\]"):
        load_recipe(write(tmp_path, "r.yaml", too_many))
    other_eval = (BASE.replace("fixture-noise, eval_clips: 2", "fixture-noise, eval_clips: 2, config: {height: 12}")
                  + "eval_dataset: {name: fixture-noise}\nvariants:\n  t: {tokenizer: {name: fixture-pool}}\n")
    with pytest.raises(BadInput, match=r"variants.t.tokenizer: clip shape 4x12x16 \(training dataset fixture-noise\): "
                                       r"fixture-pool needs frames divisible by 2 and sides by 8"):
        load_recipe(write(tmp_path, "r.yaml", other_eval))
    assert load_recipe(write(tmp_path, "r.yaml", too_many.replace("[1, 3]", "all"))).variants[0].clip_shape == \
        (4, 16, 16)
