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

/// GETs `url` and reads its JSON answer as `T`, for a platform's published documents (signing
/// keys, sign-in metadata). `what` names the document in the messages ("the platform's signing
/// keys"): a failed call, a non-2xx answer and an unreadable body are each a 502 that says so.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    what: &str,
) -> crate::error::Result<T> {
    use crate::error::Error;
    let resp =
        http.get(url).send().await.map_err(|e| {
            Error::Upstream(format!("{what} could not be fetched ({})", describe(&e)))
        })?;
    if !resp.status().is_success() {
        return Err(Error::Upstream(format!(
            "{what} answered {}",
            resp.status().as_u16()
        )));
    }
    resp.json()
        .await
        .map_err(|_| Error::Upstream(format!("{what} could not be read (not the JSON expected)")))
}
