"""The coarse-to-fine token sequence of a pyramid: its layout, and pyramid <-> sequence conversion.

Video tokens run coarse-to-fine: every token of the most compressed layer first, raster order within a
layer, down to the densest layer. The layout depends only on the generator's token grids (fixed when it is
built), so it is computed once; training, the NLL and sampling all read it from here.
"""

from __future__ import annotations

import math

import torch

from hitvideo_bench.api import BadInput, TokenPyramid

from ..rope3d import video_layout

#: Flat-sequence id of a token a keep-mask dropped: not supervised, not counted in NLL.
IGNORE = -1


class SequenceLayout:
    """Mixin of :class:`~.model.ARLlamaGenerator`: reads ``grid_shapes``, ``codebook_sizes`` and
    ``config.rope_frame``; memoises the layout in ``_layout``."""

    def layout(self) -> tuple[list[int], torch.Tensor, torch.Tensor, dict[int, tuple[int, int]]]:
        """``(order, layer_ids (N,), coords (N, 3), ranges)``; ``ranges[layer] = (start, end)`` in the video sequence."""
        grids = tuple(self.grid_shapes)
        if self._layout is None or self._layout[0] != grids:  # memoised: sampling asks once per token
            order, layer_ids, coords = video_layout(list(grids), self.config.rope_frame)
            ranges, start = {}, 0
            for layer in order:
                n = math.prod(grids[layer])
                ranges[layer] = (start, start + n)
                start += n
            self._layout = (grids, (order, layer_ids, coords, ranges))
        return self._layout[1]

    def check_pyramid(self, pyramid: TokenPyramid, what: str = "pyramid") -> None:
        """:class:`BadInput` naming the mismatch when ``pyramid`` is not on this generator's codebooks and grids."""
        if list(pyramid.codebook_sizes) != self.codebook_sizes:
            raise BadInput(f"ar-llama: {what} codebooks {list(pyramid.codebook_sizes)} differ from the generator's "
                           f"{self.codebook_sizes} (those of its tokenizer)")
        grids = [tuple(int(v) for v in g) for g in pyramid.grid_shapes]
        if grids != self.grid_shapes:
            raise BadInput(f"ar-llama: {what} grids {grids} differ from the generator's {self.grid_shapes} (its "
                           f"tokenizer's for {'x'.join(map(str, self.clip_shape))} clips)")

    def flatten(self, pyramid: TokenPyramid, masked_as_ignored: bool = False) -> torch.Tensor:
        """Pyramid -> ``(B, N)`` token sequence, coarse-to-fine, raster order within each layer.

        With ``masked_as_ignored``, tokens a dynamic-encoding keep-mask drops become ``IGNORE`` (-1):
        they carry no information, so they are not supervised (and are embedded as token 0).
        """
        self.check_pyramid(pyramid)
        parts = []
        for i in pyramid.coarse_to_fine():
            tok, keep = pyramid.layers[i].flatten(1), pyramid.masks[i]
            if masked_as_ignored and keep is not None:
                tok = torch.where(keep.flatten(1).to(tok.device), tok, torch.full_like(tok, IGNORE))
            parts.append(tok)
        return torch.cat(parts, dim=1)

    def unflatten(self, tokens: torch.Tensor) -> TokenPyramid:
        """``(B, N)`` coarse-to-fine tokens -> pyramid (densest layer first), on CPU."""
        _, _, _, ranges = self.layout()
        layers = [tokens[:, ranges[i][0]:ranges[i][1]].reshape(tokens.shape[0], *self.grid_shapes[i]).cpu()
                  for i in range(len(self.codebook_sizes))]
        return TokenPyramid(layers, list(self.codebook_sizes))
