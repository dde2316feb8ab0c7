"""Pixel metrics on videos: scored frame by frame (data range 1), averaged over frames and clips.

PSNR is the mean of per-frame PSNR (SPEC 8); it can also report the PSNR of the mean MSE, which on
real clips differs by up to ~1 dB. SSIM and MS-SSIM use pytorch-msssim (gaussian window 11, sigma
1.5). MS-SSIM needs frames over 160 px for its 5 scales; smaller frames get as many scales as fit,
with the standard weights truncated and renormalised, built from the library's own blocks, and the
number of scales is recorded in the provenance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from pytorch_msssim import ssim as ms_ssim_lib_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from hitvideo_bench.api import BenchMetric, ComponentConfig

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE, WIN_SIGMA = 11, 1.5


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` -> ``(B*T, 3, H, W)`` in float32."""
    B, C, T, H, W = video.shape
    return video.float().permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)


class FramewiseMetric(BenchMetric):
    """Mean over all frames of a per-frame score; subclasses implement :meth:`frame_scores`."""

    inputs = ("pred", "target")
    stages = ("reconstruction",)
    higher_is_better = True
    per_clip = True  # every clip has the same number of frames: the mean over clips is the mean over frames

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.frame_size: tuple[int, int] | None = None

    def frame_scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of ``N`` frame pairs ``(N, 3, H, W)``."""
        raise NotImplementedError

    def video_scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scores of every frame of clips ``(B, 3, T, H, W)``; by default :meth:`frame_scores` on their frames."""
        return self.frame_scores(frames_of(pred), frames_of(target))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"{type(self).__name__}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        scores = self.video_scores(pred, target)
        self.score_sum += scores.double().sum()
        self.frames += scores.numel()
        self.frame_size = tuple(pred.shape[-2:])

    def compute(self):
        return self.score_sum / self.frames

    def provenance(self) -> dict:
        return {"frames": int(self.frames), "data_range": 1.0, "averaging": "mean over frames of per-frame score"}


class PSNRConfig(ComponentConfig):
    mean_mse: bool = Field(False, description="also report the PSNR of the mean MSE (reported as psnr/of_mean_mse)")


class PSNR(FramewiseMetric):
    """Mean over frames of per-frame PSNR in dB, data range 1 (a perfect frame counts as 100 dB)."""

    Config = PSNRConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("mse_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def video_scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # per-frame MSE straight from (B, 3, T, H, W): no frame reshuffling copy
        mse = (pred.double() - target.double()).pow_(2).mean(dim=(1, 3, 4)).flatten()
        self.mse_sum += mse.sum()
        return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))

    def compute(self):
        mean = self.score_sum / self.frames
        if not self.config.mean_mse:
            return mean
        return {"": mean, "of_mean_mse": 10 * torch.log10(1.0 / (self.mse_sum / self.frames).clamp(min=1e-10))}

    def sub_higher_is_better(self, key):
        return True if key == "of_mean_mse" else None


class SSIM(FramewiseMetric):
    """Mean over frames of SSIM (pytorch-msssim, gaussian window 11, sigma 1.5, K = (0.01, 0.03))."""

    def frame_scores(self, pred, target):
        return ms_ssim_lib_ssim(pred, target, data_range=1.0, size_average=False, win_size=WIN_SIZE,
                                win_sigma=WIN_SIGMA)


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit: the library's rule ``min side > (win - 1) * 2^(scales - 1)``, at most 5."""
    side = min(height, width)
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if side > (WIN_SIZE - 1) * 2 ** (scales - 1):
            return scales
    return 1


def ms_ssim_frames(pred: torch.Tensor, target: torch.Tensor, scales: int) -> torch.Tensor:
    """MS-SSIM per frame with ``scales`` scales (weights truncated and renormalised when < 5)."""
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=pred.dtype, device=pred.device)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(WIN_SIZE, WIN_SIGMA).repeat([pred.shape[1], 1, 1, 1]).to(pred.device, pred.dtype)
    x, y, factors = pred, target, []
    for level in range(scales):
        ssim_per_channel, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False)
        if level < scales - 1:
            factors.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
    factors.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(factors, dim=0)  # (scales, N, C)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(1)


class MSSSIM(FramewiseMetric):
    """Mean over frames of MS-SSIM; frames too small for 5 scales use fewer (recorded)."""

    def frame_scores(self, pred, target):
        return ms_ssim_frames(pred, target, ms_ssim_scales(*pred.shape[-2:]))

    def provenance(self) -> dict:
        scales = ms_ssim_scales(*self.frame_size) if self.frame_size else None
        note = "standard 5 scales" if scales == 5 else "fewer scales, weights renormalised (frames <= 160 px)"
        return {**super().provenance(), "scales": scales, "note": note}


__all__ = ["PSNR", "SSIM", "MSSSIM", "FramewiseMetric", "frames_of", "ms_ssim_frames", "ms_ssim_scales"]
