#!/usr/bin/env bash
# Shortens the windows of a Prometheus rule file, for demos and local stacks where
# waiting 10 real minutes is not an option. The rule files in alert-rules/ stay the
# only source: derive the short copy each time, never keep a second one by hand.
#
#   scripts/shorten-rules.sh [--min-range DUR] FACTOR  < alert-rules/autoscaler.rules.yaml > short.yaml
#   scripts/shorten-rules.sh MAPPING                   < alert-rules/autoscaler.rules.yaml > short.yaml
#
# FACTOR (a number, e.g. 10) divides every duration it rewrites, rounded to whole
# seconds (ms below 1s): 5m -> 30s, 10m -> 1m. Range windows are then raised to at
# least --min-range (default 30s) so rate() still sees two scrapes or more; make it
# at least twice the demo's scrape interval.
# MAPPING (e.g. 5m=30s,10m=1m,2m=20s) replaces the listed durations exactly (5m also
# matches 300s) and leaves all others as they are.
#
# The same transform shortens an Alertmanager config's timers (group_wait, group_interval,
# repeat_interval, resolve_timeout), so a demo keeps their proportions:
#   scripts/shorten-rules.sh 30 < alertmanager/alertmanager.yml > short-alertmanager.yml
#
# Rewritten: `for:` values, group `interval:` values, range windows `[5m]`, subquery
# windows and steps `[30m:1m]`, and offsets under a day (`offset 30m`, used next to
# a window). Left alone on purpose: offsets of a day or more (a weekly pattern stays
# a week away), plain numbers of seconds (predict_linear's `15 * 60`, the
# `45 * 60` of K3sAutoscalerWebhookSilent), thresholds, labels and annotations.
# A comment line is added on top.
# Check the output with `promtool check rules` (scripts/check-alerting.sh does).
set -euo pipefail
exec python3 -c '
import re, sys

UNITS = {"y": 365 * 86400000, "w": 7 * 86400000, "d": 86400000, "h": 3600000,
         "m": 60000, "s": 1000, "ms": 1}
DUR = r"(?:\d+(?:ms|[smhdwy]))+"

def parse(d):
    """Prometheus duration -> milliseconds."""
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", d))

def fmt(ms):
    """Milliseconds -> shortest Prometheus duration in d/h/m/s/ms."""
    if ms == 0:
        return "0s"
    out = ""
    for u in ("d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, UNITS[u])
        if n:
            out += f"{n}{u}"
    return out

def usage(msg):
    sys.exit(f"shorten-rules.sh: {msg}\nusage: shorten-rules.sh [--min-range DUR] FACTOR|MAPPING < rules.yaml > short.yaml")

args = sys.argv[1:]
min_range = 30000
if args[:1] == ["--min-range"]:
    if len(args) < 2 or not re.fullmatch(DUR, args[1]):
        usage("--min-range needs a duration")
    min_range = parse(args[1])
    args = args[2:]
if len(args) != 1:
    usage("one FACTOR or MAPPING argument")
spec = args[0]

if "=" in spec:
    mapping = {}
    for pair in spec.split(","):
        k, _, v = pair.partition("=")
        if not (re.fullmatch(DUR, k) and re.fullmatch(DUR, v)):
            usage(f"bad mapping entry {pair!r}")
        mapping[parse(k)] = v
    header = f"mapping {spec}"
    def new(d, kind):
        return mapping.get(parse(d), d)
else:
    try:
        factor = float(spec)
    except ValueError:
        usage(f"bad factor {spec!r}")
    if factor <= 0:
        usage("factor must be > 0")
    header = f"factor {spec}"
    def new(d, kind):
        ms = parse(d) / factor
        ms = round(ms / 1000) * 1000 if ms >= 1000 else max(1, round(ms))
        if kind == "range":
            ms = max(ms, min_range)
        if factor == 1:
            return d  # identity keeps the source spelling
        return fmt(ms)

def subst_range(m):
    rng, step = m.group(1), m.group(2)
    out = "[" + new(rng, "range")
    if step is not None:
        out += ":" + (new(step, "step") if step else "")
    return out + "]"

def subst_offset(m):
    d = m.group(2)
    return m.group(1) + (d if parse(d) >= UNITS["d"] else new(d, "offset"))

key_re = re.compile(r"^(\s*(?:-\s+)?(?:for|interval|group_wait|group_interval|repeat_interval|resolve_timeout):\s*)(" + DUR + r")(\s*(?:#.*)?)$")
range_re = re.compile(r"\[(" + DUR + r")(?::(" + DUR + r")?)?\]")
offset_re = re.compile(r"(\boffset\s+)(" + DUR + r")\b")

src = sys.stdin.read()
out = [f"# Shortened by scripts/shorten-rules.sh ({header}): demo windows, not the production ones.\n"]
for line in src.splitlines(keepends=True):
    body, nl = (line[:-1], "\n") if line.endswith("\n") else (line, "")
    if body.lstrip().startswith("#"):
        out.append(line)
        continue
    m = key_re.match(body)
    if m:
        body = m.group(1) + new(m.group(2), "for") + m.group(3)
    else:
        body = offset_re.sub(subst_offset, range_re.sub(subst_range, body))
    out.append(body + nl)
sys.stdout.write("".join(out))
' "$@"
