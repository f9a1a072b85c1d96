//! Faults of what Gatehouse stands on, end to end through the local server:
//!
//! - a platform's token endpoint answering 500, answering garbage, or never answering: the flow
//!   ends on a clear 502 naming the platform (never the secret), nothing partial is stored (no
//!   install or session; the state is consumed and the code mark released, as the handlers do),
//!   and the token request was sent exactly once (a code exchange is never retried);
//! - the store (DynamoDB on moto, behind the fault proxy) gone in the middle of flows, or no
//!   longer answering: every route that needs it answers a clear 503 in time, the others keep
//!   working;
//! - Secrets Manager gone under a warm container: the values fetched before keep serving, within
//!   their TTL and past it.

use crate::harness::{Browser, Harness, Page, query_param, resolve};
use axum::response::IntoResponse;
use gatehouse::config::Vars;
use gatehouse_local::faultproxy::{Fault, Rule};
use gatehouse_simulators::haravan::HaravanSim;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Submits the first form of `page` (at `url`) with `set` replacing or adding fields.
async fn submit(b: &mut Browser, url: &str, page: &Page, set: &[(&str, &str)]) -> Page {
    assert_eq!(page.status, 200, "a page with a form: {}", page.body);
    let (action, mut fields) = HaravanSim::parse_form_post(&page.body);
    fields.retain(|(k, _)| !set.iter().any(|(s, _)| s == k));
    fields.extend(set.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    b.post_form(&resolve(url, &action), &fields).await
}

// ---------------------------------------------------------------------------------------------
// A misbehaving platform

/// How the token endpoint misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    Fails500,
    AnswersGarbage,
    NeverAnswers,
}

const MISBEHAVIOURS: [Misbehaviour; 3] = [
    Misbehaviour::Fails500,
    Misbehaviour::AnswersGarbage,
    Misbehaviour::NeverAnswers,
];

/// A platform host on 127.0.0.1: every request is passed on to the platform's simulator, but
/// requests to the token endpoint (a path ending in `token_path`) misbehave as told, and are
/// counted.
#[derive(Clone)]
struct Platform {
    base: String,
    inner: Arc<PlatformInner>,
}

struct PlatformInner {
    token_path: &'static str,
    upstream: Mutex<String>,
    mode: Mutex<Misbehaviour>,
    token_requests: AtomicUsize,
    http: reqwest::Client,
}

impl Platform {
    async fn start(token_path: &'static str) -> Platform {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(PlatformInner {
            token_path,
            upstream: Mutex::new(String::new()),
            mode: Mutex::new(Misbehaviour::Fails500),
            token_requests: AtomicUsize::new(0),
            http: crate::support::http_without_redirects(),
        });
        let router = axum::Router::new()
            .fallback(platform_handler)
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Platform { base, inner }
    }

    fn pass_to(&self, upstream: String) {
        *lock(&self.inner.upstream) = upstream;
    }

    fn misbehave(&self, mode: Misbehaviour) {
        *lock(&self.inner.mode) = mode;
        self.inner.token_requests.store(0, Ordering::SeqCst);
    }

    fn token_requests(&self) -> usize {
        self.inner.token_requests.load(Ordering::SeqCst)
    }
}

async fn platform_handler(
    axum::extract::State(p): axum::extract::State<Arc<PlatformInner>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::StatusCode;
    if req.uri().path().ends_with(p.token_path) {
        p.token_requests.fetch_add(1, Ordering::SeqCst);
        let mode = *lock(&p.mode);
        return match mode {
            Misbehaviour::Fails500 => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                r#"{"error":"server_error","error_description":"the token service is down"}"#,
            )
                .into_response(),
            Misbehaviour::AnswersGarbage => (
                StatusCode::OK,
                [("content-type", "application/json")],
                "<html><body>Service temporarily unavailable</body></html>",
            )
                .into_response(),
            Misbehaviour::NeverAnswers => std::future::pending().await,
        };
    }
    let upstream = lock(&p.upstream).clone();
    let target = format!(
        "{upstream}{}",
        req.uri().path_and_query().map_or("/", |pq| pq.as_str())
    );
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut forward = p.http.request(parts.method, target).body(body);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "content-length") {
            forward = forward.header(name, value);
        }
    }
    match forward.send().await {
        Ok(resp) => {
            let mut out = axum::response::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                if !matches!(name.as_str(), "content-length" | "transfer-encoding") {
                    out = out.header(name, value);
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            out.body(axum::body::Body::from(bytes)).unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}")).into_response(),
    }
}

/// What a flow's failed step must look like.
fn assert_clear_failure(h: &Harness, platform: &str, mode: Misbehaviour, page: &Page) {
    let secrets = h.secret_values();
    assert_eq!(page.status, 502, "{platform} {mode:?}: {}", page.body);
    assert!(
        page.body.contains(platform),
        "{platform} {mode:?}: the message names the platform: {}",
        page.body
    );
    for secret in &secrets {
        assert!(
            !page.body.contains(secret.as_str())
                && !page
                    .location
                    .as_deref()
                    .unwrap_or("")
                    .contains(secret.as_str()),
            "{platform} {mode:?}: a secret in the answer: {}",
            page.body
        );
    }
}

/// A server whose `var` points at a misbehaving stand-in for the platform at `/_sim/<sim>`, with
/// a one-second timeout for platform calls.
async fn misbehaving(
    var: &str,
    value_suffix: &str,
    sim: &str,
    token_path: &'static str,
) -> (Harness, Platform) {
    let platform = Platform::start(token_path).await;
    let mut vars = Vars::default();
    vars.set(var, format!("{}{value_suffix}", platform.base));
    vars.set("GATEHOUSE_HTTP_TIMEOUT_SECONDS", "1");
    // Saison's failures are read from the page of an anonymous start (a link-started flow
    // sends the same refusal back to its return_to: tests/it/saison.rs).
    vars.set("SAISON_ANONYMOUS_START", "true");
    let h = Harness::start(crate::harness::Backend::Embedded, vars)
        .await
        .unwrap();
    platform.pass_to(h.url(&format!("/_sim/{sim}")));
    (h, platform)
}

/// Runs `flow` (which ends on the request whose token call misbehaves) once per misbehaviour:
/// each time a 502 naming `name`, one token request, and nothing stored.
async fn each_misbehaviour<F>(h: &Harness, platform: &Platform, name: &str, flow: F)
where
    F: AsyncFn(&Harness, &mut Browser) -> Page,
{
    for mode in MISBEHAVIOURS {
        platform.misbehave(mode);
        let mut b = Browser::new();
        // The platform timeout is 1 s: a flow that outlives this bound is one that hangs.
        let page = tokio::time::timeout(Duration::from_secs(15), flow(h, &mut b))
            .await
            .unwrap_or_else(|_| panic!("{name} {mode:?}: the flow hangs"));
        assert_clear_failure(h, name, mode, &page);
        assert_eq!(
            platform.token_requests(),
            1,
            "{name} {mode:?}: the token request is made once, never retried"
        );
        // The callback stores its result with the consumption of its state, all or nothing:
        // a failed exchange leaves the state as it was (expiring in minutes), and nothing else
        // (no install, session, code mark or claim).
        let left: Vec<_> = h
            .stored()
            .into_iter()
            .filter(|row| !row.pk.starts_with("state#"))
            .collect();
        assert_eq!(
            left,
            Vec::new(),
            "{name} {mode:?}: nothing of the failed flow is left in the store"
        );
    }
}

#[tokio::test]
async fn sesami_token_endpoint_failures() {
    let (h, platform) = misbehaving(
        "SESAMI_API_BASE",
        "",
        "sesami",
        "/api/v1/oauth/access-token",
    )
    .await;
    each_misbehaviour(&h, &platform, "Sesami", async |h, b| {
        let launch = b.get(&h.url("/_sim/sesami/launch?shopId=fault-shop")).await;
        let to_consent = b.get(&launch.location.expect("signed launch")).await;
        assert_eq!(to_consent.status, 302, "{}", to_consent.body);
        let authorize = to_consent.location.unwrap();
        assert!(authorize.starts_with(&platform.base), "{authorize}");
        let stored = h.stored();
        assert!(
            !stored.is_empty() && stored.iter().all(|row| row.pk.starts_with("state#sesami#")),
            "only the states of installs: {stored:?}"
        );
        let consent_page = b.get(&authorize).await;
        let consent = submit(b, &authorize, &consent_page, &[("decision", "allow")]).await;
        let callback = consent.location.expect("back to the app with a code");
        b.get(&callback).await
    })
    .await;
}

#[tokio::test]
async fn haravan_token_endpoint_failures() {
    // The token endpoint is the misbehaving one (an override of the discovered one); the
    // rest comes from the simulator's metadata.
    let (h, platform) = misbehaving(
        "HARAVAN_TOKEN_URL",
        "/connect/token",
        "haravan",
        "/connect/token",
    )
    .await;
    // Signs in at the (passed-on) authorize page as the admin of a new org; returns the app's
    // answer to the form_post.
    async fn sign_in(b: &mut Browser, to_authorize: &Page) -> Page {
        assert_eq!(to_authorize.status, 302, "{}", to_authorize.body);
        let authorize = to_authorize.location.clone().unwrap();
        let page = b.get(&authorize).await;
        let answer = submit(b, &authorize, &page, &[("sub", "200000011111")]).await;
        let (action, fields) = HaravanSim::parse_form_post(&answer.body);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        b.post_form(&action, &fields).await
    }
    each_misbehaviour(&h, &platform, "Haravan", async |h, b| {
        let start = b.get(&h.url("/haravan/install/login")).await;
        let to_install = sign_in(b, &start).await;
        assert!(
            to_install
                .location
                .as_deref()
                .unwrap_or("")
                .contains("grant_service"),
            "a new org's admin is sent to install: {} {}",
            to_install.status,
            to_install.body
        );
        sign_in(b, &to_install).await
    })
    .await;
}

#[tokio::test]
async fn saison_token_endpoint_failures() {
    let (h, platform) = misbehaving("SAISON_API_BASE", "", "saison", "/auth/token").await;
    each_misbehaviour(&h, &platform, "Saison", async |h, b| {
        let start = b.get(&h.url("/saison/authorize?member=demo")).await;
        let screen = start.location.expect("to the sign-in screen");
        let page = b.get(&screen).await;
        let signed_in = submit(
            b,
            &screen,
            &page,
            &[("id", "M0001"), ("password", "password")],
        )
        .await;
        let callback = signed_in.location.expect("back to the app with a code");
        b.get(&callback).await
    })
    .await;
}

#[tokio::test]
async fn weblink_token_endpoint_failures() {
    // The token endpoint is the misbehaving one (an override of the discovered one, as for
    // Haravan); the authorize endpoint comes from the simulated IDP's metadata.
    let (h, platform) = misbehaving(
        "WEBLINK_TOKEN_URL",
        "/idp/{domain}/token",
        "weblink",
        "/token",
    )
    .await;
    each_misbehaviour(&h, &platform, "Administrate", async |h, b| {
        let start = b
            .get(&h.url("/weblink/login?portal=demo.administrateweblink.com"))
            .await;
        let authorize = start.location.expect("to the IDP");
        assert!(
            authorize.starts_with(&h.url("/_sim/weblink/idp/")),
            "{authorize}"
        );
        let page = b.get(&authorize).await;
        let back = submit(
            b,
            &authorize,
            &page,
            &[("email", "jane@example.com"), ("password", "password")],
        )
        .await;
        b.get(&back.location.expect("back to the app with a code"))
            .await
    })
    .await;
}

#[tokio::test]
async fn momo_token_endpoint_failures() {
    let (h, platform) = misbehaving("MOMO_BASE_URL", "", "momo", "/collection/token/").await;
    each_misbehaviour(&h, &platform, "MoMo", async |h, _| {
        let resp = crate::support::http()
            .post(h.url("/momo/requesttopay"))
            .header("content-type", "application/json")
            .body(
                json!({
                    "amount": "10",
                    "currency": "EUR",
                    "externalId": "fault-order",
                    "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"},
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        Page {
            status: resp.status().as_u16(),
            location: None,
            content_type: String::new(),
            body: resp.text().await.unwrap(),
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The store gone

/// One request of the outage, ready to send.
struct Probe {
    what: String,
    request: reqwest::RequestBuilder,
    /// What the route must answer with the store gone: 503, or 200 for a route that does not
    /// use the store.
    status: u16,
}

/// Everything each route needs to be asked with the store gone: flows started while it was
/// there (state cookies, a WebLink session), and signed platform calls.
struct Prepared {
    sesami_cookie: String,
    haravan_cookie: String,
    haravan_state: String,
    saison_cookie: String,
    weblink_cookie: String,
    weblink_state: String,
    weblink_session: String,
}

fn cookie_header(b: &Browser) -> String {
    b.cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn prepare(h: &Harness) -> Prepared {
    let mut sesami = Browser::new();
    let launch = sesami
        .get(&h.url("/_sim/sesami/launch?shopId=outage-shop"))
        .await;
    let started = sesami.get(&launch.location.unwrap()).await;
    assert_eq!(started.status, 302, "{}", started.body);

    let mut haravan = Browser::new();
    let started = haravan.get(&h.url("/haravan/install/login")).await;
    assert_eq!(started.status, 302, "{}", started.body);
    let haravan_state = query_param(&started.location.unwrap(), "state").unwrap();

    let mut saison = Browser::new();
    let link = crate::harness::saison_link(h, "outage-user").await;
    let started = saison.get(&link).await;
    assert_eq!(started.status, 302, "{}", started.body);

    let portal = "/weblink/login?portal=demo.administrateweblink.com";
    let mut weblink = Browser::new();
    let started = weblink.get(&h.url(portal)).await;
    assert_eq!(started.status, 302, "{}", started.body);
    let weblink_state = query_param(&started.location.unwrap(), "state").unwrap();

    let mut signed_in = Browser::new();
    let started = signed_in.get(&h.url(portal)).await;
    let authorize = started.location.unwrap();
    let page = signed_in.get(&authorize).await;
    let back = submit(
        &mut signed_in,
        &authorize,
        &page,
        &[("email", "jane@example.com"), ("password", "password")],
    )
    .await;
    let done = signed_in.get(&back.location.unwrap()).await;
    assert_eq!(done.status, 200, "{}", done.body);

    Prepared {
        sesami_cookie: cookie_header(&sesami),
        haravan_cookie: cookie_header(&haravan),
        haravan_state,
        saison_cookie: cookie_header(&saison),
        weblink_cookie: cookie_header(&weblink),
        weblink_state,
        weblink_session: cookie_header(&signed_in),
    }
}

/// A request for every route of the table (a route without one fails the test), and the index.
async fn probes(h: &Harness, p: &Prepared) -> Vec<Probe> {
    let client = crate::support::http_without_redirects();
    let haravan = h.server.app.secrets.credentials("haravan").await.unwrap();
    let haravan_secret = secrecy::ExposeSecret::expose_secret(&haravan.client_secret).to_owned();
    let verify_token = haravan.extra["webhook_verify_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = |state: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("state", state)
            .append_pair("code", "outage-code")
            .append_pair("id_token", "e30.e30.c2ln")
            .finish()
    };
    let mut out = Vec::new();
    for route in gatehouse::routes::all() {
        let what = format!("{} {}", route.method, route.path);
        let url = |path_and_query: &str| h.url(path_and_query);
        let (request, status) = match what.as_str() {
            "GET /sesami/install" => {
                let q = h.server.sesami.signed_query(&[("shopId", "outage-shop")]);
                (client.get(url(&format!("/sesami/install?{q}"))), 503)
            }
            "GET /sesami/callback" => {
                let q = h
                    .server
                    .sesami
                    .signed_query(&[("code", "outage-code"), ("shopId", "outage-shop")]);
                (
                    client
                        .get(url(&format!("/sesami/callback?{q}")))
                        .header("cookie", &p.sesami_cookie),
                    503,
                )
            }
            "POST /sesami/webhooks" => {
                let data = std::collections::BTreeMap::from([(
                    "shopId".to_string(),
                    json!("outage-shop"),
                )]);
                let body = h.server.sesami.webhook_body("uninstall_app", data);
                (
                    client
                        .post(url("/sesami/webhooks"))
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                    503,
                )
            }
            "GET /haravan/install/login" => (client.get(url("/haravan/install/login")), 503),
            "POST /haravan/install/login" | "POST /haravan/install/grandservice" => (
                client
                    .post(url(route.path))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("cookie", &p.haravan_cookie)
                    .body(form(&p.haravan_state)),
                503,
            ),
            // The subscription handshake needs no store.
            "GET /haravan/webhooks" => (
                client.get(url(&format!(
                    "/haravan/webhooks?hub.mode=subscribe&hub.verify_token={verify_token}&hub.challenge=42"
                ))),
                200,
            ),
            "POST /haravan/webhooks" => {
                let body = json!({"id": 1000111111u64, "org_id": "1000111111", "event_type": "app/uninstalled"}).to_string();
                let signature = gatehouse_simulators::haravan::webhook_signature(
                    &haravan_secret,
                    body.as_bytes(),
                );
                (
                    client
                        .post(url("/haravan/webhooks"))
                        .header("content-type", "application/json")
                        .header("x-haravan-hmacsha256", signature)
                        .header("x-haravan-topic", "app/uninstalled")
                        .body(body),
                    503,
                )
            }
            "GET /haravan/logout" => (client.get(url("/haravan/logout?sid=outage-sid")), 503),
            "GET /saison/authorize" => (client.get(url("/saison/authorize?link=outage-link")), 503),
            "POST /v1/connect-links" => (
                client
                    .post(url("/v1/connect-links"))
                    .header("content-type", "application/json")
                    .body(
                        json!({"platform": "saison", "end_user": "outage-user", "return_to": url("/done")})
                            .to_string(),
                    ),
                503,
            ),
            "GET /saison/callback" => (
                client
                    .get(url("/saison/callback?code=outage-code"))
                    .header("cookie", &p.saison_cookie),
                503,
            ),
            "POST /momo/requesttopay" => (
                client
                    .post(url("/momo/requesttopay"))
                    .header("content-type", "application/json")
                    .body(
                        json!({
                            "amount": "10",
                            "currency": "EUR",
                            "externalId": "outage-order",
                            "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"},
                        })
                        .to_string(),
                    ),
                503,
            ),
            "PUT /momo/callback/{referenceId}" | "POST /momo/callback/{referenceId}" => (
                client
                    .request(
                        reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap(),
                        url(&format!("/momo/callback/{}", uuid::Uuid::new_v4())),
                    )
                    .header("content-type", "application/json")
                    .body(r#"{"status":"SUCCESSFUL"}"#),
                503,
            ),
            "GET /v1/events/{platform}/{id}" => (
                client.get(url(&format!("/v1/events/haravan/{}", uuid::Uuid::new_v4()))),
                503,
            ),
            // Guest tokens come from Administrate, not the store.
            "POST /weblink/guest-token" => (
                client
                    .post(url("/weblink/guest-token"))
                    .header("content-type", "application/json")
                    .body(r#"{"portal":"demo.administrateweblink.com"}"#),
                200,
            ),
            "GET /weblink/login" => (
                client.get(url("/weblink/login?portal=demo.administrateweblink.com")),
                503,
            ),
            "GET /weblink/callback" => (
                client
                    .get(url(&format!(
                        "/weblink/callback?code=outage-code&state={}",
                        p.weblink_state
                    )))
                    .header("cookie", &p.weblink_cookie),
                503,
            ),
            "POST /weblink/refresh" => (
                client
                    .post(url("/weblink/refresh"))
                    .header("cookie", &p.weblink_session),
                503,
            ),
            // The proxy reads the tenant's connection (MoMo: its product token) first.
            "ANY /v1/proxy/sesami/{tenant}/{proxy+}" => (
                client.get(url("/v1/proxy/sesami/outage-shop/api/v1/shop")),
                503,
            ),
            "ANY /v1/proxy/haravan/{tenant}/{proxy+}" => (
                client.get(url("/v1/proxy/haravan/1000111111/com/shop.json")),
                503,
            ),
            "ANY /v1/proxy/saison/{tenant}/{proxy+}" => (
                client.get(url(
                    "/v1/proxy/saison/M0001/auth/account/profile?end_user=outage-user",
                )),
                503,
            ),
            "ANY /v1/proxy/momo/{tenant}/{proxy+}" => (
                client.get(url(
                    "/v1/proxy/momo/collection/collection/v1_0/account/balance",
                )),
                503,
            ),
            "ANY /v1/proxy/weblink/{tenant}/{proxy+}" => (
                client
                    .post(url("/v1/proxy/weblink/outage-session/graphql"))
                    .header("content-type", "application/json")
                    .body(r#"{"query":"{ viewer { email } }"}"#),
                503,
            ),
            "GET /v1/connections" => (client.get(url("/v1/connections?platform=haravan")), 503),
            "GET /v1/connections/saison/{tenant}" => (
                client.get(url("/v1/connections/saison/outage-card?end_user=outage-user")),
                503,
            ),
            "POST /v1/connections/saison/{tenant}/token" => (
                client.post(url(
                    "/v1/connections/saison/outage-card/token?end_user=outage-user",
                )),
                503,
            ),
            "GET /v1/connections/momo/{tenant}" => {
                // Answered from configuration alone: no store call to fail.
                (client.get(url("/v1/connections/momo/collection")), 200)
            }
            "POST /v1/connections/momo/{tenant}/token" => (
                client.post(url("/v1/connections/momo/collection/token")),
                503,
            ),
            other if other.starts_with("GET /v1/connections/") => {
                let path = route.path.replace("{tenant}", "outage-tenant");
                (client.get(url(&path)), 503)
            }
            other if other.starts_with("POST /v1/connections/") => {
                let path = route.path.replace("{tenant}", "outage-tenant");
                (client.post(url(&path)), 503)
            }
            _ => panic!("{what}: no request for the store outage (add one to faults::probes)"),
        };
        out.push(Probe {
            what,
            request,
            status,
        });
    }
    out.push(Probe {
        what: "GET / (the index, which lists installs)".into(),
        request: client.get(h.url("/")),
        status: 503,
    });
    out
}

/// Sends every probe at once; each must answer as told within `within`, clearly, no secret.
async fn expect_outage_answers(h: &Harness, probes: Vec<Probe>, within: Duration) {
    let secrets = h.secret_values();
    let started = Instant::now();
    let tasks: Vec<_> = probes
        .into_iter()
        .map(|probe| {
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(Duration::from_secs(30), probe.request.send()).await;
                let answer = match answer {
                    Err(_) => Err("no answer within 30 s".to_string()),
                    Ok(Err(e)) => Err(format!("no answer (a panicking handler?): {e}")),
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        Ok((status, resp.text().await.unwrap_or_default()))
                    }
                };
                (probe.what, probe.status, answer)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        let (what, want, answer) = task.await.unwrap();
        match answer {
            Err(e) => failures.push(format!("{what}: {e}")),
            Ok((status, body)) => {
                if status != want {
                    failures.push(format!(
                        "{what}: answered {status}, expected {want}: {body:.300}"
                    ));
                } else if want == 503 && !body.contains("the store is unavailable") {
                    failures.push(format!(
                        "{what}: the message does not say what is wrong: {body:.300}"
                    ));
                }
                if secrets.iter().any(|s| body.contains(s.as_str())) {
                    failures.push(format!("{what}: a secret in the answer"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        started.elapsed() < within,
        "the outage answers took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_store_gone_mid_flow_answers_503() {
    let Some((h, proxy, _)) = Harness::on_proxied_dynamo(Vars::default(), 0).await else {
        return;
    };
    let prepared = prepare(&h).await;
    assert!(
        !h.items("state#sesami").await.is_empty(),
        "the flows were started on the store"
    );
    let probes = probes(&h, &prepared).await;
    proxy.go(None);
    expect_outage_answers(&h, probes, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_store_that_stops_answering_answers_503_in_time() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_AWS_TIMEOUT_SECONDS", "1");
    let Some((h, proxy, _)) = Harness::on_proxied_dynamo(vars, 0).await else {
        return;
    };
    let prepared = prepare(&h).await;
    let probes = probes(&h, &prepared).await;
    proxy.set(vec![Rule::every(Fault::Hang)]);
    // Each call gives up after 1 s; without that bound they would wait for ever.
    expect_outage_answers(&h, probes, Duration::from_secs(8)).await;
}

// ---------------------------------------------------------------------------------------------
// Secrets Manager gone

#[tokio::test]
async fn a_warm_container_keeps_serving_when_secrets_manager_is_gone() {
    let Some(sm) = crate::support::secrets_client().await else {
        return;
    };
    let create = async |value: Value| {
        let name = format!("gatehouse-it-{}", uuid::Uuid::new_v4().simple());
        sm.create_secret()
            .name(&name)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("create secret")
            .arn()
            .unwrap()
            .to_owned()
    };
    let app_id = create(json!({
        "key_id": "k1",
        "key": "a-generated-key-of-sixty-four-characters-0123456789abcdefghijkl"
    }))
    .await;
    let sesami_id = create(json!({
        "client_id": "sm-outage-client",
        "client_secret": "sm-outage-secret-value"
    }))
    .await;
    let mut vars = Vars::default();
    vars.set("APP_SECRET_ID", &app_id);
    vars.set("SESAMI_SECRET_ID", &sesami_id);
    vars.set("GATEHOUSE_SECRETS_TTL_SECONDS", "1");
    let h = Harness::start(crate::harness::Backend::Embedded, vars)
        .await
        .expect("harness");

    let launch = async |shop: &str| {
        let mut b = Browser::new();
        let q = h.server.sesami.signed_query(&[("shopId", shop)]);
        let page = b.get(&h.url(&format!("/sesami/install?{q}"))).await;
        assert_eq!(page.status, 302, "{shop}: {}", page.body);
        let location = page.location.unwrap();
        assert!(location.contains("clientId=sm-outage-client"), "{location}");
        assert!(
            b.cookies.keys().any(|k| k.contains("gh-sesami-state")),
            "{shop}: the state cookie is signed with the app key from Secrets Manager"
        );
    };
    launch("warm-shop-1").await;

    for id in [&app_id, &sesami_id] {
        sm.delete_secret()
            .secret_id(id)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
    }
    assert!(
        sm.get_secret_value()
            .secret_id(&sesami_id)
            .send()
            .await
            .is_err(),
        "Secrets Manager no longer has the secret"
    );

    launch("warm-shop-2").await; // within the TTL: the cached values, no call
    tokio::time::sleep(Duration::from_millis(1200)).await;
    launch("warm-shop-3").await; // past the TTL: the refresh fails, the last values serve
    launch("warm-shop-4").await;
    assert_eq!(h.items("state#sesami").await.len(), 4);
}
