#!/usr/bin/env python3
"""Checks of deploy/ that no linter knows: scripts/check-deploy.sh runs each subcommand.

  refs DEPLOY             every file kustomization.yaml names exists; secret.example.yaml
                          is not among them; the ConfigMap is generated from config.toml
  rbac DEPLOY MANIFESTS   Roles/ClusterRoles are exactly the pinned rules below, bound to
                          the autoscaler's ServiceAccount, and cover every API type
                          src/adapters/kube.rs uses; the code does not watch
  rbac-selftest DEPLOY MANIFESTS   a widened / narrowed copy is rejected
  contract DEPLOY MANIFESTS        Deployment, Service, Namespace as deploy/README.md says,
                          consistent with config.toml (port, token paths, the SSM config
                          layer and token parameter of the same cluster)
  configmap DEPLOY MANIFESTS       the rendered ConfigMap is deploy/config.toml, byte for byte

MANIFESTS is a multi-document YAML file (kubectl kustomize output).
"""
import copy
import re
import sys
import tomllib
from pathlib import Path

import yaml

NAMESPACE = "k3s-autoscaler"
NAME = "k3s-autoscaler"
CONFIGMAP = "k3s-autoscaler-config"
SECRET = "k3s-autoscaler-token"
MOUNT = "/etc/k3s-autoscaler"

# Exactly what src/adapters/kube.rs calls (docs/iam.md, "Kubernetes RBAC"). Change this
# only together with the code and deploy/base/rbac.yaml.
EXPECTED_RBAC = {
    ("ClusterRole", None, NAME): {
        ("", "nodes"): {"list", "watch", "patch", "delete"},
        ("", "pods"): {"list", "watch"},
        ("", "pods/eviction"): {"create"},
        ("policy", "poddisruptionbudgets"): {"list", "watch"},
        ("", "persistentvolumeclaims"): {"list", "watch"},
        ("", "persistentvolumes"): {"list", "watch"},
    },
    # kube-runtime's Recorder: Events about cluster-scoped Nodes go to "default".
    ("Role", "default", "k3s-autoscaler-events"): {
        ("events.k8s.io", "events"): {"create", "patch"},
    },
}

# k8s-openapi type in `Api<T>` -> the RBAC resource it needs.
API_TYPES = {
    "Node": ("", "nodes"),
    "Pod": ("", "pods"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "PersistentVolume": ("", "persistentvolumes"),
}
# Code that would need `watch` (and usually `get`).
WATCH_PATTERNS = [r"\bwatcher\s*\(", r"\.watch\s*\(", r"\breflector\s*\(", r"\bController::new\b",
                  r"\.watch_metadata\s*\("]


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name, namespace=None):
    hits = [d for d in docs if d.get("kind") == kind and d["metadata"].get("name", "").startswith(name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]
    if len(hits) != 1:
        raise SystemExit(f"expected one {kind} {name!r}, found {len(hits)}")
    return hits[0]


# ------------------------------------------------------------------------------- refs
def cmd_refs(deploy):
    deploy = Path(deploy)
    k = yaml.safe_load((deploy / "kustomization.yaml").read_text())
    problems = []
    resources = k.get("resources", [])
    for r in resources:
        if not (deploy / r).is_file():
            problems.append(f"resources: {r} does not exist")
        else:
            print(f"resource {r}: exists")
    if any(Path(r).name == "secret.example.yaml" for r in resources):
        problems.append("secret.example.yaml must not be a resource (it holds no real token)")
    if k.get("namespace"):
        problems.append("a kustomization `namespace:` would move the Events Role out of `default`")
    gens = k.get("configMapGenerator", [])
    if len(gens) != 1 or gens[0].get("name") != CONFIGMAP:
        problems.append(f"expected one configMapGenerator named {CONFIGMAP}, got {gens}")
    else:
        g = gens[0]
        if g.get("files") != ["config.toml=config.toml"] or g.get("literals") or g.get("envs"):
            problems.append(f"{CONFIGMAP} must be generated from config.toml only (key config.toml), got {g}")
        elif not (deploy / "config.toml").is_file():
            problems.append("deploy/config.toml does not exist")
        else:
            print(f"configMapGenerator {CONFIGMAP}: files [config.toml=config.toml]")
        if g.get("namespace") != NAMESPACE:
            problems.append(f"{CONFIGMAP} must be generated in namespace {NAMESPACE}")
    if k.get("secretGenerator"):
        problems.append("no secretGenerator: the token Secret is created by hand (secret.example.yaml)")
    return finish(problems)


# ------------------------------------------------------------------------------- rbac
def rbac_problems(docs, src, say=print):
    problems = []
    roles = {}
    for d in docs:
        if d.get("kind") in ("Role", "ClusterRole"):
            key = (d["kind"], d["metadata"].get("namespace") if d["kind"] == "Role" else None, d["metadata"]["name"])
            rules = {}
            for r in d.get("rules") or []:
                for field in ("resourceNames", "nonResourceURLs"):
                    if r.get(field):
                        problems.append(f"{key}: unexpected {field} {r[field]}")
                for g in r.get("apiGroups") or []:
                    for res in r.get("resources") or []:
                        rules.setdefault((g, res), set()).update(r.get("verbs") or [])
            if d.get("aggregationRule"):
                problems.append(f"{key}: aggregationRule widens the role")
            roles[key] = rules
    if set(roles) != set(EXPECTED_RBAC):
        problems.append(f"roles {sorted(map(str, roles))} != expected {sorted(map(str, EXPECTED_RBAC))}")
    for key, want in EXPECTED_RBAC.items():
        got = roles.get(key)
        if got is None:
            continue
        for gr in sorted(set(got) | set(want)):
            g, w = got.get(gr, set()), want.get(gr, set())
            if g != w:
                extra, missing = sorted(g - w), sorted(w - g)
                problems.append(f"{key[0]} {key[2]}: {gr[0] or 'core'}/{gr[1]}: "
                                f"extra verbs {extra}, missing verbs {missing}")
            else:
                say(f"{key[0]} {key[2]}: {gr[0] or 'core'}/{gr[1]}: {', '.join(sorted(g))}")
    # Bindings: each role bound once, to the autoscaler's ServiceAccount only.
    want_subjects = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    bound = set()
    for d in docs:
        if d.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            ref = d["roleRef"]
            ns = d["metadata"].get("namespace") if d["kind"] == "RoleBinding" else None
            key = (ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])
            if key not in EXPECTED_RBAC:
                problems.append(f"{d['kind']} {d['metadata']['name']} binds unexpected {key}")
            if d.get("subjects") != want_subjects:
                problems.append(f"{d['kind']} {d['metadata']['name']}: subjects {d.get('subjects')} != {want_subjects}")
            bound.add(key)
    for key in EXPECTED_RBAC:
        if key not in bound:
            problems.append(f"{key} is not bound")
    # Cross-check with the code: every Api<T> has its resource, and what is listed is
    # watched (the watch-backed caches) exactly when the code watches.
    kube_files = sorted((src / "adapters").glob("kube*.rs"))
    kube_rs = "\n".join(p.read_text() for p in kube_files)
    granted = set().union(*(set(r) for r in EXPECTED_RBAC.values()))
    for t in sorted(set(re.findall(r"\bApi<([A-Z]\w+)>", kube_rs))):
        if t not in API_TYPES:
            problems.append(f"src/adapters/kube*.rs uses Api<{t}>: add its RBAC rule and map it in API_TYPES")
        elif API_TYPES[t] not in granted:
            problems.append(f"src/adapters/kube*.rs uses Api<{t}> but {API_TYPES[t]} is not granted")
        else:
            say(f"code uses Api<{t}>: {API_TYPES[t][0] or 'core'}/{API_TYPES[t][1]} granted")
    watching = []
    for path in sorted(src.rglob("*.rs")):
        text = path.read_text()
        if "kube" in text and any(re.search(pat, text) for pat in WATCH_PATTERNS):
            watching.append(path.relative_to(src.parent).as_posix())
    for role in EXPECTED_RBAC.values():
        for gr, verbs in role.items():
            if "list" in verbs and bool(watching) != ("watch" in verbs):
                need = "grant" if watching else "drop"
                problems.append(f"{gr[0] or 'core'}/{gr[1]}: watched by the code: {bool(watching)}; {need} `watch`")
    if watching:
        say(f"the code watches ({', '.join(watching)}): every listed resource grants watch")
    return problems


def cmd_rbac(deploy, manifests):
    src = Path(deploy).resolve().parent / "src"
    return finish(rbac_problems(load(manifests), src))


def cmd_rbac_selftest(deploy, manifests):
    """The check must fail when the ClusterRole is widened or narrowed, or gets a wildcard."""
    src = Path(deploy).resolve().parent / "src"
    docs = load(manifests)
    problems = []

    def mutated(fn):
        d = copy.deepcopy(docs)
        fn(find(d, "ClusterRole", NAME))
        return d

    cases = {
        "nodes + get": lambda r: r["rules"][0]["verbs"].append("get"),
        "pods + delete": lambda r: r["rules"][1]["verbs"].append("delete"),
        "nodes - delete": lambda r: r["rules"][0]["verbs"].remove("delete"),
        "wildcard verbs": lambda r: r["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}),
        "resourceNames": lambda r: r["rules"][0].__setitem__("resourceNames", ["x"]),
    }
    for name, fn in cases.items():
        if rbac_problems(mutated(fn), src, say=lambda *_: None):
            print(f"{name}: rejected")
        else:
            problems.append(f"{name}: NOT rejected")
    return finish(problems)


# ---------------------------------------------------------------------------- contract
def cmd_contract(deploy, manifests):
    deploy = Path(deploy)
    docs = load(manifests)
    cfg = tomllib.loads((deploy / "config.toml").read_text())
    port = int(cfg["server"]["listen"].rsplit(":", 1)[1])
    problems = []

    def expect(what, got, want):
        if got != want:
            problems.append(f"{what}: {got!r} != {want!r}")
        else:
            print(f"{what}: {got!r}")

    ns = find(docs, "Namespace", NAMESPACE)
    expect("namespace pod-security enforce", ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce"), "restricted")
    sa = find(docs, "ServiceAccount", NAME, NAMESPACE)
    expect("ServiceAccount namespace", sa["metadata"]["namespace"], NAMESPACE)

    dep = find(docs, "Deployment", NAME, NAMESPACE)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    expect("replicas", spec["replicas"], 1)
    expect("serviceAccountName", pod["serviceAccountName"], NAME)
    expect("automountServiceAccountToken", pod.get("automountServiceAccountToken"), True)
    expect("nodeSelector", pod.get("nodeSelector"), {"node-role.kubernetes.io/control-plane": "true"})
    expect("tolerations", pod.get("tolerations"),
           [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}])
    psc = pod.get("securityContext", {})
    expect("pod runAsNonRoot", psc.get("runAsNonRoot"), True)
    expect("pod runAsUser", psc.get("runAsUser"), 65532)
    expect("pod seccompProfile", psc.get("seccompProfile"), {"type": "RuntimeDefault"})
    if len(pod["containers"]) != 1:
        problems.append("expected one container")
    c = pod["containers"][0]
    expect("image", c["image"], "k3s-autoscaler:0.1.0")
    expect("args", c.get("args"), ["serve"])
    if c.get("command"):
        problems.append("command must not override the image's ENTRYPOINT")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    # Two config layers: the settings the stack wrote to SSM, then the mounted config.toml;
    # the SSM layer is the cluster whose webhook-token parameter config.toml names.
    token_parameter = cfg["auth"].get("token_ssm_parameter") or ""
    cluster = re.fullmatch(r"/k3s-autoscaler/([a-z0-9-]+)/webhook-token", token_parameter)
    expect("config.toml auth.token_ssm_parameter is /k3s-autoscaler/<ClusterId>/webhook-token", bool(cluster), True)
    cluster = cluster.group(1) if cluster else "<ClusterId>"
    expect("env K3S_AUTOSCALER_CONFIG (--config layers)", env.get("K3S_AUTOSCALER_CONFIG"),
           f"ssm:/k3s-autoscaler/{cluster}/config,{MOUNT}/config.toml")
    expect("env AWS_REGION is a region (the SSM layer is read before any config)",
           bool(re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", env.get("AWS_REGION") or "")), True)
    expect("env K3S_AUTOSCALER_LOG_FORMAT", env.get("K3S_AUTOSCALER_LOG_FORMAT"), "json")
    sc = c.get("securityContext", {})
    expect("runAsNonRoot", sc.get("runAsNonRoot"), True)
    expect("runAsUser", sc.get("runAsUser"), 65532)
    expect("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem"), True)
    expect("allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation"), False)
    expect("capabilities.drop", sc.get("capabilities", {}).get("drop"), ["ALL"])
    expect("capabilities.add", sc.get("capabilities", {}).get("add"), None)
    expect("seccompProfile", sc.get("seccompProfile"), {"type": "RuntimeDefault"})
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(part, {}):
                problems.append(f"resources.{part}.{r} missing")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    expect("containerPort http (= config.toml server.listen)", ports.get("http"), port)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        hg = c.get(probe, {}).get("httpGet", {})
        expect(f"{probe} path", hg.get("path"), path)
        expect(f"{probe} port", ports.get(hg.get("port"), hg.get("port")), port)
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == MOUNT]
    if len(mounts) != 1 or mounts[0].get("readOnly") is not True:
        problems.append(f"expected one read-only mount at {MOUNT}, got {c.get('volumeMounts')}")
    else:
        vol = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
        sources = vol.get("projected", {}).get("sources", [])
        cms = [s["configMap"] for s in sources if "configMap" in s]
        secs = [s["secret"] for s in sources if "secret" in s]
        cm = find(docs, "ConfigMap", CONFIGMAP, NAMESPACE)
        expect("volume configMap name (generated)", [x["name"] for x in cms], [cm["metadata"]["name"]])
        expect("volume configMap items", [x.get("items") for x in cms], [[{"key": "config.toml", "path": "config.toml"}]])
        expect("volume secret name", [x["name"] for x in secs], [SECRET])
        expect("volume secret items", [x.get("items") for x in secs],
               [[{"key": "events-token", "path": "events-token"}]])
        expect("config.toml auth.bearer_token_file (Alertmanager's tokens come from SSM)",
               cfg["auth"].get("bearer_token_file"), None)
        expect("config.toml auth.events_token_file", cfg["auth"].get("events_token_file"), f"{MOUNT}/events-token")
    # The pod's own AWS identity: a projected token for STS, read by the SDK's default chain.
    token_file = env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or ""
    aws_mounts = [m for m in c.get("volumeMounts", []) if token_file.startswith(m["mountPath"] + "/")]
    aws_vol = next((v for v in pod["volumes"] if aws_mounts and v["name"] == aws_mounts[0]["name"]), {})
    sa_tokens = [s["serviceAccountToken"] for s in aws_vol.get("projected", {}).get("sources", [])
                 if "serviceAccountToken" in s]
    expect("AWS_ROLE_ARN is a role ARN", bool(re.fullmatch(r"arn:aws:iam::\d{12}:role/.+", env.get("AWS_ROLE_ARN") or "")), True)
    expect("web identity token: audience sts.amazonaws.com, at the AWS_WEB_IDENTITY_TOKEN_FILE path",
           [(t.get("audience"), f"{aws_mounts[0]['mountPath']}/{t.get('path')}") for t in sa_tokens] if aws_mounts else [],
           [("sts.amazonaws.com", token_file)])
    # Ingress only from Alertmanager and Prometheus in `monitoring` (kubelet probes come from
    # the node, which K3s's policy controller always admits).
    netpol = find(docs, "NetworkPolicy", NAME, NAMESPACE)
    rules = netpol["spec"].get("ingress", [])
    peers = sorted((p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"),
                    p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name"))
                   for r in rules for p in r.get("from", []))
    expect("NetworkPolicy ingress peers", peers, [("monitoring", "alertmanager"), ("monitoring", "prometheus")])
    expect("NetworkPolicy: every ingress rule names its peers", all(r.get("from") for r in rules) and bool(rules), True)
    expect("NetworkPolicy ingress ports", [[(p["protocol"], p["port"]) for p in r.get("ports", [])] for r in rules],
           [[("TCP", port)]])
    svc = find(docs, "Service", NAME, NAMESPACE)
    expect("Service type", svc["spec"].get("type", "ClusterIP"), "ClusterIP")
    expect("Service ports", [(p["name"], p["port"]) for p in svc["spec"]["ports"]], [("http", port)])
    expect("Service selector", svc["spec"]["selector"], spec["selector"]["matchLabels"])
    expect("Service prometheus.io/scrape", svc["metadata"].get("annotations", {}).get("prometheus.io/scrape"), "true")
    if any(d.get("kind") == "Secret" for d in docs):
        problems.append("the rendered manifests must not contain a Secret")
    return finish(problems)


def cmd_configmap(deploy, manifests):
    deploy = Path(deploy)
    cm = find(load(manifests), "ConfigMap", CONFIGMAP, NAMESPACE)
    want = (deploy / "config.toml").read_text()
    problems = []
    if set(cm.get("data", {})) != {"config.toml"}:
        problems.append(f"ConfigMap keys {sorted(cm.get('data', {}))} != ['config.toml']")
    elif cm["data"]["config.toml"] != want:
        problems.append("ConfigMap config.toml differs from deploy/config.toml")
    else:
        print(f"ConfigMap {cm['metadata']['name']}: data config.toml == deploy/config.toml ({len(want)} bytes)")
    return finish(problems)


def finish(problems):
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    cmds = {"refs": cmd_refs, "rbac": cmd_rbac, "rbac-selftest": cmd_rbac_selftest,
            "contract": cmd_contract, "configmap": cmd_configmap}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    sys.exit(cmds[sys.argv[1]](*sys.argv[2:]))
