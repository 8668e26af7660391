#!/usr/bin/env python3
"""The quickstart's test (scripts/check-quickstart.sh). Two parts:

  drift   every ```sh block of docs/quickstart.md starts with `# step: <name>`, names are
          unique, and each is either run here (RUN) or listed once under "needs a real
          account"; every RUN step is named in the doc's paragraph about the test.
  run     the RUN steps, as written and in the doc's order, in one bash session against:
          moto's server (EC2, SSM, CloudFormation; AWS_ENDPOINT_URL), a real Alertmanager
          with alertmanager/alertmanager.yml (webhook pointed at a local receiver, its token
          file the one the `secrets` step puts in the monitoring Secret), and the local binary
          for the in-pod command (`kubectl -n k3s-autoscaler exec deploy/k3s-autoscaler --
          /k3s-autoscaler ARGS` runs `k3s-autoscaler ARGS` with the Deployment's config
          layers, its mounted file being deploy/config.toml). `kubectl create namespace` and
          `kubectl -n NS create secret generic NAME --from-file=K=PATH --from-literal=K=V`
          write each key to SECRETS/NS/NAME/K, as the Secret's mount would show it; any other
          kubectl fails. The variables the steps not run here would set are preset:
          INSTALL_SHA, MY_IP, AM, SLACK_WEBHOOK_URL.
          Then: the SSM config layer names the stack's table, launch template, version, queue
          and subnets (read from the stack's resources: moto gives change-set stacks no
          outputs), the server runs the pinned AMI, the webhook token is a SecureString whose
          value is Alertmanager's Secret (the autoscaler's Secret holds only events-token),
          Alertmanager posted the synthetic alert to the webhook with that token, and
          `status` answered for pool workers.

Usage: quickstart_test.py drift | run BINARY
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/quickstart.md"
# The steps this test runs, in the doc's order.
RUN = ["key-pair", "pin-ami", "template-bucket", "create-stack", "outputs", "config-values", "secrets",
       "synthetic-alert", "status"]
REGION = "eu-west-1"
IN_POD = "-n k3s-autoscaler exec deploy/k3s-autoscaler -- /k3s-autoscaler"
MOUNT = "/etc/k3s-autoscaler"
# Where Alertmanager's HelmChart mounts the Secret the `secrets` step creates.
AM_TOKEN = "/etc/alertmanager/secrets/k3s-autoscaler-token/token"


def deployment_config_layers():
    """K3S_AUTOSCALER_CONFIG of deploy/base/deployment.yaml: the pod's --config layers."""
    text = (ROOT / "deploy/base/deployment.yaml").read_text(encoding="utf-8")
    m = re.search(r"- name: K3S_AUTOSCALER_CONFIG\n\s*value: (\S+)\n", text)
    return m.group(1) if m else None


def steps():
    """(name, body) of each ```sh block, in order; problems."""
    text = DOC.read_text(encoding="utf-8")
    out, problems = [], []
    for i, body in enumerate(re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)):
        m = re.match(r"# step: ([a-z0-9-]+)\n", body)
        if not m:
            problems.append(f"block {i + 1} does not start with `# step: <name>`: {body.splitlines()[0]!r}")
            continue
        out.append((m.group(1), body))
    return text, out, problems


def drift():
    text, found, problems = steps()
    names = [n for n, _ in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        problems.append(f"step names used twice: {sorted(dupes)}")
    section = text.split("## What the test does not run", 1)
    if len(section) != 2:
        return problems + ["no section \"## What the test does not run\""]
    real_lines = [line for line in section[1].splitlines() if line.startswith("- needs a real account:")]
    if len(real_lines) != 1:
        return problems + ["want exactly one line \"- needs a real account: ...\""]
    real_start = section[1].index(real_lines[0])
    real = re.findall(r"`([a-z0-9-]+)`", section[1][real_start:])
    both = set(real) & set(RUN)
    if both:
        problems.append(f"both run and listed as needing a real account: {sorted(both)}")
    missing = set(names) - set(real) - set(RUN)
    if missing:
        problems.append(f"steps neither run by the test nor listed as needing a real account: {sorted(missing)}")
    unknown = (set(real) | set(RUN)) - set(names)
    if unknown:
        problems.append(f"named but not a step of the doc: {sorted(unknown)}")
    said = set(re.findall(r"`([a-z0-9-]+)`", section[1][:real_start]))
    if not set(RUN) <= said:
        problems.append(f"the doc does not say the test runs {sorted(set(RUN) - said)}")
    if [n for n in names if n in RUN] != RUN:
        problems.append(f"RUN order {RUN} differs from the doc's {[n for n in names if n in RUN]}")
    if not problems:
        print(f"{len(names)} steps: {len(RUN)} run here, {len(real)} need a real account")
    return problems


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def run(binary):
    problems = drift()
    if problems:
        return problems
    _, found, _ = steps()
    bodies = dict(found)
    work = Path(tempfile.mkdtemp(prefix="quickstart-"))
    procs = []
    posts, lock = [], threading.Lock()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                posts.append((self.path, self.headers.get("Authorization"), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        moto_port = free_port()
        moto = subprocess.Popen([str(ROOT / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                                stdout=open(work / "moto.log", "w"), stderr=subprocess.STDOUT)
        procs.append(moto)
        wait_http(f"http://127.0.0.1:{moto_port}/moto-api/", moto, "moto_server")

        # The Secrets the `secrets` step creates, one file per key (their mounts). Alertmanager's
        # token file exists before the step runs, as an unusable placeholder the step replaces.
        secrets = work / "secrets"
        am_token = secrets / "monitoring/k3s-autoscaler-token/token"
        am_token.parent.mkdir(parents=True)
        am_token.write_text("placeholder-until-the-secrets-step\n")
        (work / "slack-url").write_text("http://127.0.0.1:9/slack")
        am_cfg = (ROOT / "alertmanager/alertmanager.yml").read_text()
        for old, new in [
            ("http://k3s-autoscaler.k3s-autoscaler.svc:8080/v1/alerts",
             f"http://127.0.0.1:{sink.server_address[1]}/v1/alerts"),
            (AM_TOKEN, str(am_token)),
            ("/etc/alertmanager/secrets/slack-webhook/url", str(work / "slack-url")),
        ]:
            if old not in am_cfg:
                return [f"alertmanager/alertmanager.yml no longer has {old}"]
            am_cfg = am_cfg.replace(old, new)
        (work / "am.yml").write_text(am_cfg)
        am_port = free_port()
        am = subprocess.Popen(["prometheus-alertmanager", f"--config.file={work / 'am.yml'}",
                               f"--storage.path={work / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                               "--cluster.listen-address="],
                              stdout=open(work / "alertmanager.log", "w"), stderr=subprocess.STDOUT)
        procs.append(am)
        wait_http(f"http://127.0.0.1:{am_port}/api/v2/status", am, "alertmanager")

        # Parameters today's template still requires that the quickstart's (SQS) path drops,
        # added to `cloudformation deploy` only while the template has them. moto cannot create
        # EventBridge API destinations, hence forwarding off.
        template = (ROOT / "infra/k3s-autoscaler.yaml").read_text()
        transitional = {"WebhookHost": "autoscaler.example.invalid", "WebhookToken": "moto-" * 4 + "token",
                        "EnableEc2EventForwarding": "false"}
        extra = " ".join(f"{k}={v}" for k, v in transitional.items() if re.search(rf"^  {k}:$", template, re.M))
        (work / "infra").symlink_to(ROOT / "infra")
        layers = deployment_config_layers()
        if not layers or f"{MOUNT}/config.toml" not in layers.split(","):
            return [f"deploy/base/deployment.yaml: K3S_AUTOSCALER_CONFIG {layers!r} does not name "
                    f"{MOUNT}/config.toml"]
        # The pod's layers, its mounted config.toml being deploy/config.toml.
        layers = layers.replace(f"{MOUNT}/config.toml", str(ROOT / "deploy/config.toml"))
        script = [
            "set -euo pipefail",
            # moto reads `deploy`'s S3 template URL (the endpoint + /bucket/key) by path only
            # when its host is "localhost"; the server still binds 127.0.0.1 only.
            f"export AWS_ENDPOINT_URL=http://localhost:{moto_port} AWS_ACCESS_KEY_ID=testing",
            f"export AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={REGION} AWS_REGION={REGION}",
            "# What the steps not run here provide.",
            f"INSTALL_SHA={'0' * 64}; MY_IP=203.0.113.7; AM=http://127.0.0.1:{am_port}",
            "SLACK_WEBHOOK_URL=http://127.0.0.1:9/slack",
            "aws() {",
            f"  if [ \"$1 $2\" = 'cloudformation deploy' ] && [ -n '{extra}' ]; then command aws \"$@\" {extra}; "
            "else command aws \"$@\"; fi",
            "}",
            "kubectl() {",
            "  local args=\"$*\" kv dir",
            f"  if [ \"${{args:0:{len(IN_POD)}}}\" = \"{IN_POD}\" ]; then",
            "    shift 6",
            f"    K3S_AUTOSCALER_CONFIG={layers} \\",
            f"      K3S_AUTOSCALER__AWS__ENDPOINT_URL=http://127.0.0.1:{moto_port} \\",
            f"      K3S_AUTOSCALER__AUTH__EVENTS_TOKEN_FILE={secrets}/k3s-autoscaler/k3s-autoscaler-token/events-token \\",
            f"      K3S_AUTOSCALER_LOG_FORMAT=text {binary} \"$@\"",
            "  elif [ $# -eq 3 ] && [ \"$1 $2\" = 'create namespace' ]; then",
            f"    echo \"$3\" >>{secrets}/namespaces; echo \"namespace/$3 created\"",
            "  elif [ $# -gt 6 ] && [ \"$1 $3 $4 $5\" = '-n create secret generic' ]; then",
            f"    dir={secrets}/$2/$6; mkdir -p \"$dir\"; shift 6",
            "    for kv in \"$@\"; do case $kv in",
            "      --from-file=*=*) kv=${kv#--from-file=}; cp \"${kv#*=}\" \"$dir/${kv%%=*}\" ;;",
            "      --from-literal=*=*) kv=${kv#--from-literal=}; printf %s \"${kv#*=}\" >\"$dir/${kv%%=*}\" ;;",
            "      *) echo \"kubectl create secret: $kv is not handled here\" >&2; return 1 ;;",
            "    esac; done; echo \"secret/${dir##*/} created\"",
            "  else echo \"kubectl $* is not run here\" >&2; return 1; fi",
            "}",
        ]
        for name in RUN:
            script += [f"echo '::step {name}'", bodies[name], f"echo '::done {name}'"]
        (work / "steps.sh").write_text("\n".join(script) + "\n")
        proc = subprocess.run(["bash", str(work / "steps.sh")], cwd=work, capture_output=True, text=True,
                              timeout=400)
        print(proc.stdout[-6000:])
        if proc.returncode != 0:
            return [f"the steps failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"]
        done = re.findall(r"^::done (\S+)$", proc.stdout, flags=re.M)
        if done != RUN:
            problems.append(f"steps done {done}, want {RUN}")
        problems += verify(proc.stdout, moto_port, posts, lock, work)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        sink.shutdown()
    return problems


def verify(stdout, moto_port, posts, lock, work):
    import tomllib

    import boto3  # the .venv's, as the infra checks

    problems = []
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    client = lambda s: session.client(s, endpoint_url=f"http://127.0.0.1:{moto_port}")  # noqa: E731
    cfn = client("cloudformation")
    stack = cfn.describe_stacks(StackName="k3s-autoscaler-prod")["Stacks"][0]
    # moto gap: a stack made through a change set (`cloudformation deploy`) has no Outputs in
    # moto, so `outputs` prints "None" here; the outputs themselves are checked by
    # infra/tests/deploy_moto.py. The resources are read directly instead.
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cfn.list_stack_resources(StackName="k3s-autoscaler-prod")["StackResourceSummaries"]}
    if stack["StackStatus"] != "CREATE_COMPLETE":
        problems.append(f"stack {stack['StackStatus']}")
    # The config layer the stack wrote, as `config-values` printed it.
    ssm, ec2 = client("ssm"), client("ec2")
    name = physical.get("ServiceConfigParameter")
    value = ssm.get_parameter(Name=name)["Parameter"]["Value"] if name else ""
    printed = stdout.split("::step config-values", 1)[-1].split("::done config-values", 1)[0]
    if name != "/k3s-autoscaler/prod/config" or not value or value.strip() not in printed:
        problems.append(f"config-values did not print the stack's parameter {name}: {printed[:300]!r}")
    try:
        layer = tomllib.loads(value)
    except tomllib.TOMLDecodeError as e:
        return problems + [f"the stack's config parameter is not TOML: {e}"]
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in ec2.describe_subnets(
        SubnetIds=[physical["PublicSubnet1"], physical["PublicSubnet2"]])["Subnets"]}
    template = ec2.describe_launch_templates(LaunchTemplateIds=[physical["WorkerLaunchTemplate"]])
    version = str(template["LaunchTemplates"][0]["LatestVersionNumber"])
    pool = layer.get("pools", {}).get("workers", {})
    want = {"cluster_id": "prod", "aws.table": physical.get("StateTable"),
            "interruption.queue_url": physical.get("Ec2NoticeQueue"),
            "launch_template": physical["WorkerLaunchTemplate"], "launch_template_version": version,
            "subnets": subnets}
    got = {"cluster_id": layer.get("cluster_id"), "aws.table": layer.get("aws", {}).get("table"),
           "interruption.queue_url": layer.get("interruption", {}).get("queue_url"),
           "launch_template": pool.get("launch_template"), "launch_template_version": pool.get("launch_template_version"),
           "subnets": pool.get("subnets")}
    if got != want:
        problems.append(f"the SSM config layer {got} != the stack's resources {want}")
    ami = re.search(r"^server AMI: (ami-\S+)$", stdout, flags=re.M)
    server = ec2.describe_instances(InstanceIds=[physical["ServerInstance"]])
    image = server["Reservations"][0]["Instances"][0]["ImageId"]
    if not ami or image != ami.group(1):
        problems.append(f"server image {image}, pinned {ami and ami.group(1)}")
    elif got == want:
        print(f"SSM layer {name}: table {want['aws.table']}, launch template {want['launch_template']} "
              f"version {version}, subnets {subnets}; server on the pinned {image}")
    # The webhook token: a SecureString, the same value in Alertmanager's Secret, not in the
    # autoscaler's (which holds the events token only, what the Deployment mounts).
    config = tomllib.loads((ROOT / "deploy/config.toml").read_text())
    token_name = config.get("auth", {}).get("token_ssm_parameter")
    token = ""
    try:
        param = ssm.get_parameter(Name=token_name or "/unset", WithDecryption=True)["Parameter"]
        token = param["Value"]
        if param["Type"] != "SecureString" or not re.fullmatch(r"[0-9a-f]{64}", token):
            problems.append(f"{token_name}: {param['Type']}, value of {len(token)} characters")
    except ssm.exceptions.ParameterNotFound:
        problems.append(f"the secrets step created no parameter {token_name} (deploy/config.toml's)")
    secrets = work / "secrets"
    keys = lambda ns: sorted(p.name for p in (secrets / ns / "k3s-autoscaler-token").glob("*"))  # noqa: E731
    am_token = (secrets / "monitoring/k3s-autoscaler-token/token").read_text().strip()
    events = secrets / "k3s-autoscaler/k3s-autoscaler-token/events-token"
    namespaces = (secrets / "namespaces").read_text().split() if (secrets / "namespaces").exists() else []
    if am_token != token or keys("monitoring") != ["token"]:
        problems.append(f"Alertmanager's Secret {keys('monitoring')} does not hold the SSM token")
    elif keys("k3s-autoscaler") != ["events-token"] or events.read_text().strip() in ("", token):
        problems.append(f"the autoscaler's Secret holds {keys('k3s-autoscaler')}, want only its own events-token")
    elif sorted(namespaces) != ["k3s-autoscaler", "monitoring"] or list(work.glob("*token")):
        problems.append(f"namespaces {namespaces}; left behind: {[p.name for p in work.glob('*token')]}")
    else:
        print(f"{token_name}: SecureString, the token of Alertmanager's Secret; the autoscaler's Secret "
              "holds only events-token; the token files were shredded")
    deadline = time.monotonic() + 40
    hit = []
    while time.monotonic() < deadline and not hit:
        with lock:
            hit = [p for p in posts if p[0] == "/v1/alerts" and any(
                a["labels"].get("alertname") == "QuickstartScaleUp" for a in p[2]["alerts"])]
        time.sleep(0.5)
    if not hit:
        problems.append("Alertmanager did not post the synthetic alert to the webhook")
    elif not token or hit[0][1] != f"Bearer {token}" or hit[0][2]["receiver"] != "k3s-autoscaler":
        problems.append(f"synthetic alert posted by {hit[0][2]['receiver']} with {hit[0][1]!r}")
    else:
        alert = next(a for a in hit[0][2]["alerts"] if a["labels"]["alertname"] == "QuickstartScaleUp")
        print(f"webhook got {alert['labels']} from receiver k3s-autoscaler with the SSM token")
        if alert["labels"].get("autoscaler") != "scale-up" or alert["labels"].get("pool") != "workers":
            problems.append(f"synthetic alert labels {alert['labels']}")
    status = stdout.split("::step status", 1)[-1]
    if "workers" not in status:
        problems.append("`status` did not report pool workers")
    return problems


def main(argv):
    if argv == ["drift"]:
        problems = drift()
    elif len(argv) == 2 and argv[0] == "run":
        problems = run(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print("FAIL", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
