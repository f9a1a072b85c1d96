//! The store conformance suite: one set of checks, each run against both stores, so that the
//! embedded store used locally behaves as the DynamoDB store deployed (see `store/mod.rs`).
//! The DynamoDB side needs a DynamoDB-compatible server (see `support::dynamo_client`) and
//! gives every test a table of its own, so the tests run in parallel.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue::{self, Bool, L, M, N, S};
use gatehouse::store::{
    BY_END_USER, BY_PLATFORM, Condition, DynamoStore, EmbeddedStore, Index, Item, Key,
    MAX_INDEX_PAGE, MAX_TRANSACT_WRITES, Store, StoreError, Write as W, create_table, now,
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

/// Generates, for every check of two stores over the same data, one test per store: two
/// embedded stores opened on one file, two DynamoDB stores (each with its own client) on one
/// table. Local processes share a file as deployed functions share a table.
macro_rules! conformance_pairs {
    ($($check:ident),+ $(,)?) => {
        mod embedded_pair {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("temporary directory");
                    let first = super::embedded_store(&dir);
                    let second = super::embedded_store(&dir);
                    super::$check(first, second).await;
                }
            )+
        }
        mod dynamo_pair {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    if let Some(table) = super::DynamoTable::create().await {
                        let second = table.second_store().await;
                        super::$check(table.store(), second).await;
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
    scan_prefix_reads_every_partition_of_a_kind,
    concurrent_takes,
    concurrent_creates,
    update_in_place,
    update_absent,
    update_expired,
    update_attr_equals,
    update_invalid,
    concurrent_versioned_updates,
    concurrent_disjoint_updates,
    transact_all_or_nothing,
    transact_every_failed_condition,
    transact_conditions,
    transact_expired,
    transact_invalid,
    concurrent_transactions_one_mark,
    concurrent_transactions_one_version,
    index_query_in_order_after_a_cursor,
    index_query_skips_expired_without_short_pages,
    index_membership_follows_the_attributes,
    index_query_invalid,
);

conformance_pairs!(
    pair_sees_writes,
    pair_concurrent_takes,
    pair_concurrent_creates,
    pair_concurrent_versioned_updates,
    pair_concurrent_disjoint_updates,
    pair_concurrent_transactions,
);

// ---- the checks ----

/// An item in partition `ipk` of [`BY_PLATFORM`] with index sort key `isk` (its table key in
/// a partition of its own, as connections are stored).
fn indexed(id: &str, ipk: &str, isk: &str) -> Item {
    Item::new(
        Key::single("ix-test", id),
        object(json!({"ix_platform_pk": ipk, "ix_platform_sk": isk, "n": id})),
    )
}

fn ids(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.key.sk.clone()).collect()
}

/// An index partition reads in index-sort-key order (not table-key order), only its own
/// items, from after a cursor, a page at a time.
async fn index_query_in_order_after_a_cursor(store: Shared) {
    for (id, ipk, isk) in [
        ("a", "P", "3"),
        ("b", "P", "1"),
        ("c", "P", "2"),
        ("d", "Q", "0"),
    ] {
        store
            .put(&indexed(id, ipk, isk), Condition::Always)
            .await
            .unwrap();
    }
    let all = store
        .query_index(&BY_PLATFORM, "P", None, 10)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["b", "c", "a"]);
    assert_eq!(
        all[0].attrs["n"],
        json!("b"),
        "every attribute is projected"
    );
    let after = store
        .query_index(&BY_PLATFORM, "P", Some("1"), 10)
        .await
        .unwrap();
    assert_eq!(ids(&after), ["c", "a"]);
    let first = store.query_index(&BY_PLATFORM, "P", None, 2).await.unwrap();
    assert_eq!(ids(&first), ["b", "c"]);
    let last = first[1].str("ix_platform_sk").unwrap().to_owned();
    let next = store
        .query_index(&BY_PLATFORM, "P", Some(&last), 2)
        .await
        .unwrap();
    assert_eq!(ids(&next), ["a"], "a short page: the partition's end");
    assert!(
        store
            .query_index(&BY_PLATFORM, "R", None, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .query_index(&BY_END_USER, "P", None, 5)
            .await
            .unwrap()
            .is_empty(),
        "another index's partition of the same name is another partition"
    );
}

/// Expired items are not in a page, and do not shorten it: a full page still means "more".
async fn index_query_skips_expired_without_short_pages(store: Shared) {
    for i in 0..5 {
        let item = indexed(&format!("old{i}"), "P", &format!("0{i}")).expiring_at(now() - 10);
        store.put(&item, Condition::Always).await.unwrap();
    }
    for (id, isk) in [("x", "10"), ("y", "11"), ("z", "12")] {
        store
            .put(&indexed(id, "P", isk), Condition::Always)
            .await
            .unwrap();
    }
    let page = store.query_index(&BY_PLATFORM, "P", None, 2).await.unwrap();
    assert_eq!(ids(&page), ["x", "y"]);
}

/// An item is in an index exactly while it carries both of its attributes: an update that sets
/// them adds it, a delete removes it, an item with only one is not in it.
async fn index_membership_follows_the_attributes(store: Shared) {
    let half = Item::new(
        Key::single("ix-test", "half"),
        object(json!({"ix_platform_pk": "P"})),
    );
    store.put(&half, Condition::Always).await.unwrap();
    assert!(
        store
            .query_index(&BY_PLATFORM, "P", None, 5)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .update(
            &half.key,
            &object(json!({"ix_platform_sk": "k"})),
            Condition::Exists,
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&store.query_index(&BY_PLATFORM, "P", None, 5).await.unwrap()),
        ["half"]
    );
    store
        .transact(&[W::Delete(half.key.clone(), Condition::Exists)])
        .await
        .unwrap();
    assert!(
        store
            .query_index(&BY_PLATFORM, "P", None, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

/// What DynamoDB would refuse is refused by both: an index attribute that is not a non-empty
/// string, a page of 0 or over the maximum, an index the table does not have.
async fn index_query_invalid(store: Shared) {
    for bad in [json!(5), json!(""), json!(null), json!(["x"])] {
        let item = Item::new(
            Key::single("ix-test", "bad"),
            object(json!({"ix_platform_pk": bad, "ix_platform_sk": "k"})),
        );
        assert_invalid(store.put(&item, Condition::Always).await);
    }
    assert_invalid(store.query_index(&BY_PLATFORM, "P", None, 0).await);
    assert_invalid(
        store
            .query_index(&BY_PLATFORM, "P", None, MAX_INDEX_PAGE + 1)
            .await,
    );
    let unknown = Index {
        name: "nope",
        pk: "a",
        sk: "b",
    };
    assert_invalid(store.query_index(&unknown, "P", None, 1).await);
    assert!(
        store.query("ix-test#bad").await.unwrap().is_empty(),
        "nothing stored"
    );
}

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

/// `scan_prefix` finds the items of every partition whose key starts with the prefix, and only
/// live ones, in key order; `%` and `_` are no wildcards in it.
async fn scan_prefix_reads_every_partition_of_a_kind(store: Shared) {
    for (pk, sk) in [
        ("install#haravan#2", "2"),
        ("install#haravan#1", "1"),
        ("install#haravanx", "x"),
        ("install#sesami#1", "1"),
        ("install#haravan%_", "w"),
        ("lease#install#haravan#1", "1"),
    ] {
        let item = Item::new(Key::new(pk, sk), object(json!({})));
        store.put(&item, Condition::Always).await.expect("put");
    }
    let gone =
        Item::new(Key::new("install#haravan#3", "3"), object(json!({}))).expiring_at(now() - 10);
    store.put(&gone, Condition::Always).await.expect("put");
    let found = |items: Vec<Item>| -> Vec<String> { items.into_iter().map(|i| i.key.pk).collect() };
    assert_eq!(
        found(store.scan_prefix("install#haravan#").await.expect("scan")),
        ["install#haravan#1", "install#haravan#2"]
    );
    assert_eq!(
        found(store.scan_prefix("install#haravan%").await.expect("scan")),
        ["install#haravan%_"]
    );
    assert!(
        store
            .scan_prefix("nothing#")
            .await
            .expect("scan")
            .is_empty()
    );
    assert_invalid(store.scan_prefix("").await);
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
    takes_race(&[store], "s1").await;
}

/// An update sets the given attributes, adds the new ones, and leaves the rest and the expiry.
async fn update_in_place(store: Shared) {
    let expires_at = now() + 3600;
    let key = Key::new("install#haravan", "org-1");
    let item = Item::new(
        key.clone(),
        object(json!({
            "orgname": "Demo",
            "token_version": "v1",
            "shop": {"name": "old", "domain": "old.example"},
            "count": 1,
        })),
    )
    .expiring_at(expires_at);
    store.put(&item, Condition::Always).await.expect("put");

    // DynamoDB reserved words and a name with a dot (a path, were it not a placeholder).
    let set = object(json!({
        "shop": {"name": "new"},
        "status": "ok",
        "name": null,
        "a.b": [1, "two"],
    }));
    store
        .update(&key, &set, Condition::Always)
        .await
        .expect("update");
    let mut expected = item.clone();
    expected.attrs.extend(set);
    let stored = store.get(&key).await.expect("get").expect("still there");
    assert_eq!(stored, expected);
    assert_eq!(stored.expires_at, Some(expires_at), "the expiry is kept");
    assert_eq!(stored.attrs["orgname"], json!("Demo"), "others are kept");
    assert_eq!(stored.attrs["shop"], json!({"name": "new"}), "set whole");

    // An item that never expires does not start to.
    let forever = Item::new(
        Key::new("install#haravan", "org-2"),
        object(json!({"v": 1})),
    );
    store.put(&forever, Condition::Always).await.expect("put");
    store
        .update(&forever.key, &object(json!({"v": 2})), Condition::Always)
        .await
        .expect("update");
    let stored = store.get(&forever.key).await.expect("get").expect("there");
    assert_eq!(stored.expires_at, None);
    assert_eq!(stored.attrs, object(json!({"v": 2})));
}

/// Nothing to update: refused, and nothing is created.
async fn update_absent(store: Shared) {
    let key = Key::new("install#haravan", "nobody");
    let set = object(json!({"shop": {}}));
    assert_condition_failed(store.update(&key, &set, Condition::Always).await);
    let versioned = Condition::AttrEquals("token_version".into(), json!("v1"));
    assert_condition_failed(store.update(&key, &set, versioned).await);
    assert_eq!(store.get(&key).await.expect("get"), None);
    assert_eq!(store.query(&key.pk).await.expect("query"), vec![]);
}

/// An expired item is as good as absent: an update neither changes nor revives it.
async fn update_expired(store: Shared) {
    let item = Item::new(
        Key::new("session#weblink", "s1"),
        object(json!({"token_version": "v1"})),
    )
    .expiring_at(now() - 10);
    store.put(&item, Condition::Always).await.expect("put");
    let set = object(json!({"token_version": "v2"}));
    assert_condition_failed(store.update(&item.key, &set, Condition::Always).await);
    let versioned = Condition::AttrEquals("token_version".into(), json!("v1"));
    assert_condition_failed(store.update(&item.key, &set, versioned).await);
    assert_eq!(store.get(&item.key).await.expect("get"), None);
    // What is stored is still the old, expired item: a create may take its place.
    store
        .put(&item.clone().expiring_at(now() + 60), Condition::Absent)
        .await
        .expect("the key is still free");
}

/// `AttrEquals` on an update: applied on a match (the compared attribute may be among those
/// set, as a version bump is), refused with no change on a mismatch or a missing attribute.
async fn update_attr_equals(store: Shared) {
    let key = Key::new("install#haravan", "org-1");
    let item = Item::new(
        key.clone(),
        object(json!({"token_version": "v1", "access": "a1", "shop": "s"})),
    );
    store.put(&item, Condition::Always).await.expect("put");

    let v1 = Condition::AttrEquals("token_version".into(), json!("v1"));
    let bump = object(json!({"token_version": "v2", "access": "a2"}));
    store.update(&key, &bump, v1.clone()).await.expect("bump");
    let bumped = Item::new(
        key.clone(),
        object(json!({"token_version": "v2", "access": "a2", "shop": "s"})),
    );
    assert_eq!(store.get(&key).await.expect("get"), Some(bumped.clone()));

    // The version read is no longer the stored one.
    let stale = object(json!({"token_version": "v3", "access": "stale"}));
    assert_condition_failed(store.update(&key, &stale, v1).await);
    // Equal as JSON means equal in type too: the number 2 is not the string "v2".
    let typed = Condition::AttrEquals("token_version".into(), json!(2));
    assert_condition_failed(store.update(&key, &stale, typed).await);
    // An attribute the item does not have equals nothing.
    let missing = Condition::AttrEquals("needs_reauth".into(), json!(false));
    assert_condition_failed(store.update(&key, &stale, missing).await);
    assert_eq!(store.get(&key).await.expect("get"), Some(bumped));
}

/// Refused before the backend is asked: reserved names to set or compare, `Absent`, nothing to
/// set, a bad key. Nothing changes.
async fn update_invalid(store: Shared) {
    let key = Key::new("p", "s");
    let item = Item::new(key.clone(), object(json!({"v": 1})));
    store.put(&item, Condition::Always).await.expect("put");
    for name in ["pk", "sk", "ttl"] {
        let set = object(json!({ name: "x", "v": 2 }));
        assert_invalid(store.update(&key, &set, Condition::Always).await);
        let condition = Condition::AttrEquals(name.into(), json!("s"));
        assert_invalid(
            store
                .update(&key, &object(json!({"v": 2})), condition)
                .await,
        );
    }
    let set = object(json!({"v": 2}));
    assert_invalid(store.update(&key, &set, Condition::Absent).await);
    assert_invalid(store.update(&key, &Map::new(), Condition::Always).await);
    assert_invalid(
        store
            .update(&Key::new("", "s"), &set, Condition::Always)
            .await,
    );
    assert_invalid(
        store
            .update(&Key::new("p", ""), &set, Condition::Always)
            .await,
    );
    assert_eq!(store.query("p").await.expect("query"), vec![item]);
}

async fn concurrent_versioned_updates(store: Shared) {
    versioned_updates_race(&[store], "org-1").await;
}

async fn concurrent_disjoint_updates(store: Shared) {
    disjoint_updates_race(&[store], "org-1").await;
}

async fn concurrent_creates(store: Shared) {
    creates_race(&[store], "s1").await;
}

/// What one store writes, takes or removes, the other sees at once.
async fn pair_sees_writes(first: Shared, second: Shared) {
    let item = flow_state("s1", "verifier").expiring_at(now() + 600);
    first.put(&item, Condition::Always).await.expect("put");
    assert_eq!(
        second.get(&item.key).await.expect("get"),
        Some(item.clone())
    );
    assert_eq!(
        second.query("state").await.expect("query"),
        vec![item.clone()]
    );

    // A conditional create sees the other store's item.
    assert_condition_failed(
        second
            .put(&flow_state("s1", "other"), Condition::Absent)
            .await,
    );

    // A transition by one store is the state the other compares against.
    let key = Key::new("install#momo", "tenant-1");
    let pending = Item::new(key.clone(), object(json!({"status": "pending"})));
    second.put(&pending, Condition::Always).await.expect("put");
    let active = Item::new(key.clone(), object(json!({"status": "active"})));
    let pending_only = Condition::AttrEquals("status".into(), json!("pending"));
    first
        .put(&active, pending_only.clone())
        .await
        .expect("transition");
    assert_condition_failed(second.put(&pending, pending_only).await);
    assert_eq!(second.get(&key).await.expect("get"), Some(active));

    // Taken by one, gone for both.
    assert_eq!(
        second.take(&item.key).await.expect("take"),
        Some(item.clone())
    );
    assert_eq!(first.take(&item.key).await.expect("take again"), None);
    assert_eq!(first.get(&item.key).await.expect("get"), None);
}

/// How many races the checks of two stores run, each on a key of its own: the two stores'
/// first racers meet only now and then in one race, but nearly surely in some of them.
const PAIR_ROUNDS: usize = 10;

async fn pair_concurrent_takes(first: Shared, second: Shared) {
    for round in 0..PAIR_ROUNDS {
        takes_race(&[first.clone(), second.clone()], &format!("s{round}")).await;
    }
}

async fn pair_concurrent_creates(first: Shared, second: Shared) {
    for round in 0..PAIR_ROUNDS {
        creates_race(&[first.clone(), second.clone()], &format!("s{round}")).await;
    }
}

async fn pair_concurrent_versioned_updates(first: Shared, second: Shared) {
    for round in 0..PAIR_ROUNDS {
        versioned_updates_race(&[first.clone(), second.clone()], &format!("org-{round}")).await;
    }
}

async fn pair_concurrent_disjoint_updates(first: Shared, second: Shared) {
    for round in 0..PAIR_ROUNDS {
        disjoint_updates_race(&[first.clone(), second.clone()], &format!("org-{round}")).await;
    }
}

/// `RACERS` concurrent updates of one item, each on the version all of them read and bumping
/// it, spread over `stores`: exactly one succeeds, and its write is the one stored.
async fn versioned_updates_race(stores: &[Shared], sk: &str) {
    let key = Key::new("install#haravan", sk);
    let item = Item::new(
        key.clone(),
        object(json!({"token_version": "v0", "keep": 1})),
    );
    stores[0].put(&item, Condition::Always).await.expect("put");
    let results = race(stores, |store, i| {
        let key = key.clone();
        async move {
            let set = object(json!({"token_version": format!("v-{i}"), "by": i}));
            let v0 = Condition::AttrEquals("token_version".into(), json!("v0"));
            store.update(&key, &set, v0).await.map(|()| i)
        }
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(i) => winners.push(i),
            Err(StoreError::ConditionFailed) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one updater wins: {winners:?}");
    let won = winners[0];
    let expected = object(json!({"token_version": format!("v-{won}"), "keep": 1, "by": won}));
    for store in stores {
        let stored = store.get(&key).await.expect("get").expect("there");
        assert_eq!(stored.attrs, expected);
    }
}

/// `RACERS` concurrent updates of one item, each setting an attribute of its own, spread over
/// `stores`: all succeed and none undoes another's (a read-modify-write would lose some).
async fn disjoint_updates_race(stores: &[Shared], sk: &str) {
    let key = Key::new("install#haravan", sk);
    let item = Item::new(key.clone(), object(json!({"keep": true})));
    stores[0].put(&item, Condition::Always).await.expect("put");
    let results = race(stores, |store, i| {
        let key = key.clone();
        async move {
            let set = object(json!({ format!("a{i}"): i }));
            store.update(&key, &set, Condition::Always).await
        }
    })
    .await;
    for result in results {
        result.expect("every update applies");
    }
    let mut expected = object(json!({"keep": true}));
    for i in 0..RACERS {
        expected.insert(format!("a{i}"), json!(i));
    }
    for store in stores {
        // Maps compare as maps, whatever the order of their keys.
        let stored = store.get(&key).await.expect("get").expect("there").attrs;
        assert_eq!(stored, expected);
    }
}

/// `RACERS` concurrent takes of one item (state `state`), spread over `stores`: exactly one
/// gets it.
async fn takes_race(stores: &[Shared], state: &str) {
    let item = flow_state(state, "verifier");
    stores[0].put(&item, Condition::Always).await.expect("put");
    let taken = race(stores, |store, _| {
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

/// `RACERS` concurrent creates of one key (state `state`), spread over `stores`: exactly one
/// succeeds, and its item is the one every store reads.
async fn creates_race(stores: &[Shared], state: &str) {
    let results = race(stores, |store, i| {
        let item = flow_state(state, &format!("racer-{i}"));
        async move { store.put(&item, Condition::Absent).await.map(|()| item) }
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
    for store in stores {
        let stored = store.get(&winners[0].key).await.expect("get");
        assert_eq!(stored.as_ref(), winners.first());
    }
}

// ---- transactions ----

fn key(sk: &str) -> Key {
    Key::new("tx-test", sk)
}

fn plain(sk: &str, attrs: Value) -> Item {
    Item::new(key(sk), object(attrs))
}

#[track_caller]
fn assert_cancelled(result: Result<(), StoreError>, expected: &[usize]) {
    match result {
        Err(StoreError::Cancelled(failed)) => assert_eq!(failed, expected),
        other => panic!("expected Cancelled({expected:?}), got {other:?}"),
    }
}

/// Every write of the partition, for comparing before and after.
async fn snapshot(store: &Shared) -> Vec<Item> {
    store.query("tx-test").await.expect("query")
}

/// A transaction whose one condition fails writes nothing of its other writes; once every
/// condition holds, all of them land (a put, an in-place update, a delete, a check).
async fn transact_all_or_nothing(store: Shared) {
    let expiring = plain("c", json!({"gone": "soon"})).expiring_at(now() + 3600);
    store.put(&expiring, Condition::Always).await.expect("put");
    store
        .put(&plain("d", json!({"v": 1})), Condition::Always)
        .await
        .expect("put");
    let writes = vec![
        W::Put(plain("mark", json!({"by": "first"})), Condition::Absent),
        W::Update {
            key: key("install"),
            set: object(json!({"shop": {"name": "New"}})),
            condition: Condition::Exists,
        },
        W::Delete(key("c"), Condition::Exists),
        W::Check(key("d"), Condition::AttrEquals("v".into(), json!(1))),
    ];
    let before = snapshot(&store).await;
    assert_cancelled(store.transact(&writes).await, &[1]);
    assert_eq!(snapshot(&store).await, before, "nothing was written");

    let install =
        plain("install", json!({"shop": {"name": "Old"}, "token": "t"})).expiring_at(now() + 7200);
    store.put(&install, Condition::Always).await.expect("put");
    store.transact(&writes).await.expect("all conditions hold");
    assert_eq!(
        store.get(&key("mark")).await.expect("get"),
        Some(plain("mark", json!({"by": "first"})))
    );
    let updated = store
        .get(&key("install"))
        .await
        .expect("get")
        .expect("there");
    assert_eq!(
        updated.attrs,
        object(json!({"shop": {"name": "New"}, "token": "t"})),
        "set in place, the rest kept"
    );
    assert_eq!(updated.expires_at, install.expires_at, "expiry kept");
    assert_eq!(store.get(&key("c")).await.expect("get"), None);
    assert_eq!(
        store.get(&key("d")).await.expect("get"),
        Some(plain("d", json!({"v": 1})))
    );

    // The same transaction again: its mark is there now, so it is refused whole.
    let before = snapshot(&store).await;
    assert_cancelled(store.transact(&writes).await, &[0, 2]);
    assert_eq!(snapshot(&store).await, before);
}

/// Every write whose condition fails is named, in order.
async fn transact_every_failed_condition(store: Shared) {
    store
        .put(
            &plain("here", json!({"status": "PENDING"})),
            Condition::Always,
        )
        .await
        .expect("put");
    let writes = vec![
        W::Put(plain("here", json!({})), Condition::Absent),
        W::Put(plain("new", json!({})), Condition::Absent),
        W::Update {
            key: key("missing"),
            set: object(json!({"a": 1})),
            condition: Condition::Always,
        },
        W::Check(
            key("other"),
            Condition::AttrEquals("status".into(), json!("PENDING")),
        ),
        W::Delete(key("gone"), Condition::Always),
    ];
    let before = snapshot(&store).await;
    assert_cancelled(store.transact(&writes).await, &[0, 2, 3]);
    assert_eq!(snapshot(&store).await, before);
}

/// Each kind of write under each condition it takes, alone in a transaction, against a present
/// and an absent item.
async fn transact_conditions(store: Shared) {
    let present = plain("p", json!({"status": "PENDING"}));
    store.put(&present, Condition::Always).await.expect("put");
    let pending = || Condition::AttrEquals("status".into(), json!("PENDING"));
    let done = || Condition::AttrEquals("status".into(), json!("DONE"));
    // (write, whether it must succeed)
    let cases: Vec<(W, bool)> = vec![
        (W::Check(key("p"), Condition::Exists), true),
        (W::Check(key("x"), Condition::Exists), false),
        (W::Check(key("p"), Condition::Absent), false),
        (W::Check(key("x"), Condition::Absent), true),
        (W::Check(key("p"), pending()), true),
        (W::Check(key("p"), done()), false),
        (W::Check(key("x"), pending()), false),
        (
            W::Put(plain("p", json!({"status": "PENDING"})), pending()),
            true,
        ),
        (
            W::Put(plain("p", json!({"status": "PENDING"})), done()),
            false,
        ),
        (
            W::Put(plain("p", json!({"status": "PENDING"})), Condition::Exists),
            true,
        ),
        (W::Put(plain("x", json!({})), Condition::Exists), false),
        (
            W::Update {
                key: key("p"),
                set: object(json!({"n": 1})),
                condition: pending(),
            },
            true,
        ),
        (
            W::Update {
                key: key("p"),
                set: object(json!({"n": 2})),
                condition: done(),
            },
            false,
        ),
        (
            W::Update {
                key: key("x"),
                set: object(json!({"n": 1})),
                condition: Condition::Exists,
            },
            false,
        ),
        (W::Delete(key("x"), Condition::Exists), false),
        (W::Delete(key("x"), Condition::Always), true),
        (W::Delete(key("p"), done()), false),
    ];
    for (write, succeeds) in cases {
        let result = store.transact(std::slice::from_ref(&write)).await;
        if succeeds {
            result.unwrap_or_else(|e| panic!("{write:?} must succeed: {e:?}"));
        } else {
            assert_cancelled(result, &[0]);
        }
    }
    assert_eq!(
        store
            .get(&key("p"))
            .await
            .expect("get")
            .expect("there")
            .attrs,
        object(json!({"status": "PENDING", "n": 1}))
    );
    assert_eq!(
        store.get(&key("x")).await.expect("get"),
        None,
        "nothing created"
    );
    store
        .transact(&[W::Delete(key("p"), pending())])
        .await
        .expect("delete on its condition");
    assert_eq!(store.get(&key("p")).await.expect("get"), None);
}

/// An expired item is absent to every condition of a transaction.
async fn transact_expired(store: Shared) {
    let expired = plain("old", json!({"status": "PENDING"})).expiring_at(now() - 5);
    store.put(&expired, Condition::Always).await.expect("put");
    for write in [
        W::Check(key("old"), Condition::Exists),
        W::Delete(key("old"), Condition::Exists),
        W::Update {
            key: key("old"),
            set: object(json!({"a": 1})),
            condition: Condition::Always,
        },
        W::Put(
            plain("old", json!({})),
            Condition::AttrEquals("status".into(), json!("PENDING")),
        ),
    ] {
        assert_cancelled(store.transact(std::slice::from_ref(&write)).await, &[0]);
    }
    let fresh = plain("old", json!({"status": "NEW"}));
    store
        .transact(&[W::Put(fresh.clone(), Condition::Absent)])
        .await
        .expect("an expired item may be replaced as absent");
    assert_eq!(store.get(&key("old")).await.expect("get"), Some(fresh));
}

/// Transactions DynamoDB would refuse are refused by both stores before anything is written.
async fn transact_invalid(store: Shared) {
    let many: Vec<W> = (0..=MAX_TRANSACT_WRITES)
        .map(|i| W::Put(plain(&format!("k{i}"), json!({})), Condition::Always))
        .collect();
    let cases: Vec<Vec<W>> = vec![
        vec![],
        many,
        vec![
            W::Put(plain("a", json!({})), Condition::Always),
            W::Delete(key("a"), Condition::Always),
        ],
        vec![W::Delete(key("a"), Condition::Absent)],
        vec![W::Check(key("a"), Condition::Always)],
        vec![W::Update {
            key: key("a"),
            set: Map::new(),
            condition: Condition::Always,
        }],
        vec![W::Update {
            key: key("a"),
            set: object(json!({"a": 1})),
            condition: Condition::Absent,
        }],
        vec![W::Put(plain("a", json!({"ttl": 1})), Condition::Always)],
        vec![W::Check(
            key("a"),
            Condition::AttrEquals("pk".into(), json!("x")),
        )],
        vec![W::Delete(Key::new("tx-test", ""), Condition::Always)],
    ];
    for writes in cases {
        let n = writes.len();
        assert_invalid(store.transact(&writes).await);
        assert_eq!(snapshot(&store).await, vec![], "{n} writes: nothing stored");
    }
    // Exactly the limit is fine.
    let limit: Vec<W> = (0..MAX_TRANSACT_WRITES)
        .map(|i| W::Put(plain(&format!("k{i:03}"), json!({})), Condition::Absent))
        .collect();
    store.transact(&limit).await.expect("100 writes");
    assert_eq!(snapshot(&store).await.len(), MAX_TRANSACT_WRITES);
}

async fn concurrent_transactions_one_mark(store: Shared) {
    transactions_race_on_mark(&[store], "m").await;
}

async fn concurrent_transactions_one_version(store: Shared) {
    transactions_race_on_version(&[store], "org").await;
}

async fn pair_concurrent_transactions(first: Shared, second: Shared) {
    for round in 0..PAIR_ROUNDS {
        let stores = [first.clone(), second.clone()];
        transactions_race_on_mark(&stores, &format!("m{round}")).await;
        transactions_race_on_version(&stores, &format!("org{round}")).await;
    }
}

/// `RACERS` deliveries of one mark, each with an effect of its own: exactly one transaction
/// lands, and the effect stored is the winner's — never a mark without its effect or the
/// other way round.
async fn transactions_race_on_mark(stores: &[Shared], mark: &str) {
    let target = format!("{mark}-install");
    stores[0]
        .put(&plain(&target, json!({"keep": 1})), Condition::Always)
        .await
        .expect("put");
    let results = race(stores, |store, i| {
        let writes = vec![
            W::Put(plain(mark, json!({"by": i})), Condition::Absent),
            W::Update {
                key: key(&target),
                set: object(json!({"by": i})),
                condition: Condition::Exists,
            },
        ];
        async move { store.transact(&writes).await.map(|()| i) }
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(i) => winners.push(i),
            Err(StoreError::Cancelled(failed)) => assert_eq!(failed, vec![0], "the mark"),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one transaction lands: {winners:?}"
    );
    let won = winners[0];
    for store in stores {
        assert_eq!(
            store
                .get(&key(mark))
                .await
                .expect("get")
                .expect("mark")
                .attrs,
            object(json!({"by": won}))
        );
        assert_eq!(
            store
                .get(&key(&target))
                .await
                .expect("get")
                .expect("effect")
                .attrs,
            object(json!({"keep": 1, "by": won}))
        );
    }
}

/// `RACERS` transactions, each with a mark of its own, all conditioned on one version of one
/// item and bumping it: exactly one lands, and only its mark exists.
async fn transactions_race_on_version(stores: &[Shared], sk: &str) {
    // Not `v0`, the value racer 0 writes: a racer that left the version as it found it would
    // let another land after it.
    stores[0]
        .put(&plain(sk, json!({"version": "initial"})), Condition::Always)
        .await
        .expect("put");
    let results = race(stores, |store, i| {
        let writes = vec![
            W::Put(
                plain(&format!("{sk}-mark-{i}"), json!({})),
                Condition::Absent,
            ),
            W::Update {
                key: key(sk),
                set: object(json!({"version": format!("v-{i}")})),
                condition: Condition::AttrEquals("version".into(), json!("initial")),
            },
        ];
        async move { store.transact(&writes).await.map(|()| i) }
    })
    .await;
    let mut winners = Vec::new();
    for result in results {
        match result {
            Ok(i) => winners.push(i),
            Err(StoreError::Cancelled(failed)) => assert_eq!(failed, vec![1], "the version"),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one transaction lands: {winners:?}"
    );
    let won = winners[0];
    for store in stores {
        for i in 0..RACERS {
            let mark = store
                .get(&key(&format!("{sk}-mark-{i}")))
                .await
                .expect("get");
            assert_eq!(mark.is_some(), i == won, "mark {i}");
        }
        assert_eq!(
            store
                .get(&key(sk))
                .await
                .expect("get")
                .expect("there")
                .attrs,
            object(json!({"version": format!("v-{won}")}))
        );
    }
}

// ---- embedded only ----

#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("nested/dir/store.sqlite3");
    let item = flow_state("s1", "kept");
    {
        let store = EmbeddedStore::open(&path).expect("open");
        store.put(&item, Condition::Always).await.expect("put");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.get(&item.key).await.expect("get"), Some(item));
}

/// Processes started together (`cargo lambda watch` starts every function at once) may all
/// open a file that does not exist yet: each open succeeds and they share one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_concurrent_first_opens() {
    const OPENERS: usize = 8;
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.sqlite3");
    let barrier = Arc::new(std::sync::Barrier::new(OPENERS));
    let openers: Vec<_> = (0..OPENERS)
        .map(|_| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                EmbeddedStore::open(path)
            })
        })
        .collect();
    let stores: Vec<Shared> = openers
        .into_iter()
        .map(|opener| Arc::new(opener.join().expect("opener").expect("open")) as Shared)
        .collect();
    for (i, store) in stores.iter().enumerate() {
        let item = Item::new(Key::new("p", format!("{i}")), object(json!({})));
        store.put(&item, Condition::Absent).await.expect("put");
    }
    for store in &stores {
        assert_eq!(store.query("p").await.expect("query").len(), OPENERS);
    }
}

/// Names the store file `embedded_other_process_child` works on; only set for that child.
const CHILD_STORE: &str = "GATEHOUSE_TEST_CHILD_STORE";
/// Keys each process races for in `embedded_other_process`, one per round.
const CROSS_KEYS: usize = 40;
/// How long one round of that race lasts: both processes start a round's calls at its first
/// microsecond, so that they hit the same key at the same time.
const CROSS_ROUND: Duration = Duration::from_millis(5);
/// How long the parent waits for any one step of the child before failing.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

/// Another OS process on the same file, as under `cargo lambda watch`: this test binary run
/// again as `embedded_other_process_child`. Each sees the other's writes at once while both
/// hold the file open, and when both race for the same keys (creates and takes, each key at one
/// agreed instant) every key has exactly one winner across the two processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_other_process() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.sqlite3");
    let store: Shared = Arc::new(EmbeddedStore::open(&path).expect("open"));
    store
        .put(&flow_state("from-parent", "parent"), Condition::Always)
        .await
        .expect("put");
    for i in 0..CROSS_KEYS {
        let item = Item::new(Key::new("cross-take", i.to_string()), object(json!({})));
        store.put(&item, Condition::Always).await.expect("put");
    }

    let mut child = ChildProcess::spawn(&path);
    child.expect("ready").await;
    // Written by the child, which still holds the file open.
    let from_child = flow_state("from-child", "child");
    assert_eq!(
        store.get(&from_child.key).await.expect("get"),
        Some(from_child)
    );

    let start = unix_micros() + 300_000;
    child.say(&format!("go {start}"));
    let mine = cross_race(&store, "parent", start).await;
    let theirs = CrossWins::parse(&child.expect("won").await);
    for i in 0..CROSS_KEYS {
        let created = [mine.created.contains(&i), theirs.created.contains(&i)];
        let taken = [mine.taken.contains(&i), theirs.taken.contains(&i)];
        assert_eq!(
            created.iter().filter(|won| **won).count(),
            1,
            "create {i}: {created:?}"
        );
        assert_eq!(
            taken.iter().filter(|won| **won).count(),
            1,
            "take {i}: {taken:?}"
        );
        let winner = if created[0] { "parent" } else { "child" };
        let stored = store
            .get(&Key::new("cross-create", i.to_string()))
            .await
            .expect("get")
            .expect("created");
        assert_eq!(stored.str("by"), Some(winner), "create {i}");
    }
    assert_eq!(store.query("cross-take").await.expect("query"), vec![]);

    // The other way round, after the race: the child sees what the parent writes now.
    store
        .put(&flow_state("late", "parent"), Condition::Always)
        .await
        .expect("put");
    child.say("check");
    child.expect("done").await;
    child.finish().await;
    // The file is whole after the child has closed it.
    assert_eq!(
        store
            .take(&Key::new("state", "from-child"))
            .await
            .expect("take")
            .map(|item| item.attrs),
        Some(flow_state("from-child", "child").attrs)
    );
}

/// The other process of `embedded_other_process`; without `GATEHOUSE_TEST_CHILD_STORE` it
/// does nothing. It talks to the parent in lines: it writes `CHILD <word> …` to stdout (among
/// and within the test harness's own lines) and reads the parent's lines from stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of embedded_other_process, which runs it"]
async fn embedded_other_process_child() {
    let Some(path) = std::env::var_os(CHILD_STORE) else {
        return;
    };
    let store: Shared = Arc::new(EmbeddedStore::open(&path).expect("child opens the store"));
    let from_parent = flow_state("from-parent", "parent");
    assert_eq!(
        store.get(&from_parent.key).await.expect("get"),
        Some(from_parent)
    );
    store
        .put(&flow_state("from-child", "child"), Condition::Always)
        .await
        .expect("put");
    child_says("ready");

    let go = parent_line();
    let start: u128 = go
        .strip_prefix("go ")
        .and_then(|start| start.parse().ok())
        .unwrap_or_else(|| panic!("expected `go <start>`, got {go:?}"));
    let wins = cross_race(&store, "child", start).await;
    child_says(&format!("won {}", wins.format()));

    assert_eq!(parent_line(), "check");
    let late = flow_state("late", "parent");
    assert_eq!(store.get(&late.key).await.expect("get"), Some(late));
    child_says("done");
}

/// The keys one process won in the race of `embedded_other_process`.
#[derive(Debug, Default)]
struct CrossWins {
    created: BTreeSet<usize>,
    taken: BTreeSet<usize>,
}

impl CrossWins {
    /// `created=1,2 taken=3` (a list may be empty).
    fn format(&self) -> String {
        let list = |set: &BTreeSet<usize>| {
            set.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "created={} taken={}",
            list(&self.created),
            list(&self.taken)
        )
    }

    fn parse(line: &str) -> Self {
        let list = |field: &str, prefix: &str| -> BTreeSet<usize> {
            let values = field
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix}…, got {line:?}"));
            values
                .split(',')
                .filter(|value| !value.is_empty())
                .map(|value| value.parse().expect("key index"))
                .collect()
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let [created, taken] = fields[..] else {
            panic!("expected two fields, got {line:?}");
        };
        Self {
            created: list(created, "created="),
            taken: list(taken, "taken="),
        }
    }
}

/// In round `i` (the rounds start at `start`, unix microseconds), tries to create
/// `cross-create/<i>` and to take `cross-take/<i>`; the other process does the same at the same
/// time.
async fn cross_race(store: &Shared, who: &str, start: u128) -> CrossWins {
    let mut wins = CrossWins::default();
    for i in 0..CROSS_KEYS {
        let round = start + i as u128 * CROSS_ROUND.as_micros();
        tokio::task::spawn_blocking(move || wait_until(round))
            .await
            .expect("wait");
        let item = Item::new(
            Key::new("cross-create", i.to_string()),
            object(json!({"by": who})),
        );
        match store.put(&item, Condition::Absent).await {
            Ok(()) => {
                wins.created.insert(i);
            }
            Err(StoreError::ConditionFailed) => {}
            Err(other) => panic!("{who}: create {i}: {other:?}"),
        }
        let key = Key::new("cross-take", i.to_string());
        if store.take(&key).await.expect("take").is_some() {
            wins.taken.insert(i);
        }
    }
    wins
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros()
}

/// Blocks until `instant` (unix microseconds), to the microsecond or so: a sleep would wake
/// up to a millisecond late, longer than a call takes, and the two processes would not meet.
fn wait_until(instant: u128) {
    loop {
        let left = instant.saturating_sub(unix_micros());
        match left {
            0 => return,
            1..2_000 => std::hint::spin_loop(),
            _ => std::thread::sleep(Duration::from_micros((left - 1_000) as u64)),
        }
    }
}

/// In the child: one line to the parent.
fn child_says(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "CHILD {line}").expect("stdout");
    stdout.flush().expect("stdout");
}

/// In the child: the parent's next line (the parent going away ends the child's test).
fn parent_line() -> String {
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line).expect("stdin");
    assert!(read > 0, "the parent closed stdin");
    line.trim_end().to_owned()
}

/// The child process of `embedded_other_process`, killed if the test ends before it does.
struct ChildProcess {
    process: std::process::Child,
    stdin: std::process::ChildStdin,
    said: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    fn spawn(path: &std::path::Path) -> Self {
        let mut process = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "store::embedded_other_process_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_STORE, path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the child process");
        let stdin = process.stdin.take().expect("child stdin");
        let stdout = process.stdout.take().expect("child stdout");
        let (tx, said) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                // Not always at the start: the harness's `test … ... ` precedes the first.
                if let Some((_, line)) = line.split_once("CHILD ")
                    && tx.send(line.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        Self {
            process,
            stdin,
            said,
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to the child");
        self.stdin.flush().expect("write to the child");
    }

    /// The rest of the child's next line, which must start with `word`.
    async fn expect(&mut self, word: &str) -> String {
        let line = tokio::time::timeout(CHILD_TIMEOUT, self.said.recv())
            .await
            .unwrap_or_else(|_| panic!("the child did not say `{word}` in time"))
            .unwrap_or_else(|| {
                panic!(
                    "the child ended before saying `{word}` ({:?}; its panic is above)",
                    self.process.try_wait()
                )
            });
        match line.split_once(' ') {
            Some((said, rest)) if said == word => rest.to_owned(),
            None if line == word => String::new(),
            _ => panic!("expected `{word}` from the child, got {line:?}"),
        }
    }

    /// Waits for the child to exit, which it must do successfully.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + CHILD_TIMEOUT;
        loop {
            if let Some(status) = self.process.try_wait().expect("child status") {
                assert!(status.success(), "the child failed: {status}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child did not exit in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
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
    Arc::new(EmbeddedStore::open(dir.path().join("store.sqlite3")).expect("open embedded store"))
}

/// A fresh DynamoDB table for one test. (moto alone is not atomic under concurrent requests;
/// the test command runs it through `tests/moto_server.py`, which serializes its DynamoDB
/// requests as DynamoDB serializes writes to an item, so the races here test the store.)
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

    /// A store on the same table through a client of its own (its own connections).
    async fn second_store(&self) -> Shared {
        let client = support::dynamo_client().await.expect("DynamoDB client");
        Arc::new(DynamoStore::new(client, &self.name))
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

/// Runs `RACERS` copies of `call` at once (released together by a barrier), racer `i` on store
/// `i % stores.len()`, and returns their results.
async fn race<T, F, Fut>(stores: &[Shared], call: F) -> Vec<Result<T, StoreError>>
where
    T: Send + 'static,
    F: Fn(Shared, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let barrier = Arc::clone(&barrier);
        let racer = call(Arc::clone(&stores[i % stores.len()]), i);
        racers.spawn(async move {
            barrier.wait().await;
            racer.await
        });
    }
    racers.join_all().await
}
