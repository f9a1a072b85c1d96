//! One connection model: every install (Sesami, Haravan), Saison cardholder connection and
//! WebLink session is a *connection* the app's own back end can read, list and get tokens for.
//!
//! Each platform keeps its own record as it always stored it (tokens sealed), with the common
//! attributes of this module flattened into it ([`Common`]): the app's end user where there is
//! one, the status, when it was created and last changed, its last refresh and last error, and
//! the attributes of the two secondary indexes that list connections without a Scan
//! ([`crate::store::BY_PLATFORM`], [`crate::store::BY_END_USER`]). Every common attribute is
//! optional, so an item stored before they existed still decodes; its [`Connection`] view falls
//! back to what the platform's record says (its install time, its `needs_reauth` flag).
//!
//! The [`Connection`] view carries no secret, whichever record it is built from: it is what the
//! `/v1/connections` routes answer and what the lifecycle events carry in `data`.
//!
//! Index keys: per platform `conns#<platform>#<shard>` over [`PLATFORM_SHARDS`] shards (a hash
//! of the item's key; one partition per platform would be a hot key shared by all its
//! tenants), listed by querying every shard; per end user `user#<platform>#<end user>` (one
//! partition per app user). The index sort key is the item's own key (`<pk>|<sk>`), unique, so
//! it doubles as the listing cursor.

use crate::events::{Event, names};
use crate::store::{Item, Key, StoreError, Write};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The platforms whose records are connections.
pub const PLATFORMS: [&str; 4] = ["sesami", "haravan", "saison", "weblink"];

/// How many partitions of [`crate::store::BY_PLATFORM`] one platform's connections are spread over.
pub const PLATFORM_SHARDS: u32 = 16;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Tokens can be had (refreshed when due).
    Active,
    /// The platform refused the refresh token: the user or admin must authorize again.
    NeedsReauth,
    /// The platform issued no refresh token (offline access was not granted): tokens can be had
    /// until the access token expires, then only a new authorization (with offline access)
    /// brings the connection back. Found by the health schedule ([`crate::health`]).
    NoRefreshToken,
    /// Removed (an uninstall, a revocation): only ever seen in a `connection.removed` event.
    Revoked,
}

impl Status {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::NeedsReauth => "needs_reauth",
            Status::NoRefreshToken => "no_refresh_token",
            Status::Revoked => "revoked",
        }
    }
}

/// The attributes every connection record carries besides its platform's own, flattened
/// (`#[serde(flatten)]`) into it. All optional: older items lack them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Common {
    /// The app's own reference of its user, when the connection was started by a connect link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    /// Where the connect link that started it sent the browser back: where a new link for a
    /// connection that needs re-authorization returns too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
    /// Written with every change of it; absent: derived from the record's `needs_reauth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Unix seconds; kept across re-installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Unix seconds of the latest change (install, refresh, refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// Unix seconds of the latest successful token refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<i64>,
    /// What the latest failed refresh said (a reason code and message, never a token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix seconds when the stored tokens were granted (an install, a sign-in, a refresh): how
    /// long the refresh token has gone unused, which the health schedule judges lapse by
    /// ([`crate::health`]). Absent from older items, which fall back to `last_refresh_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<i64>,
    /// Unix seconds of the latest time the refresh token's health was learned: a refresh (on
    /// demand or scheduled), its refusal or failure, or the schedule finding none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
    /// [`crate::store::BY_PLATFORM`]'s partition: `conns#<platform>#<shard>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ix_platform_pk: Option<String>,
    /// [`crate::store::BY_PLATFORM`]'s sort key: the item's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ix_platform_sk: Option<String>,
    /// [`crate::store::BY_END_USER`]'s partition: `user#<platform>#<end user>` (absent without an end user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ix_user_pk: Option<String>,
    /// [`crate::store::BY_END_USER`]'s sort key: the item's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ix_user_sk: Option<String>,
}

impl crate::store::Record for Common {
    const NAME: &'static str = "connection attributes";
}

impl Common {
    /// The common attributes of a new (or re-made) connection of `platform` stored at `key`,
    /// created at `created_at` (the earlier record's, on a re-install), changed `now`.
    pub fn new(
        platform: &str,
        key: &Key,
        end_user: Option<&str>,
        created_at: Option<i64>,
        now: i64,
    ) -> Self {
        let sk = index_sort_key(key);
        Self {
            end_user: end_user.map(str::to_owned),
            return_to: None,
            status: Some(Status::Active),
            created_at: Some(created_at.unwrap_or(now)),
            updated_at: Some(now),
            last_refresh_at: None,
            last_error: None,
            granted_at: Some(now),
            checked_at: None,
            ix_platform_pk: Some(platform_partition(platform, shard_of(key))),
            ix_platform_sk: Some(sk.clone()),
            ix_user_pk: end_user.map(|u| user_partition(platform, u)),
            ix_user_sk: end_user.map(|_| sk),
        }
    }
}

/// Partition `shard` of [`crate::store::BY_PLATFORM`] for `platform`: `conns#<platform>#<00..15>`.
pub fn platform_partition(platform: &str, shard: u32) -> String {
    format!("conns#{platform}#{shard:02}")
}

/// The partition of [`crate::store::BY_END_USER`] holding `end_user`'s connections of `platform`.
pub fn user_partition(platform: &str, end_user: &str) -> String {
    format!("user#{platform}#{end_user}")
}

/// The shard of a connection: a hash of its key, so that it is found again from the key alone.
pub fn shard_of(key: &Key) -> u32 {
    let hash = crate::crypto::sha256(format!("{}|{}", key.pk, key.sk).as_bytes());
    u32::from(hash[0]) % PLATFORM_SHARDS
}

/// The index sort key of the item at `key`: the key itself, unique within any partition.
/// `|` is not an id character, so the two parts cannot be confused.
pub fn index_sort_key(key: &Key) -> String {
    format!("{}|{}", key.pk, key.sk)
}

/// A connection as the app's back end sees it: never a token or any other secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    /// `sesami`, `haravan`, `saison` or `weblink`.
    pub platform: String,
    /// The shop, org, cardholder or session id (the `{tenant}` of the routes).
    pub tenant: String,
    /// The app's user, when a connect link started it.
    pub end_user: Option<String>,
    /// `active`, `needs_reauth`, `no_refresh_token` or `revoked`.
    pub status: Status,
    /// The scopes granted (or requested, where the platform answers none).
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: Option<i64>,
    /// Unix seconds.
    pub updated_at: Option<i64>,
    /// When the access token expires (unix seconds); `None` when it does not or is unknown.
    pub expires_at: Option<i64>,
    /// Unix seconds of the latest refresh.
    pub last_refresh_at: Option<i64>,
    /// The latest refresh failure.
    pub last_error: Option<String>,
    /// Unix seconds of the latest time the refresh token's health was learned (see
    /// [`Common::checked_at`]).
    pub checked_at: Option<i64>,
}

impl Connection {
    /// The JSON the routes answer and the events carry.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The lifecycle event `name` of this connection, for the transaction of its change.
    pub fn event(&self, name: &str) -> Event {
        Event::new(&self.platform, name, &self.tenant, self.to_json())
    }

    /// The outbox write of [`Self::event`].
    pub fn event_write(&self, name: &str) -> Result<Write, StoreError> {
        self.event(name).write()
    }

    /// This connection as it is reported once removed: status `revoked`.
    pub fn revoked(mut self) -> Self {
        self.status = Status::Revoked;
        self
    }
}

/// What a platform's record says that the view needs besides the common attributes.
struct Facts {
    platform: &'static str,
    tenant: String,
    scopes: Vec<String>,
    expires_at: Option<i64>,
    needs_reauth: bool,
    created_fallback: Option<i64>,
    end_user_fallback: Option<String>,
}

/// Which platform's record the item at `key` is, from its partition.
pub fn platform_of(key: &Key) -> Option<&'static str> {
    let pk = key.pk.as_str();
    if pk.starts_with("install#sesami#") {
        Some("sesami")
    } else if pk.starts_with("install#haravan#") {
        Some("haravan")
    } else if pk.starts_with("conn#saison#") {
        Some("saison")
    } else if pk.starts_with("session#weblink#") {
        Some("weblink")
    } else {
        None
    }
}

fn split_scopes(raw: &str) -> Vec<String> {
    raw.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn known(expires_at: i64) -> Option<i64> {
    (expires_at > 0).then_some(expires_at)
}

fn facts(item: &Item) -> Result<Facts, StoreError> {
    let not_one =
        || StoreError::Invalid(format!("the item in `{}` is not a connection", item.key.pk));
    let platform = platform_of(&item.key).ok_or_else(not_one)?;
    Ok(match platform {
        "sesami" => {
            let r = item.record::<crate::sesami::Install>()?;
            Facts {
                platform,
                tenant: r.shop_id,
                scopes: r.scopes,
                expires_at: None,
                needs_reauth: false,
                created_fallback: Some(r.installed_at),
                end_user_fallback: None,
            }
        }
        "haravan" => {
            let r = item.record::<crate::haravan::Install>()?;
            Facts {
                platform,
                tenant: r.orgid,
                scopes: split_scopes(&r.scope),
                expires_at: known(r.tokens.expires_at),
                needs_reauth: r.tokens.needs_reauth,
                created_fallback: r.installed_at,
                end_user_fallback: None,
            }
        }
        "saison" => {
            let r = item.record::<crate::saison::Connection>()?;
            Facts {
                platform,
                tenant: r.cardholder,
                scopes: Vec::new(),
                expires_at: known(r.tokens.expires_at),
                needs_reauth: r.tokens.needs_reauth,
                created_fallback: r.connected_at,
                end_user_fallback: None,
            }
        }
        _ => {
            let r = item.record::<crate::weblink::Session>()?;
            Facts {
                platform,
                tenant: item.key.sk.clone(),
                scopes: Vec::new(),
                expires_at: known(r.tokens.expires_at),
                needs_reauth: r.tokens.needs_reauth,
                created_fallback: None,
                end_user_fallback: None,
            }
        }
    })
}

/// The [`Connection`] view of a stored connection item (any platform's record).
pub fn view(item: &Item) -> Result<Connection, StoreError> {
    let facts = facts(item)?;
    let common = item.record::<Common>()?;
    let status = match (common.status, facts.needs_reauth) {
        (_, true) => Status::NeedsReauth,
        (Some(s), false) => s,
        (None, false) => Status::Active,
    };
    Ok(Connection {
        platform: facts.platform.to_owned(),
        tenant: facts.tenant,
        end_user: common.end_user.or(facts.end_user_fallback),
        status,
        scopes: facts.scopes,
        created_at: common.created_at.or(facts.created_fallback),
        updated_at: common
            .updated_at
            .or(common.created_at)
            .or(facts.created_fallback),
        expires_at: facts.expires_at,
        last_refresh_at: common.last_refresh_at,
        last_error: common.last_error,
        checked_at: common.checked_at,
    })
}

/// The view of `item` with the attributes `set` written over it (an in-place update's result).
pub fn view_updated(item: &Item, set: &Map<String, Value>) -> Result<Connection, StoreError> {
    let mut updated = item.clone();
    updated
        .attrs
        .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    view(&updated)
}

/// The created-at of an earlier record at the same key, kept by a re-install; and whether there
/// was one (the event is then `connection.updated`, not `connection.created`).
pub fn earlier(item: Option<&Item>) -> (Option<i64>, &'static str) {
    match item.and_then(|i| view(i).ok()) {
        Some(c) => (c.created_at, names::CONNECTION_UPDATED),
        None => (None, names::CONNECTION_CREATED),
    }
}

/// The `connection.removed` event of the connection stored at `key`, for the transaction that
/// deletes it (conditioned on it existing); none when nothing is stored there (the delete is
/// then refused anyway) or the stored item is not a connection that can be shown.
pub async fn removed_event(
    store: &dyn crate::store::Store,
    key: &Key,
) -> Result<Option<Write>, StoreError> {
    let Some(item) = store.get(key).await? else {
        return Ok(None);
    };
    match view(&item) {
        Ok(c) => Ok(Some(c.revoked().event_write(names::CONNECTION_REMOVED)?)),
        Err(e) => {
            tracing::warn!(pk = %key.pk, error = %e, "a removed connection without its event");
            Ok(None)
        }
    }
}

/// The attributes an in-place write sets after a successful refresh at `now`.
pub fn refreshed_attrs(now: i64) -> Map<String, Value> {
    let mut set = Map::new();
    set.insert("status".into(), Status::Active.as_str().into());
    set.insert("updated_at".into(), now.into());
    set.insert("last_refresh_at".into(), now.into());
    set.insert("granted_at".into(), now.into());
    set.insert("checked_at".into(), now.into());
    set.insert("last_error".into(), Value::Null);
    set
}

/// The attributes an in-place write sets when the platform refused the refresh token.
pub fn needs_reauth_attrs(now: i64, error: &str) -> Map<String, Value> {
    let mut set = Map::new();
    set.insert("needs_reauth".into(), true.into());
    set.insert("status".into(), Status::NeedsReauth.as_str().into());
    set.insert("updated_at".into(), now.into());
    set.insert("checked_at".into(), now.into());
    set.insert("last_error".into(), error.into());
    set
}

/// The attributes an in-place write sets when a connection turns out to hold no refresh token.
pub fn no_refresh_token_attrs(now: i64) -> Map<String, Value> {
    let mut set = Map::new();
    set.insert("status".into(), Status::NoRefreshToken.as_str().into());
    set.insert("updated_at".into(), now.into());
    set.insert("checked_at".into(), now.into());
    set.insert(
        "last_error".into(),
        "no_refresh_token: the platform issued no refresh token; authorize again with offline \
         access before the access token expires"
            .into(),
    );
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use serde_json::json;

    fn item(key: Key, attrs: Value) -> Item {
        let Value::Object(attrs) = attrs else {
            panic!()
        };
        Item::new(key, attrs)
    }

    #[test]
    fn an_older_record_decodes_and_its_view_falls_back_to_what_it_says() {
        let old = item(
            crate::haravan::install_key("1000"),
            json!({"orgid": "1000", "scope": "openid org", "installed_at": 7,
                   "access_token_sealed": "v2.x", "expires_at": 99, "needs_reauth": true}),
        );
        let c = view(&old).unwrap();
        assert_eq!(c.tenant, "1000");
        assert_eq!(c.status, Status::NeedsReauth);
        assert_eq!(c.scopes, ["openid", "org"]);
        assert_eq!(
            (c.created_at, c.updated_at, c.expires_at),
            (Some(7), Some(7), Some(99))
        );
        assert_eq!(c.end_user, None);
        let text = c.to_json().to_string();
        assert!(!text.contains("v2.x"), "{text}");
    }

    #[test]
    fn common_attributes_name_both_indexes_and_shard_the_platform() {
        let key =
            crate::saison::connection_key(&crate::saison::ConnectionId::new("u1", "demo", "M1"));
        let common = Common::new("saison", &key, Some("u1"), None, 5);
        let attrs = common.to_attrs().unwrap();
        assert_eq!(attrs["ix_user_pk"], json!("user#saison#u1"));
        assert_eq!(attrs["ix_platform_sk"], json!("conn#saison#u1|demo#M1"));
        assert!(
            attrs["ix_platform_pk"]
                .as_str()
                .unwrap()
                .starts_with("conns#saison#")
        );
        let shards: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| shard_of(&crate::sesami::install_key(&format!("shop-{i}"))))
            .collect();
        assert_eq!(
            shards.len(),
            PLATFORM_SHARDS as usize,
            "spread over every shard"
        );
        let without = Common::new("sesami", &crate::sesami::install_key("s"), None, Some(1), 5);
        assert_eq!((without.ix_user_pk, without.created_at), (None, Some(1)));
    }
}
