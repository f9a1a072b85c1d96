//! A fault-injecting HTTP proxy in front of a DynamoDB-compatible server (moto), for the tests
//! and the load run: what a DynamoDB that misbehaves looks like to the app, one request at a
//! time.
//!
//! Each request is matched against [`Rule`]s by its operation (the `X-Amz-Target` header,
//! `DynamoDB_20120810.<Operation>`), by count (let `after` matching requests through, then fault
//! `times` of them) and by a probability drawn from a seeded generator, so a run can be
//! repeated exactly. The faults ([`Fault`]):
//!
//! - [`Fault::AnswerDropped`]: the request is forwarded and applied; once moto has answered, the
//!   connection is closed without an answer. The client cannot tell this from a request that
//!   never arrived, and yet it was applied: the case that makes "retry after a failure" apply a
//!   write twice, or count a retry as a replay.
//! - [`Fault::AnswerWithheld`]: as above, but the answer is held back, the connection open, until
//!   the client gives up (its attempt timeout) or the rules are cleared.
//! - [`Fault::Hang`]: the request is accepted and never forwarded or answered.
//! - [`Fault::Gone`]: the connection is closed without forwarding and the proxy stops listening:
//!   connections are refused until it comes back (after the fault's duration, or
//!   [`FaultProxy::heal`]).
//! - [`Fault::Throttle`]: a genuine DynamoDB throttling error (400, JSON), not forwarded.
//!
//! Two behaviours of DynamoDB that moto lacks are supplied here, so that what the app sees
//! through the proxy is what it would see from DynamoDB:
//!
//! - **Client request tokens.** DynamoDB applies a `TransactWriteItems` at most once per
//!   `ClientRequestToken` within 10 minutes: a repeated call with the same token and the same
//!   parameters succeeds without writing again, and with other parameters fails with
//!   `IdempotentParameterMismatchException`. That is what makes the AWS SDK's own retry of a
//!   transaction whose answer was lost safe (the retry carries the same token). moto 5.2 reads
//!   the token nowhere (its `transact_write_items` takes only `TransactItems`) and would apply
//!   the retry again, or cancel it on the condition the first attempt made false. So the proxy
//!   remembers, for 10 minutes, each token of a transaction moto answered with success (even one
//!   whose answer the proxy then dropped), and answers a repeat of it with that same success,
//!   unforwarded.
//! - **Isolation.** moto serves requests on threads without locks, and its
//!   `transact_write_items` deep-copies the table first and, when a condition fails, puts the copy
//!   back: every write another request made to the table in between is undone. Its conditional
//!   puts check and write in two steps as well. DynamoDB applies each request atomically, so the
//!   proxy forwards one request at a time, which makes moto's answers those of a serialized
//!   DynamoDB. (moto is one Python process under one lock anyway; this costs little.)
//!
//! - **Transactions in constant time (optional).** moto's deep copy of the table costs time in
//!   proportion to the table: about 6 ms for an empty table and 120 ms at 2,000 items on the
//!   two-core test machine, against 3 ms for a single-item write. Under a load of thousands of
//!   deliveries with one request at a time, that alone would outlast a request's budget. With
//!   [`FaultProxy::emulate_transactions`] the proxy applies a `TransactWriteItems` itself,
//!   under its one-at-a-time lock, as single-item requests to moto: first each condition is
//!   checked by a write that changes nothing (the current item put back on the condition, or,
//!   when there is none, a delete of the absent key on the condition), then, if every
//!   condition held, the writes without their conditions; otherwise a
//!   `TransactionCanceledException` with DynamoDB's cancellation reasons, and nothing written.
//!   Nothing else runs in between, so it is all or nothing as DynamoDB's is. The tests hold its
//!   answers and effects equal to moto's own transactions.
//!
//! A forward, once begun, runs to completion even when the client has gone, as DynamoDB
//! completes a request whose client disconnected; [`FaultProxy::settle`] waits for those begun
//! before it, so that a test reading the table sees everything that was applied. Besides the
//! faulty address, [`FaultProxy::direct_endpoint`] never faults: the test's own way to the
//! table, serialized with the app's requests and not counted by the rules.
//!
//! Everything listens on 127.0.0.1 only.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// How long DynamoDB remembers a client request token.
pub const TOKEN_WINDOW: Duration = Duration::from_secs(600);

/// The longest a held request ([`Fault::Hang`], [`Fault::AnswerWithheld`]) is held before its
/// connection is closed, however long its client waits: a bound for every test.
const HOLD_AT_MOST: Duration = Duration::from_secs(300);

/// The largest request body passed on (DynamoDB's own limit is 16 MB for a batch; the app's
/// requests are a few KB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Which throttling error to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// `ProvisionedThroughputExceededException`: a table or partition over its capacity.
    ProvisionedThroughputExceeded,
    /// `ThrottlingException`: the account's or the control plane's request rate.
    Throttling,
}

/// What happens to a request a [`Rule`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it, wait for moto's answer, then close the connection without answering.
    AnswerDropped,
    /// Forward it, wait for moto's answer, then answer nothing until the client gives up.
    AnswerWithheld,
    /// Never forward it, never answer.
    Hang,
    /// Close its connection unforwarded and refuse connections for the duration given, or
    /// until [`FaultProxy::heal`] or [`FaultProxy::clear`] (`None`).
    Gone(Option<Duration>),
    /// Answer a throttling error, unforwarded.
    Throttle(Throttle),
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::AnswerDropped => "answer dropped",
            Fault::AnswerWithheld => "answer withheld",
            Fault::Hang => "hang",
            Fault::Gone(_) => "gone",
            Fault::Throttle(_) => "throttle",
        }
    }
}

/// Which requests get a fault: those of the `operations` named (all when empty), after the
/// first `after` of them, at most `times` of them, each with `probability`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The fault.
    pub fault: Fault,
    /// Operation names (`PutItem`, `TransactWriteItems`, ...); empty: every operation.
    pub operations: Vec<String>,
    /// Matching requests let through before the first fault.
    pub after: usize,
    /// At most this many faults (`None`: no limit).
    pub times: Option<usize>,
    /// Of the matching requests past `after`, the share faulted (drawn from the seed).
    pub probability: f64,
}

impl Rule {
    /// Every request, from now on.
    pub fn every(fault: Fault) -> Rule {
        Rule {
            fault,
            operations: Vec::new(),
            after: 0,
            times: None,
            probability: 1.0,
        }
    }

    /// Only requests of these operations.
    pub fn on(mut self, operations: &[&str]) -> Rule {
        self.operations = operations.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Let `n` matching requests through first.
    pub fn after(mut self, n: usize) -> Rule {
        self.after = n;
        self
    }

    /// Fault at most `n` requests.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    /// Fault each candidate with probability `p`.
    pub fn probability(mut self, p: f64) -> Rule {
        self.probability = p;
        self
    }
}

/// A rule and what it has seen.
struct Armed {
    rule: Rule,
    matched: usize,
    fired: usize,
}

/// Counts of what went through the proxy's faulty address, by operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationStats {
    /// Requests received.
    pub requests: usize,
    /// Requests faulted, by fault name.
    pub faulted: HashMap<&'static str, usize>,
    /// Requests moto answered with a 2xx (applied), whatever became of the answer.
    pub applied: usize,
    /// Transactions answered from a remembered client request token, unforwarded.
    pub replayed: usize,
}

/// One write moto applied (answered 2xx), as received.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The operation.
    pub operation: String,
    /// The request body (DynamoDB JSON).
    pub body: Bytes,
    /// Whether it came through the direct address (the test's own writes).
    pub direct: bool,
}

/// An answer as moto gave it.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

struct Remembered {
    body: Bytes,
    at: Instant,
    answer: Answer,
}

struct Inner {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Armed>>,
    rng: Mutex<u64>,
    /// One forward at a time (see the module documentation).
    serial: tokio::sync::Mutex<()>,
    tokens: Mutex<HashMap<String, Remembered>>,
    /// Whether transactions are applied by the proxy (see the module documentation).
    emulate: AtomicBool,
    /// Each table's key attribute names, as DescribeTable gives them.
    key_schemas: Mutex<HashMap<String, Vec<String>>>,
    stats: Mutex<HashMap<String, OperationStats>>,
    applied: Mutex<Vec<Applied>>,
    next_forward: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
    forward_done: Notify,
    /// Whether the faulty address listens.
    up: watch::Sender<bool>,
    /// Which outage `up` belongs to, so that a timed comeback does not end a later outage.
    outage: AtomicU64,
    /// Bumped to close every open connection of the faulty address.
    cut: watch::Sender<u64>,
    /// Bumped to let every held request go (its connection closed unanswered).
    release: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The proxy; it stops (listeners, connections, held requests) when dropped.
pub struct FaultProxy {
    inner: Arc<Inner>,
    faulty: SocketAddr,
    direct: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Connection tasks end with their listener's cut.
        self.inner.cut.send_modify(|g| *g += 1);
        self.inner.release.send_modify(|g| *g += 1);
    }
}

/// The DynamoDB endpoint the environment names (`AWS_ENDPOINT_URL_DYNAMODB`, else
/// `AWS_ENDPOINT_URL`), as `tests/run.sh` sets it for moto.
pub fn endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port` of moto), faultless until told otherwise.
    pub async fn start(upstream: &str, seed: u64) -> std::io::Result<FaultProxy> {
        let faulty_listener = TcpListener::bind("127.0.0.1:0").await?;
        let direct_listener = TcpListener::bind("127.0.0.1:0").await?;
        let faulty = faulty_listener.local_addr()?;
        let direct = direct_listener.local_addr()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http,
            rules: Mutex::new(Vec::new()),
            rng: Mutex::new(seed),
            serial: tokio::sync::Mutex::new(()),
            tokens: Mutex::new(HashMap::new()),
            emulate: AtomicBool::new(false),
            key_schemas: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            applied: Mutex::new(Vec::new()),
            next_forward: AtomicU64::new(0),
            in_flight: Mutex::new(BTreeSet::new()),
            forward_done: Notify::new(),
            up: watch::channel(true).0,
            outage: AtomicU64::new(0),
            cut: watch::channel(0).0,
            release: watch::channel(0).0,
        });
        let tasks = vec![
            tokio::spawn(serve_faulty(inner.clone(), faulty_listener, faulty)),
            tokio::spawn(serve_direct(inner.clone(), direct_listener)),
        ];
        Ok(FaultProxy {
            inner,
            faulty,
            direct,
            tasks,
        })
    }

    /// The address the app is given.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.faulty)
    }

    /// The faulty address itself.
    pub fn addr(&self) -> SocketAddr {
        self.faulty
    }

    /// The address that never faults (the test's own reads and writes of the table).
    pub fn direct_endpoint(&self) -> String {
        format!("http://{}", self.direct)
    }

    /// Whether the proxy applies transactions itself, in time independent of the table's size,
    /// instead of moto (see the module documentation).
    pub fn emulate_transactions(&self, on: bool) {
        self.inner.emulate.store(on, Ordering::SeqCst);
    }

    /// Replaces the rules: a request gets the fault of the first rule that selects it.
    pub fn set(&self, rules: Vec<Rule>) {
        *lock(&self.inner.rules) = rules
            .into_iter()
            .map(|rule| Armed {
                rule,
                matched: 0,
                fired: 0,
            })
            .collect();
    }

    /// No faults any more: the rules removed, held requests let go (their connections closed
    /// unanswered; their clients have given up, or will see a closed connection) and, if gone,
    /// back.
    pub fn clear(&self) {
        lock(&self.inner.rules).clear();
        self.inner.release.send_modify(|g| *g += 1);
        self.heal();
    }

    /// Listens again after [`Fault::Gone`] or [`FaultProxy::go`].
    pub fn heal(&self) {
        self.inner.outage.fetch_add(1, Ordering::SeqCst);
        self.inner.up.send_replace(true);
    }

    /// Gone from now: every open connection closed, new ones refused, until `heal` (or for
    /// `duration`).
    pub fn go(&self, duration: Option<Duration>) {
        go_down(&self.inner, duration);
    }

    /// How many requests each rule has faulted, in the order given to [`FaultProxy::set`].
    pub fn fired(&self) -> Vec<usize> {
        lock(&self.inner.rules).iter().map(|a| a.fired).collect()
    }

    /// What went through the faulty address, by operation.
    pub fn stats(&self) -> HashMap<String, OperationStats> {
        lock(&self.inner.stats).clone()
    }

    /// Requests received at the faulty address, every operation together.
    pub fn requests(&self) -> usize {
        lock(&self.inner.stats).values().map(|s| s.requests).sum()
    }

    /// Every write moto applied so far, in order.
    pub fn applied(&self) -> Vec<Applied> {
        lock(&self.inner.applied).clone()
    }

    /// Waits until every forward begun before now has completed, at most `limit`; whether they
    /// all did. After it, the table shows whatever those requests applied.
    pub async fn settle(&self, limit: Duration) -> bool {
        let mark = self.inner.next_forward.load(Ordering::SeqCst);
        let until = Instant::now() + limit;
        loop {
            let notified = self.inner.forward_done.notified();
            let pending = lock(&self.inner.in_flight)
                .first()
                .is_some_and(|first| *first < mark);
            if !pending {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Stops the faulty address listening and closes its connections; back after `duration`.
fn go_down(inner: &Arc<Inner>, duration: Option<Duration>) {
    let outage = inner.outage.fetch_add(1, Ordering::SeqCst) + 1;
    inner.up.send_replace(false);
    inner.cut.send_modify(|g| *g += 1);
    if let Some(duration) = duration {
        let inner = inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if inner.outage.load(Ordering::SeqCst) == outage {
                inner.up.send_replace(true);
            }
        });
    }
}

/// The faulty address: listens while `up`, its connections closed on every `cut`.
async fn serve_faulty(inner: Arc<Inner>, first: TcpListener, addr: SocketAddr) {
    let mut listener = Some(first);
    let mut up = inner.up.subscribe();
    loop {
        if !*up.borrow_and_update() {
            listener = None;
            if up.changed().await.is_err() {
                return;
            }
            continue;
        }
        let current = match listener.take() {
            Some(l) => l,
            None => match rebind(addr).await {
                Some(l) => l,
                None => {
                    tracing::error!(%addr, "the fault proxy cannot listen again");
                    return;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = current.accept() => {
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(connection(inner.clone(), stream, true));
                    }
                }
                changed = up.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !*up.borrow() {
                        break;
                    }
                }
            }
        }
        // `current` is dropped here: nothing listens on the port.
    }
}

/// Binds the address the faulty listener had (a test's app keeps its endpoint), trying for a
/// second in case the port is not free yet.
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn serve_direct(inner: Arc<Inner>, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(inner.clone(), stream, false));
    }
}

/// One client connection. `kill` closes it without a word (what a fault does instead of
/// answering); a `cut` closes every faulty connection.
async fn connection(inner: Arc<Inner>, stream: tokio::net::TcpStream, faulty: bool) {
    let kill = Arc::new(Notify::new());
    let service = {
        let (inner, kill) = (inner.clone(), kill.clone());
        service_fn(move |req| handle(inner.clone(), kill.clone(), faulty, req))
    };
    let serving = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut cut = inner.cut.subscribe();
    let cut_now = async move {
        if faulty {
            let _ = cut.changed().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = serving => {}
        _ = kill.notified() => {}
        _ = cut_now => {}
    }
}

/// The operation a request names (`DynamoDB_20120810.PutItem` → `PutItem`).
fn operation(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned()
}

async fn handle(
    inner: Arc<Inner>,
    kill: Arc<Notify>,
    faulty: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let op = operation(&req);
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            kill.notify_one();
            return std::future::pending().await;
        }
    };
    let fault = if faulty { choose(&inner, &op) } else { None };
    if faulty {
        let mut stats = lock(&inner.stats);
        let entry = stats.entry(op.clone()).or_default();
        entry.requests += 1;
        if let Some(fault) = fault {
            *entry.faulted.entry(fault.name()).or_default() += 1;
        }
    }
    match fault {
        Some(Fault::Throttle(kind)) => return Ok(throttled(kind)),
        Some(Fault::Hang) => return hold(&inner, &kill).await,
        Some(Fault::Gone(duration)) => {
            go_down(&inner, duration);
            kill.notify_one();
            return std::future::pending().await;
        }
        Some(Fault::AnswerDropped | Fault::AnswerWithheld) | None => {}
    }
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
            )
        })
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    // Counted as begun before it is spawned, so that `settle` cannot miss it; detached, so
    // that it completes even if this request's client goes away.
    let seq = inner.next_forward.fetch_add(1, Ordering::SeqCst);
    lock(&inner.in_flight).insert(seq);
    let forward = tokio::spawn(apply(inner.clone(), seq, op, headers, body, faulty));
    let answer = match forward.await {
        Ok(answer) => answer,
        Err(_) => server_error("the forward failed"),
    };
    match fault {
        Some(Fault::AnswerDropped) => {
            kill.notify_one();
            std::future::pending().await
        }
        Some(Fault::AnswerWithheld) => hold(&inner, &kill).await,
        _ => Ok(respond(answer)),
    }
}

/// Holds a request unanswered until the rules are cleared (or [`HOLD_AT_MOST`]); then closes
/// its connection, unanswered still.
async fn hold(inner: &Arc<Inner>, kill: &Arc<Notify>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut release = inner.release.subscribe();
    let _ = tokio::time::timeout(HOLD_AT_MOST, release.changed()).await;
    kill.notify_one();
    std::future::pending().await
}

/// The fault for a request of `op`, if a rule selects it (and counts it).
fn choose(inner: &Inner, op: &str) -> Option<Fault> {
    let mut rules = lock(&inner.rules);
    for armed in rules.iter_mut() {
        let rule = &armed.rule;
        if !rule.operations.is_empty() && !rule.operations.iter().any(|o| o == op) {
            continue;
        }
        armed.matched += 1;
        if armed.matched <= rule.after || rule.times.is_some_and(|t| armed.fired >= t) {
            continue;
        }
        if rule.probability < 1.0 && next_unit(&inner.rng) >= rule.probability {
            continue;
        }
        armed.fired += 1;
        return Some(rule.fault);
    }
    None
}

/// A number in [0, 1) from the seeded generator (splitmix64).
fn next_unit(rng: &Mutex<u64>) -> f64 {
    let mut state = lock(rng);
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Marks a forward done however it ends.
struct InFlight<'a>(&'a Inner, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.0.in_flight).remove(&self.1);
        self.0.forward_done.notify_waiters();
    }
}

/// Applies a request: one at a time, a transaction's repeated token answered as DynamoDB would.
async fn apply(
    inner: Arc<Inner>,
    seq: u64,
    op: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
    faulty: bool,
) -> Answer {
    let _done = InFlight(&inner, seq);
    let _one_at_a_time = inner.serial.lock().await;
    let token = (op == "TransactWriteItems")
        .then(|| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()?
                .get("ClientRequestToken")?
                .as_str()
                .map(str::to_owned)
        })
        .flatten();
    if let Some(token) = &token {
        let mut tokens = lock(&inner.tokens);
        tokens.retain(|_, r| r.at.elapsed() < TOKEN_WINDOW);
        if let Some(seen) = tokens.get(token) {
            if seen.body != body {
                return dynamo_error(
                    "IdempotentParameterMismatchException",
                    "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                    "Request has a client token that was used by another request with different parameters",
                );
            }
            if faulty {
                lock(&inner.stats).entry(op.clone()).or_default().replayed += 1;
            }
            return seen.answer.clone();
        }
    }
    let answer = if op == "TransactWriteItems" && inner.emulate.load(Ordering::SeqCst) {
        emulate_transaction(&inner, &headers, &body).await
    } else {
        call(&inner, &headers, None, body.clone()).await
    };
    if answer.status.is_success() {
        if faulty {
            lock(&inner.stats).entry(op.clone()).or_default().applied += 1;
        }
        if is_write(&op) {
            lock(&inner.applied).push(Applied {
                operation: op.clone(),
                body: body.clone(),
                direct: !faulty,
            });
        }
        if let Some(token) = token {
            lock(&inner.tokens).insert(
                token,
                Remembered {
                    body,
                    at: Instant::now(),
                    answer: answer.clone(),
                },
            );
        }
    }
    answer
}

/// One request to moto: the client's headers, `X-Amz-Target` replaced when `target` is given.
async fn call(
    inner: &Inner,
    headers: &[(String, Vec<u8>)],
    target: Option<&str>,
    body: Bytes,
) -> Answer {
    let mut request = inner.http.post(format!("{}/", inner.upstream));
    for (name, value) in headers {
        if target.is_some() && name == "x-amz-target" {
            continue;
        }
        request = request.header(name.as_str(), value.as_slice());
    }
    if let Some(target) = target {
        request = request.header("x-amz-target", format!("DynamoDB_20120810.{target}"));
    }
    match request.body(body).send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers = resp
                .headers()
                .iter()
                .filter(|(name, _)| {
                    !matches!(
                        name.as_str(),
                        "content-length" | "transfer-encoding" | "connection" | "keep-alive"
                    )
                })
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            match resp.bytes().await {
                Ok(bytes) => Answer {
                    status,
                    headers,
                    body: bytes,
                },
                Err(e) => server_error(&format!("moto's answer was cut: {e}")),
            }
        }
        Err(e) => server_error(&format!("moto is unreachable: {e}")),
    }
}

/// A single-item request to moto, built from JSON.
async fn call_json(
    inner: &Inner,
    headers: &[(String, Vec<u8>)],
    target: &str,
    body: &serde_json::Value,
) -> Answer {
    call(inner, headers, Some(target), Bytes::from(body.to_string())).await
}

/// The entries of `placeholders` (`ExpressionAttributeNames` or `...Values`) that `expressions`
/// use: moto, as DynamoDB, refuses a placeholder that no expression of the request uses.
fn used(
    placeholders: Option<&serde_json::Value>,
    expressions: &[&str],
) -> Option<serde_json::Value> {
    let map = placeholders?.as_object()?;
    let kept: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .filter(|(name, _)| {
            expressions.iter().any(|e| {
                e.match_indices(name.as_str()).any(|(i, _)| {
                    !e[i + name.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(serde_json::Value::Object(kept))
}

/// A table's key attribute names, asked of moto once.
async fn key_names(
    inner: &Inner,
    headers: &[(String, Vec<u8>)],
    table: &str,
) -> Option<Vec<String>> {
    if let Some(names) = lock(&inner.key_schemas).get(table) {
        return Some(names.clone());
    }
    let answer = call_json(
        inner,
        headers,
        "DescribeTable",
        &serde_json::json!({"TableName": table}),
    )
    .await;
    let described: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    let names: Vec<String> = described["Table"]["KeySchema"]
        .as_array()?
        .iter()
        .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
        .collect();
    lock(&inner.key_schemas).insert(table.to_owned(), names.clone());
    Some(names)
}

/// A `TransactWriteItems` applied as single-item requests (see the module documentation);
/// the caller holds the one-at-a-time lock.
async fn emulate_transaction(inner: &Inner, headers: &[(String, Vec<u8>)], body: &Bytes) -> Answer {
    let invalid = |message: &str| {
        dynamo_error(
            "ValidationException",
            "com.amazon.coral.validate#ValidationException",
            message,
        )
    };
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return invalid("the request is not JSON");
    };
    let Some(items) = request["TransactItems"].as_array() else {
        return invalid("TransactItems is missing");
    };
    // Each write: its kind, its parameters, its item's key.
    let mut writes = Vec::with_capacity(items.len());
    for item in items {
        let Some((kind, op)) = item.as_object().and_then(|o| o.iter().next()) else {
            return invalid("a transact item names no operation");
        };
        let table = op["TableName"].as_str().unwrap_or_default();
        let key = if kind == "Put" {
            let Some(names) = key_names(inner, headers, table).await else {
                return invalid("the table cannot be described");
            };
            let key: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .filter_map(|n| Some((n.clone(), op["Item"].get(n)?.clone())))
                .collect();
            serde_json::Value::Object(key)
        } else {
            op["Key"].clone()
        };
        writes.push((kind.as_str(), op, table, key));
    }
    // Every condition, checked by a write that changes nothing.
    let mut reasons = Vec::with_capacity(writes.len());
    let mut cancelled = false;
    for (_, op, table, key) in &writes {
        let Some(condition) = op["ConditionExpression"].as_str() else {
            reasons.push(serde_json::json!({"Code": "None"}));
            continue;
        };
        let got = call_json(
            inner,
            headers,
            "GetItem",
            &serde_json::json!({"TableName": table, "Key": key, "ConsistentRead": true}),
        )
        .await;
        if !got.status.is_success() {
            return got;
        }
        let current = serde_json::from_slice::<serde_json::Value>(&got.body)
            .ok()
            .and_then(|v| v.get("Item").cloned());
        let mut check = serde_json::json!({"TableName": table, "ConditionExpression": condition});
        if let Some(names) = used(op.get("ExpressionAttributeNames"), &[condition]) {
            check["ExpressionAttributeNames"] = names;
        }
        if let Some(values) = used(op.get("ExpressionAttributeValues"), &[condition]) {
            check["ExpressionAttributeValues"] = values;
        }
        let answer = match current {
            Some(item) => {
                check["Item"] = item;
                call_json(inner, headers, "PutItem", &check).await
            }
            None => {
                check["Key"] = key.clone();
                call_json(inner, headers, "DeleteItem", &check).await
            }
        };
        if answer.status.is_success() {
            reasons.push(serde_json::json!({"Code": "None"}));
        } else if String::from_utf8_lossy(&answer.body).contains("ConditionalCheckFailed") {
            cancelled = true;
            reasons.push(serde_json::json!({
                "Code": "ConditionalCheckFailed",
                "Message": "The conditional request failed"
            }));
        } else {
            return answer;
        }
    }
    if cancelled {
        let codes: Vec<&str> = reasons
            .iter()
            .map(|r| r["Code"].as_str().unwrap_or("None"))
            .collect();
        let mut answer = dynamo_error(
            "TransactionCanceledException",
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "",
        );
        answer.body = Bytes::from(
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": format!(
                    "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                    codes.join(", ")
                ),
                "CancellationReasons": reasons,
            })
            .to_string(),
        );
        return answer;
    }
    // Every write, unconditioned now that its condition held.
    for (kind, op, table, key) in &writes {
        let (target, mut write) = match *kind {
            "Put" => (
                "PutItem",
                serde_json::json!({"TableName": table, "Item": op["Item"]}),
            ),
            "Delete" => (
                "DeleteItem",
                serde_json::json!({"TableName": table, "Key": key}),
            ),
            "Update" => {
                let expression = op["UpdateExpression"].as_str().unwrap_or_default();
                let mut write = serde_json::json!({
                    "TableName": table,
                    "Key": key,
                    "UpdateExpression": expression,
                });
                if let Some(names) = used(op.get("ExpressionAttributeNames"), &[expression]) {
                    write["ExpressionAttributeNames"] = names;
                }
                if let Some(values) = used(op.get("ExpressionAttributeValues"), &[expression]) {
                    write["ExpressionAttributeValues"] = values;
                }
                ("UpdateItem", write)
            }
            _ => continue,
        };
        if let Some(object) = write.as_object_mut() {
            object.retain(|_, v| !v.is_null());
        }
        let answer = call_json(inner, headers, target, &write).await;
        if !answer.status.is_success() {
            return server_error(&format!(
                "the emulated transaction failed after its checks, at a {target}: {}",
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    Answer {
        status: StatusCode::OK,
        headers: vec![(
            "content-type".into(),
            b"application/x-amz-json-1.0".to_vec(),
        )],
        body: Bytes::from_static(b"{}"),
    }
}

fn is_write(op: &str) -> bool {
    matches!(
        op,
        "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
    )
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(answer.body));
    *resp.status_mut() = answer.status;
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(&value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A DynamoDB error answer as DynamoDB writes one: 400, `application/x-amz-json-1.0`, the
/// error's shape name in `__type` and `x-amzn-ErrorType`.
fn dynamo_error(code: &str, shape: &str, message: &str) -> Answer {
    Answer {
        status: StatusCode::BAD_REQUEST,
        headers: vec![
            (
                "content-type".into(),
                b"application/x-amz-json-1.0".to_vec(),
            ),
            ("x-amzn-errortype".into(), code.as_bytes().to_vec()),
            (
                "x-amzn-requestid".into(),
                uuid::Uuid::new_v4().simple().to_string().into_bytes(),
            ),
        ],
        body: Bytes::from(serde_json::json!({"__type": shape, "message": message}).to_string()),
    }
}

fn throttled(kind: Throttle) -> Response<Full<Bytes>> {
    respond(match kind {
        Throttle::ProvisionedThroughputExceeded => dynamo_error(
            "ProvisionedThroughputExceededException",
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. \
             Consider increasing your provisioning level with the UpdateTable API.",
        ),
        Throttle::Throttling => dynamo_error(
            "ThrottlingException",
            "com.amazon.coral.availability#ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
    })
}

/// DynamoDB's 500, for a forward that failed on the proxy's side.
fn server_error(message: &str) -> Answer {
    let mut answer = dynamo_error(
        "InternalServerError",
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        message,
    );
    answer.status = StatusCode::INTERNAL_SERVER_ERROR;
    answer
}
