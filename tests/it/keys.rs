//! Keys that scale with tenants: every store write of every event of every function, recorded
//! through a wrapped store, and no partition key written for two items of a kind unless it is a
//! partition that is listed on purpose and carries its tenant (README, "Storage").
//!
//! DynamoDB serves about 1,000 writes/s and 3,000 reads/s per partition key. A partition key
//! shared by all tenants of a kind (`install#haravan` for every org) caps the whole kind at that
//! rate; a key per item (or per tenant, for what is listed) lets throughput grow with tenants.
//! The check: the same partition key written with two different sort keys is a partition
//! holding more than one item, allowed only for the listed partitions below.

use crate::events::{EventBench, scenarios};
use gatehouse::config::Config;
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, EmbeddedStore, Item, Key, Store, StoreError, Write};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Partitions that hold several items on purpose, each the items of one tenant (or one of a
/// fixed number of shards) and read with one Query.
const LISTED: [&str; 5] = [
    // An app user's Saison connections (one per member and cardholder), and their leases.
    "conn#saison#",
    "lease#conn#saison#",
    // A Haravan org's sessions (logout ends them all).
    "session#haravan#",
    // The sessions of one Haravan `sid` (back-channel logout), at most a few.
    "sid#haravan#",
    // MoMo's pending-payment index, sharded over a fixed number of partitions.
    "pending#momo#",
];

/// Index partitions that hold several items on purpose: one platform's connections over a
/// fixed number of shards (`conns#<platform>#<00..15>`), and one app user's connections of a
/// platform (`user#<platform>#<end user>`).
const LISTED_INDEX: [&str; 2] = ["conns#", "user#"];

/// A store that records the key of every write (put, update, take, and each write of a
/// transaction) before passing it on, and the index partition keys each write gives its item.
struct Recorder {
    inner: Arc<dyn Store>,
    written: Arc<Mutex<Vec<Key>>>,
}

/// Every (index partition, item key) written, across the scenarios.
static INDEXED: Mutex<Vec<(String, Key)>> = Mutex::new(Vec::new());

impl Recorder {
    fn note(&self, key: &Key) {
        self.written.lock().unwrap().push(key.clone());
    }

    fn note_attrs(&self, key: &Key, attrs: &Map<String, Value>) {
        for index in gatehouse::store::INDEXES {
            if let Some(Value::String(ipk)) = attrs.get(index.pk) {
                INDEXED
                    .lock()
                    .unwrap()
                    .push((format!("{}:{ipk}", index.name), key.clone()));
            }
        }
    }

    fn note_write(&self, w: &Write) {
        self.note(w.key());
        match w {
            Write::Put(item, _) => self.note_attrs(&item.key, &item.attrs),
            Write::Update { key, set, .. } => self.note_attrs(key, set),
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl Store for Recorder {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        self.note(&item.key);
        self.note_attrs(&item.key, &item.attrs);
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.note(key);
        self.note_attrs(key, set);
        self.inner.update(key, set, condition).await
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.note(key);
        self.inner.take(key).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(pk).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        for w in writes {
            self.note_write(w);
        }
        self.inner.transact(writes).await
    }
    async fn query_index(
        &self,
        index: &gatehouse::store::Index,
        pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.inner.query_index(index, pk, after, limit).await
    }
}

/// The kind of a partition key: its first two parts (`install#haravan#1000` → `install#haravan`).
fn kind(pk: &str) -> String {
    pk.splitn(3, '#').take(2).collect::<Vec<_>>().join("#")
}

#[tokio::test]
async fn no_partition_key_is_shared_by_the_tenants_of_a_kind() {
    let written = Arc::new(Mutex::new(Vec::new()));
    for (name, run) in scenarios() {
        let w = written.clone();
        let bench = EventBench::with_apps(async move |vars| {
            let config = Config::from_vars(&vars).unwrap();
            let inner = Arc::new(
                EmbeddedStore::open(config.data_dir.join("store.sqlite3")).expect("store"),
            );
            let store = Arc::new(Recorder { inner, written: w });
            let app = Platforms::with_store(&vars, config, store, None).unwrap();
            (Arc::new(app), HashMap::new())
        })
        .await;
        run(&bench).await;
        eprintln!("{name}: {} writes so far", written.lock().unwrap().len());
    }
    let written = written.lock().unwrap().clone();

    // pk → the sort keys written under it.
    let mut partitions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in &written {
        partitions
            .entry(key.pk.clone())
            .or_default()
            .insert(key.sk.clone());
    }
    let mut shared = Vec::new();
    for (pk, sks) in &partitions {
        let listed = LISTED
            .iter()
            .any(|p| pk.starts_with(p) && pk.len() > p.len());
        if sks.len() > 1 && !listed {
            shared.push(format!("{pk}: {} items ({:?})", sks.len(), sks));
        }
    }
    assert!(
        shared.is_empty(),
        "partition keys shared by several items of a kind (one per item or tenant instead):\n{}",
        shared.join("\n")
    );

    // Every partition key names its item or its tenant after the kind: `install#haravan#1000`,
    // not `install#haravan` (a lease's key is `lease#` and the key it guards). A key that
    // stops at the kind is shared by every tenant, even where the events write only one item.
    let bare: BTreeSet<&str> = partitions
        .keys()
        .map(String::as_str)
        .filter(|pk| {
            let guarded = pk.strip_prefix("lease#").unwrap_or(pk);
            // An outbox item's kind has no platform part: `outbox#<event id>`, one per event.
            if let Some(id) = guarded.strip_prefix(&format!("{}#", gatehouse::events::OUTBOX_KIND))
            {
                return id.is_empty();
            }
            guarded.splitn(3, '#').nth(2).is_none_or(str::is_empty)
        })
        .collect();
    assert!(
        bare.is_empty(),
        "partition keys without a tenant or id part: {bare:?}"
    );

    // Not vacuous: the events write several items of each of these kinds, so a key shared by
    // the kind's items would have shown above.
    let mut items_of: BTreeMap<String, BTreeSet<&Key>> = BTreeMap::new();
    for key in &written {
        items_of.entry(kind(&key.pk)).or_default().insert(key);
    }
    let few: Vec<String> = [
        "state#sesami",
        "state#haravan",
        "state#saison",
        "install#haravan",
        "webhook#haravan",
        "tx#momo",
        "pending#momo",
    ]
    .iter()
    .filter(|k| items_of.get(**k).map_or(0, BTreeSet::len) < 2)
    .map(|k| format!("{k}: {}", items_of.get(*k).map_or(0, BTreeSet::len)))
    .collect();
    assert!(
        few.is_empty(),
        "kinds the events write fewer than two items of: {few:?}\nall: {:?}",
        items_of
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect::<Vec<_>>()
    );

    // The same for the secondary indexes: an index partition holding several items is a listed
    // one and names its platform and its shard or user; none stops at the kind.
    let indexed = INDEXED.lock().unwrap().clone();
    assert!(
        indexed.len() >= 4,
        "the events write connections into the indexes: {indexed:?}"
    );
    let mut index_partitions: BTreeMap<String, BTreeSet<Key>> = BTreeMap::new();
    for (ipk, key) in &indexed {
        index_partitions
            .entry(ipk.clone())
            .or_default()
            .insert(key.clone());
    }
    for (ipk, keys) in &index_partitions {
        let value = ipk.split_once(':').map_or(ipk.as_str(), |(_, v)| v);
        let listed = LISTED_INDEX.iter().any(|p| value.starts_with(p));
        assert!(
            keys.len() == 1 || listed,
            "index partition {ipk} holds {} items and is not a listed one",
            keys.len()
        );
        assert!(
            value.splitn(3, '#').nth(2).is_some_and(|t| !t.is_empty()),
            "index partition {ipk} names no shard or tenant after its kind"
        );
    }
}
