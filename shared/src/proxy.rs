//! The auth-injecting proxy: `ANY /v1/proxy/{platform}/{tenant}/{path+}`, for the app's own back
//! end (IAM-authorized on API Gateway), one function per platform.
//!
//! The app's code calls a platform for one tenant without ever holding the tenant's tokens or
//! our client secrets: it names the platform, the tenant (the same `{platform}/{tenant}`
//! addressing as `/v1/connections`) and the platform's API path; the proxy forwards the request
//! to the platform's **configured** API base only, with the auth that platform needs, and passes
//! the answer back.
//!
//! - **Where.** The path is appended to the configured base after strict checks
//!   ([`check_path`]): no `.`/`..` or empty segments, no percent-encoded `/`, `\` or `.`, no
//!   backslash, `@`, control character, or `:` in the first segment (which would read as a
//!   scheme). The URL is then built with the `url` crate and must keep the base's origin and sit
//!   under the base's path ([`target_url`]). A host never comes from the request.
//! - **Auth.** The caller's auth headers (and its SigV4 headers, cookies, forwarding headers)
//!   are dropped, never forwarded; the platform's are injected from the stored connection
//!   ([`injected`]): Haravan bearer; WebLink bearer and `weblink-portal`; Sesami `x-api-key`,
//!   `x-client-id`, `x-shop-id`; Saison's MAC-signed `Authorization` over the forwarded method,
//!   path and host; MoMo bearer (the product token), `Ocp-Apim-Subscription-Key` and
//!   `X-Target-Environment`.
//! - **401.** The credentials are refreshed once and the call retried once. The refresh is
//!   forced only while the stored token is still the one that got the 401
//!   ([`crate::refresh::fresh_item_replacing`], [`crate::momo::access_token_replacing`]), under
//!   the same lease as any refresh, so concurrent callers cause one refresh per token. A second
//!   401 is passed back; so is a first one when nothing can be refreshed (Sesami's offline token).
//!   A refresh token the platform refuses is a 409 `needs_reauth`.
//! - **Everything else** the platform answers (429 and its `Retry-After` included) is passed
//!   back as it is, less hop-by-hop headers (both ways: `Connection` and the headers it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, and `Host`).
//! - **Bounds.** A request body above [`MAX_REQUEST_BODY`] is a 413; an answer above
//!   [`MAX_RESPONSE_BODY`] is a 502; time is the request's budget ([`crate::budget`]) as for
//!   every route, each call within the HTTP client's timeout.
//! - **Logs.** One line per call: platform, method, status, whether it was retried. Never a
//!   body, a header, a token or the path's query.
//!
//! The tenant lookups here (`{platform}/{tenant}` to a store key) are the proxy's own until the
//! connection model's resolvers replace them.

use crate::context::Deps;
use crate::error::{Error, Reason, Result};
use crate::haravan::{self, Haravan};
use crate::http::PlatformCall as _;
use crate::momo::{self, Momo};
use crate::refresh::{self, Refresher};
use crate::saison::{self, ConnectionId, MacKey, Saison};
use crate::sesami::{self, Sesami};
use crate::store::{Item, Key};
use crate::web::{self, require_iam_caller};
use crate::weblink::{self, Weblink, WeblinkRefresher};
use lambda_http::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

/// The largest request body forwarded: far above any API read or write these platforms take,
/// and well under Lambda's 6 MB payload.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The largest answer passed back: a Lambda response is at most 6 MB, and a body that is not
/// UTF-8 goes back base64-encoded (a third larger).
pub const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;
/// The longest forwarded path and query, each.
pub const MAX_PATH_BYTES: usize = 2048;

fn bad_path(why: &str) -> Error {
    Error::refused(
        Reason::MalformedParameter,
        format!("the platform path is refused: {why}"),
    )
}

/// Checks the platform path (what follows `/v1/proxy/{platform}/{tenant}/`, as received) before
/// it is appended to the configured API base. Everything that could move the URL off the base
/// (to a parent path, another host, another scheme) or read two ways is refused (400): an empty
/// path or segment (`//`, a trailing `/`), `.` and `..` segments, percent-encoded `/`, `\`, `.`
/// or control characters, a backslash, `@`, a `:` in the first segment (`http:`, `host:port`),
/// a control character, anything but visible ASCII, an invalid percent escape.
pub fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(bad_path("it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad_path(&format!(
            "it is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_path(
            "it holds a control character, a space or non-ASCII text",
        ));
    }
    if path.contains('\\') {
        return Err(bad_path("it holds a backslash"));
    }
    if path.contains('@') {
        return Err(bad_path("it holds `@`"));
    }
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b != b'%' {
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(bad_path("it holds an invalid percent escape"));
        };
        let decoded = u8::try_from(hi * 16 + lo).unwrap_or(0);
        if matches!(decoded, b'/' | b'\\' | b'.') || decoded.is_ascii_control() {
            return Err(bad_path(
                "it holds a percent-encoded `/`, `\\`, `.` or control character",
            ));
        }
    }
    for (i, segment) in path.split('/').enumerate() {
        if segment.is_empty() {
            return Err(bad_path("it has an empty segment"));
        }
        if segment == "." || segment == ".." {
            return Err(bad_path("it has a `.` or `..` segment"));
        }
        if i == 0 && segment.contains(':') {
            return Err(bad_path("its first segment holds `:`"));
        }
    }
    Ok(())
}

/// The URL a call goes to: `path` (checked by [`check_path`]) under the configured `base`, with
/// `query`. Built with the `url` crate, then verified: the same origin as the base, and a path
/// under the base's, so that nothing in the request can reach another host or a path above
/// the base.
pub fn target_url(base: &Url, path: &str, query: Option<&str>) -> Result<Url> {
    check_path(path)?;
    if query.is_some_and(|q| q.len() > MAX_PATH_BYTES) {
        return Err(bad_path(&format!(
            "its query is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    if url.origin() != base.origin()
        || !url.path().starts_with(&prefix)
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad_path("it does not stay under the platform's API base"));
    }
    Ok(url)
}

/// The methods forwarded: HTTP's own (API Gateway's `ANY` takes these); an extension method
/// is a 405, never sent on to a platform.
const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The tenant and the platform path of a proxy request for `platform`:
/// `/v1/proxy/<platform>/<tenant>/<path>`, after the checks that need nothing stored: the IAM
/// caller, the method, the body's size. The tenant is an id ([`web::check_id`]).
fn address<'r>(req: &'r Request, platform: &str) -> Result<(&'r str, &'r str)> {
    require_iam_caller(req)?;
    if !FORWARDED_METHODS.contains(req.method()) {
        return Err(Error::MethodNotAllowed);
    }
    web::body(req, MAX_REQUEST_BODY)?;
    let prefix = format!("/v1/proxy/{platform}/");
    let rest = req
        .uri()
        .path()
        .strip_prefix(&prefix)
        .ok_or_else(|| Error::NotFound("no such route".into()))?;
    let (tenant, path) = rest.split_once('/').ok_or_else(|| {
        Error::refused(
            Reason::MissingParameter,
            "the request names no platform path after the tenant",
        )
    })?;
    Ok((web::check_id("the tenant", tenant)?, path))
}

/// Headers that belong to one connection, never forwarded either way (RFC 9110 7.6.1), and
/// `Host`, which is the target's.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Caller headers that carry or shape credentials: the platform auth the proxy injects (a
/// caller's own is dropped, never forwarded alongside or instead of ours), the caller's SigV4
/// signature to API Gateway, cookies, and what API Gateway adds about the caller.
const CALLER_AUTH: &[&str] = &[
    "authorization",
    "cookie",
    "x-api-key",
    "x-client-id",
    "x-shop-id",
    "ocp-apim-subscription-key",
    "x-target-environment",
    "weblink-portal",
    "x-api-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "forwarded",
    "expect",
];

/// Whether header `name` is hop-by-hop: one of [`HOP_BY_HOP`], any `Proxy-*`, or one that the
/// message's `Connection` header names.
fn hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n)
        || n.starts_with("proxy-")
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|listed| listed.trim().eq_ignore_ascii_case(n))
}

/// The caller's headers as forwarded: less hop-by-hop headers and everything of
/// [`CALLER_AUTH`], `X-Amz-*`, `X-Amzn-*` and `X-Forwarded-*`.
pub fn forwarded_request_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if hop_by_hop(name, headers)
            || CALLER_AUTH.contains(&n)
            || n.starts_with("x-amz-")
            || n.starts_with("x-amzn-")
            || n.starts_with("x-forwarded-")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The platform's headers as passed back: less hop-by-hop headers and `Set-Cookie` (a
/// platform's cookie is for its own client, not for our API's domain).
pub fn passed_back_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if hop_by_hop(name, headers) || name == header::SET_COOKIE {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// What identifies the credentials of one attempt, to refresh them only while they are still
/// the stored ones after a 401.
enum Used {
    /// A refreshable item's `token_version` ([`refresh::version_of`]).
    Version(Value),
    /// MoMo's product token itself (its cache has no version).
    Token(SecretString),
    /// Nothing can be refreshed (Sesami's offline token).
    Fixed,
}

/// The auth of one attempt: the headers to inject, and what they were made from.
struct Auth {
    headers: Vec<(HeaderName, HeaderValue)>,
    used: Used,
}

/// A header value holding a secret: marked sensitive (kept out of `Debug` and HPACK tables).
fn secret_header(value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        Error::Upstream("the platform issued a credential that cannot be sent in a header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn plain_header(value: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::Internal("a configured header value is not valid".into()))
}

fn bearer(token: &SecretString) -> Result<(HeaderName, HeaderValue)> {
    Ok((
        header::AUTHORIZATION,
        secret_header(&format!("Bearer {}", token.expose_secret()))?,
    ))
}

/// A platform's auth for one tenant: the headers of a first attempt, or (`rejected`: the auth of
/// an attempt the platform answered 401 to) of a retry with refreshed credentials, `None` when
/// nothing fresher can be had.
#[async_trait::async_trait]
trait Inject: Send + Sync {
    async fn auth(
        &self,
        method: &Method,
        url: &Url,
        rejected: Option<&Used>,
    ) -> Result<Option<Auth>>;
}

/// The tenant's item, fresh (`rejected`: other than the tokens of that version) and its version;
/// `None` when a forced refresh could not change it.
async fn token_item(
    cx: &Deps,
    key: &Key,
    refresher: &dyn Refresher,
    rejected: Option<&Used>,
) -> Result<Option<(Item, Value)>> {
    let item = match rejected {
        None => refresh::fresh_item(cx, key, refresher).await?,
        Some(Used::Version(v)) => {
            let item = refresh::fresh_item_replacing(cx, key, refresher, v).await?;
            if refresh::version_of(&item)? == *v {
                return Ok(None);
            }
            item
        }
        Some(_) => return Ok(None),
    };
    let version = refresh::version_of(&item)?;
    Ok(Some((item, version)))
}

struct HaravanAuth<'a> {
    cx: &'a Haravan,
    key: Key,
}

#[async_trait::async_trait]
impl Inject for HaravanAuth<'_> {
    async fn auth(&self, _: &Method, _: &Url, rejected: Option<&Used>) -> Result<Option<Auth>> {
        let Some((item, version)) = token_item(self.cx, &self.key, self.cx, rejected).await? else {
            return Ok(None);
        };
        let keys = self.cx.secrets.app_keys().await?;
        let token = refresh::open(&keys, &item)?.access_token;
        Ok(Some(Auth {
            headers: vec![bearer(&token)?],
            used: Used::Version(version),
        }))
    }
}

struct WeblinkAuth<'a> {
    cx: &'a Weblink,
    key: Key,
    session: weblink::Session,
}

#[async_trait::async_trait]
impl Inject for WeblinkAuth<'_> {
    async fn auth(&self, _: &Method, _: &Url, rejected: Option<&Used>) -> Result<Option<Auth>> {
        let refresher = WeblinkRefresher::for_session(self.cx, &self.session);
        let Some((item, version)) = token_item(self.cx, &self.key, &refresher, rejected).await?
        else {
            return Ok(None);
        };
        let keys = self.cx.secrets.app_keys().await?;
        let token = refresh::open(&keys, &item)?.access_token;
        let portal = self
            .session
            .portal
            .as_deref()
            .ok_or_else(|| Error::Internal("the WebLink session names no portal".into()))?;
        Ok(Some(Auth {
            headers: vec![
                bearer(&token)?,
                (
                    HeaderName::from_static("weblink-portal"),
                    plain_header(portal)?,
                ),
            ],
            used: Used::Version(version),
        }))
    }
}

struct SaisonAuth<'a> {
    cx: &'a Saison,
    key: Key,
}

#[async_trait::async_trait]
impl Inject for SaisonAuth<'_> {
    async fn auth(
        &self,
        method: &Method,
        url: &Url,
        rejected: Option<&Used>,
    ) -> Result<Option<Auth>> {
        let cx = self.cx;
        let Some((item, version)) = token_item(cx, &self.key, cx, rejected).await? else {
            return Ok(None);
        };
        let keys = cx.secrets.app_keys().await?;
        let sealed = item.record::<refresh::SealedTokens>()?;
        let access = sealed.open(&keys, &self.key)?.access_token;
        let mac_key = match cx.settings.mac_key {
            MacKey::ClientSecret => cx
                .secrets
                .credentials(saison::PLATFORM)
                .await?
                .client_secret
                .clone(),
            MacKey::TokenMacKey => sealed.open_mac_key(&keys, &self.key)?.ok_or_else(|| {
                Error::Upstream("Saison issued no mac_key, but SAISON_MAC_KEY=mac_key".into())
            })?,
        };
        // Signed over exactly what is sent: the method, the path and query, the host and port
        // of the URL built from the configured base.
        let authorization = saison::authorization(
            access.expose_secret(),
            mac_key.expose_secret().as_bytes(),
            method.as_str(),
            url,
            cx.settings.mac_separator,
        )?;
        Ok(Some(Auth {
            headers: vec![
                (header::AUTHORIZATION, secret_header(&authorization)?),
                (
                    HeaderName::from_static("x-api-version"),
                    HeaderValue::from_static("1"),
                ),
            ],
            used: Used::Version(version),
        }))
    }
}

struct SesamiAuth {
    token: SecretString,
    client_id: String,
    shop: String,
}

#[async_trait::async_trait]
impl Inject for SesamiAuth {
    async fn auth(&self, _: &Method, _: &Url, rejected: Option<&Used>) -> Result<Option<Auth>> {
        // One offline token per shop, which never expires and has nothing to refresh it with:
        // a 401 is passed back as it is.
        if rejected.is_some() {
            return Ok(None);
        }
        Ok(Some(Auth {
            headers: vec![
                (
                    HeaderName::from_static("x-api-key"),
                    secret_header(self.token.expose_secret())?,
                ),
                (
                    HeaderName::from_static("x-client-id"),
                    plain_header(&self.client_id)?,
                ),
                (
                    HeaderName::from_static("x-shop-id"),
                    plain_header(&self.shop)?,
                ),
            ],
            used: Used::Fixed,
        }))
    }
}

struct MomoAuth<'a> {
    cx: &'a Momo,
    product: &'a str,
}

#[async_trait::async_trait]
impl Inject for MomoAuth<'_> {
    async fn auth(&self, _: &Method, _: &Url, rejected: Option<&Used>) -> Result<Option<Auth>> {
        let token = match rejected {
            None => momo::access_token(self.cx, self.product).await?,
            Some(Used::Token(old)) => {
                let token = momo::access_token_replacing(self.cx, self.product, old).await?;
                if token.expose_secret() == old.expose_secret() {
                    return Ok(None);
                }
                token
            }
            Some(_) => return Ok(None),
        };
        let subscription = momo::product_subscription_key(self.cx, self.product).await?;
        Ok(Some(Auth {
            headers: vec![
                bearer(&token)?,
                (
                    HeaderName::from_static("ocp-apim-subscription-key"),
                    secret_header(subscription.expose_secret())?,
                ),
                (
                    HeaderName::from_static("x-target-environment"),
                    plain_header(&self.cx.settings.target_environment)?,
                ),
            ],
            used: Used::Token(token),
        }))
    }
}

fn configured_base(base: &str, name: &str) -> Result<Url> {
    Url::parse(base).map_err(|_| Error::Internal(format!("{name} is not a URL")))
}

/// One proxied call: forwarded with `auth`'s headers, retried once after a 401 with refreshed
/// credentials, the answer passed back.
async fn forward(
    cx: &Deps,
    platform: &'static str,
    req: &Request,
    url: Url,
    auth: &dyn Inject,
) -> Result<Response<Body>> {
    let body = web::body(req, MAX_REQUEST_BODY)?.to_vec();
    let method = req.method().clone();
    let headers = forwarded_request_headers(req.headers());
    let first = auth
        .auth(&method, &url, None)
        .await?
        .ok_or_else(|| Error::Internal("no credentials for a first attempt".into()))?;
    // Only now: building the client loads the CA store, which a request refused for an unknown
    // tenant has no use for.
    let http = cx.http.client()?;
    let mut resp = send(http, platform, &method, &url, &headers, &body, &first).await?;
    let mut retried = false;
    if resp.status() == StatusCode::UNAUTHORIZED
        && let Some(second) = auth.auth(&method, &url, Some(&first.used)).await?
    {
        retried = true;
        resp = send(http, platform, &method, &url, &headers, &body, &second).await?;
    }
    tracing::info!(
        platform,
        method = %method,
        status = resp.status().as_u16(),
        retried,
        "proxied"
    );
    pass_back(platform, resp).await
}

async fn send(
    http: &reqwest::Client,
    platform: &str,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &[u8],
    auth: &Auth,
) -> Result<reqwest::Response> {
    let mut headers = headers.clone();
    for (name, value) in &auth.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut request = http.request(method.clone(), url.clone()).headers(headers);
    if !body.is_empty() {
        request = request.body(body.to_vec());
    }
    request
        .send_to(platform, "proxy")
        .await
        .map_err(|e| Error::Upstream(format!("the {platform} API {}", crate::http::describe(&e))))
}

/// The platform's answer, bounded: its status, its end-to-end headers and its body.
async fn pass_back(platform: &str, mut resp: reqwest::Response) -> Result<Response<Body>> {
    let too_large = || {
        Error::Upstream(format!(
            "the {platform} API's answer is larger than {MAX_RESPONSE_BODY} bytes, the most the \
             proxy passes back"
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BODY as u64)
    {
        return Err(too_large());
    }
    let status = resp.status();
    let headers = passed_back_headers(resp.headers());
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        Error::Upstream(format!(
            "the {platform} API's answer could not be read ({})",
            crate::http::describe(&e)
        ))
    })? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BODY {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let mut out = Response::new(if bytes.is_empty() {
        Body::Empty
    } else {
        Body::Binary(bytes)
    });
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The proxy's refusals as the `/v1` API words them: a tenant without a connection is 404
/// `unknown_tenant` (the store's "not installed"), and a refresh token the platform refused is
/// 409 `needs_reauth` (the connection must be made again; the shared refusal is a 403 worded for
/// an install).
fn v1_answer(result: Result<Response<Body>>) -> Result<Response<Body>> {
    match result {
        Err(Error::Refused {
            reason: Reason::NotInstalled,
            ..
        }) => Err(Error::refused(
            Reason::UnknownTenant,
            "no connection is stored for this tenant",
        )),
        Err(
            e @ Error::Refused {
                reason: Reason::NeedsReauth,
                ..
            },
        ) => {
            tracing::warn!(status = 409, error = %e, "request refused");
            let mut resp = Error::refused(
                Reason::NeedsReauth,
                "the platform no longer accepts this connection's authorization; connect again",
            )
            .into_response(web::Format::Json);
            *resp.status_mut() = StatusCode::CONFLICT;
            Ok(resp)
        }
        other => other,
    }
}

/// `ANY /v1/proxy/haravan/{org id}/{path+}`: under `HARAVAN_API_BASE`, with the org's bearer
/// token.
pub async fn haravan(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    let (org, path) = address(req, haravan::PLATFORM)?;
    let base = configured_base(&cx.settings.api_base, "HARAVAN_API_BASE")?;
    let url = target_url(&base, path, req.uri().query())?;
    let auth = HaravanAuth {
        cx,
        key: haravan::install_key(org),
    };
    v1_answer(forward(cx, haravan::PLATFORM, req, url, &auth).await)
}

/// `ANY /v1/proxy/weblink/{session id}/{path+}`: under `WEBLINK_API_BASE`, with the session's
/// bearer token and its portal as `weblink-portal`.
pub async fn weblink(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    let (session_id, path) = address(req, weblink::PLATFORM)?;
    let base = configured_base(&cx.settings.api_base, "WEBLINK_API_BASE")?;
    let url = target_url(&base, path, req.uri().query())?;
    let key = weblink::session_key(session_id);
    let session: weblink::Session = cx
        .store
        .get(&key)
        .await?
        .ok_or_else(|| crate::vending::unknown("WebLink"))?
        .record()?;
    let auth = WeblinkAuth { cx, key, session };
    v1_answer(forward(cx, weblink::PLATFORM, req, url, &auth).await)
}

/// `ANY /v1/proxy/sesami/{shop id}/{path+}`: under `SESAMI_API_BASE`, with the shop's offline
/// token as `x-api-key`, our client id and the shop id.
pub async fn sesami(cx: &Sesami, req: &Request) -> Result<Response<Body>> {
    let (shop, path) = address(req, sesami::PLATFORM)?;
    let url = target_url(&cx.settings.api_base, path, req.uri().query())?;
    let key = sesami::install_key(shop);
    let install: sesami::Install = cx
        .store
        .get(&key)
        .await?
        .ok_or_else(|| crate::vending::unknown("Sesami"))?
        .record()?;
    let keys = cx.secrets.app_keys().await?;
    let token = keys
        .open(
            &install.token_sealed,
            &format!("{}/{}", key.pk, key.sk),
            "token_sealed",
        )
        .map_err(|_| Error::Internal("the stored Sesami token cannot be decrypted".into()))?;
    let creds = cx.secrets.credentials(sesami::PLATFORM).await?;
    let auth = SesamiAuth {
        token,
        client_id: creds.client_id.clone(),
        shop: install.shop_id,
    };
    v1_answer(forward(cx, sesami::PLATFORM, req, url, &auth).await)
}

/// `ANY /v1/proxy/saison/{cardholder}/{path+}?end_user=<app user>[&member=<member>]`: under
/// `SAISON_API_BASE`, MAC-signed with the connection's token. `end_user` is required, `member`
/// defaults to the first of `SAISON_MEMBERS`; both are taken out of the forwarded query.
pub async fn saison(cx: &Saison, req: &Request) -> Result<Response<Body>> {
    let (cardholder, path) = address(req, saison::PLATFORM)?;
    // The MAC covers the query as sent: it is parsed strictly first (a parameter given twice,
    // an invalid escape or invalid UTF-8 is a 400), so that it reads one way only.
    web::Params::from_query(req)?;
    let (ours, forwarded) = split_query(req.uri().query().unwrap_or(""), &["end_user", "member"])?;
    let end_user = ours
        .iter()
        .find(|(n, _)| n == "end_user")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| {
            Error::refused(
                Reason::MissingParameter,
                "parameter `end_user` is missing: the app user whose connection this is",
            )
        })?;
    let end_user = web::check_id("parameter `end_user`", end_user)?;
    let member = cx.settings.served_member(
        ours.iter()
            .find(|(n, _)| n == "member")
            .map(|(_, m)| m.as_str()),
    )?;
    let base = configured_base(&cx.settings.api_base, "SAISON_API_BASE")?;
    let url = target_url(&base, path, Some(&forwarded))?;
    let auth = SaisonAuth {
        cx,
        key: saison::connection_key(&ConnectionId::new(end_user, member, cardholder)),
    };
    v1_answer(forward(cx, saison::PLATFORM, req, url, &auth).await)
}

/// `ANY /v1/proxy/momo/{product}/{path+}` (`collection` or `disbursement`, and configured in
/// `MOMO_PRODUCTS`): under `MOMO_BASE_URL`, with the product's token, subscription key and
/// target environment.
pub async fn momo(cx: &Momo, req: &Request) -> Result<Response<Body>> {
    let (product, path) = address(req, momo::PLATFORM)?;
    if !matches!(product, "collection" | "disbursement")
        || !cx.settings.products.iter().any(|p| p == product)
    {
        return Err(Error::refused(
            Reason::UnknownTenant,
            "the MoMo product is not one this app uses (`collection` or `disbursement`, as \
             configured in MOMO_PRODUCTS)",
        ));
    }
    let base = configured_base(&cx.settings.base_url, "MOMO_BASE_URL")?;
    let url = target_url(&base, path, req.uri().query())?;
    let auth = MomoAuth { cx, product };
    v1_answer(forward(cx, momo::PLATFORM, req, url, &auth).await)
}

/// Splits a raw query into the parameters named in `ours` (decoded, each at most once) and the
/// rest, kept exactly as received (raw pairs in their order) to be forwarded.
fn split_query(raw: &str, ours: &[&str]) -> Result<(Vec<(String, String)>, String)> {
    let mut taken: Vec<(String, String)> = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = web::Params::parse(&format!("n={name}"))?
            .get("n")
            .unwrap_or_default()
            .to_owned();
        if ours.contains(&decoded.as_str()) {
            if taken.iter().any(|(n, _)| *n == decoded) {
                return Err(Error::refused(
                    Reason::DuplicateParameter,
                    format!("parameter `{decoded}` is given more than once"),
                ));
            }
            let value = web::Params::parse(&format!("v={value}"))?
                .get("v")
                .unwrap_or_default()
                .to_owned();
            taken.push((decoded, value));
        } else {
            rest.push(pair);
        }
    }
    Ok((taken, rest.join("&")))
}

#[cfg(test)]
mod tests;
