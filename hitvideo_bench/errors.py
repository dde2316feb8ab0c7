"""Errors that the CLI turns into short messages and exit codes.

Every user-facing failure is a :class:`HitbenchError`. ``BadInput`` (exit 2) covers recipes,
arguments, data and shapes; ``RunFailed`` (exit 1) a run that broke while executing.
A message has the form ``file:line: path.to.field: message (did you mean ...?)`` where the parts
are known.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class HitbenchError(Exception):
    """Base of every error the suite raises on purpose."""

    exit_code = 1


@dataclass
class Problem:
    """One located problem: where (file, line, dotted field path) and what."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class BadInput(HitbenchError):
    """Bad recipe, argument, data or shape. Collects several problems and reports them together."""

    exit_code = 2

    def __init__(self, problems: Problem | str | Iterable[Problem], **where):
        if isinstance(problems, str):
            problems = [Problem(problems, **where)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ShapeError(BadInput):
    """A video shape that a component cannot take."""


class ContractError(BadInput):
    """A plugin broke the component contract (docs/plugins.md): the message names the component, its plugin when
    known, and what to change."""


class RunFailed(HitbenchError):
    """A run broke while executing (not the user's input)."""

    exit_code = 1


class WeightsUnavailable(HitbenchError):
    """Pretrained weights a component needs are not on disk.

    ``hint`` says how to get them; tables show ``unavailable: <hint>`` instead of a number.
    """

    def __init__(self, what: str, hint: str):
        self.what = what
        self.hint = hint
        super().__init__(f"{what} unavailable: {hint}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean X?) Allowed: a, b`` for an unknown ``word``."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint} Allowed: {', '.join(choices)}"
