#!/usr/bin/env python3
"""Fail when infra/k3s-autoscaler.yaml and the files it embeds drift apart.

The template is the source CloudFormation deploys; these files are copies kept for
shellcheck, parliament and the docs. Resources name their file in Metadata:

    Metadata:
      k3s-autoscaler: {userdata-file: userdata/worker.sh}     # Fn::Base64 of Fn::Sub
      k3s-autoscaler: {policy-file: policies/autoscaler.json}  # PolicyDocument

* user-data: the Fn::Sub string must equal the file byte for byte;
* policies: the PolicyDocument, with every {"Fn::Sub": "..."} replaced by its string,
  must equal the JSON file (the same ${...} placeholders, no other intrinsics, except
  {"Ref": <CommaDelimitedList parameter>}, written ["${Name}"] in the file);
* trust policies (`trust-file`): the role's AssumeRolePolicyDocument is one Fn::Sub string
  (so condition keys may hold ${...}); its JSON must equal the file;
* every userdata/*.sh, policies/*.json and policies/trust/*.json is claimed by exactly one
  resource.

Usage: check_sync.py [INFRA_DIR]   (default: the directory above this file)
Needs cfn-lint (its YAML loader understands the short-form intrinsics).
"""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from cfnlint.decode import decode


def plain(node, where: str, lists: frozenset = frozenset()):
    """PolicyDocument -> JSON value, Fn::Sub strings unwrapped, a Ref to a list parameter
    as ["${Name}"]; other intrinsics refused."""
    if isinstance(node, dict):
        keys = list(node.keys())
        if keys == ["Ref"] and str(node["Ref"]) in lists:
            return ["${%s}" % node["Ref"]]
        if keys == ["Fn::Sub"]:
            value = node["Fn::Sub"]
            if not isinstance(value, str):
                raise ValueError(f"{where}: only the one-string form of Fn::Sub is allowed")
            return str(value)
        for key in keys:
            if key.startswith("Fn::") or key == "Ref":
                raise ValueError(f"{where}: use !Sub \"${{...}}\" instead of {key} in policies")
        return {str(k): plain(v, f"{where}.{k}", lists) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v, f"{where}[{i}]", lists) for i, v in enumerate(node)]
    if isinstance(node, str):
        return str(node)
    return node


def user_data_of(resource: dict) -> object:
    props = resource.get("Properties", {})
    if resource.get("Type") == "AWS::EC2::LaunchTemplate":
        props = props.get("LaunchTemplateData", {})
    return props.get("UserData")


def diff(expected: str, actual: str, a: str, b: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True), a, b
        )
    )


def check(infra: Path) -> list[str]:
    errors: list[str] = []
    template_path = infra / "k3s-autoscaler.yaml"
    template, matches = decode(str(template_path))
    if template is None:
        return [f"{template_path}: cannot parse: {[str(m) for m in matches]}"]

    lists = frozenset(
        n for n, p in template.get("Parameters", {}).items() if p.get("Type") == "CommaDelimitedList"
    )
    claimed: dict[str, str] = {}
    for name, resource in template.get("Resources", {}).items():
        meta = (resource.get("Metadata") or {}).get("k3s-autoscaler") or {}
        if "userdata-file" in meta:
            rel = str(meta["userdata-file"])
            claimed.setdefault(rel, name)
            user_data = user_data_of(resource)
            sub = user_data.get("Fn::Base64") if isinstance(user_data, dict) else None
            body = sub.get("Fn::Sub") if isinstance(sub, dict) else None
            if not isinstance(body, str):
                errors.append(f"{name}: UserData must be Fn::Base64 of a one-string Fn::Sub")
                continue
            path = infra / rel
            if not path.is_file():
                errors.append(f"{name}: {rel} does not exist")
                continue
            text = path.read_text()
            if text != str(body):
                errors.append(
                    f"{name}: user-data differs from {rel}:\n"
                    + diff(text, str(body), rel, f"{template_path.name}:{name}")
                )
        if "policy-file" in meta:
            rel = str(meta["policy-file"])
            claimed.setdefault(rel, name)
            path = infra / rel
            if not path.is_file():
                errors.append(f"{name}: {rel} does not exist")
                continue
            try:
                embedded = plain(resource["Properties"]["PolicyDocument"], name, lists)
            except (KeyError, ValueError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            on_disk = json.loads(path.read_text())
            if embedded != on_disk:
                errors.append(
                    f"{name}: PolicyDocument differs from {rel}:\n"
                    + diff(
                        json.dumps(on_disk, indent=2, sort_keys=True) + "\n",
                        json.dumps(embedded, indent=2, sort_keys=True) + "\n",
                        rel,
                        f"{template_path.name}:{name}",
                    )
                )

        if "trust-file" in meta:
            rel = str(meta["trust-file"])
            claimed.setdefault(rel, name)
            path = infra / rel
            doc = resource.get("Properties", {}).get("AssumeRolePolicyDocument")
            body = doc.get("Fn::Sub") if isinstance(doc, dict) else None
            if not isinstance(body, str) or not path.is_file():
                errors.append(f"{name}: AssumeRolePolicyDocument must be one Fn::Sub string and {rel} must exist")
                continue
            if json.loads(str(body)) != json.loads(path.read_text()):
                errors.append(
                    f"{name}: AssumeRolePolicyDocument differs from {rel}:\n"
                    + diff(path.read_text(), str(body), rel, f"{template_path.name}:{name}")
                )

    files = sorted(
        [str(p.relative_to(infra)) for p in (infra / "userdata").glob("*.sh")]
        + [str(p.relative_to(infra)) for p in (infra / "policies").glob("*.json")]
        + [str(p.relative_to(infra)) for p in (infra / "policies" / "trust").glob("*.json")]
    )
    for rel in files:
        if rel not in claimed:
            errors.append(f"{rel}: no template resource names it in Metadata")
    if not files:
        errors.append("no userdata/*.sh or policies/*.json found")
    return errors


def main() -> int:
    infra = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    errors = check(infra)
    for error in errors:
        print(f"DRIFT: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"template and {infra}/userdata, {infra}/policies are in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
