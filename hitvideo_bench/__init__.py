"""hitvideo-bench: benchmark video tokenizers and autoregressive text-to-video generators.

Public API (stable)::

    import hitvideo_bench as hb
    hb.list_components("tokenizer")
    tok = hb.create_tokenizer("hitvideo", preset="paper")
    ds = hb.create_dataset("synthetic-shapes", preset="paper", split="train")
    gen = hb.create_generator("ar-llama", tok, clip_shape=ds.clip_shape, preset="paper")
    m = hb.create_metric("psnr"); m.update(pred=pred, target=target); m.compute()
    df = hb.load_results("results/reconstruction/<run-id>")

A plugin imports :mod:`hitvideo_bench.api` alone (docs/plugins.md).
"""

from __future__ import annotations

from typing import Any

from .components import (BenchMetric, Codec, Compressed, ComponentConfig, Generator, Tokenizer,
                         VideoDataset)
from .errors import BadInput, HitbenchError, RunFailed, ShapeError, WeightsUnavailable
from .hookspecs import hookimpl
from .manager import get_catalog, get_plugins
from .tokens import TokenPyramid

__version__ = "0.2.0"

__all__ = [
    "BadInput", "BenchMetric", "Codec", "Compressed", "ComponentConfig", "Generator", "HitbenchError",
    "RunFailed", "ShapeError", "TokenPyramid", "Tokenizer", "VideoDataset", "WeightsUnavailable",
    "create", "create_codec", "create_dataset", "create_generator", "create_metric", "create_tokenizer",
    "get_catalog", "get_plugins", "hookimpl", "list_components", "load_results", "load_tokenizer",
]


def list_components(kind: str | None = None, pattern: str | None = None) -> list[str] | dict[str, list[str]]:
    """Registered names of ``kind`` (optionally matching a glob), or ``{kind: names}`` for all kinds."""
    catalog = get_catalog()
    if kind is not None:
        return [s.name for s in catalog.specs(kind, pattern)]
    out: dict[str, list[str]] = {}
    for spec in catalog.specs(None, pattern):
        out.setdefault(spec.kind, []).append(spec.name)
    return out


def create(kind: str, name: str, preset: str | None = None, **overrides: Any) -> Any:
    """Create any component by kind and name from a preset plus config overrides."""
    return get_catalog().create(kind, name, preset=preset, overrides=overrides)


def create_tokenizer(name: str, preset: str | None = None, **overrides: Any) -> Tokenizer:
    """A tokenizer (``torch.nn.Module``) by catalog name."""
    return get_catalog().create("tokenizer", name, preset=preset, overrides=overrides)


def create_codec(name: str, preset: str | None = None, **overrides: Any) -> Codec:
    """A classical codec baseline by catalog name."""
    return get_catalog().create("codec", name, preset=preset, overrides=overrides)


def create_generator(name: str, tokenizer: Tokenizer, clip_shape: tuple[int, int, int], preset: str | None = None,
                     **overrides: Any) -> Generator:
    """A generator over ``tokenizer``'s token pyramids of clips of ``clip_shape`` ``(T, H, W)``."""
    return get_catalog().create("generator", name, preset=preset, overrides=overrides, tokenizer=tokenizer,
                                clip_shape=clip_shape)


def create_metric(name: str, preset: str | None = None, **overrides: Any) -> BenchMetric:
    """A metric (torchmetrics contract: ``update`` / ``compute`` / ``reset``)."""
    return get_catalog().create("metric", name, preset=preset, overrides=overrides)


def create_dataset(name: str, preset: str | None = None, split: str = "train", **overrides: Any) -> VideoDataset:
    """A dataset split by catalog name."""
    return get_catalog().create("dataset", name, preset=preset, overrides=overrides, split=split)


def load_tokenizer(path) -> Tokenizer:
    """Rebuild a trained tokenizer from its checkpoint folder (weights + resolved config)."""
    from .checkpoint import load_tokenizer as _load

    return _load(path)


def load_results(path):
    """Tidy ``pandas.DataFrame`` of a finished recipe run (one row per run x metric)."""
    from .report import load_results as _load

    return _load(path)
