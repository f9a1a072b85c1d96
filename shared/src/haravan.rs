//! Haravan: OpenID Connect login and install, webhooks, front-channel logout.
//!
//! Haravan, an IdentityServer (docs/platforms.md, "Haravan"). Both login and install use the hybrid
//! flow (`response_type=code id_token`) with `response_mode=form_post`: Haravan answers with an
//! HTML form that the browser POSTs to us, cross-site — so the state cookie of these flows is
//! `SameSite=None; Secure`, and each request carries its own `state` and a fresh `nonce` (the
//! document's fixed nonce would make id_tokens replayable).
//!
//! - `GET /haravan/install/login` → authorize with the login scopes.
//! - `POST /haravan/install/login` (form_post) → verify the id_token; installed org: an cx
//!   session; not installed and the user is an admin: the install authorize redirect with the
//!   full scopes; otherwise 403.
//! - `POST /haravan/install/grandservice` (form_post) → verify, exchange the code once, store the
//!   install (tokens sealed), record the session, subscribe webhooks, show the app page.
//! - `GET|POST /haravan/webhooks` → the `hub.challenge` handshake; signed deliveries, deduped.
//! - `GET /haravan/logout?sid=` → remove that sid's sessions.
//!
//! Sessions are two items: `session#haravan#<orgid>` / `<session id>` (what the cookie names) and
//! an index `sid#haravan#<sid>` / `<orgid>#<session id>`, so that logout by sid and uninstall by
//! org are each a query of one partition, never a scan.

use crate::config::{ConfigError, Vars};
use crate::connection;
use crate::context::{Deps, Platform};
use crate::crypto;
use crate::error::{Error, Reason, Result};
use crate::events::{self, Event};
use crate::flow::{self, CookieSpec};
use crate::http::PlatformCall as _;
use crate::oidc::{self, Discovery, Expect, Jwks};
use crate::once::{self, Applied};
use crate::refresh::{self, Grant, RefreshError, Refresher, SealedTokens};
use crate::store::{Condition, Item, Key, Record, Write, now};
use crate::web::{self, Params};
use cookie::SameSite;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The platform's name: its secret, its store partitions, its routes.
pub const PLATFORM: &str = "haravan";
/// The largest form_post or webhook body accepted.
pub const MAX_BODY: usize = 256 * 1024;
/// How long an app session lasts.
const SESSION_SECONDS: i64 = 12 * 3600;
/// Scopes an install always requests: identity, the install grant, a refresh token, webhooks.
const INSTALL_SCOPES: &str =
    "openid profile email org userinfo grant_service offline_access wh_api";

const STATE_COOKIE: CookieSpec = CookieSpec {
    name: "gh-haravan-state",
    same_site: SameSite::None,
    max_age: flow::STATE_TTL_SECONDS,
};
const SESSION_COOKIE: CookieSpec = CookieSpec {
    name: "gh-haravan-session",
    same_site: SameSite::None,
    max_age: SESSION_SECONDS,
};

/// Haravan settings (`HARAVAN_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HARAVAN_ACCOUNTS_BASE`: the identity server (default `https://accounts.haravan.com`),
    /// whose metadata is read at `<accounts>/.well-known/openid-configuration`.
    pub accounts_base: String,
    /// `HARAVAN_DISCOVERY` (default `true`): take the authorize, token and key endpoints from
    /// the identity server's metadata (its `issuer` must be an allowed one). `false`: Haravan's
    /// documented paths under the accounts base, with no metadata fetch, for a server whose
    /// metadata is missing or wrong.
    pub discovery: bool,
    /// `HARAVAN_AUTHORIZE_URL`: overrides the authorize endpoint (without discovery:
    /// `<accounts>/connect/authorize`).
    pub authorize_url: Option<String>,
    /// `HARAVAN_TOKEN_URL`: overrides the token endpoint (without discovery:
    /// `<accounts>/connect/token`).
    pub token_url: Option<String>,
    /// `HARAVAN_JWKS_URL`: overrides the signing keys' URL (without discovery:
    /// `<accounts>/.well-known/openid-configuration/jwks`); `jwks_url` is what applies without
    /// discovery, `jwks_url_set` whether it was configured and so overrides the metadata.
    pub jwks_url: String,
    /// Whether `HARAVAN_JWKS_URL` was set.
    pub jwks_url_set: bool,
    /// `HARAVAN_ISSUERS`: comma-separated allowed `iss` values (default the current and the old
    /// host).
    pub issuers: Vec<String>,
    /// `HARAVAN_WEBHOOK_BASE`: the webhook service (default `https://webhook.haravan.com`).
    pub webhook_base: String,
    /// `HARAVAN_API_BASE`: the commerce API (default `https://apis.haravan.com`).
    pub api_base: String,
    /// `HARAVAN_LOGIN_SCOPES` (default `openid profile email org userinfo`).
    pub login_scopes: String,
    /// The install scopes: the required ones (identity, `grant_service`, `offline_access`,
    /// `wh_api`) plus `HARAVAN_APP_SCOPES`, the scopes the app registered (default
    /// `com.read_shop`).
    pub install_scopes: String,
    /// `HARAVAN_CLOCK_SKEW_SECONDS` (default 60).
    pub skew: u64,
    /// `HARAVAN_INSTALL_PROMPT`: the `prompt` of the install authorize (default `consent`;
    /// `omit` sends none). An IdentityServer issues a refresh token for `offline_access` only
    /// with consent, so without it a re-install may come back without one.
    pub install_prompt: Option<String>,
}

impl Settings {
    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let accounts = vars.url("HARAVAN_ACCOUNTS_BASE", "https://accounts.haravan.com")?;
        let accounts_base = accounts.as_str().trim_end_matches('/').to_owned();
        let jwks_default = format!("{accounts_base}/.well-known/openid-configuration/jwks");
        let list = |name: &str, default: &str| -> Vec<String> {
            vars.get_or(name, default)
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut install: Vec<String> = list("HARAVAN_APP_SCOPES", "com.read_shop");
        for required in INSTALL_SCOPES.split(' ').rev() {
            if !install.iter().any(|s| s == required) {
                install.insert(0, required.to_owned());
            }
        }
        let base = |name: &str, default: &str| -> Result<String, ConfigError> {
            Ok(vars
                .url(name, default)?
                .as_str()
                .trim_end_matches('/')
                .to_owned())
        };
        let optional = |name: &str| -> Result<Option<String>, ConfigError> {
            vars.get(name).map(|_| base(name, "")).transpose()
        };
        Ok(Self {
            discovery: vars.flag("HARAVAN_DISCOVERY", true)?,
            authorize_url: optional("HARAVAN_AUTHORIZE_URL")?,
            token_url: optional("HARAVAN_TOKEN_URL")?,
            jwks_url_set: vars.get("HARAVAN_JWKS_URL").is_some(),
            jwks_url: base("HARAVAN_JWKS_URL", &jwks_default)?,
            issuers: list(
                "HARAVAN_ISSUERS",
                "https://accounts.haravan.com,https://accounts.hara.vn",
            ),
            webhook_base: base("HARAVAN_WEBHOOK_BASE", "https://webhook.haravan.com")?,
            api_base: base("HARAVAN_API_BASE", "https://apis.haravan.com")?,
            login_scopes: list("HARAVAN_LOGIN_SCOPES", "openid profile email org userinfo")
                .join(" "),
            install_scopes: install.join(" "),
            skew: vars.seconds("HARAVAN_CLOCK_SKEW_SECONDS", 60)?.as_secs(),
            install_prompt: oidc::prompt_setting(vars, "HARAVAN_INSTALL_PROMPT")?,
            accounts_base,
        })
    }
}

/// Haravan's per-container state: settings, the cached metadata and the cached signing keys.
pub struct Haravan {
    /// What every platform shares.
    pub deps: Arc<Deps>,
    /// The settings.
    pub settings: Settings,
    /// Haravan's signing keys.
    pub jwks: Jwks,
    /// The identity server's metadata, when discovery is on.
    pub discovery: Option<Arc<Discovery>>,
}

crate::context::derefs_to_deps!(Haravan);

impl Platform for Haravan {
    fn build(deps: Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        let settings = Settings::from_vars(vars)?;
        let discovery = settings.discovery.then(|| {
            Arc::new(Discovery::new(
                &settings.accounts_base,
                settings.issuers.clone(),
            ))
        });
        let jwks = match &discovery {
            Some(d) if !settings.jwks_url_set => Jwks::discovered(d.clone()),
            _ => Jwks::new(settings.jwks_url.clone()),
        };
        Ok(Self {
            deps,
            jwks,
            discovery,
            settings,
        })
    }
}

impl Haravan {
    /// The authorize endpoint: the setting, else the metadata's, else the documented path.
    ///
    /// The platform client is built only for the discovery fetch: building it loads the CA
    /// store, which a sign-in redirect to a configured or documented URL does not need.
    async fn authorize_url(&self) -> Result<String> {
        let s = &self.settings;
        if let Some(url) = &s.authorize_url {
            return Ok(url.clone());
        }
        match &self.discovery {
            Some(d) => Ok(d
                .metadata(self.http.client()?)
                .await?
                .authorization_endpoint
                .clone()),
            None => Ok(format!("{}/connect/authorize", s.accounts_base)),
        }
    }

    /// The token endpoint: the setting, else the metadata's, else the documented path.
    async fn token_url(&self, http: &reqwest::Client) -> Result<String> {
        let s = &self.settings;
        if let Some(url) = &s.token_url {
            return Ok(url.clone());
        }
        match &self.discovery {
            Some(d) => Ok(d.metadata(http).await?.token_endpoint.clone()),
            None => Ok(format!("{}/connect/token", s.accounts_base)),
        }
    }
}

/// A stored install (`install#haravan` / `<orgid>`): who installed the app, its tokens, and the
/// shop details the latest `shop/update` delivery gave. Those and the tokens are each written
/// in place by their own writers (a delivery, a refresh), never by putting the whole record
/// again; only the install itself puts it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Install {
    /// Haravan's org id: the tenant key.
    #[serde(default)]
    pub orgid: String,
    /// The org's name as the id_token gave it (empty when it gave none).
    #[serde(default)]
    pub orgname: String,
    /// The `sub` of the admin who installed it.
    #[serde(default)]
    pub installed_by: String,
    /// Unix seconds; what tells an old uninstall delivery from one for this install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<i64>,
    /// The scopes granted (or, when the token reply named none, those requested).
    #[serde(default)]
    pub scope: String,
    /// The grant asked for offline access and came back without a refresh token.
    #[serde(default)]
    pub no_refresh_token: bool,
    /// The tokens, sealed to this item.
    #[serde(flatten)]
    pub tokens: SealedTokens,
    /// Whether the webhook subscription succeeded.
    #[serde(default)]
    pub webhooks_subscribed: bool,
    /// The shop details of the latest `shop/update` (written in place by the delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop: Option<Map<String, Value>>,
    /// When they came, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_updated_at: Option<i64>,
    /// What every connection carries (end user, status, times, index attributes).
    #[serde(flatten)]
    pub connection: crate::connection::Common,
}

impl Record for Install {
    const NAME: &'static str = "Haravan install";
}

/// A stored app session (`session#haravan#<orgid>` / `<session id>`, expiring): who signed in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The org signed in to.
    #[serde(default)]
    pub orgid: String,
    /// The user's `sub`.
    #[serde(default)]
    pub sub: String,
    /// Haravan's sign-in session id, empty when the id_token named none; what a front-channel
    /// logout names.
    #[serde(default)]
    pub sid: String,
    /// The user's name (empty when the id_token gave none).
    #[serde(default)]
    pub name: String,
}

impl Record for SessionRecord {
    const NAME: &'static str = "Haravan session";
}

/// The sid index entry of a session (`sid#haravan#<sid>` / `<orgid>#<session id>`, expiring
/// with it): its key says everything, it has no attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SidIndex {}

impl Record for SidIndex {
    const NAME: &'static str = "Haravan sid index entry";
}

/// What a sign-in is for: the callback it must come back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Purpose {
    /// `POST /haravan/install/login`, with the login scopes.
    Login,
    /// `POST /haravan/install/grandservice`, with the install scopes.
    Install,
}

/// The one-time state of a sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlowState {
    /// The nonce the id_token must carry.
    nonce: Option<String>,
    /// Which callback it is for.
    purpose: Purpose,
    /// The org being installed or signed in to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    orgid: Option<String>,
    /// Started by a connect link: the app's user the install is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_user: Option<String>,
    /// Started by a connect link: where the browser goes afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
}

impl Record for FlowState {
    const NAME: &'static str = "Haravan flow state";
}

/// The store key of an org's install.
pub fn install_key(orgid: &str) -> Key {
    Key::single(&format!("install#{PLATFORM}"), orgid)
}

fn session_key(orgid: &str, session_id: &str) -> Key {
    Key::new(format!("session#{PLATFORM}#{orgid}"), session_id)
}

fn sid_key(sid: &str, orgid: &str, session_id: &str) -> Key {
    Key::new(
        format!("sid#{PLATFORM}#{sid}"),
        format!("{orgid}#{session_id}"),
    )
}

/// The partition holding the sessions of one sid.
pub fn sid_partition(sid: &str) -> String {
    format!("sid#{PLATFORM}#{sid}")
}

/// The partition holding the sessions of one org.
pub fn org_sessions_partition(orgid: &str) -> String {
    format!("session#{PLATFORM}#{orgid}")
}

// ---------------------------------------------------------------------------------------------
// Login and install

/// What a verified id_token tells us.
struct Identity {
    orgid: String,
    orgname: Option<String>,
    sub: String,
    sid: Option<String>,
    name: Option<String>,
    is_admin: bool,
}

impl Identity {
    fn from_claims(claims: &Map<String, Value>) -> Result<Self> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let orgid = match claims.get("orgid") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Error::refused(
                    Reason::TokenInvalid,
                    "the id_token names no org",
                ));
            }
        };
        // `role` is a string or an array of strings; admin means equal to or containing "admin".
        let is_admin = match claims.get("role") {
            Some(Value::String(r)) => r == "admin",
            Some(Value::Array(roles)) => roles.iter().any(|r| r.as_str() == Some("admin")),
            _ => false,
        };
        Ok(Self {
            orgid,
            orgname: text("orgname"),
            sub: text("sub").unwrap_or_default(),
            sid: text("sid"),
            name: text("name"),
            is_admin,
        })
    }
}

async fn authorize_redirect(
    cx: &Haravan,
    req: &Request,
    purpose: Purpose,
    orgid: Option<&str>,
    link: Option<(Key, crate::connect::Link)>,
) -> Result<Response<Body>> {
    let h = &cx.settings;
    let (scope, callback) = match purpose {
        Purpose::Install => (&h.install_scopes, "/haravan/install/grandservice"),
        Purpose::Login => (&h.login_scopes, "/haravan/install/login"),
    };
    // Everything that can fail comes before the state is stored: a refusal stores nothing.
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let keys = cx.secrets.app_keys().await?;
    let redirect_uri = cx.public_url(req, callback)?;
    let mut url = url::Url::parse(&cx.authorize_url().await?)
        .map_err(|_| Error::Internal("bad authorize endpoint".into()))?;
    let nonce = crypto::random_token(24)?;
    let data = FlowState {
        nonce: Some(nonce.clone()),
        purpose,
        orgid: orgid.map(str::to_owned),
        end_user: link.as_ref().map(|(_, l)| l.end_user.clone()),
        return_to: link.as_ref().map(|(_, l)| l.return_to.clone()),
    };
    let state = crate::connect::begin_flow(cx, PLATFORM, data.to_attrs()?, link.as_ref()).await?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_mode", "form_post");
        q.append_pair("response_type", "code id_token");
        q.append_pair("scope", scope);
        q.append_pair("client_id", &creds.client_id);
        q.append_pair("redirect_uri", &redirect_uri);
        q.append_pair("nonce", &nonce);
        q.append_pair("state", &state);
        if let Some(org) = orgid {
            q.append_pair("orgid", org);
        }
        if purpose == Purpose::Install
            && let Some(prompt) = &h.install_prompt
        {
            q.append_pair("prompt", prompt);
        }
    }
    let mut resp = web::redirect(url.as_str())?;
    web::set_cookie(&mut resp, &STATE_COOKIE.set(cx, &keys, &state))?;
    Ok(resp)
}

/// The form_post fields, the state they belong to (checked against the browser's cookie and
/// consumed), and the verified id_token.
struct Callback {
    code: String,
    state: flow::Bound,
    /// What the state holds.
    data: FlowState,
    identity: Identity,
    /// The verified claims, which the token endpoint's id_token must agree with.
    claims: Map<String, Value>,
}

async fn read_callback(cx: &Haravan, req: &Request, purpose: Purpose) -> Result<Callback> {
    web::require_content_type(req, "application/x-www-form-urlencoded")?;
    let form = Params::parse(web::body_text(req, MAX_BODY)?)?;
    if let Some(error) = form.get("error") {
        return Err(Error::refused(
            Reason::PlatformRefused,
            format!("Haravan answered `{}`; start again", web::printable(error)),
        ));
    }
    let state_id = form.require("state")?;
    let code = form.require("code")?;
    let id_token = form.require("id_token")?;
    let state = flow::read_bound(cx, &STATE_COOKIE, req, PLATFORM, Some(state_id)).await?;
    // A state for no purpose this app knows is for neither callback.
    let Some(data) = state
        .record::<FlowState>()
        .ok()
        .filter(|data| data.purpose == purpose)
    else {
        return Err(Error::BadRequest(
            "this answer was sent to the wrong callback; start again".into(),
        ));
    };
    let claims = verify(cx, id_token, data.nonce.as_deref(), Some(code), None).await?;
    Ok(Callback {
        code: code.to_owned(),
        state,
        data,
        identity: Identity::from_claims(&claims)?,
        claims,
    })
}

/// `GET|POST /haravan/install/login`.
pub async fn login(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    if req.method() == Method::POST {
        login_callback(cx, req).await
    } else {
        login_start(cx, req).await
    }
}

async fn login_start(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    // A connect link: an install for one of the app's users, by whichever shop's admin signs
    // in; the link is consumed with the storing of the flow's state.
    if let Some(id) = q.get("link") {
        let link = crate::connect::read_link(cx, PLATFORM, id).await?;
        return authorize_redirect(cx, req, Purpose::Install, None, Some(link)).await;
    }
    let orgid = q
        .get("orgid")
        .map(|o| web::check_id("parameter `orgid`", o))
        .transpose()?;
    authorize_redirect(cx, req, Purpose::Login, orgid, None).await
}

async fn login_callback(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let cb = read_callback(cx, req, Purpose::Login).await?;
    let who = cb.identity;
    let installed = match cx.store.get(&install_key(&who.orgid)).await? {
        Some(item) => Some(item.record::<Install>()?).filter(|i| !i.tokens.needs_reauth),
        None => None,
    };
    match installed {
        Some(install) => {
            // The state's consumption and the session commit together.
            let session = Session::new(&who)?;
            let mut writes = vec![cb.state.consume()];
            writes.extend(session.writes()?);
            flow::commit(cx, &writes).await?;
            let mut resp = app_page(cx, &who, &install, None).await;
            session.set_cookie(cx, &mut resp).await?;
            Ok(resp)
        }
        None if who.is_admin => {
            tracing::info!(orgid = %who.orgid, "haravan admin login of a new org: installing");
            flow::commit(cx, &[cb.state.consume()]).await?;
            authorize_redirect(cx, req, Purpose::Install, Some(&who.orgid), None).await
        }
        None => Err(Error::refused(
            Reason::NotAllowed,
            "Gatehouse is not installed for this shop, and only a shop admin can install it. \
             Ask an admin of the shop to open the app.",
        )),
    }
}

/// A new app session for a signed-in user: the items that record it (written by the caller,
/// in the transaction that consumes the sign-in's state) and the cookie that names it.
struct Session {
    orgid: String,
    session_id: String,
    sid: String,
    record: SessionRecord,
    expires_at: i64,
}

impl Session {
    fn new(who: &Identity) -> Result<Self> {
        let sid = who.sid.clone().unwrap_or_default();
        let record = SessionRecord {
            orgid: who.orgid.clone(),
            sub: who.sub.clone(),
            sid: sid.clone(),
            name: who.name.clone().unwrap_or_default(),
        };
        Ok(Self {
            orgid: who.orgid.clone(),
            session_id: crypto::random_token(24)?,
            sid,
            record,
            expires_at: now() + SESSION_SECONDS,
        })
    }

    /// The session item and, when Haravan named a sign-in session, its sid index entry.
    fn writes(&self) -> Result<Vec<Write>> {
        let mut writes = vec![Write::Put(
            self.record
                .to_item(session_key(&self.orgid, &self.session_id))?
                .expiring_at(self.expires_at),
            Condition::Absent,
        )];
        if !self.sid.is_empty() {
            writes.push(Write::Put(
                SidIndex {}
                    .to_item(sid_key(&self.sid, &self.orgid, &self.session_id))?
                    .expiring_at(self.expires_at),
                Condition::Always,
            ));
        }
        Ok(writes)
    }

    /// Sets the session cookie on `resp`, and clears the sign-in's state cookie.
    async fn set_cookie(&self, cx: &Haravan, resp: &mut Response<Body>) -> Result<()> {
        let keys = cx.secrets.app_keys().await?;
        web::set_cookie(
            resp,
            &SESSION_COOKIE.set(cx, &keys, &format!("{}:{}", self.orgid, self.session_id)),
        )?;
        web::set_cookie(resp, &STATE_COOKIE.clear(cx))
    }
}

/// The org and session id of the request's valid session cookie, if its session still exists.
pub async fn session(cx: &Haravan, req: &Request) -> Result<Option<(String, String)>> {
    let keys = cx.secrets.app_keys().await?;
    let Ok(value) = SESSION_COOKIE.read(cx, &keys, req) else {
        return Ok(None);
    };
    let Some((orgid, session_id)) = value.split_once(':') else {
        return Ok(None);
    };
    Ok(cx
        .store
        .get(&session_key(orgid, session_id))
        .await?
        .map(|_| (orgid.to_owned(), session_id.to_owned())))
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    expires_in: Option<i64>,
    refresh_token: Option<SecretString>,
    id_token: Option<String>,
    scope: Option<String>,
}

async fn token_call(
    cx: &Haravan,
    form: &[(&str, &str)],
) -> std::result::Result<TokenReply, RefreshError> {
    let creds = cx
        .secrets
        .credentials(PLATFORM)
        .await
        .map_err(|e| RefreshError::Failed(e.into()))?;
    let body = creds.with_client_credentials(form);
    let url = cx
        .token_url(cx.http.client()?)
        .await
        .map_err(RefreshError::Failed)?;
    refresh::token_request(
        cx.http.client()?.post(&url).form(&body),
        PLATFORM,
        "Haravan's token endpoint",
    )
    .await
}

/// Verifies a Haravan id_token: our client id as audience, the allowed issuers, and whichever of
/// nonce, code (`c_hash`) and access token (`at_hash`) came with it.
async fn verify(
    cx: &Haravan,
    id_token: &str,
    nonce: Option<&str>,
    code: Option<&str>,
    access_token: Option<&str>,
) -> Result<Map<String, Value>> {
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let h = &cx.settings;
    let audiences = [creds.client_id.clone()];
    oidc::verify_id_token(
        cx.http.client()?,
        &cx.jwks,
        id_token,
        &Expect {
            issuers: &h.issuers,
            audiences: &audiences,
            nonce,
            code,
            access_token,
            skew: h.skew,
        },
    )
    .await
}

/// `POST /haravan/install/grandservice`. Started by a connect link, the browser goes back to
/// the link's `return_to` with the outcome (an org's id, or the reason it failed) instead of
/// the app page.
pub async fn install(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let cb = read_callback(cx, req, Purpose::Install).await?;
    let Some(return_to) = cb.data.return_to.clone() else {
        return install_checked(cx, req, cb).await;
    };
    let orgid = cb.identity.orgid.clone();
    let location = match install_checked(cx, req, cb).await {
        Ok(_) => crate::connect::outcome_url(&return_to, Ok((PLATFORM, &orgid))),
        Err(e) => {
            tracing::warn!(status = e.status().as_u16(), error = %e, "haravan linked install refused");
            crate::connect::outcome_url(&return_to, Err(e.code()))
        }
    };
    let mut resp = web::redirect(&location)?;
    web::set_cookie(&mut resp, &STATE_COOKIE.clear(cx))?;
    Ok(resp)
}

async fn install_checked(cx: &Haravan, req: &Request, cb: Callback) -> Result<Response<Body>> {
    let who = &cb.identity;
    // A link's install is for whichever shop the admin signs in to; any other names its org.
    let linked = cb.data.end_user.is_some() && cb.data.orgid.is_none();
    if !linked && cb.data.orgid.as_deref() != Some(who.orgid.as_str()) {
        return Err(Error::refused(
            Reason::WrongTenant,
            "Haravan signed in another shop than the one being installed; start again",
        ));
    }
    if !who.is_admin {
        return Err(Error::refused(
            Reason::NotAllowed,
            "only a shop admin can install the app",
        ));
    }
    let redirect_uri = cx.public_url(req, "/haravan/install/grandservice")?;
    let keys = cx.secrets.app_keys().await?;
    let session = Session::new(who)?;
    // The code's mark, the state's consumption, the install and the session commit together.
    let (install, subscribed) = flow::exchange_once(cx, PLATFORM, &cb.code, || async {
        let reply = token_call(
            cx,
            &[
                ("grant_type", "authorization_code"),
                ("code", &cb.code),
                ("redirect_uri", &redirect_uri),
            ],
        )
        .await
        .map_err(|e| e.for_code("Haravan"))?;
        if let Some(id_token) = &reply.id_token {
            let back = verify(
                cx,
                id_token,
                None,
                None,
                Some(reply.access_token.expose_secret()),
            )
            .await?;
            // The code must have been redeemed for who signed in, in the org being installed.
            oidc::same_identity(&cb.claims, &back, &["orgid"])?;
        }
        let key = install_key(&who.orgid);
        // A grant that asked for offline_access and came back without a refresh token works
        // until the access token expires and then needs the admin again: say so now.
        let no_refresh_token = reply.refresh_token.is_none()
            && cx
                .settings
                .install_scopes
                .split(' ')
                .any(|s| s == "offline_access");
        if no_refresh_token {
            tracing::warn!(orgid = %who.orgid, "haravan install granted no refresh token");
        }
        let grant = Grant {
            access_token: reply.access_token.clone(),
            refresh_token: reply.refresh_token.clone(),
            expires_in: reply.expires_in.unwrap_or(86_400),
            extra: Vec::new(),
        };
        let tokens = SealedTokens::seal(&keys, &key, &grant)?;
        // A re-install keeps the connection's creation time (and end user) and reports an
        // update.
        let earlier = cx.store.get(&key).await?;
        let (created_at, event) = connection::earlier(earlier.as_ref());
        let end_user = cb.data.end_user.clone().or_else(|| {
            earlier
                .as_ref()
                .and_then(|i| connection::view(i).ok())
                .and_then(|c| c.end_user)
        });
        let subscribed = subscribe_webhooks(cx, reply.access_token.expose_secret()).await;
        let install = Install {
            orgid: who.orgid.clone(),
            orgname: who.orgname.clone().unwrap_or_default(),
            installed_by: who.sub.clone(),
            installed_at: Some(now()),
            scope: reply
                .scope
                .clone()
                .unwrap_or_else(|| cx.settings.install_scopes.clone()),
            no_refresh_token,
            tokens,
            webhooks_subscribed: subscribed,
            shop: None,
            shop_updated_at: None,
            connection: connection::Common {
                return_to: cb.data.return_to.clone().or_else(|| {
                    earlier
                        .as_ref()
                        .and_then(|i| i.record::<connection::Common>().ok())
                        .and_then(|c| c.return_to)
                }),
                ..connection::Common::new(PLATFORM, &key, end_user.as_deref(), created_at, now())
            },
        };
        let item = install.to_item(key)?;
        let event = connection::view(&item)?.event_write(event)?;
        let mut writes = vec![
            cb.state.consume(),
            Write::Put(item.clone(), Condition::Always),
            event,
        ];
        writes.extend(session.writes()?);
        Ok(((install, subscribed), writes))
    })
    .await?;
    crate::metrics::count(
        crate::metrics::names::INSTALLS,
        PLATFORM,
        &[],
        &[("tenant", &who.orgid)],
    );
    tracing::info!(orgid = %who.orgid, subscribed, "haravan install stored");

    let note = (!subscribed).then_some(
        "Webhooks could not be subscribed; uninstalls will not be noticed until they are.",
    );
    let mut resp = app_page(cx, who, &install, note).await;
    session.set_cookie(cx, &mut resp).await?;
    Ok(resp)
}

/// `POST <webhook base>/api/subscribe` with the new token: Haravan then sends the topics the cx
/// registered. A failure leaves the install in place, flagged, rather than failing the install.
async fn subscribe_webhooks(cx: &Haravan, access_token: &str) -> bool {
    let url = format!("{}/api/subscribe", cx.settings.webhook_base);
    let http = match cx.http.client() {
        Ok(http) => http,
        Err(e) => {
            tracing::warn!(error = %e, "haravan webhook subscription not sent");
            return false;
        }
    };
    match http
        .post(&url)
        .bearer_auth(access_token)
        .send_to(PLATFORM, "webhook_subscription")
        .await
    {
        Ok(resp) if resp.status().is_success() => true,
        Ok(resp) => {
            tracing::warn!(
                status = resp.status().as_u16(),
                "haravan webhook subscription refused"
            );
            false
        }
        Err(e) => {
            tracing::warn!(
                reason = crate::http::describe(&e),
                "haravan webhook subscription failed"
            );
            false
        }
    }
}

/// Haravan refreshes its tokens with `grant_type=refresh_token`.
#[async_trait::async_trait]
impl Refresher for Haravan {
    async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> std::result::Result<Grant, RefreshError> {
        let reply = token_call(
            self,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ],
        )
        .await?;
        Ok(Grant {
            access_token: reply.access_token,
            refresh_token: reply.refresh_token,
            expires_in: reply.expires_in.unwrap_or(86_400),
            extra: Vec::new(),
        })
    }
}

/// A valid access token for an org, refreshed when due.
pub async fn access_token(cx: &Haravan, orgid: &str) -> Result<SecretString> {
    refresh::access_token(cx, &install_key(orgid), cx).await
}

/// The app's page: who is signed in, and the shop as the API reports it with a fresh token.
async fn app_page(
    cx: &Haravan,
    who: &Identity,
    install: &Install,
    note: Option<&str>,
) -> Response<Body> {
    let shop = match access_token(cx, &who.orgid).await {
        Ok(token) => {
            let url = format!("{}/com/shop.json", cx.settings.api_base);
            let sent = match cx.http.client() {
                Ok(http) => http
                    .get(&url)
                    .bearer_auth(token.expose_secret())
                    .send_to(PLATFORM, "api")
                    .await
                    .ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "the haravan shop name cannot be fetched");
                    None
                }
            };
            match sent {
                Some(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["shop"]["name"].as_str().map(str::to_owned)),
                _ => None,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no haravan access token for the app page");
            None
        }
    };
    let no_refresh = install.no_refresh_token.then_some(
        "Haravan granted no refresh token (offline access), so the app loses access to the shop \
         when the current token expires. Install the app again and grant offline access.",
    );
    let notes: String = [note, no_refresh]
        .into_iter()
        .flatten()
        .map(|n| format!("<p><em>{}</em></p>", web::escape(n)))
        .collect();
    let body = format!(
        "<p>Signed in as <strong>{}</strong> on <strong>{}</strong> (org <code>{}</code>).</p>\
         <p>Shop, as the Haravan API reports it with the app's token: {}.</p>{}",
        web::escape(who.name.as_deref().unwrap_or(&who.sub)),
        web::escape(&install.orgname),
        web::escape(&who.orgid),
        shop.map(|s| format!("<strong>{}</strong>", web::escape(&s)))
            .unwrap_or_else(|| "not available right now".into()),
        notes,
    );
    web::html_page(StatusCode::OK, "Gatehouse for Haravan", &body)
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/// `GET|POST /haravan/webhooks`.
pub async fn webhooks(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    if req.method() == Method::GET {
        challenge(cx, req).await
    } else {
        let answer = delivery(cx, req).await;
        crate::metrics::webhook(PLATFORM, answer.as_ref().map(|a| *a == duplicate()));
        Ok(web::json(StatusCode::OK, &answer?))
    }
}

/// The subscription handshake: echo `hub.challenge` when `hub.verify_token` is ours.
async fn challenge(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    let token = q.require("hub.verify_token")?;
    let challenge = q.require("hub.challenge")?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let ours = creds
        .extra
        .get("webhook_verify_token")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Unavailable("no webhook verify token is configured".into()))?;
    if !crypto::constant_time_eq(ours.as_bytes(), token.as_bytes()) {
        return Err(Error::refused(
            Reason::SignatureInvalid,
            "the verify token does not match",
        ));
    }
    Ok(web::text(StatusCode::OK, challenge))
}

/// The signature header, under either of the names Haravan uses. Given twice, or under both
/// names, it is refused: a valid signature followed by another must not be read either way.
fn signature_header(req: &Request) -> Result<Option<&str>> {
    let mut found = None;
    for name in ["x-haravan-hmacsha256", "x-haravan-hmac-sha256"] {
        if let Some(value) = web::single_header(req.headers(), name)? {
            if found.is_some() {
                return Err(Error::refused(
                    Reason::DuplicateParameter,
                    "the signature is given under both X-Haravan-Hmacsha256 and X-Haravan-Hmac-Sha256",
                ));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// A delivery's answer ([`duplicate`] when it was seen before).
async fn delivery(cx: &Haravan, req: &Request) -> Result<Value> {
    let body = web::body(req, MAX_BODY)?;
    let signature = signature_header(req)?.ok_or_else(|| {
        Error::refused(
            Reason::SignatureMissing,
            "the X-Haravan-Hmacsha256 signature header is missing",
        )
    })?;
    let tag = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Error::refused(Reason::SignatureInvalid, "the signature is not base64"))?
    };
    let creds = cx.secrets.credentials(PLATFORM).await?;
    if !crypto::verify_hmac_sha256(creds.verifying_keys(), body, &tag) {
        return Err(Error::refused(
            Reason::SignatureInvalid,
            "the signature does not match",
        ));
    }
    let topic = web::single_header(req.headers(), "x-haravan-topic")?
        .ok_or_else(|| Error::BadRequest("the X-Haravan-Topic header is missing".into()))?
        .to_owned();
    // API Gateway joins a repeated header's values with commas, so a topic such as
    // `shop/update,app/uninstalled` is a repeated header that reached us as one.
    if topic.is_empty()
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
        || !events::is_topic(&topic)
    {
        return Err(Error::BadRequest(
            "the X-Haravan-Topic header is not one topic".into(),
        ));
    }
    let payload: Map<String, Value> = web::json_body(body, "the body is not a JSON object")?;
    // The topic and org headers are not signed; the body is. So the org is the body's when it
    // names one (and a header naming another is refused), an uninstall must say so in its body,
    // and a delivery's identity is its body alone: a signed body replayed under another topic
    // or org is a duplicate, not a new instruction.
    let mut signed_org = None;
    for field in ["org_id", "id"] {
        let org = match payload.get(field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            None => continue,
            Some(_) => {
                return Err(Error::BadRequest(format!(
                    "`{field}` is not an org id (a non-empty string or a whole number)"
                )));
            }
        };
        signed_org.get_or_insert(org);
    }
    let header_org = web::single_header(req.headers(), "x-haravan-org-id")?.map(str::to_owned);
    if let (Some(signed), Some(header)) = (&signed_org, &header_org)
        && signed != header
    {
        return Err(Error::BadRequest(
            "the X-Haravan-Org-Id header names another org than the signed body".into(),
        ));
    }
    let orgid = signed_org
        .or(header_org)
        .ok_or_else(|| Error::refused(Reason::MalformedBody, "the delivery names no org"))?;
    if topic == "app/uninstalled"
        && payload.get("event_type").and_then(Value::as_str) != Some("app/uninstalled")
    {
        return Err(Error::BadRequest(
            "the body of an app/uninstalled delivery must say so (`event_type`)".into(),
        ));
    }
    web::check_id("the delivery's org id", &orgid)?;
    if topic == "shop/update" {
        check_shop_fields(&payload)?;
    }

    // The mark and the effect commit together (see `once`).
    let mark = once::delivery_mark(PLATFORM, &hex::encode(crypto::sha256(body)));
    // Every delivery that is not a duplicate becomes one `webhook.<topic>` event, written with
    // its mark and effect (see `events`).
    let made_at = if topic == "app/uninstalled" {
        made_at(&payload)?
    } else {
        None
    };
    let event = Event::delivery(
        PLATFORM,
        &topic,
        &orgid,
        Value::Object(payload.clone()),
        &mark,
    );
    let answer = match topic.as_str() {
        "shop/update" => shop_update(cx, &mark, &event, &orgid, &payload).await?,
        "app/uninstalled" => uninstalled(cx, &mark, &event, &orgid, made_at).await?,
        other => {
            if events::mark_delivery(cx.store.as_ref(), &mark, &event).await? {
                tracing::info!(topic = %web::printable(other), orgid, "haravan webhook acknowledged, not handled");
                json!({"ok": true, "handled": false})
            } else {
                duplicate()
            }
        }
    };
    Ok(answer)
}

fn duplicate() -> Value {
    json!({"ok": true, "duplicate": true})
}

/// The shop fields a `shop/update` delivery may change.
const SHOP_FIELDS: [&str; 6] = [
    "name",
    "domain",
    "myharavan_domain",
    "email",
    "customer_email",
    "shop_owner",
];

/// A `shop/update` whose shop fields are not all text is refused (400) before anything is
/// written: the update replaces the stored shop details, so a field of another type would
/// otherwise have emptied them.
fn check_shop_fields(payload: &Map<String, Value>) -> Result<()> {
    for field in SHOP_FIELDS {
        match payload.get(field) {
            None | Some(Value::String(_)) | Some(Value::Null) => {}
            Some(_) => {
                return Err(Error::BadRequest(format!(
                    "`{field}` of a shop/update is not a string"
                )));
            }
        }
    }
    Ok(())
}

/// One in-place update of the install, in the delivery's transaction: the shop details and
/// when they came, on the condition only that the install exists. The token attributes are not
/// touched, and a token refresh writes only those (see [`refresh`]), so neither can undo the
/// other and no version check or retry is needed. Two deliveries for one org: the later write
/// wins, as it always did. An org that is not installed is refused (404) and nothing is stored,
/// mark included, so a delivery that raced ahead of its install can still act when retried.
async fn shop_update(
    cx: &Haravan,
    mark: &Item,
    event: &Event,
    orgid: &str,
    payload: &Map<String, Value>,
) -> Result<Value> {
    let mut shop = Map::new();
    for field in SHOP_FIELDS {
        if let Some(v) = payload.get(field).filter(|v| v.is_string()) {
            shop.insert(field.into(), v.clone());
        }
    }
    let mut set = Map::new();
    set.insert("shop".into(), Value::Object(shop));
    set.insert("shop_updated_at".into(), now().into());
    // The connection's `updated_at` moves with it. (No `connection.updated` here: its data
    // would need a read of the install, and a delivery is one store call; the delivery itself
    // is reported as its `webhook.shop/update` event.)
    set.insert("updated_at".into(), now().into());
    let effect = [Write::Update {
        key: install_key(orgid),
        set,
        condition: Condition::Exists,
    }];
    match events::apply_delivery(cx.store.as_ref(), mark, &effect, event).await? {
        Applied::Done => Ok(json!({"ok": true, "handled": true})),
        Applied::Duplicate => Ok(duplicate()),
        Applied::Refused(_) => Err(Error::refused(
            Reason::NotInstalled,
            "no install for this org",
        )),
    }
}

/// When the delivery was made, where its signed body says: `updated_at`, else `created_at`
/// (ISO 8601, as Haravan writes its times), in Unix seconds. Haravan signs no delivery time and
/// its deliveries carry no id, so this is all there is to tell an old delivery from a new one
/// once its mark has expired. A field present but not such a time is refused (400).
fn made_at(payload: &Map<String, Value>) -> Result<Option<i64>> {
    for field in ["updated_at", "created_at"] {
        match payload.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => {
                return crate::rfc3339::parse(s).map(Some).ok_or_else(|| {
                    Error::BadRequest(format!("`{field}` is not an ISO 8601 date and time"))
                });
            }
            Some(_) => {
                return Err(Error::BadRequest(format!("`{field}` is not a string")));
            }
        }
    }
    Ok(None)
}

/// Removes the install, its tokens and the org's sessions, in the delivery's transaction. An
/// org with no install has been uninstalled already: that holds, so the delivery is recorded
/// (with whatever sessions are left) and answered as done, and Haravan stops retrying it.
///
/// A delivery whose body says it was made (`made_at`) before the current install was stored
/// (its `installed_at`, less the allowed clock skew) belongs to an earlier install: an old
/// uninstall replayed after its mark expired (7 days) and after a reinstall. It is recorded
/// and answered 200 `stale`, and the install stays. A body that says nothing cannot be told
/// apart this way; see the README's Security section for that residual risk.
async fn uninstalled(
    cx: &Haravan,
    mark: &Item,
    event: &Event,
    orgid: &str,
    made_at: Option<i64>,
) -> Result<Value> {
    let store = cx.store.as_ref();
    if let Some(made_at) = made_at
        && let Some(install) = store.get(&install_key(orgid)).await?
        && let Some(installed_at) = install.record::<Install>()?.installed_at
    {
        let skew = i64::try_from(cx.settings.skew).unwrap_or(i64::MAX);
        if made_at.saturating_add(skew) < installed_at {
            return if events::mark_delivery(store, mark, event).await? {
                tracing::info!(
                    orgid,
                    "haravan uninstall older than the install, not acted on"
                );
                Ok(json!({"ok": true, "handled": false, "stale": true}))
            } else {
                Ok(duplicate())
            };
        }
    }
    let mut sessions = Vec::new();
    for session in store.query(&org_sessions_partition(orgid)).await? {
        let sid = session.record::<SessionRecord>()?.sid;
        if !sid.is_empty() {
            sessions.push(Write::Delete(
                sid_key(&sid, orgid, &session.key.sk),
                Condition::Always,
            ));
        }
        sessions.push(Write::Delete(session.key, Condition::Always));
    }
    // A transaction holds at most 100 writes: the mark, the install, its removal's event, the
    // delivery's event and as many sessions as fit; any left over (an org with dozens of open
    // sessions) are removed after the commit, and would lapse within the session lifetime anyway.
    let room = crate::store::MAX_TRANSACT_WRITES - 4;
    let rest = sessions.split_off(sessions.len().min(room));
    let mut effect = vec![Write::Delete(install_key(orgid), Condition::Exists)];
    // The removal's lifecycle event, written exactly when the install is deleted.
    effect.extend(connection::removed_event(store, &install_key(orgid)).await?);
    effect.extend(sessions.iter().cloned());
    let answer = match events::apply_delivery(store, mark, &effect, event).await? {
        Applied::Done => {
            crate::metrics::count(
                crate::metrics::names::REMOVALS,
                PLATFORM,
                &[],
                &[("tenant", orgid)],
            );
            tracing::info!(orgid, "haravan install, tokens and sessions removed");
            json!({"ok": true, "handled": true})
        }
        Applied::Duplicate => return Ok(duplicate()),
        Applied::Refused(_) => {
            let done =
                events::apply_delivery(store, mark, &sessions, event).await? == Applied::Done;
            if !done {
                return Ok(duplicate());
            }
            tracing::info!(orgid, "haravan uninstall for an org not installed");
            json!({"ok": true, "handled": true, "already_done": true})
        }
    };
    for write in rest {
        if let Err(e) = store.transact(&[write]).await {
            tracing::warn!(error = %e, orgid, "a session of an uninstalled org was left to lapse");
        }
    }
    Ok(answer)
}

// ---------------------------------------------------------------------------------------------
// Logout

/// `GET /haravan/logout?sid=`: front-channel logout, loaded in an iframe: quick, no redirect.
pub async fn logout(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    let sid = q.require_id("sid")?;
    for index in cx.store.query(&sid_partition(sid)).await? {
        if let Some((orgid, session_id)) = index.key.sk.split_once('#') {
            let _ = cx.store.take(&session_key(orgid, session_id)).await?;
        }
        let _ = cx.store.take(&index.key).await?;
    }
    Ok(web::text(StatusCode::OK, "signed out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from python3's `datetime.fromisoformat(...).timestamp()`.
    #[test]
    fn delivery_times_read_as_iso_8601() {
        // The RFC 3339 reading itself is `rfc3339`'s, with its vectors.
        let payload = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            made_at(&payload(json!({"created_at": "1970-01-01T00:00:10Z"}))).unwrap(),
            Some(10)
        );
        assert_eq!(
            made_at(&payload(
                json!({"created_at": "1970-01-01T00:00:10Z", "updated_at": "1970-01-01T00:00:20Z"})
            ))
            .unwrap(),
            Some(20)
        );
        assert_eq!(made_at(&payload(json!({"org_id": 1}))).unwrap(), None);
        assert!(made_at(&payload(json!({"updated_at": 5}))).is_err());
        assert!(made_at(&payload(json!({"updated_at": "soon"}))).is_err());
    }

    fn prompt(value: Option<&str>) -> Result<Option<String>, ConfigError> {
        let mut vars = Vars::default();
        if let Some(v) = value {
            vars.set("HARAVAN_INSTALL_PROMPT", v);
        }
        Settings::from_vars(&vars).map(|s| s.install_prompt)
    }

    #[test]
    fn the_install_prompt_is_consent_unless_configured() {
        assert_eq!(prompt(None).unwrap().as_deref(), Some("consent"));
        assert_eq!(prompt(Some("")).unwrap().as_deref(), Some("consent"));
        assert_eq!(prompt(Some("omit")).unwrap(), None);
        assert_eq!(
            prompt(Some("login consent")).unwrap().as_deref(),
            Some("login consent")
        );
        assert!(prompt(Some("always")).is_err());
    }
}
