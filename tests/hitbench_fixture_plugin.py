"""A test fixture plugin: tiny, dependency-free components used to test the harness itself.

Loaded with ``-p hitbench_fixture_plugin``. Nothing here is a real benchmark component.
"""

from __future__ import annotations

import math
import os
import signal

import torch
from pydantic import Field

from hitvideo_bench.api import (BadInput, BenchMetric, Codec, ComponentConfig, Compressed, Generator, ShapeError,
                                TokenPyramid, Tokenizer, TrainConfig, TrainingTask, VideoDataset, hookimpl)


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
        video = noise_clip(self.config, self.split, index)
        return {"video": video, "caption": f"clip {index}", "attrs": {"index": index}}


def noise_clip(config: FixtureNoiseConfig, split: str, index: int) -> torch.Tensor:
    """Clip ``index`` of a fixture-noise split: seeded random pixels."""
    g = torch.Generator().manual_seed(config.seed * 1000 + index + (0 if split == "train" else 500))
    return torch.rand(3, config.frames, config.height, config.width, generator=g)


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
        if height % 8:
            raise ShapeError(f"fixture-quantize needs height divisible by 8, got {height}")


class FixtureCrashConfig(FixtureQuantizeConfig):
    segfault_clip: int | None = Field(None, description="fixture-noise eval clip whose encode dies of SIGSEGV")
    hang_clip: int | None = Field(None, description="fixture-noise eval clip whose encode spins forever")
    time_limit_s: float = Field(2.0, gt=0, description="CPU seconds an encode of one clip may take")


class FixtureCrashCodec(FixtureQuantizeCodec):
    """Fixture: fixture-quantize, except that its encode of one fixture-noise eval clip (default config) kills the
    process with SIGSEGV and of another hangs; for tests of the codec isolation."""

    Config = FixtureCrashConfig

    def compress(self, video):
        noise = FixtureNoiseConfig()
        for clip, fault in ((self.config.segfault_clip, "segfault"), (self.config.hang_clip, "hang")):
            if clip is None or video.shape[2:] != noise_clip(noise, "val", clip).shape[1:]:
                continue
            if any(torch.equal(v, noise_clip(noise, "val", clip)) for v in video):
                if fault == "segfault":
                    os.kill(os.getpid(), signal.SIGSEGV)
                while True:  # spins at 100 % of a core, as libx265 once did
                    pass
        return super().compress(video)

    def time_limit(self, frames, height, width):
        return self.config.time_limit_s


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


class FixtureMean(FixtureMAE):
    """Fixture metric for generated clips: their mean pixel value."""

    inputs = ("pred",)
    stages = ("generation",)
    higher_is_better = True

    def update(self, pred):
        self.total += pred.double().sum()
        self.count += pred.numel()


class FixtureMeanGap(BenchMetric):
    """Fixture metric of the whole set (as a Fréchet distance is): the gap between the mean brightness of all
    ``pred`` clips and of all ``target`` clips; no value per clip, so it is resampled."""

    stages = ("reconstruction", "generation")
    higher_is_better = False
    resampled = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.add_state("pred_means", default=[], dist_reduce_fx="cat")
        self.add_state("target_means", default=[], dist_reduce_fx="cat")

    def update(self, pred, target):
        self.pred_means.append(pred.double().flatten(1).mean(1))
        self.target_means.append(target.double().flatten(1).mean(1))

    @staticmethod
    def _cat(state):
        return state if isinstance(state, torch.Tensor) else torch.cat(state)

    def compute_on(self, index):
        pred, target = self._cat(self.pred_means), self._cat(self.target_means)
        return float((pred[index].mean() - target[index].mean()).abs())

    def compute(self):
        return torch.tensor(self.compute_on(torch.arange(len(self._cat(self.pred_means)))), dtype=torch.float64)


# ------------------------------------------------------------------------------------------ tokenizer

#: the fixture tokenizer's layers, densest first: average-pooling windows (t, h, w)
POOLS = [(1, 4, 4), (2, 8, 8)]


class FixturePoolConfig(ComponentConfig):
    width: int = Field(3, ge=1, description="channels of the decoder's hidden 1x1x1 conv")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=4, batch_size=2, lr=1e-2))


class FixturePoolTokenizer(Tokenizer):
    """Fixture: two layers of average-pooled RGB signs (codebook 8 each; latents +-1, 3 dims), the dense layer
    (4x4 pools) and a coarse one (2x8x8 pools); a small trainable 1x1x1 conv decoder. Exposes its latents, so
    the masked tokenizer can wrap it."""

    Config = FixturePoolConfig
    train_settings = "train"

    def __init__(self, config):
        super().__init__(config)
        self.decoder = torch.nn.Sequential(torch.nn.Conv3d(3, config.width, 1), torch.nn.Conv3d(config.width, 3, 1))

    @property
    def codebook_sizes(self):
        return [8, 8]

    def token_grid_shapes(self, frames, height, width):
        if frames % 2 or height % 8 or width % 8:
            raise ShapeError(f"fixture-pool needs frames divisible by 2 and sides by 8, got {frames}x{height}x{width}")
        return [(frames // t, height // h, width // w) for t, h, w in POOLS]

    def encode(self, video):
        layers = []
        for pool in POOLS:
            bits = (torch.nn.functional.avg_pool3d(video, pool) > 0.5).long()
            layers.append((bits * torch.tensor([1, 2, 4], device=video.device).view(1, 3, 1, 1, 1)).sum(1))
        return TokenPyramid(layers, self.codebook_sizes)

    def tokens_to_latents(self, pyramid):
        return [torch.stack([(t >> i) & 1 for i in range(3)], dim=1).float() * 2 - 1 for t in pyramid.layers]

    def decode_latents(self, latents, layers=None):
        k = len(latents) if layers is None else layers
        used = range(len(latents) - k, len(latents))  # the k coarsest
        signal = sum(torch.nn.functional.interpolate(latents[i], scale_factor=POOLS[i]) / (1 + i) for i in used)
        return (0.5 + 0.25 * self.decoder(signal)).clamp(0, 1)

    def decode(self, pyramid, layers=None):
        return self.decode_latents(self.tokens_to_latents(pyramid), layers)

    def latent_channels(self):
        return [3] * len(POOLS)

    def decoder_parameters(self):
        return list(self.decoder.parameters())

    def training_task(self, data, device, *, shapes_only=False):
        return _FixturePoolTask(self, data)


class _FixturePoolTask(TrainingTask):
    """Fixture training task: L1 reconstruction, the decoder learns; a checkpoint every 2 steps, every step logged."""

    checkpoint_every = 2
    log_every = 1

    def __init__(self, tokenizer, data):
        self.tok = tokenizer
        self.data = data

    def modules(self):
        return {"tokenizer": self.tok}

    def param_groups(self):
        return {"main": self.tok.decoder_parameters()}

    def example_batch(self, batch, shape):
        return {"video": torch.rand(batch, 3, *shape)}

    def training_step(self, batch, step, trainer):
        loss = (self.tok.decode(self.tok.encode(batch["video"])) - batch["video"]).abs().mean()
        trainer.step(loss, "main")
        return {"l1": float(loss.detach())}


# ------------------------------------------------------------------------------------------ generator


class FixtureUnigramConfig(ComponentConfig):
    """No settings: the grids and codebooks it models come from the tokenizer and the clip shape."""


class FixtureUnigramGenerator(Generator):
    """Fixture: per layer, the token histogram of the training pyramids (add-one smoothed); samples every
    position independently from it with the given seed. Ignores the prompts."""

    Config = FixtureUnigramConfig

    def __init__(self, config, tokenizer, clip_shape):
        super().__init__(config, tokenizer, clip_shape)
        self.sizes = list(self.codebook_sizes)
        self.register_buffer("init_draw", torch.rand(4))  # a random initial value, as a real model's weights
        for layer, size in enumerate(self.sizes):
            self.register_buffer(f"counts{layer}", torch.ones(size, dtype=torch.float64))

    def probs(self, layer):
        counts = getattr(self, f"counts{layer}")
        return counts / counts.sum()

    def fit(self, pyramids, captions, *, workdir, device, seed, progress=True, execution=None):
        if [tuple(g) for g in pyramids.grid_shapes] != self.grid_shapes:
            raise BadInput(f"fixture-unigram: training grids {pyramids.grid_shapes} differ from {self.grid_shapes}")
        for layer, (tokens, size) in enumerate(zip(pyramids.layers, self.sizes)):
            getattr(self, f"counts{layer}").add_(torch.bincount(tokens.flatten(), minlength=size).double())
        return {"steps": 0, "clips": pyramids.batch_size, "captions": len(captions)}

    def sample(self, prompts, cfg_scale=1.0, seed=0, **kwargs):
        g = torch.Generator().manual_seed(seed)
        layers = [torch.multinomial(self.probs(i), len(prompts) * math.prod(grid), replacement=True, generator=g)
                  .view(len(prompts), *grid) for i, grid in enumerate(self.grid_shapes)]
        return TokenPyramid(layers, self.sizes)

    def nll_bits_per_token(self, pyramid, prompts):
        return {i: float(-torch.log2(self.probs(i))[tokens.flatten()].mean())
                for i, tokens in enumerate(pyramid.layers)}


@hookimpl
def hitbench_register_components(catalog):
    catalog.add("dataset", "fixture-noise", FixtureNoiseDataset, description="test fixture: random clips")
    catalog.add("codec", "fixture-quantize", FixtureQuantizeCodec, description="test fixture: pixel quantiser")
    catalog.add("codec", "fixture-crash", FixtureCrashCodec,
                description="test fixture: a codec that segfaults on one clip and hangs on another")
    catalog.add("metric", "fixture-mae", FixtureMAE, description="test fixture: mean absolute error")
    catalog.add("metric", "fixture-mean", FixtureMean, description="test fixture: mean pixel of generated clips")
    catalog.add("metric", "fixture-mean-gap", FixtureMeanGap, description="test fixture: a whole-set metric")
    catalog.add("tokenizer", "fixture-pool", FixturePoolTokenizer, description="test fixture: pooled-sign tokens")
    catalog.add("generator", "fixture-unigram", FixtureUnigramGenerator, description="test fixture: token histogram")

