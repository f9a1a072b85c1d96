//! The edges of the app secret's keys (found by `fuzz/mutants`): a key id may hold `_` as well
//! as letters, digits and `-`; a secret of exactly 32 characters is long enough, 31 is not; the
//! key ring's debug form names its key ids and nothing of the secrets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse::crypto::KeyRing;
use secrecy::SecretString;

const SECRET: &str = "0123456789abcdefghijklmnopqrstuv"; // 32 characters

#[test]
fn key_ids_of_letters_digits_dash_and_underscore_are_accepted() {
    let secret = SecretString::from(SECRET);
    for id in ["k1", "key-2", "key_3", "_", "-", "A_b-9"] {
        assert!(KeyRing::new([(id, &secret)]).is_ok(), "{id}");
    }
    for id in ["", "k.1", "k 1", "k/1", "ké"] {
        assert!(KeyRing::new([(id, &secret)]).is_err(), "{id:?}");
    }
}

#[test]
fn a_secret_needs_32_characters() {
    assert_eq!(SECRET.len(), 32);
    assert!(KeyRing::new([("k1", &SecretString::from(SECRET))]).is_ok());
    let short = SecretString::from(&SECRET[..31]);
    assert!(KeyRing::new([("k1", &short)]).is_err());
}

#[test]
fn the_debug_form_names_the_key_ids_only() {
    let a = SecretString::from(SECRET);
    let b = SecretString::from("another-secret-of-32-characters!");
    let ring = KeyRing::new([("current", &a), ("previous", &b)]).expect("keys");
    let debug = format!("{ring:?}");
    assert_eq!(debug, r#"KeyRing { key_ids: ["current", "previous"] }"#);
    assert!(!debug.contains(SECRET));
}
