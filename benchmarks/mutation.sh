#!/usr/bin/env bash
# Mutation testing of the core with mutmut (not part of CI: CPU-heavy, tens of minutes per module on 2 cores).
#
#   bash benchmarks/mutation.sh [MODULE ...]     # default: every module below; results in docs/testing.md
#
# Each module runs in its own scratch copy of the work tree (benchmarks/.mutation/<module>/) with only the tests
# that exercise it, so that a mutant runs a few seconds of tests, not the suite. mutmut then runs, per mutant, only
# the tests that cover the mutated function. The counts land in benchmarks/.mutation/<module>.json and the
# surviving mutants in benchmarks/.mutation/<module>.survived; `mutmut show NAME` in the scratch copy shows one.
# Set JOBS to the number of mutants tested at once (default 1: the machine is shared) and NICE=0 to run at
# normal priority.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
JOBS=${JOBS:-1}
NICE=${NICE:-19}

# module -> "source path(s) | test files". The hypothesis tests are left out: their examples run again for every
# surviving mutant (a minute each on 2 shared cores), so the recipe/ score is a lower bound. runner and report run
# the fixture plugin's recipes (a second each) and the fast unit tests of test_runner_units.py / test_report.py;
# the tests marked slow (subprocesses, --jobs workers) are left out of every module.
declare -A MODULES=(
  [tokens]="hitvideo_bench/tokens.py|tests/test_tokens.py tests/test_properties.py tests/test_metrics_pixel.py tests/test_masked.py"
  [catalog]="hitvideo_bench/catalog.py|tests/test_catalog.py tests/test_plugins.py tests/test_recipe.py"
  [cache]="hitvideo_bench/cache.py|tests/test_cache.py tests/test_stages.py tests/test_runner.py"
  [recipe]="hitvideo_bench/recipe/*|tests/test_recipe_resolve.py tests/test_recipe.py tests/test_recipe_errors.py \
    tests/test_recipe_duplicates.py"
  [runner]="hitvideo_bench/runner.py|tests/test_runner_units.py tests/test_runner.py tests/test_runner_failures.py \
    tests/test_runner_partial.py tests/test_run_identity.py tests/test_resume_reported.py tests/test_stages.py"
  [report]="hitvideo_bench/report/*|tests/test_report.py tests/test_report_readable.py tests/test_runner.py \
    tests/test_runner_partial.py tests/test_claims.py tests/test_run_identity.py"
  [metrics]="hitbench_builtin/metrics/pixel.py hitbench_builtin/metrics/rate.py|tests/test_metrics_pixel.py tests/test_metrics_merge.py"
)
ORDER=(tokens catalog cache metrics recipe runner report)
[ $# -gt 0 ] && ORDER=("$@")

toml_list() { printf '"%s", ' "$@" | sed 's/, $//'; }

for module in "${ORDER[@]}"; do
  spec=${MODULES[$module]:?unknown module $module (known: ${!MODULES[*]})}
  read -r -a sources <<< "${spec%%|*}"
  read -r -a tests <<< "${spec##*|}"
  work=$ROOT/benchmarks/.mutation/$module
  rm -rf "$work"
  mkdir -p "$work"
  # a copy of the tracked and new files with the built-in plugins at the top (mutmut names a module by its path);
  # the venv stays where it is: its editable install is shadowed by mutmut's mutants/ folder, first on sys.path
  git ls-files --cached --others --exclude-standard | grep -v '^benchmarks/.mutation/' \
    | tar -cf - -T - | tar -xf - -C "$work"
  mv "$work/plugins/hitbench_builtin" "$work/hitbench_builtin"
  cat >> "$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["hitvideo_bench", "hitbench_builtin"]
only_mutate = [$(toml_list "${sources[@]}")]
also_copy = ["tests", "recipes", "examples"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "-q", "-x"]
pytest_add_cli_args_test_selection = [$(toml_list "${tests[@]}")]
EOF
  echo "mutation: $module (${sources[*]}) with ${tests[*]}"
  started=$(date +%s)
  (cd "$work" && OMP_NUM_THREADS=1 nice -n "$NICE" \
     "$PY" -m mutmut run --max-children "$JOBS" > "$work/run.log" 2>&1) || echo "mutation: mutmut exited $? (see $work/run.log)"
  (cd "$work" && "$PY" -m mutmut export-cicd-stats > /dev/null 2>&1 && cp mutants/mutmut-cicd-stats.json "$work.json")
  (cd "$work" && "$PY" -m mutmut results > "$work.survived" 2>&1) || true
  echo "mutation: $module took $(( $(date +%s) - started )) s: $(cat "$work.json" 2>/dev/null)"
done
