"""Every output of a results folder: after a run (:func:`write_report`) or re-rendered from a finished folder
(:func:`rerender`, ``hitbench table DIR``): tidy CSVs, tables, plots and claims, with their notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..claims import load_per_clip, write_claims
from ..errors import BadInput
from ..io import write_text
from .notes import manifest_notes
from .plots import plot
from .results import COLUMNS, load_results, reference_rows, write_results
from .tables import table_metrics, write_tables

if TYPE_CHECKING:
    from ..recipe import ResolvedRecipe
    from ..recipe.schema import PlotSpec, TableSpec


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

    from ..recipe.schema import ClaimSpec, PlotSpec, ReferenceRow, TableSpec

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
