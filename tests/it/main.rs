//! Gatehouse's integration tests, in one binary so that they build once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

mod admin;
mod bad_input;
mod budget;
mod certs;
mod client;
mod connect;
mod console;
mod event_schemas;
mod events;
mod exactly_once;
mod fault_proxy;
mod faults;
mod haravan;
mod harness;
mod health;
mod iam;
mod keys;
mod load;
mod local_events;
mod metrics;
mod momo;
mod op;
mod outbox;
mod proxy;
mod publisher;
mod saison;
mod secrets;
mod sesami;
mod simulation;
mod store;
mod support;
mod template;
mod vending;
mod weblink;
