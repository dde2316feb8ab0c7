"""Sample sheets of generated videos: a PNG grid of frames under their prompts and a GIF per sample, for people to
judge the samples (apart from the result plots: it reads videos, not the tidy frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_path

if TYPE_CHECKING:
    import torch


def save_sample_sheet(videos: torch.Tensor, prompts: list[str], folder: Path, fps: float = 8.0,
                      frames_shown: int = 8, min_frame_size: int = 128, real: torch.Tensor | None = None) -> list[Path]:
    """A PNG grid (a prompt line over a row of frames, per sample; with ``real``, the real clip of the same caption
    to the right of the generated one, after a gap) and a GIF per sample, for people to judge the samples.

    Frames are pasted with PIL, enlarged by a whole factor (nearest) to at least ``min_frame_size`` pixels
    high; a matplotlib axis per frame took about 9 s for 32 tiny samples.
    """
    import torch
    from PIL import Image, ImageDraw

    from ..video import write_video

    n, _, T, H, W = videos.shape
    picks = sorted({round(i * (T - 1) / max(frames_shown - 1, 1)) for i in range(min(frames_shown, T))})
    zoom = max(1, -(-min_frame_size // H))
    fh, fw, pad, caption = H * zoom, W * zoom, 2, 14
    gap = 4 * pad if real is not None else 0
    rows = [videos] if real is None else [videos, real]
    frames = [(v[:, :, picks].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
              for v in rows]
    width = len(picks) * (fw + pad)
    sheet = Image.new("RGB", (pad + len(rows) * width + gap, pad + n * (caption + fh + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        top = pad + i * (caption + fh + pad)
        label = prompts[i][:100] + ("   (generated | real clip of this caption)" if real is not None and i == 0 else "")
        draw.text((pad, top), label, fill="black")
        for r, clip_frames in enumerate(frames):
            for j in range(len(picks)):
                frame = Image.fromarray(clip_frames[i, j]).resize((fw, fh), Image.Resampling.NEAREST)
                sheet.paste(frame, (pad + r * (width + gap) + j * (fw + pad), top + caption))
    with atomic_path(folder / "sample_sheet.png") as tmp:
        sheet.save(tmp, format="PNG")
    files = [folder / "sample_sheet.png"]
    for i in range(n):
        path = folder / f"sample_{i:03d}.gif"
        write_video(path, videos[i], fps)
        files.append(path)
    return files
