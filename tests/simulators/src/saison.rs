//! A Saison connect simulator over real HTTP, implementing Saison's side of
//! its protocol as docs/platforms.md ("Saison connect") settles it. Relative to its mount point
//! (such as `/_sim/saison`):
//!
//! - `GET  /auth/screen/{member}/authorize?client_id&response_type=code&scope` (`scope`
//!   comma-separated and optional; `redirect_uri` and `state` optional) — validates the request
//!   and shows a sign-in page whose form (fields `id` and `password`, the request as hidden
//!   fields) POSTs to `login`.
//! - `POST /auth/screen/{member}/login` — any non-empty ID with the password `password` signs
//!   in: 302 to `{app_base}/saison/callback?code=..` (`&state=..` when the request had one).
//!   Each code is honoured once, within ten minutes.
//! - `POST /auth/token` — `X-API-VERSION: 1`, a form body; `authorization_code` and
//!   `refresh_token` (rotating: the old refresh token and its access token stop working), the
//!   client's id and secret in the body; RFC 6749 answers with `token_type: "mac"`.
//! - `GET`, `POST /auth/account/profile` — `X-API-VERSION: 1` and
//!   `Authorization: MAC id=".." ts=".." nonce=".." mac=".."`, checked in full (live token,
//!   fresh ts, well-formed and unused nonce, HMAC-SHA256 over the request as it arrived); the
//!   signed-in member's profile.
//!
//! Everything is written from the documents, not from `gatehouse::saison`, so that the two
//! implementations check each other.

use crate::kit::{self, Site, escape, invalid_grant, lock, no_store, now, oauth_error};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The access-token lifetime until a test sets another.
const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 3600;
/// How long a code may wait for its exchange (RFC 6749 §4.1.2 recommends at most ten minutes).
const CODE_LIFETIME: u64 = 600;
/// How far `ts` may be from the simulator's clock, either way.
const TS_WINDOW: u64 = 300;
/// The one password that signs in.
const PASSWORD: &str = "password";
/// The API version every call must name.
const API_VERSION: &str = "1";

/// The pages of the simulated Saison connect.
const SITE: Site = Site {
    heading: "Saison connect (simulator)",
    name: "Saison connect",
};

/// The `mac` of a request: base64 (standard alphabet, padded) of HMAC-SHA256 keyed with `key`
/// over `ts\nnonce\nMETHOD\nrequest-uri\nhost\nport\n\n` (the last line is the empty `ext`).
pub fn mac(
    key: &str,
    ts: u64,
    nonce: &str,
    method: &str,
    request_uri: &str,
    host: &str,
    port: u16,
) -> String {
    let text = normalized_request(ts, nonce, method, request_uri, host, port);
    STANDARD.encode(kit::hmac_sha256(key.as_bytes(), text.as_bytes()))
}

/// The text a `mac` covers.
fn normalized_request(
    ts: u64,
    nonce: &str,
    method: &str,
    request_uri: &str,
    host: &str,
    port: u16,
) -> String {
    format!("{ts}\n{nonce}\n{method}\n{request_uri}\n{host}\n{port}\n\n")
}

/// `Authorization: MAC id=".." ts=".." nonce=".." mac=".."`, attributes separated by one space
/// as the document writes them.
pub fn authorization_header(access_token: &str, ts: u64, nonce: &str, mac: &str) -> String {
    format!("MAC id=\"{access_token}\" ts=\"{ts}\" nonce=\"{nonce}\" mac=\"{mac}\"")
}

/// The simulator's view of the one app registered with it.
#[derive(Clone)]
pub struct SaisonSim {
    inner: Arc<Inner>,
}

struct Inner {
    /// The profile API's knobs (the proxy tests').
    api: crate::kit::ApiKnobs,
    client_id: String,
    client_secret: String,
    /// The app's public base URL: its redirect URI hangs off it.
    app_base: String,
    /// The path of the simulator's own base URL (`/_sim/saison`, or empty): the part of the
    /// request-uri a nested router does not see.
    own_path: String,
    /// The port a `Host` header without one stands for: 443 when the simulator is reached over
    /// https, else 80.
    default_port: u16,
    grants: Mutex<Grants>,
    token_requests: Mutex<HashMap<String, usize>>,
    access_token_lifetime: AtomicU64,
    issue_mac_key: AtomicBool,
    profile_accepted: AtomicUsize,
    profile_refused: AtomicUsize,
    last_refusal: Mutex<Option<String>>,
}

/// Everything issued.
#[derive(Default)]
struct Grants {
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
}

/// Who signed in, where, and for what.
#[derive(Clone)]
struct Subject {
    client_id: String,
    member: String,
    user_id: String,
    scope: String,
}

struct CodeGrant {
    subject: Subject,
    expires_at: u64,
    used: bool,
}

struct AccessGrant {
    subject: Subject,
    expires_at: u64,
    /// Set when the refresh token issued with it was used.
    superseded: bool,
    /// The key of its MACs when the token reply carried one; else the client secret.
    mac_key: Option<String>,
    /// Nonces already seen with this token.
    nonces: HashSet<String>,
}

struct RefreshGrant {
    subject: Subject,
    /// The access token issued with it, superseded when it is used.
    access_token: String,
}

/// `n` random characters of `[0-9A-Za-z]`: codes, tokens and MAC keys.
fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut bytes = vec![0u8; n];
        aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
        // 248 = 4 × 62: dropping the bytes above keeps every character equally likely.
        out.extend(
            bytes
                .into_iter()
                .filter(|b| *b < 248)
                .map(|b| char::from(ALPHABET[usize::from(b % 62)])),
        );
    }
    out.truncate(n);
    out
}

/// `nonce` is `^[0-9A-Za-z]{10}$`.
fn well_formed_nonce(nonce: &str) -> bool {
    nonce.len() == 10 && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A few cardholders with fixed details; any other ID signs in too, with made-up ones.
const KNOWN_USERS: &[(&str, &str, &str, &str, &str)] = &[
    // (user id, card_meisho_sousho, birthday, sex, sex_name)
    ("M0001", "SAISON TARO", "19800115", "1", "男性"),
    ("M0002", "SAISON HANAKO", "19920303", "2", "女性"),
    ("M0003", "CREDIT JIRO", "19751231", "1", "男性"),
];

/// The profile of `user_id` signed in at `member`: every field the profile API knows.
fn profile_of(member: &str, user_id: &str) -> Map<String, Value> {
    let (name, birthday, sex, sex_name) = KNOWN_USERS
        .iter()
        .find(|u| u.0 == user_id)
        .map(|u| (u.1.to_owned(), u.2, u.3, u.4))
        .unwrap_or_else(|| {
            (
                format!("SAISON {}", user_id.to_uppercase()),
                "19700101",
                "0",
                "不明",
            )
        });
    let mut p = Map::new();
    p.insert("member".into(), member.into());
    p.insert("user_id".into(), user_id.into());
    p.insert("card_meisho_sousho".into(), name.into());
    p.insert("birthday".into(), birthday.into());
    p.insert("sex".into(), sex.into());
    p.insert("sex_name".into(), sex_name.into());
    p.insert("add_cdA".into(), "13101".into());
    p
}

impl SaisonSim {
    /// A simulator for the app with these credentials. `app_base` is the app's public base URL
    /// (its redirect URI is `{app_base}/saison/callback`), `own_base` the simulator's own as
    /// mounted (`http://127.0.0.1:3000/_sim/saison`): its path is the part of each request-uri
    /// the nested router does not see, its scheme sets the port a `Host` without one means.
    pub fn new(client_id: &str, client_secret: &str, app_base: &str, own_base: &str) -> Self {
        let own = url::Url::parse(own_base).ok();
        let own_path = own
            .as_ref()
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let default_port = match own.as_ref().map(url::Url::scheme) {
            Some("https") => 443,
            _ => 80,
        };
        Self {
            inner: Arc::new(Inner {
                api: crate::kit::ApiKnobs::default(),
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                app_base: app_base.trim_end_matches('/').into(),
                own_path,
                default_port,
                grants: Mutex::new(Grants::default()),
                token_requests: Mutex::new(HashMap::new()),
                access_token_lifetime: AtomicU64::new(DEFAULT_ACCESS_TOKEN_LIFETIME),
                issue_mac_key: AtomicBool::new(false),
                profile_accepted: AtomicUsize::new(0),
                profile_refused: AtomicUsize::new(0),
                last_refusal: Mutex::new(None),
            }),
        }
    }

    /// The routes, to be nested under the prefix `own_base` names, such as `/_sim/saison`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/auth/screen/{member}/authorize", get(authorize))
            .route("/auth/screen/{member}/login", post(login))
            .route("/auth/token", post(token))
            .route("/auth/account/profile", get(profile).post(profile))
            .with_state(self.clone())
    }

    /// The knobs of the profile API (`/auth/account/profile`, MAC-verified): counted,
    /// recorded, 401/429 on demand.
    pub fn api(&self) -> &crate::kit::ApiKnobs {
        &self.inner.api
    }

    /// The app's registered redirect URI: `{app_base}/saison/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("{}/saison/callback", self.inner.app_base)
    }

    /// The lifetime of access tokens issued from now on (default 3600 s; 0: born expired).
    pub fn set_access_token_lifetime(&self, secs: u64) {
        self.inner
            .access_token_lifetime
            .store(secs, Ordering::SeqCst);
    }

    /// Whether token replies issued from now on carry a `mac_key` (default off). A token issued
    /// with one is verified with that key instead of the client secret.
    pub fn set_issue_mac_key(&self, on: bool) {
        self.inner.issue_mac_key.store(on, Ordering::SeqCst);
    }

    /// How many token requests arrived with `grant_type` = `grant` (of any outcome).
    pub fn token_requests(&self, grant: &str) -> usize {
        lock(&self.inner.token_requests)
            .get(grant)
            .copied()
            .unwrap_or(0)
    }

    /// How many profile requests were accepted and how many refused.
    pub fn profile_requests(&self) -> (usize, usize) {
        (
            self.inner.profile_accepted.load(Ordering::SeqCst),
            self.inner.profile_refused.load(Ordering::SeqCst),
        )
    }

    /// The `error` of the last refused profile request, such as `invalid_mac`.
    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.inner.last_refusal).clone()
    }

    /// A code for `user_id` signed in at `member`, with no scope, as a successful sign-in
    /// would issue it.
    pub fn issue_code(&self, member: &str, user_id: &str) -> String {
        self.new_code(Subject {
            client_id: self.inner.client_id.clone(),
            member: member.into(),
            user_id: user_id.into(),
            scope: String::new(),
        })
    }

    /// Registers a given code for `member`'s `user_id`, as a sign-in would (event files carry
    /// fixed codes).
    pub fn register_code(&self, code: &str, member: &str, user_id: &str) {
        lock(&self.inner.grants).codes.insert(
            code.into(),
            CodeGrant {
                subject: Subject {
                    client_id: self.inner.client_id.clone(),
                    member: member.into(),
                    user_id: user_id.into(),
                    scope: String::new(),
                },
                expires_at: now() + CODE_LIFETIME,
                used: false,
            },
        );
    }

    /// Expires every access token issued so far (their refresh tokens still work).
    pub fn expire_access_tokens(&self) {
        let past = now().saturating_sub(1);
        for grant in lock(&self.inner.grants).access.values_mut() {
            grant.expires_at = grant.expires_at.min(past);
        }
    }

    fn new_code(&self, subject: Subject) -> String {
        let code = random_alnum(32);
        lock(&self.inner.grants).codes.insert(
            code.clone(),
            CodeGrant {
                subject,
                expires_at: now() + CODE_LIFETIME,
                used: false,
            },
        );
        code
    }

    /// Checks an authorize request (the query of `authorize`, or the same fields posted to
    /// `login`); the error is a description for the page.
    fn check_authorize(&self, member: &str, p: &Params) -> Result<AuthRequest, String> {
        if member.is_empty() {
            return Err("the member segment of the path is empty".into());
        }
        let client_id = p.get("client_id").ok_or("client_id is required")?;
        if client_id != self.inner.client_id {
            return Err(format!("unknown client_id {client_id}"));
        }
        match p.get("response_type") {
            Some("code") => {}
            Some(other) => return Err(format!("response_type must be code, not {other}")),
            None => return Err("response_type is required".into()),
        }
        if let Some(uri) = p.get("redirect_uri")
            && uri != self.redirect_uri()
        {
            return Err(format!(
                "redirect_uri {uri} is not registered for this app (registered: {})",
                self.redirect_uri()
            ));
        }
        let scope = p.get("scope").unwrap_or_default();
        if !scope.is_empty()
            && (scope.contains(char::is_whitespace) || scope.split(',').any(str::is_empty))
        {
            return Err(format!(
                "scope must be comma-separated names with no spaces, not \"{scope}\""
            ));
        }
        Ok(AuthRequest {
            member: member.to_owned(),
            client_id: client_id.to_owned(),
            scope: p.get("scope").map(str::to_owned),
            redirect_uri: p.get("redirect_uri").map(str::to_owned),
            state: p.get("state").map(str::to_owned),
        })
    }

    /// Fresh access and refresh tokens for `subject`, as the token endpoint's answer.
    fn issue_tokens(&self, subject: Subject) -> Response {
        let lifetime = self.inner.access_token_lifetime.load(Ordering::SeqCst);
        let access_token = random_alnum(40);
        let refresh_token = random_alnum(40);
        let mac_key = self
            .inner
            .issue_mac_key
            .load(Ordering::SeqCst)
            .then(|| random_alnum(32));
        let mut body = json!({
            "access_token": access_token,
            "token_type": "mac",
            "expires_in": lifetime,
            "refresh_token": refresh_token,
            "scope": subject.scope,
        });
        if let Some(key) = &mac_key {
            body["mac_key"] = key.clone().into();
            body["mac_algorithm"] = "hmac-sha-256".into();
        }
        let mut grants = lock(&self.inner.grants);
        grants.refresh.insert(
            refresh_token,
            RefreshGrant {
                subject: subject.clone(),
                access_token: access_token.clone(),
            },
        );
        grants.access.insert(
            access_token,
            AccessGrant {
                subject,
                expires_at: now() + lifetime,
                superseded: false,
                mac_key,
                nonces: HashSet::new(),
            },
        );
        no_store(Json(body).into_response())
    }

    fn redeem_code(&self, p: &Params) -> Response {
        let Some(code) = p.get("code") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code is required",
            );
        };
        if let Some(uri) = p.get("redirect_uri")
            && uri != self.redirect_uri()
        {
            return invalid_grant("redirect_uri is not the registered one");
        }
        let subject = {
            let mut grants = lock(&self.inner.grants);
            let Some(c) = grants.codes.get_mut(code) else {
                return invalid_grant("unknown code");
            };
            if c.used {
                return invalid_grant("code already used");
            }
            if c.subject.client_id != self.inner.client_id {
                return invalid_grant("code issued to another client");
            }
            if now() >= c.expires_at {
                return invalid_grant("code expired");
            }
            c.used = true;
            c.subject.clone()
        };
        self.issue_tokens(subject)
    }

    fn redeem_refresh(&self, p: &Params) -> Response {
        let Some(refresh_token) = p.get("refresh_token") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            );
        };
        let subject = {
            let mut grants = lock(&self.inner.grants);
            // Rotation: a refresh token is honoured once, and its access token is superseded.
            let Some(old) = grants.refresh.remove(refresh_token) else {
                return invalid_grant("unknown or already used refresh_token");
            };
            if let Some(access) = grants.access.get_mut(&old.access_token) {
                access.superseded = true;
            }
            old.subject
        };
        self.issue_tokens(subject)
    }

    fn refuse(&self, status: StatusCode, error: &str, description: &str) -> Response {
        self.inner.profile_refused.fetch_add(1, Ordering::SeqCst);
        *lock(&self.inner.last_refusal) = Some(error.to_owned());
        (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    }

    /// Verifies the MAC authorization of a request; the access token's subject, or the refusal
    /// (`error`, description).
    fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Subject, (&'static str, String)> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or((
                "invalid_authorization",
                "no Authorization header".to_owned(),
            ))?
            .to_str()
            .map_err(|_| {
                (
                    "invalid_authorization",
                    "Authorization is not ASCII".to_owned(),
                )
            })?;
        let attrs = parse_mac_authorization(value).map_err(|why| ("invalid_authorization", why))?;
        let ts_text = &attrs["ts"];
        let nonce = &attrs["nonce"];
        let (host, port) = self.host_and_port(headers)?;
        let request_uri = match uri.query() {
            Some(q) => format!("{}{}?{q}", self.inner.own_path, uri.path()),
            None => format!("{}{}", self.inner.own_path, uri.path()),
        };

        let mut grants = lock(&self.inner.grants);
        let grant = grants.access.get_mut(&attrs["id"]).ok_or((
            "unknown_token",
            "id is not an access token of this client".to_owned(),
        ))?;
        if grant.superseded {
            return Err((
                "superseded_token",
                "id was superseded: its refresh token was used".into(),
            ));
        }
        if now() >= grant.expires_at {
            return Err(("expired_token", "id has expired".into()));
        }
        let ts: u64 = ts_text.parse().map_err(|_| {
            (
                "invalid_ts",
                format!("ts \"{ts_text}\" is not a unix time in seconds"),
            )
        })?;
        let skew = now().abs_diff(ts);
        if skew > TS_WINDOW {
            return Err((
                "stale_ts",
                format!(
                    "ts {ts} is {skew} s from now; at most {TS_WINDOW} s allowed (seconds, not milliseconds)"
                ),
            ));
        }
        if !well_formed_nonce(nonce) {
            return Err((
                "invalid_nonce",
                format!("nonce \"{nonce}\" is not 10 characters of [0-9A-Za-z]"),
            ));
        }
        let key = grant
            .mac_key
            .as_deref()
            .unwrap_or(&self.inner.client_secret);
        let text = normalized_request(ts, nonce, method.as_str(), &request_uri, &host, port);
        let given = STANDARD.decode(&attrs["mac"]).map_err(|_| {
            (
                "invalid_mac",
                "mac is not standard, padded base64".to_owned(),
            )
        })?;
        if !kit::hmac_sha256_verify(key.as_bytes(), text.as_bytes(), &given) {
            let which = if grant.mac_key.is_some() {
                "the token's mac_key"
            } else {
                "the client secret"
            };
            return Err((
                "invalid_mac",
                format!("mac is not HMAC-SHA256 keyed with {which} over {text:?}"),
            ));
        }
        // Only a request that proved the key spends its nonce.
        if !grant.nonces.insert(nonce.clone()) {
            return Err((
                "reused_nonce",
                format!("nonce {nonce} was already used with this token"),
            ));
        }
        Ok(grant.subject.clone())
    }

    /// The request's `Host`, lower-cased and without port, and its port (the scheme's default
    /// when absent).
    fn host_and_port(&self, headers: &HeaderMap) -> Result<(String, u16), (&'static str, String)> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty())
            .ok_or(("invalid_host", "no Host header".to_owned()))?
            .to_ascii_lowercase();
        // An IPv6 literal keeps its brackets; the port follows the last `:` outside them.
        let split_at = match host.rfind(']') {
            Some(end) => host[end..].find(':').map(|i| end + i),
            None => host.rfind(':'),
        };
        match split_at {
            Some(i) => {
                let port = host[i + 1..]
                    .parse()
                    .map_err(|_| ("invalid_host", format!("bad port in Host {host}")))?;
                Ok((host[..i].to_owned(), port))
            }
            None => Ok((host, self.inner.default_port)),
        }
    }
}

/// The attributes of `MAC id=".." ts=".." nonce=".." mac=".."`: each exactly once, quoted,
/// separated by `" "` or `", "`, in any order; nothing else.
fn parse_mac_authorization(value: &str) -> Result<HashMap<String, String>, String> {
    let rest = value
        .strip_prefix("MAC ")
        .ok_or_else(|| format!("the scheme must be MAC: {value}"))?;
    let mut attrs = HashMap::new();
    let mut rest = rest;
    loop {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("expected name=\"value\" at: {rest}"))?;
        let (val, after) = after
            .split_once('"')
            .ok_or_else(|| format!("unterminated value of {name}"))?;
        if !matches!(name, "id" | "ts" | "nonce" | "mac") {
            return Err(format!("unknown attribute {name:?}"));
        }
        if attrs.insert(name.to_owned(), val.to_owned()).is_some() {
            return Err(format!("attribute {name} is repeated"));
        }
        if after.is_empty() {
            break;
        }
        rest = after
            .strip_prefix(", ")
            .or_else(|| after.strip_prefix(' '))
            .ok_or_else(|| format!("attributes must be separated by \" \" or \", \": {after}"))?;
    }
    for name in ["id", "ts", "nonce", "mac"] {
        if !attrs.contains_key(name) {
            return Err(format!("attribute {name} is missing"));
        }
    }
    Ok(attrs)
}

/// An authorize request that passed the checks.
struct AuthRequest {
    member: String,
    client_id: String,
    scope: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

impl AuthRequest {
    /// The request again, as the sign-in form's hidden fields.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("response_type", "code"),
        ];
        for (name, value) in [
            ("scope", &self.scope),
            ("redirect_uri", &self.redirect_uri),
            ("state", &self.state),
        ] {
            if let Some(v) = value {
                fields.push((name, v));
            }
        }
        fields
    }
}

/// Request parameters (query or form); empty values count as absent.
struct Params(HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded`; a repeated parameter is an error.
    fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(format!("parameter {k} is repeated"));
            }
        }
        Ok(Self(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// `X-API-VERSION` is `1`.
fn api_version_ok(headers: &HeaderMap) -> bool {
    headers
        .get("x-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == API_VERSION)
}

/// The body is `application/x-www-form-urlencoded`, with at most a UTF-8 charset parameter.
fn form_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let media_ok = parts.next().is_some_and(|m| {
        m.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    media_ok
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

fn error_page(description: &str) -> Response {
    SITE.error_page(StatusCode::BAD_REQUEST, description)
}

/// The sign-in page for `req`, with `error` above the form when the last attempt failed.
fn sign_in_page(req: &AuthRequest, error: Option<&str>) -> Response {
    let hidden = kit::hidden_inputs(&req.fields());
    let error = error
        .map(|e| format!("<p class=\"error\"><strong>{}</strong></p>", escape(e)))
        .unwrap_or_default();
    let samples: Vec<&str> = KNOWN_USERS.iter().map(|u| u.0).collect();
    SITE.page(
        StatusCode::OK,
        "Saison connect — sign in",
        &format!(
            "<p>The app <code>{client}</code> asks for <strong>{scope}</strong> at member \
             <code>{member}</code>.</p>{error}\
             <form method=\"post\" action=\"login\">{hidden}\
             <p><label>ID <input name=\"id\" autocomplete=\"username\"></label></p>\
             <p><label>PASSWORD <input type=\"password\" name=\"password\" \
             autocomplete=\"current-password\"></label></p>\
             <p><button type=\"submit\">Sign in</button></p></form>\
             <p>Any ID (such as {samples}) signs in with the password <code>{PASSWORD}</code>.</p>",
            client = escape(&req.client_id),
            scope = escape(req.scope.as_deref().unwrap_or("no scope")),
            member = escape(&req.member),
            samples = samples.join(", "),
        ),
    )
}

async fn authorize(
    State(sim): State<SaisonSim>,
    Path(member): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let req = Params::parse(raw.unwrap_or_default().as_bytes())
        .and_then(|p| sim.check_authorize(&member, &p));
    match req {
        Ok(req) => sign_in_page(&req, None),
        Err(why) => error_page(&why),
    }
}

async fn login(State(sim): State<SaisonSim>, Path(member): Path<String>, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(why) => return error_page(&why),
    };
    let req = match sim.check_authorize(&member, &params) {
        Ok(req) => req,
        Err(why) => return error_page(&why),
    };
    let Some(user_id) = params.get("id") else {
        return sign_in_page(&req, Some("Enter your ID."));
    };
    if params.get("password") != Some(PASSWORD) {
        return sign_in_page(&req, Some("The ID or the PASSWORD is wrong."));
    }
    let code = sim.new_code(Subject {
        client_id: req.client_id.clone(),
        member: req.member.clone(),
        user_id: user_id.to_owned(),
        scope: req.scope.clone().unwrap_or_default(),
    });
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", &code);
    if let Some(state) = &req.state {
        query.append_pair("state", state);
    }
    let location = format!("{}?{}", sim.redirect_uri(), query.finish());
    let mut resp = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => error_page("the redirect URI is not a valid header value"),
    }
}

async fn token(State(sim): State<SaisonSim>, headers: HeaderMap, body: Bytes) -> Response {
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
    if !api_version_ok(&headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the header X-API-VERSION: 1 is required",
        );
    }
    if !form_content_type(&headers) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded (charset UTF-8)",
        );
    }
    let params = match parsed {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };
    if params.get("client_id") != Some(sim.inner.client_id.as_str())
        || params.get("client_secret") != Some(sim.inner.client_secret.as_str())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id and client_secret in the body do not name this client",
        );
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

/// `GET` or `POST /auth/account/profile`: the signed-in member's profile, limited to the
/// fields `info_key` (of the query, or of a POST's form) names.
async fn profile(
    State(sim): State<SaisonSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.inner.api.record(&method, &uri, &headers);
    if !api_version_ok(&headers) {
        return sim.refuse(
            StatusCode::BAD_REQUEST,
            "invalid_api_version",
            "the header X-API-VERSION: 1 is required",
        );
    }
    let subject = match sim.verify(&method, &uri, &headers) {
        Ok(s) => s,
        Err((error, why)) => return sim.refuse(StatusCode::UNAUTHORIZED, error, &why),
    };
    if let Some(imposed) = sim.inner.api.imposed() {
        return imposed;
    }
    let payload = if method == Method::POST {
        if !body.is_empty() && !form_content_type(&headers) {
            return sim.refuse(
                StatusCode::BAD_REQUEST,
                "invalid_content_type",
                "the payload must be application/x-www-form-urlencoded",
            );
        }
        Params::parse(&body)
    } else {
        Params::parse(uri.query().unwrap_or_default().as_bytes())
    };
    let payload = match payload {
        Ok(p) => p,
        Err(why) => return sim.refuse(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };
    let mut all = profile_of(&subject.member, &subject.user_id);
    let body = match payload.get("info_key") {
        Some(info_key) => {
            let mut selected = Map::new();
            selected.insert("member".into(), all["member"].clone());
            selected.insert("user_id".into(), all["user_id"].clone());
            selected.insert("info_key".into(), info_key.into());
            for key in info_key.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                let value = all.get_mut(key).map(Value::take).unwrap_or(Value::Null);
                selected.insert(key.to_owned(), value);
            }
            selected
        }
        None => all,
    };
    sim.inner.profile_accepted.fetch_add(1, Ordering::SeqCst);
    Json(Value::Object(body)).into_response()
}

#[cfg(test)]
mod tests;
