#!/usr/bin/env python3
"""Run the user-data scripts against stubs of IMDSv2, the aws cli and the K3s installer.

Each script is rendered the way CloudFormation's Fn::Sub renders it, then run with bash
and a PATH whose first entries are stubs:
  curl  - IMDSv2: PUT /api/token, then GET meta-data/* only with the token header;
          any other URL (the pinned install.sh) gets a fake installer that records
          its arguments and K3S_* / INSTALL_K3S_* environment
  aws   - ssm get-parameter / put-parameter against a JSON file; the first reads answer
          ParameterNotFound, as while the server is still booting; s3api put-object
          records the object
  sleep - no-op; k3s - `k3s kubectl get --raw` answers /readyz and the issuer's
          discovery documents
The fake installer writes what K3s writes: server/token, and server/agent-token in
secure format from --agent-token-file (or, without it, a link to the server token).
The node identity contract (provider-id, labels, node name, pinned version, SSM names)
is asserted on what the fake installer and the fake aws cli saw.

Usage: test_userdata.py [INFRA_DIR]
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

K3S_VERSION = "v1.34.3+k3s1"
JOIN_TOKEN = "K10deadbeef::server:not-a-real-token"
SERVER_TOKEN = "K10deadbeef::server:the-server-token"
OIDC_HOST = "k3s-oidc-abc.s3.eu-west-1.amazonaws.com"

CURL = r"""#!/bin/bash
# stub curl: IMDSv2 + installer download
set -u
out="" method=GET url="" token_hdr=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -X) method=$2; shift 2 ;;
    -H) case "$2" in X-aws-ec2-metadata-token:*) token_hdr=${2#*: } ;; esac; shift 2 ;;
    -*) shift ;;
    *) url=$1; shift ;;
  esac
done
echo "$method $url" >>"$STUB_DIR/curl.log"
case "$url" in
  http://169.254.169.254/latest/api/token)
    [ "$method" = PUT ] || exit 22
    printf 'imds-session-token' ;;
  http://169.254.169.254/latest/meta-data/*)
    [ "$token_hdr" = imds-session-token ] || { echo "IMDSv1 request" >&2; exit 22; }
    key=${url#http://169.254.169.254/latest/meta-data/}
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); k=sys.argv[2]; print(d[k], end="") if k in d else sys.exit(22)' "$STUB_DIR/imds.json" "$key" ;;
  https://*)
    [ -n "$out" ] || exit 2
    cp "$STUB_DIR/fake-install.sh" "$out" ;;
  *) exit 6 ;;
esac
"""

FAKE_INSTALL = r"""#!/bin/sh
# fake K3s installer: record what the real one would get
{
  for a in "$@"; do printf '%s\n' "$a"; done
} >"$STUB_DIR/install.args"
env | grep -E '^(K3S_|INSTALL_K3S_)' | sort >"$STUB_DIR/install.env"
if [ "$1" = server ]; then
  d="$K3S_BOOTSTRAP_TEST_DATA_DIR/server"
  mkdir -p "$d"
  printf '%s\n' "$FAKE_SERVER_TOKEN" >"$d/token"
  ln -sf "$d/token" "$d/node-token"
  agent_file=""
  while [ $# -gt 0 ]; do
    [ "$1" = --agent-token-file ] && agent_file=$2
    shift
  done
  if [ -n "$agent_file" ] && [ -z "${FAKE_IGNORE_AGENT_TOKEN:-}" ]; then
    printf 'K10deadbeef::node:%s\n' "$(cat "$agent_file")" >"$d/agent-token"
  else
    ln -sf "$d/token" "$d/agent-token"
  fi
fi
"""

AWS = r"""#!/usr/bin/env python3
# stub aws cli: ssm get-parameter / put-parameter
import json, os, sys
d = os.environ["STUB_DIR"]
args = sys.argv[1:]
with open(os.path.join(d, "aws.log"), "a") as f:
    f.write(json.dumps(args) + "\n")
def opt(name):
    return args[args.index(name) + 1] if name in args else None
store_path = os.path.join(d, "ssm.json")
store = json.load(open(store_path)) if os.path.exists(store_path) else {}
if args[:2] == ["ssm", "get-parameter"]:
    name = opt("--name")
    misses = os.path.join(d, "misses")
    left = int(open(misses).read()) if os.path.exists(misses) else 0
    if left > 0 or name not in store:
        open(misses, "w").write(str(max(left - 1, 0)))
        print("An error occurred (ParameterNotFound) when calling the GetParameter operation", file=sys.stderr)
        sys.exit(254)
    p = store[name]
    if p["Type"] == "SecureString" and "--with-decryption" not in args:
        print("AQICAHh-encrypted-blob")
    else:
        print(p["Value"])
elif args[:2] == ["s3api", "put-object"]:
    objects_path = os.path.join(d, "s3.json")
    objects = json.load(open(objects_path)) if os.path.exists(objects_path) else {}
    objects[opt("--bucket") + "/" + opt("--key")] = open(opt("--body")).read()
    json.dump(objects, open(objects_path, "w"))
    print(json.dumps({"ETag": "x"}))
elif args[:2] == ["ssm", "put-parameter"]:
    value = opt("--value")
    if value.startswith("file://"):
        value = open(value[len("file://"):]).read()
    store[opt("--name")] = {"Type": opt("--type"), "Value": value, "Overwrite": "--overwrite" in args}
    json.dump(store, open(store_path, "w"))
    print(json.dumps({"Version": 1}))
else:
    sys.exit(2)
"""

SLEEP = "#!/bin/sh\necho \"$1\" >>\"$STUB_DIR/sleep.log\"\n"
K3S = r"""#!/bin/sh
case "$*" in
  "kubectl get --raw /readyz") echo ok ;;
  "kubectl get --raw /.well-known/openid-configuration") echo '{"issuer":"https://OIDC"}' ;;
  "kubectl get --raw /openid/v1/jwks") echo '{"keys":[]}' ;;
  *) exit 1 ;;
esac
"""

checks = 0
temp_dirs: list[Path] = []


def ok(condition: bool, what: str) -> None:
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1
    print(f"  ok  {what}")


def render(script: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{([^}!]+)\}", lambda m: values[m.group(1)], script)


def run(script: str, imds: dict, ssm: dict, misses: int = 0, extra_env: dict | None = None):
    tmp = Path(tempfile.mkdtemp(prefix="userdata-"))
    temp_dirs.append(tmp)
    stub = tmp / "stub"
    bin_ = tmp / "bin"
    stub.mkdir()
    bin_.mkdir()
    for name, text in {"curl": CURL, "aws": AWS, "sleep": SLEEP, "k3s": K3S}.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    (stub / "fake-install.sh").write_text(FAKE_INSTALL)
    (stub / "imds.json").write_text(json.dumps(imds))
    (stub / "ssm.json").write_text(json.dumps(ssm))
    (stub / "misses").write_text(str(misses))
    (tmp / "user-data").write_text(script)
    env = {
        "PATH": f"{bin_}:{os.environ['PATH']}",
        "STUB_DIR": str(stub),
        "TMPDIR": str(tmp),
        "HOME": str(tmp),
        "FAKE_SERVER_TOKEN": SERVER_TOKEN,
        "K3S_BOOTSTRAP_TEST_DATA_DIR": str(tmp / "k3s"),
        **(extra_env or {}),
    }
    proc = subprocess.run(["bash", str(tmp / "user-data")], env=env, capture_output=True,
                          text=True, timeout=60)

    def read(name: str) -> str:
        p = stub / name
        return p.read_text() if p.exists() else ""

    return proc, read


def imds_for(lifecycle: str) -> dict:
    return {
        "instance-id": "i-0123456789abcdef0",
        "placement/availability-zone": "eu-west-1b",
        "placement/region": "eu-west-1",
        "instance-type": "t3.small",
        "instance-life-cycle": lifecycle,
        "local-ipv4": "10.100.16.7",
    }


def main() -> int:
    infra = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    worker_src = (infra / "userdata/worker.sh").read_text()
    server_src = (infra / "userdata/server.sh").read_text()
    ssm = {
        "/k3s-autoscaler/prod/server-url": {"Type": "String", "Value": "https://10.100.0.4:6443"},
        "/k3s-autoscaler/prod/join-token": {"Type": "SecureString", "Value": JOIN_TOKEN},
    }
    values = {"ClusterId": "prod", "PoolName": "workers", "K3sVersion": K3S_VERSION,
              "K3sInstallScriptSha256": hashlib.sha256(FAKE_INSTALL.encode()).hexdigest(),
              "OidcBucket": "k3s-oidc-abc", "OidcBucket.RegionalDomainName": OIDC_HOST}

    for lifecycle, capacity in (("spot", "spot"), ("on-demand", "on-demand")):
        print(f"worker ({lifecycle}):")
        proc, read = run(render(worker_src, values), imds_for(lifecycle), ssm, misses=3)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
        ok(proc.returncode == 0, "worker user-data exits 0")
        args = read("install.args").splitlines()
        ok(args == [
            "agent",
            "--node-name", "i-0123456789abcdef0",
            "--kubelet-arg=provider-id=aws:///eu-west-1b/i-0123456789abcdef0",
            "--node-label=k3s-autoscaler/pool=workers",
            "--node-label=k3s-autoscaler/managed=true",
            f"--node-label=k3s-autoscaler/capacity-type={capacity}",
            "--node-label=topology.kubernetes.io/zone=eu-west-1b",
            "--node-label=node.kubernetes.io/instance-type=t3.small",
        ], f"agent args: provider-id, node name, pool/managed/capacity-type={capacity}/zone/type labels")
        env = dict(line.split("=", 1) for line in read("install.env").splitlines())
        ok(env.get("K3S_URL") == "https://10.100.0.4:6443" and env.get("K3S_TOKEN") == JOIN_TOKEN,
           "K3S_URL and K3S_TOKEN from SSM")
        ok(env.get("INSTALL_K3S_VERSION") == K3S_VERSION, "pinned INSTALL_K3S_VERSION")
        curl_log = read("curl.log")
        ok("GET https://raw.githubusercontent.com/k3s-io/k3s/v1.34.3%2Bk3s1/install.sh" in curl_log,
           "installer fetched from the pinned release tag")
        ok(curl_log.startswith("PUT http://169.254.169.254/latest/api/token"), "IMDSv2 token first")
        aws_calls = [json.loads(line) for line in read("aws.log").splitlines()]
        token_reads = [c for c in aws_calls if "/k3s-autoscaler/prod/join-token" in c]
        ok(token_reads and all("--with-decryption" in c for c in token_reads),
           "join token read with --with-decryption")
        ok(all(c[:2] == ["ssm", "get-parameter"] for c in aws_calls), "worker only reads SSM")
        ok(len(read("sleep.log").splitlines()) >= 3, "waits (retries) while the parameters are missing")
        ok(JOIN_TOKEN not in proc.stdout + proc.stderr, "join token never printed")

    print("worker (installer checksum mismatch):")
    bad = dict(values, K3sInstallScriptSha256="0" * 64)
    proc, read = run(render(worker_src, bad), imds_for("spot"), ssm)
    ok(proc.returncode != 0 and read("install.args") == "", "wrong installer SHA-256: no install, exit != 0")
    proc, read = run(render(worker_src, values), imds_for("spot"), ssm)
    ok(proc.returncode == 0 and read("install.args") != "", "matching installer SHA-256: installs")
    for name, src in (("worker", worker_src), ("server", server_src)):
        proc, read = run(render(src, dict(values, K3sInstallScriptSha256="")), imds_for("spot"), ssm)
        ok(proc.returncode != 0 and read("install.args") == "", f"{name}: no installer checksum: no install")

    print("worker (no IMDS):")
    proc, read = run(render(worker_src, values), {}, ssm)
    ok(proc.returncode != 0 and read("install.args") == "", "IMDS unavailable: no install, exit != 0")

    print("server:")
    server_imds = imds_for("on-demand") | {
        "instance-type": "t3.medium", "placement/availability-zone": "eu-west-1a",
        "local-ipv4": "10.100.0.4", "public-ipv4": "203.0.113.10"}
    proc, read = run(render(server_src, values), server_imds, {})
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
    ok(proc.returncode == 0, "server user-data exits 0")
    args = read("install.args").splitlines()
    ok(args[0] == "server", "installs a K3s server")
    for expected in (
        "--node-taint=node-role.kubernetes.io/control-plane=true:NoSchedule",
        "--kubelet-arg=provider-id=aws:///eu-west-1a/i-0123456789abcdef0",
        "--disable-cloud-controller",
        "--node-label=topology.kubernetes.io/zone=eu-west-1a",
        "--node-label=node.kubernetes.io/instance-type=t3.medium",
        f"--kube-apiserver-arg=service-account-issuer=https://{OIDC_HOST}",
        "--kube-apiserver-arg=service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--kube-apiserver-arg=service-account-jwks-uri=https://{OIDC_HOST}/openid/v1/jwks",
    ):
        ok(expected in args, f"server arg {expected}")
    ok(args.index(f"--kube-apiserver-arg=service-account-issuer=https://{OIDC_HOST}")
       < args.index("--kube-apiserver-arg=service-account-issuer=https://kubernetes.default.svc.cluster.local"),
       "tokens are signed with the public issuer (the first), the in-cluster one still accepted")
    sans = [args[i + 1] for i, a in enumerate(args) if a == "--tls-san"]
    ok(sans == ["10.100.0.4", "203.0.113.10"],
       "the API certificate names the private and the public address (a kubeconfig over the public IP verifies)")
    ok("--agent-token-file" in args, "server runs with an agent token of its own")
    ok(not any("k3s-autoscaler/managed" in a for a in args), "server is not labelled as a managed node")
    env = dict(line.split("=", 1) for line in read("install.env").splitlines())
    ok(env.get("INSTALL_K3S_VERSION") == K3S_VERSION and "K3S_TOKEN" not in env,
       "pinned version; no preset token (K3s generates it)")
    store = json.loads(read("ssm.json"))
    published = store.get("/k3s-autoscaler/prod/join-token", {})
    ok(published.get("Type") == "SecureString" and published.get("Overwrite") is True
       and re.fullmatch(r"K10deadbeef::node:[0-9a-f]{64}", published.get("Value", "")) is not None,
       "the agent token (secure format, 256 random bits) is published as SecureString, no newline")
    ok(SERVER_TOKEN not in json.dumps(store), "the server token is never published")
    objects = json.loads(read("s3.json") or "{}")
    ok(sorted(objects) == ["k3s-oidc-abc/.well-known/openid-configuration", "k3s-oidc-abc/openid/v1/jwks"],
       "the issuer's discovery document and JWKS are published to the OIDC bucket")
    ok(store.get("/k3s-autoscaler/prod/server-url") == {
        "Type": "String", "Value": "https://10.100.0.4:6443", "Overwrite": True},
       "server URL https://<private-ip>:6443 published as String")
    ok(published.get("Value", "-") not in proc.stdout + proc.stderr
       and SERVER_TOKEN not in proc.stdout + proc.stderr, "no token is ever printed")

    print("server (no public address):")
    private_only = {k: v for k, v in server_imds.items() if k != "public-ipv4"}
    proc, read = run(render(server_src, values), private_only, {})
    args = read("install.args").splitlines()
    ok(proc.returncode == 0 and [args[i + 1] for i, a in enumerate(args) if a == "--tls-san"]
       == ["10.100.0.4", "10.100.0.4"], "without a public address the certificate names the private one")

    print("server (K3s ignores the agent token):")
    proc, read = run(render(server_src, values), server_imds, {}, extra_env={"FAKE_IGNORE_AGENT_TOKEN": "1"})
    ok(proc.returncode != 0 and "/k3s-autoscaler/prod/join-token" not in read("ssm.json"),
       "agent-token linked to the server token: nothing published, exit != 0")

    print(f"test_userdata: {checks} checks passed")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except AssertionError as exc:
        print(f"  FAIL  {exc}", file=sys.stderr)
        code = 1
    finally:
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
    sys.exit(code)
