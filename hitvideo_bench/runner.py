"""Execute a resolved recipe: one run per variant x seed, resumable, with provenance.

Layout of ``<out>/<recipe>/<run-id>/``: ``resolved.yaml``, ``runs/<variant>/seed-<n>/`` (that run's
``identity.json``, ``metrics.csv``, ``summary.json``, samples), the tidy ``metrics.csv``, tables, plots and
``manifest.json``. A run is finished once its ``metrics.csv`` exists (written last, atomically); a
re-run reuses finished runs and restarts unfinished ones from scratch (trained components resume
from their cached checkpoints).

A run's identity is the resolved recipe (the folder ``<run-id>``) plus the name, version and providing plugin
(distribution and its version) of every component it uses (:func:`component_identity`, kept in the run's
``identity.json``): a finished run whose recorded identity differs from the current one is re-run, so bumping a
component's ``version`` re-runs exactly the runs that use it.

A run that fails does not stop the others: the report covers the runs that finished, ``manifest.json`` lists
the failed ones under ``failed_runs``, and :class:`RunsFailed` (exit 1) names them.

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
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from . import __version__, cpumode
from .catalog import Catalog
from .claims import PER_CLIP_COLUMNS, load_per_clip
from .errors import BadInput, HitbenchError, RunFailed
from .faults import RunLog
from .io import read_json, write_json, write_text
from .jobs import log_path, run_workers
from .manager import get_plugins
from .recipe import ResolvedRecipe, ResolvedVariant
from .recipe.resolve import COMPONENT_FIELDS
from .report import (COLUMNS, kernel_notes, load_results, reference_rows, run_notes, summary_lists, write_report,
                     write_results)
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
    #: runs that failed: ``VARIANT/seed-S`` -> {error, log}
    failed: dict[str, dict[str, str]] = field(default_factory=dict)


class RunsFailed(RunFailed):
    """Some runs of a recipe failed; the report of the others was written (``result``)."""

    def __init__(self, result: RecipeResult, total: int):
        self.result = result
        done = total - len(result.failed)
        lines = [f"{len(result.failed)} of {total} runs failed"
                 + (f"; the runs that finished ({done}) are reported in {result.out_dir}" if result.files else "")]
        for run, info in result.failed.items():
            lines.append(f"  {run}: {info['error']}".replace("\n", "\n    ") + f"\n    log: {info['log']}")
        super().__init__("\n".join(lines))


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
    """Run every variant x seed of ``resolved``, then write the tables, plots and manifest of those that finished.

    Raises :class:`RunsFailed` (after the report) when some runs failed; a ``--jobs`` worker (``options.only``)
    raises its run's own :class:`RunFailed`.
    """
    device = init_distributed(resolve_device(options.device))
    main = is_main_process()  # under torchrun only rank 0 writes; the others help train
    out_dir = Path(options.out) / resolved.name / resolved.run_id()
    if main:
        _check_writable(out_dir)
        if not options.resume and (out_dir / "runs").exists():
            shutil.rmtree(out_dir / "runs")
        write_text(out_dir / "resolved.yaml", yaml.safe_dump(resolved.as_dict(), sort_keys=False))
    barrier()
    plugins = get_plugins()
    hook = plugins.hooks
    identities = {v.name: component_identity(v, plugins.catalog) for v in resolved.variants}
    started = time.time()
    runs = [r for r in recipe_runs(resolved) if options.only is None or r[2] == options.only]
    stale = {name: why for variant, _, name in runs
             if (why := outdated(out_dir / "runs" / name, identities[variant.name])) is not None}
    if main:
        for name, why in stale.items():
            print(f"hitbench: {name}: re-running: {why}", file=sys.stderr, flush=True)
    in_workers: list[str] = []
    failed: dict[str, dict[str, str]] = {}
    if options.jobs > 1 and options.only is None:
        in_workers = [name for variant, _, name in runs
                      if not is_finished(out_dir / "runs" / name, identities[variant.name])]
        worker_errors = run_workers(in_workers, options.worker_command, options.jobs, out_dir / "logs")
        failed = {run: {"error": error, "log": str(log_path(out_dir / "logs", run))}
                  for run, error in worker_errors.items()}
    frames, clip_frames, summaries, reused = [], [], {}, []
    for variant, seed, name in runs:
        run_dir = out_dir / "runs" / name
        identity = identities[variant.name]
        if name in failed:  # its --jobs worker failed (never under torchrun: --jobs excludes --nproc)
            continue
        finished = is_finished(run_dir, identity)  # every rank sees the same: checked after a barrier
        # a --jobs worker's standard error already is its run's log, as is a torchrun rank's (ranks other than 0
        # write no files); the others append to it
        log = RunLog(name, None if options.only is not None or not main else log_path(out_dir / "logs", name))
        if not main:
            if not finished:
                with log:
                    execute_run(resolved, variant, seed, device, run_dir, options, train_only=True)
        elif finished:
            frames.append(load_results(run_dir))
            if name not in in_workers:
                reused.append(name)
        else:
            if run_dir.exists():  # an interrupted, failed or outdated run: restart it cleanly
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            write_json(run_dir / "identity.json", {"components": identity})
            hook.hitbench_run_start(recipe=resolved.name, variant=variant.name, seed=seed,
                                    config=variant.spec.model_dump(mode="json"), run_dir=run_dir)
            try:
                with log:
                    df, summary = execute_run(resolved, variant, seed, device, run_dir, options, log=log)
            except RunFailed as exc:
                if options.only is not None:  # a --jobs worker fails; its parent reports the others
                    raise
                failed[name] = {"error": str(exc), "log": str(run_dir / "error.log")}
                write_text(run_dir / "error.log", "".join(traceback.format_exception(exc)))
                print(f"hitbench: {name}: failed: {exc}", file=sys.stderr, flush=True)
            else:
                write_json(run_dir / "summary.json", {**summary, "components": identity})
                write_results(df, run_dir)  # metrics.csv last: its presence marks the run finished
                frames.append(df)
                hook.hitbench_run_finished(recipe=resolved.name, variant=variant.name, seed=seed, metrics=df,
                                           run_dir=run_dir)
        barrier()  # once per run on every rank, reused or not
        if name in failed:
            continue
        if main:
            clip_frames.append(load_per_clip(run_dir))
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            summaries[name] = yaml.safe_load(summary_path.read_text())
    if options.only is not None:  # a --jobs worker: its run folder is its result; the parent writes the report
        return RecipeResult(out_dir, pd.concat(frames, ignore_index=True), [], reused)
    if not main:
        return RecipeResult(out_dir, pd.DataFrame(columns=COLUMNS), [], reused)
    results = pd.concat(frames + [reference_rows(resolved.name, resolved.recipe.references)],
                        ignore_index=True)[COLUMNS]
    files: list[Path] = []
    if frames:  # a table of the runs that finished, a note naming those that failed
        per_clip = (pd.concat(clip_frames, ignore_index=True) if clip_frames
                    else pd.DataFrame(columns=PER_CLIP_COLUMNS))
        notes = run_notes({run: (s or {}).get("components", {}) for run, s in summaries.items()}, failed,
                          *summary_lists(summaries)) + kernel_notes(summaries)
        files = write_report(results, resolved, out_dir, per_clip, notes)
    write_json(out_dir / "manifest.json", manifest(resolved, device, started, summaries, reused, failed))
    result = RecipeResult(out_dir, results, files, reused, failed)
    if files:
        hook.hitbench_report_written(results=results, out_dir=out_dir, files=files)
    if failed:
        raise RunsFailed(result, len(runs))
    return result


def component_identity(variant: ResolvedVariant, catalog: Catalog) -> dict[str, dict[str, str]]:
    """Every component a run of ``variant`` uses, by field (``tokenizer``, ``tokenizer.base``, ``codec``,
    ``generator``, ``dataset``, ``eval_dataset``, ``metric.NAME``): its name, version and the plugin providing it
    (distribution, or module for a ``-p`` plugin) with that plugin's version."""
    spec = variant.spec
    out: dict[str, dict[str, str]] = {}

    def add(fld: str, kind: str, name: str) -> None:
        c = catalog.get(kind, name)
        out[fld] = {"name": name, "version": c.version, "plugin": c.provider, "plugin_version": c.dist_version}

    for fld, kind in COMPONENT_FIELDS.items():
        ref = getattr(spec, fld)
        if ref is None:
            continue
        add(fld, kind, ref.name)
        inner, where = (ref.name, ref.preset, ref.config), fld
        while kind == "tokenizer":  # what a wrapper wraps, by the field it declares (masked: tokenizer.base), and so on
            wrapper = inner[0]
            inner = catalog.wrapped_ref(*inner)
            if inner is None:
                break
            where += f".{catalog.get('tokenizer', wrapper).load().wraps}"
            add(where, "tokenizer", inner[0])
    ev = spec.evaluate
    for name in dict.fromkeys([*ev.reconstruction, *ev.curve, *(ev.generation.metrics if ev.generation else [])]):
        add(f"metric.{name}", "metric", name)
    return out


def is_finished(run_dir: Path, identity: dict[str, dict[str, str]]) -> bool:
    """Whether ``run_dir`` holds a finished run made with the components of ``identity``."""
    return (run_dir / "metrics.csv").exists() and outdated(run_dir, identity) is None


def outdated(run_dir: Path, identity: dict[str, dict[str, str]]) -> str | None:
    """Why the finished run in ``run_dir`` must be re-run (its components differ from ``identity``), or None
    (also for a run that has not finished)."""
    if not (run_dir / "metrics.csv").exists():
        return None
    try:
        recorded = read_json(run_dir / "identity.json")["components"]
    except (OSError, ValueError, KeyError, TypeError):
        return "it records no component versions (identity.json), so they cannot be compared"
    changes = []
    for fld in dict.fromkeys([*recorded, *identity]):
        old, new = recorded.get(fld), identity.get(fld)
        if old != new:
            changes.append(f"{fld} {_describe(old)} -> {_describe(new)}")
    return ("its components changed: " + "; ".join(changes)) if changes else None


def _describe(part: dict[str, str] | None) -> str:
    if not part:
        return "(none)"
    return f"{part.get('name')} version {part.get('version')} ({part.get('plugin')} {part.get('plugin_version')})"


def execute_run(resolved: ResolvedRecipe, variant: ResolvedVariant, seed: int, device: torch.device,
                run_dir: Path, options: RunOptions, train_only: bool = False,
                log: RunLog | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One variant with one seed: obtain the components, measure, return tidy rows and a summary.

    ``train_only`` (processes other than rank 0 under torchrun): obtain the trained components, measure nothing.
    ``log``: the run's log, told each stage as it starts.
    """
    from .manager import get_catalog

    seed_everything(seed)
    ctx = RunContext(get_catalog(), variant, seed, device, run_dir, options.progress, options.use_cache,
                     train_only=train_only, log=log, execution=resolved.recipe.run)
    spec = variant.spec
    ev = spec.evaluate
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    datasets = []
    try:
        eval_ds = ctx.eval_dataset()
        datasets.append(eval_ds)
        clip_shape = tuple(eval_ds.clip_shape)
        if ev.compression and spec.tokenizer is not None and not train_only:
            with torch.device("meta"):
                rows += compression_rows(ctx.create("tokenizer"), clip_shape)
        needs_model = bool(ev.reconstruction or ev.layers or ev.curve or spec.generator)
        if needs_model and spec.codec is not None:
            if not train_only:  # codecs train nothing: the other ranks have nothing to help with
                ctx.where("stage reconstruction (codec)")
                rows += reconstruction_rows(ctx, ctx.create("codec"), eval_ds)
        elif needs_model:
            train_ds = ctx.train_dataset()
            datasets.append(train_ds)
            ctx.where("stage tokenizer (train or load from the cache)")
            tokenizer, folder = obtain_tokenizer(ctx, train_ds, None if train_only else curve_eval(ctx, eval_ds))
            rows += curve_rows(ctx)
            if (ev.reconstruction or ev.layers) and not train_only:
                ctx.where("stage reconstruction (tokenizer)")
                rows += reconstruction_rows(ctx, tokenizer, eval_ds)
            if spec.generator is not None:
                ctx.where("stage generator (train or load from the cache)")
                generator = obtain_generator(ctx, tokenizer, folder, train_ds)
                if ev.generation is not None and not train_only:
                    ctx.where("stage generation")
                    rows += generation_rows(ctx, tokenizer, generator, eval_ds)
    except HitbenchError:
        raise
    except Exception as exc:
        raise RunFailed(f"run {variant.name} (seed {seed}) failed: {type(exc).__name__}: {exc}") from exc
    dropped = {file: why for ds in datasets for file, why in ds.dropped().items()}
    if dropped:
        ctx.summary["dropped_files"] = dropped
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
               "torch_threads": torch.get_num_threads(), "machine": cpumode.machine(),
               "clip_shape": list(clip_shape), **ctx.summary}
    return df[COLUMNS], summary


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
             reused: list[str], failed: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Everything needed to trust and repeat the results."""
    plugins = get_plugins()
    return {
        "recipe": resolved.name,
        "recipe_file": str(resolved.path),
        "run_id": resolved.run_id(),
        "seeds": resolved.recipe.seeds,
        "scale": resolved.recipe.scale,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpumode.cpu_model(),
        "machine": cpumode.machine(),
        "git_commit": _git_commit(),
        "versions": versions(),
        "plugins": {name: {"distribution": d, "version": v} for name, (d, v) in plugins.info.items()},
        "plugin_failures": {f.name: f.error for f in plugins.failures},
        "wall_time_s": round(time.time() - started, 3),
        "peak_memory": peak_memory(),
        "reused_runs": reused,
        "failed_runs": failed or {},
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
