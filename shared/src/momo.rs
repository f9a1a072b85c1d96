//! MTN MoMo: sandbox provisioning, cached access tokens, request-to-pay and verified callbacks.
//!
//! MoMo (PLATFORMS.md, "MTN MoMo") authenticates the app with an API user and API key (Basic
//! auth) plus one subscription key per product, and issues access tokens for an hour. A token is
//! reused until shortly before it expires: cached in the container, and in the store so that
//! concurrent containers share one; when it is due, one caller (holding a lease item) asks for a
//! new one while the others wait and re-read.
//!
//! MoMo's callback is unsigned and does not carry the reference id, so the id travels in the
//! callback path, and the callback body is only a hint: the outcome is recorded from MoMo's own
//! status reply, fetched with our token. A transaction moves from PENDING to SUCCESSFUL or FAILED
//! once (a condition on the stored status); nothing moves it back.
//!
//! The secret `momo` is `{"client_id": <API user>, "client_secret": <API key>,
//! "subscription_keys": {"collection": ..., ...}}`; [`provision`] fills in the first two in the
//! sandbox.

use crate::app::App;
use crate::config::{ConfigError, Vars};
use crate::error::{Error, Result};
use crate::store::{Condition, Item, Key, StoreError, now};
use crate::web::{self, Format};
use base64::Engine as _;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The platform's name: its secret, its store partitions, its routes.
pub const PLATFORM: &str = "momo";
/// The largest request-to-pay or callback body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Reuse a token until this many seconds before it expires.
const TOKEN_MARGIN: i64 = 120;
const LEASE_SECONDS: i64 = 30;
const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 3600;

/// MoMo settings (`MOMO_*` variables).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `MOMO_BASE_URL` (default the sandbox, `https://sandbox.momodeveloper.mtn.com`; production
    /// is `https://proxy.momoapi.mtn.com`).
    pub base_url: String,
    /// `MOMO_TARGET_ENVIRONMENT`: `sandbox` (default) or `mtn<country>`.
    pub target_environment: String,
    /// `MOMO_PRODUCTS`: the products the app uses (default `collection`).
    pub products: Vec<String>,
}

impl Settings {
    /// Reads the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let products: Vec<String> = vars
            .get_or("MOMO_PRODUCTS", "collection")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = products
            .iter()
            .find(|p| !matches!(p.as_str(), "collection" | "disbursement" | "remittance"))
        {
            return Err(ConfigError {
                name: "MOMO_PRODUCTS".into(),
                problem: format!("unknown product `{bad}`"),
            });
        }
        Ok(Self {
            base_url: vars
                .url("MOMO_BASE_URL", "https://sandbox.momodeveloper.mtn.com")?
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            target_environment: vars.get_or("MOMO_TARGET_ENVIRONMENT", "sandbox").to_owned(),
            products,
        })
    }
}

/// MoMo's per-container state: settings and the cached tokens.
pub struct Momo {
    /// The settings.
    pub settings: Settings,
    tokens: tokio::sync::Mutex<HashMap<String, (SecretString, i64)>>,
}

impl Momo {
    /// From the settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            settings: Settings::from_vars(vars)?,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        })
    }
}

fn subscription_key(creds: &crate::secrets::Credentials, product: &str) -> Result<String> {
    creds
        .extra
        .get("subscription_keys")
        .and_then(|keys| keys.get(product))
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "no MoMo subscription key is configured for {product}"
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// Access tokens

fn token_key(product: &str) -> Key {
    Key::new(format!("token#{PLATFORM}"), product)
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: Option<i64>,
}

/// A valid access token for `product`: from the container, from the store, or — by one caller
/// across all containers — from MoMo.
pub async fn access_token(app: &App, product: &str) -> Result<SecretString> {
    // Holding the container's lock while fetching makes concurrent callers in this container
    // wait for one answer instead of each asking.
    let mut cache = app.momo.tokens.lock().await;
    if let Some((token, expires_at)) = cache.get(product)
        && *expires_at - TOKEN_MARGIN > now()
    {
        return Ok(token.clone());
    }
    let (token, expires_at) = shared_token(app, product).await?;
    cache.insert(product.to_owned(), (token.clone(), expires_at));
    Ok(token)
}

async fn stored_token(app: &App, product: &str) -> Result<Option<(SecretString, i64)>> {
    let key = token_key(product);
    let Some(item) = app.store.get(&key).await? else {
        return Ok(None);
    };
    let expires_at = item
        .attrs
        .get("expires_at")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if expires_at - TOKEN_MARGIN <= now() {
        return Ok(None);
    }
    let keys = app.secrets.app_keys().await?;
    let sealed = item.str("token_sealed").unwrap_or_default();
    match keys.decrypt(sealed, &format!("{}/{}", key.pk, key.sk)) {
        Ok(token) => Ok(Some((token, expires_at))),
        Err(_) => Ok(None),
    }
}

async fn shared_token(app: &App, product: &str) -> Result<(SecretString, i64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let lease = Item::new(
        Key::new(format!("lease#token#{PLATFORM}"), product),
        Map::new(),
    );
    loop {
        if let Some(found) = stored_token(app, product).await? {
            return Ok(found);
        }
        let lease = lease.clone().expiring_at(now() + LEASE_SECONDS);
        match app.store.put(&lease, Condition::Absent).await {
            Ok(()) => {
                let outcome = match stored_token(app, product).await {
                    Ok(Some(found)) => Ok(found),
                    Ok(None) => fetch_token(app, product).await,
                    Err(e) => Err(e),
                };
                let _ = app.store.take(&lease.key).await;
                return outcome;
            }
            Err(StoreError::ConditionFailed) => {
                if Instant::now() > deadline {
                    return Err(Error::Unavailable(
                        "MoMo's token is taking too long to obtain; try again".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn fetch_token(app: &App, product: &str) -> Result<(SecretString, i64)> {
    let creds = app.secrets.credentials(PLATFORM).await?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        creds.client_id,
        creds.client_secret.expose_secret()
    ));
    let url = format!("{}/{product}/token/", app.momo.settings.base_url);
    let resp = app
        .http
        .post(&url)
        .header("Authorization", format!("Basic {basic}"))
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, product)?,
        )
        .header("Content-Length", "0")
        .send()
        .await
        .map_err(|e| {
            Error::Upstream(format!(
                "MoMo's token endpoint {}",
                crate::http::describe(&e)
            ))
        })?;
    if !resp.status().is_success() {
        tracing::warn!(
            status = resp.status().as_u16(),
            product,
            "momo token refused"
        );
        let status = resp.status().as_u16();
        // 401/403 are MoMo judging our API user, key or subscription key; anything else is
        // MoMo failing, and saying the credentials were refused would send an operator the
        // wrong way.
        return Err(Error::Upstream(match status {
            401 | 403 => format!("MoMo refused the app's credentials ({status})"),
            _ => format!("MoMo's token endpoint answered {status}"),
        }));
    }
    let reply: TokenReply = resp
        .json()
        .await
        .map_err(|_| Error::Upstream("MoMo's token endpoint answered unreadably".into()))?;
    let expires_at = now() + reply.expires_in.unwrap_or(3600);
    let key = token_key(product);
    let keys = app.secrets.app_keys().await?;
    let mut attrs = Map::new();
    attrs.insert(
        "token_sealed".into(),
        keys.encrypt(&reply.access_token, &format!("{}/{}", key.pk, key.sk))?
            .into(),
    );
    attrs.insert("expires_at".into(), expires_at.into());
    app.store
        .put(
            &Item::new(key, attrs).expiring_at(expires_at),
            Condition::Always,
        )
        .await?;
    tracing::info!(product, "momo access token obtained");
    Ok((SecretString::from(reply.access_token), expires_at))
}

// ---------------------------------------------------------------------------------------------
// Request to pay

/// The store key of a transaction.
pub fn transaction_key(reference: &str) -> Key {
    Key::new(format!("tx#{PLATFORM}"), reference)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PaymentRequest {
    amount: String,
    currency: String,
    external_id: String,
    payer: Party,
    payer_message: Option<String>,
    payee_note: Option<String>,
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Party {
    party_id_type: String,
    party_id: String,
}

impl PaymentRequest {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::BadRequest(m.into()));
        let a = self.amount.as_str();
        let (whole, frac) = a.split_once('.').unwrap_or((a, ""));
        if whole.is_empty()
            || whole.len() > 12
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 2
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (a.contains('.') && frac.is_empty())
            || a.bytes().all(|b| b == b'0' || b == b'.')
        {
            return bad("`amount` must be a positive decimal string such as \"10\" or \"10.50\"");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("`currency` must be a three-letter ISO 4217 code such as \"EUR\"");
        }
        if self.external_id.is_empty() || self.external_id.len() > 64 {
            return bad("`externalId` must be 1 to 64 characters");
        }
        let id = self.payer.party_id.as_str();
        let ok = match self.payer.party_id_type.as_str() {
            "MSISDN" => (6..=15).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
            "EMAIL" => {
                id.len() <= 254
                    && id
                        .split_once('@')
                        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
            }
            "PARTY_CODE" => !id.is_empty() && id.len() <= 64,
            _ => return bad("`payer.partyIdType` must be MSISDN, EMAIL or PARTY_CODE"),
        };
        if !ok {
            return bad("`payer.partyId` does not fit its partyIdType");
        }
        for (name, text) in [
            ("payerMessage", &self.payer_message),
            ("payeeNote", &self.payee_note),
        ] {
            if text.as_ref().is_some_and(|t| t.chars().count() > 160) {
                return Err(Error::BadRequest(format!(
                    "`{name}` is longer than 160 characters"
                )));
            }
        }
        Ok(())
    }
}

/// `POST /momo/requesttopay` (IAM-authorized): starts a collection and returns its reference.
pub async fn request_to_pay(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Json, request_to_pay_flow(app, &req).await)
}

async fn request_to_pay_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    web::require_content_type(req, "application/json")?;
    let body = web::body(req, MAX_BODY)?;
    let payment: PaymentRequest = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the body is not a valid payment request: {}",
            short(&e)
        ))
    })?;
    payment.validate()?;
    let idempotency = web::header(req.headers(), "idempotency-key").unwrap_or("");
    if idempotency.len() > 128 {
        return Err(Error::BadRequest(
            "the Idempotency-Key header is too long".into(),
        ));
    }

    // The same externalId and idempotency key name one payment, whoever asks again.
    let reference = uuid::Uuid::new_v4().to_string();
    let idem_key = Key::new(
        format!("idem#{PLATFORM}"),
        hex::encode(crate::crypto::sha256(
            format!("{}\n{idempotency}", payment.external_id).as_bytes(),
        )),
    );
    let mut idem_attrs = Map::new();
    idem_attrs.insert("reference".into(), reference.clone().into());
    let idem = Item::new(idem_key, idem_attrs).expiring_at(now() + IDEMPOTENCY_TTL_SECONDS);
    match app.store.put(&idem, Condition::Absent).await {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            let earlier = app.store.get(&idem.key).await?;
            let earlier = earlier
                .as_ref()
                .and_then(|i| i.str("reference"))
                .unwrap_or_default();
            let tx = app.store.get(&transaction_key(earlier)).await?;
            let status = tx
                .as_ref()
                .and_then(|t| t.str("status"))
                .unwrap_or("PENDING");
            return Ok(web::json(
                StatusCode::OK,
                &json!({"referenceId": earlier, "status": status, "duplicate": true}),
            ));
        }
        Err(e) => return Err(e.into()),
    }

    let mut tx = Map::new();
    tx.insert("status".into(), "PENDING".into());
    tx.insert("amount".into(), payment.amount.clone().into());
    tx.insert("currency".into(), payment.currency.clone().into());
    tx.insert("external_id".into(), payment.external_id.clone().into());
    tx.insert(
        "payer".into(),
        serde_json::to_value(&payment.payer).unwrap_or(Value::Null),
    );
    tx.insert("created_at".into(), now().into());
    let tx_item = Item::new(transaction_key(&reference), tx);
    if let Err(e) = app.store.put(&tx_item, Condition::Absent).await {
        let _ = app.store.take(&idem.key).await;
        return Err(e.into());
    }

    match send_request_to_pay(app, req, &reference, &payment).await {
        Ok(()) => {
            tracing::info!(reference, "momo request to pay sent");
            Ok(web::json(
                StatusCode::ACCEPTED,
                &json!({"referenceId": reference, "status": "PENDING"}),
            ))
        }
        Err(e) => {
            // MoMo did not take the request: nothing of it is kept, so it can be sent again.
            let _ = app.store.take(&tx_item.key).await;
            let _ = app.store.take(&idem.key).await;
            Err(e)
        }
    }
}

fn short(e: &serde_json::Error) -> String {
    e.to_string().chars().take(120).collect()
}

async fn send_request_to_pay(
    app: &App,
    req: &Request,
    reference: &str,
    payment: &PaymentRequest,
) -> Result<()> {
    let token = access_token(app, "collection").await?;
    let creds = app.secrets.credentials(PLATFORM).await?;
    let callback = app.public_url(req, &format!("/momo/callback/{reference}"))?;
    let body = json!({
        "amount": payment.amount,
        "currency": payment.currency,
        "externalId": payment.external_id,
        "payer": {"partyIdType": payment.payer.party_id_type, "partyId": payment.payer.party_id},
        "payerMessage": payment.payer_message.clone().unwrap_or_default(),
        "payeeNote": payment.payee_note.clone().unwrap_or_default(),
    });
    let resp = app
        .http
        .post(format!(
            "{}/collection/v1_0/requesttopay",
            app.momo.settings.base_url
        ))
        .bearer_auth(token.expose_secret())
        .header("X-Reference-Id", reference)
        .header(
            "X-Target-Environment",
            &app.momo.settings.target_environment,
        )
        .header("X-Callback-Url", callback)
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, "collection")?,
        )
        .json(&body)
        .send()
        .await
        .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
    let status = resp.status();
    if status.as_u16() == 202 {
        return Ok(());
    }
    let detail: Value = resp.json().await.unwrap_or(Value::Null);
    let message = detail
        .get("message")
        .and_then(Value::as_str)
        .map(web::printable)
        .unwrap_or_default();
    tracing::warn!(
        status = status.as_u16(),
        message,
        "momo refused the request to pay"
    );
    if status.is_client_error() {
        Err(Error::BadRequest(format!(
            "MoMo refused the payment request ({}): {message}",
            status.as_u16()
        )))
    } else {
        Err(Error::Upstream(format!(
            "MoMo answered {}",
            status.as_u16()
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Callback

#[derive(Deserialize)]
struct StatusReply {
    status: String,
    reason: Option<Value>,
    #[serde(rename = "financialTransactionId")]
    financial_transaction_id: Option<String>,
}

/// `PUT|POST /momo/callback/{referenceId}`: the outcome, confirmed by MoMo's status reply.
pub async fn callback(app: &App, req: Request) -> Response<Body> {
    web::respond(Format::Json, callback_flow(app, &req).await)
}

async fn callback_flow(app: &App, req: &Request) -> Result<Response<Body>> {
    let reference = req
        .uri()
        .path()
        .strip_prefix("/momo/callback/")
        .filter(|r| !r.contains('/'))
        .ok_or_else(|| Error::NotFound("no such callback".into()))?;
    let reference = uuid::Uuid::parse_str(reference)
        .map_err(|_| Error::NotFound("no such payment".into()))?
        .hyphenated()
        .to_string();
    let body = web::body(req, MAX_BODY)?;
    let hint: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| Error::BadRequest("the callback body is not a JSON object".into()))?;
    let key = transaction_key(&reference);
    let tx = app
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::NotFound("no such payment".into()))?;
    let current = tx.str("status").unwrap_or("PENDING").to_owned();
    if current != "PENDING" {
        return Ok(web::json(
            StatusCode::OK,
            &json!({"ok": true, "status": current}),
        ));
    }
    tracing::info!(reference, hint = ?hint.get("status"), "momo callback; confirming with MoMo");

    let confirmed = fetch_status(app, &reference).await?;
    if !matches!(confirmed.status.as_str(), "SUCCESSFUL" | "FAILED") {
        return Ok(web::json(
            StatusCode::OK,
            &json!({"ok": true, "status": "PENDING"}),
        ));
    }
    let mut attrs = tx.attrs.clone();
    attrs.insert("status".into(), confirmed.status.clone().into());
    attrs.insert("completed_at".into(), now().into());
    if let Some(reason) = confirmed.reason {
        attrs.insert("reason".into(), reason);
    }
    if let Some(id) = confirmed.financial_transaction_id {
        attrs.insert("financial_transaction_id".into(), id.into());
    }
    match app
        .store
        .put(
            &Item::new(key, attrs),
            Condition::AttrEquals("status".into(), "PENDING".into()),
        )
        .await
    {
        Ok(()) | Err(StoreError::ConditionFailed) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(reference, status = %confirmed.status, "momo payment recorded");
    Ok(web::json(
        StatusCode::OK,
        &json!({"ok": true, "status": confirmed.status}),
    ))
}

async fn fetch_status(app: &App, reference: &str) -> Result<StatusReply> {
    let token = access_token(app, "collection").await?;
    let creds = app.secrets.credentials(PLATFORM).await?;
    let resp = app
        .http
        .get(format!(
            "{}/collection/v1_0/requesttopay/{reference}",
            app.momo.settings.base_url
        ))
        .bearer_auth(token.expose_secret())
        .header(
            "X-Target-Environment",
            &app.momo.settings.target_environment,
        )
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, "collection")?,
        )
        .send()
        .await
        .map_err(|e| Error::Upstream(format!("MoMo's status {}", crate::http::describe(&e))))?;
    if !resp.status().is_success() {
        return Err(Error::Upstream(format!(
            "MoMo's status answered {}",
            resp.status().as_u16()
        )));
    }
    resp.json()
        .await
        .map_err(|_| Error::Upstream("MoMo's status answered unreadably".into()))
}

// ---------------------------------------------------------------------------------------------
// Sandbox provisioning (an operator command, not a route)

/// What provisioning did.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// The configured API user still exists: nothing was changed.
    AlreadyWorking(String),
    /// A new API user and key were created and written into the secret.
    Created(String),
}

/// Creates the sandbox API user (uuid4 reference id, `providerCallbackHost`) and its API key,
/// reads the user back to confirm, and writes both into the `momo` secret (Secrets Manager or
/// the local file, wherever it is configured). A secret whose API user still answers is left as
/// it is, so running this again does not break a working setup.
pub async fn provision(
    app: &App,
    subscription_key: &str,
    callback_host: &str,
) -> Result<Provisioned> {
    let base = &app.momo.settings.base_url;
    let mut secret = app.secrets.raw_json(PLATFORM).await.unwrap_or_default();
    if let Some(user) = secret
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        let has_key = secret
            .get("client_secret")
            .and_then(Value::as_str)
            .is_some_and(|k| !k.is_empty());
        let resp = app
            .http
            .get(format!("{base}/v1_0/apiuser/{user}"))
            .header("Ocp-Apim-Subscription-Key", subscription_key)
            .send()
            .await
            .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
        if has_key && resp.status().is_success() {
            return Ok(Provisioned::AlreadyWorking(user.to_owned()));
        }
    }
    let user = uuid::Uuid::new_v4().to_string();
    let created = app
        .http
        .post(format!("{base}/v1_0/apiuser"))
        .header("X-Reference-Id", &user)
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .json(&json!({ "providerCallbackHost": callback_host }))
        .send()
        .await
        .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
    if created.status().as_u16() != 201 {
        return Err(Error::Upstream(format!(
            "MoMo refused to create the API user ({})",
            created.status().as_u16()
        )));
    }
    #[derive(Deserialize)]
    struct ApiKey {
        #[serde(rename = "apiKey")]
        api_key: String,
    }
    let key_resp = app
        .http
        .post(format!("{base}/v1_0/apiuser/{user}/apikey"))
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .header("Content-Length", "0")
        .send()
        .await
        .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
    if key_resp.status().as_u16() != 201 {
        return Err(Error::Upstream(format!(
            "MoMo refused to create the API key ({})",
            key_resp.status().as_u16()
        )));
    }
    let api_key: ApiKey = key_resp
        .json()
        .await
        .map_err(|_| Error::Upstream("MoMo's API key answer is unreadable".into()))?;
    let check = app
        .http
        .get(format!("{base}/v1_0/apiuser/{user}"))
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .send()
        .await
        .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
    let details: Value = if check.status().is_success() {
        check.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if details.get("providerCallbackHost").and_then(Value::as_str) != Some(callback_host) {
        return Err(Error::Upstream(
            "MoMo does not confirm the new API user's callback host".into(),
        ));
    }
    secret.insert("client_id".into(), user.clone().into());
    secret.insert("client_secret".into(), api_key.api_key.into());
    let keys = secret
        .entry("subscription_keys")
        .or_insert_with(|| json!({}));
    if keys.get("collection").is_none() {
        keys["collection"] = subscription_key.into();
    }
    app.secrets.write_json(PLATFORM, &secret).await?;
    Ok(Provisioned::Created(user))
}
