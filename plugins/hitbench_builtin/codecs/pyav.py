"""Classical codec baselines through PyAV: H.264 (libx264), HEVC (libx265), AV1 (SVT-AV1).

Bits are counted honestly (see docs/codecs.md): the bare bitstream of a ``CodecContext``
(no container), parameter sets included; libx264's version/options SEI banner is stripped from the
stream (and the stripped stream is what gets decoded, proving nothing needed was lost); libx265 runs
with ``info=0``; AV1 temporal delimiters (2 bytes a frame) are stripped as an mp4 sample would.
RGB -> yuv420p -> RGB is part of the reconstruction, and its no-codec PSNR ceiling is reported.

``target_bpp`` searches the CRF per clip: bpp is not monotonic in CRF at these sizes, so a coarse grid
over the whole range is followed by every CRF near the two closest coarse points, and the closest
result is kept. A target below the codec's floor cannot be reached: the floor and the bpp actually
reached are reported, never hidden.

Every encode is deterministic on a machine (so a ``target_bpp`` search picks the same CRF run to run):
encoder threads are pinned by ``threads``; libx265 gets a CTU size that leaves at least two CTUs across
each side of the frame and runs without its assembly kernels, since with one 64x64 CTU per frame its
motion search, and its assembly coefficient coding at any CTU size, read uninitialised memory (valgrind):
the output varied run to run and an encode could crash. libx264 runs without its assembly kernels too: with
them one clip gave another stream in 8 of 174 encodes (processes side by side, allocations between encodes),
with the C kernels in none of 84 (docs/codecs.md).
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import ClassVar

import av
import numpy as np
import torch
from pydantic import Field, model_validator

from hitvideo_bench.api import (Codec, ComponentConfig, Compressed, RunFailed, ShapeError, from_uint8_frames,
                                to_uint8_frames)

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner on every open otherwise

_START_CODE = re.compile(b"\x00\x00\x01")


class CodecConfig(ComponentConfig):
    crf: int | None = Field(None, ge=0, le=63, description="fixed rate setting; exclusive with target_bpp")
    target_bpp: float | None = Field(None, gt=0, description="search the CRF per clip for this bpp")
    speed: str = Field("medium", description="encoder speed preset (x264/x265 names; SVT-AV1 0-13)")
    gop: int = Field(0, ge=0, description="keyframe interval; 0 = encoder default")
    fps: float = Field(8.0, gt=0)
    threads: int = Field(1, ge=1, description="encoder threads (x264 threads, x265 pool, SVT-AV1 lp)")
    coarse_step: int = Field(4, ge=1, description="target_bpp search: coarse CRF grid step")

    @model_validator(mode="after")
    def _one_rate(self):
        if self.crf is not None and self.target_bpp is not None:
            raise ValueError("set either crf or target_bpp, not both")
        return self


def split_annexb(stream: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream, each with its start code."""
    starts = [m.start() for m in _START_CODE.finditer(stream)]
    starts = [s - 1 if s > 0 and stream[s - 1] == 0 else s for s in starts]
    return [stream[a:b] for a, b in zip(starts, starts[1:] + [len(stream)])]


def yuv420_ceiling_psnr(frames: np.ndarray) -> float:
    """PSNR (mean over frames) of RGB -> yuv420p -> RGB with no codec at all."""
    out = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
           for f in frames]
    mse = ((np.stack(out).astype(np.float64) - frames.astype(np.float64)) / 255) ** 2
    per_frame = mse.reshape(len(frames), -1).mean(1).clip(min=1e-10)
    return float(np.mean(10 * np.log10(1 / per_frame)))


class PyAVCodec(Codec):
    """Shared encode / strip / decode / rate search; subclasses name the codec and its quirks."""

    Config = CodecConfig
    encoder: ClassVar[str]
    decoder: ClassVar[str]
    crf_range: ClassVar[tuple[int, int]] = (0, 51)
    default_crf: ClassVar[int] = 28
    counted: ClassVar[str] = "bare bitstream (no container), parameter sets included"

    def options(self, crf: int, height: int, width: int) -> dict[str, str]:
        """Encoder options for one clip of ``height x width``."""
        return {"crf": str(crf), "preset": self.config.speed, "threads": str(self.config.threads)}

    def strip(self, packets: list[bytes]) -> list[bytes]:
        """Remove bytes that are not content (encoder banners, delimiters)."""
        return packets

    def encode(self, frames: np.ndarray, crf: int) -> list[bytes]:
        """Encode ``(T, H, W, 3)`` uint8 RGB; returns the (stripped) packets."""
        T, H, W, _ = frames.shape
        ctx = av.CodecContext.create(self.encoder, "w")
        ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
        rate = Fraction(self.config.fps).limit_denominator(1000)
        ctx.time_base, ctx.framerate = 1 / rate, rate
        if self.config.gop:
            ctx.gop_size = self.config.gop
        ctx.options = self.options(crf, H, W)
        packets = []
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            vf.pts = i
            packets += [bytes(p) for p in ctx.encode(vf)]
        packets += [bytes(p) for p in ctx.encode(None)]
        return self.strip(packets)

    def decode(self, packets: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
        """Decode the stripped packets back to ``(T, H, W, 3)`` uint8 RGB."""
        ctx = av.CodecContext.create(self.decoder, "r")
        frames = []
        for data in packets:
            for packet in ctx.parse(data):
                frames += ctx.decode(packet)
        for packet in ctx.parse(b""):
            frames += ctx.decode(packet)
        frames += ctx.decode(None)
        if len(frames) != shape[0]:
            raise RunFailed(f"{self.encoder}: decoded {len(frames)} of {shape[0]} frames from the stripped stream")
        return np.stack([f.to_ndarray(format="rgb24") for f in frames])

    def choose_crf(self, frames: np.ndarray) -> tuple[int, list[bytes], dict]:
        """The CRF whose bpp is closest to the target (all candidates near the best coarse ones tried)."""
        pixels = frames.shape[0] * frames.shape[1] * frames.shape[2]
        lo, hi = self.crf_range
        tried: dict[int, list[bytes]] = {}

        def bpp(crf: int) -> float:
            if crf not in tried:
                tried[crf] = self.encode(frames, crf)
            return 8 * sum(map(len, tried[crf])) / pixels

        target = self.config.target_bpp
        coarse = sorted(set(range(lo, hi + 1, self.config.coarse_step)) | {hi})
        best = sorted(coarse, key=lambda c: abs(bpp(c) - target))[:2]
        step = self.config.coarse_step
        for centre in best:
            for crf in range(max(lo, centre - step + 1), min(hi, centre + step - 1) + 1):
                bpp(crf)
        crf = min(tried, key=lambda c: (abs(bpp(c) - target), c))
        floor = min(bpp(c) for c in tried)
        reached = bpp(crf)
        info = {"target_bpp": target, "floor_bpp": floor, "reachable": floor <= target * 1.1,
                "within_10pct": abs(reached - target) <= 0.1 * target, "crf_tried": len(tried)}
        return crf, tried[crf], info

    def compress(self, video: torch.Tensor) -> Compressed:
        recs, bits, infos = [], [], []
        for clip in video:
            frames = to_uint8_frames(clip)
            if self.config.target_bpp is not None:
                crf, packets, info = self.choose_crf(frames)
            else:
                crf = self.config.crf if self.config.crf is not None else self.default_crf
                packets, info = self.encode(frames, crf), {}
            decoded = self.decode(packets, frames.shape[:3])
            recs.append(from_uint8_frames(decoded))
            bits.append(8.0 * sum(map(len, packets)))
            infos.append({"crf": crf, "yuv420p_ceiling_psnr": yuv420_ceiling_psnr(frames), **info})
        per_clip = {"yuv420p_ceiling_psnr": [c["yuv420p_ceiling_psnr"] for c in infos],
                    "crf": [c["crf"] for c in infos]}
        info = {"counted": self.counted, "codec": self.encoder, "clips": infos, "per_clip": per_clip}
        return Compressed(torch.stack(recs).to(video.device), torch.tensor(bits, dtype=torch.float64), None, info)

    def check_shape(self, frames: int, height: int, width: int) -> None:
        super().check_shape(frames, height, width)
        if min(height, width) < 16:
            raise ShapeError(f"{self.encoder}: frames must be at least 16x16, got {height}x{width}")


class X264Codec(PyAVCodec):
    """H.264 via libx264 without its assembly kernels (their output depended on the heap); its version/options
    SEI (~680 bytes, no option removes it) is stripped."""

    encoder, decoder = "libx264", "h264"
    counted = PyAVCodec.counted + "; x264 version/options SEI stripped"

    def options(self, crf, height, width):
        return {**super().options(crf, height, width), "x264-params": "no-asm=1"}

    def strip(self, packets):
        return [b"".join(nal for nal in split_annexb(p) if not _is_x264_banner(nal)) for p in packets]


def _is_x264_banner(nal: bytes) -> bool:
    body = nal.lstrip(b"\x00")[1:]  # skip the start code's final 0x01
    return bool(body) and body[0] & 0x1F == 6 and b"x264 - core" in body


class X265Codec(PyAVCodec):
    """HEVC via libx265 with ``info=0`` (drops its ~2.3 KB SEI banner); one frame thread, a pinned pool, a CTU
    that fits at least twice across the frame and no assembly kernels (both read uninitialised memory)."""

    encoder, decoder = "libx265", "hevc"
    counted = PyAVCodec.counted + "; x265 info SEI disabled (info=0)"

    def options(self, crf, height, width):
        ctu = x265_ctu(height, width)
        return {"crf": str(crf), "preset": self.config.speed,
                "x265-params": f"info=0:log-level=error:pools={self.config.threads}:frame-threads=1:ctu={ctu}"
                               ":no-asm=1"}


def x265_ctu(height: int, width: int) -> int:
    """The largest x265 CTU size (64, 32 or 16) that fits at least twice into both sides of the frame."""
    return next((ctu for ctu in (64, 32) if min(height, width) >= 2 * ctu), 16)


class SvtAv1Codec(PyAVCodec):
    """AV1 via SVT-AV1; temporal delimiter OBUs (2 bytes a frame) are stripped as in an mp4 sample."""

    encoder, decoder = "libsvtav1", "libdav1d"
    crf_range = (1, 63)
    default_crf = 40
    counted = PyAVCodec.counted + "; AV1 temporal delimiters stripped"

    def options(self, crf, height, width):
        speed = self.config.speed if self.config.speed.isdigit() else "8"
        return {"crf": str(crf), "preset": speed, "svtav1-params": f"lp={self.config.threads}"}

    def strip(self, packets):
        return [p[2:] if p[:2] == b"\x12\x00" else p for p in packets]


__all__ = ["X264Codec", "X265Codec", "SvtAv1Codec", "split_annexb", "x265_ctu", "yuv420_ceiling_psnr"]
