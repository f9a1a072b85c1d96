//! A local server per test (its own data dir, and optionally its own DynamoDB table on moto),
//! and a minimal browser: a cookie jar, no redirects followed, so each hop can be asserted.

use gatehouse::config::Vars;
use gatehouse_local::faultproxy::FaultProxy;
use gatehouse_local::server::{self, LocalServer};
use std::collections::HashMap;

/// A local server and what it stands on.
pub struct Harness {
    pub server: LocalServer,
    _dir: tempfile::TempDir,
    /// On DynamoDB, what the app reaches moto through: one request at a time (see
    /// [`Backend::Dynamo`]).
    _proxy: Option<FaultProxy>,
}

/// The table of a server on DynamoDB, reached around the fault proxy: what the tests read and
/// seed directly, not through the app.
pub struct Table {
    /// The table as a store (the app's item layout), on a client of the proxy's direct address.
    pub store: gatehouse::store::DynamoStore,
}

/// Which store the server runs on.
pub enum Backend {
    Embedded,
    /// A fresh table on the DynamoDB-compatible server (moto, which the test command runs
    /// through `tests/moto_server.py` so that concurrent requests meet DynamoDB's atomicity).
    Dynamo,
}

/// The handlers' tests run behind the local authorizer as API Gateway runs them behind its own:
/// given authorized requests. Unsigned requests from this machine pass as the loopback caller
/// (a signed one is still checked); tests/it/client.rs runs the authorizer as a developer gets
/// it (`GATEHOUSE_LOCAL_IAM=sigv4`), refusing what is unsigned.
fn loopback_iam(vars: &mut Vars) {
    vars.set_default("GATEHOUSE_LOCAL_IAM", "loopback");
}

impl Harness {
    /// A server on the embedded store with a fresh data dir.
    pub async fn embedded() -> Harness {
        Self::start(Backend::Embedded, Vars::default())
            .await
            .expect("embedded harness")
    }

    /// A server on `backend` with extra `vars`. `None` when DynamoDB was asked for but no
    /// server is configured (the test is then skipped, or fails under GATEHOUSE_REQUIRE_MOTO).
    pub async fn start(backend: Backend, mut vars: Vars) -> Option<Harness> {
        let dir = tempfile::tempdir().expect("tempdir");
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
        loopback_iam(&mut vars);
        let Backend::Dynamo = backend else {
            let server = server::start(0, vars).await.expect("local server starts");
            return Some(Harness {
                server,
                _dir: dir,
                _proxy: None,
            });
        };
        let client = crate::support::dynamo_client().await?;
        let table = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
        gatehouse::store::create_table(&client, &table)
            .await
            .expect("create table");
        vars.set("TABLE_NAME", table);
        let server = server::start(0, vars).await.expect("local server starts");
        Some(Harness {
            server,
            _dir: dir,
            _proxy: None,
        })
    }

    /// A server on the embedded store of a fresh data dir, seen through `wrap` (a store of the
    /// test's own that counts, slows or records calls), and that wrapper.
    pub async fn on_wrapped_embedded<S, F>(vars: Vars, wrap: F) -> (Harness, std::sync::Arc<S>)
    where
        S: gatehouse::store::Store,
        F: FnOnce(gatehouse::store::EmbeddedStore) -> S + Send + 'static,
    {
        let slot: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<S>>> = Default::default();
        let set = slot.clone();
        let h = Self::start_with(vars, move |vars| async move {
            let config = gatehouse::config::Config::from_vars(&vars)?;
            let inner =
                gatehouse::store::EmbeddedStore::open(config.data_dir.join("store.sqlite3"))?;
            let store = std::sync::Arc::new(wrap(inner));
            let _ = set.set(store.clone());
            Ok(gatehouse::routes::Platforms::with_store(
                &vars, config, store, None,
            )?)
        })
        .await;
        let store = slot.get().expect("the app was built").clone();
        (h, store)
    }

    /// A server on a fresh data dir whose app `build` makes from the completed configuration
    /// (e.g. with a store of the test's own).
    pub async fn start_with<F, Fut>(mut vars: Vars, build: F) -> Harness
    where
        F: FnOnce(Vars) -> Fut,
        Fut: std::future::Future<
                Output = Result<gatehouse::routes::Platforms, Box<dyn std::error::Error>>,
            >,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
        loopback_iam(&mut vars);
        let server = server::start_with(0, vars, build)
            .await
            .expect("local server starts");
        Harness {
            server,
            _dir: dir,
            _proxy: None,
        }
    }

    /// A server whose app keeps its store in a fresh table on the DynamoDB-compatible server,
    /// reached through a fault proxy seeded with `seed` (the app's own AWS configuration and
    /// timeouts otherwise). Also a client of the table that goes around the faults (the proxy's
    /// direct address). `None` when no such server is configured (the test is skipped).
    pub async fn on_proxied_dynamo(vars: Vars, seed: u64) -> Option<(Harness, FaultProxy, Table)> {
        let sdk = crate::support::sdk_config().await?;
        let proxy = crate::support::fault_proxy(seed).await?;
        let name = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
        let direct = crate::support::dynamo_client_at(
            &sdk,
            &proxy.direct_endpoint(),
            3,
            std::time::Duration::from_secs(10),
        );
        gatehouse::store::create_table(&direct, &name)
            .await
            .expect("create table");
        let endpoint = proxy.endpoint();
        let table = name.clone();
        let h = Harness::start_with(vars, move |vars| async move {
            let config = gatehouse::config::Config::from_vars(&vars)?;
            let sdk = gatehouse::context::aws_sdk_config(&config).await;
            let client = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&sdk)
                    .endpoint_url(endpoint)
                    .build(),
            );
            let store = std::sync::Arc::new(gatehouse::store::DynamoStore::new(client, table));
            Ok(gatehouse::routes::Platforms::with_store(
                &vars,
                config,
                store,
                Some(&sdk),
            )?)
        })
        .await;
        let store = gatehouse::store::DynamoStore::new(direct, name);
        Some((h, proxy, Table { store }))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base())
    }

    /// The live items of a kind (`state#sesami`: every item keyed `state#sesami#…`), or of one
    /// partition (`session#haravan#<org>`); see [`of_kind`].
    pub async fn items(&self, kind: &str) -> Vec<gatehouse::store::Item> {
        of_kind(self.server.app.store.as_ref(), kind).await
    }

    /// Every row of the embedded store, expired or not, in key order: a snapshot of everything
    /// stored, to compare before and after a request. Read through a read-only connection of
    /// its own, so it sees what the server's connection committed and cannot change anything.
    /// Only for a server on the embedded store.
    pub fn stored(&self) -> Vec<StoredRow> {
        assert!(
            self.server.app.config.table_name.is_none(),
            "stored() reads the embedded store"
        );
        let path = self.server.app.config.data_dir.join("store.sqlite3");
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the embedded store read-only");
        let mut statement = conn
            .prepare("SELECT pk, sk, attrs, expires_at FROM items ORDER BY pk, sk")
            .expect("prepare");
        statement
            .query_map([], |row| {
                Ok(StoredRow {
                    pk: row.get(0)?,
                    sk: row.get(1)?,
                    attrs: row.get(2)?,
                    expires_at: row.get(3)?,
                })
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Every secret value in the server's local secrets file: the platforms' client secrets
    /// (current and previous), the app's keys, verify tokens, subscription keys and MoMo's API
    /// key; everything but ids. None of them may ever appear in a response.
    pub fn secret_values(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.server.app.config.secrets_file)
            .expect("read the secrets file");
        let json: serde_json::Value = serde_json::from_str(&text).expect("secrets are JSON");
        let mut out = Vec::new();
        collect_secret_values(&json, None, &mut out);
        assert!(
            out.len() >= 5,
            "the secrets file holds the app key and the platforms' secrets: {} values",
            out.len()
        );
        out
    }
}

/// The string leaves of a secrets document, less ids (`client_id`, `key_id`, `id`).
fn collect_secret_values(value: &serde_json::Value, name: Option<&str>, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_secret_values(v, Some(k), out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                collect_secret_values(v, name, out);
            }
        }
        serde_json::Value::String(s)
            if !matches!(name, Some("client_id" | "key_id" | "id")) && s.len() >= 8 =>
        {
            out.push(s.clone());
        }
        _ => {}
    }
}

/// One row of the embedded store, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub pk: String,
    pub sk: String,
    pub attrs: String,
    pub expires_at: Option<i64>,
}

/// One response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: String,
    pub body: String,
}

/// A browser without redirects: cookies are kept by name, as a browser keeps them per host.
#[derive(Default)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
    client: Option<reqwest::Client>,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            cookies: HashMap::new(),
            client: Some(crate::support::http_without_redirects()),
        }
    }

    fn client(&self) -> &reqwest::Client {
        self.client
            .as_ref()
            .expect("browser built with Browser::new")
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        let content_type = header("content-type").unwrap_or_default();
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || c.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page {
            status,
            location,
            content_type,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let resp = self
            .client()
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.read(resp).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let resp = self
            .client()
            .post(url)
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.read(resp).await
    }

    /// POSTs raw bytes with a content type.
    pub async fn post(&mut self, url: &str, content_type: &str, body: Vec<u8>) -> Page {
        let resp = self
            .client()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        self.read(resp).await
    }
}

/// The value of `name` in a URL's query.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A form's `action` resolved against the page it came from, as a browser does.
pub fn resolve(base: &str, action: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(action))
        .map(|u| u.to_string())
        .expect("form action resolves")
}

/// The live items of `kind` ([`gatehouse_local::server::of_kind`]), in key order.
pub async fn of_kind(
    store: &dyn gatehouse::store::Store,
    kind: &str,
) -> Vec<gatehouse::store::Item> {
    gatehouse_local::server::of_kind(store, kind)
        .await
        .expect("scan")
}

/// What the app's back end does to connect one of its users to Saison: a connect link
/// (`POST /v1/connect-links`) whose `return_to` is the local server's `/done`. Returns the
/// link's URL.
pub async fn saison_link(h: &Harness, end_user: &str) -> String {
    let page = Browser::new()
        .post(
            &h.url("/v1/connect-links"),
            "application/json",
            serde_json::json!({
                "platform": "saison",
                "end_user": end_user,
                "return_to": h.url("/done"),
            })
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.body);
    let answer: serde_json::Value = serde_json::from_str(&page.body).expect("JSON");
    answer["url"].as_str().expect("a url").to_owned()
}
