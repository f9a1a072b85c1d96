//! Webhook deliveries act exactly once whatever DynamoDB does to the requests they make: for
//! Sesami's `uninstall_app` and Haravan's `shop/update` and `app/uninstalled`, signed, through
//! the local server on moto behind the fault proxy, and for each fault (an answer dropped or
//! withheld after the write was applied, a hang past the budget, the server gone, throttling)
//! put on each DynamoDB request the delivery makes in turn (the first, the second, ...), either
//! on that request alone (the AWS SDK's own retry then meets a healthy server) or from that
//! request until the platform retries:
//!
//! - a delivery answered 2xx has been applied exactly once;
//! - a delivery answered 5xx is retried by the platform, with the identical body and signature,
//!   until it is answered 2xx, and then has been applied exactly once;
//! - nothing is applied twice, and no delivery is refused (4xx);
//! - no request outlives its budget.
//!
//! Applications are counted from the table, read around the proxy (not through the app): after
//! every attempt (once the proxy has settled every write begun), the effect is looked for, and
//! when it is there it is undone, so that a second application would show as well.

use crate::harness::{Harness, Table};
use gatehouse::config::Vars;
use gatehouse::store::{Condition, Item, Key, Store};
use gatehouse_local::faultproxy::{Fault, FaultProxy, Rule, Throttle};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The request budget of these servers (`GATEHOUSE_REQUEST_TIMEOUT_SECONDS`), and one store
/// call's bound (`GATEHOUSE_AWS_TIMEOUT_SECONDS`: each attempt half of it): a delivery whose
/// store calls all hang would take a second per call without the budget.
const BUDGET: Duration = Duration::from_secs(2);
const AWS_TIMEOUT_SECONDS: &str = "1";
/// What an answer may take beyond the budget: the 503 itself and a busy two-core machine.
const SLACK: Duration = Duration::from_millis(750);
/// The platform's attempts at one delivery, the first included.
const PLATFORM_ATTEMPTS: usize = 4;
/// The DynamoDB requests of a delivery that the sweep faults in turn, at most.
const MAX_POSITION: usize = 8;

/// The delivery under test.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    SesamiUninstall,
    HaravanShopUpdate,
    HaravanUninstalled,
}

/// Unique tenants across the tests of one run (each test has its own table, too).
static TENANT: AtomicU64 = AtomicU64::new(0);

/// One tenant's delivery, fixed: each attempt sends these very bytes and headers.
struct Prepared {
    tenant: String,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

const SHOP_BEFORE: &str = "before the delivery";

fn install_key(delivery: Delivery, tenant: &str) -> Key {
    match delivery {
        Delivery::SesamiUninstall => gatehouse::sesami::install_key(tenant),
        _ => gatehouse::haravan::install_key(tenant),
    }
}

/// A Haravan org's app session and its sign-in session's index entry: what `app/uninstalled`
/// removes besides the install.
fn session_keys(org: &str) -> [Key; 2] {
    let session = format!("session-of-{org}");
    [
        Key::new(gatehouse::haravan::org_sessions_partition(org), &session),
        Key::new(
            gatehouse::haravan::sid_partition(&format!("sid-of-{org}")),
            format!("{org}#{session}"),
        ),
    ]
}

impl Delivery {
    /// A new tenant, installed (directly in the table), and its signed delivery.
    async fn prepare(self, h: &Harness, table: &Table) -> Prepared {
        let n = TENANT.fetch_add(1, Ordering::SeqCst);
        let tenant = match self {
            Delivery::SesamiUninstall => format!("once-shop-{n}"),
            _ => (2_000_000_000 + n).to_string(),
        };
        self.install(table, &tenant).await;
        match self {
            Delivery::SesamiUninstall => {
                let data = BTreeMap::from([
                    ("shopId".to_string(), json!(tenant)),
                    (
                        "timestamp".to_string(),
                        json!(gatehouse_simulators::sesami::now_ms().to_string()),
                    ),
                ]);
                let body = h.server.sesami.webhook_body("uninstall_app", data);
                Prepared {
                    tenant,
                    path: "/sesami/webhooks",
                    headers: vec![("content-type", "application/json".into())],
                    body: serde_json::to_vec(&body).unwrap(),
                }
            }
            Delivery::HaravanShopUpdate | Delivery::HaravanUninstalled => {
                let org: u64 = tenant.parse().unwrap();
                let (topic, body) = match self {
                    Delivery::HaravanShopUpdate => (
                        "shop/update",
                        json!({
                            "id": org,
                            "name": shop_name(&tenant),
                            "domain": format!("{tenant}.example"),
                            "email": "owner@once.example",
                        }),
                    ),
                    _ => (
                        "app/uninstalled",
                        json!({"org_id": org, "event_type": "app/uninstalled", "user_id": 1}),
                    ),
                };
                let body = serde_json::to_vec(&body).unwrap();
                let secret = h.server.app.secrets.credentials("haravan").await.unwrap();
                let signature = gatehouse_simulators::haravan::webhook_signature(
                    secrecy::ExposeSecret::expose_secret(&secret.client_secret),
                    &body,
                );
                Prepared {
                    path: "/haravan/webhooks",
                    headers: vec![
                        ("content-type", "application/json".into()),
                        ("x-haravan-topic", topic.into()),
                        ("x-haravan-org-id", tenant.clone()),
                        ("x-haravan-hmacsha256", signature),
                    ],
                    body,
                    tenant,
                }
            }
        }
    }

    /// Puts the tenant's install (and, for `app/uninstalled`, a session) in place, as if the
    /// delivery had never been applied.
    async fn install(self, table: &Table, tenant: &str) {
        let mut attrs = Map::new();
        match self {
            Delivery::SesamiUninstall => {
                attrs.insert("name".into(), json!(tenant));
            }
            _ => {
                attrs.insert("orgid".into(), json!(tenant));
                attrs.insert("orgname".into(), json!("once"));
                attrs.insert("shop".into(), json!({"name": SHOP_BEFORE}));
            }
        }
        let item = Item::new(install_key(self, tenant), attrs);
        table.store.put(&item, Condition::Always).await.unwrap();
        if let Delivery::HaravanUninstalled = self {
            let expires = gatehouse::store::now() + 3600;
            let [session, index] = session_keys(tenant);
            let mut attrs = Map::new();
            attrs.insert("sid".into(), json!(format!("sid-of-{tenant}")));
            for (key, attrs) in [(session, attrs), (index, Map::new())] {
                table
                    .store
                    .put(
                        &Item::new(key, attrs).expiring_at(expires),
                        Condition::Always,
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Whether the table shows the delivery's effect; an error for a half-applied one.
    async fn applied(self, table: &Table, tenant: &str) -> Result<bool, String> {
        let install = table.store.get(&install_key(self, tenant)).await.unwrap();
        match self {
            Delivery::SesamiUninstall => Ok(install.is_none()),
            Delivery::HaravanShopUpdate => {
                let install = install.ok_or("the install is gone")?;
                let name = install.attrs["shop"]["name"].as_str().unwrap_or_default();
                if name == shop_name(tenant) {
                    Ok(true)
                } else if name == SHOP_BEFORE {
                    Ok(false)
                } else {
                    Err(format!("the shop reads {name:?}"))
                }
            }
            Delivery::HaravanUninstalled => {
                let mut sessions = 0;
                for key in session_keys(tenant) {
                    sessions += usize::from(table.store.get(&key).await.unwrap().is_some());
                }
                match (install.is_none(), sessions) {
                    (true, 0) => Ok(true),
                    (false, 2) => Ok(false),
                    (gone, left) => Err(format!(
                        "half applied: install removed {gone}, {left} of 2 session items left"
                    )),
                }
            }
        }
    }
}

fn shop_name(tenant: &str) -> String {
    format!("shop of {tenant}, as delivered")
}

/// How long a fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// The one request only: the SDK's retry of it, or the request after it, meets a healthy
    /// server.
    One,
    /// That request and every later one, until the platform retries the delivery.
    UntilRetry,
}

/// What one sweep step saw.
struct Outcome {
    /// The answers, one per platform attempt: status, body, wall time.
    answers: Vec<(u16, String, Duration)>,
    /// Applications of the effect seen in the table after each attempt.
    applied: usize,
    /// Whether the fault was put on any request (the delivery made at least `position`).
    fired: bool,
    problems: Vec<String>,
}

async fn deliver(
    h: &Harness,
    proxy: &FaultProxy,
    table: &Table,
    delivery: Delivery,
    fault: Fault,
    position: usize,
    span: Span,
) -> Outcome {
    let prepared = delivery.prepare(h, table).await;
    let fault = match (fault, span) {
        (Fault::Gone(_), Span::One) => Fault::Gone(Some(Duration::from_millis(300))),
        (Fault::Gone(_), Span::UntilRetry) => Fault::Gone(None),
        (other, _) => other,
    };
    let rule = Rule::every(fault).after(position - 1);
    proxy.set(vec![match span {
        Span::One => rule.times(1),
        Span::UntilRetry => rule,
    }]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut outcome = Outcome {
        answers: Vec::new(),
        applied: 0,
        fired: false,
        problems: Vec::new(),
    };
    for attempt in 1..=PLATFORM_ATTEMPTS {
        let mut request = client
            .post(h.url(prepared.path))
            .body(prepared.body.clone());
        for (name, value) in &prepared.headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let (status, body) = match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
            Err(e) => (0, format!("no answer: {e}")),
        };
        let took = started.elapsed();
        outcome.answers.push((status, body.clone(), took));
        if took > BUDGET + SLACK {
            outcome.problems.push(format!(
                "attempt {attempt} took {took:?}, over the {BUDGET:?} budget"
            ));
        }
        if attempt == 1 {
            outcome.fired = proxy.fired().first().is_some_and(|n| *n > 0);
            // The platform retries later; by then the server is healthy.
            proxy.clear();
        }
        if !proxy.settle(Duration::from_secs(10)).await {
            outcome
                .problems
                .push("writes still under way after 10 s".into());
        }
        match delivery.applied(table, &prepared.tenant).await {
            Ok(true) => {
                outcome.applied += 1;
                // Undone, so that another application would show.
                delivery.install(table, &prepared.tenant).await;
            }
            Ok(false) => {}
            Err(e) => {
                outcome
                    .problems
                    .push(format!("after attempt {attempt} ({status}): {e}"));
                delivery.install(table, &prepared.tenant).await;
            }
        }
        match status {
            200..=299 => break,
            500..=599 if attempt < PLATFORM_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            500..=599 => outcome.problems.push(format!(
                "still {status} after {PLATFORM_ATTEMPTS} attempts: {body:.200}"
            )),
            _ => {
                outcome
                    .problems
                    .push(format!("refused with {status}: {body:.200}"));
                break;
            }
        }
    }
    if outcome.applied != 1 {
        outcome
            .problems
            .push(format!("applied {} times, not once", outcome.applied));
    }
    outcome
}

/// The sweep for one delivery and one fault: each position and span in turn, every problem
/// collected, then one assertion naming them all.
async fn sweep(delivery: Delivery, fault: Fault) {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_AWS_TIMEOUT_SECONDS", AWS_TIMEOUT_SECONDS);
    vars.set(
        "GATEHOUSE_REQUEST_TIMEOUT_SECONDS",
        BUDGET.as_secs().to_string(),
    );
    let Some((h, proxy, table)) = Harness::on_proxied_dynamo(vars, 7).await else {
        return;
    };
    let mut report = Vec::new();
    let mut failed = false;
    for span in [Span::One, Span::UntilRetry] {
        for position in 1..=MAX_POSITION {
            let outcome = deliver(&h, &proxy, &table, delivery, fault, position, span).await;
            if position == 1 {
                assert!(outcome.fired, "the delivery makes no DynamoDB request");
            }
            if !outcome.fired {
                // The delivery makes fewer requests: this and later positions are fault-free.
                break;
            }
            let answers: Vec<String> = outcome
                .answers
                .iter()
                .map(|(status, body, took)| {
                    format!("{status} in {:.2} s {body:.80}", took.as_secs_f64())
                })
                .collect();
            let verdict = if outcome.problems.is_empty() {
                "ok".to_owned()
            } else {
                failed = true;
                format!("FAILS: {}", outcome.problems.join("; "))
            };
            report.push(format!(
                "{span:?}, request {position}: {verdict}\n      answers: {}",
                answers.join(" | ")
            ));
        }
    }
    assert!(
        !failed,
        "{delivery:?} under {fault:?}:\n  {}",
        report.join("\n  ")
    );
}

macro_rules! exactly_once {
    ($($name:ident: $delivery:ident, $fault:expr;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                sweep(Delivery::$delivery, $fault).await;
            }
        )+
    };
}

exactly_once! {
    sesami_uninstall_answer_dropped: SesamiUninstall, Fault::AnswerDropped;
    sesami_uninstall_answer_withheld: SesamiUninstall, Fault::AnswerWithheld;
    sesami_uninstall_hang: SesamiUninstall, Fault::Hang;
    sesami_uninstall_gone: SesamiUninstall, Fault::Gone(None);
    sesami_uninstall_throttled: SesamiUninstall, Fault::Throttle(Throttle::ProvisionedThroughputExceeded);
    haravan_shop_update_answer_dropped: HaravanShopUpdate, Fault::AnswerDropped;
    haravan_shop_update_answer_withheld: HaravanShopUpdate, Fault::AnswerWithheld;
    haravan_shop_update_hang: HaravanShopUpdate, Fault::Hang;
    haravan_shop_update_gone: HaravanShopUpdate, Fault::Gone(None);
    haravan_shop_update_throttled: HaravanShopUpdate, Fault::Throttle(Throttle::Throttling);
    haravan_uninstalled_answer_dropped: HaravanUninstalled, Fault::AnswerDropped;
    haravan_uninstalled_answer_withheld: HaravanUninstalled, Fault::AnswerWithheld;
    haravan_uninstalled_hang: HaravanUninstalled, Fault::Hang;
    haravan_uninstalled_gone: HaravanUninstalled, Fault::Gone(None);
    haravan_uninstalled_throttled: HaravanUninstalled, Fault::Throttle(Throttle::ProvisionedThroughputExceeded);
}
