//! App and platform credentials: Secrets Manager when deployed, a local JSON file on a laptop.
//!
//! Each secret is a JSON object. A platform's is `{"client_id", "client_secret",
//! "client_secret_previous"?, ...extras}`; the app's own is `{"key_id", "key", "previous_keys"?:
//! [{"id", "key"}]}`, from which the cookie-signing and token-encryption keys are derived (see
//! [`KeyRing`]). The previous secret and previous keys keep a rotation from breaking anything in
//! flight.
//!
//! Values are cached per container for a TTL (default five minutes): a warm invocation makes no
//! Secrets Manager call, and concurrent cold callers share one fetch. If a refresh fails, the last
//! value keeps serving (with a warning) and the refresh is retried shortly, so a Secrets Manager
//! outage does not take down a warm container.

use crate::crypto::KeyRing;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The name of the app's own secret.
pub const APP: &str = "app";

/// Why credentials could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretsError {
    /// No source is configured for this name.
    #[error("no secret is configured for `{0}`")]
    NotConfigured(String),
    /// The source could not be read.
    #[error("secret `{name}` could not be read: {detail}")]
    Unavailable {
        /// The secret's name.
        name: String,
        /// What failed (never the value).
        detail: String,
    },
    /// The secret's JSON is not of the expected shape.
    #[error("secret `{name}` is malformed: {detail}")]
    Malformed {
        /// The secret's name.
        name: String,
        /// What is wrong (never the value).
        detail: String,
    },
}

/// A platform's app credentials. `Debug` shows the client id only.
#[derive(Deserialize)]
pub struct Credentials {
    /// The app's client id at the platform.
    pub client_id: String,
    /// The app's client secret (signs and verifies).
    pub client_secret: SecretString,
    /// The secret before the last rotation: still accepted when verifying.
    #[serde(default)]
    pub client_secret_previous: Option<SecretString>,
    /// Platform-specific extras (e.g. MoMo subscription keys).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The secrets that verify a platform's signature: current first, then previous.
    pub fn verifying_keys(&self) -> Vec<&[u8]> {
        std::iter::once(&self.client_secret)
            .chain(self.client_secret_previous.as_ref())
            .map(|s| s.expose_secret().as_bytes())
            .collect()
    }

    /// `form` with this app's `client_id` and `client_secret` added, for token endpoints that
    /// take the client's credentials in the body.
    pub fn with_client_credentials<'a>(
        &'a self,
        form: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut body = form.to_vec();
        body.push(("client_id", &self.client_id));
        body.push(("client_secret", self.client_secret.expose_secret()));
        body
    }
}

#[derive(Deserialize)]
struct AppSecretJson {
    key_id: String,
    key: SecretString,
    #[serde(default)]
    previous_keys: Vec<PreviousKey>,
}

#[derive(Deserialize)]
struct PreviousKey {
    id: String,
    key: SecretString,
}

/// Where one secret is read from.
#[derive(Clone)]
pub enum Source {
    /// AWS Secrets Manager, by secret id or ARN.
    SecretsManager {
        /// The SDK client, shared.
        client: aws_sdk_secretsmanager::Client,
        /// The secret's id or ARN.
        secret_id: String,
    },
    /// A member of a local JSON file `{"<name>": {...}}`.
    File(PathBuf),
}

/// One secret's cache entry (the shared [`crate::cache::Cache`], under one key).
struct Cell<T> {
    slot: crate::cache::Cache<(), Arc<T>, SecretsError>,
}

impl<T> Default for Cell<T> {
    fn default() -> Self {
        Self {
            slot: crate::cache::Cache::new(),
        }
    }
}

/// Retry a failed refresh after this long while serving the last good value.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl<T> Cell<T> {
    /// The cached value if fresh; else `fetch`, once for all concurrent callers (no lock is
    /// held while it runs). A failed refresh serves the previous value if there is one, and is
    /// retried after [`RETRY_AFTER_FAILURE`]; a failure with nothing to serve is not kept.
    async fn get<F, Fut>(&self, ttl: Duration, fetch: F) -> Result<Arc<T>, SecretsError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, SecretsError>>,
    {
        use crate::cache::Fetched;
        self.slot
            .get(&(), |stale| async move {
                match (fetch().await, stale) {
                    (Ok(value), _) => Fetched::value(Arc::new(value), ttl),
                    (Err(e), Some(value)) => {
                        tracing::warn!(error = %e, "secret refresh failed; serving the cached value");
                        Fetched::value(value, ttl.min(RETRY_AFTER_FAILURE))
                    }
                    (Err(e), None) => Fetched::failed(e),
                }
            })
            .await
    }
}

/// The container's secrets, cached.
pub struct Secrets {
    ttl: Duration,
    sources: HashMap<String, Source>,
    app: Cell<KeyRing>,
    platforms: HashMap<String, Cell<Credentials>>,
}

impl Secrets {
    /// Secrets read from `sources` (by name: [`APP`] and platform names), cached for `ttl`.
    pub fn new(sources: HashMap<String, Source>, ttl: Duration) -> Self {
        let platforms = sources
            .keys()
            .filter(|name| *name != APP)
            .map(|name| (name.clone(), Cell::default()))
            .collect();
        Self {
            ttl,
            sources,
            app: Cell::default(),
            platforms,
        }
    }

    /// The app's key ring.
    pub async fn app_keys(&self) -> Result<Arc<KeyRing>, SecretsError> {
        self.app
            .get(self.ttl, || async {
                let json: AppSecretJson = self.fetch_json(APP).await?;
                let malformed = |detail: String| SecretsError::Malformed {
                    name: APP.into(),
                    detail,
                };
                let keys = std::iter::once((json.key_id.as_str(), &json.key))
                    .chain(json.previous_keys.iter().map(|k| (k.id.as_str(), &k.key)));
                KeyRing::new(keys).map_err(|e| malformed(e.to_string()))
            })
            .await
    }

    /// A platform's credentials.
    pub async fn credentials(&self, platform: &str) -> Result<Arc<Credentials>, SecretsError> {
        let cell = self
            .platforms
            .get(platform)
            .ok_or_else(|| SecretsError::NotConfigured(platform.into()))?;
        cell.get(self.ttl, || self.fetch_json(platform)).await
    }

    /// A secret's JSON as stored, uncached (for operator commands that edit it).
    pub async fn raw_json(
        &self,
        name: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, SecretsError> {
        self.fetch_json(name).await
    }

    /// Replaces a secret's JSON (Secrets Manager `PutSecretValue`, or the local file written
    /// atomically with mode 0600), and forgets the cached value.
    pub async fn write_json(
        &self,
        name: &str,
        value: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), SecretsError> {
        let source = self
            .sources
            .get(name)
            .ok_or_else(|| SecretsError::NotConfigured(name.into()))?;
        let failed = |detail: String| SecretsError::Unavailable {
            name: name.into(),
            detail,
        };
        match source {
            Source::SecretsManager { client, secret_id } => {
                client
                    .put_secret_value()
                    .secret_id(secret_id)
                    .secret_string(serde_json::Value::Object(value.clone()).to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        failed(aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())
                    })?;
            }
            Source::File(path) => {
                let mut all: serde_json::Map<String, serde_json::Value> =
                    match std::fs::read_to_string(path) {
                        Ok(text) => serde_json::from_str(&text)
                            .map_err(|e| failed(format!("{}: {e}", path.display())))?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                        Err(e) => return Err(failed(format!("{}: {e}", path.display()))),
                    };
                all.insert(name.into(), serde_json::Value::Object(value.clone()));
                write_private(path, &all)
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
            }
        }
        if let Some(cell) = self.platforms.get(name) {
            cell.slot.forget(&());
        }
        if name == APP {
            self.app.slot.forget(&());
        }
        Ok(())
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, SecretsError> {
        let source = self
            .sources
            .get(name)
            .ok_or_else(|| SecretsError::NotConfigured(name.into()))?;
        let unavailable = |detail: String| SecretsError::Unavailable {
            name: name.into(),
            detail,
        };
        // serde_json's errors name the position, never the text, so they are safe to report.
        let malformed = |e: serde_json::Error| SecretsError::Malformed {
            name: name.into(),
            detail: e.to_string(),
        };
        match source {
            Source::SecretsManager { client, secret_id } => {
                let out = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .send()
                    .await
                    .map_err(|e| {
                        unavailable(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
                        )
                    })?;
                let text = out
                    .secret_string()
                    .ok_or_else(|| unavailable("the secret has no string value".into()))?;
                serde_json::from_str(text).map_err(malformed)
            }
            Source::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
                let mut all: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text).map_err(malformed)?;
                let value = all
                    .remove(name)
                    .ok_or_else(|| unavailable(format!("{} has no `{name}`", path.display())))?;
                serde_json::from_value(value).map_err(malformed)
            }
        }
    }
}

/// A platform's secret with random development values, shaped as the platform needs it.
fn development_secret(name: &str) -> std::io::Result<serde_json::Value> {
    let random =
        || crate::crypto::random_token(32).map_err(|e| std::io::Error::other(e.to_string()));
    let hex32 = || {
        crate::crypto::random_bytes(16)
            .map(hex::encode)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    Ok(match name {
        // MoMo: an API user (a uuid) and key, and a subscription key per product.
        "momo" => serde_json::json!({
            "client_id": uuid::Uuid::new_v4().to_string(),
            "client_secret": hex32()?,
            "subscription_keys": {
                "collection": hex32()?, "disbursement": hex32()?, "remittance": hex32()?,
            },
        }),
        "haravan" => serde_json::json!({
            "client_id": format!("gatehouse-local-{name}"),
            "client_secret": random()?,
            "webhook_verify_token": random()?,
        }),
        _ => serde_json::json!({
            "client_id": format!("gatehouse-local-{name}"),
            "client_secret": random()?,
        }),
    })
}

/// Creates the local secrets file with random development values, or adds the names it lacks.
/// The file is written with mode 0600: it holds keys, even if only development ones.
pub fn ensure_local_file(path: &Path, platforms: &[&str]) -> std::io::Result<()> {
    let mut all: serde_json::Map<String, serde_json::Value> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(e),
    };
    let random =
        || crate::crypto::random_token(32).map_err(|e| std::io::Error::other(e.to_string()));
    let before = all.len();
    if !all.contains_key(APP) {
        all.insert(
            APP.into(),
            serde_json::json!({ "key_id": "dev1", "key": random()? }),
        );
    }
    for name in platforms {
        if !all.contains_key(*name) {
            all.insert((*name).into(), development_secret(name)?);
        }
    }
    if all.len() == before && path.exists() {
        return Ok(());
    }
    write_private(path, &all)
}

/// Writes the secrets file atomically (temp file, fsync, rename) with mode 0600.
fn write_private(
    path: &Path,
    all: &serde_json::Map<String, serde_json::Value>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(serde_json::to_string_pretty(all)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn credentials_debug_is_redacted() {
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "client_id": "id-1", "client_secret": "s3cr3t-value", "client_secret_previous": "old-s3cr3t"
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("id-1"));
        assert!(!shown.contains("s3cr3t"));
        assert_eq!(
            c.verifying_keys(),
            vec![b"s3cr3t-value".as_slice(), b"old-s3cr3t"]
        );
    }

    #[tokio::test]
    async fn local_file_is_created_private_and_completed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secrets.json");
        ensure_local_file(&path, &["sesami"]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_to_string(&path).unwrap();
        ensure_local_file(&path, &["sesami", "haravan"]).unwrap();
        let second: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let first: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            first["sesami"], second["sesami"],
            "existing values are kept"
        );
        assert!(second["haravan"]["client_secret"].is_string());

        let sources = ["app", "sesami", "haravan"]
            .into_iter()
            .map(|n| (n.to_string(), Source::File(path.clone())))
            .collect();
        let secrets = Secrets::new(sources, Duration::from_secs(60));
        assert!(secrets.app_keys().await.is_ok());
        let c = secrets.credentials("sesami").await.unwrap();
        assert_eq!(c.client_id, "gatehouse-local-sesami");
        assert!(matches!(
            secrets.credentials("nope").await,
            Err(SecretsError::NotConfigured(_))
        ));
    }

    #[tokio::test]
    async fn cell_fetches_once_then_serves_stale_on_failure() {
        let cell: Cell<u32> = Cell::default();
        let calls = AtomicUsize::new(0);
        // An entry's lifetime is set when it is fetched: short, so that it expires below.
        let ttl = Duration::from_millis(100);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, SecretsError>(7)
        };
        let (a, b) = tokio::join!(cell.get(ttl, fetch), cell.get(ttl, fetch));
        assert_eq!((*a.unwrap(), *b.unwrap()), (7, 7));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "concurrent callers share one fetch"
        );
        // Expired and failing: the last value serves.
        tokio::time::sleep(ttl * 2).await;
        let got = cell
            .get(Duration::ZERO, || async {
                Err(SecretsError::NotConfigured("x".into()))
            })
            .await
            .unwrap();
        assert_eq!(*got, 7);
        // Nothing cached and failing: the error surfaces.
        let empty: Cell<u32> = Cell::default();
        assert!(
            empty
                .get(ttl, || async {
                    Err(SecretsError::NotConfigured("x".into()))
                })
                .await
                .is_err()
        );
    }
}
