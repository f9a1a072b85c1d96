#!/usr/bin/env python3
"""Writes the sample API Gateway (HTTP API, payload 2.0) events in events/, one per route and case.

Signatures are computed here with python3's hmac/hashlib, independently of the Rust code, under
the test-only credentials in events/secrets.json. The events carry fixed timestamps, so they are
valid under the window events/local.env sets (20 years); the stale one is older than that.
Run from the repository root: python3 events/generate.py
"""
import base64
import hashlib
import hmac
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SECRETS = json.load(open(os.path.join(HERE, "secrets.json")))
SESAMI = SECRETS["sesami"]["client_secret"].encode()
APP_KEY = SECRETS["app"]["key"].encode()
APP_KID = SECRETS["app"]["key_id"]

DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"
NOW_MS = 1795550400000  # 2026-11-24T13:20:00Z
STALE_MS = 1000000000000  # 2001-09-09: outside any window
FAR_FUTURE = 4102444800  # 2100-01-01: the state cookie's expiry
STATE_ID = "events-state-0123456789abcdefghijklmnopqrstu"
CODE = "events-code-0123456789"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sesami_sign(obj):
    text = json.dumps({k: obj[k] for k in sorted(obj)}, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(SESAMI, text.encode(), hashlib.sha256).hexdigest()


def signed_query(params):
    from urllib.parse import urlencode
    return urlencode({**params, "hmac": sesami_sign(params)})


def hkdf32(ikm, info):
    prk = hmac.new(b"gatehouse/v1", ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def signed_cookie(name, value, expires):
    key = hkdf32(APP_KEY, b"cookie-signing")
    body = f"{b64url(value.encode())}.{expires}"
    tag = hmac.new(key, f"{name}\n{body}.".encode(), hashlib.sha256).digest()
    return f"{name}={body}.{APP_KID}.{b64url(tag)}"


def event(method, path, query="", body=None, b64=False, cookies=None, content_type=None):
    headers = {"host": DOMAIN, "user-agent": "Mozilla/5.0 (events)", "x-forwarded-proto": "https"}
    if content_type:
        headers["content-type"] = content_type
    ev = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": DOMAIN,
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "Mozilla/5.0 (events)"},
            "requestId": "events-request",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "24/Nov/2026:13:20:00 +0000",
            "timeEpoch": NOW_MS,
        },
        "isBase64Encoded": b64,
    }
    if cookies:
        ev["cookies"] = cookies
    if body is not None:
        ev["body"] = body
    return ev


def webhook_body(event_name, data, hmac_value=None):
    return json.dumps({"event": event_name, "data": data,
                       "hmac": hmac_value or sesami_sign(data)}, ensure_ascii=False)


state_cookie = signed_cookie("__Host-gh-sesami-state", STATE_ID, FAR_FUTURE)
launch = {"shopId": "events-shop", "timestamp": str(NOW_MS)}
callback = {"code": CODE, "shopId": "events-shop", "timestamp": str(NOW_MS)}
uninstall = {"shopId": "events-shop", "note": "Café ☕ / déjà vu"}

EVENTS = {
    "sesami-install": event("GET", "/sesami/install", signed_query(launch)),
    "sesami-install-bad-hmac": event(
        "GET", "/sesami/install", signed_query(launch).replace("events-shop", "other-shop")),
    "sesami-install-stale": event(
        "GET", "/sesami/install", signed_query({**launch, "timestamp": str(STALE_MS)})),
    "sesami-install-missing-shop": event(
        "GET", "/sesami/install", signed_query({"timestamp": str(NOW_MS)})),
    "sesami-callback": event("GET", "/sesami/callback", signed_query(callback),
                             cookies=[state_cookie]),
    "sesami-callback-no-cookie": event("GET", "/sesami/callback", signed_query(callback)),
    "sesami-callback-bad-hmac": event(
        "GET", "/sesami/callback", signed_query(callback).replace(CODE, "forged-code"),
        cookies=[state_cookie]),
    "sesami-webhooks-uninstall": event(
        "POST", "/sesami/webhooks",
        body=base64.b64encode(webhook_body("uninstall_app", uninstall).encode()).decode(),
        b64=True, content_type="application/json"),
    "sesami-webhooks-bad-hmac": event(
        "POST", "/sesami/webhooks", body=webhook_body("uninstall_app", uninstall, "00" * 32),
        content_type="application/json"),
    "sesami-webhooks-not-json": event(
        "POST", "/sesami/webhooks", body="event=uninstall_app", content_type="application/json"),
    "sesami-webhooks-bad-base64": event(
        "POST", "/sesami/webhooks", body="%%% not base64 %%%", b64=True,
        content_type="application/json"),
}

for name, ev in EVENTS.items():
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(ev, f, indent=2, ensure_ascii=False)
        f.write("\n")
print(f"wrote {len(EVENTS)} events")
