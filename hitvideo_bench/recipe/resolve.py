"""From a recipe file to fully resolved variants: validate, expand sweeps, check names, configs and shapes.

Everything short of training is checked here, and all problems are reported together.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ..cache import stable_hash
from ..catalog import Catalog, validation_problems
from ..components import deep_merge
from ..errors import BadInput, HitbenchError, Problem
from .loader import Located, apply_sets, load_located
from .schema import ComponentRef, Recipe, Variant

COMPONENT_FIELDS = {"tokenizer": "tokenizer", "codec": "codec", "generator": "generator", "dataset": "dataset",
                    "eval_dataset": "dataset"}


@dataclass
class ResolvedVariant:
    """A variant with every preset filled in and every component config validated."""

    name: str
    origin: str  # the variant it was expanded from (sweeps)
    spec: Variant
    configs: dict[str, Any] = field(default_factory=dict)  # field -> validated ComponentConfig
    clip_shape: tuple[int, int, int] | None = None

    @property
    def label(self) -> str:
        return self.spec.label or self.name


@dataclass
class ResolvedRecipe:
    """A recipe ready to run."""

    recipe: Recipe
    variants: list[ResolvedVariant]
    located: Located
    path: Path

    @property
    def name(self) -> str:
        return self.recipe.recipe

    def as_dict(self) -> dict[str, Any]:
        """The fully expanded recipe, as written to ``resolved.yaml``."""
        data = self.recipe.model_dump(mode="json", exclude={"variants", "sweep"})
        data["variants"] = {v.name: v.spec.model_dump(mode="json", exclude_none=True) for v in self.variants}
        return data

    def run_id(self) -> str:
        """Hash of the resolved recipe (not of its description, nor of how it executes, ``run:``): the results
        folder's name."""
        data = self.as_dict()
        data.pop("description", None)
        data.pop("run", None)
        return stable_hash(data)


def load_recipe(path: str | Path, sets: Iterable[str] = (), *, catalog: Catalog | None = None,
                hook=None, check_shapes: bool = True) -> ResolvedRecipe:
    """Load, override, validate, expand and check a recipe. Raises :class:`BadInput` with every problem."""
    from ..manager import get_plugins

    plugins = get_plugins()
    catalog = catalog or plugins.catalog
    path = Path(path)
    located = load_located(path)
    apply_sets(located, sets)
    located.data.setdefault("recipe", path.stem)
    (hook or plugins.hooks).hitbench_recipe_loaded(recipe=located.data, path=path)
    try:
        recipe = Recipe.model_validate(located.data)
    except ValidationError as exc:
        raise BadInput(validation_problems(exc, model=Recipe, locate=located.locate)) from None

    problems: list[Problem] = []
    variants: list[ResolvedVariant] = []
    for origin, body in recipe.variants.items():
        for name, merged in _expand(origin, body, recipe, located, problems):
            rv = _resolve_variant(name, origin, merged, recipe, catalog, located, problems, check_shapes)
            if rv is not None:
                variants.append(rv)
    _check_names(recipe, variants, located, problems)
    if problems:
        unique = {str(p): p for p in problems}  # sweeps and inherited fields repeat the same problem
        raise BadInput(list(unique.values()))
    return ResolvedRecipe(recipe, variants, located, path)


def _expand(origin: str, body: dict[str, Any], recipe: Recipe, located: Located,
            problems: list[Problem]) -> list[tuple[str, dict[str, Any]]]:
    """Merge the recipe-level dataset/evaluate under a variant body, then expand the sweep grid."""
    if not isinstance(body, dict):
        file, line = located.locate(f"variants.{origin}")
        problems.append(Problem("a variant must be a mapping", file, line, f"variants.{origin}"))
        return []
    base = {"dataset": recipe.dataset.model_dump(exclude_none=True),
            "evaluate": recipe.evaluate.model_dump(exclude_none=True)}
    if recipe.eval_dataset is not None:
        base["eval_dataset"] = recipe.eval_dataset.model_dump(exclude_none=True)
    merged = deep_merge(base, body)
    if not recipe.sweep:
        return [(origin, merged)]
    keys = list(recipe.sweep)
    out = []
    for values in itertools.product(*(recipe.sweep[k] for k in keys)):
        variant = copy.deepcopy(merged)
        ok = True
        for key, value in zip(keys, values):
            ok &= _set_dotted(variant, key, value, located, problems)
        if ok:
            suffix = "-".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            out.append((f"{origin}-{suffix}", variant))
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any, located: Located, problems: list[Problem]) -> bool:
    """Set a sweep key. Its path must exist in the variant, except inside a component's ``config``
    (whose fields are checked against the component's schema afterwards)."""
    parts = key.split(".")
    node, in_config = data, False
    for i, part in enumerate(parts[:-1]):
        in_config = in_config or part == "config"
        nxt = node.get(part)
        if nxt is None and in_config:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            file, line = located.locate(f"sweep.{key}")
            problems.append(Problem(f"sweep over a key that does not exist: {'.'.join(parts[:i + 1])!r} "
                                    f"(allowed here: {', '.join(sorted(node)) or 'nothing'})",
                                    file, line, f"sweep.{key}"))
            return False
        node = nxt
    if not in_config and parts[-1] not in node:
        file, line = located.locate(f"sweep.{key}")
        problems.append(Problem(f"sweep over a key that does not exist: {key!r} (allowed here: "
                                f"{', '.join(sorted(node)) or 'nothing'})", file, line, f"sweep.{key}"))
        return False
    node[parts[-1]] = value
    return True


def _resolve_variant(name: str, origin: str, merged: dict[str, Any], recipe: Recipe, catalog: Catalog,
                     located: Located, problems: list[Problem], check_shapes: bool) -> ResolvedVariant | None:
    prefix = f"variants.{origin}"

    def locate(path: str) -> tuple[str | None, int | None]:
        return _locate_in_variant(located, prefix, path)

    try:
        spec = Variant.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_relocate(validation_problems(exc, prefix=prefix, model=Variant), located, prefix))
        return None
    rv = ResolvedVariant(name, origin, spec)
    n_before = len(problems)
    for fld, kind in COMPONENT_FIELDS.items():
        ref: ComponentRef | None = getattr(spec, fld)
        if ref is None:
            continue
        ref.preset = ref.preset or recipe.scale
        where = f"{prefix}.{fld}"
        try:
            cfg = catalog.make_config(kind, ref.name, ref.preset, ref.config, field_prefix=f"{where}.config")
        except BadInput as exc:
            for p in exc.problems:
                p.field = p.field or f"{where}.name"
                p.file, p.line = locate(p.field)
            problems.extend(exc.problems)
            continue
        ref.config = cfg.model_dump(mode="json", exclude={"preset"})
        rv.configs[fld] = cfg
        _check_execution(recipe, catalog.get(kind, ref.name).load(), cfg, f"{where}.config", locate, problems)
    _check_metrics(rv, catalog, locate, prefix, problems)
    if check_shapes and len(problems) == n_before:
        _check_shapes(rv, catalog, locate, prefix, problems)
    problems[n_before:] = _relocate(problems[n_before:], located, prefix)
    return rv


def _located_exactly(located: Located, path: str) -> int:
    """How many leading parts of ``path`` the recipe files locate."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in located.lines:
            return n
    return 0


def _locate_in_variant(located: Located, prefix: str, path: str) -> tuple[str | None, int | None]:
    """Locate a variant field; a field the variant inherits points at the recipe-level line that set it."""
    inner = path[len(prefix) + 1:] if path.startswith(prefix + ".") else ""
    if inner and _located_exactly(located, inner) > _located_exactly(located, path) - len(prefix.split(".")):
        return located.locate(inner)
    return located.locate(path)


def _relocate(problems: list[Problem], located: Located, prefix: str) -> list[Problem]:
    """Point problems at their line; a problem in an inherited recipe-level field names that field."""
    for p in problems:
        if not p.field:
            continue
        inner = p.field[len(prefix) + 1:] if p.field.startswith(prefix + ".") else ""
        depth_variant = _located_exactly(located, p.field) - len(prefix.split("."))
        if inner and _located_exactly(located, inner) > depth_variant:
            p.field = inner
        p.file, p.line = located.locate(p.field)
    return problems


def _check_metrics(rv: ResolvedVariant, catalog: Catalog, locate, prefix: str, problems: list[Problem]) -> None:
    ev = rv.spec.evaluate
    groups = [("reconstruction", ev.reconstruction, "reconstruction"), ("curve", ev.curve, "reconstruction")]
    if ev.generation is not None:
        groups.append(("generation.metrics", ev.generation.metrics, "generation"))
    for fld, names, stage in groups:
        for i, name in enumerate(names):
            path = f"{prefix}.evaluate.{fld}.{i}"
            try:
                cls = catalog.get("metric", name).load()
            except BadInput as exc:
                problems.append(Problem(str(exc), *locate(path), path))
                continue
            if stage not in cls.stages:
                problems.append(Problem(f"metric {name!r} does not apply to {stage} (it serves: "
                                        f"{', '.join(cls.stages)})", *locate(path), path))
    for name, cfg in ev.metric_config.items():
        path = f"{prefix}.evaluate.metric_config.{name}"
        try:
            catalog.make_config("metric", name, None, cfg, field_prefix=path)
        except BadInput as exc:
            for p in exc.problems:
                p.field = p.field or path  # an unknown metric: its problem names no field of its own
                p.file, p.line = locate(p.field)
            problems.extend(exc.problems)
    if (ev.layers or ev.curve) and rv.spec.tokenizer is None:
        path = f"{prefix}.evaluate.{'layers' if ev.layers else 'curve'}"
        problems.append(Problem("needs a tokenizer (codecs have no layers and no training)", *locate(path), path))


def _check_execution(recipe: Recipe, cls: type, config: Any, where: str, locate, problems: list[Problem]) -> None:
    """Refuse a component whose training method cannot run as the recipe's ``run:`` says (e.g. fp16 under fsdp)."""
    field_name = getattr(cls, "train_settings", None)
    if not field_name or getattr(config, field_name, None) is None:
        return
    try:
        recipe.run.check(getattr(config, field_name), cls.__name__)
    except BadInput as exc:
        path = f"{where}.{field_name}.precision"
        problems.extend(Problem(p.message, *locate(path), path) for p in exc.problems)


def _check_shapes(rv: ResolvedVariant, catalog: Catalog, locate, prefix: str, problems: list[Problem]) -> None:
    """Build each component without weights (meta device) and ask it whether it takes the clip shape."""
    ds = rv.spec.eval_dataset or rv.spec.dataset
    try:
        dataset = catalog.create("dataset", ds.name, preset=ds.preset, overrides=ds.config,
                                 split=rv.spec.dataset.eval_split)
        rv.clip_shape = tuple(dataset.clip_shape)
    except HitbenchError as exc:
        path = f"{prefix}.{'eval_dataset' if rv.spec.eval_dataset else 'dataset'}"
        problems.append(Problem(str(exc), *locate(path), path))
        return
    wanted, available = rv.spec.dataset.eval_clips, len(dataset)
    if wanted > available:
        path = f"{prefix}.dataset.eval_clips"
        problems.append(Problem(f"{wanted} clips to evaluate, but split {rv.spec.dataset.eval_split!r} of dataset "
                                f"{ds.name} has {available}: set eval_clips to at most {available}", *locate(path),
                                path))
    for fld in ("tokenizer", "codec"):
        ref = getattr(rv.spec, fld)
        if ref is None:
            continue
        path = f"{prefix}.{fld}"
        shape, shape_of = rv.clip_shape, f"dataset {ds.name}"  # what the error message names
        try:
            with torch.device("meta"):
                component = catalog.create(fld, ref.name, preset=ref.preset, overrides=ref.config)
            component.check_shape(*shape)
            if fld == "tokenizer" and component.trainable:
                train = rv.spec.dataset
                if rv.spec.eval_dataset is not None:  # it trains on other clips than it is evaluated on
                    clips = catalog.create("dataset", train.name, preset=train.preset, overrides=train.config,
                                           split=train.train_split)
                    shape, shape_of = tuple(clips.clip_shape), f"training dataset {train.name}"
                component.check_training_shape(*shape)
            if fld == "tokenizer" and isinstance(rv.spec.evaluate.layers, list):
                bad = [k for k in rv.spec.evaluate.layers if k > component.num_layers]
                if bad:
                    problems.append(Problem(f"{ref.name} has {component.num_layers} layers; cannot decode from "
                                            f"{bad}", *locate(f"{prefix}.evaluate.layers"), f"{prefix}.evaluate.layers"))
        except HitbenchError as exc:
            problems.append(Problem(f"clip shape {'x'.join(map(str, shape))} ({shape_of}): {exc}",
                                    *locate(path), path))


def _check_names(recipe: Recipe, variants: list[ResolvedVariant], located: Located, problems: list[Problem]) -> None:
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(Problem(f"sweep produced duplicate variant names: {', '.join(dupes)}",
                                *located.locate("sweep"), "sweep"))
    for i, claim in enumerate(recipe.claims):
        for term in claim.contrast:
            name = term.split(":", 1)[0]
            if name not in names:
                path = f"claims.{i}.contrast.{term}"
                problems.append(Problem(f"claim {claim.id!r} names variant {name!r}, which this recipe does not have "
                                        f"(variants: {', '.join(names)})", *located.locate(path), path))
    for i, plot in enumerate(recipe.plots):
        if plot.kind == "layers" and not any(v.spec.evaluate.layers for v in variants):
            path = f"plots.{i}"
            problems.append(Problem("a 'layers' plot needs evaluate.layers in some variant", *located.locate(path), path))
        if plot.kind == "line" and not any(v.spec.evaluate.curve for v in variants):
            path = f"plots.{i}"
            problems.append(Problem("a 'line' plot needs evaluate.curve in some variant", *located.locate(path), path))
        swept = [key.split(".")[-1] for key in recipe.sweep]
        if plot.kind == "sweep" and plot.by not in swept:
            path = f"plots.{i}.by"
            problems.append(Problem(f"a 'sweep' plot needs 'by': one of the swept keys' last parts "
                                    f"(allowed: {', '.join(swept) or 'none: the recipe has no sweep'})",
                                    *located.locate(path if plot.by else f"plots.{i}"), path))
