#!/usr/bin/env python3
"""Deploy infra/k3s-autoscaler.yaml into a running moto server and check the result.

    deploy_moto.py --endpoint-url http://127.0.0.1:PORT --out stack.json
                   [--region eu-west-1] [--stack-name k3s-autoscaler-test]
                   [--cluster-id ci] [--no-launch-smoke]

Creates the stack through CloudFormation (boto3), waits for CREATE_COMPLETE, asserts the
outputs and that the resources really exist in moto (table key schema, TTL, PITR, launch
template with IMDSv2 and the worker user-data, subnets in two AZs, security-group rules,
IAM roles and policies equal to infra/policies/*.json, log group, server instance, the
service's config layer in SSM naming the stack's table, queue, template and subnets), then
writes the outputs to --out as JSON for later tests (e.g. the Rust integration tests that
run the autoscaler against the same moto server).

What moto cannot do, and how this test deals with it (reported as MOTO-GAP lines):
  * AWS::SQS::QueuePolicy has no moto CloudFormation model (moto skips it); the policy is
    checked statically from the template. The queue, its dead-letter queue and the three
    EventBridge rules are deployed, and a PutEvents must reach the queue.
  * Fn::GetAZs "" resolves to us-east-1 AZs in moto whatever the stack region, so the test
    passes AvailabilityZone1/2 explicitly (the defaults use Fn::GetAZs in AWS).
  * moto's AWS::DynamoDB::Table ignores TimeToLiveSpecification and
    PointInTimeRecoverySpecification; when moto left them off, this test applies exactly
    what the template declares through the DynamoDB API, so later tests see the table
    CloudFormation would have created.
  * moto's AWS::EC2::Subnet ignores MapPublicIpOnLaunch; applied through the EC2 API
    the same way when moto left it off.
  * moto keeps AWS::EC2::SubnetRouteTableAssociation out of DescribeRouteTables; the
    association is made through the EC2 API when missing.
  * moto's AWS::EC2::Instance ignores SecurityGroupIds and MetadataOptions; those are
    checked statically from the template for the server.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import tomllib
from pathlib import Path

import boto3
from botocore.config import Config
from cfnlint.decode import decode

INFRA = Path(__file__).resolve().parent.parent
TEMPLATE = INFRA / "k3s-autoscaler.yaml"
# The public parameter of the current Amazon Linux 2023 x86_64 image (ImageId's default).
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

NOTICE_RULES = ("SpotInterruptionRule", "RebalanceRecommendationRule", "InstanceStateChangeRule")

checks = 0
gaps: list[str] = []


def ok(condition: bool, what: str) -> None:
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1
    print(f"  ok  {what}")


def gap(text: str) -> None:
    gaps.append(text)
    print(f"  MOTO-GAP  {text}")


def render(script: str, values: dict[str, str]) -> str:
    """What Fn::Sub makes of a user-data file."""

    def sub(match: re.Match) -> str:
        return values[match.group(1)]

    return re.sub(r"\$\{([^}!]+)\}", sub, script)


def static_checks(template: dict) -> None:
    print("template (static):")
    res = template["Resources"]
    queue = res["Ec2NoticeQueue"]["Properties"]
    dlq = res["Ec2NoticeDeadLetterQueue"]["Properties"]
    ok(queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True,
       "notice queue and its dead-letter queue are encrypted (SSE-SQS)")
    ok(queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["Ec2NoticeDeadLetterQueue", "Arn"]}
       and queue["RedrivePolicy"]["maxReceiveCount"] >= 3,
       "a notice the service cannot handle ends in the dead-letter queue after a few receives")
    detail_types = sorted(res[r]["Properties"]["EventPattern"]["detail-type"][0] for r in NOTICE_RULES)
    ok(detail_types == ["EC2 Instance Rebalance Recommendation", "EC2 Instance State-change Notification",
                        "EC2 Spot Instance Interruption Warning"],
       "rules match the spot warning, the rebalance recommendation and state changes")
    for rule in NOTICE_RULES:
        targets = res[rule]["Properties"]["Targets"]
        ok(len(targets) == 1 and targets[0]["Arn"] == {"Fn::GetAtt": ["Ec2NoticeQueue", "Arn"]},
           f"{rule} targets the notice queue only")
    [allow] = [s for s in res["Ec2NoticeQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Allow"]
    ok(allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
       and sorted(a["Fn::GetAtt"][0] for a in allow["Condition"]["ArnEquals"]["aws:SourceArn"])
       == sorted(NOTICE_RULES),
       "queue policy: only EventBridge, only from this stack's rules, only SendMessage")
    server = res["ServerInstance"]["Properties"]
    ok(server["MetadataOptions"]["HttpTokens"] == "required"
       and server["MetadataOptions"]["HttpPutResponseHopLimit"] == 1,
       "server requires IMDSv2, hop limit 1 (no pod reaches the server role)")
    ok(len(server["SecurityGroupIds"]) == 2, "server is in the node and server security groups")


def lifecycle_checks(template: dict) -> None:
    """The table and the server survive stack deletion and replacement; the server's image
    is pinned unless ServerImageId is "latest"."""
    res = template["Resources"]
    for name in ("StateTable", "ServerInstance"):
        ok(res[name].get("DeletionPolicy") == "Retain" and res[name].get("UpdateReplacePolicy") == "Retain",
           f"{name}: DeletionPolicy and UpdateReplacePolicy Retain")
    param = template["Parameters"]["ServerImageId"]
    ok("Default" not in param, "ServerImageId has no default: the operator pins an AMI or says latest")
    ok(res["ServerInstance"]["Properties"]["ImageId"]
       == {"Fn::If": ["RotateServerImage", {"Ref": "ImageId"}, {"Ref": "ServerImageId"}]}
       and template["Conditions"]["RotateServerImage"] == {"Fn::Equals": [{"Ref": "ServerImageId"}, "latest"]},
       "server image: ServerImageId, the SSM-resolved ImageId only when ServerImageId=latest")
    ok(res["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["ImageId"] == {"Ref": "ImageId"},
       "workers follow ImageId (a new template version, never a replaced server)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--out", required=True, help="JSON file for the stack outputs")
    ap.add_argument("--region", default="eu-west-1")
    ap.add_argument("--stack-name", default="k3s-autoscaler-test")
    ap.add_argument("--cluster-id", default="ci")
    ap.add_argument("--pool", default="workers")
    ap.add_argument("--no-launch-smoke", action="store_true",
                    help="skip the RunInstances/TerminateInstances smoke launch")
    args = ap.parse_args()

    template, problems = decode(str(TEMPLATE))
    if template is None:
        print(f"cannot parse {TEMPLATE}: {problems}", file=sys.stderr)
        return 1
    static_checks(template)
    lifecycle_checks(template)

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name=args.region,
    )
    cfg = Config(retries={"max_attempts": 2})

    def client(service: str):
        return session.client(service, endpoint_url=args.endpoint_url, config=cfg)

    cfn, ec2, ddb, iam, logs = (client(s) for s in ("cloudformation", "ec2", "dynamodb", "iam", "logs"))
    account = client("sts").get_caller_identity()["Account"]

    az1, az2 = f"{args.region}a", f"{args.region}b"
    params = {
        "ClusterId": args.cluster_id,
        "PoolName": args.pool,
        "AvailabilityZone1": az1,
        "AvailabilityZone2": az2,
        # Nodes never boot in moto; any well-formed checksum will do.
        "K3sInstallScriptSha256": "0" * 64,
    }
    gap("AWS::SQS::QueuePolicy has no moto CloudFormation model (skipped there; checked statically)")
    gap('Fn::GetAZs "" ignores the stack region: AvailabilityZone1/2 passed explicitly')

    # The server's AMI, pinned the way docs/quickstart.md does it: the current AL2023 image.
    server_ami = client("ssm").get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
    params["ServerImageId"] = server_ami

    body = TEMPLATE.read_text()
    print(f"cloudformation at {args.endpoint_url} ({args.region}):")
    cfn.validate_template(TemplateBody=body)
    ok(True, "ValidateTemplate accepted the template")
    cfn.create_stack(
        StackName=args.stack_name, TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.monotonic() + 180
    while True:
        stack = cfn.describe_stacks(StackName=args.stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(1)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=args.stack_name)["StackEvents"]
        for e in events[:20]:
            print(f"    {e['LogicalResourceId']}: {e['ResourceStatus']} {e.get('ResourceStatusReason', '')}")
    ok(stack["StackStatus"] == "CREATE_COMPLETE", f"stack {args.stack_name} CREATE_COMPLETE")

    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    expected = set(template["Outputs"])
    # moto leaves Fn::GetAtt ServerInstance.PublicIp unresolved (the output is dropped).
    gap("Fn::GetAtt ServerInstance.PublicIp unresolved: ServerPublicIp checked statically")
    ok(template["Outputs"]["ServerPublicIp"]["Value"] == {"Fn::GetAtt": ["ServerInstance", "PublicIp"]},
       "ServerPublicIp output is the server's public address")
    expected -= {"ServerPublicIp"}
    ok(expected <= set(outputs), f"all {len(expected)} outputs present (missing: {sorted(expected - set(outputs))})")
    ok(all(str(outputs[k]).strip() for k in expected), "no output is empty")
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName=args.stack_name)["StackResourceSummaries"]
    }

    print("outputs match the parameters:")
    ok(outputs["Region"] == args.region, "Region")
    ok(outputs["ClusterId"] == args.cluster_id and outputs["PoolName"] == args.pool, "ClusterId, PoolName")
    ok(outputs["JoinTokenParameterName"] == f"/k3s-autoscaler/{args.cluster_id}/join-token"
       and outputs["ServerUrlParameterName"] == f"/k3s-autoscaler/{args.cluster_id}/server-url",
       "SSM parameter names follow /k3s-autoscaler/<cluster>/{join-token,server-url}")
    ok(outputs["Subnet1AvailabilityZone"] == az1 and outputs["Subnet2AvailabilityZone"] == az2,
       "subnet AZ outputs")

    print("dynamodb:")
    table = ddb.describe_table(TableName=outputs["StateTableName"])["Table"]
    keys = {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    ok(keys == {"cluster_id": "HASH", "sk": "RANGE"}, "key schema cluster_id (HASH) + sk (RANGE)")
    ok(types == {"cluster_id": "S", "sk": "S"}, "both keys are strings")
    ok(table.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST", "on-demand billing")
    ok(table["TableArn"] == outputs["StateTableArn"], "StateTableArn output")
    tprops = template["Resources"]["StateTable"]["Properties"]
    ttl_attr = tprops["TimeToLiveSpecification"]["AttributeName"]
    ok(ttl_attr == "expires_at" and tprops["TimeToLiveSpecification"]["Enabled"] is True,
       "template enables TTL on expires_at")
    ok(tprops["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True,
       "template enables point-in-time recovery")
    ttl = ddb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") != "ENABLED":
        gap("DynamoDB TimeToLiveSpecification ignored by moto CloudFormation: applied via UpdateTimeToLive")
        ddb.update_time_to_live(TableName=table["TableName"],
                                TimeToLiveSpecification={"AttributeName": ttl_attr, "Enabled": True})
        ttl = ddb.describe_time_to_live(TableName=table["TableName"])["TimeToLiveDescription"]
    ok(ttl.get("TimeToLiveStatus") == "ENABLED" and ttl.get("AttributeName") == ttl_attr,
       "TTL enabled on expires_at")
    pitr = ddb.describe_continuous_backups(TableName=table["TableName"])["ContinuousBackupsDescription"]
    if pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] != "ENABLED":
        gap("DynamoDB PointInTimeRecoverySpecification ignored by moto CloudFormation: "
            "applied via UpdateContinuousBackups")
        ddb.update_continuous_backups(
            TableName=table["TableName"],
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
        pitr = ddb.describe_continuous_backups(TableName=table["TableName"])["ContinuousBackupsDescription"]
    ok(pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED", "PITR enabled")

    print("network:")
    subnets = ec2.describe_subnets(SubnetIds=[outputs["Subnet1Id"], outputs["Subnet2Id"]])["Subnets"]
    ok(len({s["AvailabilityZone"] for s in subnets}) == 2, "two subnets in two AZs")
    ok({s["AvailabilityZone"] for s in subnets} == {az1, az2}, "subnets are in the output AZs")
    ok(all(s["VpcId"] == outputs["VpcId"] for s in subnets), "subnets are in the stack VPC")
    ok(all(template["Resources"][r]["Properties"]["MapPublicIpOnLaunch"] is True
           for r in ("PublicSubnet1", "PublicSubnet2")), "template: subnets map public IPs on launch")
    if not all(s["MapPublicIpOnLaunch"] for s in subnets):
        gap("EC2 Subnet MapPublicIpOnLaunch ignored by moto CloudFormation: applied via ModifySubnetAttribute")
        for s in subnets:
            ec2.modify_subnet_attribute(SubnetId=s["SubnetId"], MapPublicIpOnLaunch={"Value": True})
        subnets = ec2.describe_subnets(SubnetIds=[outputs["Subnet1Id"], outputs["Subnet2Id"]])["Subnets"]
    ok(all(s["MapPublicIpOnLaunch"] for s in subnets), "public subnets (MapPublicIpOnLaunch)")
    igws = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [outputs["VpcId"]]}])["InternetGateways"]
    ok(len(igws) == 1, "internet gateway attached")
    rtb = ec2.describe_route_tables(RouteTableIds=[physical["PublicRouteTable"]])["RouteTables"][0]
    ok(any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId") == igws[0]["InternetGatewayId"]
           for r in rtb["Routes"]), "public route table: default route to the internet gateway")
    associated = {a.get("SubnetId") for a in rtb.get("Associations", [])}
    if not {outputs["Subnet1Id"], outputs["Subnet2Id"]} <= associated:
        gap("AWS::EC2::SubnetRouteTableAssociation not visible in moto's DescribeRouteTables: "
            "applied via AssociateRouteTable")
        for subnet_id in {outputs["Subnet1Id"], outputs["Subnet2Id"]} - associated:
            ec2.associate_route_table(RouteTableId=rtb["RouteTableId"], SubnetId=subnet_id)
        rtb = ec2.describe_route_tables(RouteTableIds=[physical["PublicRouteTable"]])["RouteTables"][0]
        associated = {a.get("SubnetId") for a in rtb.get("Associations", [])}
    ok({outputs["Subnet1Id"], outputs["Subnet2Id"]} <= associated, "both subnets use the public route table")

    node_sg, server_sg = outputs["NodeSecurityGroupId"], physical["ServerSecurityGroup"]
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[node_sg, server_sg])["SecurityGroups"]}

    def rules(group_id: str) -> set[tuple]:
        found = set()
        for p in groups[group_id]["IpPermissions"]:
            for pair in p.get("UserIdGroupPairs", []):
                found.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), pair["GroupId"]))
            for r in p.get("IpRanges", []):
                found.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        return found

    node_rules, server_rules = rules(node_sg), rules(server_sg)
    ok({("udp", 8472, 8472, node_sg), ("tcp", 10250, 10250, node_sg), ("tcp", 9100, 9100, node_sg)} <= node_rules,
       "nodes: flannel 8472/udp, kubelet 10250/tcp, node-exporter 9100/tcp between nodes")
    ok(("tcp", 6443, 6443, node_sg) in server_rules, "server: 6443/tcp from the nodes")
    ok(not any("/" in str(r[3]) for r in node_rules | server_rules),
       "nothing open to any CIDR with default parameters")

    print("iam:")
    worker_role = iam.get_role(RoleName=physical["WorkerRole"])["Role"]
    server_role = iam.get_role(RoleName=physical["ServerRole"])["Role"]
    ok(worker_role["Arn"] == outputs["WorkerRoleArn"] and server_role["Arn"] == outputs["ServerRoleArn"],
       "worker and server roles exist")
    profile = iam.get_instance_profile(InstanceProfileName=physical["WorkerInstanceProfile"])["InstanceProfile"]
    ok([r["RoleName"] for r in profile["Roles"]] == [worker_role["RoleName"]]
       and profile["Arn"] == outputs["WorkerInstanceProfileArn"], "worker instance profile holds the worker role")
    lt_data = ec2.describe_launch_template_versions(
        LaunchTemplateId=outputs["WorkerLaunchTemplateId"], Versions=["1"])["LaunchTemplateVersions"][0]
    bucket = outputs["OidcBucketName"]
    values = {
        "WorkerInstanceProfile.Arn": outputs["WorkerInstanceProfileArn"],
        "ImageId": lt_data["LaunchTemplateData"]["ImageId"],
        "OidcBucket.Arn": f"arn:aws:s3:::{bucket}",
        "OidcBucket.RegionalDomainName": outputs["OidcIssuerUrl"].removeprefix("https://"),
        "AutoscalerNamespace": "k3s-autoscaler", "AutoscalerServiceAccount": "k3s-autoscaler",
        "AWS::Partition": "aws", "AWS::Region": args.region, "AWS::AccountId": account,
        "ClusterId": args.cluster_id, "WorkerLaunchTemplate": outputs["WorkerLaunchTemplateId"],
        "PublicSubnet1": outputs["Subnet1Id"], "PublicSubnet2": outputs["Subnet2Id"],
        "NodeSecurityGroup": node_sg, "WorkerRole.Arn": worker_role["Arn"],
        "StateTable": outputs["StateTableName"], "ScalingEventsLogGroup": outputs["ScalingEventsLogGroupName"],
        "Ec2NoticeQueue.Arn": outputs["Ec2NoticeQueueArn"],
    }
    autoscaler_role = iam.get_role(RoleName=physical["AutoscalerRole"])["Role"]
    ok(autoscaler_role["Arn"] == outputs["AutoscalerRoleArn"], "autoscaler role exists")
    trust = autoscaler_role["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    rel = template["Resources"]["AutoscalerRole"]["Metadata"]["k3s-autoscaler"]["trust-file"]
    ok(trust == json.loads(render((INFRA / rel).read_text(), values)),
       f"AutoscalerRole trust deployed == {rel}: web identity of the autoscaler's ServiceAccount only")
    ok(not [p for p in iam.list_instance_profiles_for_role(RoleName=autoscaler_role["RoleName"])["InstanceProfiles"]],
       "no instance profile carries the autoscaler role")
    for logical in ("OidcProvider", "OidcBucketPolicy"):
        if logical not in physical:
            gap(f"{template['Resources'][logical]['Type']} has no moto CloudFormation model: checked statically "
                "(tests/test_policies.py)")
    instance_types = ",".join(f'"{t}"' for t in template["Parameters"]["WorkerInstanceTypes"]["Default"].split(","))
    attached = {
        "WorkerPolicy": worker_role["RoleName"], "ServerPolicy": server_role["RoleName"],
        "AutoscalerPolicy": autoscaler_role["RoleName"],
    }
    for logical, role_name in attached.items():
        arn = physical[logical]
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"]["Document"]
        if isinstance(doc, str):
            doc = json.loads(doc)
        rel = template["Resources"][logical]["Metadata"]["k3s-autoscaler"]["policy-file"]
        for stmt in doc["Statement"]:
            listed = stmt.get("Condition", {}).get("StringEquals", {})
            if isinstance(listed.get("ec2:InstanceType"), str):
                gap("moto renders Ref of a CommaDelimitedList parameter as one comma-joined string "
                    "(AWS: a list); split before comparing")
                listed["ec2:InstanceType"] = listed["ec2:InstanceType"].split(",")
        text = (INFRA / rel).read_text().replace('"${WorkerInstanceTypes}"', instance_types)
        expected_doc = json.loads(render(text, values))
        ok(doc == expected_doc, f"{logical} deployed == {rel} (placeholders resolved)")
        on_role = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]]
        ok(arn in on_role, f"{logical} attached to {role_name}")
    ok(outputs["AutoscalerPolicyArn"] == physical["AutoscalerPolicy"], "AutoscalerPolicyArn output")

    print("launch template:")
    lt_id = outputs["WorkerLaunchTemplateId"]
    lt = ec2.describe_launch_templates(LaunchTemplateIds=[lt_id])["LaunchTemplates"][0]
    ok(lt["LaunchTemplateName"] == outputs["WorkerLaunchTemplateName"], "name output matches")
    version = ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Latest"])[
        "LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    meta = data.get("MetadataOptions", {})
    ok(meta.get("HttpTokens") == "required", "IMDSv2 required (HttpTokens=required)")
    ok(int(meta.get("HttpPutResponseHopLimit", 0)) == 1, "IMDS hop limit 1 (pods cannot reach it)")
    ok(meta.get("HttpEndpoint") == "enabled", "IMDS endpoint enabled")
    ok(data.get("InstanceType") == "t3.small", "worker instance type t3.small")
    ok(data.get("IamInstanceProfile", {}).get("Arn") == outputs["WorkerInstanceProfileArn"],
       "worker instance profile in the template")
    ok(data.get("SecurityGroupIds") == [node_sg] and "NetworkInterfaces" not in data,
       "node security group, no template ENIs (RunInstances passes SubnetId)")
    ok(str(data.get("ImageId", "")).startswith("ami-"), "AMI resolved from the SSM public parameter")
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    ok(ebs.get("Encrypted") in (True, "true"), "root volume encrypted")
    raw = data.get("UserData", "")
    user_data = base64.b64decode(raw).decode()
    sub_values = {"ClusterId": args.cluster_id, "PoolName": args.pool,
                  "K3sVersion": template["Parameters"]["K3sVersion"]["Default"],
                  "K3sInstallScriptSha256": params["K3sInstallScriptSha256"],
                  "OidcBucket": outputs["OidcBucketName"],
                  "OidcBucket.RegionalDomainName": outputs["OidcIssuerUrl"].removeprefix("https://")}
    ok(user_data == render((INFRA / "userdata/worker.sh").read_text(), sub_values),
       "user-data == userdata/worker.sh after Fn::Sub")

    print("server, logs:")
    reservations = ec2.describe_instances(InstanceIds=[outputs["ServerInstanceId"]])["Reservations"]
    server = reservations[0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in server.get("Tags", [])}
    ok(server["SubnetId"] == outputs["Subnet1Id"] and server["InstanceType"] == "t3.medium",
       "server t3.medium in subnet 1")
    ok(tags.get("k3s-autoscaler/cluster") == args.cluster_id and "k3s-autoscaler/managed-by" not in tags,
       "server tagged with the cluster but never managed-by (autoscaler cannot terminate it)")
    ok(server.get("PrivateIpAddress") == outputs["ServerPrivateIp"], "ServerPrivateIp output")
    ok(server.get("ImageId") == params["ServerImageId"], "server runs the pinned ServerImageId")
    attr = ec2.describe_instance_attribute(InstanceId=server["InstanceId"], Attribute="userData")
    server_ud = base64.b64decode(attr.get("UserData", {}).get("Value", "")).decode()
    ok(server_ud == render((INFRA / "userdata/server.sh").read_text(), sub_values),
       "server user-data == userdata/server.sh after Fn::Sub")
    groups_ = logs.describe_log_groups(logGroupNamePrefix=outputs["ScalingEventsLogGroupName"])["logGroups"]
    ok(len(groups_) == 1 and groups_[0].get("retentionInDays") == 365, "log group with 365-day retention")

    if not args.no_launch_smoke:
        print("smoke launch as the autoscaler does it (pool 'deploy-smoke', terminated after):")
        op = "deploy-smoke-op"
        tag_list = [
            {"Key": "k3s-autoscaler/managed-by", "Value": "k3s-autoscaler"},
            {"Key": "k3s-autoscaler/cluster", "Value": args.cluster_id},
            {"Key": "k3s-autoscaler/pool", "Value": "deploy-smoke"},
            {"Key": "k3s-autoscaler/op-id", "Value": op},
            {"Key": "Name", "Value": f"{args.cluster_id}-deploy-smoke"},
        ]
        run = ec2.run_instances(
            LaunchTemplate={"LaunchTemplateId": lt_id, "Version": outputs["WorkerLaunchTemplateLatestVersion"]},
            SubnetId=outputs["Subnet2Id"], MinCount=1, MaxCount=1, ClientToken=op,
            InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list},
                               {"ResourceType": "volume", "Tags": tag_list}],
        )
        inst = run["Instances"][0]
        ok(inst["Placement"]["AvailabilityZone"] == az2 and inst["InstanceType"] == "t3.small",
           "RunInstances(LaunchTemplate + SubnetId + spot) lands in AZ 2 as t3.small")
        found = ec2.describe_instances(Filters=[
            {"Name": "tag:k3s-autoscaler/op-id", "Values": [op]},
            {"Name": "tag:k3s-autoscaler/cluster", "Values": [args.cluster_id]},
        ])["Reservations"]
        ok([i["InstanceId"] for r in found for i in r["Instances"]] == [inst["InstanceId"]],
           "DescribeInstances by tag finds it")
        ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
        state = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]["Instances"][0]["State"]
        ok(state["Name"] in ("shutting-down", "terminated"), "TerminateInstances")

    print("EC2 notices reach the queue:")
    sqs, events = client("sqs"), client("events")
    queue_url = outputs["Ec2NoticeQueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    ok(json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(f"k3s-autoscaler-{args.cluster_id}-notices-dlq"),
       "the deployed queue redrives to its dead-letter queue")
    detail = {"instance-id": "i-0123456789abcdef0", "instance-action": "terminate"}
    events.put_events(Entries=[{"Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
                                "Detail": json.dumps(detail)}])
    got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5).get("Messages", [])
    body = json.loads(got[0]["Body"]) if got else {}
    ok(body.get("detail-type") == "EC2 Spot Instance Interruption Warning" and body.get("detail") == detail,
       "PutEvents -> SpotInterruptionRule -> queue: the event itself is the message body")
    if got:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=got[0]["ReceiptHandle"])

    print("the service's config layer (SSM String, TOML):")
    ssm = client("ssm")
    name = f"/k3s-autoscaler/{args.cluster_id}/config"
    ok(outputs["ConfigParameterName"] == name, f"ConfigParameterName output is {name}")
    ok(outputs["WebhookTokenParameterName"] == f"/k3s-autoscaler/{args.cluster_id}/webhook-token",
       "WebhookTokenParameterName output is /k3s-autoscaler/<cluster>/webhook-token")
    param = ssm.get_parameter(Name=name)["Parameter"]
    [described] = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}])["Parameters"]
    ok(param["Type"] == "String" and described.get("Tier") == "Standard",
       "the stack wrote it as a Standard String (not a SecureString: it holds no secret)")
    layer = tomllib.loads(param["Value"])
    ok(layer.get("cluster_id") == args.cluster_id, "cluster_id = the stack's ClusterId")
    ok(layer.get("aws") == {"region": args.region, "table": outputs["StateTableName"]},
       f"[aws] region and table = the stack's ({outputs['StateTableName']})")
    ok(layer.get("interruption") == {"queue_url": queue_url}, f"[interruption] queue_url = the notice queue ({queue_url})")
    ok(layer.get("cloudwatch") == {"log_group": outputs["ScalingEventsLogGroupName"]},
       "[cloudwatch] log_group = the scaling-events log group")
    subnets = {az1: outputs["Subnet1Id"], az2: outputs["Subnet2Id"]}
    ok(set(layer.get("pools", {})) == {args.pool}
       and layer["pools"][args.pool] == {
           "launch_template": outputs["WorkerLaunchTemplateId"],
           "launch_template_version": outputs["WorkerLaunchTemplateLatestVersion"],
           "min": int(outputs["PoolMinSize"]), "max": int(outputs["PoolMaxSize"]),
           "subnets": subnets},
       f"[pools.{args.pool}]: the worker launch template, its version number, min, max, subnets {subnets}")
    ok(set(layer) == {"cluster_id", "aws", "interruption", "cloudwatch", "pools"},
       "nothing else: the operator's file holds the rest")

    result = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "account_id": account,
        "stack_name": args.stack_name,
        "parameters": params,
        "outputs": outputs,
        "subnets": {outputs["Subnet1AvailabilityZone"]: outputs["Subnet1Id"],
                    outputs["Subnet2AvailabilityZone"]: outputs["Subnet2Id"]},
        "config_parameter": name,
        "moto_gaps": gaps,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"deploy_moto: {checks} checks passed, {len(gaps)} moto gaps noted; outputs in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as exc:
        print(f"  FAIL  {exc}", file=sys.stderr)
        sys.exit(1)
