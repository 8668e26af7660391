#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then runs the Rust unit and
# integration tests (moto), the alerting checks (promtool, amtool) and the infra checks
# (cfn-lint, checkov, parliament, shellcheck, CloudFormation on moto) and the deploy/ checks
# (manifests, scrape config, dashboard). Prints a total line.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
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

# --all-targets includes benches/bench, which runs in smoke mode under `cargo test` and
# fails when a figure is not produced; the check below fails if it did not run at all.
run cargo test --locked --all-targets
if ! grep -q "k3s-autoscaler benchmark (smoke)" "$log"; then
  echo "FAILED: the benchmark smoke run (benches/bench) printed no table"
  status=1
fi
for check in scripts/check-alerting.sh scripts/check-infra.sh scripts/check-deploy.sh; do
  [ -f "$check" ] && run bash "$check"
done

sum() { grep -oE "$1" "$log" | grep -oE '^[0-9]+' | awk '{ s += $1 } END { print s + 0 }'; }
passed=$(sum '[0-9]+ passed')
failed=$(sum '[0-9]+ failed')
echo
echo "total: ${passed:-0} passed, ${failed:-0} failed"
[ "${failed:-0}" -eq 0 ] || status=1
exit $status
