"""Training ar-llama through the shared trainer: the dataset of token sequences and the training task.

The captions are encoded once per fit by the frozen text encoder; each step takes the per-layer
cross-entropies of a batch of sequences after their text prefix, with caption dropout (the learned
unconditional embedding) for classifier-free guidance. The training pyramids must be on the generator's own
grids and codebooks (those its tokenizer gives for the clip shape it was built for): a mismatch is a
:class:`BadInput` naming it, and nothing about the data is written back into the generator or its config.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hitvideo_bench.api import BadInput, TokenPyramid, TrainingTask, WeightsUnavailable, format_count

from ..text import shared_text_encoder

if TYPE_CHECKING:
    from .model import ARLlamaGenerator


class SequenceDataset(torch.utils.data.Dataset):
    """Map-style dataset of (coarse-to-fine token sequence, caption index)."""

    def __init__(self, tokens: torch.Tensor, caption_index: torch.Tensor):
        self.tokens = tokens
        self.caption_index = caption_index

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tokens[i], int(self.caption_index[i])


def build_task(gen: ARLlamaGenerator, data: tuple[TokenPyramid, list[str]] | None, device: torch.device,
               shapes_only: bool = False) -> ARLlamaTask:
    """The task for ``data`` = (pyramids, one caption each); ``shapes_only``: no data (the memory estimate)."""
    if shapes_only:
        return ARLlamaTask(gen, None, None)
    pyramids, captions = data
    if len(captions) != pyramids.batch_size:
        raise BadInput(f"ar-llama: {pyramids.batch_size} pyramids but {len(captions)} captions")
    gen.check_pyramid(pyramids, "training pyramid")
    tokens = gen.flatten(pyramids.to("cpu"), masked_as_ignored=True)
    unique = list(dict.fromkeys(captions))
    index = {c: i for i, c in enumerate(unique)}
    feats, mask = gen._text_encoder().encode(unique, gen.config.text_len, device)  # once per fit
    gen.to(device)
    return ARLlamaTask(gen, feats.to(device), mask.to(device),
                       SequenceDataset(tokens, torch.tensor([index[c] for c in captions])))


class ARLlamaTask(TrainingTask):
    """Per-layer cross-entropies of token sequences after the text prefix, with caption dropout for CFG."""

    def __init__(self, gen: ARLlamaGenerator, feats: torch.Tensor | None, mask: torch.Tensor | None,
                 data: SequenceDataset | None = None):
        self.gen = gen
        self.feats = feats  # (unique captions, text_len, E): encoded once per fit
        self.mask = mask
        self.data = data
        gen.train()

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.gen}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": [p for p in self.gen.parameters() if p.requires_grad]}

    def checkpoint_activations(self, on: bool) -> None:
        """Recompute each decoder layer in backward (asked for by the run's ``grad_checkpointing``)."""
        self.gen.set_grad_checkpointing(on)

    def collate(self, items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        return {"tokens": torch.stack([t for t, _ in items]), "caption": torch.tensor([c for _, c in items])}

    def example_batch(self, batch: int, shape: list[tuple[int, int, int]]) -> dict[str, torch.Tensor]:
        """Zero tokens on the generator's grids (``shape``, the grids the estimate names, must be those) and zero
        caption features (one per clip)."""
        gen, cfg = self.gen, self.gen.config
        grids = [tuple(int(v) for v in g) for g in shape]
        if grids != gen.grid_shapes:
            raise BadInput(f"ar-llama: example grids {grids} differ from the generator's {gen.grid_shapes}")
        self.feats = torch.zeros(batch, cfg.text_len, gen.text_proj.in_features)
        self.mask = torch.ones(batch, cfg.text_len, dtype=torch.bool)
        return {"tokens": torch.zeros(batch, sum(math.prod(g) for g in gen.grid_shapes), dtype=torch.long),
                "caption": torch.arange(batch)}

    def memory_notes(self) -> tuple[int, list[str]]:
        """The frozen text encoder stays on the device in training: counted when its config is on this machine."""
        kind = self.gen.config.text_encoder
        try:
            encoder = shared_text_encoder(kind)
        except WeightsUnavailable as exc:
            return 0, [f"frozen text encoder {kind} not counted: {exc.what} is not on this machine"]
        params = encoder.parameter_count()
        return (params * encoder.dtype(self.feats.device).itemsize,
                [f"frozen text encoder {kind} ({format_count(params)} parameters) counted"])

    def training_step(self, batch: dict[str, torch.Tensor], step: int, trainer) -> dict[str, torch.Tensor]:
        gen = self.gen
        device = self.feats.device
        tokens = batch["tokens"].to(device)
        idx = batch["caption"].to(device)
        # caption dropout drawn on the CPU (the checkpointed RNG; whether any row drops is known without a sync)
        drop = torch.rand(tokens.shape[0]) < gen.config.cond_drop
        with trainer.autocast():
            text_h, text_mask = gen.text_prefix(self.feats[idx], self.mask[idx], drop)
            losses = gen.layer_losses(tokens, text_h, text_mask)
            loss = gen.weighted_loss(losses)
        trainer.step(loss, "main")
        return {"loss": loss.detach(), **{f"ce/L{layer}": v.detach() for layer, v in sorted(losses.items())}}

    def summary(self) -> dict[str, Any]:
        return {"tokens_per_clip": int(self.data.tokens.shape[1]) if self.data is not None else None,
                "text_encoder": self.gen.config.text_encoder,
                "layer_loss_weights": [round(w, 4) for w in self.gen.layer_weights], "rope_frame": self.gen.config.rope_frame}

    def shard_units(self) -> list[nn.Module]:
        """FSDP units: each decoder layer, each layer's token embedding and head (over large codebooks most of the
        parameters), the text projection and the final norm; what the model reads directly (the unconditional
        text, the start token, the layer embedding) stays whole on every process."""
        gen = self.gen
        return [*gen.layers, *gen.token_embeds, *gen.heads, gen.text_proj, gen.norm]
