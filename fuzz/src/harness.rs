//! What the handler-level targets share: one app per process, on the embedded store, with the
//! sample events' configuration and secrets, every platform pointed at a closed port, and a
//! journal of what each request changed in the store.

use gatehouse::config::{Config, Vars};
use gatehouse::routes::Platforms;
use gatehouse::routes::{self, Served};
use gatehouse::store::{Condition, EmbeddedStore, Item, Key, Store, StoreError};
use lambda_http::Request;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Where every platform is said to be: a port nothing listens on, so an outbound call fails at
/// once (502) instead of waiting for a timeout.
const NOWHERE: &str = "http://127.0.0.1:9";

/// A store that remembers, for every key a request wrote or removed, the item that was there
/// before, so that a test can ask what the request changed on balance.
pub struct Journal {
    inner: EmbeddedStore,
    before: Mutex<BTreeMap<Key, Option<Item>>>,
}

impl Journal {
    async fn touch(&self, key: &Key) -> Result<(), StoreError> {
        if self.before.lock().unwrap().contains_key(key) {
            return Ok(());
        }
        let item = self.inner.get(key).await?;
        self.before
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert(item);
        Ok(())
    }

    /// Forgets what was touched: the next request starts a new account.
    pub fn reset(&self) {
        self.before.lock().unwrap().clear();
    }

    /// The keys whose item differs from before the last [`Journal::reset`].
    pub async fn changes(&self) -> Vec<Key> {
        let touched: Vec<(Key, Option<Item>)> = self
            .before
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut changed = Vec::new();
        for (key, before) in touched {
            let now = self
                .inner
                .get(&key)
                .await
                .expect("the embedded store answers");
            if now != before {
                changed.push(key);
            }
        }
        changed
    }
}

#[async_trait::async_trait]
impl Store for Journal {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        self.touch(&item.key).await?;
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &Key,
        set: &serde_json::Map<String, serde_json::Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.touch(key).await?;
        self.inner.update(key, set, condition).await
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.touch(key).await?;
        self.inner.take(key).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(pk).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn transact(&self, writes: &[gatehouse::store::Write]) -> Result<(), StoreError> {
        for write in writes {
            self.touch(write.key()).await?;
        }
        self.inner.transact(writes).await
    }
}

/// The process's app and what the targets need to judge its answers.
pub struct Fixture {
    /// The app, as a Lambda container would hold it.
    pub app: Platforms,
    /// Its store.
    pub journal: Arc<Journal>,
    /// Every secret of `events/secrets.json` (all but the client and key ids): none may appear
    /// in an answer.
    pub secrets: Vec<String>,
    /// The runtime the handlers run on.
    pub runtime: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
}

/// The configuration of `events/local.env`, with the platforms nowhere and the data in `data`.
fn vars(data: &std::path::Path) -> Vars {
    let mut vars = gatehouse_local::events::local_vars(data);
    for (name, path) in [
        ("SESAMI_API_BASE", "/sesami"),
        ("HARAVAN_JWKS_URL", "/haravan/jwks.json"),
        ("HARAVAN_API_BASE", "/haravan"),
        ("SAISON_API_BASE", "/saison"),
        ("MOMO_BASE_URL", "/momo"),
        ("WEBLINK_GUEST_URL", "/weblink/guest"),
        ("WEBLINK_HOST_LOOKUP_URL", "/weblink/portal_config"),
        ("WEBLINK_IDP_BASE", "/weblink/idp/{domain}"),
        ("WEBLINK_JWKS_URL", "/weblink/jwks.json"),
    ] {
        vars.set(name, format!("{NOWHERE}{path}"));
    }
    vars
}

/// The secret strings of a secrets file: every string but the public ids.
fn secret_leaves(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "client_id" | "key_id"))
            .for_each(|(_, v)| secret_leaves(v, out)),
        serde_json::Value::Array(items) => items.iter().for_each(|v| secret_leaves(v, out)),
        _ => {}
    }
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let data = tempfile::tempdir().expect("a temporary directory");
        let vars = vars(data.path());
        let config = Config::from_vars(&vars).expect("the events' configuration is valid");
        let journal = Arc::new(Journal {
            inner: EmbeddedStore::open(data.path().join("store.sqlite3")).expect("a store"),
            before: Mutex::default(),
        });
        let app = Platforms::with_store(&vars, config, journal.clone(), None).expect("an app");
        let secrets_json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(gatehouse_local::events::dir().join("secrets.json"))
                .expect("secrets.json"),
        )
        .expect("secrets.json is JSON");
        let mut secrets = Vec::new();
        secret_leaves(&secrets_json, &mut secrets);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Fixture {
            app,
            journal,
            secrets,
            runtime,
            _data: data,
        }
    })
}

/// What a request did: its answer (status, headers and body as text) and the keys it changed.
pub struct Outcome {
    /// The status.
    pub status: u16,
    /// Headers and body, as text, for the secret check.
    pub text: String,
    /// Store keys whose item changed.
    pub changed: Vec<Key>,
}

impl Fixture {
    /// Runs `function`'s handler on `req` as the edge does, and checks what every answer must satisfy: no panic (the caller
    /// would see it), no 500, no secret in it.
    pub fn call(&self, req: Request, function: Served) -> Outcome {
        let asked = format!(
            "{} {} {:?} ({} bytes: {:?})",
            req.method(),
            req.uri(),
            req.headers(),
            req.body().len(),
            String::from_utf8_lossy(&req.body()[..req.body().len().min(200)])
        );
        self.journal.reset();
        let (resp, changed) = self.runtime.block_on(async {
            let resp = routes::answer(function.format(), function.call(&self.app, &req).await);
            (resp, self.journal.changes().await)
        });
        let status = resp.status().as_u16();
        let mut text = format!("{:?}\n", resp.headers());
        text.push_str(&String::from_utf8_lossy(resp.body().as_ref()));
        assert!(
            status < 500 || status == 502,
            "{asked} answered {status} (only 502, a platform out of reach, may be 5xx): {text}"
        );
        for secret in &self.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{asked}: a secret is in the answer: {text}"
            );
        }
        Outcome {
            status,
            text,
            changed,
        }
    }
}
