#!/usr/bin/env bash
# Generates the prometheus-operator PrometheusRule resources from the plain rule files,
# which stay the only source (alert-rules/README.md):
#   alert-rules/prometheusrule.yaml           <- autoscaler.rules.yaml + health.rules.yaml
#                                                + notifications.rules.yaml
#   alert-rules/prometheusrule-optional.yaml  <- optional.rules.yaml
# A pure text transform (bash + awk, no YAML library): each source's `groups:` block,
# from its first non-comment line on, is indented by two spaces under `spec:`. Block
# scalars (`expr: |`) keep their meaning because their indentation is relative.
#
#   scripts/gen-prometheusrule.sh           rewrite the generated files
#   scripts/gen-prometheusrule.sh --check   exit 1 (with a diff) if they are out of date
set -euo pipefail
cd "$(dirname "$0")/.."

# doc NAME SOURCE: one PrometheusRule document.
doc() {
  cat <<HDR
---
# Generated from alert-rules/$2 by scripts/gen-prometheusrule.sh: edit that file.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: $1
  labels:
    app.kubernetes.io/name: k3s-autoscaler
    # Add the label your Prometheus' ruleSelector wants, e.g. for kube-prometheus-stack:
    # release: kube-prometheus-stack
spec:
HDR
  # Skip the source's leading comment block (it speaks about the source file), then
  # indent non-empty lines by two spaces (no trailing blanks on empty lines).
  awk 'started || !/^[[:space:]]*(#|$)/ { started = 1; if ($0 == "") print ""; else print "  " $0 }' \
    "alert-rules/$2"
}

gen_main() {
  echo "# PrometheusRule resources for prometheus-operator users (namespace: kubectl -n)."
  echo "# GENERATED: do not edit; run scripts/gen-prometheusrule.sh after changing alert-rules/*.rules.yaml."
  doc k3s-autoscaler-scaling autoscaler.rules.yaml
  doc k3s-autoscaler-health health.rules.yaml
  doc k3s-autoscaler-notifications notifications.rules.yaml
}

gen_optional() {
  echo "# Optional PrometheusRule for prometheus-operator users: apply it to enable the rules"
  echo "# of alert-rules/optional.rules.yaml (read its comments first)."
  echo "# GENERATED: do not edit; run scripts/gen-prometheusrule.sh after changing alert-rules/*.rules.yaml."
  doc k3s-autoscaler-optional optional.rules.yaml
}

targets=(prometheusrule.yaml prometheusrule-optional.yaml)
generators=(gen_main gen_optional)

if [[ "${1:-}" == "--check" ]]; then
  rc=0
  for i in "${!targets[@]}"; do
    f="alert-rules/${targets[$i]}"
    if ! diff -u "$f" <("${generators[$i]}") >&2; then
      echo "DRIFT: $f differs from its source; run scripts/gen-prometheusrule.sh" >&2
      rc=1
    fi
  done
  exit "$rc"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

for i in "${!targets[@]}"; do
  "${generators[$i]}" >"alert-rules/${targets[$i]}"
  echo "wrote alert-rules/${targets[$i]}"
done
