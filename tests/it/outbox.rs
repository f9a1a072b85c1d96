//! The outbox: every verified, deduplicated delivery is one `webhook.<topic>` event, written in
//! the transaction of its mark (and effect); a duplicate, concurrent or not, writes nothing; a
//! refused delivery writes nothing. Signed Haravan and Sesami deliveries go through the route
//! table's handlers, on the embedded store and on DynamoDB (moto); the events are read back
//! from the table and each validates against its JSON Schema (docs/events/).

use gatehouse::config::{Config, Vars};
use gatehouse::events::{Event, names};
use gatehouse::routes::{self, Platforms, Resolved};
use gatehouse::store::{Condition, Item, Key, Store};
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The events' secrets (events/secrets.json), by platform and name.
fn secret(platform: &str, name: &str) -> String {
    let secrets: Value = serde_json::from_str(
        &std::fs::read_to_string(gatehouse_local::events::dir().join("secrets.json")).unwrap(),
    )
    .unwrap();
    secrets[platform][name].as_str().unwrap().to_owned()
}

/// An app on the embedded store of `dir`, configured as the events are.
async fn embedded_app(dir: &std::path::Path) -> Arc<Platforms> {
    let vars = gatehouse_local::events::local_vars(dir);
    Arc::new(Platforms::from_vars(&vars).await.unwrap())
}

/// An app on a fresh table of moto's DynamoDB; `None` without moto.
pub(crate) async fn dynamo_app(dir: &std::path::Path) -> Option<Arc<Platforms>> {
    let sdk = crate::support::sdk_config().await?;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
    gatehouse::store::create_table(&client, &table)
        .await
        .unwrap();
    let mut vars: Vars = gatehouse_local::events::local_vars(dir);
    vars.set("TABLE_NAME", &table);
    vars.set("GATEHOUSE_AWS_TIMEOUT_SECONDS", "30");
    let config = Config::from_vars(&vars).unwrap();
    let store = Arc::new(gatehouse::store::DynamoStore::new(client, table));
    Some(Arc::new(
        Platforms::with_store(&vars, config, store, Some(&sdk)).unwrap(),
    ))
}

/// A signed Haravan delivery of `topic` with this body.
pub(crate) fn haravan_delivery(topic: &str, body: &[u8]) -> Request {
    use base64::Engine as _;
    let tag = gatehouse::crypto::hmac_sha256(secret("haravan", "client_secret").as_bytes(), body);
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/haravan/webhooks")
        .header("content-type", "application/json")
        .header("x-haravan-topic", topic)
        .header(
            "x-haravan-hmacsha256",
            base64::engine::general_purpose::STANDARD.encode(tag),
        )
        .body(Body::Binary(body.to_vec()))
        .unwrap()
}

/// A Sesami delivery of `event` with this signed `data` (`event` added to it, as Sesami signs).
fn sesami_delivery(event: &str, mut data: Map<String, Value>, key: &str) -> Request {
    data.insert("event".into(), json!(event));
    let hmac = gatehouse::sesami::sign(key.as_bytes(), &data);
    let body = json!({"event": event, "data": data, "hmac": hmac}).to_string();
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/sesami/webhooks")
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .unwrap()
}

/// Runs `req` through the route table's handler on `app`: status and JSON answer.
pub(crate) async fn dispatch(app: &Platforms, req: Request) -> (u16, Value) {
    let all = routes::all();
    let Resolved::Route(route) = routes::resolve(&all, req.method(), req.uri().path()) else {
        panic!("no route for {}", req.uri());
    };
    let resp = routes::answer(route.format(), route.function.call(app, &req).await);
    let status = resp.status().as_u16();
    let body = match resp.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        Body::Empty => String::new(),
        _ => String::new(),
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Every event in the outbox of `store`, each validated against its schema.
pub(crate) async fn outbox(store: &dyn Store) -> Vec<Event> {
    let events: Vec<Event> = crate::harness::of_kind(store, gatehouse::events::OUTBOX_KIND)
        .await
        .iter()
        .map(|item| Event::from_attrs(&item.attrs).unwrap())
        .collect();
    for event in &events {
        crate::event_schemas::assert_valid(event);
    }
    events
}

/// An installed Haravan org, as far as `shop/update` needs one (it updates in place).
async fn seed_org(store: &dyn Store, org: &str) {
    let mut attrs = Map::new();
    attrs.insert("orgid".into(), json!(org));
    let item = Item::new(gatehouse::haravan::install_key(org), attrs);
    store.put(&item, Condition::Always).await.unwrap();
}

/// `total` Haravan deliveries of which every tenth repeats an earlier one (some sent at the same
/// time as their original, some later), `concurrency` at a time: exactly one event per unique
/// delivery, carrying its payload, and every duplicate answered as one.
async fn deliveries_make_one_event_each(app: Arc<Platforms>, total: usize, concurrency: usize) {
    const ORG: &str = "1000600600";
    seed_org(app.store.as_ref(), ORG).await;
    // The unique deliveries: mostly a topic Gatehouse does not act on (mark and event alone),
    // every fifth a `shop/update` of an installed org (mark, effect and event).
    let unique = total - total / 10;
    let bodies: Vec<(String, Vec<u8>)> = (0..unique)
        .map(|i| {
            if i % 5 == 0 {
                let body = json!({"id": ORG, "name": format!("shop {i}"), "n": i});
                ("shop/update".to_owned(), body.to_string().into_bytes())
            } else {
                let body = json!({"org_id": ORG, "order": {"id": i, "lines": [1, 2.5, "x"]}});
                ("orders/create".to_owned(), body.to_string().into_bytes())
            }
        })
        .collect();
    // The sending order: each duplicate right after its original (so that within a wave the two
    // race) or at the end.
    let mut order: Vec<usize> = Vec::with_capacity(total);
    for i in 0..unique {
        order.push(i);
        if order.len() < total && i % 9 == 4 {
            order.push(i); // sent alongside its original
        }
    }
    let mut i = 0;
    while order.len() < total {
        order.push(i * 7 % unique); // sent again later
        i += 1;
    }
    assert_eq!(order.len(), total);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(total);
    for n in order {
        let (topic, body) = bodies[n].clone();
        let app = app.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            dispatch(&app, haravan_delivery(&topic, &body)).await
        }));
    }
    let mut duplicates = 0;
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        if answer["duplicate"] == true {
            duplicates += 1;
        }
    }
    assert_eq!(
        duplicates,
        total - unique,
        "every repeat is answered as one"
    );

    let events = outbox(app.store.as_ref()).await;
    assert_eq!(events.len(), unique, "one event per unique delivery");
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), unique, "ids are distinct");
    let mut by_payload: BTreeMap<String, &Event> = BTreeMap::new();
    for event in &events {
        assert_eq!(event.platform, "haravan");
        assert_eq!(event.tenant, ORG);
        assert_eq!(
            event.name,
            format!(
                "{}{}",
                names::WEBHOOK_PREFIX,
                event.data["topic"].as_str().unwrap()
            )
        );
        by_payload.insert(event.data["payload"].to_string(), event);
    }
    for (topic, body) in &bodies {
        let payload: Value = serde_json::from_slice(body).unwrap();
        let event = by_payload
            .get(&payload.to_string())
            .unwrap_or_else(|| panic!("no event for {payload}"));
        assert_eq!(event.data["topic"], json!(topic));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_deliveries_with_duplicates_make_one_event_each_embedded() {
    let dir = tempfile::tempdir().unwrap();
    deliveries_make_one_event_each(embedded_app(dir.path()).await, 5_000, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_with_duplicates_make_one_event_each_on_dynamodb() {
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = dynamo_app(dir.path()).await else {
        return;
    };
    deliveries_make_one_event_each(app, 500, 8).await;
}

/// A delivery that is refused stores no event: a bad signature, a `shop/update` of an org not
/// installed (404, retried later by Haravan), a malformed topic, a Sesami delivery under another
/// key. What is accepted makes its event, Sesami's too.
#[tokio::test]
async fn a_refused_delivery_writes_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let app = embedded_app(dir.path()).await;
    let body = json!({"id": "1000700700", "name": "x"}).to_string();

    let mut bad = haravan_delivery("shop/update", body.as_bytes());
    bad.headers_mut()
        .insert("x-haravan-hmacsha256", "AAAA".parse().unwrap());
    assert_eq!(dispatch(&app, bad).await.0, 401);
    let (status, answer) = dispatch(&app, haravan_delivery("shop/update", body.as_bytes())).await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["reason"], "not_installed");
    let (status, _) = dispatch(&app, haravan_delivery("orders create", body.as_bytes())).await;
    assert_eq!(status, 400);
    let long = "a".repeat(129);
    assert_eq!(
        dispatch(&app, haravan_delivery(&long, body.as_bytes()))
            .await
            .0,
        400
    );
    let data = Map::from_iter([("shopId".to_owned(), json!("shop-1"))]);
    let forged = sesami_delivery("uninstall_app", data.clone(), "not the secret");
    assert_eq!(dispatch(&app, forged).await.0, 401);
    assert!(outbox(app.store.as_ref()).await.is_empty());
    assert!(
        crate::harness::of_kind(app.store.as_ref(), "webhook")
            .await
            .is_empty(),
        "and no mark"
    );

    // Accepted: Sesami's uninstall of a shop not installed (it holds already), and again (a
    // duplicate).
    let key = secret("sesami", "client_secret");
    let (status, answer) =
        dispatch(&app, sesami_delivery("uninstall_app", data.clone(), &key)).await;
    assert_eq!(status, 200, "{answer}");
    let (_, answer) = dispatch(&app, sesami_delivery("uninstall_app", data, &key)).await;
    assert_eq!(answer["duplicate"], true);
    let events = outbox(app.store.as_ref()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "webhook.uninstall_app");
    assert_eq!(events[0].source(), "gatehouse.sesami");
    assert_eq!(events[0].tenant, "shop-1");
    assert_eq!(events[0].data["payload"]["shopId"], "shop-1");
}

/// Haravan's `app/uninstalled` of an installed org: the install, its sessions, the mark and the
/// event go in one transaction, with as many sessions as leave room for the event.
#[tokio::test]
async fn an_uninstall_with_many_sessions_still_fits_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let app = embedded_app(dir.path()).await;
    const ORG: &str = "1000800800";
    seed_org(app.store.as_ref(), ORG).await;
    for n in 0..60 {
        let mut attrs = Map::new();
        attrs.insert("orgid".into(), json!(ORG));
        attrs.insert("sid".into(), json!(format!("sid{n}")));
        let session = Item::new(
            Key::new(
                gatehouse::haravan::org_sessions_partition(ORG),
                format!("s{n}"),
            ),
            attrs,
        )
        .expiring_at(gatehouse::store::now() + 3600);
        app.store.put(&session, Condition::Always).await.unwrap();
        let index = Item::new(
            Key::new(
                gatehouse::haravan::sid_partition(&format!("sid{n}")),
                format!("{ORG}#s{n}"),
            ),
            Map::new(),
        )
        .expiring_at(gatehouse::store::now() + 3600);
        app.store.put(&index, Condition::Always).await.unwrap();
    }
    let body = json!({"org_id": ORG, "event_type": "app/uninstalled"}).to_string();
    let (status, answer) =
        dispatch(&app, haravan_delivery("app/uninstalled", body.as_bytes())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["handled"], true);
    // The delivery's event and the removal's, in the one transaction with the mark, the install
    // and the sessions that fit.
    let mut names: Vec<String> = outbox(app.store.as_ref())
        .await
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["connection.removed", "webhook.app/uninstalled"]);
    assert!(
        crate::harness::of_kind(app.store.as_ref(), "session#haravan")
            .await
            .is_empty()
    );
}

/// A payment's outcome, recorded by whichever of MoMo's callbacks and the reconciler's runs
/// gets there first, all at once: one `payment.*` event, with the outcome.
async fn one_payment_event_whoever_records_it(h: crate::harness::Harness) {
    let sim = h.server.momo.clone();
    sim.set_drop_callbacks(true);
    let http = crate::support::http();
    let mut references = Vec::new();
    for (msisdn, status) in [("46733123450", "SUCCESSFUL"), ("46733123451", "FAILED")] {
        let answer: Value = http
            .post(h.url("/momo/requesttopay"))
            .header("content-type", "application/json")
            .body(
                json!({"amount": "10.50", "currency": "EUR", "externalId": format!("race-{msisdn}"),
                       "payer": {"partyIdType": "MSISDN", "partyId": msisdn}})
                .to_string(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reference = answer["referenceId"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned();
        let reason = (status == "FAILED").then(|| json!("PAYER_NOT_FOUND"));
        sim.set_status(&reference, status, reason);
        references.push((reference, status));
    }
    let later = gatehouse::store::now() + 3600;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = h.server.app.clone();
        let http = http.clone();
        let url = h.url(&format!("/momo/callback/{}", references[i % 2].0));
        tasks.push(tokio::spawn(async move {
            if i % 4 < 2 {
                gatehouse::momo::reconcile_at(&app.momo, later)
                    .await
                    .map(|_| ())
                    .ok();
            } else {
                let _ = http
                    .put(url)
                    .header("content-type", "application/json")
                    .body(r#"{"status":"SUCCESSFUL"}"#)
                    .send()
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = outbox(h.server.app.store.as_ref()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for (reference, status) in &references {
        let event = events.iter().find(|e| &e.tenant == reference).unwrap();
        assert_eq!(event.source(), "gatehouse.momo");
        let name = if *status == "SUCCESSFUL" {
            names::PAYMENT_SUCCEEDED
        } else {
            names::PAYMENT_FAILED
        };
        assert_eq!(event.name, name);
        assert_eq!(event.data["status"], json!(status));
        assert_eq!(event.data["amount"], "10.50");
        assert!(event.data.get("payer").is_none(), "never the payer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_event_whoever_records_it_embedded() {
    let mut vars = Vars::default();
    vars.set("MOMO_LOCAL_RECONCILE_SECONDS", "0");
    let h = crate::harness::Harness::start(crate::harness::Backend::Embedded, vars)
        .await
        .unwrap();
    one_payment_event_whoever_records_it(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_event_whoever_records_it_on_dynamodb() {
    let mut vars = Vars::default();
    vars.set("MOMO_LOCAL_RECONCILE_SECONDS", "0");
    let Some(h) = crate::harness::Harness::start(crate::harness::Backend::Dynamo, vars).await
    else {
        return;
    };
    one_payment_event_whoever_records_it(h).await;
}

/// A delivery too large for EventBridge (Haravan's limit is 256 KiB, as is EventBridge's, and
/// the event adds its envelope): kept whole in the outbox, published as a reference, and the
/// reference answered by `GET /v1/events/{platform}/{id}` for an IAM caller (403 without one).
#[tokio::test]
async fn an_oversized_delivery_is_referenced_and_read_back_whole() {
    const BLOB: usize = 256 * 1024 - 64;
    let dir = tempfile::tempdir().unwrap();
    let app = embedded_app(dir.path()).await;
    let body = json!({"org_id": "1000900900", "blob": "y".repeat(BLOB)}).to_string();
    assert!(body.len() <= gatehouse::haravan::MAX_BODY);
    let (status, answer) =
        dispatch(&app, haravan_delivery("products/update", body.as_bytes())).await;
    assert_eq!(status, 200, "{answer}");
    let events = outbox(app.store.as_ref()).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let (detail, referenced) = event.detail();
    assert!(referenced);
    let detail: Value = serde_json::from_str(&detail).unwrap();
    let path = detail["data_ref"]["path"].as_str().unwrap().to_owned();
    assert_eq!(path, format!("/v1/events/haravan/{}", event.id));

    let read = |iam: bool| {
        let mut req = lambda_http::http::Request::builder()
            .method("GET")
            .uri(&path)
            .body(Body::Empty)
            .unwrap();
        if iam {
            req.extensions_mut()
                .insert(gatehouse::context::RequestInfo {
                    iam_caller: Some("arn:aws:iam::123456789012:user/app".into()),
                    ..Default::default()
                });
        }
        req
    };
    let (status, whole) = dispatch(&app, read(true)).await;
    assert_eq!(status, 200);
    assert_eq!(whole, event.to_json());
    assert_eq!(
        whole["data"]["payload"]["blob"].as_str().unwrap().len(),
        BLOB
    );
    assert_eq!(dispatch(&app, read(false)).await.0, 403);
}

/// The outbox holds the largest delivery either platform accepts.
#[test]
fn the_webhooks_body_limits_fit_the_outbox() {
    for limit in [
        gatehouse::haravan::MAX_BODY,
        gatehouse::sesami::MAX_WEBHOOK_BYTES,
    ] {
        assert!(limit + 1024 < gatehouse::events::MAX_EVENT_BYTES);
    }
}
