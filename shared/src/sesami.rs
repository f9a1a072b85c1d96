//! Sesami: the install launch, the OAuth callback and the webhooks.
//!
//! Everything about Sesami's protocol is here (docs/platforms.md, "Sesami"):
//! - Sesami signs a request as HMAC-SHA256 (client secret, lowercase hex) over the compact JSON of
//!   an object holding every received parameter but `hmac`, top-level keys sorted, values as the
//!   strings received. Not a `k=v&k=v` string. We sign whatever arrived, not a fixed list.
//! - Webhooks are `{"event", "data", "hmac"}` with the hmac over `data` by the same rule (nested
//!   objects keep their received order). Since browser URLs are signed the same way, `data` must
//!   name its event (`data.event`) and may not be only browser parameters (see
//!   `check_webhook_data`).
//! - Sesami's authorization request carries no `state` and its callback echoes none, so the state
//!   binding lives entirely on our side: the install launch stores one-time state naming the shop
//!   and sets a signed cookie with its id; the callback must come from that browser, for that
//!   shop, once.
//!
//! Flow: `GET /sesami/install` (verify, state, redirect to consent) → Sesami's consent →
//! `GET /sesami/callback` (verify, freshness, consume state, mark the code used, exchange it,
//! store the install with its token encrypted) → `POST /sesami/webhooks` (`uninstall_app`).

use crate::config::{ConfigError, Vars};
use crate::connection;
use crate::context::{Deps, Platform};
use crate::crypto;
use crate::error::{Error, Reason, Result};
use crate::events::{self, Event};
use crate::flow::{self, CookieSpec};
use crate::http::PlatformCall as _;
use crate::once::{self, Applied};
use crate::store::{Condition, Item, Key, Record, Write, now};
use crate::web::{self, Params};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::Duration;
use url::Url;

/// The platform's name: its secret, its store partitions, its routes.
pub const PLATFORM: &str = "sesami";

/// The most a webhook body may be.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

const STATE_COOKIE: CookieSpec = flow::state_cookie("gh-sesami-state");

/// Sesami settings (`SESAMI_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SESAMI_API_BASE`: the authorization and token host (default `https://api.sesami.co`).
    pub api_base: Url,
    /// `SESAMI_SCOPES`: comma-separated (default `Shop:Read`, the only kind Sesami has today).
    pub scopes: Vec<String>,
    /// `SESAMI_TIMESTAMP_WINDOW_SECONDS`: how old (or how far ahead) a signed timestamp may be
    /// (default 300).
    pub timestamp_window: Duration,
    /// `SESAMI_NUMERIC_TIMESTAMP`: sign `timestamp` as a JSON number, as an older draft did
    /// (default false: as the string received).
    pub numeric_timestamp: bool,
    /// `SESAMI_AFTER_INSTALL_URL`: where to send the merchant after a successful install
    /// (default: our own confirmation page).
    pub after_install_url: Option<Url>,
    /// `SESAMI_WEBHOOK_SIGNED_EVENT`: a webhook's signed `data` must name its event (default
    /// true, the safe reading). Sesami's document does not say that it does; off, `data` is
    /// refused only when it is exactly a browser URL's parameters, as the document allows.
    pub webhook_signed_event: bool,
}

impl Settings {
    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            api_base: vars.url("SESAMI_API_BASE", "https://api.sesami.co")?,
            scopes: vars
                .get_or("SESAMI_SCOPES", "Shop:Read")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            timestamp_window: vars.seconds("SESAMI_TIMESTAMP_WINDOW_SECONDS", 300)?,
            numeric_timestamp: vars.flag("SESAMI_NUMERIC_TIMESTAMP", false)?,
            webhook_signed_event: vars.flag("SESAMI_WEBHOOK_SIGNED_EVENT", true)?,
            after_install_url: match vars.get("SESAMI_AFTER_INSTALL_URL") {
                Some(_) => Some(vars.url("SESAMI_AFTER_INSTALL_URL", "")?),
                None => None,
            },
        })
    }
}

/// Sesami's context: its settings over what every platform shares.
pub struct Sesami {
    /// What every platform shares.
    pub deps: std::sync::Arc<Deps>,
    /// The settings.
    pub settings: Settings,
}

crate::context::derefs_to_deps!(Sesami);

impl Platform for Sesami {
    fn build(deps: std::sync::Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            deps,
            settings: Settings::from_vars(vars)?,
        })
    }
}

/// A stored install. The token is sealed with the app's key ring, bound to the install's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Install {
    /// Sesami's shop id: the tenant key.
    pub shop_id: String,
    /// The shop's name as the token reply gave it.
    pub name: Option<String>,
    /// The offline token, sealed to this item and attribute (`v2.<key id>.<ciphertext>`;
    /// installs stored before the attribute was bound hold `v1.`, which still opens).
    pub token_sealed: String,
    /// `expireAt` as Sesami gave it (`NEVER` today).
    pub expire_at: Option<String>,
    /// The scopes that were requested.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub installed_at: i64,
    /// What every connection carries (status, times, index attributes).
    #[serde(flatten)]
    pub connection: crate::connection::Common,
}

impl Record for Install {
    const NAME: &'static str = "Sesami install";
}

/// The one-time state of an install launch: the shop whose callback may come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlowState {
    /// Sesami's shop id.
    shop_id: Option<String>,
}

impl Record for FlowState {
    const NAME: &'static str = "Sesami flow state";
}

/// The store key of a shop's install.
pub fn install_key(shop_id: &str) -> Key {
    Key::single(&format!("install#{PLATFORM}"), shop_id)
}

/// The canonical text Sesami signs: `JSON.stringify` of an object built from `object` with its
/// keys inserted in `sort()` order. So, exactly as JavaScript does it: keys compared by UTF-16
/// code units; then, since JavaScript objects list integer-like keys (array indices, `"0"` to
/// `"4294967294"` without leading zeros) first in ascending numeric order, those first, at the top
/// level and in every nested object; other nested keys in their received order; `/` and non-ASCII
/// unescaped; numbers as JavaScript prints them (see [`write_number`]).
pub fn canonical_json(object: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    let mut out = String::new();
    write_object(&mut out, keys.into_iter().map(|k| (k, &object[k])));
    out
}

/// A key JavaScript treats as an array index, and its value: such keys come first in an
/// object's own-key order, ascending.
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|n| *n < u32::MAX)
}

/// Writes an object's members in JavaScript's own-key order: integer-like keys ascending, then
/// the others in the order given.
fn write_object<'a>(out: &mut String, members: impl Iterator<Item = (&'a String, &'a Value)>) {
    let (mut indices, others): (Vec<_>, Vec<_>) =
        members.partition(|(k, _)| array_index(k).is_some());
    indices.sort_by_key(|(k, _)| array_index(k));
    out.push('{');
    for (i, (k, v)) in indices.into_iter().chain(others).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_json(out, v);
    }
    out.push('}');
}

/// The largest integer a double holds exactly, and so the largest JavaScript reads exactly.
const MAX_SAFE: u64 = 1 << 53;

/// Writes a number as JavaScript prints it, since Sesami computes its signatures with
/// `JSON.stringify` over values JavaScript parsed: every number is a double. So `1` for `1.0`,
/// `0` for `-0`, `1e-7` and `1e+21` where Rust would write every digit; an integer up to 2^53
/// exactly as received; a larger one as the double nearest to it
/// (`9007199254740993` → `9007199254740992`, `1e21` and beyond in exponent form).
fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(u) = n.as_u64()
        && u <= MAX_SAFE
    {
        out.push_str(&u.to_string());
    } else if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= MAX_SAFE
    {
        out.push_str(&i.to_string());
    } else {
        // `as_f64` is the nearest double (round half to even), as JavaScript's parse gives.
        out.push_str(ryu_js::Buffer::new().format(n.as_f64().unwrap_or_default()));
    }
}

/// Writes `value` compactly, as `JSON.stringify` does.
fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Number(n) => write_number(out, n),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map.iter()),
        // Strings, booleans and null: serde_json escapes exactly as JSON.stringify.
        other => out.push_str(&other.to_string()),
    }
}

/// The object Sesami signs for query parameters: every parameter but `hmac`, as strings (or
/// `timestamp` as a number when `numeric_timestamp`).
pub fn signed_object(params: &Params, numeric_timestamp: bool) -> Map<String, Value> {
    params
        .iter()
        .filter(|(k, _)| *k != "hmac")
        .map(|(k, v)| {
            let value = match v.parse::<i64>() {
                Ok(n) if numeric_timestamp && k == "timestamp" => Value::from(n),
                _ => Value::from(v),
            };
            (k.to_owned(), value)
        })
        .collect()
}

/// Lowercase hex HMAC-SHA256 of `object`'s canonical JSON.
pub fn sign(secret: &[u8], object: &Map<String, Value>) -> String {
    hex::encode(crypto::hmac_sha256(
        secret,
        canonical_json(object).as_bytes(),
    ))
}

fn verify(keys: &[&[u8]], object: &Map<String, Value>, hmac_hex: &str) -> Result<()> {
    let tag = hex::decode(hmac_hex)
        .map_err(|_| Error::refused(Reason::SignatureInvalid, "the hmac is not hexadecimal"))?;
    let message = canonical_json(object);
    if crypto::verify_hmac_sha256(keys.iter().copied(), message.as_bytes(), &tag) {
        Ok(())
    } else {
        Err(Error::refused(
            Reason::SignatureInvalid,
            "the hmac does not match",
        ))
    }
}

/// Checks a signed timestamp (seconds, or milliseconds when above 10^12) against the window.
pub fn check_timestamp(raw: &str, window: Duration, now_ms: i64) -> Result<()> {
    let ts: i64 = raw
        .trim()
        .parse()
        .map_err(|_| Error::BadRequest("parameter `timestamp` is not a number".into()))?;
    let ts_ms = if ts > 1_000_000_000_000 {
        ts
    } else {
        ts.saturating_mul(1000)
    };
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(ts_ms).saturating_abs() > window_ms {
        return Err(Error::refused(
            Reason::Stale,
            "the request is too old or from the future (timestamp outside the window)",
        ));
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Verifies a signed launch or callback: hmac over every parameter but `hmac`, then freshness.
async fn verify_query(cx: &Sesami, params: &Params) -> Result<()> {
    let hmac = params.require("hmac")?;
    let timestamp = params.require("timestamp")?;
    params.require_id("shopId")?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    verify(
        &creds.verifying_keys(),
        &signed_object(params, cx.settings.numeric_timestamp),
        hmac,
    )?;
    check_timestamp(timestamp, cx.settings.timestamp_window, now_ms())
}

/// `GET /sesami/install`: verifies the launch, starts the OAuth flow.
pub async fn install(cx: &Sesami, req: &Request) -> Result<Response<Body>> {
    let params = Params::from_query(req)?;
    verify_query(cx, &params).await?;
    let shop_id = params.require("shopId")?;
    // Everything that can fail comes before the state is stored: a refusal stores nothing.
    let keys = cx.secrets.app_keys().await?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let redirect_uri = cx.public_url(req, "/sesami/callback")?;
    let data = FlowState {
        shop_id: Some(shop_id.to_owned()),
    };
    let state = flow::begin(cx, PLATFORM, data.to_attrs()?).await?;

    let mut url = cx.settings.api_base.clone();
    url.set_path(&format!(
        "{}/api/v1/oauth/authorization",
        url.path().trim_end_matches('/')
    ));
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("clientId", &creds.client_id);
        q.append_pair("shopId", shop_id);
        for scope in &cx.settings.scopes {
            q.append_pair("scopes[]", scope);
        }
        q.append_pair("redirectUri", &redirect_uri);
    }
    tracing::info!(shop_id, "sesami install started");
    let mut resp = web::redirect(url.as_str())?;
    web::set_cookie(&mut resp, &STATE_COOKIE.set(cx, &keys, &state))?;
    Ok(resp)
}

#[derive(Deserialize)]
struct TokenReply {
    token: secrecy::SecretString,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    #[serde(rename = "expireAt")]
    expire_at: Option<String>,
    name: Option<String>,
}

/// `GET /sesami/callback`: verifies, consumes the state, exchanges the code, stores the install.
pub async fn callback(cx: &Sesami, req: &Request) -> Result<Response<Body>> {
    let params = Params::from_query(req)?;
    // The merchant's Deny comes back as `?error=access_denied`, unsigned: report Sesami's
    // refusal as such (nothing is stored), as the other platforms' callbacks do.
    if let Some(error) = params.get("error") {
        return Err(Error::refused(
            Reason::PlatformRefused,
            format!(
                "Sesami answered `{}`: the install was not authorized; start again",
                web::printable(error)
            ),
        ));
    }
    let code = params.require("code")?;
    verify_query(cx, &params).await?;
    let shop_id = params.require("shopId")?;

    let state = flow::read_bound(cx, &STATE_COOKIE, req, PLATFORM, None).await?;
    let keys = cx.secrets.app_keys().await?;
    if state.record::<FlowState>()?.shop_id.as_deref() != Some(shop_id) {
        return Err(Error::refused(
            Reason::WrongTenant,
            "this callback is for another shop than the one whose install this browser started",
        ));
    }

    // The code's mark, the state's consumption and the install commit together.
    let reply = flow::exchange_once(cx, PLATFORM, code, || async {
        let reply = exchange(cx, shop_id, code).await?;
        let key = install_key(shop_id);
        // A re-install keeps the connection's creation time and reports an update.
        let (created_at, event) = connection::earlier(cx.store.get(&key).await?.as_ref());
        let install = Install {
            shop_id: shop_id.to_owned(),
            name: reply.name.clone(),
            token_sealed: keys.seal(
                reply.token.expose_secret(),
                &format!("{}/{}", key.pk, key.sk),
                "token_sealed",
            )?,
            expire_at: reply.expire_at.clone(),
            scopes: cx.settings.scopes.clone(),
            installed_at: now(),
            connection: connection::Common::new(PLATFORM, &key, None, created_at, now()),
        };
        let item = install.to_item(key)?;
        // The lifecycle event commits with the install it reports.
        let event = connection::view(&item)?.event_write(event)?;
        let writes = vec![state.consume(), Write::Put(item, Condition::Always), event];
        Ok((reply, writes))
    })
    .await?;
    crate::metrics::count(
        crate::metrics::names::INSTALLS,
        PLATFORM,
        &[],
        &[("tenant", shop_id)],
    );
    tracing::info!(shop_id, "sesami install stored");

    let mut resp = match &cx.settings.after_install_url {
        Some(url) => {
            let mut url = url.clone();
            url.query_pairs_mut().append_pair("shopId", shop_id);
            web::redirect(url.as_str())?
        }
        None => web::html_page(
            StatusCode::OK,
            "Installed",
            &format!(
                "<p>Gatehouse is installed on <strong>{}</strong> (shop <code>{}</code>).</p>",
                web::escape(reply.name.as_deref().unwrap_or(shop_id)),
                web::escape(shop_id)
            ),
        ),
    };
    web::set_cookie(&mut resp, &STATE_COOKIE.clear(cx))?;
    Ok(resp)
}

/// Exchanges the code for the shop's offline token (JSON POST, no redirects followed).
async fn exchange(cx: &Sesami, shop_id: &str, code: &str) -> Result<TokenReply> {
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let url = format!(
        "{}/api/v1/oauth/access-token",
        cx.settings.api_base.as_str().trim_end_matches('/')
    );
    let body = serde_json::json!({
        "code": code,
        "shopId": shop_id,
        "clientId": creds.client_id,
        "clientSecret": creds.client_secret.expose_secret(),
    });
    let resp = cx
        .http
        .client()?
        .post(&url)
        .json(&body)
        .send_to(PLATFORM, "token")
        .await
        .map_err(|e| {
            tracing::warn!(
                reason = crate::http::describe(&e),
                "sesami token call failed"
            );
            Error::Upstream(format!(
                "Sesami's token endpoint {}; try installing again",
                crate::http::describe(&e)
            ))
        })?;
    let status = resp.status();
    if status.is_client_error() {
        tracing::warn!(status = status.as_u16(), "sesami refused the code");
        return Err(Error::refused(
            Reason::PlatformRefused,
            "Sesami refused the authorization code; start the install again",
        ));
    }
    if !status.is_success() {
        return Err(Error::Upstream(format!(
            "Sesami's token endpoint answered {}",
            status.as_u16()
        )));
    }
    let reply: TokenReply = resp
        .json()
        .await
        .map_err(|_| Error::Upstream("Sesami's token endpoint answered unreadably".into()))?;
    if reply.token.expose_secret().is_empty() {
        return Err(Error::Upstream("Sesami's token reply has no token".into()));
    }
    if let Some(id) = &reply.client_id
        && id != &creds.client_id
    {
        return Err(Error::Upstream(
            "Sesami's token reply names another client".into(),
        ));
    }
    Ok(reply)
}

#[derive(Deserialize)]
struct Webhook {
    event: String,
    data: Map<String, Value>,
    hmac: String,
}

/// `POST /sesami/webhooks`: verifies the hmac over `data`, handles `uninstall_app`.
pub async fn webhooks(cx: &Sesami, req: &Request) -> Result<Response<Body>> {
    let answer = delivery(cx, req).await;
    crate::metrics::webhook(
        PLATFORM,
        answer
            .as_ref()
            .map(|a| a.get("duplicate") == Some(&Value::Bool(true))),
    );
    Ok(web::json(StatusCode::OK, &answer?))
}

/// A delivery's answer (`"duplicate": true` when it was seen before).
async fn delivery(cx: &Sesami, req: &Request) -> Result<Value> {
    web::require_content_type(req, "application/json")?;
    let body = web::body(req, MAX_WEBHOOK_BYTES)?;
    let hook: Webhook = web::json_body(
        body,
        "the body is not a JSON object with `event`, `data` and `hmac`",
    )?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    verify(&creds.verifying_keys(), &hook.data, &hook.hmac)?;
    check_webhook_data(&hook, cx.settings.webhook_signed_event)?;
    // The event names the app's rules match on (`webhook.<event>`).
    if !events::is_topic(&hook.event) {
        return Err(Error::BadRequest("`event` is not one event name".into()));
    }
    if let Some(ts) = hook.data.get("timestamp") {
        let raw = match ts {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        check_timestamp(&raw, cx.settings.timestamp_window, now_ms())?;
    }

    // A delivery is acted on once, whatever `event` says beside it: `event` is not signed, so
    // the mark is the signature over `data`, and signed data replayed under another event name
    // is a duplicate, not a new instruction. The mark and the effect commit together.
    let mark = once::delivery_mark(PLATFORM, &hook.hmac.to_ascii_lowercase());
    // Every delivery that is not a duplicate becomes one `webhook.<event>` event, written with
    // its mark and effect (see `events`).
    let event = delivery_event(&hook, &mark);
    let store = cx.store.as_ref();
    let answer = match hook.event.as_str() {
        "uninstall_app" => {
            let shop_id = uninstalled_shop(&hook)?;
            let key = install_key(&shop_id);
            let mut effect = vec![Write::Delete(key.clone(), Condition::Exists)];
            // The removal's lifecycle event, in the delivery's transaction: written exactly
            // when the install is deleted (no install: the delete is refused, and so is it).
            effect.extend(connection::removed_event(store, &key).await?);
            match events::apply_delivery(store, &mark, &effect, &event).await? {
                Applied::Done => {
                    crate::metrics::count(
                        crate::metrics::names::REMOVALS,
                        PLATFORM,
                        &[],
                        &[("tenant", &shop_id)],
                    );
                    tracing::info!(shop_id, "sesami install removed");
                    json!({"ok": true, "handled": true})
                }
                Applied::Duplicate => json!({"ok": true, "duplicate": true}),
                // No install: the uninstall holds already. Sesami stops retrying on a 2xx.
                Applied::Refused(_) => {
                    if events::mark_delivery(store, &mark, &event).await? {
                        tracing::info!(shop_id, "sesami uninstall for a shop not installed");
                        json!({"ok": true, "handled": true, "already_done": true})
                    } else {
                        json!({"ok": true, "duplicate": true})
                    }
                }
            }
        }
        other => {
            if events::mark_delivery(store, &mark, &event).await? {
                tracing::info!(event = %web::printable(other), "sesami webhook acknowledged, not handled");
                json!({"ok": true, "handled": false})
            } else {
                json!({"ok": true, "duplicate": true})
            }
        }
    };
    Ok(answer)
}

/// The parameters Sesami puts into the browser URLs it signs: the install launch
/// (`shopId, timestamp`), the OAuth callback (`code, shopId, timestamp`) and the app load
/// (`appId, locale, messageId, shopId, target, timestamp, token`).
const BROWSER_PARAMETERS: [&str; 8] = [
    "appId",
    "code",
    "locale",
    "messageId",
    "shopId",
    "target",
    "timestamp",
    "token",
];

/// Tells a webhook's signed `data` from a signed browser URL's parameters, which Sesami signs
/// with the same key and the same canonical form, and which anyone who sees such a URL (a
/// browser's history, a proxy's log, a `Referer`) holds. `event` is outside the signature, so
/// without this a fresh launch URL's `{shopId, timestamp}` and its `hmac` would make a valid
/// `uninstall_app`. A webhook's `data` must therefore name its event (`data.event`, equal to the
/// envelope's `event`), which no browser URL carries; and `data` made only of browser parameters
/// is refused outright (401), whatever else is claimed. Checked after the signature and before
/// anything is written. With `signed_event` off (`SESAMI_WEBHOOK_SIGNED_EVENT=false`, for a
/// Sesami whose data does not name its event) only the second rule holds.
fn check_webhook_data(hook: &Webhook, signed_event: bool) -> Result<()> {
    if hook
        .data
        .keys()
        .all(|k| BROWSER_PARAMETERS.contains(&k.as_str()))
    {
        return Err(Error::Unauthorized(
            "`data` holds only the parameters of a signed browser URL, not a webhook".into(),
        ));
    }
    match hook.data.get("event") {
        None if !signed_event => Ok(()),
        Some(Value::String(event)) if *event == hook.event => Ok(()),
        Some(Value::String(_)) => Err(Error::BadRequest(
            "`data.event` names another event than `event`".into(),
        )),
        Some(_) => Err(Error::BadRequest("`data.event` is not a string".into())),
        None => Err(Error::BadRequest(
            "`data.event` is missing: a webhook's signed data names its event".into(),
        )),
    }
}

/// The event of a verified Sesami delivery: `webhook.<event>` for the shop its signed data
/// names (empty when it names none), the signed `data` as the payload.
fn delivery_event(hook: &Webhook, mark: &Item) -> Event {
    let shop = match hook.data.get("shopId") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Event::delivery(
        PLATFORM,
        &hook.event,
        &shop,
        Value::Object(hook.data.clone()),
        mark,
    )
}

/// The shop an `uninstall_app` delivery names, checked before anything is written.
fn uninstalled_shop(hook: &Webhook) -> Result<String> {
    let shop_id = match hook.data.get("shopId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | None => {
            return Err(Error::BadRequest("`data.shopId` is missing".into()));
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "`data.shopId` is neither a string nor a number".into(),
            ));
        }
    };
    web::check_id("`data.shopId`", &shop_id)?;
    Ok(shop_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors: tests/vectors/sesami.py computes them independently with python3's hmac and json modules.
    const SECRET: &[u8] = b"sesami-test-secret";

    fn params(q: &str) -> Params {
        Params::parse(q).unwrap()
    }

    #[test]
    fn install_launch_vector() {
        let p = params("shopId=shop-123&timestamp=1732406400000&hmac=x");
        let object = signed_object(&p, false);
        assert_eq!(
            canonical_json(&object),
            r#"{"shopId":"shop-123","timestamp":"1732406400000"}"#
        );
        assert_eq!(
            sign(SECRET, &object),
            "3f77b09f13b8b3116f3eaed5d0f89f5976a5e94da92a6728f7b90058ec9dd0af"
        );
    }

    #[test]
    fn callback_vector() {
        let p = params("timestamp=1732406400000&code=c0de%2F42&shopId=shop-123&hmac=x");
        assert_eq!(
            sign(SECRET, &signed_object(&p, false)),
            "e84c59d39234b806327775c55c2c186c8c25b3fe5f3006688a7b64fb47c4f6d0"
        );
    }

    #[test]
    fn app_load_vector() {
        let p = params(
            "appId=app-1&locale=fr-CA&messageId=m-9&shopId=shop-123&target=admin&timestamp=1732406400&token=t%C3%A9st&hmac=x",
        );
        assert_eq!(
            sign(SECRET, &signed_object(&p, false)),
            "1012bf24cdd21b9955e785fc80e787f59f3f06b2df4341c1488dce4490d5bdf0"
        );
    }

    #[test]
    fn webhook_data_vector_with_nesting_and_non_ascii() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"shopId":"shop-123","z":{"b":2,"a":[1,"x/y"]},"name":"Café Ünïcode ☕","price":12.5,"whole":3.0}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&data),
            r#"{"name":"Café Ünïcode ☕","price":12.5,"shopId":"shop-123","whole":3,"z":{"b":2,"a":[1,"x/y"]}}"#
        );
        assert_eq!(
            sign(SECRET, &data),
            "3fb15c458ca7140071366d593be7de0fd9f7cfd308c6a3ba2566762ce149070e"
        );
    }

    /// Numbers where Rust's and JavaScript's printing differ: exponents, `-0`, integral floats.
    /// Expected text and tag computed with Node.js (`JSON.stringify` of the parsed object, keys
    /// sorted; `crypto.createHmac`).
    #[test]
    fn webhook_data_vector_with_javascript_numbers() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"shopId":"s","tiny":0.0000001,"huge":1e21,"negzero":-0.0,"big":1.5E300,"frac":123456789.125,"neg":-25e-9,"whole":1e2}"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&data),
            r#"{"big":1.5e+300,"frac":123456789.125,"huge":1e+21,"neg":-2.5e-8,"negzero":0,"shopId":"s","tiny":1e-7,"whole":100}"#
        );
        assert_eq!(
            sign(SECRET, &data),
            "3f0bbee04c734d12cf25e1b6e1dbb096a256425c55103d3dd4966fe33d61dac9"
        );
    }

    /// A number whose nearest double a fast float parser misses by one unit (found by fuzzing):
    /// JavaScript reads it exactly, so we must too (serde_json's `float_roundtrip`).
    #[test]
    fn webhook_data_vector_with_a_hard_to_parse_number() {
        let data: Map<String, Value> =
            serde_json::from_str(r#"{"shopId":"s","piny":0.0000478644004073709551615}"#).unwrap();
        assert_eq!(
            canonical_json(&data),
            r#"{"piny":0.00004786440040737096,"shopId":"s"}"#
        );
        assert_eq!(
            sign(SECRET, &data),
            "82257072734f06d8ba55ea556a45fe7492583125d70ca23e028dd07b6b8c1144"
        );
    }

    /// Vectors computed by Node.js (`node tests/vectors/sesami.js`): the text parsed with
    /// `JSON.parse`, keys inserted in `sort()` order, `JSON.stringify`, `crypto.createHmac`.
    fn node_vector(text: &str, canonical: &str, tag: &str) {
        let data: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(canonical_json(&data), canonical);
        assert_eq!(sign(SECRET, &data), tag);
    }

    #[test]
    fn integer_like_keys_come_first_as_in_javascript() {
        node_vector(
            r#"{"shopId":"s","10":"x","9":"y","-1":"z","z":{"b":1,"10":2,"2":3,"01":4,"a":5,"4294967295":6,"4294967294":7,"0":8}}"#,
            r#"{"9":"y","10":"x","-1":"z","shopId":"s","z":{"0":8,"2":3,"10":2,"4294967294":7,"b":1,"01":4,"a":5,"4294967295":6}}"#,
            "9b0554ea20ac5a7d43445bd3df22bba7ad0c3a0ebccb6822bd3d4ddec192cdde",
        );
    }

    #[test]
    fn integers_beyond_two_to_the_53_print_as_javascript_doubles() {
        node_vector(
            r#"{"shopId":"s","big":9007199254740993,"neg":-9007199254740993,"safe":9007199254740992,"u64":18446744073709551615,"bigger":123456789012345678901234567890,"e21":1000000000000000000000,"odd":9007199254740995,"list":[9007199254740993,-18446744073709551616]}"#,
            r#"{"big":9007199254740992,"bigger":1.2345678901234568e+29,"e21":1e+21,"list":[9007199254740992,-18446744073709552000],"neg":-9007199254740992,"odd":9007199254740996,"safe":9007199254740992,"shopId":"s","u64":18446744073709552000}"#,
            "69e63124cb51a1aa47baf1f05cb510e80a36467918f799d95331a55ac1e1017e",
        );
    }

    #[test]
    fn top_level_keys_sort_by_utf16_code_units() {
        node_vector(
            r#"{"\uff61":1,"\ud83d\ude00":2,"a":3,"shopId":"s"}"#,
            "{\"a\":3,\"shopId\":\"s\",\"\u{1f600}\":2,\"\u{ff61}\":1}",
            "9157090927402be8128dba0471d7f86b5e3146ddc10257d74194fac9f19ee596",
        );
    }

    #[test]
    fn numeric_timestamp_signing_is_a_setting() {
        let p = params("shopId=s&timestamp=1732406400000&hmac=x");
        assert_eq!(
            canonical_json(&signed_object(&p, true)),
            r#"{"shopId":"s","timestamp":1732406400000}"#
        );
    }

    #[test]
    fn verify_rejects_wrong_and_malformed_hmacs() {
        let object = signed_object(&params("shopId=s&timestamp=1"), false);
        let good = sign(SECRET, &object);
        assert!(verify(&[SECRET], &object, &good).is_ok());
        assert!(verify(&[b"other".as_slice(), SECRET], &object, &good).is_ok());
        assert!(verify(&[b"other".as_slice()], &object, &good).is_err());
        assert!(verify(&[SECRET], &object, "zz").is_err());
        assert!(verify(&[SECRET], &object, &good[..62]).is_err());
    }

    #[test]
    fn timestamps_in_seconds_or_milliseconds() {
        let w = Duration::from_secs(300);
        let now = 1_732_406_400_000;
        assert!(check_timestamp("1732406400", w, now).is_ok());
        assert!(check_timestamp("1732406400000", w, now).is_ok());
        assert!(check_timestamp("1732406100", w, now).is_ok());
        assert!(check_timestamp("1732406099", w, now).is_err());
        assert!(check_timestamp("1732406701000", w, now).is_err());
        assert!(check_timestamp("soon", w, now).is_err());
        assert!(check_timestamp("-9223372036854775808", w, now).is_err());
    }
}
