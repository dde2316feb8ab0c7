"""Measuring a run's components: metrics over batches of clips (and clip by clip), and the rows of the
compression, reconstruction, training-curve and generation stages."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..claims import RESAMPLE, RESAMPLED_CLIPS, bootstrap_indices
from ..components import BenchMetric, Codec, Compressed, Tokenizer, VideoDataset
from ..errors import WeightsUnavailable
from ..isolation import IsolatedWorker, WorkerFailed
from ..report import save_sample_sheet
from ..tokens import TokenPyramid
from .context import Row, RunContext, clip_batches, row



# ------------------------------------------------------------------------------------------- metrics


def clip_count(inputs: dict[str, Any], names: Sequence[str]) -> int:
    """How many clips a metric's inputs hold: the length of ``pred``, else of its first input (a token pyramid
    by its batch size)."""
    value = inputs["pred"] if "pred" in names else inputs[names[0]]
    return value.batch_size if isinstance(value, TokenPyramid) else len(value)


def one_clip(value: Any, i: int) -> Any:
    """Clip ``i`` of a batched metric input (tensors and lists by their first index), or None when it has none."""
    if isinstance(value, (torch.Tensor, list)):
        return value[i:i + 1]
    return None


class MetricSet:
    """The metrics of one stage; a metric whose weights are missing is kept as ``unavailable``.

    Metrics that declare ``per_clip`` are also scored clip by clip, by a second copy of the metric reset for
    each clip: :meth:`clip_rows` gives those values, sub-values as ``metric/key`` (for confidence intervals and
    paired claims). Metrics that declare ``resampled`` (a statistic of the whole set) give their value on the
    same bootstrap resamples of the clips in every variant instead, as ``metric#resample`` (see
    :mod:`hitvideo_bench.claims`).
    """

    def __init__(self, ctx: RunContext, names: Sequence[str], suffix: str = ""):
        self.clip_values: dict[str, list[tuple[int, float]]] = {}
        self.next_clip = 0
        self.clip_counts: dict[str, int] = {}
        self.scratch: dict[str, BenchMetric] = {}
        self.metrics: dict[str, BenchMetric] = {}
        self.unavailable: dict[str, str] = {}
        self.not_applicable: dict[str, str] = {}
        self.higher: dict[str, bool | None] = {}
        self.suffix = suffix
        config = ctx.variant.spec.evaluate.metric_config
        for name in names:
            spec = ctx.catalog.get("metric", name)
            self.higher[name] = spec.load().higher_is_better
            try:
                # evaluation runs in one process (rank 0 under torchrun): never wait for the others
                self.metrics[name] = ctx.catalog.create("metric", name, overrides=config.get(name),
                                                        sync_on_compute=False).to(ctx.device)
            except WeightsUnavailable as exc:
                self.unavailable[name] = exc.hint

    def update(self, clips: Sequence[int] | None = None, **inputs: Any) -> None:
        """Add a batch; ``clips``: the clips' numbers in the split (default: those after the previous batch's),
        kept with the per-clip values so that clips stay paired across variants when one variant lost a clip."""
        first = self.next_clip
        for name, metric in list(self.metrics.items()):
            missing = [k for k in metric.inputs if inputs.get(k) is None]
            if missing:  # e.g. token pyramids from a codec: the metric does not apply to this variant
                self.not_applicable[name] = f"n/a: needs {', '.join(missing)}"
                del self.metrics[name]
                continue
            try:
                metric.update(**{k: inputs[k] for k in metric.inputs})
            except WeightsUnavailable as exc:
                self.unavailable[name] = exc.hint
                del self.metrics[name]
                continue
            batch = clip_count(inputs, metric.inputs)
            ids = list(clips) if clips is not None else list(range(first, first + batch))
            self.next_clip = max(self.next_clip, ids[-1] + 1) if ids else self.next_clip
            if metric.per_clip:
                self._score_clips(name, metric, {k: inputs[k] for k in metric.inputs}, ids)
            if metric.resampled:  # compute_on indexes the clips in update order
                self.clip_counts[name] = self.clip_counts.get(name, 0) + batch

    def _score_clips(self, name: str, metric: BenchMetric, inputs: dict[str, Any], ids: list[int]) -> None:
        scratch = self.scratch.setdefault(name, metric.clone())
        for i, clip_id in enumerate(ids):
            clip = {k: one_clip(v, i) for k, v in inputs.items()}
            if any(v is None for v in clip.values()):
                return
            scratch.reset()
            scratch.update(**clip)
            value = scratch.compute()
            for key, val in (value.items() if isinstance(value, dict) else [("", value)]):
                self.clip_values.setdefault((f"{name}/{key}" if key else name) + self.suffix, []).append(
                    (clip_id, float(val)))

    def clip_rows(self) -> list[dict[str, Any]]:
        """``{metric, clip, value}`` for every clip scored alone, clips numbered in evaluation order; for a
        resampled metric ``{metric#resample, r, value}`` per bootstrap resample r, and r = -1 for all clips."""
        rows = [{"metric": name, "clip": i, "value": v} for name, values in self.clip_values.items()
                for i, v in values]
        for name, metric in self.metrics.items():
            count = self.clip_counts.get(name, 0)
            if not metric.resampled or count < 2:
                continue
            draws = [torch.arange(count), *torch.from_numpy(bootstrap_indices(count))]
            rows += [{"metric": f"{name}{self.suffix}{RESAMPLE}", "clip": r - 1, "value": metric.compute_on(index)}
                     for r, index in enumerate(draws)]
            rows.append({"metric": f"{name}{self.suffix}{RESAMPLED_CLIPS}", "clip": -1, "value": count})
        return rows

    def rows(self, step: int | None = None) -> list[Row]:
        out: list[Row] = []
        for name, metric in self.metrics.items():
            value = metric.compute()
            prov = json.dumps(metric.provenance(), default=str, sort_keys=True)
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for key, val in items:
                metric_name = f"{name}/{key}" if key else name  # key "" is the metric's headline value
                higher = metric.sub_higher_is_better(key) if key else self.higher[name]
                out.append(row(metric_name + self.suffix, float(val), higher, step=step, provenance=prov))
        for name, hint in self.unavailable.items():
            out.append(row(name + self.suffix, math.nan, self.higher[name], step=step, text=f"unavailable: {hint}"))
        for name, why in self.not_applicable.items():
            out.append(row(name + self.suffix, math.nan, self.higher[name], step=step, text=why))
        return out


def metric_inputs(batch: dict[str, Any], pred: torch.Tensor, compressed=None) -> dict[str, Any]:
    """The named inputs metrics may ask for (see components.METRIC_INPUTS)."""
    video = batch["video"]
    pixels = torch.full((video.shape[0],), float(video.shape[2] * video.shape[3] * video.shape[4]),
                        dtype=torch.float64)
    return {"pred": pred, "target": video, "captions": batch["captions"], "attrs": batch["attrs"],
            "pixels": pixels, "bits": compressed.bits if compressed is not None else None,
            "pyramid": compressed.pyramid if compressed is not None else None}


# ------------------------------------------------------------------------------------------- compression


def compression_rows(tokenizer: Tokenizer, clip_shape: tuple[int, int, int]) -> list[Row]:
    """Table 1 / Table 4: per-layer grid, compression, quant dim, codebook, tokens; totals (tokens and nominal bits
    per clip), ratio, nominal bpp."""
    T, H, W = clip_shape
    grids = tokenizer.token_grid_shapes(T, H, W)
    sizes = tokenizer.codebook_sizes
    rows: list[Row] = [row("input", math.nan, text=f"{T}x{H}x{W}")]
    total_tokens, total_bits = 0, 0.0
    for layer, ((t, h, w), size) in enumerate(zip(grids, sizes)):
        n = t * h * w
        total_tokens += n
        total_bits += n * math.log2(size)
        rows += [row(f"latent/L{layer}", math.nan, text=f"{t}x{h}x{w}"),
                 row(f"compression/L{layer}", math.nan, text=f"{T // t}x{H // h}x{W // w}"),
                 row(f"quant_dim/L{layer}", math.log2(size)),
                 row(f"codebook/L{layer}", float(size)),
                 row(f"tokens/L{layer}", float(n))]
    pixels = T * H * W
    rows += [row("tokens", float(total_tokens), False),
             row("bits_nominal", total_bits, False),
             row("compression_ratio", pixels / total_tokens, True),
             row("bpp_nominal", total_bits / pixels, False)]
    return rows


def curve_eval(ctx: RunContext, eval_ds: VideoDataset) -> Callable[[Tokenizer, int], dict[str, float]] | None:
    """The function the trainer calls every ``eval_every`` steps for training curves (PSNR vs step)."""
    ev = ctx.variant.spec.evaluate
    if not ev.curve:
        return None

    def evaluate(tokenizer: Tokenizer, step: int) -> dict[str, float]:
        was_training = tokenizer.training
        tokenizer.eval()
        with torch.random.fork_rng(devices=[]):  # curves must not change the training's random stream
            metrics = MetricSet(ctx, ev.curve)
            for batch in clip_batches(eval_ds, ev.curve_clips, ev.batch_size, ctx.device):
                compressed = tokenizer.compress(batch["video"])
                metrics.update(**metric_inputs(batch, compressed.reconstruction, compressed))
            values = {r["metric"]: r["value"] for r in metrics.rows()}
        tokenizer.train(was_training)
        return values

    return evaluate


def curve_rows(ctx: RunContext) -> list[Row]:
    """Training-curve rows (with their step) from the tokenizer's training summary."""
    rows = []
    for point in ctx.summary.get("tokenizer", {}).get("curve", []):
        step = int(point["step"])
        for name, value in point.items():
            if name != "step":
                higher = ctx.catalog.get("metric", name.split("/")[0]).load().higher_is_better
                rows.append(row(name, float(value), higher, step=step))
    return rows


# ------------------------------------------------------------------------------------------- reconstruction


def reconstruction_rows(ctx: RunContext, compressor: Any, eval_ds: VideoDataset) -> list[Row]:
    """Compress every eval clip; score the reconstruction (and partial decodes from the top k layers).

    An isolated codec (:attr:`Codec.isolated`) compresses clip by clip in a worker process: a clip whose worker
    crashes or hangs twice is left out of every value, and reported (``clips``, ``clips_failed`` rows, the
    run summary's ``failed_clips``, a note below the table)."""
    ev = ctx.variant.spec.evaluate
    ds = ctx.variant.spec.dataset
    layer_counts: list[int] = []
    if isinstance(compressor, Tokenizer) and ev.layers:
        layer_counts = list(range(1, compressor.num_layers + 1)) if ev.layers == "all" else list(ev.layers)
    full = MetricSet(ctx, ev.reconstruction)
    pixel_only = [n for n in ev.reconstruction
                  if set(ctx.catalog.get("metric", n).load().inputs) <= {"pred", "target"}]
    partial = {k: MetricSet(ctx, pixel_only, suffix=f"@{k}") for k in layer_counts}
    seconds, clips, seen = 0.0, 0, 0
    per_clip: dict[str, list[float]] = {}
    failed: dict[int, str] = {}
    isolated = isinstance(compressor, Codec) and compressor.isolated
    worker = IsolatedWorker(compressor, ctx.log.path if ctx.log else None) if isolated else None
    with torch.no_grad(), (worker or contextlib.nullcontext()):
        if worker is not None:
            ctx.where(f"starting the isolated worker of {type(compressor).__name__}")
            worker.start()  # its start-up (imports) is not a clip's compression time
        for batch in clip_batches(eval_ds, ds.eval_clips, ev.batch_size, ctx.device, ctx.progress, "evaluate"):
            ids = list(range(seen, seen + len(batch["video"])))
            seen += len(ids)
            ctx.where(f"reconstruction: clips {ids[0]}-{ids[-1]}")
            if ev.figures and clips == 0:
                compressor.save_figures(batch["video"][:1], ctx.run_dir / "figures")
            start = time.perf_counter()
            if worker is None:
                compressed = compressor.compress(batch["video"])
            else:
                compressed, ids, batch = compress_isolated(ctx, worker, compressor, batch, ids, failed)
            seconds += time.perf_counter() - start
            if compressed is None:  # every clip of the batch failed
                continue
            clips += len(ids)
            full.update(clips=ids, **metric_inputs(batch, compressed.reconstruction, compressed))
            for name, values in compressed.info.get("per_clip", {}).items():
                per_clip.setdefault(name, []).extend(float(v) for v in values)
            ctx.summary.setdefault("compress_info", []).append(
                {k: v for k, v in compressed.info.items() if _jsonable(v)})
            for k, metrics in partial.items():
                pred = compressor.decode(compressed.pyramid, layers=k)
                metrics.update(clips=ids, **metric_inputs(batch, pred, compressed))
    rows = full.rows() + [r for metrics in partial.values() for r in metrics.rows()]
    for metrics in [full, *partial.values()]:
        ctx.per_clip += metrics.clip_rows()
    for name, values in per_clip.items():
        rows.append(row(name, sum(values) / len(values)))
    if failed:
        ctx.summary["failed_clips"] = [{"clip": clip, "reason": why} for clip, why in sorted(failed.items())]
        rows += [row("clips", float(clips), text=f"{clips} of {seen} clips measured"),
                 row("clips_failed", float(len(failed)), False,
                     text="; ".join(f"clip {clip}: {why}" for clip, why in sorted(failed.items())))]
    rows.append(row("compress_s_per_clip", seconds / max(clips, 1), False, timing=True))
    return rows


def compress_isolated(ctx: RunContext, worker: IsolatedWorker, codec: Codec, batch: dict[str, Any],
                      ids: list[int], failed: dict[int, str]) -> tuple[Compressed | None, list[int], dict[str, Any]]:
    """Compress a batch clip by clip in ``worker``; return the result of the clips that succeeded, their numbers
    and the batch cut down to them. A clip that failed twice goes to ``failed`` (clip -> reason)."""
    _, _, T, H, W = batch["video"].shape
    limit = codec.time_limit(T, H, W)
    done: list[tuple[int, Compressed]] = []
    for i, clip in enumerate(ids):
        try:
            done.append((i, worker.call("compress", batch["video"][i:i + 1].cpu(), limit_s=limit, item=f"clip {clip}",
                                        note=ctx.where)))
        except WorkerFailed as exc:
            failed[clip] = str(exc)
            ctx.where(f"clip {clip}: failed, left out of every value: {exc}")
    if not done:
        return None, [], batch
    keep = [i for i, _ in done]
    parts = [c for _, c in done]
    per_clip_info: dict[str, list[Any]] = {}
    for part in parts:
        for name, values in part.info.get("per_clip", {}).items():
            per_clip_info.setdefault(name, []).extend(values)
    info = {**parts[0].info, "per_clip": per_clip_info}
    if "clips" in parts[0].info:  # a codec's per-clip details, as one call on the whole batch lists them
        info["clips"] = [c for part in parts for c in part.info["clips"]]
    compressed = Compressed(torch.cat([p.reconstruction for p in parts]).to(ctx.device),
                            torch.cat([p.bits for p in parts]), None, info)
    kept = {key: (value[keep] if isinstance(value, torch.Tensor) else [value[i] for i in keep])
            for key, value in batch.items()}
    return compressed, [ids[i] for i in keep], kept


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def generation_rows(ctx: RunContext, tokenizer: Tokenizer, generator: Any, eval_ds: VideoDataset) -> list[Row]:
    """Sample the eval prompts, decode, score; NLL per layer; sampling speed; a sample sheet."""
    gen_spec = ctx.variant.spec.evaluate.generation
    count = gen_spec.num_samples or ctx.variant.spec.dataset.eval_clips
    metrics = MetricSet(ctx, gen_spec.metrics)
    videos, reals, prompts, seconds, tokens = [], [], [], 0.0, 0
    eval_pyramids = []
    with torch.no_grad():
        for i, batch in enumerate(clip_batches(eval_ds, count, ctx.variant.spec.evaluate.batch_size, ctx.device,
                                               ctx.progress, "generate")):
            start = time.perf_counter()
            pyramid = generator.sample(batch["captions"], cfg_scale=gen_spec.cfg_scale, seed=ctx.seed * 1000 + i,
                                       temperature=gen_spec.temperature, top_k=gen_spec.top_k, top_p=gen_spec.top_p)
            seconds += time.perf_counter() - start
            tokens += int(sum(t[0].numel() for t in pyramid.layers)) * pyramid.batch_size
            video = tokenizer.decode(pyramid.to(ctx.device))
            metrics.update(**metric_inputs(batch, video))
            if gen_spec.nll and generator.has_nll:
                eval_pyramids.append(tokenizer.encode(batch["video"]).to("cpu"))
            videos.append(video.cpu())
            reals.append(batch["video"].cpu())
            prompts += batch["captions"]
    rows = metrics.rows()
    ctx.per_clip += metrics.clip_rows()  # prompt i is clip i of the eval split in every variant: paired claims
    clips = len(prompts)
    rows += [row("sample_tokens_per_s", tokens / max(seconds, 1e-9), True, timing=True),
             row("sample_s_per_clip", seconds / max(clips, 1), False, timing=True)]
    if gen_spec.nll and eval_pyramids:
        nll = generator.nll_bits_per_token(TokenPyramid.cat(eval_pyramids), prompts)
        rows += [row(f"nll_bits/L{layer}", float(v), False) for layer, v in sorted(nll.items())]
    elif gen_spec.nll:
        rows.append(row("nll_bits", math.nan, False, text=f"n/a: {type(generator).__name__} has no nll_bits_per_token"))
    if gen_spec.sample_sheet:
        save_sample_sheet(torch.cat(videos), prompts, ctx.run_dir / "samples", fps=eval_ds.fps, real=torch.cat(reals))
    return rows
