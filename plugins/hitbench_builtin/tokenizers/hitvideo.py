"""HiTVideo tokenizers: a causal 3D convolutional VAE with hierarchical lookup-free quantisation.

Encoder: a causal conv in, then one level per entry of ``channel_mult`` (a strided causal down-sampling
conv, then ResNet blocks); 2x spatial down-sampling where ``spatial_down`` says so, 2x temporal where
``temporal_down`` does. Its output is the latent of layer 0 (the densest). Each further layer is a
lightweight causal compression stage on the previous layer's latent (stride ``layer_strides[l-1]``).

Causality: temporal padding is on the past side only and normalisation is per frame, so the tokens
of a latent frame never depend on input frames after that latent frame's span.

Quantisation: each layer projects its latent to ``quant_dims[l]`` channels and quantises every channel
to its sign with vector-quantize-pytorch's LFQ (MAGVIT-v2): the token is the bit pattern, the
codebook has ``2^quant_dims[l]`` entries, gradients are straight-through and the LFQ adds the entropy
penalty (low per-sample entropy, high codebook-usage entropy) and a commitment term.

Only the dense layer's gradients train the main encoder (``coarse_grad_to_encoder`` off): the
compression stages learn to summarise its latent. Letting the coarse layers' straight-through
gradients reach it stalled training at tiny scale (the dense layer then added nothing).

Decoding is coarse to fine: the coarsest layer's codes give an overview; each finer layer repeats the
coarser sum over the cells it covers (parameter-free, so the sum keeps its scale: a learned linear conv
chain here grew it about 100-fold within 100 steps) and adds its own codes' contribution (its residual
detail). Decoding from the ``k`` coarsest layers leaves the finer contributions out, a learned vector per
left-out layer standing in for each, which training exercises (progressive schedule, then random top-``k``
drops), so quality per ``k`` can be measured.

Layer-drop steps train only the coarse layers (compression stages, projections, stand-ins), not the
decoder (``layer_drop_trains_decoder``): the decoder learns from full decodes, and the coarse layers learn to
give it an overview it can read. The paper's progressive schedule (coarse layers first, the decoder learning
from them) is ``progressive``; ``small`` and ``paper`` use it, ``tiny`` trains all layers from the start.
Measured at tiny, 720 steps, full decode: on a GPU, 3 seeds each, 19.5 dB with the schedule and the decoder
learning from every step, 21.2 dB with neither; on CPU, with layer-drop steps leaving the decoder alone, the
schedule still cost about 1 dB (19.6 and 20.1 dB over 2 seeds against 20.7 dB).

Training crops (``crop_size``, ``crop_frames``): the frames of a clip are nearly alike, so a step over a
few whole clips sees little variety. ``tiny`` trains the first half of its steps on 8 random 32-pixel crops
for the cost of 2 whole clips, then on whole clips (``crop_until``) so that the causal context matches
evaluation. Crops are cut from the clip as the encoder takes it (single-layer: after resizing 64 to 72 px).
Measured in a plain loop at 720 steps: hitvideo 21.6 dB with crops against 20.3 dB with 4 whole clips per
step. Crops until half-way rather than 85 % of the steps: 23.3 against 23.1 dB (900 steps of 16, seed 0).
single-layer used to train on 4-frame crops of whole frames (its resize to 72 px takes no 32-pixel crop of
the 64-pixel clip); at 72 px those cost 1.5x its 32-pixel crops now do (264 against 176 ms a step, 60 steps).

Optimisation at ``tiny`` (CPU, 720 steps, full decode of 8 validation clips, seeds 0 / 1): the previous settings
(L1, lr 2e-3, Adam betas (0.9, 0.99), He-initialised residual branches) gave 21.5 / 20.8 dB; the squared error
and lr 1e-3 gave 22.6 / 22.6 dB; with residual branches that start at zero as well 22.8 dB (seed 0), with betas
(0.9, 0.95) as well 22.8 dB (seed 0), with all four 22.8 dB (seed 1), and 23.75 dB at 1440 steps (seed 0). ``tiny``
uses all four. At 900 steps of 16 clips (seed 0, 23.1 dB), the same clips over 1800 steps of 8 gave 23.5 dB for
about 5 % more time (single-layer 11 %), and with crops until half-way 23.8 / 23.4 dB (seeds 0 / 1). Tried on
top without gain (seed 0): crops until 30 % (23.6), 3600 steps of 4 (23.7), an EMA of the weights (decay 0.995:
23.7, 0.998: 23.5), a per-position channel norm instead of per-frame GroupNorm (23.5); at 900 steps of 16, a
final lr of 0 (22.8) or 0.3 (23.0) of the peak instead of 0.1.

A sweep on a lent H100 (1500 steps of 8, crops until half-way, full decode of the same 8 clips; seeds 0 / 1,
figures are their mean; 23.2 dB with the settings above) then found: the LFQ commitment weight 0.1 instead of
0.01, 23.65 dB (0.05: 23.57 over 3 seeds; 0.25: 23.57 with the coarse layers up to 3 dB worse; 0: 18.0, seed 0);
weight decay 0.05 on top, 23.69; layer drops on 15 % of the steps instead of 25 % on top, 23.89 (coarse layers
1 to 2 dB worse); the entropy terms estimated from a quarter of the tokens, 23.23 against 23.18 (a CPU step
15 % cheaper); 1800 steps instead of 1500: 23.88 with commitment 0.1 alone. No gain at seed 0
from lr 7e-4 (23.32), 1.5e-3 (22.74, 2 seeds) or 2e-3 (21.78), betas (0.9, 0.99) (22.73), a gradient clip of 5
(23.02), latent width 48 (22.87) or 96 (23.31), or entropy weights 0.001 (23.29) and 0.02 (23.18). single-layer
gained nothing from these (24.68 at first, 24.43 to 24.50 after; one seed each). ``tiny`` uses commitment 0.1,
weight decay 0.05, layer drops at 15 % and a quarter of the tokens for the entropy terms. At 1500 steps of 8 clips
the demo (CPU, from an empty cache, variants one after the other) reached 23.8 dB (single-layer 24.3) in 14 min
48 s; 1800 steps reached 23.9 to 24.0 dB in three runs but took 15 to 16.6 min. With the demo's two runs side by
side (``hitbench run --jobs 2``, one thread each) 1800 steps gave 23.9966 dB (single-layer 24.46) in 12 min 50 s and
13 min 47 s; on all 32 validation clips 23.28 dB (single-layer 23.77). On one thread PyTorch ran the temporal
``k x 1 x 1`` convs on its slow reference kernels (see :func:`temporal_conv`); as 2D convs, a step beside the other
run became about 1.25x faster in the demo (hitvideo 328 to 261 ms, single-layer 380 to 298 ms), and ``tiny`` trains
2400 steps: in the demo 24.20 dB (single-layer 24.68), 23.48 on all 32 validation clips (single-layer 24.12), in 13
min 58 s; 2700 steps gave 24.29 dB but the demo took 14 min 30 s. Tried (CPU, one thread each, seed 0; the mean of
per-clip PSNR on the 8 / 32 clips, which puts ``tiny`` at 2400 steps at 24.17 / 23.44, and at 24.32 / 23.54 and
24.25 / 23.61 with seeds 1 and 2), none better: patch size 4 with no down-sampling at the first level (a step 22 %
cheaper): 3400 steps in 551 s, 24.20 / 23.46 (2400 steps of ``tiny`` took 537 s); with two residual blocks per level
as well, 1900 steps in 379 s, 23.70 / 22.80; against ``tiny`` at 1800 steps (23.97 / 23.23): a 13-bit dense layer
(23.87 / 23.12) or the coarse layers' gradients reaching the main encoder (23.98 / 23.18). Neither tokenizer
reproduces the background's fine texture (the reconstruction holds 2 to 3 % of it), which is about 30 % of the
remaining squared error. Also tried at 1500 steps (CPU, one thread each, seeds 0 / 1): every full-decode step also
decoding one clip from a random k < 4 layers with the decoder frozen, instead of layer-drop steps: 23.83 / 24.00 dB,
no better than layer drops (GPU: 23.89 mean) and 38 % dearer in the whole-clip phase. ``small`` and ``paper`` keep
L1, betas (0.9, 0.99), no weight decay, layer drops at 25 %, MAGVIT-v2's LFQ weights and their own learning rates
and batches.

``single-layer`` is the same VAE with one LFQ layer; its input is resized by ``interpolate`` (256 ->
272 at paper scale) so that its token count is close to the multi-layer total, and its output resized
back.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint
from vector_quantize_pytorch import LFQ

from hitvideo_bench.components import ComponentConfig, Tokenizer
from hitvideo_bench.errors import ShapeError, WeightsUnavailable
from hitvideo_bench.tokens import TokenPyramid
from hitvideo_bench.training import TrainConfig, train

Stride = tuple[int, int, int]


class LossConfig(BaseModel):
    """Loss weights of tokenizer training.

    The defaults are the ``tiny`` preset's: its few hundred steps are far too few for a GAN, and
    MAGVIT-v2's LFQ weights (entropy 0.05-0.1, commitment 0.25) there swamp the reconstruction loss and
    stall the multi-layer tokenizer (measured at 240 whole-clip steps: 16.2 dB with the GAN, 12.8 dB with
    both, against 18.5 dB with neither). ``small`` and ``paper`` use the MAGVIT-v2 weights
    (:data:`MAGVIT2_LOSS`) with the paper's L1 reconstruction term.

    ``tiny`` trains on the squared error instead of L1 (PSNR, its quality bar, is a squared-error measure).
    Measured at 720 steps, one seed each: hitvideo 21.8 dB against 21.5 dB with L1 at lr 2e-3, 22.6 against
    22.0 dB at lr 1e-3. Its commitment weight is 0.1 (was 0.01: 23.65 against 23.2 dB at 1500 steps, 2 seeds
    on a GPU), and its entropy terms are estimated from a quarter of each layer's tokens (at least 64), which
    makes a CPU step about 15 % cheaper for the same PSNR (the module docstring has the sweep).
    """

    model_config = ConfigDict(extra="forbid")
    l1: float = Field(0.0, ge=0, description="L1 reconstruction weight")
    l2: float = Field(10.0, ge=0, description="squared-error reconstruction weight")
    perceptual: float = Field(0.1, ge=0, description="LPIPS weight; off when its weights are missing")
    adversarial: float = Field(0.0, ge=0, description="hinge-GAN generator weight; 0 = no discriminator")
    adversarial_start: float = Field(0.5, ge=0, le=1, description="share of the steps before the GAN starts")
    entropy: float = Field(0.005, ge=0, description="LFQ entropy penalty weight, per layer")
    diversity_gamma: float = Field(1.0, ge=0, description="weight of codebook-usage entropy in the penalty")
    commitment: float = Field(0.1, ge=0, description="LFQ commitment weight, per layer")
    entropy_sample_fraction: float = Field(0.25, gt=0, le=1, description="share of a layer's tokens (at least 64) "
                                                                       "the entropy terms are estimated from (time "
                                                                       "and memory at large codebooks)")


#: loss weights of the longer trainings (small, paper): MAGVIT-v2's LFQ terms and a GAN from half-way
MAGVIT2_LOSS = {"l1": 1.0, "l2": 0.0, "adversarial": 0.01, "entropy": 0.05, "commitment": 0.25}


#: the fewest tokens a layer's LFQ entropy terms are estimated from (see ``LossConfig.entropy_sample_fraction``)
MIN_ENTROPY_TOKENS = 64

#: the paper's progressive schedule (coarse layers first): the share of the steps after which k layers train
PAPER_PROGRESSIVE = [0.0, 0.05, 0.1, 0.15]


class HiTVideoConfig(ComponentConfig):
    channels: int = Field(32, ge=4, description="width of the first encoder level")
    channel_mult: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    spatial_down: list[bool] = Field(default_factory=lambda: [True, True])
    temporal_down: list[bool] = Field(default_factory=lambda: [True, True])
    drop_spatial_down: int = Field(0, ge=0, description="turn off this many of spatial_down's down-samplings, first "
                                                        "levels first: the same token grids from input 2^n times "
                                                        "smaller (the resolution ablation, at every preset)")
    num_res_blocks: int = Field(1, ge=1)
    patch_size: int = Field(2, ge=1, description="space-to-depth patch before the first conv (and after the last)")
    factorized_conv: bool = Field(True, description="(2+1)D causal convs (fast on CPU) instead of full 3D ones")
    z_channels: int = Field(64, ge=4, description="latent width of every layer")
    quant_dims: list[int] = Field(default_factory=lambda: [12, 10, 8, 6], min_length=1,
                                  description="LFQ bits per layer, densest first (codebook 2^d)")
    layer_strides: list[Stride] = Field(default_factory=lambda: [(2, 2, 2), (2, 1, 1), (1, 2, 2)],
                                        description="(t, h, w) stride of each extra layer's compression stage")
    interpolate: float = Field(1.0, gt=0, description="resize the input by this factor before encoding")
    coarse_grad_to_encoder: bool = Field(
        False, description="let the coarse layers' straight-through gradients reach the main encoder (off: only "
                           "the dense layer trains it; the compression stages learn to summarise its latent)")
    progressive: list[float] | None = Field(
        None, description="share of the steps after which the k coarsest layers train (k = 1..L), the paper's "
                          "schedule (small and paper: 0, 5, 10, 15 %); null = all at once")
    layer_drop: float = Field(0.15, ge=0, le=1, description="once all layers train: chance of a step that "
                                                              "decodes from a random number of coarse layers")
    layer_drop_trains_decoder: bool = Field(
        False, description="layer-drop steps train the decoder too; off: they train only the coarse layers, "
                           "towards the decoder that the full decodes train")
    crop_frames: int | None = Field(None, ge=1, description="train on random crops of this many frames (aligned to "
                                                          "the latent frames); null = whole clips")
    crop_size: int | None = Field(32, ge=1, description="train on random crops of this height and width, in the "
                                                       "encoder's input pixels (after interpolate); null = whole "
                                                       "frames")
    crop_until: float = Field(0.5, ge=0, le=1, description="share of the steps trained on crops; the rest train on "
                                                           "whole clips, as many as the crops' pixels make")
    disc_channels: int = Field(32, ge=4)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(
        steps=2400, batch_size=8, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, warmup_steps=40,
        checkpoint_every=500, log_every=100))

    presets = {
        "small": {"channels": 64, "channel_mult": [1, 2, 2], "spatial_down": [True] * 3, "patch_size": 2,
                  "temporal_down": [True, True, True], "num_res_blocks": 1, "z_channels": 128,
                  "quant_dims": [16, 14, 12, 10], "loss": {**MAGVIT2_LOSS, "entropy_sample_fraction": 1.0},
                  "crop_size": None, "progressive": PAPER_PROGRESSIVE, "layer_drop": 0.25,
                  "train": {"steps": 20000, "batch_size": 8, "lr": 4e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                            "warmup_steps": 1000, "checkpoint_every": 1000, "log_every": 50}},
        "paper": {"channels": 128, "channel_mult": [1, 2, 2, 4], "spatial_down": [True] * 4, "factorized_conv": False,
                  "patch_size": 1,
                  "temporal_down": [True, True, True, False], "num_res_blocks": 2, "z_channels": 256,
                  "quant_dims": [18, 16, 14, 12], "layer_strides": [(2, 2, 2), (2, 1, 1), (2, 2, 2)],
                  "crop_size": None, "loss": {**MAGVIT2_LOSS, "entropy_sample_fraction": 0.1},
                  "progressive": PAPER_PROGRESSIVE, "layer_drop": 0.25,
                  "train": {"steps": 200000, "batch_size": 8, "lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0,
                            "warmup_steps": 5000, "checkpoint_every": 2000, "log_every": 100, "precision": "bf16",
                            "grad_checkpointing": True, "ema": 0.999}},
    }

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
        if self.progressive is not None and len(self.progressive) != len(self.quant_dims):
            raise ValueError(f"progressive needs one start share per layer ({len(self.quant_dims)})")
        if any(d > 20 or d < 1 for d in self.quant_dims):
            raise ValueError("quant_dims must lie in 1..20 (codebooks up to 2^20)")
        return self


class SingleLayerConfig(HiTVideoConfig):
    quant_dims: list[int] = Field(default_factory=lambda: [12], min_length=1, max_length=1)
    layer_strides: list[Stride] = Field(default_factory=list, max_length=0)
    interpolate: float = 1.125  # 64 -> 72 px: 4x9x9 = 324 tokens vs hitvideo's 308 at tiny

    presets = {
        "small": {**HiTVideoConfig.presets["small"], "quant_dims": [16], "layer_strides": [], "interpolate": 1.125,
                  "progressive": None},
        "paper": {**HiTVideoConfig.presets["paper"], "quant_dims": [18], "layer_strides": [],
                  "interpolate": 1.0625, "progressive": None},  # 256 -> 272: 8x17x17 = 2312 tokens
    }


# ------------------------------------------------------------------------------------------- blocks


def per_frame(op, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op ``(N, C, H, W) -> (N, C', H', W')`` to every frame of ``(B, C, T, H, W)``."""
    b, c, t, h, w = x.shape
    y = op(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class CausalConv3d(nn.Module):
    """Causal 3D conv: padded on the past side in time (``kt - st`` frames, replicating the first frame).

    ``factorized`` computes it as a spatial ``1 x k x k`` conv followed by a causal temporal ``k x 1 x 1``
    conv ((2+1)D, as in R(2+1)D): the same receptive field and causality, and on CPU about 8x faster
    to train than a full ``k x k x k`` conv, whose weight-gradient kernel is slow there.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: Stride = (1, 1, 1), factorized: bool = False):
        super().__init__()
        self.time_pad = max(kernel - stride[0], 0)
        if factorized:
            self.spatial = nn.Conv2d(cin, cout, kernel, stride=stride[1:], padding=kernel // 2)
            self.conv = nn.Conv3d(cout, cout, (kernel, 1, 1), stride=(stride[0], 1, 1))
        else:
            self.spatial = None
            self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (keeps the signal's scale through deep stacks); a factorized conv's temporal
        part starts as the identity on the current frame, so it starts as a plain 2D conv."""
        first = self.spatial if self.spatial is not None else self.conv
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
        nn.init.zeros_(first.bias)
        if self.spatial is not None:
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, -1, 0, 0].copy_(torch.eye(self.conv.weight.shape[0]))
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is not None:  # the 2D conv applied to every frame, as a 1 x k x k 3D conv (no transposes)
            sp = self.spatial
            x = F.conv3d(x, sp.weight.unsqueeze(2), sp.bias, stride=(1, *sp.stride), padding=(0, *sp.padding))
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.spatial is not None:
            return temporal_conv(x, self.conv)
        return self.conv(x)


def temporal_conv(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """A ``k x 1 x 1`` 3D conv computed as a ``k x 1`` 2D conv over (time, pixels): the same result, but oneDNN
    takes it at any thread count, whereas PyTorch sends a 3D conv with a 1 x 1 spatial kernel, stride 1 and a batch
    under 16 on one thread to its slow reference kernels (checked with the profiler). Measured on CPU, one thread,
    beside another training process, forward and backward: 25 ms at 2x32x18x32x32, 17 ms as a 2D conv; at
    8x32x18x16x16, 36 and 15 ms. These kernels suffer most from a neighbour: alone on the machine, a tiny training
    step gained 6 % (whole clips) to 18 % (crops)."""
    b, c, t, h, w = x.shape
    y = F.conv2d(x.reshape(b, c, t, h * w), conv.weight.squeeze(-1), conv.bias, stride=(conv.stride[0], 1))
    return y.view(b, y.shape[1], y.shape[2], h, w)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame separately: statistics never mix frames (keeps causality)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)


def norm(channels: int) -> FrameNorm:
    return FrameNorm(min(32, channels // 4) or 1, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-norm residual block; its branch's last conv starts at zero, so the block starts as its skip path."""

    def __init__(self, cin: int, cout: int, factorized: bool = False):
        super().__init__()
        self.body = nn.Sequential(norm(cin), nn.SiLU(), CausalConv3d(cin, cout, factorized=factorized), norm(cout),
                                  nn.SiLU(), CausalConv3d(cout, cout, factorized=factorized))
        nn.init.zeros_(self.body[-1].conv.weight)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """Nearest up-sampling by ``stride``, then a causal conv."""

    def __init__(self, cin: int, cout: int, stride: Stride, factorized: bool = False):
        super().__init__()
        self.stride = tuple(stride)
        self.conv = CausalConv3d(cin, cout, factorized=factorized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.conv(x)


class Repeat(nn.Module):
    """Nearest up-sampling by ``stride`` (each coarse latent repeated over the finer cells it covers)."""

    def __init__(self, stride: Stride):
        super().__init__()
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class Sequential(nn.Sequential):
    """``nn.Sequential`` that recomputes its blocks in backward when ``grad_checkpointing`` is on."""

    grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.grad_checkpointing and self.training and isinstance(block, ResBlock):
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def level_strides(cfg: HiTVideoConfig) -> list[Stride]:
    """(t, h, w) stride of each encoder level (``drop_spatial_down`` applied)."""
    spatial = list(cfg.spatial_down)
    for level in [i for i, down in enumerate(spatial) if down][:cfg.drop_spatial_down]:
        spatial[level] = False
    return [(2 if t else 1, 2 if s else 1, 2 if s else 1) for s, t in zip(spatial, cfg.temporal_down)]


def space_to_depth(x: torch.Tensor, p: int) -> torch.Tensor:
    return x if p == 1 else per_frame(lambda f: F.pixel_unshuffle(f, p), x)


def depth_to_space(x: torch.Tensor, p: int) -> torch.Tensor:
    return x if p == 1 else per_frame(lambda f: F.pixel_shuffle(f, p), x)


class Encoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        f = cfg.factorized_conv
        self.patch = cfg.patch_size
        blocks: list[nn.Module] = [CausalConv3d(3 * self.patch ** 2, cfg.channels, factorized=f)]
        cin = cfg.channels
        for width, stride in zip(widths, level_strides(cfg)):
            blocks.append(CausalConv3d(cin, width, stride=stride, factorized=f))
            blocks += [ResBlock(width, width, f) for _ in range(cfg.num_res_blocks)]
            cin = width
        blocks += [ResBlock(cin, cin, f), norm(cin), nn.SiLU(), CausalConv3d(cin, cfg.z_channels, factorized=f)]
        self.net = Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(space_to_depth(x, self.patch))


class Decoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        cin = widths[-1]
        f = cfg.factorized_conv
        blocks: list[nn.Module] = [CausalConv3d(cfg.z_channels, cin, factorized=f), ResBlock(cin, cin, f)]
        for i in reversed(range(len(widths))):
            width = widths[i - 1] if i > 0 else cfg.channels
            blocks += [ResBlock(cin, cin, f) for _ in range(cfg.num_res_blocks)]
            blocks.append(Upsample(cin, width, level_strides(cfg)[i], f))
            cin = width
        self.patch = cfg.patch_size
        blocks += [norm(cin), nn.SiLU(), CausalConv3d(cin, 3 * self.patch ** 2, factorized=f)]
        self.net = Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.net(z), self.patch)


class Discriminator(nn.Module):
    """A small 3D PatchGAN: strided convs to a grid of real/fake logits."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv3d(3, c, 3, stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2),
            nn.Conv3d(2 * c, 4 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * c), nn.LeakyReLU(0.2),
            nn.Conv3d(4 * c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------------- tokenizer


class HiTVideoTokenizer(Tokenizer):
    """Causal 3D VAE + one LFQ per layer; layer 0 densest. See the module docstring."""

    Config = HiTVideoConfig

    def __init__(self, config: HiTVideoConfig):
        super().__init__(config)
        c = config
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        z = c.z_channels
        f = c.factorized_conv
        self.stages = nn.ModuleList(nn.Sequential(CausalConv3d(z, z, stride=tuple(s), factorized=f), nn.SiLU(),
                                                  CausalConv3d(z, z, factorized=f))
                                    for s in c.layer_strides)
        self.ups = nn.ModuleList(Repeat(s) for s in c.layer_strides)
        self.pre = nn.ModuleList(nn.Conv3d(z, d, 1) for d in c.quant_dims)
        self.post = nn.ModuleList(nn.Conv3d(d, z, 1) for d in c.quant_dims)
        # what stands in for each left-out finer layer when decoding from fewer layers (learned)
        self.absent = nn.Parameter(torch.zeros(len(c.quant_dims) - 1, z)) if len(c.quant_dims) > 1 else None
        self.quantizers = nn.ModuleList(
            LFQ(dim=d, codebook_size=2 ** d, entropy_loss_weight=c.loss.entropy, commitment_loss_weight=c.loss.commitment,
                diversity_gamma=c.loss.diversity_gamma, frac_per_sample_entropy=c.loss.entropy_sample_fraction,
                channel_first=True)
            for d in c.quant_dims)
        self.set_grad_checkpointing(c.train.grad_checkpointing)

    def set_grad_checkpointing(self, on: bool) -> None:
        for module in self.modules():
            if isinstance(module, Sequential):
                module.grad_checkpointing = on

    # ---------------------------------------------------------------------------- shapes (no compute)

    @property
    def codebook_sizes(self) -> list[int]:
        return [2 ** d for d in self.config.quant_dims]

    @staticmethod
    def grid_shapes(cfg: HiTVideoConfig, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        """Per-layer token grids for a clip, or :class:`ShapeError` naming what does not divide."""
        _, h, w = cfg.input_shape(frames, height, width)
        if cfg.interpolate != 1.0 and (h / cfg.interpolate != height or w / cfg.interpolate != width):
            raise ShapeError(f"interpolate {cfg.interpolate} does not map {height}x{width} to whole pixels")
        shape = [frames, h, w]
        strides = [(1, cfg.patch_size, cfg.patch_size)] + level_strides(cfg) + [tuple(s) for s in cfg.layer_strides]
        out = []
        for i, stride in enumerate(strides):
            for axis, (size, s) in enumerate(zip(shape, stride)):
                if size % s:
                    what = ("frames", "height", "width")[axis]
                    raise ShapeError(
                        f"{what} {(frames, height, width)[axis]} does not suit this tokenizer: it is down-sampled by "
                        f"{math.prod(st[axis] for st in strides)} in total (by {s} at stage {i + 1}); use a multiple "
                        f"of {math.prod(st[axis] for st in strides)}" + (f" after interpolating by {cfg.interpolate}"
                                                                          if cfg.interpolate != 1.0 and axis else ""))
            shape = [size // s for size, s in zip(shape, stride)]
            if i >= len(cfg.spatial_down):
                out.append(tuple(shape))
        return out

    def token_grid_shapes(self, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        return self.grid_shapes(self.config, frames, height, width)

    def check_training_shape(self, frames: int, height: int, width: int) -> None:
        super().check_training_shape(frames, height, width)
        cfg = self.config
        try:  # crops are cut from the resized clip: they take no further resizing
            self.grid_shapes(cfg.model_copy(update={"interpolate": 1.0}), *cfg.crop_shape(frames, height, width))
        except ShapeError as exc:
            raise ShapeError(f"crop_frames {cfg.crop_frames} / crop_size {cfg.crop_size} on {frames}x{height}x{width} "
                             f"clips: {exc}") from None

    @classmethod
    def parameter_count(cls, config: HiTVideoConfig) -> int:
        """Parameters of a tokenizer built from ``config`` (on the meta device: no memory)."""
        with torch.device("meta"):
            model = cls(config)
        return sum(p.numel() for p in model.parameters())

    # ---------------------------------------------------------------------------- encode / decode

    def _resize(self, video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(video.shape[-2:]) == size:
            return video
        return per_frame(lambda f: F.interpolate(f, size=size, mode="bilinear", align_corners=False,
                                                 antialias=True), video)

    def resize_input(self, video: torch.Tensor) -> torch.Tensor:
        """Clips resized by ``interpolate`` to what the encoder takes."""
        return self._resize(video, tuple(self.config.input_shape(*video.shape[2:])[1:]))

    def latents(self, video: torch.Tensor, resized: bool = False) -> list[torch.Tensor]:
        """Continuous latent of every layer (densest first), before quantisation; ``resized``: the clips are
        already at the encoder's input size (training crops, checked by :meth:`check_training_shape`)."""
        if not resized:
            self.check_shape(*video.shape[2:])
            video = self.resize_input(video)
        zs = [self.encoder(video * 2 - 1)]
        for stage in self.stages:
            coarse_in = zs[-1]
            if len(zs) == 1 and not self.config.coarse_grad_to_encoder:
                coarse_in = coarse_in.detach()
            zs.append(stage(coarse_in))
        return zs

    def entropy_fraction(self, z: torch.Tensor) -> float:
        """Share of a layer's tokens the LFQ samples for its entropy terms: ``entropy_sample_fraction``, but at
        least :data:`MIN_ENTROPY_TOKENS` tokens (or all), so that a layer with few tokens is never left with none."""
        tokens = z.numel() // z.shape[1]
        return min(1.0, max(self.config.loss.entropy_sample_fraction, MIN_ENTROPY_TOKENS / max(tokens, 1)))

    def quantize(self, zs: list[torch.Tensor], layers: int | None = None
                 ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None], torch.Tensor]:
        """LFQ codes and token indices of the ``layers`` coarsest layers (others None), and the aux loss."""
        n = len(zs)
        keep_from = n - (layers or n)
        codes: list[torch.Tensor | None] = [None] * n
        indices: list[torch.Tensor | None] = [None] * n
        aux = zs[0].new_zeros(())
        for l in range(keep_from, n):
            z = self.pre[l](zs[l])
            self.quantizers[l].frac_per_sample_entropy = self.entropy_fraction(z)
            q, idx, loss = self.quantizers[l](z)
            codes[l], indices[l] = q, idx
            aux = aux + loss
        return codes, indices, aux

    def encode(self, video: torch.Tensor) -> TokenPyramid:
        _, indices, _ = self.quantize(self.latents(video))
        return TokenPyramid([i.long() for i in indices], self.codebook_sizes)

    def tokens_to_latents(self, pyramid: TokenPyramid) -> list[torch.Tensor]:
        """The ±1 LFQ codes ``(B, d_l, t, h, w)`` of every layer (masked positions hold their stored index)."""
        return [q.indices_to_codes(tok) for q, tok in zip(self.quantizers, pyramid.layers)]

    def decode_latents(self, codes: list[torch.Tensor | None], layers: int | None = None,
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes -> video in [0, 1] (unclamped), from the ``layers`` coarsest layers (finer ones left out)."""
        n = len(codes)
        keep_from = n - (layers or n)
        h = None
        for l in range(n - 1, -1, -1):
            if h is not None:
                h = self.ups[l](h)
            if l >= keep_from and codes[l] is not None:
                detail = self.post[l](codes[l])
                h = detail if h is None else h + detail
        if keep_from:
            h = h + self.absent[:keep_from].sum(0).view(1, -1, 1, 1, 1)
        video = self.decoder(h)
        if size is None:
            size = (round(video.shape[-2] / self.config.interpolate), round(video.shape[-1] / self.config.interpolate))
        return (self._resize(video, size) + 1) / 2

    def decode(self, pyramid: TokenPyramid, layers: int | None = None) -> torch.Tensor:
        return self.decode_latents(self.tokens_to_latents(pyramid), layers=layers)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """What a fill strategy may fine-tune: everything after the quantisers."""
        return [p for m in (self.post, self.ups, self.decoder) for p in m.parameters()] + \
            ([self.absent] if self.absent is not None else [])

    def forward(self, video: torch.Tensor, layers: int | None = None, resized: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: reconstruction from the ``layers`` coarsest layers (at the size of ``video``) and the
        LFQ aux loss; ``resized``: ``video`` is already at the encoder's input size (see :meth:`latents`)."""
        codes, _, aux = self.quantize(self.latents(video, resized), layers)
        return self.decode_latents(codes, layers, size=tuple(video.shape[-2:])), aux

    # ---------------------------------------------------------------------------- training

    def fit(self, dataset, *, workdir: Path, device, seed: int, progress: bool = True, eval_fn=None) -> dict[str, Any]:
        task = TokenizerTask(self, device)
        summary = train(task, dataset, self.config.train, workdir=workdir, device=device, seed=seed,
                        progress=progress, eval_fn=eval_fn)
        return {**summary, "perceptual": task.perceptual_status, "adversarial": task.adversarial_status}

    def save_pretrained(self, path: Path) -> None:
        from hitvideo_bench.checkpoint import save_pretrained

        save_pretrained(self, path, "tokenizer", "single-layer" if isinstance(self, SingleLayerTokenizer)
                        else "hitvideo")


class SingleLayerTokenizer(HiTVideoTokenizer):
    """The same causal VAE with one dense LFQ layer (MAGVIT-v2 style), input resized to match tokens."""

    Config = SingleLayerConfig


def load_perceptual(device) -> tuple[nn.Module | None, str]:
    """LPIPS as a training loss when its weights are on disk; otherwise off, with the reason."""
    try:
        from hitbench_builtin.metrics.lpips_metric import build_lpips
    except ImportError as exc:  # the metric module is part of this plugin; keep training usable without it
        return None, f"off: {exc}"
    try:
        net = build_lpips("alex").to(device).eval()
    except WeightsUnavailable as exc:
        return None, f"off: {exc.hint}"
    for p in net.parameters():
        p.requires_grad_(False)
    return net, "on (lpips alex)"


def reconstruction_loss(rec: torch.Tensor, video: torch.Tensor, weights: LossConfig
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``l1 * L1 + l2 * squared error`` of a reconstruction, and the two terms (for the logs)."""
    err = rec - video
    l1, l2 = err.abs().mean(), err.square().mean()
    return weights.l1 * l1 + weights.l2 * l2, l1, l2


@contextlib.contextmanager
def frozen(params):
    """Parameters that the graph built inside the block does not train (back to trainable after it)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class TokenizerTask:
    """Training of a HiTVideo tokenizer through the shared trainer (see hitvideo_bench.training)."""

    def __init__(self, tokenizer: HiTVideoTokenizer, device):
        self.tok = tokenizer
        cfg = tokenizer.config
        self.steps = cfg.train.steps
        self.lpips, self.perceptual_status = (None, "off: weight 0")
        if cfg.loss.perceptual > 0:
            self.lpips, self.perceptual_status = load_perceptual(device)
        self.disc = None
        self.adversarial_status = "off: weight 0"
        if cfg.loss.adversarial > 0:
            self.disc = Discriminator(cfg.disc_channels).to(device)
            self.adversarial_status = f"on after step {self.adversarial_from}"

    @property
    def adversarial_from(self) -> int:
        return int(self.tok.config.loss.adversarial_start * self.steps)

    def modules(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tok} | ({"disc": self.disc} if self.disc is not None else {})

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"main": list(self.tok.parameters())}
        if self.disc is not None:
            groups["disc"] = list(self.disc.parameters())
        return groups

    def scheduled_layers(self, step: int) -> int:
        """How many coarse layers the progressive schedule trains at this step (all of them when it is off)."""
        cfg = self.tok.config
        if cfg.progressive is None:
            return len(cfg.quant_dims)
        return max(1, sum(1 for share in cfg.progressive if step >= share * self.steps))

    def active_layers(self, step: int) -> int:
        """How many coarse layers this step trains and decodes from (progressive schedule, layer drop)."""
        cfg = self.tok.config
        n = len(cfg.quant_dims)
        k = self.scheduled_layers(step)
        if k < n:
            return k
        if n > 1 and cfg.layer_drop and float(torch.rand(())) < cfg.layer_drop:
            return int(torch.randint(1, n, ()))
        return n

    def decoder_frozen(self, step: int, layers: int) -> bool:
        """Whether step ``step``, decoding from ``layers`` layers, leaves the decoder as it is: a layer-drop step
        (fewer layers than the schedule trains) unless ``layer_drop_trains_decoder``."""
        return layers < self.scheduled_layers(step) and not self.tok.config.layer_drop_trains_decoder

    def training_clips(self, video: torch.Tensor, step: int) -> tuple[torch.Tensor, bool]:
        """What step ``step`` trains on, and whether it is already at the encoder's input size: random crops of
        every clip, cut after resizing it by ``interpolate`` (offsets from the global RNG, which checkpoints
        keep, so a resumed run crops alike), or after ``crop_until`` whole clips, as many as the crops' pixels
        make at the clips' own size (so a resized tokenizer sees as many clips as one that is not), so that the
        model ends on the context it is evaluated with."""
        cfg = self.tok.config
        full = cfg.input_shape(*video.shape[2:])
        shape = cfg.crop_shape(*video.shape[2:])
        if shape == full:
            return video, False
        if step >= cfg.crop_until * self.steps:
            return video[:max(1, video.shape[0] * math.prod(shape) // math.prod(video.shape[2:]))], False
        self.tok.check_training_shape(*video.shape[2:])
        video = self.tok.resize_input(video)
        align = math.prod(s[0] for s in level_strides(cfg))  # crops start on a latent frame's first frame
        crops = []
        for clip in video:
            t0 = int(torch.randint((full[0] - shape[0]) // align + 1, ())) * align
            y0, x0 = (int(torch.randint(n - c + 1, ())) for n, c in zip(full[1:], shape[1:]))
            crops.append(clip[:, t0:t0 + shape[0], y0:y0 + shape[1], x0:x0 + shape[2]])
        return torch.stack(crops), True

    def training_step(self, batch: dict[str, Any], step: int, trainer) -> dict[str, float]:
        video, resized = self.training_clips(batch["video"], step)
        loss_cfg = self.tok.config.loss
        k = self.active_layers(step)
        with trainer.autocast():
            with frozen(self.tok.decoder.parameters() if self.decoder_frozen(step, k) else ()):
                rec, aux = self.tok(video, layers=k, resized=resized)
            loss, l1, l2 = reconstruction_loss(rec, video, loss_cfg)
            loss = loss + aux
            logs = {"l1": l1.item(), "l2": l2.item(), "lfq_aux": aux.item(), "layers": float(k)}
            if self.lpips is not None:
                frames = lambda v: v.transpose(1, 2).flatten(0, 1) * 2 - 1  # noqa: E731
                perceptual = self.lpips(frames(rec), frames(video)).mean()
                loss = loss + loss_cfg.perceptual * perceptual
                logs["lpips"] = perceptual.item()
            gan = self.disc is not None and step >= self.adversarial_from
            if gan:
                with frozen(self.disc.parameters()):
                    g_loss = -self.disc(rec * 2 - 1).mean()
                loss = loss + loss_cfg.adversarial * g_loss
                logs["g_adv"] = g_loss.item()
        trainer.step(loss, "main")
        if gan:
            with trainer.autocast():
                real, fake = self.disc(video * 2 - 1), self.disc(rec.detach() * 2 - 1)
                d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            trainer.step(d_loss, "disc")
            logs["d_hinge"] = d_loss.item()
        logs["loss"] = loss.item()
        return logs
