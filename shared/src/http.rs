//! The outbound HTTP client, built once per container.
//!
//! Token endpoints must never be followed through a redirect (a redirect could carry the client
//! secret to another host), so redirects are off for every call. Every call has a timeout; the
//! platform hosts come from configuration only.

use std::time::Duration;

/// Builds the shared client.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3).min(timeout))
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A short, secret-free description of a failed call, for logs and error pages.
pub fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "answered with an unreadable body"
    } else {
        "failed"
    }
}
