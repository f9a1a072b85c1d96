//! `cargo run -p gatehouse-local`: every route of template.yaml on http://127.0.0.1:3000 with
//! simulated platforms, the embedded store and local secrets (created on first start).
//!
//! Options: `--port N` (or `GATEHOUSE_PORT`); everything else is the usual configuration
//! (docs/architecture.md, "Configuration"), e.g. `GATEHOUSE_DATA_DIR`.

use gatehouse::config::Vars;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    gatehouse::telemetry::init();
    let vars = Vars::from_env();
    let mut args = std::env::args().skip(1);
    let mut port: u16 = vars.get_or("GATEHOUSE_PORT", "3000").parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: gatehouse-local [--port N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let server = gatehouse_local::server::start(port, vars).await?;
    println!(
        "Gatehouse is running on {}/ (Ctrl-C stops it)",
        server.base()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
