"""Result tables: tidy rows pivoted to variant x metric cells (mean ± std over seeds), written as md, csv, html.

Apart from the plots so that cell formats, column order, deltas and the notes below a markdown table are in one
place; the notes' text about runs comes from :mod:`.notes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..io import write_text
from .results import _final

if TYPE_CHECKING:
    from ..recipe.schema import TableSpec

ARROWS = {True: " ↑", False: " ↓"}


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


def table_metrics(df: pd.DataFrame, table: TableSpec) -> list[str]:
    """The metrics a table shows: its ``columns``, else every final metric."""
    return table.columns or list(dict.fromkeys(_final(df)["metric"]))
