"""Pretrained component folders: ``model.safetensors`` plus ``config.json`` (kind, name, resolved config).

:func:`load_pretrained` rebuilds the component through the catalog from the saved config and loads
the weights strictly, so a folder is self-describing and never unpickles code. A wrapper tokenizer
(a class declaring ``wraps``) gets its base rebuilt by the catalog the same way; its weights are part of the
wrapper's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import BadInput
from .io import atomic_path, read_json, write_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_pretrained(component: torch.nn.Module, folder: str | Path, kind: str, name: str) -> Path:
    """Write ``component``'s weights and resolved config into ``folder`` (each file atomically)."""
    from . import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in component.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"kind": kind, "name": name})
    meta = {"kind": kind, "name": name, "hitbench": __version__, "config": component.config.model_dump(mode="json")}
    if kind == "generator":  # the clip shape it models, a constructor argument besides its tokenizer
        meta["clip_shape"] = list(component.clip_shape)
    write_json(folder / CONFIG, meta)
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise BadInput(f"{folder}: not a pretrained component folder (needs {CONFIG} and {WEIGHTS})")
    return read_json(folder / CONFIG)


def load_pretrained(folder: str | Path, **dependencies: Any) -> Any:
    """Rebuild the component saved in ``folder``; ``dependencies`` go to its constructor
    (``tokenizer=`` for a generator, whose clip shape the folder records)."""
    from .manager import get_catalog

    folder = Path(folder)
    meta = read_config(folder)
    catalog = get_catalog()
    config = dict(meta["config"])
    preset = config.pop("preset", None)
    if "clip_shape" in meta:
        dependencies.setdefault("clip_shape", tuple(meta["clip_shape"]))
    component = catalog.create(meta["kind"], meta["name"], preset=preset, overrides=config, **dependencies)
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = component.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInput(f"{folder / WEIGHTS}: weights do not match {meta['kind']} {meta['name']!r} "
                       f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return component.eval()


def load_tokenizer(folder: str | Path) -> Any:
    """Rebuild a trained tokenizer from its folder."""
    meta = read_config(folder)
    if meta["kind"] != "tokenizer":
        raise BadInput(f"{folder}: holds a {meta['kind']}, not a tokenizer")
    return load_pretrained(folder)
