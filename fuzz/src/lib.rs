//! Fuzz targets for Gatehouse's parsers and verifiers.
//!
//! Each target is a function of arbitrary bytes that panics when a property fails. `cargo fuzz`
//! drives them through libFuzzer (`fuzz/run`, the thin `fuzz_targets/`); the workspace's tests
//! replay each target's seeds and a few thousand pseudo-random inputs through the same
//! functions (`tests/replay.rs`), so the properties are checked on every test run too.
//!
//! The properties are checked against something independent of the code under test where one
//! exists: the `url` crate's form parser, the `hmac` crate, jsonwebtoken's encoder, a reading
//! of the rules written here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]
#![warn(missing_docs)]

pub mod harness;

pub mod cookies;
pub mod id_token;
pub mod lambda_event;
pub mod params;
pub mod routes;
pub mod saison_mac;
pub mod sesami_canonical;
pub mod webhooks;

/// A target: a function of the fuzzer's bytes.
pub type Target = fn(&[u8]);

/// Every target by name (its `fuzz_targets/` file and its seed folder, `fuzz/seeds/<name>`).
pub const TARGETS: &[(&str, Target)] = &[
    ("params", params::run),
    ("cookies", cookies::run),
    ("sesami_canonical", sesami_canonical::run),
    ("saison_mac", saison_mac::run),
    ("id_token", id_token::run),
    ("lambda_event", lambda_event::run),
    ("webhooks", webhooks::run),
    ("routes", routes::run),
];
