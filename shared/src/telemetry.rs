//! Logging: JSON lines on Lambda (CloudWatch adds the time), compact text on a laptop.
//! The filter is `RUST_LOG` (default `info`). Nothing secret is ever a field: secrets are
//! `SecretString`s whose `Debug` is redacted, and handlers log ids, never tokens.
//!
//! The AWS SDK and the HTTP stack under it are another matter: at `debug` and `trace` they log
//! request and response bodies, and a Secrets Manager answer's body is the secret. So their
//! targets are pinned at `warn` whatever `RUST_LOG` says ([`PINNED`]).
//!
//! `RUST_LOG` is read as a list of `target=level` (or bare `level`) directives, with
//! tracing-subscriber's [`Targets`] filter: no span or field filters, and so no regular
//! expressions compiled at init (the `env-filter` feature's cost in every cold start).

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Targets whose verbose levels can print what they carry: the AWS SDK and runtime, hyper, h2,
/// rustls, reqwest. Each is held at `warn`.
pub const PINNED: [&str; 12] = [
    "aws_config",
    "aws_runtime",
    "aws_sdk_dynamodb",
    "aws_sdk_secretsmanager",
    "aws_sigv4",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "h2",
    "hyper",
    "hyper_util",
    "rustls",
];

/// The filter for `rust_log` (the value of `RUST_LOG`, if set): its directives, then every
/// [`PINNED`] target at `warn`, which overrides whatever it said about them or anything under
/// them. A directive that does not parse is dropped rather than failing the start (none left:
/// `info`).
pub fn filter(rust_log: Option<&str>) -> Targets {
    let pinned = |target: &str| {
        PINNED
            .iter()
            .chain(["reqwest"].iter())
            .any(|p| target == *p || target.strip_prefix(p).is_some_and(|r| r.starts_with("::")))
    };
    let mut filter = Targets::new().with_default(LevelFilter::INFO);
    for directive in rust_log
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        match directive.split_once('=') {
            Some((target, level)) => {
                if let Ok(level) = level.trim().parse::<LevelFilter>()
                    && !target.is_empty()
                    && !pinned(target.trim())
                {
                    filter = filter.with_target(target.trim().to_owned(), level);
                }
            }
            None => {
                if let Ok(level) = directive.parse::<LevelFilter>() {
                    filter = filter.with_default(level);
                }
            }
        }
    }
    for target in PINNED.iter().chain(["reqwest"].iter()) {
        filter = filter.with_target(*target, LevelFilter::WARN);
    }
    filter
}

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    // The builder's own level lets everything through: the filter decides.
    let builder = tracing_subscriber::fmt().with_max_level(LevelFilter::TRACE);
    let _ = if on_lambda {
        builder
            .json()
            .with_ansi(false)
            .without_time()
            .with_current_span(false)
            .with_target(false)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.compact().finish().with(filter).try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether an event of `target` at `level` passes the filter for `rust_log`.
    fn passes(rust_log: &str, target: &'static str, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(filter(Some(rust_log)));
        tracing::subscriber::with_default(subscriber, || match (target, level) {
            ("aws_smithy_runtime", Level::TRACE) => {
                tracing::enabled!(target: "aws_smithy_runtime", Level::TRACE)
            }
            ("aws_smithy_runtime", Level::WARN) => {
                tracing::enabled!(target: "aws_smithy_runtime", Level::WARN)
            }
            ("hyper::proto", Level::DEBUG) => {
                tracing::enabled!(target: "hyper::proto", Level::DEBUG)
            }
            ("gatehouse::haravan", Level::DEBUG) => {
                tracing::enabled!(target: "gatehouse::haravan", Level::DEBUG)
            }
            ("gatehouse::haravan", Level::INFO) => {
                tracing::enabled!(target: "gatehouse::haravan", Level::INFO)
            }
            _ => unreachable!("a case the test names"),
        })
    }

    #[test]
    fn directives_are_read_and_pinned_targets_stay_pinned_below() {
        let f = filter(Some(
            "debug, gatehouse::haravan=trace ,aws_smithy_runtime::client=trace,x=nonsense",
        ));
        assert!(f.would_enable("gatehouse::haravan", &Level::TRACE));
        assert!(f.would_enable("anything", &Level::DEBUG));
        assert!(!f.would_enable("anything", &Level::TRACE));
        assert!(!f.would_enable("aws_smithy_runtime::client", &Level::DEBUG));
        assert!(f.would_enable("aws_smithy_runtime::client", &Level::WARN));
        // Nothing set: info.
        assert!(filter(None).would_enable("gatehouse", &Level::INFO));
        assert!(!filter(None).would_enable("gatehouse", &Level::DEBUG));
    }

    #[test]
    fn the_sdk_and_http_stack_stay_at_warn_whatever_rust_log_says() {
        for rust_log in [
            "trace",
            "debug",
            "aws_smithy_runtime=trace,trace",
            "hyper=trace",
        ] {
            assert!(
                !passes(rust_log, "aws_smithy_runtime", Level::TRACE),
                "{rust_log}"
            );
            assert!(
                !passes(rust_log, "hyper::proto", Level::DEBUG),
                "{rust_log}"
            );
            assert!(
                passes(rust_log, "aws_smithy_runtime", Level::WARN),
                "{rust_log}"
            );
        }
        assert!(passes("debug", "gatehouse::haravan", Level::DEBUG));
        assert!(!passes("info", "gatehouse::haravan", Level::DEBUG));
        assert!(passes(
            "not a directive ===",
            "gatehouse::haravan",
            Level::INFO
        ));
    }
}
