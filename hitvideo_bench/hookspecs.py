"""Every extension point of hitvideo-bench. This module is the plugin reference.

A plugin is a module (found through the ``hitbench`` entry-point group, or named with
``-p MODULE``) that implements some of these hooks with ``@hitvideo_bench.hookimpl``.
Hooks are called with keyword arguments; an implementation may accept a subset of them, so a
new argument never breaks an existing plugin. A plugin whose implementation names an argument a
hook does not have, or a hook that does not exist, is rejected at registration with the plugin
and the hook named.

Phases:

1. registration -- :func:`hitbench_register_components`: add tokenizers, codecs, generators,
   metrics and datasets to the catalog by name. Register a ``"module:Class"`` string so heavy
   imports (torch models, transformers) happen only when the component is created.
   :func:`hitbench_register_weights`: declare the pretrained files those components need, so that
   ``hitbench weights`` lists, imports and downloads them as it does the built-ins'.
2. recipe -- :func:`hitbench_recipe_loaded`: inspect or adjust a loaded recipe before it is
   validated against the catalog.
3. execution -- :func:`hitbench_run_start`, :func:`hitbench_run_finished`: observe each run
   (variant x seed), e.g. to log to an experiment tracker.
4. report -- :func:`hitbench_report_written`: post-process the finished tables and plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from .catalog import Catalog
    from .weights import WeightInfo

PROJECT = "hitbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------- registration


@hookspec
def hitbench_register_components(catalog: Catalog) -> None:
    """Add components to ``catalog`` with :meth:`Catalog.add`.

    Example::

        @hookimpl
        def hitbench_register_components(catalog):
            catalog.add("tokenizer", "my-tok", "my_pkg.model:MyTokenizer",
                        description="8x8x8 FSQ tokenizer", version="1")

    The target (a class, or a ``"module:attr"`` string loaded lazily) must be a subclass of the
    base class of its kind in :mod:`hitvideo_bench.api` and carry a ``Config`` class.
    Registering a name that another plugin already registered for the same kind is an error that
    names both plugins.
    """


@hookspec
def hitbench_register_weights() -> list[WeightInfo]:
    """Return the pretrained files your components need, as :class:`hitvideo_bench.weights.WeightInfo`.

    Example::

        @hookimpl
        def hitbench_register_weights():
            return [WeightInfo("my-net", used_by="my-metric", path=torch_checkpoints() / "my-net-v1.pt",
                               url="https://example.org/my-net-v1.pt", sha256="<64 hex digits>")]

    Called each time the registry is read (paths follow the environment, e.g. ``TORCH_HOME``), so
    keep it cheap. A component finds its file with ``hitvideo_bench.weights.find(name)``, which raises
    :class:`~hitvideo_bench.errors.WeightsUnavailable` with a ``--download`` / ``--import`` hint when
    it is missing. A name (or alias) that another plugin declares too is an error naming both plugins.
    See docs/weights.md.
    """


# ---------------------------------------------------------------------------------- recipe


@hookspec
def hitbench_recipe_loaded(recipe: dict[str, Any], path: Path) -> None:
    """Called with the raw recipe mapping (after ``extends`` and ``--set``), before validation.

    Implementations may modify ``recipe`` in place (e.g. to inject site defaults).
    """


# ---------------------------------------------------------------------------------- execution


@hookspec
def hitbench_run_start(recipe: str, variant: str, seed: int, config: dict[str, Any], run_dir: Path) -> None:
    """A run (one variant with one seed) is about to start in ``run_dir``."""


@hookspec
def hitbench_run_finished(recipe: str, variant: str, seed: int, metrics: pd.DataFrame, run_dir: Path) -> None:
    """A run finished; ``metrics`` holds its tidy rows (recipe, variant, seed, metric, value, ...)."""


# ---------------------------------------------------------------------------------- report


@hookspec
def hitbench_report_written(results: pd.DataFrame, out_dir: Path, files: list[Path]) -> None:
    """Tables and plots of a recipe were written to ``out_dir`` (``files`` lists them)."""
