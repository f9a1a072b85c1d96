//! A bounded load run against the local server: signed Haravan `shop/update` deliveries to many
//! installed orgs, some duplicated and some badly signed, sent concurrently; on the embedded
//! store, or on DynamoDB (moto) behind the fault proxy with the store hanging in the middle.
//! Every answer in 5xx, or none, is retried with the identical body and signature, with
//! backoff, as a platform retries. Then the store is counted, read directly rather than through
//! the app, to show that every valid delivery was applied exactly once and every bad one not at
//! all.
//!
//! How "exactly once" is counted. A `shop/update` sets the org's shop, so applying one
//! delivery twice leaves the same shop as applying it once, unless something came in between.
//! So each org's deliveries are sent one after another, by the one worker that owns the org,
//! and each valid one names the shop distinctly (`gh-load-<org>-<step>`):
//!
//! - after each delivery has its final answer, the org's stored shop must be that of the org's
//!   latest valid delivery: a lost delivery leaves an older one, and a duplicate or a badly
//!   signed delivery that was acted on leaves its own (a duplicate repeats an older shop);
//! - each distinct delivery leaves one mark (`webhook#haravan#<hash>`), so the marks must number the
//!   valid deliveries;
//! - on DynamoDB, the fault proxy keeps every write moto applied, as received: the shop name of
//!   each valid delivery must occur in exactly one of them. This sees what the stored shop
//!   cannot: the same delivery applied twice in a row (an SDK retry of a write whose answer was
//!   lost, or the platform's retry after a failed delivery had been applied). A transaction
//!   repeated with its client request token is answered by the proxy without writing again, as
//!   DynamoDB does, and is not counted.
//!
//! `cargo run -p gatehouse-local --bin gatehouse-load -- [--deliveries N] [--concurrency C]
//! [--orgs O] [--dynamo] [--hang-seconds S]` (defaults 10,000, 50, twice the concurrency, the
//! embedded store, no hang). Traffic goes only to 127.0.0.1; the run stops by itself.

use crate::faultproxy::{Fault, FaultProxy, Rule};
use crate::server::{self, LocalServer};
use gatehouse::config::{Config, Vars};
use gatehouse::refresh::{Grant, seal};
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, DynamoStore, Item, Store};
use gatehouse_simulators::haravan::webhook_signature;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The first org's id; org `o` is `FIRST_ORG + o`.
const FIRST_ORG: u64 = 1_000_700_000;
/// The shop every org has before its first delivery.
const SEEDED_SHOP: &str = "gh-seeded";
/// The platform's attempts at one delivery, the first included.
const ATTEMPTS: usize = 8;
/// The platform's wait before its first retry; doubled each time, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How long the platform waits for an answer before it counts the attempt as failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// What an answer may take beyond the request budget (the 503 itself, a busy machine).
pub const SLACK: Duration = Duration::from_secs(1);
/// The request budget and one store call's bound of a run on DynamoDB: shorter than the
/// defaults (20 s and 5 s) so that a hang of a few seconds outlasts both, as 8 s outlasted a
/// store call's 5 s in the fault harness's run; long enough for 50 requests queued at moto,
/// which serves one at a time (over a second at the back of the queue on two cores).
const DYNAMO_BUDGET_SECONDS: u64 = 5;
const DYNAMO_AWS_TIMEOUT_SECONDS: u64 = 4;

/// Where the server keeps its store.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded store (SQLite) in the run's data dir.
    Embedded,
    /// A fresh table on the DynamoDB-compatible server at this endpoint (moto), reached through
    /// the fault proxy.
    Dynamo {
        /// moto's `http://host:port`.
        endpoint: String,
    },
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Deliveries in all (valid, duplicate and bad).
    pub deliveries: usize,
    /// Requests in flight at once (workers).
    pub concurrency: usize,
    /// Orgs the deliveries go to, spread over the workers (at least one per worker).
    pub orgs: usize,
    /// The store.
    pub backend: Backend,
    /// On DynamoDB: the store hangs for this long once half the deliveries have been sent.
    /// Each request in the hang is held unanswered; half of them (seeded) are applied first,
    /// as a server that hangs after writing does.
    pub hang: Option<Duration>,
}

impl Plan {
    /// `deliveries` at `concurrency` on the embedded store, twice as many orgs as workers.
    pub fn embedded(deliveries: usize, concurrency: usize) -> Plan {
        Plan {
            deliveries,
            concurrency,
            orgs: concurrency.max(1) * 2,
            backend: Backend::Embedded,
            hang: None,
        }
    }
}

/// One delivery's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A new delivery, the org's `step`.
    Valid,
    /// The very bytes of the org's valid delivery at this earlier step, again.
    Duplicate(usize),
    /// Signed with another key.
    Bad,
}

/// What the run observed.
#[derive(Debug, Default)]
pub struct Report {
    /// Deliveries sent (each counted once, however often retried).
    pub deliveries: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Orgs.
    pub orgs: usize,
    /// Whether the store was DynamoDB behind the fault proxy.
    pub dynamo: bool,
    /// The hang, if any, and when it began after the start.
    pub hang: Option<(Duration, Duration)>,
    /// Distinct valid deliveries sent.
    pub unique_valid: usize,
    /// Duplicates sent.
    pub duplicates: usize,
    /// Badly signed deliveries sent.
    pub bad: usize,
    /// Attempts in all (the platform's retries included).
    pub attempts: usize,
    /// Answers by status class over all attempts: 2xx, 4xx, 5xx, no answer.
    pub answers: [usize; 4],
    /// Deliveries whose last attempt still got a 5xx or no answer (retries used up).
    pub unretried: usize,
    /// Valid deliveries finally answered as handled, or as a duplicate of their own earlier
    /// attempt (applied by an attempt whose answer was lost).
    pub valid_acknowledged: usize,
    /// Duplicates finally answered as duplicates.
    pub duplicates_acknowledged: usize,
    /// Bad deliveries answered 401.
    pub bad_refused: usize,
    /// Deliveries after which the org's stored shop was not its latest valid delivery's.
    pub table_mismatches: usize,
    /// The first few of those, described.
    pub mismatch_examples: Vec<String>,
    /// Delivery marks in the store afterwards (one per distinct delivery processed).
    pub processed: usize,
    /// On DynamoDB: valid deliveries found in no write moto applied, and in more than one.
    pub applied_never: Option<usize>,
    /// See `applied_never`.
    pub applied_twice: Option<usize>,
    /// The request budget of the run's server.
    pub budget: Duration,
    /// Wall time of the sending.
    pub elapsed: Duration,
    /// Latency percentiles over all attempts (p50, p95, p99, max).
    pub latency: [Duration; 4],
}

impl Report {
    /// Whether the run shows what it must: no 5xx left unretried, each valid delivery applied
    /// exactly once (the stored shops, the marks, and on DynamoDB the writes applied), each
    /// duplicate acknowledged without acting, each bad one refused, no answer past the budget.
    /// Without a hang, nothing may answer 5xx at all.
    pub fn holds(&self) -> bool {
        self.problems().is_empty()
    }

    /// What does not hold, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                out.push(what);
            }
        };
        check(
            self.unretried == 0,
            format!("{} deliveries left with a 5xx", self.unretried),
        );
        if self.hang.is_none() {
            check(
                self.answers[2] + self.answers[3] == 0,
                format!("{} 5xx or lost answers", self.answers[2] + self.answers[3]),
            );
        }
        check(
            self.valid_acknowledged == self.unique_valid,
            format!(
                "{} of {} valid deliveries acknowledged",
                self.valid_acknowledged, self.unique_valid
            ),
        );
        check(
            self.duplicates_acknowledged == self.duplicates,
            format!(
                "{} of {} duplicates acknowledged as such",
                self.duplicates_acknowledged, self.duplicates
            ),
        );
        check(
            self.bad_refused == self.bad,
            format!(
                "{} of {} bad deliveries refused",
                self.bad_refused, self.bad
            ),
        );
        check(
            self.table_mismatches == 0,
            format!(
                "{} deliveries left the wrong shop stored: {:?}",
                self.table_mismatches, self.mismatch_examples
            ),
        );
        check(
            self.processed == self.unique_valid,
            format!(
                "{} marks for {} valid deliveries",
                self.processed, self.unique_valid
            ),
        );
        check(
            self.applied_never.unwrap_or(0) == 0,
            format!("{:?} valid deliveries never applied", self.applied_never),
        );
        check(
            self.applied_twice.unwrap_or(0) == 0,
            format!(
                "{:?} valid deliveries applied more than once",
                self.applied_twice
            ),
        );
        check(
            self.latency[3] <= self.budget + SLACK,
            format!(
                "an answer took {:?}, over the {:?} budget",
                self.latency[3], self.budget
            ),
        );
        out
    }

    /// A Markdown table of the run.
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let rate = self.deliveries as f64 / self.elapsed.as_secs_f64();
        let store = match (self.dynamo, self.hang) {
            (false, _) => "embedded".to_owned(),
            (true, None) => "DynamoDB (moto)".to_owned(),
            (true, Some((hang, at))) => format!(
                "DynamoDB (moto), hung {:.0} s from {:.1} s",
                hang.as_secs_f64(),
                at.as_secs_f64()
            ),
        };
        let opt = |n: Option<usize>| n.map_or("-".to_owned(), |n| n.to_string());
        format!(
            "| store | deliveries | concurrency | orgs | unique valid / duplicates / bad | attempts: 2xx / 4xx / 5xx / lost | 5xx left | marks | wrong shop | applied 0 / 2+ times | throughput | p50 | p95 | p99 | max |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {store} | {} | {} | {} | {} / {} / {} | {} / {} / {} / {} | {} | {} | {} | {} / {} | {:.0}/s | {} | {} | {} | {} |\n",
            self.deliveries,
            self.concurrency,
            self.orgs,
            self.unique_valid,
            self.duplicates,
            self.bad,
            self.answers[0],
            self.answers[1],
            self.answers[2],
            self.answers[3],
            self.unretried,
            self.processed,
            self.table_mismatches,
            opt(self.applied_never),
            opt(self.applied_twice),
            rate,
            ms(self.latency[0]),
            ms(self.latency[1]),
            ms(self.latency[2]),
            ms(self.latency[3]),
        )
    }
}

/// The kind of org `org`'s delivery at `step`: one in ten a duplicate of an earlier valid one,
/// one in ten badly signed, the rest new (offset by org, so that orgs differ).
fn kind(org: usize, step: usize) -> Kind {
    match (org + step) % 10 {
        // The latest valid step before this one, if there is one.
        3 => match (0..step).rev().find(|s| kind(org, *s) == Kind::Valid) {
            Some(earlier) => Kind::Duplicate(earlier),
            None => Kind::Valid,
        },
        7 => Kind::Bad,
        _ => Kind::Valid,
    }
}

fn org_id(org: usize) -> String {
    (FIRST_ORG + org as u64).to_string()
}

/// The shop name a valid delivery of `org` at `step` sets: unique in the run.
fn shop_name(org: usize, step: usize) -> String {
    format!("gh-load-{}-{step}", org_id(org))
}

fn body(org: usize, step: usize, bad: bool) -> Vec<u8> {
    let name = if bad {
        format!("gh-bad-{}-{step}", org_id(org))
    } else {
        shop_name(org, step)
    };
    serde_json::to_vec(&json!({
        "id": FIRST_ORG + org as u64,
        "name": name,
        "domain": "load.myharavan.com",
        "email": "owner@load.example",
    }))
    .unwrap_or_default()
}

/// The store of the run's table, and the fault proxy in front of it (DynamoDB only).
struct Stand {
    server: LocalServer,
    /// The store read directly: on DynamoDB, around the proxy's faults.
    direct: Arc<dyn Store>,
    proxy: Option<FaultProxy>,
    budget: Duration,
}

async fn stand(
    plan: &Plan,
    data_dir: &std::path::Path,
) -> Result<Stand, Box<dyn std::error::Error>> {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_DATA_DIR", data_dir.to_string_lossy());
    match &plan.backend {
        Backend::Embedded => {
            let server = server::start(0, vars).await?;
            let direct = server.app.store.clone();
            let budget = server.app.config.request_timeout;
            Ok(Stand {
                server,
                direct,
                proxy: None,
                budget,
            })
        }
        Backend::Dynamo { endpoint } => {
            vars.set(
                "GATEHOUSE_REQUEST_TIMEOUT_SECONDS",
                DYNAMO_BUDGET_SECONDS.to_string(),
            );
            vars.set(
                "GATEHOUSE_AWS_TIMEOUT_SECONDS",
                DYNAMO_AWS_TIMEOUT_SECONDS.to_string(),
            );
            let proxy = FaultProxy::start(endpoint, 0x6c6f_6164).await?;
            // moto's own transactions copy the whole table each time: at 50 deliveries at once
            // and thousands of marks, 1,800 transactions took 91 s, some waiting 7 s, past the
            // budget, against 40 s and 1.7 s applied by the proxy (same answers and effects,
            // tests/it/fault_proxy.rs).
            proxy.emulate_transactions(true);
            let sdk = gatehouse::context::aws_sdk_config(&Config::from_vars(&vars)?).await;
            let direct_client = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&sdk)
                    .endpoint_url(proxy.direct_endpoint())
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_timeout(Duration::from_secs(30))
                            .build(),
                    )
                    .build(),
            );
            let table = format!("gatehouse-load-{}", uuid::Uuid::new_v4().simple());
            gatehouse::store::create_table(&direct_client, &table).await?;
            let direct: Arc<dyn Store> = Arc::new(DynamoStore::new(direct_client, table.clone()));
            let app_endpoint = proxy.endpoint();
            let server = server::start_with(0, vars, move |vars| async move {
                let config = Config::from_vars(&vars)?;
                let sdk = gatehouse::context::aws_sdk_config(&config).await;
                let client = aws_sdk_dynamodb::Client::from_conf(
                    aws_sdk_dynamodb::config::Builder::from(&sdk)
                        .endpoint_url(app_endpoint)
                        .build(),
                );
                let store = Arc::new(DynamoStore::new(client, table));
                Platforms::with_store(&vars, config, store, Some(&sdk))
            })
            .await?;
            Ok(Stand {
                server,
                direct,
                proxy: Some(proxy),
                budget: Duration::from_secs(DYNAMO_BUDGET_SECONDS),
            })
        }
    }
}

/// Installs every org, directly in the store.
async fn seed_installs(stand: &Stand, orgs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let keys = stand.server.app.secrets.app_keys().await?;
    for org in 0..orgs {
        let id = org_id(org);
        let key = gatehouse::haravan::install_key(&id);
        let mut attrs = Map::new();
        attrs.insert("orgid".into(), json!(id));
        attrs.insert("orgname".into(), json!("load"));
        attrs.insert("shop".into(), json!({"name": SEEDED_SHOP}));
        let grant = Grant {
            access_token: SecretString::from("load-access".to_owned()),
            refresh_token: None,
            expires_in: 86_400,
            extra: Vec::new(),
        };
        seal(&keys, &key, &grant, &mut attrs)?;
        stand
            .direct
            .put(&Item::new(key, attrs), Condition::Always)
            .await?;
    }
    Ok(())
}

/// One delivery's story.
struct Sent {
    kind: Kind,
    /// Every attempt: status (0: no answer) and wall time.
    attempts: Vec<(u16, Duration)>,
    /// The last answer's body.
    last: String,
    /// The stored shop after the final answer was not the expected one: what it was.
    mismatch: Option<String>,
}

/// What every worker shares.
struct Shared {
    url: String,
    secret: String,
    client: reqwest::Client,
    direct: Arc<dyn Store>,
    sent: AtomicUsize,
    half: usize,
    hang: Option<Duration>,
    hang_started: Mutex<Option<Instant>>,
    hang_armed: AtomicBool,
    started: Instant,
}

/// Sends one delivery until it has an answer that is not a 5xx, or the attempts are used up.
async fn send(shared: &Shared, proxy: Option<&Arc<FaultProxy>>, org: usize, step: usize) -> Sent {
    let kind = kind(org, step);
    let (payload, signature) = match kind {
        Kind::Valid => {
            let b = body(org, step, false);
            let s = webhook_signature(&shared.secret, &b);
            (b, s)
        }
        Kind::Duplicate(earlier) => {
            let b = body(org, earlier, false);
            let s = webhook_signature(&shared.secret, &b);
            (b, s)
        }
        Kind::Bad => (
            body(org, step, true),
            webhook_signature("not-the-secret", &body(org, step, false)),
        ),
    };
    // The hang begins once half the deliveries have been sent, and ends by itself.
    let n = shared.sent.fetch_add(1, Ordering::SeqCst);
    if let (Some(hang), Some(proxy)) = (shared.hang, proxy)
        && n >= shared.half
        && !shared.hang_armed.swap(true, Ordering::SeqCst)
    {
        proxy.set(vec![
            Rule::every(Fault::AnswerWithheld).probability(0.5),
            Rule::every(Fault::Hang),
        ]);
        if let Ok(mut at) = shared.hang_started.lock() {
            *at = Some(Instant::now());
        }
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hang).await;
            proxy.clear();
        });
    }
    let mut attempts = Vec::new();
    let mut last = String::new();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let t = Instant::now();
        let answer = shared
            .client
            .post(&shared.url)
            .header("content-type", "application/json")
            .header("x-haravan-topic", "shop/update")
            .header("x-haravan-org-id", org_id(org))
            .header("x-haravan-hmacsha256", &signature)
            .body(payload.clone())
            .send()
            .await;
        let (status, text) = match answer {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        attempts.push((status, t.elapsed()));
        last = text;
        if !(status == 0 || (500..=599).contains(&status)) || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Sent {
        kind,
        attempts,
        last,
        mismatch: None,
    }
}

/// The org's stored shop name, read directly. The check's own read is not what is under test:
/// a read that fails (a busy moto on a loaded machine answers past the SDK's attempt timeout) is
/// tried again, and only one that fails five times in a row is reported.
async fn stored_shop(direct: &Arc<dyn Store>, org: usize) -> String {
    let key = gatehouse::haravan::install_key(&org_id(org));
    let mut tries = 0;
    loop {
        tries += 1;
        match direct.get(&key).await {
            Ok(Some(item)) => {
                return item.attrs["shop"]["name"]
                    .as_str()
                    .unwrap_or("(no shop name)")
                    .to_owned();
            }
            Ok(None) => return "(no install)".to_owned(),
            Err(e) if tries >= 5 => return format!("(unreadable: {e})"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Runs `plan` against a fresh local server (its data dir `data_dir`).
pub async fn run(
    plan: Plan,
    data_dir: &std::path::Path,
) -> Result<Report, Box<dyn std::error::Error>> {
    let stand = stand(&plan, data_dir).await?;
    let orgs = plan.orgs.max(plan.concurrency).max(1);
    seed_installs(&stand, orgs).await?;
    let secret = stand
        .server
        .app
        .secrets
        .credentials("haravan")
        .await?
        .client_secret
        .expose_secret()
        .to_owned();
    let shared = Arc::new(Shared {
        url: format!("{}/haravan/webhooks", stand.server.base()),
        secret,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(plan.concurrency)
            .timeout(CLIENT_TIMEOUT)
            .build()?,
        direct: stand.direct.clone(),
        sent: AtomicUsize::new(0),
        half: plan.deliveries / 2,
        hang: plan.hang.filter(|_| stand.proxy.is_some()),
        hang_started: Mutex::new(None),
        hang_armed: AtomicBool::new(false),
        started: Instant::now(),
    });
    let proxy = stand.proxy.map(Arc::new);
    let workers = plan.concurrency.max(1);
    let started = Instant::now();
    // Worker `w` owns the orgs `w, w + workers, ...` and sends their deliveries round by round:
    // step 0 of each of its orgs, then step 1, ...; delivery `i` of the run is org `i % orgs`'s
    // step `i / orgs`.
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (shared, proxy) = (shared.clone(), proxy.clone());
            let deliveries = plan.deliveries;
            tokio::spawn(async move {
                let mine: Vec<usize> = (w..orgs).step_by(workers).collect();
                let mut latest: HashMap<usize, String> = mine
                    .iter()
                    .map(|o| (*o, SEEDED_SHOP.to_owned()))
                    .collect();
                let mut out = Vec::new();
                let steps = deliveries.div_ceil(orgs);
                for step in 0..steps {
                    for &org in &mine {
                        if step * orgs + org >= deliveries {
                            continue;
                        }
                        let mut sent = send(&shared, proxy.as_ref(), org, step).await;
                        if sent.kind == Kind::Valid
                            && sent.attempts.last().is_some_and(|(s, _)| (200..300).contains(s))
                        {
                            latest.insert(org, shop_name(org, step));
                        }
                        if let Some(proxy) = &proxy {
                            proxy.settle(Duration::from_secs(30)).await;
                        }
                        let stored = stored_shop(&shared.direct, org).await;
                        let expected = latest.get(&org).cloned().unwrap_or_default();
                        if stored != expected {
                            sent.mismatch = Some(format!(
                                "org {} after step {step} ({:?}): stored {stored:?}, expected {expected:?}",
                                org_id(org),
                                sent.kind
                            ));
                        }
                        out.push((org, step, sent));
                    }
                }
                out
            })
        })
        .collect();
    let mut results = Vec::with_capacity(plan.deliveries);
    for task in tasks {
        results.extend(task.await?);
    }
    let elapsed = started.elapsed();

    let mut report = Report {
        deliveries: results.len(),
        concurrency: plan.concurrency,
        orgs,
        dynamo: proxy.is_some(),
        budget: stand.budget,
        elapsed,
        ..Report::default()
    };
    if let (Some(hang), Ok(at)) = (shared.hang, shared.hang_started.lock())
        && let Some(at) = *at
    {
        report.hang = Some((hang, at.duration_since(shared.started)));
    }
    let mut latencies = Vec::new();
    for (_, _, sent) in &results {
        match sent.kind {
            Kind::Valid => report.unique_valid += 1,
            Kind::Duplicate(_) => report.duplicates += 1,
            Kind::Bad => report.bad += 1,
        }
        for (status, took) in &sent.attempts {
            report.attempts += 1;
            report.answers[match status {
                200..=299 => 0,
                400..=499 => 1,
                500..=599 => 2,
                _ => 3,
            }] += 1;
            latencies.push(*took);
        }
        let last = sent.attempts.last().map_or(0, |(s, _)| *s);
        let retried = sent.attempts.len() > 1;
        let duplicate = sent.last.contains("\"duplicate\":true");
        let handled = sent.last.contains("\"handled\":true");
        match sent.kind {
            _ if last == 0 || (500..=599).contains(&last) => report.unretried += 1,
            Kind::Valid if last == 200 && (handled || (duplicate && retried)) => {
                report.valid_acknowledged += 1
            }
            Kind::Duplicate(_) if last == 200 && duplicate => report.duplicates_acknowledged += 1,
            Kind::Bad if last == 401 => report.bad_refused += 1,
            _ => {}
        }
        if let Some(m) = &sent.mismatch {
            report.table_mismatches += 1;
            if report.mismatch_examples.len() < 5 {
                report.mismatch_examples.push(m.clone());
            }
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    report.latency = [
        pct(0.50),
        pct(0.95),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    ];
    // Each mark has a partition of its own (`webhook#haravan#<hash>`): counted with a scan of
    // the kind's prefix, which only this tool, never a function, makes.
    report.processed = stand.direct.scan_prefix("webhook#haravan#").await?.len();
    if let Some(proxy) = &proxy {
        // Each valid delivery's shop name, in the writes moto applied for the app.
        let mut applied: HashMap<String, usize> = HashMap::new();
        for write in proxy.applied().iter().filter(|w| !w.direct) {
            let text = String::from_utf8_lossy(&write.body);
            for (i, _) in text.match_indices("gh-load-") {
                let name: String = text[i..].chars().take_while(|c| *c != '"').collect();
                *applied.entry(name).or_default() += 1;
            }
        }
        let (mut never, mut twice) = (0, 0);
        for (org, step, sent) in &results {
            if sent.kind == Kind::Valid {
                match applied.get(&shop_name(*org, *step)).copied().unwrap_or(0) {
                    0 => never += 1,
                    1 => {}
                    _ => twice += 1,
                }
            }
        }
        report.applied_never = Some(never);
        report.applied_twice = Some(twice);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_duplicates_a_tenth_bad_and_duplicates_repeat_a_valid_delivery() {
        let (mut valid, mut dup, mut bad) = (0, 0, 0);
        for org in 0..20 {
            for step in 0..50 {
                match kind(org, step) {
                    Kind::Valid => valid += 1,
                    Kind::Duplicate(earlier) => {
                        assert!(earlier < step);
                        assert_eq!(kind(org, earlier), Kind::Valid);
                        dup += 1;
                    }
                    Kind::Bad => bad += 1,
                }
            }
        }
        assert_eq!(valid + dup + bad, 1000);
        assert!((90..=100).contains(&dup) && bad == 100, "{dup} {bad}");
    }
}
