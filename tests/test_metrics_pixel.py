"""Pixel and rate metrics against independent reference computations, batched and split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure, StructuralSimilarityIndexMeasure

import hitvideo_bench as hb
from hitvideo_bench.tokens import TokenPyramid
from hitbench_builtin.metrics.pixel import frames_of, ms_ssim_scales


@pytest.fixture
def pair():
    """Fixture: clips and noisy versions of them."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 4, 64, 64, generator=g)
    pred = (target + 0.08 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return pred, target


def split_updates(name, pred, target, **config):
    whole = hb.create_metric(name, **config)
    whole.update(pred=pred, target=target)
    parts = hb.create_metric(name, **config)
    for i in range(pred.shape[0]):
        parts.update(pred=pred[i:i + 1], target=target[i:i + 1])
    return whole.compute(), parts.compute()


def test_psnr_is_the_mean_of_per_frame_psnr(pair):
    pred, target = pair
    p, t = pred.numpy().astype(np.float64), target.numpy().astype(np.float64)
    per_frame = [10 * math.log10(1 / np.mean((p[b, :, f] - t[b, :, f]) ** 2))
                 for b in range(p.shape[0]) for f in range(p.shape[2])]
    whole, parts = split_updates("psnr", pred, target)
    assert float(whole) == pytest.approx(np.mean(per_frame), abs=1e-9)
    assert float(parts) == pytest.approx(float(whole), abs=1e-9)
    both = split_updates("psnr", pred, target, mean_mse=True)[0]
    assert float(both["of_mean_mse"]) == pytest.approx(10 * math.log10(1 / np.mean((p - t) ** 2)), abs=1e-9)


def test_psnr_of_identical_clips_is_capped():
    video = torch.rand(1, 3, 2, 16, 16)
    assert float(split_updates("psnr", video, video)[0]) == pytest.approx(100.0)


def test_ssim_matches_torchmetrics(pair):
    pred, target = pair
    reference = StructuralSimilarityIndexMeasure(gaussian_kernel=True, kernel_size=11, sigma=1.5, data_range=1.0)
    whole, parts = split_updates("ssim", pred, target)
    # torchmetrics pads the borders, pytorch-msssim does not: agreement to a few 1e-4
    assert float(whole) == pytest.approx(float(reference(frames_of(pred), frames_of(target))), abs=2e-3)
    assert float(parts) == pytest.approx(float(whole), abs=1e-9)


def test_ms_ssim_uses_fewer_renormalised_scales_on_small_frames(pair):
    pred, target = pair
    assert ms_ssim_scales(64, 64) == 3 and ms_ssim_scales(161, 200) == 5 and ms_ssim_scales(160, 160) == 4
    betas = torch.tensor([0.0448, 0.2856, 0.3001])
    reference = MultiScaleStructuralSimilarityIndexMeasure(gaussian_kernel=True, kernel_size=11, sigma=1.5,
                                                           data_range=1.0, betas=tuple((betas / betas.sum()).tolist()),
                                                           normalize=None)
    metric = hb.create_metric("ms-ssim")
    metric.update(pred=pred, target=target)
    assert float(metric.compute()) == pytest.approx(float(reference(frames_of(pred), frames_of(target))), abs=3e-3)
    assert metric.provenance()["scales"] == 3


def test_ms_ssim_at_full_size_equals_the_library():
    from pytorch_msssim import ms_ssim

    g = torch.Generator().manual_seed(1)
    target = torch.rand(1, 3, 2, 176, 176, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    metric = hb.create_metric("ms-ssim")
    metric.update(pred=pred, target=target)
    expected = ms_ssim(frames_of(pred), frames_of(target), data_range=1.0, size_average=True)
    assert float(metric.compute()) == pytest.approx(float(expected), abs=1e-5)  # float32 mean in the library
    assert metric.provenance()["scales"] == 5


def test_bpp_sums_bits_over_pixels():
    metric = hb.create_metric("bpp")
    metric.update(bits=torch.tensor([100.0, 300.0]), pixels=torch.tensor([1000.0, 1000.0]))
    metric.update(bits=torch.tensor([200.0]), pixels=torch.tensor([1000.0]))
    assert float(metric.compute()) == pytest.approx(0.2)


def pyramid_fixture(skewed: bool) -> TokenPyramid:
    """Fixture: a 2-layer pyramid, uniform or heavily skewed token statistics."""
    g = torch.Generator().manual_seed(3)
    dense = torch.randint(0, 256, (4, 2, 8, 8), generator=g)
    if skewed:
        dense = torch.where(torch.rand(dense.shape, generator=g) < 0.9, torch.zeros_like(dense), dense)
    return TokenPyramid([dense, torch.randint(0, 16, (4, 1, 2, 2), generator=g)], [256, 16])


@pytest.mark.parametrize("skewed", [False, True])
def test_entropy_bpp_is_the_empirical_entropy_and_below_nominal(skewed):
    pyramid = pyramid_fixture(skewed)
    pixels = torch.full((4,), 2 * 32 * 32.0)
    metric = hb.create_metric("bpp-entropy")
    metric.update(pyramid=pyramid.select(slice(0, 2)), pixels=pixels[:2])
    metric.update(pyramid=pyramid.select(slice(2, 4)), pixels=pixels[2:])
    result = metric.compute()
    expected = 0.0
    for tokens in pyramid.layers:
        _, counts = np.unique(tokens.numpy(), return_counts=True)
        p = counts / counts.sum()
        expected += -(p * np.log2(p)).sum() * tokens.numel()
    assert float(result[""]) == pytest.approx(expected / float(pixels.sum()), rel=1e-9)
    nominal = float(pyramid.nominal_bits().sum() / pixels.sum())
    assert float(result[""]) <= nominal
    if skewed:
        assert float(result[""]) < 0.6 * nominal


def test_entropy_counts_only_kept_tokens_and_codebook_stats():
    pyramid = pyramid_fixture(False)
    mask = torch.zeros_like(pyramid.layers[0], dtype=torch.bool)
    mask[:, 0] = True
    masked = TokenPyramid(pyramid.layers, pyramid.codebook_sizes, [mask, None])
    metric = hb.create_metric("bpp-entropy")
    metric.update(pyramid=masked, pixels=torch.full((4,), 1.0))
    kept = pyramid.layers[0][:, 0]
    _, counts = np.unique(kept.numpy(), return_counts=True)
    p = counts / counts.sum()
    assert float(metric.compute()["L0"]) == pytest.approx(-(p * np.log2(p)).sum() * kept.numel() / 4)
    stats = hb.create_metric("codebook")
    stats.update(pyramid=pyramid, pixels=torch.full((4,), 1.0))
    values = stats.compute()
    used = len(np.unique(pyramid.layers[1].numpy()))
    assert float(values["usage/L1"]) == pytest.approx(used / 16)
    assert 1 <= float(values["perplexity/L0"]) <= 256


def test_codebook_usage_and_perplexity_of_every_layer_on_hand_counted_tokens():
    """Kills: returning the entropy instead of ``2 ** entropy`` as perplexity, or one layer's codebook size for all."""
    # fixture pyramid: layer 0 spreads evenly over 4 of its 16 codes (perplexity 4, usage 1/4); layer 1 uses
    # 2 of its 8 codes 3:1 (perplexity 2^H(3/4, 1/4), usage 1/4)
    dense = torch.tensor([0, 1, 2, 3] * 4).view(2, 1, 2, 4)
    coarse = torch.tensor([5, 5, 5, 2, 5, 2, 5, 5]).view(2, 1, 2, 2)
    stats = hb.create_metric("codebook")
    stats.update(pyramid=TokenPyramid([dense, coarse], [16, 8]), pixels=torch.full((2,), 1.0))
    values = stats.compute()
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert float(values["perplexity/L0"]) == pytest.approx(4.0)
    assert float(values["perplexity/L1"]) == pytest.approx(2 ** h)
    assert float(values["usage/L0"]) == pytest.approx(4 / 16)
    assert float(values["usage/L1"]) == pytest.approx(2 / 8)


def test_ssim_on_low_contrast_clips_matches_torchmetrics_at_data_range_one():
    """Kills: SSIM's ``data_range=1.0`` changed (its constants C1, C2 dominate on low-contrast frames)."""
    g = torch.Generator().manual_seed(1)
    target = 0.5 + 0.05 * torch.rand(2, 3, 2, 64, 64, generator=g)  # fixture: low-contrast clips
    pred = target + 0.02 * torch.randn(target.shape, generator=g)
    reference = StructuralSimilarityIndexMeasure(gaussian_kernel=True, kernel_size=11, sigma=1.5, data_range=1.0)
    whole = split_updates("ssim", pred, target)[0]
    assert float(whole) == pytest.approx(float(reference(frames_of(pred), frames_of(target))), abs=2e-3)
    both = split_updates("psnr", pred, target, mean_mse=True)[0]
    assert set(both) == {"", "of_mean_mse"}  # "" is the headline value, reported as psnr itself
