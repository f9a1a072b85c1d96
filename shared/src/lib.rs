//! Gatehouse's common crate: everything the Lambda functions, the local server and the tests
//! share, and each platform's flows. A function's binary only builds an [`App`] once per
//! container and hands requests to a handler from a platform module.

pub mod store;
