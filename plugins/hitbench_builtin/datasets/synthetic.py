"""synthetic-shapes: captioned clips of coloured shapes moving over textured backgrounds, made from a seed.

No files: every clip is rendered on the fly from ``(seed, split, index)``, deterministically. The data
carries what the paper relies on: strong redundancy between frames (static backgrounds, some static
shapes) and content at several scales (a large shape, a gradient and a fine texture in the background).

Captions say what is shown, e.g. "a small red circle moves left on a dark blue background"; the
attribute vocabulary in :data:`ATTRIBUTES` is the one source of truth for rendering, captions,
:func:`parse_caption` and the probe metrics.
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import torch
from pydantic import Field

from hitvideo_bench.api import BadInput, ComponentConfig, VideoDataset

COLOURS = {"red": (0.90, 0.15, 0.15), "green": (0.15, 0.80, 0.25), "blue": (0.20, 0.40, 0.95),
           "yellow": (0.95, 0.85, 0.20), "white": (0.95, 0.95, 0.95), "purple": (0.65, 0.25, 0.85)}
BACKGROUNDS = {"dark blue": (0.08, 0.10, 0.32), "black": (0.03, 0.03, 0.03), "grey": (0.42, 0.42, 0.42),
               "dark green": (0.05, 0.26, 0.10)}
SIZES = {"small": 0.13, "large": 0.24}  # shape radius as a share of the frame's smaller side
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "static")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES),
                                          "motion": MOTIONS, "background": tuple(BACKGROUNDS)}
_DIRECTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "static": (0, 0)}
_SPLITS = ("train", "val", "test")


class SyntheticShapesConfig(ComponentConfig):
    frames: int = Field(16, ge=1)
    height: int = Field(64, ge=8)
    width: int = Field(64, ge=8)
    fps: float = Field(8.0, gt=0)
    train_clips: int = Field(256, ge=1)
    val_clips: int = Field(128, ge=1, description="128 at tiny: enough generated clips for claim intervals")
    test_clips: int = Field(32, ge=1)
    seed: int = 0
    static_fraction: float = Field(0.2, ge=0, le=1, description="share of clips whose shape stays still")
    travel: float = Field(0.45, gt=0, le=0.7, description="distance a moving shape covers, as a share of the frame")
    texture: float = Field(0.06, ge=0, le=0.3, description="amplitude of the static background texture")
    presets = {
        "tiny": {},
        "small": {"frames": 32, "height": 128, "width": 128, "train_clips": 1024, "val_clips": 64, "test_clips": 64},
        "paper": {"frames": 64, "height": 256, "width": 256, "train_clips": 4096, "val_clips": 256,
                  "test_clips": 256},
    }


def caption_of(attrs: dict[str, str]) -> str:
    """The caption that says what a clip with ``attrs`` shows."""
    action = "stays still" if attrs["motion"] == "static" else f"moves {attrs['motion']}"
    return f"a {attrs['size']} {attrs['colour']} {attrs['shape']} {action} on a {attrs['background']} background"


_CAPTION = re.compile(
    r"^a (?P<size>\w+) (?P<colour>\w+) (?P<shape>\w+) (?:stays (?P<still>still)|moves (?P<motion>\w+)) "
    r"on an? (?P<background>[\w ]+?) background$")


def parse_caption(caption: str) -> dict[str, str]:
    """Attributes a caption asks for (inverse of :func:`caption_of`); unknown wording is an error."""
    match = _CAPTION.match(caption.strip().lower())
    if not match:
        raise BadInput(f"synthetic-shapes: cannot parse caption {caption!r}")
    attrs = {k: match.group(k) for k in ("size", "colour", "shape", "background")}
    attrs["motion"] = "static" if match.group("still") else match.group("motion")
    for name, value in attrs.items():
        if value not in ATTRIBUTES[name]:
            raise BadInput(f"synthetic-shapes: caption {caption!r}: unknown {name} {value!r}; "
                           f"allowed: {', '.join(ATTRIBUTES[name])}")
    return attrs


class SyntheticShapes(VideoDataset):
    """Deterministic procedural clips; disjoint splits (each split draws from its own random stream)."""

    Config = SyntheticShapesConfig
    splits = _SPLITS

    #: rendered clips kept in memory, up to this many bytes per dataset: a tiny tokenizer's training reads each of
    #: its 256 clips about 50 times, and rendering one takes about 1 ms (some 13 s of a 4- to 7-minute training)
    cache_bytes = 1 << 30

    def __init__(self, config: SyntheticShapesConfig, split: str = "train"):
        super().__init__(config, split)
        self.count = getattr(config, f"{split}_clips")
        self._rendered: dict[int, torch.Tensor] = {}
        ys = torch.arange(config.height, dtype=torch.float32) + 0.5
        xs = torch.arange(config.width, dtype=torch.float32) + 0.5
        self._yy, self._xx = torch.meshgrid(ys, xs, indexing="ij")

    @property
    def clip_shape(self) -> tuple[int, int, int]:
        return (self.config.frames, self.config.height, self.config.width)

    def __len__(self) -> int:
        return self.count

    def identity(self) -> dict[str, Any]:
        """Config and split, without the sizes of the other splits: a clip depends only on its own split, so a
        tokenizer trained on ``train`` is reused when only ``val_clips`` changes."""
        others = {f"{s}_clips" for s in ("train", "val", "test") if s != self.split}
        return {**super().identity(), "config": self.config.model_dump(exclude=others)}

    def _generator(self, index: int) -> torch.Generator:
        stream = zlib.crc32(f"synthetic-shapes/{self.split}/{self.config.seed}".encode())
        return torch.Generator().manual_seed(stream * 1_000_003 + index)

    def sample_attrs(self, index: int) -> dict:
        """Attributes and layout of clip ``index`` (cheap: no rendering)."""
        g = self._generator(index)

        def pick(values):
            return values[int(torch.randint(len(values), (1,), generator=g))]

        attrs = {"shape": pick(SHAPES), "colour": pick(tuple(COLOURS)), "size": pick(tuple(SIZES)),
                 "background": pick(tuple(BACKGROUNDS))}
        static = float(torch.rand((), generator=g)) < self.config.static_fraction
        attrs["motion"] = "static" if static else pick(MOTIONS[:4])
        u = torch.rand(4, generator=g)
        layout = {"u": u.tolist(), "phase": float(torch.rand((), generator=g)) * 2 * math.pi,
                  "angle": float(torch.rand((), generator=g)) * math.pi}
        return {"attrs": attrs, "layout": layout}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.count:
            raise IndexError(f"synthetic-shapes[{self.split}] has {self.count} clips, asked for {index}")
        drawn = self.sample_attrs(index)
        attrs = drawn["attrs"]
        video = self._rendered.get(index)
        if video is None:
            video = self.render(attrs, drawn["layout"])
            if (len(self._rendered) + 1) * video.nbytes <= self.cache_bytes:
                self._rendered[index] = video
        return {"video": video.clone(), "caption": caption_of(attrs), "attrs": dict(attrs)}

    # ----------------------------------------------------------------------------------- rendering

    def _centres(self, attrs: dict, u: list[float], radius: float) -> torch.Tensor:
        """Shape centre per frame ``(T, 2)`` (x, y) in pixels; moving shapes stay inside the frame."""
        cfg = self.config
        T, H, W = self.clip_shape
        dx, dy = _DIRECTION[attrs["motion"]]
        travel_x, travel_y = cfg.travel * W * abs(dx), cfg.travel * H * abs(dy)
        lo_x, hi_x = radius, W - radius - travel_x
        lo_y, hi_y = radius, H - radius - travel_y
        x0 = lo_x + u[0] * max(hi_x - lo_x, 0.0)
        y0 = lo_y + u[1] * max(hi_y - lo_y, 0.0)
        if dx < 0:
            x0 += travel_x
        if dy < 0:
            y0 += travel_y
        t = torch.linspace(0, 1, T) if T > 1 else torch.zeros(1)
        return torch.stack([x0 + dx * travel_x * t, y0 + dy * travel_y * t], dim=1)

    def _coverage(self, shape: str, centres: torch.Tensor, radius: float) -> torch.Tensor:
        """Anti-aliased coverage ``(T, H, W)`` in [0, 1] from a signed distance (1-pixel soft edge)."""
        px = self._xx.unsqueeze(0) - centres[:, 0].view(-1, 1, 1)
        py = self._yy.unsqueeze(0) - centres[:, 1].view(-1, 1, 1)
        if shape == "circle":
            inside = radius - torch.sqrt(px**2 + py**2)
        elif shape == "square":
            inside = radius * 0.85 - torch.maximum(px.abs(), py.abs())
        else:  # equilateral triangle pointing up: distance to the nearest of its three edges
            edges = [(0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)]
            inside = torch.stack([-(px * nx + py * ny) + radius * 0.5 for nx, ny in edges]).min(0).values
        return (inside + 0.5).clamp(0, 1)

    def _background(self, name: str, layout: dict) -> torch.Tensor:
        """Static background ``(3, H, W)``: base colour, soft gradient, fine sinusoidal texture."""
        H, W = self.config.height, self.config.width
        base = torch.tensor(BACKGROUNDS[name]).view(3, 1, 1)
        gradient = 0.12 * (self._yy / H - 0.5)
        angle, phase = layout["angle"], layout["phase"]
        freq = 2 * math.pi / max(4.0, min(H, W) / 8)
        texture = self.config.texture * torch.sin(freq * (self._xx * math.cos(angle) + self._yy * math.sin(angle))
                                                  + phase)
        return (base + gradient + texture).clamp(0, 1)

    def render(self, attrs: dict, layout: dict) -> torch.Tensor:
        """The clip ``(3, T, H, W)`` float32 in [0, 1]."""
        radius = SIZES[attrs["size"]] * min(self.config.height, self.config.width)
        centres = self._centres(attrs, layout["u"], radius)
        alpha = self._coverage(attrs["shape"], centres, radius).unsqueeze(0)  # (1, T, H, W)
        background = self._background(attrs["background"], layout).unsqueeze(1)  # (3, 1, H, W)
        colour = torch.tensor(COLOURS[attrs["colour"]]).view(3, 1, 1, 1)
        return (background * (1 - alpha) + colour * alpha).float().contiguous()
