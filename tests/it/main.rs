//! Gatehouse's integration tests, in one binary so that they build once.

mod store;
mod support;
