"""PatchProjectionDistance: a metric with a pretrained file, written as a third-party plugin would write it.

Each 1 x 4 x 4 patch of a frame is projected to 16 features by a fixed matrix read from a weights file
(``example-projection``, declared in ``plugin.py`` through ``hitbench_register_weights``); the value is
the mean L2 distance between the features of ``pred`` and ``target`` patches. The file is looked up with
:func:`hitvideo_bench.api.find_weights`: when it is missing the constructor raises ``WeightsUnavailable`` and
the table reads ``unavailable: <how to get it>``, never a number from made-up weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hitvideo_bench.api import BadInput, BenchMetric, ShapeError, find_weights, sha256_of

WEIGHT_NAME = "example-projection"
PROJECTION_FILE = "hitbench-example-patch-projection-v1.safetensors"
PATCH = 4
FEATURES = 16
SHAPE = (FEATURES, 3 * PATCH * PATCH)
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def check_projection(path: Path) -> None:
    """The file is a safetensors file with a float tensor ``projection`` of shape 16 x 48 (no checksum is
    published for it, so this is what ``hitbench weights --import`` and ``--download`` verify)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if "projection" not in handle.keys():
                raise BadInput(f"{path}: no tensor 'projection' (has: {', '.join(handle.keys()) or 'none'})")
            tensor = handle.get_slice("projection")
            shape, dtype = tuple(tensor.get_shape()), tensor.get_dtype()
    except BadInput:
        raise
    except Exception as exc:  # safetensors raises its own error types for a file that is not one
        raise BadInput(f"{path}: not a safetensors file ({exc})") from None
    if shape != SHAPE or dtype not in FLOAT_DTYPES:
        raise BadInput(f"{path}: tensor 'projection' is {dtype} of shape {list(shape)}; expected a float tensor "
                       f"({', '.join(FLOAT_DTYPES)}) of shape {list(SHAPE)}")


def load_projection(path: Path) -> torch.Tensor:
    """The checked projection matrix, float32."""
    from safetensors.torch import load_file

    check_projection(path)
    return load_file(str(path))["projection"].float()


class PatchProjectionDistance(BenchMetric):
    """Mean L2 distance between projected 4 x 4 patches of ``pred`` and ``target`` (lower is better)."""

    higher_is_better = False
    per_clip = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        path = find_weights(WEIGHT_NAME)  # WeightsUnavailable, with the --download / --import hint, when missing
        self.register_buffer("projection", load_projection(path), persistent=False)
        self.weights_sha256 = sha256_of(path)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """``(B,3,T,H,W)`` -> ``(B, patches, 16)``; rows and columns past a multiple of 4 are left out."""
        B, C, T, H, W = video.shape
        if H < PATCH or W < PATCH:
            raise ShapeError(f"patch-distance: frames of {H}x{W} are smaller than one {PATCH}x{PATCH} patch")
        video = video[..., :H - H % PATCH, :W - W % PATCH].float()
        patches = video.unfold(3, PATCH, PATCH).unfold(4, PATCH, PATCH)  # B, C, T, h, w, P, P
        patches = patches.permute(0, 2, 3, 4, 1, 5, 6).reshape(B, -1, C * PATCH * PATCH)
        return patches @ self.projection.to(patches).T

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        distance = (self.features(pred) - self.features(target)).norm(dim=-1)
        self.total += distance.double().sum()
        self.count += distance.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count

    def provenance(self) -> dict[str, Any]:
        return {"weights": WEIGHT_NAME, "weights_sha256": self.weights_sha256, "patch": f"1x{PATCH}x{PATCH}",
                "features": FEATURES}


__all__ = ["PatchProjectionDistance", "check_projection", "load_projection"]
