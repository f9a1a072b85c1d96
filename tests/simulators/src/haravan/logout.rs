//! Logout, both ways: RP-initiated (`GET /connect/endsession`) and the front-channel logout
//! Haravan sends the app (and its dev button, `POST /_logout`).

use super::authorize::error_page;
use super::webhooks::{read_answer, relay};
use super::{HaravanSim, SITE};
use crate::kit::{Params, lock, with_query};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use std::collections::HashMap;

impl HaravanSim {
    /// Ends the sign-in session `sid` here, then tells the app as Haravan's front-channel
    /// logout iframe does: `GET {app_base}/haravan/logout?sid=..&iss={own_base}`. Returns the
    /// app's status (0 when it did not answer).
    pub async fn front_channel_logout(&self, sid: &str) -> u16 {
        self.logout(sid).await.0
    }

    pub(super) async fn logout(&self, sid: &str) -> (u16, String, String) {
        lock(&self.inner.grants)
            .sessions
            .retain(|_, s| s.sid != sid);
        let sent = self
            .inner
            .http
            .get(with_query(
                &format!("{}/haravan/logout", self.inner.app_base),
                &[("sid", sid), ("iss", &self.inner.own_base)],
            ))
            .send()
            .await;
        read_answer(sent).await
    }
}

/// RP-initiated logout: ends the session named by `id_token_hint` (a token this simulator
/// signed), tells the app by front-channel logout, and returns to `post_logout_redirect_uri`
/// when it is the app's.
pub(super) async fn end_session(
    State(sim): State<HaravanSim>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = match Params::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    if let Some(hint) = params.get("id_token_hint") {
        let key = lock(&sim.inner.key).clone();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[&sim.inner.client_id]);
        validation.set_issuer(&[&sim.inner.own_base]);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::DecodingKey::from_rsa_components(&key.n, &key.e)
            .and_then(|k| jsonwebtoken::decode::<Value>(hint, &k, &validation));
        let Ok(data) = claims else {
            return error_page(
                "invalid_request",
                "id_token_hint is not a token of this issuer",
            );
        };
        if let Some(sid) = data.claims.get("sid").and_then(Value::as_str) {
            sim.logout(sid).await;
        }
    }
    match params.get("post_logout_redirect_uri") {
        Some(uri) if uri.starts_with(&format!("{}/", sim.inner.app_base)) => {
            let target = match params.get("state") {
                Some(state) => with_query(uri, &[("state", state)]),
                None => uri.to_owned(),
            };
            Redirect::to(&target).into_response()
        }
        _ => SITE.page(
            StatusCode::OK,
            "Haravan — signed out",
            "<p>You are signed out.</p>",
        ),
    }
}

/// Dev button: the front-channel logout of `sid` (or of `sub`'s current session), relaying the
/// app's answer.
pub(super) async fn dev_logout(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params =
        Params::parse(raw.unwrap_or_default().as_bytes()).unwrap_or(Params(HashMap::new()));
    let sid = params
        .get("sid")
        .map(str::to_owned)
        .or_else(|| params.get("sub").and_then(|sub| sim.session_sid(sub)));
    match sid {
        Some(sid) => relay(sim.logout(&sid).await),
        None => (
            StatusCode::BAD_REQUEST,
            "sid (or a signed-in sub) is required",
        )
            .into_response(),
    }
}
