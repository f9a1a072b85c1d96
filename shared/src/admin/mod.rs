//! `gatehouse-admin`, the operator command: connections (list, show, revoke), the app's keys
//! (rotate, reseal, retire), event replay (from the outbox, from the publisher's dead-letter
//! queue) and MoMo's sandbox provisioning.
//!
//! It is run by hand, with the deploy credentials, against the same store and secrets as the
//! functions, chosen the same way ([`Deps::from_vars`]): DynamoDB when `TABLE_NAME` is set, else
//! the embedded store; Secrets Manager when `APP_SECRET_ID` (`MOMO_SECRET_ID`) is set, else the
//! local secrets file. So what it does on a laptop is what it does deployed. Every operation is
//! a function of this module's submodules over a [`Deps`], so the tests run the very code the
//! binary runs; the binary only parses its arguments ([`parse`]) and prints.
//!
//! Nothing it prints holds a token or a key: connections are shown through their
//! [`crate::connection::Connection`] view, keys by their ids.
//!
//! The arguments are parsed here by hand: the grammar is a few subcommands with a few flags,
//! and a parser crate would be one more dependency of the crate every function builds.

pub mod connections;
pub mod keys;
pub mod replay;

use crate::config::{ConfigError, Vars};
use crate::context::{Deps, Platform};
use crate::crypto::CryptoError;
use crate::secrets::SecretsError;
use crate::store::StoreError;
use std::io::Write;
use std::sync::Arc;

/// Why an operator command failed. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The arguments do not form a command; the text says what is wrong, then the usage.
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    /// The environment's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret could not be read or written.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A key is unusable or a stored value does not open.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// What was asked for is not there (a connection, an event, a key).
    #[error("{0}")]
    NotFound(String),
    /// The command was understood but refused (retiring a key still in use, an ambiguous
    /// tenant).
    #[error("{0}")]
    Refused(String),
    /// Publishing, or the dead-letter queue, failed.
    #[error("{0}")]
    Replay(String),
    /// A flow of the app failed (MoMo provisioning).
    #[error(transparent)]
    App(#[from] crate::error::Error),
    /// Writing the output failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// The command's usage, printed with `--help` and after a usage error.
pub const USAGE: &str = "\
usage: gatehouse-admin <command>

  connections list [--platform P] [--end-user U] [--json]
  connections show <platform> <tenant> [--json]
  connections revoke <platform> <tenant>
  keys rotate [--key-id ID]
  keys reseal [--batch N] [--max-batches N]
  keys retire <key id>
  events replay <platform> <event id>
  events replay --dlq <queue url>
  momo provision --subscription-key KEY [--callback-host HOST]

Store and secrets as the functions choose them: TABLE_NAME (else the embedded store in
GATEHOUSE_DATA_DIR), APP_SECRET_ID and MOMO_SECRET_ID (else the local secrets file).
Event replay publishes to EVENT_BUS_NAME (else POSTs to GATEHOUSE_LOCAL_EVENTS_URL).
See docs/admin.md.";

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// `connections list`.
    ConnectionsList {
        /// Only this platform's.
        platform: Option<String>,
        /// Only this end user's.
        end_user: Option<String>,
        /// JSON lines instead of a table.
        json: bool,
    },
    /// `connections show`.
    ConnectionsShow {
        /// The platform.
        platform: String,
        /// The tenant (shop, org, cardholder, session).
        tenant: String,
        /// JSON instead of text.
        json: bool,
    },
    /// `connections revoke`.
    ConnectionsRevoke {
        /// The platform.
        platform: String,
        /// The tenant.
        tenant: String,
    },
    /// `keys rotate`.
    KeysRotate {
        /// The new key's id; generated when absent.
        key_id: Option<String>,
    },
    /// `keys reseal`.
    KeysReseal(keys::ResealOptions),
    /// `keys retire`.
    KeysRetire {
        /// The previous key to drop.
        key_id: String,
    },
    /// `events replay <platform> <id>`.
    ReplayOutbox {
        /// The event's platform.
        platform: String,
        /// The event's id.
        id: String,
    },
    /// `events replay --dlq <url>`.
    ReplayDeadLetters {
        /// The dead-letter queue's URL (the stack's `EventsDeadLetterQueueUrl`).
        queue_url: String,
    },
    /// `momo provision`.
    MomoProvision {
        /// MoMo's collection subscription key.
        subscription_key: String,
        /// The callback host; `PUBLIC_BASE_URL`'s host when absent.
        callback_host: Option<String>,
    },
}

/// Flags and positional arguments of one subcommand.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits `args` into positionals and flags; `valued` flags take the next argument.
    fn split(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Self, AdminError> {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if valued.contains(&arg.as_str()) {
                let value = it
                    .next()
                    .ok_or_else(|| AdminError::Usage(format!("{arg} needs a value")))?;
                flags.push((arg.clone(), Some(value.clone())));
            } else if switches.contains(&arg.as_str()) {
                flags.push((arg.clone(), None));
            } else if arg.starts_with("--") {
                return Err(AdminError::Usage(format!("unknown option {arg}")));
            } else {
                positional.push(arg.clone());
            }
        }
        Ok(Self { positional, flags })
    }

    fn value(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn number(&self, name: &str) -> Result<Option<usize>, AdminError> {
        self.value(name)
            .map(|v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| AdminError::Usage(format!("{name} takes a positive number")))
            })
            .transpose()
    }

    /// Exactly `n` positionals.
    fn exactly(&self, n: usize, what: &str) -> Result<&[String], AdminError> {
        if self.positional.len() == n {
            Ok(&self.positional)
        } else {
            Err(AdminError::Usage(format!("expected {what}")))
        }
    }
}

/// The command `args` (without the program name) name.
pub fn parse(args: &[String]) -> Result<Command, AdminError> {
    let words: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let rest = args.get(2..).unwrap_or_default();
    match words.as_slice() {
        ["connections", "list"] => {
            let a = Args::split(rest, &["--platform", "--end-user"], &["--json"])?;
            a.exactly(0, "no arguments besides the options")?;
            Ok(Command::ConnectionsList {
                platform: a.value("--platform"),
                end_user: a.value("--end-user"),
                json: a.has("--json"),
            })
        }
        ["connections", "show"] => {
            let a = Args::split(rest, &[], &["--json"])?;
            let p = a.exactly(2, "<platform> <tenant>")?;
            Ok(Command::ConnectionsShow {
                platform: p[0].clone(),
                tenant: p[1].clone(),
                json: a.has("--json"),
            })
        }
        ["connections", "revoke"] => {
            let a = Args::split(rest, &[], &[])?;
            let p = a.exactly(2, "<platform> <tenant>")?;
            Ok(Command::ConnectionsRevoke {
                platform: p[0].clone(),
                tenant: p[1].clone(),
            })
        }
        ["keys", "rotate"] => {
            let a = Args::split(rest, &["--key-id"], &[])?;
            a.exactly(0, "no arguments besides the options")?;
            Ok(Command::KeysRotate {
                key_id: a.value("--key-id"),
            })
        }
        ["keys", "reseal"] => {
            let a = Args::split(rest, &["--batch", "--max-batches"], &[])?;
            a.exactly(0, "no arguments besides the options")?;
            let batch = a.number("--batch")?.unwrap_or(keys::DEFAULT_BATCH);
            if batch > crate::store::MAX_INDEX_PAGE {
                return Err(AdminError::Usage(format!(
                    "--batch is at most {}",
                    crate::store::MAX_INDEX_PAGE
                )));
            }
            Ok(Command::KeysReseal(keys::ResealOptions {
                batch,
                max_batches: a.number("--max-batches")?,
            }))
        }
        ["keys", "retire"] => {
            let a = Args::split(rest, &[], &[])?;
            let p = a.exactly(1, "<key id>")?;
            Ok(Command::KeysRetire {
                key_id: p[0].clone(),
            })
        }
        ["events", "replay"] => {
            let a = Args::split(rest, &["--dlq"], &[])?;
            match a.value("--dlq") {
                Some(queue_url) => {
                    a.exactly(0, "either --dlq <queue url> or <platform> <event id>")?;
                    Ok(Command::ReplayDeadLetters { queue_url })
                }
                None => {
                    let p = a.exactly(2, "<platform> <event id> (or --dlq <queue url>)")?;
                    Ok(Command::ReplayOutbox {
                        platform: p[0].clone(),
                        id: p[1].clone(),
                    })
                }
            }
        }
        ["momo", "provision"] => {
            let a = Args::split(rest, &["--subscription-key", "--callback-host"], &[])?;
            a.exactly(0, "no arguments besides the options")?;
            Ok(Command::MomoProvision {
                subscription_key: a
                    .value("--subscription-key")
                    .ok_or_else(|| AdminError::Usage("--subscription-key is required".into()))?,
                callback_host: a.value("--callback-host"),
            })
        }
        _ => Err(AdminError::Usage(format!(
            "unknown command `{}`",
            words.join(" ")
        ))),
    }
}

/// Runs `command` over `deps` (and `vars`, for what only some commands read: the bus, MoMo's
/// settings), writing what it reports to `out`.
pub async fn execute(
    deps: &Arc<Deps>,
    vars: &Vars,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    match command {
        Command::Help => writeln!(out, "{USAGE}")?,
        Command::ConnectionsList {
            platform,
            end_user,
            json,
        } => {
            let filter = connections::Filter { platform, end_user };
            let found = connections::list(deps.store.as_ref(), &filter).await?;
            connections::print(&found, json, out)?;
        }
        Command::ConnectionsShow {
            platform,
            tenant,
            json,
        } => {
            let found = connections::show(deps.store.as_ref(), &platform, &tenant).await?;
            connections::print_one(&found, json, out)?;
        }
        Command::ConnectionsRevoke { platform, tenant } => {
            let revoked = connections::revoke(deps.store.as_ref(), &platform, &tenant).await?;
            writeln!(
                out,
                "revoked {} {}: its record and tokens are gone; connection.removed is in the outbox",
                revoked.platform, revoked.tenant
            )?;
        }
        Command::KeysRotate { key_id } => {
            let rotated = keys::rotate(&deps.secrets, key_id.as_deref()).await?;
            writeln!(
                out,
                "new current key `{}`; previous keys, still verifying and opening: {}",
                rotated.current,
                rotated.previous.join(", ")
            )?;
            writeln!(
                out,
                "containers take it within GATEHOUSE_SECRETS_TTL_SECONDS ({} s); then run `keys reseal`",
                deps.config.secrets_ttl.as_secs()
            )?;
        }
        Command::KeysReseal(options) => {
            let keys = deps.secrets.app_keys().await?;
            let report = keys::reseal(deps.store.as_ref(), &keys, &options, &mut |line| {
                let _ = writeln!(out, "{line}");
            })
            .await?;
            keys::print_report(&report, keys.current_id(), out)?;
        }
        Command::KeysRetire { key_id } => {
            let left = keys::retire(&deps.secrets, deps.store.as_ref(), &key_id).await?;
            writeln!(out, "retired key `{key_id}`; keys now: {}", left.join(", "))?;
        }
        Command::ReplayOutbox { platform, id } => {
            let bus = replay::Bus::from_vars(vars, &deps.config).await?;
            let event = replay::outbox(deps.store.as_ref(), &bus, &platform, &id).await?;
            writeln!(
                out,
                "published {} ({} of {} {}) again",
                event.id, event.name, event.platform, event.tenant
            )?;
        }
        Command::ReplayDeadLetters { queue_url } => {
            let bus = replay::Bus::from_vars(vars, &deps.config).await?;
            let sqs = aws_sdk_sqs::Client::new(&crate::context::aws_sdk_config(&deps.config).await);
            let report =
                replay::dead_letters(deps.store.as_ref(), &bus, &sqs, &queue_url, &mut |line| {
                    let _ = writeln!(out, "{line}");
                })
                .await?;
            writeln!(
                out,
                "{} message(s) re-driven and deleted, {} event(s) published, {} message(s) left in the queue",
                report.messages, report.published, report.left
            )?;
        }
        Command::MomoProvision {
            subscription_key,
            callback_host,
        } => {
            let momo = crate::momo::Momo::build(deps.clone(), vars)?;
            let host = callback_host
                .or_else(|| {
                    momo.config
                        .public_base_url
                        .as_ref()
                        .and_then(|u| u.host_str().map(str::to_owned))
                })
                .ok_or_else(|| {
                    AdminError::Usage(
                        "--callback-host is required when PUBLIC_BASE_URL is unset".into(),
                    )
                })?;
            match crate::momo::provision(&momo, &subscription_key, &host).await? {
                crate::momo::Provisioned::AlreadyWorking(user) => {
                    writeln!(out, "MoMo API user {user} still works; nothing changed")?
                }
                crate::momo::Provisioned::Created(user) => writeln!(
                    out,
                    "created MoMo API user {user} (callback host {host}) and stored its key"
                )?,
            }
        }
    }
    Ok(())
}

/// Parses `args`, builds the dependencies from `vars` and runs the command.
pub async fn run(
    args: &[String],
    vars: &Vars,
    out: &mut (dyn Write + Send),
) -> Result<(), AdminError> {
    let command = parse(args)?;
    if command == Command::Help {
        writeln!(out, "{USAGE}")?;
        return Ok(());
    }
    let deps = Arc::new(Deps::from_vars(vars).await?);
    execute(&deps, vars, command, out).await
}

/// The binary's `main`: the process's arguments and environment, the output on stdout, a
/// failure on stderr with exit status 2 for a usage error and 1 for anything else.
pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse-admin: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(run(&args, &Vars::from_env(), &mut stdout)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-admin: {e}");
            std::process::ExitCode::from(match e {
                AdminError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn every_subcommand_parses_and_mistakes_are_usage_errors() {
        assert_eq!(
            parse(&args("connections list --platform haravan --json")).unwrap(),
            Command::ConnectionsList {
                platform: Some("haravan".into()),
                end_user: None,
                json: true
            }
        );
        assert_eq!(
            parse(&args("keys reseal --batch 5 --max-batches 1")).unwrap(),
            Command::KeysReseal(keys::ResealOptions {
                batch: 5,
                max_batches: Some(1)
            })
        );
        assert_eq!(
            parse(&args("events replay --dlq http://q")).unwrap(),
            Command::ReplayDeadLetters {
                queue_url: "http://q".into()
            }
        );
        assert_eq!(
            parse(&args("events replay momo abc")).unwrap(),
            Command::ReplayOutbox {
                platform: "momo".into(),
                id: "abc".into()
            }
        );
        assert_eq!(parse(&args("keys --help")).unwrap(), Command::Help);
        for bad in [
            "connections",
            "connections show haravan",
            "keys reseal --batch 0",
            "keys reseal --batch 1001",
            "keys rotate --bogus",
            "momo provision",
            "events replay --dlq",
            "nothing here",
        ] {
            assert!(
                matches!(parse(&args(bad)), Err(AdminError::Usage(_))),
                "{bad}"
            );
        }
    }
}
