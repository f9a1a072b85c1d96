//! The events publisher against moto's EventBridge: a bus with a rule whose target is an SQS
//! queue (the test's consumer), the publisher's calls through the fault proxy (throttling,
//! answers lost after the events were put, hangs past the client's timeout) and through a relay
//! that makes moto refuse one entry of some requests for real (its detail made malformed on the
//! way, so `PutEvents` answers a `FailedEntryCount`). The stream is driven as Lambda's event
//! source mapping drives it: batches in order, each retried from the first record the function
//! reports failed, at most a bounded number of times, after which the range goes to the
//! dead-letter list. Then: every event is on the bus at least once, once after deduplication on
//! its id, with its source and detail-type, valid against its schema; none is lost, none has a
//! new id; a poison record ends in the dead-letter list and holds up nothing else.

use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use gatehouse::events::Event;
use gatehouse::publisher::Publisher;
use gatehouse_local::faultproxy::{Fault, FaultProxy, Rule, Throttle};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A bus on moto with a rule sending everything from `gatehouse.*` to a fresh queue.
pub(crate) struct Bus {
    pub(crate) name: String,
    pub(crate) sdk: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    queue: String,
}

impl Bus {
    /// `None` without moto.
    pub(crate) async fn create() -> Option<Bus> {
        let sdk = crate::support::sdk_config().await?;
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let name = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
        events.create_event_bus().name(&name).send().await.unwrap();
        let queue = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        events
            .put_rule()
            .name("all-gatehouse")
            .event_bus_name(&name)
            .event_pattern(json!({"source": [{"prefix": "gatehouse."}]}).to_string())
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .rule("all-gatehouse")
            .event_bus_name(&name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Some(Bus {
            name,
            sdk,
            sqs,
            queue,
        })
    }

    /// Everything the rule delivered so far, received and deleted until the queue stays empty.
    pub(crate) async fn drain(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut empty = 0;
        while empty < 3 {
            let answer = self
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = answer.messages();
            if messages.is_empty() {
                empty += 1;
                continue;
            }
            empty = 0;
            for m in messages {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        out
    }
}

/// The stream record Lambda would deliver for the outbox item of `event`, as DynamoDB stores it
/// (the store's own item layout: `pk`, `sk`, the attributes, `ttl`).
pub(crate) fn record_of(event: &Event, sequence: u64) -> EventRecord {
    let item = event.to_item().unwrap();
    let mut image = item.attrs.clone();
    image.insert("pk".into(), json!(item.key.pk));
    image.insert("sk".into(), json!(item.key.sk));
    image.insert("ttl".into(), json!(item.expires_at));
    record_with_image(Value::Object(image), sequence)
}

/// A stream INSERT record with this new image (JSON, as the store writes attributes).
pub(crate) fn record_with_image(image: Value, sequence: u64) -> EventRecord {
    let image: serde_dynamo::Item = serde_dynamo::to_item(image).unwrap();
    let keys = json!({"pk": image.get("pk").cloned(), "sk": image.get("sk").cloned()});
    serde_json::from_value(json!({
        "awsRegion": "us-east-1",
        "eventID": format!("event-{sequence}"),
        "eventName": "INSERT",
        "eventSource": "aws:dynamodb",
        "eventVersion": "1.1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-12-01T00:00:00.000",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_795_000_000,
            "Keys": serde_json::to_value(
                serde_dynamo::to_item::<_, serde_dynamo::Item>(keys).unwrap()
            ).unwrap(),
            "NewImage": serde_json::to_value(&image).unwrap(),
            "SequenceNumber": format!("{sequence:020}"),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE"
        }
    }))
    .unwrap()
}

/// A stream batch of these records.
pub(crate) fn batch(records: &[EventRecord]) -> StreamEvent {
    let mut event = StreamEvent::default();
    event.records = records.to_vec();
    event
}

/// What driving a stream through the publisher ended with.
struct Driven {
    /// Invocations of the function.
    invocations: usize,
    /// Records the mapping gave up on, as the dead-letter queue would describe them (their
    /// sequence numbers).
    dead_letters: Vec<String>,
}

/// Lambda's event source mapping over `records`: batches of `batch_size` in order; an answer
/// naming failures makes the next batch start at the lowest failed record; a batch that starts
/// at the same record more than `max_retries` times after its first try is given up (its
/// failed records go to the dead-letter list) and the stream moves past it.
async fn drive(
    publisher: &Publisher,
    records: &[EventRecord],
    batch_size: usize,
    max_retries: usize,
) -> Driven {
    let index: BTreeMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.change.sequence_number.clone().unwrap(), i))
        .collect();
    let mut driven = Driven {
        invocations: 0,
        dead_letters: Vec::new(),
    };
    let (mut at, mut retries) = (0, 0);
    while at < records.len() {
        let end = (at + batch_size).min(records.len());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let published = publisher
            .publish(&batch(&records[at..end]), Some(deadline))
            .await;
        driven.invocations += 1;
        let answer = published.response();
        let failed: Vec<usize> = answer
            .batch_item_failures
            .iter()
            .map(|f| index[f.item_identifier.as_ref().unwrap()])
            .collect();
        assert!(failed.iter().all(|i| (at..end).contains(i)), "{failed:?}");
        let Some(&first) = failed.iter().min() else {
            (at, retries) = (end, 0);
            continue;
        };
        if first == at {
            retries += 1;
        } else {
            retries = 0;
        }
        if retries > max_retries {
            // Bisected down to the record that keeps failing, then given up: the mapping sends
            // the range's description to the on-failure destination and moves on.
            driven
                .dead_letters
                .push(records[at].change.sequence_number.clone().unwrap());
            (at, retries) = (at + 1, 0);
        } else {
            at = first;
        }
    }
    driven
}

/// A relay to moto that, for `PutEvents` requests it picks (every `every`-th), makes one entry's
/// detail malformed on the way, so that moto refuses that entry and accepts the others: a real
/// `FailedEntryCount` in a real answer.
struct EntrySpoiler {
    url: String,
    spoiled: Arc<AtomicU64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl EntrySpoiler {
    async fn start(upstream: String, every: u64) -> EntrySpoiler {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spoiled = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let http = crate::support::http();
        let counter = spoiled.clone();
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (http, upstream, seen, counter) = (
                http.clone(),
                upstream.clone(),
                seen.clone(),
                counter.clone(),
            );
            async move {
                let (parts, body) = request.into_parts();
                let mut body = axum::body::to_bytes(body, 8 << 20).await.unwrap().to_vec();
                let target = parts
                    .headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if target == "AWSEvents.PutEvents"
                    && seen.fetch_add(1, Ordering::SeqCst) % every == every - 1
                {
                    let mut request: Value = serde_json::from_slice(&body).unwrap();
                    let entries = request["Entries"].as_array_mut().unwrap();
                    let n = entries.len() / 2;
                    entries[n]["Detail"] = json!("not JSON: spoiled on the way");
                    body = serde_json::to_vec(&request).unwrap();
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut forward = http.request(parts.method.clone(), format!("{upstream}{path}"));
                for (name, value) in &parts.headers {
                    if !matches!(name.as_str(), "content-length" | "host" | "connection") {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.body(body).send().await.unwrap();
                let status = answer.status().as_u16();
                let headers = answer.headers().clone();
                let bytes = answer.bytes().await.unwrap();
                let mut response = axum::response::Response::builder().status(status);
                for (name, value) in &headers {
                    if !matches!(
                        name.as_str(),
                        "content-length" | "connection" | "transfer-encoding"
                    ) {
                        response = response.header(name, value);
                    }
                }
                response.body(axum::body::Body::from(bytes)).unwrap()
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        EntrySpoiler {
            url,
            spoiled,
            _stop: stop,
        }
    }
}

/// A publisher to `bus` reaching EventBridge at `endpoint`: two attempts per call, each cut
/// after a second (a hang is a timeout, then a failure the function reports).
pub(crate) fn publisher_at(sdk: &aws_config::SdkConfig, endpoint: &str, bus: &str) -> Publisher {
    let client = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(1))
                    .build(),
            )
            .build(),
    );
    Publisher::new(client, bus)
}

/// The events of a realistic mix: deliveries of both platforms, payments, and one too large
/// for EventBridge.
fn events(n: usize) -> Vec<Event> {
    let mut out: Vec<Event> = (0..n)
        .map(|i| match i % 4 {
            0 => Event::new(
                "haravan",
                "webhook.orders/create",
                "1000",
                json!({"topic": "orders/create", "payload": {"order": i}}),
            ),
            1 => Event::new(
                "sesami",
                "webhook.uninstall_app",
                "shop-1",
                json!({"topic": "uninstall_app", "payload": {"shopId": "shop-1", "n": i}}),
            ),
            2 => Event::new(
                "momo",
                gatehouse::events::names::PAYMENT_SUCCEEDED,
                &format!("ref-{i}"),
                json!({"reference_id": format!("ref-{i}"), "status": "SUCCESSFUL",
                       "amount": "10", "currency": "EUR", "external_id": "e", "created_at": 1,
                       "completed_at": 2, "reason": null, "financial_transaction_id": "f",
                       "submitted": "accepted"}),
            ),
            _ => Event::new(
                "momo",
                gatehouse::events::names::PAYMENT_FAILED,
                &format!("ref-{i}"),
                json!({"reference_id": format!("ref-{i}"), "status": "FAILED",
                       "amount": "10", "currency": "EUR", "external_id": "e", "created_at": 1,
                       "completed_at": 2, "reason": {"code": "PAYER_NOT_FOUND"},
                       "financial_transaction_id": null, "submitted": "accepted"}),
            ),
        })
        .collect();
    out.push(Event::new(
        "haravan",
        "webhook.products/update",
        "1000",
        json!({"topic": "products/update", "payload": {"blob": "x".repeat(255 * 1024)}}),
    ));
    out
}

/// Checks what the bus delivered against `events`: each at least once, once by id, as
/// published (source, detail-type, detail valid against its schema; a reference for the large
/// one). Returns how many deliveries were repeats.
fn check_delivered(delivered: &[Value], events: &[Event]) -> usize {
    let expected: BTreeMap<&str, &Event> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut seen = BTreeSet::new();
    for message in delivered {
        let detail = &message["detail"];
        let id = detail["id"].as_str().expect("every detail has its id");
        let event = expected
            .get(id)
            .unwrap_or_else(|| panic!("an event nobody wrote (a new id?): {id}"));
        assert_eq!(message["source"], json!(event.source()));
        assert_eq!(message["detail-type"], json!(event.name));
        let problems = crate::event_schemas::problems(&event.name, detail);
        assert!(problems.is_empty(), "{problems:?}");
        if detail["data"].is_null() {
            assert_eq!(
                detail["data_ref"]["path"],
                json!(format!("/v1/events/{}/{id}", event.platform))
            );
        } else {
            assert_eq!(detail["data"], event.data);
        }
        seen.insert(id.to_owned());
    }
    let missing: Vec<&&str> = expected.keys().filter(|id| !seen.contains(**id)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    delivered.len() - seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_bus_once_by_id_through_faults() {
    let Some(bus) = Bus::create().await else {
        return;
    };
    let upstream = gatehouse_local::faultproxy::endpoint_from_env().unwrap();
    let spoiler = EntrySpoiler::start(upstream.trim_end_matches('/').to_owned(), 5).await;
    let proxy = FaultProxy::start(&spoiler.url, 15).await.unwrap();
    proxy.set(vec![
        Rule::every(Fault::Throttle(Throttle::Throttling))
            .on(&["PutEvents"])
            .probability(0.15),
        Rule::every(Fault::AnswerDropped)
            .on(&["PutEvents"])
            .probability(0.1),
        Rule::every(Fault::Hang)
            .on(&["PutEvents"])
            .probability(0.05)
            .times(3),
    ]);
    let publisher = publisher_at(&bus.sdk, &proxy.endpoint(), &bus.name);
    let events = events(240);
    let mut records: Vec<EventRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| record_of(e, i as u64 + 1))
        .collect();
    // A poison record in the middle: an outbox item that does not hold an event.
    records.insert(
        100,
        record_with_image(
            json!({"pk": "outbox#poison", "sk": "poison", "id": 5, "data_json": "{"}),
            10_000,
        ),
    );
    let driven = drive(&publisher, &records, 25, 4).await;
    let fired = proxy.fired();
    proxy.clear();
    assert_eq!(driven.dead_letters, vec![format!("{:020}", 10_000)]);
    assert!(
        fired.iter().sum::<usize>() > 0,
        "faults were injected: {fired:?}"
    );
    assert!(
        spoiler.spoiled.load(Ordering::SeqCst) > 0,
        "entries refused"
    );
    let delivered = bus.drain().await;
    let repeats = check_delivered(&delivered, &events);
    eprintln!(
        "publisher: {} events, {} invocations, {} faults {fired:?}, {} entries refused, {repeats} repeats",
        events.len(),
        driven.invocations,
        fired.iter().sum::<usize>(),
        spoiler.spoiled.load(Ordering::SeqCst),
    );
}

/// The function's answer, record by record: what it must say for the mapping to retry only
/// what failed and to move a poison record towards the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_names_the_first_failure_and_everything_after_it() {
    let Some(bus) = Bus::create().await else {
        return;
    };
    let upstream = gatehouse_local::faultproxy::endpoint_from_env().unwrap();
    let publisher = publisher_at(&bus.sdk, &upstream, &bus.name);
    let events = events(11);
    let mut records: Vec<EventRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| record_of(e, i as u64 + 1))
        .collect();

    // All good: nothing reported, all published (11 small and one large: two PutEvents).
    let published = publisher.publish(&batch(&records), None).await;
    assert!(published.failures.is_empty(), "{:?}", published.failures);
    assert_eq!(published.ids.len(), events.len());

    // Not an outbox INSERT (a MODIFY, or another kind's item): skipped, not a failure.
    let mut modify = records[0].clone();
    modify.event_name = "MODIFY".into();
    let other = record_with_image(json!({"pk": "install#sesami#s", "sk": "s"}), 50);
    let published = publisher.publish(&batch(&[modify, other]), None).await;
    assert_eq!((published.skipped, published.failures.len()), (2, 0));

    // A poison record: it and every later record are reported; earlier ones are published.
    records.insert(
        3,
        record_with_image(json!({"pk": "outbox#x", "sk": "x", "time": "soon"}), 99),
    );
    let published = publisher.publish(&batch(&records), None).await;
    assert_eq!(published.ids.len(), 3);
    let reported: Vec<String> =
        serde_json::to_value(published.response()).unwrap()["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
            .collect();
    let expected: Vec<String> = records[3..]
        .iter()
        .map(|r| r.change.sequence_number.clone().unwrap())
        .collect();
    assert_eq!(reported, expected);

    // EventBridge unreachable: everything reported, nothing lost.
    let gone = publisher_at(&bus.sdk, "http://127.0.0.1:9", &bus.name);
    let published = gone.publish(&batch(&records[..3]), None).await;
    assert_eq!(published.failures.len(), 3);
    assert!(published.ids.is_empty());

    // No time left before the deadline: nothing sent, everything reported.
    let soon = std::time::Instant::now() + Duration::from_secs(1);
    let published = publisher.publish(&batch(&records[..3]), Some(soon)).await;
    assert_eq!(published.failures.len(), 3);
    let _ = bus.drain().await;
}
