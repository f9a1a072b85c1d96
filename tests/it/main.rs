//! Gatehouse's integration tests, in one binary so that they build once.

mod events;
mod haravan;
mod harness;
mod load;
mod momo;
mod saison;
mod secrets;
mod sesami;
mod store;
mod support;
mod template;
mod weblink;
