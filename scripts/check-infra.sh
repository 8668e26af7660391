#!/usr/bin/env bash
# Validates infra/ (CloudFormation template, user-data, IAM policies) and deploys it into
# moto's CloudFormation. Installs what is missing: Python tools into .venv (pinned in
# infra/requirements.txt; checkov in .venv/tools-checkov, see infra/requirements-checkov.txt)
# and shellcheck with apt-get. A tool that cannot be installed is a failure when CI is set,
# a skip otherwise. Ends with the line "N passed, M failed" (", K skipped" if any);
# exits non-zero if anything failed.
#
# Environment: STACK_OUTPUTS_JSON  where deploy_moto.py writes the stack outputs
#                                  (default .work/infra-stack.json)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
infra="$root/infra"
venv="$root/.venv"
checkov_venv="$venv/tools-checkov"
py="$venv/bin/python"
stack_json="${STACK_OUTPUTS_JSON:-$root/.work/infra-stack.json}"
work=$(mktemp -d)
moto_pid=""

passed=0
failed=0
skipped=0

cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null
    wait "$moto_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/checks.sh
. "$root/scripts/lib/checks.sh"

# ---------------------------------------------------------------- tool setup
echo "=== setup"
tools_ok=true
if [ ! -x "$py" ]; then
  python3 -m venv "$venv" || tools_ok=false
fi
if $tools_ok && ! "$py" -c 'import moto, cfnlint, parliament, boto3' 2>/dev/null; then
  echo "installing infra/requirements.txt into $venv"
  "$venv/bin/pip" install -q -r "$infra/requirements.txt" >"$work/pip.log" 2>&1 ||
    { tail -20 "$work/pip.log"; tools_ok=false; }
fi
have_python_tools=false
if $tools_ok && "$py" -c 'import moto, cfnlint, parliament, boto3' 2>/dev/null; then
  have_python_tools=true
fi

if [ ! -x "$checkov_venv/bin/checkov" ] && [ -x "$py" ]; then
  echo "installing infra/requirements-checkov.txt into $checkov_venv"
  { "$py" -m venv "$checkov_venv" &&
    "$checkov_venv/bin/pip" install -q -r "$infra/requirements-checkov.txt"; } >"$work/pip-checkov.log" 2>&1 ||
    tail -20 "$work/pip-checkov.log"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "installing shellcheck (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; } \
    >"$work/apt.log" 2>&1 || tail -20 "$work/apt.log"
fi

$have_python_tools && echo "cfn-lint $("$venv/bin/cfn-lint" --version 2>&1 | awk '{print $NF}')," \
  "moto $("$py" -c 'import moto; print(moto.__version__)')," \
  "parliament $("$py" -c 'import importlib.metadata as m; print(m.version("parliament"))')"
[ -x "$checkov_venv/bin/checkov" ] && echo "checkov $("$checkov_venv/bin/checkov" --version 2>&1)"
command -v shellcheck >/dev/null 2>&1 && echo "shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')"

# ------------------------------------------------------------------- checks
if $have_python_tools; then
  check "cfn-lint infra/k3s-autoscaler.yaml" "$venv/bin/cfn-lint" "$infra/k3s-autoscaler.yaml"
else
  unavailable "cfn-lint" "cannot install the Python tools"
fi

if [ -x "$checkov_venv/bin/checkov" ]; then
  # --skip-download: no calls to the vendor's platform (this runs offline).
  check "checkov -d infra/" "$checkov_venv/bin/checkov" -d "$infra" --skip-download --quiet --compact
else
  unavailable "checkov" "cannot install checkov"
fi

if $have_python_tools; then
  check "parliament (infra/policies/*.json)" "$py" "$infra/tests/iam_audit.py" "$infra"
else
  unavailable "parliament" "cannot install the Python tools"
fi

if command -v shellcheck >/dev/null 2>&1; then
  for script in "$infra/userdata/server.sh" "$infra/userdata/worker.sh" "$root/scripts/check-infra.sh" \
    "$root/scripts/lib/checks.sh"; do
    check "shellcheck ${script#"$root"/}" shellcheck -x -P "$root" "$script"
  done
else
  unavailable "shellcheck" "cannot install shellcheck"
fi

# Drift detector must notice a change in each kind of embedded file.
sync_detects_drift() {
  local copy="$work/infra-copy" rc=0
  rm -rf "$copy"
  cp -r "$infra" "$copy"
  echo 'echo drift' >>"$copy/userdata/worker.sh"
  if "$py" "$copy/tests/check_sync.py" "$copy" >/dev/null 2>&1; then
    echo "user-data drift NOT detected"
    rc=1
  else
    echo "user-data drift detected"
  fi
  cp "$infra/userdata/worker.sh" "$copy/userdata/worker.sh"
  sed -i 's/"ec2:TerminateInstances"/"ec2:*"/' "$copy/policies/autoscaler.json"
  if "$py" "$copy/tests/check_sync.py" "$copy" >/dev/null 2>&1; then
    echo "policy drift NOT detected"
    rc=1
  else
    echo "policy drift detected"
  fi
  cp "$infra/policies/autoscaler.json" "$copy/policies/autoscaler.json"
  echo '{}' >"$copy/policies/orphan.json"
  if "$py" "$copy/tests/check_sync.py" "$copy" >/dev/null 2>&1; then
    echo "unclaimed policy file NOT detected"
    rc=1
  else
    echo "unclaimed policy file detected"
  fi
  return "$rc"
}

deploy_to_moto() {
  local port i
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  moto_pid=$!
  for i in $(seq 100); do
    if "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
      break
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null || [ "$i" -eq 100 ]; then
      echo "moto_server did not start:"
      cat "$work/moto.log"
      return 1
    fi
    sleep 0.2
  done
  "$py" "$infra/tests/deploy_moto.py" --endpoint-url "http://127.0.0.1:$port" --out "$stack_json"
}

if $have_python_tools; then
  check "template == infra/userdata/*.sh, infra/policies/*.json" "$py" "$infra/tests/check_sync.py" "$infra"
  check "drift check catches drift" sync_detects_drift
  check "user-data against stubbed IMDSv2 / aws / installer" "$py" "$infra/tests/test_userdata.py" "$infra"
  check "IAM conditions over the deployed policies (test_policies.py)" "$py" "$infra/tests/test_policies.py" "$infra"
  check "deploy into moto CloudFormation" deploy_to_moto
else
  unavailable "template sync, user-data test, moto deploy" "cannot install the Python tools"
fi

echo
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
