"""The tidy results frame: its columns, reading and writing ``metrics.csv`` / ``timings.csv``, reference rows.

The tidy frame has one row per run x metric (and per training step for curves):
``recipe, variant, seed, metric, value, higher_is_better, step, text, provenance, source``.
``text`` holds non-numeric cells (a latent shape, ``unavailable: <hint>``); ``source`` is
``measured``, ``timing`` (wall-clock figures: machine-dependent, kept in ``timings.csv`` apart
from the reproducible ``metrics.csv``) or where a reference row was copied from (``paper``).
The tables, plots and notes all read this frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import BadInput
from ..io import write_text

if TYPE_CHECKING:
    from ..recipe.schema import ReferenceRow

COLUMNS = ["recipe", "variant", "seed", "metric", "value", "higher_is_better", "step", "text", "provenance",
           "source"]


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
