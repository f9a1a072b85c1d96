//! An Administrate WebLink simulator over real HTTP, implementing Administrate's side of
//! its protocol as docs/platforms.md ("Administrate WebLink") settles it: the portal-auth
//! service (guest tokens), the host-lookup service (each portal's IDP settings) and the Identity
//! Provider of each IDP domain (PKCE S256 authorization code flow, RS256 id_tokens).
//! Relative to its mount point (such as `/_sim/weblink`):
//!
//! - `POST /portal/guest` — JSON `{"domain"}` → `{"portal_token"}` (valid one hour) for a known
//!   portal; 404 for an unknown one, 400 for a bad body; 403 `{"error","lock_duration"}` (rate
//!   limited) or any other status when a test asks for it.
//! - `GET  /portal_config?host=<portal>` — the host lookup: `{"brand","idp":{"client_id","domain"}}`.
//! - `GET  /idp/{domain}/authorize?brand&client_id&code_challenge&code_challenge_method=S256&redirect_uri&response_type=code&scope&state[&nonce]`
//!   — validates the request and shows a sign-in page (email and password) whose form POSTs to
//!   `login`. `/idp/{domain}` stands in for `https://{domain}`. As an OpenID provider does
//!   (OpenID Connect Core §3.1.2.6), a request whose `scope` lacks `openid` is sent back to the
//!   (valid) redirect URI with `error=invalid_scope` and the state; a `nonce` is echoed into the
//!   id_token of the code it yields.
//! - `POST /idp/{domain}/login` — a known user with the password `password`: 302 to the redirect
//!   URI with `code` and `state`. Each code is honoured once, within ten minutes.
//! - `POST /idp/{domain}/token` — a JSON body as the document shows it, or a form: the code with
//!   `client_id` and `code_verifier` (`grant_type` optional), or `grant_type=refresh_token`
//!   (rotating). RFC 6749 error answers.
//! - `POST /api/graphql` — the WebLink API: `Authorization: Bearer <a live access token, or a
//!   portal token>` and `weblink-portal: <portal>`, the portal the token is for (401 otherwise);
//!   answers the signed-in user (`viewer`) whatever the query.
//! - `GET  /.well-known/jwks.json` — the signing key: id_tokens are RS256 JWTs of the issuer
//!   `https://identity.getadministrate.com/` for the audience `weblink2ui`.
//!
//! Everything is written from the documents, not from `gatehouse::weblink`, so that the two
//! implementations check each other.

use crate::kit::{
    self, Params, SigningKey, Site, escape, invalid_grant, lock, no_store, now, oauth_error,
    random_hex, with_query,
};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The pages of the simulated Administrate identity servers.
const SITE: Site = Site {
    heading: "Administrate identity (simulator)",
    name: "Administrate",
};

/// The `iss` of every token, trailing slash included, as the document shows it.
pub const ISSUER: &str = "https://identity.getadministrate.com/";
/// The `aud` of id_tokens: the WebLink UI's, not the portal's client id.
pub const AUDIENCE: &str = "weblink2ui";
/// The one password that signs in.
pub const PASSWORD: &str = "password";
/// How long an id_token lives (`exp - iat`).
const ID_TOKEN_LIFETIME: u64 = 36_000;
/// How long a code may wait for its exchange (RFC 6749 §4.1.2 recommends at most ten minutes).
const CODE_LIFETIME: u64 = 600;
/// How long a portal (guest) token is valid: the document's one hour.
const GUEST_TOKEN_LIFETIME: u64 = 3600;
/// The access-token lifetime until a test sets another (the document's `expires_in`).
const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 3600;

/// One user who can sign in at every simulated IDP.
#[derive(Clone, Debug)]
pub struct SimUser {
    /// The sign-in name and the `email` claim.
    pub email: String,
    /// `given_name`.
    pub given_name: String,
    /// `family_name`.
    pub family_name: String,
    /// The TMS person id: `sub` is `<tenant>:contact:<base64("Person:<id>")>`.
    pub person_id: u64,
}

impl SimUser {
    /// The user's `sub` in `tenant` (the first label of the portal's host), shaped like the
    /// document's `mycompany:contact:UGVyc29uOjI2NDI=`.
    pub fn sub(&self, tenant: &str) -> String {
        let contact = STANDARD.encode(format!("Person:{}", self.person_id));
        format!("{tenant}:contact:{contact}")
    }
}

/// One WebLink portal and the IDP settings the host lookup gives for it.
#[derive(Clone, Debug)]
struct Portal {
    /// The portal's host, lower-case.
    host: String,
    brand: String,
    client_id: String,
    /// The IDP's domain, lower-case.
    idp_domain: String,
}

impl Portal {
    /// The tenant of its users' `sub`: the first label of its host.
    fn tenant(&self) -> &str {
        self.host.split('.').next().unwrap_or(&self.host)
    }
}

/// The simulator of Administrate's portal-auth, host-lookup and identity services.
#[derive(Clone)]
pub struct WeblinkSim {
    inner: Arc<Inner>,
}

struct Inner {
    /// The WebLink API's knobs (the proxy tests').
    api: crate::kit::ApiKnobs,
    /// The simulator's own base URL as mounted.
    own_base: String,
    /// The app's public base URL: its redirect URI hangs off it.
    app_base: String,
    /// By lower-case host.
    portals: Mutex<BTreeMap<String, Portal>>,
    users: Mutex<Vec<SimUser>>,
    key: Mutex<Arc<SigningKey>>,
    /// A key the JWKS never lists, made on first use.
    other_key: OnceLock<SigningKey>,
    grants: Mutex<Grants>,
    /// Answers the next guest-token calls give instead of doing their work, in order.
    guest_answers: Mutex<VecDeque<(StatusCode, Value)>>,
    guest_requests: AtomicUsize,
    host_lookups: AtomicUsize,
    jwks_fetches: AtomicUsize,
    /// By (IDP domain, grant type).
    token_requests: Mutex<HashMap<(String, String), usize>>,
    /// When set, the next code exchange's id_token carries this nonce (`None`: no nonce claim)
    /// instead of the one of its authorize request.
    nonce_override: Mutex<Option<Option<String>>>,
    access_token_lifetime: AtomicU64,
    token_delay: Mutex<Duration>,
}

/// Everything issued.
#[derive(Default)]
struct Grants {
    /// Portal token → (portal host, expiry).
    guest: HashMap<String, (String, u64)>,
    codes: HashMap<String, CodeGrant>,
    /// Access token → (subject, expiry).
    access: HashMap<String, (Subject, u64)>,
    refresh: HashMap<String, Subject>,
}

/// Who signed in, at which IDP, for which client.
#[derive(Clone)]
struct Subject {
    idp_domain: String,
    client_id: String,
    sub: String,
    user: SimUser,
}

struct CodeGrant {
    subject: Subject,
    /// The authorize request's nonce, echoed into the id_token.
    nonce: Option<String>,
    redirect_uri: String,
    code_challenge: String,
    expires_at: u64,
    used: bool,
}

impl WeblinkSim {
    /// A simulator mounted at `own_base` (`http://127.0.0.1:3000/_sim/weblink`) for the app at
    /// `app_base` (`http://127.0.0.1:3000`, whose redirect URI `{app_base}/weblink/callback` is
    /// registered with every portal's client). It knows two portals:
    /// `demo.administrateweblink.com` (brand `demo-brand`, client `demo-client`, IDP
    /// `demo.identity.getadministrate.com`) and `other.administrateweblink.com` (`other-brand`,
    /// `other-client`, `other.identity.getadministrate.com`), and two users, `jane@example.com`
    /// and `john@example.com`. The IDP domains are Administrate's, as the app's default
    /// allow-list expects.
    ///
    /// # Panics
    /// If no RSA key can be generated.
    pub fn new(own_base: &str, app_base: &str) -> Self {
        let sim = Self {
            inner: Arc::new(Inner {
                api: crate::kit::ApiKnobs::default(),
                own_base: own_base.trim_end_matches('/').into(),
                app_base: app_base.trim_end_matches('/').into(),
                portals: Mutex::new(BTreeMap::new()),
                users: Mutex::new(default_users()),
                key: Mutex::new(Arc::new(SigningKey::generate())),
                other_key: OnceLock::new(),
                grants: Mutex::new(Grants::default()),
                guest_answers: Mutex::new(VecDeque::new()),
                guest_requests: AtomicUsize::new(0),
                host_lookups: AtomicUsize::new(0),
                jwks_fetches: AtomicUsize::new(0),
                token_requests: Mutex::new(HashMap::new()),
                nonce_override: Mutex::new(None),
                access_token_lifetime: AtomicU64::new(DEFAULT_ACCESS_TOKEN_LIFETIME),
                token_delay: Mutex::new(Duration::ZERO),
            }),
        };
        sim.add_portal(
            "demo.administrateweblink.com",
            "demo-brand",
            "demo-client",
            "demo.identity.getadministrate.com",
        );
        sim.add_portal(
            "other.administrateweblink.com",
            "other-brand",
            "other-client",
            "other.identity.getadministrate.com",
        );
        sim
    }

    /// The routes, to be nested under the prefix `own_base` names, such as `/_sim/weblink`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/portal/guest", post(guest))
            .route("/portal_config", get(portal_config))
            .route("/idp/{domain}/authorize", get(authorize))
            .route("/idp/{domain}/login", post(login))
            .route("/idp/{domain}/token", post(token))
            // The IDP's metadata (OpenID Connect Discovery 1.0, section 3), which the app reads
            // with WEBLINK_DISCOVERY: the issuer, and this IDP's endpoints above and the keys.
            .route(
                "/idp/{domain}/.well-known/openid-configuration",
                get(
                    |State(sim): State<WeblinkSim>, Path(domain): Path<String>| async move {
                        if !sim.knows_idp(&domain) {
                            return unknown_idp(&domain);
                        }
                        let base = sim.idp_base(&domain);
                        Json(json!({
                            "issuer": ISSUER,
                            "authorization_endpoint": format!("{base}/authorize"),
                            "token_endpoint": format!("{base}/token"),
                            "jwks_uri": sim.jwks_uri(),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "code_challenge_methods_supported": ["S256"],
                        }))
                        .into_response()
                    },
                ),
            )
            .route("/.well-known/jwks.json", get(jwks))
            .route("/api/graphql", post(graphql))
            .with_state(self.clone())
    }

    /// The knobs of the WebLink API (`POST /api/graphql`): counted, recorded, 401/429 on
    /// demand.
    pub fn api(&self) -> &crate::kit::ApiKnobs {
        &self.inner.api
    }

    /// Adds a portal (host names compare case-insensitively), or replaces the one of that host.
    pub fn add_portal(&self, portal: &str, brand: &str, client_id: &str, idp_domain: &str) {
        let host = portal.to_ascii_lowercase();
        lock(&self.inner.portals).insert(
            host.clone(),
            Portal {
                host,
                brand: brand.into(),
                client_id: client_id.into(),
                idp_domain: idp_domain.to_ascii_lowercase(),
            },
        );
    }

    /// Adds a user who can sign in, or replaces the one with the same email.
    pub fn add_user(&self, user: SimUser) {
        let mut users = lock(&self.inner.users);
        users.retain(|u| !u.email.eq_ignore_ascii_case(&user.email));
        users.push(user);
    }

    /// The users who can sign in.
    pub fn users(&self) -> Vec<SimUser> {
        lock(&self.inner.users).clone()
    }

    /// The redirect URI registered for the app: `{app_base}/weblink/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("{}/weblink/callback", self.inner.app_base)
    }

    /// Where the IDP of `domain` is served: `{own_base}/idp/{domain}`, standing in for
    /// `https://{domain}`.
    pub fn idp_base(&self, domain: &str) -> String {
        format!("{}/idp/{domain}", self.inner.own_base)
    }

    /// Where the signing keys are served: `{own_base}/.well-known/jwks.json`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.inner.own_base)
    }

    /// The next guest-token call answers 403 `{"error":"Too many requests","lock_duration": N}`,
    /// the document's rate limiting. Switches queue up: each answers one call.
    pub fn rate_limit_next(&self, lock_duration_secs: u64) {
        lock(&self.inner.guest_answers).push_back((
            StatusCode::FORBIDDEN,
            json!({"error": "Too many requests", "lock_duration": lock_duration_secs}),
        ));
    }

    /// The next guest-token call answers `status` with `{"error": <its reason phrase>}`.
    /// Switches queue up: each answers one call.
    ///
    /// # Panics
    /// If `status` is not an HTTP status code (100–999).
    pub fn fail_next_guest(&self, status: u16) {
        let status = StatusCode::from_u16(status).expect("an HTTP status code");
        let reason = status.canonical_reason().unwrap_or("error");
        lock(&self.inner.guest_answers).push_back((status, json!({ "error": reason })));
    }

    /// How many guest-token calls arrived (of any outcome).
    pub fn guest_requests(&self) -> usize {
        self.inner.guest_requests.load(Ordering::SeqCst)
    }

    /// The portal a live guest token was issued for.
    pub fn guest_token_portal(&self, token: &str) -> Option<String> {
        lock(&self.inner.grants)
            .guest
            .get(token)
            .filter(|(_, expires_at)| now() < *expires_at)
            .map(|(portal, _)| portal.clone())
    }

    /// How many host lookups arrived (of any outcome).
    pub fn host_lookups(&self) -> usize {
        self.inner.host_lookups.load(Ordering::SeqCst)
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// How many token requests arrived for `grant`: `authorization_code` (also counting requests
    /// with no `grant_type`, as the document sends them) or `refresh_token`; `""` counts bodies
    /// that could not be read.
    pub fn token_requests(&self, grant: &str) -> usize {
        lock(&self.inner.token_requests)
            .iter()
            .filter(|((_, g), _)| g == grant)
            .map(|(_, n)| n)
            .sum()
    }

    /// As [`token_requests`](Self::token_requests), counting only those that arrived at the IDP
    /// of `domain`: where the app sent its codes and refresh tokens.
    pub fn token_requests_at(&self, domain: &str, grant: &str) -> usize {
        lock(&self.inner.token_requests)
            .get(&(domain.to_owned(), grant.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The next code exchange's id_token carries `nonce` (`None`: no `nonce` claim at all)
    /// instead of its authorize request's: for tests of an app's nonce check.
    pub fn forge_next_nonce(&self, nonce: Option<&str>) {
        *lock(&self.inner.nonce_override) = Some(nonce.map(str::to_owned));
    }

    /// Holds every token request this long before handling it, to widen races in tests.
    pub fn set_token_delay(&self, delay: Duration) {
        *lock(&self.inner.token_delay) = delay;
    }

    /// The lifetime of access tokens issued from now on (default 3600 s; 0: born expired).
    pub fn set_access_token_lifetime(&self, secs: u64) {
        self.inner
            .access_token_lifetime
            .store(secs, Ordering::SeqCst);
    }

    /// The `sub` a live access token was issued for.
    pub fn access_token_sub(&self, token: &str) -> Option<String> {
        lock(&self.inner.grants)
            .access
            .get(token)
            .filter(|(_, expires_at)| now() < *expires_at)
            .map(|(subject, _)| subject.sub.clone())
    }

    /// `claims`, signed RS256 with the current key, its kid in the header: for tests to craft
    /// tokens with bad claims and a good signature.
    pub fn sign_id_token(&self, claims: &Value) -> String {
        let key = lock(&self.inner.key).clone();
        key.sign(claims)
    }

    /// `claims`, signed with a key the JWKS does not list but under the current key's kid: only
    /// the signature is wrong.
    pub fn sign_with_other_key(&self, claims: &Value) -> String {
        let other = self.inner.other_key.get_or_init(SigningKey::generate);
        let impostor = SigningKey {
            kid: self.current_kid(),
            pkcs1_der: other.pkcs1_der.clone(),
            n: other.n.clone(),
            e: other.e.clone(),
        };
        impostor.sign(claims)
    }

    /// Replaces the signing key: the JWKS then lists only the new key (with a new kid), and
    /// every token signed afterwards uses it.
    pub fn rotate_key(&self) {
        *lock(&self.inner.key) = Arc::new(SigningKey::generate());
    }

    /// The current key's kid.
    pub fn current_kid(&self) -> String {
        lock(&self.inner.key).kid.clone()
    }

    /// The PKCE S256 code challenge of `verifier` (RFC 7636 §4.2):
    /// `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`, without padding.
    pub fn challenge(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(kit::sha256(verifier.as_bytes()))
    }

    /// `verifier` is a valid PKCE code verifier: 43 to 128 characters of `[A-Za-z0-9-._~]`
    /// (RFC 7636 §4.1).
    pub fn valid_verifier(verifier: &str) -> bool {
        (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    }

    /// The action and fields of an HTML page's first form, as a browser would submit it.
    pub fn parse_form(html: &str) -> (String, Vec<(String, String)>) {
        kit::parse_form(html)
    }

    /// The portal of `host`, if known (case-insensitively).
    fn portal(&self, host: &str) -> Option<Portal> {
        lock(&self.inner.portals)
            .get(&host.to_ascii_lowercase())
            .cloned()
    }

    /// Whether some portal's IDP is at `domain`.
    fn knows_idp(&self, domain: &str) -> bool {
        lock(&self.inner.portals)
            .values()
            .any(|p| p.idp_domain == domain)
    }

    /// The portals whose client at the IDP of `domain` is `client_id`.
    fn clients(&self, domain: &str, client_id: &str) -> Vec<Portal> {
        lock(&self.inner.portals)
            .values()
            .filter(|p| p.idp_domain == domain && p.client_id == client_id)
            .cloned()
            .collect()
    }

    fn user(&self, email: &str) -> Option<SimUser> {
        lock(&self.inner.users)
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    /// Checks an authorize request at the IDP of `domain` (the query of `authorize`, or the same
    /// fields posted to `login`); the error is a description for the page.
    fn check_authorize(&self, domain: &str, p: &Params) -> Result<AuthRequest, String> {
        let required = |name: &str| p.get(name).ok_or(format!("{name} is required"));
        let client_id = required("client_id")?;
        let clients = self.clients(domain, client_id);
        if clients.is_empty() {
            return Err(format!("unknown client_id {client_id} at {domain}"));
        }
        let brand = required("brand")?;
        let Some(portal) = clients.into_iter().find(|p| p.brand == brand) else {
            return Err(format!("brand {brand} is not client {client_id}'s"));
        };
        let redirect_uri = required("redirect_uri")?;
        if redirect_uri != self.redirect_uri() {
            return Err(format!(
                "redirect_uri {redirect_uri} is not registered for this client (registered: {})",
                self.redirect_uri()
            ));
        }
        match required("response_type")? {
            "code" => {}
            other => return Err(format!("response_type must be code, not {other}")),
        }
        match p.get("code_challenge_method") {
            Some("S256") => {}
            Some(other) => {
                return Err(format!("code_challenge_method must be S256, not {other}"));
            }
            None => return Err("code_challenge_method=S256 is required".into()),
        }
        let code_challenge = required("code_challenge")?;
        if !valid_challenge(code_challenge) {
            return Err(format!(
                "code_challenge must be the 43-character base64url SHA-256 of the verifier, \
                 not \"{code_challenge}\""
            ));
        }
        // The IDP itself would let a request without state through; the app must send one.
        let state = required("state")?;
        Ok(AuthRequest {
            portal,
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: code_challenge.to_owned(),
            scope: p.get("scope").unwrap_or_default().to_owned(),
            nonce: p.get("nonce").map(str::to_owned),
            state: state.to_owned(),
        })
    }

    /// An id_token for `subject`, issued at `iat`, with the document's claims in its order, and
    /// the authorize request's `nonce` when it had one (OpenID Connect Core §2).
    fn id_token(&self, subject: &Subject, nonce: Option<&str>, iat: u64) -> String {
        let mut claims = json!({
            "iss": ISSUER,
            "sub": subject.sub,
            "aud": AUDIENCE,
            "exp": iat + ID_TOKEN_LIFETIME,
            "iat": iat,
            "email": subject.user.email,
            "given_name": subject.user.given_name,
            "family_name": subject.user.family_name,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        self.sign_id_token(&claims)
    }

    /// Fresh access, id and refresh tokens for `subject`, as the token endpoint's answer; the
    /// id_token carries `nonce` (a code's; refreshed id_tokens carry none).
    fn issue_tokens(&self, subject: Subject, nonce: Option<&str>) -> Response {
        let lifetime = self.inner.access_token_lifetime.load(Ordering::SeqCst);
        let iat = now();
        // The document calls them all JWTs, verifiable with the IDP's key.
        let access_token = self.sign_id_token(&json!({
            "iss": ISSUER,
            "sub": subject.sub,
            "azp": subject.client_id,
            "exp": iat + lifetime,
            "iat": iat,
            "jti": random_hex(16),
        }));
        let id_token = self.id_token(&subject, nonce, iat);
        let refresh_token = random_hex(32);
        let mut grants = lock(&self.inner.grants);
        grants
            .access
            .insert(access_token.clone(), (subject.clone(), iat + lifetime));
        grants.refresh.insert(refresh_token.clone(), subject);
        no_store(
            Json(json!({
                "access_token": access_token,
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "refresh_token": refresh_token,
            }))
            .into_response(),
        )
    }

    fn redeem_code(&self, domain: &str, client_id: &str, p: &Params) -> Response {
        let Some(code) = p.get("code") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code is required",
            );
        };
        let subject = {
            let mut grants = lock(&self.inner.grants);
            let Some(c) = grants.codes.get_mut(code) else {
                return invalid_grant("unknown code");
            };
            if c.used {
                return invalid_grant("code already used");
            }
            if now() >= c.expires_at {
                return invalid_grant("code expired");
            }
            if c.subject.idp_domain != domain || c.subject.client_id != client_id {
                return invalid_grant("code issued to another client");
            }
            if let Some(uri) = p.get("redirect_uri")
                && uri != c.redirect_uri
            {
                return invalid_grant("redirect_uri differs from the authorize request's");
            }
            // From here on the attempt spends the code: a verifier cannot be guessed twice.
            c.used = true;
            let verifier = p.get("code_verifier").unwrap_or_default();
            if !Self::valid_verifier(verifier) || Self::challenge(verifier) != c.code_challenge {
                return invalid_grant("PKCE verification failed");
            }
            (c.subject.clone(), c.nonce.clone())
        };
        let (subject, nonce) = subject;
        let nonce = lock(&self.inner.nonce_override).take().unwrap_or(nonce);
        self.issue_tokens(subject, nonce.as_deref())
    }

    fn redeem_refresh(&self, domain: &str, client_id: &str, p: &Params) -> Response {
        let Some(refresh_token) = p.get("refresh_token") else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "refresh_token is required",
            );
        };
        let subject = {
            let mut grants = lock(&self.inner.grants);
            // Rotation: a refresh token is honoured once.
            let Some(subject) = grants.refresh.remove(refresh_token) else {
                return invalid_grant("unknown or already used refresh_token");
            };
            if subject.idp_domain != domain || subject.client_id != client_id {
                // A refused request spends nothing.
                grants.refresh.insert(refresh_token.to_owned(), subject);
                return invalid_grant("refresh_token issued to another client");
            }
            subject
        };
        self.issue_tokens(subject, None)
    }
}

/// The default users; Jane Smith is the document's (`Person:2642`).
fn default_users() -> Vec<SimUser> {
    let user = |email: &str, given: &str, family: &str, person_id| SimUser {
        email: email.into(),
        given_name: given.into(),
        family_name: family.into(),
        person_id,
    };
    vec![
        user("jane@example.com", "Jane", "Smith", 2642),
        user("john@example.com", "John", "Doe", 2643),
    ]
}

/// `challenge` is 43 characters of canonical base64url (no padding) of 32 bytes: the S256 shape.
fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// An authorize request that passed the checks.
struct AuthRequest {
    portal: Portal,
    redirect_uri: String,
    code_challenge: String,
    /// As sent (possibly empty); [`AuthRequest::scope_error`] judges it.
    scope: String,
    nonce: Option<String>,
    state: String,
}

impl AuthRequest {
    /// The request again, as the sign-in form's hidden fields.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("brand", self.portal.brand.as_str()),
            ("client_id", &self.portal.client_id),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", "S256"),
            ("redirect_uri", &self.redirect_uri),
            ("response_type", "code"),
            ("scope", &self.scope),
            ("state", &self.state),
        ];
        if let Some(nonce) = &self.nonce {
            fields.push(("nonce", nonce));
        }
        fields
    }

    /// The redirect an OpenID provider answers a request without the `openid` scope with: an
    /// OpenID Connect request must carry it (Core §3.1.2.1), and the error goes back to the
    /// client, whose redirect URI is known good by now (§3.1.2.6).
    fn scope_error(&self) -> Option<Response> {
        if self.scope.split(' ').any(|s| s == "openid") {
            return None;
        }
        Some(found(&with_query(
            &self.redirect_uri,
            &[
                ("error", "invalid_scope"),
                ("error_description", "the scope must include openid"),
                ("state", &self.state),
            ],
        )))
    }
}

/// The media type of the body, lower-case, without parameters such as `charset`.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// A token request's parameters: a JSON object of strings (the document) or a form.
fn token_params(headers: &HeaderMap, body: &[u8]) -> Result<Params, String> {
    match media_type(headers).as_deref() {
        Some("application/json") => {
            let Ok(Value::Object(object)) = serde_json::from_slice(body) else {
                return Err("the body must be a JSON object".into());
            };
            let mut map = HashMap::new();
            for (name, value) in object {
                let Value::String(value) = value else {
                    return Err(format!("{name} must be a string"));
                };
                map.insert(name, value);
            }
            Ok(Params(map))
        }
        Some("application/x-www-form-urlencoded") => Params::parse(body),
        _ => Err("the body must be application/json or application/x-www-form-urlencoded".into()),
    }
}

/// A JSON error of the portal-auth and host-lookup services: `{"error": ..}`.
fn service_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

fn error_page(status: StatusCode, description: &str) -> Response {
    SITE.error_page(status, description)
}

fn unknown_idp(domain: &str) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        &format!("no portal's IDP is at {domain}"),
    )
}

/// 302 to `location`.
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "the redirect URI is not a valid header value",
        ),
    }
}

/// The sign-in page of the IDP of `domain` for `req`, with `error` above the form when the last
/// attempt failed.
fn sign_in_page(
    sim: &WeblinkSim,
    domain: &str,
    req: &AuthRequest,
    error: Option<&str>,
) -> Response {
    let hidden = kit::hidden_inputs(&req.fields());
    let error = error
        .map(|e| format!("<p class=\"error\"><strong>{}</strong></p>", escape(e)))
        .unwrap_or_default();
    let users: Vec<String> = sim
        .users()
        .iter()
        .map(|u| {
            format!(
                "<code>{}</code> ({} {})",
                escape(&u.email),
                escape(&u.given_name),
                escape(&u.family_name)
            )
        })
        .collect();
    SITE.page(
        StatusCode::OK,
        "Administrate — sign in",
        &format!(
            "<p>Sign in to <strong>{portal}</strong> (brand <code>{brand}</code>) to continue to \
             the client <code>{client}</code>.</p>{error}\
             <form method=\"post\" action=\"{action}\">{hidden}\
             <p><label>Email <input type=\"email\" name=\"email\" autocomplete=\"username\">\
             </label></p>\
             <p><label>Password <input type=\"password\" name=\"password\" \
             autocomplete=\"current-password\"></label></p>\
             <p><button type=\"submit\">Sign in</button> \
             <button name=\"cancel\" value=\"1\">Cancel</button></p></form>\
             <p>Users: {users}; the password is <code>{PASSWORD}</code>.</p>",
            portal = escape(&req.portal.host),
            brand = escape(&req.portal.brand),
            client = escape(&req.portal.client_id),
            action = escape(&format!("{}/login", sim.idp_base(domain))),
            users = users.join(", "),
        ),
    )
}

async fn guest(State(sim): State<WeblinkSim>, headers: HeaderMap, body: Bytes) -> Response {
    sim.inner.guest_requests.fetch_add(1, Ordering::SeqCst);
    let forced = lock(&sim.inner.guest_answers).pop_front();
    if let Some((status, body)) = forced {
        return (status, Json(body)).into_response();
    }
    if media_type(&headers).as_deref() != Some("application/json") {
        return service_error(StatusCode::BAD_REQUEST, "the body must be application/json");
    }
    let domain = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => o.get("domain").and_then(Value::as_str).map(str::to_owned),
        _ => return service_error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
    };
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return service_error(StatusCode::BAD_REQUEST, "domain is required");
    };
    let Some(portal) = sim.portal(&domain) else {
        return service_error(StatusCode::NOT_FOUND, "portal not found");
    };
    let token = random_hex(32);
    lock(&sim.inner.grants)
        .guest
        .insert(token.clone(), (portal.host, now() + GUEST_TOKEN_LIFETIME));
    Json(json!({ "portal_token": token })).into_response()
}

async fn portal_config(State(sim): State<WeblinkSim>, RawQuery(raw): RawQuery) -> Response {
    sim.inner.host_lookups.fetch_add(1, Ordering::SeqCst);
    let params = match Params::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return service_error(StatusCode::BAD_REQUEST, &why),
    };
    let Some(host) = params.get("host") else {
        return service_error(StatusCode::BAD_REQUEST, "host is required");
    };
    match sim.portal(host) {
        Some(p) => Json(json!({
            "brand": p.brand,
            "idp": { "client_id": p.client_id, "domain": p.idp_domain },
        }))
        .into_response(),
        None => service_error(StatusCode::NOT_FOUND, "portal not found"),
    }
}

async fn authorize(
    State(sim): State<WeblinkSim>,
    Path(domain): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if !sim.knows_idp(&domain) {
        return unknown_idp(&domain);
    }
    let req = Params::parse(raw.unwrap_or_default().as_bytes())
        .and_then(|p| sim.check_authorize(&domain, &p));
    match req {
        Ok(req) => req
            .scope_error()
            .unwrap_or_else(|| sign_in_page(&sim, &domain, &req, None)),
        Err(why) => error_page(StatusCode::BAD_REQUEST, &why),
    }
}

async fn login(State(sim): State<WeblinkSim>, Path(domain): Path<String>, body: Bytes) -> Response {
    if !sim.knows_idp(&domain) {
        return unknown_idp(&domain);
    }
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, &why),
    };
    let req = match sim.check_authorize(&domain, &params) {
        Ok(req) => req,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, &why),
    };
    if let Some(refusal) = req.scope_error() {
        return refusal;
    }
    if params.get("cancel").is_some() {
        return found(&with_query(
            &req.redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the user cancelled the sign-in"),
                ("state", &req.state),
            ],
        ));
    }
    let Some(email) = params.get("email") else {
        return sign_in_page(&sim, &domain, &req, Some("Enter your email."));
    };
    let user = sim
        .user(email)
        .filter(|_| params.get("password") == Some(PASSWORD));
    let Some(user) = user else {
        return sign_in_page(
            &sim,
            &domain,
            &req,
            Some("The email or the password is wrong."),
        );
    };
    let code = random_hex(32);
    lock(&sim.inner.grants).codes.insert(
        code.clone(),
        CodeGrant {
            subject: Subject {
                idp_domain: domain.clone(),
                client_id: req.portal.client_id.clone(),
                sub: user.sub(req.portal.tenant()),
                user,
            },
            nonce: req.nonce.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            expires_at: now() + CODE_LIFETIME,
            used: false,
        },
    );
    found(&with_query(
        &req.redirect_uri,
        &[("code", &code), ("state", &req.state)],
    ))
}

async fn token(
    State(sim): State<WeblinkSim>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = token_params(&headers, &body);
    // The document's request has no grant_type: a code exchange.
    let grant_type = parsed
        .as_ref()
        .map(|p| p.get("grant_type").unwrap_or("authorization_code"))
        .unwrap_or_default()
        .to_owned();
    *lock(&sim.inner.token_requests)
        .entry((domain.clone(), grant_type.clone()))
        .or_default() += 1;
    let delay = *lock(&sim.inner.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if !sim.knows_idp(&domain) {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            &format!("no portal's IDP is at {domain}"),
        );
    }
    let params = match parsed {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why),
    };
    let Some(client_id) = params.get("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is required",
        );
    };
    if sim.clients(&domain, client_id).is_empty() {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &format!("unknown client_id {client_id} at {domain}"),
        );
    }
    match grant_type.as_str() {
        "authorization_code" => sim.redeem_code(&domain, client_id, &params),
        "refresh_token" => sim.redeem_refresh(&domain, client_id, &params),
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type {other} is not supported"),
        ),
    }
}

async fn jwks(State(sim): State<WeblinkSim>) -> Json<Value> {
    sim.inner.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let key = lock(&sim.inner.key).clone();
    Json(json!({ "keys": [key.jwk()] }))
}

/// `POST /api/graphql`: a token for the portal `weblink-portal` names, as the document requires
/// both; the answer is the token's user.
async fn graphql(
    State(sim): State<WeblinkSim>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.inner.api.record(&method, &uri, &headers);
    let refuse = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": [{"message": why}]})),
        )
            .into_response()
    };
    let one = |name: &str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok().map(str::to_owned),
            _ => None,
        }
    };
    let Some(token) = one("authorization").and_then(|v| {
        v.split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned())
    }) else {
        return refuse("Authorization: Bearer <token> is required, once");
    };
    let Some(portal_host) = one("weblink-portal").map(|p| p.to_ascii_lowercase()) else {
        return refuse("the weblink-portal header is required, once");
    };
    let portal = lock(&sim.inner.portals).get(&portal_host).cloned();
    let Some(portal) = portal else {
        return refuse("the weblink-portal header names no known portal");
    };
    let viewer = {
        let grants = lock(&sim.inner.grants);
        if let Some((subject, expires_at)) = grants.access.get(&token) {
            (now() < *expires_at
                && subject.client_id == portal.client_id
                && subject.idp_domain == portal.idp_domain)
                .then(|| json!({"sub": subject.sub, "email": subject.user.email}))
        } else if let Some((host, expires_at)) = grants.guest.get(&token) {
            (now() < *expires_at && *host == portal.host).then(|| Value::Null)
        } else {
            None
        }
    };
    let Some(viewer) = viewer else {
        return refuse("the token is unknown, expired, or not for this portal");
    };
    if let Some(imposed) = sim.inner.api.imposed() {
        return imposed;
    }
    if serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_owned))
        .is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errors": [{"message": "a JSON body with a `query` is required"}]})),
        )
            .into_response();
    }
    Json(json!({"data": {"viewer": viewer}})).into_response()
}

#[cfg(test)]
mod tests;
