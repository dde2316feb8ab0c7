"""Settings read from the environment (``HITBENCH_REPRODUCIBLE_CPU``, ``HITBENCH_TUNE_MALLOC``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import BadInput


def choice(name: str, values: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """The value of ``name``, one of ``values`` (value -> what it does; the first is the default); any other
    value is bad input naming the variable and what each allowed value does."""
    default = next(iter(values))
    value = environ.get(name, default).strip()
    if value not in values:
        allowed = [f"{v} ({what}{', the default' if v == default else ''})" for v, what in values.items()]
        raise BadInput(f"{name}={value!r}: allowed values are {', '.join(allowed[:-1])} and {allowed[-1]}")
    return value


def switch(name: str, on: str, off: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the switch ``name`` is on: 1 (``on``, the default) or 0 (``off``)."""
    return choice(name, {"1": on, "0": off}, environ) == "1"
