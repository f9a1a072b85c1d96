//! The APIs an access token opens (RFC 6750 Bearer): `GET /connect/userinfo`, the webhook
//! subscription API (`/webhook/api/subscribe`) and the shop API (`GET /api/com/shop.json`).

use super::{HaravanSim, TokenGrant, numeric};
use crate::kit::{lock, now};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

impl HaravanSim {
    /// `orgid`'s shop as Haravan's shop API describes it, if a user of that org exists.
    pub fn shop(&self, orgid: &str) -> Option<Value> {
        let user = self.org_user(orgid)?;
        let domain = format!("{}.myharavan.com", user.orgname);
        Some(json!({
            "id": numeric(orgid),
            "name": user.orgname,
            "email": user.email,
            "customer_email": user.email,
            "domain": domain,
            "myharavan_domain": domain,
            "shop_owner": user.name,
            "currency": "VND",
            "iana_timezone": "Asia/Ho_Chi_Minh",
        }))
    }

    /// The grant of the `Authorization: Bearer` token, if it is live.
    pub(super) fn bearer(&self, headers: &HeaderMap) -> Result<TokenGrant, Denied> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let grant = token.and_then(|t| lock(&self.inner.grants).access.get(t).cloned());
        grant
            .filter(|g| now() < g.expires_at)
            .ok_or(Denied::InvalidToken)
    }

    /// As `bearer`, and the token's scope must hold `scope`.
    pub(super) fn bearer_with(
        &self,
        headers: &HeaderMap,
        scope: &'static str,
    ) -> Result<TokenGrant, Denied> {
        let grant = self.bearer(headers)?;
        if grant.has_scope(scope) {
            Ok(grant)
        } else {
            Err(Denied::InsufficientScope(scope))
        }
    }
}

/// Why a Bearer request is refused (RFC 6750).
pub(super) enum Denied {
    /// Missing, unknown or expired token: 401.
    InvalidToken,
    /// The token's scope lacks this one: 403.
    InsufficientScope(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            Denied::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "missing, unknown or expired access token".to_owned(),
            ),
            Denied::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the token's scope lacks {scope}"),
            ),
        };
        let challenge = format!("Bearer error=\"{error}\"");
        (
            status,
            [(header::WWW_AUTHENTICATE, challenge)],
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    }
}

pub(super) async fn userinfo(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    match sim.bearer_with(&headers, "openid") {
        Ok(g) => Json(json!({
            "sub": g.user.sub,
            "name": g.user.name,
            "email": g.user.email,
            "role": g.user.role,
            "orgid": g.user.orgid,
            "orgname": g.user.orgname,
        }))
        .into_response(),
        Err(denied) => denied.into_response(),
    }
}

pub(super) async fn subscribe(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer(&headers) {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid.clone();
    *lock(&sim.inner.grants)
        .subscribe_calls
        .entry(orgid.clone())
        .or_default() += 1;
    if !grant.has_scope("wh_api") {
        return Denied::InsufficientScope("wh_api").into_response();
    }
    lock(&sim.inner.grants).subscriptions.insert(orgid.clone());
    Json(json!({"org_id": orgid, "client_id": sim.inner.client_id, "subscribed": true}))
        .into_response()
}

pub(super) async fn list_subscriptions(
    State(sim): State<HaravanSim>,
    headers: HeaderMap,
) -> Response {
    let grant = match sim.bearer_with(&headers, "wh_api") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid;
    let data: Vec<Value> = lock(&sim.inner.grants)
        .subscriptions
        .contains(&orgid)
        .then(|| json!({"org_id": orgid, "client_id": sim.inner.client_id}))
        .into_iter()
        .collect();
    Json(json!({ "data": data })).into_response()
}

pub(super) async fn unsubscribe(State(sim): State<HaravanSim>, headers: HeaderMap) -> Response {
    let grant = match sim.bearer_with(&headers, "wh_api") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    let orgid = grant.user.orgid;
    let removed = lock(&sim.inner.grants).subscriptions.remove(&orgid);
    Json(json!({"org_id": orgid, "client_id": sim.inner.client_id, "unsubscribed": removed}))
        .into_response()
}

/// Haravan's shop API. The token must be an install token (scope `grant_service`): a login
/// token is a user's, not the app's.
pub(super) async fn shop_api(
    State(sim): State<HaravanSim>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    sim.inner.api.record(&method, &uri, &headers);
    let grant = match sim.bearer_with(&headers, "grant_service") {
        Ok(g) => g,
        Err(denied) => return denied.into_response(),
    };
    if let Some(imposed) = sim.inner.api.imposed() {
        return imposed;
    }
    match sim.shop(&grant.user.orgid) {
        Some(shop) => Json(json!({ "shop": shop })).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "Not Found"}))).into_response(),
    }
}
