#!/usr/bin/env python3
"""Writes the sample API Gateway (HTTP API, payload 2.0) events in events/, one per route and case.

Signatures are computed here with python3's hmac/hashlib, independently of the Rust code, under
the test-only credentials in events/secrets.json. The events carry fixed timestamps, so they are
valid under the window events/local.env sets (20 years); the stale one is older than that.

Haravan's id_tokens are RS256 JWTs. Python's standard library has no RSA, so they are signed with
the `openssl` command line under events/haravan-test-key.pem, a test-only RSA-2048 key made here
on the first run and committed as a fixture; its public half is written to
events/haravan-jwks.json, which the tests serve as Haravan's JWKS. PKCS#1 v1.5 signatures are
deterministic, so a rerun rewrites every file identically once the key exists. The tokens expire
in 2100 (the expired case excepted) and are issued at NOW, so they are valid from then on.
Run from the repository root (or anywhere): python3 events/generate.py
"""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
from urllib.parse import urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
SECRETS = json.load(open(os.path.join(HERE, "secrets.json")))
SESAMI = SECRETS["sesami"]["client_secret"].encode()
APP_KEY = SECRETS["app"]["key"].encode()
APP_KID = SECRETS["app"]["key_id"]

DOMAIN = "abc123.execute-api.us-east-1.amazonaws.com"
NOW_MS = 1795550400000  # 2026-11-24T20:00:00Z
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
    return urlencode({**params, "hmac": sesami_sign(params)})


def hkdf32(ikm, info):
    prk = hmac.new(b"gatehouse/v1", ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def signed_cookie(name, value, expires):
    key = hkdf32(APP_KEY, b"cookie-signing")
    body = f"{b64url(value.encode())}.{expires}"
    tag = hmac.new(key, f"{name}\n{body}.".encode(), hashlib.sha256).digest()
    return f"{name}={body}.{APP_KID}.{b64url(tag)}"


# The caller API Gateway names in `requestContext.authorizer.iam` once it has verified a request's
# SigV4 signature on an `Authorizer: AWS_IAM` route (the /v1 handlers refuse a request without it).
IAM_CALLER = {"accessKey": "ASIAEVENTSEXAMPLE", "accountId": "123456789012",
              "callerId": "AROAEVENTSEXAMPLE:app-backend", "principalOrgId": None,
              "userArn": "arn:aws:sts::123456789012:assumed-role/app-backend/events",
              "userId": "AROAEVENTSEXAMPLE:app-backend"}


def event(method, path, query="", body=None, b64=False, cookies=None, content_type=None,
          headers=None, iam=False):
    extra = headers or {}
    headers = {"host": DOMAIN, "user-agent": "Mozilla/5.0 (events)", "x-forwarded-proto": "https"}
    if content_type:
        headers["content-type"] = content_type
    headers.update(extra)
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
            "time": "24/Nov/2026:20:00:00 +0000",
            "timeEpoch": NOW_MS,
        },
        "isBase64Encoded": b64,
    }
    if iam:
        ev["requestContext"]["authorizer"] = {"iam": IAM_CALLER}
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
uninstall = {"event": "uninstall_app", "shopId": "events-shop", "note": "Café ☕ / déjà vu"}

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


# --- Haravan ------------------------------------------------------------------------------------
# The ids below (states, nonces, orgs, sids) are repeated in tests/it/events.rs, which seeds the
# state items, installs and sessions these events act on: change them in both places.

HARAVAN = SECRETS["haravan"]
HARAVAN_SECRET = HARAVAN["client_secret"].encode()
# A TEST-ONLY key, committed as a fixture: it signs nothing but these sample events, and the only
# JWKS that trusts it is events/haravan-jwks.json.
KEY_PEM = os.path.join(HERE, "haravan-test-key.pem")
KID = "events-haravan-test-key-1"
ISSUER = "https://accounts.haravan.com"
NOW = NOW_MS // 1000
LOGIN_SCOPES = "openid profile email org userinfo"
INSTALL_SCOPES = "openid profile email org userinfo grant_service offline_access wh_api com.read_shop"
SESSION_STATE = "events-session-state.0123456789abcdef"


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


if not os.path.exists(KEY_PEM):
    pem = openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048").decode()
    with open(KEY_PEM, "w") as f:  # openssl skips the text before the PEM block
        f.write("TEST-ONLY key of Gatehouse's sample events (events/generate.py): it signs their\n"
                "Haravan id_tokens and nothing else; only events/haravan-jwks.json trusts it.\n")
        f.write(pem)
    print("made a new test key: events/haravan-test-key.pem (every Haravan event changes)")


def jwks():
    modulus = openssl("rsa", "-in", KEY_PEM, "-noout", "-modulus").decode().strip()
    assert modulus.startswith("Modulus="), modulus
    n = bytes.fromhex(modulus[len("Modulus="):])
    text = openssl("rsa", "-in", KEY_PEM, "-noout", "-text").decode()
    e = int(re.search(r"publicExponent: (\d+)", text).group(1))
    e = e.to_bytes((e.bit_length() + 7) // 8, "big")
    return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
                      "n": b64url(n), "e": b64url(e)}]}


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def rs256(claims):
    signing_input = f"{b64url(compact({'alg': 'RS256', 'kid': KID, 'typ': 'JWT'}))}." \
                    f"{b64url(compact(claims))}"
    signature = openssl("dgst", "-sha256", "-sign", KEY_PEM, data=signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def half_hash(value):
    """c_hash: base64url of the left half of SHA-256 (RS256's hash)."""
    return b64url(hashlib.sha256(value.encode()).digest()[:16])


# Orgs: one installed (the test seeds it), two new ones, one whose install a webhook removes.
ORG_INSTALLED = "1000444444"
ORG_NEW = "1000555555"
ORG_OTHER = "1000777777"
ORG_GONE = "1000888888"
SID_INSTALLED = "5c0a1f6e2b9d4e8a9f3c7b1d2e4f6a80"
SID_LOGOUT = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"

USERS = {
    "installed-staff": {"sub": "200000044444", "sid": SID_INSTALLED, "role": "staff",
                        "orgid": ORG_INSTALLED, "orgname": "events-installed",
                        "name": "Trần Thị Bình"},
    "new-admin": {"sub": "200000055555", "sid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                  "role": ["com_api.admin", "admin"], "orgid": ORG_NEW, "orgname": "events-new",
                  "name": "Nguyễn Văn An"},
    "new-staff": {"sub": "200000066666", "sid": "1a2b3c4d5e6f708192a3b4c5d6e7f809",
                  "role": "staff", "orgid": ORG_NEW, "orgname": "events-new", "name": "Lê Hoa"},
    "other-admin": {"sub": "200000077777", "sid": "abcdefabcdefabcdefabcdefabcdef01",
                    "role": "admin", "orgid": ORG_OTHER, "orgname": "events-other",
                    "name": "Phạm Minh"},
}

# Each callback consumes its state, so each has its own (seeded by the test with this nonce,
# purpose and orgid). The no-cookie events reuse a state: they are refused before it is touched.
STATES = {
    "login-installed": ("events-haravan-state-login-installed", "login", None),
    "login-new-admin": ("events-haravan-state-login-new-admin", "login", None),
    "login-staff": ("events-haravan-state-login-staff", "login", None),
    "login-bad-signature": ("events-haravan-state-login-bad-signature", "login", None),
    "login-expired": ("events-haravan-state-login-expired", "login", None),
    "login-wrong-nonce": ("events-haravan-state-login-wrong-nonce", "login", None),
    "install": ("events-haravan-state-install", "install", ORG_NEW),
    "install-wrong-org": ("events-haravan-state-install-wrong-org", "install", ORG_NEW),
}


def nonce_of(state_id):
    return state_id.replace("-state-", "-nonce-")


def id_token(user, nonce, code, changes=None):
    claims = {"iss": ISSUER, "aud": HARAVAN["client_id"], "nonce": nonce, "iat": NOW, "nbf": NOW,
              "exp": FAR_FUTURE, **USERS[user], "c_hash": half_hash(code)}
    claims.update(changes or {})
    return claims


def form_post(path, case, user, cookie=True, token=None, **changes):
    """The browser's POST of Haravan's form_post page for the state of `case`, signed in as
    `user`; `token` replaces the id_token (already encoded), `changes` alter its claims."""
    state_id, purpose, _ = STATES[case]
    code = f"events-haravan-code-{case}"
    if token is None:
        token = rs256(id_token(user, nonce_of(state_id), code, changes))
    scope = INSTALL_SCOPES if purpose == "install" else LOGIN_SCOPES
    body = urlencode([("code", code), ("id_token", token), ("scope", scope),
                      ("session_state", SESSION_STATE), ("state", state_id)])
    cookies = [signed_cookie("__Host-gh-haravan-state", state_id, FAR_FUTURE)] if cookie else None
    return event("POST", path, body=base64.b64encode(body.encode()).decode(), b64=True,
                 cookies=cookies, content_type="application/x-www-form-urlencoded",
                 headers={"origin": "https://accounts.haravan.com"})


def tampered():
    """A staff member's genuine token whose payload is then changed to say admin."""
    state_id = STATES["login-bad-signature"][0]
    code = "events-haravan-code-login-bad-signature"
    claims = id_token("new-staff", nonce_of(state_id), code)
    header, _, signature = rs256(claims).split(".")
    return f"{header}.{b64url(compact({**claims, 'role': 'admin'}))}.{signature}"


def haravan_hmac(body, secret=HARAVAN_SECRET):
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def delivery(topic, orgid, body, signature=None, header="x-haravan-hmacsha256"):
    """A webhook as Haravan POSTs it; API Gateway lowercases header names and, for JSON bodies,
    may base64-encode them, as here."""
    return event("POST", "/haravan/webhooks",
                 body=base64.b64encode(body).decode(), b64=True, content_type="application/json",
                 headers={"x-haravan-topic": topic, "x-haravan-org-id": orgid,
                          header: signature or haravan_hmac(body)})


def shop(name, email):
    return compact({"id": int(ORG_INSTALLED), "name": name, "domain": "events-installed.vn",
                    "myharavan_domain": "events-installed.myharavan.com", "email": email,
                    "customer_email": email, "shop_owner": "Trần Thị Bình", "currency": "VND"})


uninstalled = compact({"org_id": int(ORG_GONE), "app_id": HARAVAN["client_id"],
                       "client_id": HARAVAN["client_id"], "event_type": "app/uninstalled",
                       "user_id": 200000088888, "is_salechannel": False,
                       "is_martketing": False})
LOGIN = "/haravan/install/login"
INSTALL = "/haravan/install/grandservice"

EVENTS.update({
    "haravan-login-start": event("GET", LOGIN),
    "haravan-login-start-orgid": event("GET", LOGIN, urlencode({"orgid": ORG_NEW})),
    "haravan-login-callback-installed": form_post(LOGIN, "login-installed", "installed-staff"),
    "haravan-login-callback-new-org-admin": form_post(LOGIN, "login-new-admin", "new-admin"),
    "haravan-login-callback-staff": form_post(LOGIN, "login-staff", "new-staff"),
    "haravan-login-callback-bad-signature": form_post(
        LOGIN, "login-bad-signature", "new-staff", token=tampered()),
    "haravan-login-callback-expired": form_post(
        LOGIN, "login-expired", "new-admin", exp=NOW + 300),  # Haravan's 300 s lifetime
    "haravan-login-callback-no-cookie": form_post(
        LOGIN, "login-installed", "installed-staff", cookie=False),
    "haravan-login-callback-wrong-nonce": form_post(
        LOGIN, "login-wrong-nonce", "new-admin", nonce="events-haravan-nonce-of-another-sign-in"),
    "haravan-install-callback-wrong-org": form_post(INSTALL, "install-wrong-org", "other-admin"),
    "haravan-install-callback-no-cookie": form_post(INSTALL, "install", "new-admin", cookie=False),
    "haravan-webhooks-challenge": event("GET", "/haravan/webhooks", urlencode({
        "hub.mode": "subscribe", "hub.verify_token": HARAVAN["webhook_verify_token"],
        "hub.challenge": "events-challenge-7f3a9c"})),
    "haravan-webhooks-challenge-wrong-token": event("GET", "/haravan/webhooks", urlencode({
        "hub.mode": "subscribe", "hub.verify_token": "not-the-verify-token",
        "hub.challenge": "events-challenge-7f3a9c"})),
    "haravan-webhooks-uninstalled": delivery("app/uninstalled", ORG_GONE, uninstalled),
    "haravan-webhooks-shop-update": delivery(
        "shop/update", ORG_INSTALLED, shop("Cửa hàng Sự Kiện", "shop@events-installed.vn")),
    "haravan-webhooks-bad-signature": delivery(
        "app/uninstalled", ORG_GONE, uninstalled,
        signature=haravan_hmac(uninstalled, b"not-the-client-secret")),
    "haravan-webhooks-not-json": delivery(
        "shop/update", ORG_INSTALLED, b"name=Not+JSON&orgid=1000444444"),
    "haravan-webhooks-alt-header": delivery(
        "shop/update", ORG_INSTALLED, shop("Cửa hàng Mới", "new@events-installed.vn"),
        header="x-haravan-hmac-sha256"),
    "haravan-logout": event("GET", "/haravan/logout",
                            urlencode({"sid": SID_LOGOUT, "iss": ISSUER})),
    "haravan-logout-missing-sid": event("GET", "/haravan/logout", urlencode({"iss": ISSUER})),
})

# --- Saison connect ---------------------------------------------------------------------------
SAISON_STATE = "events-saison-state-0123456789abcdefghijklmn"
SAISON_CODE = "events-saison-code-0123456789"
SAISON_LINK = "events-saison-link-0123456789abcdefghijklmn"
saison_cookie = signed_cookie("__Host-gh-saison-state", SAISON_STATE, FAR_FUTURE)
EVENTS.update({
    "saison-authorize": event("GET", "/saison/authorize", urlencode({"member": "demo"})),
    "saison-authorize-unknown-member": event(
        "GET", "/saison/authorize", urlencode({"member": "not-served"})),
    "saison-callback": event("GET", "/saison/callback", urlencode({"code": SAISON_CODE}),
                             cookies=[saison_cookie]),
    "saison-callback-no-cookie": event("GET", "/saison/callback",
                                       urlencode({"code": SAISON_CODE})),
    "saison-callback-missing-code": event("GET", "/saison/callback", "", cookies=[saison_cookie]),
    "saison-callback-denied": event("GET", "/saison/callback",
                                    urlencode({"error": "access_denied"}),
                                    cookies=[saison_cookie]),
    # A connect link the test seeds (the anonymous `?member=` starts above are refused: 403).
    "saison-authorize-link": event("GET", "/saison/authorize", urlencode({"link": SAISON_LINK})),
})

# --- Connect links (IAM-authorized on API Gateway; the events carry no signature) -------------
link_request = {"platform": "saison", "end_user": "events-user-1",
                "return_to": "https://app.example.com/connected"}
EVENTS.update({
    "connect-links": event("POST", "/v1/connect-links", body=json.dumps(link_request),
                           content_type="application/json", iam=True),
    # Sesami installs are started in Sesami's admin: no links.
    "connect-links-wrong-platform": event(
        "POST", "/v1/connect-links", body=json.dumps({**link_request, "platform": "sesami"}),
        content_type="application/json", iam=True),
    "connect-links-foreign-return-to": event(
        "POST", "/v1/connect-links",
        body=json.dumps({**link_request, "return_to": "https://evil.example.com/"}),
        content_type="application/json", iam=True),
    # A route deployed without the authorizer (or a hand-made call): no IAM caller, 403.
    "connect-links-no-iam": event("POST", "/v1/connect-links", body=json.dumps(link_request),
                                  content_type="application/json"),
})

# --- Connections: token vending (IAM-authorized) -----------------------------------------------
EVENTS.update({
    "connections-list": event("GET", "/v1/connections", urlencode({"platform": "haravan"}),
                              iam=True),
    "connections-list-end-user": event(
        "GET", "/v1/connections", urlencode({"platform": "saison", "end_user": "events-user-2"}),
        iam=True),
    "connections-list-no-iam": event("GET", "/v1/connections",
                                     urlencode({"platform": "haravan"})),
    "sesami-connections": event("GET", "/v1/connections/sesami/events-shop", iam=True),
    "sesami-connections-token": event("POST", "/v1/connections/sesami/events-shop/token",
                                      iam=True),
    "haravan-connections": event("GET", "/v1/connections/haravan/1000444444", iam=True),
    "haravan-connections-token": event("POST", "/v1/connections/haravan/1000444444/token",
                                       iam=True),
    "haravan-connections-unknown": event("GET", "/v1/connections/haravan/1000999999", iam=True),
    "saison-connections": event("GET", "/v1/connections/saison/M0001",
                                urlencode({"end_user": "events-user-2"}), iam=True),
    "saison-connections-token": event("POST", "/v1/connections/saison/M0001/token",
                                      urlencode({"end_user": "events-user-2"}), iam=True),
    "momo-connections-token": event("POST", "/v1/connections/momo/collection/token", iam=True),
    "weblink-connections": event(
        "GET", "/v1/connections/weblink/events-weblink-session-0123456789abcdef", iam=True),
    "weblink-connections-token": event(
        "POST", "/v1/connections/weblink/events-weblink-session-0123456789abcdef/token",
        iam=True),
    "weblink-connections-no-iam": event(
        "POST", "/v1/connections/weblink/events-weblink-session-0123456789abcdef/token"),
})

# --- MTN MoMo -----------------------------------------------------------------------------------
MOMO_REF = "0b6f8a52-3c1d-4e7a-9f20-6d5c4b3a2910"  # seeded by the test, known to the simulator
MOMO_UNKNOWN_REF = "7d1e2f30-4a5b-4c6d-8e9f-a0b1c2d3e4f5"
payment = {"amount": "10.50", "currency": "EUR", "externalId": "events-order-1",
           "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"},
           "payerMessage": "Order 1", "payeeNote": "Thanks"}
status_body = {"amount": "10.50", "currency": "EUR", "externalId": "events-order-1",
               "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"},
               "status": "SUCCESSFUL", "financialTransactionId": "123456789"}
EVENTS.update({
    # API Gateway base64-encodes JSON bodies it is not told are text; the app takes either.
    "momo-requesttopay": event("POST", "/momo/requesttopay",
                               body=base64.b64encode(json.dumps(payment).encode()).decode(),
                               b64=True, content_type="application/json"),
    "momo-requesttopay-invalid-amount": event(
        "POST", "/momo/requesttopay", body=json.dumps({**payment, "amount": "10,50"}),
        content_type="application/json"),
    "momo-requesttopay-not-json": event("POST", "/momo/requesttopay", body="amount=10",
                                        content_type="application/json"),
    "momo-callback": event("PUT", f"/momo/callback/{MOMO_REF}", body=json.dumps(status_body),
                           content_type="application/json"),
    "momo-callback-post": event("POST", f"/momo/callback/{MOMO_REF}",
                                body=json.dumps(status_body), content_type="application/json"),
    "momo-callback-unknown": event("PUT", f"/momo/callback/{MOMO_UNKNOWN_REF}",
                                   body=json.dumps(status_body), content_type="application/json"),
    "momo-callback-malformed": event("PUT", f"/momo/callback/{MOMO_REF}", body="{not json",
                                     content_type="application/json"),
})

# --- Administrate WebLink ------------------------------------------------------------------------
PORTAL = "demo.administrateweblink.com"
WEBLINK_STATE = "events-weblink-state-0123456789abcdefghijk"
WEBLINK_SESSION = "events-weblink-session-0123456789abcdef"
weblink_state_cookie = signed_cookie("__Host-gh-weblink-state", WEBLINK_STATE, FAR_FUTURE)
weblink_session_cookie = signed_cookie("__Host-gh-weblink-session", WEBLINK_SESSION, FAR_FUTURE)
EVENTS.update({
    "weblink-guest-token": event("POST", "/weblink/guest-token", body=json.dumps({"portal": PORTAL}),
                                 content_type="application/json"),
    "weblink-guest-token-not-allowed": event(
        "POST", "/weblink/guest-token", body=json.dumps({"portal": "evil.example.com"}),
        content_type="application/json"),
    "weblink-guest-token-not-json": event("POST", "/weblink/guest-token", body="portal=x",
                                          content_type="application/json"),
    "weblink-login": event("GET", "/weblink/login", urlencode({"portal": PORTAL})),
    "weblink-login-not-allowed": event("GET", "/weblink/login",
                                       urlencode({"portal": "evil.example.com"})),
    "weblink-callback-no-cookie": event(
        "GET", "/weblink/callback", urlencode({"code": "c", "state": WEBLINK_STATE})),
    "weblink-callback-unknown-state": event(
        "GET", "/weblink/callback", urlencode({"code": "c", "state": WEBLINK_STATE}),
        cookies=[weblink_state_cookie]),
    "weblink-callback-foreign-state": event(
        "GET", "/weblink/callback", urlencode({"code": "c", "state": "another-flows-state"}),
        cookies=[weblink_state_cookie]),
    "weblink-refresh": event("POST", "/weblink/refresh", cookies=[weblink_session_cookie]),
    "weblink-refresh-no-session": event("POST", "/weblink/refresh"),
})

# --- The auth-injecting proxy ---------------------------------------------------------------------
# The app's back end, SigV4-signed: API Gateway's AWS_IAM authorizer names the caller in
# requestContext.authorizer.iam. The tenants are seeded by tests/it/events.rs (proxy_scenario).
PROXY_CALLER = {"iam": {
    "accessKey": "ASIAEXAMPLEEVENTS", "accountId": "123456789012",
    "callerId": "AROAEXAMPLEEVENTS:app-backend",
    "principalOrgId": None,
    "userArn": "arn:aws:sts::123456789012:assumed-role/app-backend/app-backend",
    "userId": "AROAEXAMPLEEVENTS:app-backend",
}}


def proxy_event(method, path, query="", body=None, iam=True, content_type=None):
    ev = event(method, path, query, body=body, content_type=content_type,
               headers={"authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEVENTS/...",
                        "x-amz-date": "20261124T200000Z",
                        "x-amz-security-token": "events-session-token"})
    if iam:
        ev["requestContext"]["authorizer"] = PROXY_CALLER
    return ev


EVENTS.update({
    "sesami-proxy": proxy_event("GET", "/v1/proxy/sesami/events-proxy-shop/api/v1/shop"),
    "sesami-proxy-no-iam": proxy_event(
        "GET", "/v1/proxy/sesami/events-proxy-shop/api/v1/shop", iam=False),
    "haravan-proxy": proxy_event("GET", "/v1/proxy/haravan/1000999999/com/shop.json"),
    "haravan-proxy-escape": proxy_event(
        "GET", "/v1/proxy/haravan/1000999999/..%2F..%2Fevil.example"),
    "saison-proxy": proxy_event("GET", "/v1/proxy/saison/M0009/auth/account/profile",
                                urlencode({"end_user": "events-proxy-user", "info_key": "sex"})),
    "momo-proxy": proxy_event("GET", "/v1/proxy/momo/collection/collection/v1_0/account/balance"),
    "weblink-proxy": proxy_event(
        "POST", "/v1/proxy/weblink/events-proxy-session-0123456789abcdef/graphql",
        body=json.dumps({"query": "{ viewer { email } }"}), content_type="application/json"),
})

# --- Events (the outbox) ------------------------------------------------------------------
EVENT_ID = "0190f1c2-7a3e-7b1d-8c2e-9f0a1b2c3d4e"
EVENTS_CALLER = {"iam": {"accessKey": "AKIAEVENTSCALLER", "accountId": "123456789012",
                      "callerId": "AIDAEVENTSCALLER", "principalOrgId": None,
                      "userArn": "arn:aws:iam::123456789012:user/app-back-end",
                      "userId": "AIDAEVENTSCALLER"}}


def iam_event(method, path):
    ev = event(method, path)
    ev["requestContext"]["authorizer"] = EVENTS_CALLER
    return ev


def outbox_record(seq, event_id, platform, name, tenant, data):
    image = {"pk": {"S": f"outbox#{platform}#{event_id}"}, "sk": {"S": event_id}, "id": {"S": event_id},
             "platform": {"S": platform}, "name": {"S": name}, "tenant": {"S": tenant},
             "time": {"N": str(NOW_MS // 1000)},
             "data_json": {"S": json.dumps(data, separators=(",", ":"))},
             "ttl": {"N": str(NOW_MS // 1000 + 7 * 86400)}}
    return {"eventID": f"events-{seq}", "eventName": "INSERT", "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": {"ApproximateCreationDateTime": NOW_MS // 1000,
                         "Keys": {"pk": image["pk"], "sk": image["sk"]}, "NewImage": image,
                         "SequenceNumber": f"{seq:021d}", "SizeBytes": 300,
                         "StreamViewType": "NEW_IMAGE"},
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/gatehouse/stream/"
                              "2026-11-24T20:00:00.000"}


EVENTS.update({
    # What the table's stream gives events-publisher: outbox INSERTs (the mapping's filter).
    "events-publisher": {"Records": [
        outbox_record(1, EVENT_ID, "haravan", "webhook.orders/create", "1000444444",
                      {"topic": "orders/create", "payload": {"org_id": "1000444444",
                                                             "order": {"id": 1}}}),
        outbox_record(2, "0190f1c2-7a3e-7b1d-8c2e-9f0a1b2c3d4f", "momo", "payment.succeeded",
                      "7b6f1f9e-4a55-4d3b-9d0e-6a1d1c1b2a3f",
                      {"reference_id": "7b6f1f9e-4a55-4d3b-9d0e-6a1d1c1b2a3f",
                       "status": "SUCCESSFUL", "amount": "10.50", "currency": "EUR",
                       "external_id": "order-1", "created_at": NOW_MS // 1000 - 60,
                       "completed_at": NOW_MS // 1000, "reason": None,
                       "financial_transaction_id": "1234567", "submitted": "accepted"}),
    ]},
    "events-read": iam_event("GET", f"/v1/events/haravan/{EVENT_ID}"),
    "events-read-unknown": iam_event("GET", "/v1/events/haravan/0190f1c2-7a3e-7b1d-8c2e-000000000000"),
    "events-read-no-iam": event("GET", f"/v1/events/haravan/{EVENT_ID}"),
})

with open(os.path.join(HERE, "haravan-jwks.json"), "w") as f:
    json.dump(jwks(), f, indent=2)
    f.write("\n")

for name, ev in EVENTS.items():
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump(ev, f, indent=2, ensure_ascii=False)
        f.write("\n")
print(f"wrote {len(EVENTS)} events")
