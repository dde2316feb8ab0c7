"""Reference compressors that set a floor for a table: what a reconstruction must beat to mean anything."""

from __future__ import annotations

import torch

from hitvideo_bench.api import Codec, Compressed, EmptyConfig


class MeanColour(Codec):
    """Every pixel of a clip becomes the clip's mean colour (8 bits per channel: 24 bits a clip).

    The floor any overview must beat: a coarse layer that decodes worse than this carries no picture.
    """

    Config = EmptyConfig
    counted = "3 channel means at 8 bits each"

    def compress(self, video: torch.Tensor) -> Compressed:
        mean = (video.mean(dim=(2, 3, 4), keepdim=True) * 255).round() / 255
        bits = torch.full((video.shape[0],), 24.0, dtype=torch.float64)
        return Compressed(reconstruction=mean.expand_as(video).contiguous(), bits=bits,
                          info={"counted": self.counted})
