#!/usr/bin/env bash
# Docs drift check: a doc that names a test, a metric, a config key or a project file that
# does not exist fails. Reads README.md, docs/*.md and the READMEs of the top-level folders;
# what counts as a name is what stands in backticks:
#   - a test: `module::test_name`, or a snake_case name of five words or more
#     (`a_repeated_event_while_handling_changes_nothing`) -> a `fn` of that name under src/ or
#     tests/ (and, for `module::`, a module of that name);
#   - a metric: `k3s_autoscaler_<name>` -> registered in src/metrics.rs (with the _total,
#     _bucket, _sum and _count suffixes Prometheus adds);
#   - a config key: `section.key` of a known section, or `pools.<name>.key` -> a row of
#     README.md's config table (which scripts test against the code);
#   - a file: a path under src/, tests/, scripts/, deploy/, infra/, alert-rules/,
#     alertmanager/, docs/ or .ci/ -> exists (globs allowed).
# Last line: "N passed, M failed"; exits non-zero if anything failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
exec python3 - "$@" <<'PY'
import glob, os, re, sys

docs = ["README.md"] + sorted(glob.glob("docs/*.md")) + sorted(
    p for p in glob.glob("*/README.md") if not p.startswith((".", "target")))
sources = [p for p in glob.glob("src/**/*.rs", recursive=True) + glob.glob("tests/**/*.rs", recursive=True)]
text_of = {p: open(p, encoding="utf-8").read() for p in sources}
all_code = "\n".join(text_of.values())
functions = set(re.findall(r"\bfn\s+([a-z_][a-z0-9_]*)", all_code))
modules = {os.path.splitext(os.path.basename(p))[0] for p in sources}
modules |= set(re.findall(r"\bmod\s+([a-z_][a-z0-9_]*)", all_code))

metrics_src = open("src/metrics.rs", encoding="utf-8").read()
metrics = set(re.findall(r'register(?:_with_unit)?\(\s*"([a-z_0-9]+)"', metrics_src))
readme = open("README.md", encoding="utf-8").read()
config_rows = [line for line in readme.splitlines() if line.startswith("| `")]
config_keys = set()
for row in config_rows:
    first_cell = row.split("|")[1]
    keys = re.findall(r"`([^`]+)`", first_cell)
    prefix = None
    for key in keys:
        if key.startswith(".") and prefix:
            key = prefix + key
        config_keys.add(key)
        if "." in key:
            prefix = key.rsplit(".", 1)[0]
sections = {"server", "auth", "aws", "kubernetes", "timing", "interruption", "cloudwatch",
            "alertmanager", "http"}
sections |= {k.split(".")[0] for k in config_keys if "." in k and not k.startswith("pools.")}
path_roots = ("src/", "tests/", "scripts/", "deploy/", "infra/", "alert-rules/", "alertmanager/",
              "docs/", ".ci/")

passed = failed = 0
problems = []

def check(ok, where, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        problems.append(f"FAIL {where}: {what}")

def metric_exists(name):
    base = name[len("k3s_autoscaler_"):]
    for suffix in ("", "_total", "_bucket", "_sum", "_count"):
        if suffix and base.endswith(suffix) and base[: -len(suffix)] in metrics:
            return True
        if not suffix and base in metrics:
            return True
    return False

for doc in docs:
    content = open(doc, encoding="utf-8").read()
    # Fenced blocks hold commands and sample output, not names to check.
    content = re.sub(r"```.*?```", "", content, flags=re.S)
    for lineno, line in enumerate(content.splitlines(), 1):
        for token in re.findall(r"`([^`\n]+)`", line):
            token = token.strip()
            where = f"{doc}: `{token}`"
            m = re.fullmatch(r"([a-z_][a-z0-9_]*)::([a-z_][a-z0-9_]*)", token)
            if m and m.group(2).count("_") >= 2:
                check(m.group(1) in modules and m.group(2) in functions, where,
                      "names a test that does not exist")
                continue
            for metric in re.findall(r"\bk3s_autoscaler_[a-z0-9_]+", token):
                check(metric_exists(metric), where, f"names metric {metric}, which is not registered")
            if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+){4,}", token) and not token.startswith("k3s_autoscaler_"):
                # A test or function, or a label value the code exports (a reason label).
                check(token in functions or f'"{token}"' in all_code, where,
                      "names a test, function or label that does not exist")
                continue
            if re.search(r"\.(rs|ya?ml|json|sh|md|toml|py|txt)$", token) and "/" not in token:
                continue  # a bare file name, named in the context of its folder
            m = re.fullmatch(r"(pools\.<name>|[a-z_]+)\.([a-z_]+)", token)
            if m and (m.group(1) in sections or m.group(1) == "pools.<name>"):
                check(token in config_keys, where, "names a config key missing from README's config table")
                continue
            if token.startswith(path_roots) and " " not in token:
                path = token.split(":")[0].rstrip("/.,")
                path = re.sub(r"<[^>]+>", "*", path)
                path = path.replace("…", "*")
                # `a/{b,c}.rs` names each of a/b.rs and a/c.rs.
                brace = re.search(r"\{([^}]*)\}", path)
                paths = [path[: brace.start()] + alt + path[brace.end():] for alt in brace.group(1).split(",")] if brace else [path]
                # A folder's README may name paths relative to its folder.
                here = os.path.dirname(doc)
                exists = lambda p: bool(glob.glob(p)) or (here and bool(glob.glob(os.path.join(here, p))))
                check(all(exists(p) for p in paths), where, "names a file that does not exist")

# The dashboard list in docs/monitoring.md is the shipped JSON's rows and panels, in order.
import json
dashboard = json.load(open("deploy/grafana-dashboard.json", encoding="utf-8"))
shipped, row = [], None
for panel in dashboard.get("panels", []):
    if panel.get("type") == "row":
        row = [panel.get("title", ""), []]
        shipped.append(row)
    elif row is not None:
        row[1].append(panel.get("title", ""))
monitoring = open("docs/monitoring.md", encoding="utf-8").read()
listed = [[m.group(1), re.findall(r"“([^”]+)”", m.group(2))]
          for m in re.finditer(r"^- \*\*([^*]+)\*\*: (.*)$", monitoring, flags=re.M)]
check(listed == shipped, "docs/monitoring.md: dashboard layout",
      f"lists {listed}, the JSON has {shipped}")

# The stack's facts reach the service through its SSM layer, never typed into the example:
# the parameter names the stack's own table and launch template, and deploy/config.toml sets
# neither (src/config/layers.rs also proves the two layers merge into a valid config).
config = open("deploy/config.toml", encoding="utf-8").read()
stack = open("infra/k3s-autoscaler.yaml", encoding="utf-8").read()
layer = stack[stack.find("  ServiceConfigParameter:"):]
check('table = "${StateTable}"' in layer and 'TableName: !Sub "k3s-autoscaler-${ClusterId}"' in stack,
      "infra/k3s-autoscaler.yaml: ServiceConfigParameter", "does not write the stack's table as [aws] table")
check('launch_template = "${WorkerLaunchTemplate}"' in layer,
      "infra/k3s-autoscaler.yaml: ServiceConfigParameter", "does not write the stack's launch template")
for key in ("cluster_id", "table", "launch_template", "queue_url", "log_group", "region"):
    check(not re.search(rf"^{key}\s*=", config, flags=re.M), f"deploy/config.toml: {key}",
          "is set in the file; it comes from the stack's SSM layer (a file value would override it)")

for problem in problems:
    print(problem)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
