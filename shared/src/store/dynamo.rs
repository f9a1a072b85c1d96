//! The DynamoDB store (deployed).
//!
//! Item layout: `pk` and `sk` (S), `ttl` (N, unix seconds, only when the item expires; the
//! table's TTL attribute) and every item attribute as a top-level attribute of its own, so that
//! items read naturally in the console and in exports. Liveness is checked on every read and in
//! every condition, because DynamoDB deletes expired items only eventually.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem, Update,
};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_attribute_value, to_item};
use serde_json::{Map, Value};

use super::{
    Condition, INDEXES, Index, Item, Key, Store, StoreError, Write, check_index_query, check_key,
    check_pk, check_put, check_transact, check_update, now,
};

/// Creates only if no live item has the key: none at all, or one whose TTL has passed
/// (`expires_at <= now` is not live, see [`Item::is_live`]).
const ABSENT: &str = "attribute_not_exists(#pk) OR #ttl <= :now";
/// Replaces only a live item whose attribute `#a` equals `:v`.
const ATTR_EQUALS: &str =
    "attribute_exists(#pk) AND #a = :v AND (attribute_not_exists(#ttl) OR #ttl > :now)";
/// Updates only a live item.
const LIVE: &str = "attribute_exists(#pk) AND (attribute_not_exists(#ttl) OR #ttl > :now)";

/// The store on a DynamoDB table laid out as the module documentation describes.
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// The store on `table`, which must exist with `pk`/`sk` string keys (see [`create_table`]).
    /// The client is taken rather than built so that a function builds it once per container.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait::async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failure("GetItem", e))?;
        live(output.item)
    }

    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        check_put(item, &condition)?;
        let guard = Guard::of(&condition, now())?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_record(item)?))
            .set_condition_expression(guard.expression)
            .set_expression_attribute_names(guard.names)
            .set_expression_attribute_values(guard.values);
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::ConditionFailed)
            }
            Err(e) => Err(failure("PutItem", e)),
        }
    }

    /// One UpdateItem: `SET #a0 = :v0, …` (every name through a placeholder, so that any
    /// attribute name works, DynamoDB's reserved words included), on the condition [`LIVE`] or
    /// [`ATTR_EQUALS`]. DynamoDB applies the condition and the write atomically; the `ttl`
    /// attribute is not touched, so the expiry stays.
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        check_update(key, set, &condition)?;
        let change = Change::of(set, &condition, now())?;
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .update_expression(change.expression)
            .set_condition_expression(change.guard.expression)
            .set_expression_attribute_names(change.guard.names)
            .set_expression_attribute_values(change.guard.values);
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::ConditionFailed)
            }
            Err(e) => Err(failure("UpdateItem", e)),
        }
    }

    /// One unconditional DeleteItem returning the old image: DynamoDB serializes writes to an
    /// item, so of concurrent deletes exactly one sees it.
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        check_key(key)?;
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| failure("DeleteItem", e))?;
        live(output.attributes)
    }

    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        check_pk(pk)?;
        let now = now();
        let mut records = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut items = Vec::new();
        while let Some(record) = records.next().await {
            let item = from_record(record.map_err(|e| failure("Query", e))?)?;
            if item.is_live(now) {
                items.push(item);
            }
        }
        Ok(items)
    }

    /// A Query of the index, page after page (DynamoDB's `Limit` counts items before the
    /// liveness filter, so a page of expired items is not the end) until `limit` live items or
    /// the partition's end.
    async fn query_index(
        &self,
        index: &Index,
        pk: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        check_index_query(index, pk, after, limit)?;
        let now = now();
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index.name)
            .expression_attribute_names("#ipk", index.pk)
            .expression_attribute_values(":ipk", AttributeValue::S(pk.to_owned()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        request = match after {
            Some(after) => request
                .key_condition_expression("#ipk = :ipk AND #isk > :after")
                .expression_attribute_names("#isk", index.sk)
                .expression_attribute_values(":after", AttributeValue::S(after.to_owned())),
            None => request.key_condition_expression("#ipk = :ipk"),
        };
        let mut pages = request.into_paginator().send();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failure("Query", e))?;
            for record in page.items.unwrap_or_default() {
                let item = from_record(record)?;
                if item.is_live(now) {
                    items.push(item);
                    if items.len() == limit {
                        return Ok(items);
                    }
                }
            }
        }
        Ok(items)
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        check_pk(prefix)?;
        let now = now();
        let mut records = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(#pk, :prefix)")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut items = Vec::new();
        while let Some(record) = records.next().await {
            let item = from_record(record.map_err(|e| failure("Scan", e))?)?;
            if item.is_live(now) {
                items.push(item);
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// One TransactWriteItems with a client request token of its own, so that the SDK's
    /// retries of it (after a timeout, say) are applied at most once: DynamoDB answers a
    /// repeated token within 10 minutes without writing again. A transaction cancelled only
    /// because another transaction was writing one of its items at the same moment
    /// (`TransactionConflict`; nothing was written) is tried again, twice, with a new token.
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        check_transact(writes)?;
        let now = now();
        let items = writes
            .iter()
            .map(|write| self.transact_item(write, now))
            .collect::<Result<Vec<_>, _>>()?;
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                error.as_service_error()
            {
                let reasons = cancelled.cancellation_reasons();
                let failed: Vec<usize> = reasons
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                    .map(|(i, _)| i)
                    .collect();
                if !failed.is_empty() {
                    return Err(StoreError::Cancelled(failed));
                }
                let conflict = reasons
                    .iter()
                    .any(|r| r.code() == Some("TransactionConflict"));
                if conflict && attempt < 2 {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                    continue;
                }
            }
            return Err(failure("TransactWriteItems", error));
        }
    }
}

impl DynamoStore {
    /// One write of a transaction as DynamoDB takes it.
    fn transact_item(&self, write: &Write, now: i64) -> Result<TransactWriteItem, StoreError> {
        let built = match write {
            Write::Put(item, condition) => {
                let guard = Guard::of(condition, now)?;
                TransactWriteItem::builder().put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_record(item)?))
                        .set_condition_expression(guard.expression)
                        .set_expression_attribute_names(guard.names)
                        .set_expression_attribute_values(guard.values)
                        .build()
                        .map_err(invalid)?,
                )
            }
            Write::Update {
                key,
                set,
                condition,
            } => {
                let change = Change::of(set, condition, now)?;
                TransactWriteItem::builder().update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attributes(key)))
                        .update_expression(change.expression)
                        .set_condition_expression(change.guard.expression)
                        .set_expression_attribute_names(change.guard.names)
                        .set_expression_attribute_values(change.guard.values)
                        .build()
                        .map_err(invalid)?,
                )
            }
            Write::Delete(key, condition) => {
                let guard = Guard::of(condition, now)?;
                TransactWriteItem::builder().delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attributes(key)))
                        .set_condition_expression(guard.expression)
                        .set_expression_attribute_names(guard.names)
                        .set_expression_attribute_values(guard.values)
                        .build()
                        .map_err(invalid)?,
                )
            }
            Write::Check(key, condition) => {
                let guard = Guard::of(condition, now)?;
                TransactWriteItem::builder().condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attributes(key)))
                        .set_condition_expression(guard.expression)
                        .set_expression_attribute_names(guard.names)
                        .set_expression_attribute_values(guard.values)
                        .build()
                        .map_err(invalid)?,
                )
            }
        };
        Ok(built.build())
    }
}

/// A [`Condition`] as a DynamoDB condition expression with its placeholders (none at all for
/// [`Condition::Always`]: DynamoDB refuses placeholders that no expression uses).
struct Guard {
    expression: Option<String>,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Guard {
    fn of(condition: &Condition, now: i64) -> Result<Self, StoreError> {
        let (expression, attr) = match condition {
            Condition::Always => {
                return Ok(Self {
                    expression: None,
                    names: None,
                    values: None,
                });
            }
            Condition::Absent => (ABSENT, None),
            Condition::Exists => (LIVE, None),
            Condition::AttrEquals(name, value) => (ATTR_EQUALS, Some((name, value))),
        };
        let mut names = HashMap::from([
            ("#pk".to_owned(), "pk".to_owned()),
            ("#ttl".to_owned(), "ttl".to_owned()),
        ]);
        let mut values = HashMap::from([(":now".to_owned(), number(now))]);
        if let Some((name, value)) = attr {
            names.insert("#a".to_owned(), name.clone());
            values.insert(":v".to_owned(), to_attribute_value(value).map_err(invalid)?);
        }
        Ok(Self {
            expression: Some(expression.to_owned()),
            names: Some(names),
            values: Some(values),
        })
    }
}

/// An in-place update: `SET #a0 = :v0, …` and its guard, which always requires a live item
/// ([`LIVE`] for [`Condition::Always`] and [`Condition::Exists`]).
struct Change {
    expression: String,
    guard: Guard,
}

impl Change {
    fn of(set: &Map<String, Value>, condition: &Condition, now: i64) -> Result<Self, StoreError> {
        let condition = match condition {
            Condition::Always => &Condition::Exists,
            other => other,
        };
        let mut guard = Guard::of(condition, now)?;
        let names = guard.names.get_or_insert_with(HashMap::new);
        let values = guard.values.get_or_insert_with(HashMap::new);
        let mut assignments = Vec::with_capacity(set.len());
        for (i, (name, value)) in set.iter().enumerate() {
            assignments.push(format!("#s{i} = :s{i}"));
            names.insert(format!("#s{i}"), name.clone());
            values.insert(
                format!(":s{i}"),
                to_attribute_value(value).map_err(invalid)?,
            );
        }
        Ok(Self {
            expression: format!("SET {}", assignments.join(", ")),
            guard,
        })
    }
}

/// Creates `table` as [`DynamoStore`] expects it (`pk` HASH and `sk` RANGE strings, on-demand
/// billing, TTL on `ttl`, the global secondary indexes of [`INDEXES`] projecting every
/// attribute) and waits until it is active. For tests and local development against
/// a DynamoDB-compatible server; deployed tables come from the template. An existing table is
/// not an error, so this can run on every start.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(table)
        .attribute_definitions(key_definition("pk")?)
        .attribute_definitions(key_definition("sk")?)
        .key_schema(key_schema("pk", KeyType::Hash)?)
        .key_schema(key_schema("sk", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest);
    for index in INDEXES {
        request = request
            .attribute_definitions(key_definition(index.pk)?)
            .attribute_definitions(key_definition(index.sk)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .key_schema(key_schema(index.pk, KeyType::Hash)?)
                    .key_schema(key_schema(index.sk, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(invalid)?,
            );
    }
    let created = request.send().await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => return Err(failure("CreateTable", e)),
    }
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "DynamoDB table `{table}` did not become active: {}",
                DisplayErrorContext(&e)
            ))
        })?;
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| failure("DescribeTimeToLive", e))?;
    let status = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        return Ok(());
    }
    let specification = TimeToLiveSpecification::builder()
        .attribute_name("ttl")
        .enabled(true)
        .build()
        .map_err(invalid)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(specification)
        .send()
        .await
        .map_err(|e| failure("UpdateTimeToLive", e))?;
    Ok(())
}

fn key_definition(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(invalid)
}

fn key_schema(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(invalid)
}

fn key_attributes(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(key.pk.clone())),
        ("sk".to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The DynamoDB item for `item`: its attributes at the top level, then the key and TTL.
fn to_record(item: &Item) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut record: HashMap<String, AttributeValue> = to_item(&item.attrs).map_err(invalid)?;
    record.extend(key_attributes(&item.key));
    if let Some(expires_at) = item.expires_at {
        record.insert("ttl".to_owned(), number(expires_at));
    }
    Ok(record)
}

/// The item stored as `record`, the inverse of [`to_record`].
fn from_record(mut record: HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let mut string = |name: &str| match record.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(malformed(name)),
    };
    let key = Key::new(string("pk")?, string("sk")?);
    let expires_at = match record.remove("ttl") {
        None => None,
        Some(AttributeValue::N(n)) => Some(n.parse().map_err(|_| malformed("ttl"))?),
        Some(_) => return Err(malformed("ttl")),
    };
    let attrs: Map<String, Value> = from_item(record).map_err(|e| {
        StoreError::Unavailable(format!("a stored item's attributes cannot be read: {e}"))
    })?;
    Ok(Item {
        key,
        attrs,
        expires_at,
    })
}

/// The item in an optional record, if it is live now.
fn live(record: Option<HashMap<String, AttributeValue>>) -> Result<Option<Item>, StoreError> {
    let item = record.map(from_record).transpose()?;
    Ok(item.filter(|item| item.is_live(now())))
}

fn malformed(attribute: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "a stored item has a missing or malformed `{attribute}`"
    ))
}

fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// A failed call as a [`StoreError`]: DynamoDB's own code and message when it answered (they
/// name the problem, never the item's contents), else the transport error's chain. A
/// `ValidationException` (item over 400 KB, for instance) will fail again, so it is `Invalid`.
fn failure<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (error.code(), error.message()) {
        (Some("ValidationException"), message) => StoreError::Invalid(format!(
            "DynamoDB {operation}: {}",
            message.unwrap_or("validation failed")
        )),
        (Some(code), message) => StoreError::Unavailable(format!(
            "DynamoDB {operation}: {code}: {}",
            message.unwrap_or("no message")
        )),
        (None, _) => StoreError::Unavailable(format!(
            "DynamoDB {operation}: {}",
            DisplayErrorContext(&error)
        )),
    }
}
