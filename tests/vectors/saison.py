#!/usr/bin/env python3
"""Saison connect MAC vectors, computed independently of the Rust code with python3's hmac/base64.

m = base64(HMAC-SHA256(key, f"{ts}\\n{nonce}\\n{METHOD}\\n{request_uri}\\n{host}\\n{port}\\n\\n"))
(METHOD upper, host lower case; docs/platforms.md, "Saison connect"). Values: shared/src/saison.rs.
"""
import base64
import hashlib
import hmac

KEY = b"secret-key"
cases = [
    ("get", 1732406400, "abcde12345", "GET", "/auth/account/profile", "apit.saisoncard.co.jp", 443),
    ("get_query", 1732406400, "abcde12345", "GET",
     "/auth/account/profile?info_key=sex%2Cbirthday", "apit.saisoncard.co.jp", 443),
    ("post", 1732406401, "ZZ9yy8XX7w", "POST", "/auth/account/profile", "127.0.0.1", 3000),
]
for name, ts, nonce, method, uri, host, port in cases:
    msg = f"{ts}\n{nonce}\n{method}\n{uri}\n{host}\n{port}\n\n"
    print(name, base64.b64encode(hmac.new(KEY, msg.encode(), hashlib.sha256).digest()).decode())
