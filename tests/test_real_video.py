"""The real-video recipe on the bundled clip: what it compares, and the decoded-clip memory it trains with."""

from __future__ import annotations

from pathlib import Path

import torch

import hitvideo_bench as hb
from hitvideo_bench.recipe import load_recipe
from hitvideo_bench.report import rd_groups
from hitbench_builtin.datasets import video_folder

ROOT = Path(__file__).resolve().parent.parent


def test_real_video_recipe_compares_tokenizers_with_codec_sweeps(monkeypatch):
    monkeypatch.chdir(ROOT)  # the bundled clip's path is relative to the repository root
    resolved = load_recipe(ROOT / "recipes" / "real_video.yaml")
    names = [v.name for v in resolved.variants]
    assert {v.name for v in resolved.variants if v.spec.tokenizer} == {"hitvideo", "single-layer"}
    groups = rd_groups(names)
    assert set(groups) == {"x264", "x265", "svtav1"} and all(len(m) >= 4 for m in groups.values())
    assert [p.kind for p in resolved.recipe.plots] == ["rd", "rd"]
    assert {p.metric for p in resolved.recipe.plots} == {"psnr", "ssim"}
    spec = resolved.variants[0].spec.dataset
    assert spec.name == "video-folder" and Path(spec.config["root"]) == Path("examples/clips")


def test_keep_decoded_reads_each_clip_once_and_gives_the_same_clips(monkeypatch):
    options = dict(preset="tiny", split="train", root=str(ROOT / "examples" / "clips"), split_rule="all",
                   max_clips_per_file=3, clip_stride=0.5)
    plain = hb.create_dataset("video-folder", **options)
    kept = hb.create_dataset("video-folder", keep_decoded=True, **options)
    assert kept.identity() == plain.identity()  # the same data: cached tokenizers stay valid
    reads = []  # the dataset's calls of its (isolated) reader
    real = video_folder.VideoFolder._read
    monkeypatch.setattr(video_folder.VideoFolder, "_read",
                        lambda self, method, *a, **k: reads.append(method) or real(self, method, *a, **k))
    first = [kept[i]["video"] for i in range(3)]
    first[0].zero_()  # a caller changing its copy does not change what is kept
    again = [kept[i]["video"] for i in range(3)]
    assert reads.count("decode") == 3
    for i in range(3):
        assert torch.equal(again[i], plain[i]["video"])
