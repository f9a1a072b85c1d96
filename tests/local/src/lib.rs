//! Gatehouse on a laptop: the local server (on the platform simulators of
//! `gatehouse-simulators`), the load and bench tools, the DynamoDB fault proxy, and the route
//! table they share with the integration tests (`tests/it`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]
#![warn(missing_docs)]

pub mod console;
pub mod deliveries;
pub mod events;
pub mod faultproxy;
pub mod load;
pub mod outbox;
pub mod server;
pub mod sigv4;
