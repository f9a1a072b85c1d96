//! The edges of the crypto module that the rest of the suite never reaches: a sealed value too
//! short to hold its nonce is refused, never a panic; random strings draw from the whole
//! alphabet they are given (the PKCE verifier's is 66 characters).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse::crypto::{KeyRing, random_string};
use secrecy::SecretString;

fn keys() -> KeyRing {
    let key = SecretString::from(
        "k1-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    );
    KeyRing::new([("k1", &key)]).expect("a key ring")
}

#[test]
fn a_sealed_value_shorter_than_its_nonce_is_refused() {
    use base64::Engine as _;
    let keys = keys();
    let sealed = keys.encrypt("a token", "ctx").expect("sealed");
    // The version and key id as encrypt writes them, then payloads of every short length.
    let (head, _) = sealed.rsplit_once('.').expect("<version>.<key id>.<data>");
    for len in 0..40 {
        let data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; len]);
        let forged = format!("{head}.{data}");
        assert!(
            keys.decrypt(&forged, "ctx").is_err(),
            "{len} bytes must be refused"
        );
    }
    assert!(keys.decrypt(&format!("{head}."), "ctx").is_err());
    assert!(keys.decrypt(&sealed, "ctx").is_ok(), "the real one opens");
}

#[test]
fn random_strings_use_the_whole_alphabet() {
    let alphabet: Vec<u8> = (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain(*b"-._~")
        .collect();
    assert_eq!(alphabet.len(), 66);
    let mut counts = [0usize; 256];
    let draws = 66 * 100;
    let s = random_string(&alphabet, draws).expect("random");
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    for &c in &alphabet {
        // Expected 100 each; 30 is far below any fair draw (and far above a missing one).
        assert!(
            counts[usize::from(c)] >= 30,
            "`{}` drawn {} times of {draws}",
            c as char,
            counts[usize::from(c)]
        );
    }
    assert_eq!(
        counts.iter().sum::<usize>(),
        draws,
        "nothing outside the alphabet"
    );
}
