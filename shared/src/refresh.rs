//! Access tokens on demand, refreshed shortly before they expire — once, across containers.
//!
//! Tokens live in a tenant's item (sealed with the app's keys, bound to the item's key) with
//! their expiry and a `token_version`. [`access_token`] returns the stored token while it has
//! more than [`MARGIN`] seconds left. When it is due, the caller takes a lease (an item created
//! with a condition, expiring after [`LEASE_SECONDS`]), re-reads the tenant (a sibling may have
//! refreshed meanwhile), calls the token endpoint, and writes the new tokens on condition that
//! the version is still the one it read. Only the token attributes are written, in place, so a
//! concurrent write of other attributes of the item (Haravan's `shop/update`) is never undone,
//! and the item's expiry is kept. Callers that find the lease taken wait and re-read, so any
//! number of concurrent callers in any number of containers cause one refresh call.
//!
//! Platforms that rotate refresh tokens answer `invalid_grant` to the old one; if that happens
//! because a sibling (whose lease ran out) rotated it, re-reading finds the new tokens. Only a
//! refresh token that is refused while still the stored one marks the tenant as needing
//! re-authorization, after which callers get a clear 403 until the app is authorized again.
//!
//! A platform can also stop accepting a token before its expiry (the proxy's 401):
//! [`fresh_item_replacing`] forces a refresh, but only while the stored token is still the
//! version that was refused, under the same lease, so that concurrent callers who all got a 401
//! for one token cause one refresh and take its result.

use crate::context::Deps;
use crate::crypto::KeyRing;
use crate::error::{Error, Reason, Result};
use crate::once::{Lease, Patience};
use crate::store::{Condition, Item, Key, Record, StoreError, now};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// Refresh when fewer than this many seconds of validity are left.
pub const MARGIN: i64 = 300;
/// How long a refresh lease lasts if its holder dies.
pub const LEASE_SECONDS: i64 = crate::once::LEASE_SECONDS;
/// How long a caller waits for a sibling's refresh before giving up.
const WAIT: Duration = Duration::from_secs(20);
/// How often a waiting caller re-reads.
const POLL: Duration = Duration::from_millis(100);

/// A tenant's tokens, opened.
pub struct Tokens {
    /// The bearer token for API calls.
    pub access_token: SecretString,
    /// The token that obtains the next access token, if the platform issued one.
    pub refresh_token: Option<SecretString>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What a token endpoint granted.
pub struct Grant {
    /// The new access token.
    pub access_token: SecretString,
    /// The new refresh token; `None` keeps the current one.
    pub refresh_token: Option<SecretString>,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Other secrets that come and go with the access token (e.g. a MAC key), stored sealed as
    /// `<name>_sealed`.
    pub extra: Vec<(&'static str, SecretString)>,
}

/// The token attributes of a refreshable item, as stored: flattened (`#[serde(flatten)]`) into
/// every record that carries tokens, under these attribute names. A refresh writes only these,
/// in place ([`seal`] into an empty map, then [`crate::store::Store::update`]), so that other
/// attributes written concurrently are never undone. Each may be absent from an older item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SealedTokens {
    /// The access token, sealed to the item and the attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_sealed: Option<String>,
    /// The refresh token, sealed likewise; absent when the platform issued none. Absent from a
    /// refresh's write, the stored one stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_sealed: Option<String>,
    /// Saison's MAC key ([`Grant::extra`] `mac_key`), sealed likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_key_sealed: Option<String>,
    /// When the access token expires (unix seconds); 0 when unknown.
    #[serde(default)]
    pub expires_at: i64,
    /// Changes with every write of new tokens: the condition of the next refresh's write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_version: Option<String>,
    /// The platform refused the refresh token: an admin must authorize the app again.
    #[serde(default)]
    pub needs_reauth: bool,
}

impl Record for SealedTokens {
    const NAME: &'static str = "token attributes";
}

impl SealedTokens {
    /// `grant` sealed for the item at `key`, with a new version. A grant without a refresh token
    /// leaves `refresh_token_sealed` out (so a write of these keeps the stored one).
    pub fn seal(keys: &KeyRing, key: &Key, grant: &Grant) -> Result<Self> {
        let ctx = context(key);
        // Each value is bound to its item and its attribute, so that two of one item cannot be
        // swapped (a refresh token presented as the access token, say).
        let put = |attr: &str, value: &SecretString| -> Result<String> {
            Ok(keys.seal(value.expose_secret(), &ctx, attr)?)
        };
        let mut sealed = Self {
            access_token_sealed: Some(put("access_token_sealed", &grant.access_token)?),
            refresh_token_sealed: match &grant.refresh_token {
                Some(refresh) => Some(put("refresh_token_sealed", refresh)?),
                None => None,
            },
            mac_key_sealed: None,
            expires_at: now() + grant.expires_in,
            token_version: Some(crate::crypto::random_token(12)?),
            needs_reauth: false,
        };
        for (name, value) in &grant.extra {
            match *name {
                "mac_key" => sealed.mac_key_sealed = Some(put("mac_key_sealed", value)?),
                other => {
                    return Err(Error::Internal(format!(
                        "no stored attribute holds the extra secret `{other}`"
                    )));
                }
            }
        }
        Ok(sealed)
    }

    /// Opens the tokens, sealed to the item at `key`.
    pub fn open(&self, keys: &KeyRing, key: &Key) -> Result<Tokens> {
        let ctx = context(key);
        let access = self
            .access_token_sealed
            .as_deref()
            .ok_or_else(|| Error::Internal("stored tokens lack the access token".into()))?;
        let unreadable = |_| Error::Internal("stored tokens cannot be decrypted".into());
        Ok(Tokens {
            access_token: keys
                .open(access, &ctx, "access_token_sealed")
                .map_err(unreadable)?,
            refresh_token: match &self.refresh_token_sealed {
                Some(s) => Some(
                    keys.open(s, &ctx, "refresh_token_sealed")
                        .map_err(unreadable)?,
                ),
                None => None,
            },
            expires_at: self.expires_at,
        })
    }

    /// Opens the MAC key (Saison's [`Grant::extra`] `mac_key`), if one is stored.
    pub fn open_mac_key(&self, keys: &KeyRing, key: &Key) -> Result<Option<SecretString>> {
        match &self.mac_key_sealed {
            Some(sealed) => keys
                .open(sealed, &context(key), "mac_key_sealed")
                .map(Some)
                .map_err(|_| Error::Internal("stored tokens cannot be decrypted".into())),
            None => Ok(None),
        }
    }

    /// The version as the condition of a write compares it (`null` when the item has none).
    fn version(&self) -> Value {
        self.token_version
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null)
    }
}

/// Why a refresh failed.
pub enum RefreshError {
    /// The platform refused the refresh token (`invalid_grant`).
    InvalidGrant,
    /// Anything else (network, platform error): nothing is marked, the caller may retry.
    Failed(Error),
    /// The token endpoint did not answer in time (the HTTP client's timeout): a failure like
    /// [`RefreshError::Failed`], told apart for the metrics (`Reason=timeout`).
    TimedOut(Error),
}

impl From<Error> for RefreshError {
    /// An error of ours before the call (the HTTP client cannot be built): a failure, not a
    /// refusal, so nothing is marked.
    fn from(e: Error) -> Self {
        RefreshError::Failed(e)
    }
}

impl RefreshError {
    /// The error for a code exchange that failed this way: `invalid_grant` means the platform
    /// refused the code (a 400 asking to start again); anything else stays as it was.
    pub fn for_code(self, platform: &str) -> Error {
        match self {
            RefreshError::InvalidGrant => Error::refused(
                Reason::PlatformRefused,
                format!("{platform} refused the authorization code; start again"),
            ),
            RefreshError::Failed(e) | RefreshError::TimedOut(e) => e,
        }
    }

    /// The `Reason` dimension of [`crate::metrics::names::REFRESH_FAILED`].
    pub fn code(&self) -> &'static str {
        match self {
            RefreshError::InvalidGrant => "invalid_grant",
            RefreshError::Failed(_) => "upstream",
            RefreshError::TimedOut(_) => "timeout",
        }
    }
}

/// Sends a request to an OAuth token endpoint and reads its answer, the same way for every
/// platform: the reply on success; `invalid_grant` as such; any other 4xx as a refusal (400),
/// and anything else — 5xx, garbage, no answer — as the platform's failure (502), one that timed
/// out as [`RefreshError::TimedOut`]. `who` names the endpoint in messages (e.g. "Haravan's
/// token endpoint"); no secret is ever part of one. The call is `platform`'s `token` operation
/// in the metrics.
pub async fn token_request<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    platform: &str,
    who: &str,
) -> std::result::Result<T, RefreshError> {
    use crate::http::PlatformCall as _;
    let failed = |message: String| RefreshError::Failed(Error::Upstream(message));
    let resp = request.send_to(platform, "token").await.map_err(|e| {
        let message = format!("{who} {}", crate::http::describe(&e));
        if e.is_timeout() {
            RefreshError::TimedOut(Error::Upstream(message))
        } else {
            failed(message)
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .map_err(|_| failed(format!("{who} answered unreadably")));
    }
    let error = resp
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned));
    tracing::warn!(status = status.as_u16(), error = ?error, who, "token request refused");
    Err(match error.as_deref() {
        Some("invalid_grant") => RefreshError::InvalidGrant,
        _ if status.is_client_error() => RefreshError::Failed(Error::refused(
            Reason::PlatformRefused,
            format!("{who} refused the request; start again"),
        )),
        _ => failed(format!("{who} answered {}", status.as_u16())),
    })
}

/// A platform's refresh call.
#[async_trait::async_trait]
pub trait Refresher: Send + Sync {
    /// Exchanges `refresh_token` for new tokens.
    async fn refresh(
        &self,
        refresh_token: &SecretString,
    ) -> std::result::Result<Grant, RefreshError>;
}

fn context(key: &Key) -> String {
    format!("{}/{}", key.pk, key.sk)
}

/// Writes `grant` into `attrs` (sealed, bound to `key`), with a new version. A grant without a
/// refresh token keeps the one `attrs` already had. It only inserts, never removes, so that a
/// refresh can write into an empty map exactly the attributes it changes and set those in place
/// ([`crate::store::Store::update`]): whatever a grant leaves out stays as stored.
pub fn seal(
    keys: &KeyRing,
    key: &Key,
    grant: &Grant,
    attrs: &mut Map<String, Value>,
) -> Result<()> {
    attrs.extend(SealedTokens::seal(keys, key, grant)?.to_attrs()?);
    Ok(())
}

/// Opens the tokens of a stored item.
pub fn open(keys: &KeyRing, item: &Item) -> Result<Tokens> {
    item.record::<SealedTokens>()?.open(keys, &item.key)
}

/// Opens another secret stored with the tokens by [`seal`] (a [`Grant::extra`]).
/// Only `mac_key` is stored ([`SealedTokens::mac_key_sealed`]); any other name has none.
pub fn open_extra(keys: &KeyRing, item: &Item, name: &str) -> Result<Option<SecretString>> {
    match name {
        "mac_key" => item.record::<SealedTokens>()?.open_mac_key(keys, &item.key),
        _ => Ok(None),
    }
}

fn reauth_error() -> Error {
    Error::refused(
        Reason::NeedsReauth,
        "the platform no longer accepts this app's authorization; an admin must install the app again",
    )
}

fn lease_key(key: &Key) -> Key {
    Key::new(format!("lease#{}", key.pk), &key.sk)
}

/// A valid access token for the tenant stored at `key`, refreshed through `refresher` when due.
pub async fn access_token(cx: &Deps, key: &Key, refresher: &dyn Refresher) -> Result<SecretString> {
    let keys = cx.secrets.app_keys().await?;
    let item = fresh_item(cx, key, refresher).await?;
    Ok(open(&keys, &item)?.access_token)
}

/// The tenant's item with a valid access token in it, refreshed through `refresher` when due.
/// Platforms that keep more than the access token (a MAC key) read it from this same item, so
/// the two always belong together.
pub async fn fresh_item(cx: &Deps, key: &Key, refresher: &dyn Refresher) -> Result<Item> {
    fresh_item_or_replacing(cx, key, refresher, None).await
}

/// A forced refresh: the tenant's item with an access token other than the one of version
/// `rejected` (its `token_version`, as [`version_of`] reads it), which the platform answered 401
/// to. It refreshes only while the stored token is still that one, under the same lease as a
/// refresh that is due, so that any number of concurrent callers who all got a 401 for one token
/// cause one refresh call; a caller who finds a newer token (a sibling's refresh) takes it
/// without refreshing. Without a refresh token nothing can be done: the item comes back as it is
/// (the same version), and the caller passes the 401 on.
pub async fn fresh_item_replacing(
    cx: &Deps,
    key: &Key,
    refresher: &dyn Refresher,
    rejected: &Value,
) -> Result<Item> {
    fresh_item_or_replacing(cx, key, refresher, Some(rejected)).await
}

/// The version of the tokens in `item`, as [`fresh_item_replacing`] takes it (`null` for an item
/// written before versions existed).
pub fn version_of(item: &Item) -> Result<Value> {
    Ok(item.record::<SealedTokens>()?.version())
}

/// Whether the stored tokens must be refreshed: due, or still the rejected ones.
fn must_refresh(sealed: &SealedTokens, tokens: &Tokens, rejected: Option<&Value>) -> bool {
    tokens.expires_at - MARGIN <= now() || rejected.is_some_and(|r| *r == sealed.version())
}

async fn fresh_item_or_replacing(
    cx: &Deps,
    key: &Key,
    refresher: &dyn Refresher,
    rejected: Option<&Value>,
) -> Result<Item> {
    let keys = cx.secrets.app_keys().await?;
    let patience = Patience::new(WAIT, POLL);
    loop {
        let item = cx.store.get(key).await?.ok_or_else(|| {
            Error::refused(
                Reason::NotInstalled,
                "the app is not installed for this tenant",
            )
        })?;
        let sealed = item.record::<SealedTokens>()?;
        if sealed.needs_reauth {
            return Err(reauth_error());
        }
        let tokens = sealed.open(&keys, key)?;
        if !must_refresh(&sealed, &tokens, rejected) {
            return Ok(item);
        }
        if tokens.refresh_token.is_none() {
            return if tokens.expires_at > now() {
                Ok(item)
            } else {
                Err(reauth_error())
            };
        }
        match Lease::try_take(cx.store.as_ref(), lease_key(key)).await? {
            Some(lease) => {
                let outcome = refresh_under_lease(cx, &keys, key, refresher, rejected).await;
                lease.release(cx.store.as_ref()).await;
                match outcome {
                    Ok(Some(item)) => return Ok(item),
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                }
            }
            None => {
                if !patience.wait().await {
                    refresh_failed(key, "lease_wait");
                    return Err(Error::Unavailable(
                        "the platform's token refresh is taking too long; try again".into(),
                    ));
                }
            }
        }
    }
}

/// Holding the lease: re-read, refresh if still due, write on the version read.
/// `Ok(None)` means the item changed under us: read again.
async fn refresh_under_lease(
    cx: &Deps,
    keys: &KeyRing,
    key: &Key,
    refresher: &dyn Refresher,
    rejected: Option<&Value>,
) -> Result<Option<Item>> {
    let Some(item) = cx.store.get(key).await? else {
        return Err(Error::refused(
            Reason::NotInstalled,
            "the app is not installed for this tenant",
        ));
    };
    let sealed = item.record::<SealedTokens>()?;
    if sealed.needs_reauth {
        return Err(reauth_error());
    }
    let tokens = sealed.open(keys, key)?;
    if !must_refresh(&sealed, &tokens, rejected) {
        return Ok(Some(item));
    }
    let Some(refresh_token) = tokens.refresh_token else {
        return Ok(None);
    };
    let version = sealed.version();
    // A refresh cut short (the request's deadline drops this future mid-call) is a timeout.
    let mut pending = Pending::new(key);
    let outcome = refresher.refresh(&refresh_token).await;
    match &outcome {
        Ok(_) => pending.settle(None),
        // Counted only once the authorization is marked dead: a sibling's rotation is not one.
        Err(RefreshError::InvalidGrant) => pending.settled = true,
        Err(e) => pending.settle(Some(e.code())),
    }
    match outcome {
        Ok(grant) => {
            // Only what the grant changes is written, in place: another writer's attributes
            // (a `shop/update`'s shop details) and the item's expiry (a WebLink session's) stay.
            // With them, the connection's refresh time, and its `connection.updated` event in
            // the same transaction: the event exists exactly when the new tokens do.
            let mut set = SealedTokens::seal(keys, key, &grant)?.to_attrs()?;
            set.extend(crate::connection::refreshed_attrs(now()));
            let event = lifecycle_event(&item, &set, crate::events::names::CONNECTION_UPDATED)?;
            match versioned_write(cx, key, &set, version, event).await? {
                true => {
                    tracing::info!(pk = %key.pk, tenant = %key.sk, "access token refreshed");
                    let mut updated = item;
                    updated.attrs.extend(set);
                    Ok(Some(updated))
                }
                false => Ok(None),
            }
        }
        Err(RefreshError::InvalidGrant) => {
            // A sibling whose lease ran out may have rotated the token just now: give its write
            // a moment to land before concluding that the authorization is dead.
            for _ in 0..5 {
                match cx.store.get(key).await? {
                    Some(current) if current.attrs.get("token_version") != Some(&version) => {
                        return Ok(None);
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    None => return Ok(None),
                }
            }
            // Only the mark (and the connection's status and error) is written, in place,
            // with the `connection.needs_reauth` event in the same transaction.
            let set = crate::connection::needs_reauth_attrs(
                now(),
                "invalid_grant: the platform refused the refresh token",
            );
            let event =
                lifecycle_event(&item, &set, crate::events::names::CONNECTION_NEEDS_REAUTH)?;
            match versioned_write(cx, key, &set, version, event).await? {
                true => {
                    refresh_failed(key, "invalid_grant");
                    tracing::warn!(pk = %key.pk, tenant = %key.sk, "refresh token refused; re-authorization needed");
                    Err(reauth_error())
                }
                false => Ok(None),
            }
        }
        Err(RefreshError::Failed(e) | RefreshError::TimedOut(e)) => {
            // Noted on the connection for the app to see (best effort, on the version read so
            // that it never lands on newer tokens); the caller gets the failure either way.
            let mut set = Map::new();
            set.insert("last_error".into(), e.public_message().into());
            set.insert("checked_at".into(), now().into());
            if let Err(store) = cx
                .store
                .update(
                    key,
                    &set,
                    Condition::AttrEquals("token_version".into(), version),
                )
                .await
            {
                tracing::debug!(error = %store, "the refresh failure was not noted");
            }
            Err(e)
        }
    }
}

/// The platform of a refreshable item's key (`install#haravan`, `conn#saison#…`: its second
/// part).
fn platform_of(key: &Key) -> &str {
    key.pk.split('#').nth(1).unwrap_or("unknown")
}

/// A refresh of the tenant at `key` failed for `reason` (a
/// [`crate::metrics::names::REFRESH_FAILED`] reason code).
fn refresh_failed(key: &Key, reason: &'static str) {
    crate::metrics::count(
        crate::metrics::names::REFRESH_FAILED,
        platform_of(key),
        &[("Reason", reason)],
        &[("tenant", &key.sk)],
    );
}

/// A refresh call under way: its outcome is counted when it is settled, and as a `timeout` if it
/// never is (its future was dropped at the request's deadline).
struct Pending<'k> {
    key: &'k Key,
    settled: bool,
}

impl<'k> Pending<'k> {
    fn new(key: &'k Key) -> Self {
        Self {
            key,
            settled: false,
        }
    }

    /// The call ended: succeeded (`None`) or failed for a reason code.
    fn settle(&mut self, failed: Option<&'static str>) {
        self.settled = true;
        match failed {
            None => crate::metrics::count(
                crate::metrics::names::REFRESH_SUCCEEDED,
                platform_of(self.key),
                &[],
                &[("tenant", &self.key.sk)],
            ),
            Some(reason) => refresh_failed(self.key, reason),
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            refresh_failed(self.key, "timeout");
        }
    }
}

/// The lifecycle event of a change `set` in place on `item`, when `item` is a connection
/// ([`crate::connection::view`]); `None` for any other refreshable item.
fn lifecycle_event(
    item: &Item,
    set: &Map<String, Value>,
    name: &str,
) -> Result<Option<crate::store::Write>> {
    match crate::connection::view_updated(item, set) {
        Ok(connection) => Ok(Some(connection.event_write(name)?)),
        Err(_) => Ok(None),
    }
}

/// `set` written in place on condition that `token_version` is still `version`, in one
/// transaction with `event`. `false`: the version changed (a sibling wrote first), nothing
/// written.
async fn versioned_write(
    cx: &Deps,
    key: &Key,
    set: &Map<String, Value>,
    version: Value,
    event: Option<crate::store::Write>,
) -> Result<bool> {
    let mut writes = vec![crate::store::Write::Update {
        key: key.clone(),
        set: set.clone(),
        condition: Condition::AttrEquals("token_version".into(), version),
    }];
    writes.extend(event);
    match cx.store.transact(&writes).await {
        Ok(()) => Ok(true),
        Err(StoreError::Cancelled(_) | StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let secret = SecretString::from("a-secret-of-at-least-thirty-two-characters".to_string());
        KeyRing::new([("k1", &secret)]).unwrap()
    }

    fn grant() -> Grant {
        Grant {
            access_token: SecretString::from("the-access-token".to_string()),
            refresh_token: Some(SecretString::from("the-refresh-token".to_string())),
            expires_in: 3600,
            extra: vec![("mac_key", SecretString::from("the-mac-key".to_string()))],
        }
    }

    #[test]
    fn the_two_tokens_of_an_item_cannot_be_swapped() {
        let keys = ring();
        let key = Key::new("install#haravan", "1000111111");
        let mut attrs = Map::new();
        seal(&keys, &key, &grant(), &mut attrs).unwrap();
        let item = Item::new(key.clone(), attrs.clone());
        let tokens = open(&keys, &item).unwrap();
        assert_eq!(tokens.access_token.expose_secret(), "the-access-token");
        assert_eq!(
            open_extra(&keys, &item, "mac_key")
                .unwrap()
                .unwrap()
                .expose_secret(),
            "the-mac-key"
        );

        let mut swapped = attrs.clone();
        let access = swapped["access_token_sealed"].clone();
        swapped["access_token_sealed"] = swapped["refresh_token_sealed"].clone();
        swapped["refresh_token_sealed"] = access;
        assert!(open(&keys, &Item::new(key.clone(), swapped)).is_err());

        let mut moved = attrs;
        moved["mac_key_sealed"] = moved["refresh_token_sealed"].clone();
        assert!(open_extra(&keys, &Item::new(key, moved), "mac_key").is_err());
    }

    #[test]
    fn the_token_attributes_keep_their_names() {
        let keys = ring();
        let key = Key::new("install#saison", "demo");
        let mut attrs = Map::new();
        seal(&keys, &key, &grant(), &mut attrs).unwrap();
        let names: Vec<&str> = attrs.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "access_token_sealed",
                "refresh_token_sealed",
                "mac_key_sealed",
                "expires_at",
                "token_version",
                "needs_reauth"
            ]
        );
        assert_eq!(attrs["needs_reauth"], Value::Bool(false));
        assert!(attrs["expires_at"].as_i64().unwrap() > now());

        // Without a refresh token or extra secret, those attributes are left out, not nulled:
        // a refresh's in-place write keeps the stored refresh token.
        let mut partial = Map::new();
        let bare = Grant {
            refresh_token: None,
            extra: Vec::new(),
            ..grant()
        };
        seal(&keys, &key, &bare, &mut partial).unwrap();
        assert!(!partial.contains_key("refresh_token_sealed"));
        assert!(!partial.contains_key("mac_key_sealed"));

        let unknown = Grant {
            extra: vec![("other", SecretString::from("x".to_string()))],
            ..grant()
        };
        assert!(seal(&keys, &key, &unknown, &mut Map::new()).is_err());
    }

    #[test]
    fn older_items_decode_and_a_bad_one_is_an_error() {
        let key = Key::new("install#haravan", "1");
        let empty = Item::new(key.clone(), Map::new());
        assert_eq!(
            empty.record::<SealedTokens>().unwrap(),
            SealedTokens::default()
        );
        assert!(open(&ring(), &empty).is_err());
        let mut bad = Map::new();
        bad.insert("needs_reauth".into(), "yes".into());
        assert!(matches!(
            Item::new(key, bad).record::<SealedTokens>(),
            Err(StoreError::Invalid(m)) if m.contains("token attributes")
        ));
    }

    #[test]
    fn tokens_sealed_the_first_way_still_open() {
        let keys = ring();
        let key = Key::new("install#saison", "demo");
        let ctx = context(&key);
        let mut attrs = Map::new();
        for (attr, value) in [
            ("access_token_sealed", "old-access"),
            ("refresh_token_sealed", "old-refresh"),
            ("mac_key_sealed", "old-mac"),
        ] {
            let sealed = keys.encrypt(value, &ctx).unwrap();
            assert!(sealed.starts_with("v1."));
            attrs.insert(attr.into(), sealed.into());
        }
        let item = Item::new(key, attrs);
        let tokens = open(&keys, &item).unwrap();
        assert_eq!(tokens.access_token.expose_secret(), "old-access");
        assert_eq!(tokens.refresh_token.unwrap().expose_secret(), "old-refresh");
        assert_eq!(
            open_extra(&keys, &item, "mac_key")
                .unwrap()
                .unwrap()
                .expose_secret(),
            "old-mac"
        );
    }
}
