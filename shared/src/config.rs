//! Configuration from the environment (the contract in docs/architecture.md, "Configuration").
//!
//! Everything non-secret comes from variables that SAM sets when deployed and the shell (or the
//! local server) sets on a laptop. An empty variable counts as unset, because SAM passes an
//! empty string for an optional parameter left blank.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A configuration value is unusable; the container refuses to start rather than misbehave.
#[derive(Debug, thiserror::Error)]
#[error("configuration `{name}`: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub name: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A snapshot of configuration variables.
#[derive(Debug, Clone, Default)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    /// The process environment.
    pub fn from_env() -> Self {
        Self(std::env::vars().collect())
    }

    /// Variables from pairs (tests, the local server).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Sets a variable, replacing any value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Sets a variable only if it is unset.
    pub fn set_default(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        if self.get(&name).is_none() {
            self.0.insert(name, value.into());
        }
    }

    /// A variable's value; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A variable or its default.
    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// An absolute http(s) URL, or `default`. A trailing slash is removed so paths can be
    /// appended as `{base}/path`.
    pub fn url(&self, name: &str, default: &str) -> Result<Url, ConfigError> {
        let raw = self.get_or(name, default);
        let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| ConfigError {
            name: name.into(),
            problem: format!("not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(ConfigError {
                name: name.into(),
                problem: "must be an http(s) URL with a host".into(),
            });
        }
        Ok(url)
    }

    /// A whole number of seconds, or `default`.
    pub fn seconds(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => v.parse().map(Duration::from_secs).map_err(|_| ConfigError {
                name: name.into(),
                problem: "must be a whole number of seconds".into(),
            }),
        }
    }

    /// A boolean (`true`/`false`/`1`/`0`), or `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(_) => Err(ConfigError {
                name: name.into(),
                problem: "must be true or false".into(),
            }),
        }
    }
}

/// The settings every function shares.
#[derive(Debug, Clone)]
pub struct Config {
    /// How platforms and browsers reach us. `None`: derived per request from API Gateway's
    /// domain name (which API Gateway sets, not the client).
    pub public_base_url: Option<Url>,
    /// The DynamoDB table; `None` selects the embedded store.
    pub table_name: Option<String>,
    /// Where the embedded store and local secrets live.
    pub data_dir: PathBuf,
    /// The local secrets file, used for every secret without a `<NAME>_SECRET_ID`.
    pub secrets_file: PathBuf,
    /// Secrets Manager ids by secret name (`app`, `sesami`, ...).
    pub secret_ids: HashMap<String, String>,
    /// How long secrets are cached in a container.
    pub secrets_ttl: Duration,
    /// The overall timeout of one outbound platform call.
    pub http_timeout: Duration,
    /// The overall timeout of one DynamoDB or Secrets Manager call, retries included.
    pub aws_timeout: Duration,
    /// The time budget of one request, every call it makes included (see [`crate::budget`]).
    pub request_timeout: Duration,
}

/// A timeout of at least one second: zero would fail every call at once.
fn at_least_a_second(vars: &Vars, name: &str, default: u64) -> Result<Duration, ConfigError> {
    match vars.seconds(name, default)? {
        d if d.is_zero() => Err(ConfigError {
            name: name.into(),
            problem: "must be at least one second".into(),
        }),
        d => Ok(d),
    }
}

/// The names of the secrets: the app's own and one per platform.
pub const SECRET_NAMES: &[&str] = &[crate::secrets::APP, "sesami", "haravan", "saison", "momo"];

impl Config {
    /// Reads the shared settings.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let public_base_url = match vars.get("PUBLIC_BASE_URL") {
            Some(_) => Some(vars.url("PUBLIC_BASE_URL", "")?),
            None => None,
        };
        let data_dir = PathBuf::from(vars.get_or("GATEHOUSE_DATA_DIR", ".gatehouse"));
        let secrets_file = vars
            .get("GATEHOUSE_SECRETS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("secrets.json"));
        let secret_ids = SECRET_NAMES
            .iter()
            .filter_map(|name| {
                let var = format!("{}_SECRET_ID", name.to_ascii_uppercase());
                vars.get(&var).map(|id| (name.to_string(), id.to_string()))
            })
            .collect();
        Ok(Self {
            public_base_url,
            table_name: vars.get("TABLE_NAME").map(str::to_owned),
            data_dir,
            secrets_file,
            secret_ids,
            secrets_ttl: vars.seconds("GATEHOUSE_SECRETS_TTL_SECONDS", 300)?,
            http_timeout: vars.seconds("GATEHOUSE_HTTP_TIMEOUT_SECONDS", 10)?,
            aws_timeout: at_least_a_second(vars, "GATEHOUSE_AWS_TIMEOUT_SECONDS", 5)?,
            request_timeout: at_least_a_second(vars, "GATEHOUSE_REQUEST_TIMEOUT_SECONDS", 20)?,
        })
    }

    /// The timeouts of the AWS SDK clients. The SDK's own default bounds only connecting, so a
    /// DynamoDB or Secrets Manager that accepts a connection and then stops answering would
    /// hold a request until Lambda kills it (and forever on the local server): each call is
    /// bounded by [`Config::aws_timeout`] as a whole, retries included, and each attempt by
    /// half of it, so that one retry still fits.
    pub fn aws_timeouts(&self) -> aws_config::timeout::TimeoutConfig {
        let attempt = self.aws_timeout / 2;
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(attempt.min(Duration::from_secs(3)))
            .operation_attempt_timeout(attempt)
            .operation_timeout(self.aws_timeout)
            .build()
    }

    /// Whether cookies must be `Secure`: always, unless the public base URL is plain http
    /// (the local server on 127.0.0.1).
    pub fn secure_cookies(&self) -> bool {
        self.public_base_url
            .as_ref()
            .is_none_or(|u| u.scheme() == "https")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_unset_and_urls_are_checked() {
        let vars = Vars::from_pairs([
            ("PUBLIC_BASE_URL", ""),
            ("A", "https://example.com/base/"),
            ("B", "ftp://x"),
            ("APP_SECRET_ID", "arn:app"),
        ]);
        let config = Config::from_vars(&vars).unwrap();
        assert!(config.public_base_url.is_none());
        assert!(config.secure_cookies());
        assert_eq!(
            config.secret_ids.get("app").map(String::as_str),
            Some("arn:app")
        );
        assert!(!config.secret_ids.contains_key("sesami"));
        assert_eq!(
            vars.url("A", "").unwrap().as_str(),
            "https://example.com/base"
        );
        assert!(vars.url("B", "").is_err());
        assert!(vars.seconds("A", 1).is_err());
    }

    #[test]
    fn aws_calls_are_bounded() {
        let config = Config::from_vars(&Vars::default()).unwrap();
        assert_eq!(config.aws_timeout, Duration::from_secs(5));
        let t = config.aws_timeouts();
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(5)));
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(2500)));
        let one = Vars::from_pairs([("GATEHOUSE_AWS_TIMEOUT_SECONDS", "1")]);
        let t = Config::from_vars(&one).unwrap().aws_timeouts();
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(500))
        );
        let zero = Vars::from_pairs([("GATEHOUSE_AWS_TIMEOUT_SECONDS", "0")]);
        assert!(Config::from_vars(&zero).is_err());
    }

    #[test]
    fn a_request_has_a_budget_between_a_platform_call_and_the_lambda_timeout() {
        let config = Config::from_vars(&Vars::default()).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(20));
        // One platform call fits in it, and the functions' Lambda timeout (29 s) leaves room.
        assert!(config.request_timeout > config.http_timeout);
        assert!(config.request_timeout + crate::budget::LAMBDA_MARGIN < Duration::from_secs(29));
        let two = Vars::from_pairs([("GATEHOUSE_REQUEST_TIMEOUT_SECONDS", "2")]);
        assert_eq!(
            Config::from_vars(&two).unwrap().request_timeout,
            Duration::from_secs(2)
        );
        for bad in ["0", "1.5", "soon"] {
            let vars = Vars::from_pairs([("GATEHOUSE_REQUEST_TIMEOUT_SECONDS", bad)]);
            let err = Config::from_vars(&vars).unwrap_err();
            assert_eq!(err.name, "GATEHOUSE_REQUEST_TIMEOUT_SECONDS", "{bad}");
        }
    }
}
