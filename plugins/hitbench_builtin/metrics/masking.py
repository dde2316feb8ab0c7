"""Statistics of dynamic encoding: how many tokens a keep-mask dropped, and what it cost to say so."""

from __future__ import annotations

import math

import torch

from hitvideo_bench.api import BenchMetric


class MaskStats(BenchMetric):
    """Per clip, averaged: mask ratio (of maskable positions), tokens kept and saved, bpp without masking.

    ``mask_ratio`` counts positions of masked layers in frames after the first (the maskable ones);
    ``tokens_kept`` / ``tokens_saved`` count over all layers; ``bpp_unmasked`` is the nominal bpp the
    same pyramid would cost with every token sent (no side information).
    """

    inputs = ("pyramid", "pixels")
    higher_is_better = None

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        for name in ("masked", "maskable", "kept", "saved", "bits_unmasked", "pixels", "clips"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pyramid, pixels):
        for tokens, mask, size in zip(pyramid.layers, pyramid.masks, pyramid.codebook_sizes):
            total = float(tokens[0].numel()) * tokens.shape[0]
            self.bits_unmasked += total * math.log2(size)
            if mask is None:
                self.kept += total
                continue
            kept = float(mask.sum())
            self.kept += kept
            self.saved += total - kept
            self.masked += float((~mask[:, 1:]).sum())
            self.maskable += float(mask[:, 1:].numel())
        self.pixels += pixels.double().sum().to(self.pixels.device)
        self.clips += pyramid.batch_size

    def compute(self):
        return {"mask_ratio": self.masked / self.maskable.clamp(min=1),
                "tokens_kept": self.kept / self.clips,
                "tokens_saved": self.saved / self.clips,
                "bpp_unmasked": self.bits_unmasked / self.pixels}
