"""video-folder dataset: shapes, resampling, cropping, captions, splits, bad files, identity, real clip.

Fixture videos are written here with PyAV: frame ``i`` is flat grey ``fixture_grey(i)`` with a red band
on the left and a blue band on the right, so a clip tells which source frames and which crop it got.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench.cache import stable_hash
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.video import crop_resize, from_uint8_frames, read_video, resample_indices
from hitbench_builtin.datasets.video_folder import VideoFolder, VideoFolderConfig

BAND = 8  # width of the fixture's red (left) and blue (right) bands, in pixels


def fixture_grey(i: int) -> int:
    return 3 + 5 * i  # frames 0..50 fit in uint8, 5 levels apart (H.264 at qp 0 keeps grey within +-2)


def make_fixture_video(path: Path, frames: int = 24, fps: int = 24, height: int = 48, width: int = 64,
                       offset: int = 0) -> Path:
    """Fixture: an H.264 (qp 0) clip whose frame ``i`` is grey ``fixture_grey(i + offset)`` between colour bands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qp": "0"}
        for i in range(frames):
            image = np.full((height, width, 3), fixture_grey(i + offset), dtype=np.uint8)
            image[:, :BAND] = (255, 0, 0)
            image[:, -BAND:] = (0, 0, 255)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def frame_ids(video: torch.Tensor) -> list[int]:
    """Source frame index of each frame of a fixture clip, from the grey level at its centre."""
    _, _, H, W = video.shape
    centre = video[:, :, H // 2 - 2:H // 2 + 2, W // 2 - 2:W // 2 + 2].mean(dim=(0, 2, 3)) * 255
    return [round((float(v) - 3) / 5) for v in centre]


def folder(root: Path, preset: str = "tiny", split: str = "train", **overrides) -> VideoFolder:
    overrides.setdefault("split_rule", "all")
    return hb.create_dataset("video-folder", preset=preset, split=split, root=str(root), **overrides)


@pytest.fixture
def fixture_root(tmp_path) -> Path:
    """Fixture folder with one 24-frame 24 fps 48x64 clip, ``walk.mp4``."""
    make_fixture_video(tmp_path / "videos" / "walk.mp4")
    return tmp_path / "videos"


# ------------------------------------------------------------------------------------------- clips

def test_clip_shape_value_range_and_item_contract(fixture_root):
    ds = folder(fixture_root, frames=8, height=32, width=32)
    assert ds.clip_shape == (8, 32, 32) and ds.fps == 8.0 and len(ds) == 1
    item = ds[0]
    video = item["video"]
    assert video.dtype == torch.float32 and video.shape == (3, 8, 32, 32)
    assert 0.0 <= float(video.min()) and float(video.max()) <= 1.0
    assert item["caption"] == "walk"
    assert item["attrs"] == {"file": str(fixture_root / "walk.mp4"), "start": 0.0}
    with pytest.raises(IndexError):
        ds[1]


def test_resampling_picks_frames_by_timestamp(fixture_root):
    # 24 fps source -> 8 fps: every third frame; -> 12 fps: every second frame
    assert frame_ids(folder(fixture_root, frames=8, fps=8)[0]["video"]) == list(range(0, 24, 3))
    assert frame_ids(folder(fixture_root, frames=12, fps=12)[0]["video"]) == list(range(0, 24, 2))
    # the seek-and-decode path gives exactly what a full decode plus resample_indices gives
    ds = folder(fixture_root, frames=8, fps=8, height=48, width=64)
    decoded = read_video(fixture_root / "walk.mp4")
    reference = from_uint8_frames(decoded.frames[resample_indices(decoded.times, 8.0, 8)])
    assert torch.equal(ds[0]["video"], reference)


def test_several_clips_per_file_and_mkv_timestamps(tmp_path):
    make_fixture_video(tmp_path / "v" / "long.mkv", frames=48)  # 2 s, millisecond timestamps
    ds = folder(tmp_path / "v", frames=4, fps=8, max_clips_per_file=3)
    assert len(ds) == 3  # 0.5 s clips back to back: starts 0, 0.5, 1.0
    assert [ds[k]["attrs"]["start"] for k in range(3)] == [0.0, 0.5, 1.0]
    assert frame_ids(ds[1]["video"]) == [12, 15, 18, 21]
    assert frame_ids(ds[2]["video"]) == [24, 27, 30, 33]
    strided = folder(tmp_path / "v", frames=4, fps=8, max_clips_per_file=10, clip_stride=0.75)
    assert [strided[k]["attrs"]["start"] for k in range(len(strided))] == [0.0, 0.75, 1.5]


def test_center_crop_and_resize_to_the_configured_size(fixture_root):
    video = folder(fixture_root, frames=8, height=32, width=32)[0]["video"]
    # a centre square crop of 48x64 drops both 8-pixel colour bands: only grey is left
    assert float((video[0] - video[2]).abs().max()) < 0.05
    wide = folder(fixture_root, frames=8, height=24, width=64)[0]["video"]  # same aspect as the crop-free frame
    assert wide.shape == (3, 8, 24, 64)
    assert float(wide[0, :, :, 0].mean()) > 0.9 and float(wide[2, :, :, 0].mean()) < 0.1  # red band on the left
    assert float(wide[2, :, :, -1].mean()) > 0.9 and float(wide[0, :, :, -1].mean()) < 0.1  # blue band on the right
    # random crops are seeded per clip: repeatable, and the same as crop_resize with that generator
    rand = folder(fixture_root, frames=8, height=40, width=40, crop="random")
    assert torch.equal(rand[0]["video"], rand[0]["video"])
    full = folder(fixture_root, frames=8, height=48, width=64)[0]["video"]
    expected = crop_resize(full, 40, 40, "random", torch.Generator().manual_seed(0))
    assert torch.equal(rand[0]["video"], expected)


# ------------------------------------------------------------------------------------------- captions

def test_captions_sidecar_index_and_stem(tmp_path):
    root = tmp_path / "c"
    for name in ("a.mp4", "sub/b.mp4", "c.mp4", "d.mp4"):
        make_fixture_video(root / name, frames=2)
    (root / "a.txt").write_text("a sidecar caption\n")
    (root / "captions.jsonl").write_text(
        json.dumps({"file": "sub/b.mp4", "caption": "by relative path"}) + "\n\n"
        + json.dumps({"file": "c.mp4", "caption": "by name"}) + "\n"
        + json.dumps({"file": "a.mp4", "caption": "the sidecar wins"}) + "\n")
    ds = folder(root)
    captions = {Path(p).relative_to(root).as_posix(): ds.caption(p) for p in ds.files}
    assert captions == {"a.mp4": "a sidecar caption", "sub/b.mp4": "by relative path", "c.mp4": "by name",
                        "d.mp4": "d"}

    (root / "captions.jsonl").unlink()
    (root / "captions.csv").write_text('file,caption\nc.mp4,"from csv, with a comma"\n')
    ds = folder(root)
    assert ds.caption(root / "c.mp4") == "from csv, with a comma" and ds.caption(root / "d.mp4") == "d"

    (root / "captions.jsonl").write_text("{}\n")
    with pytest.raises(BadInput, match="keep one caption index"):
        folder(root).caption(root / "d.mp4")


def test_bad_caption_index_names_file_and_line(tmp_path):
    make_fixture_video(tmp_path / "c" / "a.mp4", frames=2)
    (tmp_path / "c" / "captions.jsonl").write_text('{"file": "a.mp4", "caption": "ok"}\n{"file": "a.mp4"}\n')
    with pytest.raises(BadInput, match=r"captions\.jsonl:2: expected"):
        folder(tmp_path / "c").caption(tmp_path / "c" / "a.mp4")
    (tmp_path / "c" / "captions.jsonl").unlink()
    (tmp_path / "c" / "captions.csv").write_text("path,text\na.mp4,x\n")
    with pytest.raises(BadInput, match=r"captions\.csv:1: needs the header columns file,caption"):
        folder(tmp_path / "c").caption(tmp_path / "c" / "a.mp4")


# ------------------------------------------------------------------------------------------- splits

def test_hash_split_is_deterministic_disjoint_and_stable(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(200):  # listing is enough to split: the files are never decoded here
        (root / f"clip_{i:03d}.mp4").write_bytes(b"fixture")
    splits = {s: {p.name for p in folder(root, split=s, split_rule="auto").files} for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])
    assert len(splits["train"]) + len(splits["val"]) + len(splits["test"]) == 200
    assert 10 <= len(splits["val"]) <= 32 and 10 <= len(splits["test"]) <= 32  # 10% each, by hash
    assert {p.name for p in folder(root, split="val", split_rule="hash").files} == splits["val"]
    assert len(folder(root, split="all", split_rule="hash").files) == 200
    # removing a file moves no other file; another seed gives another split
    moved = next(iter(splits["val"]))
    (root / moved).unlink()
    assert {p.name for p in folder(root, split="val", split_rule="hash").files} == splits["val"] - {moved}
    assert {p.name for p in folder(root, split="val", split_rule="hash", seed=1).files} != splits["val"] - {moved}
    # split_rule all: every split holds every file
    assert len(folder(root, split="val").files) == len(folder(root, split="train").files) == 199


def test_folder_split_rule_and_auto_detection(tmp_path):
    root = tmp_path / "f"
    for split, names in {"train": ["t1.mp4", "t2.webm"], "val": ["v1.mov"], "test": ["x1.avi"]}.items():
        for name in names:
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / split / name).write_bytes(b"fixture")
    (root / "train" / "._t1.mp4").write_bytes(b"macOS metadata")  # hidden: ignored
    (root / "train" / "notes.txt").write_text("not a video")
    for rule in ("auto", "folders"):
        assert [p.name for p in folder(root, split="train", split_rule=rule).files] == ["t1.mp4", "t2.webm"]
        assert [p.name for p in folder(root, split="val", split_rule=rule).files] == ["v1.mov"]
    assert len(folder(root, split="all", split_rule="folders").files) == 4
    with pytest.raises(BadInput, match=r"unknown split 'eval'; allowed: train, val, test, all"):
        folder(root, split="eval")
    (root / "test" / "x1.avi").unlink()
    (root / "test").rmdir()
    with pytest.raises(BadInput, match=r"root: .*split_rule folders needs a folder .*test"):
        folder(root, split="test", split_rule="folders")


# ------------------------------------------------------------------------------------------- bad input

def test_corrupt_file_raises_naming_it_or_is_skipped(fixture_root):
    (fixture_root / "broken.mp4").write_bytes(b"this is not a video file\n" * 160)  # fixed junk: deterministic
    good = (fixture_root / "walk.mp4").read_bytes()
    (fixture_root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    ds = folder(fixture_root, frames=8)
    with pytest.raises(BadInput, match=r"broken\.mp4: cannot read video"):
        len(ds)
    (fixture_root / "broken.mp4").unlink()
    with pytest.raises(BadInput, match=r"truncated\.mp4"):
        len(folder(fixture_root, frames=8))
    (fixture_root / "broken.mp4").write_bytes(b"this is not a video file\n" * 160)  # fixed junk: deterministic
    skipping = folder(fixture_root, frames=8, on_error="skip")
    with pytest.warns(UserWarning) as record:
        assert len(skipping) == 1
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "skipping a file: " in messages[0] and "broken.mp4: cannot read video" in messages[0]
    assert "truncated.mp4" in messages[1]
    assert skipping[0]["attrs"]["file"].endswith("walk.mp4")


def test_missing_or_empty_root_names_the_field(tmp_path):
    with pytest.raises(BadInput, match=r"^root: .*does not exist"):
        folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no videos here")
    with pytest.raises(BadInput, match=r"^root: .*no video files \(mp4, webm, mkv, mov, avi\)"):
        folder(tmp_path / "empty")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInput, match=r"^root: .*is not a folder"):
        folder(tmp_path / "afile")
    (tmp_path / "few").mkdir()
    (tmp_path / "few" / "one.mp4").write_bytes(b"fixture")
    errors = []  # the hash rule puts a lone file in one split; the other two are empty
    for split in ("train", "val", "test"):
        try:
            folder(tmp_path / "few", split=split, split_rule="hash")
        except BadInput as exc:
            errors.append(str(exc))
    assert len(errors) == 2 and all("use split_rule: all" in e for e in errors)


def test_short_file_errors_pads_or_loops(fixture_root):
    # 24 frames at 24 fps = 1 s; 16 frames at 8 fps need 2 s
    with pytest.raises(BadInput, match=r"walk\.mp4: 1\.00 s holds 8 frames at 8 fps, fewer than one clip of 16"):
        len(folder(fixture_root, frames=16))
    with pytest.warns(UserWarning, match="walk.mp4"), pytest.raises(BadInput, match="every file was skipped"):
        len(folder(fixture_root, frames=16, on_error="skip"))
    padded = folder(fixture_root, frames=16, short_clips="pad")[0]["video"]
    assert frame_ids(padded) == list(range(0, 24, 3)) + [23] * 8
    looped = folder(fixture_root, frames=16, short_clips="loop")[0]["video"]
    assert frame_ids(looped) == list(range(0, 24, 3)) * 2


def test_config_errors_are_located_and_list_allowed_values(tmp_path):
    catalog = get_catalog()
    with pytest.raises(BadInput, match=r"rot: unknown field\. \(did you mean 'root'\?\)"):
        catalog.make_config("dataset", "video-folder", overrides={"rot": "x"})
    with pytest.raises(BadInput, match=r"split_rule: Input should be 'auto', 'folders', 'hash' or 'all'"):
        catalog.make_config("dataset", "video-folder", overrides={"split_rule": "random"})
    with pytest.raises(BadInput, match=r"val_fraction \+ test_fraction must be < 1"):
        catalog.make_config("dataset", "video-folder", overrides={"val_fraction": 0.5, "test_fraction": 0.5})
    assert catalog.make_config("dataset", "video-folder", overrides={"extensions": [".MP4"]}).extensions == ("mp4",)
    # through a recipe, as `hitbench validate` sees it: file, line and dotted field path
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        version: 1
        seeds: [0]
        dataset:
          name: video-folder
          config: {{root: {tmp_path / 'nowhere'}, split_rule: all}}
          eval_clips: 1
        evaluate: {{reconstruction: [psnr], batch_size: 1}}
        variants:
          x264: {{codec: {{name: x264}}}}
        """))
    with pytest.raises(BadInput, match=r"r\.yaml:3: dataset: root: video-folder: \S*nowhere does not exist"):
        load_recipe(recipe)
    recipe.write_text(recipe.read_text().replace("split_rule: all", "split_rul: all"))
    with pytest.raises(BadInput, match=r"r\.yaml:5: .*dataset\.config\.split_rul: unknown field\. "
                                       r"\(did you mean 'split_rule'\?\)"):
        load_recipe(recipe)


# ------------------------------------------------------------------------------------------- identity

def test_identity_changes_when_a_file_or_caption_changes(fixture_root):
    def key() -> str:
        return stable_hash(folder(fixture_root, frames=8).identity())

    before = key()
    assert key() == before
    make_fixture_video(fixture_root / "walk.mp4", offset=1)  # rewritten with other content
    after_video = key()
    assert after_video != before
    (fixture_root / "walk.txt").write_text("a caption")
    after_caption = key()
    assert after_caption != after_video
    (fixture_root / "walk.txt").write_text("another caption, same folder")
    assert key() != after_caption
    assert stable_hash(folder(fixture_root, frames=8, fps=4).identity()) != key()


# ------------------------------------------------------------------------------------------- real clip

def test_real_shared_clip_loads_at_tiny_preset(shared_clip):
    ds = hb.create_dataset("video-folder", preset="tiny", split="val", root=str(shared_clip.parent),
                           split_rule="all", extensions=["mp4"])
    assert ds.clip_shape == (16, 64, 64)
    assert [p.name for p in ds.files] == ["bigbuckbunny.mp4"] and len(ds) == 1
    item = ds[0]
    video = item["video"]
    assert video.shape == (3, 16, 64, 64) and video.dtype == torch.float32
    assert 0.0 <= float(video.min()) < float(video.max()) <= 1.0
    assert item["caption"] == "bigbuckbunny"
    assert float((video[:, 1:] - video[:, :-1]).abs().mean()) > 1e-3  # real motion, not one repeated frame
    # 5.28 s at 25 fps: two 2-second clips fit at 8 fps
    assert len(hb.create_dataset("video-folder", preset="tiny", split="val", root=str(shared_clip.parent),
                                 split_rule="all", max_clips_per_file=5)) == 2
    with pytest.raises(BadInput, match=r"bigbuckbunny\.mp4: 5\.28 s holds 42 frames at 8 fps, fewer than one "
                                       r"clip of 64"):
        len(hb.create_dataset("video-folder", preset="paper", split="val", root=str(shared_clip.parent),
                              split_rule="all"))


def test_config_class_is_the_registered_one():
    assert get_catalog().get("dataset", "video-folder").config_cls is VideoFolderConfig


def test_a_process_probes_each_file_once_until_it_changes(fixture_root, monkeypatch):
    """Kills: the recipe's check of ``eval_clips`` and the run each probing every readable file, a changed file's
    stale probe being reused, or a failed probe kept (the run's log would lack the crash and its retry)."""
    from hitbench_builtin.datasets.video_decode import VideoReader

    probed = []

    class FixtureCountingReader(VideoReader):
        def probe(self, path):
            probed.append(Path(path).name)
            return super().probe(path)

    monkeypatch.setattr(VideoFolder, "reader", FixtureCountingReader())
    (fixture_root / "broken.mp4").write_bytes(b"this is not a video file\n" * 160)
    for _ in range(2):
        with pytest.warns(UserWarning, match="broken.mp4"):
            assert len(folder(fixture_root, frames=8, on_error="skip", isolated=False)) == 1
    assert sorted(probed) == ["broken.mp4", "broken.mp4", "walk.mp4"]  # the readable file once
    make_fixture_video(fixture_root / "walk.mp4")  # rewritten (the same bytes, a new modification time): probed again
    with pytest.warns(UserWarning, match="broken.mp4"):
        assert len(folder(fixture_root, frames=8, on_error="skip", isolated=False)) == 1
    assert sorted(probed) == ["broken.mp4"] * 3 + ["walk.mp4"] * 2
