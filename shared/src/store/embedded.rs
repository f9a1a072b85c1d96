//! The embedded store (local).

/// The store in a file on local disk.
pub struct EmbeddedStore;
