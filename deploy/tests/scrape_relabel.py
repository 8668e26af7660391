#!/usr/bin/env python3
"""Checks deploy/prometheus-scrape.yaml.

  shape SCRAPE            the four jobs, their kubernetes_sd_configs roles and keys
  write SCRAPE RULES_DIR OUT_DIR
                          writes OUT_DIR/prometheus.yml: the scrape jobs with every
                          `kubernetes_sd_configs` replaced by a `file_sd_configs` whose
                          targets carry the __meta_kubernetes_* labels Kubernetes SD would
                          discover (all other job keys, relabel_configs included, unchanged),
                          plus the alert rules as rule_files. Debian's Prometheus 2.42 is
                          built without Kubernetes SD, so this is what promtool and a real
                          Prometheus can load here.
  run OUT_DIR             starts that Prometheus on loopback and checks the labels its
                          relabelling gives each target (node, role, pool, job)

The fake targets only use loopback addresses; scrapes of them fail, which is fine: the
target labels are what is checked.
"""
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

JOBS = {"node-exporter": "node", "kube-state-metrics": "service", "k3s-autoscaler": "endpoints",
        "application-pods": "pod"}
SD_KEYS = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
           "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects",
           "enable_http2"}
ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}

# What Kubernetes SD would discover (documented meta labels), per job. `want` is the label
# set after relabelling (None: the target must be dropped).
CP = "node_role_kubernetes_io_control_plane"
POOL = "k3s_autoscaler_pool"
FAKE = {
    "node-exporter": [
        ({"__address__": "127.0.0.1:10250", "__meta_kubernetes_node_name": "ip-10-100-0-10",
          "__meta_kubernetes_node_address_InternalIP": "127.0.0.1",
          f"__meta_kubernetes_node_label_{CP}": "true", f"__meta_kubernetes_node_labelpresent_{CP}": "true"},
         {"job": "node-exporter", "instance": "127.0.0.1:9100", "node": "ip-10-100-0-10", "role": "control-plane"}),
        # a control plane labelled with an empty value still counts as control plane
        ({"__address__": "127.0.0.2:10250", "__meta_kubernetes_node_name": "cp-2",
          "__meta_kubernetes_node_address_InternalIP": "127.0.0.2",
          f"__meta_kubernetes_node_label_{CP}": "", f"__meta_kubernetes_node_labelpresent_{CP}": "true"},
         {"job": "node-exporter", "instance": "127.0.0.2:9100", "node": "cp-2", "role": "control-plane"}),
        ({"__address__": "127.0.0.3:10250", "__meta_kubernetes_node_name": "i-0aaaaaaaaaaaaaaaa",
          "__meta_kubernetes_node_address_InternalIP": "127.0.0.3",
          f"__meta_kubernetes_node_label_{POOL}": "workers", f"__meta_kubernetes_node_labelpresent_{POOL}": "true",
          "__meta_kubernetes_node_label_k3s_autoscaler_managed": "true"},
         {"job": "node-exporter", "instance": "127.0.0.3:9100", "node": "i-0aaaaaaaaaaaaaaaa", "role": "worker",
          "pool": "workers"}),
        ({"__address__": "127.0.0.4:10250", "__meta_kubernetes_node_name": "i-0bbbbbbbbbbbbbbbb",
          "__meta_kubernetes_node_address_InternalIP": "127.0.0.4",
          f"__meta_kubernetes_node_label_{POOL}": "batch", f"__meta_kubernetes_node_labelpresent_{POOL}": "true"},
         {"job": "node-exporter", "instance": "127.0.0.4:9100", "node": "i-0bbbbbbbbbbbbbbbb", "role": "worker",
          "pool": "batch"}),
    ],
    "kube-state-metrics": [
        ({"__address__": "127.0.0.1:18080", "__meta_kubernetes_namespace": "monitoring",
          "__meta_kubernetes_service_name": "kube-state-metrics",
          "__meta_kubernetes_service_label_app_kubernetes_io_name": "kube-state-metrics",
          "__meta_kubernetes_service_port_name": "http-metrics"},
         {"job": "kube-state-metrics", "instance": "127.0.0.1:18080"}),
        ({"__address__": "127.0.0.1:18081", "__meta_kubernetes_namespace": "monitoring",
          "__meta_kubernetes_service_name": "kube-state-metrics",
          "__meta_kubernetes_service_label_app_kubernetes_io_name": "kube-state-metrics",
          "__meta_kubernetes_service_port_name": "telemetry"}, None),
        ({"__address__": "127.0.0.1:18082", "__meta_kubernetes_namespace": "monitoring",
          "__meta_kubernetes_service_name": "grafana",
          "__meta_kubernetes_service_label_app_kubernetes_io_name": "grafana",
          "__meta_kubernetes_service_port_name": "http"}, None),
    ],
    "k3s-autoscaler": [
        ({"__address__": "127.0.0.1:18083", "__meta_kubernetes_namespace": "k3s-autoscaler",
          "__meta_kubernetes_service_name": "k3s-autoscaler", "__meta_kubernetes_endpoint_port_name": "http",
          "__meta_kubernetes_endpoint_ready": "true", "__meta_kubernetes_pod_name": "k3s-autoscaler-7d9f-abcde",
          "__meta_kubernetes_pod_node_name": "ip-10-100-0-10"},
         {"job": "k3s-autoscaler", "instance": "127.0.0.1:18083", "pod": "k3s-autoscaler-7d9f-abcde",
          "node": "ip-10-100-0-10"}),
        ({"__address__": "127.0.0.1:18084", "__meta_kubernetes_namespace": "k3s-autoscaler",
          "__meta_kubernetes_service_name": "something-else", "__meta_kubernetes_endpoint_port_name": "http",
          "__meta_kubernetes_pod_name": "other"}, None),
    ],
    "application-pods": [
        # annotated, with a port and a path: scraped there, job from app.kubernetes.io/name
        ({"__address__": "127.0.0.5", "__meta_kubernetes_namespace": "shop",
          "__meta_kubernetes_pod_name": "web-7c9d-x1", "__meta_kubernetes_pod_phase": "Running",
          "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
          "__meta_kubernetes_pod_annotation_prometheus_io_port": "8000",
          "__meta_kubernetes_pod_annotation_prometheus_io_path": "/stats",
          "__meta_kubernetes_pod_label_app_kubernetes_io_name": "web"},
         {"job": "web", "instance": "127.0.0.5:8000", "namespace": "shop", "pod": "web-7c9d-x1"}),
        # annotated, no name label, the container port already in the address: job = namespace
        ({"__address__": "127.0.0.6:9000", "__meta_kubernetes_namespace": "batch",
          "__meta_kubernetes_pod_name": "worker-1", "__meta_kubernetes_pod_phase": "Running",
          "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true"},
         {"job": "batch", "instance": "127.0.0.6:9000", "namespace": "batch", "pod": "worker-1"}),
        # not annotated, or finished: never scraped
        ({"__address__": "127.0.0.7:8000", "__meta_kubernetes_namespace": "shop",
          "__meta_kubernetes_pod_name": "db-0", "__meta_kubernetes_pod_phase": "Running"}, None),
        ({"__address__": "127.0.0.8:8000", "__meta_kubernetes_namespace": "shop",
          "__meta_kubernetes_pod_name": "job-1", "__meta_kubernetes_pod_phase": "Succeeded",
          "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true"}, None),
    ],
}


def load(path):
    return yaml.safe_load(open(path))


def cmd_shape(scrape):
    cfg = load(scrape)
    problems = []
    if set(cfg) != {"scrape_configs"}:
        problems.append(f"top-level keys {sorted(cfg)}: want only scrape_configs (a snippet)")
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    if set(jobs) != set(JOBS):
        problems.append(f"jobs {sorted(jobs)} != {sorted(JOBS)}")
    for name, role in JOBS.items():
        sds = jobs.get(name, {}).get("kubernetes_sd_configs", [])
        if len(sds) != 1:
            problems.append(f"{name}: want one kubernetes_sd_configs entry, got {len(sds)}")
            continue
        sd = sds[0]
        if sd.get("role") not in ROLES or sd.get("role") != role:
            problems.append(f"{name}: role {sd.get('role')!r}, want {role!r}")
        if set(sd) - SD_KEYS:
            problems.append(f"{name}: unknown kubernetes_sd_configs keys {sorted(set(sd) - SD_KEYS)}")
        ns = sd.get("namespaces")
        if ns is not None and (set(ns) - {"names", "own_namespace"} or not all(isinstance(n, str) for n in ns.get("names", []))):
            problems.append(f"{name}: bad namespaces {ns}")
        print(f"{name}: kubernetes_sd_configs role {sd.get('role')}"
              + (f", namespaces {ns['names']}" if ns else ""))
    return finish(problems)


def cmd_write(scrape, rules_dir, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load(scrape)
    converted = []
    for job in cfg["scrape_configs"]:
        j = copy.deepcopy(job)
        j.pop("kubernetes_sd_configs")
        targets = out / f"targets-{j['job_name']}.json"
        targets.write_text(json.dumps(
            [{"targets": [t["__address__"]], "labels": {k: v for k, v in t.items() if k != "__address__"}}
             for t, _ in FAKE[j["job_name"]]], indent=1))
        j["file_sd_configs"] = [{"files": [str(targets)]}]
        # Scrape the loopback fakes rarely: the check reads target labels, not samples.
        j["scrape_interval"] = "1m"
        j["scrape_timeout"] = "1s"
        converted.append(j)
    rules = sorted(str(p.resolve()) for p in Path(rules_dir).glob("*.rules.yaml")
                   if p.name in ("autoscaler.rules.yaml", "health.rules.yaml", "notifications.rules.yaml"))
    prom = {"global": {"scrape_interval": "15s", "evaluation_interval": "30s"},
            "rule_files": rules, "scrape_configs": converted}
    (out / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
    (out / "expected.json").write_text(json.dumps(
        {name: [w for _, w in items] for name, items in FAKE.items()}))
    print(f"wrote {out / 'prometheus.yml'} ({len(converted)} jobs, rule files: {', '.join(Path(r).name for r in rules)})")
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read()


def cmd_run(out):
    out = Path(out)
    expected = json.loads((out / "expected.json").read_text())
    port = free_port()
    data = tempfile.mkdtemp(dir=out)
    log = open(out / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={out / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT)
    problems = []
    try:
        want_active = sum(1 for items in expected.values() for w in items if w)
        want_dropped = sum(1 for items in expected.values() for w in items if not w)
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"prometheus exited {proc.returncode}:\n" + (out / "prometheus.log").read_text()[-3000:])
            try:
                body = json.loads(get(f"http://127.0.0.1:{port}/api/v1/targets?state=any"))["data"]
                if len(body["activeTargets"]) == want_active and len(body["droppedTargets"]) == want_dropped:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"targets not discovered in time: {json.dumps(body)[:2000]}")
        got = {}
        for t in body["activeTargets"]:
            got.setdefault(t["scrapePool"], []).append(t["labels"])
        for job, items in expected.items():
            want = sorted((w for w in items if w), key=lambda x: x["instance"])
            have = sorted(got.get(job, []), key=lambda x: x["instance"])
            if want != have:
                problems.append(f"{job}: target labels\n  got  {have}\n  want {want}")
            for w in want:
                print(f"{job}: {', '.join(f'{k}={v}' for k, v in sorted(w.items()))}")
        print(f"dropped as intended: {len(body['droppedTargets'])} "
              "(kube-state-metrics telemetry port, another service's http port, another Service's endpoints,\n"
              " a pod without the scrape annotation, a finished pod)")
        # The rules Prometheus loaded with the scrape config.
        rules = json.loads(get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"]
        print("rule groups loaded:", ", ".join(g["name"] for g in rules))
        if len(rules) < 2:
            problems.append("the alert rules were not loaded")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return finish(problems)


def finish(problems):
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    cmds = {"shape": (cmd_shape, 1), "write": (cmd_write, 3), "run": (cmd_run, 1)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) != 2 + cmds[sys.argv[1]][1]:
        sys.exit(__doc__)
    sys.exit(cmds[sys.argv[1]][0](*sys.argv[2:]))
