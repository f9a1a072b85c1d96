//! Logging: JSON lines on Lambda (CloudWatch adds the time), compact text on a laptop.
//! The filter is `RUST_LOG` (default `info`). Nothing secret is ever a field: secrets are
//! `SecretString`s whose `Debug` is redacted, and handlers log ids, never tokens.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if on_lambda {
        builder
            .json()
            .with_ansi(false)
            .without_time()
            .with_current_span(false)
            .with_target(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
