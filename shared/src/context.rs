//! The per-container dependencies every platform shares: configuration, store, secrets and the
//! HTTP client, built once at cold start and shared by every invocation the container serves.
//!
//! This module names no platform. Each platform module builds its own context from a [`Deps`]
//! ([`Platform::build`]), so a Lambda binary builds only its own platform's settings: a bad
//! `WEBLINK_*` variable cannot stop a Sesami function at init.

use crate::config::{Config, ConfigError, Vars};
use crate::secrets::{Secrets, Source};
use crate::store::{DynamoStore, Store};
use lambda_http::Request;
use std::sync::Arc;
use url::Url;

/// What every platform's handlers share.
pub struct Deps {
    /// Shared settings.
    pub config: Config,
    /// Installs, sessions, one-time state.
    pub store: Arc<dyn Store>,
    /// App and platform credentials, cached.
    pub secrets: Secrets,
    /// Outbound calls to platforms: the client is built on first use, so a function that never
    /// calls a platform never loads the certificate store a second time.
    pub http: crate::http::Http,
}

/// The AWS SDK configuration of a container: region, credentials and endpoints from the
/// environment as for any AWS tool, and the timeouts of [`Config::aws_timeouts`].
pub async fn aws_sdk_config(config: &Config) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(config.aws_timeouts())
        .load()
        .await
}

/// Extra facts about a request that API Gateway (or the local server) supplies.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The API's domain name as API Gateway saw it (not the client's `Host`).
    pub domain_name: Option<String>,
    /// API Gateway's request id, for logs.
    pub request_id: Option<String>,
    /// The client's IP address as API Gateway saw it (`requestContext.http.sourceIp`), for
    /// per-client limits; not a header a client could set.
    pub source_ip: Option<String>,
    /// The IAM principal API Gateway verified the request's SigV4 signature for
    /// (`requestContext.authorizer.iam`: its `userArn`, else `callerId`), on routes with
    /// `Authorizer: AWS_IAM`; `None` on any other route. See [`crate::web::require_iam_caller`].
    pub iam_caller: Option<String>,
}

/// A platform's context: its settings (and caches) over the shared [`Deps`].
pub trait Platform: std::ops::Deref<Target = Deps> + Sized + Send + Sync + 'static {
    /// Reads the platform's settings from `vars`; a bad value stops the container at init.
    fn build(deps: Arc<Deps>, vars: &Vars) -> Result<Self, ConfigError>;
}

/// Platform `P`'s context configured by the process environment, over dependencies of its own.
pub async fn from_env<P: Platform>() -> Result<P, ConfigError> {
    let vars = Vars::from_env();
    P::build(Arc::new(Deps::from_vars(&vars).await?), &vars)
}

/// `impl Deref<Target = Deps>` for a platform context with a `deps` field, so its handlers
/// read `cx.store` and `cx.settings` alike.
macro_rules! derefs_to_deps {
    ($ty:ty) => {
        impl std::ops::Deref for $ty {
            type Target = $crate::context::Deps;
            fn deref(&self) -> &Self::Target {
                &self.deps
            }
        }
    };
}
pub(crate) use derefs_to_deps;

/// The local store in `GATEHOUSE_DATA_DIR`, for a process with no `TABLE_NAME`.
#[cfg(feature = "embedded")]
fn embedded_store(config: &Config) -> Result<Arc<dyn Store>, ConfigError> {
    let store =
        crate::store::EmbeddedStore::open(config.data_dir.join("store.sqlite3")).map_err(|e| {
            ConfigError {
                name: "GATEHOUSE_DATA_DIR".into(),
                problem: e.to_string(),
            }
        })?;
    Ok(Arc::new(store))
}

/// A build without the embedded store (every deployed function) needs a table: it refuses to
/// start, and says so, rather than fall back to a store it does not have.
#[cfg(not(feature = "embedded"))]
fn embedded_store(_config: &Config) -> Result<Arc<dyn Store>, ConfigError> {
    Err(ConfigError {
        name: "TABLE_NAME".into(),
        problem: "is unset, and this build has no embedded store: set it to the DynamoDB table, \
                  or build with the `embedded` feature (`cargo lambda watch --features embedded`) \
                  to run on a local SQLite file"
            .into(),
    })
}

impl Deps {
    /// The dependencies configured by the process environment.
    pub async fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env()).await
    }

    /// The dependencies configured by `vars`: DynamoDB and Secrets Manager where configured, the
    /// embedded store and the local secrets file otherwise. AWS clients are built only when used, so a
    /// laptop needs no AWS configuration at all.
    pub async fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let config = Config::from_vars(vars)?;
        let needs_aws = config.table_name.is_some() || !config.secret_ids.is_empty();
        let aws = if needs_aws {
            Some(aws_sdk_config(&config).await)
        } else {
            None
        };
        let store: Arc<dyn Store> = match (&config.table_name, &aws) {
            (Some(table), Some(aws)) => Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(aws),
                table.clone(),
            )),
            _ => embedded_store(&config)?,
        };
        Self::with_store(config, store, aws.as_ref())
    }

    /// The dependencies with a given store (tests that share one store between apps).
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Self, ConfigError> {
        let sm = aws.map(aws_sdk_secretsmanager::Client::new);
        let sources = crate::config::SECRET_NAMES
            .iter()
            .map(|name| {
                let source = match (config.secret_ids.get(*name), &sm) {
                    (Some(id), Some(client)) => Source::SecretsManager {
                        client: client.clone(),
                        secret_id: id.clone(),
                    },
                    _ => Source::File(config.secrets_file.clone()),
                };
                (name.to_string(), source)
            })
            .collect();
        let http = crate::http::Http::new(config.http_timeout);
        Ok(Self {
            secrets: Secrets::new(sources, config.secrets_ttl),
            store,
            http,
            config,
        })
    }

    /// Our public base URL: configured, or `https://<API Gateway domain>`. API Gateway always
    /// names its domain, so a request without one (a hand-made event) is refused as bad input.
    pub fn base_url(&self, req: &Request) -> crate::error::Result<Url> {
        if let Some(url) = &self.config.public_base_url {
            return Ok(url.clone());
        }
        req.extensions()
            .get::<RequestInfo>()
            .and_then(|info| info.domain_name.as_deref())
            .and_then(|domain| Url::parse(&format!("https://{domain}")).ok())
            .ok_or_else(|| {
                crate::error::Error::BadRequest(
                    "the request does not name the domain it was sent to (API Gateway's \
                     requestContext.domainName), and PUBLIC_BASE_URL is unset"
                        .into(),
                )
            })
    }

    /// `{base}{path}` as a string.
    pub fn public_url(&self, req: &Request, path: &str) -> crate::error::Result<String> {
        Ok(format!(
            "{}{path}",
            self.base_url(req)?.as_str().trim_end_matches('/')
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Vars;

    /// Building the dependencies, and every platform's context over them, loads no certificate
    /// store for the platform client: only a handler that calls a platform builds it.
    #[tokio::test]
    async fn building_deps_does_not_build_the_http_client() {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = Vars::default();
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
        let platforms = crate::routes::Platforms::from_vars(&vars).await.unwrap();
        assert!(!platforms.deps.http.is_built());
        platforms
            .deps
            .http
            .client()
            .expect("the client builds on first use");
        assert!(platforms.deps.http.is_built());
    }
}
