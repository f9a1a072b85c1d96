//! Every file in events/ through its handler, as Lambda would deliver it: the JSON event is
//! parsed by the same adapter the binaries use, dispatched by template.yaml's route table, and
//! the status and the store effect are asserted. The configuration is events/local.env's.

use crate::harness::query_param;
use crate::health::connections_refresh_scenario;
use gatehouse::config::Vars;
use gatehouse::haravan::{install_key, org_sessions_partition, sid_partition};
use gatehouse::refresh::{Grant, seal};
use gatehouse::routes::Platforms;
use gatehouse::routes::{self, Resolved};
use gatehouse::store::{Condition, Item, Key, now};
use gatehouse_local::events::dir as events_dir;
use gatehouse_simulators::sesami::SesamiSim;
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

const STATE_ID: &str = "events-state-0123456789abcdefghijklmnopqrstu";
const CODE: &str = "events-code-0123456789";
const SHOP: &str = "events-shop";

// The Haravan events' ids, as events/generate.py fixes them.
const ORG_INSTALLED: &str = "1000444444";
const ORG_NEW: &str = "1000555555";
const ORG_OTHER: &str = "1000777777";
const ORG_GONE: &str = "1000888888";
const SID_INSTALLED: &str = "5c0a1f6e2b9d4e8a9f3c7b1d2e4f6a80";
const SID_LOGOUT: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
const AUTHORIZE: &str = "https://accounts.haravan.com/connect/authorize";
const EVENTS_BASE: &str = "https://abc123.execute-api.us-east-1.amazonaws.com";

/// The state of each Haravan callback event: (id, purpose, orgid). Its nonce is the id with
/// `-state-` replaced by `-nonce-`, as generate.py makes it.
const HARAVAN_STATES: &[(&str, &str, Option<&str>)] = &[
    ("events-haravan-state-login-installed", "login", None),
    ("events-haravan-state-login-new-admin", "login", None),
    ("events-haravan-state-login-staff", "login", None),
    ("events-haravan-state-login-bad-signature", "login", None),
    ("events-haravan-state-login-expired", "login", None),
    ("events-haravan-state-login-wrong-nonce", "login", None),
    ("events-haravan-state-install", "install", Some(ORG_NEW)),
    (
        "events-haravan-state-install-wrong-org",
        "install",
        Some(ORG_NEW),
    ),
];

/// The store key of the state of `case` (a name in generate.py's `STATES`).
fn haravan_state_key(case: &str) -> Key {
    let id = format!("events-haravan-state-{case}");
    assert!(HARAVAN_STATES.iter().any(|(s, _, _)| *s == id), "{id}");
    Key::single("state#haravan", &id)
}

/// An app configured as events/local.env says, on a fresh embedded store, with the Sesami
/// simulator (over real HTTP) standing in for Sesami's token endpoint, and events/haravan-jwks.json
/// served over real HTTP as Haravan's signing keys (nothing else of Haravan is served there: the
/// app page's shop call gets a 404).
pub(crate) struct EventBench {
    /// The app the cases seed and inspect the store with (and, without [`Self::functions`], the
    /// one every event runs on).
    pub(crate) app: Arc<Platforms>,
    /// The app each function's events run on, by binary name, when the bench was built with
    /// [`Self::with_apps`] (the IAM tests: one principal per function).
    functions: HashMap<String, Arc<Platforms>>,
    /// The functions that served an event.
    dispatched: Mutex<BTreeSet<String>>,
    sesami: SesamiSim,
    pub(crate) saison: gatehouse_simulators::saison::SaisonSim,
    momo: gatehouse_simulators::momo::MomoSim,
    momo_base: String,
    weblink: gatehouse_simulators::weblink::WeblinkSim,
    _dir: tempfile::TempDir,
}

/// The apps of a bench: the one that seeds and inspects, and one per function binary (may be
/// empty: then every event runs on the first).
pub(crate) type Apps = (Arc<Platforms>, HashMap<String, Arc<Platforms>>);

/// One case of this module, runnable on any bench (tests/it/iam.rs runs each under IAM).
pub(crate) type Scenario =
    for<'a> fn(&'a EventBench) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! scenario {
    ($name:ident) => {
        (stringify!($name), |b| {
            Box::pin($name(b)) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
    };
}

/// Every case that runs events, by name.
pub(crate) fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        scenario!(sesami_install_scenario),
        scenario!(sesami_callback_scenario),
        scenario!(sesami_webhook_scenario),
        scenario!(haravan_login_start_scenario),
        scenario!(haravan_login_callback_scenario),
        scenario!(haravan_install_callback_scenario),
        scenario!(haravan_webhook_scenario),
        scenario!(haravan_logout_scenario),
        scenario!(saison_scenario),
        scenario!(momo_scenario),
        scenario!(weblink_scenario),
        scenario!(proxy_scenario),
        scenario!(connections_scenario),
        scenario!(events_read_scenario),
        scenario!(connections_refresh_scenario),
    ]
}

impl EventBench {
    pub(crate) async fn new() -> Self {
        Self::with_apps(async |vars| {
            (
                Arc::new(Platforms::from_vars(&vars).await.unwrap()),
                HashMap::new(),
            )
        })
        .await
    }

    /// A bench whose apps `make` builds from the events' configuration (simulators' URLs
    /// included).
    pub(crate) async fn with_apps(make: impl AsyncFnOnce(Vars) -> Apps) -> Self {
        let dir = tempfile::tempdir().unwrap();
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

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let saison_base = format!("http://{}", listener.local_addr().unwrap());
        let saison = gatehouse_simulators::saison::SaisonSim::new(
            secrets["saison"]["client_id"].as_str().unwrap(),
            secrets["saison"]["client_secret"].as_str().unwrap(),
            "https://abc123.execute-api.us-east-1.amazonaws.com",
            &saison_base,
        );
        let router = saison.router();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let momo_base = format!("http://{}", listener.local_addr().unwrap());
        let sub_key = secrets["momo"]["subscription_keys"]["collection"]
            .as_str()
            .unwrap();
        let momo = gatehouse_simulators::momo::MomoSim::new(
            &[("collection", sub_key)],
            "https://abc123.execute-api.us-east-1.amazonaws.com",
        );
        momo.register_api_user(
            secrets["momo"]["client_id"].as_str().unwrap(),
            secrets["momo"]["client_secret"].as_str().unwrap(),
            "abc123.execute-api.us-east-1.amazonaws.com",
        );
        // The callbacks would go to the events' API Gateway domain: never, in a test.
        momo.set_callback_delay(std::time::Duration::from_secs(24 * 3600));
        let router = momo.router();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let weblink_base = format!("http://{}", listener.local_addr().unwrap());
        let weblink = gatehouse_simulators::weblink::WeblinkSim::new(
            &weblink_base,
            "https://abc123.execute-api.us-east-1.amazonaws.com",
        );
        let router = weblink.router();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let jwks = std::fs::read_to_string(events_dir().join("haravan-jwks.json")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let haravan_base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().route(
            "/haravan-jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { ([("content-type", "application/json")], jwks) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });

        let mut vars = gatehouse_local::events::local_vars(dir.path());
        vars.set("SESAMI_API_BASE", sim_base);
        vars.set("SAISON_API_BASE", saison_base);
        vars.set("MOMO_BASE_URL", &momo_base);
        vars.set("WEBLINK_GUEST_URL", format!("{weblink_base}/portal/guest"));
        vars.set(
            "WEBLINK_HOST_LOOKUP_URL",
            format!("{weblink_base}/portal_config"),
        );
        vars.set("WEBLINK_IDP_BASE", format!("{weblink_base}/idp/{{domain}}"));
        vars.set("WEBLINK_API_BASE", format!("{weblink_base}/api"));
        vars.set(
            "WEBLINK_JWKS_URL",
            format!("{weblink_base}/.well-known/jwks.json"),
        );
        assert!(
            vars.get("HARAVAN_JWKS_URL").is_some(),
            "local.env names the JWKS"
        );
        vars.set(
            "HARAVAN_JWKS_URL",
            format!("{haravan_base}/haravan-jwks.json"),
        );
        vars.set("HARAVAN_API_BASE", format!("{haravan_base}/api"));
        let (app, functions) = make(vars).await;
        for app in functions.values().chain([&app]) {
            assert!(
                app.config.public_base_url.is_none(),
                "events derive the base URL"
            );
        }
        Self {
            app,
            functions,
            dispatched: Mutex::new(BTreeSet::new()),
            sesami,
            saison,
            momo,
            momo_base,
            weblink,
            _dir: dir,
        }
    }

    /// Runs one event file on its function's app; returns the status and the JSON API Gateway
    /// would get back.
    async fn run(&self, name: &str) -> (u16, Value) {
        let text = std::fs::read_to_string(events_dir().join(format!("{name}.json"))).unwrap();
        let all = routes::all();
        let resp = match gatehouse::lambda::request_from_json(&text) {
            Ok(req) => match routes::resolve(&all, req.method(), req.uri().path()) {
                Resolved::Route(route) => {
                    let name = route.function_name();
                    let app = self.functions.get(name).unwrap_or(&self.app);
                    self.dispatched.lock().unwrap().insert(name.to_owned());
                    routes::answer(route.format(), route.function.call(app, &req).await)
                }
                _ => panic!("{name}: no route"),
            },
            Err(e) => routes::answer(gatehouse::web::Format::Json, Err(e)),
        };
        let out = gatehouse::lambda::response_into_event(resp);
        let status = out.status_code as u16;
        (status, serde_json::to_value(out).unwrap())
    }

    /// The app of `function` (a binary that serves no route, such as the MoMo reconciler),
    /// noted as having run.
    pub(crate) fn function_app(&self, function: &str) -> &Arc<Platforms> {
        self.dispatched.lock().unwrap().insert(function.to_owned());
        self.functions.get(function).unwrap_or(&self.app)
    }

    /// The functions that served an event so far.
    pub(crate) fn dispatched(&self) -> BTreeSet<String> {
        self.dispatched.lock().unwrap().clone()
    }

    async fn count(&self, kind: &str) -> usize {
        crate::harness::of_kind(self.app.store.as_ref(), kind)
            .await
            .len()
    }

    async fn seed_state(&self) {
        let mut attrs = Map::new();
        attrs.insert("shop_id".into(), json!(SHOP));
        let item = Item::new(Key::single("state#sesami", STATE_ID), attrs).expiring_at(now() + 600);
        self.app.store.put(&item, Condition::Always).await.unwrap();
    }

    async fn seed_install(&self) {
        let mut attrs = Map::new();
        attrs.insert("shop_id".into(), json!(SHOP));
        attrs.insert("token_sealed".into(), json!("v1.x.y"));
        let item = Item::new(gatehouse::sesami::install_key(SHOP), attrs);
        self.app.store.put(&item, Condition::Always).await.unwrap();
    }

    async fn exists(&self, key: &Key) -> bool {
        self.app.store.get(key).await.unwrap().is_some()
    }

    /// The state item of every Haravan callback event, as `flow::begin` would have stored it.
    async fn seed_haravan_states(&self) {
        for (id, purpose, orgid) in HARAVAN_STATES {
            let mut attrs = Map::new();
            attrs.insert("nonce".into(), json!(id.replace("-state-", "-nonce-")));
            attrs.insert("purpose".into(), json!(purpose));
            if let Some(org) = orgid {
                attrs.insert("orgid".into(), json!(org));
            }
            let item = Item::new(Key::single("state#haravan", id), attrs).expiring_at(now() + 600);
            self.app.store.put(&item, Condition::Always).await.unwrap();
        }
    }

    /// An install as the install callback stores it, its tokens sealed with the app's keys.
    async fn seed_haravan_install(&self, orgid: &str) {
        let key = install_key(orgid);
        let keys = self.app.secrets.app_keys().await.unwrap();
        let mut attrs = Map::new();
        attrs.insert("orgid".into(), json!(orgid));
        attrs.insert("orgname".into(), json!(format!("events-org-{orgid}")));
        attrs.insert("installed_by".into(), json!("200000099999"));
        attrs.insert("installed_at".into(), json!(now()));
        attrs.insert("scope".into(), json!("openid org grant_service"));
        let grant = Grant {
            access_token: SecretString::from(format!("events-access-{orgid}")),
            refresh_token: Some(SecretString::from(format!("events-refresh-{orgid}"))),
            expires_in: 86_400,
            extra: Vec::new(),
        };
        seal(&keys, &key, &grant, &mut attrs).unwrap();
        attrs.insert("webhooks_subscribed".into(), json!(true));
        let item = Item::new(key, attrs);
        self.app.store.put(&item, Condition::Always).await.unwrap();
    }

    /// A session as `haravan::start_session` writes it: the session and its sid index.
    async fn seed_haravan_session(&self, orgid: &str, session_id: &str, sid: &str) {
        let mut attrs = Map::new();
        attrs.insert("orgid".into(), json!(orgid));
        attrs.insert("sub".into(), json!("200000099999"));
        attrs.insert("sid".into(), json!(sid));
        attrs.insert("name".into(), json!("Events User"));
        let expires = now() + 3600;
        let session = Item::new(Key::new(org_sessions_partition(orgid), session_id), attrs)
            .expiring_at(expires);
        self.app
            .store
            .put(&session, Condition::Absent)
            .await
            .unwrap();
        let index = Item::new(
            Key::new(sid_partition(sid), format!("{orgid}#{session_id}")),
            Map::new(),
        )
        .expiring_at(expires);
        self.app.store.put(&index, Condition::Always).await.unwrap();
    }
}

#[tokio::test]
async fn every_event_file_is_covered_here() {
    let mut names: Vec<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && n != "secrets.json" && n != "haravan-jwks.json")
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
    "sesami-proxy",
    "sesami-proxy-no-iam",
    "haravan-proxy",
    "haravan-proxy-escape",
    "saison-proxy",
    "momo-proxy",
    "weblink-proxy",
    "weblink-guest-token",
    "weblink-guest-token-not-allowed",
    "weblink-guest-token-not-json",
    "weblink-login",
    "weblink-login-not-allowed",
    "weblink-callback-no-cookie",
    "weblink-callback-unknown-state",
    "weblink-callback-foreign-state",
    "weblink-refresh",
    "weblink-refresh-no-session",
    "momo-requesttopay",
    "momo-requesttopay-invalid-amount",
    "momo-requesttopay-not-json",
    "momo-callback",
    "momo-callback-post",
    "momo-callback-unknown",
    "momo-callback-malformed",
    "saison-authorize",
    "saison-authorize-unknown-member",
    "saison-authorize-link",
    "connect-links",
    "connect-links-wrong-platform",
    "connect-links-foreign-return-to",
    "connect-links-no-iam",
    "connections-list",
    "connections-list-end-user",
    "connections-list-no-iam",
    "sesami-connections",
    "sesami-connections-token",
    "haravan-connections",
    "haravan-connections-token",
    "haravan-connections-unknown",
    "saison-connections",
    "saison-connections-token",
    "momo-connections-token",
    "weblink-connections",
    "weblink-connections-token",
    "weblink-connections-no-iam",
    "saison-callback",
    "saison-callback-no-cookie",
    "saison-callback-missing-code",
    "saison-callback-denied",
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
    "haravan-login-start",
    "haravan-login-start-orgid",
    "haravan-login-callback-installed",
    "haravan-login-callback-new-org-admin",
    "haravan-login-callback-staff",
    "haravan-login-callback-bad-signature",
    "haravan-login-callback-expired",
    "haravan-login-callback-no-cookie",
    "haravan-login-callback-wrong-nonce",
    "haravan-install-callback-wrong-org",
    "haravan-install-callback-no-cookie",
    "haravan-webhooks-challenge",
    "haravan-webhooks-challenge-wrong-token",
    "haravan-webhooks-uninstalled",
    "haravan-webhooks-shop-update",
    "haravan-webhooks-bad-signature",
    "haravan-webhooks-not-json",
    "haravan-webhooks-alt-header",
    "haravan-logout",
    "haravan-logout-missing-sid",
    "events-read",
    "events-read-unknown",
    "events-read-no-iam",
    // A DynamoDB stream event, not an API Gateway one: `events_publisher_event` below.
    "events-publisher",
];

#[tokio::test]
async fn sesami_install_events() {
    sesami_install_scenario(&EventBench::new().await).await;
}

pub(crate) async fn sesami_install_scenario(b: &EventBench) {
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
    sesami_callback_scenario(&EventBench::new().await).await;
}

pub(crate) async fn sesami_callback_scenario(b: &EventBench) {
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
    sesami_webhook_scenario(&EventBench::new().await).await;
}

pub(crate) async fn sesami_webhook_scenario(b: &EventBench) {
    for (name, expected) in [
        ("sesami-webhooks-bad-hmac", 401),
        ("sesami-webhooks-not-json", 400),
        ("sesami-webhooks-bad-base64", 400),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
        assert_eq!(out["headers"]["content-type"], "application/json");
    }
    assert_eq!(b.count("webhook#sesami").await, 0, "refusals mark nothing");

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

/// A response's `Location` (empty when it has none).
fn location(out: &Value) -> String {
    out["headers"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Answers that call no platform build no platform client, since building it loads the CA
/// store (tests/it/certs.rs counts the loads): a Haravan sign-in redirect to the documented
/// authorize URL, and a proxied call for a tenant that is not installed.
#[tokio::test]
async fn answers_that_call_no_platform_build_no_platform_client() {
    let b = EventBench::new().await;
    let (status, out) = b.run("haravan-login-start").await;
    assert_eq!(status, 302, "{out}");
    let (status, out) = b.run("haravan-proxy").await;
    assert_eq!(status, 404, "{out}");
    assert!(
        out["body"].as_str().unwrap().contains("not_found")
            || out["body"].as_str().unwrap().contains("unknown"),
        "our refusal, not the platform's: {out}"
    );
    assert!(!b.app.deps.http.is_built());
}

#[tokio::test]
async fn haravan_login_start_events() {
    haravan_login_start_scenario(&EventBench::new().await).await;
}

pub(crate) async fn haravan_login_start_scenario(b: &EventBench) {
    let (status, out) = b.run("haravan-login-start").await;
    assert_eq!(status, 302, "{out}");
    let to = location(&out);
    assert!(to.starts_with(AUTHORIZE), "{to}");
    assert_eq!(
        query_param(&to, "response_mode").as_deref(),
        Some("form_post")
    );
    assert_eq!(
        query_param(&to, "redirect_uri"),
        Some(format!("{EVENTS_BASE}/haravan/install/login"))
    );
    assert_eq!(query_param(&to, "orgid"), None);
    let cookie = out["cookies"][0].as_str().unwrap();
    assert!(cookie.starts_with("__Host-gh-haravan-state="), "{cookie}");
    assert!(cookie.contains("SameSite=None") && cookie.contains("Secure"));
    let states = crate::harness::of_kind(b.app.store.as_ref(), "state#haravan").await;
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].str("purpose"), Some("login"));
    assert_eq!(states[0].str("nonce"), query_param(&to, "nonce").as_deref());
    assert_eq!(Some(states[0].key.sk.clone()), query_param(&to, "state"));

    let (status, out) = b.run("haravan-login-start-orgid").await;
    assert_eq!(status, 302, "{out}");
    let to = location(&out);
    assert_eq!(query_param(&to, "orgid").as_deref(), Some(ORG_NEW), "{to}");
    let states = crate::harness::of_kind(b.app.store.as_ref(), "state#haravan").await;
    assert_eq!(states.len(), 2);
    assert!(states.iter().any(|s| s.str("orgid") == Some(ORG_NEW)));
}

#[tokio::test]
async fn haravan_login_callback_events() {
    haravan_login_callback_scenario(&EventBench::new().await).await;
}

pub(crate) async fn haravan_login_callback_scenario(b: &EventBench) {
    b.seed_haravan_states().await;
    b.seed_haravan_install(ORG_INSTALLED).await;
    let installed_state = haravan_state_key("login-installed");

    // No state cookie: refused before the state is touched.
    let (status, out) = b.run("haravan-login-callback-no-cookie").await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("state cookie is missing")
    );
    assert!(
        b.exists(&installed_state).await,
        "the state is not consumed"
    );

    // Each refusal consumes its own state and stores nothing; each is refused for its own reason
    // (a key missing from the JWKS would be a 401 too).
    for (name, case, expected, reason) in [
        (
            "haravan-login-callback-bad-signature",
            "login-bad-signature",
            401,
            "signature does not verify",
        ),
        (
            "haravan-login-callback-expired",
            "login-expired",
            401,
            "has expired",
        ),
        (
            "haravan-login-callback-wrong-nonce",
            "login-wrong-nonce",
            401,
            "nonce",
        ),
        (
            "haravan-login-callback-staff",
            "login-staff",
            403,
            "only a shop admin",
        ),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
        assert!(
            out["body"].as_str().unwrap().contains(reason),
            "{name}: {out}"
        );
        // A refused callback stores nothing and consumes nothing: the state is consumed only
        // in the transaction that records what the sign-in produced.
        assert!(
            b.exists(&haravan_state_key(case)).await,
            "{name}: its state is left as it was"
        );
        assert!(location(&out).is_empty(), "{name}: no redirect");
        assert!(
            out["cookies"].as_array().unwrap().is_empty(),
            "{name}: no cookie"
        );
    }
    assert_eq!(b.count(&org_sessions_partition(ORG_NEW)).await, 0);
    assert_eq!(b.count(&org_sessions_partition(ORG_INSTALLED)).await, 0);
    assert_eq!(b.count("install#haravan").await, 1, "only the seeded one");
    assert_eq!(
        b.count("state#haravan").await,
        HARAVAN_STATES.len(),
        "refusals started no flow and consumed none"
    );

    // A member (here staff) of an installed org: the app page and a session.
    let (status, out) = b.run("haravan-login-callback-installed").await;
    assert_eq!(status, 200, "{out}");
    let body = out["body"].as_str().unwrap();
    assert!(body.contains("Signed in as"), "{body}");
    assert!(body.contains("Trần Thị Bình"), "{body}");
    assert!(
        out["cookies"].as_array().unwrap().iter().any(|c| c
            .as_str()
            .unwrap()
            .starts_with("__Host-gh-haravan-session=")),
        "{out}"
    );
    assert!(!b.exists(&installed_state).await);
    let sessions = b
        .app
        .store
        .query(&org_sessions_partition(ORG_INSTALLED))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].str("sub"), Some("200000044444"));
    assert_eq!(sessions[0].str("sid"), Some(SID_INSTALLED));
    let index = b
        .app
        .store
        .query(&sid_partition(SID_INSTALLED))
        .await
        .unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(
        index[0].key.sk,
        format!("{ORG_INSTALLED}#{}", sessions[0].key.sk)
    );

    // Replayed: the state is gone, no second session.
    let (status, out) = b.run("haravan-login-callback-installed").await;
    assert_eq!(status, 409, "{out}");
    assert_eq!(b.count(&org_sessions_partition(ORG_INSTALLED)).await, 1);

    // An admin of a new org: sent to install, with a new install state for that org.
    let (status, out) = b.run("haravan-login-callback-new-org-admin").await;
    assert_eq!(status, 302, "{out}");
    let to = location(&out);
    assert!(to.starts_with(AUTHORIZE), "{to}");
    let scope = query_param(&to, "scope").unwrap_or_default();
    assert!(scope.split(' ').any(|s| s == "grant_service"), "{scope}");
    assert_eq!(query_param(&to, "orgid").as_deref(), Some(ORG_NEW));
    assert_eq!(
        query_param(&to, "redirect_uri"),
        Some(format!("{EVENTS_BASE}/haravan/install/grandservice"))
    );
    let started: Vec<Item> = crate::harness::of_kind(b.app.store.as_ref(), "state#haravan")
        .await
        .into_iter()
        .filter(|s| !HARAVAN_STATES.iter().any(|(id, _, _)| *id == s.key.sk))
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].str("purpose"), Some("install"));
    assert_eq!(started[0].str("orgid"), Some(ORG_NEW));
    assert_eq!(b.count(&org_sessions_partition(ORG_NEW)).await, 0);
    assert!(!b.exists(&install_key(ORG_NEW)).await);
}

#[tokio::test]
async fn haravan_install_callback_events() {
    haravan_install_callback_scenario(&EventBench::new().await).await;
}

pub(crate) async fn haravan_install_callback_scenario(b: &EventBench) {
    b.seed_haravan_states().await;

    let (status, out) = b.run("haravan-install-callback-no-cookie").await;
    assert_eq!(status, 400, "{out}");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("state cookie is missing")
    );
    assert!(
        b.exists(&haravan_state_key("install")).await,
        "the state is not consumed"
    );

    // The state was for org A, Haravan signed in org B: refused, nothing stored.
    let (status, out) = b.run("haravan-install-callback-wrong-org").await;
    assert_eq!(status, 403, "{out}");
    assert!(
        out["body"].as_str().unwrap().contains("another shop"),
        "{out}"
    );
    assert!(
        b.exists(&haravan_state_key("install-wrong-org")).await,
        "a refusal consumes nothing"
    );
    assert_eq!(b.count("install#haravan").await, 0);
    assert_eq!(b.count("code#haravan").await, 0, "no code was exchanged");
    for org in [ORG_NEW, ORG_OTHER] {
        assert_eq!(b.count(&org_sessions_partition(org)).await, 0);
    }
    assert_eq!(b.count("state#haravan").await, HARAVAN_STATES.len());
}

#[tokio::test]
async fn haravan_webhook_events() {
    haravan_webhook_scenario(&EventBench::new().await).await;
}

pub(crate) async fn haravan_webhook_scenario(b: &EventBench) {
    let (status, out) = b.run("haravan-webhooks-challenge").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["body"], "events-challenge-7f3a9c");
    let (status, out) = b.run("haravan-webhooks-challenge-wrong-token").await;
    assert_eq!(status, 401, "{out}");
    assert_ne!(out["body"], "events-challenge-7f3a9c");

    b.seed_haravan_install(ORG_INSTALLED).await;
    b.seed_haravan_install(ORG_GONE).await;
    b.seed_haravan_session(ORG_GONE, "events-session-gone-1", "sid-gone-1")
        .await;
    b.seed_haravan_session(ORG_GONE, "events-session-gone-2", "sid-gone-2")
        .await;
    b.seed_haravan_session(ORG_INSTALLED, "events-session-stays", SID_INSTALLED)
        .await;

    for (name, expected, reason) in [
        (
            "haravan-webhooks-bad-signature",
            401,
            "signature does not match",
        ),
        ("haravan-webhooks-not-json", 400, "not a JSON object"),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
        assert!(
            out["body"].as_str().unwrap().contains(reason),
            "{name}: {out}"
        );
        assert_eq!(out["headers"]["content-type"], "application/json");
    }
    assert!(
        b.exists(&install_key(ORG_GONE)).await,
        "a bad signature removes nothing"
    );
    assert_eq!(b.count(&org_sessions_partition(ORG_GONE)).await, 2);
    assert_eq!(b.count("webhook#haravan").await, 0, "nothing was recorded");
    let before = b
        .app
        .store
        .get(&install_key(ORG_INSTALLED))
        .await
        .unwrap()
        .unwrap();
    assert!(before.attrs.get("shop").is_none());

    // app/uninstalled: the install and its sessions go, other orgs' stay; a replay acts on nothing.
    let (status, out) = b.run("haravan-webhooks-uninstalled").await;
    assert_eq!(status, 200, "{out}");
    assert!(!b.exists(&install_key(ORG_GONE)).await);
    assert_eq!(b.count(&org_sessions_partition(ORG_GONE)).await, 0);
    assert_eq!(b.count(&sid_partition("sid-gone-1")).await, 0);
    assert_eq!(b.count(&sid_partition("sid-gone-2")).await, 0);
    assert!(b.exists(&install_key(ORG_INSTALLED)).await);
    assert_eq!(b.count(&org_sessions_partition(ORG_INSTALLED)).await, 1);
    let (status, out) = b.run("haravan-webhooks-uninstalled").await;
    assert_eq!(status, 200, "a replay is acknowledged: {out}");
    assert!(out["body"].as_str().unwrap().contains("duplicate"), "{out}");

    // shop/update: the shop details change, the tokens do not.
    let (status, out) = b.run("haravan-webhooks-shop-update").await;
    assert_eq!(status, 200, "{out}");
    let item = b
        .app
        .store
        .get(&install_key(ORG_INSTALLED))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.attrs["shop"]["name"], "Cửa hàng Sự Kiện");
    assert_eq!(
        item.attrs["shop"]["myharavan_domain"],
        "events-installed.myharavan.com"
    );
    assert_eq!(item.attrs["shop"]["email"], "shop@events-installed.vn");
    assert!(
        item.attrs["shop"].get("currency").is_none(),
        "only known fields"
    );
    assert_eq!(
        item.attrs["access_token_sealed"],
        before.attrs["access_token_sealed"]
    );
    assert_eq!(item.attrs["token_version"], before.attrs["token_version"]);

    // The other spelling of the signature header is accepted as well.
    let (status, out) = b.run("haravan-webhooks-alt-header").await;
    assert_eq!(status, 200, "{out}");
    let item = b
        .app
        .store
        .get(&install_key(ORG_INSTALLED))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.attrs["shop"]["name"], "Cửa hàng Mới");
    assert_eq!(b.count("webhook#haravan").await, 3);
}

#[tokio::test]
async fn haravan_logout_events() {
    haravan_logout_scenario(&EventBench::new().await).await;
}

pub(crate) async fn haravan_logout_scenario(b: &EventBench) {
    b.seed_haravan_session(ORG_INSTALLED, "events-session-a", SID_LOGOUT)
        .await;
    b.seed_haravan_session(ORG_OTHER, "events-session-b", SID_LOGOUT)
        .await;
    b.seed_haravan_session(ORG_INSTALLED, "events-session-c", SID_INSTALLED)
        .await;

    let (status, out) = b.run("haravan-logout-missing-sid").await;
    assert_eq!(status, 400, "{out}");
    assert_eq!(
        b.count(&sid_partition(SID_LOGOUT)).await,
        2,
        "nothing removed"
    );

    let (status, out) = b.run("haravan-logout").await;
    assert_eq!(status, 200, "{out}");
    assert!(location(&out).is_empty(), "no redirect in an iframe");
    assert_eq!(b.count(&sid_partition(SID_LOGOUT)).await, 0);
    assert_eq!(b.count(&org_sessions_partition(ORG_OTHER)).await, 0);
    let left = b
        .app
        .store
        .query(&org_sessions_partition(ORG_INSTALLED))
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "another sid's session stays");
    assert_eq!(left[0].key.sk, "events-session-c");
    assert_eq!(b.count(&sid_partition(SID_INSTALLED)).await, 1);
}

#[tokio::test]
async fn saison_events() {
    saison_scenario(&EventBench::new().await).await;
}

pub(crate) async fn saison_scenario(b: &EventBench) {
    const STATE: &str = "events-saison-state-0123456789abcdefghijklmn";
    const CODE: &str = "events-saison-code-0123456789";
    const LINK: &str = "events-saison-link-0123456789abcdefghijklmn";
    const END_USER: &str = "events-user-2";
    const RETURN_TO: &str = "https://app.example.com/done";
    let links = "link#connect#saison";

    // The app's back end asks for a link; a wrong platform or a foreign return_to stores none.
    let (status, out) = b.run("connect-links").await;
    assert_eq!(status, 201, "{out}");
    let answer: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert!(
        answer["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{EVENTS_BASE}/saison/authorize?link=")),
        "{answer}"
    );
    assert!(answer["expires_at"].as_i64().unwrap() > now());
    assert_eq!(b.count(links).await, 1);
    for name in [
        "connect-links-wrong-platform",
        "connect-links-foreign-return-to",
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, 400, "{name}: {out}");
    }
    assert_eq!(b.count(links).await, 1, "nothing stored for refusals");
    let (status, out) = b.run("connect-links-no-iam").await;
    assert_eq!(status, 403, "no IAM caller: {out}");
    assert_eq!(
        b.count(links).await,
        1,
        "nothing stored without an IAM caller"
    );

    // The anonymous start is off by default.
    for name in ["saison-authorize", "saison-authorize-unknown-member"] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, 403, "{name}: {out}");
    }
    assert_eq!(b.count("state#saison").await, 0, "nothing started");

    // A link starts one flow.
    let link = Item::new(
        gatehouse::connect::link_key("saison", LINK),
        gatehouse::connect::link_attrs(END_USER, RETURN_TO),
    )
    .expiring_at(now() + 600);
    b.app.store.put(&link, Condition::Always).await.unwrap();
    let (status, out) = b.run("saison-authorize-link").await;
    assert_eq!(status, 302, "{out}");
    let location = out["headers"]["location"].as_str().unwrap();
    assert!(location.contains("/auth/screen/demo/authorize?client_id=events-saison-client"));
    assert_eq!(b.count("state#saison").await, 1);
    assert_eq!(b.count(links).await, 1, "the link is consumed");
    let (status, out) = b.run("saison-authorize-link").await;
    assert_eq!(status, 409, "a link is used once: {out}");
    assert_eq!(b.count("state#saison").await, 1);

    let mut attrs = Map::new();
    attrs.insert("member".into(), json!("demo"));
    attrs.insert("end_user".into(), json!(END_USER));
    attrs.insert("return_to".into(), json!(RETURN_TO));
    let state = Item::new(Key::single("state#saison", STATE), attrs).expiring_at(now() + 600);
    b.app.store.put(&state, Condition::Always).await.unwrap();
    b.saison.register_code(CODE, "demo", "M0001");
    for (name, expected) in [
        ("saison-callback-no-cookie", 400),
        ("saison-callback-missing-code", 400),
        ("saison-callback-denied", 400),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
    }
    let connections = format!("conn#saison#{END_USER}");
    assert_eq!(b.count(&connections).await, 0);
    let (status, out) = b.run("saison-callback").await;
    assert_eq!(status, 302, "{out}");
    assert_eq!(
        out["headers"]["location"].as_str().unwrap(),
        format!("{RETURN_TO}?gatehouse=connected&platform=saison&tenant=M0001")
    );
    assert_eq!(b.count(&connections).await, 1);
    let (status, out) = b.run("saison-callback").await;
    assert_eq!(status, 409, "a replay finds its state consumed: {out}");
    assert_eq!(b.saison.token_requests("authorization_code"), 1);
}

#[tokio::test]
async fn momo_events() {
    momo_scenario(&EventBench::new().await).await;
}

pub(crate) async fn momo_scenario(b: &EventBench) {
    const REFERENCE: &str = "0b6f8a52-3c1d-4e7a-9f20-6d5c4b3a2910";
    for (name, expected) in [
        ("momo-requesttopay-invalid-amount", 400),
        ("momo-requesttopay-not-json", 400),
        ("momo-callback-unknown", 404),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
    }
    assert_eq!(b.count("tx#momo").await, 0);
    let (status, out) = b.run("momo-requesttopay").await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(b.count("tx#momo").await, 1);
    assert_eq!(b.momo.requests_to_pay(), 1);

    // A payment MoMo knows under the events' fixed reference, and its PENDING transaction.
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(events_dir().join("secrets.json")).unwrap())
            .unwrap();
    let m = &secrets["momo"];
    let sub = m["subscription_keys"]["collection"].as_str().unwrap();
    let http = crate::support::http();
    let token: Value = http
        .post(format!("{}/collection/token/", b.momo_base))
        .header(
            "Authorization",
            gatehouse_simulators::momo::basic_authorization(
                m["client_id"].as_str().unwrap(),
                m["client_secret"].as_str().unwrap(),
            ),
        )
        .header("Ocp-Apim-Subscription-Key", sub)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = http
        .post(format!("{}/collection/v1_0/requesttopay", b.momo_base))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("X-Reference-Id", REFERENCE)
        .header("X-Target-Environment", "sandbox")
        .header("Ocp-Apim-Subscription-Key", sub)
        .json(
            &json!({"amount": "10.50", "currency": "EUR", "externalId": "events-order-1",
                      "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let mut attrs = Map::new();
    attrs.insert("status".into(), json!("PENDING"));
    attrs.insert("amount".into(), json!("10.50"));
    let tx = Item::new(gatehouse::momo::transaction_key(REFERENCE), attrs);
    b.app.store.put(&tx, Condition::Always).await.unwrap();

    let (status, out) = b.run("momo-callback-malformed").await;
    assert_eq!(status, 400, "{out}");
    let stored = |b: &EventBench| {
        let app = b.app.clone();
        async move {
            app.store
                .get(&gatehouse::momo::transaction_key(REFERENCE))
                .await
                .unwrap()
                .unwrap()
                .str("status")
                .map(str::to_owned)
        }
    };
    assert_eq!(stored(b).await.as_deref(), Some("PENDING"));
    let (status, out) = b.run("momo-callback").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(stored(b).await.as_deref(), Some("SUCCESSFUL"));
    let (status, out) = b.run("momo-callback-post").await;
    assert_eq!(
        status, 200,
        "a replay is answered, and changes nothing: {out}"
    );
    assert_eq!(stored(b).await.as_deref(), Some("SUCCESSFUL"));

    // The reconciler (scheduled, no route), run as if its minutes had passed: it confirms the
    // payment the first request to pay left pending (MoMo's callback for it is held back) and
    // records its outcome once; a second run finds nothing left.
    assert_eq!(b.count("pending#momo").await, 1);
    let later = gatehouse::store::now() + 3600;
    let run = gatehouse::momo::reconcile_at(&b.function_app("momo-reconcile").momo, later)
        .await
        .unwrap();
    assert_eq!((run.checked, run.recorded), (1, 1), "{run:?}");
    assert_eq!(b.count("pending#momo").await, 0);
    let run = gatehouse::momo::reconcile_at(&b.function_app("momo-reconcile").momo, later)
        .await
        .unwrap();
    assert_eq!(run.checked, 0, "{run:?}");

    // Each outcome wrote its event once, whoever recorded it (callback, reconciler), and the
    // replayed callback none.
    let events = crate::outbox::outbox(b.app.store.as_ref()).await;
    let payments: Vec<&gatehouse::events::Event> =
        events.iter().filter(|e| e.platform == "momo").collect();
    assert_eq!(payments.len(), 2, "{payments:?}");
    let ours = payments.iter().find(|e| e.tenant == REFERENCE).unwrap();
    assert_eq!(ours.name, gatehouse::events::names::PAYMENT_SUCCEEDED);
    assert_eq!(ours.data["amount"], "10.50");
}

#[tokio::test]
async fn events_read_events() {
    events_read_scenario(&EventBench::new().await).await;
}

/// The id of events/events-read.json (generate.py's `EVENT_ID`).
const EVENT_ID: &str = "0190f1c2-7a3e-7b1d-8c2e-9f0a1b2c3d4e";

/// `GET /v1/events/{platform}/{id}`: the whole event for an IAM caller, 404 for an unknown id, 403 for a
/// request API Gateway's IAM authorizer did not pass.
pub(crate) async fn events_read_scenario(b: &EventBench) {
    let mut event = gatehouse::events::Event::new(
        "haravan",
        "webhook.orders/create",
        ORG_INSTALLED,
        json!({"topic": "orders/create", "payload": {"blob": "x".repeat(300 * 1024)}}),
    );
    event.id = EVENT_ID.into();
    assert!(event.detail().1, "too large for the bus: a reference");
    b.app
        .store
        .put(&event.to_item().unwrap(), Condition::Absent)
        .await
        .unwrap();
    let (status, out) = b.run("events-read").await;
    assert_eq!(status, 200, "{out}");
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, event.to_json());
    crate::event_schemas::assert_valid(&event);
    let (status, out) = b.run("events-read-unknown").await;
    assert_eq!(status, 404, "{out}");
    let (status, out) = b.run("events-read-no-iam").await;
    assert_eq!(status, 403, "{out}");
}

/// events/events-publisher.json, as Lambda gives it to the function: both records on the bus
/// (moto's), nothing reported failed.
#[tokio::test]
async fn events_publisher_event() {
    let text = std::fs::read_to_string(events_dir().join("events-publisher.json")).unwrap();
    let stream: aws_lambda_events::event::dynamodb::Event = serde_json::from_str(&text).unwrap();
    assert_eq!(stream.records.len(), 2);
    let Some(bus) = crate::publisher::Bus::create().await else {
        return;
    };
    let publisher =
        gatehouse::publisher::Publisher::new(aws_sdk_eventbridge::Client::new(&bus.sdk), &bus.name);
    let published = publisher.publish(&stream, None).await;
    assert!(published.failures.is_empty(), "{:?}", published.failures);
    assert_eq!(published.ids.len(), 2);
    let delivered = bus.drain().await;
    assert_eq!(delivered.len(), 2);
    for message in delivered {
        let name = message["detail-type"].as_str().unwrap();
        let problems = crate::event_schemas::problems(name, &message["detail"]);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

#[tokio::test]
async fn weblink_events() {
    weblink_scenario(&EventBench::new().await).await;
}

pub(crate) async fn weblink_scenario(b: &EventBench) {
    let (status, out) = b.run("weblink-guest-token").await;
    assert_eq!(status, 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains("portal_token"));
    let guests = b.weblink.guest_requests();
    for (name, expected) in [
        ("weblink-guest-token-not-allowed", 403),
        ("weblink-guest-token-not-json", 400),
        ("weblink-login-not-allowed", 403),
        ("weblink-callback-no-cookie", 400),
        ("weblink-callback-foreign-state", 400),
        ("weblink-callback-unknown-state", 409),
        ("weblink-refresh-no-session", 401),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, expected, "{name}: {out}");
    }
    assert_eq!(
        b.weblink.guest_requests(),
        guests,
        "refused portals are never asked for"
    );
    assert_eq!(b.count("state#weblink").await, 0);
    assert_eq!(b.count("session#weblink").await, 0);

    let (status, out) = b.run("weblink-login").await;
    assert_eq!(status, 302, "{out}");
    let location = out["headers"]["location"].as_str().unwrap();
    assert!(
        location.contains("code_challenge_method=S256"),
        "{location}"
    );
    assert_eq!(b.count("state#weblink").await, 1);

    // A session with fresh tokens, as a callback would have stored it.
    let key = Key::single("session#weblink", "events-weblink-session-0123456789abcdef");
    let keys = b.app.secrets.app_keys().await.unwrap();
    let mut attrs = Map::new();
    attrs.insert("portal".into(), json!("demo.administrateweblink.com"));
    attrs.insert("idp_domain".into(), json!("identity.demo"));
    attrs.insert("client_id".into(), json!("demo-client"));
    let grant = Grant {
        access_token: SecretString::from("events-weblink-access".to_owned()),
        refresh_token: Some(SecretString::from("events-weblink-refresh".to_owned())),
        expires_in: 3600,
        extra: Vec::new(),
    };
    seal(&keys, &key, &grant, &mut attrs).unwrap();
    b.app
        .store
        .put(&Item::new(key, attrs), Condition::Always)
        .await
        .unwrap();
    let (status, out) = b.run("weblink-refresh").await;
    assert_eq!(status, 200, "{out}");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("events-weblink-access")
    );
}

#[tokio::test]
async fn proxy_events() {
    proxy_scenario(&EventBench::new().await).await;
}

/// The proxy's events, on tenants seeded as their flows would have stored them: a served read
/// (Sesami, MoMo), a platform's own answer passed back (Haravan's 404 here, where only its keys
/// are served), and refreshes the platform refuses (Saison's due token, WebLink's 401), each a
/// 409 `needs_reauth` after one refresh under the lease; a request without an IAM caller and
/// one whose path would leave the API base are refused before anything is read.
pub(crate) async fn proxy_scenario(b: &EventBench) {
    use gatehouse::refresh::SealedTokens;
    use gatehouse::store::Record;
    let keys = b.app.secrets.app_keys().await.unwrap();
    let grant = |access: &str, expires_in: i64| Grant {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: Some(SecretString::from(format!("{access}-refresh"))),
        expires_in,
        extra: Vec::new(),
    };

    // Sesami: an install whose offline token the simulator issued.
    let shop = "events-proxy-shop";
    let key = gatehouse::sesami::install_key(shop);
    let install = gatehouse::sesami::Install {
        shop_id: shop.into(),
        name: None,
        token_sealed: keys
            .seal(
                "events-sesami-proxy-token",
                &format!("{}/{}", key.pk, key.sk),
                "token_sealed",
            )
            .unwrap(),
        expire_at: Some("NEVER".into()),
        scopes: vec!["Shop:Read".into()],
        installed_at: now(),
        connection: Default::default(),
    };
    b.app
        .store
        .put(&install.to_item(key).unwrap(), Condition::Always)
        .await
        .unwrap();
    b.sesami.register_token("events-sesami-proxy-token", shop);
    let (status, out) = b.run("sesami-proxy-no-iam").await;
    assert_eq!(status, 403, "{out}");
    let (status, out) = b.run("sesami-proxy").await;
    assert_eq!(status, 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains(shop), "{out}");

    // Haravan: the platform's answer, whatever it is, comes back as it is.
    let key = install_key("1000999999");
    let install = gatehouse::haravan::Install {
        orgid: "1000999999".into(),
        tokens: SealedTokens::seal(&keys, &key, &grant("events-haravan-proxy", 3600)).unwrap(),
        ..Default::default()
    };
    b.app
        .store
        .put(&install.to_item(key).unwrap(), Condition::Always)
        .await
        .unwrap();
    let (status, out) = b.run("haravan-proxy-escape").await;
    assert_eq!(status, 400, "{out}");
    let (status, out) = b.run("haravan-proxy").await;
    assert_eq!(status, 404, "Haravan's own 404: {out}");

    // Saison: a due token whose refresh Saison refuses.
    let id = gatehouse::saison::ConnectionId::new("events-proxy-user", "demo", "M0009");
    let key = gatehouse::saison::connection_key(&id);
    let connection = gatehouse::saison::Connection {
        member: "demo".into(),
        cardholder: "M0009".into(),
        connected_at: Some(now()),
        tokens: SealedTokens::seal(&keys, &key, &grant("events-saison-proxy", 0)).unwrap(),
        connection: gatehouse::connection::Common {
            end_user: Some("events-proxy-user".into()),
            ..Default::default()
        },
    };
    b.app
        .store
        .put(&connection.to_item(key).unwrap(), Condition::Always)
        .await
        .unwrap();
    let refreshes = b.saison.token_requests("refresh_token");
    let (status, out) = b.run("saison-proxy").await;
    assert_eq!(status, 409, "{out}");
    assert!(out["body"].as_str().unwrap().contains("needs_reauth"));
    assert_eq!(b.saison.token_requests("refresh_token"), refreshes + 1);

    // MoMo: the product's token fetched (under the lease) and injected.
    let (status, out) = b.run("momo-proxy").await;
    assert_eq!(status, 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains("availableBalance"));

    // WebLink: a token the API refuses, then a refresh the IDP refuses.
    let key = gatehouse::weblink::session_key("events-proxy-session-0123456789abcdef");
    let session = gatehouse::weblink::Session {
        portal: Some("demo.administrateweblink.com".into()),
        idp_domain: "demo.identity.getadministrate.com".into(),
        client_id: "demo-client".into(),
        tokens: SealedTokens::seal(&keys, &key, &grant("events-weblink-proxy", 3600)).unwrap(),
        ..Default::default()
    };
    b.app
        .store
        .put(&session.to_item(key).unwrap(), Condition::Always)
        .await
        .unwrap();
    let (status, out) = b.run("weblink-proxy").await;
    assert_eq!(status, 409, "{out}");
    assert_eq!(b.weblink.token_requests("refresh_token"), 1);
}

#[tokio::test]
async fn connections_events() {
    connections_scenario(&EventBench::new().await).await;
}

/// The body of an event's answer, as JSON.
fn body_of(out: &Value) -> Value {
    serde_json::from_str(out["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// Token vending: one connection of each platform seeded as its flow stores it (common
/// attributes and index keys included), then every `/v1/connections` event.
pub(crate) async fn connections_scenario(b: &EventBench) {
    use gatehouse::connection::Common;
    use gatehouse::store::Record;
    let keys = b.app.secrets.app_keys().await.unwrap();
    let at = now();

    // Sesami: the install, its offline token sealed as the callback seals it.
    let key = gatehouse::sesami::install_key(SHOP);
    let mut attrs = Map::new();
    attrs.insert("shop_id".into(), json!(SHOP));
    attrs.insert("scopes".into(), json!(["Shop:Read"]));
    attrs.insert("installed_at".into(), json!(at));
    attrs.insert(
        "token_sealed".into(),
        json!(
            keys.seal(
                "events-sesami-token",
                &format!("{}/{}", key.pk, key.sk),
                "token_sealed"
            )
            .unwrap()
        ),
    );
    attrs.extend(
        Common::new("sesami", &key, None, None, at)
            .to_attrs()
            .unwrap(),
    );
    b.app
        .store
        .put(&Item::new(key, attrs), Condition::Always)
        .await
        .unwrap();

    // Haravan: an install with fresh tokens, in the platform index.
    b.seed_haravan_install(ORG_INSTALLED).await;
    let key = install_key(ORG_INSTALLED);
    b.app
        .store
        .update(
            &key,
            &Common::new("haravan", &key, None, None, at)
                .to_attrs()
                .unwrap(),
            Condition::Exists,
        )
        .await
        .unwrap();

    // Saison: a connection of events-user-2's cardholder M0001.
    let key = gatehouse::saison::connection_key(&gatehouse::saison::ConnectionId::new(
        "events-user-2",
        "demo",
        "M0001",
    ));
    let mut attrs = Map::new();
    attrs.insert("member".into(), json!("demo"));
    attrs.insert("cardholder".into(), json!("M0001"));
    let grant = Grant {
        access_token: SecretString::from("events-saison-access".to_owned()),
        refresh_token: None,
        expires_in: 3600,
        extra: Vec::new(),
    };
    seal(&keys, &key, &grant, &mut attrs).unwrap();
    attrs.extend(
        Common::new("saison", &key, Some("events-user-2"), None, at)
            .to_attrs()
            .unwrap(),
    );
    b.app
        .store
        .put(&Item::new(key, attrs), Condition::Always)
        .await
        .unwrap();

    // WebLink: a session with fresh tokens.
    let key = Key::single("session#weblink", "events-weblink-session-0123456789abcdef");
    let mut attrs = Map::new();
    attrs.insert("portal".into(), json!("demo.administrateweblink.com"));
    attrs.insert("idp_domain".into(), json!("identity.demo"));
    attrs.insert("client_id".into(), json!("demo-client"));
    let grant = Grant {
        access_token: SecretString::from("events-weblink-access".to_owned()),
        refresh_token: Some(SecretString::from("events-weblink-refresh".to_owned())),
        expires_in: 3600,
        extra: Vec::new(),
    };
    seal(&keys, &key, &grant, &mut attrs).unwrap();
    attrs.extend(
        Common::new("weblink", &key, None, None, at)
            .to_attrs()
            .unwrap(),
    );
    b.app
        .store
        .put(
            &Item::new(key, attrs).expiring_at(at + 3600),
            Condition::Always,
        )
        .await
        .unwrap();

    // Without an IAM caller, nothing is answered.
    for name in ["connections-list-no-iam", "weblink-connections-no-iam"] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, 403, "{name}: {out}");
        assert!(!out.to_string().contains("events-weblink-access"), "{out}");
    }

    // A connection shows no token; its token route gives it.
    for (name, platform, tenant, token) in [
        ("sesami-connections", "sesami", SHOP, "events-sesami-token"),
        (
            "haravan-connections",
            "haravan",
            ORG_INSTALLED,
            "events-access-1000444444",
        ),
        (
            "saison-connections",
            "saison",
            "M0001",
            "events-saison-access",
        ),
        (
            "weblink-connections",
            "weblink",
            "events-weblink-session-0123456789abcdef",
            "events-weblink-access",
        ),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, 200, "{name}: {out}");
        let c = body_of(&out);
        assert_eq!(
            (
                c["platform"].as_str(),
                c["tenant"].as_str(),
                c["status"].as_str()
            ),
            (Some(platform), Some(tenant), Some("active")),
            "{name}: {c}"
        );
        assert!(!out.to_string().contains(token), "{name} shows no token");
        assert!(!out.to_string().contains("_sealed"), "{name}: {out}");
    }
    for (name, token) in [
        ("sesami-connections-token", "events-sesami-token"),
        ("haravan-connections-token", "events-access-1000444444"),
        ("weblink-connections-token", "events-weblink-access"),
    ] {
        let (status, out) = b.run(name).await;
        assert_eq!(status, 200, "{name}: {out}");
        assert_eq!(body_of(&out)["access_token"], token, "{name}");
    }
    let (status, out) = b.run("saison-connections-token").await;
    assert_eq!(status, 409, "{out}");
    assert_eq!(body_of(&out)["reason"], "use_proxy");
    assert!(!out.to_string().contains("events-saison-access"));
    let (status, out) = b.run("momo-connections-token").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(body_of(&out)["token_type"], "Bearer");
    assert!(body_of(&out)["expires_at"].as_i64().unwrap() > now());
    let (status, out) = b.run("haravan-connections-unknown").await;
    assert_eq!(status, 404, "{out}");
    assert_eq!(body_of(&out)["reason"], "unknown_tenant");

    // Listings: per platform (Haravan's one install) and per end user (Saison's one).
    let (status, out) = b.run("connections-list").await;
    assert_eq!(status, 200, "{out}");
    let list = body_of(&out);
    assert_eq!(list["connections"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["connections"][0]["tenant"], ORG_INSTALLED);
    assert!(list["next_cursor"].is_null());
    let (status, out) = b.run("connections-list-end-user").await;
    assert_eq!(status, 200, "{out}");
    let list = body_of(&out);
    assert_eq!(list["connections"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["connections"][0]["end_user"], "events-user-2");
}
