//! The one in-memory cache of a container: keyed, each entry with its own lifetime, one fetch
//! per key at a time, and no lock held while a fetch runs.
//!
//! A key's slot is an `Arc` of a [`tokio::sync::OnceCell`]; the map of slots is behind a std
//! mutex held only to find, add or replace a slot, never across an await. Callers that miss the
//! same key wait on that key's cell for the one fetch (single flight); callers of other keys
//! never wait for it, however slow it is. A fetch whose caller is cancelled (its deadline passed)
//! leaves the cell empty, and the next waiter fetches in its place.
//!
//! What a fetch gives is cached for the lifetime it names ([`Fetched::value`]). A failure is
//! shared with the callers already waiting on that fetch but not kept (the next caller fetches
//! again), unless the fetch says for how long to keep it ([`Fetched::failed_for`]: a rate limit
//! against a failing upstream). When an entry has expired, the next fetch is handed the last
//! good value, so a caller can choose to keep serving it while the upstream fails.
//!
//! Entries are dropped only when replaced or forgotten, so keys must come from a bounded set
//! (configured portals, products, platforms), never freely from a request.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one fetch came to, and how long to keep it.
pub struct Fetched<V, E> {
    result: Result<V, E>,
    ttl: Duration,
}

impl<V, E> Fetched<V, E> {
    /// A value, served from the cache for `ttl` (zero: only to the callers of this fetch).
    pub fn value(value: V, ttl: Duration) -> Self {
        Self {
            result: Ok(value),
            ttl,
        }
    }

    /// A failure: given to the callers waiting on this fetch, not kept.
    pub fn failed(error: E) -> Self {
        Self::failed_for(error, Duration::ZERO)
    }

    /// A failure kept for `ttl`: until then callers get it without a fetch.
    pub fn failed_for(error: E, ttl: Duration) -> Self {
        Self {
            result: Err(error),
            ttl,
        }
    }
}

/// Whether a [`Cache::get_with_origin`] caller ran the fetch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the cache, or from a fetch another caller ran.
    Cached,
    /// From this caller's own fetch.
    Fetched,
}

struct Entry<V, E> {
    result: Result<V, E>,
    until: Instant,
}

/// One generation of a key: its (one) fetch, and the last good value before it.
struct Slot<V, E> {
    cell: tokio::sync::OnceCell<Entry<V, E>>,
    stale: Option<V>,
}

impl<V, E> Slot<V, E> {
    fn new(stale: Option<V>) -> Arc<Self> {
        Arc::new(Self {
            cell: tokio::sync::OnceCell::new(),
            stale,
        })
    }
}

/// A keyed cache with single-flight fetches; see the module documentation.
pub struct Cache<K, V, E> {
    slots: Mutex<HashMap<K, Arc<Slot<V, E>>>>,
}

impl<K, V, E> Default for Cache<K, V, E> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V, E> Cache<K, V, E>
where
    K: Eq + Hash + Clone,
    V: Clone,
    E: Clone,
{
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `key`'s value: cached, or from the fetch another caller is running, or from `fetch`,
    /// which is given the key's last good value if it has expired (else `None`).
    pub async fn get<F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = Fetched<V, E>>,
    {
        self.get_with_origin(key, fetch).await.0
    }

    /// As [`Cache::get`], saying whether this caller's `fetch` is what answered.
    pub async fn get_with_origin<F, Fut>(&self, key: &K, fetch: F) -> (Result<V, E>, Origin)
    where
        F: FnOnce(Option<V>) -> Fut,
        Fut: Future<Output = Fetched<V, E>>,
    {
        let mut fetch = Some(fetch);
        loop {
            let slot = self.slot(key);
            if let Some(entry) = slot.cell.get() {
                if Instant::now() < entry.until {
                    return (entry.result.clone(), Origin::Cached);
                }
                // Expired: the first caller to see it starts a new generation; the others find
                // that one on their next turn.
                self.renew(key, &slot);
                continue;
            }
            let mut ran = false;
            let entry = slot
                .cell
                .get_or_init(|| {
                    ran = true;
                    let fetch = fetch.take();
                    let stale = slot.stale.clone();
                    async move {
                        let Some(fetch) = fetch else {
                            unreachable!("a caller initialises a cell at most once")
                        };
                        // Boxed: the fetch's future is often deep (a platform call in a flow
                        // in a handler), and a box keeps this one's size and type shallow.
                        let Fetched { result, ttl } = Box::pin(fetch(stale)).await;
                        let now = Instant::now();
                        Entry {
                            result,
                            until: now.checked_add(ttl).unwrap_or(now),
                        }
                    }
                })
                .await;
            // Whoever waited on this fetch gets its outcome, even one not kept (ttl zero).
            let origin = if ran { Origin::Fetched } else { Origin::Cached };
            return (entry.result.clone(), origin);
        }
    }

    /// Stores `value` for `key` for `ttl`, as if fetched (for a refetch made outside
    /// [`Cache::get`]).
    pub fn put(&self, key: K, value: V, ttl: Duration) {
        let slot = Slot::new(None);
        let now = Instant::now();
        let entry = Entry {
            result: Ok(value),
            until: now.checked_add(ttl).unwrap_or(now),
        };
        if slot.cell.set(entry).is_ok() {
            relock(&self.slots).insert(key, slot);
        }
    }

    /// Forgets `key`: the next caller fetches (without a last good value).
    pub fn forget(&self, key: &K) {
        relock(&self.slots).remove(key);
    }

    /// Forgets every key.
    pub fn clear(&self) {
        relock(&self.slots).clear();
    }

    fn slot(&self, key: &K) -> Arc<Slot<V, E>> {
        relock(&self.slots)
            .entry(key.clone())
            .or_insert_with(|| Slot::new(None))
            .clone()
    }

    /// Replaces `old`, expired, by a new generation carrying the last good value, unless another
    /// caller has replaced it already.
    fn renew(&self, key: &K, old: &Arc<Slot<V, E>>) {
        let mut slots = relock(&self.slots);
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, old)) {
            let stale = match old.cell.get() {
                Some(Entry { result: Ok(v), .. }) => Some(v.clone()),
                _ => old.stale.clone(),
            };
            slots.insert(key.clone(), Slot::new(stale));
        }
    }
}

/// The map's guard even if a panicking holder poisoned it: it is consistent at every step.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::sleep;

    type C = Cache<&'static str, u32, String>;
    const LONG: Duration = Duration::from_secs(60);

    type Fetch<'a> = std::pin::Pin<Box<dyn Future<Output = Fetched<u32, String>> + Send + 'a>>;

    /// A fetch that counts its calls, takes `delay`, and gives `value` for a minute.
    fn counting<'a>(
        calls: &'a AtomicUsize,
        delay: Duration,
        value: u32,
    ) -> impl FnOnce(Option<u32>) -> Fetch<'a> {
        move |_| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                sleep(delay).await;
                Fetched::value(value, LONG)
            })
        }
    }

    /// A slow fetch of one key holds up no other key (the map's lock is not held across it).
    #[tokio::test]
    async fn a_slow_fetch_of_one_key_does_not_delay_another() {
        let cache = Arc::new(C::new());
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let calls = AtomicUsize::new(0);
                cache
                    .get(&"a", counting(&calls, Duration::from_secs(2), 1))
                    .await
            })
        };
        sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let calls = AtomicUsize::new(0);
        let b = tokio::time::timeout(
            Duration::from_millis(500),
            cache.get(&"b", counting(&calls, Duration::ZERO, 2)),
        )
        .await
        .expect("key b is served while key a is still being fetched");
        assert_eq!(b, Ok(2));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(!slow.is_finished(), "a's fetch is still running");
        // And a is cached once its fetch is done.
        assert_eq!(slow.await.unwrap(), Ok(1));
        let again = AtomicUsize::new(0);
        assert_eq!(
            cache.get(&"a", counting(&again, Duration::ZERO, 9)).await,
            Ok(1)
        );
        assert_eq!(again.load(Ordering::SeqCst), 0);
    }

    /// Concurrent misses of one key make one fetch, and all get its value.
    #[tokio::test]
    async fn concurrent_misses_of_one_key_make_one_fetch() {
        let cache = C::new();
        let calls = AtomicUsize::new(0);
        let gets = (0..10)
            .map(|_| cache.get_with_origin(&"k", counting(&calls, Duration::from_millis(50), 7)));
        let got = futures_join_all(gets).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|(r, _)| *r == Ok(7)));
        let fetched = got.iter().filter(|(_, o)| *o == Origin::Fetched).count();
        assert_eq!(fetched, 1, "exactly one caller ran the fetch");
    }

    /// An entry is served for its lifetime, then fetched again, and that fetch is handed the
    /// last good value.
    #[tokio::test]
    async fn an_expired_entry_is_refetched_with_the_last_value() {
        let cache = C::new();
        let calls = AtomicUsize::new(0);
        let short = |value: u32| {
            let calls = &calls;
            move |stale: Option<u32>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Fetched::value(value + stale.unwrap_or(0), Duration::from_millis(100))
            }
        };
        assert_eq!(cache.get(&"k", short(1)).await, Ok(1));
        assert_eq!(cache.get(&"k", short(10)).await, Ok(1), "still fresh");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        sleep(Duration::from_millis(150)).await;
        assert_eq!(
            cache.get(&"k", short(10)).await,
            Ok(11),
            "refetched, given 1"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A forgotten key has no last value.
        cache.forget(&"k");
        assert_eq!(cache.get(&"k", short(5)).await, Ok(5));
    }

    /// A failure reaches the callers waiting on that fetch, and is not kept: the next caller
    /// fetches again.
    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let cache = C::new();
        let calls = AtomicUsize::new(0);
        let failing = || {
            let calls = &calls;
            move |_| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(50)).await;
                Fetched::failed("down".to_owned())
            }
        };
        let (a, b) = tokio::join!(cache.get(&"k", failing()), cache.get(&"k", failing()));
        assert_eq!((a, b), (Err("down".into()), Err("down".into())));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "waiters share the failure");
        let calls_ok = AtomicUsize::new(0);
        assert_eq!(
            cache
                .get(&"k", counting(&calls_ok, Duration::ZERO, 3))
                .await,
            Ok(3)
        );
        assert_eq!(
            calls_ok.load(Ordering::SeqCst),
            1,
            "the next caller fetched"
        );
    }

    /// A failure the fetch asks to keep is served without a fetch until it expires.
    #[tokio::test]
    async fn a_failure_kept_on_purpose_expires() {
        let cache = C::new();
        let calls = AtomicUsize::new(0);
        let failing = || {
            let calls = &calls;
            move |_| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Fetched::failed_for("down".to_owned(), Duration::from_millis(100))
            }
        };
        for _ in 0..5 {
            assert!(cache.get(&"k", failing()).await.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&"k", failing()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A caller cancelled mid-fetch (its deadline) does not leave the key stuck: the next caller
    /// fetches.
    #[tokio::test]
    async fn a_cancelled_fetch_lets_the_next_caller_fetch() {
        let cache = C::new();
        let calls = AtomicUsize::new(0);
        let cut = tokio::time::timeout(
            Duration::from_millis(20),
            cache.get(&"k", counting(&calls, Duration::from_secs(5), 1)),
        )
        .await;
        assert!(cut.is_err());
        let calls2 = AtomicUsize::new(0);
        assert_eq!(
            cache.get(&"k", counting(&calls2, Duration::ZERO, 2)).await,
            Ok(2)
        );
    }

    /// `put` stores as a fetch would.
    #[tokio::test]
    async fn put_values_are_served() {
        let cache = C::new();
        cache.put("k", 4, LONG);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            cache.get(&"k", counting(&calls, Duration::ZERO, 9)).await,
            Ok(4)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        cache.clear();
        assert_eq!(
            cache.get(&"k", counting(&calls, Duration::ZERO, 9)).await,
            Ok(9)
        );
    }

    /// Polls all of `futs` concurrently on this task (no `futures` dependency).
    async fn futures_join_all<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut set = Vec::new();
        for f in futs {
            set.push(Box::pin(f));
        }
        let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in set.iter_mut().zip(out.iter_mut()) {
                if o.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *o = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.into_iter().map(Option::unwrap).collect()
    }
}
