"""Tidy results -> paper-style tables (md, csv, html) and plots (PNG), with the notes below a table.

The tidy frame (one row per run x metric, and per training step for curves) is described in :mod:`.results`.
One job per module: :mod:`.results` (the frame: read, write, reference rows), :mod:`.tables` (tables),
:mod:`.plots` (figures), :mod:`.notes` (notes about the runs), :mod:`.outputs` (every output of a results folder:
``write_report``, ``rerender``) and :mod:`.samples` (sample sheets of generated videos). Every name is re-exported
here, so ``from hitvideo_bench.report import X`` and ``report.X`` work as when this was one module.
"""

from __future__ import annotations

from .notes import kernel_notes, manifest_notes, run_notes, summary_lists
from .outputs import render, rerender, write_report
from .plots import plot, rd_groups, save_figure, swept_values
from .results import COLUMNS, load_results, reference_rows, write_results
from .samples import save_sample_sheet
from .tables import ARROWS, build_table, table_metrics, write_tables

__all__ = [
    "ARROWS", "COLUMNS", "build_table", "kernel_notes", "load_results", "manifest_notes", "plot", "rd_groups",
    "reference_rows", "render", "rerender", "run_notes", "save_figure", "save_sample_sheet", "summary_lists",
    "swept_values", "table_metrics", "write_report", "write_results", "write_tables",
]
