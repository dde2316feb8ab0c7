"""FVD: Fréchet distance of I3D (Kinetics-400) features between real and generated/reconstructed clips.

Extractor: StyleGAN-V's ``i3d_torchscript.pt`` (the port matching the TF-Hub I3D that the original FVD
uses; TokenBench and common_metrics_on_video_quality use the same file). Preprocessing as those
implementations do it: every frame resized bilinearly so its short side is 224, centre-cropped to
224x224, values mapped to [-1, 1]; the model is called with ``rescale=False, resize=False,
return_features=True`` and gives 400-d features per clip. I3D needs at least 10 frames per clip.

The value depends strongly on the number of clips (the field uses 2048); the table carries
``fvd/real_clips`` and ``fvd/gen_clips`` and the provenance warns when they are too few.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from hitvideo_bench.api import ComponentConfig, ShapeError, WeightsUnavailable, find_weights, sha256_of, weight_info

from .frechet import FrechetFeatureMetric

I3D_RESOLUTION = 224
I3D_MIN_FRAMES = 10


class FVDConfig(ComponentConfig):
    extractor_path: str | None = Field(None, description="an i3d_torchscript.pt elsewhere than the torch hub cache")
    batch_clips: int = Field(4, ge=1, description="clips per I3D forward pass")
    min_stable_clips: int = Field(256, ge=2, description="fewer clips on either side -> a warning with the value")


def i3d_preprocess(video: torch.Tensor, resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """``(B,3,T,H,W)`` in [0,1] -> short side resized to ``resolution`` (bilinear), centre crop, [-1, 1]."""
    B, C, T, H, W = video.shape
    scale = resolution / min(H, W)
    size = (resolution, math.ceil(W * scale)) if H <= W else (math.ceil(H * scale), resolution)
    frames = video.float().permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    frames = frames[:, :, top:top + resolution, left:left + resolution]
    frames = frames.reshape(B, T, C, resolution, resolution).permute(0, 2, 1, 3, 4)
    return (frames * 2 - 1).contiguous()


class FVD(FrechetFeatureMetric):
    """Fréchet video distance on I3D features; ``{"": fvd, "real_clips": n, "gen_clips": m}``."""

    Config = FVDConfig

    def __init__(self, config=None, *, extractor: torch.nn.Module | None = None, **kwargs):
        """``extractor`` is for tests only: a stand-in called like the I3D TorchScript model."""
        super().__init__(config, **kwargs)
        self.min_stable_clips = self.config.min_stable_clips
        if extractor is not None:
            self.extractor = extractor.eval()
            self.extractor_name, self.extractor_sha256 = f"stand-in (test only): {type(extractor).__name__}", None
            return
        if self.config.extractor_path:
            path = Path(self.config.extractor_path).expanduser()
            if not path.is_file():
                raise WeightsUnavailable("i3d (fvd)", f"fvd.extractor_path {path} does not exist; "
                                         + weight_info("i3d").hint())
        else:
            path = find_weights("i3d")
        self.extractor = torch.jit.load(str(path), map_location="cpu").eval()
        self.extractor_name = "StyleGAN-V i3d_torchscript.pt (I3D Kinetics-400, TF-Hub port)"
        self.extractor_sha256 = sha256_of(path)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        if video.shape[2] < I3D_MIN_FRAMES:
            raise ShapeError(f"fvd: I3D needs at least {I3D_MIN_FRAMES} frames per clip, got {video.shape[2]}")
        device = next(self.extractor.parameters(), torch.empty(0, device=video.device)).device
        out = []
        for start in range(0, video.shape[0], self.config.batch_clips):
            clips = i3d_preprocess(video[start:start + self.config.batch_clips]).to(device)
            out.append(self.extractor(clips, rescale=False, resize=False, return_features=True).double())
        return torch.cat(out).to(video.device)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "extractor": self.extractor_name, "extractor_sha256": self.extractor_sha256,
                "resolution": I3D_RESOLUTION, "resize": "short side to 224 bilinear, centre crop",
                "input_range": "[-1, 1]", "features": "I3D logits-layer features (return_features=True)"}


__all__ = ["FVD", "FVDConfig", "i3d_preprocess"]
