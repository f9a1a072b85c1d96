//! A Sesami simulator over real HTTP, implementing the documented endpoints
//! (as docs/platforms.md, "Sesami", settles them):
//!
//! - `GET  /launch?shopId=` — what Sesami's app store does: a signed install launch to the app.
//! - `GET  /api/v1/oauth/authorization?clientId&shopId&scopes[]&redirectUri` — the consent page.
//! - `POST /consent` — the merchant's decision; redirects back with `code, shopId, timestamp, hmac`.
//! - `POST /api/v1/oauth/access-token` — JSON `{code, shopId, clientId, clientSecret}`, each code
//!   honoured once → `{token, clientId, expireAt: "NEVER", name}`.
//! - `GET  /api/v1/shop` — the shop an offline token opens: `x-api-key: <token>`, `x-client-id`
//!   and `x-shop-id` must be the token's, its client's and its shop's (401 otherwise). Sesami
//!   documents the headers but no read; this one is the simulator's, for the proxy tests.
//! - `POST /webhooks/send?shopId=&event=` — sends a signed webhook to the app and relays its answer;
//!   its `data` is `{event, shopId, timestamp}`: a webhook names its event inside the signature.
//!
//! Its signing is written independently of `gatehouse::sesami` (a sorted map serialised by
//! serde_json), so the two implementations check each other.

use crate::kit::escape;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The simulator's view of the one app registered with it.
#[derive(Clone)]
pub struct SesamiSim {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    client_secret: String,
    /// The app's base URL: its redirect URI and webhook URL hang off it.
    app_base: String,
    codes: Mutex<HashMap<String, Grant>>,
    token_requests: AtomicUsize,
    http: reqwest::Client,
    /// Every token issued, and its shop.
    tokens: Mutex<HashMap<String, String>>,
    /// The shop API's knobs (the proxy tests').
    api: crate::kit::ApiKnobs,
}

#[derive(Clone)]
struct Grant {
    shop_id: String,
    used: bool,
}

/// HMAC-SHA256 hex over the compact JSON of `object` with sorted top-level keys.
pub fn sign(secret: &str, object: &BTreeMap<String, Value>) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    hex::encode(crate::kit::hmac_sha256(secret.as_bytes(), text.as_bytes()))
}

/// The query string of a request carrying `params` and `timestamp` (ms), signed with `secret`.
pub fn signed_query(secret: &str, params: &[(&str, &str)], timestamp_ms: u128) -> String {
    let mut object: BTreeMap<String, Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    object.insert("timestamp".into(), Value::from(timestamp_ms.to_string()));
    let hmac = sign(secret, &object);
    query_string(&object, &hmac)
}

/// Now, in milliseconds.
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn query_string(pairs: &BTreeMap<String, Value>, hmac: &str) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v.as_str().unwrap_or_default());
    }
    ser.append_pair("hmac", hmac);
    ser.finish()
}

impl SesamiSim {
    /// A simulator for the app with these credentials, reachable at `app_base`.
    pub fn new(client_id: &str, client_secret: &str, app_base: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                app_base: app_base.trim_end_matches('/').into(),
                codes: Mutex::new(HashMap::new()),
                token_requests: AtomicUsize::new(0),
                http: reqwest::Client::new(),
                tokens: Mutex::new(HashMap::new()),
                api: crate::kit::ApiKnobs::default(),
            }),
        }
    }

    /// The routes, to be nested under a prefix such as `/_sim/sesami`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/launch", get(launch))
            .route("/api/v1/oauth/authorization", get(authorization))
            .route("/consent", post(consent))
            .route("/api/v1/oauth/access-token", post(access_token))
            .route("/api/v1/shop", get(shop))
            .route("/webhooks/send", post(send_webhook))
            .with_state(self.clone())
    }

    /// The knobs of the shop API (`GET /api/v1/shop`): counted, recorded, 401/429 on demand.
    pub fn api(&self) -> &crate::kit::ApiKnobs {
        &self.inner.api
    }

    /// How many token requests reached the simulator (of any outcome).
    pub fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Registers an offline token for `shop_id`, as if a code exchange had issued it (event
    /// files carry the tenants they act on).
    pub fn register_token(&self, token: &str, shop_id: &str) {
        crate::kit::lock(&self.inner.tokens).insert(token.into(), shop_id.into());
    }

    /// Issues a code for `shop_id` as the consent page would.
    pub fn issue_code(&self, shop_id: &str) -> String {
        let code = uuid::Uuid::new_v4().simple().to_string();
        self.register_code(&code, shop_id);
        code
    }

    /// Registers a given code (event files carry fixed codes).
    pub fn register_code(&self, code: &str, shop_id: &str) {
        if let Ok(mut codes) = self.inner.codes.lock() {
            codes.insert(
                code.into(),
                Grant {
                    shop_id: shop_id.into(),
                    used: false,
                },
            );
        }
    }

    /// The query string of a signed request carrying `params`, timestamped now.
    pub fn signed_query(&self, params: &[(&str, &str)]) -> String {
        signed_query(&self.inner.client_secret, params, now_ms())
    }

    /// A signed webhook body for `event` with `data`, which names the event as Sesami's webhooks
    /// do (`data.event`, signed; see `gatehouse::sesami`), unless `data` names one already.
    pub fn webhook_body(&self, event: &str, mut data: BTreeMap<String, Value>) -> Value {
        data.entry("event".to_string())
            .or_insert_with(|| Value::from(event));
        let hmac = sign(&self.inner.client_secret, &data);
        json!({ "event": event, "data": data, "hmac": hmac })
    }
}

#[derive(Deserialize)]
struct LaunchQuery {
    #[serde(rename = "shopId")]
    shop_id: String,
}

async fn launch(State(sim): State<SesamiSim>, Query(q): Query<LaunchQuery>) -> Response {
    let query = sim.signed_query(&[("shopId", &q.shop_id)]);
    Redirect::to(&format!("{}/sesami/install?{query}", sim.inner.app_base)).into_response()
}

async fn authorization(State(sim): State<SesamiSim>, raw: axum::extract::RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.0.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scopes[]")
        .map(|(_, v)| v.clone())
        .collect();
    let (Some(client_id), Some(shop_id), Some(redirect_uri)) =
        (get("clientId"), get("shopId"), get("redirectUri"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "clientId, shopId and redirectUri are required",
        )
            .into_response();
    };
    if client_id != sim.inner.client_id {
        return (StatusCode::BAD_REQUEST, "unknown clientId").into_response();
    }
    if redirect_uri != format!("{}/sesami/callback", sim.inner.app_base) {
        return (
            StatusCode::BAD_REQUEST,
            "redirectUri is not registered for this app",
        )
            .into_response();
    }
    if scopes.is_empty() || scopes.iter().any(|s| !s.ends_with(":Read")) {
        return (StatusCode::BAD_REQUEST, "only read scopes are supported").into_response();
    }
    Html(format!(
        "<!doctype html><title>Sesami — authorize app</title><h1>Sesami (simulator)</h1>\
         <p>The app <code>{client}</code> asks for <strong>{scopes}</strong> on shop <code>{shop}</code>.</p>\
         <form method=\"post\" action=\"../../../consent\">\
         <input type=\"hidden\" name=\"shopId\" value=\"{shop}\">\
         <input type=\"hidden\" name=\"redirectUri\" value=\"{redirect}\">\
         <button name=\"decision\" value=\"allow\">Allow</button> \
         <button name=\"decision\" value=\"deny\">Deny</button></form>",
        client = escape(&client_id),
        scopes = escape(&scopes.join(", ")),
        shop = escape(&shop_id),
        redirect = escape(&redirect_uri),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct ConsentForm {
    #[serde(rename = "shopId")]
    shop_id: String,
    #[serde(rename = "redirectUri")]
    redirect_uri: String,
    decision: String,
}

async fn consent(State(sim): State<SesamiSim>, Form(form): Form<ConsentForm>) -> Response {
    if form.redirect_uri != format!("{}/sesami/callback", sim.inner.app_base) {
        return (StatusCode::BAD_REQUEST, "redirectUri is not registered").into_response();
    }
    if form.decision != "allow" {
        return Redirect::to(&format!("{}?error=access_denied", form.redirect_uri)).into_response();
    }
    let code = sim.issue_code(&form.shop_id);
    let query = sim.signed_query(&[("code", &code), ("shopId", &form.shop_id)]);
    Redirect::to(&format!("{}?{query}", form.redirect_uri)).into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    code: Option<String>,
    #[serde(rename = "shopId")]
    shop_id: Option<String>,
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    #[serde(rename = "clientSecret")]
    client_secret: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "statusCode": status.as_u16(), "message": message })),
    )
        .into_response()
}

async fn access_token(State(sim): State<SesamiSim>, body: axum::body::Bytes) -> Response {
    sim.inner.token_requests.fetch_add(1, Ordering::SeqCst);
    let Ok(req) = serde_json::from_slice::<TokenRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    };
    let (Some(code), Some(shop_id), Some(client_id), Some(secret)) =
        (req.code, req.shop_id, req.client_id, req.client_secret)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "code, shopId, clientId and clientSecret are required",
        );
    };
    if client_id != sim.inner.client_id || secret != sim.inner.client_secret {
        return error(StatusCode::UNAUTHORIZED, "invalid client credentials");
    }
    let Ok(mut codes) = sim.inner.codes.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lock poisoned");
    };
    match codes.get_mut(&code) {
        Some(grant) if grant.shop_id == shop_id && !grant.used => {
            grant.used = true;
            let token = format!("sesami-tok-{}", uuid::Uuid::new_v4().simple());
            crate::kit::lock(&sim.inner.tokens).insert(token.clone(), shop_id.clone());
            Json(json!({
                "token": token,
                "clientId": client_id,
                "expireAt": "NEVER",
                "name": format!("Demo shop {shop_id}"),
            }))
            .into_response()
        }
        Some(grant) if grant.used => error(StatusCode::BAD_REQUEST, "code already used"),
        _ => error(StatusCode::BAD_REQUEST, "invalid code"),
    }
}

/// `GET /api/v1/shop`: the shop of a live offline token, named by all three headers.
async fn shop(
    State(sim): State<SesamiSim>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    sim.inner.api.record(&method, &uri, &headers);
    let one = |name: &str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok().map(str::to_owned),
            _ => None,
        }
    };
    let (Some(token), Some(client_id), Some(shop_id)) =
        (one("x-api-key"), one("x-client-id"), one("x-shop-id"))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "x-api-key, x-client-id and x-shop-id are required, once each",
        );
    };
    let issued_for = crate::kit::lock(&sim.inner.tokens).get(&token).cloned();
    if client_id != sim.inner.client_id || issued_for.as_deref() != Some(shop_id.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid api key for this client and shop",
        );
    }
    if let Some(imposed) = sim.inner.api.imposed() {
        return imposed;
    }
    Json(json!({"id": shop_id, "name": format!("Demo shop {shop_id}")})).into_response()
}

#[derive(Deserialize)]
struct SendQuery {
    #[serde(rename = "shopId")]
    shop_id: String,
    event: Option<String>,
}

async fn send_webhook(State(sim): State<SesamiSim>, Query(q): Query<SendQuery>) -> Response {
    let mut data = BTreeMap::new();
    data.insert("shopId".to_string(), Value::from(q.shop_id));
    data.insert("timestamp".to_string(), Value::from(now_ms().to_string()));
    let body = sim.webhook_body(q.event.as_deref().unwrap_or("uninstall_app"), data);
    let sent = sim
        .inner
        .http
        .post(format!("{}/sesami/webhooks", sim.inner.app_base))
        .json(&body)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = resp.text().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(_) => error(StatusCode::BAD_GATEWAY, "the app did not answer"),
    }
}
