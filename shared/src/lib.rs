//! Gatehouse's common crate: everything the Lambda functions, the local server and the tests
//! share, and each platform's flows.
//!
//! A function's binary calls [`lambda::run`] with one handler from a platform module and its
//! route's error format; the [`App`] (configuration, store, secrets, HTTP client) is built once
//! per container, and each request runs within its deadline ([`budget`]). The local server and
//! the tests call the very same handlers.
//!
//! Security (docs/architecture.md, "Security rules"): signatures are checked over the raw bytes
//! received, in constant time, before anything is parsed further or stored; every redirect flow
//! carries one-time state bound to the browser by a signed cookie; outbound calls follow no
//! redirects and go only to configured hosts; secrets are `SecretString`s and never logged.

#![warn(missing_docs)]

#[cfg(feature = "admin")]
pub mod admin;
pub mod budget;
pub mod cache;
pub mod config;
pub mod connect;
pub mod connection;
pub mod context;
pub mod crypto;
pub mod error;
pub mod events;
pub mod flow;
pub mod haravan;
pub mod health;
pub mod http;
pub mod lambda;
pub mod metrics;
pub mod momo;
pub mod oidc;
pub mod once;
pub mod proxy;
#[cfg(feature = "publisher")]
pub mod publisher;
pub mod refresh;
pub mod response;
pub mod rfc3339;
pub mod routes;
pub mod saison;
pub mod secrets;
pub mod sesami;
pub mod store;
pub mod telemetry;
pub mod vending;
pub mod web;
pub mod weblink;

pub use context::{Deps, Platform};
pub use error::{Error, Reason, Result};
