"""The ar-llama generator's settings: transformer size, text prefix, dropouts, loss weights, training method.

Kept apart from the network so that a config (and its presets) can be read, validated and sized without
building a model. The token grids and codebooks it generates are not settings: they come from the tokenizer
and the clip shape the generator is built for (``Generator.__init__``), so they are not part of its identity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from transformers import LlamaConfig

from hitvideo_bench.api import BadInput, ComponentConfig, TrainConfig


def _train_default():
    # tiny: ~330 tokens per clip (the tiny hitvideo pyramid), about 0.38 s per step on one CPU core. 1200 steps:
    # the knee of recipes/generation_budget.yaml's curve on the tiny tokenizers (attribute accuracy over
    # single-layer tokens 0.43 -> 0.54 from 600 to 1200 steps, 0.55 at 2400; over hitvideo tokens 0.57, 0.59,
    # 0.61); see docs/ablations.md
    return TrainConfig(steps=1200, batch_size=8, lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_steps=20)


class ARLlamaConfig(ComponentConfig):
    """Transformer size, text prefix, dropouts, loss weights, training."""

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
    train: TrainConfig = Field(default_factory=_train_default)

    presets = {
        "tiny": {},
        "small": {"hidden_size": 256, "num_layers": 4, "num_heads": 8, "text_len": 48,
                  "train": {"steps": 1500, "batch_size": 16, "lr": 6e-4}},
        "paper": {"hidden_size": 3200, "num_layers": 24, "num_heads": 32, "text_len": 120,
                  "text_encoder": "flan-t5-xl",
                  "train": {"steps": 100000, "batch_size": 256, "lr": 1e-4, "weight_decay": 0.05,
                            "warmup_steps": 2000, "precision": "bf16"}},
    }

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
