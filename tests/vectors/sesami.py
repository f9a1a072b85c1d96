#!/usr/bin/env python3
"""Sesami signature vectors, computed independently of the Rust code with python3's hmac/json.

Rule (docs/platforms.md, "Sesami"): HMAC-SHA256, client secret, lowercase hex, over the compact JSON
(no spaces, non-ASCII and "/" not escaped) of an object holding every received parameter except
`hmac`, top-level keys sorted, values as received. Sesami computes it with JSON.stringify, so a
whole-valued float prints as an integer (3.0 -> 3); the objects below are written that way.
Run: python3 tests/vectors/sesami.py — the printed values are the ones in shared/src/sesami.rs.
"""
import hashlib
import hmac
import json
from urllib.parse import parse_qsl

SECRET = b"sesami-test-secret"


def canonical(obj):
    top = {k: obj[k] for k in sorted(obj)}
    return json.dumps(top, separators=(",", ":"), ensure_ascii=False)


def sign(obj):
    return hmac.new(SECRET, canonical(obj).encode("utf-8"), hashlib.sha256).hexdigest()


def from_query(q):
    return {k: v for k, v in parse_qsl(q, keep_blank_values=True) if k != "hmac"}


cases = {
    "install_launch": from_query("shopId=shop-123&timestamp=1732406400000&hmac=x"),
    "callback": from_query("timestamp=1732406400000&code=c0de%2F42&shopId=shop-123&hmac=x"),
    "app_load": from_query(
        "appId=app-1&locale=fr-CA&messageId=m-9&shopId=shop-123&target=admin"
        "&timestamp=1732406400&token=t%C3%A9st&hmac=x"
    ),
    # Nested objects keep their received order; only the top level is sorted.
    "webhook_data": {
        "shopId": "shop-123",
        "z": {"b": 2, "a": [1, "x/y"]},
        "name": "Café Ünïcode ☕",
        "price": 12.5,
        "whole": 3,
    },
}
for name, obj in cases.items():
    print(f"{name}: {canonical(obj)}")
    print(f"{name}: {sign(obj)}")
