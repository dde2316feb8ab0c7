"""The pretrained files the built-in metrics use, declared through ``hitbench_register_weights`` as any
plugin's are (the core only gathers them: :mod:`hitvideo_bench.weights`).

Where the metrics look:
- torchvision backbones (LPIPS) and the StyleGAN-V I3D (FVD): ``<torch hub dir>/checkpoints/<file>``,
  the standard torch hub cache (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), so a file that
  torchvision downloaded on another run is found too.
- the LPIPS linear calibration layers ship inside the ``lpips`` pip package (``lpips/weights/v0.1``).
- CLIP: the Hugging Face hub cache (``$HF_HUB_CACHE``), ``models--openai--clip-vit-base-patch32``;
  the snapshot named by ``refs/main``, else any complete snapshot.

Checksums: torchvision publishes the first 8 hex digits of the file's sha256 in its file name (what
``torch.hub`` verifies); StyleGAN-V publishes none for ``i3d_torchscript.pt``; Hugging Face shows a
per-file sha256 on the hub but it is not pinned here. Where no checksum is published, the sha256 of
the file actually used is recorded in each metric value's provenance instead.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

from hitvideo_bench.api import BadInput, WeightInfo, hf_hub_cache, read_hf_config, torch_checkpoints

CLIP_REPO = "openai/clip-vit-base-patch32"
CLIP_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt")


def lpips_package_dir() -> Path:
    """Where the ``lpips`` package keeps its linear calibration layers."""
    spec = importlib.util.find_spec("lpips")
    base = Path(spec.origin).parent if spec and spec.origin else Path("lpips")
    return base / "weights" / "v0.1"


def check_torchscript(path: Path) -> None:
    """StyleGAN-V publishes no checksum for the I3D: at least check it is a TorchScript (zip) archive."""
    if not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: not a TorchScript archive (i3d_torchscript.pt is a zip file)")


def check_clip_b32(folder: Path) -> None:
    """A model folder is CLIP ViT-B/32 by its config (CLIP's defaults where a field is absent)."""
    data = read_hf_config(folder)
    vision = data.get("vision_config") or {}
    if not (data.get("model_type") == "clip" and vision.get("patch_size", 32) == 32
            and vision.get("hidden_size", 768) == 768):
        raise BadInput(f"{folder / 'config.json'}: not a CLIP ViT-B/32 config (model_type "
                       f"{data.get('model_type')!r}, vision patch_size {vision.get('patch_size')!r}, "
                       f"hidden_size {vision.get('hidden_size')!r})")


def builtin_weights() -> list[WeightInfo]:
    """Every weight the built-in metrics can use (paths resolved from the current environment)."""
    ckpt = torch_checkpoints()
    lp = lpips_package_dir()
    lin_url = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
    return [
        WeightInfo("alexnet", "lpips (net: alex)", ckpt / "alexnet-owt-7be5be79.pth",
                   "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
                   checksum_note="torchvision AlexNet_Weights.IMAGENET1K_V1; prefix from the file name",
                   size="233 MB"),
        WeightInfo("vgg16", "lpips (net: vgg)", ckpt / "vgg16-397923af.pth",
                   "https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af",
                   checksum_note="torchvision VGG16_Weights.IMAGENET1K_V1; prefix from the file name",
                   size="528 MB"),
        WeightInfo("lpips-lin-alex", "lpips (net: alex)", lp / "alex.pth", lin_url + "alex.pth",
                   checksum_note="ships in the lpips pip package", kind="package", package="lpips", size="6 KB"),
        WeightInfo("lpips-lin-vgg", "lpips (net: vgg)", lp / "vgg.pth", lin_url + "vgg.pth",
                   checksum_note="ships in the lpips pip package", kind="package", package="lpips", size="7 KB"),
        WeightInfo("i3d", "fvd", ckpt / "i3d_torchscript.pt",
                   "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
                   checksum_note="StyleGAN-V publishes no checksum; the sha256 used is recorded with each FVD",
                   size="~50 MB", check=check_torchscript),
        WeightInfo("clip-vit-b32", "clipsim", hf_hub_cache() / "models--openai--clip-vit-base-patch32",
                   f"https://huggingface.co/{CLIP_REPO}",
                   checksum_note="per-file sha256 shown on the hub, not pinned; the weight file's sha256 is "
                                 "recorded with each CLIPSIM", kind="hf-model", file_name=CLIP_REPO, size="605 MB",
                   aliases=(CLIP_REPO,), files=CLIP_FILES, check=check_clip_b32),
    ]


__all__ = ["CLIP_FILES", "CLIP_REPO", "builtin_weights", "check_clip_b32", "check_torchscript", "lpips_package_dir"]
