//! The outbound HTTP client, built once per container, on first use.
//!
//! Token endpoints must never be followed through a redirect (a redirect could carry the client
//! secret to another host), so redirects are off for every call. Every call has a timeout; the
//! platform hosts come from configuration only.
//!
//! Building the client loads the system certificate store (rustls-platform-verifier reads the
//! bundle and the hashed directory), which the AWS SDK's own HTTPS client loads too. A function
//! that never calls a platform (`haravan-webhooks`) should not pay for a second load at init, so
//! [`Http`] builds the client the first time a handler asks for it.
//!
//! That build can fail: with rustls, `ClientBuilder::build` fails when the system holds no
//! parsable CA certificate ("No CA certificates were loaded from the system"), besides
//! configuration mistakes of ours (TLS versions) that cannot happen with the settings below. A
//! failure is therefore an error answer ([`Error::Dependency`](crate::error::Error), 503, the
//! cause logged), never a panic; it is kept, so every later call answers the same without
//! re-reading the certificate store.

use std::sync::OnceLock;
use std::time::Duration;

/// The platform HTTP client, built on first use ([`Http::client`]).
pub struct Http {
    timeout: Duration,
    cell: OnceLock<Result<reqwest::Client, String>>,
}

impl Http {
    /// A client with `timeout` per call, not built yet.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            cell: OnceLock::new(),
        }
    }

    /// The client, built now if this is the first call. A client that cannot be built is a 503
    /// that says so; the cause is logged.
    pub fn client(&self) -> crate::error::Result<&reqwest::Client> {
        match self
            .cell
            .get_or_init(|| client(self.timeout).map_err(|e| error_chain(&e)))
        {
            Ok(client) => Ok(client),
            Err(detail) => Err(crate::error::Error::Dependency {
                public: "the outbound HTTP client cannot be built; calls to the platform are unavailable",
                detail: format!("the HTTP client cannot be built: {detail}"),
            }),
        }
    }

    /// Whether the client has been built (tests: building [`Deps`](crate::context::Deps) must
    /// not build it).
    pub fn is_built(&self) -> bool {
        self.cell.get().is_some()
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("timeout", &self.timeout)
            .field("built", &self.is_built())
            .finish()
    }
}

/// `e` and its sources, for the log ("builder error: No CA certificates were loaded ...").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Builds the shared client.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3).min(timeout))
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A call to a platform, measured: [`PlatformCall::send_to`] in place of `send` is how every
/// call to a platform goes out, so that each is one
/// [`PLATFORM_CALL_LATENCY`](crate::metrics::names::PLATFORM_CALL_LATENCY) value, and each that
/// fails or is answered 4xx/5xx one
/// [`PLATFORM_CALL_ERRORS`](crate::metrics::names::PLATFORM_CALL_ERRORS) by `Kind`.
pub trait PlatformCall {
    /// Sends the request to `platform`'s `operation` (a fixed name: `token`, `api`,
    /// `proxy`, ...), measured.
    fn send_to(
        self,
        platform: &str,
        operation: &'static str,
    ) -> impl std::future::Future<Output = Result<reqwest::Response, reqwest::Error>> + Send;
}

impl PlatformCall for reqwest::RequestBuilder {
    async fn send_to(
        self,
        platform: &str,
        operation: &'static str,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let started = std::time::Instant::now();
        let result = self.send().await;
        measured(platform, operation, started.elapsed(), &result);
        result
    }
}

/// The metrics of one call that took `took` and ended in `result`.
fn measured(
    platform: &str,
    operation: &'static str,
    took: Duration,
    result: &Result<reqwest::Response, reqwest::Error>,
) {
    use crate::metrics::{Unit, count, names, value};
    let dims = [("Operation", operation)];
    value(
        names::PLATFORM_CALL_LATENCY,
        Unit::Milliseconds,
        took.as_secs_f64() * 1000.0,
        platform,
        &dims,
        &[],
    );
    let kind = match result {
        Ok(resp) if resp.status().is_server_error() => "5xx",
        Ok(resp) if resp.status().is_client_error() => "4xx",
        Ok(_) => return,
        Err(e) if e.is_timeout() => "timeout",
        Err(e) if e.is_connect() => "connect",
        Err(_) => "failed",
    };
    count(
        names::PLATFORM_CALL_ERRORS,
        platform,
        &[("Operation", operation), ("Kind", kind)],
        &[],
    );
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
/// The call is `operation` of the running function's platform in the metrics.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    operation: &'static str,
    what: &str,
) -> crate::error::Result<T> {
    use crate::error::Error;
    let resp = http
        .get(url)
        .send_to(crate::metrics::current_platform(), operation)
        .await
        .map_err(|e| Error::Upstream(format!("{what} could not be fetched ({})", describe(&e))))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_built_on_first_use_once() {
        let http = Http::new(Duration::from_secs(5));
        assert!(!http.is_built());
        let a: *const reqwest::Client = http.client().expect("the client builds");
        assert!(http.is_built());
        let b: *const reqwest::Client = http.client().unwrap();
        assert_eq!(a, b, "the second call reuses the first client");
    }
}
