"""What the probe sees: clips of any shape resampled to its two inputs (:func:`probe_inputs`), attribute
labels as class indices (:func:`attribute_targets`), and :func:`cpu_threads`, the intra-op thread setting this
many-small-ops work runs under on CPU (see the package docstring). Shared by training, the trained
:class:`~.model.Probe` and the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from hitvideo_bench.api import ShapeError

from ...datasets.synthetic import ATTRIBUTES
from .config import ATTRIBUTE_NAMES, ProbeConfig


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resample the trailing dims of ``x`` (``(B,C,*dims)``, 2 or 3 dims) to ``size``: box average when
    shrinking by integer factors, area when shrinking otherwise, (bi/tri)linear where growing."""
    src = tuple(x.shape[2:])
    if src == tuple(size):
        return x
    if all(s >= d and s % d == 0 for s, d in zip(src, size)):
        pool = F.avg_pool3d if len(size) == 3 else F.avg_pool2d
        kernel = tuple(s // d for s, d in zip(src, size))
        return pool(x, kernel, kernel)
    down = tuple(min(s, d) for s, d in zip(src, size))
    if down != src:
        x = F.interpolate(x, size=down, mode="area")
    if down != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="trilinear" if len(size) == 3 else "bilinear",
                          align_corners=False)
    return x


def resample(video: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """``(B,3,T,H,W)`` -> ``(B,3,frames,size,size)`` float32 (box/area average down, linear up)."""
    return _resize(video.float(), (frames, size, size))


def probe_inputs(video: torch.Tensor, config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe's two inputs of clips ``(B,3,T,H,W)`` in [0,1] of any shape: the resampled clip and its
    middle frame at ``appearance_size``."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ShapeError(f"probe: clips must be (B, 3, T, H, W), got {tuple(video.shape)}")
    video = video.float()
    middle = video[:, :, video.shape[2] // 2]
    return (resample(video, config.input_frames, config.input_size),
            _resize(middle, (config.appearance_size, config.appearance_size)))


def attribute_targets(attrs: list[dict[str, str]]) -> torch.Tensor:
    """``(B, n_attributes)`` class indices of attribute dicts."""
    return torch.tensor([[ATTRIBUTES[n].index(a[n]) for n in ATTRIBUTE_NAMES] for a in attrs], dtype=torch.long)


@contextlib.contextmanager
def cpu_threads(count: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads when working on CPU (see the package docstring)."""
    previous = torch.get_num_threads()
    change = count is not None and torch.device(device).type == "cpu" and count != previous
    if change:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)
