"""A test fixture plugin: tiny, dependency-free components used to test the harness itself.

Loaded with ``-p hitbench_fixture_plugin``. Nothing here is a real benchmark component.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from hitvideo_bench import hookimpl
from hitvideo_bench.components import BenchMetric, Codec, ComponentConfig, Compressed, VideoDataset


class FixtureNoiseConfig(ComponentConfig):
    frames: int = 4
    height: int = 16
    width: int = 16
    train_clips: int = 4
    val_clips: int = 4
    seed: int = 0
    presets = {"small": {"height": 32, "width": 32}}


class FixtureNoiseDataset(VideoDataset):
    """Fixture: seeded random clips with their index as caption."""

    Config = FixtureNoiseConfig

    def __init__(self, config, split="train"):
        super().__init__(config, split)
        self.count = config.train_clips if split == "train" else config.val_clips

    @property
    def clip_shape(self):
        return (self.config.frames, self.config.height, self.config.width)

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if not 0 <= index < self.count:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.config.seed * 1000 + index + (0 if self.split == "train" else 500))
        video = torch.rand(3, *self.clip_shape, generator=g)
        return {"video": video, "caption": f"clip {index}", "attrs": {"index": index}}


class FixtureQuantizeConfig(ComponentConfig):
    levels: int = Field(4, ge=2, le=256)
    fail: bool = Field(False, description="raise in compress (tests of a failing run)")


class FixtureQuantizeCodec(Codec):
    """Fixture: uniform quantisation of every pixel to ``levels`` values; bits = pixels x log2(levels)."""

    Config = FixtureQuantizeConfig

    def compress(self, video):
        if self.config.fail:
            raise RuntimeError("fixture-quantize asked to fail")
        levels = self.config.levels
        rec = torch.round(video * (levels - 1)) / (levels - 1)
        bits = torch.full((video.shape[0],), video[0].numel() * math.log2(levels), dtype=torch.float64)
        return Compressed(rec, bits, info={"counted": "fixture"})

    def check_shape(self, frames, height, width):
        from hitvideo_bench.errors import ShapeError

        if height % 8:
            raise ShapeError(f"fixture-quantize needs height divisible by 8, got {height}")


class FixtureMAE(BenchMetric):
    """Fixture metric: mean absolute error."""

    higher_is_better = False
    per_clip = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred, target):
        self.total += (pred - target).abs().double().sum()
        self.count += pred.numel()

    def compute(self):
        return self.total / self.count


@hookimpl
def hitbench_register_components(catalog):
    catalog.add("dataset", "fixture-noise", FixtureNoiseDataset, description="test fixture: random clips")
    catalog.add("codec", "fixture-quantize", FixtureQuantizeCodec, description="test fixture: pixel quantiser")
    catalog.add("metric", "fixture-mae", FixtureMAE, description="test fixture: mean absolute error")

