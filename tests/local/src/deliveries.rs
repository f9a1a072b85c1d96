//! The webhook deliveries the local server received lately, each with its verdict, for the
//! console (`crate::console`).
//!
//! The store keeps only a mark of each accepted delivery (so that a repeat is known as a
//! duplicate); a refused one leaves nothing behind, and a duplicate nothing new. So the local
//! server keeps the latest [`KEPT`] deliveries and what it answered them in memory, recorded
//! where it dispatches the webhook routes: a developer sees each one, refused ones included,
//! without the deployed functions writing anything more.

use lambda_http::http::HeaderMap;
use lambda_http::{Body, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many deliveries are kept (the oldest goes first).
pub const KEPT: usize = 50;

/// What the app made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified and applied (a 2xx answer, not a repeat).
    Accepted,
    /// Verified, but seen before: nothing applied again.
    Duplicate,
    /// Refused (any answer other than 2xx): a bad signature, a malformed body, a stale delivery.
    Refused,
}

impl Verdict {
    /// The verdict as the console writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Refused => "refused",
        }
    }
}

/// One delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Unix seconds of its arrival.
    pub at: i64,
    /// The platform that sent it (`sesami`, `haravan`, `momo`).
    pub platform: String,
    /// What it was about: Sesami's event, Haravan's topic, MoMo's payment reference.
    pub what: String,
    /// The answer's status.
    pub status: u16,
    /// What the app made of it.
    pub verdict: Verdict,
    /// For a refusal, the reason code or message the app answered (never a secret: the
    /// handlers' refusals name none).
    pub detail: String,
}

/// The latest deliveries, shared by the dispatcher that records them and the console that shows
/// them.
#[derive(Debug, Clone, Default)]
pub struct Deliveries(Arc<Mutex<VecDeque<Delivery>>>);

/// Whether the function named `function` (a `gatehouse::routes` function name) receives what a
/// platform sends on its own: webhooks and MoMo's payment callbacks.
pub fn is_delivery(function: &str) -> bool {
    function.ends_with("-webhooks") || function == "momo-callback"
}

/// What an answer with `status` and `body` says of a delivery, and for a refusal its reason
/// code (or message).
pub fn verdict_of(status: u16, body: &[u8]) -> (Verdict, String) {
    let answered: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if !(200..300).contains(&status) {
        let why = answered["reason"]
            .as_str()
            .or(answered["message"].as_str())
            .or(answered["error"].as_str())
            .unwrap_or("")
            .to_owned();
        (Verdict::Refused, why)
    } else if answered["duplicate"] == serde_json::Value::Bool(true) {
        (Verdict::Duplicate, String::new())
    } else {
        (Verdict::Accepted, String::new())
    }
}

impl Deliveries {
    /// Records what the app answered a delivery to `function` (see [`is_delivery`]) at `path`,
    /// with the request's headers and body.
    pub fn record(
        &self,
        function: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        answer: &Response<Body>,
    ) {
        let platform = function.split('-').next().unwrap_or(function).to_owned();
        let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let what = match platform.as_str() {
            "sesami" => request["event"].as_str().unwrap_or("").to_owned(),
            "haravan" => headers
                .get("x-haravan-topic")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(if body.is_empty() {
                    "subscription check"
                } else {
                    ""
                })
                .to_owned(),
            _ => path.rsplit('/').next().unwrap_or("").to_owned(),
        };
        let status = answer.status();
        let text: &[u8] = match answer.body() {
            Body::Text(t) => t.as_bytes(),
            Body::Binary(b) => b,
            _ => &[],
        };
        let (verdict, detail) = verdict_of(status.as_u16(), text);
        let delivery = Delivery {
            at: crate::console::now(),
            platform,
            what,
            status: status.as_u16(),
            verdict,
            detail,
        };
        let mut kept = self
            .0
            .lock()
            .expect("the deliveries' lock is never poisoned");
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(delivery);
    }

    /// The kept deliveries, newest first.
    pub fn latest(&self) -> Vec<Delivery> {
        let kept = self
            .0
            .lock()
            .expect("the deliveries' lock is never poisoned");
        kept.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::StatusCode;

    fn answer(status: StatusCode, body: &str) -> Response<Body> {
        let mut resp = Response::new(Body::from(body.to_owned()));
        *resp.status_mut() = status;
        resp
    }

    #[test]
    fn each_answer_has_its_verdict_and_the_oldest_goes_first() {
        let d = Deliveries::default();
        let body = br#"{"event":"uninstall_app"}"#;
        let headers = HeaderMap::new();
        d.record(
            "sesami-webhooks",
            "/sesami/webhooks",
            &headers,
            body,
            &answer(StatusCode::OK, r#"{"ok":true}"#),
        );
        d.record(
            "sesami-webhooks",
            "/sesami/webhooks",
            &headers,
            body,
            &answer(StatusCode::OK, r#"{"ok":true,"duplicate":true}"#),
        );
        d.record(
            "sesami-webhooks",
            "/sesami/webhooks",
            &headers,
            body,
            &answer(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"Unauthorized","reason":"bad_signature"}"#,
            ),
        );
        let got: Vec<(Verdict, String)> = d
            .latest()
            .into_iter()
            .map(|x| (x.verdict, x.detail))
            .collect();
        assert_eq!(
            got,
            [
                (Verdict::Refused, "bad_signature".to_owned()),
                (Verdict::Duplicate, String::new()),
                (Verdict::Accepted, String::new()),
            ]
        );
        assert_eq!(d.latest()[0].what, "uninstall_app");
        for _ in 0..KEPT {
            d.record(
                "momo-callback",
                "/momo/callback/ref-1",
                &headers,
                b"{}",
                &answer(StatusCode::OK, "{}"),
            );
        }
        let all = d.latest();
        assert_eq!(all.len(), KEPT);
        assert!(
            all.iter()
                .all(|x| x.platform == "momo" && x.what == "ref-1")
        );
    }
}
