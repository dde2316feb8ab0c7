"""The pluggy plugin manager: built-ins and third-party plugins from the ``hitbench`` entry-point group.

Built-in components register through the same entry-point group a third-party plugin uses.
``-p MODULE`` loads one more plugin module by import name; ``-p no:NAME`` blocks a plugin (entry
point name or module name). A plugin that fails to import or register is reported by name with
its error, and the others still load. A ``@hookimpl`` whose name is no hook (a typo such as
``hitbench_register_component``) is such a failure; for a ``-p`` module it is bad input.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .catalog import Catalog
from .errors import BadInput, ContractError, Problem, did_you_mean

ENTRY_POINT_GROUP = "hitbench"
#: the hooks a plugin may implement
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("hitbench_"))


@dataclass
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    error: str


@dataclass
class Plugins:
    """A loaded plugin manager, the catalog it filled, and what failed on the way."""

    pm: pluggy.PluginManager
    catalog: Catalog
    failures: list[PluginFailure] = field(default_factory=list)
    info: dict[str, tuple[str, str]] = field(default_factory=dict)  # plugin -> (dist, version)

    @property
    def hooks(self) -> _Hooks:
        """The hooks to call (``plugins.hooks.hitbench_run_start(...)``): each plugin's implementation is called in
        pluggy's order, and one that raises stops the run with an error naming the plugin and the hook (exit 2)."""
        return _Hooks(self.pm)


class _Hooks:
    def __init__(self, pm: pluggy.PluginManager):
        self._pm = pm

    def __getattr__(self, hook: str):
        caller = getattr(self._pm.hook, hook)

        def call(**kwargs: Any) -> list[Any]:
            try:
                return caller(**kwargs)  # pluggy's own call: wrappers, order and arguments as pluggy does them
            except Exception as exc:
                impl = _culprit(caller, exc)
                if impl is None:  # raised by pluggy or the core, not inside a plugin's implementation
                    raise
                name = impl.plugin_name
                if isinstance(exc, BadInput):
                    raise BadInput([Problem(f"plugin {name}, hook {hook}: {p.message}", p.file, p.line, p.field)
                                    for p in exc.problems]) from exc
                raise ContractError(f"plugin {name}: its hook {hook} raised {type(exc).__name__}: {exc} (fix the "
                                    f"plugin, or leave it out with -p no:{name})") from exc

        return call


def _culprit(caller: Any, exc: BaseException) -> Any:
    """The hook implementation in whose code ``exc`` was raised (the innermost on its traceback), or None."""
    impls = {impl.function.__code__: impl for impl in caller.get_hookimpls()}
    found, tb = None, exc.__traceback__
    while tb is not None:
        found = impls.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _parse_plugin_args(args: Sequence[str]) -> tuple[list[str], set[str]]:
    extra, blocked = [], set()
    for arg in args:
        if arg.startswith("no:"):
            blocked.add(arg[3:])
        else:
            extra.append(arg)
    return extra, blocked


def load_plugins(plugin_args: Sequence[str] = (), *, entry_points: bool = True) -> Plugins:
    """Build a plugin manager: entry points, then ``-p`` modules; blocked names are skipped."""
    extra, blocked = _parse_plugin_args(plugin_args)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm, Catalog())
    for name in blocked:
        pm.set_blocked(name)

    candidates: list[tuple[str, str, str, str]] = []  # (plugin name, module, dist, version)
    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            candidates.append((ep.name, ep.value, dist, version))
    for module in extra:
        candidates.append((module, module, "-p", "local"))

    for name, module_name, dist, version in candidates:
        if name in blocked or module_name in blocked or pm.is_blocked(name):
            continue
        try:
            module = importlib.import_module(module_name.partition(":")[0])
            pm.register(module, name=name)
        except ModuleNotFoundError as exc:
            if dist == "-p" and exc.name == module_name.split(".")[0]:
                raise BadInput(f"-p {module_name}: no module named {module_name!r} (is it installed, or on "
                               f"PYTHONPATH?)") from None
            plugins.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}"))
            continue
        except Exception as exc:  # a broken plugin must not take the others down
            plugins.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}"))
            continue
        unknown = _unknown_hooks(pm, module)
        if unknown:
            pm.unregister(module)
            error = "; ".join(f"@hookimpl {hook!r} is not a hitbench hook." + did_you_mean(hook, HOOKS)
                              for hook in unknown)
            if dist == "-p":
                raise BadInput(f"-p {module_name}: {error}")
            plugins.failures.append(PluginFailure(name, error))
            continue
        plugins.info[name] = (dist, version)

    pm.check_pending()  # every hook implementation left has a spec (the others were rejected above)
    for impl in pm.hook.hitbench_register_components.get_hookimpls():
        name = impl.plugin_name
        try:
            with plugins.catalog.registering(name, *plugins.info.get(name, ("?", "?"))):
                impl.function(catalog=plugins.catalog)
        except BadInput:
            raise
        except Exception as exc:
            plugins.failures.append(PluginFailure(name, f"{type(exc).__name__}: {exc}"))
    for failure in plugins.failures:
        warnings.warn(f"hitbench plugin {failure.name!r} failed to load: {failure.error}", stacklevel=2)
    return plugins


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Names of ``plugin``'s hook implementations that match no hook spec (pluggy registers them silently)."""
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or []
                  if not caller.has_spec() and any(impl.plugin is plugin and not impl.optionalhook
                                                   for impl in caller.get_hookimpls()))


_DEFAULT: Plugins | None = None
_DEFAULT_ARGS: tuple[str, ...] = ()


def get_plugins(plugin_args: Sequence[str] | None = None) -> Plugins:
    """The process-wide plugins (built once; rebuilt when ``plugin_args`` differ)."""
    global _DEFAULT, _DEFAULT_ARGS
    args = tuple(plugin_args) if plugin_args is not None else _DEFAULT_ARGS
    if _DEFAULT is None or args != _DEFAULT_ARGS:
        _DEFAULT = load_plugins(args)
        _DEFAULT_ARGS = args
    return _DEFAULT


def get_catalog() -> Catalog:
    """The catalog of the process-wide plugins."""
    return get_plugins().catalog
