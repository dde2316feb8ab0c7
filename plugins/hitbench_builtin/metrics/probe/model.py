"""The probe network (:class:`ProbeNet`, two conv streams and one head per attribute) and :class:`Probe`, a
trained network with its config and training summary, which computes features and predictions of clips."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hitvideo_bench.api import ShapeError

from ...datasets.synthetic import ATTRIBUTES
from .config import ATTRIBUTE_NAMES, ProbeConfig
from .inputs import cpu_threads, probe_inputs


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ProbeNet(nn.Module):
    """Two conv streams (motion: early-fused frames + coordinates; appearance: middle frame), global
    mean+max pooling, a feature layer (penultimate features) and one linear head per attribute."""

    def __init__(self, frames: int = 8, width: int = 32, appearance_width: int = 16, feature_dim: int = 64):
        super().__init__()
        w, a = width, appearance_width
        self.frames = frames
        self.motion = nn.Sequential(*_block(3 * frames + 2, w, 2), *_block(w, 2 * w, 2),
                                    *_block(2 * w, 2 * w, 2), *_block(2 * w, 4 * w, 2))
        self.appearance = nn.Sequential(*_block(3, a, 2), *_block(a, 2 * a, 2),
                                        *_block(2 * a, 4 * a, 2), *_block(4 * a, 4 * a, 1))
        self.feature = nn.Linear(8 * w + 8 * a, feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, len(values))
                                    for name, values in ATTRIBUTES.items()})

    def features(self, motion: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of probe inputs (see :func:`probe_inputs`), in [0, 1]."""
        B, C, T, H, W = motion.shape
        if C != 3 or T != self.frames:
            raise ShapeError(f"probe: motion input must be (B, 3, {self.frames}, H, W), got {tuple(motion.shape)}")
        stacked = (motion * 2 - 1).reshape(B, C * T, H, W)
        ys = torch.linspace(-1, 1, H, device=motion.device, dtype=motion.dtype).view(1, 1, H, 1).expand(B, 1, H, W)
        xs = torch.linspace(-1, 1, W, device=motion.device, dtype=motion.dtype).view(1, 1, 1, W).expand(B, 1, H, W)
        m = self.motion(torch.cat([stacked, xs, ys], dim=1))
        a = self.appearance(appearance * 2 - 1)
        pooled = torch.cat([m.mean((2, 3)), m.amax((2, 3)), a.mean((2, 3)), a.amax((2, 3))], dim=1)
        return self.feature(pooled)

    def forward(self, motion: torch.Tensor, appearance: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.features(motion, appearance)
        hidden = F.relu(feats)
        return feats, {name: head(hidden) for name, head in self.heads.items()}


class Probe:
    """A trained probe: its network, its working shape and the summary of its training (held-out accuracy)."""

    def __init__(self, net: ProbeNet, config: ProbeConfig, summary: dict[str, Any]):
        self.net = net.eval()
        self.config = config
        self.summary = summary

    @property
    def accuracy(self) -> float:
        """Held-out accuracy with every attribute right."""
        return float(self.summary["heldout_accuracy"]["all"])

    def _run(self, video: torch.Tensor, fn) -> torch.Tensor:
        device = next(self.net.parameters()).device
        out = []
        with torch.no_grad(), cpu_threads(self.config.cpu_threads, device):
            for start in range(0, video.shape[0], self.config.batch_clips):
                motion, appearance = probe_inputs(video[start:start + self.config.batch_clips].to(device),
                                                  self.config)
                out.append(fn(motion, appearance))
        return torch.cat(out)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of clips ``(B,3,T,H,W)``, on ``video``'s device."""
        return self._run(video, self.net.features).to(video.device)

    def predict(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, n_attributes)`` predicted class indices (on CPU)."""
        def classes(motion, appearance):
            _, logits = self.net(motion, appearance)
            return torch.stack([logits[n].argmax(-1) for n in ATTRIBUTE_NAMES], dim=1).cpu()
        return self._run(video, classes)
