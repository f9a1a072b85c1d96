"""Creates the admin principal of a moto server that enforces IAM, and prints it as shell exports.

Usage: python tests/moto_iam_admin.py http://127.0.0.1:PORT   (tests/run.sh runs it)

The server must have been started with INITIAL_NO_AUTH_ACTION_COUNT=3. moto 5.2.5 counts every
request that reaches a service's action (the /moto-api/ page the start-up wait polls is not one):
the first three are served without any check, and from the fourth on each request's SigV4
signature is verified against an IAM user's (or an assumed role's) access key and its action
checked against that principal's policies. This spends exactly those three, on CreateUser,
PutUserPolicy (everything allowed) and CreateAccessKey, then checks that a fourth request under
made-up credentials is refused: the window is closed and IAM is enforced from here on.
"""

import json
import shlex
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

NAME = "gatehouse-tests-admin"


def client(endpoint, key_id, secret):
    # No retries: a retried request would spend a second one of the three.
    return boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
    )


def main():
    endpoint = sys.argv[1]
    iam = client(endpoint, "unauthenticated", "unauthenticated")
    iam.create_user(UserName=NAME)
    iam.put_user_policy(
        UserName=NAME,
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName=NAME)["AccessKey"]
    try:
        iam.list_users()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code not in ("InvalidClientTokenId", "AccessDenied"):
            sys.exit(f"a request under made-up credentials failed oddly: {code}")
    else:
        sys.exit("moto still serves unauthenticated requests: is INITIAL_NO_AUTH_ACTION_COUNT=3 set?")
    admin = client(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    admin.get_user(UserName=NAME)  # the admin's own credentials work
    print(f"export GATEHOUSE_IAM_ADMIN_ACCESS_KEY_ID={shlex.quote(key['AccessKeyId'])}")
    print(f"export GATEHOUSE_IAM_ADMIN_SECRET_ACCESS_KEY={shlex.quote(key['SecretAccessKey'])}")


if __name__ == "__main__":
    main()
