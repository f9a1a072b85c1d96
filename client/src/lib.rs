//! The typed client of Gatehouse's `/v1` API, for the app's own code (its Lambdas, its back end).
//!
//! Gatehouse ends at the gate: it installs, verifies and stores. The app's code reaches what it
//! stored through the `/v1` routes, which API Gateway authorizes with IAM: every call is
//! SigV4-signed (service `execute-api`) with the caller's own credentials, found as every AWS
//! SDK finds them (a Lambda's role, a profile, the environment). Nothing here holds a secret of
//! Gatehouse's; tokens handed out are [`SecretString`]s, never printed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gatehouse_client::Error> {
//! use gatehouse_client::{Client, Tenant};
//! let gatehouse = Client::from_env().await?; // GATEHOUSE_API_URL
//! let shop = Tenant::haravan("1000111111");
//! let connection = gatehouse.connection(&shop).await?;
//! let token = gatehouse.token(&shop).await?; // refreshed when due
//! let answer = gatehouse
//!     .proxy(&shop, reqwest::Method::GET, "com/shop.json", None)
//!     .await?;
//! # Ok(()) }
//! ```

mod sign;

pub use secrecy::{ExposeSecret, SecretString};
pub use sign::{SERVICE, Signer};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::SystemTime;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection's refresh token was refused: its user must connect again, at
    /// `connect_url` where the platform has connect links.
    #[error("the connection must be authorized again: {message}")]
    NeedsReauth {
        /// Gatehouse's message.
        message: String,
        /// A one-time connect link for the connection's end user, when there is one.
        connect_url: Option<String>,
    },
    /// Gatehouse answered with a refusal (4xx) or a failure (5xx).
    #[error("Gatehouse answered {status} ({reason}): {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The refusal's code (`unknown_tenant`, `use_proxy`, …).
        reason: String,
        /// Gatehouse's message.
        message: String,
    },
    /// The request did not get an answer.
    #[error("Gatehouse could not be reached: {0}")]
    Http(#[from] reqwest::Error),
    /// The caller's credentials could not be found.
    #[error("no AWS credentials to sign with: {0}")]
    Credentials(String),
    /// The request could not be signed.
    #[error("the request could not be signed: {0}")]
    Signing(String),
    /// The client is not configured (no URL) or was given a bad argument.
    #[error("{0}")]
    Config(String),
    /// Gatehouse's answer was not what this client expects.
    #[error("Gatehouse's answer does not decode: {0}")]
    Decode(String),
}

/// Which connection a call is about: a platform and its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    platform: &'static str,
    tenant: String,
    query: Vec<(&'static str, String)>,
}

impl Tenant {
    /// A Sesami shop's install.
    pub fn sesami(shop_id: &str) -> Self {
        Self::plain("sesami", shop_id)
    }
    /// A Haravan org's install.
    pub fn haravan(org_id: &str) -> Self {
        Self::plain("haravan", org_id)
    }
    /// A Saison cardholder's connection, made for `end_user` (through the first configured
    /// member; see [`Tenant::member`]).
    pub fn saison(cardholder: &str, end_user: &str) -> Self {
        let mut t = Self::plain("saison", cardholder);
        t.query.push(("end_user", end_user.to_owned()));
        t
    }
    /// The same Saison connection, through `member`.
    pub fn member(mut self, member: &str) -> Self {
        self.query.push(("member", member.to_owned()));
        self
    }
    /// A WebLink sign-in session.
    pub fn weblink(session_id: &str) -> Self {
        Self::plain("weblink", session_id)
    }
    /// A MoMo product (`collection` or `disbursement`).
    pub fn momo(product: &str) -> Self {
        Self::plain("momo", product)
    }

    fn plain(platform: &'static str, tenant: &str) -> Self {
        Self {
            platform,
            tenant: tenant.to_owned(),
            query: Vec::new(),
        }
    }

    /// The platform's name as the API spells it.
    pub fn platform(&self) -> &str {
        self.platform
    }

    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.tenant
    }
}

/// A one-time URL that starts a connection for one of the app's users.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectLink {
    /// Where to send the user's browser.
    pub url: String,
    /// Unix seconds after which it no longer opens.
    pub expires_at: i64,
}

/// A connection as Gatehouse keeps it, without its tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `sesami`, `haravan`, `saison`, `momo` or `weblink`.
    pub platform: String,
    /// The shop, org, cardholder or session.
    pub tenant: String,
    /// The app's own user it was made for, when it was started by a connect link.
    #[serde(default)]
    pub end_user: Option<String>,
    /// `active`, `needs_reauth`, `no_refresh_token` or `revoked` (docs/health.md).
    pub status: String,
    /// The scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub updated_at: Option<i64>,
    /// When the access token expires, unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub last_refresh_at: Option<i64>,
    /// What the last refresh failed with.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the refresh token's health was last learned (a refresh, its refusal or failure,
    /// the schedule finding none), unix seconds.
    #[serde(default)]
    pub checked_at: Option<i64>,
}

/// A page of connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConnectionPage {
    /// The connections on this page.
    pub connections: Vec<Connection>,
    /// Pass it back for the next page; none on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A valid access token for a connection.
#[derive(Debug, Clone, Deserialize)]
pub struct AccessToken {
    /// The token (never printed).
    pub access_token: SecretString,
    /// `Bearer` where the platform uses bearer tokens.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A platform's answer to a proxied call, passed through.
#[derive(Debug, Clone)]
pub struct ProxyResponse {
    /// The platform's status (429 and its `Retry-After` included).
    pub status: u16,
    /// The platform's headers (hop-by-hop ones removed).
    pub headers: Vec<(String, String)>,
    /// The platform's body.
    pub body: Vec<u8>,
}

impl ProxyResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One of Gatehouse's events: the `detail` of an EventBridge event from source
/// `gatehouse.<platform>`, whose detail-type is [`Event::name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable: the same on every delivery of the event, so consumers deduplicate on it.
    pub id: String,
    /// The platform.
    pub platform: String,
    /// `connection.created`, `connection.updated`, `connection.needs_reauth`,
    /// `connection.no_refresh_token`, `connection.removed`, `payment.succeeded`,
    /// `payment.failed` or `webhook.<topic>`.
    pub name: String,
    /// The tenant it is about.
    pub tenant: String,
    /// Unix seconds.
    pub time: i64,
    /// The connection (for `connection.*`), the payment, or the delivery's payload.
    #[serde(default)]
    pub data: Value,
}

impl Event {
    /// The event in an EventBridge event as a rule's target receives it (`{"detail": …}`), or
    /// in a bare detail.
    pub fn from_eventbridge(event: &Value) -> Result<Self, Error> {
        let detail = event.get("detail").unwrap_or(event);
        serde_json::from_value(detail.clone()).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The connection a `connection.*` event carries.
    pub fn connection(&self) -> Option<Connection> {
        if !self.name.starts_with("connection.") {
            return None;
        }
        serde_json::from_value(self.data.clone()).ok()
    }
}

/// The client: Gatehouse's API URL and the caller's signer.
#[derive(Debug, Clone)]
pub struct Client {
    base: url::Url,
    signer: Signer,
    http: reqwest::Client,
}

/// The characters of a path segment that are escaped: everything but the unreserved ones.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

impl Client {
    /// A client for the API at `GATEHOUSE_API_URL` (the stack's `ApiUrl` output), signing with
    /// the credentials and region the AWS SDKs find.
    pub async fn from_env() -> Result<Self, Error> {
        let base = std::env::var("GATEHOUSE_API_URL")
            .map_err(|_| Error::Config("GATEHOUSE_API_URL is not set".into()))?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::from_sdk_config(&base, &config)
    }

    /// A client for the API at `base`, signing with `config`'s credentials and region.
    pub fn from_sdk_config(base: &str, config: &aws_config::SdkConfig) -> Result<Self, Error> {
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| Error::Credentials("the SDK configuration has none".into()))?;
        let region = config
            .region()
            .ok_or_else(|| Error::Config("no AWS region configured".into()))?;
        Self::new(base, Signer::new(credentials, region.to_string()))
    }

    /// A client for the API at `base` with this signer.
    pub fn new(base: &str, signer: Signer) -> Result<Self, Error> {
        let mut base = url::Url::parse(base)
            .map_err(|e| Error::Config(format!("`{base}` is not a URL: {e}")))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self { base, signer, http })
    }

    /// `POST /v1/connect-links`: a one-time URL that starts a connection of `platform` for the
    /// app's user `end_user`, sending the browser back to `return_to` with the outcome.
    pub async fn connect_link(
        &self,
        platform: &str,
        end_user: &str,
        return_to: &str,
    ) -> Result<ConnectLink, Error> {
        let body = serde_json::json!({
            "platform": platform, "end_user": end_user, "return_to": return_to,
        });
        let answer = self
            .send(
                reqwest::Method::POST,
                "v1/connect-links",
                &[],
                Some(body.to_string().into_bytes()),
                Some("application/json"),
            )
            .await?;
        decode(answer).await
    }

    /// `GET /v1/connections/{platform}/{tenant}`.
    pub async fn connection(&self, tenant: &Tenant) -> Result<Connection, Error> {
        let answer = self
            .send(
                reqwest::Method::GET,
                &Self::connection_path(tenant, ""),
                &tenant.query,
                None,
                None,
            )
            .await?;
        decode(answer).await
    }

    /// `GET /v1/connections?platform=&end_user=&cursor=`: a page of a platform's connections,
    /// or of one end user's.
    pub async fn connections(
        &self,
        platform: &str,
        end_user: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<ConnectionPage, Error> {
        let mut query = vec![("platform", platform.to_owned())];
        if let Some(u) = end_user {
            query.push(("end_user", u.to_owned()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let answer = self
            .send(reqwest::Method::GET, "v1/connections", &query, None, None)
            .await?;
        decode(answer).await
    }

    /// `POST /v1/connections/{platform}/{tenant}/token`: a valid access token, refreshed by
    /// Gatehouse when due. [`Error::NeedsReauth`] when it cannot be.
    pub async fn token(&self, tenant: &Tenant) -> Result<AccessToken, Error> {
        let answer = self
            .send(
                reqwest::Method::POST,
                &Self::connection_path(tenant, "/token"),
                &tenant.query,
                None,
                None,
            )
            .await?;
        decode(answer).await
    }

    /// `ANY /v1/proxy/{platform}/{tenant}/{path}`: a call to the platform's API as the tenant,
    /// Gatehouse adding the platform's auth. `path` is relative to the platform's API base
    /// (`com/shop.json`), and may carry a query.
    pub async fn proxy(
        &self,
        tenant: &Tenant,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<ProxyResponse, Error> {
        let (path, own_query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut relative = format!(
            "v1/proxy/{}/{}/{}",
            tenant.platform,
            segment(&tenant.tenant),
            path.trim_start_matches('/')
        );
        if let Some(q) = own_query {
            relative.push('?');
            relative.push_str(q);
        }
        let (bytes, content_type) = match body {
            Some((b, ct)) => (Some(b), Some(ct)),
            None => (None, None),
        };
        let resp = self
            .send(method, &relative, &tenant.query, bytes, content_type)
            .await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = resp.bytes().await?.to_vec();
        // A refusal of Gatehouse's own (its JSON carries a `reason`) is an error; anything the
        // platform answered is the platform's.
        if matches!(status, 403 | 404 | 409)
            && let Ok(v) = serde_json::from_slice::<Value>(&body)
            && v.get("reason").is_some()
            && v.get("message").is_some()
        {
            return Err(api_error(status, &v));
        }
        Ok(ProxyResponse {
            status,
            headers,
            body,
        })
    }

    fn connection_path(tenant: &Tenant, tail: &str) -> String {
        format!(
            "v1/connections/{}/{}{tail}",
            tenant.platform,
            segment(&tenant.tenant)
        )
    }

    /// Sends one signed request to `relative` (under the base) with `query` appended.
    async fn send(
        &self,
        method: reqwest::Method,
        relative: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let mut url = self
            .base
            .join(relative)
            .map_err(|e| Error::Config(format!("`{relative}`: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(Error::Config("the API URL has no host".into())),
        };
        let body = body.unwrap_or_default();
        let mut headers = vec![("host", host.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let signed = self
            .signer
            .sign(
                method.as_str(),
                url.as_str(),
                &headers,
                &body,
                SystemTime::now(),
            )
            .await?;
        let mut request = self.http.request(method, url);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        Ok(request.body(body).send().await?)
    }
}

fn api_error(status: u16, v: &Value) -> Error {
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let reason = text("reason").unwrap_or_else(|| "unknown".into());
    let message = text("message").unwrap_or_default();
    if reason == "needs_reauth" {
        return Error::NeedsReauth {
            message,
            connect_url: text("connect_url"),
        };
    }
    Error::Api {
        status,
        reason,
        message,
    }
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    if !(200..300).contains(&status) {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(api_error(status, &v));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_addressed_as_the_api_spells_them() {
        let t = Tenant::saison("M0001", "user-a").member("gold");
        assert_eq!(
            Client::connection_path(&t, "/token"),
            "v1/connections/saison/M0001/token"
        );
        assert_eq!(
            t.query,
            vec![("end_user", "user-a".into()), ("member", "gold".into())]
        );
        // A tenant id cannot add a path segment.
        assert_eq!(
            Client::connection_path(&Tenant::sesami("a/../b"), ""),
            "v1/connections/sesami/a%2F..%2Fb"
        );
    }

    #[test]
    fn a_needs_reauth_refusal_carries_its_link() {
        let v = serde_json::json!({"reason": "needs_reauth", "message": "m", "connect_url": "https://x/l"});
        match api_error(409, &v) {
            Error::NeedsReauth { connect_url, .. } => {
                assert_eq!(connect_url.as_deref(), Some("https://x/l"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_are_read_from_eventbridge_envelopes() {
        let envelope = serde_json::json!({
            "source": "gatehouse.haravan", "detail-type": "connection.created",
            "detail": {"id": "e1", "platform": "haravan", "name": "connection.created",
                       "tenant": "1000", "time": 5,
                       "data": {"platform": "haravan", "tenant": "1000", "status": "active"}}
        });
        let event = Event::from_eventbridge(&envelope).unwrap();
        assert_eq!(event.id, "e1");
        assert_eq!(event.connection().unwrap().status, "active");
    }

    #[test]
    fn tokens_are_never_printed() {
        let t: AccessToken = serde_json::from_value(
            serde_json::json!({"access_token": "s3cr3t", "token_type": "Bearer", "expires_at": 1}),
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert_eq!(t.access_token.expose_secret(), "s3cr3t");
    }
}
