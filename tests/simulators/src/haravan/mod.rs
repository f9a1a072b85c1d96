//! A Haravan simulator over real HTTP, implementing Haravan's side of
//! its protocol as docs/platforms.md ("Haravan") settles it: accounts.haravan.com's OpenID
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
//!
//! This module holds the simulator's state, its routes and the knobs tests turn; each group of
//! endpoints has its own: `keys` (discovery, JWKS, the signing key), `authorize` (sign-in
//! and `form_post`), `token` (the token endpoint and what it issues), `api` (what a Bearer
//! token opens: userinfo, webhook subscriptions, the shop), `logout` (RP-initiated and
//! front-channel) and `webhooks` (the signed webhooks sent to the app).

mod api;
mod authorize;
mod keys;
mod logout;
mod token;
mod webhooks;

pub use crate::kit::{SigningKey, left_half_hash};
pub use webhooks::webhook_signature;

use crate::kit::{Site, lock};
use axum::Router;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The pages of the simulated accounts.haravan.com.
const SITE: Site = Site {
    heading: "Haravan accounts (simulator)",
    name: "Haravan",
};

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
    withhold_refresh_tokens: AtomicBool,
    http: reqwest::Client,
    /// The shop API's knobs (the proxy tests').
    api: crate::kit::ApiKnobs,
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

/// An id as Haravan's JSON bodies carry it: a number when it is all digits.
fn numeric(id: &str) -> Value {
    id.parse::<u64>()
        .map_or_else(|_| Value::from(id), Value::from)
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
                withhold_refresh_tokens: AtomicBool::new(false),
                http,
                api: crate::kit::ApiKnobs::default(),
            }),
        }
    }

    /// The routes, to be nested under the prefix `own_base` names, such as `/_sim/haravan`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(keys::discovery))
            .route("/.well-known/openid-configuration/jwks", get(keys::jwks))
            .route("/connect/authorize", get(authorize::authorize))
            .route("/login", post(authorize::login))
            .route("/connect/token", post(token::token))
            .route("/connect/userinfo", get(api::userinfo))
            .route("/connect/endsession", get(logout::end_session))
            .route(
                "/webhook/api/subscribe",
                post(api::subscribe)
                    .get(api::list_subscriptions)
                    .delete(api::unsubscribe),
            )
            .route("/api/com/shop.json", get(api::shop_api))
            .route("/_send_webhook", post(webhooks::dev_send_webhook))
            .route("/_logout", post(logout::dev_logout))
            .with_state(self.clone())
    }

    /// The knobs of the shop API (`GET /api/com/shop.json`): counted, recorded, 401/429 on demand.
    pub fn api(&self) -> &crate::kit::ApiKnobs {
        &self.inner.api
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

    /// The access tokens of `orgid` stop working now (Haravan judged them expired or revoked),
    /// while its refresh tokens still do.
    pub fn expire_access_tokens(&self, orgid: &str) {
        for grant in lock(&self.inner.grants).access.values_mut() {
            if grant.user.orgid == orgid {
                grant.expires_at = 0;
            }
        }
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
}

#[cfg(test)]
mod tests;
