"""The notes below a results table about the runs themselves: component versions, failed runs, clips and files
left out, and runs computed with different CPU kernels, from the runs' summaries or a folder's ``manifest.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cpumode import kernel_level
from ..io import read_json


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
