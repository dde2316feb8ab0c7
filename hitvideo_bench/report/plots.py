"""Figures of a results folder (PNG): bar, line, layers, rate-distortion and sweep plots, drawn with matplotlib.

One :class:`PlotSpec` gives one figure; the helpers here read the tidy frame (:mod:`.results`) and return False when
there is nothing to draw. :func:`save_figure` is looked up on the package, so a test can replace it there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..io import atomic_path
from .results import _final

if TYPE_CHECKING:
    from ..recipe.schema import PlotSpec


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot(df: pd.DataFrame, spec: PlotSpec, variant_order: list[str], out_dir: Path) -> Path | None:
    """Draw one plot; returns its path (None when there is nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = df[df["source"].isin(["measured", "timing"])]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    draw = {"bar": _bar_plot, "line": _line_plot, "layers": _layers_plot, "rd": _rd_plot,
            "sweep": _sweep_plot}[spec.kind]
    if not draw(ax, measured, spec, variant_order):
        plt.close(fig)
        return None
    ax.set_title(spec.title or f"{spec.metric} ({spec.kind})")
    ax.grid(alpha=0.3)
    name = spec.file or f"{spec.kind}_{spec.metric.replace('/', '_')}.png"
    from . import save_figure  # the package's, at each call: where a test replaces it

    return save_figure(fig, out_dir / name)


def _bar_plot(ax, measured: pd.DataFrame, spec: PlotSpec, variant_order: list[str]) -> bool:
    """Mean (± std over seeds) of ``spec.metric`` per variant, grouped when the spec has groups."""
    final = _final(measured)
    data = final[final["metric"] == spec.metric].groupby("variant")["value"].agg(["mean", "std"])
    data = data.reindex([v for v in variant_order if v in data.index]).dropna(subset=["mean"])
    if data.empty:
        return False
    if spec.groups:
        _grouped_bars(ax, data, spec.groups)
    else:
        ax.bar(data.index, data["mean"], yerr=data["std"].fillna(0), capsize=3, color="tab:blue")
        ax.tick_params(axis="x", rotation=30)
    ax.set_ylabel(spec.metric)
    return True


def _line_plot(ax, measured: pd.DataFrame, spec: PlotSpec, variant_order: list[str]) -> bool:
    """``spec.metric`` over training steps, one line per variant."""
    curve = measured[(measured["metric"] == spec.metric) & measured["step"].notna()]
    if curve.empty:
        return False
    for variant, sub in curve.groupby("variant", sort=False):
        mean = sub.groupby("step")["value"].mean()
        ax.plot(mean.index, mean.values, marker="o", label=variant)
    ax.set_xlabel("training step")
    ax.set_ylabel(spec.metric)
    ax.legend()
    return True


def _layers_plot(ax, measured: pd.DataFrame, spec: PlotSpec, variant_order: list[str]) -> bool:
    """``spec.metric`` decoded from the coarsest k layers (``metric@k`` rows), one line per variant."""
    from matplotlib.ticker import MaxNLocator

    final = _final(measured)
    prefix = f"{spec.metric}@"
    sub = final[final["metric"].str.startswith(prefix)]
    if sub.empty:
        return False
    sub = sub.assign(k=sub["metric"].str[len(prefix):].astype(int))
    for variant, part in sub.groupby("variant", sort=False):
        mean = part.groupby("k")["value"].mean()
        ax.plot(mean.index, mean.values, marker="o", label=variant)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k counts layers: no ticks at 1.5, 2.5
    ax.set_xlabel("layers decoded (coarsest k)")
    ax.set_ylabel(spec.metric)
    ax.legend()
    return True


def rd_groups(variants: list[str]) -> dict[str, list[str]]:
    """Default lines of an ``rd`` plot: variants named ``GROUP@SETTING`` (e.g. ``x264@crf30``) by GROUP."""
    groups: dict[str, list[str]] = {}
    for variant in variants:
        if "@" in variant:
            groups.setdefault(variant.split("@", 1)[0], []).append(variant)
    return groups


def _rd_plot(ax, measured: pd.DataFrame, spec: PlotSpec, variant_order: list[str]) -> bool:
    """Rate-distortion: ``spec.metric`` over the first rate metric of ``spec.x``; a line per group (a codec's
    CRF sweep), a point per other variant (a tokenizer), drawn filled at the first rate metric and hollow at
    each further one (e.g. its entropy-coded bpp), joined by a dotted line."""
    final = _final(measured)
    means = final[final["metric"].isin([spec.metric, *spec.x])].groupby(["variant", "metric"])["value"].mean()
    means = means.unstack()
    rate, others = spec.x[0], spec.x[1:]
    if means.empty or rate not in means or spec.metric not in means:
        return False
    order = [v for v in dict.fromkeys(variant_order + list(means.index)) if v in means.index]
    groups = spec.groups or rd_groups(order)
    in_groups = {v for members in groups.values() for v in members}
    drawn = False
    for group, members in groups.items():
        line = means.reindex([v for v in members if v in means.index])[[rate, spec.metric]].dropna()
        if not line.empty:
            line = line.sort_values(rate)
            ax.plot(line[rate], line[spec.metric], marker="o", markersize=4, label=group)
            drawn = True
    for variant in (v for v in order if v not in in_groups):
        y, x = means.loc[variant, spec.metric], means.loc[variant, rate]
        if pd.isna(x) or pd.isna(y):
            continue
        (point,) = ax.plot([x], [y], marker="*", markersize=13, linestyle="none", label=f"{variant} ({rate})")
        for other, marker in zip(others, "sDv^<>"):
            if other in means and not pd.isna(means.loc[variant, other]):
                x_other = means.loc[variant, other]
                ax.plot([x_other, x], [y, y], ":", color=point.get_color(), linewidth=1)
                ax.plot([x_other], [y], marker=marker, markersize=8, markerfacecolor="none", linestyle="none",
                        color=point.get_color(), label=f"{variant} ({other})")
        drawn = True
    ax.set_xlabel(f"rate: {rate}" + (f" (filled); {', '.join(others)} (hollow)" if others else ""))
    ax.set_ylabel(spec.metric)
    ax.legend(fontsize=7)
    return drawn


def swept_values(variants: Sequence[str], key: str) -> dict[str, tuple[str, float]]:
    """Variant -> (the variant it was swept from, its value of ``key``), read from the names a sweep gives
    (``ORIGIN-KEY=VALUE[-KEY2=VALUE2]``); variants without a numeric ``key`` are left out."""
    out = {}
    for variant in variants:
        match = re.search(rf"-{re.escape(key)}=([^-=]+(?:e-\d+)?)(?=-[\w.]+=|$)", variant)
        if match:
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            origin = variant[:match.start()] + variant[match.end():]
            out[variant] = (origin, value)
    return out


def _sweep_plot(ax, measured: pd.DataFrame, spec: PlotSpec, variant_order: list[str]) -> bool:
    """``spec.metric`` (mean, ± std over seeds) over the swept setting ``spec.by``; a line per origin variant."""
    final = _final(measured)
    data = final[final["metric"] == spec.metric].groupby("variant")["value"].agg(["mean", "std"])
    swept = swept_values([v for v in dict.fromkeys(variant_order + list(data.index)) if v in data.index], spec.by)
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for variant, (origin, value) in swept.items():
        mean, std = data.loc[variant, "mean"], data.loc[variant, "std"]
        if not pd.isna(mean):
            lines.setdefault(origin, []).append((value, mean, 0.0 if pd.isna(std) else std))
    for origin, points in lines.items():
        xs, ys, errs = zip(*sorted(points))
        (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=origin)
        if any(errs):
            ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor=line.get_color(), capsize=2)
    ax.set_xlabel(spec.by)
    ax.set_ylabel(spec.metric)
    if lines:
        ax.legend(fontsize=8)
    return bool(lines)


def _grouped_bars(ax, data: pd.DataFrame, groups: dict[str, list[str]]) -> None:
    """One cluster of bars per group; bars named by what their variant adds to the group's name."""
    import numpy as np

    labels = list(dict.fromkeys(_member_label(v, g) for g, members in groups.items() for v in members))
    width = 0.8 / max(len(labels), 1)
    for j, label in enumerate(labels):
        xs, ys, errs = [], [], []
        for i, (group, members) in enumerate(groups.items()):
            for variant in members:
                if _member_label(variant, group) == label and variant in data.index:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(data.loc[variant, "mean"])
                    errs.append(0 if np.isnan(data.loc[variant, "std"]) else data.loc[variant, "std"])
        ax.bar(xs, ys, width=width, yerr=errs, capsize=2, label=label)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.legend(fontsize=8)


def _member_label(variant: str, group: str) -> str:
    label = variant[len(group):].lstrip("-_") if variant.startswith(group) else variant
    return label or "base"
