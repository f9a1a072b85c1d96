//! A seeded fault simulation of the exactly-once webhook paths, over the store trait: no network,
//! fast enough to run thousands of deliveries in the test command.
//!
//! Each run (one seed) installs a few Sesami shops and Haravan orgs (with sessions), then plays a
//! platform: it sends Sesami `uninstall_app`, Haravan `shop/update` and Haravan `app/uninstalled`
//! deliveries in a random interleaving, sends some twice (platforms do), and retries every 5xx
//! like a platform does. Under it the store injects, at random, the faults a remote store has:
//! a write applied whose answer is lost, a call that times out without being applied, and a
//! refusal (a throttle). After each run, read with the faults off, it checks:
//! - every delivery answered 2xx was applied exactly once, and any other at most once;
//! - a delivery's mark was only ever written together with its effect (or alone when its
//!   effect already held), never before it;
//! - what is stored is what the applied deliveries, in the order they were applied, make it.
//!
//! A failing seed is printed with its schedule; `GATEHOUSE_SIM_SEED=<seed>` replays it alone,
//! and `GATEHOUSE_SIM_RUNS=<n>` runs more seeds.

use gatehouse::config::Config;
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, EmbeddedStore, Item, Key, Store, StoreError, Write};
use gatehouse_simulators::haravan::webhook_signature;
use gatehouse_simulators::sesami::sign;
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const SESAMI_SECRET: &str = "events-only-sesami-secret";
const HARAVAN_SECRET: &str = "events-only-haravan-secret";
const SHOPS: [&str; 3] = ["sim-shop-0", "sim-shop-1", "sim-shop-2"];
/// The shops installed before each run (the last one is not: its uninstall holds already).
const INSTALLED_SHOPS: usize = 2;
const ORGS: [&str; 4] = ["1000000100", "1000000101", "1000000102", "1000000103"];
/// The orgs installed before each run (the last one is not: its updates are refused).
const INSTALLED_ORGS: usize = 3;
/// How often a platform retries a delivery that got a 5xx before it gives up.
const MAX_ATTEMPTS: usize = 12;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// splitmix64: a small, fully determined generator, so that a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The faults the store injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The call reaches the store and is applied; its answer is lost.
    AppliedAnswerLost,
    /// The call times out before the store applies it.
    TimedOut,
    /// The store refuses the call (a throttle); nothing is applied.
    Throttled,
}

/// The embedded store with faults injected at random, and a log of every write it applied.
struct FaultyStore {
    inner: EmbeddedStore,
    state: Mutex<FaultState>,
}

struct FaultState {
    rng: Rng,
    /// Percent of calls that fail.
    rate: u64,
    enabled: bool,
    /// Every applied write, whole transactions as one entry, in the order applied.
    applied: Vec<Vec<Write>>,
    faults: usize,
}

impl FaultyStore {
    fn fault(&self, write: bool) -> Option<Fault> {
        let mut s = lock(&self.state);
        let rate = s.rate;
        if !s.enabled || !s.rng.chance(rate) {
            return None;
        }
        s.faults += 1;
        Some(match s.rng.below(3) {
            0 if write => Fault::AppliedAnswerLost,
            1 => Fault::Throttled,
            _ => Fault::TimedOut,
        })
    }

    fn log(&self, writes: Vec<Write>) {
        lock(&self.state).applied.push(writes);
    }

    fn failure(fault: Fault) -> StoreError {
        StoreError::Unavailable(format!("injected: {fault:?}"))
    }

    /// Runs a write with the fault (if any) drawn for it: not at all, or applied with its answer
    /// replaced by a failure.
    async fn write<T, Fut>(
        &self,
        call: Fut,
        logged: impl FnOnce(&T) -> Option<Vec<Write>>,
    ) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let fault = self.fault(true);
        if matches!(fault, Some(Fault::TimedOut | Fault::Throttled)) {
            return Err(Self::failure(fault.unwrap_or(Fault::TimedOut)));
        }
        let result = call.await;
        if let Ok(value) = &result
            && let Some(writes) = logged(value)
        {
            self.log(writes);
        }
        match fault {
            Some(f) => Err(Self::failure(f)),
            None => result,
        }
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        if let Some(f) = self.fault(false) {
            return Err(Self::failure(f));
        }
        self.inner.get(key).await
    }
    async fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        let write = Write::Put(item.clone(), condition.clone());
        self.write(self.inner.put(item, condition), |_| Some(vec![write]))
            .await
    }
    async fn update(
        &self,
        key: &Key,
        set: &Map<String, Value>,
        condition: Condition,
    ) -> Result<(), StoreError> {
        let write = Write::Update {
            key: key.clone(),
            set: set.clone(),
            condition: condition.clone(),
        };
        self.write(self.inner.update(key, set, condition), |_| {
            Some(vec![write])
        })
        .await
    }
    async fn take(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let write = Write::Delete(key.clone(), Condition::Exists);
        self.write(self.inner.take(key), |taken| {
            taken.is_some().then(|| vec![write])
        })
        .await
    }
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn query(&self, pk: &str) -> Result<Vec<Item>, StoreError> {
        if let Some(f) = self.fault(false) {
            return Err(Self::failure(f));
        }
        self.inner.query(pk).await
    }
    async fn transact(&self, writes: &[Write]) -> Result<(), StoreError> {
        let logged = writes.to_vec();
        self.write(self.inner.transact(writes), |_| Some(logged))
            .await
    }
}

/// What a delivery is.
#[derive(Clone, Debug)]
enum Kind {
    SesamiUninstall { shop: usize },
    ShopUpdate { org: usize, name: String },
    AppUninstalled { org: usize },
}

#[derive(Clone, Debug)]
struct Delivery {
    kind: Kind,
    /// The request body, signed as the platform signs it.
    body: Vec<u8>,
    signature: String,
    /// The key of its mark, as the handlers name it.
    mark: Key,
}

impl Delivery {
    fn new(index: usize, kind: Kind) -> Self {
        match &kind {
            Kind::SesamiUninstall { shop } => {
                let data = BTreeMap::from([
                    ("event".to_string(), json!("uninstall_app")),
                    ("shopId".to_string(), json!(SHOPS[*shop])),
                    ("deliveryId".to_string(), json!(format!("d{index}"))),
                ]);
                let hmac = sign(SESAMI_SECRET, &data);
                let body = json!({"event": "uninstall_app", "data": data, "hmac": hmac});
                Delivery {
                    kind,
                    body: serde_json::to_vec(&body).unwrap(),
                    signature: String::new(),
                    mark: Key::single("webhook#sesami", &hmac),
                }
            }
            Kind::ShopUpdate { org, name } => {
                Self::haravan(kind.clone(), json!({"id": ORGS[*org], "name": name}))
            }
            Kind::AppUninstalled { org } => Self::haravan(
                kind.clone(),
                json!({"org_id": ORGS[*org], "event_type": "app/uninstalled", "user_id": index}),
            ),
        }
    }

    fn haravan(kind: Kind, body: Value) -> Self {
        let body = serde_json::to_vec(&body).unwrap();
        Delivery {
            kind,
            signature: webhook_signature(HARAVAN_SECRET, &body),
            mark: Key::single(
                "webhook#haravan",
                &hex::encode(gatehouse::crypto::sha256(&body)),
            ),
            body,
        }
    }

    fn request(&self) -> Request {
        let mut req = Request::new(Body::Binary(self.body.clone()));
        *req.method_mut() = lambda_http::http::Method::POST;
        let mut header = |name: &'static str, value: &str| {
            req.headers_mut()
                .append(name, value.parse().expect("a header value"));
        };
        header("content-type", "application/json");
        match &self.kind {
            Kind::SesamiUninstall { .. } => {}
            Kind::ShopUpdate { org, .. } => {
                header("x-haravan-topic", "shop/update");
                header("x-haravan-org-id", ORGS[*org]);
                header("x-haravan-hmacsha256", &self.signature);
            }
            Kind::AppUninstalled { org } => {
                header("x-haravan-topic", "app/uninstalled");
                header("x-haravan-org-id", ORGS[*org]);
                header("x-haravan-hmacsha256", &self.signature);
            }
        }
        req
    }

    async fn send(&self, app: &Platforms) -> (u16, String) {
        let req = self.request();
        let resp = gatehouse::routes::answer(
            gatehouse::web::Format::Json,
            match self.kind {
                Kind::SesamiUninstall { .. } => {
                    gatehouse::sesami::webhooks(&app.sesami, &req).await
                }
                _ => gatehouse::haravan::webhooks(&app.haravan, &req).await,
            },
        );
        (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_ref()).into_owned(),
        )
    }
}

/// What became of a delivery.
#[derive(Clone, Debug, Default)]
struct Fate {
    attempts: usize,
    /// The answers, in order.
    answers: Vec<u16>,
    acknowledged: bool,
}

fn session_key(org: &str, id: &str) -> Key {
    Key::new(format!("session#haravan#{org}"), id)
}

fn sid_key(org: &str, id: &str) -> Key {
    Key::new(format!("sid#haravan#sid-{org}"), format!("{org}#{id}"))
}

async fn seed(store: &dyn Store) {
    let object = |v: Value| match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    for shop in &SHOPS[..INSTALLED_SHOPS] {
        let item = Item::new(
            gatehouse::sesami::install_key(shop),
            object(json!({"shop_id": shop})),
        );
        store.put(&item, Condition::Always).await.unwrap();
    }
    for org in &ORGS[..INSTALLED_ORGS] {
        let item = Item::new(
            gatehouse::haravan::install_key(org),
            object(json!({"orgid": org, "shop": {"name": "seeded"}, "token_version": "v0"})),
        );
        store.put(&item, Condition::Always).await.unwrap();
        for id in ["a", "b"] {
            let session = Item::new(
                session_key(org, id),
                object(json!({"orgid": org, "sid": format!("sid-{org}")})),
            )
            .expiring_at(gatehouse::store::now() + 3600);
            store.put(&session, Condition::Always).await.unwrap();
            let index =
                Item::new(sid_key(org, id), Map::new()).expiring_at(gatehouse::store::now() + 3600);
            store.put(&index, Condition::Always).await.unwrap();
        }
    }
}

/// One run: its schedule as text (for a failing seed's report), or the first broken rule.
async fn run(seed_value: u64) -> Result<usize, String> {
    let mut rng = Rng(seed_value);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore {
        inner: EmbeddedStore::open(dir.path().join("store.sqlite3")).unwrap(),
        state: Mutex::new(FaultState {
            rng: Rng(seed_value ^ 0x5eed),
            rate: 10 + seed_value % 25,
            enabled: false,
            applied: Vec::new(),
            faults: 0,
        }),
    });
    seed(store.as_ref()).await;
    let vars = gatehouse_local::events::local_vars(dir.path());
    let config = Config::from_vars(&vars).unwrap();
    let app = Platforms::with_store(&vars, config, store.clone(), None).unwrap();

    // The deliveries of this run.
    let count = 6 + rng.below(14);
    let deliveries: Vec<Delivery> = (0..count)
        .map(|i| {
            let kind = match rng.below(10) {
                0..=2 => Kind::SesamiUninstall {
                    shop: rng.below(SHOPS.len()),
                },
                3..=7 => Kind::ShopUpdate {
                    org: rng.below(ORGS.len()),
                    name: format!("name-{i}"),
                },
                _ => Kind::AppUninstalled {
                    org: rng.below(ORGS.len()),
                },
            };
            Delivery::new(i, kind)
        })
        .collect();
    // The platform's queue of sends: each delivery once, some twice, in a random order; a 5xx
    // puts a retry back at a random place.
    let mut queue: Vec<usize> = (0..count).collect();
    for i in 0..count {
        if rng.chance(25) {
            queue.push(i);
        }
    }
    let mut fates = vec![Fate::default(); count];
    let mut schedule = Vec::new();
    lock(&store.state).enabled = true;
    while !queue.is_empty() {
        let at = rng.below(queue.len());
        let i = queue.swap_remove(at);
        let fate = &mut fates[i];
        fate.attempts += 1;
        let (status, body) = deliveries[i].send(&app).await;
        schedule.push(format!("d{i} {:?} -> {status} {body}", deliveries[i].kind));
        fate.answers.push(status);
        match status {
            200..=299 => fate.acknowledged = true,
            503 if fate.attempts < MAX_ATTEMPTS => queue.push(i),
            503 => {}
            // An update for an org that is not installed (never, or not any more).
            404 if matches!(deliveries[i].kind, Kind::ShopUpdate { .. }) => {}
            other => {
                return Err(format!(
                    "d{i} answered {other} {body}\n{}",
                    schedule.join("\n")
                ));
            }
        }
    }
    let (applied, faults) = {
        let mut s = lock(&store.state);
        s.enabled = false;
        (std::mem::take(&mut s.applied), s.faults)
    };
    let fail = |rule: String| Err(format!("{rule}\nschedule:\n{}", schedule.join("\n")));

    // Rule 1: each mark was created at most once, exactly once if acknowledged, and only in a
    // write that also applied its effect or, when the effect held already, alone.
    let created = |mark: &Key| {
        applied
            .iter()
            .filter(|writes| {
                writes
                    .iter()
                    .any(|w| matches!(w, Write::Put(item, Condition::Absent) if item.key == *mark))
            })
            .collect::<Vec<_>>()
    };
    for (i, d) in deliveries.iter().enumerate() {
        let commits = created(&d.mark);
        let acknowledged = fates[i].acknowledged;
        if commits.len() > 1 || (acknowledged && commits.len() != 1) {
            return fail(format!(
                "d{i} {:?} (answers {:?}): its mark was created {} times",
                d.kind,
                fates[i].answers,
                commits.len()
            ));
        }
        if fates[i].answers.last() == Some(&404) && !commits.is_empty() {
            return fail(format!("d{i} was refused (404) but its mark was written"));
        }
        if acknowledged && store.inner.get(&d.mark).await.unwrap().is_none() {
            return fail(format!("d{i} was acknowledged but has no mark"));
        }
        if let (Kind::ShopUpdate { org, name }, Some(commit)) = (&d.kind, commits.first()) {
            let with_effect = commit.iter().any(|w| {
                matches!(w, Write::Update { key, set, .. }
                    if *key == gatehouse::haravan::install_key(ORGS[*org])
                        && set["shop"]["name"] == json!(name))
            });
            if !with_effect {
                return fail(format!("d{i}: its mark was written without its update"));
            }
        }
    }
    // Rule 2: no update applied twice, and every acknowledged one applied.
    for (i, d) in deliveries.iter().enumerate() {
        if let Kind::ShopUpdate { org, name } = &d.kind {
            let times = applied
                .iter()
                .flatten()
                .filter(|w| {
                    matches!(w, Write::Update { key, set, .. }
                        if *key == gatehouse::haravan::install_key(ORGS[*org])
                            && set["shop"]["name"] == json!(name))
                })
                .count();
            let handled = fates[i].acknowledged;
            if times > 1 || (handled && times != 1) {
                return fail(format!(
                    "d{i} {:?} (answers {:?}) was applied {times} times",
                    d.kind, fates[i].answers
                ));
            }
        }
    }
    // Rule 3: what is stored follows from the applied deliveries, in the order applied.
    let mut expected_names: HashMap<usize, String> = HashMap::new();
    let mut removed_orgs = vec![false; ORGS.len()];
    let mut removed_shops = vec![false; SHOPS.len()];
    for writes in &applied {
        for w in writes {
            match w {
                Write::Update { key, set, .. } => {
                    if let Some(org) = ORGS
                        .iter()
                        .position(|o| *key == gatehouse::haravan::install_key(o))
                    {
                        let name = set["shop"]["name"].as_str().unwrap_or_default();
                        expected_names.insert(org, name.to_owned());
                    }
                }
                Write::Delete(key, Condition::Exists) => {
                    if let Some(org) = ORGS
                        .iter()
                        .position(|o| *key == gatehouse::haravan::install_key(o))
                    {
                        removed_orgs[org] = true;
                    }
                    if let Some(shop) = SHOPS
                        .iter()
                        .position(|s| *key == gatehouse::sesami::install_key(s))
                    {
                        removed_shops[shop] = true;
                    }
                }
                _ => {}
            }
        }
    }
    for (i, d) in deliveries.iter().enumerate() {
        let holds = fates[i].acknowledged;
        match d.kind {
            Kind::SesamiUninstall { shop }
                if holds && shop < INSTALLED_SHOPS && !removed_shops[shop] =>
            {
                return fail(format!("d{i}: acknowledged, but shop {shop} never removed"));
            }
            Kind::AppUninstalled { org } if holds && org < INSTALLED_ORGS && !removed_orgs[org] => {
                return fail(format!("d{i}: acknowledged, but org {org} never removed"));
            }
            _ => {}
        }
    }
    for (shop, name) in SHOPS.iter().enumerate() {
        let stored = store
            .inner
            .get(&gatehouse::sesami::install_key(name))
            .await
            .unwrap();
        let expected = shop < INSTALLED_SHOPS && !removed_shops[shop];
        if stored.is_some() != expected {
            return fail(format!("shop {shop}: installed {}", stored.is_some()));
        }
    }
    for (org, id) in ORGS.iter().enumerate() {
        let stored = store
            .inner
            .get(&gatehouse::haravan::install_key(id))
            .await
            .unwrap();
        let sessions = store
            .inner
            .query(&format!("session#haravan#{id}"))
            .await
            .unwrap()
            .len();
        match stored {
            None if org < INSTALLED_ORGS && !removed_orgs[org] => {
                return fail(format!("org {org}: install lost"));
            }
            None if org < INSTALLED_ORGS && sessions != 0 => {
                return fail(format!("org {org}: removed, but {sessions} sessions left"));
            }
            None => {}
            Some(_) if org >= INSTALLED_ORGS || removed_orgs[org] => {
                return fail(format!("org {org}: installed, but should not be"));
            }
            Some(item) => {
                let want = expected_names
                    .get(&org)
                    .cloned()
                    .unwrap_or_else(|| "seeded".into());
                if item.attrs["shop"]["name"] != json!(want) {
                    return fail(format!(
                        "org {org}: shop name {} where the last applied update says {want}",
                        item.attrs["shop"]["name"]
                    ));
                }
            }
        }
    }
    Ok(faults)
}

#[tokio::test]
async fn seeded_fault_simulation_of_every_exactly_once_webhook_path() {
    let seeds: Vec<u64> = match std::env::var("GATEHOUSE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("GATEHOUSE_SIM_SEED is a number")],
        Err(_) => {
            let runs = std::env::var("GATEHOUSE_SIM_RUNS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(300);
            (1..=runs).collect()
        }
    };
    let mut faults = 0;
    for seed in &seeds {
        match run(*seed).await {
            Ok(n) => faults += n,
            Err(why) => {
                panic!("seed {seed} broke a rule (replay: GATEHOUSE_SIM_SEED={seed}):\n{why}")
            }
        }
    }
    assert!(
        faults > seeds.len(),
        "the simulation injected faults: {faults} in {} runs",
        seeds.len()
    );
}
