"""``hitbench run --jobs N``: the runs of a recipe in up to N worker processes at once.

Each worker is the same ``hitbench run`` command with ``--only VARIANT/seed-S``: it runs that one variant x
seed exactly as a sequential run would (same seeding, same run folder, same component cache) and writes its
output to ``<results>/logs/VARIANT-seed-S.log``. Workers on CPU get an equal share of this process's CPUs as
intra-op threads (``OMP_NUM_THREADS``), so that N runs do not fight over the cores; a run's numbers can then
differ from a sequential run's in float rounding, as with any change of thread count.

Why: on a small CPU machine, runs side by side keep every core busy through the parts of a run that use one
thread (the probe, evaluation, start-up) and the small ops that two threads share poorly. Measured with the
demo on 2 cores from an empty cache (1800 tokenizer steps): one run after the other with 2 threads, 16 min 0 s
(tokenizers 371 + 363 s, generators 65 + 56 s); ``--jobs 2``, one thread each, 13 min 47 s and 12 min 50 s on
two runs the same day (tokenizers 684 and 591 s side by side, generators 100 and 89 s). Those tokenizers still
ran their temporal convs on PyTorch's slow one-thread kernels; computed as 2D convs, the demo's tokenizers train
2400 steps side by side in 714 and 627 s (13 min 58 s in all; benchmarks/RESULTS.md has the table).

A worker dies with the parent (Linux): after a ``kill -9`` of ``hitbench run --jobs N`` no run goes on beside the
re-run that resumes it. A worker that fails does not stop the others; the parent then reports the runs that
finished and fails naming each failed run, its error and its log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import HitbenchError
from .isolation import die_with_parent

#: lines of a failed worker's log repeated in the error
LOG_TAIL = 15
#: the environment that tells a worker its parent's pid (see :func:`bind_to_parent`)
PARENT = "HITBENCH_JOBS_PARENT"


def bind_to_parent() -> None:
    """In a worker (:data:`PARENT` set): be killed when the parent exits, and stop at once if it already has. The
    variable is removed, so that the processes the worker starts do not take it for theirs."""
    parent = os.environ.pop(PARENT, None)
    if parent is None:
        return
    die_with_parent()
    if os.getppid() != int(parent):
        raise HitbenchError(f"the hitbench run --jobs process that started this worker (pid {parent}) has exited")


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_threads(jobs: int) -> int:
    """Intra-op threads of each of ``jobs`` workers: an equal share of the CPUs, at least one."""
    return max(1, available_cpus() // jobs)


def log_path(log_dir: Path, run: str) -> Path:
    return Path(log_dir) / (run.replace("/", "-") + ".log")


def _log_lines(path: Path) -> list[str]:
    """The non-empty lines of a log (progress bars' carriage returns read as line ends); none when it is absent."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()]


_BAR = re.compile(r"([A-Za-z][\w -]*?):\s*\d+%\|[^|]*\|\s*(\d+/\d+)")


def progress_of(log: Path) -> str:
    """What a worker's log says it is doing: its latest progress bar as ``desc done/total``, or ''."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 2048))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    bars = _BAR.findall(tail)
    return f"{bars[-1][0].strip()} {bars[-1][1]}" if bars else ""


def worker_error(log: Path, code: int) -> str:
    """What went wrong in a failed worker: the ``hitbench: error:`` message its log ends with, else (a crash)
    the log's last lines."""
    lines = _log_lines(log)
    starts = [i for i, line in enumerate(lines) if line.startswith("hitbench: error:")]
    if starts:
        first = lines[starts[-1]].removeprefix("hitbench: error:").strip()
        return f"worker exit {code}: " + "\n".join(([first] if first else []) + lines[starts[-1] + 1:])
    if not lines:
        return f"worker exit {code}; its log is empty"
    return f"worker exit {code}; last lines of its log:\n" + "\n".join(lines[-LOG_TAIL:])


def run_workers(runs: Sequence[str], command: Sequence[str], jobs: int, log_dir: Path,
                poll_s: float = 0.2, status_every: float | None = None) -> dict[str, str]:
    """Run ``command + ["--only", run]`` for every run, at most ``jobs`` at once; return the runs whose worker
    failed, each with its :func:`worker_error` (a failure does not stop the others). Every ``status_every``
    seconds (default: 2 on a terminal, redrawn in place; 60 otherwise) a line says where each running worker is."""
    if not runs:
        return {}
    tty = sys.stderr.isatty()
    status_every = status_every if status_every is not None else (2.0 if tty else 60.0)
    last_status = time.perf_counter()
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    threads = worker_threads(min(jobs, len(runs)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), PARENT: str(os.getpid())}
    queue = list(runs)
    running: dict[subprocess.Popen, tuple[str, float]] = {}
    failed: dict[str, str] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                run = queue.pop(0)
                with open(log_path(log_dir, run), "w", encoding="utf-8") as log:
                    proc = subprocess.Popen([*command, "--only", run], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
                running[proc] = (run, time.perf_counter())
                print(f"hitbench: {run}: started ({threads} thread{'s' if threads > 1 else ''}; log "
                      f"{log_path(log_dir, run)})", file=sys.stderr, flush=True)
            done = [proc for proc in running if proc.poll() is not None]
            if not done:
                time.sleep(poll_s)
            if running and not done and time.perf_counter() - last_status >= status_every:
                last_status = time.perf_counter()
                line = "; ".join(f"{run} {progress_of(log_path(log_dir, run)) or 'running'} "
                                 f"({time.perf_counter() - began:.0f} s)" for run, began in running.values())
                print(f"\r\033[Khitbench: {line}" if tty else f"hitbench: {line}", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            for proc in done:
                run, began = running.pop(proc)
                took = time.perf_counter() - began
                if tty:
                    print("\r\033[K", end="", file=sys.stderr)
                if proc.returncode == 0:
                    print(f"hitbench: {run}: finished in {took:.0f} s", file=sys.stderr, flush=True)
                else:
                    failed[run] = worker_error(log_path(log_dir, run), proc.returncode)
                    print(f"hitbench: {run}: failed (exit {proc.returncode}) after {took:.0f} s", file=sys.stderr,
                          flush=True)
    finally:  # interrupted: stop the workers; their runs resume on the next call
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
    return failed
