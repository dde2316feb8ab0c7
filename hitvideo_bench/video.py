"""Video I/O with PyAV, frame-rate resampling, cropping, and the one place that converts pixel formats.

Public boundary: a clip is ``float32 (3, T, H, W)`` in ``[0, 1]``; files and codecs speak
``uint8 (T, H, W, 3)`` RGB. :func:`to_uint8_frames` and :func:`from_uint8_frames` convert between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .errors import BadInput
from .io import atomic_path


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``(3, T, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8 (rounded)."""
    return video.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def from_uint8_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float32 in [0, 1]."""
    return torch.as_tensor(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(255)


@dataclass
class DecodedVideo:
    """Frames of a file: ``uint8 (N, H, W, 3)``, their presentation times in seconds, the stream's fps."""

    frames: np.ndarray
    times: np.ndarray
    fps: float


def read_video(path: str | Path) -> DecodedVideo:
    """Decode every frame of the first video stream of ``path`` with PyAV."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInput(f"{path}: no video stream")
            stream = container.streams.video[0]
            frames, times = [], []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time) if frame.time is not None else len(times) / float(stream.average_rate or 25))
            fps = float(stream.average_rate) if stream.average_rate else 0.0
    except (av.error.FFmpegError, OSError) as exc:
        raise BadInput(f"{path}: cannot read video: {exc}") from None
    if not frames:
        raise BadInput(f"{path}: no decodable frames (truncated or corrupt file?)")
    times_arr = np.asarray(times, dtype=np.float64)
    if fps <= 0 and len(times_arr) > 1:
        fps = float((len(times_arr) - 1) / max(times_arr[-1] - times_arr[0], 1e-9))
    return DecodedVideo(np.stack(frames), times_arr - times_arr[0], fps)


def resample_indices(times: np.ndarray, fps: float, count: int | None = None, start: float = 0.0) -> np.ndarray:
    """Indices of the frames shown at ``start + k / fps`` for k = 0, 1, ... (``count`` of them, or all that fit).

    The frame shown at time ``t`` is the last one whose timestamp is <= ``t`` (plus a small tolerance for
    rounded timestamps).
    """
    duration = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0.0)
    available = int(np.floor((duration - start) * fps + 1e-6))
    count = available if count is None else count
    wanted = start + np.arange(count) / fps
    return np.clip(np.searchsorted(times, wanted + 1e-6, side="right") - 1, 0, len(times) - 1)


def crop_resize(video: torch.Tensor, height: int, width: int, mode: str = "center",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop ``(3, T, H, W)`` to the target aspect ratio (centre or random) and resize to ``height x width``."""
    _, _, H, W = video.shape
    scale = min(H / height, W / width)
    ch, cw = round(height * scale), round(width * scale)
    if mode == "random":
        top = int(torch.randint(H - ch + 1, (1,), generator=generator))
        left = int(torch.randint(W - cw + 1, (1,), generator=generator))
    elif mode == "center":
        top, left = (H - ch) // 2, (W - cw) // 2
    else:
        raise BadInput(f"crop mode {mode!r}: allowed values are center, random")
    cropped = video[:, :, top:top + ch, left:left + cw]
    if (ch, cw) == (height, width):
        return cropped
    resized = F.interpolate(cropped.permute(1, 0, 2, 3), size=(height, width), mode="bilinear",
                            antialias=True, align_corners=False)
    return resized.permute(1, 0, 2, 3).clamp(0, 1)


def write_video(path: str | Path, video: torch.Tensor, fps: float = 8.0) -> Path:
    """Write ``(3, T, H, W)`` in [0, 1] as mp4 (H.264) or gif by suffix, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise BadInput(f"{path}: video suffix must be .mp4 or .gif")
    frames = to_uint8_frames(video)
    codec, pix_fmt = ("libx264", "yuv420p") if suffix == ".mp4" else ("gif", "rgb8")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=suffix[1:]) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = frames.shape[2] - frames.shape[2] % 2, frames.shape[1] - frames.shape[1] % 2
            stream.pix_fmt = pix_fmt
            for frame in frames:
                av_frame = av.VideoFrame.from_ndarray(frame[:stream.height, :stream.width], format="rgb24")
                container.mux(stream.encode(av_frame))
            container.mux(stream.encode(None))
    return path
