#!/usr/bin/env bash
# The local demo, the README's first command: the whole pipeline on loopback through a
# flash sale — moto (EC2, DynamoDB), the cluster simulator (fake Kubernetes API, kubelets,
# node-exporter / kube-state-metrics series from a load model), the real Prometheus with
# alert-rules/autoscaler.rules.yaml, the real Alertmanager with alertmanager/alertmanager.yml
# and k3s-autoscaler. One line per event, then a summary. About 3 minutes after the build.
#
#   ./scripts/demo.sh             30x faster than production (10m windows last 20s)
#   ./scripts/demo.sh --speed 10  slower, closer to real time
#
# Windows and timers are the real files' divided by the speed (scripts/shorten-rules.sh);
# nothing is kept in a second copy. Installs what is missing first (scripts/setup.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
echo "building k3s-autoscaler and the demo ..."
cargo build --locked --quiet --bin k3s-autoscaler --example demo
target=${CARGO_TARGET_DIR:-$root/target}
export K3S_AUTOSCALER_BIN="$target/debug/k3s-autoscaler"
exec "$target/debug/examples/demo" "$@"
