"""Every process the suite starts leaves a traceback when it dies, in the log of the run it was executing.

Python's fault handler prints the Python stack of every thread on a fatal signal (SIGSEGV, SIGFPE, SIGABRT,
SIGBUS, SIGILL) and, on ``SIGUSR1``, of a process that is still alive (how a hung codec worker is asked where it
is before it is killed). :func:`enable` turns it on for a whole process (the CLI, ``--jobs`` workers, torchrun
ranks, codec workers); :class:`RunLog` points it at a run's log, ``<results>/logs/<variant>-seed-<n>.log``, for
as long as the run executes, and writes where the run is (its stage, its clips) before each step, so that a
traceback that follows says which stage, variant and clip it was in; the warnings raised meanwhile go there too.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import IO

#: the signal that makes a live process print its Python stack (a hang's "where")
DUMP_SIGNAL = signal.SIGUSR1

_current: RunLog | None = None


def current_log() -> RunLog | None:
    """The log of the run this process executes now (None outside a run): where a component's own isolated worker
    writes its faults, and its notes go."""
    return _current


def enable(stream: IO[str] | None = None) -> None:
    """Fault handler on, writing to ``stream`` (default, or when it has no file descriptor: standard error), for
    fatal signals and :data:`DUMP_SIGNAL`."""
    stream = next((s for s in (stream, sys.stderr, sys.__stderr__) if _has_fd(s)), None)
    if stream is None:  # no file at all to write to (standard error closed)
        return
    faulthandler.enable(file=stream, all_threads=True)
    faulthandler.register(DUMP_SIGNAL, file=stream, all_threads=True, chain=False)


def _has_fd(stream: IO[str] | None) -> bool:
    """Whether ``stream`` is backed by a file descriptor (the fault handler writes to one; a captured standard
    error, as in tests, is not)."""
    try:
        return stream is not None and stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


class RunLog:
    """The log of one run while it executes: the fault handler writes there, :meth:`where` notes progress.

    ``path`` None: the process's standard error already is the run's log (a ``--jobs`` worker). The log is
    appended to, so a run resumed after a crash keeps the crash's traceback above its own lines.
    """

    def __init__(self, run: str, path: Path | None):
        self.run = run
        self.path = path
        self._own: IO[str] | None = None
        self._outer: RunLog | None = None

    @property
    def stream(self) -> IO[str]:
        return self._own if self._own is not None else sys.stderr

    def __enter__(self) -> RunLog:
        global _current
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._own = open(self.path, "a", encoding="utf-8", buffering=1)
            self._shown = warnings.showwarning
            warnings.showwarning = self._show_warning
        enable(self.stream)
        self._outer, _current = _current, self
        rank = os.environ.get("RANK")
        self.where(f"started (pid {os.getpid()}{f', rank {rank}' if rank is not None else ''})")
        return self

    def __exit__(self, *exc) -> None:
        global _current
        _current = self._outer
        enable()  # back to standard error before the file closes
        if self._own is not None:
            warnings.showwarning = self._shown
            self._own.close()
            self._own = None

    def _show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        """A warning raised while the run executes: into its log too (where it is shown as before)."""
        if self._own is not None:
            print(f"hitbench: {self.run}: warning: {message}", file=self._own, flush=True)
        self._shown(message, category, filename, lineno, file, line)

    def where(self, text: str) -> None:
        """Note what the run does next (flushed at once, so that a crash's traceback comes after it)."""
        print(f"hitbench: {self.run}: {text}", file=self.stream, flush=True)
