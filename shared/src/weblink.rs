//! Administrate WebLink: guest portal tokens, and the PKCE login, callback and refresh.
//!
//! WebLink (PLATFORMS.md, "Administrate WebLink") serves portals such as
//! `mycompany.administrateweblink.com`. A guest gets a portal token from the portal-auth service;
//! a user signs in at the portal's identity provider with OAuth 2.0 + PKCE (a public client: there
//! is no client secret, so the verifier is what proves the callback is ours). The IDP settings of
//! a portal (brand, client id, IDP domain) come from Administrate's host lookup service and are
//! cached per container.
//!
//! Portals are never taken freely from a request: only those in `WEBLINK_PORTALS` are served,
//! and the IDP domain must be a plain host name.
//!
//! - `POST /weblink/guest-token` `{"portal"}` → `{"portal_token", "expires_at"}`.
//! - `GET /weblink/login?portal=` → verifier and S256 challenge, one-time state (holding the
//!   verifier) bound to the browser, redirect to `https://<domain>/authorize`.
//! - `GET /weblink/callback?code&state` → state consumed once, code exchanged with the
//!   verifier, id_token verified, session stored with its tokens sealed, session cookie set.
//! - `POST /weblink/refresh` (session cookie) → a fresh access token, refreshed once across
//!   containers by the shared machinery.

use crate::app::App;
use crate::config::{ConfigError, Vars};
use crate::crypto;
use crate::error::{Error, Result};
use crate::flow::{self, CookieSpec};
use crate::oidc::{self, Expect, Jwks};
use crate::refresh::{self, Grant, RefreshError, Refresher};
use crate::store::{Condition, Item, Key, Write, now};
use crate::web::{self, Format, Params};
use base64::Engine as _;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The platform's name: its store partitions, its routes.
pub const PLATFORM: &str = "weblink";
const STATE_COOKIE: CookieSpec = flow::state_cookie("gh-weblink-state");
const SESSION_SECONDS: i64 = 30 * 24 * 3600;
const SESSION_COOKIE: CookieSpec = CookieSpec {
    name: "gh-weblink-session",
    same_site: cookie::SameSite::Lax,
    max_age: SESSION_SECONDS,
};
/// How long a portal's IDP settings are cached.
const LOOKUP_TTL: Duration = Duration::from_secs(600);
/// A guest portal token lives an hour.
const GUEST_TOKEN_SECONDS: i64 = 3600;
/// The characters RFC 7636 allows in a verifier.
const VERIFIER_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

/// How the token endpoint is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON body (the document).
    Json,
    /// A form body.
    Form,
}

/// WebLink settings (`WEBLINK_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `WEBLINK_PORTALS`: the portals the app serves, comma-separated (required to serve any).
    pub portals: Vec<String>,
    /// `WEBLINK_GUEST_URL` (default `https://portal-auth.administratehq.com/portal/guest`).
    pub guest_url: String,
    /// `WEBLINK_HOST_LOOKUP_URL` (default `https://host-lookup.getadministrate.com/portal_config`).
    pub host_lookup_url: String,
    /// `WEBLINK_IDP_BASE`: the IDP's base URL, `{domain}` standing for the looked-up domain
    /// (default `https://{domain}`).
    pub idp_base: String,
    /// `WEBLINK_ISSUERS` (default `https://identity.getadministrate.com/`, trailing slash).
    pub issuers: Vec<String>,
    /// `WEBLINK_AUDIENCES`: allowed `aud` besides the portal's client id (default `weblink2ui`).
    pub audiences: Vec<String>,
    /// `WEBLINK_JWKS_URL` (default `https://identity.getadministrate.com/.well-known/jwks.json`).
    pub jwks_url: String,
    /// `WEBLINK_TOKEN_ENCODING`: `json` (default) or `form`.
    pub token_encoding: Encoding,
    /// `WEBLINK_CLOCK_SKEW_SECONDS` (default 60).
    pub skew: u64,
}

impl Settings {
    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let list = |name: &str, default: &str| -> Vec<String> {
            vars.get_or(name, default)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let url = |name: &str, default: &str| -> Result<String, ConfigError> {
            Ok(vars
                .url(name, default)?
                .as_str()
                .trim_end_matches('/')
                .to_owned())
        };
        let idp_base = vars
            .get_or("WEBLINK_IDP_BASE", "https://{domain}")
            .to_owned();
        if !idp_base.contains("{domain}") {
            return Err(ConfigError {
                name: "WEBLINK_IDP_BASE".into(),
                problem: "must contain {domain}".into(),
            });
        }
        Ok(Self {
            portals: list("WEBLINK_PORTALS", ""),
            guest_url: url(
                "WEBLINK_GUEST_URL",
                "https://portal-auth.administratehq.com/portal/guest",
            )?,
            host_lookup_url: url(
                "WEBLINK_HOST_LOOKUP_URL",
                "https://host-lookup.getadministrate.com/portal_config",
            )?,
            idp_base: idp_base.trim_end_matches('/').to_owned(),
            issuers: list("WEBLINK_ISSUERS", "https://identity.getadministrate.com/"),
            audiences: list("WEBLINK_AUDIENCES", "weblink2ui"),
            jwks_url: url(
                "WEBLINK_JWKS_URL",
                "https://identity.getadministrate.com/.well-known/jwks.json",
            )?,
            token_encoding: match vars.get_or("WEBLINK_TOKEN_ENCODING", "json") {
                "json" => Encoding::Json,
                "form" => Encoding::Form,
                _ => {
                    return Err(ConfigError {
                        name: "WEBLINK_TOKEN_ENCODING".into(),
                        problem: "must be `json` or `form`".into(),
                    });
                }
            },
            skew: vars.seconds("WEBLINK_CLOCK_SKEW_SECONDS", 60)?.as_secs(),
        })
    }
}

/// A portal's IDP settings, as the host lookup service gives them.
#[derive(Debug, Clone, Deserialize)]
pub struct PortalConfig {
    /// The portal's brand id.
    pub brand: String,
    /// The IDP.
    pub idp: Idp,
}

/// A portal's identity provider.
#[derive(Debug, Clone, Deserialize)]
pub struct Idp {
    /// The OAuth client id of the portal's front end.
    pub client_id: String,
    /// The IDP's host name.
    pub domain: String,
}

/// WebLink's per-container state: settings, the IDP keys, and cached portal lookups.
pub struct Weblink {
    /// The settings.
    pub settings: Settings,
    /// The IDP's signing keys.
    pub jwks: Jwks,
    lookups: tokio::sync::Mutex<HashMap<String, (Instant, PortalConfig)>>,
}

impl Weblink {
    /// From the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let settings = Settings::from_vars(vars)?;
        Ok(Self {
            jwks: Jwks::new(settings.jwks_url.clone()),
            settings,
            lookups: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn allowed(&self, portal: &str) -> Result<()> {
        if self
            .settings
            .portals
            .iter()
            .any(|p| p.eq_ignore_ascii_case(portal))
        {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "`{}` is not a portal this app serves",
                web::printable(portal)
            )))
        }
    }

    fn idp_url(&self, domain: &str, path: &str) -> String {
        format!(
            "{}{path}",
            self.settings.idp_base.replace("{domain}", domain)
        )
    }
}

/// Whether `domain` is a plain host name (so an IDP URL built from it cannot point elsewhere).
fn is_host_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The S256 code challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::sha256(verifier.as_bytes()))
}

/// A fresh PKCE verifier: 64 characters of RFC 7636's unreserved set, from the CSPRNG.
pub fn new_verifier() -> Result<String> {
    Ok(crypto::random_string(VERIFIER_ALPHABET, 64)?)
}

/// The portal's IDP settings: cached per container for ten minutes.
pub async fn portal_config(app: &App, portal: &str) -> Result<PortalConfig> {
    let w = &app.weblink;
    let mut cache = w.lookups.lock().await;
    if let Some((at, config)) = cache.get(portal)
        && at.elapsed() < LOOKUP_TTL
    {
        return Ok(config.clone());
    }
    let mut url = url::Url::parse(&w.settings.host_lookup_url)
        .map_err(|_| Error::Internal("bad host lookup URL".into()))?;
    url.query_pairs_mut().append_pair("host", portal);
    let resp = app.http.get(url).send().await.map_err(|e| {
        Error::Upstream(format!(
            "Administrate's host lookup {}",
            crate::http::describe(&e)
        ))
    })?;
    if resp.status().as_u16() == 404 {
        return Err(Error::NotFound(
            "Administrate does not know this portal".into(),
        ));
    }
    if !resp.status().is_success() {
        return Err(Error::Upstream(format!(
            "Administrate's host lookup answered {}",
            resp.status().as_u16()
        )));
    }
    let config: PortalConfig = resp
        .json()
        .await
        .map_err(|_| Error::Upstream("Administrate's host lookup answered unreadably".into()))?;
    if !is_host_name(&config.idp.domain) {
        return Err(Error::Upstream(
            "Administrate's host lookup gave an IDP domain that is not a host name".into(),
        ));
    }
    cache.insert(portal.to_owned(), (Instant::now(), config.clone()));
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Guest tokens

/// `POST /weblink/guest-token`.
pub async fn guest_token(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Json, guest_token_flow(app, &req).await)
}

async fn guest_token_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    web::require_content_type(req, "application/json")?;
    let body: Map<String, Value> = web::json_body(
        web::body(req, 4096)?,
        "the body must be a JSON object `{\"portal\": ...}`",
    )?;
    let portal = body
        .get("portal")
        .or_else(|| body.get("domain"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest("`portal` is missing".into()))?;
    app.weblink.allowed(portal)?;
    let resp = app
        .http
        .post(&app.weblink.settings.guest_url)
        .json(&json!({ "domain": portal }))
        .send()
        .await
        .map_err(|e| {
            Error::Upstream(format!(
                "Administrate's portal auth {}",
                crate::http::describe(&e)
            ))
        })?;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200..=299 => {
            let token = answer
                .get("portal_token")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::Upstream("Administrate's portal auth gave no token".into())
                })?;
            Ok(web::json(
                StatusCode::OK,
                &json!({ "portal_token": token, "expires_at": now() + GUEST_TOKEN_SECONDS }),
            ))
        }
        404 => Err(Error::NotFound(
            "Administrate does not know this portal".into(),
        )),
        403 => {
            let wait = answer
                .get("lock_duration")
                .and_then(Value::as_u64)
                .unwrap_or(60);
            let mut resp = web::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "Too Many Requests", "message": "Administrate is rate limiting guest tokens for this portal", "retry_after": wait}),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(resp)
        }
        _ => Err(Error::Upstream(format!(
            "Administrate's portal auth answered {status}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Login, callback, refresh

/// `GET /weblink/login?portal=`.
pub async fn login(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Html, login_flow(app, &req).await)
}

async fn login_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    let portal = q.require("portal")?.to_ascii_lowercase();
    app.weblink.allowed(&portal)?;
    let config = portal_config(app, &portal).await?;
    // Everything that can fail comes before the state is stored: a refusal stores nothing.
    let keys = app.secrets.app_keys().await?;
    let redirect_uri = app.public_url(req, "/weblink/callback")?;
    let mut url =
        url::Url::parse(&app.weblink.idp_url(&config.idp.domain, "/authorize")).map_err(|_| {
            Error::Upstream(
                "the URL of Administrate's sign-in service for the portal is invalid".into(),
            )
        })?;
    let verifier = new_verifier()?;
    let mut data = Map::new();
    data.insert("portal".into(), portal.clone().into());
    data.insert("verifier".into(), verifier.clone().into());
    let state = flow::begin(app, PLATFORM, data).await?;
    url.query_pairs_mut()
        .append_pair("brand", &config.brand)
        .append_pair("client_id", &config.idp.client_id)
        .append_pair("code_challenge", &code_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("state", &state);
    let mut resp = web::redirect(url.as_str())?;
    web::set_cookie(&mut resp, &STATE_COOKIE.set(app, &keys, &state))?;
    Ok(resp)
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    id_token: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
}

async fn token_call(
    app: &App,
    domain: &str,
    fields: &[(&str, &str)],
) -> std::result::Result<TokenReply, RefreshError> {
    let url = app.weblink.idp_url(domain, "/token");
    let request = app.http.post(&url);
    let request = match app.weblink.settings.token_encoding {
        Encoding::Json => {
            let body: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            request.json(&body)
        }
        Encoding::Form => request.form(fields),
    };
    refresh::token_request(request, "Administrate's sign-in service for the portal").await
}

fn session_key(session_id: &str) -> Key {
    Key::new(format!("session#{PLATFORM}"), session_id)
}

/// `GET /weblink/callback?code&state`.
pub async fn callback(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Html, callback_flow(app, &req).await)
}

async fn callback_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    if let Some(error) = q.get("error") {
        return Err(Error::BadRequest(format!(
            "the sign-in ended with `{}`; start again",
            web::printable(error)
        )));
    }
    let code = q.require("code")?;
    let state_id = q.require("state")?;
    let state = flow::read_bound(app, &STATE_COOKIE, req, PLATFORM, Some(state_id)).await?;
    let keys = app.secrets.app_keys().await?;
    let text = |name: &str| {
        state
            .data
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (portal, verifier) = (text("portal"), text("verifier"));
    let config = portal_config(app, &portal).await?;
    let redirect_uri = app.public_url(req, "/weblink/callback")?;
    let reply = token_call(
        app,
        &config.idp.domain,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &config.idp.client_id),
            ("code_verifier", &verifier),
            ("redirect_uri", &redirect_uri),
        ],
    )
    .await
    .map_err(|e| match e {
        RefreshError::InvalidGrant => {
            Error::BadRequest("the portal's sign-in service refused the code; sign in again".into())
        }
        RefreshError::Failed(e) => e,
    })?;
    let id_token = reply.id_token.as_deref().ok_or_else(|| {
        Error::Upstream("Administrate's sign-in service for the portal returned no id_token".into())
    })?;
    let s = &app.weblink.settings;
    let mut audiences = s.audiences.clone();
    audiences.push(config.idp.client_id.clone());
    let claims = oidc::verify_id_token(
        &app.http,
        &app.weblink.jwks,
        id_token,
        &Expect {
            issuers: &s.issuers,
            audiences: &audiences,
            nonce: None,
            code: None,
            access_token: Some(&reply.access_token),
            skew: s.skew,
        },
    )
    .await?;
    let claim = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = [claim("given_name"), claim("family_name")]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");

    let session_id = crypto::random_token(24)?;
    let key = session_key(&session_id);
    let mut attrs = Map::new();
    attrs.insert("portal".into(), portal.clone().into());
    attrs.insert("sub".into(), claim("sub").into());
    attrs.insert("email".into(), claim("email").into());
    attrs.insert("name".into(), name.clone().into());
    attrs.insert("idp_domain".into(), config.idp.domain.clone().into());
    attrs.insert("client_id".into(), config.idp.client_id.clone().into());
    let grant = Grant {
        access_token: SecretString::from(reply.access_token),
        refresh_token: reply.refresh_token.map(SecretString::from),
        expires_in: reply.expires_in.unwrap_or(3600),
        extra: Vec::new(),
    };
    refresh::seal(&keys, &key, &grant, &mut attrs)?;
    // The state's consumption and the session commit together.
    flow::commit(
        app,
        &[
            state.consume(),
            Write::Put(
                Item::new(key, attrs).expiring_at(now() + SESSION_SECONDS),
                Condition::Absent,
            ),
        ],
    )
    .await?;
    tracing::info!(portal, "weblink session started");

    let who = if name.is_empty() {
        claim("email")
    } else {
        name
    };
    let mut resp = web::html_page(
        StatusCode::OK,
        "Signed in",
        &format!(
            "<p>Signed in to <strong>{}</strong> as <strong>{}</strong> (<code>{}</code>).</p>",
            web::escape(&portal),
            web::escape(&who),
            web::escape(&claim("email"))
        ),
    );
    web::set_cookie(&mut resp, &SESSION_COOKIE.set(app, &keys, &session_id))?;
    web::set_cookie(&mut resp, &STATE_COOKIE.clear(app))?;
    Ok(resp)
}

/// Refreshes WebLink tokens at the session's IDP.
struct WeblinkRefresher<'a> {
    domain: &'a str,
    client_id: &'a str,
}

#[async_trait::async_trait]
impl Refresher for WeblinkRefresher<'_> {
    async fn refresh(
        &self,
        app: &App,
        refresh_token: &SecretString,
    ) -> std::result::Result<Grant, RefreshError> {
        let reply = token_call(
            app,
            self.domain,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
                ("client_id", self.client_id),
            ],
        )
        .await?;
        Ok(Grant {
            access_token: SecretString::from(reply.access_token),
            refresh_token: reply.refresh_token.map(SecretString::from),
            expires_in: reply.expires_in.unwrap_or(3600),
            extra: Vec::new(),
        })
    }
}

/// `POST /weblink/refresh`: the session's access token, fresh.
pub async fn refresh(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Json, refresh_flow(app, &req).await)
}

async fn refresh_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    let keys = app.secrets.app_keys().await?;
    let session_id = SESSION_COOKIE
        .read(app, &keys, req)
        .map_err(|_| Error::Unauthorized("no valid session; sign in".into()))?;
    let key = session_key(&session_id);
    let session = app
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::Unauthorized("the session has ended; sign in".into()))?;
    let domain = session.str("idp_domain").unwrap_or_default().to_owned();
    let client_id = session.str("client_id").unwrap_or_default().to_owned();
    let refresher = WeblinkRefresher {
        domain: &domain,
        client_id: &client_id,
    };
    let item = refresh::fresh_item(app, &key, &refresher).await?;
    let tokens = refresh::open(&keys, &item)?;
    Ok(web::json(
        StatusCode::OK,
        &json!({
            "access_token": tokens.access_token.expose_secret(),
            "expires_at": tokens.expires_at,
            "portal": item.str("portal"),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PLATFORMS.md's vectors: RFC 7636 appendix B, and the Administrate document's own.
    #[test]
    fn pkce_vectors() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            code_challenge("unique_and_r@nd0M!_string"),
            "Ia6CrXEp0F-eOk_i1JHCLF_LkHW4zBoRYBADp6b0kjg"
        );
    }

    #[test]
    fn verifiers_are_long_and_unreserved() {
        let v = new_verifier().unwrap();
        assert!((43..=128).contains(&v.len()));
        assert!(v.bytes().all(|b| VERIFIER_ALPHABET.contains(&b)));
        assert_ne!(v, new_verifier().unwrap());
    }

    #[test]
    fn idp_domains_must_be_host_names() {
        assert!(is_host_name("identity.demo"));
        assert!(is_host_name("auth.example-1.com"));
        for bad in ["", "evil.com/x", "a@b.com", "b.com:443", "a..b", "x y"] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }
}
