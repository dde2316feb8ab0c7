"""Configs and presets of the HiTVideo tokenizers (``tiny`` for a 2-core CPU, ``small``, ``paper`` = Table 4).

Every preset runs the same method: residual coarse-to-fine layers, the paper's progressive schedule, the LFQ
entropy penalty; a smaller preset only shrinks sizes and steps. Token budgets follow the paper's ordering:
the multi-layer tokenizer has at least as many tokens as the single-layer one, and at most ~6 % more.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hitvideo_bench.api import ComponentConfig, TrainConfig

from .blocks import Stride


class LossConfig(BaseModel):
    """Loss weights of tokenizer training.

    The defaults are the ``tiny`` preset's: too few steps for a GAN, a squared-error reconstruction term (PSNR,
    the quality measure, is a squared-error measure), and light LFQ terms (a quarter of the earlier commitment and
    per-bit entropy, a tenth of the codebook entropy: the hierarchy gained 1.9 dB). ``small`` and ``paper`` use
    MAGVIT-v2's weights (:data:`MAGVIT2_LOSS`) with the paper's L1 term. The trials are in docs/ablations.md.
    """

    model_config = ConfigDict(extra="forbid")
    l1: float = Field(0.0, ge=0, description="L1 reconstruction weight")
    l2: float = Field(10.0, ge=0, description="squared-error reconstruction weight")
    perceptual: float = Field(0.1, ge=0, description="LPIPS weight; off when its weights are missing")
    adversarial: float = Field(0.0, ge=0, description="hinge-GAN generator weight; 0 = no discriminator")
    adversarial_start: float = Field(0.5, ge=0, le=1, description="share of the steps before the GAN starts")
    entropy: float = Field(0.001, ge=0, description="LFQ entropy penalty weight, per layer (keeps coarse "
                                                 "codebooks from collapsing)")
    diversity_gamma: float = Field(1.0, ge=0, description="weight of codebook-usage entropy in the penalty")
    commitment: float = Field(0.025, ge=0, description="LFQ commitment weight, per layer")
    bit_entropy: float = Field(0.025, ge=0, description="weight of 1 - the per-bit usage entropy, per layer (the "
                                                       "entropy penalty in a form whose gradient does not vanish; "
                                                       "keeps coarse layers from collapsing)")
    latent: float = Field(0.0, ge=0, description="weight of |h_l - sg(z_l)|^2 per layer: each layer's reconstruction "
                                                 "of the latent approximates it, so finer layers code residuals (off "
                                                 "at tiny: under the light commitment the latents grew without bound)")
    latent_commitment: float = Field(0.0, ge=0, description="weight of |z_l - sg(h_l)|^2 within the latent term")
    entropy_sample_fraction: float = Field(0.0625, gt=0, le=1, description="share of a layer's tokens (at least 64) "
                                                                         "the entropy terms are estimated from (time "
                                                                         "and memory at large codebooks: at tiny, a "
                                                                         "quarter cost 13-17 % of a step)")


#: loss weights of the longer trainings (small, paper): MAGVIT-v2's LFQ terms and a GAN from half-way, the per-bit
#: entropy and the latent term of version 10
MAGVIT2_LOSS = {"l1": 1.0, "l2": 0.0, "adversarial": 0.01, "entropy": 0.05, "commitment": 0.25, "bit_entropy": 0.1,
                "latent": 0.1}


#: the fewest tokens a layer's LFQ entropy terms are estimated from (see ``LossConfig.entropy_sample_fraction``)
MIN_ENTROPY_TOKENS = 64

#: the layout and schedule of the longer presets (small, paper; version 10 at every preset): resnet blocks, strided
#: 3x3 convs and nearest up-sampling, a layer joining every 5 % of the steps, the second decode at weight 1 on half
#: the batch, the residual against a detached prediction
V10_LAYOUT = {"patch_frames": 1, "resample": "conv", "block": "resnet", "progressive_step": 0.05,
              "coarse_weight": 1.0, "coarse_batch": 0.5, "detach_prediction": True}


def tiny_training(steps: int) -> TrainConfig:
    """The tiny preset's training method (both tokenizers; only the steps differ)."""
    return TrainConfig(steps=steps, batch_size=8, lr=2e-3, betas=(0.9, 0.99), weight_decay=1e-4, warmup_steps=100)


class HiTVideoConfig(ComponentConfig):
    channels: int = Field(48, ge=4, description="width of the first encoder level")
    channel_mult: list[float] = Field(default_factory=lambda: [1, 4 / 3], min_length=1,
                                      description="width of each encoder level: round(channels x this)")
    spatial_down: list[bool] = Field(default_factory=lambda: [False, True])
    temporal_down: list[bool] = Field(default_factory=lambda: [False, True])
    drop_spatial_down: int = Field(0, ge=0, description="turn off this many of spatial_down's down-samplings, first "
                                                        "levels first: the same token grids from input 2^n times "
                                                        "smaller (the resolution ablation, at every preset)")
    num_res_blocks: int = Field(1, ge=1)
    patch_size: int = Field(4, ge=1, description="space-to-depth patch before the first conv (and after the last)")
    patch_frames: int = Field(2, ge=1, description="frames in that patch (consecutive frames: causal at the patch's "
                                                   "span)")
    resample: Literal["conv", "patch"] = Field(
        "patch", description="how encoder levels, decoder levels and the hierarchy's stages change the grid: conv = "
                            "strided 3x3 causal conv down, nearest repeat + causal conv up; patch = a conv whose "
                            "kernel is its stride down (each cell summarises exactly what it covers), its mirror up")
    block: Literal["resnet", "res21"] = Field(
        "res21", description="residual block: resnet = two causal (2+1)D convs, 3x3 convs in and out; res21 = one "
                              "spatial and one causal temporal conv, 1x1 convs in and out (half the cost)")
    factorized_conv: bool = Field(True, description="(2+1)D causal convs (fast on CPU) instead of full 3D ones")
    z_channels: int = Field(64, ge=4, description="latent width of every layer")
    quant_dims: list[int] = Field(default_factory=lambda: [12, 10, 8, 6], min_length=1,
                                  description="LFQ bits per layer, densest first (codebook 2^d)")
    layer_strides: list[Stride] = Field(default_factory=lambda: [(1, 2, 2), (2, 2, 2), (2, 1, 1)],
                                        description="(t, h, w) stride of each extra layer's compression stage")
    interpolate: float = Field(1.0, gt=0, description="resize the input by this factor before encoding")
    progressive: list[float] | Literal["paper"] | None = Field(
        "paper", description="progressive training: share of the steps after which the k coarsest layers train "
                             "(k = 1..L, coarsest first); 'paper': the paper's coarse-first schedule, a layer joins "
                             "every progressive_step of the steps; null = all layers from the start")
    progressive_step: float = Field(0.15, gt=0, le=1, description="'paper' schedule: share of the steps between two "
                                                                  "layers joining")
    coarse_weight: float = Field(0.5, ge=0, description="weight of a second reconstruction, from a random smaller "
                                                        "number of coarse layers, in each step (keeps every k "
                                                        "decodable; the decoder learns from it)")
    coarse_batch: float = Field(1.0, gt=0, le=1, description="share of a step's clips decoded the second time")
    crop_frames: int | None = Field(None, ge=1, description="train on random crops of this many frames (aligned to "
                                                          "the latent frames); null = whole clips")
    crop_size: int | None = Field(None, ge=1, description="train on random crops of this height and width, in the "
                                                       "encoder's input pixels (after interpolate); null = whole "
                                                       "frames")
    crop_until: float = Field(0.5, ge=0, le=1, description="share of the steps trained on crops; the rest train on "
                                                           "whole clips, as many as the crops' pixels make")
    disc_channels: int = Field(32, ge=4)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=lambda: tiny_training(1500))
    detach_prediction: bool = Field(False, description="quantise z_l - sg(p_l): the full decode's error reaches the "
                                                       "prediction p_l only through the decoded path, not the residual")

    presets = {
        "small": {**V10_LAYOUT, "channels": 64, "channel_mult": [1, 2, 2],
                  "spatial_down": [True] * 3, "patch_size": 2,
                  "temporal_down": [True, True, True], "num_res_blocks": 1, "z_channels": 128,
                  "quant_dims": [16, 14, 12, 10],
                  "loss": {**MAGVIT2_LOSS, "entropy_sample_fraction": 1.0},
                  "crop_size": None,
                  "train": {"steps": 20000, "batch_size": 8, "lr": 4e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                            "warmup_steps": 1000}},
        "paper": {**V10_LAYOUT, "channels": 128, "channel_mult": [1, 2, 2, 4], "spatial_down": [True] * 4,
                  "factorized_conv": False,
                  "patch_size": 1,
                  "temporal_down": [True, True, True, False], "num_res_blocks": 2, "z_channels": 256,
                  "quant_dims": [18, 16, 14, 12], "layer_strides": [(2, 2, 2), (2, 1, 1), (2, 2, 2)],
                  "crop_size": None, "loss": {**MAGVIT2_LOSS, "entropy_sample_fraction": 0.1},
                  "train": {"steps": 200000, "batch_size": 8, "lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                            "warmup_steps": 5000, "precision": "bf16", "ema": 0.999}},
    }

    def widths(self) -> list[int]:
        """Width of each encoder level (the decoder mirrors them)."""
        return [round(self.channels * m) for m in self.channel_mult]

    def progressive_shares(self) -> list[float] | None:
        """Share of the steps after which the k coarsest layers train, k = 1..L (None: all from the start)."""
        if self.progressive == "paper":
            return [min(1.0, self.progressive_step * k) for k in range(len(self.quant_dims))]
        return self.progressive

    def input_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(frames, height, width)`` the encoder sees for clips of the given shape (after ``interpolate``)."""
        return frames, round(height * self.interpolate), round(width * self.interpolate)

    def crop_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(frames, height, width)`` that crop steps train on for clips of the given shape, in the
        encoder's input pixels (crops are cut after ``interpolate``)."""
        frames, height, width = self.input_shape(frames, height, width)
        return (min(self.crop_frames or frames, frames), min(self.crop_size or height, height),
                min(self.crop_size or width, width))

    @model_validator(mode="after")
    def _consistent(self):
        levels = len(self.channel_mult)
        for name in ("spatial_down", "temporal_down"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"{name} needs one entry per level of channel_mult ({levels})")
        if self.drop_spatial_down > sum(self.spatial_down):
            raise ValueError(f"drop_spatial_down {self.drop_spatial_down} exceeds the {sum(self.spatial_down)} "
                             f"spatial down-samplings of spatial_down {self.spatial_down}")
        if len(self.layer_strides) != len(self.quant_dims) - 1:
            raise ValueError(f"layer_strides needs one (t, h, w) stride per extra layer: "
                             f"{len(self.quant_dims) - 1} for {len(self.quant_dims)} quant_dims")
        if isinstance(self.progressive, list) and (len(self.progressive) != len(self.quant_dims)
                                             or self.progressive != sorted(self.progressive)
                                             or self.progressive[0] != 0 or self.progressive[-1] > 1):
            raise ValueError(f"progressive needs one start share per layer ({len(self.quant_dims)}), the first 0, "
                             f"non-decreasing, at most 1")
        if any(d > 20 or d < 1 for d in self.quant_dims):
            raise ValueError("quant_dims must lie in 1..20 (codebooks up to 2^20)")
        return self


class SingleLayerConfig(HiTVideoConfig):
    quant_dims: list[int] = Field(default_factory=lambda: [12], min_length=1, max_length=1)
    layer_strides: list[Stride] = Field(default_factory=list, max_length=0)
    interpolate: float = 1.125  # 64 -> 72 px: 4x9x9 = 324 tokens against hitvideo's 332 at tiny (+2.5 %)
    # tiny: the same CPU time as hitvideo's 1500 steps (a single-layer step costs 0.85 of a hitvideo one on average:
    # 562 against 659 CPU seconds for 1500 steps on one thread), so that neither side of a comparison trains longer
    train: TrainConfig = Field(default_factory=lambda: tiny_training(1750))

    presets = {
        "small": {**HiTVideoConfig.presets["small"], "quant_dims": [16], "layer_strides": [], "interpolate": 1.125},
        "paper": {**HiTVideoConfig.presets["paper"], "quant_dims": [18], "layer_strides": [],
                  "interpolate": 1.0625},  # 256 -> 272: 8x17x17 = 2312 tokens
    }


