//! A Haravan simulator over real HTTP, implementing Haravan's side of
//! platform-docs/haravan-app.txt as settled in PLATFORMS.md: accounts.haravan.com's OpenID
//! Connect provider (an IdentityServer; hybrid flow, `form_post`), the webhook subscription API,
//! a shop API to prove a token works, and the webhooks and front-channel logouts it sends.
//! Relative to its mount point (such as `/_sim/haravan`, which is then the issuer):
//!
//! - `GET  /.well-known/openid-configuration` — discovery; `GET .../jwks` — the RS256 key.
//! - `GET  /connect/authorize` — validates the request, shows a sign-in page of the users.
//! - `POST /login` — the chosen user: an auto-submitting form that POSTs `code, id_token, scope,
//!   session_state, state` to the app's redirect URI (`form_post`).
//! - `POST /connect/token` — `authorization_code` (each code once) and `refresh_token`
//!   (rotating); the client authenticates in the body or with HTTP Basic; RFC 6749 errors.
//! - `GET  /connect/userinfo`, `GET /connect/endsession` — the usual OIDC companions.
//! - `POST, GET, DELETE /webhook/api/subscribe` — Bearer token with scope `wh_api`.
//! - `GET  /api/com/shop.json` — the token's shop (Bearer token with scope `grant_service`).
//! - `POST /_send_webhook?topic=&orgid=`, `POST /_logout?sid=` (or `sub=`) — dev buttons that
//!   send a signed webhook or a front-channel logout to the app and relay its answer.
//!
//! Everything is written from the documents, not from `gatehouse::haravan`, so that the two
//! implementations check each other. Keys are real RSA-2048 keys, tokens real RS256 JWTs.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// How long an id_token lives (the document's tokens: `exp - iat = 300`).
const ID_TOKEN_LIFETIME: u64 = 300;
/// How long an authorization code may wait for its exchange (IdentityServer's default).
const CODE_LIFETIME: u64 = 300;
/// The access-token lifetime until a test sets another (the document's `expires_in`).
const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 86400;
/// Scopes with no prefix that Haravan knows; `com.*` and `web.*` scopes are checked by shape.
const PLAIN_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "org",
    "userinfo",
    "grant_service",
    "offline_access",
    "wh_api",
];

/// One user who can sign in at the simulated accounts.haravan.com.
#[derive(Clone, Debug)]
pub struct SimUser {
    /// The user id (`sub`).
    pub sub: String,
    /// Display name (`name`).
    pub name: String,
    /// `email`.
    pub email: String,
    /// The shop (organisation) id, a string of digits (`orgid`).
    pub orgid: String,
    /// The shop's name (`orgname`).
    pub orgname: String,
    /// `role`: a string or an array of strings, as Haravan sends either.
    pub role: Value,
}

/// The simulator's view of the one app registered with it.
#[derive(Clone)]
pub struct HaravanSim {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    client_secret: String,
    /// The app's public base URL: its redirect URIs, webhook and logout URLs hang off it.
    app_base: String,
    /// The simulator's own base URL as mounted: the issuer.
    own_base: String,
    key: Mutex<Arc<SigningKey>>,
    /// A key whose kid the JWKS never lists, made on first use.
    unpublished: OnceLock<SigningKey>,
    users: Mutex<Vec<SimUser>>,
    grants: Mutex<Grants>,
    jwks_fetches: AtomicUsize,
    token_requests: Mutex<HashMap<String, usize>>,
    access_token_lifetime: AtomicU64,
    token_delay: Mutex<Duration>,
    /// Claims set on (a `null`: removed from) the token endpoint's id_tokens, to make them
    /// disagree with the sign-in's.
    token_id_token_patch: Mutex<Map<String, Value>>,
    /// Whether grants with `offline_access` come back without a refresh token.
    withhold_refresh_tokens: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
}

/// Everything issued: sign-in sessions, codes, tokens, webhook subscriptions.
#[derive(Default)]
struct Grants {
    /// Per user (`sub`): the sign-in session, until logout.
    sessions: HashMap<String, Session>,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, TokenGrant>,
    refresh: HashMap<String, TokenGrant>,
    /// The orgs whose webhooks the app subscribed to.
    subscriptions: HashSet<String>,
    /// Per org: how many subscribe calls arrived.
    subscribe_calls: HashMap<String, usize>,
}

#[derive(Clone)]
struct Session {
    sid: String,
    auth_time: u64,
}

/// A code, issued to the one registered client.
struct CodeGrant {
    redirect_uri: String,
    scope: String,
    nonce: String,
    user: SimUser,
    session: Session,
    expires_at: u64,
    used: bool,
}

/// What an access or refresh token stands for (issued to the one registered client).
#[derive(Clone)]
struct TokenGrant {
    user: SimUser,
    session: Session,
    scope: String,
    /// Access tokens only; refresh tokens live until used or revoked.
    expires_at: u64,
}

impl TokenGrant {
    fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// An RS256 signing key and its public half as a JWK (also the fuzz targets' id_token key).
pub struct SigningKey {
    /// Its key id.
    pub kid: String,
    /// PKCS#1 `RSAPrivateKey` DER, what jsonwebtoken's aws-lc backend reads.
    pub pkcs1_der: Vec<u8>,
    /// base64url modulus.
    pub n: String,
    /// base64url exponent.
    pub e: String,
}

impl SigningKey {
    /// A new RSA-2048 key.
    ///
    /// # Panics
    /// If the system cannot generate an RSA key (no usable randomness).
    pub fn generate() -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation");
        let pkcs8 = pair.as_der().expect("PKCS#8 encoding of a fresh key");
        let pkcs1 = pkcs1_from_pkcs8(pkcs8.as_ref()).expect("a PKCS#8 RSA key holds PKCS#1");
        let public: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
        Self {
            kid: random_hex(16),
            pkcs1_der: pkcs1.to_vec(),
            n: URL_SAFE_NO_PAD.encode(&public.n),
            e: URL_SAFE_NO_PAD.encode(&public.e),
        }
    }

    /// `claims` as an RS256 JWT whose header names this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&self.pkcs1_der);
        jsonwebtoken::encode(&header, claims, &key).expect("RS256 signing with a valid key")
    }

    /// The public half, as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e,
        })
    }
}

/// The `RSAPrivateKey` (PKCS#1) inside a PKCS#8 `PrivateKeyInfo`: aws-lc-rs writes PKCS#8,
/// jsonwebtoken's aws-lc backend reads PKCS#1. `SEQUENCE { INTEGER, SEQUENCE, OCTET STRING }`.
fn pkcs1_from_pkcs8(der: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _version, rest) = der_next(info)? else {
        return None;
    };
    let (0x30, _algorithm, rest) = der_next(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_next(rest)? else {
        return None;
    };
    Some(key)
}

/// One DER element: its tag, its content, and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// base64url (no padding) of the left half of SHA-256(`value`): OIDC's `c_hash` and `at_hash`
/// for RS256.
pub fn left_half_hash(value: &str) -> String {
    let digest = sha2::Sha256::digest(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// `X-Haravan-Hmacsha256`: base64 of HMAC-SHA256 keyed with the client secret over the raw body.
pub fn webhook_signature(client_secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(client_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// `n` random bytes, hex: codes, tokens, sids and kids look like the document's.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

/// An id as Haravan's JSON bodies carry it: a number when it is all digits.
fn numeric(id: &str) -> Value {
    id.parse::<u64>()
        .map_or_else(|_| Value::from(id), Value::from)
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn escape(s: &str) -> String {
    gatehouse::web::escape(s)
}

/// The default users: an admin with a string role, an admin with an array role, and a staff
/// member, each of a different org.
fn default_users() -> Vec<SimUser> {
    let user = |sub: &str, name: &str, orgid: &str, orgname: &str, role: Value| SimUser {
        sub: sub.into(),
        name: name.into(),
        email: format!(
            "{}@{orgname}.example",
            name.split(' ').next().unwrap_or(name)
        )
        .to_lowercase(),
        orgid: orgid.into(),
        orgname: orgname.into(),
        role,
    };
    vec![
        user(
            "200000011111",
            "Lan Nguyen",
            "1000111111",
            "demo-one",
            json!("admin"),
        ),
        user(
            "200000022222",
            "Minh Tran",
            "1000222222",
            "demo-two",
            json!(["com_api.admin", "admin"]),
        ),
        user(
            "200000033333",
            "Hoa Le",
            "1000333333",
            "demo-three",
            json!("staff"),
        ),
    ]
}

impl HaravanSim {
    /// A simulator for the app with these credentials. `app_base` is the app's public base URL
    /// (`http://127.0.0.1:3000`), `own_base` the simulator's own as mounted
    /// (`http://127.0.0.1:3000/_sim/haravan`): the issuer, and the base of every endpoint URL.
    ///
    /// # Panics
    /// If no RSA key can be generated.
    pub fn new(client_id: &str, client_secret: &str, app_base: &str, own_base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                app_base: app_base.trim_end_matches('/').into(),
                own_base: own_base.trim_end_matches('/').into(),
                key: Mutex::new(Arc::new(SigningKey::generate())),
                unpublished: OnceLock::new(),
                users: Mutex::new(default_users()),
                grants: Mutex::new(Grants::default()),
                jwks_fetches: AtomicUsize::new(0),
                token_requests: Mutex::new(HashMap::new()),
                access_token_lifetime: AtomicU64::new(DEFAULT_ACCESS_TOKEN_LIFETIME),
                token_delay: Mutex::new(Duration::ZERO),
                token_id_token_patch: Mutex::new(Map::new()),
                withhold_refresh_tokens: std::sync::atomic::AtomicBool::new(false),
                http,
            }),
        }
    }

    /// The routes, to be nested under the prefix `own_base` names, such as `/_sim/haravan`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/openid-configuration/jwks", get(jwks))
            .route("/connect/authorize", get(authorize))
            .route("/login", post(login))
            .route("/connect/token", post(token))
            .route("/connect/userinfo", get(userinfo))
            .route("/connect/endsession", get(end_session))
            .route(
                "/webhook/api/subscribe",
                post(subscribe).get(list_subscriptions).delete(unsubscribe),
            )
            .route("/api/com/shop.json", get(shop_api))
            .route("/_send_webhook", post(dev_send_webhook))
            .route("/_logout", post(dev_logout))
            .with_state(self.clone())
    }

    /// The issuer: the simulator's own base URL.
    pub fn issuer(&self) -> &str {
        &self.inner.own_base
    }

    /// The redirect URIs registered for the app: login and install.
    pub fn redirect_uris(&self) -> [String; 2] {
        let base = &self.inner.app_base;
        [
            format!("{base}/haravan/install/login"),
            format!("{base}/haravan/install/grandservice"),
        ]
    }

    /// Adds a user who can sign in, or replaces the one with the same `sub`.
    pub fn add_user(&self, user: SimUser) {
        let mut users = lock(&self.inner.users);
        users.retain(|u| u.sub != user.sub);
        users.push(user);
    }

    /// The users who can sign in.
    pub fn users(&self) -> Vec<SimUser> {
        lock(&self.inner.users).clone()
    }

    fn user(&self, sub: &str) -> Option<SimUser> {
        lock(&self.inner.users)
            .iter()
            .find(|u| u.sub == sub)
            .cloned()
    }

    /// The first user of `orgid`: its owner, for the shop's details.
    fn org_user(&self, orgid: &str) -> Option<SimUser> {
        lock(&self.inner.users)
            .iter()
            .find(|u| u.orgid == orgid)
            .cloned()
    }

    /// `claims`, signed RS256 with the current key, its kid in the header: for tests to craft
    /// tokens with bad claims and a good signature.
    pub fn sign_id_token(&self, claims: &Value) -> String {
        let key = lock(&self.inner.key).clone();
        key.sign(claims)
    }

    /// `claims`, signed with a key whose kid the JWKS never lists.
    pub fn sign_with_unpublished_key(&self, claims: &Value) -> String {
        self.inner
            .unpublished
            .get_or_init(SigningKey::generate)
            .sign(claims)
    }

    /// Replaces the signing key: the JWKS then lists only the new key, and every token signed
    /// afterwards uses it.
    pub fn rotate_key(&self) {
        let key = Arc::new(SigningKey::generate());
        *lock(&self.inner.key) = key;
    }

    /// The current key's kid.
    pub fn current_kid(&self) -> String {
        lock(&self.inner.key).kid.clone()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many token requests arrived with `grant_type` = `grant` (of any outcome).
    pub fn token_requests(&self, grant: &str) -> usize {
        lock(&self.inner.token_requests)
            .get(grant)
            .copied()
            .unwrap_or(0)
    }

    /// The lifetime of access tokens issued from now on (default 86400 s; 0: born expired).
    pub fn set_access_token_lifetime(&self, secs: u64) {
        self.inner
            .access_token_lifetime
            .store(secs, Ordering::SeqCst);
    }

    /// Holds every token request this long before handling it, to widen races in tests.
    pub fn set_token_delay(&self, delay: Duration) {
        *lock(&self.inner.token_delay) = delay;
    }

    /// Sets (a `null`: removes) these claims in the token endpoint's id_tokens from now on.
    pub fn patch_token_id_tokens(&self, patch: &Value) {
        if let Some(patch) = patch.as_object() {
            lock(&self.inner.token_id_token_patch).extend(patch.clone());
        }
    }

    /// Whether grants with `offline_access` come back without a refresh token, as an
    /// IdentityServer's do when the user was not asked for consent.
    pub fn withhold_refresh_tokens(&self, withhold: bool) {
        self.inner
            .withhold_refresh_tokens
            .store(withhold, Ordering::SeqCst);
    }

    /// Revokes every refresh token issued for `orgid`'s users.
    pub fn revoke_refresh_tokens(&self, orgid: &str) {
        lock(&self.inner.grants)
            .refresh
            .retain(|_, g| g.user.orgid != orgid);
    }

    /// What Haravan does when a shop uninstalls the app: its tokens stop working and its
    /// webhook subscriptions end. (It does not notify the app: `send_webhook` does that.)
    pub fn uninstall(&self, orgid: &str) {
        let mut grants = lock(&self.inner.grants);
        grants.access.retain(|_, g| g.user.orgid != orgid);
        grants.refresh.retain(|_, g| g.user.orgid != orgid);
        grants.subscriptions.remove(orgid);
    }

    /// How many webhook subscriptions `orgid` has: the app's, or none (subscribing again
    /// does not add one).
    pub fn subscriptions(&self, orgid: &str) -> usize {
        usize::from(lock(&self.inner.grants).subscriptions.contains(orgid))
    }

    /// How many subscribe calls arrived for `orgid` (of any outcome past authentication).
    pub fn subscribe_calls(&self, orgid: &str) -> usize {
        lock(&self.inner.grants)
            .subscribe_calls
            .get(orgid)
            .copied()
            .unwrap_or(0)
    }

    /// The sid of `sub`'s current sign-in session, if signed in.
    pub fn session_sid(&self, sub: &str) -> Option<String> {
        lock(&self.inner.grants)
            .sessions
            .get(sub)
            .map(|s| s.sid.clone())
    }

    /// `orgid`'s shop as Haravan's shop API describes it, if a user of that org exists.
    pub fn shop(&self, orgid: &str) -> Option<Value> {
        let user = self.org_user(orgid)?;
        let domain = format!("{}.myharavan.com", user.orgname);
        Some(json!({
            "id": numeric(orgid),
            "name": user.orgname,
            "email": user.email,
            "customer_email": user.email,
            "domain": domain,
            "myharavan_domain": domain,
            "shop_owner": user.name,
            "currency": "VND",
            "iana_timezone": "Asia/Ho_Chi_Minh",
        }))
    }

    /// The body Haravan sends for `topic` about `orgid`: the shop for `shop/update`, the
    /// uninstall record for `app/uninstalled`, `{"org_id"}` otherwise.
    pub fn webhook_body(&self, topic: &str, orgid: &str) -> Value {
        match topic {
            "shop/update" => self
                .shop(orgid)
                .unwrap_or_else(|| json!({"id": numeric(orgid)})),
            "app/uninstalled" => {
                let user_id = self.org_user(orgid).map_or(json!(0), |u| numeric(&u.sub));
                json!({
                    "org_id": numeric(orgid),
                    "app_id": self.inner.client_id,
                    "client_id": self.inner.client_id,
                    "event_type": topic,
                    "user_id": user_id,
                    "is_salechannel": false,
                    "is_martketing": false,
                })
            }
            _ => json!({ "org_id": numeric(orgid) }),
        }
    }

    /// POSTs `body` (compact JSON) to `{app_base}/haravan/webhooks` with `X-Haravan-Topic`,
    /// `X-Haravan-Org-Id` and `X-Haravan-Hmacsha256`. Returns the app's status and body
    /// (status 0 and the error when the app did not answer).
    pub async fn send_webhook(&self, topic: &str, orgid: &str, body: &Value) -> (u16, String) {
        let (status, _, text) = self.post_webhook(topic, orgid, body).await;
        (status, text)
    }

    async fn post_webhook(&self, topic: &str, orgid: &str, body: &Value) -> (u16, String, String) {
        let raw = serde_json::to_vec(body).unwrap_or_default();
        let sent = self
            .inner
            .http
            .post(format!("{}/haravan/webhooks", self.inner.app_base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Haravan-Topic", topic)
            .header("X-Haravan-Org-Id", orgid)
            .header(
                "X-Haravan-Hmacsha256",
                webhook_signature(&self.inner.client_secret, &raw),
            )
            .body(raw)
            .send()
            .await;
        read_answer(sent).await
    }

    /// What Haravan does when the app's webhook URL is registered:
    /// `GET {app_base}/haravan/webhooks?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..`.
    /// Returns the app's status and whether its body was exactly the challenge.
    pub async fn verify_webhook(&self, verify_token: &str) -> (u16, bool) {
        let challenge = random_hex(8);
        let sent = self
            .inner
            .http
            .get(with_query(
                &format!("{}/haravan/webhooks", self.inner.app_base),
                &[
                    ("hub.mode", "subscribe"),
                    ("hub.verify_token", verify_token),
                    ("hub.challenge", &challenge),
                ],
            ))
            .send()
            .await;
        let (status, _, text) = read_answer(sent).await;
        (status, text == challenge)
    }

    /// Ends the sign-in session `sid` here, then tells the app as Haravan's front-channel
    /// logout iframe does: `GET {app_base}/haravan/logout?sid=..&iss={own_base}`. Returns the
    /// app's status (0 when it did not answer).
    pub async fn front_channel_logout(&self, sid: &str) -> u16 {
        self.logout(sid).await.0
    }

    async fn logout(&self, sid: &str) -> (u16, String, String) {
        lock(&self.inner.grants)
            .sessions
            .retain(|_, s| s.sid != sid);
        let sent = self
            .inner
            .http
            .get(with_query(
                &format!("{}/haravan/logout", self.inner.app_base),
                &[("sid", sid), ("iss", &self.inner.own_base)],
            ))
            .send()
            .await;
        read_answer(sent).await
    }

    /// Parses an HTML page as a browser would before submitting its first form: the form's
    /// `action` and the `name`/`value` of each `<input>` in it, entities decoded. Buttons are
    /// left out (add the one clicked).
    pub fn parse_form_post(html: &str) -> (String, Vec<(String, String)>) {
        let mut action = None;
        let mut fields = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            let (tag, after) = split_tag(&rest[start + 1..]);
            rest = after;
            let name = tag
                .split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            match (name.as_str(), action.is_some()) {
                ("form", false) => {
                    action = Some(attr(tag, "action").unwrap_or_default());
                }
                ("input", true) => {
                    if let Some(field) = attr(tag, "name") {
                        fields.push((field, attr(tag, "value").unwrap_or_default()));
                    }
                }
                ("/form", true) => break,
                _ => {}
            }
        }
        (action.unwrap_or_default(), fields)
    }

    /// Checks an authorize request (query of `/connect/authorize`, or the same fields posted to
    /// `/login`). Errors are an OAuth error code and a description.
    fn check_authorize(&self, p: &Params) -> Result<AuthRequest, (&'static str, String)> {
        let required = |name: &str| {
            p.get(name)
                .map(str::to_owned)
                .ok_or(("invalid_request", format!("{name} is required")))
        };
        let client_id = required("client_id")?;
        if client_id != self.inner.client_id {
            return Err((
                "unauthorized_client",
                format!("unknown client_id {client_id}"),
            ));
        }
        let redirect_uri = required("redirect_uri")?;
        let registered = self.redirect_uris();
        if !registered.contains(&redirect_uri) {
            return Err((
                "invalid_request",
                format!(
                    "redirect_uri {redirect_uri} is not registered for this app (registered: {})",
                    registered.join(", ")
                ),
            ));
        }
        let response_type = required("response_type")?;
        let mut types: Vec<&str> = response_type.split(' ').collect();
        types.sort_unstable();
        if types != ["code", "id_token"] {
            return Err((
                "unsupported_response_type",
                format!("response_type must be \"code id_token\", not \"{response_type}\""),
            ));
        }
        let response_mode = required("response_mode")?;
        if response_mode != "form_post" {
            return Err((
                "invalid_request",
                format!("response_mode must be form_post, not {response_mode}"),
            ));
        }
        let scope = required("scope")?;
        check_scope(&scope)?;
        let nonce = required("nonce")?;
        Ok(AuthRequest {
            client_id,
            redirect_uri,
            response_type,
            scope,
            nonce,
            state: p.get("state").map(str::to_owned),
            orgid: p.get("orgid").map(str::to_owned),
        })
    }

    /// `sub`'s sign-in session, started now if there is none.
    fn session_for(&self, sub: &str) -> Session {
        lock(&self.inner.grants)
            .sessions
            .entry(sub.to_owned())
            .or_insert_with(|| Session {
                sid: random_hex(16),
                auth_time: now(),
            })
            .clone()
    }

    /// An id_token for `user` in `session`, with `nonce` when given and the hash claim
    /// (`c_hash` of the code, or `at_hash` of the access token).
    fn id_token(
        &self,
        user: &SimUser,
        session: &Session,
        nonce: Option<&str>,
        hash: (&str, &str),
    ) -> String {
        let now = now();
        let mut c = Map::new();
        c.insert("nbf".into(), now.into());
        c.insert("exp".into(), (now + ID_TOKEN_LIFETIME).into());
        c.insert("iss".into(), self.inner.own_base.clone().into());
        c.insert("aud".into(), self.inner.client_id.clone().into());
        if let Some(nonce) = nonce {
            c.insert("nonce".into(), nonce.into());
        }
        c.insert("iat".into(), now.into());
        c.insert(hash.0.into(), left_half_hash(hash.1).into());
        c.insert("sid".into(), session.sid.clone().into());
        c.insert("sub".into(), user.sub.clone().into());
        c.insert("auth_time".into(), session.auth_time.into());
        c.insert("idp".into(), "local".into());
        c.insert("role".into(), user.role.clone());
        c.insert("orgid".into(), user.orgid.clone().into());
        c.insert("name".into(), user.name.clone().into());
        c.insert("email".into(), user.email.clone().into());
        c.insert("orgname".into(), user.orgname.clone().into());
        c.insert("orgcat".into(), "Other".into());
        c.insert("amr".into(), json!(["pwd"]));
        if hash.0 == "at_hash" {
            for (k, v) in lock(&self.inner.token_id_token_patch).iter() {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        self.sign_id_token(&Value::Object(c))
    }

    /// A fresh access token (and refresh token when the scope has `offline_access`) for `grant`,
    /// as the token endpoint's JSON answer. `nonce` goes into the id_token when given.
    fn issue_tokens(&self, mut grant: TokenGrant, nonce: Option<&str>) -> Response {
        let lifetime = self.inner.access_token_lifetime.load(Ordering::SeqCst);
        grant.expires_at = now() + lifetime;
        let access_token = random_hex(32);
        let id_token = self.id_token(
            &grant.user,
            &grant.session,
            nonce,
            ("at_hash", &access_token),
        );
        let refresh_token = (grant.has_scope("offline_access")
            && !self.inner.withhold_refresh_tokens.load(Ordering::SeqCst))
        .then(|| random_hex(32));
        let mut body = json!({
            "id_token": id_token,
            "access_token": access_token,
            "expires_in": lifetime,
            "token_type": "Bearer",
        });
        let scope = grant.scope.clone();
        let mut grants = lock(&self.inner.grants);
        if let Some(refresh) = &refresh_token {
            body["refresh_token"] = refresh.clone().into();
            grants.refresh.insert(refresh.clone(), grant.clone());
        }
        body["scope"] = scope.into();
        grants.access.insert(access_token, grant);
        no_store(Json(body).into_response())
    }

    fn redeem_code(&self, p: &Params) -> Response {
        let (Some(code), Some(redirect_uri)) = (p.get("code"), p.get("redirect_uri")) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code and redirect_uri are required",
            );
        };
        let (grant, nonce) = {
            let mut grants = lock(&self.inner.grants);
            let Some(c) = grants.codes.get_mut(code) else {
                return invalid_grant("unknown code");
            };
            if c.used {
                return invalid_grant("code already used");
            }
            if c.redirect_uri != redirect_uri {
                return invalid_grant("redirect_uri differs from the authorize request's");
            }
            if now() >= c.expires_at {
                return invalid_grant("code expired");
            }
            c.used = true;
            let grant = TokenGrant {
                user: c.user.clone(),
                session: c.session.clone(),
                scope: c.scope.clone(),
                expires_at: 0,
            };
            (grant, c.nonce.clone())
        };
        self.issue_tokens(grant, Some(&nonce))
    }

    fn redeem_refresh(&self, p: &Params) -> Response {
        let Some(refresh_token) = p.get("refresh_token") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            );
        };
        let grant = {
            let mut grants = lock(&self.inner.grants);
            // Rotation: a refresh token is honoured once.
            let Some(mut grant) = grants.refresh.remove(refresh_token) else {
                return invalid_grant("unknown, used or revoked refresh_token");
            };
            if let Some(scope) = p.get("scope") {
                if let Some(extra) = scope.split(' ').find(|s| !grant.has_scope(s)) {
                    // A refused request spends nothing.
                    grants.refresh.insert(refresh_token.to_owned(), grant);
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("{extra} was not granted"),
                    );
                }
                grant.scope = scope.to_owned();
            }
            grant
        };
        self.issue_tokens(grant, None)
    }

    /// The grant of the `Authorization: Bearer` token, if it is live.
    fn bearer(&self, headers: &HeaderMap) -> Result<TokenGrant, Denied> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let grant = token.and_then(|t| lock(&self.inner.grants).access.get(t).cloned());
        grant
            .filter(|g| now() < g.expires_at)
            .ok_or(Denied::InvalidToken)
    }

    /// As `bearer`, and the token's scope must hold `scope`.
    fn bearer_with(&self, headers: &HeaderMap, scope: &'static str) -> Result<TokenGrant, Denied> {
        let grant = self.bearer(headers)?;
        if grant.has_scope(scope) {
            Ok(grant)
        } else {
            Err(Denied::InsufficientScope(scope))
        }
    }
}

/// Why a Bearer request is refused (RFC 6750).
enum Denied {
    /// Missing, unknown or expired token: 401.
    InvalidToken,
    /// The token's scope lacks this one: 403.
    InsufficientScope(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            Denied::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing, unknown or expired access token".to_owned(),
            ),
            Denied::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the token's scope lacks {scope}"),
            ),
        };
        let challenge = format!("Bearer error=\"{error}\"");
        (
            status,
            [(header::WWW_AUTHENTICATE, challenge)],
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    }
}

/// An authorize request that passed the checks.
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    scope: String,
    nonce: String,
    state: Option<String>,
    orgid: Option<String>,
}

impl AuthRequest {
    /// The request again, as the sign-in form's hidden fields.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", &self.redirect_uri),
            ("response_type", &self.response_type),
            ("response_mode", "form_post"),
            ("scope", &self.scope),
            ("nonce", &self.nonce),
        ];
        if let Some(state) = &self.state {
            fields.push(("state", state));
        }
        if let Some(orgid) = &self.orgid {
            fields.push(("orgid", orgid));
        }
        fields
    }
}

/// Haravan's scopes: the plain ones, `com.read_x`/`com.write_x` and `web.read_x`/`web.write_x`,
/// a write only with its read; `openid` always.
fn check_scope(scope: &str) -> Result<(), (&'static str, String)> {
    let scopes: Vec<&str> = scope.split(' ').collect();
    let bad = |why: String| Err(("invalid_scope", why));
    if !scopes.contains(&"openid") {
        return bad(format!(
            "scope must contain openid (scopes are space-separated): {scope}"
        ));
    }
    for s in &scopes {
        if PLAIN_SCOPES.contains(s) {
            continue;
        }
        let Some((prefix, name)) = s.split_once('.') else {
            return bad(format!("unknown scope \"{s}\""));
        };
        let (access, what) = name.split_once('_').unwrap_or(("", ""));
        if !matches!(prefix, "com" | "web")
            || !matches!(access, "read" | "write")
            || what.is_empty()
        {
            return bad(format!("unknown scope \"{s}\""));
        }
        if access == "write" && !scopes.contains(&format!("{prefix}.read_{what}").as_str()) {
            return bad(format!("{s} needs {prefix}.read_{what} too"));
        }
    }
    Ok(())
}

/// Request parameters (query or form); empty values count as absent, as OAuth says.
pub(crate) struct Params(pub(crate) HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded`; a repeated parameter is an error.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(format!("parameter {k} is repeated"));
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// `url` with `pairs` added to its query, form-urlencoded.
pub(crate) fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// A status, content type and body from the app; status 0 and the error when it did not answer.
async fn read_answer(sent: reqwest::Result<reqwest::Response>) -> (u16, String, String) {
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain")
                .to_owned();
            (status, content_type, resp.text().await.unwrap_or_default())
        }
        Err(e) => (
            0,
            "text/plain".into(),
            format!("the app did not answer: {e}"),
        ),
    }
}

/// The tag text after `<` up to its closing `>` (quotes respected), and what follows.
fn split_tag(s: &str) -> (&str, &str) {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
    }
    (s, "")
}

/// The decoded value of attribute `name` in a tag's text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag
        .trim_start_matches(|c: char| !c.is_ascii_whitespace())
        .trim_start();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = &rest[..end];
        rest = rest[end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, next) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let close = body.find(q).unwrap_or(body.len());
                    (&body[..close], body.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let close = after
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            rest = next.trim_start();
            value
        } else {
            ""
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(unescape(value));
        }
    }
    None
}

/// Decodes the HTML character references a form's attributes can hold.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>Haravan accounts (simulator)</h1>{body}</body></html>",
            title = escape(title),
        )),
    )
        .into_response()
}

fn error_page(error: &str, description: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Haravan — error",
        &format!(
            "<p>Sorry, there was an error: <code>{}</code></p><p>{}</p>",
            escape(error),
            escape(description)
        ),
    )
}

/// The `form_post` response mode: a page whose form POSTs `fields` to `action` on load.
fn form_post(action: &str, fields: &[(&str, &str)]) -> Response {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let mut resp = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Submit this form</title></head>\
         <body onload=\"document.forms[0].submit()\">\
         <form method=\"post\" action=\"{}\">{inputs}\
         <noscript><p>Script is disabled. Click Continue.</p></noscript>\
         <button type=\"submit\">Continue</button></form></body></html>",
        escape(action)
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An RFC 6749 error answer.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(
        (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response(),
    )
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn discovery(State(sim): State<HaravanSim>) -> Json<Value> {
    let b = &sim.inner.own_base;
    Json(json!({
        "issuer": b,
        "jwks_uri": format!("{b}/.well-known/openid-configuration/jwks"),
        "authorization_endpoint": format!("{b}/connect/authorize"),
        "token_endpoint": format!("{b}/connect/token"),
        "userinfo_endpoint": format!("{b}/connect/userinfo"),
        "end_session_endpoint": format!("{b}/connect/endsession"),
        "frontchannel_logout_supported": true,
        "frontchannel_logout_session_supported": true,
        "scopes_supported": PLAIN_SCOPES,
        "claims_supported": [
            "sub", "name", "email", "role", "orgid", "orgname", "orgcat", "sid", "auth_time",
            "idp", "amr",
        ],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code id_token"],
        "response_modes_supported": ["form_post"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(sim): State<HaravanSim>) -> Json<Value> {
    sim.inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let key = lock(&sim.inner.key).clone();
    Json(json!({ "keys": [key.jwk()] }))
}

async fn authorize(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params = match Params::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    let req = match sim.check_authorize(&params) {
        Ok(req) => req,
        Err((error, why)) => return error_page(error, &why),
    };
    let users: Vec<SimUser> = sim
        .users()
        .into_iter()
        .filter(|u| req.orgid.as_ref().is_none_or(|org| &u.orgid == org))
        .collect();
    let hidden: String = req
        .fields()
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(v)
            )
        })
        .collect();
    let buttons: String = users
        .iter()
        .map(|u| {
            format!(
                "<li><button name=\"sub\" value=\"{sub}\">{name}</button> — {email}, shop \
                 <strong>{orgname}</strong> (<code>{orgid}</code>), role <code>{role}</code></li>",
                sub = escape(&u.sub),
                name = escape(&u.name),
                email = escape(&u.email),
                orgname = escape(&u.orgname),
                orgid = escape(&u.orgid),
                role = escape(&u.role.to_string()),
            )
        })
        .collect();
    let purpose = if req.scope.split(' ').any(|s| s == "grant_service") {
        "install"
    } else {
        "sign in to"
    };
    let who = if users.is_empty() {
        "<p>No user belongs to this org.</p>".to_owned()
    } else {
        format!("<p>Sign in as:</p><ul>{buttons}</ul>")
    };
    page(
        StatusCode::OK,
        "Haravan — sign in",
        &format!(
            "<p>The app <code>{client}</code> asks to {purpose} your shop{org} with the scopes \
             <strong>{scope}</strong>.</p>\
             <form method=\"post\" action=\"{action}\">{hidden}{who}\
             <p><button name=\"cancel\" value=\"1\">Cancel</button></p></form>",
            client = escape(&req.client_id),
            org = req
                .orgid
                .as_ref()
                .map(|o| format!(" <code>{}</code>", escape(o)))
                .unwrap_or_default(),
            scope = escape(&req.scope),
            action = escape(&format!("{}/login", sim.inner.own_base)),
        ),
    )
}

async fn login(State(sim): State<HaravanSim>, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    let req = match sim.check_authorize(&params) {
        Ok(req) => req,
        Err((error, why)) => return error_page(error, &why),
    };
    let state = req.state.as_deref();
    if params.get("cancel").is_some() {
        let mut fields = vec![("error", "access_denied")];
        fields.extend(state.map(|s| ("state", s)));
        return form_post(&req.redirect_uri, &fields);
    }
    let Some(user) = params.get("sub").and_then(|sub| sim.user(sub)) else {
        return error_page("invalid_request", "choose a user (sub) to sign in as");
    };
    if let Some(orgid) = req.orgid.as_ref().filter(|o| **o != user.orgid) {
        return error_page(
            "invalid_request",
            &format!("{} does not belong to org {orgid}", user.name),
        );
    }
    let session = sim.session_for(&user.sub);
    let code = random_hex(32);
    let id_token = sim.id_token(&user, &session, Some(&req.nonce), ("c_hash", &code));
    let session_state = session_state(&req.client_id, &req.redirect_uri, &session.sid);
    lock(&sim.inner.grants).codes.insert(
        code.clone(),
        CodeGrant {
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scope.clone(),
            nonce: req.nonce.clone(),
            user,
            session,
            expires_at: now() + CODE_LIFETIME,
            used: false,
        },
    );
    let mut fields = vec![
        ("code", code.as_str()),
        ("id_token", &id_token),
        ("scope", &req.scope),
        ("session_state", &session_state),
    ];
    fields.extend(state.map(|s| ("state", s)));
    form_post(&req.redirect_uri, &fields)
}

/// OIDC Session Management's `session_state`: a salted hash of client, origin and session.
fn session_state(client_id: &str, redirect_uri: &str, sid: &str) -> String {
    let origin = url::Url::parse(redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let salt = random_hex(16);
    let hash = sha2::Sha256::digest(format!("{client_id} {origin} {sid} {salt}").as_bytes());
    format!("{}.{salt}", URL_SAFE_NO_PAD.encode(hash))
}

/// The client id and secret of HTTP Basic (each form-urlencoded, RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let form_decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((form_decode(id), form_decode(secret)))
}

async fn token(State(sim): State<HaravanSim>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = Params::parse(&body);
    let grant_type = parsed
        .as_ref()
        .ok()
        .and_then(|p| p.get("grant_type"))
        .unwrap_or("")
        .to_owned();
    *lock(&sim.inner.token_requests)
        .entry(grant_type.clone())
        .or_default() += 1;
    let delay = *lock(&sim.inner.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let params = match parsed {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };

    // Client authentication: HTTP Basic if present, else client_id and client_secret in the body.
    let basic = basic_credentials(&headers);
    let (client_id, secret) = match &basic {
        Some((id, secret)) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id in the body differs from the Basic credentials",
                );
            }
            (Some(id.as_str()), Some(secret.as_str()))
        }
        None => (params.get("client_id"), params.get("client_secret")),
    };
    if client_id != Some(sim.inner.client_id.as_str())
        || secret != Some(sim.inner.client_secret.as_str())
    {
        let mut resp = oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
        if basic.is_some() {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"haravan-sim\""),
            );
        }
        return resp;
    }
    match grant_type.as_str() {
        "authorization_code" => sim.redeem_code(&params),
        "refresh_token" => sim.redeem_refresh(&params),
        "" => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other} is not supported"),
        ),
    }
}

async fn userinfo(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    match sim.bearer_with(&headers, "openid") {
        Ok(g) => Json(json!({
            "sub": g.user.sub,
            "name": g.user.name,
            "email": g.user.email,
            "role": g.user.role,
            "orgid": g.user.orgid,
            "orgname": g.user.orgname,
        }))
        .into_response(),
        Err(denied) => denied.into_response(),
    }
}

/// RP-initiated logout: ends the session named by `id_token_hint` (a token this simulator
/// signed), tells the app by front-channel logout, and returns to `post_logout_redirect_uri`
/// when it is the app's.
async fn end_session(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params = match Params::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    if let Some(hint) = params.get("id_token_hint") {
        let key = lock(&sim.inner.key).clone();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[&sim.inner.client_id]);
        validation.set_issuer(&[&sim.inner.own_base]);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::DecodingKey::from_rsa_components(&key.n, &key.e)
            .and_then(|k| jsonwebtoken::decode::<Value>(hint, &k, &validation));
        let Ok(data) = claims else {
            return error_page(
                "invalid_request",
                "id_token_hint is not a token of this issuer",
            );
        };
        if let Some(sid) = data.claims.get("sid").and_then(Value::as_str) {
            sim.logout(sid).await;
        }
    }
    match params.get("post_logout_redirect_uri") {
        Some(uri) if uri.starts_with(&format!("{}/", sim.inner.app_base)) => {
            let target = match params.get("state") {
                Some(state) => with_query(uri, &[("state", state)]),
                None => uri.to_owned(),
            };
            Redirect::to(&target).into_response()
        }
        _ => page(
            StatusCode::OK,
            "Haravan — signed out",
            "<p>You are signed out.</p>",
        ),
    }
}

async fn subscribe(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer(&headers) {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid.clone();
    *lock(&sim.inner.grants)
        .subscribe_calls
        .entry(orgid.clone())
        .or_default() += 1;
    if !grant.has_scope("wh_api") {
        return Denied::InsufficientScope("wh_api").into_response();
    }
    lock(&sim.inner.grants).subscriptions.insert(orgid.clone());
    Json(json!({"org_id": orgid, "client_id": sim.inner.client_id, "subscribed": true}))
        .into_response()
}

async fn list_subscriptions(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer_with(&headers, "wh_api") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid;
    let data: Vec<Value> = lock(&sim.inner.grants)
        .subscriptions
        .contains(&orgid)
        .then(|| json!({"org_id": orgid, "client_id": sim.inner.client_id}))
        .into_iter()
        .collect();
    Json(json!({ "data": data })).into_response()
}

async fn unsubscribe(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer_with(&headers, "wh_api") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid;
    let removed = lock(&sim.inner.grants).subscriptions.remove(&orgid);
    Json(json!({"org_id": orgid, "client_id": sim.inner.client_id, "unsubscribed": removed}))
        .into_response()
}

/// Haravan's shop API. The token must be an install token (scope `grant_service`): a login
/// token is a user's, not the app's.
async fn shop_api(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer_with(&headers, "grant_service") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    match sim.shop(&grant.user.orgid) {
        Some(shop) => Json(json!({ "shop": shop })).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "Not Found"}))).into_response(),
    }
}

fn relay((status, content_type, body): (u16, String, String)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("text/plain"));
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Dev button: a signed webhook of `topic` (default `app/uninstalled`, which also uninstalls
/// here first) about `orgid`, relaying the app's answer.
async fn dev_send_webhook(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params =
        Params::parse(raw.unwrap_or_default().as_bytes()).unwrap_or(Params(HashMap::new()));
    let Some(orgid) = params.get("orgid") else {
        return (StatusCode::BAD_REQUEST, "orgid is required").into_response();
    };
    let topic = params.get("topic").unwrap_or("app/uninstalled");
    if topic == "app/uninstalled" {
        sim.uninstall(orgid);
    }
    let body = sim.webhook_body(topic, orgid);
    relay(sim.post_webhook(topic, orgid, &body).await)
}

/// Dev button: the front-channel logout of `sid` (or of `sub`'s current session), relaying the
/// app's answer.
async fn dev_logout(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params =
        Params::parse(raw.unwrap_or_default().as_bytes()).unwrap_or(Params(HashMap::new()));
    let sid = params
        .get("sid")
        .map(str::to_owned)
        .or_else(|| params.get("sub").and_then(|sub| sim.session_sid(sub)));
    match sid {
        Some(sid) => relay(sim.logout(&sid).await),
        None => (
            StatusCode::BAD_REQUEST,
            "sid (or a signed-in sub) is required",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
