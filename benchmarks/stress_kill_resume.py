"""Stress check (not a timed test): kill -9 a recipe's run at random moments, resume it, compare with a clean run.

    python benchmarks/stress_kill_resume.py RECIPE [--cycles N] [--jobs N] [--set key=value ...] [-p PLUGIN ...]
        [--kill-after MIN MAX] [--hang-after S] [--seed S] [--out DIR] [--reference DIR]

1. An uninterrupted run of RECIPE (``--fresh``) into ``OUT/reference``: the metrics to match (``--reference``: the
   ``reference`` folder of an earlier check of the same recipe and settings instead).
2. N cycles into ``OUT/stress``: start ``hitbench run`` (resuming), kill -9 it after a random delay drawn from
   ``--kill-after`` (seeded); a run that ends by itself before its kill is recorded with its exit status (a
   crash: killed by a signal we did not send, or a failure: exit status other than 0). After each kill, any
   process the run started that outlives it by 60 s (a codec worker left encoding, a ``--jobs`` worker) is
   recorded as an orphan and killed.
3. A final resume, given ``--hang-after`` seconds before it counts as a hang.
4. The final ``metrics.csv`` against the reference's: equal, or the rows that differ.
It exits 1 on any crash, hang, orphan or difference.

The environment (PYTHONPATH, HITBENCH_CACHE) is passed on, so both runs share the trained-component cache. The
report is printed and written to ``OUT/stress_report.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from hitvideo_bench.io import write_json
from hitvideo_bench.recipe import load_recipe


def hitbench(recipe: Path, out: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hitvideo_bench", *(a for p in args.plugins for a in ("-p", p)), "run",
            str(recipe), *(a for kv in args.sets for a in ("--set", kv)), "--out", str(out), "--quiet",
            "--device", "cpu", "--jobs", str(args.jobs), *extra]


def session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the run and everything it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def run_once(cmd: list[str], log: Path, kill_after: float | None, hang_after: float) -> dict:
    """Run ``cmd`` in a session of its own; kill -9 its main process after ``kill_after`` seconds (None: let it
    finish, killing it as hung after ``hang_after``). Returns what happened."""
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    limit = kill_after if kill_after is not None else hang_after
    try:
        code = proc.wait(timeout=limit)
        outcome = "finished" if code == 0 else (f"crashed ({signal.Signals(-code).name})" if code < 0
                                                 else f"failed (exit {code})")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)  # the run's main process only, as a kill -9 from outside would
        proc.wait()
        code, outcome = -9, "killed" if kill_after is not None else "hung (killed)"
    deadline = time.monotonic() + 60  # what the run started dies with it (PR_SET_PDEATHSIG, closed pipes): in time
    while (orphans := session_processes(proc.pid)) and time.monotonic() < deadline:
        time.sleep(1.0)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return {"outcome": outcome, "exit": code, "seconds": round(time.perf_counter() - started, 1),
            "kill_after": kill_after, "orphans": orphans}


def compare(reference: Path, final: Path) -> list[str]:
    """Rows of two metrics.csv files that differ (empty: equal)."""
    keys = ["recipe", "variant", "seed", "metric", "step"]
    a, b = (pd.read_csv(p).sort_values(keys, na_position="first").reset_index(drop=True) for p in (reference, final))
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return [f"shape {a.shape} != {b.shape} or columns differ"]
    diff = ~((a == b) | (a.isna() & b.isna())).all(axis=1)
    return [f"{a.loc[i, 'variant']} {a.loc[i, 'metric']}: {a.loc[i, 'value']} != {b.loc[i, 'value']}"
            for i in a.index[diff]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1, help="hitbench run --jobs (every run, the reference too)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="PLUGIN")
    parser.add_argument("--kill-after", nargs=2, type=float, default=(3.0, 30.0), metavar=("MIN", "MAX"))
    parser.add_argument("--hang-after", type=float, default=3600.0, help="seconds before a final run is hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/stress"))
    parser.add_argument("--reference", type=Path, help="an earlier check's OUT/reference (the same recipe and --set)")
    args = parser.parse_args()
    resolved = load_recipe(args.recipe, args.sets)  # bad input fails here, before any run
    results = Path(resolved.name) / resolved.run_id() / "metrics.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    report: dict = {"recipe": str(args.recipe), "sets": args.sets, "cycles": args.cycles,
                    "kill_after": list(args.kill_after), "seed": args.seed, "jobs": args.jobs}
    reference = args.reference or args.out / "reference"
    if args.reference is None:
        report["reference"] = run_once(hitbench(args.recipe, reference, args, "--fresh"),
                                       args.out / "reference.log", None, args.hang_after)
    else:
        report["reference"] = {"outcome": "reused", "folder": str(reference)}
    stress = args.out / "stress"
    first = hitbench(args.recipe, stress, args, "--fresh")
    cycles = []
    for cycle in range(args.cycles):
        cmd = first if cycle == 0 else hitbench(args.recipe, stress, args)
        cycles.append(run_once(cmd, args.out / "stress.log", rng.uniform(*args.kill_after), args.hang_after))
        print(f"cycle {cycle + 1}/{args.cycles}: {cycles[-1]}", flush=True)
    report["cycles_run"] = cycles
    report["final"] = run_once(hitbench(args.recipe, stress, args), args.out / "stress.log", None, args.hang_after)
    outcomes = [c["outcome"] for c in cycles] + [report["final"]["outcome"]]
    report["crashes"] = sum(o.startswith(("crashed", "failed")) for o in outcomes)
    report["hangs"] = sum(o.startswith("hung") for o in outcomes)
    report["orphans"] = sum(len(c["orphans"]) for c in [*cycles, report["final"]])
    ref, fin = reference / results, stress / results
    report["differences"] = (compare(ref, fin) if ref.exists() and fin.exists()
                             else [f"missing: {p}" for p in (ref, fin) if not p.exists()])
    write_json(args.out / "stress_report.json", report)
    print(f"crashes {report['crashes']}, hangs {report['hangs']}, orphans {report['orphans']}, "
          f"metrics.csv differences {len(report['differences'])}: {report['differences'][:10]}")
    return 0 if not (report["crashes"] or report["hangs"] or report["orphans"] or report["differences"]) else 1


if __name__ == "__main__":
    sys.exit(main())
