#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then runs the Rust unit and
# integration tests (moto), the alerting checks (promtool, amtool) and the infra checks
# (cfn-lint, checkov, parliament, shellcheck, CloudFormation on moto) and the deploy/ checks
# (manifests, scrape config, dashboard), and the local demo end to end. Prints a total line.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
mkdir -p .work
log=.work/test-output.txt
: >"$log"

bash scripts/setup.sh || { echo "setup failed"; exit 1; }

status=0
run() {
  echo "=== $*"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "FAILED: $* (exit $rc)"; status=1; }
}

# --all-targets includes tests/bench, which runs in smoke mode under `cargo test` and
# fails when a figure is not produced; the check below fails if it did not run at all.
run cargo test --locked --all-targets
if ! grep -q "k3s-autoscaler benchmark (smoke)" "$log"; then
  echo "FAILED: the benchmark smoke run (tests/bench) printed no table"
  status=1
fi
# The README's other command, so the main job cannot rot: the demo exits non-zero unless the
# flash sale scaled the pool up and drained it back to min. Its lines go to a file; the summary
# is shown.
# shellcheck disable=SC2317 # called through run
demo() {
  if ./scripts/demo.sh >.work/demo-output.txt 2>&1; then
    sed -n '/^Summary/,$p' .work/demo-output.txt
    echo "demo: 1 passed"
  else
    tail -60 .work/demo-output.txt
    echo "demo: 1 failed (full output in .work/demo-output.txt)"
    return 1
  fi
}
run demo
for check in scripts/check-alerting.sh scripts/check-infra.sh scripts/check-deploy.sh scripts/check-docs.sh \
  scripts/check-quickstart.sh; do
  if [ -f "$check" ]; then
    run bash "$check"
  else
    echo "FAILED: $check is missing"
    status=1
  fi
done

# Only the result lines: cargo's "test result:", the check scripts' "N passed, M failed" (with
# ", K skipped" when they skipped something) and the demo's line (a check's detail such as
# "AvailabilityZone1/2 passed" must not count). cargo's "ignored" counts as skipped.
results() { grep -E '^(test result: |[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$|demo: 1 )' "$log"; }
sum() { results | grep -oE "$1" | grep -oE '^[0-9]+' | awk '{ s += $1 } END { print s + 0 }'; }
passed=$(sum '[0-9]+ passed')
failed=$(sum '[0-9]+ failed')
skipped=$(($(sum '[0-9]+ skipped') + $(sum '[0-9]+ ignored')))
echo
if [ "$skipped" -gt 0 ]; then
  echo "skipped checks (see above):"
  grep -E '^SKIP' "$log" | sed 's/^/  /'
fi
[ "${failed:-0}" -eq 0 ] || status=1
# Under CI a skipped check is a failure: it proves nothing.
if [ "$skipped" -gt 0 ] && [ -n "${CI:-}" ]; then
  echo "FAILED: $skipped checks skipped under CI"
  status=1
fi
echo "total: ${passed:-0} passed, ${failed:-0} failed, ${skipped} skipped"
exit $status
