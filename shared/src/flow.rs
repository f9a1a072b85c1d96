//! One-time flow state bound to the browser, and signed cookies.
//!
//! A redirect flow stores its state (what the callback must check: shop, nonce, PKCE verifier)
//! under a random id with a TTL of minutes, and sets a signed, HttpOnly cookie holding that id.
//! The callback accepts only a browser that carries the cookie, and consumes the state with
//! [`Store::take`](crate::store::Store::take), so a callback is acted on once even if replayed.
//!
//! A signed cookie value is `<base64url(value)>.<expiry>.<key id>.<base64url(tag)>`, the tag an
//! HMAC over the cookie's name and the rest, so a value cannot be moved to another cookie or
//! kept beyond its expiry.

use crate::app::App;
use crate::crypto::{self, KeyRing};
use crate::error::{Error, Result};
use crate::store::{Condition, Item, Key, now};
use crate::web;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use lambda_http::Request;
use serde_json::{Map, Value};

/// How long a started flow may take before its callback is refused.
pub const STATE_TTL_SECONDS: i64 = 600;

/// Signs `value` for cookie `name`, valid until `expires_at` (unix seconds).
pub fn sign_cookie(keys: &KeyRing, name: &str, value: &str, expires_at: i64) -> String {
    let body = format!("{}.{expires_at}", URL_SAFE_NO_PAD.encode(value));
    let (kid, tag) = keys.sign(format!("{name}\n{body}.").as_bytes());
    format!("{body}.{kid}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The value inside a signed cookie, if the signature holds under a known key and it has not
/// expired at `now`.
pub fn open_cookie(keys: &KeyRing, name: &str, sealed: &str, now: i64) -> Option<String> {
    let mut parts = sealed.split('.');
    let (value, expires, kid, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let signed = format!("{name}\n{value}.{expires}.");
    if !keys.verify(kid, signed.as_bytes(), &tag) {
        return None;
    }
    if expires.parse::<i64>().ok()? <= now {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(value).ok()?).ok()
}

/// How a cookie is sent back.
#[derive(Debug, Clone, Copy)]
pub struct CookieSpec {
    /// The cookie's base name; `__Host-` is prefixed when cookies are `Secure`.
    pub name: &'static str,
    /// `Lax` for redirects that come back with a GET; `None` for form_post callbacks (a
    /// cross-site POST), which also requires `Secure`.
    pub same_site: SameSite,
    /// Lifetime in seconds.
    pub max_age: i64,
}

impl CookieSpec {
    /// The name on the wire: `__Host-` binds a secure cookie to our exact host and path `/`.
    pub fn wire_name(&self, secure: bool) -> String {
        if secure {
            format!("__Host-{}", self.name)
        } else {
            self.name.to_owned()
        }
    }

    /// A `Set-Cookie` value carrying `value`, signed.
    pub fn set(&self, app: &App, keys: &KeyRing, value: &str) -> String {
        let secure = app.config.secure_cookies();
        let name = self.wire_name(secure);
        let sealed = sign_cookie(keys, &name, value, now() + self.max_age);
        Cookie::build((name, sealed))
            .path("/")
            .http_only(true)
            .secure(secure || self.same_site == SameSite::None)
            .same_site(self.same_site)
            .max_age(cookie::time::Duration::seconds(self.max_age))
            .build()
            .to_string()
    }

    /// A `Set-Cookie` value that removes the cookie.
    pub fn clear(&self, app: &App) -> String {
        let secure = app.config.secure_cookies();
        Cookie::build((self.wire_name(secure), ""))
            .path("/")
            .http_only(true)
            .secure(secure || self.same_site == SameSite::None)
            .same_site(self.same_site)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }

    /// The verified value of this cookie on `req`.
    pub fn read(&self, app: &App, keys: &KeyRing, req: &Request) -> Result<String> {
        let name = self.wire_name(app.config.secure_cookies());
        let raw = web::cookie(req, &name).ok_or_else(|| {
            Error::BadRequest(
                "this browser did not start this flow (its state cookie is missing); start again"
                    .into(),
            )
        })?;
        open_cookie(keys, &name, &raw, now()).ok_or_else(|| {
            Error::BadRequest("the state cookie is invalid or expired; start again".into())
        })
    }
}

/// The state cookie of a platform's redirect flow.
pub const fn state_cookie(name: &'static str) -> CookieSpec {
    CookieSpec {
        name,
        same_site: SameSite::Lax,
        max_age: STATE_TTL_SECONDS,
    }
}

fn state_key(platform: &str, id: &str) -> Key {
    Key::new(format!("state#{platform}"), id)
}

/// Stores new one-time state for `platform` and returns its id.
pub async fn begin(app: &App, platform: &str, data: Map<String, Value>) -> Result<String> {
    let id = crypto::random_token(32)?;
    let item = Item::new(state_key(platform, &id), data).expiring_at(now() + STATE_TTL_SECONDS);
    app.store.put(&item, Condition::Absent).await?;
    Ok(id)
}

/// Consumes the state `id` of `platform`: its data the first time, an error every other time.
pub async fn consume(app: &App, platform: &str, id: &str) -> Result<Map<String, Value>> {
    match app.store.take(&state_key(platform, id)).await? {
        Some(item) => Ok(item.attrs),
        None => Err(Error::Conflict(
            "this sign-in link was used already or has expired; start again".into(),
        )),
    }
}

/// Consumes the one-time state bound to this browser by `cookie`: the cookie must be present and
/// signed, the `echoed` state (when the platform sends one back) must be the cookie's, and the
/// state must still exist. Returns what the flow stored when it began.
pub async fn consume_bound(
    app: &App,
    cookie: &CookieSpec,
    req: &Request,
    platform: &str,
    echoed: Option<&str>,
) -> Result<Map<String, Value>> {
    let keys = app.secrets.app_keys().await?;
    let bound = cookie.read(app, &keys, req)?;
    if let Some(echoed) = echoed
        && aws_lc_rs::constant_time::verify_slices_are_equal(bound.as_bytes(), echoed.as_bytes())
            .is_err()
    {
        return Err(Error::BadRequest(
            "this sign-in was started in another browser or tab; start again".into(),
        ));
    }
    consume(app, platform, &bound).await
}

/// How long a spent authorization code is remembered.
const CODE_MARK_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Runs `exchange` for `code` at most once, whatever browser or state presents the code: the
/// code is marked spent first (a conditional create of a hash of it), and the mark is removed
/// again if the exchange fails, since then the code was not spent by us and nothing of the
/// attempt should remain.
pub async fn exchange_once<T, F, Fut>(
    app: &App,
    platform: &str,
    code: &str,
    exchange: F,
) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mark = Item::new(
        Key::new(
            format!("code#{platform}"),
            hex::encode(crypto::sha256(code.as_bytes())),
        ),
        Map::new(),
    )
    .expiring_at(now() + CODE_MARK_TTL_SECONDS);
    match app.store.put(&mark, Condition::Absent).await {
        Ok(()) => {}
        Err(crate::store::StoreError::ConditionFailed) => {
            return Err(Error::Conflict(
                "this authorization code was used already".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let outcome = exchange().await;
    if outcome.is_err() {
        let _ = app.store.take(&mark.key).await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys(id: &str) -> KeyRing {
        let s = SecretString::from(format!("{id}-0123456789abcdefghijklmnopqrstuvwxyz"));
        KeyRing::new([(id, &s)]).unwrap()
    }

    #[test]
    fn signed_cookie_round_trips_and_resists_tampering() {
        let k = keys("k1");
        let sealed = sign_cookie(&k, "gh-state", "abc", 2_000);
        assert_eq!(
            open_cookie(&k, "gh-state", &sealed, 1_000).as_deref(),
            Some("abc")
        );
        assert_eq!(open_cookie(&k, "gh-state", &sealed, 2_000), None, "expired");
        assert_eq!(
            open_cookie(&k, "gh-session", &sealed, 1_000),
            None,
            "other cookie"
        );
        assert_eq!(
            open_cookie(&keys("k2"), "gh-state", &sealed, 1_000),
            None,
            "other key"
        );
        let forged = sealed.replacen(
            &URL_SAFE_NO_PAD.encode("abc"),
            &URL_SAFE_NO_PAD.encode("abd"),
            1,
        );
        assert_eq!(
            open_cookie(&k, "gh-state", &forged, 1_000),
            None,
            "other value"
        );
        let later = sealed.replacen(".2000.", ".9000.", 1);
        assert_eq!(
            open_cookie(&k, "gh-state", &later, 1_000),
            None,
            "extended expiry"
        );
        assert_eq!(open_cookie(&k, "gh-state", "a.b.c", 1_000), None);
        assert_eq!(open_cookie(&k, "gh-state", "a.b.c.d.e", 1_000), None);
        assert_eq!(open_cookie(&k, "gh-state", "", 1_000), None);
    }
}
