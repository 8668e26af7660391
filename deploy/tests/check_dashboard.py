#!/usr/bin/env python3
"""Checks deploy/grafana-dashboard.json against src/metrics.rs.

  check DASHBOARD METRICS_RS            every PromQL expression (panels and template
                                        variables) names only metrics src/metrics.rs
                                        registers, with the suffixes Prometheus sees
                                        (counter -> _total, histogram -> _bucket/_sum/
                                        _count); every panel uses the $datasource variable
  selftest DASHBOARD METRICS_RS         the name check rejects unknown or unsuffixed names
  promql-rules DASHBOARD OUT            writes every expression, Grafana variables
                                        substituted, as recording rules for
                                        `promtool check rules` (the real PromQL parser)
"""
import json
import re
import sys

import yaml

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "inf", "nan", "atan2"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def registered_metrics(metrics_rs):
    """Series names exposed for each family registered in src/metrics.rs."""
    text = open(metrics_rs).read()
    prefix = re.search(r'Registry::with_prefix\(\s*"([^"]+)"\s*\)', text).group(1)
    # Field name -> metric type, from `pub name: Family<Labels, Counter>` / `Gauge<..>` / ...
    types = {}
    for field, ty in re.findall(r"pub (\w+):\s*([^,\n]+(?:,[^\n]*)?),?\n", text):
        for kind in ("Histogram", "Counter", "Gauge"):
            if re.search(rf"\b{kind}\b", ty):
                types[field] = kind
                break
    names = set()
    regs = re.findall(r'registry\.register\(\s*"(\w+)"\s*,\s*"[^"]*"\s*,\s*(\w+)\.clone\(\)\s*,?\s*\)', text)
    if not regs:
        raise SystemExit("no registry.register(...) calls found in " + metrics_rs)
    for name, field in regs:
        kind = types.get(field)
        full = f"{prefix}_{name}"
        if kind == "Counter":
            names.add(full + "_total")
        elif kind == "Gauge":
            names.add(full)
        elif kind == "Histogram":
            names.update({full + "_bucket", full + "_sum", full + "_count"})
        else:
            raise SystemExit(f"cannot tell the type of {field} ({name}) in {metrics_rs}")
    return names


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside {} or grouping clauses), strings, durations or numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = GROUPING.sub(" ", e)
    e = re.sub(r"\b\d+(\.\d+)?([smhdwy]|ms)?\b", " ", e)
    out = []
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        out.append(m.group(0))
    return out


def expressions(dash):
    """(where, expr) for every panel target and query variable."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", q or "")
            out.append((f"variable ${v['name']}", m.group(1) if m else q))
    return out


def name_problems(exprs, allowed):
    problems = []
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric in {expr!r}")
        for n in names:
            if n not in allowed:
                problems.append(f"{where}: {n} is not a metric of src/metrics.rs")
    return problems


def cmd_check(dashboard, metrics_rs):
    dash = json.load(open(dashboard))
    allowed = registered_metrics(metrics_rs)
    print(f"src/metrics.rs exposes {len(allowed)} series names")
    problems = []
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dash.get('schemaVersion')} (want ~39)")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problems.append("no datasource variable")
    if "pool" not in variables:
        problems.append("no pool variable")
    exprs = expressions(dash)
    problems += name_problems(exprs, allowed)
    used = set()
    for where, expr in exprs:
        used.update(metric_names(expr))
        print(f"{where}: {', '.join(sorted(set(metric_names(expr))))}")

    def walk(panels):
        for p in panels:
            if p.get("type") != "row":
                for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
                    if not ds or ds.get("uid") != "${datasource}":
                        problems.append(f"panel {p.get('title')!r}: datasource {ds} is not ${{datasource}}")
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    rows = [p["title"] for p in dash.get("panels", []) if p.get("type") == "row"]
    print("rows:", ", ".join(rows))
    for want in ("Scaling", "Operations", "Errors", "Webhook"):
        if want not in rows:
            problems.append(f"no row {want!r}")
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in allowed if "_duration_" in n} | \
               {n for n in allowed if "_duration_" not in n}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) if "_duration_" in n else n for n in used}
    missing = sorted(families - shown)
    if missing:
        problems.append(f"metrics not on the dashboard: {missing}")
    ids = [p["id"] for p in _all_panels(dash)]
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    return finish(problems)


def _all_panels(dash):
    out = []

    def walk(ps):
        for p in ps:
            out.append(p)
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def cmd_selftest(dashboard, metrics_rs):
    allowed = registered_metrics(metrics_rs)
    bad = {
        "unknown metric": "rate(k3s_autoscaler_scale_ups_total[5m])",
        "counter without _total": "rate(k3s_autoscaler_decisions[5m])",
        "gauge with _total": "k3s_autoscaler_pool_workers_total",
        "histogram without suffix": "histogram_quantile(0.9, rate(k3s_autoscaler_operation_duration_seconds[5m]))",
        "other exporter's metric": 'up{job="k3s-autoscaler"} * on (instance) k3s_autoscaler_pool_workers',
        "no metric at all": "vector(1)",
    }
    good = {
        "label names and functions are not metrics":
            'sum by (pool, le) (rate(k3s_autoscaler_operation_duration_seconds_bucket{pool=~"$pool", kind="launch"}[$__rate_interval]))',
        "time() and offsets": "time() - max(k3s_autoscaler_last_notification_timestamp_seconds offset 5m)",
    }
    problems = []
    for name, expr in bad.items():
        if name_problems([(name, expr)], allowed):
            print(f"{name}: rejected")
        else:
            problems.append(f"{name}: NOT rejected ({expr})")
    for name, expr in good.items():
        p = name_problems([(name, expr)], allowed)
        if p:
            problems.append(f"{name}: wrongly rejected: {p}")
        else:
            print(f"{name}: accepted")
    return finish(problems)


def cmd_promql_rules(dashboard, out):
    dash = json.load(open(dashboard))
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "${pool}": ".*", "$pool": ".*"}
    rules = []
    for i, (where, expr) in enumerate(expressions(dash)):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr, "labels": {"where": where}})
    yaml.safe_dump({"groups": [{"name": "grafana-dashboard-expressions", "rules": rules}]},
                   open(out, "w"), sort_keys=False)
    print(f"wrote {len(rules)} expressions to {out}")
    return 0


def finish(problems):
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    cmds = {"check": cmd_check, "selftest": cmd_selftest, "promql-rules": cmd_promql_rules}
    if len(sys.argv) != 4 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    sys.exit(cmds[sys.argv[1]](sys.argv[2], sys.argv[3]))
