"""Dynamic encoding (paper section 3.3, Fig. 6): drop redundant dense tokens, fill them before decoding.

For each pair of consecutive latent frames of one layer (default: the densest, which holds most of
the tokens) the difference of the quantised latents is taken per token position. Positions whose
difference is below that frame's average (or zero: an unchanged code is redundant by any reading,
which also makes a fully static frame maskable) are masked. The first latent frame is never masked.
At most ``cap`` of a frame's positions are masked; when more qualify, a seeded random subset of them is
kept. Masked positions hold no token; the keep-mask travels in the TokenPyramid and its cost is
counted as side information (1 bit per maskable position, or its binary entropy if entropy-coded).

Fill strategies before decoding: ``repeat`` (the latent of the same position in the previous latent
frame, which after filling frame by frame is the last kept one), ``zero`` (a zero latent vector) and
``learned`` (a trained mask embedding). The paper compares the fills "for the same training iterations": with
``train.steps`` > 0 and ``finetune_decoder`` every strategy fine-tunes the base's decoder for that many steps
under its own fill (``learned`` trains its embedding too), the base otherwise frozen; ``fill_train_steps`` is
reported with the results.

The base tokenizer must implement the latent hooks of :class:`hitvideo_bench.api.Tokenizer`
(``tokens_to_latents``, ``decode_latents``; ``decoder_parameters`` for ``finetune_decoder``), whatever its latents'
width: the learned fill has one entry per channel of the masked layer's latent (``latent_channels()``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hitvideo_bench.api import (BadInput, ComponentConfig, TokenPyramid, Tokenizer, TrainConfig, TrainingTask,
                                save_figure)


class BaseRef(BaseModel):
    """The tokenizer to wrap, by catalog name (its preset defaults to the masked tokenizer's): the core builds it
    (and trains it, through the cache) and passes it to :class:`MaskedTokenizer` as ``base=``."""

    model_config = ConfigDict(extra="forbid")
    name: str = "hitvideo"
    preset: Literal["tiny", "small", "paper"] | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class MaskedConfig(ComponentConfig):
    base: BaseRef = Field(default_factory=BaseRef)
    strategy: Literal["repeat", "zero", "learned"] = "repeat"
    layer: int = Field(0, ge=0, description="which layer is masked (0 = densest)")
    cap: float = Field(0.85, gt=0, lt=1, description="largest share of a frame's positions that is masked")
    seed: int = 0
    side_info: Literal["raw", "entropy"] = "raw"
    finetune_decoder: bool = False
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=0))

    @field_validator("cap")
    @classmethod
    def _cap(cls, v):
        if not 0 < v < 1:
            raise ValueError("cap must lie strictly between 0 and 1")
        return v


# ------------------------------------------------------------------------------------------ the rule


def redundancy(latents: torch.Tensor) -> torch.Tensor:
    """Difference matrix of consecutive latent frames: ``(B, d, t, h, w) -> (B, t-1, h, w)`` (L1 over channels)."""
    return (latents[:, :, 1:] - latents[:, :, :-1]).abs().sum(dim=1)


def keep_mask(latents: torch.Tensor, cap: float, seed: int) -> torch.Tensor:
    """Which positions keep their token: ``(B, t, h, w)`` bool; the first latent frame is always kept."""
    diff = redundancy(latents)
    mean = diff.mean(dim=(2, 3), keepdim=True)
    masked = (diff < mean) | (diff == 0)
    B, t1, h, w = masked.shape
    limit = math.floor(cap * h * w)
    flat = masked.reshape(B * t1, h * w)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(flat.shape, generator=generator).to(flat.device)
    for row in torch.nonzero(flat.sum(1) > limit).flatten().tolist():
        candidates = torch.nonzero(flat[row]).flatten()
        order = torch.argsort(scores[row, candidates])
        flat[row, candidates[order[limit:]]] = False  # a seeded random subset stays unmasked
    keep = ~flat.reshape(B, t1, h, w)
    first = torch.ones(B, 1, h, w, dtype=torch.bool, device=keep.device)
    return torch.cat([first, keep], dim=1)


def fill(latents: torch.Tensor, keep: torch.Tensor, strategy: str, embedding: torch.Tensor | None = None) -> torch.Tensor:
    """Fill masked positions of ``latents (B, d, t, h, w)`` by ``strategy``."""
    keep = keep.unsqueeze(1)
    if strategy == "zero":
        return torch.where(keep, latents, torch.zeros_like(latents))
    if strategy == "learned":
        return torch.where(keep, latents, embedding.view(1, -1, 1, 1, 1).to(latents.dtype).expand_as(latents))
    frames = [latents[:, :, 0]]
    for i in range(1, latents.shape[2]):
        frames.append(torch.where(keep[:, :, i], latents[:, :, i], frames[-1]))
    return torch.stack(frames, dim=2)


def side_information_bits(keep: torch.Tensor, mode: str) -> torch.Tensor:
    """Bits per clip that say which positions were dropped (frames after the first)."""
    maskable = keep[:, 1:].flatten(1)
    n = maskable.shape[1]
    if mode == "raw" or n == 0:
        return torch.full((keep.shape[0],), float(n), dtype=torch.float64)
    p = (~maskable).double().mean(1).clamp(1e-12, 1 - 1e-12)
    entropy = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
    return (entropy * n).where((p > 1e-12) & (p < 1 - 1e-12), torch.zeros_like(p))


# ------------------------------------------------------------------------------------------ the tokenizer


class MaskedTokenizer(Tokenizer):
    """Any latent-exposing tokenizer with dynamic encoding of one layer."""

    Config = MaskedConfig
    train_settings = "train"
    #: the config field naming the wrapped tokenizer; the core builds that one and passes it as ``base=``
    wraps = "base"

    def __init__(self, config: MaskedConfig, base: Tokenizer | None = None):
        super().__init__(config)
        if base is None:
            raise BadInput(f"masked: needs the tokenizer it wraps, built from config.base ({config.base.name!r}) and "
                           "passed as base=...; the core does this when it builds a masked tokenizer (a wrapper never "
                           "builds its base itself)", field="tokenizer.config.base")
        if not base.exposes_latents:
            raise BadInput(f"masked: base tokenizer {config.base.name!r} does not implement the latent hooks "
                           "tokens_to_latents() and decode_latents() that dynamic encoding needs "
                           "(see docs/plugins.md)", field="tokenizer.config.base.name")
        if config.layer >= base.num_layers:
            raise BadInput(f"masked: layer {config.layer} does not exist; {config.base.name} has layers "
                           f"0..{base.num_layers - 1}")
        if config.train.steps > 0 and config.strategy != "learned" and not config.finetune_decoder:
            raise BadInput(f"masked: strategy {config.strategy!r} with train.steps {config.train.steps} has nothing to "
                           "train; set finetune_decoder: true (or train.steps: 0)")
        if config.finetune_decoder and type(base).decoder_parameters is Tokenizer.decoder_parameters:
            raise BadInput(f"masked: finetune_decoder needs the base tokenizer {config.base.name!r} to implement "
                           "decoder_parameters()", field="tokenizer.config.finetune_decoder")
        self.base = base
        self.mask_embedding = None
        if config.strategy == "learned":
            channels = base.latent_channels()
            if channels is None:
                raise BadInput(f"masked: the learned fill needs the base tokenizer {config.base.name!r} to declare "
                               "its latents' widths (latent_channels())", field="tokenizer.config.strategy")
            self.mask_embedding = torch.nn.Parameter(torch.zeros(channels[config.layer]))

    @property
    def codebook_sizes(self) -> list[int]:
        return self.base.codebook_sizes

    @property
    def trainable(self) -> bool:
        return self.config.train.steps > 0

    @torch.no_grad()
    def compress(self, video: torch.Tensor, layers: int | None = None):
        out = super().compress(video, layers)
        out.info["per_clip"] = {"fill_train_steps": [float(self.config.train.steps)] * video.shape[0]}
        return out

    def token_grid_shapes(self, frames, height, width):
        return self.base.token_grid_shapes(frames, height, width)

    def encode(self, video: torch.Tensor) -> TokenPyramid:
        pyramid = self.base.encode(video)
        layer = self.config.layer
        latents = self.base.tokens_to_latents(pyramid)[layer]
        keep = keep_mask(latents, self.config.cap, self.config.seed)
        layers = list(pyramid.layers)
        layers[layer] = torch.where(keep, layers[layer], torch.zeros_like(layers[layer]))
        masks = list(pyramid.masks)
        masks[layer] = keep
        return TokenPyramid(layers, pyramid.codebook_sizes, masks)

    def filled_latents(self, pyramid: TokenPyramid) -> list[torch.Tensor]:
        """Per-layer latents with the masked positions filled by the strategy."""
        latents = list(self.base.tokens_to_latents(pyramid))
        keep = pyramid.masks[self.config.layer]
        if keep is not None:
            latents[self.config.layer] = fill(latents[self.config.layer], keep, self.config.strategy,
                                              self.mask_embedding)
        return latents

    def decode(self, pyramid: TokenPyramid, layers: int | None = None) -> torch.Tensor:
        return self.base.decode_latents(self.filled_latents(pyramid), layers=layers).clamp(0, 1)

    def side_info_bits(self, pyramid: TokenPyramid) -> torch.Tensor:
        keep = pyramid.masks[self.config.layer]
        if keep is None:
            return torch.zeros(pyramid.batch_size, dtype=torch.float64)
        return side_information_bits(keep.cpu(), self.config.side_info)

    def side_info_note(self) -> str:
        how = "1 bit per maskable position" if self.config.side_info == "raw" else \
            "binary entropy of the keep-mask per maskable position"
        return f" + keep-mask side information ({how})"

    @torch.no_grad()
    def save_figures(self, video: torch.Tensor, folder: Path) -> list[Path]:
        """The redundancy map of one clip: input frames, difference matrix and keep-mask per latent frame."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pyramid = self.encode(video[:1])
        latents = self.base.tokens_to_latents(pyramid)[self.config.layer]
        diff = redundancy(latents)[0].cpu()
        keep = pyramid.masks[self.config.layer][0].cpu()
        t = keep.shape[0]
        T = video.shape[2]
        fig, axes = plt.subplots(3, t, figsize=(1.8 * t, 5.4), squeeze=False)
        for i in range(t):
            frame = video[0, :, min(T - 1, round(i * T / t))].permute(1, 2, 0).clamp(0, 1).cpu()
            axes[0][i].imshow(frame.numpy())
            axes[0][i].set_title(f"latent frame {i}", fontsize=7)
            if i > 0:
                axes[1][i].imshow(diff[i - 1].numpy(), cmap="magma")
            axes[2][i].imshow(keep[i].float().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[2][i].set_xlabel(f"kept {int(keep[i].sum())}/{keep[i].numel()}", fontsize=7)
            for ax in axes[:, i]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0][0].set_ylabel("input")
        axes[1][0].set_ylabel("difference")
        axes[2][0].set_ylabel("keep-mask")
        fig.suptitle(f"redundancy map, layer {self.config.layer} (white = token kept)", fontsize=9)
        return [save_figure(fig, Path(folder) / "redundancy_map.png")]

    # -------------------------------------------------------------------------------- training

    def training_task(self, data, device, *, shapes_only: bool = False) -> _MaskTask | None:
        """Training of the fill (and, with ``finetune_decoder``, the base's decoder), the base otherwise frozen;
        None when ``train.steps`` is 0."""
        return _MaskTask(self, data) if self.config.train.steps > 0 else None


class _MaskTask(TrainingTask):
    """L1 reconstruction through the fill; the base frozen except its decoder if asked."""

    def __init__(self, tokenizer: MaskedTokenizer, data):
        self.tok = tokenizer
        self.data = data

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"tokenizer": self.tok}

    def param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        params = [self.tok.mask_embedding] if self.tok.mask_embedding is not None else []
        if self.tok.config.finetune_decoder:
            params += list(self.tok.base.decoder_parameters())
        for p in self.tok.base.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        return {"main": params}

    def training_step(self, batch, step: int, trainer) -> dict[str, float]:
        video = batch["video"]
        pyramid = batch.get("pyramid")  # given by example_batch: the memory estimate traces the decode alone
        if pyramid is None:
            with torch.no_grad():
                pyramid = self.tok.encode(video)
        rec = self.tok.decode(pyramid)
        loss = (rec - video).abs().mean()
        trainer.step(loss, "main")
        return {"l1": loss.detach()}

    def example_batch(self, batch: int, shape: tuple[int, int, int]) -> dict[str, Any]:
        """Clips and their (all-zero) tokens, every position kept: which positions a clip masks depends on its data,
        and encoding saves nothing for backward."""
        grids = self.tok.token_grid_shapes(*shape)
        layers = [torch.zeros(batch, *g, dtype=torch.long) for g in grids]
        masks: list[torch.Tensor | None] = [None] * len(grids)
        masks[self.tok.config.layer] = torch.ones(batch, *grids[self.tok.config.layer], dtype=torch.bool)
        return {"video": torch.rand(batch, 3, *shape), "pyramid": TokenPyramid(layers, self.tok.codebook_sizes, masks)}
