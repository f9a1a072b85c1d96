//! id_token checks ([`gatehouse::oidc::key_id`], the pre-checks made before a key is fetched,
//! and [`verify_with_key`](gatehouse::oidc::verify_with_key)): a token built from chosen claims
//! is accepted exactly when an independent reading of the rules says it should be, any changed
//! byte of an accepted token is refused, and made-up text is refused without a panic.

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::oidc::{Expect, half_hash, verify_with_key};
use gatehouse_simulators::haravan::SigningKey;
use hmac::{KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

const ISSUER: &str = "https://accounts.haravan.com";
const CLIENT: &str = "fuzz-client";
const NONCE: &str = "fuzz-nonce";
const CODE: &str = "fuzz-code";
const SKEW: u64 = 60;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Alg {
    Rs256,
    Rs384,
    Hs256,
    None,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Aud {
    Ours,
    Other,
    ListWithOurs,
    ListWithout,
    Absent,
}

/// A time claim, an hour away from now so that no run falls on a boundary.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum When {
    Past,
    Future,
    Absent,
    Text,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Matches {
    Yes,
    No,
    Absent,
}

#[derive(Arbitrary, Debug)]
struct Input {
    alg: Alg,
    kid: bool,
    issuer_ours: bool,
    aud: Aud,
    exp: When,
    nbf: When,
    iat: When,
    nonce: Matches,
    c_hash: Matches,
    azp: Matches,
    sub: String,
    flip_at: usize,
    flip_to: u8,
    made_up: String,
}

/// A fresh key for the process: the signing half, the verifying half, and its key id.
fn keys() -> &'static (EncodingKey, DecodingKey, String) {
    static KEYS: OnceLock<(EncodingKey, DecodingKey, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = SigningKey::generate();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
        (
            EncodingKey::from_rsa_der(&key.pkcs1_der),
            DecodingKey::from_jwk(&jwk).unwrap(),
            key.kid,
        )
    })
}

fn time(when: When, now: i64) -> Option<Value> {
    match when {
        When::Past => Some(json!(now - 3600)),
        When::Future => Some(json!(now + 3600)),
        When::Absent => None,
        When::Text => Some(json!("soon")),
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// The token the input describes, signed as it says.
fn token(input: &Input, now: i64) -> String {
    let (encoding, _, kid) = keys();
    let mut claims = Map::new();
    claims.insert(
        "iss".into(),
        json!(if input.issuer_ours {
            ISSUER
        } else {
            "https://evil.example"
        }),
    );
    match input.aud {
        Aud::Ours => drop(claims.insert("aud".into(), json!(CLIENT))),
        Aud::Other => drop(claims.insert("aud".into(), json!("other"))),
        Aud::ListWithOurs => drop(claims.insert("aud".into(), json!(["other", CLIENT]))),
        Aud::ListWithout => drop(claims.insert("aud".into(), json!(["other"]))),
        Aud::Absent => {}
    }
    for (name, when) in [("exp", input.exp), ("nbf", input.nbf), ("iat", input.iat)] {
        if let Some(v) = time(when, now) {
            claims.insert(name.into(), v);
        }
    }
    for (name, m, good) in [
        ("nonce", input.nonce, NONCE.to_owned()),
        ("c_hash", input.c_hash, half_hash(CODE)),
        ("azp", input.azp, CLIENT.to_owned()),
    ] {
        match m {
            Matches::Yes => drop(claims.insert(name.into(), json!(good))),
            Matches::No => drop(claims.insert(name.into(), json!(format!("{good}x")))),
            Matches::Absent => {}
        }
    }
    claims.insert("sub".into(), json!(input.sub));
    let kid = input.kid.then(|| kid.clone());
    match input.alg {
        Alg::Rs256 | Alg::Rs384 => {
            let mut header = Header::new(if input.alg == Alg::Rs256 {
                Algorithm::RS256
            } else {
                Algorithm::RS384
            });
            header.kid = kid;
            jsonwebtoken::encode(&header, &claims, encoding).unwrap()
        }
        Alg::Hs256 | Alg::None => {
            let name = if input.alg == Alg::Hs256 {
                "HS256"
            } else {
                "none"
            };
            let mut header = json!({"alg": name, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let signing_input = format!("{}.{}", b64(&header), b64(&Value::Object(claims)));
            let signature = if input.alg == Alg::Hs256 {
                // Whatever the key (here the key id, public): refused for its algorithm alone.
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(keys().2.as_bytes()).unwrap();
                mac.update(signing_input.as_bytes());
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            } else {
                String::new()
            };
            format!("{signing_input}.{signature}")
        }
    }
}

/// The rules, read independently of the code under test.
fn should_accept(input: &Input) -> bool {
    input.alg == Alg::Rs256
        && input.kid
        && input.issuer_ours
        && match input.aud {
            // Several audiences: `azp` must name us; one: an `azp` present must.
            Aud::Ours => input.azp != Matches::No,
            Aud::ListWithOurs => input.azp == Matches::Yes,
            _ => false,
        }
        && input.exp == When::Future
        && matches!(input.nbf, When::Past | When::Absent)
        && input.iat == When::Past
        && input.nonce == Matches::Yes
        // A front-channel token with a code must carry its `c_hash`.
        && input.c_hash == Matches::Yes
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (_, decoding, _) = keys();
    let issuers = [ISSUER.to_owned()];
    let audiences = [CLIENT.to_owned()];
    let expect = Expect {
        issuers: &issuers,
        audiences: &audiences,
        nonce: Some(NONCE),
        code: Some(CODE),
        access_token: None,
        skew: SKEW,
    };
    // The pre-checks (`key_id`) and the checks under the key, as `verify_id_token` makes them.
    let verify = |token: &str| verify_with_key(token, decoding, &expect);

    let now = gatehouse::store::now();
    let token = token(&input, now);
    let verdict = verify(&token);
    assert_eq!(
        verdict.is_ok(),
        should_accept(&input),
        "{input:?} gave {verdict:?}"
    );
    if verdict.is_ok() {
        let mut bytes = token.clone().into_bytes();
        let at = input.flip_at % bytes.len();
        if bytes[at] != input.flip_to {
            bytes[at] = input.flip_to;
            if let Ok(changed) = String::from_utf8(bytes) {
                assert!(
                    verify(&changed).is_err(),
                    "a changed token verified: {changed}"
                );
            }
        }
    }
    assert!(verify(&input.made_up).is_err());
}
