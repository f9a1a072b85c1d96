//! The webhooks Haravan sends the app (signed `X-Haravan-Hmacsha256`), the verification of its
//! webhook URL, and the dev button that sends one (`POST /_send_webhook`).

use super::{HaravanSim, numeric};
use crate::kit::{self, Params, random_hex, with_query};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::collections::HashMap;

/// `X-Haravan-Hmacsha256`: base64 of HMAC-SHA256 keyed with the client secret over the raw body.
pub fn webhook_signature(client_secret: &str, body: &[u8]) -> String {
    STANDARD.encode(kit::hmac_sha256(client_secret.as_bytes(), body))
}

impl HaravanSim {
    /// The body Haravan sends for `topic` about `orgid`: the shop for `shop/update`, the
    /// uninstall record for `app/uninstalled`, `{"org_id"}` otherwise.
    pub fn webhook_body(&self, topic: &str, orgid: &str) -> Value {
        match topic {
            "shop/update" => self
                .shop(orgid)
                .unwrap_or_else(|| json!({"id": numeric(orgid)})),
            "app/uninstalled" => {
                let user_id = self.org_user(orgid).map_or(json!(0), |u| numeric(&u.sub));
                json!({
                    "org_id": numeric(orgid),
                    "app_id": self.inner.client_id,
                    "client_id": self.inner.client_id,
                    "event_type": topic,
                    "user_id": user_id,
                    "is_salechannel": false,
                    "is_martketing": false,
                })
            }
            _ => json!({ "org_id": numeric(orgid) }),
        }
    }

    /// POSTs `body` (compact JSON) to `{app_base}/haravan/webhooks` with `X-Haravan-Topic`,
    /// `X-Haravan-Org-Id` and `X-Haravan-Hmacsha256`. Returns the app's status and body
    /// (status 0 and the error when the app did not answer).
    pub async fn send_webhook(&self, topic: &str, orgid: &str, body: &Value) -> (u16, String) {
        let (status, _, text) = self.post_webhook(topic, orgid, body).await;
        (status, text)
    }

    pub(super) async fn post_webhook(
        &self,
        topic: &str,
        orgid: &str,
        body: &Value,
    ) -> (u16, String, String) {
        let raw = serde_json::to_vec(body).unwrap_or_default();
        let sent = self
            .inner
            .http
            .post(format!("{}/haravan/webhooks", self.inner.app_base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Haravan-Topic", topic)
            .header("X-Haravan-Org-Id", orgid)
            .header(
                "X-Haravan-Hmacsha256",
                webhook_signature(&self.inner.client_secret, &raw),
            )
            .body(raw)
            .send()
            .await;
        read_answer(sent).await
    }

    /// What Haravan does when the app's webhook URL is registered:
    /// `GET {app_base}/haravan/webhooks?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..`.
    /// Returns the app's status and whether its body was exactly the challenge.
    pub async fn verify_webhook(&self, verify_token: &str) -> (u16, bool) {
        let challenge = random_hex(8);
        let sent = self
            .inner
            .http
            .get(with_query(
                &format!("{}/haravan/webhooks", self.inner.app_base),
                &[
                    ("hub.mode", "subscribe"),
                    ("hub.verify_token", verify_token),
                    ("hub.challenge", &challenge),
                ],
            ))
            .send()
            .await;
        let (status, _, text) = read_answer(sent).await;
        (status, text == challenge)
    }
}

/// A status, content type and body from the app; status 0 and the error when it did not answer.
pub(super) async fn read_answer(sent: reqwest::Result<reqwest::Response>) -> (u16, String, String) {
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain")
                .to_owned();
            (status, content_type, resp.text().await.unwrap_or_default())
        }
        Err(e) => (
            0,
            "text/plain".into(),
            format!("the app did not answer: {e}"),
        ),
    }
}

pub(super) fn relay((status, content_type, body): (u16, String, String)) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("text/plain"));
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Dev button: a signed webhook of `topic` (default `app/uninstalled`, which also uninstalls
/// here first) about `orgid`, relaying the app's answer.
pub(super) async fn dev_send_webhook(
    State(sim): State<HaravanSim>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params =
        Params::parse(raw.unwrap_or_default().as_bytes()).unwrap_or(Params(HashMap::new()));
    let Some(orgid) = params.get("orgid") else {
        return (StatusCode::BAD_REQUEST, "orgid is required").into_response();
    };
    let topic = params.get("topic").unwrap_or("app/uninstalled");
    if topic == "app/uninstalled" {
        sim.uninstall(orgid);
    }
    let body = sim.webhook_body(topic, orgid);
    relay(sim.post_webhook(topic, orgid, &body).await)
}
