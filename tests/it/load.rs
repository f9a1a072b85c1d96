//! The load run, small: concurrent signed deliveries with duplicates and bad signatures; every
//! valid one processed exactly once (counted from the store), every bad one refused, no 5xx.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_are_processed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let plan = gatehouse_local::load::Plan {
        deliveries: 400,
        concurrency: 25,
    };
    let report = gatehouse_local::load::run(plan, dir.path()).await.unwrap();
    assert!(report.duplicates > 0 && report.bad > 0, "{report:?}");
    assert!(report.holds(), "{report:?}");
}
