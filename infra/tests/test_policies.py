#!/usr/bin/env python3
"""What the deployed IAM must guarantee, checked over the JSON the stack deploys.

infra/policies/*.json are the PolicyDocuments of the template (tests/check_sync.py proves
it, byte for byte after Fn::Sub); the template gives who holds them. Each check names the
attack it closes (docs/security.md):

* only the autoscaler's pod holds the autoscaler's powers: AutoscalerPolicy is attached to
  AutoscalerRole alone, which only the autoscaler's ServiceAccount can assume (web identity,
  audience sts.amazonaws.com); no role an instance carries may launch, terminate or touch
  DynamoDB; the server's IMDS hop limit is 1;
* launches are pinned: every RunInstances statement requires the cluster launch template;
  instances need the allowed types, the worker instance profile, IMDSv2 and hop limit 1;
  the image is the template's AMI only; volumes come from the template, encrypted;
  PassRole only for the worker role;
* the notice queue: the autoscaler may only receive, delete and read attributes, on that
  queue alone (a holder of its role cannot forge notices);
* SSM: the autoscaler may read its config and webhook-token parameters only (never the
  join token), and decrypt only the webhook token, via SSM, with the aws/ssm key; the
  config parameter the stack writes holds exactly the stack-known settings, deploy/config.toml
  none of them, and the names the Deployment and config.toml read are the ones granted;
* every action granted to the autoscaler is one the code calls (src/);
* the installer checksum is required, and nothing opens the server to the internet.

Usage: test_policies.py [INFRA_DIR]   (needs cfn-lint's YAML loader)
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml
from cfnlint.decode import decode

checks = 0
failures: list[str] = []


def ok(condition: bool, what: str) -> None:
    global checks
    checks += 1
    print(f"  {'ok  ' if condition else 'FAIL'}  {what}")
    if not condition:
        failures.append(what)


def statements(policy: dict) -> list[dict]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def actions(policy: dict) -> set[str]:
    return {a for s in statements(policy) if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def condition(statement: dict, operator: str, key: str):
    return statement.get("Condition", {}).get(operator, {}).get(key)


def flat(table: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the keys a config layer sets."""
    out = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        out.update(flat(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def config_parameter(res: dict, params: dict) -> tuple[str, dict]:
    """The config parameter's name and its TOML as the stack writes it with the default
    parameters: numbers for the number parameters, `<X>` for every other substitution."""
    props = res["ServiceConfigParameter"]["Properties"]
    text, variables = props["Value"]["Fn::Sub"]
    defaults = {k: str(v["Default"]) for k, v in params.items() if "Default" in v}
    numbers = {"PoolMinSize", "PoolMaxSize", "WorkerLaunchTemplate.LatestVersionNumber"}

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name == "PoolName":
            return defaults["PoolName"]
        return defaults[name] if name in numbers and name in defaults else f"<{name}>"

    rendered = re.sub(r"\$\{([^}!]+)\}", sub, text)
    return props["Name"]["Fn::Sub"].replace("${ClusterId}", defaults["ClusterId"]), tomllib.loads(rendered)


def main() -> int:
    infra = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    root = infra.parent
    template, matches = decode(str(infra / "k3s-autoscaler.yaml"))
    if template is None:
        print(f"cannot parse the template: {matches}", file=sys.stderr)
        return 1
    res = template["Resources"]
    params = template["Parameters"]

    def policy_file(logical: str) -> dict:
        rel = res[logical]["Metadata"]["k3s-autoscaler"]["policy-file"]
        return json.loads((infra / rel).read_text())

    autoscaler = policy_file("AutoscalerPolicy")
    template_arn = ("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:"
                    "launch-template/${WorkerLaunchTemplate}")

    print("only the autoscaler's pod holds its powers:")
    ok(res["AutoscalerPolicy"]["Properties"]["Roles"] == [{"Ref": "AutoscalerRole"}],
       "AutoscalerPolicy is attached to AutoscalerRole only")
    profiles = [r["Properties"]["Roles"] for r in res.values() if r["Type"] == "AWS::IAM::InstanceProfile"]
    ok({"Ref": "AutoscalerRole"} not in [x for p in profiles for x in p],
       "no instance profile carries AutoscalerRole")
    for role in ("ServerRole", "WorkerRole"):
        held = set()
        for logical, r in res.items():
            if r["Type"] == "AWS::IAM::ManagedPolicy" and {"Ref": role} in r["Properties"].get("Roles", []):
                held |= actions(policy_file(logical))
        ok(not any(a.startswith(("ec2:", "dynamodb:", "iam:")) for a in held),
           f"{role} holds no EC2, DynamoDB or IAM action (has {sorted(held)})")
    trust = json.loads((infra / res["AutoscalerRole"]["Metadata"]["k3s-autoscaler"]["trust-file"]).read_text())
    [stmt] = statements(trust)
    issuer = "${OidcBucket.RegionalDomainName}"
    ok(stmt["Action"] == "sts:AssumeRoleWithWebIdentity"
       and stmt["Principal"] == {"Federated": f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:oidc-provider/{issuer}"},
       "AutoscalerRole: web identity of the cluster's OIDC provider only")
    ok(condition(stmt, "StringEquals", f"{issuer}:sub")
       == "system:serviceaccount:${AutoscalerNamespace}:${AutoscalerServiceAccount}",
       "AutoscalerRole: only the autoscaler's ServiceAccount (sub)")
    ok(condition(stmt, "StringEquals", f"{issuer}:aud") == "sts.amazonaws.com",
       "AutoscalerRole: only tokens for STS (aud)")
    ok(res["OidcProvider"]["Properties"]["Url"] == {"Fn::Sub": f"https://{issuer}"}
       and res["OidcProvider"]["Properties"]["ClientIdList"] == ["sts.amazonaws.com"],
       "OIDC provider = the issuer server.sh configures, client sts.amazonaws.com")
    public = [s for s in statements(res["OidcBucketPolicy"]["Properties"]["PolicyDocument"])
              if s["Effect"] == "Allow" and s.get("Principal") == "*"]
    ok(len(public) == 1 and public[0]["Action"] == "s3:GetObject"
       and public[0]["Resource"] == [{"Fn::Sub": "${OidcBucket.Arn}/.well-known/openid-configuration"},
                                     {"Fn::Sub": "${OidcBucket.Arn}/openid/v1/jwks"}],
       "OIDC bucket: only the two discovery documents are public, read-only")
    server_meta = res["ServerInstance"]["Properties"]["MetadataOptions"]
    ok(server_meta["HttpTokens"] == "required" and server_meta["HttpPutResponseHopLimit"] == 1,
       "server: IMDSv2 required, hop limit 1 (no pod reaches the server role)")
    worker_meta = res["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    ok(worker_meta["HttpTokens"] == "required" and worker_meta["HttpPutResponseHopLimit"] == 1,
       "workers: IMDSv2 required, hop limit 1")

    print("launches are pinned:")
    run = [s for s in statements(autoscaler) if "ec2:RunInstances" in as_list(s["Action"])]
    ok(run and all(condition(s, "ArnEquals", "ec2:LaunchTemplate") == template_arn for s in run),
       "every RunInstances statement requires the cluster launch template")
    by_resource = {r: s for s in run for r in as_list(s["Resource"])}
    instance = by_resource.get("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*", {})
    ok(condition(instance, "StringEquals", "ec2:InstanceType") == ["${WorkerInstanceTypes}"]
       and params["WorkerInstanceTypes"]["Type"] == "CommaDelimitedList",
       "instances: only the allowed instance types (parameter list WorkerInstanceTypes)")
    ok(condition(instance, "StringEquals", "ec2:MetadataHttpTokens") == "required",
       "instances: IMDSv2 required (ec2:MetadataHttpTokens)")
    ok(condition(instance, "NumericEquals", "ec2:MetadataHttpPutResponseHopLimit") == "1",
       "instances: IMDS hop limit 1 (ec2:MetadataHttpPutResponseHopLimit)")
    ok(condition(instance, "ArnEquals", "ec2:InstanceProfile") == "${WorkerInstanceProfile.Arn}",
       "instances: only with the worker instance profile (ec2:InstanceProfile)")
    ok(condition(instance, "StringEquals", "aws:RequestTag/k3s-autoscaler/managed-by") == "k3s-autoscaler",
       "instances: tagged managed-by at launch")
    images = [r for r in by_resource if ":image/" in r]
    ok(images == ["arn:${AWS::Partition}:ec2:${AWS::Region}::image/${ImageId}"],
       "images: only the template's AMI, by ARN (no image/*)")
    image = by_resource.get(images[0], {}) if images else {}
    ok(condition(image, "Bool", "ec2:IsLaunchTemplateResource") == "true",
       "images: only as the launch template's value (ec2:IsLaunchTemplateResource)")
    volume = by_resource.get("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:volume/*", {})
    ok(condition(volume, "Bool", "ec2:IsLaunchTemplateResource") == "true"
       and condition(volume, "Bool", "ec2:Encrypted") == "true",
       "volumes: the template's, encrypted")
    fleet = [s for s in statements(autoscaler) if "ec2:CreateFleet" in as_list(s["Action"])]
    fleet_resources = {r for s in fleet for r in as_list(s["Resource"])}
    pinned = {r for s in run for r in as_list(s["Resource"])}
    ok(fleet and fleet_resources - pinned == {"arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:fleet/*"},
       "CreateFleet: only fleets plus the resources the pinned RunInstances statements allow")
    pass_role = [s for s in statements(autoscaler) if "iam:PassRole" in as_list(s["Action"])]
    ok(len(pass_role) == 1 and pass_role[0]["Resource"] == "${WorkerRole.Arn}"
       and condition(pass_role[0], "StringEquals", "iam:PassedToService") == "ec2.amazonaws.com",
       "iam:PassRole: the worker role only, to EC2 only")
    outputs = template["Outputs"]
    ok("$Latest" not in json.dumps(outputs["WorkerLaunchTemplateId"])
       and "never $Latest" in outputs["WorkerLaunchTemplateLatestVersion"]["Description"],
       "stack outputs point at a pinned version number")
    name, stack_config = config_parameter(res, params)
    pool = params["PoolName"]["Default"]
    ok(stack_config["pools"][pool]["launch_template_version"] == "<WorkerLaunchTemplate.LatestVersionNumber>",
       "the config parameter pins launch_template_version to the template's version number")
    shipped = tomllib.loads((root / "deploy" / "config.toml").read_text())
    versions = [p.get("launch_template_version") for p in shipped.get("pools", {}).values()]
    ok(all(v is None or v.isdigit() for v in versions),
       f"deploy/config.toml leaves launch_template_version to the stack or pins a number ({versions})")

    sqs = [s for s in statements(autoscaler) if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    ok(len(sqs) == 1 and sorted(as_list(sqs[0]["Action"]))
       == ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
       and sqs[0]["Resource"] == "${Ec2NoticeQueue.Arn}",
       "sqs: receive, delete and read attributes of the notice queue only (no send, no other queue)")

    print("SSM: the config layer and the webhook token, nothing else:")
    parameter_arn = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/k3s-autoscaler/${ClusterId}/"
    ssm = [s for s in statements(autoscaler) if any(a.startswith("ssm:") for a in as_list(s["Action"]))]
    ok(len(ssm) == 1 and as_list(ssm[0]["Action"]) == ["ssm:GetParameter"]
       and ssm[0]["Resource"] == [parameter_arn + "config", parameter_arn + "webhook-token"],
       "ssm: GetParameter on the cluster's config and webhook-token parameters only (not the join token)")
    kms = [s for s in statements(autoscaler) if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    ok(len(kms) == 1 and as_list(kms[0]["Action"]) == ["kms:Decrypt"]
       and kms[0]["Resource"] == "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"
       and condition(kms[0], "StringEquals", "kms:ViaService") == "ssm.${AWS::Region}.amazonaws.com"
       and condition(kms[0], "StringEquals", "kms:EncryptionContext:PARAMETER_ARN") == parameter_arn + "webhook-token"
       and condition(kms[0], "ForAnyValue:StringEquals", "kms:ResourceAliases") == "alias/aws/ssm",
       "kms: Decrypt only via SSM, only the webhook-token parameter, only the aws/ssm key")
    worker = policy_file("WorkerPolicy")
    [worker_kms] = [s for s in statements(worker) if "kms:Decrypt" in as_list(s["Action"])]
    ok(set(kms[0]["Condition"]) == set(worker_kms["Condition"]),
       "kms: the same condition operators as the workers' join-token Decrypt")
    props = res["ServiceConfigParameter"]["Properties"]
    ok(props["Type"] == "String" and props["Tier"] == "Standard"
       and props["Name"] == {"Fn::Sub": "/k3s-autoscaler/${ClusterId}/config"},
       "the stack writes /k3s-autoscaler/<ClusterId>/config, a Standard String")
    want = {
        "cluster_id": "<ClusterId>", "aws.region": "<AWS::Region>", "aws.table": "<StateTable>",
        "interruption.queue_url": "<Ec2NoticeQueue>", "cloudwatch.log_group": "<ScalingEventsLogGroup>",
        f"pools.{pool}.launch_template": "<WorkerLaunchTemplate>",
        f"pools.{pool}.launch_template_version": "<WorkerLaunchTemplate.LatestVersionNumber>",
        f"pools.{pool}.min": int(params["PoolMinSize"]["Default"]),
        f"pools.{pool}.max": int(params["PoolMaxSize"]["Default"]),
        f"pools.{pool}.subnets.<Subnet1Zone>": "<PublicSubnet1>",
        f"pools.{pool}.subnets.<Subnet2Zone>": "<PublicSubnet2>",
    }
    got = flat(stack_config)
    ok(got == want, f"the config parameter holds exactly the stack-known settings ({sorted(set(got) ^ set(want))})")
    zones = res["ServiceConfigParameter"]["Properties"]["Value"]["Fn::Sub"][1]
    ok(zones == {"Subnet1Zone": template["Outputs"]["Subnet1AvailabilityZone"]["Value"],
                 "Subnet2Zone": template["Outputs"]["Subnet2AvailabilityZone"]["Value"]},
       "its subnet zones are the subnets' zones (the same expressions as the zone outputs)")
    file_keys = set(flat(shipped))
    twice = sorted(k for k in file_keys if k in want or k.startswith(f"pools.{pool}.subnets"))
    ok(not twice, f"deploy/config.toml sets none of the stack's keys, so none is typed twice ({twice})")
    ok(set(shipped.get("pools", {})) <= {pool}, f"deploy/config.toml's pools are the stack's pool {pool!r}")
    token = shipped.get("auth", {}).get("token_ssm_parameter")
    cluster = params["ClusterId"]["Default"]
    ok(token == f"/k3s-autoscaler/{cluster}/webhook-token" and "bearer_token_file" not in shipped.get("auth", {}),
       f"deploy/config.toml reads Alertmanager's tokens from the granted SecureString ({token})")
    deployment = yaml.safe_load((root / "deploy" / "base" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    layers = next((e["value"] for e in container.get("env", []) if e["name"] == "K3S_AUTOSCALER_CONFIG"), "")
    layers = layers.split(",")
    ok(name == f"/k3s-autoscaler/{cluster}/config" and layers[:1] == [f"ssm:{name}"],
       f"the Deployment's first config layer is the stack's parameter ({layers})")

    print("only what the code calls:")
    src = "\n".join(p.read_text() for p in (root / "src").rglob("*.rs"))
    for action in sorted(actions(autoscaler)):
        service, name = action.split(":")
        if action in ("iam:PassRole", "ec2:CreateTags"):
            continue  # implied by a launch with an instance profile and TagSpecifications
        if action == "kms:Decrypt":
            continue  # implied by GetParameter with WithDecryption of a SecureString
        # An instant fleet launches with the caller's RunInstances rights: the RunInstances
        # statements (which pin template, types, profile, IMDS) are what CreateFleet needs.
        implied = {"ec2:RunInstances": "CreateFleet"}
        call = "." + re.sub(r"(?<!^)(?=[A-Z])", "_", implied.get(action, name)).lower() + "()"
        ok(call in src, f"{action} is called by the code ({call})")

    print("nodes and network:")
    sha = params["K3sInstallScriptSha256"]
    ok("Default" not in sha and not re.fullmatch(sha["AllowedPattern"], ""),
       "installer checksum is required (no default, empty refused)")
    cidr = params["WebhookIngressCidr"]["AllowedPattern"]
    ok(not re.fullmatch(cidr, "0.0.0.0/0"), "WebhookIngressCidr refuses 0.0.0.0/0")
    advice = [p for d in ("infra", "docs", "deploy") for p in (root / d).rglob("*")
              if p.is_file() and p.suffix in (".md", ".yaml", ".toml")
              and re.search(r"WebhookIngressCidr=0\.0\.0\.0/0|0\.0\.0\.0/0 on 443", p.read_text())]
    ok(not advice, f"no doc advises opening the server to the internet ({[str(p) for p in advice]})")

    print(f"test_policies: {checks - len(failures)} of {checks} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
