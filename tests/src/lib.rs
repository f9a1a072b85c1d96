//! Gatehouse on a laptop: the local server, the platform simulators, and the route table they
//! share with the integration tests (in `it/`).

#![warn(missing_docs)]

pub mod events;
pub mod faultproxy;
pub mod load;
pub mod server;
pub mod simulators;
