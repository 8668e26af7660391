#!/usr/bin/env bash
# Checks everything under alert-rules/ and alertmanager/ with the real tools:
#   - promtool check rules on each rule file, promtool test rules on each test file;
#   - the generated PrometheusRule files are up to date (scripts/gen-prometheusrule.sh
#     --check) and the rules they embed still pass promtool;
#   - amtool check-config on alertmanager/alertmanager.yml, amtool route tests, and
#     alertmanagerconfig.yaml agreeing with it (timings, URL, channel);
#   - a real Alertmanager (prometheus-alertmanager, loopback only) run with a copy of
#     alertmanager.yml whose URLs, secret files and waits point at a local sink: the
#     Bearer token, grouping, inhibition and resolved posts;
#   - scripts/shorten-rules.sh output still passes promtool check rules.
# amtool check-config does not open credentials_file / api_url_file, so no secret
# file is needed for it; the Alertmanager run writes throw-away ones in a temp dir.
#
# Tools: Prometheus 2.42 (promtool) and Alertmanager 0.25 (amtool,
# prometheus-alertmanager) from Debian. Missing tools are installed with apt-get
# (sudo when not root), except when CI is set: then they are a failure.
# Last line: "N passed, M failed". Exit status 1 when anything failed.
# shellcheck disable=SC2317  # check functions are called through check()
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit
}

# check NAME CMD...: runs CMD, shows its output only when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     | /' "$tmp/out"
  fi
}

# ---- tools ----------------------------------------------------------------------
tools_present() {
  command -v promtool && command -v amtool && command -v prometheus-alertmanager
} >/dev/null

if ! tools_present; then
  if [[ -n "${CI:-}" ]]; then
    echo "FAIL tools: promtool, amtool or prometheus-alertmanager missing (CI: not installing)"
    echo "     | install the Debian packages prometheus and prometheus-alertmanager first"
    failed=$((failed + 1))
    finish
  fi
  echo "installing prometheus and prometheus-alertmanager (apt-get)..."
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y prometheus prometheus-alertmanager >"$tmp/apt" 2>&1 ||
    { $sudo apt-get update >>"$tmp/apt" 2>&1 &&
      $sudo apt-get install -y prometheus prometheus-alertmanager >>"$tmp/apt" 2>&1; }
  if ! tools_present; then
    echo "FAIL tools: could not install prometheus / prometheus-alertmanager"
    tail -n 20 "$tmp/apt" | sed 's/^/     | /'
    failed=$((failed + 1))
    finish
  fi
fi
echo "tools: $(promtool --version 2>&1 | head -n1); $(amtool --version 2>&1 | head -n1)"

# ---- rules ----------------------------------------------------------------------
sources=(alert-rules/autoscaler.rules.yaml alert-rules/optional.rules.yaml alert-rules/health.rules.yaml
  alert-rules/notifications.rules.yaml)
for f in "${sources[@]}"; do
  check "promtool check rules $f" promtool check rules "$f"
done
for f in alert-rules/tests/*.test.yaml; do
  check "promtool test rules $f" promtool test rules "$f"
done

# ---- PrometheusRule -------------------------------------------------------------
check "PrometheusRule files match their sources" scripts/gen-prometheusrule.sh --check

# Rules embedded in each generated document, de-indented, must pass promtool too.
roundtrip() {
  local f=$1 n=0
  awk -v dir="$tmp/rt" '
    /^---$/ { n++; inspec = 0; next }
    /^spec:$/ { inspec = 1; next }
    inspec { sub(/^  /, ""); print > (dir "/" n ".yaml") }' "$f" || return 1
  for part in "$tmp"/rt/*.yaml; do
    promtool check rules "$part" || return 1
    n=$((n + 1))
  done
  [[ $n -gt 0 ]]
}
for f in alert-rules/prometheusrule.yaml alert-rules/prometheusrule-optional.yaml; do
  rm -rf "$tmp/rt" && mkdir "$tmp/rt"
  check "rules embedded in $f pass promtool" roundtrip "$f"
done

# ---- Alertmanager ---------------------------------------------------------------
am=alertmanager/alertmanager.yml
check "amtool check-config $am" amtool check-config "$am"

routes_test() {
  local want labels
  while IFS='|' read -r want labels; do
    # shellcheck disable=SC2086
    amtool config routes test --config.file="$am" --verify.receivers="$want" $labels 2>/dev/null ||
      { echo "labels {$labels}: expected receiver $want, got $(amtool config routes test --config.file="$am" $labels 2>/dev/null)"; return 1; }
  done <<'CASES'
k3s-autoscaler|alertname=K3sWorkersCPUHigh autoscaler=scale-up pool=workers
k3s-autoscaler|alertname=K3sWorkersCPULow autoscaler=scale-down pool=workers
k3s-autoscaler|alertname=K3sPodsUnschedulable autoscaler=scale-up pool=workers namespace=shop pod=web-1
slack-k3s-autoscaler|alertname=K3sAutoscalerWebhookSilent severity=critical
slack-k3s-autoscaler|alertname=K3sAutoscalerDrainsAborting severity=warning pool=workers
slack-k3s-autoscaler-events|alertname=K3sScalingLaunched notify=scaling event=launched pool=workers reason=scale_up_signal
slack-k3s-autoscaler-events|alertname=K3sScalingDrained notify=scaling event=drained pool=workers reason=scale_down_signal
slack-k3s-autoscaler-events|alertname=K3sScalingInterrupted notify=scaling event=interrupted pool=workers reason=spot_interruption
slack-k3s-autoscaler-events|alertname=K3sScalingPaused notify=scaling event=paused pool=workers reason=silenced
null|alertname=Watchdog severity=none
null|alertname=Something autoscaler=sideways pool=workers
CASES
}
check "amtool routes: scaling -> webhook, health and scaling actions -> Slack, rest -> null" routes_test

# The AlertmanagerConfig must say what alertmanager.yml says (in the same order).
amcfg_consistent() {
  local cr=alertmanager/alertmanagerconfig.yaml pair yml_key cr_key a b
  for pair in group_by:groupBy group_wait:groupWait group_interval:groupInterval \
    repeat_interval:repeatInterval send_resolved:sendResolved url:url channel:channel \
    max_alerts:maxAlerts equal:equal; do
    yml_key=${pair%%:*} cr_key=${pair#*:}
    a=$(grep -E "^[[:space:]-]*${yml_key}:" "$am" | sed -E "s/^[[:space:]-]*${yml_key}:[[:space:]]*//")
    b=$(grep -E "^[[:space:]-]*${cr_key}:" "$cr" | sed -E "s/^[[:space:]-]*${cr_key}:[[:space:]]*//")
    if [[ "$a" != "$b" ]]; then
      echo "$yml_key ($am) != $cr_key ($cr):"
      diff <(echo "$a") <(echo "$b")
      return 1
    fi
  done
  grep -q 'autoscaler=~"scale-up|scale-down"' "$am" && grep -q 'value: "scale-up|scale-down"' "$cr" &&
    grep -q 'alertname=~"K3sAutoscaler.+"' "$am" && grep -q 'value: "K3sAutoscaler.+"' "$cr" &&
    grep -q "notify=\"scaling\"" "$am" && grep -q 'value: scaling' "$cr" &&
    [[ $(grep -c '^        title:' "$am") -eq $(grep -c '^          title:' "$cr") ]] &&
    diff <(grep -E '^ +(title|text):' "$am" | sed -E 's/^ +//') <(grep -E '^ +(title|text):' "$cr" | sed -E 's/^ +//')
}
check "alertmanagerconfig.yaml agrees with alertmanager.yml" amcfg_consistent

# A real Alertmanager on loopback, fed alerts through its API; its webhook and Slack
# posts go to a local sink. Waits are cut to 1s in the copy; routes, matchers,
# inhibition, auth and receivers are the file's own.
am_e2e() {
  local d="$tmp/e2e"
  mkdir -p "$d"
  timeout 120 python3 - "$am" "$d" <<'PY'
import atexit, json, signal, socket, subprocess, sys, threading, time, urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

src, d = sys.argv[1], sys.argv[2]
deadline = time.time() + 60
posts, lock = [], threading.RLock()

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            posts.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=sink.serve_forever, daemon=True).start()
sink_url = f"http://127.0.0.1:{sink.server_address[1]}"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

token = "e2e-token-0123456789"
open(f"{d}/token", "w").write(token + "\n")
open(f"{d}/slack-url", "w").write(sink_url + "/slack")
cfg = open(src).read()
for old, new in [
    ("http://k3s-autoscaler.k3s-autoscaler.svc:8080/v1/alerts", sink_url + "/v1/alerts"),
    ("/etc/alertmanager/secrets/k3s-autoscaler-token/token", f"{d}/token"),
    ("/etc/alertmanager/secrets/slack-webhook/url", f"{d}/slack-url"),
    ("group_wait: 10s", "group_wait: 1s"),
    ("group_wait: 30s", "group_wait: 1s"),
    ("group_interval: 1m", "group_interval: 1s"),
    ("group_interval: 5m", "group_interval: 1s"),
]:
    assert old in cfg, f"not in {src}: {old}"
    cfg = cfg.replace(old, new)
open(f"{d}/am.yml", "w").write(cfg)

port = free_port()
api = f"http://127.0.0.1:{port}/api/v2"
log = open(f"{d}/alertmanager.log", "w")
proc = subprocess.Popen(["prometheus-alertmanager", f"--config.file={d}/am.yml",
                         f"--storage.path={d}/data", f"--web.listen-address=127.0.0.1:{port}",
                         "--cluster.listen-address="], stdout=log, stderr=log)
# Never leave this Alertmanager behind, whatever ends the run (incl. `timeout`).
atexit.register(lambda: proc.poll() is None and (proc.terminate(), proc.wait(10)))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

def fail(msg):
    print("FAILED:", msg)
    with lock:
        for p in posts:
            print("  post", p[0], p[1], json.dumps(p[2])[:300])
    proc.terminate(); proc.wait(10)
    print(open(f"{d}/alertmanager.log").read()[-2000:])
    sys.exit(1)

def wait_for(what, pred):
    while time.time() < deadline:
        with lock:
            hit = [p for p in posts if pred(p)]
        if hit:
            return hit
        time.sleep(0.2)
    fail("timed out waiting for " + what)

while True:
    try:
        urllib.request.urlopen(f"{api}/status", timeout=1).read(); break
    except OSError:
        if time.time() > deadline or proc.poll() is not None:
            fail("alertmanager did not start")
        time.sleep(0.2)

def send(alerts):
    req = urllib.request.Request(f"{api}/alerts", json.dumps(alerts).encode(),
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()

now = datetime.now(timezone.utc)
iso = lambda t: t.isoformat().replace("+00:00", "Z")
def alert(labels, end=None, summary="e2e"):
    a = {"labels": labels, "annotations": {"summary": summary}, "startsAt": iso(now)}
    a["endsAt"] = iso(end or now + timedelta(hours=1))
    return a

up = alert({"alertname": "K3sWorkersCPUHigh", "autoscaler": "scale-up", "pool": "workers", "step": "1"})
down_workers = alert({"alertname": "K3sWorkersCPULow", "autoscaler": "scale-down", "pool": "workers"})
down_gpu = alert({"alertname": "K3sWorkersCPULow", "autoscaler": "scale-down", "pool": "gpu"})
health = alert({"alertname": "K3sAutoscalerDown", "severity": "critical"}, summary="down!")
other = alert({"alertname": "Watchdog"})
launched = alert({"alertname": "K3sScalingLaunched", "notify": "scaling", "event": "launched",
                  "pool": "workers", "reason": "scale_up_signal"},
                 summary="launch in pool workers (scale_up_signal)")
launched["annotations"]["nodes"] = "3"
send([up, down_workers, down_gpu, health, other, launched])

def group(p, name, pool, status="firing"):
    return (p[0] == "/v1/alerts" and p[2].get("status") == status
            and p[2]["groupLabels"] == {"alertname": name, "pool": pool})

wait_for("scale-up post", lambda p: group(p, "K3sWorkersCPUHigh", "workers"))
wait_for("scale-down post of pool gpu", lambda p: group(p, "K3sWorkersCPULow", "gpu"))
slack = wait_for("Slack post", lambda p: p[0] == "/slack" and "K3sAutoscalerDown" in json.dumps(p[2]))
event = wait_for("Slack post of the scaling action",
                 lambda p: p[0] == "/slack" and "K3sScalingLaunched" in json.dumps(p[2]))
time.sleep(2)  # a few more group_interval ticks for anything unexpected
with lock:
    hooks = [p for p in posts if p[0] == "/v1/alerts"]
    if any(p[1] != "Bearer " + token for p in hooks):
        fail("webhook post without the Bearer token from credentials_file")
    if any(group(p, "K3sWorkersCPULow", "workers") for p in hooks):
        fail("scale-down of pool workers was posted while its scale-up fired (inhibition)")
    if any(p[2]["receiver"] != "k3s-autoscaler" for p in hooks):
        fail("webhook post from another receiver")
    if any(a["labels"].get("alertname") in ("Watchdog", "K3sAutoscalerDown", "K3sScalingLaunched")
           for p in hooks for a in p[2]["alerts"]):
        fail("a non-scaling alert reached the autoscaler")
    if "K3sAutoscalerDown" not in json.dumps(slack[0][2]) or "down!" not in json.dumps(slack[0][2]):
        fail("Slack post lacks the alert name or summary")
    if any(p[0] == "/slack" and "Watchdog" in json.dumps(p[2]) for p in posts):
        fail("Watchdog reached Slack")
    want = "launched: launch in pool workers (scale_up_signal); reason scale_up_signal; 3 worker(s)"
    if want not in json.dumps(event[0][2]):
        fail(f"Slack post of the scaling action lacks {want!r}")
# Scale-up resolves: a resolved post follows, and the scale-down of pool workers is
# no longer inhibited.
up["endsAt"] = iso(datetime.now(timezone.utc))
send([up])
wait_for("resolved scale-up post", lambda p: group(p, "K3sWorkersCPUHigh", "workers", "resolved"))
wait_for("scale-down of pool workers once the scale-up resolved",
         lambda p: group(p, "K3sWorkersCPULow", "workers"))
proc.terminate(); proc.wait(10)
print(f"ok: {len(posts)} posts")
PY
  local rc=$?
  [[ $rc -eq 124 ]] && echo "timed out after 120s"
  return "$rc"
}
check "Alertmanager 0.25 run: token, grouping, inhibition, resolved, Slack (health and scaling actions)" am_e2e

# ---- shortened rules for demos ---------------------------------------------------
for f in "${sources[@]}"; do
  # shellcheck disable=SC2016  # $1 and $2 belong to the inner bash
  check "shorten-rules.sh 10 < $f passes promtool" \
    bash -c 'scripts/shorten-rules.sh 10 <"$1" >"$2" && promtool check rules "$2"' _ "$f" "$tmp/short.yaml"
done
shorten_semantics() {
  local s=alert-rules/autoscaler.rules.yaml o=alert-rules/optional.rules.yaml
  # factor 1 changes nothing but the header line
  diff <(scripts/shorten-rules.sh 1 <"$s" | tail -n +2) "$s" || return 1
  diff <(scripts/shorten-rules.sh 1 <"$o" | tail -n +2) "$o" || return 1
  # factor 10: for 1m -> 6s, 3m -> 18s, 10m -> 1m; rate windows 1m and 2m -> 30s floor;
  # subquery [30m:1m] -> [3m:6s]; the weekly offset stays
  scripts/shorten-rules.sh 10 <"$s" >"$tmp/s10" || return 1
  if ! { grep -q '^        for: 6s$' "$tmp/s10" && grep -q '^        for: 18s$' "$tmp/s10" &&
    grep -q '^        for: 1m$' "$tmp/s10" && [[ $(grep -c '\[30s\]' "$tmp/s10") -eq 2 ]]; }; then
    cat "$tmp/s10"
    return 1
  fi
  scripts/shorten-rules.sh 10 <"$o" >"$tmp/o10" || return 1
  if ! { grep -qF '[3m:6s]' "$tmp/o10" && grep -qF '[3m] offset 6d23h15m' "$tmp/o10"; }; then
    cat "$tmp/o10"
    return 1
  fi
  # mapping: only the listed durations change (the header line and the one `for: 3m`)
  scripts/shorten-rules.sh 3m=1m <"$s" >"$tmp/m" || return 1
  if ! { [[ $(diff "$s" "$tmp/m" | grep -c '^>') -eq 2 ]] && ! grep -q '^        for: 3m$' "$tmp/m"; }; then
    diff "$s" "$tmp/m"
    return 1
  fi
  # bad arguments are refused
  ! scripts/shorten-rules.sh nope <"$s" >/dev/null 2>&1 && ! scripts/shorten-rules.sh <"$s" >/dev/null 2>&1
}
check "shorten-rules.sh rewrites windows, keeps the rest" shorten_semantics

finish
