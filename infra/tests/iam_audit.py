#!/usr/bin/env python3
"""Audit infra/policies/*.json with parliament (community auditors included).

The files hold CloudFormation ${...} placeholders; they are filled with example values
(below) before the audit. A finding passes only if it is justified in JUSTIFIED, and a
justification that no longer matches any finding fails too (so the list stays honest).

Usage: iam_audit.py [INFRA_DIR]
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from parliament import analyze_policy_string

EXAMPLE = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "ClusterId": "prod",
    "WorkerLaunchTemplate": "lt-0123456789abcdef0",
    "PublicSubnet1": "subnet-0123456789abcdef0",
    "PublicSubnet2": "subnet-0fedcba9876543210",
    "NodeSecurityGroup": "sg-0123456789abcdef0",
    "WorkerRole.Arn": "arn:aws:iam::123456789012:role/k3s-autoscaler-prod-WorkerRole-ABC",
    "WorkerInstanceProfile.Arn": (
        "arn:aws:iam::123456789012:instance-profile/k3s-autoscaler-prod-WorkerInstanceProfile-ABC"
    ),
    "ImageId": "ami-0123456789abcdef0",
    "OidcBucket.Arn": "arn:aws:s3:::k3s-autoscaler-prod-oidcbucket-abc",
    "StateTable": "k3s-autoscaler-prod",
    "ScalingEventsLogGroup": "/k3s-autoscaler/prod/scaling-events",
    "Ec2NoticeQueue.Arn": "arn:aws:sqs:eu-west-1:123456789012:k3s-autoscaler-prod-notices",
}

# (file, parliament issue, substring of the finding's detail) -> why it is accepted.
JUSTIFIED = [
    (
        "autoscaler.json",
        "PERMISSIONS_MANAGEMENT_ACTIONS",
        "iam:passrole",
        "iam:PassRole is needed to launch workers with their instance profile; it is "
        "limited to the worker role's ARN and to iam:PassedToService=ec2.amazonaws.com.",
    ),
    (
        "autoscaler.json",
        "PRIVILEGE_ESCALATION",
        "CreateEC2WithExistingIP",
        "Launching instances with a passed role is the autoscaler's job. The only role it "
        "can pass is the worker role (ssm:GetParameter on the two join parameters, "
        "kms:Decrypt via SSM for one parameter), so no privilege is gained; RunInstances "
        "is further bound to the cluster launch template, its AMI, the worker instance "
        "profile, IMDSv2 with hop limit 1, the allowed types and the cluster subnets.",
    ),
    (
        "autoscaler.json",
        "RESOURCE_MISMATCH",
        "arn:*:ec2:*::image/*",
        "RunInstances is split on purpose, one statement per resource family, so each "
        "carries only the conditions its resources support (instance: type, profile, "
        "metadata options, tags; volume: from the template, encrypted; image: the "
        "template's AMI; group and key pair: the template's; subnets: the stack's). "
        "parliament checks each statement alone and wants every resource type in each.",
    ),
    (
        "autoscaler.json",
        "RESOURCE_MISMATCH",
        "arn:*:ec2:*:*:instance/*",
        "Same split as above (only the instance statement has instance ARNs).",
    ),
    (
        "autoscaler.json",
        "UNKNOWN_CONDITION_FOR_ACTION",
        "kms:ResourceAliases",
        "parliament's IAM database lacks kms:ResourceAliases for kms:Decrypt; AWS KMS "
        "supports it on operations that use a key (it pins the default alias/aws/ssm key "
        "for the webhook-token SecureString).",
    ),
    (
        "worker.json",
        "UNKNOWN_CONDITION_FOR_ACTION",
        "kms:ResourceAliases",
        "parliament's IAM database lacks kms:ResourceAliases for kms:Decrypt; AWS KMS "
        "supports it on operations that use a key (it pins the default alias/aws/ssm key).",
    ),
    (
        "server.json",
        "UNKNOWN_CONDITION_FOR_ACTION",
        "kms:ResourceAliases",
        "parliament's IAM database lacks kms:ResourceAliases for kms:Encrypt; AWS KMS "
        "supports it on operations that use a key (it pins the default alias/aws/ssm key).",
    ),
]


# CommaDelimitedList parameters: the file holds ["${Name}"], the stack the whole list.
EXAMPLE_LISTS = {"WorkerInstanceTypes": ["t3.small", "t3a.small"]}


def fill(text: str, name: str) -> str:
    for key, values in EXAMPLE_LISTS.items():
        text = text.replace('"${%s}"' % key, ", ".join(json.dumps(v) for v in values))

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in EXAMPLE:
            raise KeyError(f"{name}: no example value for ${{{key}}}")
        return EXAMPLE[key]

    return re.sub(r"\$\{([^}]+)\}", sub, text)


def main() -> int:
    infra = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    files = sorted((infra / "policies").glob("*.json"))
    if not files:
        print("no policies found", file=sys.stderr)
        return 1
    used = [0] * len(JUSTIFIED)
    unjustified = 0
    for path in files:
        policy = analyze_policy_string(
            fill(path.read_text(), path.name), include_community_auditors=True
        )
        for finding in policy.findings:
            detail = json.dumps(finding.detail) if finding.detail is not None else ""
            text = f"{finding.issue} {detail} {json.dumps(finding.location, default=str)}"
            hits = [
                i
                for i, (fname, issue, needle) in enumerate(j[:3] for j in JUSTIFIED)
                if fname == path.name and issue == finding.issue and needle in text
            ]
            if hits:
                used[hits[0]] += 1
                print(f"justified  {path.name}: {finding.issue}: {JUSTIFIED[hits[0]][3]}")
            else:
                unjustified += 1
                print(f"FINDING    {path.name}: {text}", file=sys.stderr)
        if not policy.findings:
            print(f"clean      {path.name}")
    stale = [JUSTIFIED[i][:3] for i, n in enumerate(used) if n == 0]
    for entry in stale:
        print(f"STALE justification (matches no finding): {entry}", file=sys.stderr)
    if unjustified or stale:
        return 1
    print(f"parliament: {len(files)} policies, every finding justified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
