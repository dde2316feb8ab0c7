"""The text prefix of the ar-llama sequence: frozen-encoder features, their projection, and the learned
unconditional embedding that classifier-free guidance samples with.

The frozen encoder (:mod:`..text`) is kept out of the module tree (not trained, not checkpointed) and loaded
on first use; its features are memoised per prompt, so repeated sampling encodes a prompt once.
"""

from __future__ import annotations

import torch

from ..text import TextEncoder, shared_text_encoder


class TextConditioning:
    """Mixin of :class:`~.model.ARLlamaGenerator`: reads ``text``, ``text_proj``, ``uncond``, ``_text_cache`` and
    ``config.text_encoder`` / ``config.text_len``."""

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
