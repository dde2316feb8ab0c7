"""Codec baselines: real encodes through PyAV, honest bit counts, the rate search, the floor."""

from __future__ import annotations

import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench.errors import BadInput, ShapeError
from hitvideo_bench.video import from_uint8_frames, read_video, resample_indices, to_uint8_frames
from hitbench_builtin.codecs.pyav import X264Codec, _is_x264_banner, split_annexb


@pytest.fixture(scope="module")
def clips():
    """Fixture: two synthetic clips, 8 frames of 64x64."""
    ds = hb.create_dataset("synthetic-shapes", split="val")
    return torch.stack([ds[i]["video"][:, :8] for i in range(2)])


def psnr(a, b):
    metric = hb.create_metric("psnr")
    metric.update(pred=a, target=b)
    return float(metric.compute())


@pytest.mark.parametrize("name", ["x264", "x265", "svtav1"])
def test_round_trip_and_bits_are_the_bare_packets(name, clips):
    codec = hb.create_codec(name, crf=30)
    out = codec.compress(clips)
    assert out.reconstruction.shape == clips.shape
    assert psnr(out.reconstruction, clips) > 28
    frames = to_uint8_frames(clips[0])
    packets = codec.encode(frames, 30)
    assert out.bits[0].item() == 8 * sum(map(len, packets))
    assert out.info["clips"][0]["yuv420p_ceiling_psnr"] > psnr(out.reconstruction, clips) - 0.5


def test_x264_banner_is_stripped_and_the_stream_still_decodes(clips):
    codec = hb.create_codec("x264", crf=30)
    frames = to_uint8_frames(clips[0])
    stripped = b"".join(codec.encode(frames, 30))
    raw = b"".join(super(X264Codec, codec).strip(_raw_packets(codec, frames)))
    assert b"x264 - core" in raw and b"x264 - core" not in stripped
    assert len(raw) - len(stripped) > 400  # the banner is hundreds of bytes
    assert not any(_is_x264_banner(nal) for nal in split_annexb(stripped))
    decoded = codec.decode([stripped], frames.shape[:3])
    assert psnr(from_uint8_frames(decoded)[None], clips[:1]) > 28


def _raw_packets(codec, frames):
    original = codec.strip
    codec.strip = lambda packets: packets
    try:
        return codec.encode(frames, 30)
    finally:
        codec.strip = original


def test_target_bpp_is_reached_within_10_percent(clips):
    codec = hb.create_codec("x264", target_bpp=0.2, coarse_step=8)
    out = codec.compress(clips)
    bpp = out.bits / (8 * 64 * 64)
    assert torch.all((bpp - 0.2).abs() <= 0.02), bpp
    assert all(c["within_10pct"] and c["reachable"] for c in out.info["clips"])


def test_a_target_below_the_floor_reports_the_floor(clips):
    codec = hb.create_codec("x265", target_bpp=0.001, coarse_step=8)
    out = codec.compress(clips[:1])
    info = out.info["clips"][0]
    bpp = float(out.bits[0]) / (8 * 64 * 64)
    assert not info["reachable"] and not info["within_10pct"]
    assert bpp == pytest.approx(info["floor_bpp"]) and bpp > 0.01


def test_config_and_shape_errors():
    with pytest.raises(BadInput, match="either crf or target_bpp"):
        hb.create_codec("x264", crf=20, target_bpp=0.1)
    with pytest.raises(ShapeError, match="even height and width"):
        hb.create_codec("x264").check_shape(8, 63, 64)


def test_real_clip_through_a_codec(shared_clip):
    decoded = read_video(shared_clip)
    idx = resample_indices(decoded.times, 8.0, count=8)
    video = from_uint8_frames(decoded.frames[idx])[:, :, :128, :128]
    out = hb.create_codec("svtav1", crf=35).compress(video[None])
    assert psnr(out.reconstruction, video[None]) > 25
