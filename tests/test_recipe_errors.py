"""The errors a recipe author reads: each names the file and line, the field, and what is allowed there.

Metrics used for a stage they do not serve, component-less evaluations, duplicate names from a sweep, claims and
plots that name what the recipe does not have, shapes of another dataset, and the files and overrides the recipe
is read from. The messages are compared whole: they are the interface of ``hitbench validate``.
"""

from __future__ import annotations

import pytest

from hitvideo_bench.errors import BadInput
from hitvideo_bench.recipe import load_recipe
from test_recipe import BASE, write

pytestmark = pytest.mark.usefixtures("fixture_plugin")

#: one fixture-codec variant
CODEC = "variants:\n  q: {codec: {name: fixture-quantize}}\n"


def metrics() -> str:
    """Every registered metric (built-ins, the fixture plugin and any installed plugin, such as the example's),
    as an unknown metric's message lists them."""
    from hitvideo_bench.manager import get_catalog

    return ", ".join(sorted(get_catalog().names("metric")))


def problems(path, sets=()) -> list[str]:
    """The problems ``load_recipe`` reports for ``path``, as printed."""
    with pytest.raises(BadInput) as info:
        load_recipe(path, sets)
    return [str(p) for p in info.value.problems]


# ------------------------------------------------------------------------------------------ metrics


def test_a_metric_of_another_stage_names_the_stage_and_those_it_serves(tmp_path):
    """Kills: _check_metrics not checking a metric's stages, checking reconstruction and curve metrics against the
    generation stage (or the reverse), or misplacing the message (field index, recipe-level line)."""
    recon = write(tmp_path, "r.yaml", BASE.replace("[fixture-mae]", "[fixture-mae, fixture-mean]") + CODEC)
    assert problems(recon) == [f"{recon}:4: evaluate.reconstruction.1: metric 'fixture-mean' does not apply to "
                               "reconstruction (it serves: generation)"]
    curve = write(tmp_path, "c.yaml", BASE + "variants:\n  t: {tokenizer: {name: fixture-pool}, "
                                             "evaluate: {curve: [fixture-mean]}}\n")
    assert problems(curve) == [f"{curve}:6: variants.t.evaluate.curve.0: metric 'fixture-mean' does not apply to "
                               "reconstruction (it serves: generation)"]
    generation = write(tmp_path, "g.yaml", BASE + "variants:\n  t: {tokenizer: {name: fixture-pool}, generator: "
                       "{name: fixture-unigram}, evaluate: {generation: {metrics: [fixture-mean, fixture-mae]}}}\n")
    assert problems(generation) == [f"{generation}:6: variants.t.evaluate.generation.metrics.1: metric 'fixture-mae' "
                                    "does not apply to generation (it serves: reconstruction)"]
    fine = write(tmp_path, "ok.yaml", BASE + "variants:\n  t: {tokenizer: {name: fixture-pool}, generator: "
                 "{name: fixture-unigram}, evaluate: {curve: [fixture-mae], generation: {metrics: [fixture-mean]}}}\n")
    assert load_recipe(fine).variants[0].spec.evaluate.generation.metrics == ["fixture-mean"]


def test_an_unknown_metric_in_each_list_is_located_with_the_allowed_names(tmp_path):
    """Kills: _check_metrics skipping the curve or generation list, or locating an unknown metric elsewhere than
    its list item."""
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  t:\n    tokenizer: {name: fixture-pool}\n"
                 "    generator: {name: fixture-unigram}\n    evaluate:\n      curve: [fixture-mea]\n"
                 "      generation: {metrics: [fixture-men]}\n")
    assert problems(path) == [
        f"{path}:10: variants.t.evaluate.curve.0: unknown metric 'fixture-mea'. (did you mean 'fixture-mean'?) "
        f"Allowed: {metrics()}",
        f"{path}:11: variants.t.evaluate.generation.metrics.0: unknown metric 'fixture-men'. (did you mean "
        f"'fixture-mean'?) Allowed: {metrics()}"]


def test_metric_config_errors_name_the_metric_field_and_its_line(tmp_path):
    """Kills: _check_metrics not validating ``metric_config``, or not naming and locating its problems (a variant's
    own line; the recipe-level line for an inherited one)."""
    own = write(tmp_path, "r.yaml", BASE + "variants:\n  q:\n    codec: {name: fixture-quantize}\n"
                "    evaluate: {metric_config: {fixture-mae: {nope: 1}}}\n")
    assert problems(own) == [f"{own}:8: variants.q.evaluate.metric_config.fixture-mae.nope: unknown field. "
                             "Allowed: preset"]
    inherited = write(tmp_path, "i.yaml", BASE.replace("batch_size: 2", "batch_size: 2,\n  metric_config: "
                                                       "{fixture-mae: {nope: 1}}") + CODEC)
    assert problems(inherited) == [f"{inherited}:5: evaluate.metric_config.fixture-mae.nope: unknown field. "
                                   "Allowed: preset"]


def test_metric_config_of_an_unknown_metric_names_its_field(tmp_path):
    """Kills: _check_metrics dropping the field of a ``metric_config`` entry whose metric does not exist (the
    message said only file:line, not which setting; fixed with this test)."""
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q:\n    codec: {name: fixture-quantize}\n"
                 "    evaluate: {metric_config: {fixture-mea: {}}}\n")
    assert problems(path) == [f"{path}:8: variants.q.evaluate.metric_config.fixture-mea: unknown metric "
                              f"'fixture-mea'. (did you mean 'fixture-mean'?) Allowed: {metrics()}"]
    inherited = write(tmp_path, "i.yaml", BASE.replace("batch_size: 2", "batch_size: 2, metric_config: "
                                                       "{fixture-mea: {}}") + CODEC)
    assert problems(inherited) == [f"{inherited}:4: evaluate.metric_config.fixture-mea: unknown metric "
                                   f"'fixture-mea'. (did you mean 'fixture-mean'?) Allowed: {metrics()}"]


def test_layers_or_a_curve_on_a_codec_needs_a_tokenizer(tmp_path):
    """Kills: the tokenizer check of _check_metrics removed, testing only one of layers and curve, or naming the
    wrong field."""
    for evaluate, fld in (("{layers: [1]}", "layers"), ("{curve: [fixture-mae]}", "curve"),
                          ("{layers: all, curve: [fixture-mae]}", "layers")):
        path = write(tmp_path, "r.yaml", BASE + f"variants:\n  q: {{codec: {{name: fixture-quantize}}, "
                                                f"evaluate: {evaluate}}}\n")
        assert problems(path) == [f"{path}:6: variants.q.evaluate.{fld}: needs a tokenizer (codecs have no layers "
                                  "and no training)"]


# ------------------------------------------------------------------------------------------ names, claims, plots


def test_a_sweep_giving_two_variants_one_name_lists_every_repeated_name(tmp_path):
    """Kills: _check_names missing duplicates, listing names that are not repeated, or not sorting them; the
    message points at the sweep."""
    path = write(tmp_path, "r.yaml", BASE + CODEC + "  r: {codec: {name: fixture-quantize}}\n"
                 "sweep: {codec.config.levels: [3, '3', 2, 2, 4]}\n")
    assert problems(path) == [f"{path}:8: sweep: sweep produced duplicate variant names: q-levels=2, q-levels=3, "
                              "r-levels=2, r-levels=3"]


def test_sweeping_two_keys_names_each_variant_by_both_values(tmp_path):
    """Kills: _expand dropping a key's values, a key from the name (or naming it by its full path), or sharing one
    dict between the expanded variants."""
    path = write(tmp_path, "r.yaml", BASE + CODEC + "sweep: {codec.config.levels: [2, 3], "
                                                    "dataset.config.seed: [5, 6]}\n")
    variants = load_recipe(path).variants
    assert [v.name for v in variants] == ["q-levels=2-seed=5", "q-levels=2-seed=6", "q-levels=3-seed=5",
                                          "q-levels=3-seed=6"]
    assert [(v.spec.codec.config["levels"], v.spec.dataset.config["seed"]) for v in variants] == [
        (2, 5), (2, 6), (3, 5), (3, 6)]
    assert {v.origin for v in variants} == {"q"}


def test_a_recipe_level_eval_dataset_is_inherited_by_every_variant(tmp_path):
    """Kills: _expand leaving out the recipe-level ``eval_dataset`` (the variants would be evaluated on their
    training data)."""
    path = write(tmp_path, "r.yaml", BASE + "eval_dataset: {name: fixture-noise, config: {seed: 7}}\n" + CODEC
                 + "  r: {codec: {name: fixture-quantize}, eval_dataset: {name: fixture-noise}}\n")
    q, r = load_recipe(path).variants
    assert q.spec.eval_dataset.config["seed"] == 7 and r.spec.eval_dataset.config["seed"] == 7
    assert q.spec.dataset.config["seed"] == 0


def test_a_claim_naming_a_missing_variant_lists_the_variants(tmp_path):
    """Kills: _check_names not checking claims, comparing the whole ``VARIANT:METRIC`` term with the variant names,
    or misplacing the message."""
    path = write(tmp_path, "r.yaml", BASE + CODEC + "  r: {codec: {name: fixture-quantize}}\n"
                 "claims:\n  - {id: ok, claim: x, metric: fixture-mae, contrast: {'q:fixture-mae': 1, r: -1}}\n"
                 "  - {id: bad, claim: y, metric: fixture-mae, contrast: {q: 1, 's:fixture-mae': -1}}\n")
    assert problems(path) == [f"{path}:10: claims.1.contrast.s:fixture-mae: claim 'bad' names variant 's', which "
                              "this recipe does not have (variants: q, r)"]


def test_a_layers_or_line_plot_needs_a_variant_that_measures_it(tmp_path):
    """Kills: _check_names not checking the ``layers`` or ``line`` plots, mixing them up, or looking at the wrong
    variants; the message names the plot (its line is that of ``plots``: list items have none of their own)."""
    plots = "plots:\n  - {kind: bar, metric: fixture-mae}\n  - {kind: layers, metric: a}\n  - {kind: line, metric: b}\n"
    path = write(tmp_path, "r.yaml", BASE + CODEC + plots)
    assert problems(path) == [f"{path}:7: plots.1: a 'layers' plot needs evaluate.layers in some variant",
                              f"{path}:7: plots.2: a 'line' plot needs evaluate.curve in some variant"]
    layers_only = write(tmp_path, "l.yaml", BASE + CODEC + "  t: {tokenizer: {name: fixture-pool}, evaluate: "
                        "{layers: [1]}}\n" + plots)
    assert problems(layers_only) == [f"{layers_only}:8: plots.2: a 'line' plot needs evaluate.curve in some variant"]
    both = write(tmp_path, "b.yaml", BASE + CODEC + "  t: {tokenizer: {name: fixture-pool}, evaluate: "
                 "{layers: [1]}}\n  u: {tokenizer: {name: fixture-pool}, evaluate: {curve: [fixture-mae]}}\n" + plots)
    assert [p.kind for p in load_recipe(both).recipe.plots] == ["bar", "layers", "line"]


# ------------------------------------------------------------------------------------------ shapes


def test_a_dataset_that_cannot_be_built_is_named_by_the_field_that_chose_it(tmp_path):
    """Kills: _check_shapes not catching a dataset's error, or naming ``dataset`` for an ``eval_dataset`` (or the
    reverse)."""
    missing = tmp_path / "no-such-folder"
    train = write(tmp_path, "r.yaml", BASE.replace("name: fixture-noise", f"name: video-folder, config: "
                                                   f"{{root: {missing}}}") + CODEC)
    assert problems(train) == [f"{train}:3: dataset: root: video-folder: {missing} does not exist"]
    other = write(tmp_path, "e.yaml", BASE + f"eval_dataset: {{name: video-folder, config: {{root: {missing}}}}}\n"
                  + CODEC)
    assert problems(other) == [f"{other}:5: eval_dataset: root: video-folder: {missing} does not exist"]


def test_a_codec_is_checked_against_the_clips_it_is_evaluated_on(tmp_path):
    """Kills: _check_shapes taking the training dataset's shape (or name) for the evaluation when the variant has
    an ``eval_dataset``."""
    path = write(tmp_path, "r.yaml", BASE + "eval_dataset: {name: synthetic-shapes, config: {height: 12}}\n" + CODEC)
    assert problems(path) == [f"{path}:7: variants.q.codec: clip shape 16x12x64 (dataset synthetic-shapes): "
                              "fixture-quantize needs height divisible by 8, got 12"]
    assert load_recipe(path, ["eval_dataset.config.height=24"]).variants[0].clip_shape == (16, 24, 64)


def test_decoding_from_every_layer_a_tokenizer_has_is_allowed(tmp_path):
    """Kills: the layer-count check of _check_shapes rejecting k equal to the number of layers, or reporting the
    layers within range."""
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  t: {tokenizer: {name: fixture-pool}, evaluate: "
                 "{layers: [1, 2]}}\n")
    assert load_recipe(path).variants[0].spec.evaluate.layers == [1, 2]
    assert problems(path, ["variants.t.evaluate.layers=[4, 1, 3]"]) == [
        "--set: variants.t.evaluate.layers: fixture-pool has 2 layers; cannot decode from [4, 3]"]


def test_shapes_are_checked_only_for_a_variant_without_other_problems(tmp_path):
    """Kills: _resolve_variant checking shapes after a variant's other problems (a misspelt metric would also
    report a shape message built from a half-resolved variant), or ignoring ``check_shapes=False``."""
    path = write(tmp_path, "r.yaml", BASE.replace("fixture-mae", "fixture-mea") + "variants:\n"
                 "  q: {codec: {name: fixture-quantize}, dataset: {config: {height: 12}}}\n")
    assert problems(path) == [f"{path}:4: evaluate.reconstruction.0: unknown metric 'fixture-mea'. (did you mean "
                              f"'fixture-mean'?) Allowed: {metrics()}"]
    bad_shape = write(tmp_path, "s.yaml", BASE + "variants:\n  q: {codec: {name: fixture-quantize}, "
                      "dataset: {config: {height: 12}}}\n")
    variant = load_recipe(bad_shape, check_shapes=False).variants[0]
    assert variant.clip_shape is None and variant.spec.dataset.config["height"] == 12


# ------------------------------------------------------------------------------------------ files and overrides


def test_files_that_are_not_recipes_say_why(tmp_path):
    """Kills: _read_yaml losing the reason, the byte or its offset of an undecodable file, the line of a YAML
    error, or accepting a file whose top level is not a mapping."""
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"recipe: x\n\xfe\n")
    assert problems(binary) == [f"{binary}: not a text file: byte 0xfe at offset 10 is not valid UTF-8 (a recipe "
                                "is a YAML text file)"]
    nul = tmp_path / "n.yaml"
    nul.write_bytes(b"recipe: x\x00\n")
    assert problems(nul) == [f"{nul}: not a text file: it contains NUL bytes (a recipe is a YAML text file)"]
    assert problems(tmp_path) == [f"{tmp_path}: cannot read recipe: Is a directory"]
    assert problems(tmp_path / "gone.yaml") == [f"recipe file not found: {tmp_path / 'gone.yaml'}"]
    broken = write(tmp_path, "y.yaml", "version: 1\nseeds: [0\n")
    assert problems(broken) == [f"{broken}:3: invalid YAML: expected ',' or ']', but got '<stream end>'"]
    listed = write(tmp_path, "l.yaml", "- a\n- b\n")
    assert problems(listed) == [f"{listed}:1: a recipe must be a mapping of fields"]
    empty = write(tmp_path, "e.yaml", "")
    assert problems(empty) == [f"{empty}: dataset: Field required", f"{empty}: variants: Field required"]


def test_extends_a_list_later_files_win_and_errors_point_into_the_file_that_set_them(tmp_path):
    """Kills: load_located merging extended files in the wrong order, dropping a parent's key locations, or
    accepting an ``extends`` that is not a path or a list of paths."""
    write(tmp_path, "_base/a.yaml", BASE + "scale: small\ntable: {decimals: 2}\n")
    b = write(tmp_path, "_base/b.yaml", "table: {decimals: 3, title: T}\ndescription: from b\n")
    path = write(tmp_path, "r.yaml", "extends: [_base/a.yaml, _base/b.yaml]\ndescription: own\n" + CODEC)
    resolved = load_recipe(path)
    assert resolved.recipe.table.decimals == 3 and resolved.recipe.table.title == "T"
    assert resolved.recipe.scale == "small" and resolved.recipe.description == "own"
    assert resolved.located.files == [(tmp_path / "_base/a.yaml").resolve(), b.resolve(), path.resolve()]
    assert problems(path, ["table.decimals=11"]) == ["--set: table.decimals: Input should be less than or equal to 10"]
    write(tmp_path, "_base/b.yaml", "table: {decimals: 30}\n")
    assert problems(path) == [f"{b.resolve()}:1: table.decimals: Input should be less than or equal to 10"]
    for extends in ("3", "[_base/a.yaml, 3]", "{a: b}"):
        bad = write(tmp_path, "x.yaml", f"description: x\nextends: {extends}\n" + CODEC)
        assert problems(bad) == [f"{bad.resolve()}:2: extends: must be a path or a list of paths"]


def test_an_extends_cycle_is_reported_at_the_file_that_closes_it(tmp_path):
    """Kills: load_located reporting a cycle at another file, without the field, or with the chain cut short."""
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "description: b\nextends: a.yaml\n")
    assert problems(a) == [f"{b.resolve()}: extends: extends cycle: {a.resolve()} -> {b.resolve()} -> {a.resolve()}"]


def test_overrides_create_mappings_but_not_inside_a_value(tmp_path):
    """Kills: apply_sets refusing to create a missing mapping, overwriting a value with one, naming the wrong part
    of the key, or locating an override's error in the file instead of at ``--set``."""
    path = write(tmp_path, "r.yaml", BASE + CODEC)
    resolved = load_recipe(path, ["variants.r.codec.name=fixture-quantize", "variants.r.label=R"])
    assert [(v.name, v.label) for v in resolved.variants] == [("q", "q"), ("r", "R")]
    assert problems(path, ["seeds.x=1"]) == ["--set: cannot set 'seeds.x': seeds is not a mapping"]
    assert problems(path, ["dataset.name.x.y=1"]) == ["--set: cannot set 'dataset.name.x.y': dataset.name is not a "
                                                      "mapping"]
    assert problems(path, ["variants.q.codec.config.levels=300"]) == [
        "--set: variants.q.codec.config.levels: Input should be less than or equal to 256"]


def test_an_override_splits_at_its_first_equals_sign_and_its_errors_name_set(tmp_path):
    """Kills: parse_set splitting at the last ``=`` (a value holding one would change the key), or its problems
    losing the ``--set`` that says where they come from."""
    path = write(tmp_path, "r.yaml", BASE + CODEC)
    assert load_recipe(path, ["table.title=a=b"]).recipe.table.title == "a=b"
    assert problems(path, ["seeds"]) == ["--set: malformed override 'seeds': expected key.path=value"]
    assert problems(path, ["seeds=[1,"])[0].startswith("--set: value of 'seeds' is not valid YAML: ")


def test_a_sweep_over_a_missing_key_says_where_and_what_is_there(tmp_path):
    """Kills: _set_dotted reporting a missing key without its file, or with the wrong list of what is allowed
    (``nothing`` for an empty mapping), or checking the wrong part of a three-part key."""
    missing = write(tmp_path, "r.yaml", BASE + CODEC + "sweep: {evaluate.batch_sise: [1, 2]}\n")
    assert problems(missing) == [
        f"{missing}:7: sweep.evaluate.batch_sise: sweep over a key that does not exist: 'evaluate.batch_sise' "
        "(allowed here: batch_size, compression, curve, curve_clips, figures, layers, metric_config, reconstruction)"]
    empty = write(tmp_path, "e.yaml", BASE + CODEC + "sweep: {evaluate.metric_config.fixture-mae.x: [1, 2]}\n")
    assert problems(empty) == [
        f"{empty}:7: sweep.evaluate.metric_config.fixture-mae.x: sweep over a key that does not exist: "
        "'evaluate.metric_config.fixture-mae' (allowed here: nothing)"]
    deep = write(tmp_path, "d.yaml", BASE + "variants:\n  t:\n    tokenizer: {name: fixture-pool}\n"
                 "    generator: {name: fixture-unigram}\n"
                 "    evaluate: {generation: {metrics: [fixture-mean], temperature: 1.0}}\n"
                 "sweep: {evaluate.generation.temperature: [0.5, 2.0]}\n")
    variants = load_recipe(deep).variants
    assert [(v.name, v.spec.evaluate.generation.temperature) for v in variants] == [
        ("t-temperature=0.5", 0.5), ("t-temperature=2.0", 2.0)]


def test_a_missing_extended_file_is_reported_at_the_extends_line_of_the_file_naming_it(tmp_path):
    """Kills: load_located reporting a missing parent without the file and line of the ``extends`` that names it,
    or without the field."""
    write(tmp_path, "_base/a.yaml", BASE)
    path = write(tmp_path, "r.yaml", "description: x\nextends: [_base/a.yaml, _base/gone.yaml]\n" + CODEC)
    assert problems(path) == [f"{path.resolve()}:2: extends: extended recipe not found: "
                              f"{tmp_path.resolve() / '_base/gone.yaml'}"]


def test_every_component_of_a_variant_is_checked_after_one_fails(tmp_path):
    """Kills: _resolve_variant stopping at the first component whose config is wrong (the others' problems would
    show only after that one is fixed)."""
    path = write(tmp_path, "r.yaml", BASE + "variants:\n  q:\n"
                 "    codec: {name: fixture-quantize, config: {levels: 1}}\n    dataset: {config: {heigth: 8}}\n")
    assert problems(path) == [
        f"{path}:7: variants.q.codec.config.levels: Input should be greater than or equal to 2",
        f"{path}:8: variants.q.dataset.config.heigth: unknown field. (did you mean 'height'?) Allowed: frames, height, "
        "preset, seed, train_clips, val_clips, width"]
