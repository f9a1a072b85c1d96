//! The header pre-checks of an id_token, made before any key is fetched (found by
//! `fuzz/mutants`): `key_id` gives the `kid` the key is looked up by, and refuses a token that
//! names none; `alg: none` and HMAC algorithms are refused as not RS256, before jsonwebtoken
//! (which may not represent `none` at all) reads the header.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::oidc::{check_alg, key_id};

/// A token with this header, a payload and a signature that no check here reads.
fn token(header: &str) -> String {
    let part = |s: &str| URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        part(header),
        part(r#"{"iss":"https://op.example","sub":"u1"}"#),
        part("not a signature")
    )
}

#[test]
fn key_id_gives_the_tokens_kid() {
    let t = token(r#"{"alg":"RS256","typ":"JWT","kid":"key-2026"}"#);
    assert_eq!(
        key_id(&t).expect("an RS256 token naming its key"),
        "key-2026"
    );
    let no_kid = key_id(&token(r#"{"alg":"RS256","typ":"JWT"}"#)).expect_err("no kid");
    assert!(no_kid.to_string().contains("kid"), "{no_kid}");
}

#[test]
fn none_and_hmac_algorithms_are_refused_as_not_rs256() {
    for alg in ["none", "HS256", "RS384"] {
        let t = token(&format!(r#"{{"alg":"{alg}","kid":"key-2026"}}"#));
        for refused in [check_alg(&t).expect_err(alg), key_id(&t).expect_err(alg)] {
            assert!(refused.to_string().contains("RS256"), "{alg}: {refused}");
        }
    }
    assert!(check_alg(&token(r#"{"alg":"RS256"}"#)).is_ok());
    for malformed in ["", "a.b", "a.b.c.d", "!!.e30.e30"] {
        assert!(check_alg(malformed).is_err(), "{malformed:?}");
    }
}
