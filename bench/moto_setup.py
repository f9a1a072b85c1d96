"""bench/run: (re)creates the table and the secrets on moto, empty, so each function is measured
alone (moto's queries scan its whole table: the items of the functions before would slow it).

Usage: moto_setup.py MOTO_URL
"""

import json
import sys
import time
import urllib.request

import boto3

url = sys.argv[1]
deadline = time.monotonic() + 30
while True:
    try:
        ddb = boto3.client("dynamodb", endpoint_url=url)
        ddb.list_tables()
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
# Everything moto holds, dropped.
urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
ddb.create_table(
    TableName="gatehouse-bench",
    AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    BillingMode="PAY_PER_REQUEST",
)
ddb.update_time_to_live(TableName="gatehouse-bench",
                        TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
sm = boto3.client("secretsmanager", endpoint_url=url)
for name, value in json.load(open("events/secrets.json")).items():
    sm.create_secret(Name=f"gatehouse-bench/{name}", SecretString=json.dumps(value))
