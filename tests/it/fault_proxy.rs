//! The DynamoDB fault proxy itself (gatehouse_local::faultproxy), on moto, with a bare SDK
//! client: each fault does what it says, the AWS SDK retries what it retries, and a retried
//! transaction is answered as DynamoDB answers it (which moto alone does not).

use crate::support::{dynamo_client_at, fault_proxy, sdk_config};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use gatehouse_local::faultproxy::{Fault, FaultProxy, Rule, Throttle};
use std::time::{Duration, Instant};

/// A fresh table, the proxy, and a direct client (no faults).
async fn setup(seed: u64) -> Option<(FaultProxy, String, aws_config::SdkConfig, Client)> {
    let sdk = sdk_config().await?;
    let proxy = fault_proxy(seed).await?;
    let table = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
    let direct = dynamo_client_at(&sdk, &proxy.direct_endpoint(), 1, Duration::from_secs(10));
    gatehouse::store::create_table(&direct, &table)
        .await
        .expect("create table");
    Some((proxy, table, sdk, direct))
}

fn key(sk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [
        ("pk".to_owned(), AttributeValue::S("proxy".into())),
        ("sk".to_owned(), AttributeValue::S(sk.into())),
    ]
    .into()
}

async fn exists(direct: &Client, table: &str, sk: &str) -> bool {
    direct
        .get_item()
        .table_name(table)
        .set_key(Some(key(sk)))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .is_some()
}

/// A transaction creating `sk` only if it is absent, under `token`.
fn create_once(
    client: &Client,
    table: &str,
    sk: &str,
    token: &str,
) -> impl Future<Output = Result<(), String>> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(key(sk)))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .unwrap();
    let send = client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(put).build())
        .client_request_token(token)
        .send();
    async move {
        send.await
            .map(|_| ())
            .map_err(|e| e.code().unwrap_or("no code").to_owned())
    }
}

#[tokio::test]
async fn a_transaction_whose_answer_was_dropped_is_retried_with_its_token_and_applied_once() {
    let Some((proxy, table, sdk, direct)) = setup(1).await else {
        return;
    };
    let client = dynamo_client_at(&sdk, &proxy.endpoint(), 3, Duration::from_secs(2));
    proxy.set(vec![
        Rule::every(Fault::AnswerDropped)
            .on(&["TransactWriteItems"])
            .times(1),
    ]);
    let token = uuid::Uuid::new_v4().to_string();
    // The first attempt is applied and its answer lost; the SDK's retry carries the same token
    // and is answered as DynamoDB would, with success, instead of being cancelled on the
    // condition the first attempt made false.
    assert_eq!(create_once(&client, &table, "t1", &token).await, Ok(()));
    assert_eq!(proxy.fired(), vec![1]);
    let stats = &proxy.stats()["TransactWriteItems"];
    assert_eq!((stats.requests, stats.applied, stats.replayed), (2, 1, 1));
    assert!(exists(&direct, &table, "t1").await);

    // The same token with other parameters: DynamoDB's mismatch error.
    assert_eq!(
        create_once(&client, &table, "t2", &token).await,
        Err("IdempotentParameterMismatchException".into())
    );
    assert!(!exists(&direct, &table, "t2").await);

    // moto on its own ignores the token: the very same request, straight to it, is applied
    // again and cancelled on its condition. This is why the proxy remembers tokens.
    let moto = dynamo_client_at(
        &sdk,
        &gatehouse_local::faultproxy::endpoint_from_env().unwrap(),
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        create_once(&moto, &table, "t1", &token).await,
        Err("TransactionCanceledException".into())
    );
}

#[tokio::test]
async fn an_answer_withheld_was_applied_though_the_client_gave_up() {
    let Some((proxy, table, sdk, direct)) = setup(2).await else {
        return;
    };
    let client = dynamo_client_at(&sdk, &proxy.endpoint(), 1, Duration::from_millis(500));
    proxy.set(vec![Rule::every(Fault::AnswerWithheld).on(&["PutItem"])]);
    let started = Instant::now();
    let put = client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("w1")))
        .send()
        .await;
    assert!(put.is_err(), "no answer: {put:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(proxy.settle(Duration::from_secs(5)).await);
    assert!(exists(&direct, &table, "w1").await, "applied all the same");

    // An answer dropped outright: the connection closes as soon as moto has answered.
    proxy.set(vec![Rule::every(Fault::AnswerDropped).on(&["PutItem"])]);
    let started = Instant::now();
    let put = client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("w2")))
        .send()
        .await;
    assert!(put.is_err(), "no answer: {put:?}");
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "not a timeout"
    );
    assert!(exists(&direct, &table, "w2").await);

    proxy.clear();
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("w3")))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hung_request_is_never_applied() {
    let Some((proxy, table, sdk, direct)) = setup(3).await else {
        return;
    };
    let client = dynamo_client_at(&sdk, &proxy.endpoint(), 2, Duration::from_millis(300));
    proxy.set(vec![Rule::every(Fault::Hang)]);
    let put = client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("h1")))
        .send()
        .await;
    assert!(put.is_err());
    assert_eq!(proxy.stats()["PutItem"].requests, 2, "the SDK tried twice");
    assert!(proxy.settle(Duration::from_secs(5)).await);
    proxy.clear();
    // Held requests are let go unforwarded when the fault ends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!exists(&direct, &table, "h1").await);
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("h2")))
        .send()
        .await
        .unwrap();
    assert!(exists(&direct, &table, "h2").await);
}

#[tokio::test]
async fn gone_refuses_connections_until_it_comes_back() {
    let Some((proxy, table, sdk, direct)) = setup(4).await else {
        return;
    };
    let client = dynamo_client_at(&sdk, &proxy.endpoint(), 1, Duration::from_secs(2));
    proxy.set(vec![Rule::every(Fault::Gone(None)).on(&["PutItem"])]);
    let put = client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("g1")))
        .send()
        .await;
    assert!(put.is_err());
    assert!(
        tokio::net::TcpStream::connect(proxy.addr()).await.is_err(),
        "connections are refused"
    );
    assert!(!exists(&direct, &table, "g1").await, "the direct way stays");
    proxy.heal();
    proxy.set(Vec::new());
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .put_item()
        .table_name(&table)
        .set_item(Some(key("g2")))
        .send()
        .await
        .unwrap();

    // Gone for a while: back by itself.
    proxy.set(vec![
        Rule::every(Fault::Gone(Some(Duration::from_millis(300)))).times(1),
    ]);
    assert!(
        client
            .get_item()
            .table_name(&table)
            .set_key(Some(key("g2")))
            .send()
            .await
            .is_err()
    );
    assert!(tokio::net::TcpStream::connect(proxy.addr()).await.is_err());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(tokio::net::TcpStream::connect(proxy.addr()).await.is_ok());
}

#[tokio::test]
async fn throttling_is_dynamodbs_own_error_and_the_sdk_retries_it() {
    let Some((proxy, table, sdk, direct)) = setup(5).await else {
        return;
    };
    let once = dynamo_client_at(&sdk, &proxy.endpoint(), 1, Duration::from_secs(2));
    for (kind, code) in [
        (
            Throttle::ProvisionedThroughputExceeded,
            "ProvisionedThroughputExceededException",
        ),
        (Throttle::Throttling, "ThrottlingException"),
    ] {
        proxy.set(vec![Rule::every(Fault::Throttle(kind))]);
        let err = once
            .put_item()
            .table_name(&table)
            .set_item(Some(key("x1")))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code));
        if kind == Throttle::ProvisionedThroughputExceeded {
            assert!(
                err.as_service_error()
                    .is_some_and(|e| e.is_provisioned_throughput_exceeded_exception())
            );
        }
    }
    assert!(!exists(&direct, &table, "x1").await, "never forwarded");

    // Standard retry mode: three attempts, the third past two throttles.
    let retrying = dynamo_client_at(&sdk, &proxy.endpoint(), 3, Duration::from_secs(2));
    proxy.set(vec![
        Rule::every(Fault::Throttle(Throttle::ProvisionedThroughputExceeded))
            .on(&["PutItem"])
            .times(2),
    ]);
    let before = proxy.stats()["PutItem"].requests;
    retrying
        .put_item()
        .table_name(&table)
        .set_item(Some(key("x2")))
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.stats()["PutItem"].requests - before, 3);
    assert!(exists(&direct, &table, "x2").await);
}

/// Which of `n` GetItems were throttled under `rules`, with a fresh proxy seeded `seed`.
async fn pattern(seed: u64, rule: Rule, n: usize) -> Option<Vec<bool>> {
    let (proxy, table, sdk, _) = setup(seed).await?;
    let client = dynamo_client_at(&sdk, &proxy.endpoint(), 1, Duration::from_secs(2));
    proxy.set(vec![rule]);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let get = client
            .get_item()
            .table_name(&table)
            .set_key(Some(key("p")))
            .send()
            .await;
        out.push(get.is_err());
    }
    Some(out)
}

#[tokio::test]
async fn requests_are_selected_by_operation_count_and_seeded_chance() {
    let throttle = Fault::Throttle(Throttle::Throttling);
    let Some(counted) = pattern(6, Rule::every(throttle).after(2).times(3), 8).await else {
        return;
    };
    assert_eq!(
        counted,
        [false, false, true, true, true, false, false, false]
    );
    let other_operation = pattern(6, Rule::every(throttle).on(&["PutItem"]), 4)
        .await
        .unwrap();
    assert_eq!(other_operation, [false; 4]);

    let chance = || Rule::every(throttle).probability(0.5);
    let a = pattern(42, chance(), 40).await.unwrap();
    let b = pattern(42, chance(), 40).await.unwrap();
    let c = pattern(43, chance(), 40).await.unwrap();
    assert_eq!(a, b, "the same seed, the same faults");
    assert_ne!(a, c);
    let hits = a.iter().filter(|x| **x).count();
    assert!((10..=30).contains(&hits), "{hits} of 40 at p = 0.5");
}

/// The same transactions, through `gatehouse::store::DynamoStore`, on a fresh table: what each
/// answered and what the table holds afterwards.
async fn transactions(emulated: bool) -> Option<(Vec<String>, Vec<String>)> {
    use gatehouse::store::{Condition, DynamoStore, Item, Key, Store, Write};
    use serde_json::{Map, json};
    let (proxy, table, sdk, direct) = setup(8).await?;
    proxy.emulate_transactions(emulated);
    let store = DynamoStore::new(
        dynamo_client_at(&sdk, &proxy.endpoint(), 1, Duration::from_secs(10)),
        table.clone(),
    );
    let seeded = DynamoStore::new(direct, table);
    let attrs = |pairs: &[(&str, serde_json::Value)]| -> Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let mark = |n: &str| {
        Write::Put(
            Item::new(Key::new("mark", n), Map::new()),
            Condition::Absent,
        )
    };
    let install = Key::new("install", "org");
    let set_shop = |shop: &str| Write::Update {
        key: install.clone(),
        set: attrs(&[("shop", json!({"name": shop})), ("at", json!(1))]),
        condition: Condition::Always,
    };
    let mut answers = Vec::new();
    let mut note = |r: Result<(), gatehouse::store::StoreError>| answers.push(format!("{r:?}"));
    // No install yet: the update's condition fails, the mark is not written.
    note(store.transact(&[mark("1"), set_shop("a")]).await);
    seeded
        .put(
            &Item::new(install.clone(), attrs(&[("version", json!(1))])),
            Condition::Always,
        )
        .await
        .unwrap();
    note(store.transact(&[mark("1"), set_shop("a")]).await);
    // Again: the mark is there now.
    note(store.transact(&[mark("1"), set_shop("b")]).await);
    note(
        store
            .transact(&[
                Write::Update {
                    key: install.clone(),
                    set: attrs(&[("version", json!(2))]),
                    condition: Condition::AttrEquals("version".into(), json!(1)),
                },
                mark("2"),
            ])
            .await,
    );
    note(
        store
            .transact(&[
                Write::Check(
                    install.clone(),
                    Condition::AttrEquals("version".into(), json!(1)),
                ),
                mark("3"),
            ])
            .await,
    );
    // An expired item is absent.
    seeded
        .put(
            &Item::new(Key::new("mark", "old"), Map::new()).expiring_at(1),
            Condition::Always,
        )
        .await
        .unwrap();
    note(store.transact(&[mark("old")]).await);
    note(
        store
            .transact(&[
                Write::Delete(install.clone(), Condition::Exists),
                Write::Check(Key::new("mark", "1"), Condition::Exists),
                Write::Put(
                    Item::new(Key::new("other", "x"), Map::new()),
                    Condition::Always,
                ),
            ])
            .await,
    );
    note(
        store
            .transact(&[Write::Delete(install.clone(), Condition::Exists), mark("4")])
            .await,
    );
    let mut held = Vec::new();
    for pk in ["mark", "install", "other"] {
        for item in seeded.query(pk).await.unwrap() {
            held.push(format!(
                "{:?} {:?} {:?}",
                item.key, item.attrs, item.expires_at
            ));
        }
    }
    Some((answers, held))
}

#[tokio::test]
async fn emulated_transactions_answer_and_write_as_motos_own() {
    let Some(native) = transactions(false).await else {
        return;
    };
    let emulated = transactions(true).await.unwrap();
    assert_eq!(
        native.0,
        [
            "Err(Cancelled([1]))",
            "Ok(())",
            "Err(Cancelled([0]))",
            "Ok(())",
            "Err(Cancelled([0]))",
            "Ok(())",
            "Ok(())",
            "Err(Cancelled([0]))",
        ]
    );
    assert_eq!(emulated, native);
}
