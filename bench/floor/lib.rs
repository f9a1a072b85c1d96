//! The floor a Gatehouse function is measured against (bench only, never deployed): a minimal
//! Rust Lambda, two binaries over this library. `gatehouse-floor` (`main.rs`) makes DynamoDB and
//! Secrets Manager calls; `gatehouse-floor-events` (`events.rs`) also EventBridge's `PutEvents`,
//! for `events-publisher`.
//!
//! Either is a minimal Rust Lambda: the runtime, the AWS SDK's clients built at init, and, per invocation, exactly the AWS calls the measured function made for the same
//! event — same operations, same keys, conditions and payloads — replayed from a script, and
//! nothing else. `gatehouse-bench` records the function's calls through its counting proxy
//! (the first invocation of a fresh process, and one warm invocation) and passes them here as
//! `FLOOR_SCRIPT` (`{"cold": [call], "warm": [call]}`, a call being `{"target":
//! "DynamoDB_20120810.GetItem", "body": <the request's JSON>}`): the first invocation replays
//! the cold calls, every later one the warm calls. Whatever Gatehouse spends beyond this floor
//! is its own (routing, verification, serde of records, logging).
//!
//! The answers are not looked at (a condition that fails is the same round trip), and the
//! function answers `{"statusCode": 200}`.

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Calls of a service the plain floor does not make, replayed by a floor of their own
/// (`gatehouse-floor-events`: the publisher's `PutEvents`). A floor built with `()` links no
/// other SDK, so its binary, and with it its resident set, stays the minimal function's.
pub trait Extra: Send + Sync + Sized + 'static {
    /// Built at init, with the DynamoDB and Secrets Manager clients.
    fn new(aws: &aws_config::SdkConfig) -> Self;
    /// Makes `call` again if it is this service's; `false` if it is not.
    fn replay(&self, target: &str, body: &Value) -> impl Future<Output = bool> + Send;
}

impl Extra for () {
    fn new(_: &aws_config::SdkConfig) -> Self {}
    async fn replay(&self, _: &str, _: &Value) -> bool {
        false
    }
}

struct Floor<X> {
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    extra: X,
    cold: Vec<Value>,
    warm: Vec<Value>,
    first: AtomicBool,
}

/// The floor's Lambda: the script from `FLOOR_SCRIPT`, the clients built, then the Runtime API
/// loop.
pub async fn run<X: Extra>() -> Result<(), Error> {
    let script: Value = match std::env::var("FLOOR_SCRIPT") {
        Ok(s) => serde_json::from_str(&s)?,
        Err(_) => json!({}),
    };
    let calls = |name: &str| script[name].as_array().cloned().unwrap_or_default();
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let floor = Arc::new(Floor {
        dynamodb: aws_sdk_dynamodb::Client::new(&aws),
        secrets: aws_sdk_secretsmanager::Client::new(&aws),
        extra: X::new(&aws),
        cold: calls("cold"),
        warm: calls("warm"),
        first: AtomicBool::new(true),
    });
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| {
        let floor = floor.clone();
        async move {
            let calls = if floor.first.swap(false, Ordering::SeqCst) {
                &floor.cold
            } else {
                &floor.warm
            };
            for call in calls {
                replay(&floor, call).await?;
            }
            Ok::<Value, Error>(json!({"statusCode": 200}))
        }
    }))
    .await
}

/// Makes one recorded call again with the SDK. A service error (a failed condition, a missing
/// secret) is the same round trip and is not an error here; an unknown operation is.
async fn replay<X: Extra>(floor: &Floor<X>, call: &Value) -> Result<(), Error> {
    let target = call["target"].as_str().unwrap_or_default();
    let b = &call["body"];
    if floor.extra.replay(target, b).await {
        return Ok(());
    }
    let s = |name: &str| b[name].as_str().map(str::to_owned);
    let db = &floor.dynamodb;
    let table = s("TableName");
    match target.rsplit('.').next().unwrap_or_default() {
        "GetItem" => {
            let _ = db
                .get_item()
                .set_table_name(table)
                .set_key(map(&b["Key"]))
                .set_consistent_read(b["ConsistentRead"].as_bool())
                .set_projection_expression(s("ProjectionExpression"))
                .set_expression_attribute_names(names(&b["ExpressionAttributeNames"]))
                .send()
                .await;
        }
        "PutItem" => {
            let _ = db
                .put_item()
                .set_table_name(table)
                .set_item(map(&b["Item"]))
                .set_condition_expression(s("ConditionExpression"))
                .set_expression_attribute_names(names(&b["ExpressionAttributeNames"]))
                .set_expression_attribute_values(map(&b["ExpressionAttributeValues"]))
                .send()
                .await;
        }
        "UpdateItem" => {
            let _ = db
                .update_item()
                .set_table_name(table)
                .set_key(map(&b["Key"]))
                .set_update_expression(s("UpdateExpression"))
                .set_condition_expression(s("ConditionExpression"))
                .set_expression_attribute_names(names(&b["ExpressionAttributeNames"]))
                .set_expression_attribute_values(map(&b["ExpressionAttributeValues"]))
                .set_return_values(s("ReturnValues").map(|v| ReturnValue::from(v.as_str())))
                .send()
                .await;
        }
        "DeleteItem" => {
            let _ = db
                .delete_item()
                .set_table_name(table)
                .set_key(map(&b["Key"]))
                .set_condition_expression(s("ConditionExpression"))
                .set_expression_attribute_names(names(&b["ExpressionAttributeNames"]))
                .set_expression_attribute_values(map(&b["ExpressionAttributeValues"]))
                .set_return_values(s("ReturnValues").map(|v| ReturnValue::from(v.as_str())))
                .send()
                .await;
        }
        "Query" => {
            let _ = db
                .query()
                .set_table_name(table)
                .set_index_name(s("IndexName"))
                .set_key_condition_expression(s("KeyConditionExpression"))
                .set_filter_expression(s("FilterExpression"))
                .set_expression_attribute_names(names(&b["ExpressionAttributeNames"]))
                .set_expression_attribute_values(map(&b["ExpressionAttributeValues"]))
                .set_exclusive_start_key(map(&b["ExclusiveStartKey"]))
                .set_consistent_read(b["ConsistentRead"].as_bool())
                .set_scan_index_forward(b["ScanIndexForward"].as_bool())
                .set_limit(b["Limit"].as_i64().and_then(|n| i32::try_from(n).ok()))
                .send()
                .await;
        }
        "TransactWriteItems" => {
            let items = b["TransactItems"]
                .as_array()
                .map(|items| items.iter().filter_map(transact_item).collect());
            let _ = db
                .transact_write_items()
                .set_transact_items(items)
                .set_client_request_token(s("ClientRequestToken"))
                .send()
                .await;
        }
        "GetSecretValue" => {
            let _ = floor
                .secrets
                .get_secret_value()
                .set_secret_id(s("SecretId"))
                .set_version_stage(s("VersionStage"))
                .send()
                .await;
        }
        other => return Err(format!("the floor cannot replay `{other}`").into()),
    }
    Ok(())
}

fn transact_item(v: &Value) -> Option<TransactWriteItem> {
    let s = |o: &Value, name: &str| o[name].as_str().map(str::to_owned);
    let names_of = |o: &Value| names(&o["ExpressionAttributeNames"]);
    let values_of = |o: &Value| map(&o["ExpressionAttributeValues"]);
    let item = TransactWriteItem::builder();
    let item = if let Some(o) = v.get("Put") {
        item.put(
            Put::builder()
                .set_table_name(s(o, "TableName"))
                .set_item(map(&o["Item"]))
                .set_condition_expression(s(o, "ConditionExpression"))
                .set_expression_attribute_names(names_of(o))
                .set_expression_attribute_values(values_of(o))
                .build()
                .ok()?,
        )
    } else if let Some(o) = v.get("Update") {
        item.update(
            Update::builder()
                .set_table_name(s(o, "TableName"))
                .set_key(map(&o["Key"]))
                .set_update_expression(s(o, "UpdateExpression"))
                .set_condition_expression(s(o, "ConditionExpression"))
                .set_expression_attribute_names(names_of(o))
                .set_expression_attribute_values(values_of(o))
                .build()
                .ok()?,
        )
    } else if let Some(o) = v.get("Delete") {
        item.delete(
            Delete::builder()
                .set_table_name(s(o, "TableName"))
                .set_key(map(&o["Key"]))
                .set_condition_expression(s(o, "ConditionExpression"))
                .set_expression_attribute_names(names_of(o))
                .set_expression_attribute_values(values_of(o))
                .build()
                .ok()?,
        )
    } else if let Some(o) = v.get("ConditionCheck") {
        item.condition_check(
            ConditionCheck::builder()
                .set_table_name(s(o, "TableName"))
                .set_key(map(&o["Key"]))
                .set_condition_expression(s(o, "ConditionExpression"))
                .set_expression_attribute_names(names_of(o))
                .set_expression_attribute_values(values_of(o))
                .build()
                .ok()?,
        )
    } else {
        return None;
    };
    Some(item.build())
}

fn names(v: &Value) -> Option<HashMap<String, String>> {
    v.as_object().map(|o| {
        o.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    })
}

/// A map of DynamoDB's wire JSON (`{"pk": {"S": "…"}}`) as the SDK's attribute values.
fn map(v: &Value) -> Option<HashMap<String, AttributeValue>> {
    v.as_object().map(|o| {
        o.iter()
            .filter_map(|(k, v)| Some((k.clone(), attribute(v)?)))
            .collect()
    })
}

fn attribute(v: &Value) -> Option<AttributeValue> {
    let (kind, x) = v.as_object()?.iter().next()?;
    let strings = |x: &Value| -> Option<Vec<String>> {
        x.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    Some(match kind.as_str() {
        "S" => AttributeValue::S(x.as_str()?.to_owned()),
        "N" => AttributeValue::N(x.as_str()?.to_owned()),
        "BOOL" => AttributeValue::Bool(x.as_bool()?),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(map(x)?),
        "L" => AttributeValue::L(x.as_array()?.iter().map(attribute).collect::<Option<_>>()?),
        "SS" => AttributeValue::Ss(strings(x)?),
        "NS" => AttributeValue::Ns(strings(x)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_json_becomes_attribute_values() {
        let wire = json!({"pk": {"S": "a"}, "n": {"N": "1"}, "m": {"M": {"b": {"BOOL": true}}},
                          "l": {"L": [{"NULL": true}, {"SS": ["x", "y"]}]}});
        let m = map(&wire).unwrap();
        assert_eq!(m["pk"], AttributeValue::S("a".into()));
        assert_eq!(m["n"], AttributeValue::N("1".into()));
        let AttributeValue::M(inner) = &m["m"] else {
            panic!("a map")
        };
        assert_eq!(inner["b"], AttributeValue::Bool(true));
        assert_eq!(
            m["l"],
            AttributeValue::L(vec![
                AttributeValue::Null(true),
                AttributeValue::Ss(vec!["x".into(), "y".into()])
            ])
        );
    }

    #[test]
    fn transact_items_of_every_kind_are_rebuilt() {
        let put = json!({"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}},
                                  "ConditionExpression": "attribute_not_exists(pk)"}});
        let update = json!({"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}},
                                        "UpdateExpression": "SET #a = :a",
                                        "ExpressionAttributeNames": {"#a": "a"},
                                        "ExpressionAttributeValues": {":a": {"S": "v"}}}});
        let check = json!({"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "a"}},
                                               "ConditionExpression": "attribute_exists(pk)"}});
        for v in [&put, &update, &check] {
            assert!(transact_item(v).is_some(), "{v}");
        }
        assert!(transact_item(&json!({"Other": {}})).is_none());
    }
}
