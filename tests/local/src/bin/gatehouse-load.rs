//! `cargo run --release -p gatehouse-local --bin gatehouse-load -- [--deliveries N]
//! [--concurrency C] [--orgs O] [--dynamo] [--hang-seconds S]`: the load run of
//! `gatehouse_local::load` (defaults 10,000 deliveries, 50 at once, twice as many orgs, the
//! embedded store). `--dynamo` runs it on a fresh table of the DynamoDB-compatible server named
//! by `AWS_ENDPOINT_URL` (moto; the AWS region and credentials from the environment too),
//! through the fault proxy; `--hang-seconds` hangs the store that long in the middle. Prints a
//! Markdown table for the README and exits non-zero if any valid delivery was not applied
//! exactly once, any bad one was not refused, or a 5xx was left unretried.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse_local::load::{self, Backend, Plan};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut plan = Plan::embedded(10_000, 50);
    let mut orgs = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--dynamo" {
            let endpoint = gatehouse_local::faultproxy::endpoint_from_env()
                .ok_or("--dynamo needs AWS_ENDPOINT_URL (moto's address)")?;
            plan.backend = Backend::Dynamo { endpoint };
            continue;
        }
        let value: usize = args.next().ok_or("a number must follow")?.parse()?;
        match arg.as_str() {
            "--deliveries" => plan.deliveries = value,
            "--concurrency" => plan.concurrency = value,
            "--orgs" => orgs = Some(value),
            "--hang-seconds" => plan.hang = Some(Duration::from_secs(value as u64)),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    plan.orgs = orgs.unwrap_or(plan.concurrency.max(1) * 2);
    if plan.hang.is_some() && matches!(plan.backend, Backend::Embedded) {
        return Err("--hang-seconds needs --dynamo (the hang is the fault proxy's)".into());
    }
    let dir = tempfile_dir()?;
    let before = reference();
    let report = load::run(plan, &dir).await?;
    let after = reference();
    let _ = std::fs::remove_dir_all(&dir);
    print!("{}", report.table());
    println!(
        "\nThis machine's single-core reference in the same run: {before:.0} / {after:.0} \
         HMAC-SHA256 of 1 KiB per second (before / after the load). Throughput divided by it \
         compares runs on machines that differ or drift; a change in the ratio is Gatehouse's."
    );
    let problems = report.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the run does not hold:\n{}", problems.join("\n")).into())
    }
}

/// One core's speed now: HMAC-SHA256 of 1 KiB, per second, over 300 ms (the same primitive
/// every delivery's signature check runs).
fn reference() -> f64 {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"reference key");
    let block = [0x5au8; 1024];
    let started = std::time::Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_millis(300) {
        for _ in 0..100 {
            std::hint::black_box(aws_lc_rs::hmac::sign(&key, std::hint::black_box(&block)));
        }
        n += 100;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
