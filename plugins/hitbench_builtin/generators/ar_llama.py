"""``ar-llama``: a Llama-style autoregressive text-to-video generator over token pyramids (SPEC 5).

The sequence is ``[text prefix (text_len, right-padded, masked)] [start] [video tokens]``, video
tokens coarse-to-fine: every token of the most compressed layer first, raster order within a layer,
down to the densest layer. Each tokenizer layer has its own token embedding and its own head over
its own codebook, so every position samples only from its layer's vocabulary; a learned layer
embedding is added to each video token, and positions use 3D RoPE (:mod:`.rope3d`) fed to
transformers' ``LlamaDecoderLayer`` through ``position_embeddings``.

Dropouts (paper Table 2): token dropout on the input embeddings, residual dropout on the attention
output and FFN dropout on the MLP output of every decoder layer (forward hooks on transformers'
modules), attention-probability dropout through ``LlamaConfig.attention_dropout``. Classifier-free
guidance: the text is replaced by a learned unconditional embedding at rate ``cond_drop`` in
training; at sampling the conditional and unconditional streams run as one batch of 2B.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

from hitvideo_bench.components import ComponentConfig, Generator
from hitvideo_bench.errors import BadInput, WeightsUnavailable
from hitvideo_bench.tokens import TokenPyramid
from hitvideo_bench.training import TrainConfig, TrainingTask

from .rope3d import Rotary3D, sequence_positions, video_layout
from .text import TEXT_DIMS, TextEncoder, shared_text_encoder

def _train_default():
    # tiny: ~330 tokens per clip (the tiny hitvideo pyramid), about 0.38 s per step on 2 CPU cores. 600 steps:
    # the knee of recipes/generation_budget.yaml's curve (over single-layer tokens the mean attribute accuracy
    # rises from 200 to 600 steps and not beyond; over hitvideo tokens it is flat); see docs/ablations.md
    return TrainConfig(steps=600, batch_size=8, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_steps=20)


class ARLlamaConfig(ComponentConfig):
    """Transformer size, text prefix, dropouts, loss weights, the pyramid it generates, training."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int | None = Field(None, ge=1, description="grouped-query attention; None = num_heads")
    intermediate_size: int | None = Field(None, ge=1, description="FFN width; None = LlamaGen's rule "
                                          "(8/3 hidden, rounded up to a multiple of 256, or of 32 below 1024)")
    text_encoder: Literal["minilm", "flan-t5-xl"] = "minilm"
    text_len: int = Field(24, ge=1)
    rope_theta: float = Field(10000.0, gt=0)
    rope_sections: tuple[int, int, int] | None = Field(None, description="rotary frequencies per (t, h, w); "
                                                       "None = a third each for h and w, the rest for t")
    resid_dropout: float = Field(0.1, ge=0, lt=1)
    ffn_dropout: float = Field(0.1, ge=0, lt=1)
    token_dropout: float = Field(0.1, ge=0, lt=1)
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    cond_drop: float = Field(0.1, ge=0, le=1, description="share of training captions replaced by the "
                             "learned unconditional embedding (for classifier-free guidance)")
    layer_loss_weights: list[float] | Literal["codebook-bits", "equal"] = Field(
        "codebook-bits", description="cross-entropy weight per tokenizer layer, densest first, or a rule: "
        "'codebook-bits' weighs each layer by 1 / log2(its codebook size) (see layer_weights), 'equal'")
    rope_frame: Literal["layer", "clip"] = Field(
        "layer", description="rotary (t, h, w) of a video token: in its own layer's grid ('layer', the paper's), or "
        "on the densest grid with a coarse token at the centre of the region it covers ('clip')")
    initializer_range: float = Field(0.02, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    grid_shapes: list[tuple[int, int, int]] | None = Field(None, description="per-layer (t, h, w) token grids, "
                                                           "densest first; set from the training pyramid at fit")
    codebook_sizes: list[int] | None = Field(None, description="per-layer codebook sizes, densest first; "
                                             "taken from the tokenizer")
    train: TrainConfig = Field(default_factory=_train_default)

    presets = {
        "tiny": {},
        "small": {"hidden_size": 256, "num_layers": 4, "num_heads": 8, "text_len": 48,
                  "train": {"steps": 1500, "batch_size": 16, "lr": 6e-4}},
        "paper": {"hidden_size": 3200, "num_layers": 24, "num_heads": 32, "text_len": 120,
                  "text_encoder": "flan-t5-xl",
                  "train": {"steps": 100000, "batch_size": 256, "lr": 1e-4, "weight_decay": 0.05,
                            "warmup_steps": 2000, "precision": "bf16", "grad_checkpointing": True}},
    }

    @field_validator("grid_shapes", mode="after")
    @classmethod
    def _grids(cls, value):
        if value is not None and any(min(g) < 1 for g in value):
            raise ValueError(f"every (t, h, w) must be positive, got {value}")
        return value

    @property
    def ffn_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        raw = int(2 * 4 * self.hidden_size / 3)
        multiple = 256 if self.hidden_size >= 1024 else 32
        return -(-raw // multiple) * multiple

    def llama_config(self) -> LlamaConfig:
        """The transformers config of the decoder stack."""
        if self.hidden_size % self.num_heads:
            raise BadInput(f"ar-llama: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise BadInput(f"ar-llama: num_heads {self.num_heads} is not divisible by num_kv_heads {kv}")
        return LlamaConfig(hidden_size=self.hidden_size, intermediate_size=self.ffn_size,
                           num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                           num_key_value_heads=kv, rms_norm_eps=self.rms_norm_eps,
                           attention_dropout=self.attention_dropout, initializer_range=self.initializer_range,
                           vocab_size=1, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                           attn_implementation="sdpa")


#: Flat-sequence id of a token a keep-mask dropped: not supervised, not counted in NLL.
IGNORE = -1


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


class ARLlamaGenerator(Generator):
    """Text -> coarse-to-fine token pyramid with a Llama decoder, 3D RoPE, per-layer heads, CFG, KV-cache."""

    Config = ARLlamaConfig

    def __init__(self, config: ARLlamaConfig, tokenizer: Any):
        super().__init__(config, tokenizer)
        sizes = [int(s) for s in tokenizer.codebook_sizes]
        if config.codebook_sizes is not None and list(config.codebook_sizes) != sizes:
            raise BadInput(f"ar-llama: config codebook_sizes {config.codebook_sizes} differ from the tokenizer's "
                           f"{sizes}", field="generator.config.codebook_sizes")
        config.codebook_sizes = sizes
        if config.grid_shapes is not None and len(config.grid_shapes) != len(sizes):
            raise BadInput(f"ar-llama: {len(config.grid_shapes)} grid shapes for {len(sizes)} tokenizer layers",
                           field="generator.config.grid_shapes")
        if isinstance(config.layer_loss_weights, list) and len(config.layer_loss_weights) != len(sizes):
            raise BadInput(f"ar-llama: layer_loss_weights has {len(config.layer_loss_weights)} entries, the "
                           f"tokenizer has {len(sizes)} layers", field="generator.config.layer_loss_weights")
        self.codebook_sizes = sizes
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
    def parameter_count(cls, config: ARLlamaConfig, codebook_sizes: list[int] | None = None) -> dict[str, int]:
        """Parameters of the generator (built on the meta device: no memory, no text encoder load).

        ``backbone`` = decoder layers and final norm; ``embeddings`` and ``heads`` scale with the
        codebooks; ``total`` is everything trained (the frozen text encoder is not counted).
        """
        sizes = codebook_sizes or config.codebook_sizes
        if sizes is None:
            raise BadInput("ar-llama: parameter_count needs codebook sizes (argument or config.codebook_sizes)")
        cfg = config.model_copy(update={"codebook_sizes": None})
        with torch.device("meta"):
            model = cls(cfg, SimpleNamespace(codebook_sizes=list(sizes)))
        count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        out = {"backbone": count(model.layers) + count(model.norm),
               "embeddings": count(model.token_embeds) + count(model.layer_embed),
               "heads": count(model.heads),
               "text_side": count(model.text_proj) + model.uncond.numel() + model.bos.numel()}
        out["total"] = sum(p.numel() for p in model.parameters())
        return out

    @property
    def grid_shapes(self) -> list[tuple[int, int, int]]:
        if self.config.grid_shapes is None:
            raise BadInput("ar-llama: the generator has no grid shapes yet: fit it on a pyramid, or set "
                           "config grid_shapes (per-layer (t, h, w), densest first)", field="generator.config.grid_shapes")
        return [tuple(g) for g in self.config.grid_shapes]

    def layout(self) -> tuple[list[int], torch.Tensor, torch.Tensor, dict[int, tuple[int, int]]]:
        """``(order, layer_ids (N,), coords (N, 3), ranges)``; ``ranges[layer] = (start, end)`` in the video sequence."""
        grids = tuple(self.grid_shapes)
        if self._layout is None or self._layout[0] != grids:  # memoised: sampling asks once per token
            order, layer_ids, coords = video_layout(list(grids), self.config.rope_frame)
            ranges, start = {}, 0
            for layer in order:
                n = math.prod(grids[layer])
                ranges[layer] = (start, start + n)
                start += n
            self._layout = (grids, (order, layer_ids, coords, ranges))
        return self._layout[1]

    def flatten(self, pyramid: TokenPyramid, masked_as_ignored: bool = False) -> torch.Tensor:
        """Pyramid -> ``(B, N)`` token sequence, coarse-to-fine, raster order within each layer.

        With ``masked_as_ignored``, tokens a dynamic-encoding keep-mask drops become ``IGNORE`` (-1):
        they carry no information, so they are not supervised (and are embedded as token 0).
        """
        if list(pyramid.codebook_sizes) != self.codebook_sizes:
            raise BadInput(f"ar-llama: pyramid codebooks {pyramid.codebook_sizes} differ from the generator's "
                           f"{self.codebook_sizes}")
        if [tuple(g) for g in pyramid.grid_shapes] != self.grid_shapes:
            raise BadInput(f"ar-llama: pyramid grids {pyramid.grid_shapes} differ from the generator's {self.grid_shapes}")
        parts = []
        for i in pyramid.coarse_to_fine():
            tok, keep = pyramid.layers[i].flatten(1), pyramid.masks[i]
            if masked_as_ignored and keep is not None:
                tok = torch.where(keep.flatten(1).to(tok.device), tok, torch.full_like(tok, IGNORE))
            parts.append(tok)
        return torch.cat(parts, dim=1)

    def unflatten(self, tokens: torch.Tensor) -> TokenPyramid:
        """``(B, N)`` coarse-to-fine tokens -> pyramid (densest layer first), on CPU."""
        _, _, _, ranges = self.layout()
        layers = [tokens[:, ranges[i][0]:ranges[i][1]].reshape(tokens.shape[0], *self.grid_shapes[i]).cpu()
                  for i in range(len(self.codebook_sizes))]
        return TokenPyramid(layers, list(self.codebook_sizes))

    # ------------------------------------------------------------------------------------ text

    def _text_encoder(self) -> TextEncoder:
        if self.text is None:
            self.text = shared_text_encoder(self.config.text_encoder)
        return self.text

    def encode_text(self, prompts: list[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen encoder features ``(B, text_len, E)`` and mask ``(B, text_len)``, memoised per prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            feats, mask = self._text_encoder().encode(missing, self.config.text_len, device)
            for i, prompt in enumerate(missing):
                self._text_cache[prompt] = (feats[i].cpu(), mask[i].cpu())
        feats = torch.stack([self._text_cache[p][0] for p in prompts]).to(device)
        mask = torch.stack([self._text_cache[p][1] for p in prompts]).to(device)
        return feats, mask

    def text_prefix(self, feats: torch.Tensor, mask: torch.Tensor,
                    drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected text ``(B, text_len, d)`` and mask; rows where ``drop`` is True get the unconditional embedding."""
        h = self.text_proj(feats.to(self.text_proj.weight.dtype))
        if drop is not None and bool(drop.any()):
            drop = drop.to(h.device)
            h = torch.where(drop[:, None, None], self.uncond.to(h.dtype).expand_as(h), h)
            mask = mask | drop[:, None]
        return h, mask

    def uncond_prefix(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.uncond.unsqueeze(0).expand(batch, -1, -1)
        return h, torch.ones(batch, self.config.text_len, dtype=torch.bool, device=device)

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

    # ------------------------------------------------------------------------------------ training

    def set_grad_checkpointing(self, on: bool) -> None:
        """Recompute each decoder layer in backward (transformers' layer checkpointing, non-reentrant) in training."""
        for layer in self.layers:
            layer.gradient_checkpointing = on
            layer._gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)

    def training_task(self, data: tuple[TokenPyramid, list[str]] | None, device: torch.device, *,
                      shapes_only: bool = False) -> _Task:
        """Training on ``data`` = (pyramids, one caption each): the captions are encoded once by the frozen text
        encoder, then every step takes the per-layer cross-entropies of a batch of token sequences."""
        if shapes_only:
            return _Task(self, None, None)
        pyramids, captions = data
        if len(captions) != pyramids.batch_size:
            raise BadInput(f"ar-llama: {pyramids.batch_size} pyramids but {len(captions)} captions")
        grids = [tuple(int(v) for v in g) for g in pyramids.grid_shapes]
        if self.config.grid_shapes is not None and self.grid_shapes != grids:
            raise BadInput(f"ar-llama: training pyramid grids {grids} differ from config grid_shapes "
                           f"{self.grid_shapes}", field="generator.config.grid_shapes")
        self.config.grid_shapes = grids
        tokens = self.flatten(pyramids.to("cpu"), masked_as_ignored=True)
        unique = list(dict.fromkeys(captions))
        index = {c: i for i, c in enumerate(unique)}
        feats, mask = self._text_encoder().encode(unique, self.config.text_len, device)  # once per fit
        self.to(device)
        return _Task(self, feats.to(device), mask.to(device),
                     _SequenceDataset(tokens, torch.tensor([index[c] for c in captions])))

    def save_pretrained(self, path: Path) -> None:
        """Weights and config (with grid shapes and codebooks); the frozen text encoder is not saved."""
        from hitvideo_bench.checkpoint import save_pretrained

        save_pretrained(self, path, "generator", "ar-llama")

    # ------------------------------------------------------------------------------------ evaluation

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

    # ------------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, prompts: list[str], cfg_scale: float = 1.0, seed: int = 0, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, use_cache: bool = True) -> TokenPyramid:
        """One pyramid per prompt (on CPU). ``temperature=0`` is greedy. ``cfg_scale != 1`` runs the
        unconditional stream in the same batch and mixes ``uncond + cfg_scale * (cond - uncond)``."""
        device = self.bos.device
        feats, mask = self.encode_text(list(prompts), device)
        tokens = self.generate(feats, mask, cfg_scale=cfg_scale, guide=cfg_scale != 1.0, seed=seed,
                               temperature=temperature, top_k=top_k, top_p=top_p, use_cache=use_cache)
        return self.unflatten(tokens)

    @torch.no_grad()
    def generate(self, feats: torch.Tensor, mask: torch.Tensor, *, cfg_scale: float = 1.0, guide: bool = False,
                 seed: int = 0, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 use_cache: bool = True, logits_out: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Coarse-to-fine token sequences ``(B, N)`` from text features; ``guide`` adds the unconditional stream.

        ``logits_out``, if given, receives each step's (guided) logits ``(B, codebook)`` (for tests).
        """
        if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
            raise BadInput(f"ar-llama: sampling needs temperature >= 0, top_k >= 1, 0 < top_p <= 1; got "
                           f"temperature={temperature}, top_k={top_k}, top_p={top_p}")
        was = self.training
        self.eval()
        device = self.bos.device
        B, L = feats.shape[0], self.config.text_len
        _, layer_ids, coords, _ = self.layout()
        N = layer_ids.shape[0]
        layer_ids = layer_ids.tolist()
        text_h, text_mask = self.text_prefix(feats, mask)
        if guide:
            uh, um = self.uncond_prefix(B, device)
            text_h, text_mask = torch.cat([text_h, uh]), torch.cat([text_mask, um])
        streams = text_h.shape[0]
        positions = sequence_positions(L, coords).to(device)
        prefix = torch.cat([text_h, self.bos.expand(streams, 1, -1)], dim=1)
        key_valid = torch.cat([text_mask, text_mask.new_ones(streams, N)], dim=1)
        gen = torch.Generator(device=device).manual_seed(int(seed))
        tokens = torch.zeros(B, N, dtype=torch.long, device=device)
        cache = DynamicCache(config=self.llama_config) if use_cache else None
        hidden = self.decode(prefix, positions[:, :L + 1], key_valid[:, :L + 1], cache)[:, -1]
        for n in range(N):
            logits = self.logits(hidden, layer_ids[n]).float()
            if guide:
                cond, uncond = logits[:B], logits[B:]
                logits = uncond + cfg_scale * (cond - uncond)
            if logits_out is not None:
                logits_out.append(logits)
            tokens[:, n] = _pick(logits, gen, temperature, top_k, top_p)
            if n == N - 1:
                break
            both = tokens[:, n:n + 1].repeat(streams // B, 1)
            if use_cache:
                x = self.embed_video(both, start=n)
                hidden = self.decode(x, positions[:, L + 1 + n:L + 2 + n], key_valid[:, :L + 2 + n], cache)[:, -1]
            else:  # recompute the whole prefix (for benchmarks and the cache equivalence test)
                video = self.embed_video(tokens[:, :n + 1].repeat(streams // B, 1))
                x = torch.cat([prefix, video], dim=1)
                hidden = self.decode(x, positions[:, :L + 2 + n], key_valid[:, :L + 2 + n])[:, -1]
        self.train(was)
        return tokens


def _pick(logits: torch.Tensor, gen: torch.Generator, temperature: float, top_k: int | None,
          top_p: float | None) -> torch.Tensor:
    """One token per row from ``logits (B, V)``: greedy at temperature 0, else filtered multinomial."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        remove = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)


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


class _SequenceDataset(torch.utils.data.Dataset):
    """Map-style dataset of (coarse-to-fine token sequence, caption index)."""

    def __init__(self, tokens: torch.Tensor, caption_index: torch.Tensor):
        self.tokens = tokens
        self.caption_index = caption_index

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tokens[i], int(self.caption_index[i])


class _Task(TrainingTask):
    """Per-layer cross-entropies of token sequences after the text prefix, with caption dropout for CFG."""

    def __init__(self, gen: ARLlamaGenerator, feats: torch.Tensor | None, mask: torch.Tensor | None,
                 data: _SequenceDataset | None = None):
        self.gen = gen
        self.feats = feats  # (unique captions, text_len, E): encoded once per fit
        self.mask = mask
        self.data = data
        gen.set_grad_checkpointing(gen.config.train.grad_checkpointing)
        gen.train()

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.gen}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": [p for p in self.gen.parameters() if p.requires_grad]}

    def collate(self, items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        return {"tokens": torch.stack([t for t, _ in items]), "caption": torch.tensor([c for _, c in items])}

    def example_batch(self, batch: int, shape: list[tuple[int, int, int]]) -> dict[str, torch.Tensor]:
        """Zero tokens on the grids ``shape`` and zero caption features (one per clip)."""
        cfg = self.gen.config
        cfg.grid_shapes = [tuple(g) for g in shape]
        self.feats = torch.zeros(batch, cfg.text_len, self.gen.text_proj.in_features)
        self.mask = torch.ones(batch, cfg.text_len, dtype=torch.bool)
        return {"tokens": torch.zeros(batch, sum(math.prod(g) for g in self.gen.grid_shapes), dtype=torch.long),
                "caption": torch.arange(batch)}

    def memory_notes(self) -> tuple[int, list[str]]:
        """The frozen text encoder stays on the device in training: counted when its config is on this machine."""
        from hitvideo_bench.memory import format_count

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

    def finish(self) -> None:
        self.gen.set_grad_checkpointing(False)

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
