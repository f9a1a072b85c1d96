//! What the simulators share: state and randomness helpers, the pages and OAuth answers they
//! serve, HMAC-SHA256 and SHA-256 (through aws-lc-rs, like the code under test), RS256 keys and
//! the DER they come in, and a browser-grade reading of the HTML forms they and the app serve.
//!
//! Each simulator is still written from its platform's documents: the kit holds only what is
//! the same whatever the platform (a page's frame, `Cache-Control: no-store`, RFC 6749's error
//! body), never a platform's rules.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair;
use aws_lc_rs::{digest, hmac};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

// --- state and randomness ------------------------------------------------------------------------

/// The guarded value, even if a panicking test thread poisoned the lock: a simulator's state is
/// plain data, never left half-updated by a panic that matters.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes, as `2n` lower-case hex digits: codes, tokens, keys and ids.
///
/// # Panics
/// If the system has no randomness to give.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

// --- HMAC-SHA256 and SHA-256 ---------------------------------------------------------------------

/// HMAC-SHA256 of `message` keyed with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, message).as_ref().to_vec()
}

/// Whether `tag` is the HMAC-SHA256 of `message` keyed with `key`, compared in constant time:
/// the one place a simulator checks a MAC it was sent.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, message, tag).is_ok()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

// --- RS256 keys, JWTs and DER --------------------------------------------------------------------

/// An RS256 signing key and its public half as a JWK (also the fuzz targets' id_token key).
pub struct SigningKey {
    /// Its key id.
    pub kid: String,
    /// PKCS#1 `RSAPrivateKey` DER, what jsonwebtoken's aws-lc backend reads.
    pub pkcs1_der: Vec<u8>,
    /// base64url modulus.
    pub n: String,
    /// base64url exponent.
    pub e: String,
}

impl SigningKey {
    /// A new RSA-2048 key.
    ///
    /// # Panics
    /// If the system cannot generate an RSA key (no usable randomness).
    pub fn generate() -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA-2048 key generation");
        let pkcs8 = pair.as_der().expect("PKCS#8 encoding of a fresh key");
        let pkcs1 = pkcs1_from_pkcs8(pkcs8.as_ref()).expect("a PKCS#8 RSA key holds PKCS#1");
        let public: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
        Self {
            kid: random_hex(16),
            pkcs1_der: pkcs1.to_vec(),
            n: URL_SAFE_NO_PAD.encode(&public.n),
            e: URL_SAFE_NO_PAD.encode(&public.e),
        }
    }

    /// `claims` as an RS256 JWT whose header names this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&self.pkcs1_der);
        jsonwebtoken::encode(&header, claims, &key).expect("RS256 signing with a valid key")
    }

    /// The public half, as a JWK.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e,
        })
    }
}

/// base64url (no padding) of the left half of SHA-256(`value`): OIDC's `c_hash` and `at_hash`
/// for RS256.
pub fn left_half_hash(value: &str) -> String {
    let digest = sha256(value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// The `RSAPrivateKey` (PKCS#1) inside a PKCS#8 `PrivateKeyInfo`: aws-lc-rs writes PKCS#8,
/// jsonwebtoken's aws-lc backend reads PKCS#1. `SEQUENCE { INTEGER, SEQUENCE, OCTET STRING }`.
fn pkcs1_from_pkcs8(der: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _version, rest) = der_next(info)? else {
        return None;
    };
    let (0x30, _algorithm, rest) = der_next(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_next(rest)? else {
        return None;
    };
    Some(key)
}

/// One DER element: its tag, its content, and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

// --- pages -----------------------------------------------------------------------------------------

/// Text (or an attribute value) for HTML: the app's own escaping, which the simulators' pages
/// and the form parser below then check against a browser-grade parser.
pub fn escape(s: &str) -> String {
    gatehouse::web::escape(s)
}

/// A simulated site's pages: every page has its heading, every error page its title.
#[derive(Clone, Copy)]
pub struct Site {
    /// The heading of every page, such as `Haravan accounts (simulator)`.
    pub heading: &'static str,
    /// The site's name in error pages' titles, such as `Haravan`.
    pub name: &'static str,
}

impl Site {
    /// A page of `body` (HTML) under the site's heading.
    pub fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        (
            status,
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
                 <body><h1>{heading}</h1>{body}</body></html>",
                title = escape(title),
                heading = escape(self.heading),
            )),
        )
            .into_response()
    }

    /// The page of a request that cannot be served, saying why (`description`, text).
    pub fn error_page(&self, status: StatusCode, description: &str) -> Response {
        self.page(
            status,
            &format!("{} — error", self.name),
            &format!(
                "<p>This request cannot be served.</p><p>{}</p>",
                escape(description)
            ),
        )
    }
}

/// `fields` as hidden `<input>`s, names and values escaped.
pub fn hidden_inputs(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect()
}

/// The action and fields of an HTML page's first form, as a browser would submit it: the
/// form's `action` and the `name`/`value` of each `<input>` in it, in document order, entities
/// decoded. Buttons are left out (add the one clicked). The page is read by html5ever, so
/// comments, `<script>`, entities without `;` and malformed markup count as a browser counts
/// them: our escaping is checked, not trusted.
pub fn parse_form(html: &str) -> (String, Vec<(String, String)>) {
    let doc = scraper::Html::parse_document(html);
    let form = scraper::Selector::parse("form").expect("a valid selector");
    let input = scraper::Selector::parse("input[name]").expect("a valid selector");
    let Some(form) = doc.select(&form).next() else {
        return (String::new(), Vec::new());
    };
    let action = form.value().attr("action").unwrap_or_default().to_owned();
    let fields = form
        .select(&input)
        .map(|i| {
            let attr = |name| i.value().attr(name).unwrap_or_default().to_owned();
            (attr("name"), attr("value"))
        })
        .collect();
    (action, fields)
}

// --- OAuth -----------------------------------------------------------------------------------------

/// Request parameters (query or form); empty values count as absent, as OAuth says.
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded`; a repeated parameter is an error.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(format!("parameter {k} is repeated"));
            }
        }
        Ok(Self(map))
    }

    /// The value of `name`, if present and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// `url` with `pairs` added to its query, form-urlencoded.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// `resp` with `Cache-Control: no-store` and `Pragma: no-cache`, as token answers carry them.
pub fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An RFC 6749 error answer.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(
        (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response(),
    )
}

/// RFC 6749's `invalid_grant`, 400.
pub fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: the HMAC-SHA256 every platform's signature is built on.
    #[test]
    fn hmac_sha256_is_rfc_4231s() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// What a hand-written scanner gets wrong and a browser does not: a form inside a comment
    /// or a script is no form, and `&amp` without `;` is decoded in text-like attribute values
    /// only where HTML says so.
    #[test]
    fn parse_form_reads_comments_scripts_and_entities_as_a_browser_does() {
        let html = "<!-- <form action=\"/commented\"><input name=\"no\"></form> -->\
            <script>document.write('<form action=\"/scripted\"><input name=\"no\">');</script>\
            <form action=\"/cb?a=1&amp;b=2&copy\">\
            <input name=\"x\" value=\"&lt;&amp&quot\">\
            <input name=\"y\" value=\"a&ampb=c\"></form>";
        let (action, fields) = parse_form(html);
        assert_eq!(action, "/cb?a=1&b=2\u{a9}");
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(fields, [("x", "<&\""), ("y", "a&ampb=c")]);
    }

    /// Every character our escaping is given comes back out of a browser-grade parser intact,
    /// in text and in attribute values.
    #[test]
    fn escaped_values_survive_a_browser_grade_parser() {
        let nasty = "a\"b'c<d>e&f&amp;g --> <script>h</script> &#x41; \u{e9}";
        let html = format!(
            "<form action=\"{}\">{}</form>",
            escape(nasty),
            hidden_inputs(&[(nasty, nasty)])
        );
        let (action, fields) = parse_form(&html);
        assert_eq!(action, nasty);
        assert_eq!(fields, [(nasty.to_owned(), nasty.to_owned())]);
    }
}

// --- API reads: what the proxy tests turn ------------------------------------------------------

/// One API request as a simulator received it: what the proxy tests assert about what was
/// forwarded (the path under the base, no caller auth, no hop-by-hop headers).
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The path and query, as received (relative to the simulator's mount point).
    pub path_and_query: String,
    /// Every header received.
    pub headers: axum::http::HeaderMap,
}

/// The knobs of a simulator's API reads, the same for every platform: each request is counted
/// and recorded; a test can make the next ones answer 401 (a token the platform stopped
/// accepting, to test refresh and retry), 429 with `Retry-After`, or an answer of a given size.
/// The platform's own auth check comes first and is the platform's (wrong or missing auth is
/// its 401 whatever the knobs say); the knobs act only on requests that passed it.
#[derive(Default)]
pub struct ApiKnobs {
    calls: std::sync::atomic::AtomicUsize,
    unauthorized: std::sync::atomic::AtomicUsize,
    throttled: Mutex<Option<u64>>,
    oversized: Mutex<Option<usize>>,
    seen: Mutex<Vec<SeenRequest>>,
}

impl ApiKnobs {
    /// Records a request (before its auth is checked).
    pub fn record(
        &self,
        method: &axum::http::Method,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.seen).push(SeenRequest {
            method: method.to_string(),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: headers.clone(),
        });
    }

    /// The answer a knob imposes on a request whose auth passed, if one is set (each acts once).
    pub fn imposed(&self) -> Option<Response> {
        use std::sync::atomic::Ordering;
        if self
            .unauthorized
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
                    Json(json!({"error": "invalid_token", "error_description": "the access token is no longer accepted"})),
                )
                    .into_response(),
            );
        }
        if let Some(secs) = lock(&self.throttled).take() {
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.to_string())],
                    Json(json!({"error": "rate_limited"})),
                )
                    .into_response(),
            );
        }
        if let Some(n) = lock(&self.oversized).take() {
            return Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![b'x'; n],
                )
                    .into_response(),
            );
        }
        None
    }

    /// The next `n` requests whose auth passes answer 401.
    pub fn answer_401(&self, n: usize) {
        self.unauthorized
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next request whose auth passes answers 429 with `Retry-After: secs`.
    pub fn answer_429(&self, secs: u64) {
        *lock(&self.throttled) = Some(secs);
    }

    /// The next request whose auth passes answers 200 with `n` bytes.
    pub fn answer_bytes(&self, n: usize) {
        *lock(&self.oversized) = Some(n);
    }

    /// How many API requests arrived.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every API request received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        lock(&self.seen).clone()
    }
}
