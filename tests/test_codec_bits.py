"""Codec bit counts checked against the bitstream itself: the test parses the packets (Annex B NAL units,
AV1 OBUs) with its own small parsers, so the stripping code is checked from outside, not by itself."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench.video import to_uint8_frames

#: AV1 OBU types (AV1 spec 6.2.2)
OBU_TEMPORAL_DELIMITER = 2
#: HEVC NAL unit types of SEI messages (H.265 table 7-1)
HEVC_SEI = (39, 40)
#: H.264 NAL unit type of an SEI message (H.264 table 7-1)
H264_SEI = 6


@pytest.fixture(scope="module")
def fixture_frames():
    """Fixture: one synthetic-shapes clip, 8 frames of 64x64, as uint8 RGB frames."""
    ds = hb.create_dataset("synthetic-shapes", split="val")
    return to_uint8_frames(ds[0]["video"][:, :8])


def annexb_units(stream: bytes) -> list[bytes]:
    """NAL unit payloads (start codes removed) of an Annex B stream."""
    return [unit for unit in re.split(b"\x00\x00\x01", stream)[1:] if unit]


def leb128(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return value, pos


def av1_obus(packet: bytes) -> list[tuple[int, int]]:
    """``(obu_type, total bytes)`` of every OBU in a packet; every OBU must carry its size field."""
    out, pos = [], 0
    while pos < len(packet):
        start, header = pos, packet[pos]
        assert not header & 0x80, "forbidden bit set: not an OBU boundary"
        assert header & 0x02, "OBU without a size field"
        pos += 2 if header & 0x04 else 1
        size, pos = leb128(packet, pos)
        pos += size
        out.append(((header >> 3) & 0x0F, pos - start))
    assert pos == len(packet), "the OBU sizes do not add up to the packet"
    return out


def raw_packets(codec, frames, crf: int = 30) -> list[bytes]:
    """The codec's packets before its ``strip`` step."""
    codec.strip = lambda packets: packets
    try:
        return codec.encode(frames, crf)
    finally:
        del codec.strip


def compressed_bits(codec, frames) -> float:
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(255)[None]
    return float(codec.compress(video).bits[0])


def test_svtav1_bits_are_the_stream_without_its_temporal_delimiters(fixture_frames):
    """Kills: making SvtAv1Codec.strip a no-op (the 2-byte temporal delimiter of each frame would be counted)."""
    codec = hb.create_codec("svtav1", crf=30)
    raw = [av1_obus(p) for p in raw_packets(codec, fixture_frames)]
    delimiters = [size for obus in raw for kind, size in obus if kind == OBU_TEMPORAL_DELIMITER]
    assert len(delimiters) == len(fixture_frames) and set(delimiters) == {2}
    content = sum(size for obus in raw for kind, size in obus if kind != OBU_TEMPORAL_DELIMITER)
    assert compressed_bits(codec, fixture_frames) == 8 * content
    stripped = [av1_obus(p) for p in codec.encode(fixture_frames, 30)]
    assert all(kind != OBU_TEMPORAL_DELIMITER for obus in stripped for kind, _ in obus)


def test_x264_bits_are_the_stream_without_its_banner(fixture_frames):
    """Kills: an x264 strip that keeps the version/options SEI (counted from the NAL units here)."""
    codec = hb.create_codec("x264", crf=30)
    units = annexb_units(b"".join(raw_packets(codec, fixture_frames)))
    banner = [u for u in units if u[0] & 0x1F == H264_SEI and b"x264 - core" in u]
    assert len(banner) == 1
    stripped = b"".join(codec.encode(fixture_frames, 30))
    assert b"x264 - core" not in stripped
    assert compressed_bits(codec, fixture_frames) == 8 * len(stripped)
    # everything but the banner unit (and its start code) is still there, byte for byte
    assert len(b"".join(raw_packets(codec, fixture_frames))) - len(stripped) in (len(banner[0]) + 3,
                                                                                len(banner[0]) + 4)


def x265_stream(frames, params: str) -> bytes:
    """Reference: a plain libx265 encode through PyAV with the given x265-params."""
    ctx = av.CodecContext.create("libx265", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, 8), Fraction(8)
    ctx.options = {"crf": "30", "preset": "medium", "x265-params": params}
    out = b""
    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        vf.pts = i
        out += b"".join(bytes(p) for p in ctx.encode(vf))
    return out + b"".join(bytes(p) for p in ctx.encode(None))


def x265_banners(stream: bytes) -> list[bytes]:
    """SEI units carrying libx265's version/options text."""
    return [u for u in annexb_units(stream) if (u[0] >> 1) & 0x3F in HEVC_SEI and b"x265" in u]


def test_x265_stream_has_no_info_banner(fixture_frames):
    """Kills: dropping ``info=0`` from X265Codec.options (libx265 would write its ~2 KB options SEI)."""
    assert x265_banners(x265_stream(fixture_frames, "log-level=error:pools=1:frame-threads=1"))  # the check sees one
    codec = hb.create_codec("x265", crf=30)
    stream = b"".join(codec.encode(fixture_frames, 30))
    assert x265_banners(stream) == []
    assert compressed_bits(codec, fixture_frames) == 8 * len(stream)
