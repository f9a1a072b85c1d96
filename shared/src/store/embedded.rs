//! The embedded store (local): one redb file, so the local server keeps its installs and
//! sessions across restarts without any service running.
//!
//! Every conditional write and every `take` reads, checks and writes inside one write
//! transaction; redb runs write transactions one at a time, which gives the contract's
//! "exactly one of concurrent callers" without any lock of our own. redb blocks on disk I/O, so
//! each call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Condition, Item, Key, Store, StoreError, check_key, check_pk, check_put, now};

/// Items by `(pk, sk)`. redb orders tuple keys element by element and strings by their bytes,
/// as DynamoDB orders sort keys, so a partition is one contiguous range in sort-key order.
const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");

/// The stored value: JSON of the attributes and the expiry (the key is the table's key).
#[derive(Serialize, Deserialize)]
struct Record<A> {
    attrs: A,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The store in a file on local disk.
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file and its directories if needed. A file can be
    /// open only once at a time (redb locks it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path).map_err(unavailable)?;
        // Create the table once here, so that a read never finds it missing.
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(ITEMS).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs blocking redb `work` on tokio's blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let key = key.clone();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let found = table
                .get((key.pk.as_str(), key.sk.as_str()))
                .map_err(unavailable)?;
            let item = found.map(|value| decode(&key, value.value())).transpose()?;
            Ok(item.filter(|item| item.is_live(now())))
        })
        .await
    }

    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        check_put(item, &condition)?;
        let bytes = serde_json::to_vec(&Record {
            attrs: &item.attrs,
            expires_at: item.expires_at,
        })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let key = item.key.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(ITEMS).map_err(unavailable)?;
                let at = (key.pk.as_str(), key.sk.as_str());
                if condition != Condition::Always {
                    let current = table
                        .get(at)
                        .map_err(unavailable)?
                        .map(|value| decode(&key, value.value()))
                        .transpose()?
                        .filter(|item| item.is_live(now()));
                    if !holds(&condition, current.as_ref()) {
                        return Err(StoreError::ConditionFailed);
                    }
                }
                table.insert(at, bytes.as_slice()).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let key = key.clone();
        self.run(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let removed = txn
                .open_table(ITEMS)
                .map_err(unavailable)?
                .remove((key.pk.as_str(), key.sk.as_str()))
                .map_err(unavailable)?
                .map(|value| decode(&key, value.value()))
                .transpose()?;
            txn.commit().map_err(unavailable)?;
            Ok(removed.filter(|item| item.is_live(now())))
        })
        .await
    }

    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        check_pk(pk)?;
        let pk = pk.to_owned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ITEMS).map_err(unavailable)?;
            let now = now();
            let mut items = Vec::new();
            // Sort keys are never empty, so `(pk, "")` sorts before the partition's first item.
            for entry in table.range((pk.as_str(), "")..).map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                let (item_pk, sk) = key.value();
                if item_pk != pk {
                    break;
                }
                let item = decode(&Key::new(item_pk, sk), value.value())?;
                if item.is_live(now) {
                    items.push(item);
                }
            }
            Ok(items)
        })
        .await
    }
}

/// Whether `condition` holds over the live item currently at the key, if any.
fn holds(condition: &Condition, current: Option<&Item>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => current.is_none(),
        Condition::AttrEquals(name, value) => {
            current.is_some_and(|item| item.attrs.get(name) == Some(value))
        }
    }
}

/// The item stored at `key` as `bytes`.
fn decode(key: &Key, bytes: &[u8]) -> Result<Item, StoreError> {
    let record: Record<Map<String, Value>> = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Unavailable(format!("a stored item cannot be read: {e}")))?;
    Ok(Item {
        key: key.clone(),
        attrs: record.attrs,
        expires_at: record.expires_at,
    })
}

fn unavailable(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {}", error.into()))
}
