//! MTN MoMo end to end: the local server against the MoMo simulator over real HTTP.
//!
//! The simulator's test numbers: a payer MSISDN ending in 0 succeeds, 1 fails, 2 stays pending.

use crate::harness::{Backend, Harness};
use gatehouse::App;
use gatehouse::config::Vars;
use gatehouse::momo::{self, Provisioned, transaction_key};
use serde_json::{Value, json};
use std::sync::Arc;
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
    let mut req = reqwest::Client::new()
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
    let client = reqwest::Client::new();
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

    let first = momo::provision(app, &sub_key, "127.0.0.1").await.unwrap();
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
    let again = momo::provision(app, &sub_key, "127.0.0.1").await.unwrap();
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
    let apps: Vec<Arc<App>> = (0..20)
        .map(|_| {
            Arc::new(
                App::with_store(&vars, config.clone(), h.server.app.store.clone(), None).unwrap(),
            )
        })
        .collect();
    let before = sim.token_requests("collection");
    let handles: Vec<_> = apps
        .iter()
        .map(|app| {
            let app = app.clone();
            tokio::spawn(async move { momo::access_token(&app, "collection").await })
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
