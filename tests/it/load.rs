//! The load run (gatehouse_local::load): concurrent signed deliveries to many orgs, with
//! duplicates and bad signatures, every 5xx retried as a platform retries; every valid one
//! applied exactly once (counted from the store, and on DynamoDB from the writes moto applied),
//! every bad one refused.

use gatehouse_local::load::{Backend, Plan, Report};
use std::time::{Duration, Instant};

fn assert_holds(report: &Report) {
    assert!(report.duplicates > 0 && report.bad > 0, "{report:?}");
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_processed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let report = gatehouse_local::load::run(Plan::embedded(400, 25), dir.path())
        .await
        .unwrap();
    assert_holds(&report);
}

/// 2,000 deliveries at 50 at once on DynamoDB (moto) behind the fault proxy, the store hanging
/// for 8 s once half of them are sent (each request in the hang held unanswered, half of them
/// applied first): no delivery lost or applied twice, no 5xx left unretried, no answer past the
/// request budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_through_an_eight_second_store_hang_are_applied_exactly_once() {
    if crate::support::sdk_config().await.is_none() {
        return;
    }
    // A moto of its own when the test command starts one (GATEHOUSE_LOAD_ENDPOINT_URL): moto
    // serves one request at a time, and the other tests' requests queued before the run's would
    // be counted as the run's own latency.
    let endpoint = std::env::var("GATEHOUSE_LOAD_ENDPOINT_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(gatehouse_local::faultproxy::endpoint_from_env)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        deliveries: 2000,
        concurrency: 50,
        orgs: 100,
        backend: Backend::Dynamo { endpoint },
        hang: Some(Duration::from_secs(8)),
    };
    let started = Instant::now();
    let report = gatehouse_local::load::run(plan, dir.path()).await.unwrap();
    eprintln!(
        "{}in {:.1} s",
        report.table(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.hang.is_some(), "the store hung");
    assert!(
        report.answers[2] + report.answers[3] > 0,
        "the hang was felt: {report:?}"
    );
    assert_eq!(report.deliveries, 2000);
    assert_holds(&report);
}
