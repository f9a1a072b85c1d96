//! The embedded store (local): one SQLite file, so the local server keeps its installs and
//! sessions across restarts without any service running, and several processes may use it at
//! once (`cargo lambda watch` runs every function as a process of its own over one data dir, and
//! the local server may run beside it).
//!
//! - One table, `items`, keyed by `(pk, sk)`; the attributes are a JSON text, the expiry an
//!   integer. SQLite compares TEXT with its BINARY collation, byte by byte over the UTF-8, as
//!   DynamoDB orders sort keys, so `ORDER BY sk` is DynamoDB's order.
//! - WAL journal: readers never wait for the writer, and a write is seen by every connection,
//!   in this process or another, as soon as it commits.
//! - The exactly-one guarantees come from SQLite's own lock on the file, which every process
//!   takes: `take` is one `DELETE … RETURNING` statement, and a conditional write (and every
//!   `update`, which merges into the stored attributes) reads, checks and writes inside one
//!   `BEGIN IMMEDIATE` transaction, which takes the write lock before reading, so no other
//!   writer can come between the read and the write.
//! - A caller that finds the file locked waits for it up to [`BUSY_TIMEOUT`]; past that the call
//!   fails with [`StoreError::Unavailable`].
//!
//! Each [`EmbeddedStore`] has one connection behind a mutex; SQLite blocks on disk I/O and on
//! that lock, so every call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

use super::{
    Condition, Index, Item, Key, Store, StoreError, Write, check_index_query, check_key, check_pk,
    check_put, check_transact, check_update, holds, now,
};

/// How long a call waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The layout this code reads and writes, kept in the file's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// The store in a file on local disk.
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<Path>,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file and its directories if needed. Any number of
    /// stores, in this process or others, may have the same file open at once.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_timeout(path.as_ref(), BUSY_TIMEOUT)
    }

    fn open_with_timeout(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let fail = |e: rusqlite::Error| unavailable(path, e);
        let mut conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(busy_timeout).map_err(fail)?;
        // Reading first also opens the WAL of a file that has one, so that opening a file that
        // is set up takes no write lock and never waits for another process's write.
        // Switching a new file to WAL can answer "busy" at once, without waiting in the busy
        // handler, while another process sets the same file up; so setting up is retried here
        // until the busy timeout has passed.
        let started = std::time::Instant::now();
        loop {
            let attempt = match schema_version(&conn) {
                Ok(0) => set_up(&mut conn, path),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < busy_timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(fail(e)),
            }
        }
        match schema_version(&conn).map_err(fail)? {
            SCHEMA_VERSION => {}
            other => {
                return Err(StoreError::Unavailable(format!(
                    "embedded store {}: its layout is version {other}, this build knows {SCHEMA_VERSION}",
                    path.display()
                )));
            }
        }
        // In WAL mode, NORMAL loses no committed write when a process dies; only a power cut
        // may undo the last few commits, a fair price locally for not syncing on every commit.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.into(),
        })
    }

    /// Runs blocking SQLite `work` on this store's connection, on tokio's blocking pool.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held leaves nothing half done: an open transaction is
            // rolled back when its guard drops, so the connection stays usable.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn).map_err(|failure| match failure {
                Failure::Store(e) => e,
                Failure::Sqlite(e) => unavailable(&path, e),
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
    }
}

/// Whether SQLite answered that another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The layout version of the file: 0 for a new one, else [`SCHEMA_VERSION`] or a later one.
fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Sets up a new file: WAL journal, the table, the layout version. Openers racing on a new
/// file (`cargo lambda watch` starts every function at once) take turns on the write lock, and
/// whoever comes second finds the work done.
fn set_up(conn: &mut Connection, path: &Path) -> rusqlite::Result<()> {
    // WAL is a property of the file, kept once set. Where it cannot be used (some network file
    // systems) SQLite stays in its rollback journal, as correct, only slower under contention.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "the embedded store is not in WAL mode");
    }
    let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if schema_version(&txn)? == 0 {
        txn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (
                pk TEXT NOT NULL,
                sk TEXT NOT NULL,
                attrs TEXT NOT NULL,
                expires_at INTEGER,
                PRIMARY KEY (pk, sk)
            ) WITHOUT ROWID;",
        )?;
        txn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    txn.commit()
}

/// Why a unit of work failed: a store answer, or SQLite (mapped once the path is at hand).
enum Failure {
    Store(StoreError),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// The columns every read selects, in this order, for [`row_item`].
const COLUMNS: &str = "pk, sk, attrs, expires_at";

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let key = key.clone();
        self.run(move |conn| {
            let item = conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"),
                    params![key.pk, key.sk],
                    row_item,
                )
                .optional()?
                .transpose()?;
            Ok(item.filter(|item| item.is_live(now())))
        })
        .await
    }

    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        check_put(item, &condition)?;
        let attrs =
            serde_json::to_string(&item.attrs).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let item = item.clone();
        self.run(move |conn| {
            let write = |conn: &Connection| {
                conn.execute(
                    "INSERT OR REPLACE INTO items (pk, sk, attrs, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![item.key.pk, item.key.sk, attrs, item.expires_at],
                )
            };
            if condition == Condition::Always {
                // One statement is atomic by itself.
                write(conn)?;
                return Ok(());
            }
            // IMMEDIATE takes the write lock before the read, so the check still holds when the
            // write lands; dropping the transaction without commit rolls it back.
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = txn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"),
                    params![item.key.pk, item.key.sk],
                    row_item,
                )
                .optional()?
                .transpose()?
                .filter(|item| item.is_live(now()));
            if !holds(&condition, current.as_ref()) {
                return Err(StoreError::ConditionFailed.into());
            }
            write(&txn)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        check_update(key, set, &condition)?;
        let key = key.clone();
        let set = set.clone();
        self.run(move |conn| {
            // As a conditional put: the write lock is taken before the read, so the merge is
            // made on what is stored when it lands, and no other writer's change is lost.
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = txn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"),
                    params![key.pk, key.sk],
                    row_item,
                )
                .optional()?
                .transpose()?
                .filter(|item| item.is_live(now()));
            let Some(mut item) = current.filter(|item| holds(&condition, Some(item))) else {
                return Err(StoreError::ConditionFailed.into());
            };
            item.attrs.extend(set);
            let attrs = serde_json::to_string(&item.attrs)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            // Only the attributes change: the expiry stays as stored.
            txn.execute(
                "UPDATE items SET attrs = ?3 WHERE pk = ?1 AND sk = ?2",
                params![key.pk, key.sk, attrs],
            )?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let key = key.clone();
        self.run(move |conn| {
            // One statement, so one write lock: of concurrent takers, in any process, only the
            // first finds the row. An expired item is removed too, but returned to no one.
            let removed = conn
                .query_row(
                    &format!("DELETE FROM items WHERE pk = ?1 AND sk = ?2 RETURNING {COLUMNS}"),
                    params![key.pk, key.sk],
                    row_item,
                )
                .optional()?
                .transpose()?;
            Ok(removed.filter(|item| item.is_live(now())))
        })
        .await
    }

    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        check_pk(pk)?;
        let pk = pk.to_owned();
        self.run(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM items
                 WHERE pk = ?1 AND (expires_at IS NULL OR expires_at > ?2)
                 ORDER BY sk"
            ))?;
            let rows = statement.query_map(params![pk, now()], row_item)?;
            let mut items = Vec::new();
            for row in rows {
                items.push(row??);
            }
            Ok(items)
        })
        .await
    }

    /// A read of the items whose JSON attributes name the index partition (the file is small
    /// and local: no SQL index is kept), ordered by the index sort key with SQLite's BINARY
    /// collation, as DynamoDB orders it.
    async fn query_index(
        &self,
        index: &Index,
        pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        check_index_query(index, pk, after, limit)?;
        let (pk, after) = (pk.to_owned(), after.map(str::to_owned));
        let (pk_path, sk_path) = (format!("$.{}", index.pk), format!("$.{}", index.sk));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM items
                 WHERE json_extract(attrs, ?1) = ?3
                   AND json_type(attrs, ?2) = 'text'
                   AND (?4 IS NULL OR json_extract(attrs, ?2) > ?4)
                   AND (expires_at IS NULL OR expires_at > ?5)
                 ORDER BY json_extract(attrs, ?2), pk, sk
                 LIMIT ?6"
            ))?;
            let rows = statement
                .query_map(params![pk_path, sk_path, pk, after, now(), limit], row_item)?;
            let mut items = Vec::new();
            for row in rows {
                items.push(row??);
            }
            Ok(items)
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        check_pk(prefix)?;
        let prefix = prefix.to_owned();
        self.run(move |conn| {
            // substr rather than LIKE: `_` and `%` may be part of a key.
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM items
                 WHERE substr(pk, 1, length(?1)) = ?1
                   AND (expires_at IS NULL OR expires_at > ?2)
                 ORDER BY pk, sk"
            ))?;
            let rows = statement.query_map(params![prefix, now()], row_item)?;
            let mut items = Vec::new();
            for row in rows {
                items.push(row??);
            }
            Ok(items)
        })
        .await
    }

    /// One `BEGIN IMMEDIATE` transaction: the write lock is taken first, every condition is
    /// read and checked, and only if all hold are the writes made and committed. Dropping the
    /// transaction without commit rolls it back, so a failure at any point writes nothing.
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        check_transact(writes)?;
        let writes = writes.to_vec();
        self.run(move |conn| {
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut current = Vec::with_capacity(writes.len());
            let mut failed = Vec::new();
            for (i, write) in writes.iter().enumerate() {
                let item = live_at(&txn, write.key())?;
                let condition = match write {
                    // An update needs a live item even when it is unconditional.
                    Write::Update {
                        condition: Condition::Always,
                        ..
                    } => &Condition::Exists,
                    other => other.condition(),
                };
                if !holds(condition, item.as_ref()) {
                    failed.push(i);
                }
                current.push(item);
            }
            if !failed.is_empty() {
                return Err(StoreError::Cancelled(failed).into());
            }
            for (write, item) in writes.iter().zip(current) {
                match write {
                    Write::Put(new, _) => {
                        txn.execute(
                            "INSERT OR REPLACE INTO items (pk, sk, attrs, expires_at)
                             VALUES (?1, ?2, ?3, ?4)",
                            params![
                                new.key.pk,
                                new.key.sk,
                                attrs_text(&new.attrs)?,
                                new.expires_at
                            ],
                        )?;
                    }
                    Write::Update { key, set, .. } => {
                        let mut attrs = item.map(|item| item.attrs).unwrap_or_default();
                        attrs.extend(set.clone());
                        txn.execute(
                            "UPDATE items SET attrs = ?3 WHERE pk = ?1 AND sk = ?2",
                            params![key.pk, key.sk, attrs_text(&attrs)?],
                        )?;
                    }
                    Write::Delete(key, _) => {
                        txn.execute(
                            "DELETE FROM items WHERE pk = ?1 AND sk = ?2",
                            params![key.pk, key.sk],
                        )?;
                    }
                    Write::Check(..) => {}
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// The live item at `key` as this connection (or its open transaction) sees it.
fn live_at(conn: &Connection, key: &Key) -> Result<Option<Item>, Failure> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM items WHERE pk = ?1 AND sk = ?2"),
            params![key.pk, key.sk],
            row_item,
        )
        .optional()?
        .transpose()?
        .filter(|item| item.is_live(now())))
}

fn attrs_text(attrs: &Map<String, Value>) -> Result<String, Failure> {
    serde_json::to_string(attrs).map_err(|e| StoreError::Invalid(e.to_string()).into())
}

/// The item in a row of [`COLUMNS`]; the outer error is SQLite's, the inner one a stored value
/// that is not the JSON object it should be.
fn row_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Item, StoreError>> {
    let key = Key::new(row.get::<_, String>(0)?, row.get::<_, String>(1)?);
    let attrs: String = row.get(2)?;
    let expires_at: Option<i64> = row.get(3)?;
    Ok(serde_json::from_str::<Map<String, Value>>(&attrs)
        .map(|attrs| Item {
            key,
            attrs,
            expires_at,
        })
        .map_err(|e| StoreError::Unavailable(format!("a stored item cannot be read: {e}"))))
}

/// A SQLite failure as the store reports it. The file being locked past the busy timeout is a
/// failure like any other of the backend: worth retrying later.
fn unavailable(path: &Path, error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!(
                "embedded store {}: still locked by another connection after waiting: {error}",
                path.display()
            ))
        }
        Some(ErrorCode::TooBig) => {
            StoreError::Invalid(format!("embedded store: the item is too big: {error}"))
        }
        _ => StoreError::Unavailable(format!("embedded store {}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(sk: &str) -> Item {
        let Value::Object(attrs) = json!({"v": sk}) else {
            unreachable!()
        };
        Item::new(Key::new("p", sk), attrs)
    }

    /// Another connection holding the write lock past the timeout makes writes fail as
    /// `Unavailable`, while opening and reading go on (WAL); once it lets go, writes succeed.
    #[tokio::test]
    async fn locked_past_the_timeout_is_unavailable() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.sqlite3");
        let store =
            EmbeddedStore::open_with_timeout(&path, Duration::from_millis(100)).expect("open");
        store
            .put(&item("before"), Condition::Always)
            .await
            .expect("put");

        let mut other = Connection::open(&path).expect("second connection");
        let txn = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("hold the write lock");
        // Opening needs no write lock once the file is set up.
        let second = EmbeddedStore::open_with_timeout(&path, Duration::from_millis(100))
            .expect("open under lock");
        assert_eq!(
            second
                .get(&item("before").key)
                .await
                .expect("read under lock"),
            Some(item("before"))
        );
        for condition in [Condition::Always, Condition::Absent] {
            let result = store.put(&item("during"), condition).await;
            assert!(
                matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("locked")),
                "expected Unavailable, got {result:?}"
            );
        }
        let result = store.take(&item("before").key).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(
            store
                .get(&item("before").key)
                .await
                .expect("read under lock"),
            Some(item("before"))
        );
        assert_eq!(store.query("p").await.expect("query under lock").len(), 1);

        txn.rollback().expect("release");
        store
            .put(&item("after"), Condition::Absent)
            .await
            .expect("put after release");
    }

    /// A file of a later layout is refused rather than misread.
    #[test]
    fn newer_layout_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.sqlite3");
        drop(EmbeddedStore::open(&path).expect("open"));
        Connection::open(&path)
            .and_then(|conn| conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1))
            .expect("bump version");
        let result = EmbeddedStore::open(&path);
        assert!(
            matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("version")),
            "expected Unavailable"
        );
    }

    /// A file that is not SQLite (e.g. the redb file of earlier versions) is an error, not
    /// overwritten.
    #[test]
    fn foreign_file_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.sqlite3");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        assert!(matches!(
            EmbeddedStore::open(&path),
            Err(StoreError::Unavailable(_))
        ));
        assert_eq!(std::fs::read(&path).expect("read"), vec![0x5a; 8192]);
    }
}
