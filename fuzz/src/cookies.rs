//! Signed cookies ([`gatehouse::flow::sign_cookie`], [`open_cookie`]), the `Cookie` header
//! reader ([`gatehouse::web::cookie`]) and sealed tokens ([`KeyRing::decrypt`]): what we signed
//! opens, to its own name, until it expires; any change to it, and anything made up, does not.

use arbitrary::{Arbitrary, Unstructured};
use gatehouse::crypto::KeyRing;
use gatehouse::flow::{open_cookie, sign_cookie};
use lambda_http::Body;
use lambda_http::http::header::COOKIE;
use lambda_http::http::{HeaderValue, Request};
use secrecy::{ExposeSecret, SecretString};
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    name: String,
    value: String,
    /// Expiry relative to `now`.
    lifetime: i16,
    now: u32,
    /// Where a byte of the sealed value is changed, and to what.
    flip_at: usize,
    flip_to: u8,
    made_up: String,
    cookie_header: Vec<u8>,
    context: String,
}

fn keys() -> &'static (KeyRing, KeyRing) {
    static KEYS: OnceLock<(KeyRing, KeyRing)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (a, b) = (
            SecretString::from("fuzz-only-key-a-0123456789abcdefghijklmnopqrstuvwxyz"),
            SecretString::from("fuzz-only-key-b-0123456789abcdefghijklmnopqrstuvwxyz"),
        );
        let ring = KeyRing::new([("a", &a), ("b", &b)]).unwrap();
        let other = KeyRing::new([("a", &b)]).unwrap();
        (ring, other)
    })
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (ring, other) = keys();
    let now = i64::from(input.now);
    let expires = now + i64::from(input.lifetime);

    let sealed = sign_cookie(ring, &input.name, &input.value, expires);
    let opened = open_cookie(ring, &input.name, &sealed, now);
    assert_eq!(opened, (expires > now).then(|| input.value.clone()));
    assert_eq!(
        open_cookie(other, &input.name, &sealed, now),
        None,
        "opened under another key"
    );
    let renamed = format!("{}x", input.name);
    assert_eq!(
        open_cookie(ring, &renamed, &sealed, now),
        None,
        "moved to another cookie"
    );

    // Any single changed byte makes it unreadable.
    let mut bytes = sealed.clone().into_bytes();
    let at = input.flip_at % bytes.len();
    if bytes[at] != input.flip_to {
        bytes[at] = input.flip_to;
        if let Ok(changed) = String::from_utf8(bytes) {
            assert_eq!(
                open_cookie(ring, &input.name, &changed, now),
                None,
                "{changed:?}"
            );
        }
    }
    assert_eq!(open_cookie(ring, &input.name, &input.made_up, now), None);

    // The Cookie header: never a panic; a plain `name=value` pair is found.
    if let Ok(value) = HeaderValue::from_bytes(&input.cookie_header) {
        let mut req: lambda_http::Request = Request::new(Body::Empty);
        req.headers_mut().insert(COOKIE, value);
        let _ = gatehouse::web::cookie(&req, &input.name);
    }
    let mut req: lambda_http::Request = Request::new(Body::Empty);
    req.headers_mut().insert(
        COOKIE,
        HeaderValue::from_str(&format!("other=1; gh={sealed}; last=2")).unwrap(),
    );
    assert_eq!(gatehouse::web::cookie(&req, "gh"), Some(sealed));

    // Sealed tokens: round trip under the same context only; made-up ones are refused.
    let token = ring.encrypt(&input.value, &input.context).unwrap();
    assert_eq!(
        ring.decrypt(&token, &input.context)
            .unwrap()
            .expose_secret(),
        input.value
    );
    assert!(
        ring.decrypt(&token, &renamed_context(&input.context))
            .is_err()
    );
    assert!(other.decrypt(&token, &input.context).is_err());
    assert!(ring.decrypt(&input.made_up, &input.context).is_err());

    // Tokens sealed to an item and an attribute: they open there only, and a `v1.` value still
    // opens under its item through the same reader.
    let sealed = ring
        .seal(&input.value, &input.context, "access_token_sealed")
        .unwrap();
    assert_eq!(
        ring.open(&sealed, &input.context, "access_token_sealed")
            .unwrap()
            .expose_secret(),
        input.value
    );
    assert!(
        ring.open(&sealed, &input.context, "refresh_token_sealed")
            .is_err()
    );
    assert!(
        ring.open(
            &sealed,
            &renamed_context(&input.context),
            "access_token_sealed"
        )
        .is_err()
    );
    assert!(ring.decrypt(&sealed, &input.context).is_err());
    assert_eq!(
        ring.open(&token, &input.context, "access_token_sealed")
            .unwrap()
            .expose_secret(),
        input.value
    );
    assert!(
        ring.open(&input.made_up, &input.context, "access_token_sealed")
            .is_err()
    );
}

fn renamed_context(context: &str) -> String {
    format!("{context}#")
}
