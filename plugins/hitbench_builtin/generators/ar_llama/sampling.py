"""Sampling from ar-llama: autoregressive decoding of the coarse-to-fine sequence, with a KV-cache,
classifier-free guidance and the usual filters (temperature, top-k, top-p).

Guidance runs the conditional and the unconditional (learned-embedding) streams as one batch of 2B and mixes
``uncond + cfg_scale * (cond - uncond)``. Tokens are drawn from a ``torch.Generator`` seeded by ``seed`` on the
model's device, so a seed gives the same pyramid every time; without the cache the whole prefix is recomputed
at each step (for benchmarks and the cache-equivalence test).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from hitvideo_bench.api import BadInput, TokenPyramid

from ..rope3d import sequence_positions


class Sampling:
    """Mixin of :class:`~.model.ARLlamaGenerator`: its ``sample`` (the :class:`Generator` contract) and ``generate``."""

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
