"""The version of the plugin contract (:mod:`hitvideo_bench.api`), so that a plugin can say which one it needs, and
how the core tells which optional parts of it a class implements.

The version goes up by one whenever the contract changes in a way a plugin must follow (a method renamed, a
declaration added); docs/plugins.md lists each change and what a plugin does about it.
"""

from __future__ import annotations

from typing import Any

from .errors import BadInput

#: the contract this core offers; docs/plugins.md, "Changelog of the contract", says what each version changed
CONTRACT_VERSION = 2


def overrides(obj: Any, base: type, *names: str) -> bool:
    """Whether ``obj`` (an instance or a class) implements any of the methods ``names`` of its ``base`` class: how
    the core tells which opt-in abilities a component or training task has (latent hooks, training, NLL, the
    memory estimate's example batch, activation checkpointing)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(getattr(cls, name) is not getattr(base, name) for name in names)


def require_contract(version: int, plugin: str) -> None:
    """Raise :class:`BadInput` naming ``plugin`` when this core's contract is not ``version`` (call it from a plugin's
    module so that a mismatch is said when the plugin is loaded, not as a failure mid-run)."""
    if version != CONTRACT_VERSION:
        raise BadInput(f"plugin {plugin} is written for contract version {version}, but this hitvideo-bench offers "
                       f"version {CONTRACT_VERSION}: see docs/plugins.md, 'Changelog of the contract', for what "
                       "changed and what to do")
