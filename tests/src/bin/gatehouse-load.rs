//! `cargo run --release -p gatehouse-local --bin gatehouse-load -- [--deliveries N] [--concurrency C]`:
//! the load run of `gatehouse_local::load` (defaults 10,000 deliveries, 50 at once). Prints a
//! Markdown table for the README and exits non-zero if any valid delivery was not processed
//! exactly once, any bad one was not refused, or anything answered 5xx.

use gatehouse_local::load::{self, Plan};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut plan = Plan {
        deliveries: 10_000,
        concurrency: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or("a number must follow")?.parse()?;
        match arg.as_str() {
            "--deliveries" => plan.deliveries = value,
            "--concurrency" => plan.concurrency = value,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let dir = tempfile_dir()?;
    let report = load::run(plan, &dir).await?;
    let _ = std::fs::remove_dir_all(&dir);
    print!("{}", report.table());
    if report.holds() {
        Ok(())
    } else {
        Err(format!("the run does not hold: {report:?}").into())
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gatehouse-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
