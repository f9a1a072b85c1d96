//! Gatehouse's integration tests, in one binary so that they build once.

mod bad_input;
mod budget;
mod connect;
mod events;
mod exactly_once;
mod fault_proxy;
mod faults;
mod haravan;
mod harness;
mod iam;
mod load;
mod momo;
mod op;
mod saison;
mod secrets;
mod sesami;
mod simulation;
mod store;
mod support;
mod template;
mod weblink;
