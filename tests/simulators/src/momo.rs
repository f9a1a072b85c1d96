//! An MTN MoMo sandbox simulator over real HTTP, implementing MoMo's side of
//! its protocol as docs/platforms.md ("MTN MoMo") settles it. Relative to its mount point
//! (such as `/_sim/momo`, standing for `https://sandbox.momodeveloper.mtn.com`):
//!
//! - `POST /v1_0/apiuser` — sandbox provisioning: `X-Reference-Id` (a UUID v4, which becomes the
//!   API user) and JSON `{"providerCallbackHost"}` → 201, empty.
//! - `POST /v1_0/apiuser/{id}/apikey` → 201 `{"apiKey"}` (32 hex digits; replaces the old key).
//! - `GET  /v1_0/apiuser/{id}` → 200 `{"providerCallbackHost","targetEnvironment":"sandbox"}`.
//! - `POST /{collection|disbursement|remittance}/token/` (with the trailing slash) —
//!   `Authorization: Basic base64(apiUser:apiKey)` → 200 `{"access_token",
//!   "token_type":"access_token","expires_in":3600}`; 401 `{"error":"login_failed"}`. The token
//!   works for that product only, and only as `Authorization: Bearer <token>`.
//! - `POST /collection/v1_0/requesttopay` — Bearer, `X-Reference-Id` (UUID v4, once),
//!   `X-Target-Environment: sandbox`, optional `X-Callback-Url` (under the app's base URL) and a
//!   JSON payment → 202, empty. The outcome follows the test numbers below; when the request had
//!   a callback URL, the callback goes to it once, after a short delay.
//! - `GET  /collection/v1_0/requesttopay/{referenceId}` → 200, the payment and its status.
//! - `GET  /{collection|disbursement}/v1_0/account/balance` — the same Bearer, subscription key and
//!   target environment checks → 200 `{"availableBalance","currency"}` (the proxy tests' read).
//!
//! Every endpoint needs `Ocp-Apim-Subscription-Key`: the product's own key for the product
//! endpoints, any of the configured keys for provisioning (the sandbox accepts a key of any
//! product there); otherwise 401 `{"statusCode":401,"message":"Access denied due to ..."}`, as
//! MoMo's API gateway answers. Unknown paths (such as `/collection/token` without its slash) are
//! 404 `{"statusCode":404,"message":"Resource not found"}`. MoMo-level refusals are
//! `{"code","message"}`, with MoMo's codes where one fits (`RESOURCE_ALREADY_EXIST`,
//! `RESOURCE_NOT_FOUND`, `INVALID_CALLBACK_URL_HOST`, `INVALID_CURRENCY`,
//! `NOT_ALLOWED_TARGET_ENVIRONMENT`) and `BAD_REQUEST` for a malformed request.
//!
//! # Test numbers
//!
//! The last character of the payer's `partyId`, when it is a digit, decides the outcome. This
//! convention is the simulator's own: the real sandbox's few fixed numbers (`4673312345x`) mean
//! other things (there `46733123450` fails), so do not carry numbers between the two.
//!
//! | last digit | status                        | reason                                       | callback               |
//! |------------|-------------------------------|----------------------------------------------|------------------------|
//! | `1`        | FAILED                        | `{"code":"PAYER_NOT_FOUND","message":..}`    | yes                    |
//! | `2`        | PENDING (stays so)            | —                                            | yes, saying PENDING    |
//! | `3`        | FAILED                        | `"APPROVAL_REJECTED"` (a string)             | yes                    |
//! | `4`        | PENDING (stays so)            | —                                            | only once [`MomoSim::set_status`] ends it |
//! | other, or no digit | SUCCESSFUL (with a `financialTransactionId`) | —                   | yes                    |
//!
//! So `256770000000` succeeds and `256770000001` fails. The callback is a `PUT` (or the method
//! [`MomoSim::set_callback_method`] sets) of the status reply's JSON to the `X-Callback-Url`,
//! sent once, unsigned, without the reference id, after [`MomoSim::set_callback_delay`]
//! (default 50 ms); its body is taken when it is sent, so a status changed in the meantime
//! shows. A payment that is still PENDING when its callback is due gets no second one when it
//! later ends (MoMo sends one callback); [`MomoSim::send_callback`] replays on demand.
//!
//! # Faults
//!
//! [`MomoSim::fault_next_request_to_pay`] makes the next request to pay misbehave the way a real
//! network and gateway can ([`RequestToPayFault`]): MoMo takes the payment and the answer is
//! late past the app's timeout, a 5xx, a dropped connection or not MoMo's; or MoMo does not take
//! it and answers a 5xx or a 4xx. [`MomoSim::set_drop_callbacks`] loses the automatic callbacks
//! (they count as sent for [`MomoSim::set_status`], but never arrive).
//! [`MomoSim::requests_to_pay_received`] counts every request to pay that arrived, whatever
//! became of it, so that a test can tell whether the app sent a second one.
//!
//! Everything is written from the documents, not from `gatehouse::momo`, so that the two
//! implementations check each other.

use crate::kit::{lock, now, random_hex};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The access-token lifetime until a test sets another (MoMo's `expires_in`).
const DEFAULT_TOKEN_LIFETIME: u64 = 3600;
/// How long after a request to pay its callback goes out, until a test sets another delay.
const DEFAULT_CALLBACK_DELAY: Duration = Duration::from_millis(50);
/// The products that issue tokens.
pub const PRODUCTS: [&str; 3] = ["collection", "disbursement", "remittance"];
/// The one target environment of the sandbox.
const TARGET_ENVIRONMENT: &str = "sandbox";

/// `Basic base64(apiUser:apiKey)`: the token endpoint's `Authorization` (standard base64 with
/// padding).
pub fn basic_authorization(api_user: &str, api_key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{api_user}:{api_key}")))
}

/// How the next request to pay misbehaves ([`MomoSim::fault_next_request_to_pay`]). The
/// `Accept…` faults take the payment as MoMo would (it is stored, its callback goes out, its
/// status answers) and only the answer to the app goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestToPayFault {
    /// MoMo takes the payment, then answers 202 only after this long: past the app's timeout.
    AcceptThenStall(Duration),
    /// MoMo takes the payment, then its gateway answers this (5xx) status.
    AcceptThenFail(u16),
    /// MoMo takes the payment, then the connection closes without an answer.
    AcceptThenDrop,
    /// MoMo takes the payment, then an answer that is not MoMo's comes back (200, an HTML page).
    AcceptThenGarble,
    /// MoMo does not take it and answers this status: a 5xx (failing before it took anything)
    /// or a 4xx (a refusal).
    Refuse(u16),
}

/// The simulated MoMo sandbox: its API users, tokens and payments.
#[derive(Clone)]
pub struct MomoSim {
    inner: Arc<Inner>,
}

struct Inner {
    /// The account API's knobs (the proxy tests').
    api: crate::kit::ApiKnobs,
    /// Product → its subscription key.
    subscription_keys: HashMap<String, String>,
    /// The app's public base URL: every callback URL must lie under it.
    app_base: String,
    http: reqwest::Client,
    state: Mutex<Sandbox>,
    token_requests: Mutex<HashMap<String, usize>>,
    token_delay: Mutex<Duration>,
    token_lifetime: AtomicU64,
    callback_delay: Mutex<Duration>,
    callback_method: Mutex<reqwest::Method>,
    /// The body the next automatic callback carries instead of the status reply.
    forged: Mutex<Option<Value>>,
    callbacks_sent: AtomicUsize,
    callback_answers: Mutex<Vec<(String, u16)>>,
    requests_to_pay: AtomicUsize,
    /// Every request to pay that arrived, accepted or not.
    requests_received: AtomicUsize,
    /// How the next request to pay misbehaves, once.
    fault: Mutex<Option<RequestToPayFault>>,
    /// Whether automatic callbacks are lost instead of delivered.
    drop_callbacks: AtomicBool,
    callbacks_dropped: AtomicUsize,
    last_refusal: Mutex<Option<String>>,
}

/// Everything created: API users, access tokens, payments.
#[derive(Default)]
struct Sandbox {
    users: HashMap<String, ApiUser>,
    tokens: HashMap<String, TokenGrant>,
    /// By reference id, lower-case.
    payments: HashMap<String, Payment>,
}

struct ApiUser {
    callback_host: String,
    /// None until a key is created.
    api_key: Option<String>,
}

struct TokenGrant {
    product: String,
    expires_at: u64,
}

/// One request to pay, as MoMo keeps it.
struct Payment {
    amount: String,
    currency: String,
    external_id: String,
    payer: Value,
    payer_message: Option<String>,
    payee_note: Option<String>,
    status: String,
    reason: Option<Value>,
    financial_transaction_id: Option<String>,
    callback_url: Option<String>,
    /// Set when the automatic callback went out: there is only one.
    callback_sent: bool,
}

impl Payment {
    /// The status reply, which is also the callback's body.
    fn reply(&self) -> Value {
        let mut m = Map::new();
        m.insert("amount".into(), self.amount.clone().into());
        m.insert("currency".into(), self.currency.clone().into());
        if self.status == "SUCCESSFUL"
            && let Some(id) = &self.financial_transaction_id
        {
            m.insert("financialTransactionId".into(), id.clone().into());
        }
        m.insert("externalId".into(), self.external_id.clone().into());
        m.insert("payer".into(), self.payer.clone());
        if let Some(text) = &self.payer_message {
            m.insert("payerMessage".into(), text.clone().into());
        }
        if let Some(text) = &self.payee_note {
            m.insert("payeeNote".into(), text.clone().into());
        }
        m.insert("status".into(), self.status.clone().into());
        if let Some(reason) = &self.reason {
            m.insert("reason".into(), reason.clone());
        }
        Value::Object(m)
    }
}

/// What the test numbers decide.
struct Outcome {
    status: &'static str,
    reason: Option<Value>,
    /// Whether the callback goes out after the delay (else only once the status ends).
    callback: bool,
}

/// The outcome for a payer: by the last character of its `partyId` (see the module's table).
fn outcome(party_id: &str) -> Outcome {
    let (status, reason, callback) = match party_id.chars().last() {
        Some('1') => (
            "FAILED",
            Some(json!({
                "code": "PAYER_NOT_FOUND",
                "message": "Payer does not exist",
            })),
            true,
        ),
        Some('2') => ("PENDING", None, true),
        Some('3') => ("FAILED", Some(json!("APPROVAL_REJECTED")), true),
        Some('4') => ("PENDING", None, false),
        _ => ("SUCCESSFUL", None, true),
    };
    Outcome {
        status,
        reason,
        callback,
    }
}

/// A financial transaction id: nine digits, not starting with 0.
fn random_transaction_id() -> String {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    (100_000_000 + u64::from_le_bytes(bytes) % 900_000_000).to_string()
}

/// A header's value as text; absent, empty or not text is None.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `X-Reference-Id`, when it is a UUID v4 in the hyphenated form, lower-cased.
fn reference_id(headers: &HeaderMap) -> Result<String, String> {
    let raw =
        header_str(headers, "x-reference-id").ok_or("the X-Reference-Id header is required")?;
    let parsed = uuid::Uuid::try_parse(raw)
        .ok()
        .filter(|_| raw.len() == 36)
        .ok_or_else(|| format!("X-Reference-Id {raw:?} is not a hyphenated UUID"))?;
    if parsed.get_version_num() != 4 || parsed.get_variant() != uuid::Variant::RFC4122 {
        return Err(format!(
            "X-Reference-Id {raw} is not a UUID version 4 (it is version {})",
            parsed.get_version_num()
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

/// The body is `application/json`, with at most a charset parameter.
fn json_content_type(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|v| {
        let mut parts = v.split(';');
        parts
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            && parts.all(|p| {
                p.split_once('=')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
            })
    })
}

/// `^[0-9]+(\.[0-9]+)?$`, not zero.
fn valid_amount(a: &str) -> bool {
    let (whole, frac) = match a.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (a, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && frac.is_none_or(digits) && a.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// The request-to-pay body, checked: the payment (status still to be decided) or the refusal's
/// code and message.
fn parse_payment(body: &[u8]) -> Result<Payment, (&'static str, String)> {
    let bad = |m: String| ("BAD_REQUEST", m);
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object".into()))?;
    let string = |name: &str| -> Result<Option<String>, (&'static str, String)> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!("{name} must be a string, not {other}"))),
        }
    };
    let required = |name: &str| -> Result<String, (&'static str, String)> {
        string(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("{name} is required")))
    };
    let amount = required("amount")?;
    if !valid_amount(&amount) {
        return Err(bad(format!(
            "amount {amount:?} is not a positive number written as digits with an optional \
             decimal point"
        )));
    }
    let currency = required("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err((
            "INVALID_CURRENCY",
            format!("currency {currency:?} is not an ISO 4217 code"),
        ));
    }
    let external_id = required("externalId")?;
    let payer = obj
        .get("payer")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("payer must be an object {partyIdType, partyId}".into()))?;
    let field = |name: &str| {
        payer
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("payer.{name} must be a non-empty string")))
    };
    let (id_type, id) = (field("partyIdType")?, field("partyId")?);
    let fits = match id_type {
        "MSISDN" => (5..=15).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
        "EMAIL" => id
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty()),
        "PARTY_CODE" => true,
        other => {
            return Err(bad(format!(
                "payer.partyIdType {other:?} is not MSISDN, EMAIL or PARTY_CODE"
            )));
        }
    };
    if !fits {
        return Err(bad(format!(
            "payer.partyId {id:?} is not a valid {id_type}"
        )));
    }
    Ok(Payment {
        amount,
        currency,
        external_id,
        payer: json!({"partyIdType": id_type, "partyId": id}),
        payer_message: string("payerMessage")?,
        payee_note: string("payeeNote")?,
        status: String::new(),
        reason: None,
        financial_transaction_id: None,
        callback_url: None,
        callback_sent: false,
    })
}

/// A refusal's answer, already recorded as the last refusal (boxed: a `Response` is large).
type Refused = Box<Response>;

/// A MoMo-level error body.
fn momo_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

/// The API gateway's answer to a request with no route.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"statusCode": 404, "message": "Resource not found"})),
    )
        .into_response()
}

impl MomoSim {
    /// A sandbox for the app subscribed with these `(product, subscription key)` pairs.
    /// `app_base` is the app's public base URL (`http://127.0.0.1:3000`): callback URLs must lie
    /// under it.
    pub fn new(subscription_keys: &[(&str, &str)], app_base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                api: crate::kit::ApiKnobs::default(),
                subscription_keys: subscription_keys
                    .iter()
                    .map(|(p, k)| ((*p).to_owned(), (*k).to_owned()))
                    .collect(),
                app_base: app_base.trim_end_matches('/').into(),
                http,
                state: Mutex::new(Sandbox::default()),
                token_requests: Mutex::new(HashMap::new()),
                token_delay: Mutex::new(Duration::ZERO),
                token_lifetime: AtomicU64::new(DEFAULT_TOKEN_LIFETIME),
                callback_delay: Mutex::new(DEFAULT_CALLBACK_DELAY),
                callback_method: Mutex::new(reqwest::Method::PUT),
                forged: Mutex::new(None),
                callbacks_sent: AtomicUsize::new(0),
                callback_answers: Mutex::new(Vec::new()),
                requests_to_pay: AtomicUsize::new(0),
                requests_received: AtomicUsize::new(0),
                fault: Mutex::new(None),
                drop_callbacks: AtomicBool::new(false),
                callbacks_dropped: AtomicUsize::new(0),
                last_refusal: Mutex::new(None),
            }),
        }
    }

    /// The routes, to be nested under a prefix such as `/_sim/momo`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1_0/apiuser", post(create_api_user))
            .route("/v1_0/apiuser/{id}", get(get_api_user))
            .route("/v1_0/apiuser/{id}/apikey", post(create_api_key))
            .route("/{product}/token/", post(token))
            .route("/collection/v1_0/requesttopay", post(request_to_pay))
            .route("/{product}/v1_0/account/balance", get(account_balance))
            .route(
                "/collection/v1_0/requesttopay/{reference}",
                get(payment_status),
            )
            .fallback(not_found)
            .with_state(self.clone())
    }

    /// The knobs of the account API (`GET /<product>/v1_0/account/balance`): counted,
    /// recorded, 401/429 on demand.
    pub fn api(&self) -> &crate::kit::ApiKnobs {
        &self.inner.api
    }

    /// Creates (or replaces) an API user with this key, as provisioning would: for the local
    /// server's development credentials.
    pub fn register_api_user(&self, user: &str, key: &str, callback_host: &str) {
        lock(&self.inner.state).users.insert(
            user.to_owned(),
            ApiUser {
                callback_host: callback_host.to_owned(),
                api_key: Some(key.to_owned()),
            },
        );
    }

    /// How many API users exist.
    pub fn api_users(&self) -> usize {
        lock(&self.inner.state).users.len()
    }

    /// How many token requests arrived for `product` (of any outcome).
    pub fn token_requests(&self, product: &str) -> usize {
        lock(&self.inner.token_requests)
            .get(product)
            .copied()
            .unwrap_or(0)
    }

    /// Holds every token request this long before handling it, to widen races in tests.
    pub fn set_token_delay(&self, delay: Duration) {
        *lock(&self.inner.token_delay) = delay;
    }

    /// Every access token issued so far stops working now (MoMo revoked or expired them early);
    /// new ones work.
    pub fn expire_tokens(&self) {
        for grant in lock(&self.inner.state).tokens.values_mut() {
            grant.expires_at = 0;
        }
    }

    /// The lifetime of access tokens issued from now on (default 3600 s; 0: born expired).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.inner.token_lifetime.store(secs, Ordering::SeqCst);
    }

    /// How long after a request to pay (or a [`set_status`](Self::set_status) ending a silent
    /// PENDING) its callback goes out (default 50 ms).
    pub fn set_callback_delay(&self, delay: Duration) {
        *lock(&self.inner.callback_delay) = delay;
    }

    /// The method of automatic callbacks from now on: `PUT` (default, as the document says) or
    /// `POST` (docs/platforms.md, "MTN MoMo": MoMo uses either).
    ///
    /// # Panics
    /// If `m` is not a valid method name.
    pub fn set_callback_method(&self, m: &str) {
        let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|_| panic!("{m:?} is not an HTTP method"));
        *lock(&self.inner.callback_method) = method;
    }

    /// The next automatic callback carries `body` instead of the payment's true status reply
    /// (such as `{"status":"SUCCESSFUL"}` for a payment that FAILED or is still PENDING).
    pub fn forge_next_callback(&self, body: Value) {
        *lock(&self.inner.forged) = Some(body);
    }

    /// How many callbacks were sent, automatic ones and those of [`send_callback`](Self::send_callback)
    /// and [`send_callback_to`](Self::send_callback_to) alike (whatever the app answered).
    pub fn callbacks_sent(&self) -> usize {
        self.inner.callbacks_sent.load(Ordering::SeqCst)
    }

    /// Each callback sent so far: the reference id (empty for `send_callback_to`) and the
    /// app's status (0 when it did not answer).
    pub fn callback_answers(&self) -> Vec<(String, u16)> {
        lock(&self.inner.callback_answers).clone()
    }

    /// How many requests to pay were accepted (202, or taken under an `Accept…` fault).
    pub fn requests_to_pay(&self) -> usize {
        self.inner.requests_to_pay.load(Ordering::SeqCst)
    }

    /// How many requests to pay arrived, whatever became of them.
    pub fn requests_to_pay_received(&self) -> usize {
        self.inner.requests_received.load(Ordering::SeqCst)
    }

    /// The next request to pay that passes MoMo's checks misbehaves as `fault`, once.
    pub fn fault_next_request_to_pay(&self, fault: RequestToPayFault) {
        *lock(&self.inner.fault) = Some(fault);
    }

    /// From now on automatic callbacks are lost (`true`) or delivered (`false`, the default).
    /// A lost callback still counts as the payment's one callback.
    pub fn set_drop_callbacks(&self, drop: bool) {
        self.inner.drop_callbacks.store(drop, Ordering::SeqCst);
    }

    /// How many automatic callbacks were lost.
    pub fn callbacks_dropped(&self) -> usize {
        self.inner.callbacks_dropped.load(Ordering::SeqCst)
    }

    /// The status reply for `reference`, as `GET .../requesttopay/{reference}` would give it.
    pub fn status_of(&self, reference: &str) -> Option<Value> {
        lock(&self.inner.state)
            .payments
            .get(&reference.to_ascii_lowercase())
            .map(Payment::reply)
    }

    /// The `X-Callback-Url` a request to pay named.
    pub fn callback_url(&self, reference: &str) -> Option<String> {
        lock(&self.inner.state)
            .payments
            .get(&reference.to_ascii_lowercase())
            .and_then(|p| p.callback_url.clone())
    }

    /// Why the last refused request was refused, for diagnostics.
    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.inner.last_refusal).clone()
    }

    /// Changes a payment's outcome (a SUCCESSFUL one gets a `financialTransactionId`). When the
    /// new status is not PENDING and the payment's callback has not gone out yet (test number
    /// ending in `4`), it goes out after the callback delay.
    ///
    /// # Panics
    /// If there is no such payment.
    pub fn set_status(&self, reference: &str, status: &str, reason: Option<Value>) {
        let reference = reference.to_ascii_lowercase();
        let due = {
            let mut state = lock(&self.inner.state);
            let Some(payment) = state.payments.get_mut(&reference) else {
                drop(state);
                panic!("no payment {reference}");
            };
            payment.status = status.to_owned();
            payment.reason = reason;
            if status == "SUCCESSFUL" && payment.financial_transaction_id.is_none() {
                payment.financial_transaction_id = Some(random_transaction_id());
            }
            status != "PENDING" && !payment.callback_sent && payment.callback_url.is_some()
        };
        if due {
            self.schedule_callback(reference);
        }
    }

    /// Sends `body` as a callback for `reference` to the callback URL its request to pay named,
    /// with `method`: a replay or a forgery, on demand. Returns the app's status; 0 when there
    /// is no such payment or callback URL, or the app did not answer.
    pub async fn send_callback(&self, reference: &str, method: &str, body: &Value) -> u16 {
        let reference = reference.to_ascii_lowercase();
        let Some(url) = self.callback_url(&reference) else {
            return 0;
        };
        let Ok(method) = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
            return 0;
        };
        self.deliver(&reference, &url, method, body).await
    }

    /// Sends `body` with `method` to any URL, as MoMo's callback would come: for forgeries
    /// about payments MoMo does not know. Returns the app's status (0: no answer).
    pub async fn send_callback_to(&self, url: &str, method: &str, body: &Value) -> u16 {
        let Ok(method) = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
            return 0;
        };
        self.deliver("", url, method, body).await
    }

    /// Sends one callback: unsigned JSON, nothing else MoMo would not send.
    async fn deliver(
        &self,
        reference: &str,
        url: &str,
        method: reqwest::Method,
        body: &Value,
    ) -> u16 {
        self.inner.callbacks_sent.fetch_add(1, Ordering::SeqCst);
        let sent = self
            .inner
            .http
            .request(method, url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .await;
        let status = match sent {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => {
                tracing::warn!(url, error = %e, "momo simulator: the callback got no answer");
                0
            }
        };
        lock(&self.inner.callback_answers).push((reference.to_owned(), status));
        status
    }

    /// The automatic callback for `reference`, after the delay: once per payment.
    fn schedule_callback(&self, reference: String) {
        let sim = self.clone();
        let delay = *lock(&self.inner.callback_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due = {
                let mut state = lock(&sim.inner.state);
                match state.payments.get_mut(&reference) {
                    Some(p) if !p.callback_sent => {
                        p.callback_sent = true;
                        let body = lock(&sim.inner.forged).take().unwrap_or_else(|| p.reply());
                        p.callback_url.clone().map(|url| (url, body))
                    }
                    _ => None,
                }
            };
            if due.is_some() && sim.inner.drop_callbacks.load(Ordering::SeqCst) {
                sim.inner.callbacks_dropped.fetch_add(1, Ordering::SeqCst);
                tracing::info!(reference, "momo simulator: the callback is lost");
                return;
            }
            if let Some((url, body)) = due {
                let method = lock(&sim.inner.callback_method).clone();
                sim.deliver(&reference, &url, method, &body).await;
            }
        });
    }

    fn refuse(&self, why: String, resp: Response) -> Response {
        tracing::info!(why, "momo simulator refused a request");
        *lock(&self.inner.last_refusal) = Some(why);
        resp
    }

    /// The API gateway's check: `Ocp-Apim-Subscription-Key` is `product`'s key, or, for `None`
    /// (provisioning), any configured key.
    fn check_subscription(
        &self,
        headers: &HeaderMap,
        product: Option<&str>,
    ) -> Result<(), Refused> {
        let given = header_str(headers, "ocp-apim-subscription-key");
        let ok = given.is_some_and(|key| match product {
            Some(p) => self
                .inner
                .subscription_keys
                .get(p)
                .is_some_and(|k| k == key),
            None => self.inner.subscription_keys.values().any(|k| k == key),
        });
        if ok {
            return Ok(());
        }
        let (message, why) = match given {
            None => (
                "Access denied due to missing subscription key. Make sure to include \
                 subscription key when making requests to an API.",
                "no Ocp-Apim-Subscription-Key".to_owned(),
            ),
            Some(key) => (
                "Access denied due to invalid subscription key. Make sure to provide a valid \
                 key for an active subscription.",
                match product {
                    Some(p) => format!("Ocp-Apim-Subscription-Key {key} is not the {p} key"),
                    None => format!("Ocp-Apim-Subscription-Key {key} is not a configured key"),
                },
            ),
        };
        Err(Box::new(
            self.refuse(
                why,
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"statusCode": 401, "message": message})),
                )
                    .into_response(),
            ),
        ))
    }

    /// `Authorization: Bearer <a live token of product>`.
    fn check_bearer(&self, headers: &HeaderMap, product: &str) -> Result<(), Refused> {
        let refuse = |why: String| -> Refused {
            Box::new(
                self.refuse(
                    why,
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({
                            "statusCode": 401,
                            "message": "Unauthorized. Access token is missing or invalid.",
                        })),
                    )
                        .into_response(),
                ),
            )
        };
        let value = header_str(headers, header::AUTHORIZATION.as_str())
            .ok_or_else(|| refuse("no Authorization header".into()))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| refuse(format!("the Authorization scheme must be Bearer: {value}")))?;
        let state = lock(&self.inner.state);
        let grant = state
            .tokens
            .get(token)
            .ok_or_else(|| refuse("the access token is unknown".into()))?;
        if grant.product != product {
            return Err(refuse(format!(
                "the access token is for {}, not {product}",
                grant.product
            )));
        }
        if grant.expires_at <= now() {
            return Err(refuse("the access token has expired".into()));
        }
        Ok(())
    }

    /// `X-Target-Environment: sandbox`.
    fn check_target_environment(&self, headers: &HeaderMap) -> Result<(), Refused> {
        match header_str(headers, "x-target-environment") {
            Some(TARGET_ENVIRONMENT) => Ok(()),
            None => Err(Box::new(self.refuse(
                "no X-Target-Environment".into(),
                momo_error(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "The X-Target-Environment header is required.",
                ),
            ))),
            Some(other) => Err(Box::new(self.refuse(
                format!("X-Target-Environment {other} is not {TARGET_ENVIRONMENT}"),
                momo_error(
                    StatusCode::FORBIDDEN,
                    "NOT_ALLOWED_TARGET_ENVIRONMENT",
                    "Access to target environment is forbidden.",
                ),
            ))),
        }
    }

    /// The callback URL lies under the app's base URL (a boundary after it: `/`, `?`, `#` or
    /// the end), as a correctly provisioned callback host would allow.
    fn check_callback_url(&self, url: &str) -> Result<(), Refused> {
        let base = &self.inner.app_base;
        let under = url.strip_prefix(base.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || rest.starts_with('/')
                || rest.starts_with('?')
                || rest.starts_with('#')
        });
        if under && url::Url::parse(url).is_ok() {
            return Ok(());
        }
        Err(Box::new(self.refuse(
            format!("X-Callback-Url {url} is not under {base}"),
            momo_error(
                StatusCode::BAD_REQUEST,
                "INVALID_CALLBACK_URL_HOST",
                "Callback URL with host not allowed for this API user.",
            ),
        )))
    }
}

fn bad_request(sim: &MomoSim, why: String) -> Response {
    let resp = momo_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &why);
    sim.refuse(why, resp)
}

/// `POST /v1_0/apiuser`.
async fn create_api_user(State(sim): State<MomoSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = sim.check_subscription(&headers, None) {
        return *resp;
    }
    let user = match reference_id(&headers) {
        Ok(u) => u,
        Err(why) => return bad_request(&sim, why),
    };
    if !json_content_type(&headers) {
        return bad_request(&sim, "the body must be application/json".into());
    }
    let host = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("providerCallbackHost")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|h| !h.is_empty());
    let Some(host) = host else {
        return bad_request(
            &sim,
            "the body must be {\"providerCallbackHost\": <host>}".into(),
        );
    };
    let mut state = lock(&sim.inner.state);
    if state.users.contains_key(&user) {
        drop(state);
        return sim.refuse(
            format!("API user {user} already exists"),
            momo_error(
                StatusCode::CONFLICT,
                "RESOURCE_ALREADY_EXIST",
                "Duplicated reference id. Creation of resource failed.",
            ),
        );
    }
    state.users.insert(
        user,
        ApiUser {
            callback_host: host,
            api_key: None,
        },
    );
    StatusCode::CREATED.into_response()
}

fn unknown_user(sim: &MomoSim, user: &str) -> Response {
    sim.refuse(
        format!("no API user {user}"),
        momo_error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "Requested resource was not found.",
        ),
    )
}

/// `POST /v1_0/apiuser/{id}/apikey`.
async fn create_api_key(
    State(sim): State<MomoSim>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.check_subscription(&headers, None) {
        return *resp;
    }
    let key = random_hex(16);
    match lock(&sim.inner.state)
        .users
        .get_mut(&user.to_ascii_lowercase())
    {
        Some(u) => u.api_key = Some(key.clone()),
        None => return unknown_user(&sim, &user),
    }
    (StatusCode::CREATED, Json(json!({ "apiKey": key }))).into_response()
}

/// `GET /v1_0/apiuser/{id}`.
async fn get_api_user(
    State(sim): State<MomoSim>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim.check_subscription(&headers, None) {
        return *resp;
    }
    let host = lock(&sim.inner.state)
        .users
        .get(&user.to_ascii_lowercase())
        .map(|u| u.callback_host.clone());
    match host {
        Some(host) => Json(json!({
            "providerCallbackHost": host,
            "targetEnvironment": TARGET_ENVIRONMENT,
        }))
        .into_response(),
        None => unknown_user(&sim, &user),
    }
}

/// `POST /{product}/token/`.
async fn token(
    State(sim): State<MomoSim>,
    Path(product): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !PRODUCTS.contains(&product.as_str()) {
        return not_found().await;
    }
    *lock(&sim.inner.token_requests)
        .entry(product.clone())
        .or_default() += 1;
    let delay = *lock(&sim.inner.token_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Err(resp) = sim.check_subscription(&headers, Some(&product)) {
        return *resp;
    }
    let login_failed = |why: String| {
        sim.refuse(
            why,
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "login_failed"})),
            )
                .into_response(),
        )
    };
    let Some(value) = header_str(&headers, header::AUTHORIZATION.as_str()) else {
        return login_failed("no Authorization header".into());
    };
    let credentials = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some(credentials) = credentials else {
        return login_failed(format!(
            "Authorization is not Basic base64(apiUser:apiKey): {value}"
        ));
    };
    let Some((user, key)) = credentials.split_once(':') else {
        return login_failed("the Basic credentials have no ':'".into());
    };
    let lifetime = sim.inner.token_lifetime.load(Ordering::SeqCst);
    let mut state = lock(&sim.inner.state);
    let known = state
        .users
        .get(user)
        .and_then(|u| u.api_key.as_deref())
        .is_some_and(|k| k == key);
    if !known {
        drop(state);
        return login_failed(format!("API user {user} with that API key is unknown"));
    }
    let access_token = random_hex(32);
    state.tokens.insert(
        access_token.clone(),
        TokenGrant {
            product: product.clone(),
            expires_at: now() + lifetime,
        },
    );
    Json(json!({
        "access_token": access_token,
        "token_type": "access_token",
        "expires_in": lifetime,
    }))
    .into_response()
}

/// `POST /collection/v1_0/requesttopay`.
/// `GET /{collection|disbursement}/v1_0/account/balance`: the account's balance, with the
/// product's subscription key, a live token of that product and the target environment.
async fn account_balance(
    State(sim): State<MomoSim>,
    Path(product): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    sim.inner.api.record(&method, &uri, &headers);
    if !matches!(product.as_str(), "collection" | "disbursement") {
        return not_found().await;
    }
    if let Err(resp) = sim
        .check_subscription(&headers, Some(&product))
        .and_then(|()| sim.check_bearer(&headers, &product))
        .and_then(|()| sim.check_target_environment(&headers))
    {
        return *resp;
    }
    if let Some(imposed) = sim.inner.api.imposed() {
        return imposed;
    }
    Json(json!({"availableBalance": "1000", "currency": "EUR"})).into_response()
}

async fn request_to_pay(State(sim): State<MomoSim>, headers: HeaderMap, body: Bytes) -> Response {
    sim.inner.requests_received.fetch_add(1, Ordering::SeqCst);
    if let Err(resp) = sim
        .check_subscription(&headers, Some("collection"))
        .and_then(|()| sim.check_bearer(&headers, "collection"))
        .and_then(|()| sim.check_target_environment(&headers))
    {
        return *resp;
    }
    let reference = match reference_id(&headers) {
        Ok(r) => r,
        Err(why) => return bad_request(&sim, why),
    };
    let callback_url = header_str(&headers, "x-callback-url").map(str::to_owned);
    if let Some(url) = &callback_url
        && let Err(resp) = sim.check_callback_url(url)
    {
        return *resp;
    }
    if !json_content_type(&headers) {
        return bad_request(&sim, "the body must be application/json".into());
    }
    let mut payment = match parse_payment(&body) {
        Ok(p) => p,
        Err((code, why)) => {
            let resp = momo_error(StatusCode::BAD_REQUEST, code, &why);
            return sim.refuse(why, resp);
        }
    };
    let party_id = payment.payer["partyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let decided = outcome(&party_id);
    payment.status = decided.status.to_owned();
    payment.reason = decided.reason;
    if decided.status == "SUCCESSFUL" {
        payment.financial_transaction_id = Some(random_transaction_id());
    }
    payment.callback_url = callback_url;
    let schedule = decided.callback && payment.callback_url.is_some();
    let fault = lock(&sim.inner.fault).take();
    if let Some(RequestToPayFault::Refuse(status)) = fault {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let resp = if status.is_client_error() {
            momo_error(status, "BAD_REQUEST", "The request was refused.")
        } else {
            (
                status,
                Json(json!({"statusCode": status.as_u16(), "message": "Internal server error"})),
            )
                .into_response()
        };
        return sim.refuse(format!("told to refuse with {status}"), resp);
    }
    {
        let mut state = lock(&sim.inner.state);
        if state.payments.contains_key(&reference) {
            drop(state);
            return sim.refuse(
                format!("reference {reference} was already used"),
                momo_error(
                    StatusCode::CONFLICT,
                    "RESOURCE_ALREADY_EXIST",
                    "Duplicated reference id. Creation of resource failed.",
                ),
            );
        }
        state.payments.insert(reference.clone(), payment);
    }
    sim.inner.requests_to_pay.fetch_add(1, Ordering::SeqCst);
    if schedule {
        sim.schedule_callback(reference);
    }
    match fault {
        Some(RequestToPayFault::AcceptThenStall(delay)) => {
            tokio::time::sleep(delay).await;
            StatusCode::ACCEPTED.into_response()
        }
        Some(RequestToPayFault::AcceptThenFail(status)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({"statusCode": status, "message": "Internal server error"})),
        )
            .into_response(),
        // Unwinding ends the connection's task: the socket closes with no answer written.
        // `resume_unwind` skips the panic hook, so nothing is printed.
        Some(RequestToPayFault::AcceptThenDrop) => std::panic::resume_unwind(Box::new(
            "momo simulator: the connection is dropped after the payment was taken",
        )),
        Some(RequestToPayFault::AcceptThenGarble) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response(),
        Some(RequestToPayFault::Refuse(_)) | None => StatusCode::ACCEPTED.into_response(),
    }
}

/// `GET /collection/v1_0/requesttopay/{referenceId}`.
async fn payment_status(
    State(sim): State<MomoSim>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim
        .check_subscription(&headers, Some("collection"))
        .and_then(|()| sim.check_bearer(&headers, "collection"))
        .and_then(|()| sim.check_target_environment(&headers))
    {
        return *resp;
    }
    match sim.status_of(&reference) {
        Some(reply) => Json(reply).into_response(),
        None => sim.refuse(
            format!("no payment {reference}"),
            momo_error(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                "Requested resource was not found.",
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
