//! The `events-publisher` function: the table's stream to the event bus.
//!
//! The outbox ([`crate::events`]) is written in the transactions of the changes it reports;
//! this function, triggered by the table's DynamoDB stream (new images, filtered to outbox
//! INSERTs by the event source mapping), puts each event on the custom bus: source
//! `gatehouse.<platform>`, detail-type the event's name, detail the event
//! ([`Event::detail`], a reference for an event too large for EventBridge).
//!
//! **Nothing lost, nothing renamed.** The stream keeps a record until it is processed (24
//! hours); the mapping retries a batch whose answer names failed records, from the lowest failed
//! sequence number on (`ReportBatchItemFailures`), a bounded number of times, halving the batch
//! (`BisectBatchOnFunctionError`) and finally sending the failed range's description to the
//! dead-letter queue, from which an operator replays it (the events are still in the outbox,
//! `OUTBOX_SECONDS`). An event's id is in its outbox item, so every publish of it carries the
//! same id: a consumer that deduplicates on `detail.id` sees each event once, however often it
//! was retried.
//!
//! **Failures are reported, not thrown.** Records are published in stream order, in
//! `PutEvents` batches of at most [`MAX_BATCH_ENTRIES`] entries and [`MAX_ENTRY_BYTES`] in all
//! (EventBridge's limits). At the first record that fails — an entry EventBridge refused
//! (`FailedEntryCount`, each entry's `ErrorCode`), a call that failed (throttled, timed out,
//! unreachable), a record that does not decode, or no time left before the invocation's deadline
//! — that record and every one after it are reported as batch item failures and nothing after
//! it is sent: the mapping resends from there anyway, so sending more would only publish them
//! twice.

use crate::config::{Config, ConfigError, Vars};
use crate::events::{Event, MAX_ENTRY_BYTES, OUTBOX_KIND, entry_bytes};
use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// The function's name, as its metrics name it (template.yaml, functions/events-publisher.rs).
pub const FUNCTION: &str = "events-publisher";

/// EventBridge's most entries in one `PutEvents`.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// The time a `PutEvents` may take, at most, with its retries: a batch is not started with less
/// than this left before the invocation's deadline.
const CALL_ROOM: Duration = Duration::from_secs(6);

/// Publishes outbox records to one bus.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

/// One record, ready to send: its sequence number (what a failure reports) and its entry.
struct Ready {
    sequence: Option<String>,
    platform: String,
    entry: PutEventsRequestEntry,
    bytes: usize,
    id: String,
}

/// Why a record could not be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The record does not hold an outbox event (a poison record).
    Undecodable(String),
    /// EventBridge refused the entry (its `ErrorCode`).
    Refused(String),
    /// The call failed (throttled, timed out, unreachable).
    Call(String),
    /// Not sent: an earlier record failed, or no time was left.
    NotSent,
}

/// What one invocation did, record by record: the answer to Lambda, and for logs and tests the
/// ids published and the failures.
#[derive(Debug, Default)]
pub struct Published {
    /// The ids of the events EventBridge accepted.
    pub ids: Vec<String>,
    /// Records skipped as not outbox INSERTs (the mapping's filter lets none through).
    pub skipped: usize,
    /// The records that failed, by sequence number, and why.
    pub failures: Vec<(String, Failure)>,
    /// How many of [`Published::ids`] each platform's are.
    pub by_platform: std::collections::BTreeMap<String, usize>,
}

impl Published {
    /// The answer to Lambda: every failed record's sequence number.
    pub fn response(&self) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = self
            .failures
            .iter()
            .map(|(sequence, _)| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(sequence.clone());
                failure
            })
            .collect();
        response
    }
}

impl Publisher {
    /// A publisher to `bus` (a name or an ARN) with `client`.
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    /// The publisher configured by `vars`: `EVENT_BUS_NAME` (required), the AWS timeouts of
    /// [`Config`].
    pub async fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let config = Config::from_vars(vars)?;
        let bus = vars.get("EVENT_BUS_NAME").ok_or_else(|| ConfigError {
            name: "EVENT_BUS_NAME".into(),
            problem: "is required: the event bus the events are published to".into(),
        })?;
        let sdk = crate::context::aws_sdk_config(&config).await;
        Ok(Self::new(aws_sdk_eventbridge::Client::new(&sdk), bus))
    }

    /// Publishes the records of one stream batch, in order, until the first failure (see the
    /// module's documentation); `deadline` is when the invocation must have answered.
    pub async fn publish(&self, batch: &StreamEvent, deadline: Option<Instant>) -> Published {
        let mut out = Published::default();
        let mut ready = Vec::with_capacity(batch.records.len());
        let mut records = batch.records.iter();
        for record in records.by_ref() {
            match self.prepare(record) {
                Ok(Some(r)) => ready.push(r),
                Ok(None) => out.skipped += 1,
                Err(why) => {
                    tracing::error!(sequence = ?record.change.sequence_number, error = ?why,
                                    "events publisher: a record is not an outbox event");
                    out.fail(record.change.sequence_number.clone(), why);
                    break;
                }
            }
        }
        // Everything after a poison record waits for its retry.
        let rest: Vec<Option<String>> = records.map(|r| r.change.sequence_number.clone()).collect();

        let mut pending = ready.into_iter().peekable();
        let mut failed = false;
        while pending.peek().is_some() && !failed {
            let mut chunk: Vec<Ready> = Vec::new();
            let mut bytes = 0;
            while let Some(next) = pending.peek() {
                if chunk.len() == MAX_BATCH_ENTRIES
                    || (!chunk.is_empty() && bytes + next.bytes > MAX_ENTRY_BYTES)
                {
                    break;
                }
                bytes += next.bytes;
                chunk.extend(pending.next());
            }
            if deadline.is_some_and(|d| Instant::now() + CALL_ROOM > d) {
                tracing::warn!("events publisher: out of time; the rest is retried");
                for r in chunk {
                    out.fail(r.sequence, Failure::NotSent);
                }
                break;
            }
            failed = self.send(chunk, &mut out).await;
        }
        for r in pending {
            out.fail(r.sequence, Failure::NotSent);
        }
        for sequence in rest {
            out.fail(sequence, Failure::NotSent);
        }
        out.count();
        if !out.failures.is_empty() {
            tracing::warn!(
                published = out.ids.len(),
                failed = out.failures.len(),
                "events publisher: records left for the retry"
            );
        }
        out
    }

    /// The entry of an outbox INSERT; `None` for any other record.
    fn prepare(&self, record: &EventRecord) -> Result<Option<Ready>, Failure> {
        if record.event_name != "INSERT" {
            return Ok(None);
        }
        let image: Map<String, Value> = serde_dynamo::from_item(record.change.new_image.clone())
            .map_err(|e| Failure::Undecodable(format!("the new image: {e}")))?;
        let outbox = image
            .get("pk")
            .and_then(Value::as_str)
            .is_some_and(|pk| pk.starts_with(&format!("{OUTBOX_KIND}#")));
        if !outbox {
            return Ok(None);
        }
        let event = Event::from_attrs(&image).map_err(|e| Failure::Undecodable(e.to_string()))?;
        let (entry, bytes) = self.entry(&event);
        Ok(Some(Ready {
            sequence: record.change.sequence_number.clone(),
            platform: event.platform.clone(),
            entry,
            bytes,
            id: event.id,
        }))
    }

    /// The bus entry of `event` and the bytes EventBridge counts for it: the one way an event
    /// is put on the bus, by the stream's publisher and by an operator's replay alike.
    fn entry(&self, event: &Event) -> (PutEventsRequestEntry, usize) {
        let (detail, referenced) = event.detail();
        if referenced {
            tracing::info!(
                id = event.id,
                "events publisher: an event too large, published as a reference"
            );
        }
        let source = event.source();
        let bytes = entry_bytes(&source, &event.name, &detail);
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(source)
            .detail_type(&event.name)
            .detail(detail)
            .time(aws_sdk_eventbridge::primitives::DateTime::from_secs(
                event.time,
            ))
            .build();
        (entry, bytes)
    }

    /// Puts one event on the bus, as the stream's publisher would (same source, detail-type,
    /// detail and id): an operator's replay of an event from the outbox. A consumer that
    /// deduplicates on `detail.id` sees a replayed event it already had once.
    pub async fn put(&self, event: &Event) -> Result<(), Failure> {
        let (entry, _) = self.entry(event);
        let answer = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| {
                Failure::Call(aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string())
            })?;
        match answer.entries().first() {
            Some(result) => match result.error_code() {
                None => Ok(()),
                Some(code) => Err(Failure::Refused(code.to_owned())),
            },
            None => Err(Failure::Refused("no answer for the entry".into())),
        }
    }

    /// One `PutEvents`; `true` if anything in it failed (then everything from the first failed
    /// entry on is reported).
    async fn send(&self, chunk: Vec<Ready>, out: &mut Published) -> bool {
        let entries: Vec<PutEventsRequestEntry> = chunk.iter().map(|r| r.entry.clone()).collect();
        let answer = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let why = aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string();
                tracing::warn!(error = %why, "events publisher: PutEvents failed");
                for r in chunk {
                    out.fail(r.sequence, Failure::Call(why.clone()));
                }
                return true;
            }
        };
        let results = answer.entries();
        let mut failed = false;
        for (n, r) in chunk.into_iter().enumerate() {
            let code = match results.get(n) {
                Some(result) if result.error_code().is_none() && !failed => {
                    *out.by_platform.entry(r.platform).or_default() += 1;
                    out.ids.push(r.id);
                    continue;
                }
                Some(result) => result
                    .error_code()
                    .unwrap_or("after a failed entry")
                    .to_owned(),
                None => "no answer for the entry".to_owned(),
            };
            if !failed {
                tracing::warn!(id = r.id, code, "events publisher: an entry was refused");
            }
            failed = true;
            out.fail(r.sequence, Failure::Refused(code));
        }
        failed
    }
}

impl Failure {
    /// The `Reason` dimension of [`crate::metrics::names::EVENTS_FAILED`].
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Undecodable(_) => "undecodable",
            Failure::Refused(_) => "refused",
            Failure::Call(_) => "call",
            Failure::NotSent => "not_sent",
        }
    }
}

impl Published {
    /// The invocation's metrics: the events published, per platform, and the records left for
    /// the retry, per reason (under platform `core`: a record that failed may not say its
    /// platform).
    fn count(&self) {
        use crate::metrics::{Unit, names, value};
        for (platform, n) in &self.by_platform {
            value(
                names::EVENTS_PUBLISHED,
                Unit::Count,
                *n as f64,
                platform,
                &[],
                &[],
            );
        }
        let mut failed: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for (_, why) in &self.failures {
            *failed.entry(why.code()).or_default() += 1;
        }
        for (reason, n) in failed {
            value(
                names::EVENTS_FAILED,
                Unit::Count,
                n as f64,
                "core",
                &[("Reason", reason)],
                &[],
            );
        }
    }

    fn fail(&mut self, sequence: Option<String>, why: Failure) {
        match sequence {
            Some(sequence) => self.failures.push((sequence, why)),
            // Without a sequence number a failure cannot be reported; Lambda's stream records
            // always carry one.
            None => {
                tracing::error!(error = ?why, "events publisher: a failed record has no sequence number")
            }
        }
    }
}

/// The `events-publisher` Lambda function: each stream batch published, answered with its batch
/// item failures. A configuration error stops the container at init.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    crate::metrics::as_function(FUNCTION, || crate::metrics::cold_start("core"));
    let publisher = std::sync::Arc::new(Publisher::from_vars(&Vars::from_env()).await?);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<StreamEvent>| {
            let publisher = publisher.clone();
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async move {
                    let deadline = crate::budget::lambda_deadline(&event.context).and_then(|d| {
                        let left = d.duration_since(std::time::SystemTime::now()).ok()?;
                        Some(Instant::now() + left)
                    });
                    let published = crate::metrics::in_function(
                        FUNCTION,
                        publisher.publish(&event.payload, deadline),
                    )
                    .await;
                    Ok::<_, lambda_runtime::Error>(published.response())
                });
            run
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_each_failed_record() {
        let mut published = Published::default();
        published.fail(Some("1".into()), Failure::NotSent);
        published.fail(None, Failure::NotSent);
        published.fail(Some("2".into()), Failure::Refused("x".into()));
        let response = serde_json::to_value(published.response()).unwrap();
        assert_eq!(
            response,
            serde_json::json!({"batchItemFailures": [
                {"itemIdentifier": "1"}, {"itemIdentifier": "2"}]})
        );
    }
}
