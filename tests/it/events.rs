//! Every file in events/ through its handler, as Lambda would deliver it: the JSON event is
//! parsed by the same adapter the binaries use, dispatched by template.yaml's route table, and
//! the status and the store effect are asserted. The configuration is events/local.env's.

use gatehouse::App;
use gatehouse::config::Vars;
use gatehouse::store::{Condition, Item, Key, now};
use gatehouse_local::routes::{self, Resolved};
use gatehouse_local::simulators::sesami::SesamiSim;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const STATE_ID: &str = "events-state-0123456789abcdefghijklmnopqrstu";
const CODE: &str = "events-code-0123456789";
const SHOP: &str = "events-shop";

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// An app configured as events/local.env says, on a fresh embedded store, with the Sesami
/// simulator (over real HTTP) standing in for Sesami's token endpoint.
struct EventBench {
    app: Arc<App>,
    sesami: SesamiSim,
    _dir: tempfile::TempDir,
}

impl EventBench {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = std::fs::read_to_string(events_dir().join("local.env")).unwrap();
        let secrets: Value = serde_json::from_str(
            &std::fs::read_to_string(events_dir().join("secrets.json")).unwrap(),
        )
        .unwrap();
        let sesami = SesamiSim::new(
            secrets["sesami"]["client_id"].as_str().unwrap(),
            secrets["sesami"]["client_secret"].as_str().unwrap(),
            "https://abc123.execute-api.us-east-1.amazonaws.com",
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_base = format!("http://{}", listener.local_addr().unwrap());
        let router = sesami.router();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let mut vars = Vars::default();
        for line in env
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (k, v) = line.split_once('=').expect("KEY=VALUE");
            vars.set(k, v);
        }
        vars.set(
            "GATEHOUSE_SECRETS_FILE",
            events_dir().join("secrets.json").to_string_lossy(),
        );
        vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
        vars.set("SESAMI_API_BASE", sim_base);
        let app = Arc::new(App::from_vars(&vars).await.unwrap());
        assert!(
            app.config.public_base_url.is_none(),
            "events derive the base URL"
        );
        Self {
            app,
            sesami,
            _dir: dir,
        }
    }

    /// Runs one event file; returns the status and the JSON API Gateway would get back.
    async fn run(&self, name: &str) -> (u16, Value) {
        let text = std::fs::read_to_string(events_dir().join(format!("{name}.json"))).unwrap();
        let all = routes::all();
        let resp = match gatehouse::lambda::request_from_json(&text) {
            Ok(req) => match routes::resolve(&all, req.method(), req.uri().path()) {
                Resolved::Route(route) => (route.handler)(&self.app, req).await,
                _ => panic!("{name}: no route"),
            },
            Err(e) => e.into_response(gatehouse::web::Format::Json),
        };
        let out = gatehouse::lambda::response_into_event(resp);
        let status = out.status_code as u16;
        (status, serde_json::to_value(out).unwrap())
    }

    async fn count(&self, pk: &str) -> usize {
        self.app.store.query(pk).await.unwrap().len()
    }

    async fn seed_state(&self) {
        let mut attrs = Map::new();
        attrs.insert("shop_id".into(), json!(SHOP));
        let item = Item::new(Key::new("state#sesami", STATE_ID), attrs).expiring_at(now() + 600);
        self.app.store.put(&item, Condition::Always).await.unwrap();
    }

    async fn seed_install(&self) {
        let mut attrs = Map::new();
        attrs.insert("shop_id".into(), json!(SHOP));
        attrs.insert("token_sealed".into(), json!("v1.x.y"));
        let item = Item::new(gatehouse::sesami::install_key(SHOP), attrs);
        self.app.store.put(&item, Condition::Always).await.unwrap();
    }
}

#[tokio::test]
async fn every_event_file_is_covered_here() {
    let mut names: Vec<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && n != "secrets.json")
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    names.sort();
    let mut covered: Vec<&str> = COVERED.to_vec();
    covered.sort();
    assert_eq!(
        names, covered,
        "each events/ file has a case in tests/it/events.rs"
    );
}

const COVERED: &[&str] = &[
    "sesami-install",
    "sesami-install-bad-hmac",
    "sesami-install-stale",
    "sesami-install-missing-shop",
    "sesami-callback",
    "sesami-callback-no-cookie",
    "sesami-callback-bad-hmac",
    "sesami-webhooks-uninstall",
    "sesami-webhooks-bad-hmac",
    "sesami-webhooks-not-json",
    "sesami-webhooks-bad-base64",
];

#[tokio::test]
async fn sesami_install_events() {
    let b = EventBench::new().await;
    let (status, out) = b.run("sesami-install").await;
    assert_eq!(status, 302, "{out}");
    let location = out["headers"]["location"].as_str().unwrap();
    assert!(location.contains(
        "redirectUri=https%3A%2F%2Fabc123.execute-api.us-east-1.amazonaws.com%2Fsesami%2Fcallback"
    ));
    let cookie = out["cookies"][0].as_str().unwrap();
    assert!(cookie.starts_with("__Host-gh-sesami-state="), "{cookie}");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"));
    assert_eq!(b.count("state#sesami").await, 1);

    for (name, expected) in [
        ("sesami-install-bad-hmac", 401),
        ("sesami-install-stale", 401),
        ("sesami-install-missing-shop", 400),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
        assert!(
            out["cookies"].as_array().unwrap().is_empty(),
            "{name}: no cookie"
        );
    }
    assert_eq!(b.count("state#sesami").await, 1, "refusals started nothing");
}

#[tokio::test]
async fn sesami_callback_events() {
    let b = EventBench::new().await;
    b.seed_state().await;
    b.sesami.register_code(CODE, SHOP);

    for (name, expected) in [
        ("sesami-callback-no-cookie", 400),
        ("sesami-callback-bad-hmac", 401),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
    }
    assert_eq!(b.count("install#sesami").await, 0);
    assert_eq!(
        b.count("state#sesami").await,
        1,
        "refusals consumed no state"
    );

    let (status, out) = b.run("sesami-callback").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(b.count("install#sesami").await, 1);
    assert_eq!(b.count("state#sesami").await, 0);

    // Replay: the state is consumed, nothing is exchanged again.
    let (status, out) = b.run("sesami-callback").await;
    assert_eq!(status, 409, "{out}");
    assert_eq!(b.sesami.token_requests(), 1);
    assert_eq!(b.count("install#sesami").await, 1);
}

#[tokio::test]
async fn sesami_webhook_events() {
    let b = EventBench::new().await;
    for (name, expected) in [
        ("sesami-webhooks-uninstall", 404),
        ("sesami-webhooks-bad-hmac", 401),
        ("sesami-webhooks-not-json", 400),
        ("sesami-webhooks-bad-base64", 400),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
        assert_eq!(out["headers"]["content-type"], "application/json");
    }
    assert_eq!(b.count("webhook#sesami").await, 0);

    b.seed_install().await;
    let (status, out) = b.run("sesami-webhooks-bad-hmac").await;
    assert_eq!(status, 401, "{out}");
    assert_eq!(
        b.count("install#sesami").await,
        1,
        "a bad signature removes nothing"
    );
    let (status, out) = b.run("sesami-webhooks-uninstall").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(b.count("install#sesami").await, 0);
    let (status, out) = b.run("sesami-webhooks-uninstall").await;
    assert_eq!(status, 200, "a replay is acknowledged: {out}");
    assert!(out["body"].as_str().unwrap().contains("duplicate"));
}
