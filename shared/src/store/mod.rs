//! The store contract: one trait, two implementations with the same semantics.
//!
//! Gatehouse keeps everything in one table (single-table design). An item is addressed by a
//! partition key and a sort key, carries a JSON object of attributes and, optionally, an expiry.
//! Every access is by key or within one partition; there is no scan.
//!
//! Semantics every implementation must honour (the conformance suite in `tests/it/store.rs`
//! holds both to them):
//! - An item whose `expires_at` is in the past does not exist: `get` and `query` skip it, a
//!   conditional create may replace it, `take` does not return it. (DynamoDB removes expired items
//!   only eventually, so the check is made on every read, not left to the TTL sweeper.)
//! - [`Condition::Absent`] creates only if no live item has the key: of any number of concurrent
//!   creators exactly one succeeds.
//! - [`Condition::AttrEquals`] replaces only if the live item's attribute equals the value
//!   (optimistic concurrency, state transitions).
//! - [`Store::update`] sets some attributes of a live item in place, leaving its other attributes
//!   and its expiry as they are, atomically with its condition: two writers that change
//!   different attributes of one item never undo each other's change, and of concurrent updates
//!   conditioned on one version, exactly one succeeds.
//! - [`Store::take`] removes the item and returns it if it was live: of any number of concurrent
//!   takers exactly one gets `Some`. One-time flow state is consumed this way.
//! - [`Store::transact`] applies several writes, each with its own condition, all or nothing:
//!   if any condition fails nothing is written and [`StoreError::Cancelled`] names which. This
//!   is how a mark and its effect commit together ([`crate::once`]): a retry after any failure,
//!   including a transaction that was applied but whose answer was lost, finds both or neither.
//! - [`Store::query_index`] reads one partition of a secondary index ([`INDEXES`]): the live
//!   items whose index attributes are set, in index-sort-key order, from after a cursor, up to
//!   a limit. An item is in an index exactly when it carries both of the index's attributes
//!   (strings); they are written with the item, like any attribute. On DynamoDB an index is
//!   eventually consistent (a write shows in it a moment later); nothing that decides a write
//!   reads one, only listings.

mod dynamo;
#[cfg(feature = "embedded")]
mod embedded;
mod record;

pub use dynamo::{DynamoStore, create_table};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;
pub use record::Record;

use serde_json::{Map, Value};

/// The partition and sort key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Partition key, e.g. `install#sesami#shop-1`.
    pub pk: String,
    /// Sort key, e.g. the shop id.
    pub sk: String,
}

impl Key {
    /// A key from its two parts.
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of an item alone in its partition: partition `<kind>#<id>`, sort key `<id>`
    /// (`install#haravan#1000`, `1000`). Every kind that is never listed is keyed so, by its
    /// tenant or its random id, so that no partition key is shared by the tenants of a kind
    /// (README, "Storage"). The sort key repeats the id, so that `key.sk` still names the
    /// item's tenant or id.
    pub fn single(kind: &str, id: &str) -> Self {
        Self::new(format!("{kind}#{id}"), id)
    }
}

/// A secondary index of the table (a DynamoDB global secondary index, projecting every
/// attribute). An item is in it when it carries both attributes, each a non-empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    /// The index's name (DynamoDB's `IndexName`; IAM grants Query on `<table>/index/<name>`).
    pub name: &'static str,
    /// The attribute holding the index's partition key.
    pub pk: &'static str,
    /// The attribute holding the index's sort key: unique within an index partition, so that
    /// it can serve as a cursor.
    pub sk: &'static str,
}

/// Connections by platform: partition `conns#<platform>#<shard>`, so that no one key holds a
/// platform's every tenant (see [`crate::connection`]).
pub const BY_PLATFORM: Index = Index {
    name: "by_platform",
    pk: "ix_platform_pk",
    sk: "ix_platform_sk",
};

/// Connections by the app's end user: partition `user#<platform>#<end user>`.
pub const BY_END_USER: Index = Index {
    name: "by_end_user",
    pk: "ix_user_pk",
    sk: "ix_user_sk",
};

/// Every secondary index of the table (template.yaml's `GlobalSecondaryIndexes`,
/// [`create_table`]'s).
pub const INDEXES: [Index; 2] = [BY_PLATFORM, BY_END_USER];

/// The most items one [`Store::query_index`] returns.
pub const MAX_INDEX_PAGE: usize = 1000;

/// Attribute names the store itself uses; item attributes must not use them.
pub const RESERVED_ATTRIBUTES: [&str; 3] = ["pk", "sk", "ttl"];

/// One stored item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where it lives.
    pub key: Key,
    /// Its attributes: a JSON object whose names are not in [`RESERVED_ATTRIBUTES`].
    pub attrs: Map<String, Value>,
    /// Unix seconds after which the item no longer exists (stored as the table's TTL attribute).
    pub expires_at: Option<i64>,
}

impl Item {
    /// An item that does not expire.
    pub fn new(key: Key, attrs: Map<String, Value>) -> Self {
        Self {
            key,
            attrs,
            expires_at: None,
        }
    }

    /// The same item, expiring at `unix_seconds`.
    pub fn expiring_at(mut self, unix_seconds: i64) -> Self {
        self.expires_at = Some(unix_seconds);
        self
    }

    /// A string attribute, if present and a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }

    /// Whether the item is live at `now` (unix seconds).
    pub fn is_live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// When a [`Store::put`] or [`Store::update`] may write.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Always: create or replace. For [`Store::update`]: whenever a live item has the key.
    Always,
    /// Only if no live item has the key. Meaningless for [`Store::update`], which refuses it as
    /// [`StoreError::Invalid`].
    Absent,
    /// Only if a live item has the key and its attribute `.0` equals `.1`.
    AttrEquals(String, Value),
    /// Only if a live item has the key (for [`Store::update`], the same as [`Condition::Always`]).
    Exists,
}

/// The most writes one [`Store::transact`] may hold (DynamoDB's limit).
pub const MAX_TRANSACT_WRITES: usize = 100;

/// One write of a [`Store::transact`], with its own condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create or replace `item`, as [`Store::put`] does.
    Put(Item, Condition),
    /// Set attributes of a live item in place, as [`Store::update`] does.
    Update {
        /// The item to change.
        key: Key,
        /// The attributes to set.
        set: Map<String, Value>,
        /// When to write ([`Condition::Absent`] is refused, as by [`Store::update`]).
        condition: Condition,
    },
    /// Remove the item: with [`Condition::Always`] whether or not it exists, with
    /// [`Condition::Exists`] or [`Condition::AttrEquals`] only if it holds.
    /// [`Condition::Absent`] is refused.
    Delete(Key, Condition),
    /// Write nothing, but hold the transaction to `condition` on the item ([`Condition::Always`]
    /// is refused: it would check nothing).
    Check(Key, Condition),
}

impl Write {
    /// The key the write is about.
    pub fn key(&self) -> &Key {
        match self {
            Write::Put(item, _) => &item.key,
            Write::Update { key, .. } | Write::Delete(key, _) | Write::Check(key, _) => key,
        }
    }

    /// The write's condition.
    pub fn condition(&self) -> &Condition {
        match self {
            Write::Put(_, c) | Write::Delete(_, c) | Write::Check(_, c) => c,
            Write::Update { condition, .. } => condition,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's [`Condition`] did not hold; nothing was written.
    #[error("the store's condition did not hold")]
    ConditionFailed,
    /// The request cannot be served as given (reserved attribute name, empty or over-long key,
    /// value the backend cannot hold); retrying it will not help.
    #[error("the item cannot be stored: {0}")]
    Invalid(String),
    /// The backend could not be reached or failed; the request may be retried later. A write
    /// that ends this way may or may not have been applied.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A [`Store::transact`] whose conditions at these indices (in ascending order) did not
    /// hold; nothing of it was written.
    #[error("the conditions of writes {0:?} of the transaction did not hold")]
    Cancelled(Vec<usize>),
}

/// The store contract. Implementations: [`DynamoStore`] (deployed) and [`EmbeddedStore`] (local).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The live item at `key`, if any.
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError>;
    /// Writes `item` if `condition` holds, else [`StoreError::ConditionFailed`] and no change.
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError>;
    /// Sets the attributes in `set` on the live item at `key`, in place: its other attributes
    /// and its expiry stay as they are. Writes only if a live item has the key and, for
    /// [`Condition::AttrEquals`], its attribute equals the value; otherwise (absent or expired
    /// item, mismatch) [`StoreError::ConditionFailed`] and no change, and nothing is created.
    /// [`Condition::Absent`], reserved attribute names and an empty `set` are
    /// [`StoreError::Invalid`]. There is no removal: a writer that means "no value" sets `null`.
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError>;
    /// Removes the item at `key` and returns it if it was live. Exactly one of concurrent
    /// callers gets `Some`. Removing an absent key is not an error.
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError>;
    /// The live items of one partition, in sort-key order.
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError>;
    /// The live items whose partition key starts with `prefix` (non-empty), in key order: a
    /// read of the whole table (DynamoDB: a Scan), for the local console and tests only. No
    /// handler calls it, and no function's policy grants `dynamodb:Scan`.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError>;
    /// Applies every write, all or nothing, each on its own condition evaluated on what is
    /// stored before any of them: either all conditions hold and all writes land atomically, or
    /// [`StoreError::Cancelled`] names the writes whose condition failed and nothing is written.
    /// 1 to [`MAX_TRANSACT_WRITES`] writes, no two on one key, else [`StoreError::Invalid`].
    /// Retrying a call the backend applied but whose answer was lost must not apply it twice
    /// (DynamoDB: a client request token per call).
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError>;
    /// Up to `limit` (1 to [`MAX_INDEX_PAGE`]) live items of partition `pk` of `index`, in
    /// the order of their index sort key, starting after `after` (an index sort key, e.g. the
    /// last one of the previous page). Fewer than `limit` means the partition holds no more
    /// (expired items are skipped without shortening a page). Not a consistent read on DynamoDB.
    ///
    /// The default refuses it ([`StoreError::Invalid`]), so that stores wrapping another for a
    /// test need not pass it on unless they are listed through.
    async fn query_index(
        &self,
        index: &Index,
        pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let _ = (pk, after, limit);
        Err(StoreError::Invalid(format!(
            "this store does not serve index `{}`",
            index.name
        )))
    }
}

/// Everything a [`Store::query_index`] checks before touching the backend.
pub(crate) fn check_index_query(
    index: &Index,
    pk: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(), StoreError> {
    if !INDEXES.contains(index) {
        return Err(StoreError::Invalid(format!(
            "`{}` is not an index of the table",
            index.name
        )));
    }
    check_pk(pk)?;
    if let Some(after) = after {
        check_key_part("index sort", after, MAX_SK_BYTES)?;
    }
    if limit == 0 || limit > MAX_INDEX_PAGE {
        return Err(StoreError::Invalid(format!(
            "an index page holds 1 to {MAX_INDEX_PAGE} items, not {limit}"
        )));
    }
    Ok(())
}

/// Rejects attribute names the store reserves for itself, and index attributes that are not
/// non-empty strings of at most a key's length (DynamoDB refuses any other value of an index
/// key, so the embedded store does too).
pub(crate) fn check_attrs(attrs: &Map<String, Value>) -> Result<(), StoreError> {
    for index in INDEXES {
        for (name, max) in [(index.pk, MAX_PK_BYTES), (index.sk, MAX_SK_BYTES)] {
            match attrs.get(name) {
                None => {}
                Some(Value::String(s)) if !s.is_empty() && s.len() <= max => {}
                Some(_) => {
                    return Err(StoreError::Invalid(format!(
                        "index attribute `{name}` must be a string of 1 to {max} bytes"
                    )));
                }
            }
        }
    }
    match RESERVED_ATTRIBUTES
        .iter()
        .find(|name| attrs.contains_key(**name))
    {
        Some(name) => Err(StoreError::Invalid(format!(
            "attribute name `{name}` is reserved"
        ))),
        None => Ok(()),
    }
}

/// Everything a [`Store::put`] checks before touching the backend: the key, the attribute
/// names, and that a [`Condition::AttrEquals`] names an item attribute (on DynamoDB a reserved
/// name would compare the key or TTL instead, on the embedded store nothing, so both refuse it).
pub(crate) fn check_put(item: &Item, condition: &Condition) -> Result<(), StoreError> {
    check_key(&item.key)?;
    check_attrs(&item.attrs)?;
    check_condition(condition)
}

/// Everything a [`Store::update`] checks before touching the backend: as [`check_put`] does,
/// that there is something to set (DynamoDB refuses an empty `SET`), and that the condition is
/// not [`Condition::Absent`] (an update needs an item to update).
pub(crate) fn check_update(
    key: &Key,
    set: &Map<String, Value>,
    condition: &Condition,
) -> Result<(), StoreError> {
    check_key(key)?;
    check_attrs(set)?;
    if set.is_empty() {
        return Err(StoreError::Invalid(
            "an update must set some attribute".into(),
        ));
    }
    if *condition == Condition::Absent {
        return Err(StoreError::Invalid(
            "an update needs an item: `Absent` is not a condition it can take".into(),
        ));
    }
    check_condition(condition)
}

/// Everything a [`Store::transact`] checks before touching the backend: the number of writes,
/// distinct keys, and each write as its single-item counterpart checks it.
pub(crate) fn check_transact(writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() || writes.len() > MAX_TRANSACT_WRITES {
        return Err(StoreError::Invalid(format!(
            "a transaction holds 1 to {MAX_TRANSACT_WRITES} writes, not {}",
            writes.len()
        )));
    }
    let mut keys = std::collections::HashSet::with_capacity(writes.len());
    for write in writes {
        if !keys.insert(write.key()) {
            return Err(StoreError::Invalid(
                "a transaction may write each key once".into(),
            ));
        }
        match write {
            Write::Put(item, condition) => check_put(item, condition)?,
            Write::Update {
                key,
                set,
                condition,
            } => check_update(key, set, condition)?,
            Write::Delete(key, condition) => {
                check_key(key)?;
                if *condition == Condition::Absent {
                    return Err(StoreError::Invalid(
                        "a delete cannot be conditioned on the item being absent".into(),
                    ));
                }
                check_condition(condition)?;
            }
            Write::Check(key, condition) => {
                check_key(key)?;
                if *condition == Condition::Always {
                    return Err(StoreError::Invalid(
                        "a check must have a condition to check".into(),
                    ));
                }
                check_condition(condition)?;
            }
        }
    }
    Ok(())
}

/// Whether `condition` holds over the live item currently at a key, if any: the one reading of
/// conditions, for the embedded store and for in-memory stores in tests.
pub fn holds(condition: &Condition, current: Option<&Item>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => current.is_none(),
        Condition::Exists => current.is_some(),
        Condition::AttrEquals(name, value) => {
            current.is_some_and(|item| item.attrs.get(name) == Some(value))
        }
    }
}

/// Refuses a [`Condition::AttrEquals`] on a reserved name.
fn check_condition(condition: &Condition) -> Result<(), StoreError> {
    match condition {
        Condition::AttrEquals(name, _) if RESERVED_ATTRIBUTES.contains(&name.as_str()) => Err(
            StoreError::Invalid(format!("attribute name `{name}` is reserved")),
        ),
        _ => Ok(()),
    }
}

/// DynamoDB's limits on a partition key: not empty, at most 2048 bytes.
const MAX_PK_BYTES: usize = 2048;
/// DynamoDB's limits on a sort key: not empty, at most 1024 bytes.
const MAX_SK_BYTES: usize = 1024;

/// Rejects a partition key DynamoDB would refuse, so that the embedded store refuses it too
/// and a key that works locally also works deployed.
pub(crate) fn check_pk(pk: &str) -> Result<(), StoreError> {
    check_key_part("partition", pk, MAX_PK_BYTES)
}

/// Rejects a key DynamoDB would refuse (see [`check_pk`]).
pub(crate) fn check_key(key: &Key) -> Result<(), StoreError> {
    check_pk(&key.pk)?;
    check_key_part("sort", &key.sk, MAX_SK_BYTES)
}

fn check_key_part(what: &str, part: &str, max_bytes: usize) -> Result<(), StoreError> {
    if part.is_empty() || part.len() > max_bytes {
        return Err(StoreError::Invalid(format!(
            "the {what} key must be 1 to {max_bytes} bytes long"
        )));
    }
    Ok(())
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
