//! Metrics as CloudWatch Embedded Metric Format (EMF) lines: one JSON object per line on stdout,
//! beside the JSON logs, which CloudWatch Logs turns into metrics of the namespace
//! [`NAMESPACE`]. No call to CloudWatch is made, so a metric costs no latency, no IAM permission
//! and no dependency; a line that CloudWatch cannot read is only a log line.
//!
//! The API is two functions, [`count`] and [`value`], and the names they take ([`names`]): every
//! metric the code emits is one of those constants, so template.yaml's alarms can be checked
//! against them (tests/it/template.rs).
//!
//! **Dimensions.** Every metric carries `Function` and `Platform`, then the low-cardinality
//! dimensions its caller gives (`Reason`, `Route`, `Status`, `Operation`, `Kind`): a dimension's
//! every value is a metric of its own, billed and kept apart, so a tenant id is never one. Ids go
//! in as properties: top-level members of the line, searchable with Logs Insights, not metrics.
//! Each line declares the full set (`Function`, `Platform`, the caller's), the empty set (the
//! total over everything) and each caller's dimension alone (e.g. `Status`), so that an alarm can
//! watch a total or one class without knowing every function's or platform's name.
//!
//! `Function` is the function's own name as `gatehouse::routes` spells it (`sesami-webhooks`),
//! set for the duration of a request by [`in_function`]; the same in every stack, on Lambda,
//! locally and in the tests, where the deployed name (`AWS_LAMBDA_FUNCTION_NAME`, which
//! CloudFormation makes up) would differ per stack. Outside any function scope that deployed name
//! is the fallback, then `local`.
//!
//! **Where lines go.** On Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) to stdout, one write per line,
//! so that a line never interleaves with a log line. Elsewhere (the local server, the tests) to a
//! [`capture`] of the current thread if one is active, else to the log at `debug` (target
//! `gatehouse::metrics`), so that the local server's terminal is not filled with them. The
//! integration tests run the local server in their own current-thread runtime, so everything a
//! request emits reaches the test's capture and no other test's.

use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Gatehouse";

/// The most dimensions one dimension set may hold (EMF's limit).
pub const MAX_DIMENSIONS: usize = 30;

/// The longest metric name (CloudWatch's limit).
pub const MAX_NAME_CHARS: usize = 255;

/// The longest dimension name (EMF's schema's limit).
pub const MAX_DIMENSION_KEY_CHARS: usize = 250;

/// The longest dimension value CloudWatch accepts.
pub const MAX_DIMENSION_VALUE_CHARS: usize = 1024;

/// The name of every metric the code emits. Alarms and the dashboard name these; a test holds
/// template.yaml to them.
pub mod names {
    /// A connection stored by an install or a connect flow (its `connection.created` or
    /// `connection.updated` event committed with it).
    pub const INSTALLS: &str = "Installs";
    /// A connection removed by an uninstall delivery (its `connection.removed` event committed).
    pub const REMOVALS: &str = "Removals";
    /// A token refresh whose new tokens were stored.
    pub const REFRESH_SUCCEEDED: &str = "RefreshSucceeded";
    /// A token refresh that failed, by `Reason` (`invalid_grant`, `upstream`, `timeout`,
    /// `lease_wait`).
    pub const REFRESH_FAILED: &str = "RefreshFailed";
    /// A webhook (or MoMo callback) delivery acted on.
    pub const WEBHOOK_ACCEPTED: &str = "WebhookAccepted";
    /// A delivery seen before: answered 2xx, nothing done.
    pub const WEBHOOK_DUPLICATE: &str = "WebhookDuplicate";
    /// A delivery refused, by `Reason` (the answer's reason code, e.g. `signature_invalid`).
    pub const WEBHOOK_REFUSED: &str = "WebhookRefused";
    /// The time of one call to a platform, by `Operation`, in milliseconds.
    pub const PLATFORM_CALL_LATENCY: &str = "PlatformCallLatency";
    /// A call to a platform that failed or was answered 4xx/5xx, by `Operation` and `Kind`.
    pub const PLATFORM_CALL_ERRORS: &str = "PlatformCallErrors";
    /// Events the publisher put on the bus, per invocation and platform.
    pub const EVENTS_PUBLISHED: &str = "EventsPublished";
    /// Records the publisher left for the retry, by `Reason`, per invocation.
    pub const EVENTS_FAILED: &str = "EventsFailed";
    /// A container's first start (once per container).
    pub const COLD_STARTS: &str = "ColdStarts";
    /// A route's answer, by `Route`, `Status` class (`2xx`..`5xx`) and, for a refusal, `Reason`.
    pub const RESPONSES: &str = "Responses";
    /// MoMo payments old enough to confirm and still unresolved after a reconciler run.
    pub const MOMO_PENDING_BACKLOG: &str = "MomoPendingBacklog";

    /// Every name above.
    pub const ALL: [&str; 14] = [
        INSTALLS,
        REMOVALS,
        REFRESH_SUCCEEDED,
        REFRESH_FAILED,
        WEBHOOK_ACCEPTED,
        WEBHOOK_DUPLICATE,
        WEBHOOK_REFUSED,
        PLATFORM_CALL_LATENCY,
        PLATFORM_CALL_ERRORS,
        EVENTS_PUBLISHED,
        EVENTS_FAILED,
        COLD_STARTS,
        RESPONSES,
        MOMO_PENDING_BACKLOG,
    ];
}

/// A metric's unit: the subset of CloudWatch's units the code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Occurrences, or a gauge of things (a backlog).
    Count,
    /// Latencies.
    Milliseconds,
    /// Durations.
    Seconds,
    /// Sizes.
    Bytes,
}

impl Unit {
    /// The unit as EMF writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// Every unit EMF (CloudWatch's `StandardUnit`) accepts, for the validators of the tests.
pub const ALLOWED_UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One occurrence of `name` (Count 1) for `platform`, with the low-cardinality dimensions `dims`
/// and the properties `props` (ids: never dimensions).
pub fn count(
    name: &'static str,
    platform: &str,
    dims: &[(&'static str, &str)],
    props: &[(&'static str, &str)],
) {
    value(name, Unit::Count, 1.0, platform, dims, props);
}

/// One value `v` of `name` in `unit` (a latency, a gauge) for `platform`, with dimensions `dims`
/// and properties `props`. A value that is not finite is dropped: JSON cannot say it.
pub fn value(
    name: &'static str,
    unit: Unit,
    v: f64,
    platform: &str,
    dims: &[(&'static str, &str)],
    props: &[(&'static str, &str)],
) {
    let datum = Datum {
        name,
        unit,
        value: v,
        platform,
        dims,
        props,
    };
    if let Some(line) = document(now_ms(), &function(), &datum) {
        emit(line);
    }
}

/// The container's cold start, counted once per process whatever calls it again.
pub fn cold_start(platform: &str) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if !STARTED.swap(true, Ordering::Relaxed) {
        count(names::COLD_STARTS, platform, &[], &[]);
    }
}

/// One webhook delivery (or MoMo callback) of `platform`: acted on (`Ok(false)`), a duplicate
/// (`Ok(true)`), or refused, by the answer's reason code.
pub fn webhook(platform: &str, outcome: Result<bool, &crate::error::Error>) {
    match outcome {
        Ok(false) => count(names::WEBHOOK_ACCEPTED, platform, &[], &[]),
        Ok(true) => count(names::WEBHOOK_DUPLICATE, platform, &[], &[]),
        Err(e) => count(
            names::WEBHOOK_REFUSED,
            platform,
            &[("Reason", e.code())],
            &[],
        ),
    }
}

/// The status class of an HTTP status, as the `Status` dimension writes it.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The platform a function belongs to, from its name (`sesami-webhooks`: `sesami`); `core` for
/// the functions of no platform (connect links, the listing, the events' reader).
pub fn platform_of(function: &str) -> &'static str {
    const PLATFORMS: [&str; 5] = ["sesami", "haravan", "saison", "momo", "weblink"];
    let first = function.split('-').next().unwrap_or_default();
    PLATFORMS
        .iter()
        .find(|p| **p == first)
        .copied()
        .unwrap_or("core")
}

tokio::task_local! {
    static FUNCTION: &'static str;
}

/// Runs `fut` as function `name`: every metric it emits carries `Function=name`.
pub fn in_function<F: Future>(name: &'static str, fut: F) -> impl Future<Output = F::Output> {
    FUNCTION.scope(name, fut)
}

/// Runs `f` as function `name` (see [`in_function`]), for what is emitted outside its future.
pub fn as_function<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    FUNCTION.sync_scope(name, f)
}

/// The platform of the function running now (see [`platform_of`]), for code shared by platforms
/// that does not know which one it serves (the OIDC documents).
pub fn current_platform() -> &'static str {
    platform_of(&function())
}

/// The `Function` dimension's value now (see the module's documentation).
fn function() -> String {
    if let Ok(name) = FUNCTION.try_with(|f| *f) {
        return name.to_owned();
    }
    lambda_function().unwrap_or("local").to_owned()
}

/// `AWS_LAMBDA_FUNCTION_NAME`, read once.
fn lambda_function() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| !n.is_empty())
    })
    .as_deref()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A dimension value CloudWatch takes: 1 to [`MAX_DIMENSION_VALUE_CHARS`] characters (an empty
/// one becomes `none`).
fn dimension_value(v: &str) -> String {
    if v.is_empty() {
        return "none".to_owned();
    }
    v.chars().take(MAX_DIMENSION_VALUE_CHARS).collect()
}

/// One metric value and what it is of: the arguments of [`value`].
#[derive(Debug, Clone, Copy)]
pub struct Datum<'a> {
    /// The metric's name, one of [`names`].
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// The value.
    pub value: f64,
    /// The `Platform` dimension.
    pub platform: &'a str,
    /// The metric's own dimensions.
    pub dims: &'a [(&'static str, &'a str)],
    /// Its properties.
    pub props: &'a [(&'static str, &'a str)],
}

/// The EMF line of one metric value, or `None` when it cannot be one (a value that is not
/// finite, a name outside EMF's limits, too many dimensions: a bug of the caller, logged).
/// Dimensions named twice keep the first; a property named like a dimension or the metric is
/// left out, so that it cannot change what the metric says.
pub fn document(timestamp_ms: i64, function: &str, datum: &Datum<'_>) -> Option<String> {
    let Datum {
        name,
        unit,
        value: v,
        platform,
        dims,
        props,
    } = *datum;
    let valid_name = |n: &str| (1..=MAX_NAME_CHARS).contains(&n.chars().count());
    let valid_key = |k: &str| (1..=MAX_DIMENSION_KEY_CHARS).contains(&k.chars().count());
    let Some(number) = Number::from_f64(v) else {
        tracing::warn!(
            metric = name,
            "a metric value that is not finite is dropped"
        );
        return None;
    };
    let mut keys: Vec<&'static str> = vec!["Function", "Platform"];
    let mut values: Vec<String> = vec![dimension_value(function), dimension_value(platform)];
    for (k, v) in dims {
        if !keys.contains(k) && *k != name && *k != "_aws" {
            keys.push(k);
            values.push(dimension_value(v));
        }
    }
    if !valid_name(name) || keys.len() > MAX_DIMENSIONS || !keys.iter().all(|k| valid_key(k)) {
        tracing::warn!(
            metric = name,
            "a metric outside EMF's limits (name or dimensions) is dropped"
        );
        return None;
    }
    // The full set, the total, and each of the caller's dimensions alone.
    let mut sets: Vec<Value> = vec![Value::from(keys.clone()), Value::Array(Vec::new())];
    sets.extend(keys[2..].iter().map(|k| Value::from(vec![*k])));
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        }),
    );
    for (k, v) in keys.iter().zip(values) {
        root.insert((*k).to_owned(), Value::String(v));
    }
    root.insert(name.to_owned(), Value::Number(number));
    for (k, v) in props {
        if !root.contains_key(*k) {
            root.insert((*k).to_owned(), Value::String((*v).to_owned()));
        }
    }
    Some(Value::Object(root).to_string())
}

thread_local! {
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// While alive, the metric lines emitted on this thread are kept here instead of written out
/// (see the module's documentation). Not `Send`: it belongs to its thread.
pub struct Capture {
    previous: Option<Vec<String>>,
    _not_send: std::marker::PhantomData<std::rc::Rc<()>>,
}

/// Starts capturing this thread's metric lines (tests); the lines so far of an enclosing capture
/// come back to it when this one ends.
pub fn capture() -> Capture {
    let previous = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    Capture {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

impl Capture {
    /// The lines captured so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        CAPTURED.with(|c| c.borrow().clone().unwrap_or_default())
    }

    /// The lines captured so far, removed from the capture.
    pub fn take(&self) -> Vec<String> {
        CAPTURED.with(|c| {
            c.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CAPTURED.with(|c| *c.borrow_mut() = previous);
    }
}

fn emit(line: String) {
    let line = match CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push(line);
            None
        }
        None => Some(line),
    }) {
        Some(line) => line,
        None => return,
    };
    if lambda_function().is_some() {
        use std::io::Write as _;
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        // One write of the whole line under stdout's lock; a failed write loses one metric.
        let _ = std::io::stdout().lock().write_all(&bytes);
    } else {
        tracing::debug!(target: "gatehouse::metrics", "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Map<String, Value> {
        match serde_json::from_str(line).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_count_is_one_emf_document_with_its_dimensions_and_properties() {
        let datum = Datum {
            name: names::WEBHOOK_REFUSED,
            unit: Unit::Count,
            value: 1.0,
            platform: "sesami",
            dims: &[("Reason", "signature_invalid")],
            props: &[("tenant", "shop-1")],
        };
        let line = document(1_700_000_000_123, "sesami-webhooks", &datum).unwrap();
        let root = parse(&line);
        let aws = &root["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_123_i64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Gatehouse");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Function", "Platform", "Reason"], [], ["Reason"]])
        );
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([{"Name": "WebhookRefused", "Unit": "Count"}])
        );
        assert_eq!(root["Function"], "sesami-webhooks");
        assert_eq!(root["Platform"], "sesami");
        assert_eq!(root["Reason"], "signature_invalid");
        assert_eq!(root["WebhookRefused"], 1.0);
        // The tenant is a property, in no dimension set.
        assert_eq!(root["tenant"], "shop-1");
        assert!(!line.contains("[\"tenant\"") && !line.contains(",\"tenant\"]"));
    }

    #[test]
    fn a_property_cannot_shadow_a_dimension_or_the_value() {
        let datum = Datum {
            name: names::RESPONSES,
            unit: Unit::Count,
            value: 1.0,
            platform: "core",
            dims: &[("Status", "2xx"), ("Status", "5xx")],
            props: &[
                ("Platform", "x"),
                ("Responses", "9"),
                ("_aws", "{}"),
                ("id", "1"),
            ],
        };
        let line = document(0, "f", &datum).unwrap();
        let root = parse(&line);
        assert_eq!(root["Platform"], "core");
        assert_eq!(root["Status"], "2xx");
        assert_eq!(root["Responses"], 1.0);
        assert!(root["_aws"].is_object());
        assert_eq!(root["id"], "1");
    }

    #[test]
    fn what_emf_cannot_say_is_dropped_and_values_are_bounded() {
        let doc = |v: f64, dims: &[(&'static str, &str)]| {
            let datum = Datum {
                name: names::MOMO_PENDING_BACKLOG,
                unit: Unit::Count,
                value: v,
                platform: "momo",
                dims,
                props: &[],
            };
            document(0, "f", &datum)
        };
        assert!(doc(f64::NAN, &[]).is_none());
        assert!(doc(f64::INFINITY, &[]).is_none());
        const MANY: [&str; 29] = [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q",
            "r", "s", "t", "u", "v", "w", "x", "y", "z", "aa", "bb", "cc",
        ];
        let many: Vec<(&'static str, &str)> = MANY.iter().map(|k| (*k, "1")).collect();
        assert!(doc(1.0, &many).is_none(), "31 dimensions");
        assert!(doc(1.0, &many[..28]).is_some(), "30 dimensions");
        let root = parse(&doc(3.0, &[("Kind", "")]).unwrap());
        assert_eq!(root["Kind"], "none");
        let long = "x".repeat(2000);
        let root = parse(&doc(3.0, &[("Kind", &long)]).unwrap());
        assert_eq!(
            root["Kind"].as_str().unwrap().len(),
            MAX_DIMENSION_VALUE_CHARS
        );
    }

    #[test]
    fn a_capture_takes_this_threads_lines_and_scopes_name_the_function() {
        let capture = capture();
        count(names::INSTALLS, "sesami", &[], &[("tenant", "s1")]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(in_function("sesami-callback", async {
            value(
                names::PLATFORM_CALL_LATENCY,
                Unit::Milliseconds,
                12.5,
                "sesami",
                &[("Operation", "token")],
                &[],
            );
        }));
        let lines = capture.take();
        assert_eq!(lines.len(), 2);
        assert_eq!(parse(&lines[0])["Function"], "local");
        let second = parse(&lines[1]);
        assert_eq!(second["Function"], "sesami-callback");
        assert_eq!(second["PlatformCallLatency"], 12.5);
        assert_eq!(
            second["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        assert!(capture.lines().is_empty());
        // Another thread's lines are not this capture's.
        std::thread::spawn(|| count(names::INSTALLS, "sesami", &[], &[]))
            .join()
            .unwrap();
        assert!(capture.lines().is_empty());
    }

    #[test]
    fn names_and_classes() {
        for name in names::ALL {
            assert!((1..=MAX_NAME_CHARS).contains(&name.len()));
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
        }
        let unique: std::collections::BTreeSet<_> = names::ALL.iter().collect();
        assert_eq!(unique.len(), names::ALL.len());
        for unit in [Unit::Count, Unit::Milliseconds, Unit::Seconds, Unit::Bytes] {
            assert!(ALLOWED_UNITS.contains(&unit.as_str()));
        }
        assert_eq!(
            [200, 302, 404, 503, 500].map(status_class),
            ["2xx", "3xx", "4xx", "5xx", "5xx"]
        );
        assert_eq!(platform_of("sesami-webhooks"), "sesami");
        assert_eq!(platform_of("momo-reconcile"), "momo");
        assert_eq!(platform_of("connect-links"), "core");
        assert_eq!(platform_of("events-read"), "core");
    }
}
