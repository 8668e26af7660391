#!/usr/bin/env bash
# The quickstart's test: docs/quickstart.md's command blocks against moto and the local
# components (scripts/lib/quickstart_test.py says exactly what runs and how):
#   - drift: each block is a named step, either run here or listed once in the doc as
#     needing a real account;
#   - run: the steps that can run here, as written: key pair, pinned AMI, the stack in moto's
#     CloudFormation, its outputs, the config layer it wrote to SSM, the webhook token as an
#     SSM SecureString and the Secrets filled from it (kubectl create writes their keys to
#     files), `amtool alert add` against a real Alertmanager with alertmanager/alertmanager.yml
#     (posting with that token), and `status` against the binary with the Deployment's
#     config layers.
# Needs .venv (moto, boto3: scripts/setup.sh), the aws CLI, amtool and prometheus-alertmanager,
# and the binary (K3S_AUTOSCALER_BIN, default target/debug/k3s-autoscaler, built when missing).
# A missing tool is a failure when CI is set, a skip otherwise. Last line: "N passed, M failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
skipped=0
# shellcheck source=scripts/lib/checks.sh
. "$root/scripts/lib/checks.sh"

py="$root/.venv/bin/python"
check "docs/quickstart.md: every step run here or listed as needing a real account" \
  python3 scripts/lib/quickstart_test.py drift

bin=${K3S_AUTOSCALER_BIN:-$root/target/debug/k3s-autoscaler}
if [ ! -x "$bin" ]; then
  echo "building $bin"
  cargo build --locked --bin k3s-autoscaler >"$work/build.log" 2>&1 || tail -20 "$work/build.log"
fi
missing=""
[ -x "$py" ] && "$py" -c 'import moto, boto3' 2>/dev/null || missing="$missing .venv(moto, boto3)"
command -v aws >/dev/null 2>&1 || missing="$missing aws"
command -v amtool >/dev/null 2>&1 || missing="$missing amtool"
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
[ -x "$bin" ] || missing="$missing k3s-autoscaler"
if [ -z "$missing" ]; then
  check "quickstart steps against moto, Alertmanager and the binary" \
    timeout 600 "$py" scripts/lib/quickstart_test.py run "$bin"
else
  unavailable "quickstart steps" "missing:$missing"
fi
if command -v shellcheck >/dev/null 2>&1; then
  check "shellcheck scripts/check-quickstart.sh" shellcheck -x -P "$root" "$root/scripts/check-quickstart.sh"
fi

summary
