//! Connection health kept up by a schedule: the `connections-refresh` function (template.yaml:
//! every hour) and the tests run [`check`], which walks the connections of the platforms whose
//! records hold refresh tokens and keeps each one's refresh token from lapsing for lack of use.
//!
//! A refresh token that is never presented can expire on the platform's side (an idle, or
//! sliding, lifetime), and a connection that nobody used for a while would then fail on its
//! first use, long after anyone could have noticed. So a run:
//!
//! - **refreshes** a connection whose tokens were granted ([`crate::connection::Common::granted_at`])
//!   longer ago than its platform's horizon ([`Settings::horizon`]: `GATEHOUSE_REFRESH_IDLE_DAYS`,
//!   shortened to half a refresh-token lifetime where a platform documents one), through the
//!   shared refresh under its lease ([`refresh::fresh_item_replacing`]), so it never races a
//!   request-time refresh: whoever takes the lease refreshes, the other takes its result. The
//!   new tokens and their `connection.updated` event are one transaction (refresh.rs);
//! - lets the shared refresh mark a connection whose refresh token the platform refuses
//!   (`invalid_grant`) as `needs_reauth`, with its `connection.needs_reauth` event in the same
//!   transaction;
//! - marks a connection that holds no refresh token at all `no_refresh_token`, with its
//!   `connection.no_refresh_token` event in the same transaction, on condition that its tokens
//!   are still the ones read (a re-install meanwhile is not overwritten);
//! - leaves everything else alone: a connection used or refreshed within the horizon costs one
//!   index entry read, no platform call and no write, and so does one already marked. A second
//!   run right after a first changes nothing.
//!
//! Connections are found on the sharded [`crate::store::BY_PLATFORM`] index, a page at a time
//! (no Scan), and each is read again by its key before anything is done to it, since the index
//! is eventually consistent. A run stops starting work at its deadline (the Lambda deadline less
//! [`RESERVE`]); the partitions are visited in turn from one that changes with the run's time, as
//! the MoMo reconciler visits its shards, so a run cut short cannot keep the same partitions
//! waiting for ever, and what it did stays done (refreshed connections are skipped next time).
//!
//! Sesami is not walked: its offline token never expires and has no refresh token. MoMo's
//! product tokens are the app's own, obtained with its credentials whenever needed.

use crate::config::{ConfigError, Vars};
use crate::connection::{self, Common, PLATFORM_SHARDS, Status};
use crate::context::{Deps, Platform};
use crate::error::{Error, Reason, Result};
use crate::events::names;
use crate::haravan::{self, Haravan};
use crate::refresh::{self, SealedTokens};
use crate::saison::{self, Saison};
use crate::store::{BY_PLATFORM, Condition, Item, StoreError, Write, now};
use crate::weblink::{self, Weblink};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The platforms whose connections hold refresh tokens, walked in this order.
pub const PLATFORMS: [&str; 3] = [haravan::PLATFORM, saison::PLATFORM, weblink::PLATFORM];

/// `GATEHOUSE_REFRESH_IDLE_DAYS`' default: a week, well inside the idle lifetimes identity
/// servers commonly give refresh tokens (two weeks and more), so that an hourly schedule has
/// many chances before one lapses.
pub const DEFAULT_IDLE_DAYS: u64 = 7;

/// What a run keeps back from the Lambda deadline when deciding to start one more connection:
/// a refresh may wait for a sibling's lease (20 s at most), then make one platform call (the
/// HTTP timeout, added by [`until`]) and a few store calls.
pub const RESERVE: Duration = Duration::from_secs(25);

/// How long a run without a Lambda deadline (the local server, a tool) keeps starting work.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Index entries read per query.
const PAGE: usize = 100;

/// The schedule's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `GATEHOUSE_REFRESH_IDLE_DAYS` in seconds: how long tokens may go unrefreshed before a run
    /// refreshes them.
    pub idle: i64,
}

impl Settings {
    /// Reads `GATEHOUSE_REFRESH_IDLE_DAYS` (whole days, at least 1).
    pub fn from_vars(vars: &Vars) -> std::result::Result<Self, ConfigError> {
        let name = "GATEHOUSE_REFRESH_IDLE_DAYS";
        let days = match vars.get(name) {
            None => DEFAULT_IDLE_DAYS,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| ConfigError {
                    name: name.into(),
                    problem: "must be a whole number of days from 1 to 3650".into(),
                })?,
        };
        Ok(Self {
            idle: i64::try_from(days * 86_400).unwrap_or(i64::MAX),
        })
    }

    /// How long `platform`'s tokens may go unrefreshed: the configured idle horizon, or half the
    /// platform's documented refresh-token lifetime when that is shorter.
    pub fn horizon(&self, platform: &str) -> i64 {
        match documented_lifetime(platform) {
            Some(lifetime) => self.idle.min(lifetime / 2),
            None => self.idle,
        }
    }
}

/// The refresh-token lifetimes (seconds) the platforms document, where docs/platforms.md records
/// one. None of the three does yet: Haravan's and WebLink's identity servers and Saison's token
/// endpoint say how long an access token lives and nothing of the refresh token, so the
/// configured horizon alone applies. A platform that documents one gets a row here.
const DOCUMENTED_LIFETIMES: &[(&str, i64)] = &[];

/// The refresh-token lifetime `platform` documents, if any ([`DOCUMENTED_LIFETIMES`]).
pub fn documented_lifetime(platform: &str) -> Option<i64> {
    DOCUMENTED_LIFETIMES
        .iter()
        .find(|(p, _)| *p == platform)
        .map(|(_, lifetime)| *lifetime)
}

/// The schedule's context, as the Lambda function builds it: the three platforms' refreshers
/// over one [`Deps`].
pub struct Health {
    /// What every platform shares.
    pub deps: Arc<Deps>,
    /// The schedule's settings.
    pub settings: Settings,
    /// Haravan's refresher.
    pub haravan: Haravan,
    /// Saison's refresher.
    pub saison: Saison,
    /// WebLink's refreshers (one per session's IDP).
    pub weblink: Weblink,
}

crate::context::derefs_to_deps!(Health);

impl Platform for Health {
    fn build(deps: Arc<Deps>, vars: &Vars) -> std::result::Result<Self, ConfigError> {
        Ok(Self {
            settings: Settings::from_vars(vars)?,
            haravan: Haravan::build(deps.clone(), vars)?,
            saison: Saison::build(deps.clone(), vars)?,
            weblink: Weblink::build(deps.clone(), vars)?,
            deps,
        })
    }
}

/// What a run works with, borrowed: from a [`Health`] (the Lambda function) or from every
/// platform's contexts ([`crate::routes::Platforms`]: the local server, the tests).
#[derive(Clone, Copy)]
pub struct Tending<'a> {
    /// What every platform shares.
    pub deps: &'a Deps,
    /// The schedule's settings.
    pub settings: &'a Settings,
    /// Haravan's refresher.
    pub haravan: &'a Haravan,
    /// Saison's refresher.
    pub saison: &'a Saison,
    /// WebLink's context, for each session's refresher.
    pub weblink: &'a Weblink,
}

impl<'a> From<&'a Health> for Tending<'a> {
    fn from(h: &'a Health) -> Self {
        Self {
            deps: &h.deps,
            settings: &h.settings,
            haravan: &h.haravan,
            saison: &h.saison,
            weblink: &h.weblink,
        }
    }
}

impl<'a> From<&'a crate::routes::Platforms> for Tending<'a> {
    fn from(p: &'a crate::routes::Platforms) -> Self {
        Self {
            deps: &p.deps,
            settings: &p.health,
            haravan: &p.haravan,
            saison: &p.saison,
            weblink: &p.weblink,
        }
    }
}

/// What one run did. Every count is of connections.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    /// Index entries read.
    pub seen: usize,
    /// Refreshed: new tokens stored (by this run, or by a request that held the lease first).
    pub refreshed: usize,
    /// Refused: the platform refused the refresh token, and the connection is now marked
    /// `needs_reauth` (by this run, or by a request that met the refusal first).
    pub needs_reauth: usize,
    /// Marked `no_refresh_token`.
    pub no_refresh_token: usize,
    /// Refreshes that failed otherwise (the platform or the store unavailable): the error is
    /// noted on the connection, the next run tries again.
    pub failed: usize,
    /// Partitions of the index this run did not reach before its deadline.
    pub partitions_left: usize,
}

/// What a run does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Healthy and recently granted, or already marked: nothing.
    Nothing,
    /// Unrefreshed for longer than the horizon.
    Refresh,
    /// Holds no refresh token and is not marked so yet.
    MarkNoRefreshToken,
}

/// What `item` needs as of `at`.
fn due(
    settings: &Settings,
    platform: &str,
    item: &Item,
    at: i64,
) -> std::result::Result<Due, StoreError> {
    let common = item.record::<Common>()?;
    let sealed = item.record::<SealedTokens>()?;
    if sealed.needs_reauth || common.status == Some(Status::NeedsReauth) {
        return Ok(Due::Nothing);
    }
    if sealed.refresh_token_sealed.is_none() {
        return Ok(if common.status == Some(Status::NoRefreshToken) {
            Due::Nothing
        } else {
            Due::MarkNoRefreshToken
        });
    }
    // An item from before `granted_at` existed, never refreshed since, is of unknown age: it is
    // refreshed once, after which its age is known.
    let granted = common.granted_at.or(common.last_refresh_at);
    Ok(match granted {
        Some(t) if at.saturating_sub(t) < settings.horizon(platform) => Due::Nothing,
        _ => Due::Refresh,
    })
}

/// The instant a run started now stops starting work: [`RESERVE`] and the HTTP timeout before
/// the Lambda deadline, or [`DEFAULT_BUDGET`] from now without one.
pub fn until(cx: &Deps, lambda_deadline: Option<SystemTime>) -> Instant {
    let start = Instant::now();
    match lambda_deadline {
        Some(deadline) => {
            let left = deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .saturating_sub(RESERVE + cx.config.http_timeout);
            start + left
        }
        None => start + DEFAULT_BUDGET,
    }
}

/// The index partitions in the order a run started at `at` visits them: every platform's
/// shards, from one picked by a hash of `at`, so that successive runs (an hour apart, or any
/// other rate) start in different places.
fn partitions(at: i64) -> Vec<(&'static str, String)> {
    let all: Vec<(&'static str, String)> = PLATFORMS
        .iter()
        .flat_map(|p| (0..PLATFORM_SHARDS).map(move |s| (*p, connection::platform_partition(p, s))))
        .collect();
    let hash = crate::crypto::sha256(at.to_string().as_bytes());
    let first = usize::from(u16::from_be_bytes([hash[0], hash[1]])) % all.len();
    let mut ordered = all[first..].to_vec();
    ordered.extend_from_slice(&all[..first]);
    ordered
}

/// One run: every connection of [`PLATFORMS`] kept from lapsing, until `until` (see the module's
/// documentation). Fails only when the index cannot be read at all; a connection that cannot
/// be helped is counted and logged, and the run goes on.
pub async fn check(cx: Tending<'_>, until: Instant) -> Result<Checked> {
    // Boxed: the run nests every refresh's store and platform calls, deeper than a caller (the
    // runtime, a spawned task) can embed by value.
    let run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Checked>> + Send + '_>> =
        Box::pin(check_at(cx, now(), until));
    run.await
}

/// [`check`] as of `at` (unix seconds), which picks the first partition and judges idleness.
pub async fn check_at(cx: Tending<'_>, at: i64, until: Instant) -> Result<Checked> {
    let mut run = Checked::default();
    let order = partitions(at);
    let total = order.len();
    'partitions: for (visited, (platform, partition)) in order.into_iter().enumerate() {
        let mut after: Option<String> = None;
        loop {
            if Instant::now() >= until {
                run.partitions_left = total - visited;
                tracing::warn!(
                    partitions_left = run.partitions_left,
                    "connections refresh: out of time; the rest waits for the next run"
                );
                break 'partitions;
            }
            let page = cx
                .deps
                .store
                .query_index(&BY_PLATFORM, &partition, after.as_deref(), PAGE)
                .await?;
            let full = page.len() == PAGE;
            after = page
                .last()
                .and_then(|i| i.str(BY_PLATFORM.sk).map(str::to_owned));
            for entry in page {
                run.seen += 1;
                match due(cx.settings, platform, &entry, at) {
                    Ok(Due::Nothing) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        run.failed += 1;
                        tracing::warn!(pk = %entry.key.pk, error = %e, "connections refresh: an entry is unreadable");
                        continue;
                    }
                }
                if Instant::now() >= until {
                    // This entry is still due; the partition counts as not reached.
                    run.partitions_left = total - visited;
                    tracing::warn!(
                        partitions_left = run.partitions_left,
                        "connections refresh: out of time; the rest waits for the next run"
                    );
                    break 'partitions;
                }
                if let Err(e) = tend(cx, platform, &entry, at, &mut run).await {
                    run.failed += 1;
                    tracing::warn!(pk = %entry.key.pk, tenant = %entry.key.sk, error = %e, "connections refresh: not checked");
                }
            }
            if !full {
                break;
            }
        }
    }
    if run != Checked::default() {
        tracing::info!(
            seen = run.seen,
            refreshed = run.refreshed,
            needs_reauth = run.needs_reauth,
            no_refresh_token = run.no_refresh_token,
            failed = run.failed,
            partitions_left = run.partitions_left,
            "connections refresh run"
        );
    }
    Ok(run)
}

/// Does what the connection of the index entry `entry` needs, judged again on the item read by
/// its key (the index lags the table).
async fn tend(
    cx: Tending<'_>,
    platform: &str,
    entry: &Item,
    at: i64,
    run: &mut Checked,
) -> Result<()> {
    let Some(item) = cx.deps.store.get(&entry.key).await? else {
        return Ok(()); // removed meanwhile
    };
    match due(cx.settings, platform, &item, at)? {
        Due::Nothing => Ok(()),
        Due::MarkNoRefreshToken => {
            if mark_no_refresh_token(cx, &item).await? {
                run.no_refresh_token += 1;
                tracing::warn!(platform, pk = %item.key.pk, tenant = %item.key.sk, "connection holds no refresh token");
            }
            Ok(())
        }
        Due::Refresh => {
            let version = refresh::version_of(&item)?;
            let outcome = match platform {
                haravan::PLATFORM => {
                    refresh::fresh_item_replacing(cx.deps, &item.key, cx.haravan, &version).await
                }
                saison::PLATFORM => {
                    refresh::fresh_item_replacing(cx.deps, &item.key, cx.saison, &version).await
                }
                _ => {
                    let session: weblink::Session = item.record()?;
                    let refresher = weblink::refresher(cx.weblink, &session);
                    refresh::fresh_item_replacing(cx.deps, &item.key, &refresher, &version).await
                }
            };
            match outcome {
                Ok(fresh) => {
                    // Refreshed here, or by a request that held the lease first: new tokens
                    // either way.
                    if refresh::version_of(&fresh)? != version {
                        run.refreshed += 1;
                    }
                    Ok(())
                }
                Err(e) => match e.reason() {
                    Some(Reason::NeedsReauth) => {
                        run.needs_reauth += 1;
                        Ok(())
                    }
                    Some(Reason::NotInstalled) => Ok(()),
                    _ => Err(e),
                },
            }
        }
    }
}

/// Marks `item` `no_refresh_token` with its event, in one transaction, on condition that its
/// tokens are still the ones read. `false`: they changed meanwhile (a re-install), nothing
/// written.
async fn mark_no_refresh_token(cx: Tending<'_>, item: &Item) -> Result<bool> {
    let version = refresh::version_of(item)?;
    let set = connection::no_refresh_token_attrs(now());
    let connection = connection::view_updated(item, &set)?;
    let writes = [
        Write::Update {
            key: item.key.clone(),
            set,
            condition: Condition::AttrEquals("token_version".into(), version),
        },
        connection.event_write(names::CONNECTION_NO_REFRESH_TOKEN)?,
    ];
    match cx.deps.store.transact(&writes).await {
        Ok(()) => Ok(true),
        Err(StoreError::Cancelled(_) | StoreError::ConditionFailed) => Ok(false),
        Err(e) => Err(Error::from(e)),
    }
}

/// The `connections-refresh` Lambda function: every scheduled event (whatever it holds) is one
/// [`check`] run until shortly before its deadline, answered with its [`Checked`] counts; a run
/// that cannot read the index fails, and the next scheduled run tries again.
pub async fn run_schedule() -> std::result::Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let cx = Arc::new(crate::context::from_env::<Health>().await?);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let cx = cx.clone();
            let until = until(&cx, crate::budget::lambda_deadline(&event.context));
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
                Box::pin(async move {
                    check(Tending::from(&*cx), until)
                        .await
                        .map_err(lambda_runtime::Error::from)
                });
            run
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;
    use serde_json::json;

    fn item(attrs: Value) -> Item {
        let Value::Object(attrs) = attrs else {
            panic!()
        };
        Item::new(Key::single("install#haravan", "1000"), attrs)
    }

    fn week() -> Settings {
        Settings::from_vars(&Vars::default()).unwrap()
    }

    #[test]
    fn the_horizon_is_configured_in_days() {
        assert_eq!(week().idle, 7 * 86_400);
        let mut vars = Vars::default();
        vars.set("GATEHOUSE_REFRESH_IDLE_DAYS", "2");
        assert_eq!(
            Settings::from_vars(&vars).unwrap().horizon("haravan"),
            2 * 86_400
        );
        for bad in ["0", "-1", "soon", "1.5", "9999"] {
            vars.set("GATEHOUSE_REFRESH_IDLE_DAYS", bad);
            let e = Settings::from_vars(&vars).unwrap_err();
            assert_eq!(e.name, "GATEHOUSE_REFRESH_IDLE_DAYS", "{bad}");
        }
    }

    #[test]
    fn only_what_would_lapse_or_lacks_a_refresh_token_is_due() {
        let s = week();
        let at = 1_000_000_000;
        let recent = item(json!({"refresh_token_sealed": "v2.x", "granted_at": at - 3600}));
        assert_eq!(due(&s, "haravan", &recent, at).unwrap(), Due::Nothing);
        let idle = item(json!({"refresh_token_sealed": "v2.x", "granted_at": at - 8 * 86_400}));
        assert_eq!(due(&s, "haravan", &idle, at).unwrap(), Due::Refresh);
        let old_refreshed =
            item(json!({"refresh_token_sealed": "v2.x", "last_refresh_at": at - 60}));
        assert_eq!(
            due(&s, "haravan", &old_refreshed, at).unwrap(),
            Due::Nothing
        );
        let unknown_age = item(json!({"refresh_token_sealed": "v2.x"}));
        assert_eq!(due(&s, "haravan", &unknown_age, at).unwrap(), Due::Refresh);
        let refused = item(json!({"refresh_token_sealed": "v2.x", "needs_reauth": true}));
        assert_eq!(due(&s, "haravan", &refused, at).unwrap(), Due::Nothing);
        let none = item(json!({"access_token_sealed": "v2.x", "granted_at": at}));
        assert_eq!(
            due(&s, "haravan", &none, at).unwrap(),
            Due::MarkNoRefreshToken
        );
        let marked = item(json!({"access_token_sealed": "v2.x", "status": "no_refresh_token"}));
        assert_eq!(due(&s, "haravan", &marked, at).unwrap(), Due::Nothing);
        assert!(due(&s, "haravan", &item(json!({"needs_reauth": "yes"})), at).is_err());
    }

    #[test]
    fn every_partition_is_visited_once_from_a_place_that_moves() {
        let firsts: std::collections::BTreeSet<String> = (0..24)
            .map(|h| partitions(1_700_000_000 + h * 3600)[0].1.clone())
            .collect();
        assert!(
            firsts.len() > 8,
            "hourly runs start in many places: {firsts:?}"
        );
        let mut all: Vec<String> = partitions(5).into_iter().map(|(_, p)| p).collect();
        assert_eq!(all.len(), 3 * PLATFORM_SHARDS as usize);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 3 * PLATFORM_SHARDS as usize);
        assert!(all.contains(&"conns#weblink#15".to_owned()));
    }
}
