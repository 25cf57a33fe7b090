"""Parses the Dockerfile, the Kubernetes manifests and the CloudFormation templates and prints them
as JSON for tests/deploy.rs.

Usage: inspect_deploy.py dockerfile PATH | manifests DIR | cloudformation PATH

CloudFormation templates are read by cfn-lint's own decoder, which understands the short forms of
the intrinsic functions (!Ref, !Sub, !GetAtt...) and prints them in their long forms.
"""
import json
import pathlib
import sys

import dockerfile
import yaml


def main() -> None:
    kind, path = sys.argv[1], pathlib.Path(sys.argv[2])
    if kind == "dockerfile":
        commands = [
            {"cmd": c.cmd, "sub_cmd": c.sub_cmd, "json": c.json, "original": c.original,
             "value": list(c.value), "flags": list(c.flags)}
            for c in dockerfile.parse_file(str(path))
        ]
        print(json.dumps(commands))
    elif kind == "manifests":
        documents = {}
        for file in sorted(path.glob("*.yaml")):
            documents[file.name] = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
        print(json.dumps(documents))
    elif kind == "cloudformation":
        from cfnlint.decode import decode  # slow to import: only when asked for

        template, problems = decode(str(path))
        if problems:
            raise SystemExit("\n".join(str(p) for p in problems))
        print(json.dumps(template))
    else:
        raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
