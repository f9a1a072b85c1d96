//! Verified events for the app's own code: an outbox in the table, published to EventBridge.
//!
//! Every verified, deduplicated webhook delivery and every lifecycle change of a connection or
//! a payment becomes one [`Event`]. The event is not sent anywhere by the request that makes
//! it: it is written to the table **in the same atomic write** as the mark and the effect it
//! reports ([`Event::write`] is one more [`Write`] of that transaction), so that an event exists
//! exactly when its change does. A publisher reads the table's stream and puts each outbox item
//! on the bus; the event's id is fixed when it is written, so a publisher that retries after a
//! failure sends the same id again and a consumer that deduplicates on it sees each event once.
//!
//! On the bus: source `gatehouse.<platform>`, detail-type the event's name, detail
//! `{id, platform, tenant, time, data}`.

use crate::store::{Condition, Item, Key, StoreError, Write, now};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How long an outbox item stays in the table after it was written: long enough for the stream
/// (which keeps records 24 hours) and a replay by an operator.
pub const OUTBOX_SECONDS: i64 = 7 * 24 * 3600;

/// The partition prefix of outbox items: `outbox#<id>`, one partition per event.
pub const OUTBOX_KIND: &str = "outbox";

/// The lifecycle and delivery events Gatehouse emits (the detail-type on the bus).
pub mod names {
    /// A connection (install, cardholder connection, sign-in session) was stored for the first time.
    pub const CONNECTION_CREATED: &str = "connection.created";
    /// A connection's tokens or details changed (a re-install, a refresh, a `shop/update`).
    pub const CONNECTION_UPDATED: &str = "connection.updated";
    /// The platform refused a connection's refresh token: someone must authorize again.
    pub const CONNECTION_NEEDS_REAUTH: &str = "connection.needs_reauth";
    /// A connection was removed (an uninstall, a revocation, a sign-out).
    pub const CONNECTION_REMOVED: &str = "connection.removed";
    /// A MoMo payment reached SUCCESSFUL.
    pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
    /// A MoMo payment reached FAILED (or was rejected, or timed out at MoMo).
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// The prefix of a verified webhook delivery's event: `webhook.<topic>`.
    pub const WEBHOOK_PREFIX: &str = "webhook.";
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

    /// The source on the bus: `gatehouse.<platform>`.
    pub fn source(&self) -> String {
        format!("gatehouse.{}", self.platform)
    }

    /// The key of this event's outbox item.
    pub fn key(&self) -> Key {
        Key::single(OUTBOX_KIND, &self.id)
    }

    /// The write that puts this event in the outbox: one more write of the transaction that
    /// makes the change it reports.
    pub fn write(&self) -> Result<Write, StoreError> {
        Ok(Write::Put(self.to_item()?, Condition::Absent))
    }

    /// The outbox item holding this event.
    pub fn to_item(&self) -> Result<Item, StoreError> {
        let attrs = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => return Err(StoreError::Invalid("an event does not encode".into())),
        };
        Ok(Item::new(self.key(), attrs).expiring_at(self.time + OUTBOX_SECONDS))
    }

    /// The event an outbox item holds.
    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<Self, StoreError> {
        serde_json::from_value(Value::Object(attrs.clone()))
            .map_err(|e| StoreError::Invalid(format!("the stored event does not decode: {e}")))
    }
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
        assert_eq!(item.key.pk, format!("outbox#{}", event.id));
        assert_eq!(Event::from_attrs(&item.attrs).unwrap(), event);
        assert_eq!(event.source(), "gatehouse.haravan");
        assert!(matches!(
            event.write().unwrap(),
            Write::Put(_, Condition::Absent)
        ));
    }

    #[test]
    fn every_event_has_its_own_id() {
        let a = Event::new("sesami", names::CONNECTION_REMOVED, "s", Value::Null);
        let b = Event::new("sesami", names::CONNECTION_REMOVED, "s", Value::Null);
        assert_ne!(a.id, b.id);
    }
}
