//! MTN MoMo: sandbox provisioning, cached access tokens, request-to-pay and verified callbacks.
//!
//! MoMo (docs/platforms.md, "MTN MoMo") authenticates the app with an API user and API key (Basic
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
//! A request to pay whose answer is lost may still have been taken by MoMo, so such a payment
//! is kept, marked unconfirmed, and never sent again under the same Idempotency-Key; MoMo's
//! status resolves it, asked by the caller's retry, the callback or the reconciler
//! ([`reconcile`], run on a schedule), which also catches callbacks that never came.
//!
//! The secret `momo` is `{"client_id": <API user>, "client_secret": <API key>,
//! "subscription_keys": {"collection": ..., ...}}`; [`provision`] fills in the first two in the
//! sandbox.

use crate::cache::Fetched;
use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::error::{Error, Reason, Result};
use crate::events::{self, Event};
use crate::http::PlatformCall as _;
use crate::once::{Lease, Patience};
use crate::store::{Condition, Item, Key, Record, StoreError, Write, now};
use crate::web;
use base64::Engine as _;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// The platform's name: its secret, its store partitions, its routes.
pub const PLATFORM: &str = "momo";
/// The largest request-to-pay or callback body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Reuse a token until this many seconds before it expires.
const TOKEN_MARGIN: i64 = 120;
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
    /// `MOMO_RECONCILE_AFTER_SECONDS` (default 120): how old a PENDING payment must be before
    /// the reconciler asks MoMo's status of it, giving MoMo's callback time to come first; also
    /// how old it must be before MoMo's "no such payment" means the request never arrived.
    pub reconcile_after: i64,
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
            reconcile_after: i64::try_from(
                vars.seconds("MOMO_RECONCILE_AFTER_SECONDS", 120)?.as_secs(),
            )
            .map_err(|_| ConfigError {
                name: "MOMO_RECONCILE_AFTER_SECONDS".into(),
                problem: "is too large".into(),
            })?,
        })
    }
}

/// MoMo's per-container state: settings and the cached tokens.
pub struct Momo {
    /// What every platform shares.
    pub deps: std::sync::Arc<Deps>,
    /// The settings.
    pub settings: Settings,
    /// By product (only configured products are keys). No lock is held across the fetch, so
    /// one product's slow token holds up only that product's callers.
    tokens: crate::cache::Cache<String, (SecretString, i64), Error>,
}

crate::context::derefs_to_deps!(Momo);

impl Platform for Momo {
    fn build(deps: std::sync::Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            deps,
            settings: Settings::from_vars(vars)?,
            tokens: crate::cache::Cache::new(),
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

/// The shared access token of a MoMo product (`collection`): one per product, read from the
/// container cache on most requests. Sealed with the app's keys, so the operator's re-seal
/// after a key rotation reads it here too.
pub(crate) fn token_key(product: &str) -> Key {
    Key::single(&format!("token#{PLATFORM}"), product)
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    expires_in: Option<i64>,
}

/// A product's access token as the containers share it (`token#momo` / `<product>`, expiring
/// with the token).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CachedToken {
    /// The token, sealed to this item and attribute.
    #[serde(default)]
    token_sealed: String,
    /// When it expires, unix seconds.
    #[serde(default)]
    expires_at: i64,
}

impl Record for CachedToken {
    const NAME: &'static str = "MoMo cached token";
}

/// A valid access token for `product`: from the container, from the store, or — by one caller
/// across all containers — from MoMo.
pub async fn access_token(cx: &Momo, product: &str) -> Result<SecretString> {
    Ok(access_token_until(cx, product).await?.0)
}

/// [`access_token`] and when it expires (unix seconds): what token vending answers.
pub async fn access_token_until(cx: &Momo, product: &str) -> Result<(SecretString, i64)> {
    // Concurrent callers in this container share one fetch (the cache's single flight) instead
    // of each asking; the token is kept until it is within the margin of expiring.
    let (token, expires_at) = cx
        .tokens
        .get(&product.to_owned(), |_| async {
            match shared_token(cx, product).await {
                Ok((token, expires_at)) => {
                    let left = u64::try_from(expires_at - TOKEN_MARGIN - now()).unwrap_or(0);
                    Fetched::value((token, expires_at), Duration::from_secs(left))
                }
                Err(e) => Fetched::failed(e),
            }
        })
        .await?;
    Ok((token, expires_at))
}

async fn stored_token(cx: &Momo, product: &str) -> Result<Option<(SecretString, i64)>> {
    let key = token_key(product);
    let Some(item) = cx.store.get(&key).await? else {
        return Ok(None);
    };
    // A cached token that cannot be read is as good as none: a new one replaces it.
    let Ok(CachedToken {
        token_sealed,
        expires_at,
    }) = item.record::<CachedToken>()
    else {
        return Ok(None);
    };
    if expires_at - TOKEN_MARGIN <= now() {
        return Ok(None);
    }
    let keys = cx.secrets.app_keys().await?;
    match keys.open(
        &token_sealed,
        &format!("{}/{}", key.pk, key.sk),
        "token_sealed",
    ) {
        Ok(token) => Ok(Some((token, expires_at))),
        Err(_) => Ok(None),
    }
}

/// A valid access token for `product` other than `rejected`, which MoMo answered 401 to (the
/// proxy's retry): the container's copy is dropped, and a new token is fetched only while the
/// shared one is still the rejected one, under the same lease as any fetch, so that concurrent
/// callers who all got a 401 for one token cause one token call; a caller who finds a newer one
/// (a sibling's fetch) takes it.
pub async fn access_token_replacing(
    cx: &Momo,
    product: &str,
    rejected: &SecretString,
) -> Result<SecretString> {
    let key = product.to_owned();
    cx.tokens.forget(&key);
    let (token, _) = cx
        .tokens
        .get(&key, |_| async {
            match shared_token_other_than(cx, product, Some(rejected)).await {
                Ok((token, expires_at)) => {
                    let left = u64::try_from(expires_at - TOKEN_MARGIN - now()).unwrap_or(0);
                    Fetched::value((token, expires_at), Duration::from_secs(left))
                }
                Err(e) => Fetched::failed(e),
            }
        })
        .await?;
    Ok(token)
}

/// The Ocp-Apim-Subscription-Key of `product`, from MoMo's secret (the proxy sends it).
pub async fn product_subscription_key(cx: &Momo, product: &str) -> Result<SecretString> {
    let creds = cx.secrets.credentials(PLATFORM).await?;
    subscription_key(&creds, product).map(SecretString::from)
}

async fn shared_token(cx: &Momo, product: &str) -> Result<(SecretString, i64)> {
    shared_token_other_than(cx, product, None).await
}

async fn shared_token_other_than(
    cx: &Momo,
    product: &str,
    rejected: Option<&SecretString>,
) -> Result<(SecretString, i64)> {
    let patience = Patience::new(Duration::from_secs(20), Duration::from_millis(100));
    let token = token_key(product);
    let lease_key = Key::new(format!("lease#{}", token.pk), token.sk);
    // A stored token that MoMo refused counts as none.
    let usable = |found: Option<(SecretString, i64)>| {
        found.filter(|(t, _)| rejected.is_none_or(|r| r.expose_secret() != t.expose_secret()))
    };
    loop {
        if let Some(found) = usable(stored_token(cx, product).await?) {
            return Ok(found);
        }
        if let Some(lease) = Lease::try_take(cx.store.as_ref(), lease_key.clone()).await? {
            let outcome = match stored_token(cx, product).await.map(usable) {
                Ok(Some(found)) => Ok(found),
                Ok(None) => fetch_token(cx, product).await,
                Err(e) => Err(e),
            };
            lease.release(cx.store.as_ref()).await;
            return outcome;
        }
        if !patience.wait().await {
            return Err(Error::Unavailable(
                "MoMo's token is taking too long to obtain; try again".into(),
            ));
        }
    }
}

async fn fetch_token(cx: &Momo, product: &str) -> Result<(SecretString, i64)> {
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        creds.client_id,
        creds.client_secret.expose_secret()
    ));
    let url = format!("{}/{product}/token/", cx.settings.base_url);
    let resp = cx
        .http
        .client()?
        .post(&url)
        .header("Authorization", format!("Basic {basic}"))
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, product)?,
        )
        .header("Content-Length", "0")
        .send_to(PLATFORM, "token")
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
    let keys = cx.secrets.app_keys().await?;
    let cached = CachedToken {
        token_sealed: keys.seal(
            reply.access_token.expose_secret(),
            &format!("{}/{}", key.pk, key.sk),
            "token_sealed",
        )?,
        expires_at,
    };
    cx.store
        .put(
            &cached.to_item(key)?.expiring_at(expires_at),
            Condition::Always,
        )
        .await?;
    tracing::info!(product, "momo access token obtained");
    Ok((reply.access_token, expires_at))
}

// ---------------------------------------------------------------------------------------------
// Request to pay
//
// A payment is stored before MoMo is asked, so that MoMo's callback always finds it, and it is
// removed only when MoMo certainly did not take it (a definite refusal, or no connection at
// all). Any other failure of the request to pay (a timeout, a 5xx, a dropped connection, an
// answer that is not MoMo's) may hide a payment MoMo took: the payment stays PENDING with
// `submitted: "unknown"` and is confirmed with MoMo's status, by the caller's retry, by the
// callback, or by the reconciler. One Idempotency-Key sends at most one request to pay, so a
// retry never charges twice.

/// The store key of a transaction.
pub fn transaction_key(reference: &str) -> Key {
    Key::single(&format!("tx#{PLATFORM}"), reference)
}

/// How many partitions index the pending payments. One partition would take every payment's
/// creation and outcome (two index writes each) on one key, capping payments at ~500/s; the
/// entries are spread over this many fixed partitions by a hash of the reference, and the
/// reconciler queries each in turn (16 small Queries a run, ~16,000 index writes/s in all).
pub const PENDING_SHARDS: u32 = 16;

/// The partition of shard `shard` of the pending-payment index: `pending#momo#<00..15>`, each
/// in creation order, so that the reconciler finds the pending payments with
/// [`PENDING_SHARDS`] queries instead of a scan. An entry is written in the same transaction
/// as its payment and removed in the same transaction as its outcome.
pub fn pending_partition(shard: u32) -> String {
    format!("pending#{PLATFORM}#{shard:02}")
}

/// The shard of a payment's index entry: a hash of its reference, so that it is found again
/// from the reference alone.
fn pending_shard(reference: &str) -> u32 {
    let hash = crate::crypto::sha256(reference.as_bytes());
    u32::from(hash[0]) % PENDING_SHARDS
}

/// The index entry of a pending payment: `<created_at, 12 digits>#<reference>` in its shard,
/// so that the sort-key order is the creation order.
fn pending_key(created_at: i64, reference: &str) -> Key {
    Key::new(
        pending_partition(pending_shard(reference)),
        format!("{created_at:012}#{reference}"),
    )
}

/// The store key of the idempotency record of an externalId and an Idempotency-Key.
fn idempotency_key(external_id: &str, idempotency: &str) -> Key {
    Key::single(
        &format!("idem#{PLATFORM}"),
        &hex::encode(crate::crypto::sha256(
            format!("{external_id}\n{idempotency}").as_bytes(),
        )),
    )
}

/// A payment's status as MoMo spells it, and as it is stored: `PENDING` until MoMo's status
/// says `SUCCESSFUL` or `FAILED`. MoMo may answer other words for a payment still under way;
/// they are kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// `PENDING`: no outcome yet.
    Pending,
    /// `SUCCESSFUL`: final.
    Successful,
    /// `FAILED`: final (also what a payment MoMo never received is recorded as).
    Failed,
    /// Anything else MoMo says: not an outcome.
    Other(String),
}

impl Status {
    fn as_str(&self) -> &str {
        match self {
            Status::Pending => "PENDING",
            Status::Successful => "SUCCESSFUL",
            Status::Failed => "FAILED",
            Status::Other(s) => s,
        }
    }

    /// Whether this status is an outcome, recorded once.
    fn is_final(&self) -> bool {
        matches!(self, Status::Successful | Status::Failed)
    }

    /// The stored value, as a condition compares it.
    fn value(&self) -> Value {
        self.as_str().into()
    }
}

impl From<String> for Status {
    fn from(s: String) -> Self {
        match s.as_str() {
            "PENDING" => Status::Pending,
            "SUCCESSFUL" => Status::Successful,
            "FAILED" => Status::Failed,
            _ => Status::Other(s),
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Status::from)
    }
}

/// What a transaction's `submitted` attribute says of whether MoMo has the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Submitted {
    /// `sending`: stored before the request to pay goes out: MoMo may or may not have it (a
    /// sender that stopped in between leaves this), so it is read as [`Submitted::Unknown`].
    Sending,
    /// `accepted`: MoMo answered 202, or its status or callback knows the payment.
    Accepted,
    /// `unknown`: the request went out and its answer was lost, late, a 5xx or not MoMo's.
    Unknown,
    /// `not_received`: long after it was sent, MoMo's status still had no record of it:
    /// recorded FAILED.
    NotReceived,
}

impl Submitted {
    fn as_str(self) -> &'static str {
        match self {
            Submitted::Sending => "sending",
            Submitted::Accepted => "accepted",
            Submitted::Unknown => "unknown",
            Submitted::NotReceived => "not_received",
        }
    }

    /// The stored value, as a condition compares it.
    fn value(self) -> Value {
        self.as_str().into()
    }
}

impl Serialize for Submitted {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Any word but the three others reads as unknown: whether MoMo has it is not known.
impl<'de> Deserialize<'de> for Submitted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "sending" => Submitted::Sending,
            "accepted" => Submitted::Accepted,
            "not_received" => Submitted::NotReceived,
            _ => Submitted::Unknown,
        })
    }
}

/// A stored payment (`tx#momo` / `<reference id>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Transaction {
    /// Absent only from an item no version of the app wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    /// Absent from payments stored by a version that kept only those MoMo had accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    submitted: Option<Submitted>,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payer: Option<Party>,
    /// Unix seconds.
    #[serde(default)]
    created_at: i64,
    /// When the outcome was recorded ([`Outcome`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<i64>,
    /// MoMo's reason for a failure, as it gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    financial_transaction_id: Option<String>,
}

impl Record for Transaction {
    const NAME: &'static str = "MoMo transaction";
}

/// The attributes of a payment that recording its outcome sets, in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    status: Status,
    completed_at: i64,
    submitted: Submitted,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    financial_transaction_id: Option<String>,
}

impl Record for Outcome {
    const NAME: &'static str = "MoMo payment outcome";
}

/// The idempotency record of an externalId and an Idempotency-Key (`idem#momo`, expiring).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Idempotency {
    /// The payment it names.
    #[serde(default)]
    reference: String,
    /// The request's fingerprint; absent from records that predate them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_sha256: Option<String>,
}

impl Record for Idempotency {
    const NAME: &'static str = "MoMo idempotency record";
}

/// The index entry of a pending payment (`pending#momo#<shard>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PendingEntry {
    #[serde(default)]
    reference: String,
    #[serde(default)]
    created_at: i64,
}

impl Record for PendingEntry {
    const NAME: &'static str = "MoMo pending index entry";
}

/// The `submitted` of a transaction, [`Submitted::Sending`] read as unknown. A transaction
/// without one was stored by a version that kept only payments MoMo had accepted.
fn submitted_of(tx: &Transaction) -> Submitted {
    match tx.submitted {
        None | Some(Submitted::Accepted) => Submitted::Accepted,
        Some(Submitted::NotReceived) => Submitted::NotReceived,
        Some(_) => Submitted::Unknown,
    }
}

/// What the caller is told while MoMo's answer is unknown.
const UNCONFIRMED_MESSAGE: &str = "MoMo's answer to the request to pay was lost; the payment is \
     kept and is being confirmed with MoMo. Do not send it under a new Idempotency-Key: send the \
     same request with the same Idempotency-Key to learn its status; it is never sent twice";

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PaymentRequest {
    amount: String,
    currency: String,
    external_id: String,
    payer: Party,
    payer_message: Option<String>,
    payee_note: Option<String>,
}

#[derive(Deserialize, serde::Serialize, Clone, Debug)]
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
        crate::web::check_id("`externalId`", &self.external_id)?;
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

    /// SHA-256 (hex) of the request in canonical form: the parsed fields re-serialized in a
    /// fixed order, so that the same request spelled otherwise (key order, spacing, an absent
    /// or null optional field) has the same fingerprint and any changed value another.
    fn fingerprint(&self) -> Result<String> {
        let canonical = serde_json::to_vec(self)
            .map_err(|e| Error::Internal(format!("a payment request does not serialize: {e}")))?;
        Ok(hex::encode(crate::crypto::sha256(&canonical)))
    }
}

/// `POST /momo/requesttopay` (IAM-authorized): starts a collection and returns its reference.
///
/// Answers: `202 {"referenceId", "status": "PENDING", "submitted": "accepted"}` when MoMo took
/// it; `202 {..., "submitted": "unknown", "message"}` when MoMo's answer was lost and the
/// payment is being confirmed; `200 {"referenceId", "status", "duplicate": true, ...}` to a
/// repeat (same externalId and Idempotency-Key, same body); 422 to the same key with another
/// body; 400 (or 502 for the app's own credentials, 503 when MoMo limits requests) when MoMo
/// refused it, with nothing kept; 502 when MoMo could not be reached at all, nothing kept.
pub async fn request_to_pay(cx: &Momo, req: &Request) -> Result<Response<Body>> {
    web::require_content_type(req, "application/json")?;
    let body = web::body(req, MAX_BODY)?;
    let body = web::json_value(body, "the body is not a valid payment request: not JSON")?;
    let payment: PaymentRequest = serde_json::from_value(body).map_err(|e| {
        Error::BadRequest(format!(
            "the body is not a valid payment request: {}",
            short(&e)
        ))
    })?;
    payment.validate()?;
    // Two keys would name two payments; which one a proxy passes on is not agreed: refused.
    let idempotency = web::single_header(req.headers(), "idempotency-key")?.unwrap_or("");
    if idempotency.len() > 128 {
        return Err(Error::BadRequest(
            "the Idempotency-Key header is too long".into(),
        ));
    }
    let fingerprint = payment.fingerprint()?;

    // The same externalId and idempotency key name one payment, whoever asks again.
    let idem_key = idempotency_key(&payment.external_id, idempotency);
    if let Some(earlier) = cx.store.get(&idem_key).await? {
        return repeat(cx, &earlier, &fingerprint).await;
    }

    // Everything that can fail short of MoMo (token, credentials, callback URL) comes before
    // anything is stored, so that such a failure leaves nothing behind.
    let reference = uuid::Uuid::new_v4().to_string();
    let call = prepare_request_to_pay(cx, req, &reference, &payment).await?;

    let created_at = now();
    let idem = Idempotency {
        reference: reference.clone(),
        body_sha256: Some(fingerprint.clone()),
    }
    .to_item(idem_key.clone())?
    .expiring_at(now() + IDEMPOTENCY_TTL_SECONDS);
    let tx = Transaction {
        status: Some(Status::Pending),
        submitted: Some(Submitted::Sending),
        amount: payment.amount.clone(),
        currency: payment.currency.clone(),
        external_id: payment.external_id.clone(),
        payer: Some(payment.payer.clone()),
        created_at,
        ..Transaction::default()
    };
    let entry = PendingEntry {
        reference: reference.clone(),
        created_at,
    };
    let stored = cx
        .store
        .transact(&[
            Write::Put(idem, Condition::Absent),
            Write::Put(tx.to_item(transaction_key(&reference))?, Condition::Absent),
            Write::Put(
                entry.to_item(pending_key(created_at, &reference))?,
                Condition::Absent,
            ),
        ])
        .await;
    match stored {
        Ok(()) => {}
        Err(StoreError::Cancelled(failed)) if failed.contains(&0) => {
            // A concurrent request with the same key stored its payment first: that one is it.
            return match cx.store.get(&idem_key).await? {
                Some(earlier) => repeat(cx, &earlier, &fingerprint).await,
                None => Err(Error::refused(
                    Reason::IdempotencyConflict,
                    "a request with this Idempotency-Key was refused meanwhile; send it again",
                )),
            };
        }
        Err(StoreError::Unavailable(detail)) => {
            // The payment may or may not be stored; it is not sent either way, since MoMo's
            // callback and the caller's retry must find what was sent. Withdrawing what may
            // have landed lets the retry send it; should that fail too, the retry finds it
            // unconfirmed and the reconciler ends it as never received.
            withdraw(cx, &reference, created_at, &idem_key).await;
            return Err(StoreError::Unavailable(detail).into());
        }
        Err(e) => return Err(e.into()),
    }

    match send_request_to_pay(call).await {
        Sent::Accepted => {
            tracing::info!(reference, "momo request to pay sent");
            mark_submitted(cx, &reference, Submitted::Accepted).await;
            Ok(web::json(
                StatusCode::ACCEPTED,
                &json!({"referenceId": reference, "status": Status::Pending,
                        "submitted": Submitted::Accepted}),
            ))
        }
        Sent::NotTaken(e) => {
            // MoMo certainly does not have it: nothing of it is kept, so it can be sent again
            // (with the same key too, once the caller has fixed what MoMo refused).
            withdraw(cx, &reference, created_at, &idem_key).await;
            Err(e)
        }
        Sent::Unknown(why) => {
            tracing::warn!(
                reference,
                why,
                "momo request to pay unconfirmed; kept PENDING"
            );
            mark_submitted(cx, &reference, Submitted::Unknown).await;
            Ok(web::json(
                StatusCode::ACCEPTED,
                &json!({"referenceId": reference, "status": Status::Pending,
                        "submitted": Submitted::Unknown, "message": UNCONFIRMED_MESSAGE}),
            ))
        }
    }
}

/// The answer to a repeat of an earlier request: the same reference and what is known of it,
/// after asking MoMo's status if whether MoMo has it is unknown. Nothing is ever sent again.
async fn repeat(cx: &Momo, earlier: &Item, fingerprint: &str) -> Result<Response<Body>> {
    let earlier = earlier.record::<Idempotency>()?;
    // A record without a fingerprint predates them; its key alone decides.
    if earlier
        .body_sha256
        .as_deref()
        .is_some_and(|stored| stored != fingerprint)
    {
        return Err(Error::Unprocessable(
            "this Idempotency-Key was used with this externalId for a different payment \
             request; nothing was sent. A new payment needs a new Idempotency-Key"
                .into(),
        ));
    }
    let reference = earlier.reference.as_str();
    let key = transaction_key(reference);
    let Some(mut tx) = cx.store.get(&key).await? else {
        // The record and the payment are removed together, when MoMo refused the request.
        return Err(Error::refused(
            Reason::IdempotencyConflict,
            "the earlier request with this Idempotency-Key was refused by MoMo; send it again",
        ));
    };
    let record = tx.record::<Transaction>()?;
    if record.status == Some(Status::Pending) && submitted_of(&record) == Submitted::Unknown {
        match confirm(cx, &tx, now()).await {
            Ok(_) => tx = cx.store.get(&key).await?.unwrap_or(tx),
            Err(e) => tracing::warn!(reference, error = %e, "momo: could not confirm a repeat"),
        }
    }
    Ok(web::json(
        StatusCode::OK,
        &describe_payment(&tx.key.sk, &tx.record()?),
    ))
}

/// A stored payment as the caller sees it.
fn describe_payment(reference: &str, tx: &Transaction) -> Value {
    let status = tx.status.clone().unwrap_or(Status::Pending);
    let mut out = json!({"referenceId": reference, "status": status, "duplicate": true});
    if status == Status::Pending {
        let submitted = submitted_of(tx);
        out["submitted"] = submitted.value();
        if submitted == Submitted::Unknown {
            out["message"] = UNCONFIRMED_MESSAGE.into();
        }
    } else if let Some(reason) = tx.reason.as_ref().filter(|r| !r.is_null()) {
        out["reason"] = reason.clone();
    }
    out
}

/// Sets `submitted` of a payment still marked as being sent. Best effort: a payment left
/// [`Submitted::Sending`] is read as unknown and confirmed with MoMo later, which is safe.
async fn mark_submitted(cx: &Momo, reference: &str, value: Submitted) {
    let mut set = Map::new();
    set.insert("submitted".into(), value.value());
    let marked = cx
        .store
        .update(
            &transaction_key(reference),
            &set,
            Condition::AttrEquals("submitted".into(), Submitted::Sending.value()),
        )
        .await;
    match marked {
        Ok(()) | Err(StoreError::ConditionFailed) => {}
        Err(e) => tracing::warn!(reference, error = %e, "momo: could not mark the payment"),
    }
}

/// Removes a payment MoMo certainly does not have, its idempotency record and its index entry,
/// together and only while it is still marked as being sent. Best effort: what is left is
/// confirmed with MoMo later and ends FAILED as never received.
async fn withdraw(cx: &Momo, reference: &str, created_at: i64, idem_key: &Key) {
    let withdrawn = cx
        .store
        .transact(&[
            Write::Delete(
                transaction_key(reference),
                Condition::AttrEquals("submitted".into(), Submitted::Sending.value()),
            ),
            Write::Delete(
                idem_key.clone(),
                Condition::AttrEquals("reference".into(), reference.into()),
            ),
            Write::Delete(pending_key(created_at, reference), Condition::Always),
        ])
        .await;
    match withdrawn {
        Ok(()) | Err(StoreError::Cancelled(_)) => {}
        Err(e) => tracing::warn!(reference, error = %e, "momo: could not withdraw the payment"),
    }
}

fn short(e: &serde_json::Error) -> String {
    e.to_string().chars().take(120).collect()
}

/// The request to pay, ready to send: everything that can fail without MoMo is done.
async fn prepare_request_to_pay(
    cx: &Momo,
    req: &Request,
    reference: &str,
    payment: &PaymentRequest,
) -> Result<reqwest::RequestBuilder> {
    let token = access_token(cx, "collection").await?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let callback = cx.public_url(req, &format!("/momo/callback/{reference}"))?;
    let body = json!({
        "amount": payment.amount,
        "currency": payment.currency,
        "externalId": payment.external_id,
        "payer": {"partyIdType": payment.payer.party_id_type, "partyId": payment.payer.party_id},
        "payerMessage": payment.payer_message.clone().unwrap_or_default(),
        "payeeNote": payment.payee_note.clone().unwrap_or_default(),
    });
    Ok(cx
        .http
        .client()?
        .post(format!(
            "{}/collection/v1_0/requesttopay",
            cx.settings.base_url
        ))
        .bearer_auth(token.expose_secret())
        .header("X-Reference-Id", reference)
        .header("X-Target-Environment", &cx.settings.target_environment)
        .header("X-Callback-Url", callback)
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, "collection")?,
        )
        .json(&body))
}

/// What became of a request to pay.
enum Sent {
    /// MoMo answered 202.
    Accepted,
    /// MoMo certainly did not take it: the error to answer.
    NotTaken(Error),
    /// MoMo may have taken it: why we cannot tell.
    Unknown(String),
}

async fn send_request_to_pay(call: reqwest::RequestBuilder) -> Sent {
    let resp = match call.send_to(PLATFORM, "request_to_pay").await {
        Ok(resp) => resp,
        // No connection was made: not a byte of the request left.
        Err(e) if e.is_connect() || e.is_builder() => {
            tracing::warn!(error = %e, "momo request to pay could not connect");
            return Sent::NotTaken(Error::Upstream(
                "MoMo could not be reached; the payment was not sent and can be sent again".into(),
            ));
        }
        Err(e) => return Sent::Unknown(format!("MoMo {}", crate::http::describe(&e))),
    };
    let status = resp.status().as_u16();
    if status == 202 {
        return Sent::Accepted;
    }
    let detail: Value = resp.json().await.unwrap_or(Value::Null);
    let message = detail
        .get("message")
        .and_then(Value::as_str)
        .map(web::printable)
        .unwrap_or_default();
    tracing::warn!(status, message, "momo did not accept the request to pay");
    match refusal(status, &message) {
        Some(e) => Sent::NotTaken(e),
        None => Sent::Unknown(format!("MoMo answered {status}")),
    }
}

/// The error for a request-to-pay answer that says MoMo did not take the payment, or `None`
/// when MoMo may have taken it. Only a 4xx is a refusal, and not all of them: 408 is a gateway
/// giving up on a request it may have passed on, and 409 means MoMo already has this reference
/// id, that is, an earlier attempt of this very request reached it.
fn refusal(status: u16, message: &str) -> Option<Error> {
    match status {
        408 | 409 => None,
        401 | 403 => Some(Error::Upstream(format!(
            "MoMo refused the app's credentials ({status}); the payment was not taken"
        ))),
        429 => Some(Error::Unavailable(
            "MoMo is limiting requests; the payment was not taken; try again shortly".into(),
        )),
        400..=499 => Some(Error::BadRequest(format!(
            "MoMo refused the payment request ({status}): {message}"
        ))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Confirmation with MoMo's status: the callback, a repeat, the reconciler

#[derive(Deserialize)]
struct StatusReply {
    status: Status,
    reason: Option<Value>,
    #[serde(rename = "financialTransactionId")]
    financial_transaction_id: Option<String>,
}

/// What confirming a PENDING payment with MoMo found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirmed {
    /// This call recorded the outcome.
    Recorded,
    /// Another caller (callback, repeat, reconciler) recorded an outcome first.
    AlreadyRecorded,
    /// MoMo has the payment, still pending.
    Pending,
    /// MoMo has no record of it, but it is too recent to conclude that it never arrived.
    NotYetKnown,
}

/// How old a payment must be before MoMo's "no such payment" means it never arrived: the
/// reconciler's age, and at least twice the HTTP timeout, past any request still in flight.
fn never_received_after(cx: &Momo) -> i64 {
    let in_flight = i64::try_from(cx.config.http_timeout.as_secs()).unwrap_or(i64::MAX);
    cx.settings.reconcile_after.max(in_flight.saturating_mul(2))
}

/// Asks MoMo's status of a PENDING payment and records a final one, as of `at` (unix seconds).
async fn confirm(cx: &Momo, tx: &Item, at: i64) -> Result<(Confirmed, Status)> {
    let reference = tx.key.sk.as_str();
    let stored = tx.record::<Transaction>()?;
    let Some(reply) = fetch_status(cx, reference).await? else {
        if submitted_of(&stored) == Submitted::Accepted {
            // MoMo said 202 once: its "no such payment" is MoMo's mistake, not an outcome.
            return Err(Error::Upstream(format!(
                "MoMo's status has no record of payment {reference}, which it accepted"
            )));
        }
        if at - stored.created_at < never_received_after(cx) {
            return Ok((Confirmed::NotYetKnown, Status::Pending));
        }
        let reason = json!({"code": "NOT_RECEIVED",
                            "message": "MoMo has no record of this request to pay"});
        let recorded = record(
            cx,
            tx,
            Status::Failed,
            Some(reason),
            None,
            Submitted::NotReceived,
        );
        return Ok((recorded.await?, Status::Failed));
    };
    if reply.status.is_final() {
        let recorded = record(
            cx,
            tx,
            reply.status.clone(),
            reply.reason,
            reply.financial_transaction_id,
            Submitted::Accepted,
        );
        return Ok((recorded.await?, reply.status));
    }
    if submitted_of(&stored) != Submitted::Accepted {
        let mut set = Map::new();
        set.insert("submitted".into(), Submitted::Accepted.value());
        let marked = cx
            .store
            .update(
                &tx.key,
                &set,
                Condition::AttrEquals("status".into(), Status::Pending.value()),
            )
            .await;
        match marked {
            Ok(()) | Err(StoreError::ConditionFailed) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((Confirmed::Pending, Status::Pending))
}

/// Records a payment's outcome once: the transition from PENDING, and the removal of its index
/// entry, in one transaction. Of concurrent recorders (callback, repeats, reconcilers) exactly
/// one succeeds; the others find the status no longer PENDING and change nothing.
async fn record(
    cx: &Momo,
    tx: &Item,
    status: Status,
    reason: Option<Value>,
    financial_transaction_id: Option<String>,
    submitted: Submitted,
) -> Result<Confirmed> {
    let set = Outcome {
        status: status.clone(),
        completed_at: now(),
        submitted,
        reason,
        financial_transaction_id,
    }
    .to_attrs()?;
    let stored = tx.record::<Transaction>()?;
    let created_at = stored.created_at;
    let reference = tx.key.sk.as_str();
    // The payment's event, in the same transaction: whichever recorder wins writes it, once.
    let event = payment_event(reference, &stored, &set)?;
    let outcome = cx
        .store
        .transact(&[
            Write::Update {
                key: tx.key.clone(),
                set,
                condition: Condition::AttrEquals("status".into(), Status::Pending.value()),
            },
            Write::Delete(pending_key(created_at, reference), Condition::Always),
            event.write()?,
        ])
        .await;
    match outcome {
        Ok(()) => {
            tracing::info!(reference, status = status.as_str(), "momo payment recorded");
            Ok(Confirmed::Recorded)
        }
        Err(StoreError::Cancelled(_)) => Ok(Confirmed::AlreadyRecorded),
        Err(e) => Err(e.into()),
    }
}

/// The `payment.succeeded` or `payment.failed` event of a payment reaching its final status
/// (`outcome`, the attributes recording it sets): the payment as the app knows it, never the
/// payer. Its id is derived from the reference, so a payment has one outcome event whoever
/// records it.
fn payment_event(reference: &str, tx: &Transaction, outcome: &Map<String, Value>) -> Result<Event> {
    let outcome = Outcome::from_attrs(outcome)?;
    let name = match outcome.status {
        Status::Successful => events::names::PAYMENT_SUCCEEDED,
        _ => events::names::PAYMENT_FAILED,
    };
    let data = json!({
        "reference_id": reference,
        "status": outcome.status,
        "amount": tx.amount,
        "currency": tx.currency,
        "external_id": tx.external_id,
        "created_at": tx.created_at,
        "completed_at": outcome.completed_at,
        "reason": outcome.reason,
        "financial_transaction_id": outcome.financial_transaction_id,
        "submitted": outcome.submitted,
    });
    Ok(Event::derived(PLATFORM, name, reference, data, reference))
}

/// MoMo's status of a payment; `None` when MoMo answers that it has no such payment (404 with
/// its `RESOURCE_NOT_FOUND`). A 404 without that code (a wrong base URL, say) is an error, so
/// that a misconfiguration never turns payments into "never received".
async fn fetch_status(cx: &Momo, reference: &str) -> Result<Option<StatusReply>> {
    let token = access_token(cx, "collection").await?;
    let creds = cx.secrets.credentials(PLATFORM).await?;
    let resp = cx
        .http
        .client()?
        .get(format!(
            "{}/collection/v1_0/requesttopay/{reference}",
            cx.settings.base_url
        ))
        .bearer_auth(token.expose_secret())
        .header("X-Target-Environment", &cx.settings.target_environment)
        .header(
            "Ocp-Apim-Subscription-Key",
            subscription_key(&creds, "collection")?,
        )
        .send_to(PLATFORM, "status")
        .await
        .map_err(|e| Error::Upstream(format!("MoMo's status {}", crate::http::describe(&e))))?;
    let status = resp.status().as_u16();
    if status == 404 {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if body.get("code").and_then(Value::as_str) == Some("RESOURCE_NOT_FOUND") {
            return Ok(None);
        }
        return Err(Error::Upstream(
            "MoMo's status answered 404 without naming the payment unknown".into(),
        ));
    }
    if !resp.status().is_success() {
        return Err(Error::Upstream(format!("MoMo's status answered {status}")));
    }
    resp.json()
        .await
        .map(Some)
        .map_err(|_| Error::Upstream("MoMo's status answered unreadably".into()))
}

// ---------------------------------------------------------------------------------------------
// Callback

/// `PUT|POST /momo/callback/{referenceId}`: the outcome, confirmed by MoMo's status reply.
pub async fn callback(cx: &Momo, req: &Request) -> Result<Response<Body>> {
    let answer = confirm_callback(cx, req).await;
    crate::metrics::webhook(PLATFORM, answer.as_ref().map(|(seen, _)| *seen));
    let (_, status) = answer?;
    Ok(web::json(
        StatusCode::OK,
        &json!({"ok": true, "status": status}),
    ))
}

/// A callback's payment status, and whether it was recorded already (a duplicate: the callback
/// changes nothing).
async fn confirm_callback(cx: &Momo, req: &Request) -> Result<(bool, Status)> {
    let reference = req
        .uri()
        .path()
        .strip_prefix("/momo/callback/")
        .filter(|r| !r.contains('/'))
        .ok_or_else(|| Error::refused(Reason::UnknownTenant, "no such callback"))?;
    let reference = uuid::Uuid::parse_str(reference)
        .map_err(|_| Error::refused(Reason::UnknownTenant, "no such payment"))?
        .hyphenated()
        .to_string();
    let body = web::body(req, MAX_BODY)?;
    let hint: Map<String, Value> = web::json_body(body, "the callback body is not a JSON object")?;
    let tx = cx
        .store
        .get(&transaction_key(&reference))
        .await?
        .ok_or_else(|| Error::refused(Reason::UnknownTenant, "no such payment"))?;
    let current = tx
        .record::<Transaction>()?
        .status
        .unwrap_or(Status::Pending);
    if current != Status::Pending {
        return Ok((true, current));
    }
    tracing::info!(reference, hint = ?hint.get("status"), "momo callback; confirming with MoMo");
    let (_, status) = confirm(cx, &tx, now()).await?;
    Ok((false, status))
}

// ---------------------------------------------------------------------------------------------
// Reconciler (the scheduled `momo-reconcile` function, and the local server's timer)

/// How long one reconciler run keeps starting status checks; what is left waits for the next
/// run, so that a run ends well within its function's timeout.
const RECONCILE_BUDGET: Duration = Duration::from_secs(60);

/// The reconciler's function (template.yaml, functions/momo-reconcile.rs), as its metrics name it.
pub const RECONCILER: &str = "momo-reconcile";

/// What one reconciler run did. `seen` and `left` are the backlog: the pending index's entries
/// the run read (every shard's, young ones included) and those still pending after it (too
/// young, still pending at MoMo, unconfirmed, or not reached before the budget ran out), so a
/// gauge of `left` shows payments waiting on an outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// Entries of the pending index read (payments pending when the run began).
    pub seen: usize,
    /// Pending payments old enough that were confirmed with MoMo's status.
    pub checked: usize,
    /// Outcomes this run recorded.
    pub recorded: usize,
    /// Payments still pending at MoMo, or not yet known there.
    pub pending: usize,
    /// Checks that failed (MoMo or the store unreachable); the next run tries again.
    pub failed: usize,
    /// Index entries removed because their payment had ended or was gone.
    pub stale: usize,
    /// Entries still in the index after the run: the backlog the next run starts from.
    pub left: usize,
}

/// Confirms every payment still PENDING [`Settings::reconcile_after`] after it was created,
/// since MoMo's callbacks can be lost and answers to requests to pay can be: MoMo's status
/// decides, recorded once as the callback records it.
pub async fn reconcile(cx: &Momo) -> Result<Reconciled> {
    // Boxed: the run's future nests every platform and store call it makes, deeper than the
    // compiler's type-layout limit lets a caller (a spawned task, the runtime) embed it.
    let run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reconciled>> + Send + '_>> =
        Box::pin(reconcile_at(cx, now()));
    run.await
}

/// [`reconcile`] as of `at` (unix seconds): what is old enough and what counts as never
/// received are judged against it.
pub async fn reconcile_at(cx: &Momo, at: i64) -> Result<Reconciled> {
    let started = Instant::now();
    let cutoff = at.saturating_sub(cx.settings.reconcile_after);
    let mut run = Reconciled::default();
    // Shard by shard, each in creation order. The first shard turns with the time of the run, so
    // that a backlog in one shard that outlasts the run's budget cannot starve the others.
    let first = u32::try_from(at.rem_euclid(i64::from(PENDING_SHARDS))).unwrap_or(0);
    // Every entry is read and counted (the backlog), also once the run is out of time or past
    // the young end of a shard: a shard's entries come in one query either way.
    let mut out_of_time = false;
    for n in 0..PENDING_SHARDS {
        let shard = (first + n) % PENDING_SHARDS;
        let mut young = false;
        for item in cx.store.query(&pending_partition(shard)).await? {
            run.seen += 1;
            if young || out_of_time {
                run.left += 1;
                continue;
            }
            // An entry that does not decode is left for a look by hand; the run goes on.
            let entry = match item.record::<PendingEntry>() {
                Ok(entry) => entry,
                Err(e) => {
                    run.failed += 1;
                    run.left += 1;
                    tracing::warn!(error = %e, "momo reconcile: an index entry is unreadable");
                    continue;
                }
            };
            if entry.created_at > cutoff {
                // In creation order: the rest of this shard are younger still.
                young = true;
                run.left += 1;
                continue;
            }
            if started.elapsed() > RECONCILE_BUDGET {
                tracing::warn!("momo reconcile: out of time; the rest waits for the next run");
                out_of_time = true;
                run.left += 1;
                continue;
            }
            let reference = entry.reference;
            let tx = match cx.store.get(&transaction_key(&reference)).await {
                Ok(tx) => tx,
                Err(e) => {
                    run.failed += 1;
                    run.left += 1;
                    tracing::warn!(reference, error = %e, "momo reconcile: the payment is unreadable");
                    continue;
                }
            };
            let pending = match tx.as_ref().map(Item::record::<Transaction>) {
                Some(Ok(record)) => record.status == Some(Status::Pending),
                Some(Err(e)) => {
                    run.failed += 1;
                    run.left += 1;
                    tracing::warn!(reference, error = %e, "momo reconcile: the payment is unreadable");
                    continue;
                }
                None => false,
            };
            let Some(tx) = tx.filter(|_| pending) else {
                if let Err(e) = cx.store.take(&item.key).await {
                    tracing::warn!(reference, error = %e, "momo reconcile: a stale entry stays");
                }
                run.stale += 1;
                continue;
            };
            run.checked += 1;
            match confirm(cx, &tx, at).await {
                Ok((Confirmed::Recorded, _)) => run.recorded += 1,
                Ok((Confirmed::AlreadyRecorded, _)) => {}
                Ok((Confirmed::Pending | Confirmed::NotYetKnown, _)) => {
                    run.pending += 1;
                    run.left += 1;
                }
                Err(e) => {
                    run.failed += 1;
                    run.left += 1;
                    tracing::warn!(reference, error = %e, "momo reconcile: could not confirm");
                }
            }
        }
    }
    // What is still unresolved of what was old enough to confirm: every run says it, 0 included,
    // so that the gauge has a point per run.
    crate::metrics::value(
        crate::metrics::names::MOMO_PENDING_BACKLOG,
        crate::metrics::Unit::Count,
        (run.pending + run.failed) as f64,
        PLATFORM,
        &[],
        &[],
    );
    if run != Reconciled::default() {
        tracing::info!(
            seen = run.seen,
            checked = run.checked,
            recorded = run.recorded,
            pending = run.pending,
            failed = run.failed,
            stale = run.stale,
            left = run.left,
            "momo reconcile run"
        );
    }
    Ok(run)
}

/// The `momo-reconcile` Lambda function: every scheduled event (whatever it holds) is one
/// [`reconcile`] run, answered with its [`Reconciled`] counts; a run that cannot read the index
/// fails, and the next scheduled run tries again.
pub async fn run_reconciler() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    crate::metrics::as_function(RECONCILER, || crate::metrics::cold_start(PLATFORM));
    let cx = std::sync::Arc::new(crate::context::from_env::<Momo>().await?);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: lambda_runtime::LambdaEvent<Value>| {
            let cx = cx.clone();
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(crate::metrics::in_function(RECONCILER, async move {
                    reconcile(&cx).await.map_err(lambda_runtime::Error::from)
                }));
            run
        },
    ))
    .await
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
    cx: &Momo,
    subscription_key: &str,
    callback_host: &str,
) -> Result<Provisioned> {
    let base = &cx.settings.base_url;
    let mut secret = cx.secrets.raw_json(PLATFORM).await.unwrap_or_default();
    if let Some(user) = secret
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        let has_key = secret
            .get("client_secret")
            .and_then(Value::as_str)
            .is_some_and(|k| !k.is_empty());
        let resp = cx
            .http
            .client()?
            .get(format!("{base}/v1_0/apiuser/{user}"))
            .header("Ocp-Apim-Subscription-Key", subscription_key)
            .send_to(PLATFORM, "provisioning")
            .await
            .map_err(|e| Error::Upstream(format!("MoMo {}", crate::http::describe(&e))))?;
        if has_key && resp.status().is_success() {
            return Ok(Provisioned::AlreadyWorking(user.to_owned()));
        }
    }
    let user = uuid::Uuid::new_v4().to_string();
    let created = cx
        .http
        .client()?
        .post(format!("{base}/v1_0/apiuser"))
        .header("X-Reference-Id", &user)
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .json(&json!({ "providerCallbackHost": callback_host }))
        .send_to(PLATFORM, "provisioning")
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
    let key_resp = cx
        .http
        .client()?
        .post(format!("{base}/v1_0/apiuser/{user}/apikey"))
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .header("Content-Length", "0")
        .send_to(PLATFORM, "provisioning")
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
    let check = cx
        .http
        .client()?
        .get(format!("{base}/v1_0/apiuser/{user}"))
        .header("Ocp-Apim-Subscription-Key", subscription_key)
        .send_to(PLATFORM, "provisioning")
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
    cx.secrets.write_json(PLATFORM, &secret).await?;
    Ok(Provisioned::Created(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definite_refusals_remove_a_payment() {
        for status in [200, 201, 204, 302, 408, 409, 500, 502, 503, 504] {
            assert!(refusal(status, "").is_none(), "{status}");
        }
        for (status, answer) in [(400, 400), (404, 400), (422, 400), (401, 502), (403, 502)] {
            let e = refusal(status, "m").unwrap_or_else(|| panic!("{status} is a refusal"));
            assert_eq!(e.status().as_u16(), answer, "{status}");
        }
        assert_eq!(refusal(429, "").map(|e| e.status().as_u16()), Some(503));
    }

    #[test]
    fn the_fingerprint_is_of_the_request_not_its_spelling() {
        let parse = |s: &str| serde_json::from_str::<PaymentRequest>(s).unwrap();
        let a = parse(
            r#"{"amount":"1","currency":"EUR","externalId":"x",
                "payer":{"partyIdType":"MSISDN","partyId":"123456"}}"#,
        );
        let b = parse(
            r#"{ "payer": {"partyId": "123456", "partyIdType": "MSISDN"}, "payeeNote": null,
                 "externalId": "x", "currency": "EUR", "amount": "1" }"#,
        );
        let c = parse(
            r#"{"amount":"1","currency":"EUR","externalId":"x","payeeNote":"",
                "payer":{"partyIdType":"MSISDN","partyId":"123456"}}"#,
        );
        assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_ne!(a.fingerprint().unwrap(), c.fingerprint().unwrap());
    }

    #[test]
    fn statuses_and_submitted_are_stored_as_momos_words() {
        for (word, status) in [
            ("PENDING", Status::Pending),
            ("SUCCESSFUL", Status::Successful),
            ("FAILED", Status::Failed),
            ("ONGOING", Status::Other("ONGOING".into())),
        ] {
            assert_eq!(serde_json::to_value(&status).unwrap(), json!(word));
            assert_eq!(
                serde_json::from_value::<Status>(json!(word)).unwrap(),
                status
            );
        }
        for (word, submitted) in [
            ("sending", Submitted::Sending),
            ("accepted", Submitted::Accepted),
            ("unknown", Submitted::Unknown),
            ("not_received", Submitted::NotReceived),
        ] {
            assert_eq!(serde_json::to_value(submitted).unwrap(), json!(word));
            assert_eq!(
                serde_json::from_value::<Submitted>(json!(word)).unwrap(),
                submitted
            );
        }
        assert_eq!(
            serde_json::from_value::<Submitted>(json!("later")).unwrap(),
            Submitted::Unknown
        );
    }

    #[test]
    fn a_transaction_keeps_its_attribute_names() {
        let tx = Transaction {
            status: Some(Status::Pending),
            submitted: Some(Submitted::Sending),
            amount: "10.50".into(),
            currency: "EUR".into(),
            external_id: "x".into(),
            payer: Some(Party {
                party_id_type: "MSISDN".into(),
                party_id: "123456".into(),
            }),
            created_at: 7,
            ..Transaction::default()
        };
        assert_eq!(
            Value::Object(tx.to_attrs().unwrap()),
            json!({"status": "PENDING", "submitted": "sending", "amount": "10.50",
                   "currency": "EUR", "external_id": "x",
                   "payer": {"partyIdType": "MSISDN", "partyId": "123456"}, "created_at": 7})
        );
        // A payment stored by a version without `submitted` reads as accepted.
        let old = Item::new(
            transaction_key("r"),
            json!({"status": "PENDING", "amount": "1"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let old: Transaction = old.record().unwrap();
        assert_eq!(submitted_of(&old), Submitted::Accepted);
        assert_eq!(old.created_at, 0);
        let outcome = Outcome {
            status: Status::Failed,
            completed_at: 9,
            submitted: Submitted::NotReceived,
            reason: None,
            financial_transaction_id: None,
        };
        assert_eq!(
            Value::Object(outcome.to_attrs().unwrap()),
            json!({"status": "FAILED", "completed_at": 9, "submitted": "not_received"})
        );
    }

    #[test]
    fn pending_entries_sort_in_creation_order() {
        let (a, b) = (pending_key(999, "z"), pending_key(1000, "a"));
        assert!(a.sk < b.sk, "{} {}", a.sk, b.sk);
        assert_eq!(b.sk, "000000001000#a");
    }
}
