//! Gatehouse's integration tests, in one binary so that they build once.

mod harness;
mod sesami;
mod store;
mod support;
mod secrets;
