"""Obtaining a run's trained components: train them, or reuse them from the component cache (a tokenizer, the
tokenizer a wrapper wraps, a generator on the tokenized train split)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import cache
from ..checkpoint import load_pretrained, load_tokenizer, save_pretrained
from ..components import Generator, Tokenizer, VideoDataset
from ..contract import overrides
from ..io import read_json, write_json
from ..recipe import ComponentRef
from ..tokens import TokenPyramid
from ..training import is_main_process, world
from .context import RunContext, clip_batches

# ------------------------------------------------------------------------------------------- tokenizers


def tokenizer_identity(ctx: RunContext, ref: ComponentRef, train_ds: VideoDataset) -> dict[str, Any]:
    """What the cached tokenizer depends on: its version, preset and config, its training data and the seed; for a
    wrapper tokenizer also the identity of the base it wraps (trained on the same data), so that a new base version
    retrains the wrapper instead of loading one fitted to the old base."""
    spec = ctx.catalog.get("tokenizer", ref.name)
    identity = {"kind": "tokenizer", "name": ref.name, "version": spec.version, "plugin": spec.provider,
                "preset": ref.preset, "config": ref.config, "data": train_ds.identity(), "seed": ctx.seed}
    inner = base_ref(ctx, ref)
    if inner is not None:
        identity["base"] = tokenizer_identity(ctx, inner, train_ds)
    return identity


def base_ref(ctx: RunContext, ref: ComponentRef) -> ComponentRef | None:
    """The tokenizer a wrapper tokenizer wraps (:meth:`Catalog.wrapped_ref`), or None."""
    inner = ctx.catalog.wrapped_ref(ref.name, ref.preset, ref.config)
    return None if inner is None else ComponentRef(name=inner[0], preset=inner[1], config=inner[2])


def cached_component(ctx: RunContext, key: str, kind: str, name: str, folder: Path, load: Callable[[], Any],
                     train: Callable[[], tuple[Any, dict[str, Any]]]) -> Any:
    """The component whose cache folder is ``folder`` (see :func:`hitvideo_bench.cache.cached_component`), saved as
    a pretrained folder; its summary goes to ``ctx.summary[key]``."""
    component, summary, trained = cache.cached_component(
        folder, load=load, train=train, save=lambda c, path: save_pretrained(c, path, kind, name),
        use_cache=ctx.use_cache)
    ctx.summary[key] = {"cached": str(folder), **({"trained_now": True} if trained else {}), **summary}
    if not trained:
        _note_other_execution(ctx, key, summary)
    return component.eval()


def _note_other_execution(ctx: RunContext, key: str, summary: dict[str, Any]) -> None:
    """Say when a cached component was trained under other execution settings than this run's: its weights are the
    same up to float summation order for steps without random draws, not for steps that draw (dropout)."""
    now = {"strategy": ctx.execution.strategy, "micro_batch": ctx.execution.micro_batch, "processes": world()[1]}
    then = {k: summary[k] for k in now if k in summary}
    if then and then != {k: now[k] for k in then}:
        ctx.summary[key]["execution_now"] = now
        if is_main_process():
            print(f"hitbench: note: the cached {key} was trained under {then}, this run executes under {now}; reused "
                  "(execution settings are not part of a component's identity)", file=sys.stderr, flush=True)


def obtain_tokenizer(ctx: RunContext, train_ds: VideoDataset,
                     eval_fn: Callable[[Tokenizer, int], dict[str, float]] | None,
                     ref: ComponentRef | None = None) -> tuple[Tokenizer, Path | None]:
    """Train the tokenizer (the variant's unless ``ref`` names another), or reuse it from the cache.

    A wrapper tokenizer (e.g. ``masked``) gets its trained base first, through the same cache.
    """
    ref = ref or ctx.variant.spec.tokenizer
    deps: dict[str, Any] = {}
    inner = base_ref(ctx, ref)
    if inner is not None:
        deps["base"], _ = obtain_tokenizer(ctx, train_ds, None, inner)
    key = "tokenizer" if inner is None else f"tokenizer:{ref.name}"
    blame = ctx.catalog.get("tokenizer", ref.name).blame
    torch.manual_seed(ctx.seed)  # its initial weights depend on the seed alone, not on what ran before
    with blame():
        tokenizer: Tokenizer = (ctx.create("tokenizer", **deps) if ref is ctx.variant.spec.tokenizer else
                                ctx.catalog.create("tokenizer", ref.name, preset=ref.preset, overrides=ref.config,
                                                   **deps))
    if not tokenizer.trainable:
        ctx.summary[key] = {"trained": False}
        return tokenizer.to(ctx.device).eval(), None
    identity = tokenizer_identity(ctx, ref, train_ds)
    folder = cache.component_dir("tokenizer", ref.name, identity)

    def train() -> tuple[Tokenizer, dict[str, Any]]:
        tokenizer.to(ctx.device)
        fit_eval = (lambda step: eval_fn(tokenizer, step)) if eval_fn else None
        with blame():
            return tokenizer, tokenizer.fit(train_ds, workdir=folder / cache.WORK, device=ctx.device, seed=ctx.seed,
                                            progress=ctx.progress, eval_fn=fit_eval, execution=ctx.execution)

    return cached_component(ctx, key, "tokenizer", ref.name, folder,
                            lambda: load_tokenizer(folder).to(ctx.device).eval(), train), folder


# ------------------------------------------------------------------------------------------- generation


def tokenize_dataset(tokenizer: Tokenizer, dataset: VideoDataset, folder: Path | None, ctx: RunContext,
                     batch_size: int) -> tuple[TokenPyramid, list[str]]:
    """Tokenize a whole split once; cached beside the (cached) tokenizer."""
    path = folder / f"tokens-{cache.stable_hash(dataset.identity())}.safetensors" if folder else None
    if path is not None and path.exists():
        return TokenPyramid.load(path), read_json(path.with_suffix(".json"))
    pyramids, captions = [], []
    with torch.no_grad():
        for batch in clip_batches(dataset, len(dataset), batch_size, ctx.device, ctx.progress, "tokenize"):
            pyramids.append(tokenizer.encode(batch["video"]).to("cpu"))
            captions += batch["captions"]
    pyramid = TokenPyramid.cat(pyramids)
    if path is not None and is_main_process():
        write_json(path.with_suffix(".json"), captions)
        pyramid.save(path)  # written last: its presence means both are complete
    return pyramid, captions


def obtain_generator(ctx: RunContext, tokenizer: Tokenizer, tok_folder: Path | None,
                     train_ds: VideoDataset) -> Any:
    """Train the variant's generator on the tokenized train split, or reuse it from the cache."""
    ref = ctx.variant.spec.generator
    spec = ctx.catalog.get("generator", ref.name)
    if not overrides(spec.load(), Generator, "training_task", "fit"):  # e.g. a pretrained generator a plugin loads
        ctx.summary["generator"] = {"trained": False}
        return ctx.create("generator", tokenizer=tokenizer, clip_shape=train_ds.clip_shape).to(ctx.device).eval()
    identity = {"kind": "generator", "name": ref.name, "version": spec.version, "preset": ref.preset,
                "config": ref.config, "tokenizer": tokenizer_identity(ctx, ctx.variant.spec.tokenizer, train_ds),
                "seed": ctx.seed}
    folder = cache.component_dir("generator", ref.name, identity)

    def train() -> tuple[Any, dict[str, Any]]:
        torch.manual_seed(ctx.seed)  # its initial weights: the same whether the tokenizer was just trained or loaded
        generator = ctx.create("generator", tokenizer=tokenizer, clip_shape=train_ds.clip_shape).to(ctx.device)
        pyramid, captions = tokenize_dataset(tokenizer, train_ds, tok_folder, ctx,
                                             ctx.variant.spec.evaluate.batch_size)
        with spec.blame():
            return generator, generator.fit(pyramid, captions, workdir=folder / cache.WORK, device=ctx.device,
                                            seed=ctx.seed, progress=ctx.progress, execution=ctx.execution)

    return cached_component(ctx, "generator", "generator", ref.name, folder,
                            lambda: load_pretrained(folder, tokenizer=tokenizer).to(ctx.device).eval(), train)


