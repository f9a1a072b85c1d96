//! `gatehouse-bench`: measures one function's release `bootstrap` as Lambda would run it.
//!
//! It serves a local Lambda Runtime API (`/2018-06-01/runtime/...`) and a counting proxy in front
//! of moto (DynamoDB and Secrets Manager requests, by their `X-Amz-Target`), spawns the bootstrap
//! against both and prints one JSON line: cold start (spawn to the first `next`, spawn to the first
//! response; medians), peak RSS (VmHWM), warm latency per invocation (p50, p99) and the AWS calls
//! per invocation, cold and warm. `bench/run` calls it once per function and writes the table.
//!
//! Usage: `gatehouse-bench --bootstrap PATH --event FILE --name NAME --moto URL [--cold N]
//! [--warm N] [--reset FILE] [--floor PATH] [--split-transactions 1] [--before PATH]`. Each of
//! the others is measured in turn with the function, cold and warm, and reported under its name:
//! `floor` (replaying the function's own AWS calls), `floor_split` (the same, each transaction's
//! writes made one call at a time: the cost of the writes before they were atomic) and `before`
//! (an earlier build of the function). The child inherits this process's environment (bench/run sets the
//! table, the secret ids and the platform URLs); `AWS_ENDPOINT_URL` and `AWS_LAMBDA_*` are set
//! here.
//!
//! `--reset FILE` (`{"put": [{"pk", "sk", "attrs"}], "delete": [{"pk", "sk"}]}`, written by
//! `bench/moto_setup.py`) is applied to the table before every invocation, cold and warm, straight
//! on moto: not through the proxy, so neither counted nor timed. It lets an event that consumes
//! what it acts on (an uninstall takes the install, a delivery leaves its mark) be measured as a
//! first delivery every time instead of as a replay.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse::store::{Condition, DynamoStore, Item, Key, Store};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, mpsc};

/// What the Runtime API saw, in order.
#[derive(Debug)]
enum Seen {
    /// The function asked for its next event (the first one ends init).
    Next(Instant),
    /// An event was handed to the function.
    Given(Instant),
    /// The function posted a response (its API Gateway status code).
    Response(Instant, i64),
    /// The function reported an invocation error.
    Error(String),
    /// The function reported an init error.
    InitError(String),
}

struct Emulator {
    jobs: Mutex<mpsc::UnboundedReceiver<(String, String)>>,
    seen: mpsc::UnboundedSender<Seen>,
    function_arn: String,
}

async fn next(State(em): State<Arc<Emulator>>) -> Response {
    let _ = em.seen.send(Seen::Next(Instant::now()));
    let job = em.jobs.lock().await.recv().await;
    let Some((id, body)) = job else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(30);
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("lambda-runtime-aws-request-id", id.clone()),
        (
            "lambda-runtime-deadline-ms",
            deadline.as_millis().to_string(),
        ),
        (
            "lambda-runtime-invoked-function-arn",
            em.function_arn.clone(),
        ),
        (
            "lambda-runtime-trace-id",
            format!("Root=1-00000000-{id:0>24};Parent=0000000000000000;Sampled=0"),
        ),
    ];
    let _ = em.seen.send(Seen::Given(Instant::now()));
    (headers, body).into_response()
}

/// An answer's status: API Gateway's `statusCode`; for a stream batch (`events-publisher`),
/// whose answer is Lambda's partial batch response, 200 when `batchItemFailures` is empty and 207
/// when some items failed.
fn answer_status(answer: &Value) -> Option<i64> {
    if let Some(code) = answer["statusCode"].as_i64() {
        return Some(code);
    }
    let failures = answer["batchItemFailures"].as_array()?;
    Some(if failures.is_empty() { 200 } else { 207 })
}

async fn response(
    State(em): State<Arc<Emulator>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let status = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| answer_status(&v))
        .unwrap_or(0);
    let _ = em.seen.send(Seen::Response(now, status));
    StatusCode::ACCEPTED.into_response()
}

async fn invocation_error(
    State(em): State<Arc<Emulator>>,
    Path(_id): Path<String>,
    body: Bytes,
) -> Response {
    let _ = em
        .seen
        .send(Seen::Error(String::from_utf8_lossy(&body).into()));
    StatusCode::ACCEPTED.into_response()
}

async fn init_error(State(em): State<Arc<Emulator>>, body: Bytes) -> Response {
    let _ = em
        .seen
        .send(Seen::InitError(String::from_utf8_lossy(&body).into()));
    StatusCode::ACCEPTED.into_response()
}

/// One Runtime API on a fresh port: where to point `AWS_LAMBDA_RUNTIME_API`, where to push
/// events, what it saw.
async fn emulator(
    name: &str,
) -> (
    String,
    mpsc::UnboundedSender<(String, String)>,
    mpsc::UnboundedReceiver<Seen>,
) {
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let em = Arc::new(Emulator {
        jobs: Mutex::new(job_rx),
        seen: seen_tx,
        function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
    });
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(em);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, job_tx, seen_rx)
}

/// Counts of AWS requests that went through the proxy.
#[derive(Default)]
struct Counts {
    dynamodb: AtomicUsize,
    secrets: AtomicUsize,
    other: AtomicUsize,
    /// Time spent waiting on moto, in nanoseconds (a Python server: far slower than DynamoDB).
    upstream_ns: AtomicU64,
}

impl Counts {
    fn take(&self) -> (usize, usize, usize) {
        (
            self.dynamodb.swap(0, Ordering::SeqCst),
            self.secrets.swap(0, Ordering::SeqCst),
            self.other.swap(0, Ordering::SeqCst),
        )
    }

    fn take_upstream(&self) -> Duration {
        Duration::from_nanos(self.upstream_ns.swap(0, Ordering::SeqCst))
    }
}

struct Proxy {
    upstream: String,
    client: reqwest::Client,
    counts: Counts,
    /// While `Some`, every AWS request's target and JSON body, in order (the floor's script).
    recording: std::sync::Mutex<Option<Vec<Value>>>,
}

impl Proxy {
    fn record(&self) {
        *self.recording.lock().unwrap() = Some(Vec::new());
    }

    fn recorded(&self) -> Vec<Value> {
        self.recording.lock().unwrap().take().unwrap_or_default()
    }
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if target.starts_with("DynamoDB_20120810.") {
        p.counts.dynamodb.fetch_add(1, Ordering::SeqCst);
    } else if target.starts_with("secretsmanager.") {
        p.counts.secrets.fetch_add(1, Ordering::SeqCst);
    } else {
        p.counts.other.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(calls) = p.recording.lock().unwrap().as_mut() {
        calls.push(json!({
            "target": target,
            "body": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        }));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = p.client.request(method, format!("{}{path}", p.upstream));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let started = Instant::now();
    let sent = req.body(body).send().await;
    let answered = async {
        let resp = sent?;
        let status = resp.status();
        let headers = resp.headers().clone();
        resp.bytes().await.map(|b| (status, headers, b))
    }
    .await;
    p.counts
        .upstream_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::SeqCst);
    match answered {
        Ok((status, headers, bytes)) => {
            let mut out = HeaderMap::new();
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" && k != "connection" {
                    out.insert(k.clone(), v.clone());
                }
            }
            (status, out, bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A `/proc/<pid>/status` field of a live process, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set of a live process, in KiB (VmHWM).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    mut want: impl FnMut(&Seen) -> bool,
) -> Result<Seen, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
            Ok(Some(Seen::InitError(e))) => return Err(format!("init error: {e}")),
            Ok(Some(s)) if want(&s) => return Ok(s),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the emulator stopped".into()),
            Err(_) => return Err("no answer from the function within 30 s".into()),
        }
    }
}

struct Args {
    bootstrap: String,
    event: String,
    name: String,
    moto: String,
    cold: usize,
    warm: usize,
    reset: Option<String>,
    floor: Option<String>,
    /// Also a second floor whose script makes each transaction's writes as calls of their own:
    /// the same writes as before they were made atomic, for a before/after in one run.
    split: bool,
    /// Also an earlier build of the same function (`--before PATH`), measured in turn with it.
    before: Option<String>,
}

/// What `--reset` puts back before every invocation.
struct Reset {
    store: DynamoStore,
    put: Vec<Item>,
    delete: Vec<Key>,
}

impl Reset {
    /// The reset of `path` on the table `TABLE_NAME` of moto at `moto`; `None` when it is empty.
    async fn load(path: &str, moto: &str) -> Result<Option<Self>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let spec: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let key = |v: &Value| -> Result<Key, String> {
            match (v["pk"].as_str(), v["sk"].as_str()) {
                (Some(pk), Some(sk)) => Ok(Key::new(pk, sk)),
                _ => Err(format!("{path}: every entry needs `pk` and `sk` strings")),
            }
        };
        let entries = |name: &str| spec[name].as_array().cloned().unwrap_or_default();
        let put = entries("put")
            .iter()
            .map(|v| {
                let attrs = v["attrs"].as_object().cloned().unwrap_or_else(Map::new);
                Ok(Item::new(key(v)?, attrs))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let delete = entries("delete")
            .iter()
            .map(key)
            .collect::<Result<Vec<_>, String>>()?;
        if put.is_empty() && delete.is_empty() {
            return Ok(None);
        }
        let table = std::env::var("TABLE_NAME")
            .map_err(|_| "--reset needs TABLE_NAME in the environment".to_owned())?;
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(moto)
            .load()
            .await;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table);
        Ok(Some(Self { store, put, delete }))
    }

    /// Puts the table back as the reset says, if there is one.
    async fn before_invocation(reset: &Option<Self>) -> Result<(), String> {
        let Some(this) = reset else {
            return Ok(());
        };
        for key in &this.delete {
            this.store
                .take(key)
                .await
                .map_err(|e| format!("reset: {e}"))?;
        }
        for item in &this.put {
            this.store
                .put(item, Condition::Always)
                .await
                .map_err(|e| format!("reset: {e}"))?;
        }
        Ok(())
    }
}

fn args() -> Args {
    let mut a = Args {
        bootstrap: String::new(),
        event: String::new(),
        name: String::new(),
        moto: String::new(),
        cold: 10,
        warm: 1000,
        reset: None,
        floor: None,
        split: false,
        before: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bootstrap" => a.bootstrap = v,
            "--event" => a.event = v,
            "--name" => a.name = v,
            "--moto" => a.moto = v,
            "--cold" => a.cold = v.parse().expect("--cold N"),
            "--warm" => a.warm = v.parse().expect("--warm N"),
            "--reset" => a.reset = Some(v),
            "--floor" => a.floor = Some(v),
            "--split-transactions" => a.split = v == "1",
            "--before" => a.before = Some(v),
            _ => panic!("unknown argument {k}"),
        }
    }
    assert!(
        !a.bootstrap.is_empty() && !a.event.is_empty() && !a.moto.is_empty(),
        "usage: gatehouse-bench --bootstrap PATH --event FILE --name NAME --moto URL [--cold N] [--warm N] [--reset FILE] [--floor PATH] [--split-transactions 1] [--before PATH]"
    );
    a
}

/// A spawned bootstrap, killed and reaped when dropped (on every path, errors included).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What is spawned: the function's bootstrap, or the floor with its script.
struct Target {
    bootstrap: String,
    env: Vec<(String, String)>,
}

fn spawn(a: &Args, target: &Target, runtime_api: &str, proxy: &str) -> Running {
    let child = std::process::Command::new(&target.bootstrap)
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_ENDPOINT_URL", proxy)
        .env("AWS_LAMBDA_FUNCTION_NAME", &a.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", a.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the bootstrap");
    Running(child)
}

#[tokio::main]
async fn main() {
    let a = args();
    let event = std::fs::read_to_string(&a.event).expect("read the event");
    let proxy = Arc::new(Proxy {
        upstream: a.moto.trim_end_matches('/').to_owned(),
        client: reqwest::Client::new(),
        counts: Counts::default(),
        recording: std::sync::Mutex::new(None),
    });
    let router = Router::new().fallback(forward).with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut out = json!({ "function": a.name, "event": a.event });
    match run(&a, &event, &proxy, &proxy_url).await {
        Ok(v) => {
            for (k, v) in v.as_object().unwrap() {
                out[k] = v.clone();
            }
        }
        Err(e) => out["error"] = json!(e),
    }
    println!("{out}");
}

/// One cold start: a fresh process (and Runtime API) answering one event.
struct Cold {
    init: f64,
    first: f64,
    first_own: f64,
    rss: f64,
    /// What the resident set is made of after the first response: pages of the binary and the
    /// libraries it maps (file-backed), and heap and stacks (anonymous), in MiB. The profile of
    /// a peak RSS above the floor's.
    rss_file: f64,
    rss_anon: f64,
    dynamodb: f64,
    secrets: f64,
    /// Any other AWS service (EventBridge's `PutEvents`, for the publisher).
    other: f64,
    status: i64,
}

async fn cold_start(
    a: &Args,
    target: &Target,
    event: &str,
    proxy: &Proxy,
    proxy_url: &str,
    reset: &Option<Reset>,
    id: &str,
) -> Result<Cold, String> {
    Reset::before_invocation(reset).await?;
    let (addr, jobs, mut seen) = emulator(&a.name).await;
    jobs.send((id.to_owned(), event.to_owned())).unwrap();
    proxy.counts.take();
    proxy.counts.take_upstream();
    let t0 = Instant::now();
    let child = spawn(a, target, &addr, proxy_url);
    let pid = child.0.id();
    let Seen::Next(t1) = wait_for(&mut seen, |s| matches!(s, Seen::Next(_))).await? else {
        unreachable!()
    };
    let (t2, status) = match wait_for(&mut seen, |s| {
        matches!(s, Seen::Response(..) | Seen::Error(..))
    })
    .await?
    {
        Seen::Response(t, status) => (t, status),
        Seen::Error(e) => return Err(format!("invocation error: {e}")),
        _ => unreachable!(),
    };
    // Idle again (its next `next`): everything of the first invocation is done.
    wait_for(&mut seen, |s| matches!(s, Seen::Next(_))).await?;
    let (ddb, sm, other) = proxy.counts.take();
    let cold = Cold {
        init: ms(t1 - t0),
        first: ms(t2 - t0),
        first_own: ms((t2 - t0).saturating_sub(proxy.counts.take_upstream())),
        rss: vm_hwm_kib(pid).unwrap_or(0) as f64 / 1024.0,
        rss_file: status_kib(pid, "RssFile").unwrap_or(0) as f64 / 1024.0,
        rss_anon: status_kib(pid, "RssAnon").unwrap_or(0) as f64 / 1024.0,
        dynamodb: ddb as f64,
        secrets: sm as f64,
        other: other as f64,
        status,
    };
    drop(child);
    Ok(cold)
}

/// A warm process: its Runtime API, warmed by one invocation.
struct Warm {
    jobs: mpsc::UnboundedSender<(String, String)>,
    seen: mpsc::UnboundedReceiver<Seen>,
    child: Running,
    lat: Vec<f64>,
    own: Vec<f64>,
    status: Option<i64>,
    dynamodb: usize,
    secrets: usize,
    other: usize,
}

impl Warm {
    async fn start(
        a: &Args,
        target: &Target,
        event: &str,
        proxy_url: &str,
        reset: &Option<Reset>,
    ) -> Result<Self, String> {
        let (addr, jobs, mut seen) = emulator(&a.name).await;
        let child = spawn(a, target, &addr, proxy_url);
        Reset::before_invocation(reset).await?;
        jobs.send(("warmup".into(), event.to_owned())).unwrap();
        wait_for(&mut seen, |s| matches!(s, Seen::Response(..))).await?;
        wait_for(&mut seen, |s| matches!(s, Seen::Next(_))).await?;
        Ok(Self {
            jobs,
            seen,
            child,
            lat: Vec::with_capacity(a.warm),
            own: Vec::with_capacity(a.warm),
            status: None,
            dynamodb: 0,
            secrets: 0,
            other: 0,
        })
    }

    /// One warm invocation, timed from the event handed over to the response.
    async fn invoke(
        &mut self,
        event: &str,
        proxy: &Proxy,
        reset: &Option<Reset>,
        id: String,
    ) -> Result<(), String> {
        Reset::before_invocation(reset).await?;
        proxy.counts.take();
        proxy.counts.take_upstream();
        self.jobs.send((id, event.to_owned())).unwrap();
        let Seen::Given(t0) = wait_for(&mut self.seen, |s| matches!(s, Seen::Given(_))).await?
        else {
            unreachable!()
        };
        match wait_for(&mut self.seen, |s| {
            matches!(s, Seen::Response(..) | Seen::Error(..))
        })
        .await?
        {
            Seen::Response(t1, status) => {
                wait_for(&mut self.seen, |s| matches!(s, Seen::Next(_))).await?;
                let moto = proxy.counts.take_upstream();
                let (ddb, sm, other) = proxy.counts.take();
                self.dynamodb += ddb;
                self.secrets += sm;
                self.other += other;
                self.lat.push(ms(t1 - t0));
                self.own.push(ms((t1 - t0).saturating_sub(moto)));
                self.status = Some(status);
                Ok(())
            }
            Seen::Error(e) => Err(format!("invocation error: {e}")),
            _ => unreachable!(),
        }
    }

    fn rss(&self) -> f64 {
        vm_hwm_kib(self.child.0.id()).unwrap_or(0) as f64 / 1024.0
    }
}

/// The figures of one target, cold and warm.
fn figures(cold: &[Cold], warm: &mut Warm, n: usize) -> Value {
    let col = |f: fn(&Cold) -> f64| cold.iter().map(f).collect::<Vec<f64>>();
    let (mut init, mut first, mut first_own) =
        (col(|c| c.init), col(|c| c.first), col(|c| c.first_own));
    let (rss, mut ddb, mut sm) = (col(|c| c.rss), col(|c| c.dynamodb), col(|c| c.secrets));
    let (mut rss_file, mut rss_anon) = (col(|c| c.rss_file), col(|c| c.rss_anon));
    let mut other = col(|c| c.other);
    let n = n.max(1) as f64;
    json!({
        "cold_spawns": cold.len(),
        "init_ms_p50": median(&mut init),
        "first_response_ms_p50": median(&mut first),
        "first_response_own_ms_p50": median(&mut first_own),
        "cold_status": cold.first().map(|c| c.status),
        "cold_rss_mb_max": rss.iter().copied().fold(0.0, f64::max),
        "cold_rss_file_mb_p50": median(&mut rss_file),
        "cold_rss_anon_mb_p50": median(&mut rss_anon),
        "cold_dynamodb_calls": median(&mut ddb),
        "cold_secrets_calls": median(&mut sm),
        "cold_other_calls": median(&mut other),
        "warm_invocations": warm.lat.len(),
        "warm_status": warm.status,
        "warm_ms_p50": median(&mut warm.lat.clone()),
        "warm_ms_p99": percentile(&mut warm.lat.clone(), 99.0),
        "warm_own_ms_p50": median(&mut warm.own.clone()),
        "warm_own_ms_p99": percentile(&mut warm.own.clone(), 99.0),
        "warm_rss_mb": warm.rss(),
        "warm_dynamodb_calls": warm.dynamodb as f64 / n,
        "warm_secrets_calls": warm.secrets as f64 / n,
        "warm_other_calls": warm.other as f64 / n,
    })
}

/// The function's own AWS calls for `event`, first cold then warm, recorded on a process of its
/// own (not measured): the floor's script.
async fn record_script(
    a: &Args,
    function: &Target,
    event: &str,
    proxy: &Proxy,
    proxy_url: &str,
    reset: &Option<Reset>,
) -> Result<Value, String> {
    let (addr, jobs, mut seen) = emulator(&a.name).await;
    Reset::before_invocation(reset).await?;
    proxy.record();
    let child = spawn(a, function, &addr, proxy_url);
    jobs.send(("record-cold".into(), event.to_owned())).unwrap();
    wait_for(&mut seen, |s| matches!(s, Seen::Response(..))).await?;
    wait_for(&mut seen, |s| matches!(s, Seen::Next(_))).await?;
    let cold = proxy.recorded();
    Reset::before_invocation(reset).await?;
    proxy.record();
    jobs.send(("record-warm".into(), event.to_owned())).unwrap();
    wait_for(&mut seen, |s| matches!(s, Seen::Response(..))).await?;
    wait_for(&mut seen, |s| matches!(s, Seen::Next(_))).await?;
    let warm = proxy.recorded();
    drop(child);
    Ok(json!({"cold": cold, "warm": warm}))
}

/// `script` with every `TransactWriteItems` replaced by its writes as calls of their own
/// (`Put` a `PutItem`, `Update` an `UpdateItem`, `Delete` a `DeleteItem`, each with its own
/// condition; a `ConditionCheck` has no call of its own and is dropped): what the same writes
/// cost before they were one atomic transaction.
fn split_transactions(script: &Value) -> Value {
    let split = |calls: &Value| -> Value {
        let mut out = Vec::new();
        for call in calls.as_array().into_iter().flatten() {
            let target = call["target"].as_str().unwrap_or_default();
            if target != "DynamoDB_20120810.TransactWriteItems" {
                out.push(call.clone());
                continue;
            }
            for item in call["body"]["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for (kind, operation) in [
                    ("Put", "PutItem"),
                    ("Update", "UpdateItem"),
                    ("Delete", "DeleteItem"),
                ] {
                    if let Some(body) = item.get(kind) {
                        out.push(json!({
                            "target": format!("DynamoDB_20120810.{operation}"),
                            "body": body,
                        }));
                    }
                }
            }
        }
        Value::Array(out)
    };
    json!({"cold": split(&script["cold"]), "warm": split(&script["warm"])})
}

async fn run(a: &Args, event: &str, proxy: &Proxy, proxy_url: &str) -> Result<Value, String> {
    let reset = match &a.reset {
        Some(path) => Reset::load(path, &a.moto).await?,
        None => None,
    };
    let function = Target {
        bootstrap: a.bootstrap.clone(),
        env: Vec::new(),
    };
    // The floor replays exactly the calls the function makes for this event; the split floor,
    // the same writes with each transaction's made one call at a time.
    let mut floors: Vec<(&str, Target)> = Vec::new();
    if let Some(path) = &a.floor {
        let script = record_script(a, &function, event, proxy, proxy_url, &reset).await?;
        if a.split {
            floors.push((
                "floor_split",
                Target {
                    bootstrap: path.clone(),
                    env: vec![(
                        "FLOOR_SCRIPT".into(),
                        split_transactions(&script).to_string(),
                    )],
                },
            ));
        }
        floors.insert(
            0,
            (
                "floor",
                Target {
                    bootstrap: path.clone(),
                    env: vec![("FLOOR_SCRIPT".into(), script.to_string())],
                },
            ),
        );
    }
    if let Some(path) = &a.before {
        floors.push((
            "before",
            Target {
                bootstrap: path.clone(),
                env: Vec::new(),
            },
        ));
    }
    // Cold: a fresh process per spawn, the function's and each floor's in turn, so that all see
    // the same machine.
    let mut cold = Vec::new();
    let mut floor_cold: Vec<Vec<Cold>> = floors.iter().map(|_| Vec::new()).collect();
    for i in 0..a.cold {
        cold.push(
            cold_start(
                a,
                &function,
                event,
                proxy,
                proxy_url,
                &reset,
                &format!("cold-{i}"),
            )
            .await?,
        );
        for ((name, floor), out) in floors.iter().zip(floor_cold.iter_mut()) {
            out.push(
                cold_start(
                    a,
                    floor,
                    event,
                    proxy,
                    proxy_url,
                    &reset,
                    &format!("{name}-cold-{i}"),
                )
                .await?,
            );
        }
    }
    // Warm: one process each, invoked in turn, one invocation at a time.
    let mut warm = Warm::start(a, &function, event, proxy_url, &reset).await?;
    let mut floor_warm = Vec::new();
    for (_, floor) in &floors {
        floor_warm.push(Warm::start(a, floor, event, proxy_url, &reset).await?);
    }
    for i in 0..a.warm {
        warm.invoke(event, proxy, &reset, format!("warm-{i}"))
            .await?;
        for ((name, _), f) in floors.iter().zip(floor_warm.iter_mut()) {
            f.invoke(event, proxy, &reset, format!("{name}-warm-{i}"))
                .await?;
        }
    }
    let mut out = figures(&cold, &mut warm, a.warm);
    for (((name, floor), c), w) in floors.iter().zip(&floor_cold).zip(floor_warm.iter_mut()) {
        out[*name] = figures(c, w, a.warm);
        if *name == "floor" {
            out["floor_bytes"] = json!(
                std::fs::metadata(&floor.bootstrap)
                    .map(|m| m.len())
                    .unwrap_or(0)
            );
        }
    }
    Ok(out)
}
