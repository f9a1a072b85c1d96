//! Saison connect: the authorization code flow, token storage, and MAC-signed API requests.
//!
//! Saison connect (docs/platforms.md, "Saison connect"): OAuth 2.0 with its own request signature:
//! every API call carries `Authorization: MAC id="<access token>" ts="<unix seconds>"
//! nonce="<10 of [0-9A-Za-z]>" mac="<m>"`, where `m` is the standard base64 of
//! HMAC-SHA256(key, `ts\nnonce\nMETHOD\nrequest-uri\nhost\nport\n\n`). The key is the client
//! secret, or (configurable) a `mac_key` from the token reply; the attribute separator is a
//! space, or (configurable) `", "`.
//!
//! A connection belongs to one of the app's users (the *end user* of a connect link,
//! [`crate::connect`]) and one *cardholder* (the `user_id` of Saison's profile), signed in
//! through a *member*: the `<member>` path segment of Saison's screen URLs, which names whose
//! card members sign in (`SAISON_MEMBERS`; the first is the one links use). Tokens are kept per
//! end user, member and cardholder ([`connection_key`]), so a second cardholder never replaces
//! the first.
//!
//! - `GET /saison/authorize?link=` → the connect link consumed (once), one-time state holding
//!   its end user and `return_to` bound to the browser, redirect to the screen authorize URL.
//!   The anonymous `?member=` start (no end user) is refused with a 403 unless
//!   `SAISON_ANONYMOUS_START` is on: anyone's link could set its cookie, so anyone could make a
//!   victim's browser complete a callback with the attacker's code.
//! - `GET /saison/callback?code=` → the state of this browser; the code exchanged once (form
//!   encoding, `X-API-VERSION: 1`); the cardholder read from the profile with a signed request;
//!   tokens stored sealed with the state's consumption; the browser sent to `return_to` with the
//!   outcome (a page for an anonymous start).

use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::crypto;
use crate::error::{Error, Reason, Result};
use crate::flow::{self, CookieSpec};
use crate::http::PlatformCall as _;
use crate::refresh::{self, Grant, RefreshError, Refresher, SealedTokens};
use crate::store::{Condition, Key, Record, Write, now};
use crate::web::{self, Params};
use base64::Engine as _;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The platform's name: its secret, its store partitions, its routes.
pub const PLATFORM: &str = "saison";
const STATE_COOKIE: CookieSpec = flow::state_cookie("gh-saison-state");
const API_VERSION: &str = "1";
/// The characters of a MAC nonce.
const NONCE_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which key signs MAC requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacKey {
    /// The client secret (the document).
    ClientSecret,
    /// The `mac_key` of the token reply.
    TokenMacKey,
}

/// Saison settings (`SAISON_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SAISON_API_BASE` (default `https://apit.saisoncard.co.jp`): screens, token, API.
    pub api_base: String,
    /// `SAISON_MEMBERS`: the members the app serves, comma-separated; the first is the default.
    pub members: Vec<String>,
    /// `SAISON_SCOPES`: comma-separated; unset sends no scope.
    pub scopes: Option<String>,
    /// `SAISON_SEND_REDIRECT_URI` (default false): send our callback as `redirect_uri`.
    pub send_redirect_uri: bool,
    /// `SAISON_SEND_STATE` (default false): send `state` (then the callback must echo it).
    pub send_state: bool,
    /// `SAISON_MAC_SEPARATOR`: `space` (default, the document) or `comma` (`", "`).
    pub mac_separator: &'static str,
    /// `SAISON_MAC_KEY`: `client_secret` (default) or `mac_key`.
    pub mac_key: MacKey,
    /// `SAISON_ANONYMOUS_START` (default false): serve `GET /saison/authorize?member=` without
    /// a connect link (connections of no end user; see the module's documentation).
    pub anonymous_start: bool,
    /// `GATEHOUSE_RETURN_TO_ORIGINS`: the origins a connect link's `return_to` may be on
    /// (comma-separated; empty: none, so no link can be made).
    pub return_to_origins: Vec<String>,
}

impl Settings {
    /// The member a `/v1` request names (`?member=`), which must be one this app serves, or the
    /// first of `SAISON_MEMBERS` when it names none.
    pub fn served_member<'a>(&'a self, asked: Option<&'a str>) -> Result<&'a str> {
        match asked {
            Some(m) if self.members.iter().any(|known| known == m) => Ok(m),
            Some(m) => Err(Error::refused(
                Reason::UnknownTenant,
                format!("`{}` is not a member this app serves", web::printable(m)),
            )),
            None => self
                .members
                .first()
                .map(String::as_str)
                .ok_or_else(|| Error::Internal("SAISON_MEMBERS is empty".into())),
        }
    }

    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let bad = |name: &str, problem: &str| ConfigError {
            name: name.into(),
            problem: problem.into(),
        };
        let members: Vec<String> = vars
            .get_or("SAISON_MEMBERS", "demo")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        if members.is_empty()
            || members.iter().any(|m| {
                !m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        {
            return Err(bad(
                "SAISON_MEMBERS",
                "must be path segments of letters, digits, `-` or `_`",
            ));
        }
        Ok(Self {
            api_base: vars
                .url("SAISON_API_BASE", "https://apit.saisoncard.co.jp")?
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            members,
            scopes: vars.get("SAISON_SCOPES").map(str::to_owned),
            send_redirect_uri: vars.flag("SAISON_SEND_REDIRECT_URI", false)?,
            send_state: vars.flag("SAISON_SEND_STATE", false)?,
            anonymous_start: vars.flag("SAISON_ANONYMOUS_START", false)?,
            return_to_origins: crate::connect::parse_origins(
                vars.get_or("GATEHOUSE_RETURN_TO_ORIGINS", ""),
            )
            .map_err(|e| bad("GATEHOUSE_RETURN_TO_ORIGINS", &e))?,
            mac_separator: match vars.get_or("SAISON_MAC_SEPARATOR", "space") {
                "space" => " ",
                "comma" => ", ",
                _ => return Err(bad("SAISON_MAC_SEPARATOR", "must be `space` or `comma`")),
            },
            mac_key: match vars.get_or("SAISON_MAC_KEY", "client_secret") {
                "client_secret" => MacKey::ClientSecret,
                "mac_key" => MacKey::TokenMacKey,
                _ => {
                    return Err(bad(
                        "SAISON_MAC_KEY",
                        "must be `client_secret` or `mac_key`",
                    ));
                }
            },
        })
    }
}

/// Saison connect's context: its settings over what every platform shares.
pub struct Saison {
    /// What every platform shares.
    pub deps: std::sync::Arc<Deps>,
    /// The settings.
    pub settings: Settings,
}

crate::context::derefs_to_deps!(Saison);

impl Platform for Saison {
    fn build(deps: std::sync::Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            deps,
            settings: Settings::from_vars(vars)?,
        })
    }
}

/// A stored connection (`conn#saison#<end user>` / `<member>#<cardholder>`, see
/// [`connection_key`]): one cardholder's tokens, for one of the app's users.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connection {
    /// The member whose card members sign in.
    #[serde(default)]
    pub member: String,
    /// The cardholder: the `user_id` of Saison's profile.
    #[serde(default)]
    pub cardholder: String,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<i64>,
    /// The tokens and, when Saison issued one, the MAC key, sealed to this item.
    #[serde(flatten)]
    pub tokens: SealedTokens,
    /// What every connection carries; its `end_user` is the app's own user the connection was
    /// made for (none: an anonymous start), stored as `end_user` as it always was.
    #[serde(flatten)]
    pub connection: crate::connection::Common,
}

impl Record for Connection {
    const NAME: &'static str = "Saison connection";
}

/// The one-time state of an authorization: the member it is for, and (started from a connect
/// link) the end user and where the browser goes afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlowState {
    member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    return_to: Option<String>,
}

impl Record for FlowState {
    const NAME: &'static str = "Saison flow state";
}

/// What identifies one Saison connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionId {
    /// The app's user it is for; `None` for an anonymous start (`SAISON_ANONYMOUS_START`).
    pub end_user: Option<String>,
    /// The member signed in through.
    pub member: String,
    /// The cardholder (the profile's `user_id`).
    pub cardholder: String,
}

impl ConnectionId {
    /// A connection of `end_user`.
    pub fn new(end_user: &str, member: &str, cardholder: &str) -> Self {
        Self {
            end_user: Some(end_user.into()),
            member: member.into(),
            cardholder: cardholder.into(),
        }
    }
}

/// The store key of a connection: a partition per end user (`conn#saison#<end user>`; high
/// cardinality, and listing an end user's connections is one query), the sort key
/// `<member>#<cardholder>`. Anonymous starts use `conn#saison#~anonymous`: `~` is not an id
/// character ([`web::is_id_byte`]), so no end user's partition can be it. Neither part holds a
/// `#` (members are checked at configuration, end users and cardholders by [`web::check_id`]).
pub fn connection_key(id: &ConnectionId) -> Key {
    Key::new(
        format!(
            "conn#{PLATFORM}#{}",
            id.end_user.as_deref().unwrap_or("~anonymous")
        ),
        format!("{}#{}", id.member, id.cardholder),
    )
}

// ---------------------------------------------------------------------------------------------
// The MAC signature

/// The MAC of one request: standard base64 (padded) of HMAC-SHA256 over
/// `ts\nnonce\nMETHOD\nrequest-uri\nhost\nport\n\n` (the empty `ext` gives the final `\n\n`).
pub fn mac(
    key: &[u8],
    ts: u64,
    nonce: &str,
    method: &str,
    request_uri: &str,
    host: &str,
    port: u16,
) -> String {
    let text = format!(
        "{ts}\n{nonce}\n{}\n{request_uri}\n{}\n{port}\n\n",
        method.to_ascii_uppercase(),
        host.to_ascii_lowercase()
    );
    base64::engine::general_purpose::STANDARD.encode(crypto::hmac_sha256(key, text.as_bytes()))
}

/// The parts of a URL a MAC covers: request-uri (path and `?query`), host, port.
pub fn mac_target(url: &url::Url) -> Result<(String, String, u16)> {
    let host = url
        .host_str()
        .ok_or_else(|| Error::Internal("the Saison URL has no host".into()))?
        .to_ascii_lowercase();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Error::Internal("the Saison URL has no port".into()))?;
    let request_uri = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    Ok((request_uri, host, port))
}

/// The `Authorization` header for `method url`, signed now with a fresh CSPRNG nonce.
///
/// The access token is Saison's, sent inside a quoted string: one holding a quote, a backslash
/// or anything but visible ASCII would change the header's meaning or make it invalid, so it is
/// refused as the platform's fault (502) rather than sent.
pub fn authorization(
    access_token: &str,
    key: &[u8],
    method: &str,
    url: &url::Url,
    separator: &str,
) -> Result<String> {
    if access_token.is_empty()
        || !access_token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(Error::Upstream(
            "Saison issued an access token that cannot be sent in a MAC header".into(),
        ));
    }
    let (request_uri, host, port) = mac_target(url)?;
    let ts = u64::try_from(now()).unwrap_or_default();
    let nonce = crypto::random_string(NONCE_ALPHABET, 10)?;
    let m = mac(key, ts, &nonce, method, &request_uri, &host, port);
    Ok(format!(
        "MAC id=\"{access_token}\"{separator}ts=\"{ts}\"{separator}nonce=\"{nonce}\"{separator}mac=\"{m}\""
    ))
}

// ---------------------------------------------------------------------------------------------
// Authorize and callback

/// `GET /saison/authorize`.
pub async fn authorize(cx: &Saison, req: &Request) -> Result<Response<Body>> {
    let s = &cx.settings;
    let q = Params::from_query(req)?;
    if q.get("link").is_some() && q.get("member").is_some() {
        return Err(Error::refused(
            Reason::MalformedParameter,
            "a connect link names its member; `member` is not taken with `link`",
        ));
    }
    // A connect link: read now, consumed in the same write that stores the flow's state.
    let link = match q.get("link") {
        Some(id) => {
            let id = web::check_id("parameter `link`", id)?;
            let key = crate::connect::link_key(PLATFORM, id);
            let Some(item) = cx.store.get(&key).await? else {
                return Err(link_used());
            };
            Some((key, item.record::<crate::connect::Link>()?))
        }
        None if !s.anonymous_start => {
            return Err(Error::refused(
                Reason::NotAllowed,
                "Saison connections are started by the app for one of its users, with a                  connect link (POST /v1/connect-links); the anonymous start is off                  (SAISON_ANONYMOUS_START)",
            ));
        }
        None => None,
    };
    let member = match q.get("member") {
        Some(m) if s.members.iter().any(|x| x == m) => m.to_owned(),
        Some(m) => {
            return Err(Error::refused(
                Reason::UnknownTenant,
                format!("`{}` is not a member this app serves", web::printable(m)),
            ));
        }
        None => s.members[0].clone(),
    };
    // Everything that can fail comes before the state is stored: a refusal stores nothing.
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let keys = cx.secrets.app_keys().await?;
    let redirect_uri = match s.send_redirect_uri {
        true => Some(cx.public_url(req, "/saison/callback")?),
        false => None,
    };
    let mut url = url::Url::parse(&format!("{}/auth/screen/{member}/authorize", s.api_base))
        .map_err(|_| Error::Internal("bad Saison base".into()))?;
    let data = FlowState {
        member: Some(member.clone()),
        end_user: link.as_ref().map(|(_, l)| l.end_user.clone()),
        return_to: link.as_ref().map(|(_, l)| l.return_to.clone()),
    };
    let state = crate::connect::begin_flow(cx, PLATFORM, data.to_attrs()?, link.as_ref()).await?;
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("client_id", &creds.client_id);
        pairs.append_pair("response_type", "code");
        if let Some(scope) = &s.scopes {
            pairs.append_pair("scope", scope);
        }
        if let Some(redirect_uri) = &redirect_uri {
            pairs.append_pair("redirect_uri", redirect_uri);
        }
        if s.send_state {
            pairs.append_pair("state", &state);
        }
    }
    let mut resp = web::redirect(url.as_str())?;
    web::set_cookie(&mut resp, &STATE_COOKIE.set(cx, &keys, &state))?;
    Ok(resp)
}

fn link_used() -> Error {
    Error::refused(
        Reason::AlreadyUsed,
        "this connect link was used already or has expired; ask the app for a new one",
    )
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    expires_in: Option<i64>,
    refresh_token: Option<SecretString>,
    mac_key: Option<SecretString>,
}

/// `GET /saison/callback`.
pub async fn callback(cx: &Saison, req: &Request) -> Result<Response<Body>> {
    let q = Params::from_query(req)?;
    if let Some(error) = q.get("error") {
        return Err(Error::refused(
            Reason::PlatformRefused,
            format!("Saison answered `{}`; start again", web::printable(error)),
        ));
    }
    let code = q.require("code")?;
    if cx.settings.send_state && q.get("state").is_none() {
        return Err(Error::refused(
            Reason::MissingParameter,
            "parameter `state` is missing",
        ));
    }
    let state = flow::read_bound(cx, &STATE_COOKIE, req, PLATFORM, q.get("state")).await?;
    let flow_state = state.record::<FlowState>()?;
    let member = flow_state
        .member
        .clone()
        .ok_or_else(|| Error::Internal("state without member".into()))?;
    let stored = store_connection(cx, &state, &flow_state, &member, code).await;
    if let Some(return_to) = &flow_state.return_to {
        // Started by a link: back to the app with the outcome, never a token.
        let location = match &stored {
            Ok(id) => crate::connect::outcome_url(return_to, Ok((PLATFORM, &id.cardholder))),
            Err(e) => {
                tracing::warn!(status = e.status().as_u16(), error = %e, "saison connection refused");
                crate::connect::outcome_url(return_to, Err(e.code()))
            }
        };
        let mut resp = web::redirect(&location)?;
        web::set_cookie(&mut resp, &STATE_COOKIE.clear(cx))?;
        return Ok(resp);
    }
    let id = stored?;

    let profile = match call(cx, &id, "GET", "/auth/account/profile", None).await {
        Ok(v) => render_profile(&v),
        Err(e) => {
            tracing::warn!(error = %e, "saison profile request failed");
            format!(
                "<p>The profile could not be read right now ({}).</p>",
                web::escape(&e.public_message())
            )
        }
    };
    let mut resp = web::html_page(
        StatusCode::OK,
        "Connected to Saison",
        &format!(
            "<p>Gatehouse is connected for member <code>{}</code>, cardholder <code>{}</code>.</p><h2>Profile</h2>{profile}",
            web::escape(&member),
            web::escape(&id.cardholder)
        ),
    );
    web::set_cookie(&mut resp, &STATE_COOKIE.clear(cx))?;
    Ok(resp)
}

/// The code exchanged once, the cardholder read from the profile with the new tokens, and the
/// connection stored with the code's mark and the state's consumption, all or nothing.
async fn store_connection(
    cx: &Saison,
    state: &flow::Bound,
    flow_state: &FlowState,
    member: &str,
    code: &str,
) -> Result<ConnectionId> {
    let keys = cx.secrets.app_keys().await?;
    let id = flow::exchange_once(cx, PLATFORM, code, || async {
        let grant = token_call(cx, &[("grant_type", "authorization_code"), ("code", code)])
            .await
            .map(grant_of)
            .map_err(|e| e.for_code("Saison"))?;
        // Whose card this is: the profile, read with the tokens just issued, before anything is
        // stored (the key depends on it).
        let mac_key = match cx.settings.mac_key {
            MacKey::ClientSecret => cx
                .secrets
                .credentials(PLATFORM)
                .await?
                .client_secret
                .clone(),
            MacKey::TokenMacKey => grant
                .extra
                .iter()
                .find(|(k, _)| *k == "mac_key")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    Error::Upstream("Saison issued no mac_key, but SAISON_MAC_KEY=mac_key".into())
                })?,
        };
        let profile = signed_request(
            cx,
            &grant.access_token,
            &mac_key,
            "GET",
            "/auth/account/profile",
            None,
        )
        .await?;
        let cardholder = profile
            .get("user_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Upstream("Saison's profile names no `user_id`".into()))?;
        let cardholder = web::check_id("Saison's profile `user_id`", cardholder)
            .map_err(|_| Error::Upstream("Saison's profile `user_id` is not an id".into()))?;
        let id = ConnectionId {
            end_user: flow_state.end_user.clone(),
            member: member.to_owned(),
            cardholder: cardholder.to_owned(),
        };
        let key = connection_key(&id);
        // The same cardholder connected again for the same user: an update of that connection.
        let (created_at, event) = crate::connection::earlier(cx.store.get(&key).await?.as_ref());
        let connection = Connection {
            member: member.to_owned(),
            cardholder: id.cardholder.clone(),
            connected_at: Some(now()),
            tokens: SealedTokens::seal(&keys, &key, &grant)?,
            connection: crate::connection::Common {
                return_to: flow_state.return_to.clone(),
                ..crate::connection::Common::new(
                    PLATFORM,
                    &key,
                    id.end_user.as_deref(),
                    created_at,
                    now(),
                )
            },
        };
        let item = connection.to_item(key)?;
        let event = crate::connection::view(&item)?.event_write(event)?;
        let writes = vec![state.consume(), Write::Put(item, Condition::Always), event];
        Ok((id, writes))
    })
    .await?;
    crate::metrics::count(
        crate::metrics::names::INSTALLS,
        PLATFORM,
        &[],
        &[("tenant", &id.cardholder), ("member", member)],
    );
    tracing::info!(
        member,
        cardholder = id.cardholder,
        end_user = id.end_user.as_deref().unwrap_or("(anonymous)"),
        "saison connection stored"
    );
    Ok(id)
}

fn render_profile(profile: &Value) -> String {
    let rows: String = match profile.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!(
                    "<tr><th>{}</th><td>{}</td></tr>",
                    web::escape(k),
                    web::escape(&v)
                )
            })
            .collect(),
        None => String::new(),
    };
    format!("<table>{rows}</table>")
}

fn grant_of(reply: TokenReply) -> Grant {
    Grant {
        access_token: reply.access_token,
        refresh_token: reply.refresh_token,
        expires_in: reply.expires_in.unwrap_or(3600),
        extra: reply
            .mac_key
            .map(|k| vec![("mac_key", k)])
            .unwrap_or_default(),
    }
}

/// A call to Saison's token endpoint: form encoding, `X-API-VERSION: 1`, client credentials in
/// the body.
async fn token_call(
    cx: &Saison,
    form: &[(&str, &str)],
) -> std::result::Result<TokenReply, RefreshError> {
    let creds = cx
        .secrets
        .credentials(PLATFORM)
        .await
        .map_err(|e| RefreshError::Failed(e.into()))?;
    let body = creds.with_client_credentials(form);
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(body)
        .finish();
    let request = cx
        .http
        .client()?
        .post(format!("{}/auth/token", cx.settings.api_base))
        .header("X-API-VERSION", API_VERSION)
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(encoded);
    refresh::token_request(request, PLATFORM, "Saison's token endpoint").await
}

/// Saison refreshes its tokens with `grant_type=refresh_token`.
#[async_trait::async_trait]
impl Refresher for Saison {
    async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> std::result::Result<Grant, RefreshError> {
        token_call(
            self,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ],
        )
        .await
        .map(grant_of)
    }
}

/// Calls a Saison API endpoint for connection `id` with a MAC-signed request (refreshing the
/// token when due): `GET` with no body, or `POST` with a form body. Returns the JSON answer.
pub async fn call(
    cx: &Saison,
    id: &ConnectionId,
    method: &str,
    path_and_query: &str,
    form: Option<&[(&str, &str)]>,
) -> Result<Value> {
    let key = connection_key(id);
    let item = refresh::fresh_item(cx, &key, cx).await?;
    let connection = item.record::<Connection>()?;
    let keys = cx.secrets.app_keys().await?;
    let access = connection.tokens.open(&keys, &key)?.access_token;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let mac_key = match cx.settings.mac_key {
        MacKey::ClientSecret => creds.client_secret.clone(),
        MacKey::TokenMacKey => connection
            .tokens
            .open_mac_key(&keys, &key)?
            .ok_or_else(|| {
                Error::Upstream("Saison issued no mac_key, but SAISON_MAC_KEY=mac_key".into())
            })?,
    };
    signed_request(cx, &access, &mac_key, method, path_and_query, form).await
}

/// One MAC-signed request with these tokens.
async fn signed_request(
    cx: &Saison,
    access: &SecretString,
    mac_key: &SecretString,
    method: &str,
    path_and_query: &str,
    form: Option<&[(&str, &str)]>,
) -> Result<Value> {
    let url = url::Url::parse(&format!("{}{path_and_query}", cx.settings.api_base))
        .map_err(|_| Error::Internal("bad Saison API path".into()))?;
    let header = authorization(
        access.expose_secret(),
        mac_key.expose_secret().as_bytes(),
        method,
        &url,
        cx.settings.mac_separator,
    )?;
    let request = match method {
        "POST" => cx
            .http
            .client()?
            .post(url.clone())
            .form(form.unwrap_or_default()),
        _ => cx
            .http
            .client()?
            .get(url.clone())
            .header("Content-Type", "application/x-www-form-urlencoded"),
    };
    let resp = request
        .header("X-API-VERSION", API_VERSION)
        .header("Authorization", header)
        .send_to(PLATFORM, "api")
        .await
        .map_err(|e| Error::Upstream(format!("the Saison API {}", crate::http::describe(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Upstream(format!(
            "the Saison API answered {}",
            status.as_u16()
        )));
    }
    resp.json()
        .await
        .map_err(|_| Error::Upstream("the Saison API answered unreadably".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from python3:
    //   base64.b64encode(hmac.new(b"secret-key", msg.encode(), hashlib.sha256).digest())
    // with msg = f"{ts}\n{nonce}\n{METHOD}\n{uri}\n{host}\n{port}\n\n" (tests/vectors/saison.py).
    #[test]
    fn mac_vectors() {
        let k = b"secret-key";
        assert_eq!(
            mac(
                k,
                1732406400,
                "abcde12345",
                "GET",
                "/auth/account/profile",
                "apit.saisoncard.co.jp",
                443
            ),
            "TWaNmLxz0phZbo8GflQ9Xt2sC1TV5ylFenD9/GJb0fQ="
        );
        assert_eq!(
            mac(
                k,
                1732406400,
                "abcde12345",
                "get",
                "/auth/account/profile?info_key=sex%2Cbirthday",
                "APIT.saisoncard.co.jp",
                443
            ),
            "MqdGOWuhM/qejb00lBAWpUJw9MnAdiH8EW6VVnK/wo8="
        );
        assert_eq!(
            mac(
                k,
                1732406401,
                "ZZ9yy8XX7w",
                "POST",
                "/auth/account/profile",
                "127.0.0.1",
                3000
            ),
            "PGk2PhOPwJiBv/mJ86gmpz30JTibZ3OhUbxVWXKepDY="
        );
    }

    #[test]
    fn headers_name_the_token_and_a_fresh_nonce() {
        let url = url::Url::parse("https://apit.saisoncard.co.jp/auth/account/profile").unwrap();
        let a = authorization("tok", b"k", "GET", &url, " ").unwrap();
        let b = authorization("tok", b"k", "GET", &url, ", ").unwrap();
        assert!(a.starts_with("MAC id=\"tok\" ts=\""));
        assert!(b.starts_with("MAC id=\"tok\", ts=\""));
        let nonce = |h: &str| h.split("nonce=\"").nth(1).unwrap()[..10].to_owned();
        assert_ne!(nonce(&a), nonce(&b));
        assert!(nonce(&a).bytes().all(|c| c.is_ascii_alphanumeric()));
        let (uri, host, port) =
            mac_target(&url::Url::parse("http://127.0.0.1:3000/p?q=1").unwrap()).unwrap();
        assert_eq!(
            (uri.as_str(), host.as_str(), port),
            ("/p?q=1", "127.0.0.1", 3000)
        );
    }

    #[test]
    fn tokens_that_would_break_the_header_are_refused() {
        let url = url::Url::parse("https://apit.saisoncard.co.jp/auth/account/profile").unwrap();
        for token in ["", "a\"b", "a\\b", "a b", "a\r\nX-Evil: 1", "café"] {
            assert!(
                matches!(
                    authorization(token, b"k", "GET", &url, " "),
                    Err(Error::Upstream(_))
                ),
                "{token:?}"
            );
        }
        assert!(authorization("a-Z_0.9~+/=", b"k", "GET", &url, " ").is_ok());
    }
}
