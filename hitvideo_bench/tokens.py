"""TokenPyramid: the discrete output of a (hierarchical) video tokenizer.

Layer 0 is the densest layer (the paper's indexing); :meth:`TokenPyramid.coarse_to_fine` gives
the generation order, coarsest first. Dynamic encoding adds a boolean keep-mask per layer
(``True`` = the token is transmitted; masked positions hold no information).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensor


def _symbolic(tensor: torch.Tensor) -> bool:
    """A tensor without values (meta, or fake as in the memory estimate): nothing to range-check."""
    return tensor.is_meta or isinstance(tensor, FakeTensor)


@dataclass
class TokenPyramid:
    """Per-layer token grids ``LongTensor (B, t_l, h_l, w_l)`` and each layer's codebook size."""

    layers: list[torch.Tensor]
    codebook_sizes: list[int]
    masks: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.codebook_sizes):
            raise ValueError(
                f"TokenPyramid: {len(self.layers)} layers but {len(self.codebook_sizes)} codebook sizes"
            )
        if not self.masks:
            self.masks = [None] * len(self.layers)
        if len(self.masks) != len(self.layers):
            raise ValueError("TokenPyramid: one mask (or None) per layer")
        for i, (tok, size) in enumerate(zip(self.layers, self.codebook_sizes)):
            if tok.dim() != 4:
                raise ValueError(f"TokenPyramid layer {i}: expected (B, t, h, w), got {tuple(tok.shape)}")
            if tok.numel() and not _symbolic(tok) and (int(tok.min()) < 0 or int(tok.max()) >= size):
                raise ValueError(f"TokenPyramid layer {i}: token outside codebook of {size}")
        for i, (tok, mask) in enumerate(zip(self.layers, self.masks)):
            if mask is not None and (mask.shape != tok.shape or mask.dtype != torch.bool):
                raise ValueError(f"TokenPyramid layer {i}: keep-mask must be bool of shape {tuple(tok.shape)}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def batch_size(self) -> int:
        return self.layers[0].shape[0]

    @property
    def grid_shapes(self) -> list[tuple[int, int, int]]:
        """Per-layer ``(t, h, w)``, densest first."""
        return [tuple(t.shape[1:]) for t in self.layers]

    def coarse_to_fine(self) -> list[int]:
        """Layer indices in generation order: the most compressed (highest index) first."""
        return list(range(self.num_layers - 1, -1, -1))

    def tokens_per_layer(self) -> list[torch.Tensor]:
        """Tokens actually transmitted per layer and clip, ``(B,)`` each (masked ones excluded)."""
        out = []
        for tok, mask in zip(self.layers, self.masks):
            if mask is None:
                out.append(torch.full((tok.shape[0],), tok[0].numel(), dtype=torch.float64))
            else:
                out.append(mask.flatten(1).sum(1).double())
        return out

    def nominal_bits(self) -> torch.Tensor:
        """Bits per clip, ``(B,)`` float64: kept tokens x log2(codebook), summed over layers.

        Side information for masks is not included here; the dynamic-encoding tokenizer adds it.
        """
        total = torch.zeros(self.batch_size, dtype=torch.float64)
        for n, size in zip(self.tokens_per_layer(), self.codebook_sizes):
            total += n * math.log2(size)
        return total

    def to(self, device: torch.device | str) -> TokenPyramid:
        return TokenPyramid(
            [t.to(device) for t in self.layers],
            list(self.codebook_sizes),
            [m.to(device) if m is not None else None for m in self.masks],
        )

    def select(self, index: slice | torch.Tensor | list[int]) -> TokenPyramid:
        """The pyramid of a subset of the batch."""
        return TokenPyramid(
            [t[index] for t in self.layers],
            list(self.codebook_sizes),
            [m[index] if m is not None else None for m in self.masks],
        )

    @staticmethod
    def cat(pyramids: list[TokenPyramid]) -> TokenPyramid:
        """Concatenate pyramids of the same structure along the batch."""
        first = pyramids[0]
        masks = []
        for i in range(first.num_layers):
            ms = [p.masks[i] for p in pyramids]
            if all(m is None for m in ms):
                masks.append(None)
            else:
                masks.append(torch.cat([m if m is not None else torch.ones_like(p.layers[i], dtype=torch.bool)
                                        for m, p in zip(ms, pyramids)]))
        return TokenPyramid([torch.cat([p.layers[i] for p in pyramids]) for i in range(first.num_layers)],
                            list(first.codebook_sizes), masks)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict (for safetensors)."""
        out = {"codebook_sizes": torch.tensor(self.codebook_sizes, dtype=torch.int64)}
        for i, (tok, mask) in enumerate(zip(self.layers, self.masks)):
            out[f"layer{i}"] = tok.contiguous()
            if mask is not None:
                out[f"mask{i}"] = mask.contiguous()
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TokenPyramid:
        sizes = [int(s) for s in state["codebook_sizes"].tolist()]
        layers = [state[f"layer{i}"].long() for i in range(len(sizes))]
        masks = [state[f"mask{i}"].bool() if f"mask{i}" in state else None for i in range(len(sizes))]
        return cls(layers, sizes, masks)

    def save(self, path: str | Path) -> None:
        """Save atomically as safetensors."""
        from safetensors.torch import save_file

        from .io import atomic_path

        with atomic_path(path) as tmp:
            save_file({k: v.cpu() for k, v in self.state_dict().items()}, str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> TokenPyramid:
        from safetensors.torch import load_file

        return cls.from_state_dict(load_file(str(path)))
