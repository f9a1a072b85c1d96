//! OpenID Connect id_token verification, shared by the OIDC platforms.
//!
//! An id_token is accepted only if: its header names RS256 (never `none`, never an HMAC
//! algorithm, so a public key can never be used as an HMAC secret) and a `kid`; the key with that
//! `kid` in the platform's JWKS verifies the signature; `iss` is one of the allowed issuers and
//! `aud` one of the allowed audiences; `exp`, `nbf` and `iat` hold within a small skew; `nonce`
//! equals the one we sent; and `c_hash`/`at_hash`, when present, match the code and access token
//! that came with it.
//!
//! The JWKS is fetched once per container and cached; a token with an unknown `kid` (the platform
//! rotated its keys) causes one refetch, rate-limited so that made-up kids cannot turn us into a
//! load generator against the platform.

use crate::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a fetched JWKS is trusted without refetching.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// After a refetch that did not find a kid, the least time before another.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// A platform's signing keys, fetched from `url` and cached.
pub struct Jwks {
    url: String,
    state: tokio::sync::Mutex<JwksState>,
}

#[derive(Default)]
struct JwksState {
    keys: Option<(Instant, Arc<JwkSet>)>,
    /// When a refetch last failed to find the kid asked for.
    last_miss: Option<Instant>,
}

impl Jwks {
    /// Keys served at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            state: tokio::sync::Mutex::new(JwksState::default()),
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<JwkSet> {
        let resp = http.get(&self.url).send().await.map_err(|e| {
            Error::Upstream(format!(
                "the platform's signing keys could not be fetched ({})",
                crate::http::describe(&e)
            ))
        })?;
        if !resp.status().is_success() {
            return Err(Error::Upstream(format!(
                "the platform's signing keys answered {}",
                resp.status().as_u16()
            )));
        }
        resp.json()
            .await
            .map_err(|_| Error::Upstream("the platform's signing keys are unreadable".into()))
    }

    /// The decoding key for `kid`: from the cache, or after one (rate-limited) refetch.
    pub async fn key(&self, http: &reqwest::Client, kid: &str) -> Result<DecodingKey> {
        let mut state = self.state.lock().await;
        let cached = state
            .keys
            .as_ref()
            .filter(|(at, _)| at.elapsed() < JWKS_TTL)
            .map(|(_, set)| set.clone());
        if let Some(jwk) = cached.as_ref().and_then(|set| set.find(kid)) {
            return decoding_key(jwk);
        }
        // A rotation is followed at once; made-up kids cause at most one refetch per interval.
        let may_refetch = cached.is_none()
            || state
                .last_miss
                .is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL);
        if may_refetch {
            let set = Arc::new(self.fetch(http).await?);
            state.keys = Some((Instant::now(), set.clone()));
            if let Some(jwk) = set.find(kid) {
                return decoding_key(jwk);
            }
            state.last_miss = Some(Instant::now());
        }
        Err(Error::Unauthorized(
            "the id_token is signed with a key the platform does not publish".into(),
        ))
    }
}

fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk) -> Result<DecodingKey> {
    DecodingKey::from_jwk(jwk)
        .map_err(|_| Error::Upstream("the platform published an unusable signing key".into()))
}

/// What an id_token must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// Allowed `iss` values.
    pub issuers: &'a [String],
    /// Allowed `aud` values.
    pub audiences: &'a [String],
    /// The nonce we sent, if the token must carry it.
    pub nonce: Option<&'a str>,
    /// The code that came with the token: checked against `c_hash` when present.
    pub code: Option<&'a str>,
    /// The access token that came with the token: checked against `at_hash` when present.
    pub access_token: Option<&'a str>,
    /// Allowed clock skew in seconds.
    pub skew: u64,
}

/// `base64url(left half of SHA-256(value))`: the `c_hash`/`at_hash` of an RS256 token.
pub fn half_hash(value: &str) -> String {
    let digest = crate::crypto::sha256(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn refused(what: &str) -> Error {
    Error::Unauthorized(format!("the id_token {what}"))
}

/// Reads the header's `alg` before anything else, so that `none` and HMAC algorithms (which
/// jsonwebtoken's header type may not even represent) are named in the refusal.
pub fn check_alg(token: &str) -> Result<()> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused("is not a well-formed JWT"));
    };
    let header: serde_json::Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| refused("is not a well-formed JWT"))?;
    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Ok(()),
        _ => Err(refused("is not signed with RS256")),
    }
}

/// Verifies `token` and returns its claims: [`key_id`], the platform's key for it, then
/// [`verify_with_key`].
pub async fn verify_id_token(
    http: &reqwest::Client,
    jwks: &Jwks,
    token: &str,
    expect: &Expect<'_>,
) -> Result<serde_json::Map<String, Value>> {
    let kid = key_id(token)?;
    let key = jwks.key(http, &kid).await?;
    check_signature_and_claims(token, &key, expect)
}

/// The pre-checks made before any key is fetched: a well-formed RS256 JWT that names its key.
/// Returns that key id.
pub fn key_id(token: &str) -> Result<String> {
    check_alg(token)?;
    let header =
        jsonwebtoken::decode_header(token).map_err(|_| refused("is not a well-formed JWT"))?;
    if header.alg != Algorithm::RS256 {
        return Err(refused("is not signed with RS256"));
    }
    header.kid.ok_or_else(|| refused("names no key (kid)"))
}

/// Verifies `token` under `key`, as [`verify_id_token`] does once it has the key: the
/// pre-checks of [`key_id`], then the signature and the claims against `expect`, now.
pub fn verify_with_key(
    token: &str,
    key: &DecodingKey,
    expect: &Expect<'_>,
) -> Result<serde_json::Map<String, Value>> {
    key_id(token)?;
    check_signature_and_claims(token, key, expect)
}

/// The signature and the claims, for a token that passed [`key_id`].
fn check_signature_and_claims(
    token: &str,
    key: &DecodingKey,
    expect: &Expect<'_>,
) -> Result<serde_json::Map<String, Value>> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(expect.issuers);
    validation.set_audience(expect.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = expect.skew;
    let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            match e.kind() {
                InvalidSignature => refused("signature does not verify"),
                ExpiredSignature => refused("has expired"),
                ImmatureSignature => refused("is not valid yet (nbf)"),
                InvalidIssuer => refused("comes from an issuer that is not allowed"),
                InvalidAudience => refused("is for another audience"),
                MissingRequiredClaim(c) => refused(&format!("lacks the `{c}` claim")),
                _ => refused("is invalid"),
            }
        })?;
    let claims = data.claims;

    let now = crate::store::now();
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| refused("lacks the `iat` claim"))?;
    if iat > now + expect.skew as i64 {
        return Err(refused("was issued in the future (iat)"));
    }
    if let Some(nonce) = expect.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(refused("does not carry this sign-in's nonce"));
    }
    for (claim, value) in [("c_hash", expect.code), ("at_hash", expect.access_token)] {
        if let (Some(value), Some(hash)) = (value, claims.get(claim))
            && hash.as_str() != Some(half_hash(value).as_str())
        {
            return Err(refused(&format!("`{claim}` does not match")));
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes carried by the Haravan document's own tokens (PLATFORMS.md).
    #[test]
    fn haravan_document_hash_vectors() {
        assert_eq!(
            half_hash("c309cc6a97e7da821975d2440645892a95f13ce8e06af81ecffe5ed9db8fe7a3"),
            "FoWHTKQNtIaQVwEJX9mPLA"
        );
        assert_eq!(
            half_hash("86f6ab839b301903cc6223dbe236aaa874fa5aa882b8d3d121ba91f8ce660f35"),
            "yUpphhMynvTIJVWKsJC-Kw"
        );
    }
}
