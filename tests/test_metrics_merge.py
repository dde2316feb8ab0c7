"""Metric state merges as across processes: two metrics fed halves of the data and merged (torchmetrics'
``merge_state``, which applies each state's ``dist_reduce_fx``) give the value of one metric fed everything;
and what each metric writes into its provenance."""

from __future__ import annotations

import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench.tokens import TokenPyramid


def fixture_inputs(seed: int) -> dict:
    """Fixture: two clips (2 frames of 32x32) with a noisy copy, their bits and pixels, and a masked pyramid."""
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 2, 32, 32, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    dense = torch.randint(0, 16, (2, 2, 4, 4), generator=g)
    keep = torch.rand(dense.shape, generator=g) < 0.7
    pyramid = TokenPyramid([dense, torch.randint(0, 4, (2, 1, 2, 2), generator=g)], [16, 4], [keep, None])
    return {"pred": pred, "target": target, "pyramid": pyramid, "bits": torch.rand(2, generator=g) * 1000,
            "pixels": torch.full((2,), 2 * 32 * 32.0)}


def values(metric) -> dict:
    value = metric.compute()
    return {k: float(v) for k, v in value.items()} if isinstance(value, dict) else {"": float(value)}


@pytest.mark.parametrize("name, config", [("psnr", {"mean_mse": True}), ("ssim", {}), ("ms-ssim", {}), ("bpp", {}),
                                          ("bpp-entropy", {}), ("codebook", {})])
def test_merged_halves_give_the_value_of_the_whole(name, config):
    """Kills: a state whose ``dist_reduce_fx`` is not its merge rule (e.g. None or "mean" for "sum")."""
    halves = [fixture_inputs(1), fixture_inputs(2)]
    whole, merged = hb.create_metric(name, **config), [hb.create_metric(name, **config) for _ in halves]
    for metric, inputs in zip(merged, halves):
        for m in (whole, metric):
            m.update(**{k: inputs[k] for k in m.inputs})
    merged[0].merge_state(merged[1])
    assert values(merged[0]) == pytest.approx(values(whole), rel=1e-9)


def test_provenance_says_what_was_averaged_and_how():
    """Kills: the pixel metrics' or codebook's provenance losing a field (frames, data range, scales, sizes)."""
    inputs = fixture_inputs(1)
    psnr, msssim, codebook = hb.create_metric("psnr"), hb.create_metric("ms-ssim"), hb.create_metric("codebook")
    psnr.update(pred=inputs["pred"], target=inputs["target"])
    msssim.update(pred=inputs["pred"], target=inputs["target"])
    codebook.update(pyramid=inputs["pyramid"], pixels=inputs["pixels"])
    assert psnr.provenance() == {"frames": 4, "data_range": 1.0, "averaging": "mean over frames of per-frame score"}
    assert msssim.provenance() == {"frames": 4, "data_range": 1.0, "averaging": "mean over frames of per-frame score",
                                   "scales": 2, "note": "fewer scales, weights renormalised (frames <= 160 px)"}
    assert codebook.provenance() == {"codebook_sizes": [16, 4], "log2": [4.0, 2.0]}
