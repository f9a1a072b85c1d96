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
use crate::once::{CODE_MARK_SECONDS, Claim};
use crate::store::{Condition, Item, Key, StoreError, Write, now};
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

/// One-time state that a callback has read and checked but not yet consumed: the callback
/// consumes it in the same transaction that stores what the flow produced ([`Bound::consume`]
/// among the writes given to [`commit`] or [`exchange_once`]), so a callback that fails on the
/// way leaves the state as it was and one that succeeds leaves none — never an install without
/// its state consumed, nor a state consumed for nothing.
#[derive(Debug)]
pub struct Bound {
    /// What the flow stored when it began.
    pub data: Map<String, Value>,
    key: Key,
}

impl Bound {
    /// The write that consumes the state: it holds only while the state still exists, so of
    /// concurrent callbacks for one state exactly one commits.
    pub fn consume(&self) -> Write {
        Write::Delete(self.key.clone(), Condition::Exists)
    }
}

fn used_or_expired() -> Error {
    Error::Conflict("this sign-in link was used already or has expired; start again".into())
}

/// Reads the one-time state bound to this browser by `cookie`: the cookie must be present and
/// signed, the `echoed` state (when the platform sends one back) must be the cookie's, and the
/// state must still exist. Nothing is consumed yet (see [`Bound`]).
pub async fn read_bound(
    app: &App,
    cookie: &CookieSpec,
    req: &Request,
    platform: &str,
    echoed: Option<&str>,
) -> Result<Bound> {
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
    let key = state_key(platform, &bound);
    match app.store.get(&key).await? {
        Some(item) => Ok(Bound {
            data: item.attrs,
            key,
        }),
        None => Err(used_or_expired()),
    }
}

/// Stores what a callback produced together with the consumption of its state, all or nothing.
/// A condition that fails means another callback of the same flow won, or the state expired.
pub async fn commit(app: &App, writes: &[Write]) -> Result<()> {
    match app.store.transact(writes).await {
        Ok(()) => Ok(()),
        Err(StoreError::Cancelled(_)) => Err(used_or_expired()),
        Err(e) => Err(e.into()),
    }
}

/// The key of the mark of `code` of `platform`: a hash, so that the code itself is never stored.
fn code_key(platform: &str, code: &str) -> Key {
    Key::new(
        format!("code#{platform}"),
        hex::encode(crypto::sha256(code.as_bytes())),
    )
}

/// Exchanges `code` at most once, whatever browser or state presents it, and stores the result
/// in the same transaction as the code's mark.
///
/// The code is claimed first ([`Claim`]: concurrent callers with the same code get a 409), then
/// `work` exchanges it and returns its result with the writes that store it (and consume the
/// flow's state, [`Bound::consume`]); those writes and the code's mark commit together. If
/// `work` or the commit fails, the claim is released: the code was not spent by a stored
/// result, so nothing of the attempt remains, and a claim whose holder died lapses by itself.
pub async fn exchange_once<T, F, Fut>(app: &App, platform: &str, code: &str, work: F) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(T, Vec<Write>)>>,
{
    let store = app.store.as_ref();
    let Some(claim) = Claim::take(store, code_key(platform, code), CODE_MARK_SECONDS).await? else {
        return Err(Error::Conflict(
            "this authorization code was used already".into(),
        ));
    };
    let (result, writes) = match work().await {
        Ok(done) => done,
        Err(e) => {
            claim.release(store).await;
            return Err(e);
        }
    };
    let mut all = Vec::with_capacity(writes.len() + 1);
    all.push(claim.commit());
    all.extend(writes);
    match commit(app, &all).await {
        Ok(()) => Ok(result),
        Err(e) => {
            claim.release(store).await;
            Err(e)
        }
    }
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
