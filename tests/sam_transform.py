"""Runs AWS SAM's own transform over template.yaml, as `sam deploy` has CloudFormation do.

    python tests/sam_transform.py template.yaml OUT.json

cfn-lint checks the template as written, but it does not run the transform, so a template it
passes can still be refused at deploy time (a route's `Authorizer: AWS_IAM` on an API that does
not enable IAM authorization was one). This runs samtranslator, the library the transform runs,
once for each value of the `Tracing` parameter, with every CodeUri replaced by an S3 address as
`sam package` replaces it, writes the expanded template (the `Active` one) to OUT.json for
cfn-lint to check as plain CloudFormation, and checks what the transform generates that
Gatehouse relies on:

- every function's role can write X-Ray segments, whichever `Tracing` is chosen (Lambda refuses
  `Active` tracing to a role that cannot);
- the back-end routes (/v1/*, and MoMo's request-to-pay) and only they require SigV4 (AWS_IAM).

Exits non-zero, saying what is wrong, when the transform fails or a check does.
"""

import json
import logging
import os
import sys

from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

XRAY = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"


class ManagedPolicies:
    """The managed policies the transform names by ARN: the transform asks IAM for them only
    when a function lists a managed policy by name, which Gatehouse's functions never do."""

    def load(self):
        return {
            "AWSXrayWriteOnlyAccess": XRAY,
            "AWSLambdaBasicExecutionRole":
                "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        }


def expanded(template, tracing):
    doc = json.loads(json.dumps(template))
    for resource in doc["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://gatehouse-artifacts/function.zip"
    return transform(doc, {"Tracing": tracing}, ManagedPolicies())


def functions(out):
    return {k: v for k, v in out["Resources"].items() if v["Type"] == "AWS::Lambda::Function"}


def problems(out):
    found = []
    resources = out["Resources"]
    if not functions(out):
        found.append("the transform generated no function")
    for name, function in functions(out).items():
        role = function["Properties"].get("Role", {})
        role_name = role.get("Fn::GetAtt", [None])[0] if isinstance(role, dict) else None
        arns = resources.get(role_name, {}).get("Properties", {}).get("ManagedPolicyArns", [])
        if XRAY not in arns:
            found.append(f"{name}: its role ({role_name}) cannot write X-Ray segments: {arns}")
    apis = [v for v in resources.values() if v["Type"] == "AWS::ApiGatewayV2::Api"]
    if len(apis) != 1:
        found.append(f"expected one HTTP API, the transform generated {len(apis)}")
        return found
    paths = apis[0]["Properties"]["Body"]["paths"]
    for path, methods in paths.items():
        back_end = path.startswith("/v1/") or path == "/momo/requesttopay"
        for method, operation in methods.items():
            iam = {"AWS_IAM": []} in operation.get("security", [])
            if iam != back_end:
                want = "requires" if back_end else "must not require"
                found.append(f"{method} {path} {want} AWS_IAM: {operation.get('security')}")
    return found


def main():
    source, target = sys.argv[1], sys.argv[2]
    # The transform reads the region (for ARNs) from the environment, as `sam` does.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Its metrics, never published here, warn at exit that they were not.
    logging.getLogger("samtranslator.metrics").setLevel(logging.ERROR)
    template = cfn_yaml.load(source)
    failed = False
    for tracing in ("PassThrough", "Active"):
        try:
            out = expanded(template, tracing)
        except Exception as e:  # the transform's own errors name the resource and the cause
            print(f"the SAM transform refuses {source} (Tracing={tracing}): {e}", file=sys.stderr)
            failed = True
            continue
        for problem in problems(out):
            print(f"Tracing={tracing}: {problem}", file=sys.stderr)
            failed = True
        if tracing == "Active":
            with open(target, "w") as f:
                json.dump(out, f, indent=1)
            print(f"the SAM transform expands {source}: {len(out['Resources'])} resources, "
                  f"{len(functions(out))} functions, written to {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
