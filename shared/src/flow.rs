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

use crate::context::Deps;
use crate::crypto::{self, KeyRing};
use crate::error::{Error, Reason, Result};
use crate::once::{CODE_MARK_SECONDS, Claim};
use crate::store::{Condition, Item, Key, Record, StoreError, Write, now};
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
    pub fn set(&self, cx: &Deps, keys: &KeyRing, value: &str) -> String {
        let secure = cx.config.secure_cookies();
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
    pub fn clear(&self, cx: &Deps) -> String {
        let secure = cx.config.secure_cookies();
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
    pub fn read(&self, cx: &Deps, keys: &KeyRing, req: &Request) -> Result<String> {
        let name = self.wire_name(cx.config.secure_cookies());
        let raw = web::cookie(req, &name).ok_or_else(|| {
            Error::refused(
                Reason::StateMissing,
                "this browser did not start this flow (its state cookie is missing); start again",
            )
        })?;
        open_cookie(keys, &name, &raw, now()).ok_or_else(|| {
            Error::refused(
                Reason::StateInvalid,
                "the state cookie is invalid or expired; start again",
            )
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

/// A state's key: its random id is its partition (`state#<platform>#<id>`), so that starting
/// flows, any number of tenants at once, spreads over as many partitions.
fn state_key(platform: &str, id: &str) -> Key {
    Key::single(&format!("state#{platform}"), id)
}

/// Stores new one-time state for `platform` and returns its id.
pub async fn begin(cx: &Deps, platform: &str, data: Map<String, Value>) -> Result<String> {
    let id = crypto::random_token(32)?;
    let item = Item::new(state_key(platform, &id), data).expiring_at(now() + STATE_TTL_SECONDS);
    cx.store.put(&item, Condition::Absent).await?;
    Ok(id)
}

/// As [`begin`], consuming the one-time item at `consumed` (a connect link) in the same
/// transaction: the state exists only if the link was live and is gone, so a link starts one
/// flow. A link used already or expired is [`Reason::AlreadyUsed`].
pub async fn begin_consuming(
    cx: &Deps,
    platform: &str,
    data: Map<String, Value>,
    consumed: &Key,
) -> Result<String> {
    let id = crypto::random_token(32)?;
    let item = Item::new(state_key(platform, &id), data).expiring_at(now() + STATE_TTL_SECONDS);
    commit(
        cx,
        &[
            Write::Delete(consumed.clone(), Condition::Exists),
            Write::Put(item, Condition::Absent),
        ],
    )
    .await?;
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
    /// What the flow stored, as the record it was stored as (each platform's flow state is a
    /// [`Record`], given to [`begin`] as its attributes).
    pub fn record<T: Record>(&self) -> std::result::Result<T, StoreError> {
        T::from_attrs(&self.data)
    }

    /// The write that consumes the state: it holds only while the state still exists, so of
    /// concurrent callbacks for one state exactly one commits.
    pub fn consume(&self) -> Write {
        Write::Delete(self.key.clone(), Condition::Exists)
    }
}

fn used_or_expired() -> Error {
    Error::refused(
        Reason::AlreadyUsed,
        "this sign-in link was used already or has expired; start again",
    )
}

/// Reads the one-time state bound to this browser by `cookie`: the cookie must be present and
/// signed, the `echoed` state (when the platform sends one back) must be the cookie's, and the
/// state must still exist. Nothing is consumed yet (see [`Bound`]).
pub async fn read_bound(
    cx: &Deps,
    cookie: &CookieSpec,
    req: &Request,
    platform: &str,
    echoed: Option<&str>,
) -> Result<Bound> {
    let keys = cx.secrets.app_keys().await?;
    let bound = cookie.read(cx, &keys, req)?;
    if let Some(echoed) = echoed
        && !crypto::constant_time_eq(bound.as_bytes(), echoed.as_bytes())
    {
        return Err(Error::refused(
            Reason::StateInvalid,
            "this sign-in was started in another browser or tab; start again",
        ));
    }
    let key = state_key(platform, &bound);
    match cx.store.get(&key).await? {
        Some(item) => Ok(Bound {
            data: item.attrs,
            key,
        }),
        None => Err(used_or_expired()),
    }
}

/// Stores what a callback produced together with the consumption of its state, all or nothing.
/// A condition that fails means another callback of the same flow won, or the state expired.
pub async fn commit(cx: &Deps, writes: &[Write]) -> Result<()> {
    match cx.store.transact(writes).await {
        Ok(()) => Ok(()),
        Err(StoreError::Cancelled(_)) => Err(used_or_expired()),
        Err(e) => Err(e.into()),
    }
}

/// The key of the mark of `code` of `platform`: a hash, so that the code itself is never stored.
fn code_key(platform: &str, code: &str) -> Key {
    Key::single(
        &format!("code#{platform}"),
        &hex::encode(crypto::sha256(code.as_bytes())),
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
pub async fn exchange_once<T, F, Fut>(cx: &Deps, platform: &str, code: &str, work: F) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(T, Vec<Write>)>>,
{
    let store = cx.store.as_ref();
    let Some(claim) = Claim::take(store, code_key(platform, code), CODE_MARK_SECONDS).await? else {
        return Err(Error::refused(
            Reason::AlreadyUsed,
            "this authorization code was used already",
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
    match commit(cx, &all).await {
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

    /// An app on a fresh embedded store, with the events' test secrets.
    fn deps(dir: &tempfile::TempDir) -> Deps {
        let mut vars = crate::config::Vars::default();
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
        vars.set(
            "GATEHOUSE_SECRETS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../events/secrets.json"),
        );
        let config = crate::config::Config::from_vars(&vars).expect("config");
        let store = std::sync::Arc::new(
            crate::store::EmbeddedStore::open(dir.path().join("store.sqlite3")).expect("store"),
        );
        Deps::with_store(config, store, None).expect("app")
    }

    const TEST_COOKIE: CookieSpec = state_cookie("gh-test-state");

    /// A request carrying the cookie a `Set-Cookie` value sets.
    fn request_with(set_cookie: &str) -> Request {
        let pair = set_cookie.split(';').next().expect("name=value");
        let mut req = Request::default();
        req.headers_mut()
            .insert("cookie", pair.parse().expect("a header value"));
        req
    }

    /// The state cookie lives as long as the state, and no longer: its signed expiry is the
    /// moment of signing plus its max age.
    #[tokio::test]
    async fn a_state_cookie_expires_with_its_max_age() {
        let dir = tempfile::tempdir().expect("dir");
        let cx = deps(&dir);
        let keys = cx.secrets.app_keys().await.expect("keys");
        let set = TEST_COOKIE.set(&cx, &keys, "state-id");
        assert!(
            set.contains(&format!("Max-Age={STATE_TTL_SECONDS}")),
            "{set}"
        );
        let value = set
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v.to_owned())
            .expect("a value");
        let name = TEST_COOKIE.wire_name(cx.config.secure_cookies());
        let at = now();
        assert_eq!(
            open_cookie(&keys, &name, &value, at + STATE_TTL_SECONDS - 2).as_deref(),
            Some("state-id")
        );
        assert_eq!(
            open_cookie(&keys, &name, &value, at + STATE_TTL_SECONDS + 2),
            None,
            "expired with the state"
        );
    }

    /// One-time state is stored for its minutes, not longer.
    #[tokio::test]
    async fn begun_state_expires_in_ten_minutes() {
        let dir = tempfile::tempdir().expect("dir");
        let cx = deps(&dir);
        let id = begin(&cx, "t", Map::new()).await.expect("begin");
        let item = cx
            .store
            .get(&state_key("t", &id))
            .await
            .expect("get")
            .expect("stored");
        let left = item.expires_at.expect("it expires") - now();
        assert!(
            (STATE_TTL_SECONDS - 5..=STATE_TTL_SECONDS).contains(&left),
            "{left}"
        );
        assert_eq!(STATE_TTL_SECONDS, 600);
    }

    /// Bound state is read, not consumed, until the commit that stores the flow's result; the
    /// commit consumes it once, and a second commit or read is refused.
    #[tokio::test]
    async fn bound_state_is_consumed_by_its_commit_once() {
        let dir = tempfile::tempdir().expect("dir");
        let cx = deps(&dir);
        let keys = cx.secrets.app_keys().await.expect("keys");
        let mut data = Map::new();
        data.insert("shop".into(), "s1".into());
        let id = begin(&cx, "t", data.clone()).await.expect("begin");
        let req = request_with(&TEST_COOKIE.set(&cx, &keys, &id));

        let other = read_bound(&cx, &TEST_COOKIE, &req, "t", Some("another-state")).await;
        assert!(
            matches!(
                other,
                Err(Error::Refused {
                    reason: Reason::StateInvalid,
                    ..
                })
            ),
            "{other:?}"
        );
        let bound = read_bound(&cx, &TEST_COOKIE, &req, "t", Some(&id))
            .await
            .expect("bound");
        assert_eq!(bound.data, data);
        let again = read_bound(&cx, &TEST_COOKIE, &req, "t", None)
            .await
            .expect("reading consumes nothing");
        let result = Item::new(Key::new("install#t", "s1"), Map::new());
        commit(
            &cx,
            &[
                bound.consume(),
                Write::Put(result.clone(), Condition::Always),
            ],
        )
        .await
        .expect("commit");
        assert!(cx.store.get(&result.key).await.expect("get").is_some());
        let second = Item::new(Key::new("install#t", "s2"), Map::new());
        let replay = commit(
            &cx,
            &[
                again.consume(),
                Write::Put(second.clone(), Condition::Always),
            ],
        )
        .await;
        assert!(
            matches!(
                replay,
                Err(Error::Refused {
                    reason: Reason::AlreadyUsed,
                    ..
                })
            ),
            "{replay:?}"
        );
        assert_eq!(
            cx.store.get(&second.key).await.expect("get"),
            None,
            "nothing of a refused commit is written"
        );
        let gone = read_bound(&cx, &TEST_COOKIE, &req, "t", None).await;
        assert!(
            matches!(
                gone,
                Err(Error::Refused {
                    reason: Reason::AlreadyUsed,
                    ..
                })
            ),
            "{gone:?}"
        );
        let missing = read_bound(&cx, &TEST_COOKIE, &Request::default(), "t", None).await;
        assert!(
            matches!(
                missing,
                Err(Error::Refused {
                    reason: Reason::StateMissing,
                    ..
                })
            ),
            "{missing:?}"
        );
    }

    /// A code is exchanged at most once; a failed exchange or commit leaves it free again, and
    /// a stored result's code is marked for seven days.
    #[tokio::test]
    async fn a_code_is_exchanged_once_and_freed_when_nothing_was_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let cx = deps(&dir);
        let failed: Result<()> = exchange_once(&cx, "t", "code-1", || async {
            Err(Error::Upstream("the platform failed".into()))
        })
        .await;
        assert!(matches!(failed, Err(Error::Upstream(_))), "{failed:?}");
        assert_eq!(
            cx.store.get(&code_key("t", "code-1")).await.expect("get"),
            None,
            "released"
        );

        // The commit's own condition fails (the state it consumes is gone): released too.
        let gone = Write::Delete(state_key("t", "no-such-state"), Condition::Exists);
        let refused: Result<()> =
            exchange_once(&cx, "t", "code-1", || async { Ok(((), vec![gone])) }).await;
        assert!(
            matches!(
                refused,
                Err(Error::Refused {
                    reason: Reason::AlreadyUsed,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            cx.store.get(&code_key("t", "code-1")).await.expect("get"),
            None
        );

        let stored = Item::new(Key::new("install#t", "s1"), Map::new());
        let write = Write::Put(stored.clone(), Condition::Always);
        exchange_once(&cx, "t", "code-1", || async { Ok(((), vec![write])) })
            .await
            .expect("exchanged and stored");
        assert!(cx.store.get(&stored.key).await.expect("get").is_some());
        let mark = cx
            .store
            .get(&code_key("t", "code-1"))
            .await
            .expect("get")
            .expect("marked");
        assert!(mark.expires_at.expect("expires") - now() > CODE_MARK_SECONDS - 5);
        let mut ran = false;
        let replay: Result<()> = exchange_once(&cx, "t", "code-1", || async {
            ran = true;
            Ok(((), Vec::new()))
        })
        .await;
        assert!(
            matches!(
                replay,
                Err(Error::Refused {
                    reason: Reason::AlreadyUsed,
                    ..
                })
            ),
            "{replay:?}"
        );
        assert!(!ran, "a used code is not exchanged again");
        assert!(
            !format!("{mark:?}").contains("code-1"),
            "the code itself is never stored"
        );
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
