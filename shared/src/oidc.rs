//! OpenID Connect id_token verification, shared by the OIDC platforms.
//!
//! An id_token is accepted only if: its header names RS256 (never `none`, never an HMAC
//! algorithm, so a public key can never be used as an HMAC secret) and a `kid`; the key with that
//! `kid` in the platform's JWKS verifies the signature; `iss` is one of the allowed issuers and
//! `aud` one of the allowed audiences; when `aud` names several, `azp` is present and is one of
//! ours, and an `azp` that is present always is (OIDC Core 2, 3.1.3.7); `exp`, `nbf` and `iat`
//! hold within a small skew; `nonce` equals the one we sent; `c_hash` is present and matches the
//! code when the token came with one in the front channel (the hybrid flow's `code id_token`
//! REQUIRES it, 3.3.2.11: without it a code could be swapped under a genuine id_token); and
//! `at_hash`, when present, matches the access token that came with it.
//!
//! The token endpoint's id_token of a hybrid flow must name the same issuer, subject and
//! audience as the front channel's (3.3.3.6): [`same_identity`].
//!
//! The JWKS is fetched once per container and cached; a token with an unknown `kid` (the platform
//! rotated its keys) causes one refetch, rate-limited so that made-up kids cannot turn us into a
//! load generator against the platform. A fetch that fails is rate-limited too: while the key
//! endpoint is down, every sign-in would otherwise fetch again, a storm against a platform that
//! is already struggling.
//!
//! [`Discovery`] reads an issuer's metadata (OpenID Connect Discovery 1.0) once per container,
//! cached likewise, for its authorization, token and key endpoints; a platform's settings
//! override what it says.

use crate::cache::{Cache, Fetched, Origin};
use crate::config::{ConfigError, Vars};
use crate::error::{Error, Reason, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fetched JWKS is trusted without refetching.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// After a refetch that did not find a kid, the least time before another.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// After a fetch that failed, the least time before another: requests in between are refused
/// at once (503) without calling the platform.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// How long fetched issuer metadata is trusted without refetching.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// A platform's signing keys, fetched from their URL and cached.
pub struct Jwks {
    source: KeySource,
    /// The key set (one key, `()`): kept for [`JWKS_TTL`]; a failed fetch is kept for
    /// [`RETRY_AFTER_FAILURE`], which is the failure rate limit.
    keys: Cache<(), Arc<JwkSet>, Error>,
    /// When a refetch for an unknown kid was last made: at most one per [`REFETCH_INTERVAL`].
    /// A std mutex, held only to read and set it.
    last_miss: Mutex<Option<Instant>>,
}

/// Where the keys are: a configured URL, or the `jwks_uri` of the issuer's metadata.
enum KeySource {
    Url(String),
    Discovered(Arc<Discovery>),
}

impl Jwks {
    /// Keys served at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            source: KeySource::Url(url.into()),
            keys: Cache::new(),
            last_miss: Mutex::new(None),
        }
    }

    /// Keys served at the `jwks_uri` of the issuer's metadata.
    pub fn discovered(discovery: Arc<Discovery>) -> Self {
        Self {
            source: KeySource::Discovered(discovery),
            keys: Cache::new(),
            last_miss: Mutex::new(None),
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<JwkSet> {
        let url = match &self.source {
            KeySource::Url(url) => url.clone(),
            KeySource::Discovered(d) => d.metadata(http).await?.jwks_uri.clone(),
        };
        crate::http::get_json(http, &url, "jwks", "the platform's signing keys").await
    }

    /// The key set: cached, or fetched by this caller or one it waits for. A failure a
    /// moment ago (kept by the cache) is refused at once, without calling the platform.
    async fn key_set(&self, http: &reqwest::Client) -> (Result<Arc<JwkSet>>, Origin) {
        let (got, origin) = self
            .keys
            .get_with_origin(&(), |_| async {
                match self.fetch(http).await {
                    Ok(set) => Fetched::value(Arc::new(set), JWKS_TTL),
                    Err(e) => Fetched::failed_for(e, RETRY_AFTER_FAILURE),
                }
            })
            .await;
        let got = match (got, origin) {
            (Err(_), Origin::Cached) => Err(Error::Unavailable(
                "the platform's signing keys could not be fetched a moment ago; try again shortly"
                    .into(),
            )),
            (got, _) => got,
        };
        (got, origin)
    }

    /// The decoding key for `kid`: from the cache, or after one (rate-limited) refetch.
    pub async fn key(&self, http: &reqwest::Client, kid: &str) -> Result<DecodingKey> {
        let unknown = || {
            Error::refused(
                Reason::TokenInvalid,
                "the id_token is signed with a key the platform does not publish",
            )
        };
        let (set, origin) = self.key_set(http).await;
        let set = set?;
        if let Some(jwk) = set.find(kid) {
            return decoding_key(jwk);
        }
        let now = Instant::now();
        // A rotation is followed at once; made-up kids cause at most one refetch per interval
        // (a set just fetched for this caller counts as that refetch). The claim is made under
        // the lock, so concurrent made-up kids cannot each refetch.
        let claimed = {
            let mut last = self
                .last_miss
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let may = origin == Origin::Cached
                && last.is_none_or(|t| now.duration_since(t) >= REFETCH_INTERVAL);
            // Only a fetch that looked for a kid starts the interval: refused kids do not push
            // it back, or a steady trickle of made-up kids would keep a rotation out for good.
            if may || origin == Origin::Fetched {
                *last = Some(now);
            }
            may
        };
        if !claimed {
            return Err(unknown());
        }
        // Refetched outside the cache's fetch, so that the set in use keeps serving known kids
        // if this refetch fails; what it gets replaces that set.
        let set = Arc::new(self.fetch(http).await?);
        self.keys.put((), set.clone(), JWKS_TTL);
        match set.find(kid) {
            Some(jwk) => decoding_key(jwk),
            None => Err(unknown()),
        }
    }
}

/// What the flows use of an issuer's metadata (OpenID Connect Discovery 1.0, section 3).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Metadata {
    /// The issuer, as its id_tokens name it.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
}

/// An issuer's metadata, read from `<base>/.well-known/openid-configuration` and cached for an
/// hour: one fetch per container in the normal case. A failed fetch is not retried for a few
/// seconds (as for keys), and metadata that has aged past its hour keeps serving while a
/// refetch fails: endpoints rarely move, and sign-ins should not stop with the metadata
/// endpoint.
pub struct Discovery {
    url: String,
    issuers: Vec<String>,
    /// Whether the endpoints may be plain http (only when the base itself is, as in tests).
    allow_http: bool,
    /// The metadata (one key, `()`), kept for [`DISCOVERY_TTL`]; see [`Discovery::metadata`].
    metadata: Cache<(), Arc<Metadata>, Error>,
}

impl Discovery {
    /// The metadata of the issuer at `base`, which must name one of `issuers` as its issuer.
    pub fn new(base: &str, issuers: Vec<String>) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            url: format!("{base}/.well-known/openid-configuration"),
            issuers,
            allow_http: base.starts_with("http://"),
            metadata: Cache::new(),
        }
    }

    /// The metadata: cached, or fetched and checked. A failed fetch is kept for a few seconds
    /// (callers in between are refused at once), or, when there is metadata from before, that
    /// is served for those seconds instead.
    pub async fn metadata(&self, http: &reqwest::Client) -> Result<Arc<Metadata>> {
        let (got, origin) = self
            .metadata
            .get_with_origin(&(), |stale| async {
                match self.fetch(http).await {
                    Ok(m) => Fetched::value(Arc::new(m), DISCOVERY_TTL),
                    Err(e) => match stale {
                        Some(m) => {
                            tracing::warn!(error = %e, "issuer metadata refetch failed; keeping the last");
                            Fetched::value(m, RETRY_AFTER_FAILURE)
                        }
                        None => Fetched::failed_for(e, RETRY_AFTER_FAILURE),
                    },
                }
            })
            .await;
        match (got, origin) {
            (Err(_), Origin::Cached) => Err(Error::Unavailable(
                "the platform's sign-in metadata could not be read a moment ago; try again \
                 shortly"
                    .into(),
            )),
            (got, _) => got,
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Metadata> {
        let m: Metadata = crate::http::get_json(
            http,
            &self.url,
            "metadata",
            "the platform's sign-in metadata",
        )
        .await?;
        // Discovery 4.3: the metadata must be the issuer's we trust; otherwise a wrong base URL
        // (or a host answering for another) would choose our endpoints and keys.
        if !self.issuers.iter().any(|i| i == &m.issuer) {
            return Err(Error::Upstream(
                "the platform's sign-in metadata names an issuer that is not allowed".into(),
            ));
        }
        for url in [&m.authorization_endpoint, &m.token_endpoint, &m.jwks_uri] {
            let ok = url::Url::parse(url).is_ok_and(|u| {
                u.host_str().is_some()
                    && (u.scheme() == "https" || (self.allow_http && u.scheme() == "http"))
            });
            if !ok {
                return Err(Error::Upstream(
                    "the platform's sign-in metadata names an endpoint that is not https".into(),
                ));
            }
        }
        Ok(m)
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
    /// Allowed `aud` values; `azp`, when present or when `aud` names several, must be one of
    /// them.
    pub audiences: &'a [String],
    /// The nonce we sent, if the token must carry it.
    pub nonce: Option<&'a str>,
    /// The code that came with the token in the front channel (the hybrid flow): the token must
    /// carry a `c_hash` and it must match. `None` for a token endpoint's id_token.
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
    Error::refused(Reason::TokenInvalid, format!("the id_token {what}"))
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
    if iat > now.saturating_add(i64::try_from(expect.skew).unwrap_or(i64::MAX)) {
        return Err(refused("was issued in the future (iat)"));
    }
    if let Some(nonce) = expect.nonce
        && !claims
            .get("nonce")
            .and_then(Value::as_str)
            .is_some_and(|got| crate::crypto::constant_time_eq(got.as_bytes(), nonce.as_bytes()))
    {
        return Err(refused("does not carry this sign-in's nonce"));
    }
    check_azp(&claims, expect.audiences)?;
    if expect.code.is_some() && !claims.contains_key("c_hash") {
        return Err(refused("lacks the `c_hash` claim"));
    }
    for (claim, value) in [("c_hash", expect.code), ("at_hash", expect.access_token)] {
        if let (Some(value), Some(hash)) = (value, claims.get(claim))
            && !hash.as_str().is_some_and(|got| {
                crate::crypto::constant_time_eq(got.as_bytes(), half_hash(value).as_bytes())
            })
        {
            return Err(refused(&format!("`{claim}` does not match")));
        }
    }
    Ok(claims)
}

/// `azp` (the party the token was issued to): when `aud` names several parties, it must be
/// present, and whenever it is present it must be one of ours, so that a token issued to
/// another client that merely lists us among its audiences is not taken as ours.
fn check_azp(claims: &serde_json::Map<String, Value>, audiences: &[String]) -> Result<()> {
    let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        None if several => Err(refused("names several audiences but no `azp`")),
        None => Ok(()),
        Some(Value::String(azp)) if audiences.iter().any(|a| a == azp) => Ok(()),
        Some(_) => Err(refused("was issued to another party (azp)")),
    }
}

/// The audiences of a token as a sorted list (`aud` is a string or an array of them).
fn audience_set(claims: &serde_json::Map<String, Value>) -> Option<Vec<&str>> {
    let mut list: Vec<&str> = match claims.get("aud")? {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().map(Value::as_str).collect::<Option<_>>()?,
        _ => return None,
    };
    list.sort_unstable();
    list.dedup();
    Some(list)
}

/// OIDC Core 3.3.3.6: the id_token the token endpoint returned in a hybrid flow must name the
/// same issuer and subject as the front channel's, for the same audience; otherwise the code
/// was redeemed for someone else than who signed in. `also` names claims the platform
/// identifies its tenants by (Haravan's `orgid`): they must be the same too, present in both
/// or in neither.
pub fn same_identity(
    front: &serde_json::Map<String, Value>,
    back: &serde_json::Map<String, Value>,
    also: &[&str],
) -> Result<()> {
    let mismatch = |claim: &str| {
        Err(refused(&format!(
            "of the token endpoint names another `{claim}` than the sign-in's"
        )))
    };
    for claim in ["iss", "sub"] {
        match (front.get(claim), back.get(claim)) {
            (Some(Value::String(a)), Some(Value::String(b))) if a == b => {}
            _ => return mismatch(claim),
        }
    }
    match (audience_set(front), audience_set(back)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return mismatch("aud"),
    }
    for claim in also {
        if front.get(*claim) != back.get(*claim) {
            return mismatch(claim);
        }
    }
    Ok(())
}

/// A `prompt` setting (`name`): OIDC's space-separated `prompt` values, or `omit` for none
/// (an empty value counts as unset, and so as the default, `consent`). OIDC Core 11: an OP
/// grants `offline_access` (a refresh token) only when `prompt` contains `consent`, unless it
/// has other grounds; a standards OP drops the scope otherwise.
pub fn prompt_setting(vars: &Vars, name: &str) -> Result<Option<String>, ConfigError> {
    let raw = vars.get_or(name, "consent");
    if raw == "omit" {
        return Ok(None);
    }
    let values: Vec<&str> = raw.split(' ').filter(|v| !v.is_empty()).collect();
    if values.is_empty()
        || values
            .iter()
            .any(|v| !matches!(*v, "none" | "login" | "consent" | "select_account"))
    {
        return Err(ConfigError {
            name: name.into(),
            problem: "must be `omit` or prompt values (none, login, consent, select_account)"
                .into(),
        });
    }
    Ok(Some(values.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ISSUER: &str = "https://op.example";
    const CLIENT: &str = "our-client";
    const CODE: &str = "the-code";
    const NONCE: &str = "the-nonce";

    /// The sample events' test-only key (a PKCS#8 PEM after a line of explanation; its RSA
    /// key, PKCS#1, follows PKCS#8's fixed 26-byte header for a key of this size).
    fn keys() -> (EncodingKey, DecodingKey, String) {
        let pem = include_str!("../../events/haravan-test-key.pem");
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(&der[22..24], &[0x04, 0x82], "PKCS#8 wrapping an RSA key");
        let jwks: JwkSet =
            serde_json::from_str(include_str!("../../events/haravan-jwks.json")).unwrap();
        let jwk = &jwks.keys[0];
        (
            EncodingKey::from_rsa_der(&der[26..]),
            DecodingKey::from_jwk(jwk).unwrap(),
            jwk.common.key_id.clone().unwrap(),
        )
    }

    /// A front-channel id_token's claims that pass every check, changed by `patch` (a `null`
    /// removes the claim).
    fn claims(patch: Value) -> serde_json::Map<String, Value> {
        let now = crate::store::now();
        let mut c = json!({
            "iss": ISSUER, "aud": CLIENT, "sub": "u1", "orgid": "o1",
            "iat": now, "nbf": now, "exp": now + 300,
            "nonce": NONCE, "c_hash": half_hash(CODE),
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.as_object().unwrap().clone()
    }

    fn sign(claims: &serde_json::Map<String, Value>) -> String {
        let (encoding, _, kid) = keys();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &encoding).unwrap()
    }

    fn front_channel(token: &str) -> Result<serde_json::Map<String, Value>> {
        let issuers = [ISSUER.to_owned()];
        let audiences = [CLIENT.to_owned()];
        let expect = Expect {
            issuers: &issuers,
            audiences: &audiences,
            nonce: Some(NONCE),
            code: Some(CODE),
            access_token: None,
            skew: 60,
        };
        verify_with_key(token, &keys().1, &expect)
    }

    fn refusal(patch: Value) -> String {
        match front_channel(&sign(&claims(patch))) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_front_channel_token_is_accepted() {
        let claims = front_channel(&sign(&claims(json!({})))).unwrap();
        assert_eq!(claims["sub"], json!("u1"));
    }

    /// OIDC Core 3.3.2.11: in the hybrid flow's front channel, `c_hash` is required.
    #[test]
    fn c_hash_is_required_with_a_front_channel_code() {
        assert!(refusal(json!({"c_hash": null})).contains("lacks the `c_hash` claim"));
        assert!(refusal(json!({"c_hash": half_hash("another-code")})).contains("c_hash"));
    }

    /// A token endpoint's id_token (no code given) needs no `c_hash`; its `at_hash`, when
    /// present, must match.
    #[test]
    fn the_token_endpoints_id_token_needs_no_c_hash() {
        let issuers = [ISSUER.to_owned()];
        let audiences = [CLIENT.to_owned()];
        let expect = |access| Expect {
            issuers: &issuers,
            audiences: &audiences,
            nonce: None,
            code: None,
            access_token: Some(access),
            skew: 60,
        };
        let token = sign(&claims(json!({"c_hash": null, "at_hash": half_hash("at")})));
        assert!(verify_with_key(&token, &keys().1, &expect("at")).is_ok());
        let err = verify_with_key(&token, &keys().1, &expect("other")).unwrap_err();
        assert!(err.to_string().contains("at_hash"), "{err}");
    }

    /// OIDC Core 3.1.3.7 (4, 5): several audiences need an `azp`, and an `azp` must be ours.
    #[test]
    fn azp_is_checked() {
        let several = json!(["another-client", CLIENT]);
        assert!(refusal(json!({"aud": several})).contains("no `azp`"));
        assert!(refusal(json!({"aud": several, "azp": "another-client"})).contains("azp"));
        assert_eq!(refusal(json!({"aud": several, "azp": CLIENT})), "accepted");
        assert!(refusal(json!({"azp": "another-client"})).contains("azp"));
        assert_eq!(refusal(json!({"azp": CLIENT})), "accepted");
        assert_eq!(refusal(json!({"aud": [CLIENT]})), "accepted");
    }

    #[test]
    fn the_other_claims_are_checked() {
        let now = crate::store::now();
        for (patch, needle) in [
            (json!({"iss": "https://evil.example"}), "issuer"),
            (json!({"aud": "another-client"}), "audience"),
            (json!({"exp": now - 3600}), "expired"),
            (json!({"nbf": now + 3600}), "nbf"),
            (json!({"iat": now + 3600}), "future"),
            (json!({"iat": null}), "iat"),
            (json!({"nonce": "other"}), "nonce"),
            (json!({"nonce": null}), "nonce"),
        ] {
            let got = refusal(patch.clone());
            assert!(got.contains(needle), "{patch}: {got}");
        }
    }

    /// OIDC Core 3.3.3.6: the token endpoint's id_token names who signed in.
    #[test]
    fn the_token_endpoints_id_token_must_name_the_same_identity() {
        let front = claims(json!({}));
        let same = claims(json!({"c_hash": null, "nonce": null, "at_hash": "x"}));
        assert!(same_identity(&front, &same, &["orgid"]).is_ok());
        let listed = claims(json!({"aud": [CLIENT]}));
        assert!(same_identity(&front, &listed, &["orgid"]).is_ok());
        for (patch, claim) in [
            (json!({"iss": "https://other.example"}), "iss"),
            (json!({"sub": "u2"}), "sub"),
            (json!({"sub": null}), "sub"),
            (json!({"aud": "another-client"}), "aud"),
            (json!({"aud": [CLIENT, "another-client"]}), "aud"),
            (json!({"orgid": "o2"}), "orgid"),
            (json!({"orgid": null}), "orgid"),
        ] {
            let err = same_identity(&front, &claims(patch.clone()), &["orgid"]).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{claim}`")),
                "{patch}: {err}"
            );
        }
    }

    /// A one-route HTTP server on 127.0.0.1 that answers every request with `status` and
    /// `body`, and counts the requests.
    async fn key_server(status: u16, body: String) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        (url, hits)
    }

    /// While the key endpoint fails, sign-ins do not each fetch again: one fetch per interval.
    #[tokio::test]
    async fn a_failing_key_endpoint_is_not_refetched_on_every_request() {
        let (url, hits) = key_server(500, "{}".into()).await;
        let jwks = Jwks::new(url);
        let http = reqwest::Client::new();
        for _ in 0..20 {
            assert!(jwks.key(&http, "some-kid").await.is_err());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch while it fails");
    }

    /// An unreachable key endpoint likewise.
    #[tokio::test]
    async fn an_unreachable_key_endpoint_is_not_retried_on_every_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let jwks = Jwks::new(url);
        let http = reqwest::Client::new();
        let first = jwks.key(&http, "k").await.unwrap_err();
        assert!(matches!(first, Error::Upstream(_)), "{first}");
        let second = jwks.key(&http, "k").await.unwrap_err();
        assert!(matches!(second, Error::Unavailable(_)), "{second}");
    }

    fn metadata_of(base: &str, issuer: &str) -> String {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
        })
        .to_string()
    }

    /// The base of a `key_server` URL (which answers every path alike).
    fn base_of(url: &str) -> String {
        url.trim_end_matches("/jwks").to_owned()
    }

    /// The metadata is fetched once and then served from the cache; its JWKS is where the
    /// metadata says.
    #[tokio::test]
    async fn discovery_is_fetched_once_and_gives_the_endpoints() {
        let (url, hits) = key_server(200, metadata_of("https://op.example", ISSUER)).await;
        let d = Discovery::new(&base_of(&url), vec![ISSUER.into()]);
        let http = reqwest::Client::new();
        for _ in 0..5 {
            let m = d.metadata(&http).await.unwrap();
            assert_eq!(m.token_endpoint, "https://op.example/token");
            assert_eq!(m.jwks_uri, "https://op.example/jwks");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// Discovery 4.3: metadata naming an issuer we do not trust is refused.
    #[tokio::test]
    async fn discovery_naming_another_issuer_is_refused() {
        let (url, _) = key_server(
            200,
            metadata_of("https://op.example", "https://evil.example"),
        )
        .await;
        let d = Discovery::new(&base_of(&url), vec![ISSUER.into()]);
        let err = d.metadata(&reqwest::Client::new()).await.unwrap_err();
        assert!(
            err.to_string().contains("issuer that is not allowed"),
            "{err}"
        );
    }

    /// Endpoints must be https unless the base itself is http (a test deployment).
    #[tokio::test]
    async fn discovered_endpoints_must_be_https_or_match_an_http_base() {
        let (url, _) = key_server(200, metadata_of("ftp://op.example", ISSUER)).await;
        let d = Discovery::new(&base_of(&url), vec![ISSUER.into()]);
        let err = d.metadata(&reqwest::Client::new()).await.unwrap_err();
        assert!(err.to_string().contains("not https"), "{err}");
    }

    /// A failing metadata endpoint is not asked again on every request.
    #[tokio::test]
    async fn a_failing_discovery_endpoint_is_not_refetched_on_every_request() {
        let (url, hits) = key_server(503, "{}".into()).await;
        let d = Discovery::new(&base_of(&url), vec![ISSUER.into()]);
        let http = reqwest::Client::new();
        for _ in 0..20 {
            assert!(d.metadata(&http).await.is_err());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// Keys found through discovery: the metadata once, the keys once.
    #[tokio::test]
    async fn keys_are_fetched_where_the_metadata_says() {
        let (keys_url, key_hits) =
            key_server(200, include_str!("../../events/haravan-jwks.json").into()).await;
        let (url, meta_hits) = key_server(200, metadata_of(&base_of(&keys_url), ISSUER)).await;
        let jwks = Jwks::discovered(Arc::new(Discovery::new(
            &base_of(&url),
            vec![ISSUER.into()],
        )));
        let http = reqwest::Client::new();
        let kid = keys().2;
        for _ in 0..3 {
            assert!(jwks.key(&http, &kid).await.is_ok());
        }
        assert_eq!(meta_hits.load(Ordering::SeqCst), 1);
        assert_eq!(key_hits.load(Ordering::SeqCst), 1);
    }

    /// A working endpoint: the kid is found with one fetch, then from the cache; a made-up kid
    /// refetches once per interval.
    #[tokio::test]
    async fn a_working_key_endpoint_is_fetched_once() {
        let (url, hits) =
            key_server(200, include_str!("../../events/haravan-jwks.json").into()).await;
        let jwks = Jwks::new(url);
        let http = reqwest::Client::new();
        let kid = keys().2;
        for _ in 0..5 {
            assert!(jwks.key(&http, &kid).await.is_ok());
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            assert!(jwks.key(&http, "made-up").await.is_err());
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one refetch for made-up kids"
        );
    }

    /// Concurrent first requests share one fetch, and concurrent made-up kids one refetch.
    #[tokio::test]
    async fn concurrent_requests_share_one_key_fetch() {
        let (url, hits) =
            key_server(200, include_str!("../../events/haravan-jwks.json").into()).await;
        let jwks = Jwks::new(url);
        let http = reqwest::Client::new();
        let kid = keys().2;
        let (a, b, c) = tokio::join!(
            jwks.key(&http, &kid),
            jwks.key(&http, &kid),
            jwks.key(&http, &kid)
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let (a, b, c) = tokio::join!(
            jwks.key(&http, "made-up-1"),
            jwks.key(&http, "made-up-2"),
            jwks.key(&http, "made-up-3")
        );
        assert!(a.is_err() && b.is_err() && c.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 2, "one refetch for them all");
        assert!(
            jwks.key(&http, &kid).await.is_ok(),
            "known kids still served"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    /// The hashes carried by the Haravan document's own tokens (docs/platforms.md, "Haravan").
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
