"""bench/run: (re)creates the table and the secrets on moto, empty, so each function is measured
alone (moto's queries scan its whole table: the items of the functions before would slow it).

Given the function's event and a path, it also writes there what gatehouse-bench must put back
before every invocation (its --reset): for a webhook delivery, the install it acts on and the
absence of its delivery mark. An uninstall consumes the install and every delivery leaves a mark,
so without this every invocation after the first would be a replay (one DynamoDB call,
"duplicate") instead of the delivery the function exists for. Events without a seed get an empty
reset.

Usage: moto_setup.py MOTO_URL [EVENT_FILE RESET_OUT]
"""

import base64
import hashlib
import json
import os
import sys
import time
import urllib.request

import boto3

# Installs as the callbacks store them. The sealed tokens are placeholders: the measured paths
# take or rewrite an install without opening its tokens.
PLACEHOLDER_SEALED = "v1.bench." + "A" * 80


def event_body(event):
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def sesami_uninstall(event):
    """An uninstall_app delivery for an installed shop: marked, then the install taken (200)."""
    hook = json.loads(event_body(event))
    shop = str(hook["data"]["shopId"])
    install = {"shop_id": shop, "name": "Bench shop", "token_sealed": PLACEHOLDER_SEALED,
               "expire_at": "NEVER", "scopes": ["Shop:Read"], "installed_at": 1795550400}
    mark = hook["hmac"].lower()
    # Each item alone in its partition, `<kind>#<id>` (README, "Storage").
    return {"put": [{"pk": f"install#sesami#{shop}", "sk": shop, "attrs": install}],
            "delete": [{"pk": f"webhook#sesami#{mark}", "sk": mark}]}


def haravan_delivery(event):
    """A signed delivery for an installed org (the org of the body, as the handler takes it)."""
    body = event_body(event)
    payload = json.loads(body)
    org = str(payload.get("org_id") or payload["id"])
    install = {"orgid": org, "orgname": "bench-org", "installed_by": "200000099999",
               "installed_at": 1795550400, "scope": "openid org grant_service",
               "access_token_sealed": PLACEHOLDER_SEALED,
               "refresh_token_sealed": PLACEHOLDER_SEALED, "expires_at": 4102444800,
               "token_version": "bench-version", "needs_reauth": False,
               "webhooks_subscribed": True}
    mark = hashlib.sha256(body).hexdigest()
    return {"put": [{"pk": f"install#haravan#{org}", "sk": org, "attrs": install}],
            "delete": [{"pk": f"webhook#haravan#{mark}", "sk": mark}]}


SEEDS = {
    "sesami-webhooks-uninstall": sesami_uninstall,
    "haravan-webhooks-shop-update": haravan_delivery,
}

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
# The bus events-publisher puts on (EVENT_BUS_NAME in bench/run).
boto3.client("events", endpoint_url=url).create_event_bus(Name="gatehouse-bench")
sm = boto3.client("secretsmanager", endpoint_url=url)
for name, value in json.load(open("events/secrets.json")).items():
    sm.create_secret(Name=f"gatehouse-bench/{name}", SecretString=json.dumps(value))

if len(sys.argv) > 3:
    event_file, reset_out = sys.argv[2], sys.argv[3]
    name = os.path.basename(event_file).removesuffix(".json")
    seed = SEEDS.get(name)
    reset = seed(json.load(open(event_file))) if seed else {"put": [], "delete": []}
    with open(reset_out, "w") as f:
        json.dump(reset, f, indent=2, ensure_ascii=False)
        f.write("\n")
