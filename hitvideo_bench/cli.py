"""The ``hitbench`` command.

Exit codes: 0 ok, 1 a run failed (the others still ran and are reported), 2 bad input (recipe, arguments,
data). Errors print one line per problem, ``file:line: path.to.field: message``, without a traceback unless
``HITBENCH_FULL_ERROR=1``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

from . import allocator, cpumode, faults
from .errors import BadInput, HitbenchError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors are bad input too: exit 2, short
        self.print_usage(sys.stderr)
        raise BadInput(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hitbench", description="Benchmark video tokenizers and text-to-video generators.")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load plugin module NAME (by import name), or 'no:NAME' to disable one")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train and measure the variants of a recipe")
    run.add_argument("recipe", type=Path)
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a recipe field (dotted path; value read as YAML)")
    run.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="resume", action="store_true", default=True,
                      help="reuse finished runs (default)")
    mode.add_argument("--fresh", dest="resume", action="store_false", help="re-run every variant")
    run.add_argument("--no-cache", dest="use_cache", action="store_false",
                     help="retrain components even when the component cache has them")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--native-cpu", action="store_true",
                     help="use the CPU's own fastest kernels instead of capping them at AVX2 on x86-64 (numbers may "
                          f"then differ between CPUs; same as {cpumode.SWITCH}=0; docs/running.md)")
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="data-parallel training with N processes on this node (started with torchrun)")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run up to N variant x seed runs at once, each in its own process with an equal share "
                          "of the CPUs (outputs in <results>/logs/)")
    run.add_argument("--only", metavar="VARIANT/seed-S", help=argparse.SUPPRESS)  # a --jobs worker's run

    val = sub.add_parser("validate", help="check a recipe without training: schema, names, sweep, shapes, "
                                          "parameters and training memory per GPU")
    val.add_argument("recipe", type=Path)
    val.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    val.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="training memory per GPU with each global batch split over N processes (as run --nproc N)")

    ls = sub.add_parser("ls", help="list components and the plugin providing each")
    ls.add_argument("kind", nargs="?", help="tokenizer, codec, generator, metric or dataset")

    table = sub.add_parser("table", help="re-render the tables and plots of a finished run")
    table.add_argument("results_dir", type=Path)

    weights = sub.add_parser("weights", help="pretrained weights the metrics need (built-in and plugins'): where, "
                                             "present or missing, which plugin declares each")
    action = weights.add_mutually_exclusive_group()
    action.add_argument("--import", dest="import_file", type=Path, metavar="FILE",
                        help="verify a downloaded weight file (or model folder) and put it where the code looks")
    action.add_argument("--download", nargs="*", metavar="NAME",
                        help="fetch the named weights (default: every missing one) from their canonical URLs "
                             "(the only command that uses the network; proxies from the environment)")
    return parser


def cmd_run(args) -> int:
    from .jobs import bind_to_parent
    from .recipe import load_recipe
    from .runner import RunOptions, RunsFailed, recipe_runs, run_recipe
    from .training import is_main_process

    if args.only is not None:  # a --jobs worker
        bind_to_parent()
    resolved = load_recipe(args.recipe, args.sets)
    if args.nproc < 1:
        raise BadInput(f"--nproc {args.nproc}: needs 1 or more processes")
    if args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}: needs 1 or more runs at once")
    if args.jobs > 1 and args.nproc > 1:
        raise BadInput(f"--jobs {args.jobs} with --nproc {args.nproc}: use one of them (runs side by side, or "
                       "each run data-parallel)")
    runs = [name for _, _, name in recipe_runs(resolved)]
    if args.only is not None and args.only not in runs:
        raise BadInput(f"--only {args.only}: {args.recipe} has no such run (allowed: {', '.join(runs)})")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(args.nproc, args.argv)
    # a --jobs worker writes its progress bars into its log, where the parent reads them
    progress = not args.quiet and (sys.stderr.isatty() or args.only is not None)
    options = RunOptions(out=args.out, resume=args.resume, device=args.device, progress=progress,
                         use_cache=args.use_cache, jobs=args.jobs, only=args.only, worker_command=worker_command(args))
    try:
        result = run_recipe(resolved, options)
    except RunsFailed as exc:  # the runs that finished have their report: show it, then fail naming the others
        print_result(exc.result)
        raise
    if not is_main_process():
        return 0
    if args.only is not None:
        print(f"finished run {args.only}: {result.out_dir / 'runs' / args.only}")
        return 0
    print_result(result)
    return 0


def print_result(result) -> None:
    """The table and claims of a recipe's runs, the runs reused and failed, and where the results are."""
    for shown in (result.out_dir / "table.md", result.out_dir / "claims.md"):
        if shown in result.files:
            print(shown.read_text(encoding="utf-8"))
    if result.reused:
        print(f"reused finished runs: {', '.join(result.reused)}")
    if result.failed:
        print(f"failed runs: {', '.join(result.failed)} (manifest.json lists their errors and logs)")
    print(f"results: {result.out_dir}")


def worker_command(args) -> list[str]:
    """The ``hitbench run`` command of a ``--jobs`` worker (its run follows as ``--only RUN``): the same recipe,
    overrides, plugins, results root, device, cache use and ``--quiet``; resuming (the parent has cleared the
    runs a ``--fresh`` asked for)."""
    return [sys.executable, "-m", "hitvideo_bench", *(a for p in args.plugins for a in ("-p", p)),
            "run", str(args.recipe), *(a for kv in args.sets for a in ("--set", kv)), "--out", str(args.out),
            "--device", args.device, *(("--quiet",) if args.quiet else ()),
            *(() if args.use_cache else ("--no-cache",))]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run the command ``argv`` under ``torchrun --standalone --nproc_per_node N`` (one node); the
    processes it starts see ``WORLD_SIZE`` and run the recipe.

    For several nodes, call torchrun yourself: ``torchrun --nnodes ... -m hitvideo_bench run ...``.
    """
    argv = list(argv)  # without --nproc, which torchrun's own parser would take for an ambiguous option
    for i, arg in enumerate(argv):
        if arg == "--nproc" or arg.startswith("--nproc="):
            del argv[i:i + (2 if arg == "--nproc" else 1)]
            break
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "hitvideo_bench", *argv]
    print("hitbench: launching " + " ".join(cmd[1:]), file=sys.stderr)
    return subprocess.call(cmd)


def cmd_validate(args) -> int:
    import torch

    from . import memory
    from .manager import get_catalog
    from .recipe import load_recipe

    resolved = load_recipe(args.recipe, args.sets)
    catalog = get_catalog()
    print(f"{resolved.path}: ok: recipe {resolved.name!r}, scale {resolved.recipe.scale}, "
          f"{len(resolved.variants)} variant(s) x {len(resolved.recipe.seeds)} seed(s)")
    for variant in resolved.variants:
        spec = variant.spec
        shape = "x".join(map(str, variant.clip_shape or ()))
        print(f"  {variant.name}: dataset {spec.dataset.name} ({spec.dataset.preset}, clips {shape})")
        if spec.codec is not None:
            print(f"    codec {spec.codec.name} ({spec.codec.preset})")
            continue
        ref = spec.tokenizer
        with torch.device("meta"), catalog.get("tokenizer", ref.name).blame():
            tokenizer = catalog.create("tokenizer", ref.name, preset=ref.preset, overrides=ref.config)
        grids = tokenizer.token_grid_shapes(*variant.clip_shape)
        line = (f"    tokenizer {ref.name} ({ref.preset}): "
                f"{memory.format_count(sum(p.numel() for p in tokenizer.parameters()))} parameters, tokens per layer "
                + ", ".join("x".join(map(str, g)) for g in grids))
        if tokenizer.trainable:
            with catalog.get("tokenizer", ref.name).blame():
                _print_with_memory(line, type(tokenizer), tokenizer.config, variant.clip_shape, world_size=args.nproc,
                                   execution=resolved.recipe.run)
            for warning in tokenizer.training_warnings(*variant.clip_shape):
                print(f"      warning: {warning}")
        else:
            print(line)
        if spec.generator is not None:
            ref = spec.generator
            config = catalog.make_config("generator", ref.name, ref.preset, ref.config)
            spec = catalog.get("generator", ref.name)
            with spec.blame():
                _print_with_memory(f"    generator {ref.name} ({ref.preset})", spec.load(), config, grids,
                                   world_size=args.nproc, with_params=True, tokenizer=tokenizer,
                                   clip_shape=variant.clip_shape, execution=resolved.recipe.run)
    return 0


def _print_with_memory(line: str, cls, config, shape, *, world_size: int, with_params: bool = False,
                       execution=None, **dependencies) -> None:
    """Print a trainable component's line with its training memory per GPU, the estimate's notes below, and the
    settings that make it fit an 80 GB GPU."""
    from .memory import NotEstimated, TrainingTrace, fit_advice, format_count

    try:
        trace = TrainingTrace(cls, config, shape, execution=execution, **dependencies)
        result = trace.estimate(world_size=world_size)
    except NotEstimated as exc:
        print(f"{line}; training memory: not estimated ({exc})")
        return
    params = f": {format_count(result.trainable_params)} parameters" if with_params else ""
    print(f"{line}{params}; {result.describe()}")
    for note in result.notes:
        print(f"      note: {note}")
    try:
        print(f"      {fit_advice(trace, world_size)}")
    except NotEstimated as exc:
        print(f"      fit on an 80 GB GPU: not estimated ({exc})")


def cmd_ls(args) -> int:
    from .manager import get_plugins

    plugins = get_plugins()
    specs = plugins.catalog.specs(args.kind)
    rows = [(s.kind, s.name, f"{s.distribution} {s.dist_version}", s.description) for s in specs]
    widths = [max([len(r[i]) for r in rows] + [4]) for i in range(3)]
    print(f"{'kind':<{widths[0]}}  {'name':<{widths[1]}}  {'provided by':<{widths[2]}}  description")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    for failure in plugins.failures:
        print(f"plugin {failure.name!r} failed to load: {failure.error}", file=sys.stderr)
    return 0


def cmd_table(args) -> int:
    from .report import rerender

    files = rerender(args.results_dir)
    print((args.results_dir / "table.md").read_text(encoding="utf-8"))
    print("wrote: " + ", ".join(str(f) for f in files))
    return 0


def cmd_weights(args) -> int:
    from . import download, weights

    if args.import_file is not None:
        info = weights.import_file(args.import_file)
        print(f"imported {args.import_file} as {info.name}: {info.path}")
        return 0
    if args.download is not None:
        for info, outcome in download.download(args.download, progress=sys.stderr.isatty()):
            print(f"{info.name}: {outcome}")
        return 0
    print(weights.format_table())
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "ls": cmd_ls, "table": cmd_table, "weights": cmd_weights}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hitbench`` console script."""
    faults.enable()  # a native crash anywhere prints where it was (a run's own log takes over while it runs)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser().parse_args(argv)
        args.argv = argv
        if getattr(args, "native_cpu", False):
            os.environ[cpumode.SWITCH] = "0"  # inherited by --jobs workers and torchrun ranks
        cpumode.apply()  # before any kernel runs: see hitvideo_bench/cpumode.py
        allocator.apply()
        if (why := cpumode.not_in_force()) is not None:
            print(f"hitbench: warning: reproducible CPU mode not fully in force: {why}", file=sys.stderr)
        from .manager import get_plugins

        get_plugins(args.plugins)
        return COMMANDS[args.command](args)
    except HitbenchError as exc:
        if os.environ.get("HITBENCH_FULL_ERROR") == "1":
            traceback.print_exc()
        print(f"hitbench: error: {exc}" if "\n" not in str(exc) else f"hitbench: error:\n{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hitbench: interrupted; finished runs are kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
