"""TokenPyramid's checks on construction, dtypes of its counts, concatenation of masked with unmasked parts,
and moving it between devices (the round trips themselves are property tests in test_properties.py)."""

from __future__ import annotations

import pytest
import torch

from hitvideo_bench.tokens import TokenPyramid


def fixture_layers():
    """Fixture: a two-layer pyramid's grids for a batch of 2 (codebooks 16 and 4)."""
    return [torch.arange(2 * 2 * 2 * 2).view(2, 2, 2, 2) % 16, torch.tensor([0, 3]).view(2, 1, 1, 1)]


@pytest.mark.parametrize("make, message", [
    (lambda: TokenPyramid(fixture_layers(), [16]), "TokenPyramid: 2 layers but 1 codebook sizes"),
    (lambda: TokenPyramid(fixture_layers(), [16, 4], [None]), "TokenPyramid: one mask \\(or None\\) per layer$"),
    (lambda: TokenPyramid([torch.zeros(2, 4, dtype=torch.long)], [4]),
     r"layer 0: expected \(B, t, h, w\), got \(2, 4\)"),
    (lambda: TokenPyramid([fixture_layers()[0], -fixture_layers()[1]], [16, 4]),
     "layer 1: token outside codebook of 4"),
    (lambda: TokenPyramid(fixture_layers(), [16, 3]), "layer 1: token outside codebook of 3"),
    (lambda: TokenPyramid(fixture_layers(), [16, 4], [None, torch.ones(2, 1, 1, 1)]),
     r"layer 1: keep-mask must be bool of shape \(2, 1, 1, 1\)"),
    (lambda: TokenPyramid(fixture_layers(), [16, 4], [torch.ones(2, 2, 2, 1, dtype=torch.bool), None]),
     r"layer 0: keep-mask must be bool of shape \(2, 2, 2, 2\)"),
])
def test_a_malformed_pyramid_is_refused_naming_the_layer(make, message):
    """Kills: ``and`` for ``or`` in the codebook range check (a token only below 0, or only too large, passes),
    and the messages lost or garbled."""
    with pytest.raises(ValueError, match=message):
        make()


def test_counts_are_float64_and_sizes_int64():
    """Kills: dropping ``dtype=torch.float64`` from the bit and token counts (float32 rounds large counts)."""
    big = TokenPyramid([torch.zeros(1, 1, 1, 1, dtype=torch.long)], [2**20])
    assert big.nominal_bits().dtype == torch.float64 and big.tokens_per_layer()[0].dtype == torch.float64
    assert TokenPyramid(fixture_layers(), [16, 4]).state_dict()["codebook_sizes"].dtype == torch.int64


def test_cat_gives_unmasked_parts_an_all_kept_mask():
    """Kills: cat passing a missing mask through (torch.cat of None) or building it with a non-bool dtype."""
    layers = fixture_layers()
    keep = torch.tensor([True, False]).view(2, 1, 1, 1)
    masked = TokenPyramid(layers, [16, 4], [None, keep])
    joined = TokenPyramid.cat([masked, TokenPyramid(layers, [16, 4])])
    assert joined.masks[0] is None
    assert joined.masks[1].dtype == torch.bool and joined.masks[1].flatten().tolist() == [True, False, True, True]
    assert joined.tokens_per_layer()[1].tolist() == [1, 0, 1, 1]


def test_to_keeps_layers_masks_and_sizes():
    """Kills: ``to`` dropping a mask or the codebook sizes (only the CPU is here: the device move itself is torch's)."""
    pyramid = TokenPyramid(fixture_layers(), [16, 4], [None, torch.tensor([True, False]).view(2, 1, 1, 1)])
    moved = pyramid.to(torch.device("cpu"))
    assert moved is not pyramid and moved.codebook_sizes == [16, 4] and moved.masks[0] is None
    assert all(torch.equal(a, b) for a, b in zip(moved.layers, pyramid.layers))
    assert torch.equal(moved.masks[1], pyramid.masks[1])
