"""The catalog: component name -> spec, filled by plugins through ``hitbench_register_components``.

Targets are classes or ``"module:attr"`` strings imported only when first used, so listing the
catalog never imports a model.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from .components import KINDS, BenchMetric, Codec, ComponentConfig, Generator, Tokenizer, VideoDataset
from .contract import overrides
from .errors import BadInput, ContractError, Problem, did_you_mean
from .training import EXECUTION_FIELDS, TrainConfig

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
                raise ContractError(f"{self.who}: {target!r} is not a subclass of hitvideo_bench.api.{base.__name__}")
            problems = contract_problems(target)
            if problems:
                raise ContractError(f"{self.who}: " + "; ".join(problems) + " (docs/plugins.md)")
            self._cls = target
        return self._cls

    @contextlib.contextmanager
    def blame(self) -> Iterator[None]:
        """Within the block, a :class:`ContractError` that does not name this component yet is said as its own
        (``kind 'name' (plugin P): ...``), so that every contract failure names the plugin to fix."""
        try:
            yield
        except ContractError as exc:
            if self.who in str(exc):
                raise
            raise ContractError(f"{self.who}: {exc}") from exc

    @property
    def provider(self) -> str:
        """What provides it, for identities: the distribution (pip package), or the plugin's module name for a ``-p``
        module or one without a distribution."""
        return self.distribution if self.distribution not in ("?", "-p") else self.plugin

    @property
    def who(self) -> str:
        """``kind 'name' (plugin P)``, for messages."""
        return f"{self.kind} {self.name!r} (plugin {self.plugin})"

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
        return self.build(kind, name, self.make_config(kind, name, preset, overrides), **dependencies)

    def build(self, kind: str, name: str, config: ComponentConfig, **dependencies: Any) -> Any:
        """Create a component from its validated ``config`` (a copy of it: a component may change its own); a tokenizer
        that wraps another (``wraps``) gets it built here (untrained) unless ``base`` is given."""
        cls = self.get(kind, name).load()
        config = config.model_copy(deep=True)
        if kind == "tokenizer" and cls.wraps and "base" not in dependencies:
            base = self.wrapped_base(cls, config)
            if base is not None:
                dependencies["base"] = base
        return cls(config, **dependencies)

    def wrapped_base(self, cls: type, config: ComponentConfig) -> Tokenizer | None:
        """A new (untrained) instance of the tokenizer that a tokenizer of class ``cls`` with ``config`` wraps (None:
        its ``wraps`` field is empty)."""
        inner = self._wrapped(cls, config.preset, config.model_dump(mode="json", exclude={"preset"}))
        return None if inner is None else self.create("tokenizer", inner[0], preset=inner[1], overrides=inner[2])

    def wrapped_ref(self, name: str, preset: str, config: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
        """The tokenizer that tokenizer ``name`` with ``config`` wraps (the config field its class declares as
        ``wraps``), as ``(name, preset, resolved config)``, exactly as a variant naming it directly resolves it (so
        both share one cache entry); None when it wraps nothing. The one place the core reads a wrapper's field."""
        return self._wrapped(self.get("tokenizer", name).load(), preset, config, name)

    def _wrapped(self, cls: type, preset: str, config: Mapping[str, Any],
                 name: str | None = None) -> tuple[str, str, dict[str, Any]] | None:
        name, field_name = name or cls.__name__, cls.wraps
        ref = config.get(field_name) if field_name else None
        if ref is None:
            return None
        if not isinstance(ref, Mapping) or "name" not in ref:
            raise BadInput(f"tokenizer {name!r}: {field_name} must name the tokenizer it wraps "
                           "({name, preset, config})", field=f"tokenizer.config.{field_name}")
        inner_preset = ref.get("preset") or preset
        inner = self.make_config("tokenizer", ref["name"], inner_preset, ref.get("config") or {},
                                 field_prefix=f"tokenizer.config.{field_name}.config")
        return ref["name"], inner_preset, inner.model_dump(mode="json", exclude={"preset"})


def validation_problems(exc: ValidationError, prefix: str = "", model: type | None = None,
                        locate=None) -> list[Problem]:
    """Turn a pydantic error into located problems with allowed values where known."""
    problems = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        full = f"{prefix}.{path}" if prefix and path else (prefix or path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and err["loc"][-1] in EXECUTION_FIELDS and _is_train_settings(model,
                                                                                                      err["loc"][:-1]):
            msg = (f"an execution setting, not part of a component since contract version 2: set it for the run "
                   f"in the recipe's run: section (run.{err['loc'][-1]}), see docs/plugins.md")
        elif err["type"] == "extra_forbidden" and model is not None:
            allowed = _allowed_fields(model, err["loc"][:-1])
            if allowed:
                msg = "unknown field." + did_you_mean(str(err["loc"][-1]), allowed)
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        file, line = locate(full) if locate else (None, None)
        problems.append(Problem(msg, file=file, line=line, field=full))
    return problems


def _is_train_settings(model: type | None, loc: tuple) -> bool:
    """Whether the (nested) model at ``loc`` of ``model`` is a :class:`TrainConfig`."""
    current = _model_at(model, loc) if model is not None else None
    return isinstance(current, type) and issubclass(current, TrainConfig)


def _allowed_fields(model: type, loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic model at ``loc``."""
    current = _model_at(model, loc)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [n for n in current.model_fields]
    return []


def _model_at(model: type, loc: tuple) -> Any:
    """The (nested) pydantic model, or annotation, at ``loc`` of ``model``."""
    current = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        fld = current.model_fields.get(part)
        if fld is None:
            return None
        ann = fld.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                        and issubclass(a, BaseModel)), ann)
    return current


def contract_problems(cls: type) -> list[str]:
    """What a component class declares wrongly or leaves out (checked when it is first loaded, so that a plugin's
    mistake is said before a run starts, naming the component)."""
    problems = []
    if inspect.isabstract(cls):
        problems.append(f"{cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
        return problems + [f"{cls.__name__}.Config must be a ComponentConfig subclass"]
    if issubclass(cls, (Tokenizer, Generator)):
        base = Tokenizer if issubclass(cls, Tokenizer) else Generator
        field_name = cls.train_settings
        if field_name is None and overrides(cls, base, "training_task"):
            problems.append(f"{cls.__name__} implements training_task() but does not declare train_settings (the "
                            "name of its config's TrainConfig field, e.g. train_settings = 'train')")
        if overrides(cls, base, "fit") and not _accepts(cls.fit, "execution"):
            problems.append(f"{cls.__name__}.fit() takes no execution argument (the run's execution settings, "
                            "contract version 2): add execution=None to its signature")
        if field_name is not None and not _is_train_config(config, field_name):
            problems.append(f"{cls.__name__}.train_settings = {field_name!r}, but {config.__name__} has no "
                            f"TrainConfig field {field_name!r}")
    if issubclass(cls, Generator) and not _accepts(cls.__init__, "clip_shape"):
        problems.append(f"{cls.__name__}.__init__ takes no clip_shape (contract version 2: a generator is built as "
                        "cls(config, tokenizer=..., clip_shape=(T, H, W)) and passes both to Generator.__init__)")
    if issubclass(cls, Tokenizer):
        if cls.wraps is not None and cls.wraps not in config.model_fields:
            problems.append(f"{cls.__name__}.wraps = {cls.wraps!r}, but {config.__name__} has no field {cls.wraps!r}")
        hooks = [overrides(cls, Tokenizer, h) for h in ("tokens_to_latents", "decode_latents")]
        if any(hooks) and not all(hooks):
            problems.append(f"{cls.__name__} implements only one of the latent hooks tokens_to_latents() and "
                            "decode_latents(): dynamic encoding needs both")
    if issubclass(cls, BenchMetric) and cls.resampled and not overrides(cls, BenchMetric, "compute_on"):
        problems.append(f"{cls.__name__} declares resampled = True but does not implement compute_on()")
    return problems


def _is_train_config(config: type[ComponentConfig], field_name: str) -> bool:
    fld = config.model_fields.get(field_name)
    return fld is not None and isinstance(fld.annotation, type) and issubclass(fld.annotation, TrainConfig)


def _accepts(function: Any, argument: str) -> bool:
    """Whether ``function`` takes a keyword ``argument`` (by name, or through ``**kwargs``)."""
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == argument or p.kind is p.VAR_KEYWORD for p in parameters)
