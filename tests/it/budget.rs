//! The request budget: one deadline per request, the sooner of GATEHOUSE_REQUEST_TIMEOUT_SECONDS
//! and the Lambda deadline less a margin, bounds all the calls a request makes together, not
//! each on its own. Past it the caller gets a clear 503 in the route's format, and the request's
//! work stops: no call it had not yet made is made later.

use crate::harness::Harness;
use gatehouse::config::Vars;
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, EmbeddedStore, Item, Key, Store, StoreError, Write};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A store whose every call takes `delay` (well under any per-call bound, so only a budget for
/// the whole request can stop a request that makes several), over the embedded store. It counts
/// the calls begun.
struct Slow {
    inner: EmbeddedStore,
    delay_ms: AtomicU64,
    begun: AtomicUsize,
}

impl Slow {
    async fn wait(&self) {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        tokio::time::sleep(delay).await;
    }

    fn begun(&self) -> usize {
        self.begun.load(Ordering::SeqCst)
    }

    fn slow_down(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for Slow {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.wait().await;
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.update(key, set, condition).await
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        self.wait().await;
        self.inner.take(key).await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        self.wait().await;
        self.inner.query(pk).await
    }
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        self.wait().await;
        self.inner.transact(writes).await
    }
}

/// A local server whose app runs on a [`Slow`] store (no delay until told), with `vars`.
async fn on_slow_store(vars: Vars) -> (Harness, Arc<Slow>) {
    Harness::on_wrapped_embedded(vars, |inner| Slow {
        inner,
        delay_ms: AtomicU64::new(0),
        begun: AtomicUsize::new(0),
    })
    .await
}

/// A Haravan sign-in session `sid` with one app session: what front-channel logout removes,
/// in three store calls (the sid's index, then the session and its index entry).
async fn seed_session(store: &EmbeddedStore, sid: &str) -> (Key, Key) {
    let (org, session) = ("1000999999", "budget-session");
    let session_key = Key::new(gatehouse::haravan::org_sessions_partition(org), session);
    let index_key = Key::new(
        gatehouse::haravan::sid_partition(sid),
        format!("{org}#{session}"),
    );
    let expires = gatehouse::store::now() + 3600;
    let mut attrs = Map::new();
    attrs.insert("sid".into(), json!(sid));
    store
        .put(
            &Item::new(session_key.clone(), attrs).expiring_at(expires),
            Condition::Always,
        )
        .await
        .unwrap();
    store
        .put(
            &Item::new(index_key.clone(), Map::new()).expiring_at(expires),
            Condition::Always,
        )
        .await
        .unwrap();
    (session_key, index_key)
}

#[tokio::test]
async fn three_slow_store_calls_are_cut_off_at_the_budget_with_a_503() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_REQUEST_TIMEOUT_SECONDS", "2");
    let (h, slow) = on_slow_store(vars).await;
    let (session, index) = seed_session(&slow.inner, "budget-sid").await;
    // Each call 1.5 s: one fits the 2 s budget, the three of a logout (4.5 s) do not.
    slow.slow_down(Duration::from_millis(1500));
    let started = Instant::now();
    let resp = reqwest::get(h.url("/haravan/logout?sid=budget-sid"))
        .await
        .unwrap();
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(content_type, "application/json", "a platform route's 503");
    let message: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        message["message"],
        json!("the request could not be completed in time; try again shortly")
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(2600),
        "answered after {took:?}: the 2 s budget, not one call (1.5 s) nor all three (4.5 s)"
    );
    assert_eq!(
        slow.begun(),
        2,
        "the second call was under way at the deadline"
    );

    // The request's work was dropped: the second call never completed and the third was
    // never made, even given the time they would have needed.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(slow.begun(), 2, "no call is made after the 503");
    assert!(slow.inner.get(&session).await.unwrap().is_some());
    assert!(slow.inner.get(&index).await.unwrap().is_some());

    // The same request with a store that answers in time does all three and is served.
    slow.slow_down(Duration::from_millis(100));
    let resp = reqwest::get(h.url("/haravan/logout?sid=budget-sid"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(slow.inner.get(&session).await.unwrap().is_none());
    assert!(slow.inner.get(&index).await.unwrap().is_none());
}

#[tokio::test]
async fn a_browser_route_out_of_time_answers_a_503_page() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_REQUEST_TIMEOUT_SECONDS", "1");
    let (h, slow) = on_slow_store(vars).await;
    slow.slow_down(Duration::from_secs(30));
    let query = h.server.sesami.signed_query(&[("shopId", "budget-shop")]);
    let client = crate::support::http_without_redirects();
    let started = Instant::now();
    let resp = client
        .get(h.url(&format!("/sesami/install?{query}")))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("could not be completed in time"), "{page}");
    assert!(
        took < Duration::from_millis(1600),
        "answered after {took:?}"
    );
    assert!(slow.inner.query("state#sesami").await.unwrap().is_empty());
}

/// An invocation through the Lambda adapter, with the invocation's deadline `left` from now.
async fn invoke(app: &Arc<Platforms>, event: &str, left: Duration) -> (Duration, u16, String) {
    let event: ApiGatewayV2httpRequest = serde_json::from_str(event).unwrap();
    let mut context = Context::default();
    let deadline = SystemTime::now() + left;
    context.deadline = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = Instant::now();
    let out = gatehouse::lambda::invoke(
        &app.haravan,
        &gatehouse::routes::HARAVAN_LOGOUT,
        LambdaEvent::new(event, context),
    )
    .await;
    let body = match out.body {
        Some(lambda_http::Body::Text(t)) => t,
        other => panic!("a text body: {other:?}"),
    };
    (
        started.elapsed(),
        u16::try_from(out.status_code).unwrap(),
        body,
    )
}

#[tokio::test]
async fn the_lambda_adapter_answers_before_the_invocation_deadline() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_REQUEST_TIMEOUT_SECONDS", "3");
    let (h, slow) = on_slow_store(vars).await;
    slow.slow_down(Duration::from_secs(60));
    let event = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/haravan-logout.json"),
    )
    .unwrap();
    let app = h.server.app.clone();

    // 2 s left of the invocation: answered 0.5 s before it, sooner than the 3 s budget.
    let (took, status, body) = invoke(&app, &event, Duration::from_secs(2)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("could not be completed in time"), "{body}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2000),
        "answered after {took:?}: before Lambda's deadline (2 s), with its margin"
    );

    // A minute left: the budget (3 s) is the sooner.
    let (took, status, body) = invoke(&app, &event, Duration::from_secs(60)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(3600),
        "answered after {took:?}"
    );

    // Less than the margin left: at once, while an answer can still get out.
    let (took, status, _) = invoke(&app, &event, Duration::from_millis(300)).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_millis(300), "answered after {took:?}");
}
