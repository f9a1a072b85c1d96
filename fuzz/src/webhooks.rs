//! Webhook signatures, through the handlers (`POST /sesami/webhooks`, `POST /haravan/webhooks`):
//! a delivery that is not signed with the platform's secret is refused (401, or 4xx for a body
//! that cannot be read) and changes nothing; a signed one is never a 5xx, and sent again is a
//! duplicate that changes nothing. Signatures here are computed with the `hmac` crate directly.

use crate::harness::fixture;
use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use gatehouse::routes::{self, Served};
use gatehouse::sesami;
use gatehouse::store::{Condition, Item};
use hmac::{KeyInit, Mac};
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};

const SESAMI_SECRET: &[u8] = b"events-only-sesami-secret";
const HARAVAN_SECRET: &[u8] = b"events-only-haravan-secret";
/// The installs the deliveries may be about, put in the store before each run.
const SHOPS: &[&str] = &["fuzz-shop-1", "fuzz-shop-2"];

#[derive(Arbitrary, Debug)]
enum Signature {
    Valid,
    WrongSecret,
    Truncated,
    Flipped(usize),
    Absent,
    MadeUp(String),
}

#[derive(Arbitrary, Debug)]
enum Field {
    Shop(u8),
    Event(u8),
    Text(String),
    Number(i64),
    Float(f64),
    Nested(Vec<(String, String)>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    haravan: bool,
    signature: Signature,
    fields: Vec<(String, Field)>,
    event: u8,
    raw_body: Option<Vec<u8>>,
    topic_header: Option<u8>,
    org_header: Option<u8>,
}

const EVENTS: &[&str] = &[
    "uninstall_app",
    "app/uninstalled",
    "shop/update",
    "orders/create",
];

fn value(field: &Field) -> Value {
    match field {
        Field::Shop(i) => json!(SHOPS[usize::from(*i) % SHOPS.len()]),
        Field::Event(i) => json!(EVENTS[usize::from(*i) % EVENTS.len()]),
        Field::Text(s) => json!(s),
        Field::Number(n) => json!(n),
        Field::Float(f) => json!(f),
        Field::Nested(pairs) => {
            Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
        }
    }
}

fn hmac(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Applies the input's kind of signature to the right one.
fn spoil(good: Vec<u8>, signature: &Signature, wrong: Vec<u8>) -> Option<Vec<u8>> {
    match signature {
        Signature::Valid => Some(good),
        Signature::WrongSecret => Some(wrong),
        Signature::Truncated => Some(good[..good.len() - 1].to_vec()),
        Signature::Flipped(at) => {
            let mut bad = good;
            let at = at % bad.len();
            bad[at] ^= 1;
            Some(bad)
        }
        Signature::Absent | Signature::MadeUp(_) => None,
    }
}

fn request(body: Vec<u8>, headers: &[(&'static str, String)]) -> Request {
    let mut req = Request::new(Body::Binary(body));
    *req.method_mut() = lambda_http::http::Method::POST;
    for (name, value) in headers {
        if let Ok(v) = lambda_http::http::HeaderValue::from_str(value) {
            req.headers_mut().append(*name, v);
        }
    }
    req
}

fn seed_installs() {
    let f = fixture();
    f.runtime.block_on(async {
        for shop in SHOPS {
            for key in [
                sesami::install_key(shop),
                gatehouse::haravan::install_key(shop),
            ] {
                // As an install is stored: shop updates are written on its token version.
                let attrs = Map::from_iter([("token_version".into(), json!(1))]);
                let item = Item::new(key, attrs);
                f.app.store.put(&item, Condition::Always).await.unwrap();
            }
        }
    });
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    seed_installs();
    let data: Map<String, Value> = input
        .fields
        .iter()
        .map(|(k, f)| (k.clone(), value(f)))
        .collect();
    let event = EVENTS[usize::from(input.event) % EVENTS.len()];
    let (body, headers, handler): (Vec<u8>, Vec<(&'static str, String)>, Served) = if input.haravan
    {
        let body = input
            .raw_body
            .clone()
            .unwrap_or_else(|| serde_json::to_vec(&data).unwrap());
        let sig = spoil(
            hmac(HARAVAN_SECRET, &body),
            &input.signature,
            hmac(b"wrong", &body),
        );
        let mut headers = vec![("content-type", "application/json".to_owned())];
        match (&input.signature, sig) {
            (Signature::MadeUp(s), _) => headers.push(("x-haravan-hmacsha256", s.clone())),
            (_, Some(sig)) => headers.push((
                "x-haravan-hmacsha256",
                base64::engine::general_purpose::STANDARD.encode(sig),
            )),
            _ => {}
        }
        if let Some(t) = input.topic_header {
            headers.push((
                "x-haravan-topic",
                EVENTS[usize::from(t) % EVENTS.len()].to_owned(),
            ));
        }
        if let Some(o) = input.org_header {
            headers.push((
                "x-haravan-org-id",
                SHOPS[usize::from(o) % SHOPS.len()].to_owned(),
            ));
        }
        (body, headers, Served::Haravan(&routes::HARAVAN_WEBHOOKS))
    } else {
        let canonical = sesami::canonical_json(&data);
        let good = hmac(SESAMI_SECRET, canonical.as_bytes());
        let sig = match (
            &input.signature,
            spoil(good, &input.signature, hmac(b"wrong", canonical.as_bytes())),
        ) {
            (Signature::MadeUp(s), _) => Some(json!(s)),
            (_, Some(sig)) => Some(json!(hex::encode(sig))),
            _ => None,
        };
        let mut hook = json!({"event": event, "data": data});
        if let Some(sig) = sig {
            hook["hmac"] = sig;
        }
        let body = input
            .raw_body
            .clone()
            .unwrap_or_else(|| serde_json::to_vec(&hook).unwrap());
        let headers = vec![("content-type", "application/json".to_owned())];
        (body, headers, Served::Sesami(&routes::SESAMI_WEBHOOKS))
    };
    let signed = matches!(input.signature, Signature::Valid);

    let f = fixture();
    let first = f.call(request(body.clone(), &headers), handler);
    if !signed {
        assert!(
            matches!(first.status, 400 | 401 | 413 | 415),
            "not signed, answered {}: {}",
            first.status,
            first.text
        );
        // Sesami's signature is a field of the body: without it the body is malformed (400).
        let sesami_without = !input.haravan && matches!(input.signature, Signature::Absent);
        if input.raw_body.is_none() && !sesami_without {
            assert_eq!(
                first.status, 401,
                "a readable delivery that is not signed: {}",
                first.text
            );
        }
        assert!(
            first.changed.is_empty(),
            "not signed, changed {:?}",
            first.changed
        );
        return;
    }
    assert!(
        first.status < 500,
        "signed, answered {}: {}",
        first.status,
        first.text
    );
    // The same delivery again is acknowledged and changes nothing.
    let again = f.call(request(body, &headers), handler);
    if first.status == 200 {
        assert_eq!(again.status, 200, "{}", again.text);
        assert!(
            again.text.contains("duplicate"),
            "a replay was acted on: {}",
            again.text
        );
    }
    assert!(
        again.changed.is_empty(),
        "a replay changed {:?}",
        again.changed
    );
}
