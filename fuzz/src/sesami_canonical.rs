//! Sesami's canonical JSON ([`gatehouse::sesami::canonical_json`]) over any JSON object: it is
//! JSON again, holds the same values, sorts the top level and nothing else, does not depend on
//! the order keys arrived in, and is a fixed point. (That it matches `JSON.stringify` byte for
//! byte is checked by vectors computed with Node.js, in the crate's unit tests.)

use gatehouse::sesami::canonical_json;
use serde_json::{Map, Value};

/// Whether two JSON values are the same, numbers compared by value (`1.0` is `1`, `-0` is `0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        _ => a == b,
    }
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(object) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let text = canonical_json(&object);
    let back: Map<String, Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("canonical JSON does not parse ({e}): {text}"));

    // Top level sorted, nested objects in their received order: compare with a sorted copy.
    let mut sorted: Vec<(&String, &Value)> = object.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let sorted: Map<String, Value> = sorted
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        same(&Value::Object(back.clone()), &Value::Object(sorted)),
        "values changed: {text}"
    );
    assert!(!text.contains('\n'), "not compact: {text}");

    // The order keys arrived in does not matter; canonical text is its own canonical form.
    let reversed: Map<String, Value> = object
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(canonical_json(&reversed), text);
    assert_eq!(canonical_json(&back), text);
}
