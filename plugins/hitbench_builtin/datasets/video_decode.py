"""Probing and decoding video files with PyAV, in the shared isolated worker with a CPU-time limit.

What the video-folder dataset (:mod:`.video_folder`) reads files with: :func:`probe_video` (packets demuxed, first
frame decoded) and :func:`decode_frames_at` (the frames shown at given times), held by a :class:`VideoReader` with
the CPU seconds each call may take, and :func:`call_reader`, which runs a reader's call in this process's isolated
worker (:func:`hitvideo_bench.api.shared_worker`: a crash or a hang in libav costs a file, not the run; retried once
in a fresh worker). Apart from the dataset so that the native calls and their isolation are in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from hitvideo_bench.api import BadInput, current_log, shared_worker

_TOL = 1e-6  # seconds: timestamps are rounded to the stream's time base
#: CPU seconds a probe may take in its worker: a fixed allowance plus 10 s per 100 MB of file (demuxing reads
#: several hundred MB a second; a probe of the bundled 0.26 MB clip takes 8 ms)
PROBE_LIMIT_S, PROBE_S_PER_BYTE = 60.0, 1e-7
#: CPU seconds a clip's decode may take: a fixed allowance plus 100 ns per pixel of every frame decoded up to the
#: clip's last one and of every frame shown; on the bundled clip decoding took 10 ns a pixel and converting a
#: frame to RGB 35 ns a pixel (benchmarks/RESULTS.md)
DECODE_LIMIT_S, DECODE_S_PER_PIXEL = 60.0, 100e-9


@dataclass(frozen=True)
class _Probe:
    """What indexing learned of a file: first timestamp (stream clock, s) and frame times after it."""

    first: float
    times: np.ndarray  # sorted, seconds from ``first``
    timed: bool  # False: the file has no timestamps; frames are counted at ``rate``
    rate: float
    pixels: int = 0  # of one frame

    @property
    def duration(self) -> float:
        """Shown time of all frames: last timestamp plus one frame interval (the median one, which
        millisecond-rounded timestamps of mkv/webm do not skew)."""
        t = self.times
        return float(t[-1] + (np.median(np.diff(t)) if len(t) > 1 else 1.0 / self.rate))


def probe_video(path: Path) -> _Probe:
    """Demux every packet of the first video stream (no decoding) and decode its first frame.

    Cheap next to a full decode, and catches unreadable files, files without a video stream and
    files whose first frame does not decode.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadInput(f"{path}: no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            pixels = stream.codec_context.width * stream.codec_context.height
            stamps: list[float] = []
            count, decoded = 0, False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None and base is not None:
                    stamps.append(float(stamp * base))
                if not decoded:
                    decoded = bool(packet.decode())
            if count and not decoded:  # the decoder may hold frames back until flushed
                decoded = bool(stream.codec_context.decode(None))
    except (av.error.FFmpegError, OSError) as exc:
        raise BadInput(f"{path}: cannot read video: {exc}") from None
    if count == 0 or not decoded:
        raise BadInput(f"{path}: no decodable frames (truncated or corrupt file?)")
    if len(stamps) == count:
        times = np.sort(np.asarray(stamps, dtype=np.float64))
        return _Probe(float(times[0]), times - times[0], True, rate, pixels)
    return _Probe(0.0, np.arange(count, dtype=np.float64) / rate, False, rate, pixels)


class _SeekOvershoot(Exception):
    """The first frame after a seek came later than the first wanted time."""


def decode_frames_at(path: Path, probe: _Probe, wanted: np.ndarray) -> np.ndarray:
    """RGB frames ``uint8 (N, H, W, 3)`` shown at the times ``wanted`` (seconds from the first frame).

    The frame shown at ``t`` is the last one whose timestamp is ``<= t`` (the first frame for ``t``
    before it, the last frame for ``t`` past the end). Seeks to the key frame before the earliest
    time, decodes forward, and converts to RGB only the frames that are shown.
    """
    try:
        try:
            return _decode_at(path, probe, wanted, seek=probe.timed and float(wanted.min()) > _TOL)
        except _SeekOvershoot:
            return _decode_at(path, probe, wanted, seek=False)
    except (av.error.FFmpegError, OSError) as exc:
        raise BadInput(f"{path}: cannot decode video: {exc}") from None


def _decode_at(path: Path, probe: _Probe, wanted: np.ndarray, seek: bool) -> np.ndarray:
    order = np.argsort(wanted, kind="stable")
    targets = wanted[order] + probe.first
    out: list[np.ndarray | None] = [None] * len(wanted)
    j, latest, latest_rgb = 0, None, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek:
            container.seek(int(math.floor(targets[0] / stream.time_base)), stream=stream, backward=True)
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if probe.timed and frame.time is not None else probe.first + i / probe.rate
            while j < len(targets) and t > targets[j] + _TOL:
                if latest is None:
                    if seek:
                        raise _SeekOvershoot
                    latest = frame  # before the first frame: the first frame is shown
                if latest_rgb is None:
                    latest_rgb = latest.to_ndarray(format="rgb24")
                out[order[j]] = latest_rgb
                j += 1
            if j == len(targets):
                break
            latest, latest_rgb = frame, None
        if j < len(targets):  # past the end: the last frame stays on screen
            if latest is None:
                raise BadInput(f"{path}: no decodable frames (truncated or corrupt file?)")
            rgb = latest_rgb if latest_rgb is not None else latest.to_ndarray(format="rgb24")
            for k in range(j, len(targets)):
                out[order[k]] = rgb
    return np.stack(out)


class VideoReader:
    """The native calls on a file (:func:`probe_video`, :func:`decode_frames_at`) and their time limits: what the
    dataset's isolated worker holds (a class, so that a test can put a fixture reader in its place)."""

    def probe(self, path: Path) -> _Probe:
        return probe_video(path)

    def decode(self, path: Path, probe: _Probe, wanted: np.ndarray) -> np.ndarray:
        return decode_frames_at(path, probe, wanted)

    def probe_limit(self, path: Path) -> float:
        """CPU seconds probing ``path`` may take, from its size."""
        return PROBE_LIMIT_S + PROBE_S_PER_BYTE * path.stat().st_size

    def decode_limit(self, probe: _Probe, wanted: np.ndarray) -> float:
        """CPU seconds decoding the frames shown at ``wanted`` may take, from the clip's size: every frame up to
        the last one wanted (decoding starts at a key frame before the first) and each frame shown, at the file's
        frame size."""
        frames = int(np.searchsorted(probe.times, float(np.max(wanted)) + _TOL, side="right")) + 1 + len(wanted)
        return DECODE_LIMIT_S + DECODE_S_PER_PIXEL * frames * probe.pixels


def call_reader(reader: VideoReader, isolated: bool, method: str, path: Path, *args: Any, limit_s: float) -> Any:
    """``reader.<method>(path, *args)`` in this process's isolated worker (one for every file and dataset of a
    run), retried once in a fresh worker after a crash or a hang (:class:`WorkerFailed` when that fails too);
    in this process when not ``isolated`` or in a data loader's worker (which may not start one)."""
    log = current_log()
    worker = shared_worker(reader, log.path if log else None) if isolated else None
    if worker is None:
        return getattr(reader, method)(path, *args)
    return worker.call(method, path, *args, limit_s=limit_s, item=str(path), note=log.where if log else None)
