"""Paper claims as paired comparisons with bootstrap confidence intervals (a recipe's ``claims:``).

Every variant is measured on the same evaluation clips, so a claim is scored clip by clip: the contrast
``sum_v weight_v * metric_v(clip)`` per clip and seed. Its mean gets a percentile bootstrap interval,
resampling clips (and, with several seeds, seeds too: a two-level bootstrap), and a verdict. With one seed
the interval covers the choice of clips only, not training randomness, and the report says so.

A metric of the whole set of clips (a Fréchet distance) has no value per clip. The run then records it on
:data:`RESAMPLED_DRAWS` bootstrap resamples of the clips, as rows ``METRIC#resample`` of ``per_clip.csv``
(``clip`` is the resample's number, -1 the value on all clips; a row ``METRIC#clips`` holds how many clips).
The resamples depend only on the number of clips, so every variant is measured on the same ones: a contrast
is formed resample by resample (paired), its interval is the percentiles of those contrasts (with several
seeds, seeds are resampled too), and its mean is the contrast of the values on all clips.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .io import write_text

if TYPE_CHECKING:
    from .recipe.schema import ClaimSpec

PER_CLIP_COLUMNS = ["recipe", "variant", "seed", "metric", "clip", "value"]
#: bootstrap resamples; the generator is seeded, so a report is reproducible
RESAMPLES = 4000
#: resamples of the clips on which a run recomputes a whole-set metric (each one a full recomputation)
RESAMPLED_DRAWS = 1000
#: suffix of the per-clip rows that hold a whole-set metric on resamples of the clips
RESAMPLE = "#resample"
#: suffix of the row that holds how many clips those resamples draw from
RESAMPLED_CLIPS = "#clips"


def load_per_clip(path: Path) -> pd.DataFrame:
    """``per_clip.csv`` of a run or results folder (an empty frame when there is none)."""
    csv = path / "per_clip.csv" if path.is_dir() else path
    if not csv.exists():
        return pd.DataFrame(columns=PER_CLIP_COLUMNS)
    return pd.read_csv(csv)[PER_CLIP_COLUMNS]


def bootstrap_mean(values: np.ndarray, confidence: float, resamples: int = RESAMPLES, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Mean of ``values (seeds, clips)`` and its percentile bootstrap interval (seeds and clips resampled)."""
    rng = np.random.default_rng(seed)
    s, n = values.shape
    rows = rng.integers(s, size=(resamples, s)) if s > 1 else np.zeros((resamples, 1), dtype=int)
    cols = rng.integers(n, size=(resamples, n))
    stats = values[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(values.mean()), float(lo), float(hi)


def bootstrap_indices(clips: int, resamples: int = RESAMPLED_DRAWS, seed: int = 0) -> np.ndarray:
    """``(resamples, clips)`` clip positions drawn with replacement; the same for every run with this many clips,
    so that whole-set metrics of two variants are compared on the same resamples."""
    return np.random.default_rng([seed, clips]).integers(clips, size=(resamples, clips))


def resampled_interval(values: np.ndarray, confidence: float, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile interval of a whole-set statistic from ``values (seeds, 1 + resamples)``: column 0
    the value on all clips, the others its value on the shared resamples (seeds resampled when several)."""
    rng = np.random.default_rng(seed)
    whole, draws = values[:, 0], values[:, 1:]
    s = values.shape[0]
    rows = rng.integers(s, size=(draws.shape[1], s)) if s > 1 else np.zeros((draws.shape[1], 1), dtype=int)
    stats = draws[rows, np.arange(draws.shape[1])[:, None]].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.nanpercentile(stats, [tail, 100 - tail])
    return float(whole.mean()), float(lo), float(hi)


def clip_count(per_clip: pd.DataFrame, metric: str) -> int:
    """How many clips a metric was measured on, per variant and seed (at most): its per-clip values, or the
    width of its resamples."""
    sub = per_clip[per_clip["metric"] == metric]
    if not sub.empty:
        return int(sub.groupby(["variant", "seed"])["clip"].nunique().max())
    sub = per_clip[per_clip["metric"] == metric + RESAMPLED_CLIPS]
    return int(sub["value"].max()) if not sub.empty else 0


def covers(seeds: int, clips: int) -> str:
    """What an interval over ``seeds`` x ``clips`` accounts for, in words."""
    if seeds > 1:
        return f"{clips} clips x {seeds} seeds (clips and seeds resampled)"
    return f"{clips} clips x 1 seed (clips resampled; training randomness not covered)"


def term_values(per_clip: pd.DataFrame, term: str, metric: str, suffix: str = "") -> pd.Series:
    """Per-clip values ``(seed, clip) -> value`` of one contrast term: ``VARIANT`` (the claim's metric) or
    ``VARIANT:METRIC``; with ``suffix`` :data:`RESAMPLE`, the metric's values on the resamples."""
    variant, _, own = term.partition(":")
    sub = per_clip[(per_clip["variant"] == variant) & (per_clip["metric"] == (own or metric) + suffix)]
    return sub.groupby(["seed", "clip"])["value"].mean()


def is_resampled(per_clip: pd.DataFrame, metric: str, contrast: dict[str, float]) -> bool:
    """Whether a contrast is measured on resamples: no term has per-clip values, some have resampled ones."""
    return (all(term_values(per_clip, term, metric).empty for term in contrast)
            and any(not term_values(per_clip, term, metric, RESAMPLE).empty for term in contrast))


def contrast_values(per_clip: pd.DataFrame, metric: str, contrast: dict[str, float]) -> tuple[np.ndarray, str]:
    """The contrast per (seed, clip) as ``(seeds, clips)``, over the seeds and clips every term has; or an
    empty array and the reason. For a whole-set metric, per (seed, resample): column 0 is all clips."""
    suffix = RESAMPLE if is_resampled(per_clip, metric, contrast) else ""
    terms = {term: term_values(per_clip, term, metric, suffix) for term in contrast}
    missing = [term if ":" in term else f"{term} ({metric})" for term, values in terms.items() if values.empty]
    if missing:
        return np.empty((0, 0)), f"no per-clip values for {', '.join(missing)}"
    wide = pd.DataFrame(terms).dropna()
    if wide.empty:
        return np.empty((0, 0)), "the terms share no measured clip"
    d = sum(weight * wide[term] for term, weight in contrast.items())
    return d.unstack("clip").dropna(axis=1).to_numpy(dtype=float), ""


def verdict(lo: float, hi: float, expect: str) -> str:
    """*holds* when the interval lies on the expected side of zero, *reversed* on the other, else *inconclusive*."""
    sign = 1 if expect == "positive" else -1
    if sign * lo > 0 and sign * hi > 0:
        return "holds"
    if sign * lo < 0 and sign * hi < 0:
        return "reversed"
    return "inconclusive"


def describe_contrast(contrast: dict[str, float]) -> str:
    terms = []
    for variant, weight in contrast.items():
        sign = "-" if weight < 0 else "+"
        size = "" if abs(weight) == 1 else f"{abs(weight):g}*"
        terms.append(f"{sign} {size}{variant}")
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else text


def evaluate_claims(per_clip: pd.DataFrame, claims: list[ClaimSpec], decimals: int = 3) -> pd.DataFrame:
    """One row per claim: the contrast, its mean and interval, the verdict and what the interval covers."""
    records = []
    for claim in claims:
        values, why = contrast_values(per_clip, claim.metric, claim.contrast)
        rec = {"claim": claim.id, "statement": claim.claim, "source": claim.source, "metric": claim.metric,
               "contrast": describe_contrast(claim.contrast), "expect": f"{claim.expect} (> 0)"
               if claim.expect == "positive" else "negative (< 0)"}
        if values.size == 0:
            records.append({**rec, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                            "verdict": f"not measured: {why}", "covers": ""})
            continue
        if values.shape[0] * values.shape[1] < 2:  # one clip of one seed: nothing to resample
            records.append({**rec, "mean": round(float(values.mean()), decimals), "ci_low": math.nan,
                            "ci_high": math.nan, "verdict": "inconclusive: one clip of one seed, no interval",
                            "covers": covers(*values.shape)})
            continue
        resampled = is_resampled(per_clip, claim.metric, claim.contrast)
        interval = resampled_interval if resampled else bootstrap_mean
        mean, lo, hi = interval(values, claim.confidence)
        clips = clip_count(per_clip, claim.metric) if resampled else values.shape[1]
        records.append({**rec, "mean": round(mean, decimals), "ci_low": round(lo, decimals),
                        "ci_high": round(hi, decimals), "confidence": claim.confidence,
                        "verdict": verdict(lo, hi, claim.expect), "covers": covers(values.shape[0], clips)})
    return pd.DataFrame.from_records(records)


def variant_intervals(per_clip: pd.DataFrame, metrics: list[str], variant_order: list[str], confidence: float = 0.95,
                      decimals: int = 3) -> pd.DataFrame:
    """Per variant and metric: the mean over seeds and clips with its bootstrap interval, as ``mean [lo, hi]``."""
    records = []
    order = [v for v in dict.fromkeys(variant_order + list(per_clip["variant"])) if v in set(per_clip["variant"])]
    for variant in order:
        rec = {"variant": variant}
        for metric in metrics:
            interval = bootstrap_mean
            sub = per_clip[(per_clip["variant"] == variant) & (per_clip["metric"] == metric)]
            if sub.empty:
                interval = resampled_interval
                sub = per_clip[(per_clip["variant"] == variant) & (per_clip["metric"] == metric + RESAMPLE)]
            if sub.empty:
                rec[metric] = ""
                continue
            values = sub.pivot_table(index="seed", columns="clip", values="value").dropna(axis=1).to_numpy(float)
            mean, lo, hi = interval(values, confidence)
            rec[metric] = f"{mean:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=["variant", *metrics])


def write_claims(per_clip: pd.DataFrame, claims: list[ClaimSpec], metrics: list[str], variant_order: list[str],
                 out_dir: Path) -> list[Path]:
    """``claims.md`` (verdicts, then per-variant means with intervals) and ``claims.csv``, written atomically."""
    if per_clip.empty and not claims:
        return []
    measured = set(per_clip["metric"])
    shown = [m for m in metrics if m in measured or m + RESAMPLE in measured]
    parts = []
    files = []
    if claims:
        table = evaluate_claims(per_clip, claims)
        write_text(out_dir / "claims.csv", table.to_csv(index=False))
        files.append(out_dir / "claims.csv")
        md = table.drop(columns=[c for c in ("statement", "source", "confidence") if c in table.columns])
        parts.append("## Claims (paired, per clip; 95 % bootstrap intervals)\n\n"
                     + md.to_markdown(index=False, disable_numparse=True) + "\n\n"
                     + "\n".join(f"- **{c.id}**: {c.claim}" + (f" ({c.source})" if c.source else "") for c in claims))
    if shown:
        intervals = variant_intervals(per_clip, shown, variant_order)
        seeds = per_clip["seed"].nunique()
        clips = max(clip_count(per_clip, m) for m in shown)
        parts.append(f"## Means with 95 % bootstrap intervals ({covers(seeds, clips)})\n\n"
                     + intervals.to_markdown(index=False, disable_numparse=True))
    write_text(out_dir / "claims.md", "\n\n".join(parts) + "\n")
    return [*files, out_dir / "claims.md"]
