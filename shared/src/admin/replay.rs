//! `events replay`: an event of the outbox put on the bus again, and the publisher's
//! dead-letter queue re-driven.
//!
//! A replay publishes directly, the way the stream's publisher does ([`Publisher::put`]: the
//! same source, detail-type, detail and id), rather than rewriting the outbox item: the
//! publisher's stream filter passes INSERTs only, so a rewrite would need a delete and a new
//! put of the item, a moment in which the event would exist nowhere. Replayed events keep their
//! ids, so a consumer that deduplicates on `detail.id` sees each once.
//!
//! What the dead-letter queue holds is not events but the description of a range of stream
//! records whose publishing failed after every retry (Lambda's on-failure record for a stream:
//! `DDBStreamBatchInfo`, with the approximate arrival times of its first and last records). The
//! events themselves are still in the outbox ([`crate::events::OUTBOX_SECONDS`]), so a message is
//! re-driven by publishing every outbox event written in its time range (widened by
//! [`SLACK_SECONDS`] each side, since the arrival times are approximate); an event published
//! before is published again under its id. The message is deleted only once all of them are on
//! the bus. This reads the whole outbox (a Scan of its prefix), which only the operator's
//! credentials allow, and which the outbox's expiry keeps small.

use super::AdminError;
use crate::config::{Config, Vars};
use crate::events::{Event, OUTBOX_KIND, PLATFORMS, outbox_key};
use crate::publisher::Publisher;
use crate::store::Store;
use serde_json::Value;
use std::collections::BTreeSet;

/// How far outside a dead-letter range's approximate arrival times an event's time may be.
pub const SLACK_SECONDS: i64 = 120;

/// Where a replay publishes.
pub enum Bus {
    /// The stack's bus (`EVENT_BUS_NAME`), as the stream's publisher does.
    EventBridge(Publisher),
    /// The local server's events URL (`GATEHOUSE_LOCAL_EVENTS_URL`): each event POSTed as the
    /// local relay POSTs it ([`Event::envelope`]).
    Local {
        /// The client.
        http: reqwest::Client,
        /// Where to POST.
        url: String,
    },
}

impl Bus {
    /// `EVENT_BUS_NAME`'s bus, else `GATEHOUSE_LOCAL_EVENTS_URL`; neither is a usage error.
    pub async fn from_vars(vars: &Vars, config: &Config) -> Result<Self, AdminError> {
        if let Some(bus) = vars.get("EVENT_BUS_NAME") {
            let sdk = crate::context::aws_sdk_config(config).await;
            return Ok(Bus::EventBridge(Publisher::new(
                aws_sdk_eventbridge::Client::new(&sdk),
                bus,
            )));
        }
        if let Some(url) = vars.get("GATEHOUSE_LOCAL_EVENTS_URL") {
            let http = reqwest::Client::builder()
                .timeout(config.http_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| AdminError::Replay(format!("no HTTP client: {e}")))?;
            return Ok(Bus::Local {
                http,
                url: url.to_owned(),
            });
        }
        Err(AdminError::Usage(
            "set EVENT_BUS_NAME (the stack's EventBusName output) or GATEHOUSE_LOCAL_EVENTS_URL"
                .into(),
        ))
    }

    /// Publishes one event.
    pub async fn put(&self, event: &Event) -> Result<(), AdminError> {
        match self {
            Bus::EventBridge(publisher) => publisher.put(event).await.map_err(|why| {
                AdminError::Replay(format!("event {} was not published: {why:?}", event.id))
            }),
            Bus::Local { http, url } => {
                let answer = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(event.envelope().to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        AdminError::Replay(format!(
                            "event {} was not delivered: {}",
                            event.id,
                            crate::http::describe(&e)
                        ))
                    })?;
                if answer.status().is_success() {
                    Ok(())
                } else {
                    Err(AdminError::Replay(format!(
                        "event {} was refused: {}",
                        event.id,
                        answer.status().as_u16()
                    )))
                }
            }
        }
    }
}

/// Publishes event `id` of `platform` from the outbox again; returns it.
pub async fn outbox(
    store: &dyn Store,
    bus: &Bus,
    platform: &str,
    id: &str,
) -> Result<Event, AdminError> {
    if !PLATFORMS.contains(&platform) {
        return Err(AdminError::Usage(format!(
            "`{platform}` is not a platform ({})",
            PLATFORMS.join(", ")
        )));
    }
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| AdminError::Usage(format!("`{id}` is not an event id")))?
        .hyphenated()
        .to_string();
    let item = store
        .get(&outbox_key(platform, &id))
        .await?
        .ok_or_else(|| {
            AdminError::NotFound(format!(
                "no event {id} of {platform} in the outbox (kept {} days)",
                crate::events::OUTBOX_SECONDS / 86_400
            ))
        })?;
    let event = Event::from_attrs(&item.attrs)?;
    bus.put(&event).await?;
    Ok(event)
}

/// What re-driving the dead-letter queue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Messages re-driven and deleted.
    pub messages: usize,
    /// Events published (each once per run, however many messages' ranges hold it).
    pub published: usize,
    /// Messages left in the queue (unreadable, or an event of their range not published).
    pub left: usize,
}

/// The time range (unix seconds, inclusive) a dead-letter message describes, widened by
/// [`SLACK_SECONDS`]; `None` if the message is not a stream range's description.
pub fn range_of(body: &str) -> Option<(i64, i64)> {
    let value: Value = serde_json::from_str(body).ok()?;
    let info = value.get("DDBStreamBatchInfo")?;
    let time = |name: &str| {
        info.get(name)
            .and_then(Value::as_str)
            .and_then(crate::rfc3339::parse)
    };
    let first = time("approximateArrivalOfFirstRecord")?;
    let last = time("approximateArrivalOfLastRecord").unwrap_or(first);
    Some((
        first.min(last) - SLACK_SECONDS,
        first.max(last) + SLACK_SECONDS,
    ))
}

/// Re-drives every message of the dead-letter queue at `queue_url`: for each, every outbox
/// event in its range is published, then the message is deleted. A message that cannot be read
/// as a range, or whose events did not all publish, is left (it becomes visible again after its
/// visibility timeout, for the next run). `progress` is told about each message.
pub async fn dead_letters(
    store: &dyn Store,
    bus: &Bus,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Redriven, AdminError> {
    let sqs_failed = |e: String| AdminError::Replay(format!("the dead-letter queue: {e}"));
    let mut outbox: Option<Vec<Event>> = None;
    let mut published: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut report = Redriven::default();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| sqs_failed(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        let messages = answer.messages();
        // A message left in the queue comes back after its visibility timeout, not in this run;
        // one seen twice means the queue has gone round.
        let fresh: Vec<_> = messages
            .iter()
            .filter(|m| m.message_id().is_none_or(|id| seen.insert(id.to_owned())))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for message in fresh {
            let id = message.message_id().unwrap_or("?");
            let Some((from, to)) = message.body().and_then(range_of) else {
                progress(&format!(
                    "message {id}: not a stream range's description; left in the queue"
                ));
                report.left += 1;
                continue;
            };
            if outbox.is_none() {
                outbox = Some(all_events(store).await?);
            }
            let events: Vec<&Event> = outbox
                .iter()
                .flatten()
                .filter(|e| (from..=to).contains(&e.time))
                .collect();
            let mut ok = true;
            for event in &events {
                if published.contains(&event.id) {
                    continue;
                }
                match bus.put(event).await {
                    Ok(()) => {
                        published.insert(event.id.clone());
                    }
                    Err(e) => {
                        progress(&format!("message {id}: {e}"));
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                report.left += 1;
                continue;
            }
            if let Some(receipt) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(|e| {
                        sqs_failed(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
                    })?;
            }
            report.messages += 1;
            progress(&format!(
                "message {id}: {} event(s) of {} to {} published; deleted",
                events.len(),
                crate::rfc3339::format(from + SLACK_SECONDS),
                crate::rfc3339::format(to - SLACK_SECONDS)
            ));
        }
    }
    report.published = published.len();
    Ok(report)
}

/// Every event in the outbox, oldest first.
async fn all_events(store: &dyn Store) -> Result<Vec<Event>, AdminError> {
    let mut events = store
        .scan_prefix(&format!("{OUTBOX_KIND}#"))
        .await?
        .iter()
        .map(|item| Event::from_attrs(&item.attrs))
        .collect::<Result<Vec<_>, _>>()?;
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_failure_record_names_its_range() {
        let body = serde_json::json!({
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {
                "shardId": "shardId-1", "batchSize": 3,
                "approximateArrivalOfFirstRecord": "1970-01-01T00:10:00Z",
                "approximateArrivalOfLastRecord": "1970-01-01T00:20:00.5Z",
            }
        })
        .to_string();
        assert_eq!(
            range_of(&body),
            Some((600 - SLACK_SECONDS, 1200 + SLACK_SECONDS))
        );
        assert_eq!(range_of("{}"), None);
        assert_eq!(range_of("not json"), None);
    }
}
