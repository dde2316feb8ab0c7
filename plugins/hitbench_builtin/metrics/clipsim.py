"""CLIPSIM: mean over frames and clips of the cosine similarity between the prompt and each frame.

transformers ``CLIPModel`` (openai/clip-vit-base-patch32 unless configured), loaded from the Hugging
Face cache only (``local_files_only``): a missing model makes the metric ``unavailable``. Frames are
resized (bicubic) so the short side is the model's image size, centre-cropped and normalised with
CLIP's mean and std, as ``CLIPImageProcessor`` does. Reported on the [0, 1] cosine scale: per frame
``max(cos, 0)``, i.e. torchmetrics' CLIPScore divided by 100.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from hitvideo_bench.api import (BenchMetric, ComponentConfig, WeightsUnavailable, find_weights, hf_hub_cache,
                                hf_snapshot, sha256_of, weight_file_of)

from ..weights import CLIP_REPO

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPSimConfig(ComponentConfig):
    model: str = Field(CLIP_REPO, description="Hugging Face model id of a CLIP model in the HF cache")
    batch_frames: int = Field(64, ge=1, description="frames embedded per forward pass")


def _embedding(output) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_preprocess(frames: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """``(N,3,H,W)`` in [0,1] -> short side ``size`` (bicubic), centre crop ``size``, CLIP-normalised."""
    H, W = frames.shape[-2:]
    scale = size / min(H, W)
    target = (size, math.ceil(W * scale)) if H <= W else (math.ceil(H * scale), size)
    frames = F.interpolate(frames.float(), size=target, mode="bicubic", align_corners=False).clamp(0, 1)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    frames = frames[:, :, top:top + size, left:left + size]
    mean = torch.tensor(mean, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=frames.device).view(1, 3, 1, 1)
    return (frames - mean) / std


def _find_model(name: str):
    """The snapshot folder of a CLIP model in the HF cache (registered or any other repo id)."""
    if name == CLIP_REPO:
        return find_weights("clip-vit-b32")
    folder = hf_hub_cache() / ("models--" + name.replace("/", "--"))
    snapshot = hf_snapshot(folder)
    if snapshot is None:
        raise WeightsUnavailable(f"{name} (clipsim)", f"on a machine with internet run `huggingface-cli download "
                                 f"{name}` and copy {folder.name} into {folder.parent}")
    return snapshot


class CLIPSim(BenchMetric):
    """Mean prompt-frame CLIP cosine similarity on the [0, 1] scale (higher is better)."""

    Config = CLIPSimConfig
    inputs = ("pred", "captions")
    stages = ("generation",)
    higher_is_better = True

    def __init__(self, config=None, *, model: torch.nn.Module | None = None, tokenizer=None, **kwargs):
        """``model`` and ``tokenizer`` are for tests only: stand-ins with the CLIPModel / tokenizer API."""
        super().__init__(config, **kwargs)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("frames", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        if model is not None:
            self.model, self.tokenizer = model.eval(), tokenizer
            self.model_name, self.weights_sha256 = f"stand-in (test only): {type(model).__name__}", None
        else:
            from transformers import AutoTokenizer, CLIPModel

            snapshot = _find_model(self.config.model)
            self.model = CLIPModel.from_pretrained(str(snapshot), local_files_only=True).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(snapshot), local_files_only=True)
            self.model_name = self.config.model
            self.weights_sha256 = sha256_of(weight_file_of(snapshot))
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.image_size = int(self.model.config.vision_config.image_size)

    def update(self, pred: torch.Tensor, captions: list[str]) -> None:
        B, C, T, H, W = pred.shape
        if len(captions) != B:
            raise ValueError(f"clipsim: {B} clips but {len(captions)} captions")
        device = next(self.model.parameters()).device
        with torch.no_grad():
            text = self.tokenizer(list(captions), padding=True, truncation=True, max_length=77, return_tensors="pt")
            text = {k: v.to(device) for k, v in text.items() if k in ("input_ids", "attention_mask")}
            text_emb = F.normalize(_embedding(self.model.get_text_features(**text)).double(), dim=-1)
            frames = pred.permute(0, 2, 1, 3, 4).reshape(B * T, C, H, W)
            image_emb = []
            for start in range(0, B * T, self.config.batch_frames):
                pixels = clip_preprocess(frames[start:start + self.config.batch_frames].to(device), self.image_size)
                image_emb.append(_embedding(self.model.get_image_features(pixel_values=pixels)))
            image_emb = F.normalize(torch.cat(image_emb).double(), dim=-1).view(B, T, -1)
            cosine = (image_emb * text_emb.unsqueeze(1)).sum(-1).clamp(min=0)  # (B, T)
        self.score_sum += cosine.sum().to(self.score_sum.device)
        self.frames += B * T
        self.clips += B

    def compute(self):
        return self.score_sum / self.frames

    def provenance(self) -> dict[str, Any]:
        return {"model": self.model_name, "weights_sha256": self.weights_sha256, "clips": int(self.clips),
                "frames": int(self.frames), "resolution": self.image_size,
                "resize": "short side bicubic, centre crop, CLIP mean/std",
                "scale": "[0, 1] cosine, max(cos, 0) per frame (CLIPScore / 100)",
                "averaging": "mean over frames and clips"}


__all__ = ["CLIPSim", "CLIPSimConfig", "clip_preprocess"]
