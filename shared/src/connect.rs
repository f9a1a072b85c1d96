//! Connect links: connections the app's own back end starts for one of its own users.
//!
//! `POST /v1/connect-links` (IAM-authorized on API Gateway: only the app's back end can call
//! it) takes `{platform, end_user, return_to}` and answers `201 {url, expires_at}`: a one-time
//! URL, valid [`LINK_TTL_SECONDS`], to the platform's authorize route (`?link=<id>`). The link
//! is stored under a random id; the authorize route consumes it (once) and starts the flow with
//! the end user and `return_to` in its state, so the connection the callback stores belongs to
//! that end user, and the browser is sent back to `return_to` with the outcome.
//!
//! Served for the platforms whose connections a user authorizes in a browser: `saison`
//! (`/saison/authorize?link=`), `haravan` (`/haravan/install/login?link=`: an install by a shop
//! admin) and `weblink` (`/weblink/login?link=`, for the portal the link names or the first of
//! `WEBLINK_PORTALS`). `sesami` (installs are started in Sesami's admin) and `momo` (no user
//! authorization at all) are a 400 saying so. Platform-initiated installs keep working without
//! a link.
//!
//! Link creation needs no platform's settings, only the store, our public URL and the
//! allow-list of `return_to` origins: it runs on [`Core`], as the connections listing does.

use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::crypto;
use crate::error::{Error, Reason, Result};
use crate::saison;
use crate::store::{Condition, Item, Key, Record, now};
use crate::web;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// How long a connect link may wait to be opened.
pub const LINK_TTL_SECONDS: i64 = 600;

/// The largest body `POST /v1/connect-links` reads.
pub const MAX_BODY: usize = 4096;

/// The longest `return_to` taken.
pub const MAX_RETURN_TO: usize = 2048;

/// A stored connect link (`link#connect#<platform>#<id>`, alone in its partition): who the connection is for and
/// where the browser goes afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The app's own reference of its user.
    pub end_user: String,
    /// An absolute URL whose origin was allowed when the link was made.
    pub return_to: String,
    /// WebLink only: the portal to sign in to (none: the first of `WEBLINK_PORTALS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
}

/// The context of the functions that need no platform's settings (connect links, the
/// connections listing): what every platform shares, and the allowed `return_to` origins.
pub struct Core {
    /// What every platform shares.
    pub deps: std::sync::Arc<Deps>,
    /// `GATEHOUSE_RETURN_TO_ORIGINS`: the origins a connect link's `return_to` may be on.
    pub return_to_origins: Vec<String>,
}

crate::context::derefs_to_deps!(Core);

impl Platform for Core {
    fn build(deps: std::sync::Arc<Deps>, vars: &Vars) -> std::result::Result<Self, ConfigError> {
        Ok(Self {
            deps,
            return_to_origins: parse_origins(vars.get_or("GATEHOUSE_RETURN_TO_ORIGINS", ""))
                .map_err(|problem| ConfigError {
                    name: "GATEHOUSE_RETURN_TO_ORIGINS".into(),
                    problem,
                })?,
        })
    }
}

/// The route a platform's link opens, or why the platform has none.
pub fn link_route(platform: &str) -> std::result::Result<&'static str, String> {
    match platform {
        "saison" => Ok("/saison/authorize"),
        "haravan" => Ok("/haravan/install/login"),
        "weblink" => Ok("/weblink/login"),
        "sesami" => Err(
            "Sesami installs are started by the merchant in Sesami's admin, not by a connect \
             link; they need none"
                .into(),
        ),
        "momo" => Err(
            "MTN MoMo has no user authorization: its product tokens are the app's own \
             (POST /v1/connections/momo/{product}/token)"
                .into(),
        ),
        other => Err(format!(
            "`{}` is not a platform (sesami, haravan, saison, momo, weblink)",
            web::printable(other)
        )),
    }
}

impl Record for Link {
    const NAME: &'static str = "connect link";
}

/// The store key of a link of `platform`. The partition names `connect` and the platform, so
/// that only the connect-links function and that platform's authorize route reach it.
pub fn link_key(platform: &str, id: &str) -> Key {
    Key::single(&format!("link#connect#{platform}"), id)
}

/// Parses `GATEHOUSE_RETURN_TO_ORIGINS`: comma-separated origins (`https://app.example.com`,
/// `http://127.0.0.1:8080`), each as [`allowed_return_to`] checks it. Empty: none.
pub fn parse_origins(raw: &str) -> std::result::Result<Vec<String>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let url = url::Url::parse(o).map_err(|_| format!("`{o}` is not an origin"))?;
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "`{o}` is not an origin (no path, query or fragment)"
                ));
            }
            check_scheme(&url).map_err(|e| format!("`{o}`: {e}"))?;
            Ok(url.origin().ascii_serialization())
        })
        .collect()
}

/// https, or http for 127.0.0.1 and localhost only; no userinfo.
fn check_scheme(url: &url::Url) -> std::result::Result<(), &'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry userinfo");
    }
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some("127.0.0.1" | "localhost")) => Ok(()),
        _ => Err("must be https (http only for 127.0.0.1 and localhost)"),
    }
}

/// `return_to` if it is an absolute https URL (http only for 127.0.0.1 and localhost) whose
/// origin is one of `origins`; a 400 otherwise (also when no origin is allowed at all).
pub fn allowed_return_to(origins: &[String], return_to: &str) -> Result<url::Url> {
    let bad = |why: String| Error::refused(Reason::MalformedParameter, why);
    if return_to.len() > MAX_RETURN_TO {
        return Err(bad(format!(
            "`return_to` is longer than {MAX_RETURN_TO} bytes"
        )));
    }
    let url = url::Url::parse(return_to)
        .map_err(|_| bad("`return_to` must be an absolute URL".into()))?;
    check_scheme(&url).map_err(|e| bad(format!("`return_to` {e}")))?;
    if url.fragment().is_some() {
        return Err(bad("`return_to` must not carry a fragment".into()));
    }
    let origin = url.origin().ascii_serialization();
    if !origins.contains(&origin) {
        return Err(Error::refused(
            Reason::MalformedParameter,
            format!(
                "the origin of `return_to` is not in GATEHOUSE_RETURN_TO_ORIGINS ({})",
                if origins.is_empty() {
                    "which is empty: no origin is allowed".to_owned()
                } else {
                    origins.join(", ")
                }
            ),
        ));
    }
    Ok(url)
}

#[derive(Deserialize)]
struct LinkRequest {
    platform: Option<Value>,
    end_user: Option<Value>,
    return_to: Option<Value>,
    portal: Option<Value>,
}

fn text_field<'a>(v: &'a Option<Value>, name: &str) -> Result<&'a str> {
    match v {
        None | Some(Value::Null) => Err(Error::refused(
            Reason::MissingParameter,
            format!("`{name}` is missing"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::refused(
            Reason::MalformedBody,
            format!("`{name}` must be a string"),
        )),
    }
}

/// `POST /v1/connect-links`: `{platform, end_user, return_to}` (and for `weblink` an
/// optional `portal`) → `201 {url, expires_at}`.
///
/// `platform` must have links ([`link_route`]: 400 naming why not); `end_user` an id
/// ([`web::check_id`]); `return_to` as [`allowed_return_to`] takes it. Nothing is stored
/// unless all hold. Only for the app's back end: a request without an IAM caller is a 403.
pub async fn create(cx: &Core, req: &Request) -> Result<Response<Body>> {
    web::require_iam_caller(req)?;
    web::require_content_type(req, "application/json")?;
    let body: LinkRequest = web::json_body(
        web::body(req, MAX_BODY)?,
        "the body must be a JSON object `{\"platform\", \"end_user\", \"return_to\"}`",
    )?;
    let platform = text_field(&body.platform, "platform")?;
    link_route(platform).map_err(|why| Error::refused(Reason::MalformedParameter, why))?;
    let end_user = web::check_id("`end_user`", text_field(&body.end_user, "end_user")?)?;
    let return_to = allowed_return_to(
        &cx.return_to_origins,
        text_field(&body.return_to, "return_to")?,
    )?;
    let portal = match &body.portal {
        None | Some(Value::Null) => None,
        Some(_) if platform != "weblink" => {
            return Err(Error::refused(
                Reason::MalformedParameter,
                "`portal` is for `weblink` links only",
            ));
        }
        Some(_) => Some(web::check_id(
            "`portal`",
            text_field(&body.portal, "portal")?,
        )?),
    };
    let (url, expires_at) =
        store_platform_link(cx, req, platform, end_user, return_to.as_str(), portal).await?;
    Ok(web::json(
        StatusCode::CREATED,
        &json!({ "url": url, "expires_at": expires_at }),
    ))
}

/// Stores a Saison link for `end_user` (already checked) and returns its URL and expiry. The
/// local server's demo link uses this too.
pub async fn store_link(
    cx: &Deps,
    req: &Request,
    end_user: &str,
    return_to: &str,
) -> Result<(String, i64)> {
    store_platform_link(cx, req, saison::PLATFORM, end_user, return_to, None).await
}

/// Stores a link of `platform` for `end_user` (checked, as `return_to` and `portal` are) and
/// returns its URL (the platform's [`link_route`] with `?link=<id>`) and expiry.
pub async fn store_platform_link(
    cx: &Deps,
    req: &Request,
    platform: &str,
    end_user: &str,
    return_to: &str,
    portal: Option<&str>,
) -> Result<(String, i64)> {
    let route =
        link_route(platform).map_err(|why| Error::refused(Reason::MalformedParameter, why))?;
    // The URL first: a request that cannot name our domain stores nothing.
    let base = cx.public_url(req, route)?;
    let id = crypto::random_token(32)?;
    let expires_at = now() + LINK_TTL_SECONDS;
    let link = Link {
        end_user: end_user.to_owned(),
        return_to: return_to.to_owned(),
        portal: portal.map(str::to_owned),
    };
    let item = Item::new(link_key(platform, &id), link.to_attrs()?).expiring_at(expires_at);
    cx.store.put(&item, Condition::Absent).await?;
    Ok((format!("{base}?link={id}"), expires_at))
}

/// Starts a flow's one-time state: alone, or, started from a connect link, in the one
/// transaction that consumes the link (a second use of it is 409 `already_used`).
pub async fn begin_flow(
    cx: &Deps,
    platform: &str,
    data: Map<String, Value>,
    link: Option<&(Key, Link)>,
) -> Result<String> {
    match link {
        None => crate::flow::begin(cx, platform, data).await,
        Some((key, _)) => crate::flow::begin_consuming(cx, platform, data, key)
            .await
            .map_err(|e| match e.reason() {
                Some(Reason::AlreadyUsed) => link_used(),
                _ => e,
            }),
    }
}

/// The link `id` of `platform` (checked as an id), read to be consumed by the flow it starts
/// ([`crate::flow::begin_consuming`]); a link used already, expired or unknown is 409
/// `already_used`.
pub async fn read_link(cx: &Deps, platform: &str, id: &str) -> Result<(Key, Link)> {
    let id = web::check_id("parameter `link`", id)?;
    let key = link_key(platform, id);
    let Some(item) = cx.store.get(&key).await? else {
        return Err(link_used());
    };
    Ok((key, item.record::<Link>()?))
}

/// A link that is gone: used already, or expired.
pub fn link_used() -> Error {
    Error::refused(
        Reason::AlreadyUsed,
        "this connect link was used already or has expired; ask the app for a new one",
    )
}

/// The outcome appended to `return_to`: `gatehouse=connected&platform=<p>&tenant=<t>`, or
/// `gatehouse=error&reason=<code>`; never a token.
pub fn outcome_url(return_to: &str, outcome: std::result::Result<(&str, &str), &str>) -> String {
    let Ok(mut url) = url::Url::parse(return_to) else {
        return return_to.to_owned();
    };
    {
        let mut q = url.query_pairs_mut();
        match outcome {
            Ok((platform, tenant)) => {
                q.append_pair("gatehouse", "connected");
                q.append_pair("platform", platform);
                q.append_pair("tenant", tenant);
            }
            Err(reason) => {
                q.append_pair("gatehouse", "error");
                q.append_pair("reason", reason);
            }
        }
    }
    url.to_string()
}

/// The attributes of a link, for tests that seed one.
pub fn link_attrs(end_user: &str, return_to: &str) -> Map<String, Value> {
    Link {
        end_user: end_user.into(),
        return_to: return_to.into(),
        portal: None,
    }
    .to_attrs()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_parsed_and_checked() {
        assert_eq!(
            parse_origins(" https://app.example.com , http://127.0.0.1:8080").unwrap(),
            vec!["https://app.example.com", "http://127.0.0.1:8080"]
        );
        assert!(parse_origins("").unwrap().is_empty());
        for bad in [
            "http://app.example.com",
            "https://app.example.com/path",
            "app.example.com",
            "https://u:p@app.example.com",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn return_to_must_be_on_an_allowed_origin() {
        let origins = parse_origins("https://app.example.com,http://localhost:3000").unwrap();
        for ok in [
            "https://app.example.com/done?x=1",
            "https://app.example.com",
            "http://localhost:3000/back",
        ] {
            assert!(allowed_return_to(&origins, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.example.com/",
            "https://app.example.com.evil.com/",
            "https://app.example.com:8443/",
            "http://app.example.com/",
            "/relative",
            "javascript:alert(1)",
            "https://app.example.com@evil.com/",
            "https://app.example.com/#frag",
            "http://localhost:3001/",
        ] {
            assert!(allowed_return_to(&origins, bad).is_err(), "{bad}");
        }
        assert!(allowed_return_to(&[], "https://app.example.com/").is_err());
    }

    #[test]
    fn outcomes_never_carry_more_than_the_outcome() {
        assert_eq!(
            outcome_url("https://a.example/x?y=1", Ok(("saison", "M0001"))),
            "https://a.example/x?y=1&gatehouse=connected&platform=saison&tenant=M0001"
        );
        assert_eq!(
            outcome_url("https://a.example/", Err("already_used")),
            "https://a.example/?gatehouse=error&reason=already_used"
        );
    }
}
