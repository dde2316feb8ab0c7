"""A key given twice in one mapping of a recipe (YAML would keep the last silently) is an error naming the file,
the line of the repeat and the key, at any depth, in a flow mapping, and in a file the recipe extends."""

from __future__ import annotations

import pytest

from hitvideo_bench.errors import BadInput
from hitvideo_bench.recipe import load_recipe
from test_recipe import BASE, write

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: fixture recipe body: one fixture-codec variant
VARIANTS = "variants:\n  q: {codec: {name: fixture-quantize}}\n"


def problems(path) -> list[str]:
    with pytest.raises(BadInput) as info:
        load_recipe(path)
    return [str(p) for p in info.value.problems]


def test_a_repeated_top_level_key_names_file_line_and_key(tmp_path):
    """Kills: the duplicate check removed (the second ``seeds`` would win without a word)."""
    path = write(tmp_path, "r.yaml", BASE + VARIANTS + "seeds: [1]\n")
    assert problems(path) == [f"{path}:7: seeds: duplicate key 'seeds' (first given on line 2); YAML would keep "
                              "only the last: remove one"]


def test_repeats_at_any_depth_and_in_flow_mappings_are_all_reported(tmp_path):
    """Kills: the check looking at the top level only, or stopping at the first repeat."""
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q:\n    codec: {name: fixture-quantize, name: other}\n"
                 "    label: a\n    label: b\n")
    assert problems(path) == [
        f"{path}:7: variants.q.codec.name: duplicate key 'name' (first given on line 7); YAML would keep only the "
        "last: remove one",
        f"{path}:9: variants.q.label: duplicate key 'label' (first given on line 8); YAML would keep only the last: "
        "remove one"]


def test_a_repeat_in_an_extended_file_names_that_file(tmp_path):
    """Kills: the check applied to the named recipe only, not to the files it extends."""
    base = write(tmp_path, "_base/base.yaml", BASE + "evaluate: {batch_size: 1}\n")
    path = write(tmp_path, "r.yaml", "extends: _base/base.yaml\n" + VARIANTS)
    assert problems(path) == [f"{base.resolve()}:5: evaluate: duplicate key 'evaluate' (first given on line 4); "
                              "YAML would keep only the last: remove one"]


def test_the_same_key_in_different_mappings_and_an_overriding_extends_are_fine(tmp_path):
    """Kills: a check that compares keys across mappings (``name`` of dataset and codec) or across files (a recipe
    overriding what it extends is the point of ``extends``)."""
    write(tmp_path, "_base/base.yaml", BASE)
    path = write(tmp_path, "r.yaml", "extends: _base/base.yaml\nseeds: [3]\n" + VARIANTS)
    assert load_recipe(path).recipe.seeds == [3]
