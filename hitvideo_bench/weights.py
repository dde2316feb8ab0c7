"""Pretrained weights the learned metrics need: where they come from, where the code looks, checksums.

A run never touches the network. :func:`find` returns the path of a weight that is on disk or raises
:class:`WeightsUnavailable` with a hint (``hitbench weights --download NAME``, or the URL and
``hitbench weights --import FILE`` for an offline machine). :func:`import_file` takes a file (or, for a
Hugging Face model, a folder) downloaded elsewhere, identifies it, verifies its checksum where one is
published and copies it atomically to where :func:`find` looks. :func:`download` is the one thing that
goes online, and only when a user asks (``hitbench weights --download``): see :mod:`.download`.
:func:`format_table` is what ``hitbench weights`` prints.

Where the code looks:
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

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput, WeightsUnavailable

IMPORT_HINT = ("then `hitbench weights --import FILE` (or copy it to {path}); `hitbench weights` lists all")


@dataclass(frozen=True)
class WeightInfo:
    """One pretrained weight: what uses it, where the code looks, where it comes from, its checksum."""

    name: str
    used_by: str
    path: Path  # file (or, for kind "hf-model", the repo folder in the HF cache)
    url: str
    sha256: str | None = None  # full published sha256; None where none is published
    sha256_prefix: str | None = None  # torchvision's published 8-hex-digit prefix
    checksum_note: str = ""
    kind: str = "file"  # "file" | "hf-model" | "package"
    file_name: str = ""
    size: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    files: tuple[str, ...] = ()  # hf-model: the files of the model folder (besides one of WEIGHT_FILES)

    @property
    def checksum(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        return "none published"

    def hint(self) -> str:
        """How to get this weight onto an offline machine."""
        if self.kind == "package":
            return f"reinstall the lpips package (`pip install lpips`); expected {self.path}"
        online = f"run `hitbench weights --download {self.name}` on a connected machine; offline, "
        if self.kind == "hf-model":
            return (online + f"run `huggingface-cli download {self.url.rsplit('.co/', 1)[-1]}` elsewhere "
                    f"and copy the folder {self.path.name} into {self.path.parent}, or "
                    f"`hitbench weights --import FOLDER` with a folder holding config.json, the weights and "
                    f"tokenizer files ({self.url})")
        return online + f"download {self.url} " + IMPORT_HINT.format(path=self.path)


def torch_checkpoints() -> Path:
    """The torch hub checkpoint folder (where torchvision and torch.hub keep downloaded weights)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder (honours ``HF_HOME`` / ``HF_HUB_CACHE`` as set at call time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _lpips_package_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    base = Path(spec.origin).parent if spec and spec.origin else Path("lpips")
    return base / "weights" / "v0.1"


CLIP_REPO = "openai/clip-vit-base-patch32"
CLIP_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt")


def registry() -> dict[str, WeightInfo]:
    """Every weight the built-in metrics can use, keyed by name (paths resolved from the current env)."""
    ckpt = torch_checkpoints()
    lp = _lpips_package_dir()
    infos = [
        WeightInfo("alexnet", "lpips (net: alex)", ckpt / "alexnet-owt-7be5be79.pth",
                   "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
                   checksum_note="torchvision AlexNet_Weights.IMAGENET1K_V1; prefix from the file name",
                   file_name="alexnet-owt-7be5be79.pth", size="233 MB"),
        WeightInfo("vgg16", "lpips (net: vgg)", ckpt / "vgg16-397923af.pth",
                   "https://download.pytorch.org/models/vgg16-397923af.pth", sha256_prefix="397923af",
                   checksum_note="torchvision VGG16_Weights.IMAGENET1K_V1; prefix from the file name",
                   file_name="vgg16-397923af.pth", size="528 MB"),
        WeightInfo("lpips-lin-alex", "lpips (net: alex)", lp / "alex.pth",
                   "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
                   checksum_note="ships in the lpips pip package", kind="package", file_name="alex.pth",
                   size="6 KB"),
        WeightInfo("lpips-lin-vgg", "lpips (net: vgg)", lp / "vgg.pth",
                   "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
                   checksum_note="ships in the lpips pip package", kind="package", file_name="vgg.pth", size="7 KB"),
        WeightInfo("i3d", "fvd", ckpt / "i3d_torchscript.pt",
                   "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
                   checksum_note="StyleGAN-V publishes no checksum; the sha256 used is recorded with each FVD",
                   file_name="i3d_torchscript.pt", size="~50 MB"),
        WeightInfo("clip-vit-b32", "clipsim", hf_hub_cache() / "models--openai--clip-vit-base-patch32",
                   f"https://huggingface.co/{CLIP_REPO}",
                   checksum_note="per-file sha256 shown on the hub, not pinned; the weight file's sha256 is "
                                 "recorded with each CLIPSIM", kind="hf-model", file_name=CLIP_REPO, size="605 MB",
                   aliases=(CLIP_REPO,), files=CLIP_FILES),
    ]
    return {info.name: info for info in infos}


def info(name: str) -> WeightInfo:
    """The registry entry ``name`` (or an alias such as the HF repo id)."""
    reg = registry()
    for entry in reg.values():
        if name == entry.name or name in entry.aliases:
            return entry
    from .errors import did_you_mean

    raise BadInput(f"unknown weight {name!r}.{did_you_mean(name, reg)}")


# ------------------------------------------------------------------------------------------- finding


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _complete_hf_snapshot(folder: Path) -> bool:
    """A model folder with a config, a weight file and a tokenizer."""
    has_tokenizer = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    return ((folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)
            and has_tokenizer)


def hf_snapshot(repo_folder: Path) -> Path | None:
    """The usable snapshot of a HF cache repo folder: the one ``refs/main`` names, else any complete one."""
    snapshots = repo_folder / "snapshots"
    ref = repo_folder / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text().strip()
        if _complete_hf_snapshot(named):
            return named
    if snapshots.is_dir():
        for folder in sorted(snapshots.iterdir()):
            if _complete_hf_snapshot(folder):
                return folder
    return None


def find(name: str) -> Path:
    """Path of weight ``name`` on disk (a file, or a model folder for HF models); never downloads.

    Raises :class:`WeightsUnavailable` with a hint saying how to get it.
    """
    entry = info(name)
    if entry.kind == "hf-model":
        snapshot = hf_snapshot(entry.path)
        if snapshot is None:
            raise WeightsUnavailable(f"{entry.name} ({entry.used_by})", entry.hint())
        return snapshot
    if not entry.path.is_file():
        raise WeightsUnavailable(f"{entry.name} ({entry.used_by})", entry.hint())
    return entry.path


def is_present(name: str) -> bool:
    try:
        find(name)
        return True
    except WeightsUnavailable:
        return False


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file (memoised by path, size and mtime: large weights are hashed once per process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def weight_file_of(path: Path) -> Path:
    """The weight file itself (for an HF model folder: its safetensors / bin file)."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    return path


def format_table() -> str:
    """The ``hitbench weights`` listing: one block per weight with status, path, source and checksum."""
    lines = ["Pretrained weights (never downloaded at run time; missing ones make their metric `unavailable`):", ""]
    for entry in registry().values():
        try:
            where, status = find(entry.name), "present"
        except WeightsUnavailable:
            where, status = entry.path, "MISSING"
        lines += [f"{entry.name:<15} {status:<8} used by {entry.used_by} ({entry.size})",
                  f"    path:     {where}",
                  f"    source:   {entry.url}",
                  f"    checksum: {entry.checksum}" + (f" ({entry.checksum_note})" if entry.checksum_note else "")]
    lines += ["", "Download the missing ones (connected machine): hitbench weights --download [NAME ...]",
              "Import a file downloaded elsewhere: hitbench weights --import FILE"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- importing


def _identify(path: Path) -> WeightInfo:
    """Which registered weight a file (by name) or model folder (by its config) is."""
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise BadInput(f"{path}: a folder to import must be a Hugging Face model folder with config.json")
        try:
            data = json.loads(config.read_text())
        except json.JSONDecodeError as exc:
            raise BadInput(f"{config}: not valid JSON ({exc})") from exc
        vision = data.get("vision_config") or {}
        if (data.get("model_type") == "clip" and vision.get("patch_size", 32) == 32
                and vision.get("hidden_size", 768) == 768):
            return info("clip-vit-b32")
        raise BadInput(f"{config}: not a CLIP ViT-B/32 config (model_type {data.get('model_type')!r}, "
                       f"vision patch_size {vision.get('patch_size')!r}, hidden_size {vision.get('hidden_size')!r})")
    by_name = {e.file_name: e for e in registry().values() if e.kind == "file"}
    entry = by_name.get(path.name)
    if entry is None:
        # a renamed download: recognise it by the published checksum prefix
        digest = sha256_of(path)
        for candidate in by_name.values():
            if candidate.sha256 == digest or (candidate.sha256_prefix and digest.startswith(candidate.sha256_prefix)):
                return candidate
        raise BadInput(f"{path}: unknown weight file name {path.name!r} (sha256 {digest} matches no published "
                       f"checksum); expected one of: {', '.join(sorted(by_name))}, or a CLIP model folder")
    return entry


def checksum_problem(digest: str, entry: WeightInfo) -> str | None:
    """Why a file with sha256 ``digest`` is not ``entry`` (None when it matches or nothing is published)."""
    if entry.sha256 and digest != entry.sha256:
        return f"wrong checksum for {entry.name}: expected sha256 {entry.sha256}, got {digest}"
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        return (f"wrong checksum for {entry.name}: expected sha256 starting {entry.sha256_prefix} "
                f"(published in the file name), got {digest}")
    return None


def _verify(path: Path, entry: WeightInfo) -> str:
    """sha256 of ``path``; :class:`BadInput` naming file, expected and actual hash when it does not match."""
    digest = sha256_of(path)
    problem = checksum_problem(digest, entry)
    if problem:
        raise BadInput(f"{path}: {problem}")
    return digest


def check_loadable(path: Path, entry: WeightInfo) -> None:
    """For weights without a published checksum: at least check the file is what it claims to be."""
    import zipfile

    if entry.name == "i3d" and not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: not a TorchScript archive (i3d_torchscript.pt is a zip file); "
                       f"download it again from {entry.url}")


def _atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def import_hf_folder(source: Path, entry: WeightInfo) -> Path:
    """Copy a model folder into the HF cache layout (``snapshots/<rev>/``, ``refs/main``) atomically."""
    if not _complete_hf_snapshot(source):
        raise BadInput(f"{source}: incomplete model folder: needs config.json, one of {', '.join(WEIGHT_FILES)} "
                       f"and tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    revision = "imported-" + sha256_of(weight_file_of(source))[:16]
    snapshots = entry.path / "snapshots"
    target = snapshots / revision
    if not target.exists():
        snapshots.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=snapshots, prefix=".import-"))
        try:
            for item in source.iterdir():
                if item.is_file():
                    shutil.copyfile(item, tmp / item.name)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    ref = entry.path / "refs" / "main"
    if not (ref.is_file() and _complete_hf_snapshot(snapshots / ref.read_text().strip())):
        ref.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_ref = tempfile.mkstemp(dir=ref.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write(revision)
        os.replace(tmp_ref, ref)
    return target


def import_file(path: str | Path) -> WeightInfo:
    """Identify a downloaded weight file (or CLIP folder), verify it, and put it where :func:`find` looks.

    Returns the registry entry with ``path`` set to where it now lives. A wrong checksum raises
    :class:`BadInput` naming the file, the expected and the actual hash; nothing is copied then.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise BadInput(f"{source}: no such file or folder")
    entry = _identify(source)
    if entry.kind == "package":
        raise BadInput(f"{source}: {entry.name} ships with the lpips package; {entry.hint()}")
    if entry.kind == "hf-model":
        target = import_hf_folder(source, entry)
        return dataclasses.replace(entry, path=target)
    _verify(source, entry)
    check_loadable(source, entry)
    if not (entry.path.exists() and entry.path.resolve() == source.resolve()):
        _atomic_copy(source, entry.path)
    return entry


def download(names: list[str] | None = None, progress: bool = True) -> Iterator[tuple[WeightInfo, str]]:
    """Fetch weights ``names`` (default: every downloadable one) from their canonical URLs into the caches
    :func:`find` reads, skipping those present; yields ``(entry, what happened)`` as each one is done.
    Unknown names are rejected before anything is fetched. See :mod:`.download`."""
    from .download import fetch_weight

    entries = [info(n) for n in names] if names else [e for e in registry().values() if e.kind != "package"]
    for entry in entries:
        if entry.kind == "package":
            raise BadInput(f"{entry.name}: ships with the lpips package, nothing to download; {entry.hint()}")
    for entry in entries:
        if is_present(entry.name):
            yield entry, f"present: {find(entry.name)}"
        else:
            yield entry, f"downloaded: {fetch_weight(entry, progress=progress)}"


__all__ = ["WeightInfo", "registry", "info", "find", "is_present", "format_table", "import_file", "download",
           "sha256_of", "weight_file_of", "hf_snapshot", "torch_checkpoints", "hf_hub_cache"]
