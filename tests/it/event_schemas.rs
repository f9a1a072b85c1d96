//! The JSON Schema of every event (docs/events/): each event the tests make validates against
//! its schema, as stored and as published (a reference detail included), and the schemas
//! refuse what they must (a token in a connection, a payment's other status).

use gatehouse::events::{Event, names};
use serde_json::{Value, json};
use std::path::PathBuf;

fn dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
}

/// The schema of events named `name`: its own file, or `webhook.json` for a delivery's.
pub(crate) fn schema(name: &str) -> Value {
    let file = if name.starts_with(names::WEBHOOK_PREFIX) {
        "webhook.json".to_owned()
    } else {
        format!("{name}.json")
    };
    let text = std::fs::read_to_string(dir().join(&file))
        .unwrap_or_else(|e| panic!("no schema docs/events/{file} for {name}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The problems of `instance` under the schema of `name`, if any.
pub(crate) fn problems(name: &str, instance: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema(name)).expect("the schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Fails unless `event`, as the app reads it and as the bus carries it, validates.
pub(crate) fn assert_valid(event: &Event) {
    let found = problems(&event.name, &event.to_json());
    assert!(found.is_empty(), "{}: {found:?}", event.name);
    let (detail, _) = event.detail();
    let detail: Value = serde_json::from_str(&detail).unwrap();
    let found = problems(&event.name, &detail);
    assert!(found.is_empty(), "{} on the bus: {found:?}", event.name);
}

#[test]
fn every_event_name_has_a_schema_and_every_schema_a_name() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<String> = names::LIFECYCLE
        .iter()
        .map(|n| format!("{n}.json"))
        .chain(["webhook.json".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    for file in files {
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(dir().join(&file)).unwrap()).unwrap();
        assert!(
            jsonschema::meta::is_valid(&schema),
            "{file} is not a valid JSON Schema"
        );
    }
}

fn connection() -> Value {
    json!({"platform": "haravan", "tenant": "1000", "end_user": null, "status": "active",
           "scopes": ["openid"], "created_at": 1, "updated_at": 2, "expires_at": null,
           "last_refresh_at": null, "last_error": null})
}

#[test]
fn the_schemas_refuse_what_they_must() {
    for name in names::LIFECYCLE
        .iter()
        .filter(|n| n.starts_with("connection."))
    {
        let good = Event::new("haravan", name, "1000", connection());
        assert_valid(&good);
        let mut leaky = connection();
        leaky["access_token"] = json!("secret");
        let bad = Event::new("haravan", name, "1000", leaky);
        assert!(
            !problems(name, &bad.to_json()).is_empty(),
            "{name}: a token"
        );
        let mut status = connection();
        status["status"] = json!("broken");
        let bad = Event::new("haravan", name, "1000", status);
        assert!(
            !problems(name, &bad.to_json()).is_empty(),
            "{name}: a status"
        );
    }
    let payment = json!({"reference_id": "r", "status": "SUCCESSFUL", "amount": "1",
        "currency": "EUR", "external_id": "e", "created_at": 1, "completed_at": 2,
        "reason": null, "financial_transaction_id": "f", "submitted": "accepted"});
    assert_valid(&Event::new(
        "momo",
        names::PAYMENT_SUCCEEDED,
        "r",
        payment.clone(),
    ));
    let wrong = Event::new("momo", names::PAYMENT_FAILED, "r", payment);
    assert!(!problems(names::PAYMENT_FAILED, &wrong.to_json()).is_empty());

    let hook = Event::new(
        "haravan",
        "webhook.orders/create",
        "1000",
        json!({"topic": "orders/create", "payload": {"id": 1}}),
    );
    assert_valid(&hook);
    let mut other = hook.to_json();
    other["name"] = json!("payment.succeeded");
    assert!(!problems("webhook.x", &other).is_empty());
    let mut cut = hook.to_json();
    cut["data"] = Value::Null;
    assert!(
        !problems("webhook.x", &cut).is_empty(),
        "null data needs data_ref"
    );
}

/// An event too large for EventBridge is published as a reference, which validates too, and
/// the event itself is kept whole.
#[test]
fn an_oversized_event_is_referenced_and_still_valid() {
    let payload = json!({"blob": "x".repeat(300 * 1024)});
    let event = Event::new(
        "haravan",
        "webhook.orders/create",
        "1000",
        json!({"topic": "orders/create", "payload": payload}),
    );
    let (detail, referenced) = event.detail();
    assert!(referenced);
    assert!(detail.len() < 1024, "{}", detail.len());
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["data"], Value::Null);
    assert_eq!(
        detail["data_ref"]["path"],
        format!("/v1/events/haravan/{}", event.id)
    );
    assert_valid(&event);
    let item = event.to_item().unwrap();
    assert_eq!(Event::from_attrs(&item.attrs).unwrap(), event);
}
