"""The catalog: component name -> spec, filled by plugins through ``hitbench_register_components``.

Targets are classes or ``"module:attr"`` strings imported only when first used, so listing the
catalog never imports a model.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .components import KINDS, BenchMetric, Codec, ComponentConfig, Generator, Tokenizer, VideoDataset
from .errors import BadInput, Problem, did_you_mean

BASES = {"tokenizer": Tokenizer, "codec": Codec, "generator": Generator, "metric": BenchMetric,
         "dataset": VideoDataset}


@dataclass
class ComponentSpec:
    """One registered component."""

    kind: str
    name: str
    target: Any  # class or "module:attr"
    description: str = ""
    version: str = "1"
    plugin: str = "?"  # plugin name that registered it
    distribution: str = "?"  # distribution (pip package) providing the plugin
    dist_version: str = "?"
    _cls: type | None = field(default=None, repr=False)

    def load(self) -> type:
        """Import and return the component class, checking it against its kind's base."""
        if self._cls is None:
            target = self.target
            if isinstance(target, str):
                module, _, attr = target.partition(":")
                try:
                    obj = importlib.import_module(module)
                    for part in attr.split("."):
                        obj = getattr(obj, part)
                except (ImportError, AttributeError) as exc:
                    raise BadInput(f"{self.kind} {self.name!r} (plugin {self.plugin}): cannot load "
                                   f"{target!r}: {exc}") from exc
                target = obj
            base = BASES[self.kind]
            if not (isinstance(target, type) and issubclass(target, base)):
                raise BadInput(f"{self.kind} {self.name!r} (plugin {self.plugin}): {target!r} is not a "
                               f"subclass of {base.__module__}.{base.__name__}")
            self._cls = target
        return self._cls

    @property
    def config_cls(self) -> type[ComponentConfig]:
        return self.load().Config


class Catalog:
    """Name -> :class:`ComponentSpec`, per kind."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        self._current_plugin: tuple[str, str, str] = ("?", "?", "?")

    @contextlib.contextmanager
    def registering(self, plugin: str, distribution: str = "?", version: str = "?") -> Iterator[Catalog]:
        """Within the block, :meth:`add` records components as provided by ``plugin`` of ``distribution``
        ``version`` (the plugin manager wraps each plugin's registration hook in it; the provider is part of
        each run's identity)."""
        before = self._current_plugin
        self._current_plugin = (plugin, distribution, version)
        try:
            yield self
        finally:
            self._current_plugin = before

    def add(self, kind: str, name: str, target: Any, *, description: str = "", version: str = "1") -> None:
        """Register ``name`` of ``kind``. A duplicate name of the same kind is an error naming both plugins."""
        if kind not in KINDS:
            raise BadInput(f"plugin {self._current_plugin[0]}: unknown component kind {kind!r}."
                           + did_you_mean(kind, KINDS))
        plugin, dist, dist_version = self._current_plugin
        existing = self._specs[kind].get(name)
        if existing is not None:
            raise BadInput(f"{kind} {name!r} is registered twice: by plugin {existing.plugin} "
                           f"({existing.distribution}) and by plugin {plugin} ({dist}). "
                           f"Disable one with -p no:NAME.")
        self._specs[kind][name] = ComponentSpec(kind, name, target, description, version, plugin, dist,
                                                dist_version)

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec of ``name``; unknown names get "did you mean" and the list of known ones."""
        if kind not in KINDS:
            raise BadInput(f"unknown component kind {kind!r}." + did_you_mean(kind, KINDS))
        try:
            return self._specs[kind][name]
        except KeyError:
            raise BadInput(f"unknown {kind} {name!r}." + did_you_mean(name, self._specs[kind])) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._specs[kind])

    def specs(self, kind: str | None = None, pattern: str | None = None) -> list[ComponentSpec]:
        """All specs, optionally of one kind and matching a glob ``pattern``."""
        kinds = [kind] if kind else list(KINDS)
        out = []
        for k in kinds:
            if k not in KINDS:
                raise BadInput(f"unknown component kind {k!r}." + did_you_mean(k, KINDS))
            out += [s for n, s in sorted(self._specs[k].items()) if pattern is None or fnmatch.fnmatch(n, pattern)]
        return out

    def make_config(self, kind: str, name: str, preset: str | None = None,
                    overrides: Mapping[str, Any] | None = None, field_prefix: str = "") -> ComponentConfig:
        """Validated config of a component; errors name the full dotted field path."""
        cls = self.get(kind, name).config_cls
        try:
            return cls.from_preset(preset, overrides)
        except ValidationError as exc:
            raise BadInput(validation_problems(exc, prefix=field_prefix, model=cls)) from None

    def create(self, kind: str, name: str, *, preset: str | None = None,
               overrides: Mapping[str, Any] | None = None, **dependencies: Any) -> Any:
        """Create a component by name from ``preset`` plus ``overrides``; ``dependencies`` go to its constructor."""
        config = self.make_config(kind, name, preset, overrides)
        return self.get(kind, name).load()(config, **dependencies)


def validation_problems(exc: ValidationError, prefix: str = "", model: type | None = None,
                        locate=None) -> list[Problem]:
    """Turn a pydantic error into located problems with allowed values where known."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and model is not None:
            allowed = _allowed_fields(model, err["loc"][:-1])
            if allowed:
                msg = "unknown field." + did_you_mean(str(err["loc"][-1]), allowed)
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        file, line = locate(full) if locate else (None, None)
        problems.append(Problem(msg, file=file, line=line, field=full))
    return problems


def _allowed_fields(model: type, loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic model at ``loc``."""
    from pydantic import BaseModel

    current = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        fld = current.model_fields.get(part)
        if fld is None:
            return []
        ann = fld.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                        and issubclass(a, BaseModel)), ann)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [n for n in current.model_fields]
    return []
