"""3D rotary position embedding for a text prefix followed by a coarse-to-fine token pyramid.

The rotary frequencies of one attention head (``head_dim / 2`` of them) are split into three
sections, one per axis ``(t, h, w)``, as in Qwen2-VL's M-RoPE; unlike M-RoPE each section gets its
own full frequency spectrum (as 2D RoPE in LlamaGen does per axis), so that even a small head keeps
both fast and slow frequencies on every axis. The module returns ``(cos, sin)`` of shape
``(B, L, head_dim)`` in the layout transformers' ``apply_rotary_pos_emb`` (``rotate_half``) expects,
so it plugs into Llama decoder layers through their ``position_embeddings`` argument.

Positions: text token ``i`` sits on the diagonal ``(i, i, i)``; the start (BOS) slot after the
text at ``(L_text, L_text, L_text)``; each video token at ``offset + (t, h, w)`` with ``offset = L_text + 1``,
where ``(t, h, w)`` is, by ``frame``:

- ``layer`` (the paper's): its coordinates in its own layer's grid, so a coarse token and the dense tokens
  it covers sit at unrelated positions;
- ``clip``: its coordinates on the common frame of the densest grid, a coarse token at the centre of the
  region it covers (``(i + 0.5) * dense / size - 0.5``, fractional), so that it and its dense tokens are
  neighbours for attention.
"""

from __future__ import annotations

import torch
from torch import nn

from hitvideo_bench.api import BadInput


def default_sections(head_dim: int) -> tuple[int, int, int]:
    """Rotary frequencies per axis ``(t, h, w)``: h and w get a third each, t the rest."""
    if head_dim % 2:
        raise BadInput(f"ar-llama: head dimension must be even for rotary embeddings, got {head_dim}")
    half = head_dim // 2
    hw = half // 3
    return (half - 2 * hw, hw, hw)


class Rotary3D(nn.Module):
    """``(3, B, L)`` positions (integer or fractional) -> rotary ``(cos, sin)``, each ``(B, L, head_dim)``."""

    def __init__(self, head_dim: int, sections: tuple[int, int, int] | list[int] | None = None,
                 theta: float = 10000.0):
        super().__init__()
        sections = tuple(sections) if sections is not None else default_sections(head_dim)
        if len(sections) != 3 or min(sections) < 1 or sum(sections) * 2 != head_dim:
            raise BadInput(f"ar-llama: rope_sections {list(sections)} must be three positive numbers summing "
                           f"to head_dim/2 = {head_dim // 2}")
        self.head_dim = head_dim
        self.sections = sections
        inv = [1.0 / (theta ** (torch.arange(n, dtype=torch.float64) / n)) for n in sections]
        axis = [torch.full((n,), a, dtype=torch.long) for a, n in enumerate(sections)]
        self.register_buffer("inv_freq", torch.cat(inv).float(), persistent=False)
        self.register_buffer("axis", torch.cat(axis), persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` only gives the dtype and device; ``position_ids`` is ``(3, B, L)`` (t, h, w)."""
        pos = position_ids.to(device=x.device, dtype=torch.float32)  # (3, B, L)
        per_freq = pos[self.axis.to(x.device)]  # (head_dim/2, B, L): each frequency reads its axis
        freqs = per_freq.permute(1, 2, 0) * self.inv_freq.to(x.device)  # (B, L, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


FRAMES = ("layer", "clip")


def video_layout(grid_shapes: list[tuple[int, int, int]], frame: str = "layer"
                 ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The coarse-to-fine video sequence of a pyramid with these per-layer grids (densest first).

    Returns ``(order, layer_ids, coords)``: the layer indices in generation order (most compressed,
    i.e. highest index, first), the layer of every sequence slot ``(N,)``, and each slot's
    ``(t, h, w)`` ``(N, 3)`` float, raster order within a layer, on the ``frame`` of the module docstring.
    """
    if frame not in FRAMES:
        raise BadInput(f"ar-llama: rope_frame {frame!r} is not one of {', '.join(FRAMES)}")
    order = list(range(len(grid_shapes) - 1, -1, -1))
    dense = torch.tensor(grid_shapes[0], dtype=torch.float64)
    layer_ids, coords = [], []
    for layer in order:
        t, h, w = grid_shapes[layer]
        grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        grid = grid.reshape(-1, 3).double()
        if frame == "clip":
            grid = (grid + 0.5) * dense / torch.tensor((t, h, w), dtype=torch.float64) - 0.5
        coords.append(grid.float())
        layer_ids.append(torch.full((t * h * w,), layer, dtype=torch.long))
    return order, torch.cat(layer_ids), torch.cat(coords)


def sequence_positions(text_len: int, coords: torch.Tensor) -> torch.Tensor:
    """``(3, text_len + 1 + N)`` float positions: text diagonal, the start slot, then video after the offset."""
    text = torch.arange(text_len + 1, dtype=torch.float32).unsqueeze(0).expand(3, -1)  # text and start slot
    video = coords.t().float() + (text_len + 1)
    return torch.cat([text, video], dim=1)
