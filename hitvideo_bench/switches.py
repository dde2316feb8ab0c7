"""On/off switches read from the environment (``HITBENCH_REPRODUCIBLE_CPU``, ``HITBENCH_TUNE_MALLOC``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .errors import BadInput


def switch(name: str, on: str, off: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the switch ``name`` is on: 1 (the default) or 0; any other value is bad input naming the variable and
    what each allowed value does (``on``, ``off``)."""
    value = environ.get(name, "1").strip()
    if value not in ("0", "1"):
        raise BadInput(f"{name}={value!r}: allowed values are 1 ({on}, the default) and 0 ({off})")
    return value == "1"
