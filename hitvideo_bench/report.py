"""Tidy results -> paper-style tables (md, csv, html) and plots (PNG).

The tidy frame has one row per run x metric (and per training step for curves):
``recipe, variant, seed, metric, value, higher_is_better, step, text, provenance, source``.
``text`` holds non-numeric cells (a latent shape, ``unavailable: <hint>``); ``source`` is
``measured``, ``timing`` (wall-clock figures: machine-dependent, kept in ``timings.csv`` apart
from the reproducible ``metrics.csv``) or where a reference row was copied from (``paper``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .claims import load_per_clip, write_claims
from .cpumode import kernel_level
from .errors import BadInput
from .io import atomic_path, read_json, write_text

if TYPE_CHECKING:
    import torch

    from .recipe import ResolvedRecipe
    from .recipe.schema import PlotSpec, ReferenceRow, TableSpec

COLUMNS = ["recipe", "variant", "seed", "metric", "value", "higher_is_better", "step", "text", "provenance",
           "source"]
ARROWS = {True: " ↑", False: " ↓"}


def load_results(path: str | Path) -> pd.DataFrame:
    """The tidy results of a finished run folder: ``metrics.csv`` plus ``timings.csv`` when present."""
    path = Path(path)
    csv = path / "metrics.csv" if path.is_dir() else path
    if not csv.exists():
        raise BadInput(f"no results at {path}: expected {csv} (a folder written by 'hitbench run')")
    frames = [_read_csv(f) for f in (csv, csv.with_name("timings.csv")) if f.exists()]
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BadInput(f"{csv}: not a hitbench results file (missing columns: {', '.join(missing)})")
    df["text"] = df["text"].fillna("")
    df["provenance"] = df["provenance"].fillna("")
    return df[COLUMNS]


def _read_csv(path: Path) -> pd.DataFrame:
    """A results CSV; one that cannot be read or parsed is bad input naming the file."""
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BadInput(f"{path}: not a readable results file ({type(exc).__name__}: {exc})") from None


def write_results(df: pd.DataFrame, folder: Path) -> list[Path]:
    """Split tidy rows into ``timings.csv`` (wall-clock) and ``metrics.csv`` (written last), atomically."""
    timing = df["source"] == "timing"
    write_text(folder / "timings.csv", df[timing].to_csv(index=False))
    write_text(folder / "metrics.csv", df[~timing].to_csv(index=False))
    return [folder / "metrics.csv", folder / "timings.csv"]


def _final(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of final values (training-curve rows carry a step)."""
    return df[df["step"].isna()]


def _cell(group: pd.DataFrame, decimals: int) -> str:
    texts = [t for t in group["text"] if t]
    values = group["value"].dropna()
    if values.empty:
        return texts[0] if texts else ""
    mean = values.mean()
    if all(float(v).is_integer() for v in values):
        fmt = "{:.0f}"
    elif abs(mean) >= 100:
        fmt = "{:.1f}"
    else:
        fmt = f"{{:.{decimals}f}}"
    if len(values) > 1:
        return f"{fmt.format(mean)} ± {fmt.format(values.std(ddof=1))}"
    return fmt.format(mean)


def build_table(df: pd.DataFrame, table: TableSpec, variant_order: list[str]) -> pd.DataFrame:
    """Pivot tidy rows into variant x metric cells (mean ± std over seeds), arrows on headers."""
    final = _final(df)
    metrics = table.columns or list(dict.fromkeys(final["metric"]))
    known = set(final["metric"])
    order = list(dict.fromkeys(variant_order + list(final["variant"])))
    records = []
    for variant in order:
        sub = final[final["variant"] == variant]
        if sub.empty:
            continue
        source = next((x for x in sub["source"] if x not in ("measured", "timing")), "measured")
        rec: dict[str, Any] = {"variant": variant, "source": source}
        for metric in metrics:
            cell = sub[sub["metric"] == metric]
            rec[metric] = _cell(cell, table.decimals) if not cell.empty else ("" if metric in known else "n/a")
        records.append(rec)
    out = pd.DataFrame.from_records(records, columns=["variant", "source", *metrics])
    if table.sort_by and table.sort_by in metrics:
        key = out[table.sort_by].map(_sort_key)
        out = out.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")
    higher = final.dropna(subset=["higher_is_better"]).groupby("metric")["higher_is_better"].first()
    out.columns = ["variant", "source"] + [m + ARROWS.get(_as_bool(higher.get(m)), "") for m in metrics]
    for metric in table.deltas:
        out[f"Δ{metric} vs baseline"] = [_delta(final, v, table.baseline.get(v), metric, table.decimals)
                                         for v in out["variant"]]
    if (out["source"] == "measured").all():
        out = out.drop(columns="source")
    return out.reset_index(drop=True)


def _delta(final: pd.DataFrame, variant: str, baseline: str | None, metric: str, decimals: int) -> str:
    """Mean of ``metric`` for ``variant`` minus that of its baseline ('' where there is none)."""
    if not baseline:
        return ""
    means = final[final["metric"] == metric].groupby("variant")["value"].mean()
    if variant not in means or baseline not in means:
        return ""
    return f"{means[variant] - means[baseline]:+.{decimals}f}"


def _as_bool(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _sort_key(cell: str) -> float:
    try:
        return float(str(cell).split(" ")[0])
    except ValueError:
        return math.inf


def write_tables(df: pd.DataFrame, table: TableSpec, variant_order: list[str], out_dir: Path,
                 title: str, notes: Sequence[str] = ()) -> list[Path]:
    """table.md / table.csv / table.html, each written atomically; ``notes`` go below the markdown table."""
    wide = build_table(df, table, variant_order)
    heading = table.title or title
    # markdown keeps cells short: a column no variant could measure goes into one note below the table,
    # and each distinct "unavailable: <hint>" left becomes a lettered note
    hints = sorted({c for c in wide.to_numpy().ravel() if isinstance(c, str) and c.startswith("unavailable")})
    labels = {h: f"unavailable ({chr(ord('a') + i)})" for i, h in enumerate(hints)}

    def no_number(column: pd.Series) -> bool:  # every variant that measures it lacks its weights
        cells = [str(v) for v in column if str(v) != ""]
        return bool(cells) and all(v.startswith("unavailable") for v in cells)

    dropped = [c for c in wide.columns[1:] if no_number(wide[c])]
    short = wide.drop(columns=dropped).replace(labels)
    first = {c: next(v for v in wide[c] if str(v).startswith("unavailable")) for c in dropped}
    footnotes = _footnotes(df, labels, [(c, labels[first[c]]) for c in dropped], notes)
    md = f"# {heading}\n\n{short.to_markdown(index=False, disable_numparse=True)}\n\n{footnotes}"
    files = [out_dir / "table.md", out_dir / "table.csv", out_dir / "table.html"]
    write_text(files[0], md)
    write_text(files[1], wide.to_csv(index=False))
    write_text(files[2], f"<h1>{heading}</h1>\n" + wide.to_html(index=False, escape=True) + "\n")
    return files


def _footnotes(df: pd.DataFrame, labels: dict[str, str], dropped: list[tuple[str, str]],
               extra: Sequence[str] = ()) -> str:
    """The notes below a markdown table; ``dropped``: (column, its unavailable label) left out of the table;
    ``extra``: the run's own notes (component versions, failed runs)."""
    notes = ["↑ higher is better, ↓ lower is better; mean ± std over seeds where several."]
    if (~df["source"].isin(["measured", "timing"])).any():
        notes.append("Rows whose source is not 'measured' are copied from the publication named, not measured here.")
    if dropped:
        names = [f"{col.removesuffix(' ↑').removesuffix(' ↓')} {label.removeprefix('unavailable ')}"
                 for col, label in dropped]
        notes.append("No number for any variant (weights missing), so left out of this table (table.csv and "
                     "table.html keep the columns): " + ", ".join(names))
    notes += [f"{label}: {hint.removeprefix('unavailable: ')}" for hint, label in labels.items()]
    notes += extra
    return "\n".join(f"- {n}" for n in notes) + "\n"


# ----------------------------------------------------------------------------------------- plots


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


def reference_rows(recipe: str, references: Sequence[ReferenceRow]) -> pd.DataFrame:
    """Tidy rows of the values a recipe copies from publications (never measured here)."""
    rows = []
    for ref in references:
        for metric, value in ref.values.items():
            numeric = isinstance(value, (int, float))
            rows.append({"recipe": recipe, "variant": ref.variant, "seed": None, "metric": metric,
                         "value": float(value) if numeric else float("nan"), "higher_is_better": None,
                         "step": None, "text": "" if numeric else str(value), "provenance": ref.note,
                         "source": ref.source})
    return pd.DataFrame(rows, columns=COLUMNS)


def run_notes(components: Mapping[str, Mapping[str, Mapping[str, str]]], failed: Mapping[str, Mapping[str, Any]],
              failed_clips: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
              dropped_files: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Notes below a table: the version of every component the runs used (by providing plugin), the runs
    that failed (``failed``: run -> {error, log}, as in ``manifest.json``'s ``failed_runs``), the clips left
    out of a run's values (``failed_clips``: run -> [{clip, reason}], as in its summary) and the files left out
    of a run's data (``dropped_files``: run -> {file: why}, as in its summary; runs that dropped the same share
    a note)."""
    by_plugin: dict[str, set[str]] = {}
    for identity in components.values():
        for part in identity.values():
            by_plugin.setdefault(f"{part['plugin']} {part['plugin_version']}", set()).add(
                f"{part['name']} {part['version']}")
    notes = []
    if by_plugin:
        notes.append("Component versions: " + "; ".join(f"{plugin}: {', '.join(sorted(names))}"
                                                        for plugin, names in sorted(by_plugin.items())))
    if failed:
        notes.append("Failed runs, not in this table (re-run the recipe to retry them): " + "; ".join(
            f"{run} ({str(info.get('error') or 'failed').splitlines()[0]})" for run, info in failed.items()))
    for run, clips in (failed_clips or {}).items():
        notes.append(f"{run}: values cover the clips measured; {len(clips)} failed and left out (its `clips` row "
                     "counts the clips measured): " + "; ".join(f"clip {c.get('clip')}: {c.get('reason')}"
                                                                for c in clips))
    by_files: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for run, files in (dropped_files or {}).items():
        by_files.setdefault(tuple(sorted(files.items())), []).append(run)
    for files, runs in by_files.items():
        notes.append(f"{', '.join(runs)}: files left out of the data, they could not be read: "
                     + "; ".join(f"{file} ({why})" for file, why in files))
    return notes


def summary_lists(summaries: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``failed_clips`` and the ``dropped_files`` of the runs that have them (``summaries``: run -> its summary),
    as :func:`run_notes` takes them."""
    return tuple({run: s[key] for run, s in summaries.items() if isinstance(s, dict) and s.get(key)}
                 for key in ("failed_clips", "dropped_files"))


def kernel_notes(summaries: Mapping[str, Any]) -> list[str]:
    """A note below a table whose runs were computed with different CPU kernels (``summaries``: run -> its
    summary, as in ``manifest.json``'s ``runs``, each with the ``machine`` it ran on)."""
    levels: dict[str, list[str]] = {}
    for run, summary in summaries.items():
        machine = summary.get("machine") if isinstance(summary, dict) else None
        levels.setdefault(kernel_level(machine) if isinstance(machine, dict) else "not recorded", []).append(run)
    if len(levels) < 2:
        return []
    return ["Runs computed with different CPU kernels, so their numbers can differ in float rounding besides what "
            "the recipe varies (docs/running.md): " + "; ".join(f"{level}: {', '.join(runs)}"
                                                                for level, runs in sorted(levels.items()))]


def write_report(df: pd.DataFrame, resolved: ResolvedRecipe, out_dir: Path, per_clip: pd.DataFrame | None = None,
                 notes: Sequence[str] = ()) -> list[Path]:
    """Tidy metrics.csv, the tables, the claims and the plots of a recipe run; ``notes`` go below the table."""
    recipe = resolved.recipe
    variants = [v.name for v in resolved.variants]
    files = render(df, recipe.table, recipe.plots, variants, out_dir, recipe.description or resolved.name, notes)
    if per_clip is not None and not per_clip.empty:
        write_text(out_dir / "per_clip.csv", per_clip.to_csv(index=False))
        files.append(out_dir / "per_clip.csv")
    return files + write_claims(per_clip if per_clip is not None else load_per_clip(out_dir), recipe.claims,
                                table_metrics(df, recipe.table), variants, out_dir)


def table_metrics(df: pd.DataFrame, table: TableSpec) -> list[str]:
    """The metrics a table shows: its ``columns``, else every final metric."""
    return table.columns or list(dict.fromkeys(_final(df)["metric"]))


def render(df: pd.DataFrame, table: TableSpec, plots: list[PlotSpec], variant_order: list[str], out_dir: Path,
           title: str, notes: Sequence[str] = ()) -> list[Path]:
    """Write every output of a results folder from its tidy frame."""
    files = [*write_results(df, out_dir), *write_tables(df, table, variant_order, out_dir, title, notes)]
    for spec in plots:
        path = plot(df, spec, variant_order, out_dir)
        if path is not None:
            files.append(path)
    return files


def rerender(results_dir: str | Path) -> list[Path]:
    """``hitbench table DIR``: re-render tables and plots from ``metrics.csv`` and ``resolved.yaml``, with the
    notes ``manifest.json`` gives (component versions, failed runs). A folder without ``metrics.csv`` (a run
    interrupted before its report) is rendered from its finished runs."""
    import yaml

    from .recipe.schema import ClaimSpec, PlotSpec, ReferenceRow, TableSpec

    results_dir = Path(results_dir)
    finished = sorted((results_dir / "runs").glob("*/seed-*/metrics.csv"))
    from_runs = not (results_dir / "metrics.csv").exists() and bool(finished)
    if not from_runs:
        df = load_results(results_dir)  # no results at all: its error says what a results folder holds
    resolved_path = results_dir / "resolved.yaml"
    if not resolved_path.exists():
        raise BadInput(f"{results_dir}: no resolved.yaml (not a folder written by 'hitbench run')")
    try:
        data = yaml.safe_load(resolved_path.read_text(encoding="utf-8"))
        table = TableSpec.model_validate(data.get("table", {}))
        plots = [PlotSpec.model_validate(p) for p in data.get("plots", [])]
        claims = [ClaimSpec.model_validate(c) for c in data.get("claims", [])]
        references = [ReferenceRow.model_validate(r) for r in data.get("references", [])]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, ValueError) as exc:
        raise BadInput(f"{resolved_path}: not a resolved recipe written by 'hitbench run' "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    files: list[Path] = []
    if from_runs:
        df = pd.concat([load_results(f.parent) for f in finished]
                       + [reference_rows(data.get("recipe", ""), references)], ignore_index=True)[COLUMNS]
        per_clip = pd.concat([load_per_clip(f.parent) for f in finished], ignore_index=True)
        if not per_clip.empty:
            write_text(results_dir / "per_clip.csv", per_clip.to_csv(index=False))
            files.append(results_dir / "per_clip.csv")
    else:
        per_clip = load_per_clip(results_dir)
    variants = list(data.get("variants", {}))
    title = data.get("description") or data.get("recipe", results_dir.name)
    files += render(df, table, plots, variants, results_dir, title, manifest_notes(results_dir / "manifest.json"))
    return files + write_claims(per_clip, claims, table_metrics(df, table), variants, results_dir)


def manifest_notes(path: Path) -> list[str]:
    """The :func:`run_notes` of a results folder's ``manifest.json`` (none when it has none)."""
    try:
        manifest = read_json(path)
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict):
        return []
    runs = manifest.get("runs") or {}
    components = {run: s["components"] for run, s in runs.items() if isinstance(s, dict) and s.get("components")}
    return run_notes(components, manifest.get("failed_runs") or {}, *summary_lists(runs)) + kernel_notes(runs)


def save_sample_sheet(videos: torch.Tensor, prompts: list[str], folder: Path, fps: float = 8.0,
                      frames_shown: int = 8, min_frame_size: int = 128, real: torch.Tensor | None = None) -> list[Path]:
    """A PNG grid (a prompt line over a row of frames, per sample; with ``real``, the real clip of the same caption
    to the right of the generated one, after a gap) and a GIF per sample, for people to judge the samples.

    Frames are pasted with PIL, enlarged by a whole factor (nearest) to at least ``min_frame_size`` pixels
    high; a matplotlib axis per frame took about 9 s for 32 tiny samples.
    """
    import torch
    from PIL import Image, ImageDraw

    from .video import write_video

    n, _, T, H, W = videos.shape
    picks = sorted({round(i * (T - 1) / max(frames_shown - 1, 1)) for i in range(min(frames_shown, T))})
    zoom = max(1, -(-min_frame_size // H))
    fh, fw, pad, caption = H * zoom, W * zoom, 2, 14
    gap = 4 * pad if real is not None else 0
    rows = [videos] if real is None else [videos, real]
    frames = [(v[:, :, picks].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
              for v in rows]
    width = len(picks) * (fw + pad)
    sheet = Image.new("RGB", (pad + len(rows) * width + gap, pad + n * (caption + fh + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        top = pad + i * (caption + fh + pad)
        label = prompts[i][:100] + ("   (generated | real clip of this caption)" if real is not None and i == 0 else "")
        draw.text((pad, top), label, fill="black")
        for r, clip_frames in enumerate(frames):
            for j in range(len(picks)):
                frame = Image.fromarray(clip_frames[i, j]).resize((fw, fh), Image.Resampling.NEAREST)
                sheet.paste(frame, (pad + r * (width + gap) + j * (fw + pad), top + caption))
    with atomic_path(folder / "sample_sheet.png") as tmp:
        sheet.save(tmp, format="PNG")
    files = [folder / "sample_sheet.png"]
    for i in range(n):
        path = folder / f"sample_{i:03d}.gif"
        write_video(path, videos[i], fps)
        files.append(path)
    return files
