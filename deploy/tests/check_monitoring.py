#!/usr/bin/env python3
"""Checks deploy/monitoring/ and deploy/gitops/ offline.

  schema FILE...         every document is a HelmChart (helm.cattle.io/v1), a Flux
                         Kustomization (kustomize.toolkit.fluxcd.io/v1) or GitRepository
                         (source.toolkit.fluxcd.io/v1) valid against the schema below
  contents CHART OUTDIR  the HelmChart's values say what the spec and the project's files
                         say: Prometheus scrapes every 15s and keeps 7d, runs on the server
                         node with Alertmanager and kube-state-metrics; its rules are
                         exactly alert-rules/{autoscaler,health,notifications}.rules.yaml,
                         its scrape jobs exactly deploy/prometheus-scrape.yaml, Alertmanager's
                         config exactly alertmanager/alertmanager.yml with every secret file
                         it reads mounted. Writes OUTDIR/alerting_rules.yml and
                         OUTDIR/alertmanager.yml for promtool and amtool.
  selftest CHART         each kind of drift (a rule, a route, a scrape job, retention, the
                         placement, a secret mount) is caught by `contents`
  gitops FILE            the Flux example points at this repository's deploy/ folders that
                         exist, and orders the autoscaler after the monitoring stack

The schemas are hand-written subsets of the CRDs' openAPIV3Schema (helm-controller's
HelmChart, Flux's v1 APIs): the fields, types and required keys, unknown keys refused.
Not a live API server: a field the CRD accepts but this list lacks is reported too.
"""
import copy
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                   "namespace": {"type": "string"}, "labels": {"type": "object"},
                   "annotations": {"type": "object"}},
    "additionalProperties": False,
}
REF = {"type": "object", "required": ["name"], "additionalProperties": False,
       "properties": {"name": {"type": "string"}}}


def resource(api_version, kind, spec):
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                       "metadata": METADATA, "spec": spec},
    }


SCHEMAS = {
    "HelmChart": resource("helm.cattle.io/v1", "HelmChart", {
        "type": "object", "additionalProperties": False,
        "anyOf": [{"required": ["chart"]}, {"required": ["chartContent"]}],
        "properties": {
            "chart": {"type": "string"}, "chartContent": {"type": "string"},
            "repo": {"type": "string", "pattern": "^(https?|oci)://"},
            "version": {"type": "string"}, "targetNamespace": {"type": "string"},
            "createNamespace": {"type": "boolean"}, "valuesContent": {"type": "string"},
            "set": {"type": "object"}, "bootstrap": {"type": "boolean"},
            "failurePolicy": {"enum": ["abort", "reinstall"]}, "timeout": DURATION,
            "backOffLimit": {"type": "integer"}, "jobImage": {"type": "string"},
            "helmVersion": {"type": "string"}, "authSecret": REF, "dockerRegistrySecret": REF,
            "repoCA": {"type": "string"}, "repoCAConfigMap": REF,
            "authPassCredentials": {"type": "boolean"}, "insecureSkipTLSVerify": {"type": "boolean"},
            "plainHTTP": {"type": "boolean"}, "valuesSecrets": {"type": "array"},
            "podSecurityContext": {"type": "object"}, "securityContext": {"type": "object"},
        },
    }),
    "Kustomization": resource("kustomize.toolkit.fluxcd.io/v1", "Kustomization", {
        "type": "object", "required": ["interval", "prune", "sourceRef"], "additionalProperties": False,
        "properties": {
            "interval": DURATION, "retryInterval": DURATION, "timeout": DURATION,
            "prune": {"type": "boolean"}, "wait": {"type": "boolean"}, "force": {"type": "boolean"},
            "suspend": {"type": "boolean"},
            "path": {"type": "string"}, "targetNamespace": {"type": "string"},
            "serviceAccountName": {"type": "string"},
            "sourceRef": {
                "type": "object", "required": ["kind", "name"], "additionalProperties": False,
                "properties": {"kind": {"enum": ["OCIRepository", "GitRepository", "Bucket"]},
                               "name": {"type": "string"}, "namespace": {"type": "string"},
                               "apiVersion": {"type": "string"}}},
            "dependsOn": {"type": "array", "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}}}},
            "healthChecks": {"type": "array", "items": {
                "type": "object", "required": ["kind", "name"], "additionalProperties": False,
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "name": {"type": "string"}, "namespace": {"type": "string"}}}},
            "patches": {"type": "array"}, "images": {"type": "array"}, "components": {"type": "array"},
            "postBuild": {"type": "object"}, "decryption": {"type": "object"},
            "kubeConfig": {"type": "object"}, "commonMetadata": {"type": "object"},
            "namePrefix": {"type": "string"}, "nameSuffix": {"type": "string"},
            "deletionPolicy": {"enum": ["MirrorPrune", "Delete", "WaitForTermination", "Orphan"]},
        },
    }),
    "GitRepository": resource("source.toolkit.fluxcd.io/v1", "GitRepository", {
        "type": "object", "required": ["interval", "url"], "additionalProperties": False,
        "properties": {
            "interval": DURATION, "timeout": DURATION,
            "url": {"type": "string", "pattern": "^(http|https|ssh)://.*$"},
            "ref": {"type": "object", "additionalProperties": False,
                    "properties": {k: {"type": "string"} for k in ("branch", "tag", "semver", "name", "commit")}},
            "secretRef": REF, "proxySecretRef": REF, "suspend": {"type": "boolean"},
            "ignore": {"type": "string"}, "recurseSubmodules": {"type": "boolean"},
            "provider": {"enum": ["generic", "azure", "github"]}, "include": {"type": "array"},
            "sparseCheckout": {"type": "array", "items": {"type": "string"}},
            "verify": {"type": "object"},
        },
    }),
}

RULE_SOURCES = ["alert-rules/autoscaler.rules.yaml", "alert-rules/health.rules.yaml",
                "alert-rules/notifications.rules.yaml"]
CONTROL_PLANE = {"node-role.kubernetes.io/control-plane": "true"}


def docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load(rel):
    with open(ROOT / rel, encoding="utf-8") as f:
        return yaml.safe_load(f)


def cmd_schema(paths):
    problems = []
    for path in paths:
        for i, doc in enumerate(docs(path)):
            kind = doc.get("kind") if isinstance(doc, dict) else None
            schema = SCHEMAS.get(kind)
            if schema is None:
                problems.append(f"{path} #{i}: kind {kind!r} has no schema here")
                continue
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
            for e in errors:
                problems.append(f"{path} #{i} {kind}: {'/'.join(map(str, e.path))}: {e.message}")
            if not errors:
                print(f"{path}: {kind} {doc['metadata']['name']} valid")
    return problems


def on_server(values, where):
    if values.get("nodeSelector") != CONTROL_PLANE:
        return [f"{where}: nodeSelector {values.get('nodeSelector')}, want {CONTROL_PLANE}"]
    if not any(t.get("key") == "node-role.kubernetes.io/control-plane" and t.get("effect") == "NoSchedule"
               for t in values.get("tolerations", [])):
        return [f"{where}: does not tolerate the server's control-plane taint"]
    return []


def secret_files(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_file") and isinstance(item, str):
                yield item
            yield from secret_files(item)
    elif isinstance(value, list):
        for item in value:
            yield from secret_files(item)


def check_values(chart):
    """Problems of a HelmChart document's values, compared with the project's files."""
    problems = []
    spec = chart["spec"]
    if spec.get("chart") != "prometheus" or not spec.get("version"):
        problems.append(f"chart {spec.get('chart')!r} version {spec.get('version')!r}: want prometheus, pinned")
    if spec.get("targetNamespace") != "monitoring":
        problems.append("targetNamespace must be monitoring (deploy/base/networkpolicy.yaml admits that one)")
    values = yaml.safe_load(spec["valuesContent"])
    server = values.get("server", {})
    if server.get("global", {}).get("scrape_interval") != "15s":
        problems.append(f"scrape_interval {server.get('global', {}).get('scrape_interval')!r}, want 15s")
    if server.get("retention") != "7d":
        problems.append(f"retention {server.get('retention')!r}, want 7d")
    problems += on_server(server, "server")
    problems += on_server(values.get("alertmanager", {}), "alertmanager")
    problems += on_server(values.get("kube-state-metrics", {}), "kube-state-metrics")
    for sub in ("alertmanager", "kube-state-metrics", "prometheus-node-exporter"):
        if values.get(sub, {}).get("enabled") is not True:
            problems.append(f"{sub} is not enabled")
    files = values.get("serverFiles", {})
    want_groups = [g for rel in RULE_SOURCES for g in load(rel)["groups"]]
    if files.get("alerting_rules.yml") != {"groups": want_groups}:
        problems.append("serverFiles.alerting_rules.yml differs from " + ", ".join(RULE_SOURCES))
    want_jobs = load("deploy/prometheus-scrape.yaml")["scrape_configs"]
    if files.get("prometheus.yml", {}).get("scrape_configs") != want_jobs:
        problems.append("scrape_configs differ from deploy/prometheus-scrape.yaml")
    am = values.get("alertmanager", {})
    if am.get("config") != load("alertmanager/alertmanager.yml"):
        problems.append("alertmanager.config differs from alertmanager/alertmanager.yml")
    mounted = {m.get("mountPath") for m in am.get("extraSecretMounts", [])
               if m.get("secretName") and m.get("readOnly")}
    for path in secret_files(am.get("config", {})):
        if str(Path(path).parent) not in mounted:
            problems.append(f"{path} (alertmanager.yml) is in no read-only Secret mount")
    return problems, values


def the_chart(path):
    charts = [d for d in docs(path) if d.get("kind") == "HelmChart"]
    if len(charts) != 1:
        raise SystemExit(f"{path}: want exactly one HelmChart, got {len(charts)}")
    return charts[0]


def cmd_contents(path, out):
    problems, values = check_values(the_chart(path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alerting_rules.yml").write_text(yaml.safe_dump(values["serverFiles"]["alerting_rules.yml"]))
    (out / "alertmanager.yml").write_text(yaml.safe_dump(values["alertmanager"]["config"]))
    if not problems:
        groups = values["serverFiles"]["alerting_rules.yml"]["groups"]
        print(f"{sum(len(g['rules']) for g in groups)} rules in {len(groups)} groups, "
              f"{len(values['serverFiles']['prometheus.yml']['scrape_configs'])} scrape jobs, "
              "Alertmanager config and secret mounts: as in the sources")
    return problems


def cmd_selftest(path):
    chart = the_chart(path)

    def mutated(change):
        c = copy.deepcopy(chart)
        values = yaml.safe_load(c["spec"]["valuesContent"])
        change(values)
        c["spec"]["valuesContent"] = yaml.safe_dump(values)
        return check_values(c)[0]

    cases = {
        "a rule's threshold": lambda v: v["serverFiles"]["alerting_rules.yml"]["groups"][0]["rules"][0]
        .update(expr="vector(1)"),
        "a rule group dropped": lambda v: v["serverFiles"]["alerting_rules.yml"]["groups"].pop(),
        "the webhook route": lambda v: v["alertmanager"]["config"]["route"]["routes"][0].update(group_wait="5m"),
        "a scrape job": lambda v: v["serverFiles"]["prometheus.yml"]["scrape_configs"].pop(),
        "retention": lambda v: v["server"].update(retention="15d"),
        "scrape interval": lambda v: v["server"]["global"].update(scrape_interval="1m"),
        "Prometheus off the server": lambda v: v["server"].pop("nodeSelector"),
        "a secret mount": lambda v: v["alertmanager"]["extraSecretMounts"].pop(),
    }
    problems = []
    if check_values(chart)[0]:
        problems.append("the shipped chart does not pass `contents` itself")
    for name, change in cases.items():
        found = mutated(change)
        print(f"{name}: {'caught' if found else 'NOT caught'}")
        if not found:
            problems.append(f"drift in {name} is not caught")
    return problems


def cmd_gitops(path):
    problems = []
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs(path)}
    kustomizations = [d for d in objects.values() if d["kind"] == "Kustomization"]
    for k in kustomizations:
        ref = k["spec"]["sourceRef"]
        if (ref["kind"], ref["name"]) not in objects:
            problems.append(f"Kustomization {k['metadata']['name']}: source {ref} is not in {path}")
        folder = ROOT / k["spec"].get("path", "./").lstrip("./")
        if not folder.is_dir() or not any(folder.glob("*.yaml")):
            problems.append(f"Kustomization {k['metadata']['name']}: path {k['spec'].get('path')} has no manifests")
    paths = {k["spec"].get("path") for k in kustomizations}
    if not {"./deploy", "./deploy/monitoring"} <= paths:
        problems.append(f"paths {sorted(paths)}: want ./deploy and ./deploy/monitoring")
    for k in kustomizations:
        if k["spec"].get("path") == "./deploy":
            names = {d["name"] for d in k["spec"].get("dependsOn", [])}
            monitoring = [m["metadata"]["name"] for m in kustomizations if m["spec"].get("path") == "./deploy/monitoring"]
            if not set(monitoring) <= names:
                problems.append("the autoscaler's Kustomization does not depend on the monitoring one")
    if not problems:
        print(f"{len(kustomizations)} Kustomizations: paths {sorted(paths)}, sources present, order kept")
    return problems


def main(argv):
    if len(argv) >= 2 and argv[0] == "schema":
        problems = cmd_schema(argv[1:])
    elif len(argv) == 3 and argv[0] == "contents":
        problems = cmd_contents(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "selftest":
        problems = cmd_selftest(argv[1])
    elif len(argv) == 2 and argv[0] == "gitops":
        problems = cmd_gitops(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print("FAIL", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
