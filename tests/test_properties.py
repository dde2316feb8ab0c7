"""Property-based tests (hypothesis) where the input space is large: recipes and ``--set`` overrides with any
YAML value at any place, TokenPyramid round trips, and resample_indices against a brute-force reference."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_plugins
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.tokens import TokenPyramid
from hitvideo_bench.video import resample_indices

#: hypothesis settings of this module: no deadline (the first recipe load imports plugins), tmp folders reused
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------ recipes

#: fixture recipe on the fixture plugin (cheap to validate), as data
FIXTURE_RECIPE = {
    "version": 1, "recipe": "fixture-props", "seeds": [0],
    "dataset": {"name": "fixture-noise", "eval_clips": 2, "config": {"frames": 4, "height": 16, "width": 16}},
    "evaluate": {"reconstruction": ["fixture-mae"], "batch_size": 2},
    "variants": {"q": {"codec": {"name": "fixture-quantize", "config": {"levels": 4}}}},
    "sweep": {"codec.config.levels": [2, 16]},
    "table": {"columns": ["fixture-mae"]},
}

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=12))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)), max_leaves=8)


def key_paths(data, prefix=()):
    """Every key path (a tuple: sweep keys hold dots themselves) of a nested mapping, list items by index."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        yield (*prefix, key)
        yield from key_paths(value, (*prefix, key))


PATHS = sorted(set(key_paths(FIXTURE_RECIPE)) | {("variants", "q", "codec", "config", "new"), ("evaluate", "layers"),
                                                 ("plots",)}, key=str)


def replaced(data, path: tuple, value):
    """A copy of ``data`` with the key at ``path`` set to ``value``."""
    out = yaml.safe_load(yaml.safe_dump(data))
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


@pytest.fixture(scope="module", autouse=True)
def fixture_plugin():
    get_plugins(["hitbench_fixture_plugin"])
    yield
    get_plugins([])


def loads_or_bad_input(path: Path, sets=()) -> None:
    """The recipe validates, or raises BadInput whose every problem says where: the file (a problem of the
    recipe), or the ``--set`` field (an override that is not even valid YAML); never another exception."""
    try:
        load_recipe(path, sets)
    except BadInput as exc:
        assert exc.problems and all(p.file or (sets and p.field == "--set") for p in exc.problems), str(exc)


@SETTINGS
@given(path=st.sampled_from(PATHS), value=yaml_values)
def test_any_value_anywhere_in_a_recipe_validates_or_is_located_bad_input(tmp_path, path, value):
    """Kills: Catalog.make_config not turning a component config's ValidationError into BadInput."""
    recipe = tmp_path / "fixture-props.yaml"
    recipe.write_text(yaml.safe_dump(replaced(FIXTURE_RECIPE, path, value)))
    loads_or_bad_input(recipe)


@SETTINGS
@given(key=st.one_of(st.builds(lambda path, extra: ".".join(map(str, path + tuple(extra))), st.sampled_from(PATHS),
                               st.lists(st.sampled_from(["x", "0", "name", "config"]), max_size=2)),
                     st.text(max_size=20)),
       raw=st.one_of(yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                     st.text(max_size=20)))
def test_any_set_override_validates_or_is_located_bad_input(tmp_path, key, raw):
    """Kills: apply_sets without its "is not a mapping" check (a key through a list or a scalar: TypeError)."""
    recipe = tmp_path / "fixture-props.yaml"
    recipe.write_text(yaml.safe_dump(FIXTURE_RECIPE))
    loads_or_bad_input(recipe, [f"{key}={raw}"])


# ------------------------------------------------------------------------------------------ token pyramids


@st.composite
def pyramids(draw):
    """Random pyramids: 1-4 layers, coarser grids upwards, codebooks of 2..2^12, optional keep-masks."""
    batch = draw(st.integers(1, 3))
    layers, sizes, masks = [], [], []
    for _ in range(draw(st.integers(1, 4))):
        grid = tuple(draw(st.integers(1, 3)) for _ in range(3))
        size = 2 ** draw(st.integers(1, 12))
        seed = draw(st.integers(0, 2**16))
        g = torch.Generator().manual_seed(seed)
        layers.append(torch.randint(0, size, (batch, *grid), generator=g))
        sizes.append(size)
        masks.append(torch.rand(batch, *grid, generator=g) < 0.5 if draw(st.booleans()) else None)
    return TokenPyramid(layers, sizes, masks)


def same_pyramid(a: TokenPyramid, b: TokenPyramid) -> bool:
    return (a.codebook_sizes == b.codebook_sizes and all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))
            and all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
                    for x, y in zip(a.masks, b.masks)))


@SETTINGS
@given(pyramid=pyramids())
def test_pyramid_save_load_and_state_dict_round_trip(tmp_path, pyramid):
    """Kills: a save / load or state_dict that drops a mask, reorders layers or loses a codebook size."""
    pyramid.save(tmp_path / "p.safetensors")
    assert same_pyramid(TokenPyramid.load(tmp_path / "p.safetensors"), pyramid)
    assert same_pyramid(TokenPyramid.from_state_dict(pyramid.state_dict()), pyramid)


@SETTINGS
@given(pyramid=pyramids(), cut=st.integers(0, 3))
def test_pyramid_order_bits_and_batch_split(pyramid, cut):
    """Kills: coarse_to_fine not starting at the coarsest (last) layer; nominal bits counting masked tokens;
    select / cat losing masks."""
    n = pyramid.num_layers
    assert pyramid.coarse_to_fine() == list(range(n))[::-1]
    for b in range(pyramid.batch_size):  # brute force: kept tokens x log2(codebook), layer by layer
        bits = sum((m[b].sum().item() if m is not None else t[b].numel()) * math.log2(s)
                   for t, s, m in zip(pyramid.layers, pyramid.codebook_sizes, pyramid.masks))
        assert pyramid.nominal_bits()[b].item() == pytest.approx(bits)
    cut = min(cut, pyramid.batch_size)
    halves = [pyramid.select(slice(0, cut)), pyramid.select(slice(cut, None))]
    joined = TokenPyramid.cat([h for h in halves if h.batch_size])
    # cat fills a missing mask with all-kept only when another part has one: equal where masks exist
    assert same_pyramid(joined, pyramid)


# ------------------------------------------------------------------------------------------ resampling


def shown_frames_reference(times_ms: list[int], fps: int, count, start_ms: int) -> list[int]:
    """Brute force in exact arithmetic: for each instant start + k / fps, the last frame whose timestamp is at or
    before it (the first frame before the first timestamp); without ``count``, every output frame whose whole
    interval [start + k / fps, start + (k + 1) / fps] ends by the end of the clip (the last timestamp plus one
    frame interval)."""
    times = [Fraction(t, 1000) for t in times_ms]
    start = Fraction(start_ms, 1000)
    end = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0)
    if count is None:
        count = 0
        while start + Fraction(count + 1, fps) <= end:
            count += 1
    out = []
    for k in range(count):
        t = start + Fraction(k, fps)
        shown = [i for i, ti in enumerate(times) if ti <= t]
        out.append(shown[-1] if shown else 0)
    return out


@settings(max_examples=400, deadline=None)
@given(gaps=st.lists(st.integers(0, 200), min_size=1, max_size=30), first=st.integers(0, 100),
       fps=st.integers(1, 60), count=st.one_of(st.none(), st.integers(0, 40)), start=st.integers(0, 800))
@example(gaps=[100] * 9, first=0, fps=10, count=3, start=700)  # 0.7 + 0.1 is 0.7999... in floats
def test_resample_indices_matches_a_brute_force_reference(gaps, first, fps, count, start):
    """Kills: the rounding tolerance dropped from the search or from the count of frames that fit."""
    times_ms = list(np.cumsum([first] + gaps))
    got = resample_indices(np.array(times_ms, dtype=np.float64) / 1000, float(fps), count, start / 1000)
    assert got.tolist() == shown_frames_reference(times_ms, fps, count, start)
