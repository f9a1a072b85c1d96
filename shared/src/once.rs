//! Doing a thing once, whatever fails in between.
//!
//! A write whose answer is lost may have happened: DynamoDB (like any remote store) can apply a
//! write and then fail to tell us, and a request can be cut off by its deadline after the write
//! landed. So "done once" cannot be a mark written first and an effect written second — a retry
//! after the first write would find the mark and skip the effect for ever. Every path that must
//! act once uses one of three tools, each for one shape of work:
//!
//! - [`apply`]: a **mark and its effect in one atomic write** ([`Store::transact`]). A webhook
//!   delivery's mark and the install it removes or updates commit together or not at all, so a
//!   retry after any failure finds both (a duplicate: nothing to do) or neither (do it now).
//!   When the effect's own condition fails, the caller decides what that means: an uninstall
//!   whose install is gone already holds, and is recorded with [`mark_alone`] and answered as
//!   done; an update for a tenant we do not know is refused and stores nothing.
//! - [`Claim`]: work that must **call a platform between deciding and storing** (a code
//!   exchange). The claim is a short-lived item that keeps concurrent callers off the same code;
//!   the result is stored in one transaction with [`Claim::commit`], which turns the claim into
//!   the long-lived mark. A failure before the commit releases the claim.
//! - [`Lease`]: **one worker at a time across containers** for work whose result everyone
//!   shares (a token refresh): others wait ([`Patience`]) and read what the holder stored.
//!
//! How long each kind of item is kept (the one table of mark lifetimes):
//!
//! | item | pk | lifetime | why |
//! |---|---|---|---|
//! | delivery mark | `webhook#<platform>` | [`DELIVERY_MARK_SECONDS`] (7 days) | longer than any platform retries a delivery |
//! | code mark | `code#<platform>` | [`CODE_MARK_SECONDS`] (7 days) | longer than any code stays valid |
//! | code claim | `code#<platform>` | [`CLAIM_SECONDS`] (2 minutes) | longer than a request may run, so a live request's claim never lapses |
//! | lease | `lease#…` | [`LEASE_SECONDS`] (30 s) | longer than one platform call; a dead holder's lease frees itself |

use crate::store::{Condition, Item, Key, Store, StoreError, Write, now};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// How long a processed webhook delivery is remembered.
pub const DELIVERY_MARK_SECONDS: i64 = 7 * 24 * 3600;
/// How long a spent authorization code is remembered.
pub const CODE_MARK_SECONDS: i64 = 7 * 24 * 3600;
/// How long a claim holds before it lapses by itself (its holder died).
pub const CLAIM_SECONDS: i64 = 120;
/// How long a lease holds before it lapses by itself (its holder died).
pub const LEASE_SECONDS: i64 = 30;

/// The mark of a webhook delivery of `platform`, identified by `id` (a signature or a hash of
/// the signed bytes).
pub fn delivery_mark(platform: &str, id: &str) -> Item {
    // The delivery's own id is its partition: a platform re-sending a day of deliveries for
    // every tenant spreads over as many partitions as deliveries.
    Item::new(Key::single(&format!("webhook#{platform}"), id), Map::new())
        .expiring_at(now() + DELIVERY_MARK_SECONDS)
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The mark and the effect were written, together.
    Done,
    /// The mark was there already: done before, nothing written now.
    Duplicate,
    /// The mark was not there, but the effect's writes at these indices (into the effect) found
    /// their conditions false; nothing was written.
    Refused(Vec<usize>),
}

/// Writes `mark` (on the condition that it is absent) and `effect`, all or nothing.
pub async fn apply(
    store: &dyn Store,
    mark: &Item,
    effect: &[Write],
) -> Result<Applied, StoreError> {
    let mut writes = Vec::with_capacity(effect.len() + 1);
    writes.push(Write::Put(mark.clone(), Condition::Absent));
    writes.extend_from_slice(effect);
    match store.transact(&writes).await {
        Ok(()) => Ok(Applied::Done),
        Err(StoreError::Cancelled(failed)) if failed.first() == Some(&0) => Ok(Applied::Duplicate),
        Err(StoreError::Cancelled(failed)) => Ok(Applied::Refused(
            failed.into_iter().map(|i| i - 1).collect(),
        )),
        Err(e) => Err(e),
    }
}

/// Writes `mark` alone, for a delivery with nothing to do (its effect holds already, or its
/// topic is not handled): `true` if this call wrote it, `false` if it was there (a duplicate).
pub async fn mark_alone(store: &dyn Store, mark: &Item) -> Result<bool, StoreError> {
    match store.put(mark, Condition::Absent).await {
        Ok(()) => Ok(true),
        Err(StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A short-lived hold on a key (a code about to be exchanged) that becomes its long-lived mark
/// in the transaction that stores the result, or is released if the work fails.
#[derive(Debug)]
pub struct Claim {
    key: Key,
    id: String,
    mark_seconds: i64,
}

impl Claim {
    /// Claims `key` for [`CLAIM_SECONDS`]; `None` if it is claimed or marked already. The mark
    /// it becomes lives `mark_seconds`.
    pub async fn take(
        store: &dyn Store,
        key: Key,
        mark_seconds: i64,
    ) -> Result<Option<Claim>, StoreError> {
        Ok(hold(store, &key, "claim", CLAIM_SECONDS)
            .await?
            .map(|id| Claim {
                key,
                id,
                mark_seconds,
            }))
    }

    /// The write that turns this claim into the mark, for the transaction that stores the
    /// work's result: it holds only while the claim is still this one's.
    pub fn commit(&self) -> Write {
        let mut attrs = Map::new();
        attrs.insert("spent".into(), Value::String(self.id.clone()));
        Write::Put(
            Item::new(self.key.clone(), attrs).expiring_at(now() + self.mark_seconds),
            Condition::AttrEquals("claim".into(), Value::String(self.id.clone())),
        )
    }

    /// Removes the claim if it is still this one's (never a mark it became, nor another
    /// caller's claim). Best effort: a claim left behind lapses after [`CLAIM_SECONDS`].
    pub async fn release(&self, store: &dyn Store) {
        let_go(store, &self.key, "claim", &self.id).await;
    }
}

/// One holder at a time of some shared work, across containers, for [`LEASE_SECONDS`].
#[derive(Debug)]
pub struct Lease {
    key: Key,
    holder: String,
}

impl Lease {
    /// Takes the lease at `key` if no one holds it; `None` if someone does.
    pub async fn try_take(store: &dyn Store, key: Key) -> Result<Option<Lease>, StoreError> {
        Ok(hold(store, &key, "holder", LEASE_SECONDS)
            .await?
            .map(|holder| Lease { key, holder }))
    }

    /// Gives the lease back, if it is still this holder's: a lease that lapsed and was taken by
    /// another is left to its new holder. Best effort: a lease left behind lapses by itself.
    pub async fn release(self, store: &dyn Store) {
        let_go(store, &self.key, "holder", &self.holder).await;
    }
}

/// Creates the item at `key`, naming a new random holder in attribute `attr`, for `seconds`,
/// if no live item is there: the holder's id, or `None` when another holds it (or its mark is
/// there).
async fn hold(
    store: &dyn Store,
    key: &Key,
    attr: &str,
    seconds: i64,
) -> Result<Option<String>, StoreError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut attrs = Map::new();
    attrs.insert(attr.into(), Value::String(id.clone()));
    let item = Item::new(key.clone(), attrs).expiring_at(now() + seconds);
    match store.put(&item, Condition::Absent).await {
        Ok(()) => Ok(Some(id)),
        Err(StoreError::ConditionFailed) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the item at `key` if its attribute `attr` still names `id`. Best effort: an item
/// left behind lapses by itself.
async fn let_go(store: &dyn Store, key: &Key, attr: &str, id: &str) {
    let write = Write::Delete(
        key.clone(),
        Condition::AttrEquals(attr.into(), Value::String(id.to_owned())),
    );
    if let Err(e) = store.transact(&[write]).await
        && !matches!(e, StoreError::Cancelled(_))
    {
        tracing::warn!(error = %e, attr, "could not be released; it lapses by itself");
    }
}

/// How long a caller waits for another's lease, polling.
#[derive(Debug)]
pub struct Patience {
    until: Instant,
    poll: Duration,
}

impl Patience {
    /// Waiting at most `wait` in all, `poll` at a time.
    pub fn new(wait: Duration, poll: Duration) -> Self {
        Self {
            until: Instant::now() + wait,
            poll,
        }
    }

    /// Waits one poll; `false` (at once) when the patience is used up.
    pub async fn wait(&self) -> bool {
        if Instant::now() >= self.until {
            return false;
        }
        tokio::time::sleep(self.poll).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path().join("store.sqlite3")).expect("open");
        (dir, store)
    }

    fn install(sk: &str) -> Item {
        let Value::Object(attrs) = json!({"shop": "s"}) else {
            unreachable!()
        };
        Item::new(Key::new("install#t", sk), attrs)
    }

    #[tokio::test]
    async fn apply_writes_mark_and_effect_together() {
        let (_dir, store) = store();
        let mark = delivery_mark("t", "d1");
        let effect = [Write::Delete(install("a").key, Condition::Exists)];
        assert_eq!(
            apply(&store, &mark, &effect).await.expect("apply"),
            Applied::Refused(vec![0]),
            "no install: refused"
        );
        assert_eq!(store.get(&mark.key).await.expect("get"), None, "no mark");
        store
            .put(&install("a"), Condition::Always)
            .await
            .expect("put");
        assert_eq!(
            apply(&store, &mark, &effect).await.expect("apply"),
            Applied::Done
        );
        assert!(store.get(&mark.key).await.expect("get").is_some());
        assert_eq!(store.get(&install("a").key).await.expect("get"), None);
        store
            .put(&install("a"), Condition::Always)
            .await
            .expect("put");
        assert_eq!(
            apply(&store, &mark, &effect).await.expect("apply"),
            Applied::Duplicate
        );
        assert!(
            store.get(&install("a").key).await.expect("get").is_some(),
            "a duplicate does nothing"
        );
        assert!(!mark_alone(&store, &mark).await.expect("mark"));
        assert!(
            mark_alone(&store, &delivery_mark("t", "d2"))
                .await
                .expect("mark")
        );
    }

    #[test]
    fn delivery_marks_live_seven_days() {
        let mark = delivery_mark("t", "x");
        let left = mark.expires_at.expect("expires") - now();
        assert!((DELIVERY_MARK_SECONDS - 5..=DELIVERY_MARK_SECONDS).contains(&left));
        assert_eq!(DELIVERY_MARK_SECONDS, 604_800);
        assert_eq!(CODE_MARK_SECONDS, 604_800);
    }

    #[tokio::test]
    async fn a_claim_becomes_its_mark_or_is_released() {
        let (_dir, store) = store();
        let key = Key::new("code#t", "c1");
        let claim = Claim::take(&store, key.clone(), CODE_MARK_SECONDS)
            .await
            .expect("take")
            .expect("free");
        let held = store.get(&key).await.expect("get").expect("claimed");
        let left = held.expires_at.expect("expires") - now();
        assert!(left <= CLAIM_SECONDS && left > CLAIM_SECONDS - 5, "{left}");
        assert!(
            Claim::take(&store, key.clone(), CODE_MARK_SECONDS)
                .await
                .expect("take")
                .is_none(),
            "one claim at a time"
        );
        store
            .transact(&[claim.commit(), Write::Put(install("a"), Condition::Always)])
            .await
            .expect("commit");
        let mark = store.get(&key).await.expect("get").expect("marked");
        let left = mark.expires_at.expect("expires") - now();
        assert!(left > CODE_MARK_SECONDS - 5, "the mark lives long: {left}");
        claim.release(&store).await;
        assert!(
            store.get(&key).await.expect("get").is_some(),
            "releasing after the commit leaves the mark"
        );

        let other = Key::new("code#t", "c2");
        let claim = Claim::take(&store, other.clone(), CODE_MARK_SECONDS)
            .await
            .expect("take")
            .expect("free");
        claim.release(&store).await;
        assert_eq!(store.get(&other).await.expect("get"), None, "released");
        assert!(
            Claim::take(&store, other, CODE_MARK_SECONDS)
                .await
                .expect("take")
                .is_some(),
            "free again"
        );
    }

    #[tokio::test]
    async fn a_lease_is_released_only_by_its_holder() {
        let (_dir, store) = store();
        let key = Key::new("lease#t", "x");
        let first = Lease::try_take(&store, key.clone())
            .await
            .expect("take")
            .expect("free");
        assert!(
            Lease::try_take(&store, key.clone())
                .await
                .expect("take")
                .is_none()
        );
        // The first holder's lease lapses and another takes it.
        store.take(&key).await.expect("lapse");
        let second = Lease::try_take(&store, key.clone())
            .await
            .expect("take")
            .expect("free");
        first.release(&store).await;
        assert!(
            store.get(&key).await.expect("get").is_some(),
            "the first holder leaves the second's lease alone"
        );
        second.release(&store).await;
        assert_eq!(store.get(&key).await.expect("get"), None);
    }

    #[tokio::test]
    async fn patience_runs_out() {
        let patience = Patience::new(Duration::from_millis(30), Duration::from_millis(10));
        let started = Instant::now();
        let mut polls = 0;
        while patience.wait().await {
            polls += 1;
            assert!(polls < 100, "bounded");
        }
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!((2..=5).contains(&polls), "{polls}");
    }
}
