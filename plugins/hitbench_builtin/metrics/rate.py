"""Rate metrics: bits per pixel as spent, as an ideal entropy coder would spend, and codebook statistics.

``bpp``: the bits a compressor reports per clip (tokens x log2 codebook plus any side information for
a tokenizer; the bare bitstream for a codec), summed and divided by the pixels (T x H x W).
``bpp-entropy``: per layer, the empirical order-0 entropy of the transmitted token indices over all
evaluated clips, times the number of transmitted tokens, summed over layers and divided by the
pixels. It is never above the nominal tokens x log2(codebook). Keep-mask side information of a masked
pyramid is the masked tokenizer's business and is not included here.
``codebook``: per layer, the share of the codebook used on the evaluated clips and its perplexity
(2^entropy) -- LFQ usage collapse shows here.
"""

from __future__ import annotations

import math

import torch

from hitvideo_bench.api import BenchMetric


class BitsPerPixel(BenchMetric):
    """Total bits spent / total pixels."""

    inputs = ("bits", "pixels")
    higher_is_better = False

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("bits", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, bits: torch.Tensor, pixels: torch.Tensor) -> None:
        self.bits += torch.as_tensor(bits, dtype=torch.float64).sum().to(self.bits.device)
        self.pixels += torch.as_tensor(pixels, dtype=torch.float64).sum().to(self.pixels.device)

    def compute(self):
        return self.bits / self.pixels


def entropy_bits(counts: torch.Tensor) -> float:
    """Shannon entropy in bits of a histogram."""
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * torch.log2(p)).sum())


class TokenHistogram(BenchMetric):
    """Collects the transmitted token indices of each layer over all updates (merged by concatenation)."""

    inputs = ("pyramid", "pixels")

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("tokens", default=[], dist_reduce_fx="cat")  # rows: (layer, token)
        self.add_state("pixels", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.codebook_sizes: list[int] = []

    def update(self, pyramid, pixels: torch.Tensor) -> None:
        self.codebook_sizes = list(pyramid.codebook_sizes)
        for layer, (tokens, mask) in enumerate(zip(pyramid.layers, pyramid.masks)):
            kept = tokens[mask] if mask is not None else tokens.flatten()
            self.tokens.append(torch.stack([torch.full_like(kept, layer), kept], dim=1).to(self.pixels.device))
        self.pixels += torch.as_tensor(pixels, dtype=torch.float64).sum().to(self.pixels.device)

    def histograms(self) -> list[torch.Tensor]:
        """Per layer, the counts of each used token value."""
        rows = torch.cat(self.tokens) if isinstance(self.tokens, list) else self.tokens
        return [torch.unique(rows[rows[:, 0] == layer, 1], return_counts=True)[1]
                for layer in range(len(self.codebook_sizes))]


class EntropyBitsPerPixel(TokenHistogram):
    """Order-0 entropy of each layer's tokens x tokens sent, summed over layers, per pixel."""

    higher_is_better = False

    def compute(self):
        out, total = {}, 0.0
        for layer, counts in enumerate(self.histograms()):
            bits = entropy_bits(counts) * float(counts.sum()) if counts.numel() else 0.0
            out[f"L{layer}"] = torch.tensor(bits / float(self.pixels), dtype=torch.float64)
            total += bits
        return {"": torch.tensor(total / float(self.pixels), dtype=torch.float64), **out}

    def sub_higher_is_better(self, key):
        return False  # each layer's share of the bits


class CodebookStats(TokenHistogram):
    """Per layer: codebook usage (share of codes used) and perplexity (2^entropy)."""

    inputs = ("pyramid", "pixels")
    higher_is_better = True

    def compute(self):
        out = {}
        for layer, (counts, size) in enumerate(zip(self.histograms(), self.codebook_sizes)):
            out[f"usage/L{layer}"] = torch.tensor(counts.numel() / size, dtype=torch.float64)
            out[f"perplexity/L{layer}"] = torch.tensor(2 ** entropy_bits(counts) if counts.numel() else 0.0,
                                                       dtype=torch.float64)
        return out

    def provenance(self) -> dict:
        return {"codebook_sizes": self.codebook_sizes, "log2": [math.log2(s) for s in self.codebook_sizes]}
