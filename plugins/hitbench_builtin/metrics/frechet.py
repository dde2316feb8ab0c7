"""Fréchet distance between two feature sets (FID/FVD formula) in float64, and a metric base over it.

``d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The trace of the matrix square root
is computed as ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))``: that matrix is symmetric positive semi-definite,
so its eigenvalues are real and the result stays finite even with fewer samples than dimensions
(singular covariances), where ``scipy.linalg.sqrtm`` of the non-symmetric product can turn complex.

:class:`FrechetFeatureMetric` collects per-clip features of real (``target``) and generated/reconstructed
(``pred``) clips and reports the distance with the number of clips on each side; too few clips for a
stable estimate give a warning in the provenance (FVD-style numbers depend strongly on the count).
"""

from __future__ import annotations

from abc import abstractmethod

import math
import warnings
from typing import Any

import torch

from hitvideo_bench.api import BenchMetric


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, in float64."""
    x = features.detach().double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats needs (N >= 2, D) features, got {tuple(x.shape)}")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t).double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"frechet_distance: shapes differ: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, "
                         f"sigma {tuple(sigma1.shape)} / {tuple(sigma2.shape)}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt
    return max(float(value), 0.0)  # a tiny negative value is round-off of two equal distributions


def frechet_distance_of(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two ``(N, D)`` feature sets."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


class FrechetFeatureMetric(BenchMetric):
    """Fréchet distance between features of ``target`` (real) and ``pred`` clips.

    Subclasses implement :meth:`features` (``(B,3,T,H,W)`` in [0,1] -> ``(B, D)``) and may set
    ``min_stable_clips``: below that many clips on either side the provenance carries a warning.
    ``compute`` returns ``{"": distance, "real_clips": n, "gen_clips": m}``.
    """

    inputs = ("pred", "target")
    stages = ("reconstruction", "generation")
    higher_is_better = False
    #: the distance is a statistic of the whole set: intervals and paired claims resample the clips
    resampled = True
    min_stable_clips: int = 256

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("gen_features", default=[], dist_reduce_fx="cat")
        self.clip_shape: tuple[int, ...] | None = None

    @abstractmethod
    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Per-clip features ``(B, D)`` of clips ``(B, 3, T, H, W)`` in [0, 1]."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        with torch.no_grad():
            if target is not None:
                self.real_features.append(self.features(target).double())
            self.gen_features.append(self.features(pred).double())
        self.clip_shape = tuple(pred.shape[2:])

    @staticmethod
    def _stacked(state) -> torch.Tensor:
        if isinstance(state, torch.Tensor):
            return state
        return torch.cat(state) if state else torch.zeros(0, 0, dtype=torch.float64)

    def counts(self) -> tuple[int, int]:
        """Number of real and generated clips seen so far."""
        return self._stacked(self.real_features).shape[0], self._stacked(self.gen_features).shape[0]

    def compute(self) -> dict[str, Any]:
        real, gen = self._stacked(self.real_features), self._stacked(self.gen_features)
        n, m = real.shape[0], gen.shape[0]
        warning = self.warning()
        if warning:
            warnings.warn(f"{type(self).__name__}: {warning}", stacklevel=2)
        value = frechet_distance_of(real, gen) if min(n, m) >= 2 else math.nan
        return {"": torch.tensor(value, dtype=torch.float64), "real_clips": torch.tensor(float(n)),
                "gen_clips": torch.tensor(float(m))}

    def compute_on(self, index: torch.Tensor) -> float:
        """The distance over the clips ``index``, each generated clip resampled together with its real one."""
        real, gen = self._stacked(self.real_features), self._stacked(self.gen_features)
        if real.shape[0] != gen.shape[0]:
            raise ValueError(f"{type(self).__name__}: resampling needs one real clip per generated one, "
                             f"got {real.shape[0]} real and {gen.shape[0]} generated")
        index = index.to(real.device)
        return frechet_distance_of(real[index], gen[index]) if index.numel() >= 2 else math.nan

    def warning(self) -> str:
        """Why the value is not a stable estimate ("" when it is)."""
        n, m = self.counts()
        if min(n, m) < 2:
            return f"needs at least 2 clips on each side, got {n} real and {m} generated (value is NaN)"
        if min(n, m) < self.min_stable_clips:
            return (f"only {n} real and {m} generated clips: too few for a stable estimate "
                    f"(values shrink as clips grow; >= {self.min_stable_clips} recommended, the field uses 2048)")
        return ""

    def provenance(self) -> dict[str, Any]:
        n, m = self.counts()
        out: dict[str, Any] = {"real_clips": n, "gen_clips": m, "clip_shape": self.clip_shape,
                               "distance": "Frechet, float64, trace via eigenvalues of S1^1/2 S2 S1^1/2"}
        if self.warning():
            out["warning"] = self.warning()
        return out


__all__ = ["FrechetFeatureMetric", "feature_stats", "frechet_distance", "frechet_distance_of"]
