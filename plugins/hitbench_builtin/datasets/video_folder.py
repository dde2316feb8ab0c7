"""video-folder: your own video files, read with PyAV, resampled to a frame rate, cropped, captioned.

Files: every ``*.mp4|webm|mkv|mov|avi`` under ``root``, recursively (hidden files such as macOS
``._x.mp4`` are ignored). A relative ``root`` is relative to the working directory.

Splits (``train``, ``val``, ``test``, and ``all`` = every file), by ``split_rule``:

- ``folders``: the files under ``root/<split>/``;
- ``hash``: each file goes to a split by a CRC32 hash of ``seed`` and its path relative to ``root``
  (``test_fraction``, then ``val_fraction``, the rest train). Stable across machines, and adding a
  file never moves another one, so the splits stay disjoint as the folder grows;
- ``all``: every split holds every file (to evaluate on a few real clips);
- ``auto`` (default): ``folders`` if ``root`` has ``train/`` and ``val/`` folders, else ``hash``.

Clips: ``frames`` frames resampled by presentation timestamps to ``fps`` (the paper: 8), the frame
shown at ``start + k / fps`` being the last one whose timestamp is not after it (the rule of
:func:`hitvideo_bench.video.resample_indices`); then cropped to the aspect ratio (``crop: center`` or a
seeded ``random`` crop) and resized to ``height x width``. A file longer than one clip gives up to
``max_clips_per_file`` clips ``clip_stride`` seconds apart (default: back to back). Only the frames a
clip shows are decoded to RGB, so long or large files do not fill memory.

``keep_decoded: true`` keeps each clip in memory after its first decode: training on a few clips reads
each many times, and decoding dominates a tiny training step otherwise.

A file shorter than one clip (``short_clips``): ``error`` (default) is an error naming the file and
its length; ``pad`` repeats its last frame; ``loop`` plays it again from the start.

Captions, first match wins: a same-stem ``.txt`` beside the video; else an entry of the caption index
in ``root`` -- ``captions.jsonl`` (lines ``{"file": "a/b.mp4", "caption": "..."}``) or ``captions.csv``
(columns ``file,caption``), ``file`` being the path relative to ``root`` or the bare file name; else
the file's stem (``dog_running.mp4`` -> ``"dog_running"``).

A file that cannot be read is an error naming it -- or, with ``on_error: skip``, skipped with a warning
naming it and why (in the run's log too), listed by :meth:`VideoFolder.dropped` (the run's summary and a note
below the table) and in the split's identity. Files are listed when the dataset is built (a missing or empty
``root`` fails then, also in ``hitbench validate``); they are probed (packets demuxed, first frame decoded) on
first use, all of them before any clip is read, so the files skipped are the same wherever the split is read.
A process probes a readable file once while it stays the same (path, inode, size, times): the recipe's check of
``eval_clips`` and the run that follows read it once. A file that failed is probed again by the next dataset, so
that the run's log has the crash or the hang and its retry.

Isolation: probing and decoding (PyAV's native code, in :mod:`.video_decode`) run in a worker process (the
run's shared isolated worker; one for all files and datasets of a run), with a limit in CPU seconds from the
file's size (probe) or the clip's (decode). A probe that crashes libav or passes its limit is retried once in a
fresh worker; failing again, the file cannot be read (above). A decode that fails twice (of a file whose probe
passed) stops the run with :class:`UnreadableClip` naming the file: the split cannot change while it is read.
``isolated: false``, and a data loader's worker process (``run.num_workers``), which may not start processes, read
in their own process.
"""

from __future__ import annotations

import csv
import json
import warnings
import weakref
import zlib
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from hitvideo_bench.api import BadInput, ComponentConfig, VideoDataset, WorkerFailed, crop_resize, from_uint8_frames

from .video_decode import VideoReader, _Probe, call_reader

EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi")
SPLITS = ("train", "val", "test", "all")
CAPTION_INDEXES = ("captions.jsonl", "captions.csv")
_DURATION_TOL = 1e-3  # seconds: mkv/webm timestamps are rounded to milliseconds
#: each reader's probes of readable files in this process, by (path, inode, size, modification and change times)
_PROBED: weakref.WeakKeyDictionary[VideoReader, dict[tuple, _Probe]] = weakref.WeakKeyDictionary()


class VideoFolderConfig(ComponentConfig):
    root: Path = Field(Path("data/videos"), description="folder of video files (relative: to the working dir)")
    frames: int = Field(16, ge=1)
    height: int = Field(64, ge=8)
    width: int = Field(64, ge=8)
    fps: float = Field(8.0, gt=0, description="clips are resampled to this frame rate (the paper: 8)")
    crop: Literal["center", "random"] = "center"
    split_rule: Literal["auto", "folders", "hash", "all"] = "auto"
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    max_clips_per_file: int = Field(1, ge=1)
    clip_stride: float | None = Field(None, gt=0, description="seconds between clip starts; default: clip length")
    short_clips: Literal["error", "pad", "loop"] = "error"
    on_error: Literal["raise", "skip"] = "raise"
    keep_decoded: bool = Field(False, description="keep each clip in memory once decoded (a few clips read many "
                                                  "times, as in training on a small folder)")
    isolated: bool = Field(True, description="probe and decode in a worker process, so that a crash or a hang in "
                                             "libav costs a file, not the run (False: in this process)")
    extensions: tuple[str, ...] = EXTENSIONS
    seed: int = 0
    presets = {"tiny": {}, "small": {"frames": 32, "height": 128, "width": 128},
               "paper": {"frames": 64, "height": 256, "width": 256}}

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(e.lower().lstrip(".") for e in value if e.strip(". "))
        if not out:
            raise ValueError(f"needs at least one file extension, e.g. {', '.join(EXTENSIONS)}")
        return out

    @model_validator(mode="after")
    def _check_fractions(self) -> VideoFolderConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1 (the rest is train), got "
                             f"{self.val_fraction:g} + {self.test_fraction:g}")
        return self


class UnreadableClip(RuntimeError):
    """A clip of a file that probed fine crashed or hung its decoder twice: it fails the run, naming the file."""


class VideoFolder(VideoDataset):
    """Clips cut from the video files of one split of a folder (see the module docstring)."""

    Config = VideoFolderConfig
    splits = SPLITS
    #: probes and decodes the files; in this process's isolated worker unless ``isolated: false``
    reader: ClassVar[VideoReader] = VideoReader()

    def __init__(self, config: VideoFolderConfig, split: str = "train"):
        super().__init__(config, split)
        root = Path(config.root)
        if not root.is_dir():
            what = "is not a folder" if root.exists() else "does not exist"
            shown = str(root) if root.is_absolute() else f"{root} (resolved: {root.resolve()})"
            raise BadInput(f"video-folder: {shown} {what}", field="root")
        self.root = root
        self.files = self._split_files()
        self._skipped: dict[Path, str] = {}  # file -> why (on_error: skip)

    # ----------------------------------------------------------------------------- files and splits

    def _list(self, folder: Path) -> list[Path]:
        exts = self.config.extensions
        return sorted(p for p in folder.rglob("*")
                      if p.suffix.lower().lstrip(".") in exts and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(self.root).parts))

    @property
    def split_rule(self) -> str:
        """The rule in effect (``auto`` resolved)."""
        rule = self.config.split_rule
        if rule == "auto":
            rule = "folders" if (self.root / "train").is_dir() and (self.root / "val").is_dir() else "hash"
        return rule

    def _split_files(self) -> list[Path]:
        cfg, rule = self.config, self.split_rule
        exts = ", ".join(cfg.extensions)
        if rule == "folders":
            names = ("train", "val", "test") if self.split == "all" else (self.split,)
            missing = [n for n in names if not (self.root / n).is_dir()]
            if self.split != "all" and missing:
                raise BadInput(f"video-folder: split_rule folders needs a folder {self.root / missing[0]} for "
                               f"split {self.split!r}", field="root")
            files = [p for n in names if (self.root / n).is_dir() for p in self._list(self.root / n)]
        else:
            files = self._list(self.root)
            if rule == "hash" and self.split != "all":
                files = [p for p in files if self.split_of(p) == self.split]
        if not files:
            everything = self._list(self.root)
            if not everything:
                raise BadInput(f"video-folder: no video files ({exts}) under {self.root}", field="root")
            raise BadInput(f"video-folder: none of the {len(everything)} video files under {self.root} falls in "
                           f"split {self.split!r} (split_rule {rule}); with few files use split_rule: all, "
                           f"or change val_fraction / test_fraction / seed", field="root")
        return files

    def split_of(self, path: Path) -> str:
        """The split of ``path`` under the hash rule: from ``seed`` and its path relative to ``root``."""
        rel = Path(path).relative_to(self.root).as_posix()
        u = zlib.crc32(f"{self.config.seed}/{rel}".encode()) / 2**32
        if u < self.config.test_fraction:
            return "test"
        if u < self.config.test_fraction + self.config.val_fraction:
            return "val"
        return "train"

    @property
    def clip_shape(self) -> tuple[int, int, int]:
        return (self.config.frames, self.config.height, self.config.width)

    # ----------------------------------------------------------------------------- captions

    @cached_property
    def _captions(self) -> dict[str, str]:
        """The caption index of ``root`` (captions.jsonl or captions.csv), file -> caption."""
        present = [self.root / name for name in CAPTION_INDEXES if (self.root / name).is_file()]
        if len(present) > 1:
            raise BadInput(f"video-folder: both {present[0]} and {present[1]} exist; keep one caption index")
        if not present:
            return {}
        index, captions = present[0], {}
        if index.suffix == ".jsonl":
            for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    file, caption = entry["file"], entry["caption"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise BadInput(f"expected {{\"file\": ..., \"caption\": ...}}, got {line[:80]!r}",
                                   file=str(index), line=n) from None
                if not isinstance(file, str) or not isinstance(caption, str):
                    raise BadInput("file and caption must be strings", file=str(index), line=n)
                captions[file] = caption
        else:
            with index.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                    raise BadInput(f"needs the header columns file,caption, got {reader.fieldnames}",
                                   file=str(index), line=1)
                for entry in reader:
                    if entry["file"] is None or entry["caption"] is None:
                        raise BadInput("row needs both file and caption", file=str(index), line=reader.line_num)
                    captions[entry["file"]] = entry["caption"]
        return captions

    def caption(self, path: Path) -> str:
        """Caption of ``path``: sidecar ``.txt``, else the caption index, else the file stem."""
        txt = path.with_suffix(".txt")
        if txt.is_file():
            return txt.read_text(encoding="utf-8").strip()
        rel = path.relative_to(self.root).as_posix()
        return self._captions.get(rel, self._captions.get(path.name, path.stem))

    # ----------------------------------------------------------------------------- clips

    def _read(self, method: str, path: Path, *args: Any, limit_s: float) -> Any:
        """``reader.<method>(path, *args)`` in this process's isolated worker, or in this process with ``isolated:
        false`` (:func:`.video_decode.call_reader`)."""
        return call_reader(self.reader, self.config.isolated, method, path, *args, limit_s=limit_s)

    def _skip(self, path: Path, message: str) -> None:
        """``on_error: raise``: raise ``message``; ``skip``: leave ``path`` out with a warning, in :meth:`dropped`."""
        if self.config.on_error == "raise":
            raise BadInput(message)
        warnings.warn(f"video-folder: skipping a file: {message}", stacklevel=4)
        self._skipped[path] = message

    def dropped(self) -> dict[str, str]:
        return {str(path): why.removeprefix(f"{path}: ") for path, why in self._skipped.items()}

    @cached_property
    def _probes(self) -> dict[Path, _Probe]:
        probes = {}
        for path in self.files:
            try:
                probes[path] = self._probe(path)
            except BadInput as exc:
                self._skip(path, str(exc))
            except WorkerFailed as exc:
                self._skip(path, f"{path}: cannot read video: {exc}")
        return probes

    def _probe(self, path: Path) -> _Probe:
        """The probe of ``path``, once per file version and reader in this process (a failure is not kept)."""
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        memo = _PROBED.setdefault(self.reader, {})
        if key not in memo:
            memo[key] = self._read("probe", path, limit_s=self.reader.probe_limit(path))
        return memo[key]

    def _available(self, probe: _Probe, start: float) -> int:
        """Frames at ``fps`` from ``start`` that the file covers."""
        return int(np.floor((probe.duration - start + _DURATION_TOL) * self.config.fps))

    @cached_property
    def _clips(self) -> list[tuple[Path, float]]:
        """(file, start second) of every clip; unreadable or short files raise or are skipped."""
        cfg = self.config
        stride = cfg.clip_stride or cfg.frames / cfg.fps
        clips = []
        for path, probe in self._probes.items():
            if self._available(probe, 0.0) < cfg.frames and cfg.short_clips == "error":
                self._skip(path, f"{path}: {probe.duration:.2f} s holds {self._available(probe, 0.0)} frames at "
                                 f"{cfg.fps:g} fps, fewer than one clip of {cfg.frames} (set short_clips: pad or loop, "
                                 f"or fewer frames)")
                continue
            starts = [0.0]
            while (len(starts) < cfg.max_clips_per_file
                   and self._available(probe, starts[-1] + stride) >= cfg.frames):
                starts.append(starts[-1] + stride)
            clips += [(path, s) for s in starts]
        if not clips:
            raise BadInput(f"video-folder: no usable clips for split {self.split!r} under {self.root} "
                           f"(every file was skipped)", field="root")
        return clips

    def __len__(self) -> int:
        return len(self._clips)

    def wanted_times(self, probe: _Probe, start: float) -> np.ndarray:
        """Times (s from the first frame) of the clip's frames; wrapped around for ``short_clips: loop``."""
        times = start + np.arange(self.config.frames) / self.config.fps
        if self.config.short_clips == "loop" and probe.duration > 0:
            times = np.mod(times, probe.duration)
        return times

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"video-folder[{self.split}] has {len(self)} clips, asked for {index}")
        path, start = self._clips[index]
        video = self._decoded.get(index)
        if video is None:
            probe = self._probes[path]
            wanted = self.wanted_times(probe, start)
            try:
                frames = self._read("decode", path, probe, wanted, limit_s=self.reader.decode_limit(probe, wanted))
            except WorkerFailed as exc:
                raise UnreadableClip(f"video-folder: {path}: decoding its clip at {start:g} s failed: {exc} (the file "
                                     f"probed fine, so it stays in the split and this run stops; remove the file "
                                     f"to go on without it)") from None
            video = from_uint8_frames(frames)
            generator = torch.Generator().manual_seed(self.config.seed * 100_003 + index)
            video = crop_resize(video, self.config.height, self.config.width, self.config.crop, generator).contiguous()
            if self.config.keep_decoded:
                self._decoded[index] = video
        return {"video": video.clone(), "caption": self.caption(path), "attrs": {"file": str(path), "start": start}}

    @cached_property
    def _decoded(self) -> dict[int, torch.Tensor]:
        """Clips kept after their first decode (``keep_decoded``); each is the same on every read."""
        return {}

    def identity(self) -> dict[str, Any]:
        """Config, split, and size + modification time of every video and caption file it reads; with ``on_error:
        skip``, the files left out, if any (a file that crashes libav on one machine only gives another key)."""

        def stat(p: Path) -> list:
            s = p.stat()
            return [p.relative_to(self.root).as_posix(), s.st_size, s.st_mtime_ns]

        sidecars = [p.with_suffix(".txt") for p in self.files if p.with_suffix(".txt").is_file()]
        indexes = [self.root / n for n in CAPTION_INDEXES if (self.root / n).is_file()]
        base = super().identity()
        for how in ("keep_decoded", "isolated"):  # where clips are kept or decoded does not change them
            base["config"].pop(how, None)
        if self.config.on_error == "skip" and len(self) and self._skipped:  # len: every file is probed
            base["dropped"] = sorted(p.relative_to(self.root).as_posix() for p in self._skipped)
        return {**base, "split_rule": self.split_rule, "files": [stat(p) for p in self.files],
                "captions": [stat(p) for p in sidecars + indexes]}
