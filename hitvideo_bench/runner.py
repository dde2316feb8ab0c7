"""Execute a resolved recipe: one run per variant x seed, resumable, with provenance.

Layout of ``<out>/<recipe>/<run-id>/``: ``resolved.yaml``, ``runs/<variant>/seed-<n>/`` (that run's
``metrics.csv``, ``summary.json``, samples), the tidy ``metrics.csv``, tables, plots and
``manifest.json``. A run is finished once its ``metrics.csv`` exists (written last, atomically); a
re-run reuses finished runs and restarts unfinished ones from scratch (trained components resume
from their cached checkpoints).

``--jobs N`` runs up to N variant x seed runs at once, each in a worker process (``hitbench run ... --only
VARIANT/seed-S``, see :mod:`hitvideo_bench.jobs`) that writes its run folder as a sequential run does and its
output to ``logs/``; then the report is written from the finished runs. Components two runs share are trained
once (the cache's training lock).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from . import __version__
from .claims import PER_CLIP_COLUMNS, load_per_clip
from .errors import BadInput, HitbenchError, RunFailed
from .io import write_json, write_text
from .jobs import run_workers
from .manager import get_plugins
from .recipe import ResolvedRecipe, ResolvedVariant
from .report import COLUMNS, load_results, write_report, write_results
from .stages import (RunContext, compression_rows, curve_eval, curve_rows, generation_rows, obtain_generator,
                     obtain_tokenizer, reconstruction_rows)
from .training import barrier, init_distributed, is_main_process

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "pluggy", "pydantic", "transformers", "av", "lpips",
            "torchmetrics", "pytorch-msssim", "vector-quantize-pytorch", "safetensors")


@dataclass
class RunOptions:
    """How to execute a recipe (the CLI flags)."""

    out: Path = Path("results")
    resume: bool = True
    device: str = "auto"
    progress: bool = True
    use_cache: bool = True
    jobs: int = 1
    #: a ``--jobs`` worker's run, ``VARIANT/seed-S``: run just that one and write no report
    only: str | None = None
    #: how to start a worker: this command, then ``--only VARIANT/seed-S`` (set by the CLI when jobs > 1)
    worker_command: list[str] = field(default_factory=list)


@dataclass
class RecipeResult:
    out_dir: Path
    results: pd.DataFrame
    files: list[Path]
    reused: list[str]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is bad input."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {name}: CUDA is not available on this machine (allowed: cpu, auto)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise BadInput(f"--device {name!r}: allowed values are cpu, cuda, cuda:N, auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # a name of its own: --jobs workers check the folder at once
            pass
    except OSError as exc:
        raise BadInput(f"output directory not writable: {folder} ({exc.strerror})") from None


def recipe_runs(resolved: ResolvedRecipe) -> list[tuple[ResolvedVariant, int, str]]:
    """Every variant x seed of a recipe, with its name ``VARIANT/seed-S`` (its folder under ``runs/``)."""
    return [(variant, seed, f"{variant.name}/seed-{seed}") for variant in resolved.variants
            for seed in resolved.recipe.seeds]


def run_recipe(resolved: ResolvedRecipe, options: RunOptions) -> RecipeResult:
    """Run every variant x seed of ``resolved``, then write the tables, plots and manifest."""
    device = init_distributed(resolve_device(options.device))
    main = is_main_process()  # under torchrun only rank 0 writes; the others help train
    out_dir = Path(options.out) / resolved.name / resolved.run_id()
    if main:
        _check_writable(out_dir)
        if not options.resume and (out_dir / "runs").exists():
            shutil.rmtree(out_dir / "runs")
        write_text(out_dir / "resolved.yaml", yaml.safe_dump(resolved.as_dict(), sort_keys=False))
    barrier()
    hook = get_plugins().pm.hook
    started = time.time()
    runs = recipe_runs(resolved)
    in_workers: list[str] = []
    if options.jobs > 1 and options.only is None:
        in_workers = [name for _, _, name in runs if not (out_dir / "runs" / name / "metrics.csv").exists()]
        run_workers(in_workers, options.worker_command, options.jobs, out_dir / "logs")
    frames, clip_frames, summaries, reused = [], [], {}, []
    for variant, seed, name in runs:
        if options.only is not None and name != options.only:
            continue
        run_dir = out_dir / "runs" / name
        finished = (run_dir / "metrics.csv").exists()  # every rank sees the same: checked after a barrier
        if not main:
            if not finished:
                execute_run(resolved, variant, seed, device, run_dir, options, train_only=True)
        elif finished:
            frames.append(load_results(run_dir))
            if name not in in_workers:
                reused.append(name)
        else:
            if run_dir.exists():  # an interrupted run: restart it cleanly
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            hook.hitbench_run_start(recipe=resolved.name, variant=variant.name, seed=seed,
                                    config=variant.spec.model_dump(mode="json"), run_dir=run_dir)
            df, summary = execute_run(resolved, variant, seed, device, run_dir, options)
            write_json(run_dir / "summary.json", summary)
            write_results(df, run_dir)  # metrics.csv last: its presence marks the run finished
            frames.append(df)
            hook.hitbench_run_finished(recipe=resolved.name, variant=variant.name, seed=seed, metrics=df,
                                       run_dir=run_dir)
        barrier()  # once per run on every rank, reused or not
        if main:
            clip_frames.append(load_per_clip(run_dir))
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            summaries[name] = yaml.safe_load(summary_path.read_text())
    if options.only is not None:  # a --jobs worker: its run folder is its result; the parent writes the report
        return RecipeResult(out_dir, pd.concat(frames, ignore_index=True), [], reused)
    if not main:
        return RecipeResult(out_dir, pd.DataFrame(columns=COLUMNS), [], reused)
    results = pd.concat(frames + [_reference_rows(resolved)], ignore_index=True)[COLUMNS]
    per_clip = pd.concat(clip_frames, ignore_index=True) if clip_frames else pd.DataFrame(columns=PER_CLIP_COLUMNS)
    files = write_report(results, resolved, out_dir, per_clip)
    write_json(out_dir / "manifest.json", manifest(resolved, device, started, summaries, reused))
    hook.hitbench_report_written(results=results, out_dir=out_dir, files=files)
    return RecipeResult(out_dir, results, files, reused)


def execute_run(resolved: ResolvedRecipe, variant: ResolvedVariant, seed: int, device: torch.device,
                run_dir: Path, options: RunOptions, train_only: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One variant with one seed: obtain the components, measure, return tidy rows and a summary.

    ``train_only`` (processes other than rank 0 under torchrun): obtain the trained components, measure nothing.
    """
    from .manager import get_catalog

    seed_everything(seed)
    ctx = RunContext(get_catalog(), variant, seed, device, run_dir, options.progress, options.use_cache,
                     train_only=train_only)
    spec = variant.spec
    ev = spec.evaluate
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        eval_ds = ctx.eval_dataset()
        clip_shape = tuple(eval_ds.clip_shape)
        if ev.compression and spec.tokenizer is not None and not train_only:
            with torch.device("meta"):
                rows += compression_rows(ctx.create("tokenizer"), clip_shape)
        needs_model = bool(ev.reconstruction or ev.layers or ev.curve or spec.generator)
        if needs_model and spec.codec is not None:
            if not train_only:  # codecs train nothing: the other ranks have nothing to help with
                rows += reconstruction_rows(ctx, ctx.create("codec"), eval_ds)
        elif needs_model:
            train_ds = ctx.train_dataset()
            tokenizer, folder = obtain_tokenizer(ctx, train_ds, None if train_only else curve_eval(ctx, eval_ds))
            rows += curve_rows(ctx)
            if (ev.reconstruction or ev.layers) and not train_only:
                rows += reconstruction_rows(ctx, tokenizer, eval_ds)
            if spec.generator is not None:
                generator = obtain_generator(ctx, tokenizer, folder, train_ds)
                if ev.generation is not None and not train_only:
                    rows += generation_rows(ctx, tokenizer, generator, eval_ds)
    except HitbenchError:
        raise
    except Exception as exc:
        raise RunFailed(f"run {variant.name} (seed {seed}) failed: {type(exc).__name__}: {exc}") from exc
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("recipe", "variant", "seed", "source")]
                      + ["timing"])
    df.insert(0, "recipe", resolved.name)
    df.insert(1, "variant", variant.name)
    df.insert(2, "seed", seed)
    df["source"] = df.pop("timing").map({True: "timing", False: "measured"})
    if ctx.per_clip:  # before metrics.csv, whose presence marks the run finished
        clips = pd.DataFrame(ctx.per_clip)
        clips.insert(0, "recipe", resolved.name)
        clips.insert(1, "variant", variant.name)
        clips.insert(2, "seed", seed)
        write_text(run_dir / "per_clip.csv", clips[PER_CLIP_COLUMNS].to_csv(index=False))
    summary = {"variant": variant.name, "seed": seed, "wall_s": round(time.perf_counter() - started, 3),
               "torch_threads": torch.get_num_threads(),
               "clip_shape": list(clip_shape), **ctx.summary}
    return df[COLUMNS], summary


def _reference_rows(resolved: ResolvedRecipe) -> pd.DataFrame:
    rows = []
    for ref in resolved.recipe.references:
        for metric, value in ref.values.items():
            numeric = isinstance(value, (int, float))
            rows.append({"recipe": resolved.name, "variant": ref.variant, "seed": None, "metric": metric,
                         "value": float(value) if numeric else float("nan"), "higher_is_better": None,
                         "step": None, "text": "" if numeric else str(value), "provenance": ref.note,
                         "source": ref.source})
    return pd.DataFrame(rows, columns=COLUMNS)


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions of Python, this suite, and the packages results depend on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "hitvideo-bench": __version__}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def peak_memory() -> dict[str, float]:
    out = {"cpu_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def manifest(resolved: ResolvedRecipe, device: torch.device, started: float, summaries: dict[str, Any],
             reused: list[str]) -> dict[str, Any]:
    """Everything needed to trust and repeat the results."""
    plugins = get_plugins()
    return {
        "recipe": resolved.name,
        "recipe_file": str(resolved.path),
        "run_id": resolved.run_id(),
        "seeds": resolved.recipe.seeds,
        "scale": resolved.recipe.scale,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "git_commit": _git_commit(),
        "versions": versions(),
        "plugins": {name: {"distribution": d, "version": v} for name, (d, v) in plugins.info.items()},
        "plugin_failures": {f.name: f.error for f in plugins.failures},
        "wall_time_s": round(time.time() - started, 3),
        "peak_memory": peak_memory(),
        "reused_runs": reused,
        "resumed_training": resumed_training(summaries),
        "runs": summaries,
    }


def resumed_training(summaries: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Run -> {component: checkpoint step its training resumed from}, for the components that resumed."""
    out: dict[str, dict[str, int]] = {}
    for run, summary in summaries.items():
        for key, part in (summary or {}).items():
            if isinstance(part, dict) and part.get("resumed_from_step") is not None:
                out.setdefault(run, {})[key] = part["resumed_from_step"]
    return out
