//! Verified events for the app's own code: an outbox in the table, published to EventBridge.
//!
//! Every verified, deduplicated webhook delivery and every lifecycle change of a connection or
//! a payment becomes one [`Event`]. The event is not sent anywhere by the request that makes
//! it: it is written to the table **in the same atomic write** as the mark and the effect it
//! reports ([`Event::write`] is one more [`Write`] of that transaction), so that an event exists
//! exactly when its change does. A publisher (`events-publisher`, `gatehouse::publisher`) reads
//! the table's stream and puts each outbox item on the bus; the event's id is fixed when it is
//! written, so a publisher that retries after a failure sends the same id again and a consumer
//! that deduplicates on it sees each event once.
//!
//! On the bus: source `gatehouse.<platform>`, detail-type the event's name, detail
//! `{id, platform, name, tenant, time, data}` ([`Event::detail`]). A detail too large for
//! EventBridge ([`MAX_ENTRY_BYTES`]) is published as a reference instead
//! (`data: null, data_ref: {path, bytes}`): the event itself stays whole in the outbox, and
//! `GET /v1/events/{platform}/{id}` answers it.
//!
//! Deliveries: [`apply_delivery`] and [`mark_delivery`] are [`once::apply`] and
//! [`once::mark_alone`] with the delivery's `webhook.<topic>` event in the same transaction; a
//! duplicate writes nothing. A delivery's event id is derived from its mark ([`derived_id`]), so
//! that the same delivery can only ever make the same event.
//!
//! The JSON Schema of every event is in `docs/events/` (one file per name, and one for every
//! `webhook.<topic>`); the tests validate every event they make against it.

use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::error::{Error, Reason, Result};
use crate::once::{self, Applied};
use crate::store::{Condition, Item, Key, Store, StoreError, Write, now};
use crate::web;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// How long an outbox item stays in the table after it was written: long enough for the stream
/// (which keeps records 24 hours) and a replay by an operator, and as long as a delivery's mark
/// (so that while the mark stops a delivery, its event can still be read).
pub const OUTBOX_SECONDS: i64 = once::DELIVERY_MARK_SECONDS;

/// The partition prefix of outbox items: `outbox#<platform>#<id>`, one partition per event,
/// under its platform's prefix so that a function's policy lets it write its own platform's
/// events only.
pub const OUTBOX_KIND: &str = "outbox";

/// EventBridge's limit on one entry of a `PutEvents` (and on the whole request): 256 KiB,
/// counted as the bytes of its source, detail-type, detail and resources plus 14 for the time.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// The largest event (its JSON) the outbox holds. DynamoDB's item limit is 400 KB, names and
/// values; what is left covers the item's other attributes. The webhooks' own body limits
/// (256 KiB, `sesami::MAX_WEBHOOK_BYTES`, `haravan::MAX_BODY`) keep every delivery under it.
pub const MAX_EVENT_BYTES: usize = 380 * 1024;

/// Where the app reads a whole event whose detail on the bus is a reference:
/// `GET /v1/events/{platform}/{id}` (IAM-authorized).
pub const EVENTS_PATH: &str = "/v1/events/";

/// The lifecycle and delivery events Gatehouse emits (the detail-type on the bus).
pub mod names {
    /// A connection (install, cardholder connection, sign-in session) was stored for the first time.
    pub const CONNECTION_CREATED: &str = "connection.created";
    /// A connection's tokens or details changed (a re-install, a refresh, a `shop/update`).
    pub const CONNECTION_UPDATED: &str = "connection.updated";
    /// The platform refused a connection's refresh token: someone must authorize again.
    pub const CONNECTION_NEEDS_REAUTH: &str = "connection.needs_reauth";
    /// A connection turned out to hold no refresh token (offline access was not granted): it
    /// works until its access token expires, then someone must authorize again.
    pub const CONNECTION_NO_REFRESH_TOKEN: &str = "connection.no_refresh_token";
    /// A connection was removed (an uninstall, a revocation, a sign-out).
    pub const CONNECTION_REMOVED: &str = "connection.removed";
    /// A MoMo payment reached SUCCESSFUL.
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    /// A MoMo payment reached FAILED (or was rejected, or timed out at MoMo).
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// The prefix of a verified webhook delivery's event: `webhook.<topic>`.
    pub const WEBHOOK_PREFIX: &str = "webhook.";

    /// Every name that is not a delivery's: each has its schema in `docs/events/<name>.json`.
    pub const LIFECYCLE: [&str; 7] = [
        CONNECTION_CREATED,
        CONNECTION_UPDATED,
        CONNECTION_NEEDS_REAUTH,
        CONNECTION_NO_REFRESH_TOKEN,
        CONNECTION_REMOVED,
        PAYMENT_SUCCEEDED,
        PAYMENT_FAILED,
    ];
}

/// One event, as stored in the outbox and as its detail on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable for ever: fixed when the event is written, the same on every publish of it.
    pub id: String,
    /// `sesami`, `haravan`, `saison`, `momo` or `weblink`.
    pub platform: String,
    /// The event's name, e.g. [`names::CONNECTION_CREATED`]: the detail-type on the bus.
    pub name: String,
    /// The tenant it is about (shop, org, cardholder, session, payment reference).
    pub tenant: String,
    /// When it happened, unix seconds.
    pub time: i64,
    /// What the app's code needs (a delivery's payload, a connection without its tokens).
    pub data: Value,
}

/// An id shaped as a UUID (version 8: custom), derived from `seed` by SHA-256: the same seed
/// always gives the same id. A delivery's seed is its mark, a payment outcome's its reference,
/// so that a retried write can only ever make the same event.
pub fn derived_id(seed: &str) -> String {
    let hash = crate::crypto::sha256(format!("gatehouse-event\0{seed}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

impl Event {
    /// A new event with a fresh random id, happening now.
    pub fn new(platform: &str, name: &str, tenant: &str, data: Value) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            platform: platform.to_owned(),
            name: name.to_owned(),
            tenant: tenant.to_owned(),
            time: now(),
            data,
        }
    }

    /// A new event happening now whose id is derived from `seed` ([`derived_id`]).
    pub fn derived(platform: &str, name: &str, tenant: &str, data: Value, seed: &str) -> Self {
        Self {
            id: derived_id(&format!("{platform}\0{name}\0{seed}")),
            ..Self::new(platform, name, tenant, data)
        }
    }

    /// The event of a verified webhook delivery of `topic` for `tenant`: `webhook.<topic>`,
    /// data `{topic, payload}`, its id derived from the delivery's `mark`.
    pub fn delivery(
        platform: &str,
        topic: &str,
        tenant: &str,
        payload: Value,
        mark: &Item,
    ) -> Self {
        let mut event = Self::new(
            platform,
            &format!("{}{topic}", names::WEBHOOK_PREFIX),
            tenant,
            json!({"topic": topic, "payload": payload}),
        );
        event.id = derived_id(&format!("delivery\0{}\0{}", mark.key.pk, mark.key.sk));
        event
    }

    /// The source on the bus: `gatehouse.<platform>`.
    pub fn source(&self) -> String {
        format!("gatehouse.{}", self.platform)
    }

    /// The key of this event's outbox item.
    pub fn key(&self) -> Key {
        outbox_key(&self.platform, &self.id)
    }

    /// The write that puts this event in the outbox: one more write of the transaction that
    /// makes the change it reports. Unconditional: what makes the change happen once (a
    /// delivery's mark, a payment's status condition) makes its event happen once, and an id is
    /// its change's alone (derived from it, or random), so a condition here would guard nothing
    /// and cost a read in every transaction. A rewrite of the same event (a delivery whose mark
    /// lapsed) is a MODIFY on the stream, which the publisher's filter does not pass.
    pub fn write(&self) -> std::result::Result<Write, StoreError> {
        Ok(Write::Put(self.to_item()?, Condition::Always))
    }

    /// The outbox item holding this event. `data` is kept as its JSON text (`data_json`): a
    /// delivery's payload may nest deeper than DynamoDB's 32 levels, hold numbers DynamoDB
    /// cannot, or empty keys; as text it is stored and read back exactly as received. An event
    /// over [`MAX_EVENT_BYTES`] is [`StoreError::Invalid`].
    pub fn to_item(&self) -> std::result::Result<Item, StoreError> {
        let data = serde_json::to_string(&self.data)
            .map_err(|e| StoreError::Invalid(format!("an event's data does not encode: {e}")))?;
        if data.len() > MAX_EVENT_BYTES {
            return Err(StoreError::Invalid(format!(
                "an event's data is {} bytes, over the outbox's {MAX_EVENT_BYTES}",
                data.len()
            )));
        }
        let mut attrs = Map::new();
        attrs.insert("id".into(), self.id.clone().into());
        attrs.insert("platform".into(), self.platform.clone().into());
        attrs.insert("name".into(), self.name.clone().into());
        attrs.insert("tenant".into(), self.tenant.clone().into());
        attrs.insert("time".into(), self.time.into());
        attrs.insert("data_json".into(), data.into());
        Ok(Item::new(self.key(), attrs).expiring_at(self.time + OUTBOX_SECONDS))
    }

    /// The event an outbox item holds (its `data` as text, or as a value).
    pub fn from_attrs(attrs: &Map<String, Value>) -> std::result::Result<Self, StoreError> {
        let mut attrs = attrs.clone();
        if let Some(text) = attrs.remove("data_json") {
            let data = text
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .ok_or_else(|| {
                    StoreError::Invalid("the stored event's data_json is not JSON text".into())
                })?;
            attrs.insert("data".into(), data);
        }
        serde_json::from_value(Value::Object(attrs))
            .map_err(|e| StoreError::Invalid(format!("the stored event does not decode: {e}")))
    }

    /// The event as the app receives it: `{id, platform, name, tenant, time, data}`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "platform": self.platform,
            "name": self.name,
            "tenant": self.tenant,
            "time": self.time,
            "data": self.data,
        })
    }

    /// The detail on the bus, as JSON text: the event itself, or, when that would make an entry
    /// over [`MAX_ENTRY_BYTES`], the event with `data: null` and
    /// `data_ref: {path, bytes}` naming where the whole event is read (`GET /v1/events/{platform}/{id}`)
    /// and how large its data is. The second value says whether it is a reference.
    pub fn detail(&self) -> (String, bool) {
        let whole = self.to_json().to_string();
        if entry_bytes(&self.source(), &self.name, &whole) <= MAX_ENTRY_BYTES {
            return (whole, false);
        }
        let bytes = serde_json::to_string(&self.data).map_or(0, |d| d.len());
        let mut reference = self.to_json();
        reference["data"] = Value::Null;
        reference["data_ref"] =
            json!({"path": format!("{EVENTS_PATH}{}/{}", self.platform, self.id), "bytes": bytes});
        (reference.to_string(), true)
    }

    /// The event as the local server POSTs it, and as an EventBridge rule's target receives it:
    /// `{source, detail-type, detail}` with the detail of [`Event::detail`].
    pub fn envelope(&self) -> Value {
        let (detail, _) = self.detail();
        json!({
            "id": self.id,
            "source": self.source(),
            "detail-type": self.name,
            "time": self.time,
            "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::Null),
        })
    }
}

/// The platforms whose events the outbox holds.
pub const PLATFORMS: [&str; 5] = ["sesami", "haravan", "saison", "momo", "weblink"];

/// The key of the outbox item of event `id` of `platform`.
pub fn outbox_key(platform: &str, id: &str) -> Key {
    Key::single(&format!("{OUTBOX_KIND}#{platform}"), id)
}

/// Whether `topic` can name a delivery's event (`webhook.<topic>`): 1 to 128 bytes of ASCII
/// letters, digits and `/_-.:`, as both platforms' topics are (`app/uninstalled`,
/// `uninstall_app`). A delivery whose topic is not is refused before anything is stored.
pub fn is_topic(topic: &str) -> bool {
    (1..=128).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.' | b':'))
}

/// The size EventBridge counts for an entry of these parts (no resources).
pub fn entry_bytes(source: &str, detail_type: &str, detail: &str) -> usize {
    14 + source.len() + detail_type.len() + detail.len()
}

/// [`once::apply`] with `event` written in the same transaction, after `effect`: the mark, the
/// effect and the event commit together or not at all, and a duplicate writes nothing.
/// `Refused` names indices into `effect` only (the event's write has no condition of its own).
pub async fn apply_delivery(
    store: &dyn Store,
    mark: &Item,
    effect: &[Write],
    event: &Event,
) -> std::result::Result<Applied, StoreError> {
    let mut writes = effect.to_vec();
    writes.push(event.write()?);
    match once::apply(store, mark, &writes).await? {
        Applied::Refused(failed) => {
            let failed: Vec<usize> = failed.into_iter().filter(|i| *i < effect.len()).collect();
            if failed.is_empty() {
                Ok(Applied::Duplicate)
            } else {
                Ok(Applied::Refused(failed))
            }
        }
        other => Ok(other),
    }
}

/// [`once::mark_alone`] for a delivery with no effect, but with its event: the mark and the
/// event in one transaction; `true` if this call wrote them, `false` for a duplicate.
pub async fn mark_delivery(
    store: &dyn Store,
    mark: &Item,
    event: &Event,
) -> Result<bool, StoreError> {
    Ok(apply_delivery(store, mark, &[], event).await? == Applied::Done)
}

/// The context of `GET /v1/events/{platform}/{id}`: the shared dependencies only (it reads the outbox of
/// every platform, and no platform's settings).
pub struct Events {
    deps: Arc<Deps>,
}

crate::context::derefs_to_deps!(Events);

impl Platform for Events {
    fn build(deps: Arc<Deps>, _vars: &Vars) -> std::result::Result<Self, ConfigError> {
        Ok(Self { deps })
    }
}

/// `GET /v1/events/{platform}/{id}` (IAM-authorized): the whole event, as `{id, platform, name, tenant,
/// time, data}`, for a detail on the bus that is a reference (`data_ref`), or any event still in
/// the outbox ([`OUTBOX_SECONDS`]). An id that is not a UUID, or no such event: 404.
pub async fn read(cx: &Events, req: &Request) -> Result<Response<Body>> {
    crate::web::require_iam_caller(req)?;
    let unknown = || Error::refused(Reason::UnknownTenant, "no such event");
    let (platform, id) = req
        .uri()
        .path()
        .strip_prefix(EVENTS_PATH)
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(unknown)?;
    if !PLATFORMS.contains(&platform) {
        return Err(unknown());
    }
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| unknown())?
        .hyphenated()
        .to_string();
    let item = cx
        .store
        .get(&outbox_key(platform, &id))
        .await?
        .ok_or_else(unknown)?;
    let event = Event::from_attrs(&item.attrs)?;
    Ok(web::json(StatusCode::OK, &event.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_round_trips_through_its_outbox_item() {
        let event = Event::new(
            "haravan",
            names::CONNECTION_CREATED,
            "1000",
            json!({"scopes": ["a"]}),
        );
        let item = event.to_item().unwrap();
        assert_eq!(item.key.pk, format!("outbox#haravan#{}", event.id));
        assert_eq!(Event::from_attrs(&item.attrs).unwrap(), event);
        assert_eq!(event.source(), "gatehouse.haravan");
        assert!(matches!(
            event.write().unwrap(),
            Write::Put(_, Condition::Always)
        ));
    }

    #[test]
    fn every_event_has_its_own_id() {
        let a = Event::new("sesami", names::CONNECTION_REMOVED, "s", Value::Null);
        let b = Event::new("sesami", names::CONNECTION_REMOVED, "s", Value::Null);
        assert_ne!(a.id, b.id);
    }
}
