"""synthetic-shapes: determinism, captions that match what is drawn, disjoint splits, real motion."""

from __future__ import annotations

import pytest
import torch

import hitvideo_bench as hb
from hitvideo_bench.errors import BadInput
from hitbench_builtin.datasets.synthetic import ATTRIBUTES, COLOURS, caption_of, parse_caption


def centroid(video: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
    """Per-frame (x, y) centroid of the pixels close to ``colour``: ``(T, 2)``."""
    dist = (video - torch.tensor(colour).view(3, 1, 1, 1)).abs().sum(0)  # (T, H, W)
    weight = (dist < 0.1).float()
    ys, xs = torch.meshgrid(torch.arange(video.shape[2]).float(), torch.arange(video.shape[3]).float(), indexing="ij")
    total = weight.sum((1, 2)).clamp(min=1)
    return torch.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], dim=1)


def test_items_are_deterministic_and_well_formed():
    a = hb.create_dataset("synthetic-shapes", split="train")
    b = hb.create_dataset("synthetic-shapes", split="train")
    assert len(a) == 256 and a.clip_shape == (16, 64, 64)
    item = a[5]
    assert item["video"].shape == (3, 16, 64, 64) and item["video"].dtype == torch.float32
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    assert torch.equal(item["video"], b[5]["video"]) and item["caption"] == b[5]["caption"]
    other_seed = hb.create_dataset("synthetic-shapes", split="train", seed=1)
    assert not torch.equal(item["video"], other_seed[5]["video"])


def test_rendered_clips_are_kept_up_to_the_byte_budget_and_callers_get_copies(monkeypatch):
    ds = hb.create_dataset("synthetic-shapes", split="val")
    monkeypatch.setattr(ds, "cache_bytes", 2 * 3 * 16 * 64 * 64 * 4)  # two clips
    first = ds[0]["video"]
    first.zero_()  # a caller's change does not reach the kept clip
    assert torch.equal(ds[0]["video"], ds.render(**ds.sample_attrs(0)))
    ds[1], ds[2]
    assert sorted(ds._rendered) == [0, 1]  # the third clip is over the budget: rendered, not kept
    assert torch.equal(ds[2]["video"], ds.render(**ds.sample_attrs(2)))


def test_captions_say_what_is_shown_and_parse_back():
    ds = hb.create_dataset("synthetic-shapes", split="val")
    seen = {name: set() for name in ATTRIBUTES}
    for i in range(len(ds)):
        item = ds[i]
        assert item["caption"] == caption_of(item["attrs"])
        assert parse_caption(item["caption"]) == item["attrs"]
        for name, value in item["attrs"].items():
            seen[name].add(value)
    assert all(len(values) >= 3 for name, values in seen.items() if name != "size")


def test_splits_are_disjoint():
    clips = {}
    for split in ("train", "val", "test"):
        ds = hb.create_dataset("synthetic-shapes", split=split, train_clips=64)
        clips[split] = {ds[i]["video"][:, 0].mul(255).round().to(torch.uint8).numpy().tobytes() for i in range(len(ds))}
    assert not clips["train"] & clips["val"] and not clips["train"] & clips["test"] and not clips["val"] & clips["test"]


def test_motion_follows_the_caption_and_static_clips_are_static():
    ds = hb.create_dataset("synthetic-shapes", split="train", train_clips=80)
    checked = set()
    for i in range(len(ds)):
        item = ds[i]
        attrs, video = item["attrs"], item["video"]
        if attrs["motion"] == "static":
            assert torch.equal(video[:, 0], video[:, -1])
            checked.add("static")
            continue
        track = centroid(video, COLOURS[attrs["colour"]])
        dx, dy = (track[-1] - track[0]).tolist()
        expected = {"left": -dx, "right": dx, "up": -dy, "down": dy}[attrs["motion"]]
        assert expected > 10, (attrs, dx, dy)
        checked.add(attrs["motion"])
    assert checked == {"left", "right", "up", "down", "static"}


def test_background_is_static_between_frames():
    """Redundancy between frames: most pixels of a moving-shape clip do not change."""
    ds = hb.create_dataset("synthetic-shapes", split="train")
    video = ds[0]["video"]
    changed = (video[:, 1:] - video[:, :-1]).abs().sum(0) > 1e-6
    assert changed.float().mean() < 0.2


@pytest.mark.parametrize("overrides, message", [({"frames": 0}, "frames"), ({"colour": "red"}, "unknown field")])
def test_bad_config_is_rejected(overrides, message):
    with pytest.raises(BadInput, match=message):
        hb.create_dataset("synthetic-shapes", **overrides)


def test_bad_split_and_caption():
    with pytest.raises(BadInput, match="unknown split 'dev'; allowed: train, val, test"):
        hb.create_dataset("synthetic-shapes", split="dev")
    with pytest.raises(BadInput, match="unknown colour 'teal'"):
        parse_caption("a small teal circle moves left on a grey background")
    with pytest.raises(IndexError):
        hb.create_dataset("synthetic-shapes", split="val")[128]


def test_a_split_identity_ignores_the_other_splits_sizes():
    """A tokenizer trained on ``train`` stays cached when only the val split grows. Kills: the identity of the
    whole config (every tokenizer retrained), or one without the split's own size."""
    train = hb.create_dataset("synthetic-shapes", split="train")
    bigger_val = hb.create_dataset("synthetic-shapes", split="train", val_clips=512, test_clips=7)
    assert train.identity() == bigger_val.identity()
    assert train.identity() != hb.create_dataset("synthetic-shapes", split="train", train_clips=8).identity()
    assert (hb.create_dataset("synthetic-shapes", split="val").identity()
            != hb.create_dataset("synthetic-shapes", split="val", val_clips=512).identity())
