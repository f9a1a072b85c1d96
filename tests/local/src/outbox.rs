//! The outbox on a laptop: what the deployed publisher puts on EventBridge, shown and sent here.
//!
//! - `/_local/events`: a page listing the outbox, newest first (name, tenant, time, whether it
//!   was sent); `/_local/events.json`: the same as JSON, each event as the bus delivers it to a
//!   rule's target (`{id, source, detail-type, time, detail}`), for tools.
//! - With `GATEHOUSE_LOCAL_EVENTS_URL` set, a relay POSTs each event there as that JSON, once
//!   each (a sent event is remembered in the store, `localsent#<id>`, so a restart does not send
//!   it again), in the order they were written; an answer other than 2xx, or none, is retried on
//!   the next round, every `GATEHOUSE_LOCAL_EVENTS_SECONDS` (1 s by default). So an app's
//!   business code can be built against real events without an AWS account.

use crate::server::of_kind;
use axum::response::{IntoResponse, Response as AxumResponse};
use gatehouse::events::{Event, OUTBOX_KIND};
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, Item, Key, Store, StoreError};
use gatehouse::web;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The kind of the marks of events the relay has sent.
pub const SENT_KIND: &str = "localsent";

/// Every event of the outbox, oldest first (by time, then id), and whether each was sent.
pub async fn events(store: &dyn Store) -> Result<Vec<(Event, bool)>, StoreError> {
    let mut out = Vec::new();
    for item in of_kind(store, OUTBOX_KIND).await? {
        let event = Event::from_attrs(&item.attrs)?;
        let sent = store.get(&sent_key(&event.id)).await?.is_some();
        out.push((event, sent));
    }
    out.sort_by(|(a, _), (b, _)| (a.time, &a.id).cmp(&(b.time, &b.id)));
    Ok(out)
}

fn sent_key(id: &str) -> Key {
    Key::single(SENT_KIND, id)
}

/// One round of the relay: every event not yet sent is POSTed to `url`, in order; the first
/// failure ends the round (the rest wait, as the stream would keep them in order). Returns how
/// many were sent.
pub async fn relay_once(store: &dyn Store, http: &reqwest::Client, url: &str) -> usize {
    let pending = match events(store).await {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "local events: the outbox is unreadable");
            return 0;
        }
    };
    let mut sent = 0;
    for (event, done) in pending {
        if done {
            continue;
        }
        let answer = http
            .post(url)
            .header("content-type", "application/json")
            .body(event.envelope().to_string())
            .send()
            .await;
        match answer {
            Ok(a) if a.status().is_success() => {}
            Ok(a) => {
                tracing::warn!(
                    id = event.id,
                    status = a.status().as_u16(),
                    "local events: refused; sent again on the next round"
                );
                return sent;
            }
            Err(e) => {
                tracing::warn!(id = event.id, error = %e,
                               "local events: not delivered; sent again on the next round");
                return sent;
            }
        }
        let mark = Item::new(sent_key(&event.id), Map::new())
            .expiring_at(event.time + gatehouse::events::OUTBOX_SECONDS);
        if let Err(e) = store.put(&mark, Condition::Always).await {
            tracing::warn!(id = event.id, error = %e, "local events: sent, but not marked");
            return sent;
        }
        sent += 1;
    }
    sent
}

/// The relay's task, when `GATEHOUSE_LOCAL_EVENTS_URL` is set: a round every `period`.
pub fn relay_every(
    app: &Arc<Platforms>,
    url: Option<String>,
    period: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = url?;
    let app = app.clone();
    let period = period.max(Duration::from_millis(100));
    Some(tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            relay_once(app.store.as_ref(), &http, &url).await;
        }
    }))
}

/// `/_local/events.json`: every event as the bus delivers it, with `sent`.
pub async fn json_page(
    axum::extract::State(app): axum::extract::State<Arc<Platforms>>,
) -> AxumResponse {
    match events(app.store.as_ref()).await {
        Ok(all) => {
            let list: Vec<Value> = all
                .iter()
                .map(|(event, sent)| {
                    let mut envelope = event.envelope();
                    envelope["sent"] = json!(sent);
                    envelope
                })
                .collect();
            axum::Json(json!({"events": list})).into_response()
        }
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "store_unavailable", "message": e.to_string()})),
        )
            .into_response(),
    }
}

/// `/_local/events`: the outbox as a page, newest first.
pub async fn html_page(
    axum::extract::State(app): axum::extract::State<Arc<Platforms>>,
) -> AxumResponse {
    let all = match events(app.store.as_ref()).await {
        Ok(all) => all,
        Err(e) => {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("the outbox is unreadable: {e}"),
            )
                .into_response();
        }
    };
    let rows: String = all
        .iter()
        .rev()
        .map(|(event, sent)| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                web::escape(&event.id),
                web::escape(&event.source()),
                web::escape(&event.name),
                web::escape(&event.tenant),
                event.time,
                if *sent { "sent" } else { "not sent" },
            )
        })
        .collect();
    let table = if rows.is_empty() {
        "<p>No events yet: install something, send a webhook or make a payment.</p>".to_owned()
    } else {
        format!(
            "<table><tr><th>id</th><th>source</th><th>detail-type</th><th>tenant</th><th>time</th><th>sent</th></tr>{rows}</table>"
        )
    };
    let body = format!(
        "<p><a href=\"/\">Back to the console</a></p>\
         <p>The outbox: every event, as the deployed publisher puts it on EventBridge. \
         <a href=\"/_local/events.json\">As JSON</a>. With <code>GATEHOUSE_LOCAL_EVENTS_URL</code> \
         set, each is POSTed there once.</p>{table}"
    );
    let page = web::html_page(
        lambda_http::http::StatusCode::OK,
        "Gatehouse events (local)",
        &body,
    );
    let (parts, body) = page.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, axum::body::Body::from(bytes))
}
