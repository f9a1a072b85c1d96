//! Token vending: the `/v1/connections` routes, for the app's own back end (IAM-authorized).
//!
//! - `GET /v1/connections/{platform}/{tenant}` → the [`Connection`] (never a token); 404
//!   `unknown_tenant` when none is stored.
//! - `POST /v1/connections/{platform}/{tenant}/token` → `{access_token, token_type,
//!   expires_at}`: the stored token, refreshed first when due under the refresh lease
//!   ([`refresh::fresh_item`]), so any number of concurrent callers cause one refresh. When it
//!   cannot be refreshed: `409 {reason: "needs_reauth", message, connect_url}`, with a new
//!   connect link for the connection's end user where there is one and the platform has links.
//!   Saison: `409 {reason: "use_proxy"}`: its access token is useless without the MAC keyed
//!   with our client secret.
//! - `GET /v1/connections?platform=P[&end_user=U][&cursor=C]` → `{connections, next_cursor}`:
//!   index queries only ([`crate::store::BY_PLATFORM`] over its shards, or
//!   [`crate::store::BY_END_USER`]), no secret read.
//!
//! Tenants: `sesami/{shop}`, `haravan/{org}`, `saison/{cardholder}?end_user=&member=` (member
//! defaults to the first of `SAISON_MEMBERS`), `weblink/{session id}`, `momo/{product}`.
//!
//! One function per platform serves its GET and token routes (`<platform>-connections`), so
//! each reaches only its own platform's partitions and secret; the listing is a function of its
//! own that reads indexes only.

use crate::connect::{self, Core};
use crate::connection::{self, PLATFORM_SHARDS, Status};
use crate::context::Deps;
use crate::error::{Error, Reason, Result};
use crate::haravan::{self, Haravan};
use crate::momo::{self, Momo};
use crate::refresh;
use crate::saison::{self, Saison};
use crate::sesami::{self, Sesami};
use crate::store::{BY_END_USER, BY_PLATFORM, Item, Key};
use crate::web::{self, Params};
use crate::weblink::{self, Weblink};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// The most connections one listing page holds.
pub const PAGE: usize = 100;

/// What a request to a platform's connection routes asks for.
enum Ask {
    /// `GET …/{tenant}`.
    Show,
    /// `POST …/{tenant}/token`.
    Token,
}

/// The `{tenant}` of `/v1/connections/<platform>/{tenant}[/token]` (checked as an id), and
/// which of the two routes it is.
fn target<'a>(req: &'a Request, platform: &str) -> Result<(&'a str, Ask)> {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v1/connections/")
        .and_then(|r| r.strip_prefix(platform))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| Error::NotFound(format!("no such route for {platform}")))?;
    let (tenant, ask) = match rest.split_once('/') {
        None => (rest, Ask::Show),
        Some((tenant, "token")) => (tenant, Ask::Token),
        Some(_) => return Err(Error::NotFound("no such connection route".into())),
    };
    match (&ask, req.method()) {
        (Ask::Show, &Method::GET) | (Ask::Token, &Method::POST) => {}
        _ => return Err(Error::MethodNotAllowed),
    }
    Ok((web::check_id("the tenant", tenant)?, ask))
}

pub(crate) fn unknown(platform: &str) -> Error {
    Error::refused(
        Reason::UnknownTenant,
        format!("no {platform} connection is stored for this tenant"),
    )
}

/// The stored item at `key`, or 404 `unknown_tenant`.
async fn stored(cx: &Deps, platform: &str, key: &Key) -> Result<Item> {
    cx.store.get(key).await?.ok_or_else(|| unknown(platform))
}

/// `200` with the connection at `key`.
async fn show(cx: &Deps, platform: &str, key: &Key) -> Result<Response<Body>> {
    let item = stored(cx, platform, key).await?;
    Ok(web::json(
        StatusCode::OK,
        &connection::view(&item)?.to_json(),
    ))
}

/// `200 {access_token, token_type, expires_at}`; `expires_at` null when the token does not
/// expire. The one place a token leaves Gatehouse through these routes.
fn token_answer(token: &SecretString, token_type: &str, expires_at: Option<i64>) -> Response<Body> {
    let mut resp = web::json(
        StatusCode::OK,
        &json!({
            "access_token": token.expose_secret(),
            "token_type": token_type,
            "expires_at": expires_at,
        }),
    );
    // Never cached by anything between us and the app's back end.
    if let Ok(v) = "no-store".parse() {
        resp.headers_mut().insert("cache-control", v);
    }
    resp
}

/// `409 {reason: "needs_reauth", message, connect_url?}` for the connection in `item`: a new
/// connect link for its end user when it has one, returning where its first link returned (an
/// address allowed when that link was made), so the app can send its user to authorize again.
async fn needs_reauth(
    cx: &Deps,
    req: &Request,
    platform: &str,
    item: Option<&Item>,
) -> Result<Response<Body>> {
    let common = item.and_then(|i| i.record::<connection::Common>().ok());
    let mut connect_url = None;
    if let Some(common) = &common
        && let (Some(end_user), Some(return_to)) = (&common.end_user, &common.return_to)
        && connect::link_route(platform).is_ok()
    {
        let portal = item
            .filter(|_| platform == weblink::PLATFORM)
            .and_then(|i| i.record::<weblink::Session>().ok())
            .and_then(|s| s.portal);
        let (url, _) =
            connect::store_platform_link(cx, req, platform, end_user, return_to, portal.as_deref())
                .await?;
        connect_url = Some(url);
    }
    tracing::warn!(
        platform,
        "token refused: the connection needs re-authorization"
    );
    let mut body = json!({
        "error": "Conflict",
        "reason": "needs_reauth",
        "message": format!(
            "{platform} no longer accepts this connection's authorization: the user (or the \
             shop's admin) must authorize again{}",
            if connect_url.is_some() { " at connect_url" } else { "" }
        ),
    });
    if let Some(url) = connect_url {
        body["connect_url"] = url.into();
    }
    Ok(web::json(StatusCode::CONFLICT, &body))
}

/// The token of a refreshable connection at `key`, refreshed when due; its refusals as the API
/// answers them.
async fn refreshed_token(
    cx: &Deps,
    req: &Request,
    platform: &str,
    key: &Key,
    refresher: &dyn refresh::Refresher,
) -> Result<Response<Body>> {
    match refresh::fresh_item(cx, key, refresher).await {
        Ok(item) => {
            let keys = cx.secrets.app_keys().await?;
            let tokens = refresh::open(&keys, &item)?;
            Ok(token_answer(
                &tokens.access_token,
                "Bearer",
                Some(tokens.expires_at),
            ))
        }
        Err(e) => match e.reason() {
            Some(Reason::NotInstalled) => Err(unknown(platform)),
            Some(Reason::NeedsReauth) => {
                let item = cx.store.get(key).await?;
                needs_reauth(cx, req, platform, item.as_ref()).await
            }
            _ => Err(e),
        },
    }
}

/// `GET /v1/connections/sesami/{shop}` and `POST …/token`. Sesami's offline token does not
/// expire and is sent as `x-api-key` (with `x-client-id` and `x-shop-id`): `token_type`
/// `api_key`, `expires_at` null.
pub async fn sesami(cx: &Sesami, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let (shop, ask) = target(req, sesami::PLATFORM)?;
    let key = sesami::install_key(shop);
    match ask {
        Ask::Show => show(cx, sesami::PLATFORM, &key).await,
        Ask::Token => {
            let install: sesami::Install = stored(cx, sesami::PLATFORM, &key).await?.record()?;
            let keys = cx.secrets.app_keys().await?;
            let token = keys
                .open(
                    &install.token_sealed,
                    &format!("{}/{}", key.pk, key.sk),
                    "token_sealed",
                )
                .map_err(|_| {
                    Error::Internal("the stored Sesami token cannot be decrypted".into())
                })?;
            Ok(token_answer(&token, "api_key", None))
        }
    }
}

/// `GET /v1/connections/haravan/{org}` and `POST …/token`.
pub async fn haravan(cx: &Haravan, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let (org, ask) = target(req, haravan::PLATFORM)?;
    let key = haravan::install_key(org);
    match ask {
        Ask::Show => show(cx, haravan::PLATFORM, &key).await,
        Ask::Token => refreshed_token(cx, req, haravan::PLATFORM, &key, cx).await,
    }
}

/// The key of `saison/{cardholder}?end_user=&member=`.
fn saison_key(cx: &Saison, req: &Request, cardholder: &str) -> Result<Key> {
    let q = Params::from_query(req)?;
    let end_user = q.require_id("end_user")?;
    let member = cx.settings.served_member(q.get("member"))?;
    Ok(saison::connection_key(&saison::ConnectionId::new(
        end_user, member, cardholder,
    )))
}

/// `GET /v1/connections/saison/{cardholder}?end_user=[&member=]` and `POST …/token`, which is
/// always `409 use_proxy`: a Saison access token is sent inside a MAC signature keyed with our
/// client secret, so it is of no use to anyone without that secret.
pub async fn saison(cx: &Saison, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let (cardholder, ask) = target(req, saison::PLATFORM)?;
    let key = saison_key(cx, req, cardholder)?;
    match ask {
        Ask::Show => show(cx, saison::PLATFORM, &key).await,
        Ask::Token => {
            // Unknown stays unknown: the 404 comes before the advice.
            stored(cx, saison::PLATFORM, &key).await?;
            Ok(web::json(
                StatusCode::CONFLICT,
                &json!({
                    "error": "Conflict",
                    "reason": "use_proxy",
                    "message": "a Saison access token is useless without the MAC signature keyed \
                                with the app's client secret, which never leaves Gatehouse: call \
                                Saison through ANY /v1/proxy/saison/{cardholder}/{path}",
                }),
            ))
        }
    }
}

/// `GET /v1/connections/weblink/{session id}` and `POST …/token`.
pub async fn weblink(cx: &Weblink, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let (session_id, ask) = target(req, weblink::PLATFORM)?;
    let key = weblink::session_key(session_id);
    match ask {
        Ask::Show => show(cx, weblink::PLATFORM, &key).await,
        Ask::Token => {
            let session: weblink::Session = stored(cx, weblink::PLATFORM, &key).await?.record()?;
            let refresher = weblink::refresher(cx, &session);
            refreshed_token(cx, req, weblink::PLATFORM, &key, &refresher).await
        }
    }
}

/// `GET /v1/connections/momo/{product}` and `POST …/token`: MoMo's product tokens are the
/// app's own (no user, no refresh token), obtained once across containers and cached until
/// shortly before they expire ([`momo::access_token`]). A product not in `MOMO_PRODUCTS` is
/// 404 `unknown_tenant`.
pub async fn momo(cx: &Momo, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let (product, ask) = target(req, momo::PLATFORM)?;
    if !cx.settings.products.iter().any(|p| p == product) {
        return Err(Error::refused(
            Reason::UnknownTenant,
            format!(
                "`{}` is not a MoMo product this app uses (MOMO_PRODUCTS)",
                web::printable(product)
            ),
        ));
    }
    match ask {
        Ask::Show => Ok(web::json(
            StatusCode::OK,
            &json!({
                "platform": momo::PLATFORM,
                "tenant": product,
                "end_user": null,
                "status": Status::Active,
                "scopes": [product],
                "created_at": null,
                "updated_at": null,
                "expires_at": null,
                "last_refresh_at": null,
                "last_error": null,
                "checked_at": null,
            }),
        )),
        Ask::Token => {
            let (token, expires_at) = momo::access_token_until(cx, product).await?;
            Ok(token_answer(&token, "Bearer", Some(expires_at)))
        }
    }
}

/// Where a listing resumes: the shard (per-platform listings) and the last index sort key seen.
#[derive(Debug, PartialEq)]
struct Cursor {
    shard: u32,
    after: Option<String>,
}

impl Cursor {
    fn encode(&self) -> String {
        let text = json!({"s": self.shard, "a": self.after}).to_string();
        URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(raw: &str) -> Result<Self> {
        let bad = || {
            Error::refused(
                Reason::MalformedParameter,
                "`cursor` is not one this listing gave",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let shard = value["s"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .filter(|s| *s < PLATFORM_SHARDS)
            .ok_or_else(bad)?;
        let after = match &value["a"] {
            Value::Null => None,
            Value::String(s) if !s.is_empty() && s.len() <= 1024 => Some(s.clone()),
            _ => return Err(bad()),
        };
        Ok(Self { shard, after })
    }
}

/// `GET /v1/connections?platform=P[&end_user=U][&cursor=C]` → `200 {connections, next_cursor}`
/// (`next_cursor` null on the last page). Index queries only: per end user one partition of
/// [`BY_END_USER`], per platform the shards of [`BY_PLATFORM`] in turn. Items that are not
/// connections or do not decode are left out (logged), never a 5xx for the whole listing.
pub async fn list(cx: &Core, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    let q = Params::from_query(req)?;
    for (name, _) in q.iter() {
        if !matches!(name, "platform" | "end_user" | "cursor") {
            return Err(Error::refused(
                Reason::MalformedParameter,
                format!(
                    "unknown parameter `{}` (platform, end_user, cursor)",
                    web::printable(name)
                ),
            ));
        }
    }
    let platform = q.require("platform")?;
    if !connection::PLATFORMS.contains(&platform) {
        return Err(Error::refused(
            Reason::MalformedParameter,
            format!(
                "`platform` must be one of {} (MoMo's product tokens are not listed)",
                connection::PLATFORMS.join(", ")
            ),
        ));
    }
    let end_user = q
        .get("end_user")
        .map(|u| web::check_id("`end_user`", u))
        .transpose()?;
    let cursor = q.get("cursor").map(Cursor::decode).transpose()?;
    let mut items = Vec::new();
    let next = match end_user {
        Some(user) => {
            let after = cursor.and_then(|c| c.after);
            let partition = connection::user_partition(platform, user);
            let page = cx
                .store
                .query_index(&BY_END_USER, &partition, after.as_deref(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            let last = page
                .last()
                .and_then(|i| i.str(BY_END_USER.sk).map(str::to_owned));
            items = page;
            full.then_some(Cursor {
                shard: 0,
                after: last,
            })
        }
        None => {
            let mut at = cursor.unwrap_or(Cursor {
                shard: 0,
                after: None,
            });
            loop {
                let partition = connection::platform_partition(platform, at.shard);
                let page = cx
                    .store
                    .query_index(
                        &BY_PLATFORM,
                        &partition,
                        at.after.as_deref(),
                        PAGE - items.len(),
                    )
                    .await?;
                let wanted = PAGE - items.len();
                let full = page.len() == wanted;
                let last = page
                    .last()
                    .and_then(|i| i.str(BY_PLATFORM.sk).map(str::to_owned));
                items.extend(page);
                if full {
                    break Some(Cursor {
                        shard: at.shard,
                        after: last,
                    });
                }
                if at.shard + 1 == PLATFORM_SHARDS {
                    break None;
                }
                at = Cursor {
                    shard: at.shard + 1,
                    after: None,
                };
            }
        }
    };
    let connections: Vec<Value> = items
        .iter()
        .filter_map(|item| match connection::view(item) {
            Ok(c) if c.platform == platform => Some(c.to_json()),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(pk = %item.key.pk, error = %e, "a listed item is not a connection");
                None
            }
        })
        .collect();
    Ok(web::json(
        StatusCode::OK,
        &json!({
            "connections": connections,
            "next_cursor": next.map(|c| c.encode()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request {
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().unwrap();
        req
    }

    #[test]
    fn the_tenant_and_the_route_are_read_from_the_path() {
        let get = request(Method::GET, "/v1/connections/haravan/1000");
        assert!(matches!(target(&get, "haravan"), Ok(("1000", Ask::Show))));
        let token = request(Method::POST, "/v1/connections/haravan/1000/token");
        assert!(matches!(
            target(&token, "haravan"),
            Ok(("1000", Ask::Token))
        ));
        for (method, path, platform) in [
            (Method::POST, "/v1/connections/haravan/1000", "haravan"),
            (Method::GET, "/v1/connections/haravan/1000/token", "haravan"),
            (Method::GET, "/v1/connections/haravan/1000/other", "haravan"),
            (Method::GET, "/v1/connections/sesami/1000", "haravan"),
            (Method::GET, "/v1/connections/haravanx/1000", "haravan"),
            (Method::GET, "/v1/connections/haravan/", "haravan"),
            (Method::GET, "/v1/connections/haravan/a%23b", "haravan"),
        ] {
            assert!(
                target(&request(method.clone(), path), platform).is_err(),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = Cursor {
            shard: 3,
            after: Some("install#haravan#1|1".into()),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "!!", "eyJzIjoxNn0", "bm90IGpzb24"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
