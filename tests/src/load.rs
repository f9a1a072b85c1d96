//! A bounded load run against the local server: signed Haravan webhook deliveries, some
//! duplicated and some badly signed, sent concurrently; then the store is counted to show that
//! every valid delivery was processed exactly once and every bad one refused.
//!
//! `cargo run -p gatehouse-local --bin gatehouse-load -- [--deliveries N] [--concurrency C]`
//! (defaults 10,000 and 50). Traffic goes only to 127.0.0.1; the run stops by itself.

use crate::server::{self, LocalServer};
use crate::simulators::haravan::webhook_signature;
use gatehouse::config::Vars;
use gatehouse::refresh::{Grant, seal};
use gatehouse::store::{Condition, Item};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ORG: &str = "1000777777";

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Deliveries in all (valid, duplicate and bad).
    pub deliveries: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// One delivery's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid(usize),
    Duplicate(usize),
    BadSignature(usize),
}

/// What an answer said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Handled,
    Duplicate,
    Other,
}

/// What the run observed.
#[derive(Debug)]
pub struct Report {
    /// The plan it ran.
    pub plan: Plan,
    /// Distinct valid deliveries sent.
    pub unique_valid: usize,
    /// Duplicates sent.
    pub duplicates: usize,
    /// Badly signed deliveries sent.
    pub bad: usize,
    /// Answers by status class: 2xx, 4xx, 5xx, no answer.
    pub answers: [usize; 4],
    /// Bad deliveries answered 401.
    pub bad_refused: usize,
    /// Delivery marks in the store afterwards (one per distinct delivery processed).
    pub processed: usize,
    /// Answers saying the delivery was processed, and saying it was a duplicate.
    pub handled_answers: usize,
    /// Answers saying the delivery was a duplicate (acknowledged, not acted on).
    pub duplicate_answers: usize,
    /// Wall time of the sending.
    pub elapsed: Duration,
    /// Latency percentiles (p50, p95, p99, max).
    pub latency: [Duration; 4],
}

impl Report {
    /// Whether the run shows what it must: no 5xx, no lost answer, each valid delivery processed
    /// exactly once, each bad one refused.
    pub fn holds(&self) -> bool {
        self.answers[2] == 0
            && self.answers[3] == 0
            && self.processed == self.unique_valid
            && self.handled_answers == self.unique_valid
            && self.duplicate_answers == self.duplicates
            && self.bad_refused == self.bad
    }

    /// A Markdown table of the run.
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let rate = self.plan.deliveries as f64 / self.elapsed.as_secs_f64();
        format!(
            "| deliveries | concurrency | unique valid / duplicates / bad | 2xx / 4xx / 5xx / lost | processed (store) | throughput | p50 | p95 | p99 | max |\n\
             |---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} / {} / {} | {} / {} / {} / {} | {} | {:.0}/s | {} | {} | {} | {} |\n",
            self.plan.deliveries,
            self.plan.concurrency,
            self.unique_valid,
            self.duplicates,
            self.bad,
            self.answers[0],
            self.answers[1],
            self.answers[2],
            self.answers[3],
            self.processed,
            rate,
            ms(self.latency[0]),
            ms(self.latency[1]),
            ms(self.latency[2]),
            ms(self.latency[3]),
        )
    }
}

/// Every tenth delivery a duplicate of an earlier valid one, every tenth (offset) badly signed.
fn kinds(n: usize) -> Vec<Kind> {
    let mut unique = 0;
    (0..n)
        .map(|i| match i % 10 {
            3 if unique > 0 => Kind::Duplicate((i * 7919) % unique),
            7 => Kind::BadSignature(i),
            _ => {
                unique += 1;
                Kind::Valid(unique - 1)
            }
        })
        .collect()
}

fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": ORG.parse::<u64>().unwrap_or(0),
        "name": format!("Load shop {i}"),
        "domain": "load.myharavan.com",
        "email": "owner@load.example",
    }))
    .unwrap_or_default()
}

/// Seeds an installed org for the deliveries to update.
async fn seed_install(server: &LocalServer) -> Result<(), Box<dyn std::error::Error>> {
    let app = &server.app;
    let key = gatehouse::haravan::install_key(ORG);
    let keys = app.secrets.app_keys().await?;
    let mut attrs = Map::new();
    attrs.insert("orgid".into(), json!(ORG));
    attrs.insert("orgname".into(), json!("load"));
    let grant = Grant {
        access_token: SecretString::from("load-access".to_owned()),
        refresh_token: None,
        expires_in: 86_400,
        extra: Vec::new(),
    };
    seal(&keys, &key, &grant, &mut attrs)?;
    app.store
        .put(&Item::new(key, attrs), Condition::Always)
        .await?;
    Ok(())
}

/// Runs `plan` against a fresh local server on the embedded store in `data_dir`.
pub async fn run(
    plan: Plan,
    data_dir: &std::path::Path,
) -> Result<Report, Box<dyn std::error::Error>> {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_DATA_DIR", data_dir.to_string_lossy());
    let server = server::start(0, vars).await?;
    seed_install(&server).await?;
    let secret = server
        .app
        .secrets
        .credentials("haravan")
        .await?
        .client_secret
        .expose_secret()
        .to_owned();
    let url = format!("{}/haravan/webhooks", server.base());
    let kinds = Arc::new(kinds(plan.deliveries));
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| {
            let (kinds, next, client, url, secret) = (
                kinds.clone(),
                next.clone(),
                client.clone(),
                url.clone(),
                secret.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(kind) = kinds.get(i).copied() else {
                        return seen;
                    };
                    let (payload, signature) = match kind {
                        Kind::Valid(n) | Kind::Duplicate(n) => {
                            let b = body(n);
                            let s = webhook_signature(&secret, &b);
                            (b, s)
                        }
                        Kind::BadSignature(n) => (
                            body(1_000_000 + n),
                            webhook_signature("not-the-secret", &body(n)),
                        ),
                    };
                    let t = Instant::now();
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-haravan-topic", "shop/update")
                        .header("x-haravan-org-id", ORG)
                        .header("x-haravan-hmacsha256", signature)
                        .body(payload)
                        .send()
                        .await;
                    let (status, text) = match answer {
                        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                        Err(_) => (0, String::new()),
                    };
                    let said = if text.contains("\"duplicate\":true") {
                        Said::Duplicate
                    } else if text.contains("\"handled\":true") {
                        Said::Handled
                    } else {
                        Said::Other
                    };
                    seen.push((kind, status, said, t.elapsed()));
                }
            })
        })
        .collect();
    let mut results = Vec::with_capacity(plan.deliveries);
    for w in workers {
        results.extend(w.await?);
    }
    let elapsed = started.elapsed();

    let mut answers = [0usize; 4];
    let mut bad_refused = 0;
    let handled_answers = results.iter().filter(|r| r.2 == Said::Handled).count();
    let duplicate_answers = results.iter().filter(|r| r.2 == Said::Duplicate).count();
    for (kind, status, _, _) in &results {
        answers[match status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => 3,
        }] += 1;
        if matches!(kind, Kind::BadSignature(_)) && *status == 401 {
            bad_refused += 1;
        }
    }
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.3).collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let count = |f: fn(&Kind) -> bool| kinds.iter().filter(|k| f(k)).count();
    Ok(Report {
        plan,
        unique_valid: count(|k| matches!(k, Kind::Valid(_))),
        duplicates: count(|k| matches!(k, Kind::Duplicate(_))),
        bad: count(|k| matches!(k, Kind::BadSignature(_))),
        answers,
        bad_refused,
        processed: server.app.store.query("webhook#haravan").await?.len(),
        handled_answers,
        duplicate_answers,
        elapsed,
        latency: [
            pct(0.50),
            pct(0.95),
            pct(0.99),
            latencies.last().copied().unwrap_or_default(),
        ],
    })
}
