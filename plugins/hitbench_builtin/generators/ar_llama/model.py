"""The ar-llama network: a Llama decoder over ``[text prefix] [start] [video tokens]`` with per-layer
vocabularies, 3D RoPE and the paper's dropouts (SPEC 5).

Each tokenizer layer has its own token embedding and its own head over its own codebook, so every position
predicts only from its layer's vocabulary; a learned layer embedding is added to each video token, and
positions use 3D RoPE (:mod:`..rope3d`) fed to transformers' ``LlamaDecoderLayer`` through
``position_embeddings``. Dropouts (paper Table 2): token dropout on the input embeddings, residual dropout on
the attention output and FFN dropout on the MLP output of every decoder layer (forward hooks on transformers'
modules), attention-probability dropout through ``LlamaConfig.attention_dropout``.

This module holds what the weights are and what one teacher-forced pass computes; the sequence layout
(:mod:`.sequence`), the text prefix (:mod:`.conditioning`), sampling (:mod:`.sampling`) and the training task
(:mod:`.task`) are mixed in or delegated.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

from hitvideo_bench.api import BadInput, Generator, TokenPyramid

from ..rope3d import Rotary3D, sequence_positions
from ..text import TEXT_DIMS, TextEncoder
from .conditioning import TextConditioning
from .config import ARLlamaConfig
from .sampling import Sampling
from .sequence import IGNORE, SequenceLayout
from .task import ARLlamaTask, build_task


def _cache_keyword() -> str:
    """The decoder layers' KV-cache keyword: ``cache`` in recent transformers, ``past_key_values`` before.
    Anything else would vanish into the layer's ``**kwargs`` and sampling would silently drop the cache."""
    names = inspect.signature(LlamaDecoderLayer.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in names:
            return name
    raise ImportError("this transformers' LlamaDecoderLayer.forward takes neither `cache` nor `past_key_values`; "
                      "install the transformers version pinned in pyproject.toml")


_CACHE_KW = _cache_keyword()


class ARLlamaGenerator(SequenceLayout, TextConditioning, Sampling, Generator):
    """Text -> coarse-to-fine token pyramid with a Llama decoder, 3D RoPE, per-layer heads, CFG, KV-cache.

    Built as ``ARLlamaGenerator(config, tokenizer=..., clip_shape=(T, H, W))``: the grids and codebooks it models
    (``grid_shapes``, ``codebook_sizes``) are the tokenizer's for those clips, set by the base class."""

    Config = ARLlamaConfig
    train_settings = "train"

    def __init__(self, config: ARLlamaConfig, tokenizer: Any, clip_shape: tuple[int, int, int]):
        super().__init__(config, tokenizer, clip_shape)
        sizes = self.codebook_sizes
        if len(self.grid_shapes) != len(sizes):
            raise BadInput(f"ar-llama: the tokenizer gives {len(self.grid_shapes)} token grids for "
                           f"{len(sizes)} codebooks")
        if isinstance(config.layer_loss_weights, list) and len(config.layer_loss_weights) != len(sizes):
            raise BadInput(f"ar-llama: layer_loss_weights has {len(config.layer_loss_weights)} entries, the "
                           f"tokenizer has {len(sizes)} layers", field="generator.config.layer_loss_weights")
        d = config.hidden_size
        self.llama_config = config.llama_config()
        head_dim = self.llama_config.head_dim
        # the frozen text encoder is kept out of the module tree (not trained, not checkpointed) and loaded on
        # first use
        self.text: TextEncoder | None = None
        self.text_proj = nn.Linear(TEXT_DIMS[config.text_encoder], d)
        self.uncond = nn.Parameter(torch.zeros(config.text_len, d))
        self.bos = nn.Parameter(torch.zeros(d))
        self.token_embeds = nn.ModuleList(nn.Embedding(size, d) for size in sizes)
        self.layer_embed = nn.Embedding(len(sizes), d)
        self.token_drop = nn.Dropout(config.token_dropout)
        self.rotary = Rotary3D(head_dim, config.rope_sections, config.rope_theta)
        self.layers = nn.ModuleList(LlamaDecoderLayer(self.llama_config, i) for i in range(config.num_layers))
        self.norm = LlamaRMSNorm(d, eps=config.rms_norm_eps)
        self.heads = nn.ModuleList(nn.Linear(d, size, bias=False) for size in sizes)
        for layer in self.layers:  # residual and FFN dropout on the outputs of transformers' modules
            layer.self_attn.register_forward_hook(partial(_dropout_first, p=config.resid_dropout))
            layer.mlp.register_forward_hook(partial(_dropout_out, p=config.ffn_dropout))
        self.reset_parameters()
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._layout = None

    # ------------------------------------------------------------------------------------ structure

    def reset_parameters(self) -> None:
        """Llama's initialisation: normal(0, initializer_range) weights, zero biases, unit norms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        nn.init.normal_(self.uncond, std=std)
        nn.init.normal_(self.bos, std=std)

    @classmethod
    def parameter_count(cls, config: ARLlamaConfig, codebook_sizes: list[int]) -> dict[str, int]:
        """Parameters of the generator over codebooks ``codebook_sizes`` (densest first), built on the meta device: no
        memory, no text encoder load. The token grids do not change the count.

        ``backbone`` = decoder layers and final norm; ``embeddings`` and ``heads`` scale with the
        codebooks; ``total`` is everything trained (the frozen text encoder is not counted).
        """
        sizes = [int(s) for s in codebook_sizes]
        shapes = SimpleNamespace(codebook_sizes=sizes, token_grid_shapes=lambda *clip: [(1, 1, 1)] * len(sizes))
        with torch.device("meta"):
            model = cls(config, shapes, clip_shape=(1, 1, 1))
        count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        out = {"backbone": count(model.layers) + count(model.norm),
               "embeddings": count(model.token_embeds) + count(model.layer_embed),
               "heads": count(model.heads),
               "text_side": count(model.text_proj) + model.uncond.numel() + model.bos.numel()}
        out["total"] = sum(p.numel() for p in model.parameters())
        return out

    # ------------------------------------------------------------------------------------ transformer

    def embed_video(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Embeddings of video tokens ``(B, n)`` that occupy sequence slots ``start .. start+n``."""
        order, _, _, ranges = self.layout()
        parts = []
        end = start + tokens.shape[1]
        for layer in order:
            lo, hi = max(start, ranges[layer][0]), min(end, ranges[layer][1])
            if lo >= hi:
                continue
            tok = tokens[:, lo - start:hi - start].clamp(min=0)  # IGNORE (masked) tokens embed as token 0
            parts.append(self.token_embeds[layer](tok) + self.layer_embed.weight[layer])
        if not parts:
            return self.bos.new_zeros(tokens.shape[0], 0, self.config.hidden_size)
        return self.token_drop(torch.cat(parts, dim=1))

    @staticmethod
    def attention_mask(key_valid: torch.Tensor, q_len: int) -> torch.Tensor:
        """Causal mask ``(B, 1, q_len, K)`` (True = attend) for the last ``q_len`` of ``K`` keys.

        Padded text keys are masked out; every query sees itself, so no row is empty.
        """
        K = key_valid.shape[1]
        q_pos = torch.arange(K - q_len, K, device=key_valid.device)[:, None]
        k_pos = torch.arange(K, device=key_valid.device)[None, :]
        allowed = (k_pos <= q_pos) & (key_valid[:, None, :] | (k_pos == q_pos))
        return allowed[:, None]

    def decode(self, x: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
               cache: DynamicCache | None = None) -> torch.Tensor:
        """Run the decoder stack on new inputs ``x (B, q, d)`` at ``positions (3, q)``; returns normed hidden states.

        ``key_valid (B, K)`` covers every key seen so far (cached ones and ``x``).
        """
        cos, sin = self.rotary(x, positions.unsqueeze(1).to(x.device))
        mask = self.attention_mask(key_valid, x.shape[1])
        h = x
        for layer in self.layers:
            h = layer(h, attention_mask=mask, position_embeddings=(cos, sin), use_cache=cache is not None,
                      **{_CACHE_KW: cache})
        return self.norm(h)

    def logits(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        return self.heads[layer](hidden)

    def forward(self, tokens: torch.Tensor, text_h: torch.Tensor, text_mask: torch.Tensor) -> dict[int, torch.Tensor]:
        """Teacher-forced logits per layer: ``{layer: (B, n_layer, codebook_layer)}`` predicting ``tokens (B, N)``."""
        B, N = tokens.shape
        L = self.config.text_len
        _, _, coords, ranges = self.layout()
        x = torch.cat([text_h, self.bos.expand(B, 1, -1).to(text_h.dtype),
                       self.embed_video(tokens[:, :N - 1]).to(text_h.dtype)], dim=1)
        positions = sequence_positions(L, coords)[:, :L + N].to(x.device)
        key_valid = torch.cat([text_mask, text_mask.new_ones(B, N)], dim=1)
        hidden = self.decode(x, positions, key_valid)[:, L:]  # slot j predicts video token j
        return {layer: self.logits(hidden[:, lo:hi], layer) for layer, (lo, hi) in ranges.items()}

    # ------------------------------------------------------------------------------------ losses

    def layer_nll(self, tokens: torch.Tensor, text_h: torch.Tensor,
                  text_mask: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Summed next-token cross-entropy (nats) and the number of supervised tokens, per layer.

        The count stays a tensor: training never waits for the device to read it back.
        """
        _, _, _, ranges = self.layout()
        out = {}
        for layer, logits in self.forward(tokens, text_h, text_mask).items():
            lo, hi = ranges[layer]
            target = tokens[:, lo:hi].flatten()
            out[layer] = (F.cross_entropy(logits.float().flatten(0, 1), target, ignore_index=IGNORE, reduction="sum"),
                          (target != IGNORE).sum())
        return out

    def layer_losses(self, tokens: torch.Tensor, text_h: torch.Tensor, text_mask: torch.Tensor) -> dict[int, torch.Tensor]:
        """Mean next-token cross-entropy (nats) per layer (over its supervised tokens)."""
        nll = self.layer_nll(tokens, text_h, text_mask)
        return {layer: total / n.clamp(min=1) for layer, (total, n) in nll.items()}

    @property
    def layer_weights(self) -> list[float]:
        """Cross-entropy weight per layer, densest first, with mean 1.

        The paper assigns "distinct loss weights ... to each layer" "to ensure balanced learning across
        hierarchical layers" without giving them. The default rule, ``codebook-bits``, weighs a layer by
        1 / log2(codebook size): each layer's cross-entropy then counts as a share of the most it can be (a
        uniform guess), so a large dense codebook does not outweigh the coarse layers that plan the clip."""
        rule = self.config.layer_loss_weights
        if isinstance(rule, list):
            weights = list(rule)
        elif rule == "codebook-bits":
            weights = [1 / math.log2(size) for size in self.codebook_sizes]
        else:
            weights = [1.0] * len(self.codebook_sizes)
        return [w * len(weights) / sum(weights) for w in weights]

    def weighted_loss(self, losses: dict[int, torch.Tensor]) -> torch.Tensor:
        weights = self.layer_weights
        total = sum(weights[layer] * loss for layer, loss in losses.items())
        return total / sum(weights)

    # ------------------------------------------------------------------------------------ training, evaluation

    def set_grad_checkpointing(self, on: bool) -> None:
        """Recompute each decoder layer in backward (transformers' layer checkpointing, non-reentrant) in training."""
        for layer in self.layers:
            layer.gradient_checkpointing = on
            layer._gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)

    def training_task(self, data: tuple[TokenPyramid, list[str]] | None, device: torch.device, *,
                      shapes_only: bool = False) -> ARLlamaTask:
        """Training on ``data`` = (pyramids, one caption each), which must be on this generator's grids and
        codebooks: see :func:`.task.build_task`."""
        return build_task(self, data, device, shapes_only)

    @torch.no_grad()
    def nll_bits_per_token(self, pyramid: TokenPyramid, prompts: list[str], batch_size: int = 16) -> dict[int, float]:
        """Teacher-forced conditional negative log-likelihood per layer, in bits per token.

        Tokens a keep-mask drops are not counted (a layer with none kept reports NaN).
        """
        was = self.training
        self.eval()
        device = self.bos.device
        tokens = self.flatten(pyramid.to("cpu"), masked_as_ignored=True)
        sums = {i: 0.0 for i in range(len(self.codebook_sizes))}
        counts = {i: 0 for i in sums}
        for start in range(0, tokens.shape[0], batch_size):
            tok = tokens[start:start + batch_size].to(device)
            feats, mask = self.encode_text(prompts[start:start + batch_size], device)
            text_h, text_mask = self.text_prefix(feats, mask)
            for layer, (total, n) in self.layer_nll(tok, text_h, text_mask).items():
                sums[layer] += float(total)
                counts[layer] += int(n)
        self.train(was)
        return {layer: sums[layer] / counts[layer] / math.log(2) if counts[layer] else math.nan for layer in sums}


def _dropout_first(module: nn.Module, args, output, p: float):
    """Residual dropout on the attention output (the first element of LlamaAttention's result)."""
    if p == 0 or not module.training:
        return output
    return (F.dropout(output[0], p, True), *output[1:])


def _dropout_out(module: nn.Module, args, output, p: float):
    """FFN dropout on the MLP output."""
    if p == 0 or not module.training:
        return output
    return F.dropout(output, p, True)
