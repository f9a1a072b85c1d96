//! The store conformance suite: one set of checks, each run against both stores, so that the
//! embedded store used locally behaves as the DynamoDB store deployed (see `store/mod.rs`).
//! The DynamoDB side needs a DynamoDB-compatible server (see `support::dynamo_client`) and
//! gives every test a table of its own, so the tests run in parallel.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue::{self, Bool, L, M, N, S};
use gatehouse::store::{
    Condition, DynamoStore, EmbeddedStore, Item, Key, Store, StoreError, create_table, now,
};
use serde_json::{Map, Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support;

type Shared = Arc<dyn Store>;

/// How many callers race in the concurrency checks.
const RACERS: usize = 20;

/// Generates, for every check, one test per store.
macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("temporary directory");
                    let store = super::embedded_store(&dir);
                    super::$check(store).await;
                }
            )+
        }
        mod dynamo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    if let Some(table) = super::DynamoTable::create().await {
                        super::$check(table.store()).await;
                    }
                }
            )+
        }
    };
}

conformance!(
    round_trip,
    get_missing,
    always_replaces,
    absent_creates_once,
    absent_replaces_expired,
    attr_equals,
    take_once,
    take_expired,
    expired_invisible,
    query_one_partition_in_order,
    query_many_pages,
    reserved_attribute,
    invalid_key,
    concurrent_takes,
    concurrent_creates,
);

// ---- the checks ----

async fn round_trip(store: Shared) {
    let attrs = object(json!({
        "name": "Cửa hàng Sesami ☕ 東京",
        "empty": "",
        "count": 42,
        "negative": -7,
        "ratio": 1.5,
        "big": 9_007_199_254_740_993_u64,
        "enabled": true,
        "revoked": false,
        "nothing": null,
        "scopes": ["read_products", "write_orders"],
        "mixed": [1, "two", {"three": [3, []]}, false],
        "nested": {"deep": {"deeper": {"leaf": "lá"}}, "none": {}},
    }));
    let item = Item::new(Key::new("install#sesami", "shop-1"), attrs).expiring_at(now() + 3600);
    store.put(&item, Condition::Always).await.expect("put");
    assert_eq!(store.get(&item.key).await.expect("get"), Some(item.clone()));

    let plain = Item::new(Key::new("install#sesami", "shop-2"), object(json!({})));
    store.put(&plain, Condition::Always).await.expect("put");
    assert_eq!(store.get(&plain.key).await.expect("get"), Some(plain));
}

async fn get_missing(store: Shared) {
    let got = store.get(&Key::new("nothing", "here")).await.expect("get");
    assert_eq!(got, None);
}

async fn always_replaces(store: Shared) {
    let key = Key::new("session", "s1");
    let first = Item::new(key.clone(), object(json!({"v": 1}))).expiring_at(now() + 60);
    store.put(&first, Condition::Always).await.expect("put");
    let second = Item::new(key.clone(), object(json!({"w": 2})));
    store
        .put(&second, Condition::Always)
        .await
        .expect("replace");
    // Replaced whole: the old attribute and the old expiry are gone.
    assert_eq!(store.get(&key).await.expect("get"), Some(second));
}

async fn absent_creates_once(store: Shared) {
    let first = flow_state("s1", "first");
    store.put(&first, Condition::Absent).await.expect("create");
    let second = flow_state("s1", "second");
    assert_condition_failed(store.put(&second, Condition::Absent).await);
    assert_eq!(store.get(&first.key).await.expect("get"), Some(first));
}

async fn absent_replaces_expired(store: Shared) {
    let expired = flow_state("s1", "old").expiring_at(now() - 10);
    store.put(&expired, Condition::Always).await.expect("put");
    let fresh = flow_state("s1", "new");
    store
        .put(&fresh, Condition::Absent)
        .await
        .expect("create over expired");
    assert_eq!(store.get(&fresh.key).await.expect("get"), Some(fresh));
}

async fn attr_equals(store: Shared) {
    let key = Key::new("install#momo", "tenant-1");
    let pending = Item::new(key.clone(), object(json!({"status": "pending", "n": 1})));
    store.put(&pending, Condition::Always).await.expect("put");

    let active = Item::new(key.clone(), object(json!({"status": "active", "n": 2})));
    let pending_only = Condition::AttrEquals("status".into(), json!("pending"));
    store
        .put(&active, pending_only.clone())
        .await
        .expect("transition");
    assert_eq!(store.get(&key).await.expect("get"), Some(active.clone()));

    // Mismatch: the status is no longer pending.
    let stale = Item::new(key.clone(), object(json!({"status": "revoked"})));
    assert_condition_failed(store.put(&stale, pending_only.clone()).await);
    assert_eq!(store.get(&key).await.expect("get"), Some(active));

    // Absent key: nothing to compare, nothing created.
    let elsewhere = Item::new(Key::new("install#momo", "tenant-2"), object(json!({})));
    assert_condition_failed(store.put(&elsewhere, pending_only.clone()).await);
    assert_eq!(store.get(&elsewhere.key).await.expect("get"), None);

    // Expired item: as good as absent, even though the attribute matches.
    let expired = Item::new(
        Key::new("install#momo", "tenant-3"),
        object(json!({"status": "pending"})),
    )
    .expiring_at(now() - 10);
    store.put(&expired, Condition::Always).await.expect("put");
    assert_condition_failed(
        store
            .put(&expired.clone().expiring_at(now() + 60), pending_only)
            .await,
    );
}

async fn take_once(store: Shared) {
    let item = flow_state("s1", "verifier").expiring_at(now() + 600);
    store.put(&item, Condition::Always).await.expect("put");
    assert_eq!(
        store.take(&item.key).await.expect("take"),
        Some(item.clone())
    );
    assert_eq!(store.take(&item.key).await.expect("take again"), None);
    assert_eq!(store.get(&item.key).await.expect("get"), None);
}

async fn take_expired(store: Shared) {
    let item = flow_state("s1", "verifier").expiring_at(now() - 10);
    store.put(&item, Condition::Always).await.expect("put");
    assert_eq!(store.take(&item.key).await.expect("take"), None);
}

async fn expired_invisible(store: Shared) {
    let expired = flow_state("s1", "old").expiring_at(now() - 1);
    store.put(&expired, Condition::Always).await.expect("put");
    assert_eq!(store.get(&expired.key).await.expect("get"), None);
    assert_eq!(store.query(&expired.key.pk).await.expect("query"), vec![]);
}

async fn query_one_partition_in_order(store: Shared) {
    // Sort keys in byte order, as DynamoDB orders them: upper before lower case, ASCII before
    // the rest, a prefix before its extensions.
    for sk in ["é", "b", "a#2", "Z", "a", "z"] {
        let item = Item::new(Key::new("p", sk), object(json!({"label": sk})));
        store.put(&item, Condition::Always).await.expect("put");
    }
    let expired = Item::new(Key::new("p", "m"), object(json!({}))).expiring_at(now() - 10);
    store.put(&expired, Condition::Always).await.expect("put");
    // Neighbouring partitions whose keys share a prefix with `p` or sort right next to it.
    for pk in ["o", "p#", "pp", "P", "p\u{0}"] {
        let item = Item::new(Key::new(pk, "a"), object(json!({})));
        store.put(&item, Condition::Always).await.expect("put");
    }

    let items = store.query("p").await.expect("query");
    let sks: Vec<&str> = items.iter().map(|item| item.key.sk.as_str()).collect();
    assert_eq!(sks, ["Z", "a", "a#2", "b", "z", "é"]);
    assert!(
        items
            .iter()
            .all(|item| item.str("label") == Some(&item.key.sk))
    );
    assert_eq!(store.query("nothing").await.expect("query"), vec![]);
}

/// Items enough to fill more than one DynamoDB page (1 MB) of a Query.
const MANY: usize = 250;

async fn query_many_pages(store: Shared) {
    let blob = "x".repeat(5 * 1024);
    for i in 0..MANY {
        let item = Item::new(
            Key::new("many", format!("{i:04}")),
            object(json!({"i": i, "blob": blob})),
        );
        store.put(&item, Condition::Always).await.expect("put");
    }
    let items = store.query("many").await.expect("query");
    let indices: Vec<u64> = items
        .iter()
        .map(|item| item.attrs["i"].as_u64().expect("index"))
        .collect();
    assert_eq!(indices, (0..MANY as u64).collect::<Vec<_>>());
}

async fn reserved_attribute(store: Shared) {
    for name in ["pk", "sk", "ttl"] {
        let item = Item::new(Key::new("p", "s"), object(json!({ name: "x" })));
        assert_invalid(store.put(&item, Condition::Always).await);
        let condition = Condition::AttrEquals(name.into(), json!("x"));
        let clean = Item::new(Key::new("p", "s"), object(json!({})));
        assert_invalid(store.put(&clean, condition).await);
    }
    assert_eq!(store.query("p").await.expect("query"), vec![]);
}

async fn invalid_key(store: Shared) {
    let keys = [
        Key::new("", "s"),
        Key::new("p", ""),
        Key::new("k".repeat(2049), "s"),
        Key::new("p", "k".repeat(1025)),
    ];
    for key in keys {
        let item = Item::new(key.clone(), object(json!({})));
        assert_invalid(store.put(&item, Condition::Always).await);
        assert_invalid(store.get(&key).await);
        assert_invalid(store.take(&key).await);
    }
    assert_invalid(store.query("").await);
}

async fn concurrent_takes(store: Shared) {
    let item = flow_state("s1", "verifier");
    store.put(&item, Condition::Always).await.expect("put");
    let taken = race(&store, |store, _| {
        let key = item.key.clone();
        async move { store.take(&key).await }
    })
    .await;
    let winners: Vec<Item> = taken
        .into_iter()
        .filter_map(|result| result.expect("take"))
        .collect();
    assert_eq!(winners, vec![item]);
}

async fn concurrent_creates(store: Shared) {
    let results = race(&store, |store, i| async move {
        let item = flow_state("s1", &format!("racer-{i}"));
        store.put(&item, Condition::Absent).await.map(|()| item)
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(item) => winners.push(item),
            Err(StoreError::ConditionFailed) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins");
    let stored = store.get(&winners[0].key).await.expect("get");
    assert_eq!(stored.as_ref(), winners.first());
}

// ---- embedded only ----

#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("nested/dir/store.redb");
    let item = flow_state("s1", "kept");
    {
        let store = EmbeddedStore::open(&path).expect("open");
        store.put(&item, Condition::Always).await.expect("put");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.get(&item.key).await.expect("get"), Some(item));
}

// ---- DynamoDB only ----

/// The item layout is the one documented in `store/dynamo.rs`: keys, TTL and every attribute
/// at the top level, readable by any DynamoDB tool.
#[tokio::test]
async fn dynamo_item_layout() {
    let Some(table) = DynamoTable::create().await else {
        return;
    };
    let expires_at = now() + 3600;
    let item = Item::new(
        Key::new("install#sesami", "shop-1"),
        object(json!({"name": "Sesami", "count": 3, "nested": {"a": [true]}})),
    )
    .expiring_at(expires_at);
    let store = table.store();
    store.put(&item, Condition::Always).await.expect("put");

    let raw = table.raw_get(&item.key).await;
    let names: BTreeSet<&str> = raw.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["pk", "sk", "ttl", "name", "count", "nested"])
    );
    assert_eq!(raw["pk"], S("install#sesami".into()));
    assert_eq!(raw["sk"], S("shop-1".into()));
    assert_eq!(raw["ttl"], N(expires_at.to_string()));
    assert_eq!(raw["name"], S("Sesami".into()));
    assert_eq!(raw["count"], N("3".into()));
    let nested = HashMap::from([("a".to_owned(), L(vec![Bool(true)]))]);
    assert_eq!(raw["nested"], M(nested));

    // An item that does not expire has no `ttl` at all, so the TTL sweeper leaves it alone.
    let forever = Item::new(Key::new("install#sesami", "shop-2"), object(json!({})));
    store.put(&forever, Condition::Always).await.expect("put");
    let raw = table.raw_get(&forever.key).await;
    let names: BTreeSet<&str> = raw.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["pk", "sk"]));
}

/// The many-items check does cross a page boundary, so `query` is shown to follow pagination.
#[tokio::test]
async fn dynamo_query_spans_pages() {
    let Some(table) = DynamoTable::create().await else {
        return;
    };
    query_many_pages(table.store()).await;
    let first_page = table
        .client
        .query()
        .table_name(&table.name)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", S("many".into()))
        .send()
        .await
        .expect("raw query");
    assert!(
        first_page.last_evaluated_key.is_some(),
        "one page held them all"
    );
    assert!(first_page.items().len() < MANY);
}

/// Creating a table that exists is not an error, so local servers can call it on every start.
#[tokio::test]
async fn dynamo_create_table_twice() {
    let Some(table) = DynamoTable::create().await else {
        return;
    };
    create_table(&table.client, &table.name)
        .await
        .expect("create again");
}

// ---- helpers ----

#[track_caller]
fn assert_condition_failed<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::ConditionFailed)),
        "expected ConditionFailed, got {result:?}"
    );
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "expected Invalid, got {result:?}"
    );
}

fn embedded_store(dir: &tempfile::TempDir) -> Shared {
    Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).expect("open embedded store"))
}

/// A fresh DynamoDB table for one test.
struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

impl DynamoTable {
    async fn create() -> Option<Self> {
        let client = support::dynamo_client().await?;
        let name = format!("gatehouse-test-{}", uuid::Uuid::new_v4());
        create_table(&client, &name).await.expect("create table");
        Some(Self { client, name })
    }

    fn store(&self) -> Shared {
        Arc::new(DynamoStore::new(self.client.clone(), &self.name))
    }

    /// The item at `key` as DynamoDB holds it, read without the store.
    async fn raw_get(&self, key: &Key) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(&self.name)
            .key("pk", S(key.pk.clone()))
            .key("sk", S(key.sk.clone()))
            .consistent_read(true)
            .send()
            .await
            .expect("raw get")
            .item
            .expect("item")
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// One-time flow state, the kind of item the conditional writes exist for.
fn flow_state(state: &str, verifier: &str) -> Item {
    Item::new(
        Key::new("state", state),
        object(json!({"verifier": verifier})),
    )
}

/// Runs `RACERS` copies of `call` at once (released together by a barrier) and returns their
/// results.
async fn race<T, F, Fut>(store: &Shared, call: F) -> Vec<Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(Shared, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let barrier = Arc::clone(&barrier);
        let racer = call(Arc::clone(store), i);
        racers.spawn(async move {
            barrier.wait().await;
            racer.await
        });
    }
    racers.join_all().await
}
