//! Platform simulators: each platform's documented endpoints over real HTTP, with real keys and
//! signatures, mounted in the local server under `/_sim/<platform>/` and started by the
//! integration tests. What they share, and only that, is in [`kit`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

pub mod haravan;
pub mod kit;
pub mod momo;
pub mod saison;
pub mod sesami;
pub mod weblink;
