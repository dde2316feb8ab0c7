"""Call a component's methods in a worker process of its own: a native crash or a hang costs one call, not the run.

An :class:`IsolatedWorker` pickles its target (e.g. a codec) into a process of its own, keeps that process for
every call, and gives each call a time limit in CPU seconds of the worker (a loaded machine slows a call without
making it fail), with ten times that in wall time for a worker that waits on nothing. Workers are forked from a ``forkserver`` (a clean, single-threaded
process that imported the suite once): nothing of the run's threads or heap comes along, and a fresh worker after
a crash starts in a fraction of a second instead of importing torch again.
A call whose worker dies (a segfault in an encoder) or runs past its limit (asked for its Python stack first, see
:mod:`hitvideo_bench.faults`, then killed) is retried in a fresh worker; if that fails too,
:class:`WorkerFailed` says why, both times. An exception the target raises is not a crash: it is raised in the
caller as it was raised in the worker. The worker dies with its parent (a ``kill -9`` of the run leaves no
orphan encoding on).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import faults

#: seconds a fresh worker may take to import its target's modules and say it is ready (the first one starts the
#: fork server, which imports torch: minutes on a loaded machine; this is no clip's compression time)
START_LIMIT_S = 1800.0
#: what the fork server imports once, so that every worker forked from it has it
PRELOAD = ["hitvideo_bench.isolation"]
#: seconds a hung worker gets to print its stack before it is killed
DUMP_GRACE_S = 1.0
#: tries of one call: the first, and one retry in a fresh worker
ATTEMPTS = 2
#: a call's limit is in CPU seconds of the worker (a busy loop, as x265's stall, is caught however loaded the
#: machine is); one that waits without using the CPU (a deadlock) is stopped after this many times it in wall time
WALL_FACTOR = 10.0
#: seconds between two looks at a worker that has not answered yet
POLL_S = 0.05


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None where /proc cannot say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerFailed(Exception):
    """The worker of a call died or ran past its time limit (on every try); the message says how."""


def exit_reason(code: int | None) -> str:
    """How a worker process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "the worker closed its connection and did not exit"
    if code < 0:
        try:
            return f"the worker was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker was killed by signal {-code}"
    return f"the worker exited with status {code}"


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent exits (an isolated worker's parent is the fork server, which
    exits when the run's process dies; elsewhere the closed pipe ends the worker at its next call)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` with the worker's traceback as a note, if it survives pickling; else a RuntimeError saying it."""
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"(raised in the isolated worker, pid {os.getpid()}):\n{text}")
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # an exception whose constructor takes other arguments than its message
        return RuntimeError(f"{type(exc).__name__}: {exc} (raised in the isolated worker):\n{text}")


def _serve(conn, payload: bytes, log: str | None) -> None:
    """The worker: unpickle the target, then answer ``(method, args)`` calls until the parent hangs up."""
    faults.enable(open(log, "a", encoding="utf-8", buffering=1) if log else None)
    die_with_parent()
    target = pickle.loads(payload)
    if "torch" in sys.modules:  # one clip's conversions are tiny; threads would only fight the encoder's
        sys.modules["torch"].set_num_threads(1)
    conn.send(("ready", None))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        try:
            answer = ("ok", getattr(target, method)(*args))
            conn.send(answer)
        except Exception as exc:
            conn.send(("error", _portable(exc)))


class IsolatedWorker:
    """A worker process holding ``target``; :meth:`call` runs one of its methods there, with a time limit.

    ``log``: a file the worker's fault handler appends to (None: the worker's standard error, inherited).
    Use as a context manager, or :meth:`close` it.
    """

    def __init__(self, target: Any, log: Path | None = None):
        try:
            self._payload = pickle.dumps(target)
        except Exception as exc:
            raise TypeError(f"{type(target).__name__} cannot run isolated: it does not pickle ({exc})") from exc
        self.log = log
        self.name = type(target).__name__
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn = None

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the worker (done by the first call otherwise) and wait until it holds its target."""
        if self._proc is not None:
            return
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._payload, str(self.log) if self.log else None),
                                 name=f"hitbench-isolated-{self.name}", daemon=True)
        self._proc.start()
        child.close()
        self._receive(START_LIMIT_S, "starting", cpu=False)

    def _receive(self, limit_s: float, what: str, cpu: bool = True) -> tuple[str, Any]:
        """The worker's answer; past the limit (``cpu``: in CPU seconds, or :data:`WALL_FACTOR` times it in wall
        seconds; else in wall seconds) the worker is killed and :class:`WorkerFailed` raised."""
        began, wall_limit = time.monotonic(), limit_s * (WALL_FACTOR if cpu else 1)
        start_cpu = cpu_seconds(self._proc.pid) if cpu else None
        while not self._conn.poll(POLL_S):
            used = cpu_seconds(self._proc.pid) if start_cpu is not None else None
            if used is not None and used - start_cpu > limit_s:
                why = f"{what} used more than {limit_s:g} s of CPU time"
            elif time.monotonic() - began > wall_limit:
                why = f"{what} did not answer in {wall_limit:g} s"
            else:
                continue
            self.close(dump=True)
            raise WorkerFailed(f"{why} (the worker was killed)")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise WorkerFailed(f"{what}: {exit_reason(self.close())}") from None

    def call_once(self, method: str, *args: Any, limit_s: float) -> Any:
        """``target.method(*args)`` in the worker; :class:`WorkerFailed` if it dies or passes ``limit_s``."""
        self.start()
        try:
            self._conn.send((method, args))
        except (BrokenPipeError, EOFError, OSError):
            raise WorkerFailed(f"{method}: {exit_reason(self.close())}") from None
        kind, value = self._receive(limit_s, method)
        if kind == "error":
            raise value
        return value

    def call(self, method: str, *args: Any, limit_s: float, item: str = "", note: Callable[[str], None] | None = None
             ) -> Any:
        """:meth:`call_once`, retried once in a fresh worker after a crash or a timeout (``note``, e.g. a run log's
        ``where``, is told first: ``<item>: <reason>; retrying in a fresh worker``); :class:`WorkerFailed` naming
        both reasons when the retry fails too."""
        reasons = []
        for attempt in range(ATTEMPTS):
            try:
                return self.call_once(method, *args, limit_s=limit_s)
            except WorkerFailed as exc:
                reasons.append(str(exc))
                if note is not None and attempt + 1 < ATTEMPTS:
                    note(f"{item}: {exc}; retrying in a fresh worker")
        raise WorkerFailed("; retried in a fresh worker: ".join(reasons))

    def close(self, dump: bool = False) -> int | None:
        """Stop the worker (``dump``: ask it for its Python stack first); return its exit code."""
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if proc is None:
            return None
        if conn is not None:
            conn.close()  # a healthy worker sees the end of its input and returns
        if dump and proc.is_alive():
            os.kill(proc.pid, faults.DUMP_SIGNAL)
            proc.join(DUMP_GRACE_S)  # time to print its stack; it is hung, so it will not exit
            proc.kill()
        proc.join(DUMP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return proc.exitcode


#: this process's shared workers: pickled target -> (the process that started it, its log, the worker)
_SHARED: dict[bytes, tuple[int, Path | None, IsolatedWorker]] = {}


def shared_worker(target: Any, log: Path | None = None) -> IsolatedWorker | None:
    """The worker this process keeps for ``target`` (targets that pickle the same share it), its faults written to
    ``log``: started by its first call, reused by every later one (a dataset's files, the datasets of a run), a
    new one when ``log`` changes (the next run). None in a daemonic process (a data loader's worker), which may not
    start processes: the caller calls ``target`` there itself."""
    if multiprocessing.current_process().daemon:
        return None
    key = pickle.dumps(target)
    pid, old_log, worker = _SHARED.get(key, (None, None, None))
    if worker is None or pid != os.getpid() or old_log != log:
        if worker is not None and pid == os.getpid():  # a forked child leaves its parent's worker alone
            worker.close()
        worker = IsolatedWorker(target, log)
        _SHARED[key] = (os.getpid(), log, worker)
    return worker
