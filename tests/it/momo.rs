//! MTN MoMo end to end: the local server against the MoMo simulator over real HTTP.
//!
//! The simulator's test numbers: a payer MSISDN ending in 0 succeeds, 1 fails, 2 stays pending,
//! 4 stays pending silently (no callback until the test ends it).

use crate::harness::{Backend, Harness};
use gatehouse::config::Vars;
use gatehouse::momo::{self, Provisioned, transaction_key};
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, Item, Key, Store, StoreError, Write};
use gatehouse_simulators::momo::RequestToPayFault;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn payment(msisdn: &str, external_id: &str) -> Value {
    json!({
        "amount": "10.50",
        "currency": "EUR",
        "externalId": external_id,
        "payer": {"partyIdType": "MSISDN", "partyId": msisdn},
        "payerMessage": "Order 42",
        "payeeNote": "Thanks",
    })
}

async fn request_to_pay(h: &Harness, body: &Value, idempotency: Option<&str>) -> (u16, Value) {
    let mut req = crate::support::http()
        .post(h.url("/momo/requesttopay"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = idempotency {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn status_of(h: &Harness, reference: &str) -> Option<gatehouse::store::Item> {
    h.server
        .app
        .store
        .get(&transaction_key(reference))
        .await
        .unwrap()
}

/// Waits (bounded) until the transaction leaves PENDING, or the deadline passes.
async fn settled(h: &Harness, reference: &str, callbacks: usize) -> gatehouse::store::Item {
    for _ in 0..100 {
        let item = status_of(h, reference).await.expect("transaction stored");
        if item.str("status") != Some("PENDING") || h.server.momo.callbacks_sent() >= callbacks {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return status_of(h, reference).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status_of(h, reference).await.unwrap()
}

async fn successful_payment(h: Harness) {
    let (status, body) = request_to_pay(&h, &payment("46733123450", "order-1"), None).await;
    assert_eq!(status, 202, "{body}");
    let reference = body["referenceId"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&reference).is_ok());
    let tx = settled(&h, &reference, 1).await;
    assert_eq!(tx.str("status"), Some("SUCCESSFUL"), "{:?}", tx.attrs);
    assert_eq!(tx.str("amount"), Some("10.50"));
    assert_eq!(h.server.momo.callbacks_sent(), 1);
}

#[tokio::test]
async fn a_successful_payment_on_the_embedded_store() {
    successful_payment(Harness::embedded().await).await;
}

#[tokio::test]
async fn a_successful_payment_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    successful_payment(h).await;
}

#[tokio::test]
async fn a_failed_payment_keeps_its_reason_and_replays_change_nothing() {
    let h = Harness::embedded().await;
    let (status, body) = request_to_pay(&h, &payment("46733123451", "order-2"), None).await;
    assert_eq!(status, 202, "{body}");
    let reference = body["referenceId"].as_str().unwrap().to_owned();
    let tx = settled(&h, &reference, 1).await;
    assert_eq!(tx.str("status"), Some("FAILED"));
    assert!(
        tx.attrs.get("reason").is_some_and(|r| !r.is_null()),
        "{:?}",
        tx.attrs
    );

    // Replays, by PUT and POST, saying otherwise: the final status stays.
    for method in ["PUT", "POST"] {
        let code = h
            .server
            .momo
            .send_callback(&reference, method, &json!({"status": "SUCCESSFUL"}))
            .await;
        assert_eq!(code, 200);
    }
    h.server.momo.set_status(&reference, "PENDING", None);
    let code = h
        .server
        .momo
        .send_callback(&reference, "PUT", &json!({"status": "PENDING"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("FAILED")
    );
}

#[tokio::test]
async fn a_forged_callback_never_records_success() {
    let h = Harness::embedded().await;
    // Really FAILED, the callback says SUCCESSFUL.
    h.server
        .momo
        .forge_next_callback(json!({"status": "SUCCESSFUL", "financialTransactionId": "1"}));
    let (_, body) = request_to_pay(&h, &payment("46733123451", "order-3"), None).await;
    let reference = body["referenceId"].as_str().unwrap().to_owned();
    let tx = settled(&h, &reference, 1).await;
    assert_eq!(tx.str("status"), Some("FAILED"));

    // Really PENDING, the callback says SUCCESSFUL: still PENDING.
    h.server
        .momo
        .forge_next_callback(json!({"status": "SUCCESSFUL"}));
    let (_, body) = request_to_pay(&h, &payment("46733123452", "order-4"), None).await;
    let reference = body["referenceId"].as_str().unwrap().to_owned();
    let tx = settled(&h, &reference, 2).await;
    assert_eq!(tx.str("status"), Some("PENDING"));
    // Once MoMo settles it, a later callback records the confirmed outcome.
    h.server.momo.set_status(&reference, "SUCCESSFUL", None);
    let code = h
        .server
        .momo
        .send_callback(&reference, "POST", &json!({"status": "SUCCESSFUL"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("SUCCESSFUL")
    );
}

#[tokio::test]
async fn bad_requests_and_callbacks_are_refused_and_change_nothing() {
    let h = Harness::embedded().await;
    let bad = [
        json!({"amount": 10, "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "10,5", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "-1", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "0", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "1", "currency": "eur", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "1", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "PHONE", "partyId": "46733123450"}}),
        json!({"amount": "1", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "EMAIL", "partyId": "not-an-email"}}),
        json!({"amount": "1", "currency": "EUR", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        json!({"amount": "1", "currency": "EUR", "externalId": "x", "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}, "extra": 1}),
    ];
    for body in bad {
        let (status, answer) = request_to_pay(&h, &body, None).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["message"].is_string());
    }
    assert!(h.items("tx#momo").await.is_empty());
    assert!(h.items("idem#momo").await.is_empty());

    // A payment to settle, then malformed callbacks for it.
    let (_, body) = request_to_pay(&h, &payment("46733123452", "order-5"), None).await;
    let reference = body["referenceId"].as_str().unwrap().to_owned();
    settled(&h, &reference, 1).await;
    let client = crate::support::http();
    let put = |path: String, body: &'static str| {
        let req = client
            .put(h.url(&path))
            .header("content-type", "application/json")
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        put(format!("/momo/callback/{reference}"), "not json").await,
        400
    );
    assert_eq!(
        put(format!("/momo/callback/{}", uuid::Uuid::new_v4()), "{}").await,
        404
    );
    assert_eq!(put("/momo/callback/not-a-uuid".into(), "{}").await, 404);
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("PENDING")
    );
}

#[tokio::test]
async fn the_same_external_id_and_idempotency_key_make_one_payment() {
    let h = Harness::embedded().await;
    let body = payment("46733123450", "order-6");
    let (s1, a) = request_to_pay(&h, &body, Some("key-1")).await;
    let (s2, b) = request_to_pay(&h, &body, Some("key-1")).await;
    assert_eq!((s1, s2), (202, 200), "{a} {b}");
    assert_eq!(a["referenceId"], b["referenceId"]);
    let (s3, c) = request_to_pay(&h, &body, Some("key-2")).await;
    assert_eq!(s3, 202);
    assert_ne!(a["referenceId"], c["referenceId"]);
    assert_eq!(h.items("tx#momo").await.len(), 2);
}

#[tokio::test]
async fn provisioning_creates_a_user_once_and_payments_use_it() {
    let h = Harness::embedded().await;
    let app = &h.server.app;
    let mut secret = app.secrets.raw_json("momo").await.unwrap();
    let sub_key = secret["subscription_keys"]["collection"]
        .as_str()
        .unwrap()
        .to_owned();
    secret.insert("client_id".into(), "".into());
    secret.insert("client_secret".into(), "".into());
    app.secrets.write_json("momo", &secret).await.unwrap();
    let users = h.server.momo.api_users();

    let first = momo::provision(&app.momo, &sub_key, "127.0.0.1")
        .await
        .unwrap();
    let Provisioned::Created(user) = first else {
        panic!("expected a new user, got {first:?}")
    };
    assert_eq!(h.server.momo.api_users(), users + 1);
    let stored = app.secrets.raw_json("momo").await.unwrap();
    assert_eq!(stored["client_id"], json!(user));
    assert_eq!(
        stored["subscription_keys"]["collection"],
        json!(sub_key),
        "other keys kept"
    );
    let again = momo::provision(&app.momo, &sub_key, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(again, Provisioned::AlreadyWorking(user));
    assert_eq!(
        h.server.momo.api_users(),
        users + 1,
        "a working setup is left alone"
    );

    let (status, body) = request_to_pay(&h, &payment("46733123450", "order-7"), None).await;
    assert_eq!(status, 202, "{body}");
}

async fn concurrent_tokens(h: Harness) {
    let sim = h.server.momo.clone();
    sim.set_token_delay(Duration::from_millis(300));
    let mut vars = Vars::default();
    vars.set("PUBLIC_BASE_URL", h.server.base());
    vars.set(
        "GATEHOUSE_SECRETS_FILE",
        h.server.app.config.secrets_file.to_string_lossy(),
    );
    vars.set("MOMO_BASE_URL", format!("{}/_sim/momo", h.server.base()));
    let config = gatehouse::config::Config::from_vars(&vars).unwrap();
    let apps: Vec<Arc<Platforms>> = (0..20)
        .map(|_| {
            Arc::new(
                Platforms::with_store(&vars, config.clone(), h.server.app.store.clone(), None)
                    .unwrap(),
            )
        })
        .collect();
    let before = sim.token_requests("collection");
    let handles: Vec<_> = apps
        .iter()
        .map(|app| {
            let app = app.clone();
            tokio::spawn(async move { momo::access_token(&app.momo, "collection").await })
        })
        .collect();
    let mut tokens = Vec::new();
    for handle in handles {
        let token = handle.await.unwrap().expect("a token");
        tokens.push(secrecy::ExposeSecret::expose_secret(&token).to_owned());
    }
    assert_eq!(
        sim.token_requests("collection") - before,
        1,
        "one token request reached MoMo"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]));
}

#[tokio::test]
async fn twenty_concurrent_token_users_make_one_token_request() {
    concurrent_tokens(Harness::embedded().await).await;
}

#[tokio::test]
async fn twenty_concurrent_token_users_on_dynamodb_make_one_token_request() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    concurrent_tokens(h).await;
}

// ---------------------------------------------------------------------------------------------
// Ambiguous answers, idempotency and the reconciler

/// The app's store, counting the applied writes that record an outcome (a SUCCESSFUL or FAILED
/// status written onto a `tx#momo` item, whichever store call writes it), and able to lose the
/// answer of the next transaction: applied, then reported unavailable, as a timeout would.
struct Recording {
    inner: Arc<dyn Store>,
    outcomes: AtomicUsize,
    /// Lose the answer of the next transaction that writes a payment (after applying it).
    lose_next_transact_answer: AtomicBool,
}

impl Recording {
    fn outcomes(&self) -> usize {
        self.outcomes.load(Ordering::SeqCst)
    }

    fn count(&self, key: &Key, attrs: &Map<String, Value>) {
        let final_status = matches!(
            attrs.get("status").and_then(Value::as_str),
            Some("SUCCESSFUL" | "FAILED")
        );
        if key.pk.starts_with("tx#momo#") && final_status {
            self.outcomes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl Store for Recording {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        self.inner.put(item, condition).await?;
        self.count(&item.key, &item.attrs);
        Ok(())
    }
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.inner.update(key, set, condition).await?;
        self.count(key, set);
        Ok(())
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.take(key).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(pk).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.inner.transact(writes).await?;
        for write in writes {
            match write {
                Write::Put(item, _) => self.count(&item.key, &item.attrs),
                Write::Update { key, set, .. } => self.count(key, set),
                Write::Delete(..) | Write::Check(..) => {}
            }
        }
        // Only a transaction that writes a payment (not a token lease's release, say).
        let writes_payment = writes.iter().any(|w| w.key().pk.starts_with("tx#momo#"));
        if writes_payment && self.lose_next_transact_answer.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the answer was lost".into()));
        }
        Ok(())
    }
}

/// A server on `backend` whose store is [`Recording`]; the local reconciler's timer is off
/// unless `vars` turns it on. `None` when DynamoDB is asked for and not configured.
async fn start(backend: Backend, mut vars: Vars) -> Option<(Harness, Arc<Recording>)> {
    vars.set_default("MOMO_LOCAL_RECONCILE_SECONDS", "0");
    if let Backend::Dynamo = backend {
        let client = crate::support::dynamo_client().await?;
        let table = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
        gatehouse::store::create_table(&client, &table)
            .await
            .expect("create table");
        vars.set("TABLE_NAME", table);
    }
    let slot: Arc<OnceLock<Arc<Recording>>> = Arc::default();
    let built = slot.clone();
    let h = Harness::start_with(vars, move |vars| async move {
        let mut deps = gatehouse::Deps::from_vars(&vars).await?;
        let recording = Arc::new(Recording {
            inner: deps.store.clone(),
            outcomes: AtomicUsize::new(0),
            lose_next_transact_answer: AtomicBool::new(false),
        });
        let _ = built.set(recording.clone());
        deps.store = recording;
        Ok(Platforms::new(Arc::new(deps), &vars)?)
    })
    .await;
    let recording = slot.get().expect("the app was built").clone();
    Some((h, recording))
}

/// The references in the index of pending payments (every shard), oldest first.
async fn pending(h: &Harness) -> Vec<String> {
    let mut entries = h.items("pending#momo").await;
    // Each shard is in creation order; across shards, the sort key (`<created_at>#<ref>`) is.
    entries.sort_by(|a, b| a.key.sk.cmp(&b.key.sk));
    entries
        .iter()
        .map(|i| i.str("reference").unwrap_or_default().to_owned())
        .collect()
}

/// An hour from now: every pending payment is old enough for the reconciler then.
fn later() -> i64 {
    gatehouse::store::now() + 3600
}

/// A short HTTP timeout, so that a request MoMo answers late times out quickly.
fn quick_timeout() -> Vars {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_HTTP_TIMEOUT_SECONDS", "1");
    vars
}

/// MoMo takes the payment but answers after the app gave up: the payment is kept PENDING and
/// unconfirmed, the caller's retry with the same key asks MoMo instead of paying again, and the
/// reconciler records the outcome (the callback being lost) once.
async fn timed_out_request(h: Harness, recording: Arc<Recording>) {
    let sim = h.server.momo.clone();
    sim.set_drop_callbacks(true);
    sim.fault_next_request_to_pay(RequestToPayFault::AcceptThenStall(Duration::from_secs(3)));
    let body = payment("46733123454", "order-timeout");
    let (status, first) = request_to_pay(&h, &body, Some("key-timeout")).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "PENDING", "{first}");
    assert_eq!(first["submitted"], "unknown", "{first}");
    assert!(first["message"].is_string(), "{first}");
    let reference = first["referenceId"].as_str().unwrap().to_owned();
    let tx = status_of(&h, &reference)
        .await
        .expect("the payment is kept");
    assert_eq!(tx.str("status"), Some("PENDING"));
    assert_eq!(tx.str("submitted"), Some("unknown"));
    assert_eq!(pending(&h).await, vec![reference.clone()]);
    assert_eq!(sim.requests_to_pay_received(), 1);

    let (status, again) = request_to_pay(&h, &body, Some("key-timeout")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["referenceId"], first["referenceId"]);
    assert_eq!(again["status"], "PENDING");
    assert_eq!(
        again["submitted"], "accepted",
        "MoMo's status knows it: {again}"
    );
    assert_eq!(
        sim.requests_to_pay_received(),
        1,
        "no second request to pay"
    );

    sim.set_status(&reference, "SUCCESSFUL", None);
    let app = &h.server.app;
    let run = momo::reconcile_at(&app.momo, later()).await.unwrap();
    assert_eq!(run.recorded, 1, "{run:?}");
    let tx = status_of(&h, &reference).await.unwrap();
    assert_eq!(tx.str("status"), Some("SUCCESSFUL"), "{:?}", tx.attrs);
    assert!(tx.str("financial_transaction_id").is_some());
    assert!(pending(&h).await.is_empty());
    let run = momo::reconcile_at(&app.momo, later()).await.unwrap();
    assert_eq!((run.checked, run.recorded), (0, 0), "{run:?}");
    assert_eq!(recording.outcomes(), 1, "recorded once");

    let (status, last) = request_to_pay(&h, &body, Some("key-timeout")).await;
    assert_eq!(
        (status, &last["status"]),
        (200, &json!("SUCCESSFUL")),
        "{last}"
    );
    assert_eq!(sim.requests_to_pay_received(), 1);
}

#[tokio::test]
async fn a_timed_out_request_momo_took_stays_pending_and_is_sent_once() {
    let (h, recording) = start(Backend::Embedded, quick_timeout()).await.unwrap();
    timed_out_request(h, recording).await;
}

#[tokio::test]
async fn a_timed_out_request_momo_took_stays_pending_and_is_sent_once_on_dynamodb() {
    let Some((h, recording)) = start(Backend::Dynamo, quick_timeout()).await else {
        return;
    };
    timed_out_request(h, recording).await;
}

/// A 5xx, a dropped connection, an answer that is not MoMo's, a 409 (MoMo already has this
/// reference): the payment is kept unconfirmed, and a retry with the same key learns the
/// outcome from MoMo's status without sending again.
#[tokio::test]
async fn ambiguous_answers_keep_the_payment_and_a_retry_asks_momo() {
    let (h, recording) = start(Backend::Embedded, Vars::default()).await.unwrap();
    let sim = h.server.momo.clone();
    sim.set_drop_callbacks(true);
    let faults = [
        RequestToPayFault::AcceptThenFail(500),
        RequestToPayFault::AcceptThenFail(503),
        RequestToPayFault::AcceptThenDrop,
        RequestToPayFault::AcceptThenGarble,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        sim.fault_next_request_to_pay(fault);
        let body = payment("46733123450", &format!("order-ambiguous-{i}"));
        let (status, first) = request_to_pay(&h, &body, Some("key")).await;
        assert_eq!(status, 202, "{fault:?}: {first}");
        assert_eq!(first["submitted"], "unknown", "{fault:?}: {first}");
        let reference = first["referenceId"].as_str().unwrap().to_owned();
        let tx = status_of(&h, &reference).await;
        assert_eq!(
            tx.as_ref().and_then(|t| t.str("status")),
            Some("PENDING"),
            "{fault:?}"
        );
        let (status, again) = request_to_pay(&h, &body, Some("key")).await;
        assert_eq!(status, 200, "{fault:?}: {again}");
        assert_eq!(again["referenceId"], first["referenceId"], "{fault:?}");
        assert_eq!(again["status"], "SUCCESSFUL", "{fault:?}: {again}");
        assert_eq!(
            sim.requests_to_pay_received(),
            i + 1,
            "{fault:?}: sent once"
        );
        assert!(!pending(&h).await.contains(&reference), "{fault:?}");
    }
    assert_eq!(recording.outcomes(), faults.len());

    // 409: MoMo says it has this reference already, so it is no refusal.
    sim.fault_next_request_to_pay(RequestToPayFault::Refuse(409));
    let (status, answer) =
        request_to_pay(&h, &payment("46733123450", "order-409"), Some("key")).await;
    assert_eq!(
        (status, &answer["submitted"]),
        (202, &json!("unknown")),
        "{answer}"
    );
}

/// MoMo fails before taking the payment (500): kept unconfirmed; a retry with the same key
/// sends nothing while MoMo has no record yet; the reconciler, once the payment is old enough,
/// records it FAILED (not received); the same key then answers FAILED, a new key pays.
async fn untaken_5xx(h: Harness, recording: Arc<Recording>) {
    let sim = h.server.momo.clone();
    sim.fault_next_request_to_pay(RequestToPayFault::Refuse(500));
    let body = payment("46733123450", "order-5xx");
    let (status, first) = request_to_pay(&h, &body, Some("key-5xx")).await;
    assert_eq!(
        (status, &first["submitted"]),
        (202, &json!("unknown")),
        "{first}"
    );
    let reference = first["referenceId"].as_str().unwrap().to_owned();
    assert_eq!(sim.requests_to_pay(), 0);

    let (status, again) = request_to_pay(&h, &body, Some("key-5xx")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["referenceId"], first["referenceId"]);
    assert_eq!(
        (&again["status"], &again["submitted"]),
        (&json!("PENDING"), &json!("unknown")),
        "too young to conclude from MoMo's 404: {again}"
    );
    assert_eq!(sim.requests_to_pay_received(), 1);

    let app = &h.server.app;
    let run = momo::reconcile_at(&app.momo, gatehouse::store::now())
        .await
        .unwrap();
    assert_eq!(
        (run.checked, run.recorded),
        (0, 0),
        "not old enough: {run:?}"
    );
    let run = momo::reconcile_at(&app.momo, later()).await.unwrap();
    assert_eq!(run.recorded, 1, "{run:?}");
    let tx = status_of(&h, &reference).await.unwrap();
    assert_eq!(tx.str("status"), Some("FAILED"), "{:?}", tx.attrs);
    assert_eq!(tx.attrs["reason"]["code"], "NOT_RECEIVED", "{:?}", tx.attrs);
    assert!(pending(&h).await.is_empty());
    assert_eq!(recording.outcomes(), 1);

    let (status, last) = request_to_pay(&h, &body, Some("key-5xx")).await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(
        (&last["referenceId"], &last["status"]),
        (&first["referenceId"], &json!("FAILED"))
    );
    assert_eq!(
        sim.requests_to_pay_received(),
        1,
        "the same key never sends again"
    );
    let (status, fresh) = request_to_pay(&h, &body, Some("key-5xx-2")).await;
    assert_eq!(
        (status, &fresh["submitted"]),
        (202, &json!("accepted")),
        "{fresh}"
    );
    assert_eq!(sim.requests_to_pay_received(), 2);
}

#[tokio::test]
async fn a_5xx_momo_did_not_take_is_failed_by_the_reconciler() {
    let (h, recording) = start(Backend::Embedded, Vars::default()).await.unwrap();
    untaken_5xx(h, recording).await;
}

#[tokio::test]
async fn a_5xx_momo_did_not_take_is_failed_by_the_reconciler_on_dynamodb() {
    let Some((h, recording)) = start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    untaken_5xx(h, recording).await;
}

/// A definite refusal removes everything of the payment: the caller may send it again, with the
/// same key, and it is sent again.
#[tokio::test]
async fn a_4xx_refusal_removes_the_payment_and_a_retry_sends_again() {
    let (h, _) = start(Backend::Embedded, Vars::default()).await.unwrap();
    let sim = h.server.momo.clone();
    let body = payment("46733123450", "order-4xx");
    for (code, expected) in [(400, 400), (401, 502)] {
        sim.fault_next_request_to_pay(RequestToPayFault::Refuse(code));
        let (status, answer) = request_to_pay(&h, &body, Some("key-4xx")).await;
        assert_eq!(status, expected, "{code}: {answer}");
        assert!(answer["message"].is_string());
        assert!(
            h.stored()
                .iter()
                .all(|r| !r.pk.contains("#momo") || r.pk.starts_with("token#momo#")),
            "{code}: nothing of the payment is kept: {:?}",
            h.stored()
        );
    }
    let (status, answer) = request_to_pay(&h, &body, Some("key-4xx")).await;
    assert_eq!(
        (status, &answer["submitted"]),
        (202, &json!("accepted")),
        "{answer}"
    );
    assert_eq!(sim.requests_to_pay_received(), 3);
    assert_eq!(h.items("tx#momo").await.len(), 1);
}

/// The same externalId and key with another body: 422, nothing stored, nothing sent. The same
/// body written otherwise (key order, spacing) is the same request.
#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let (h, _) = start(Backend::Embedded, Vars::default()).await.unwrap();
    let sim = h.server.momo.clone();
    let body = payment("46733123450", "order-422");
    let (status, first) = request_to_pay(&h, &body, Some("key-422")).await;
    assert_eq!(status, 202, "{first}");
    // MoMo's callback comes on its own time: let it land before the snapshot, or it would
    // show as a change made by the refused request (seen on a loaded machine).
    let reference = first["referenceId"].as_str().unwrap();
    assert_eq!(
        settled(&h, reference, 1).await.str("status"),
        Some("SUCCESSFUL")
    );

    let before = h.stored();
    let mut other = body.clone();
    other["amount"] = json!("11.00");
    let (status, answer) = request_to_pay(&h, &other, Some("key-422")).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{answer}"
    );
    assert_eq!(h.stored(), before, "nothing stored");
    assert_eq!(sim.requests_to_pay_received(), 1, "nothing sent");

    // The same request, its keys in another order and spaced out.
    let respelled = r#"{ "payeeNote": "Thanks", "payer": {"partyId": "46733123450", "partyIdType": "MSISDN"},
             "externalId": "order-422", "currency": "EUR", "amount": "10.50", "payerMessage": "Order 42" }"#;
    let resp = crate::support::http()
        .post(h.url("/momo/requesttopay"))
        .header("content-type", "application/json")
        .header("Idempotency-Key", "key-422")
        .body(respelled)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["referenceId"], first["referenceId"]);

    // Without a key, the externalId alone names the payment.
    let body = payment("46733123450", "order-422-b");
    assert_eq!(request_to_pay(&h, &body, None).await.0, 202);
    let mut other = body.clone();
    other["payerMessage"] = json!("another message");
    assert_eq!(request_to_pay(&h, &other, None).await.0, 422);
    assert_eq!(sim.requests_to_pay_received(), 2);
    assert_eq!(h.items("tx#momo").await.len(), 2);
}

/// The store applies the payment's first write but its answer is lost: nothing is sent (a
/// payment is only ever sent once it is known to be stored), and the caller's retry pays.
#[tokio::test]
async fn a_lost_store_answer_before_sending_sends_nothing() {
    let (h, recording) = start(Backend::Embedded, Vars::default()).await.unwrap();
    let sim = h.server.momo.clone();
    recording
        .lose_next_transact_answer
        .store(true, Ordering::SeqCst);
    let body = payment("46733123450", "order-store");
    let (status, answer) = request_to_pay(&h, &body, Some("key-store")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(sim.requests_to_pay_received(), 0, "nothing sent");
    assert!(h.items("tx#momo").await.is_empty(), "withdrawn");
    assert!(h.items("idem#momo").await.is_empty());
    assert!(pending(&h).await.is_empty());
    let (status, answer) = request_to_pay(&h, &body, Some("key-store")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(sim.requests_to_pay_received(), 1);
}

/// MoMo takes the payment, its callback is lost: the reconciler confirms it once it is old
/// enough, not before.
async fn lost_callback(h: Harness, recording: Arc<Recording>) {
    let sim = h.server.momo.clone();
    sim.set_drop_callbacks(true);
    let (status, answer) = request_to_pay(&h, &payment("46733123450", "order-lost"), None).await;
    assert_eq!(
        (status, &answer["submitted"]),
        (202, &json!("accepted")),
        "{answer}"
    );
    let reference = answer["referenceId"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if sim.callbacks_dropped() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.callbacks_dropped(), 1);
    let app = &h.server.app;
    let run = momo::reconcile_at(&app.momo, gatehouse::store::now())
        .await
        .unwrap();
    assert_eq!(run.checked, 0, "{run:?}");
    assert_eq!((run.seen, run.left), (1, 1), "the backlog: {run:?}");
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("PENDING")
    );
    let run = momo::reconcile_at(&app.momo, later()).await.unwrap();
    assert_eq!((run.checked, run.recorded), (1, 1), "{run:?}");
    assert_eq!((run.seen, run.left), (1, 0), "the backlog: {run:?}");
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("SUCCESSFUL")
    );
    assert!(pending(&h).await.is_empty());
    assert_eq!(recording.outcomes(), 1);
}

#[tokio::test]
async fn a_lost_callback_is_confirmed_by_the_reconciler() {
    let (h, recording) = start(Backend::Embedded, Vars::default()).await.unwrap();
    lost_callback(h, recording).await;
}

#[tokio::test]
async fn a_lost_callback_is_confirmed_by_the_reconciler_on_dynamodb() {
    let Some((h, recording)) = start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    lost_callback(h, recording).await;
}

/// Several reconcilers and MoMo's callback, all at once: the outcome is recorded once.
async fn concurrent_confirmations(h: Harness, recording: Arc<Recording>) {
    let sim = h.server.momo.clone();
    sim.set_drop_callbacks(true);
    let (status, answer) = request_to_pay(&h, &payment("46733123454", "order-race"), None).await;
    assert_eq!(status, 202, "{answer}");
    let reference = answer["referenceId"].as_str().unwrap().to_owned();
    sim.set_status(&reference, "SUCCESSFUL", None);
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let app = h.server.app.clone();
        runs.spawn(async move {
            momo::reconcile_at(&app.momo, later())
                .await
                .unwrap()
                .recorded
        });
    }
    let callback = {
        let sim = sim.clone();
        let reference = reference.clone();
        tokio::spawn(async move {
            sim.send_callback(&reference, "PUT", &json!({"status": "SUCCESSFUL"}))
                .await
        })
    };
    let mut recorded = 0;
    while let Some(run) = runs.join_next().await {
        recorded += run.unwrap();
    }
    assert_eq!(callback.await.unwrap(), 200);
    assert!(recorded <= 1, "{recorded}");
    assert_eq!(recording.outcomes(), 1, "the outcome is recorded once");
    assert_eq!(
        status_of(&h, &reference).await.unwrap().str("status"),
        Some("SUCCESSFUL")
    );
    assert!(pending(&h).await.is_empty());
}

#[tokio::test]
async fn concurrent_reconcilers_and_a_callback_record_the_outcome_once() {
    let (h, recording) = start(Backend::Embedded, Vars::default()).await.unwrap();
    concurrent_confirmations(h, recording).await;
}

#[tokio::test]
async fn concurrent_reconcilers_and_a_callback_record_the_outcome_once_on_dynamodb() {
    let Some((h, recording)) = start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    concurrent_confirmations(h, recording).await;
}

/// The local server runs the reconciler on a timer, as the deployment's schedule does.
#[tokio::test]
async fn the_local_server_reconciles_on_a_timer() {
    let mut vars = Vars::default();
    vars.set("MOMO_LOCAL_RECONCILE_SECONDS", "1");
    vars.set("MOMO_RECONCILE_AFTER_SECONDS", "0");
    let (h, _) = start(Backend::Embedded, vars).await.unwrap();
    h.server.momo.set_drop_callbacks(true);
    let (status, answer) = request_to_pay(&h, &payment("46733123450", "order-timer"), None).await;
    assert_eq!(status, 202, "{answer}");
    let reference = answer["referenceId"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if status_of(&h, &reference).await.unwrap().str("status") == Some("SUCCESSFUL") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the local reconciler did not confirm the payment in 10 s");
}
