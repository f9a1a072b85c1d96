//! The local server: every route of template.yaml on 127.0.0.1, on the embedded store and the
//! local secrets file, with each platform's simulator mounted under `/_sim/<platform>/`, and an
//! index page at `/`. The handlers are the very ones the Lambda binaries run.
//!
//! The `/v1/*` routes are the app's back end's, IAM-authorized on API Gateway. Locally there is
//! no IAM: they are served to loopback clients only (the server listens on 127.0.0.1 alone, and
//! a request from any other peer address is refused with a 403 all the same).

use crate::sigv4::LocalIam;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::response::Response as AxumResponse;
use gatehouse::Error;
use gatehouse::config::Vars;
use gatehouse::routes::Platforms;
use gatehouse::routes::{self, Resolved, Route};
use gatehouse::web::{self, Format};
use gatehouse_simulators::haravan::HaravanSim;
use gatehouse_simulators::momo::MomoSim;
use gatehouse_simulators::saison::SaisonSim;
use gatehouse_simulators::sesami::SesamiSim;
use gatehouse_simulators::weblink::WeblinkSim;
use lambda_http::Body;
use lambda_http::http::StatusCode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The largest request body the local server passes on: API Gateway's own payload limit, so that
/// the handlers, not the server, answer an over-large body (and the whole body is read first, so
/// the client is not cut off mid-send and can read the answer).
const MAX_BODY: usize = 10 * 1024 * 1024;

/// A running local server.
pub struct LocalServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The app its routes run on (tests read its store).
    pub app: Arc<Platforms>,
    /// The Sesami simulator.
    pub sesami: SesamiSim,
    /// The Haravan simulator.
    pub haravan: HaravanSim,
    /// The Saison connect simulator.
    pub saison: SaisonSim,
    /// The MTN MoMo simulator.
    pub momo: MomoSim,
    /// The Administrate WebLink simulator.
    pub weblink: WeblinkSim,
    task: tokio::task::JoinHandle<()>,
    /// The MoMo reconciler's timer, when it runs.
    reconciler: Option<tokio::task::JoinHandle<()>>,
    /// The events relay to `GATEHOUSE_LOCAL_EVENTS_URL`, when set (crate::outbox).
    events_relay: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(reconciler) = &self.reconciler {
            reconciler.abort();
        }
        if let Some(relay) = &self.events_relay {
            relay.abort();
        }
    }
}

impl LocalServer {
    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts the server on `127.0.0.1:port` (0: any free port). `vars` is the configuration; what
/// it leaves unset points at the local server itself: the public base URL and every platform
/// endpoint (at its simulator). The local secrets file is created if missing.
pub async fn start(port: u16, vars: Vars) -> Result<LocalServer, Box<dyn std::error::Error>> {
    start_with(port, vars, |vars| async move {
        Platforms::from_vars(&vars).await
    })
    .await
}

/// As [`start`], with the app built by `build` from the completed configuration (tests that
/// give the app a store of their own, e.g. one whose backend they can take away).
pub async fn start_with<F, Fut, E>(
    port: u16,
    mut vars: Vars,
    build: F,
) -> Result<LocalServer, Box<dyn std::error::Error>>
where
    F: FnOnce(Vars) -> Fut,
    Fut: std::future::Future<Output = Result<Platforms, E>>,
    E: Into<Box<dyn std::error::Error>>,
{
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    vars.set_default("PUBLIC_BASE_URL", &base);
    vars.set_default("SESAMI_API_BASE", format!("{base}/_sim/sesami"));
    let haravan_base = format!("{base}/_sim/haravan");
    vars.set_default("HARAVAN_ACCOUNTS_BASE", &haravan_base);
    vars.set_default("HARAVAN_ISSUERS", &haravan_base);
    vars.set_default("HARAVAN_WEBHOOK_BASE", format!("{haravan_base}/webhook"));
    vars.set_default("HARAVAN_API_BASE", format!("{haravan_base}/api"));
    vars.set_default("SAISON_API_BASE", format!("{base}/_sim/saison"));
    // Connect links may send the browser back to the local server itself (its index page).
    vars.set_default("GATEHOUSE_RETURN_TO_ORIGINS", &base);
    vars.set_default("MOMO_BASE_URL", format!("{base}/_sim/momo"));
    let weblink_base = format!("{base}/_sim/weblink");
    vars.set_default("WEBLINK_PORTALS", "demo.administrateweblink.com");
    vars.set_default("WEBLINK_GUEST_URL", format!("{weblink_base}/portal/guest"));
    vars.set_default(
        "WEBLINK_HOST_LOOKUP_URL",
        format!("{weblink_base}/portal_config"),
    );
    vars.set_default("WEBLINK_IDP_BASE", format!("{weblink_base}/idp/{{domain}}"));
    vars.set_default("WEBLINK_API_BASE", format!("{weblink_base}/api"));
    // With discovery (the default) the keys are where the simulated IDP's metadata says, so
    // that path is what the tests run; without it, the simulator's keys by configuration.
    if vars
        .get("WEBLINK_DISCOVERY")
        .is_some_and(|v| v == "false" || v == "0")
    {
        vars.set_default(
            "WEBLINK_JWKS_URL",
            format!("{weblink_base}/.well-known/jwks.json"),
        );
    }

    let data_dir = PathBuf::from(vars.get_or("GATEHOUSE_DATA_DIR", ".gatehouse"));
    let secrets_file = vars
        .get("GATEHOUSE_SECRETS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("secrets.json"));
    gatehouse::secrets::ensure_local_file(&secrets_file, &["sesami", "haravan", "saison", "momo"])?;

    let app = Arc::new(build(vars.clone()).await.map_err(Into::into)?);
    let public_base = vars.get_or("PUBLIC_BASE_URL", &base).to_owned();
    let sesami_creds = app.secrets.credentials("sesami").await?;
    let sesami = SesamiSim::new(
        &sesami_creds.client_id,
        secrecy::ExposeSecret::expose_secret(&sesami_creds.client_secret),
        &public_base,
    );
    let haravan_creds = app.secrets.credentials("haravan").await?;
    let haravan = HaravanSim::new(
        &haravan_creds.client_id,
        secrecy::ExposeSecret::expose_secret(&haravan_creds.client_secret),
        &public_base,
        &format!("{public_base}/_sim/haravan"),
    );
    let saison_creds = app.secrets.credentials("saison").await?;
    let saison = SaisonSim::new(
        &saison_creds.client_id,
        secrecy::ExposeSecret::expose_secret(&saison_creds.client_secret),
        &public_base,
        &format!("{public_base}/_sim/saison"),
    );
    // The MoMo simulator knows the app's products' subscription keys, and the development API
    // user is provisioned in it already (momo-provision creates another when asked).
    let momo_secret = app.secrets.raw_json("momo").await?;
    let sub_keys: Vec<(String, String)> = momo_secret
        .get("subscription_keys")
        .and_then(|k| k.as_object())
        .map(|keys| {
            keys.iter()
                .filter_map(|(p, k)| Some((p.clone(), k.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let sub_refs: Vec<(&str, &str)> = sub_keys
        .iter()
        .map(|(p, k)| (p.as_str(), k.as_str()))
        .collect();
    let momo = MomoSim::new(&sub_refs, &public_base);
    if let (Some(user), Some(key)) = (
        momo_secret.get("client_id").and_then(|v| v.as_str()),
        momo_secret.get("client_secret").and_then(|v| v.as_str()),
    ) {
        momo.register_api_user(user, key, addr.ip().to_string().as_str());
    }
    let weblink = WeblinkSim::new(&format!("{public_base}/_sim/weblink"), &public_base);

    let router = Router::new()
        .route("/", axum::routing::get(index))
        .route("/_local/saison/connect", axum::routing::get(demo_connect))
        .route(
            "/_local/events",
            axum::routing::get(crate::outbox::html_page),
        )
        .route(
            "/_local/events.json",
            axum::routing::get(crate::outbox::json_page),
        )
        .nest_service("/_sim/sesami", sesami.router())
        .nest_service("/_sim/haravan", haravan.router())
        .nest_service("/_sim/saison", saison.router())
        .nest_service("/_sim/momo", momo.router())
        .nest_service("/_sim/weblink", weblink.router())
        .fallback(dispatch)
        .layer(axum::Extension(LocalIam::from_vars(&vars)?))
        .with_state(app.clone());
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "local server stopped");
        }
    });
    let reconciler = reconcile_every(&app, vars.seconds("MOMO_LOCAL_RECONCILE_SECONDS", 30)?);
    let events_relay = crate::outbox::relay_every(
        &app,
        vars.get("GATEHOUSE_LOCAL_EVENTS_URL").map(str::to_owned),
        vars.seconds("GATEHOUSE_LOCAL_EVENTS_SECONDS", 1)?,
    );
    Ok(LocalServer {
        addr,
        app,
        sesami,
        haravan,
        saison,
        momo,
        weblink,
        task,
        reconciler,
        events_relay,
    })
}

/// Runs the MoMo reconciler every `period` (none for zero), as the deployment's schedule runs
/// the `momo-reconcile` function, so that lost callbacks and unconfirmed payments resolve on a
/// laptop too. The first run is one period after the start.
fn reconcile_every(
    app: &Arc<Platforms>,
    period: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if period.is_zero() {
        return None;
    }
    let app = app.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = gatehouse::momo::reconcile(&app.momo).await {
                tracing::warn!(error = %e, "the local MoMo reconciler run failed");
            }
        }
    }))
}

/// Serves a template.yaml route: the request becomes a `lambda_http::Request` exactly as the
/// Lambda adapter makes one, and the handler's response goes back unchanged.
async fn dispatch(
    axum::extract::State(app): axum::extract::State<Arc<Platforms>>,
    axum::Extension(iam): axum::Extension<LocalIam>,
    req: axum::extract::Request,
) -> AxumResponse {
    // No IAM here: the app's back-end routes are for this machine only.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if req.uri().path().starts_with("/v1/") && !peer.is_some_and(|ip| ip.is_loopback()) {
        return to_axum(routes::answer(
            Format::Json,
            Err(Error::Forbidden(
                "the /v1/ routes are served to 127.0.0.1 only (no IAM locally)".into(),
            )),
        ));
    }
    let all = routes::all();
    let route: &Route = match routes::resolve(&all, req.method(), req.uri().path()) {
        Resolved::Route(route) => route,
        Resolved::WrongMethod => {
            return to_axum(routes::answer(Format::Json, Err(Error::MethodNotAllowed)));
        }
        Resolved::NotFound => {
            return to_axum(routes::answer(
                Format::Json,
                Err(Error::NotFound("no such route".into())),
            ));
        }
    };
    // The request's deadline runs from its arrival, as on Lambda; the body is read within it.
    let deadline = gatehouse::budget::deadline(
        std::time::Instant::now(),
        app.config.request_timeout,
        None,
        std::time::SystemTime::now(),
    );
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return to_axum(routes::answer(Format::Json, Err(Error::TooLarge(MAX_BODY))));
        }
    };
    // API Gateway's IAM authorizer, locally: the signature checked, the caller named in the
    // request context as the deployed routes see it.
    let caller = if parts.uri.path().starts_with("/v1/") {
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        match iam.verify(
            parts.method.as_str(),
            target,
            &parts.headers,
            &bytes,
            std::time::SystemTime::now(),
        ) {
            Ok(caller) => Some(caller),
            Err(why) => {
                return to_axum(routes::answer(Format::Json, Err(Error::Forbidden(why))));
            }
        }
    } else {
        None
    };
    let mut lreq = lambda_http::Request::new(if bytes.is_empty() {
        Body::Empty
    } else {
        Body::Binary(bytes.to_vec())
    });
    *lreq.method_mut() = parts.method;
    *lreq.uri_mut() = parts.uri;
    *lreq.headers_mut() = parts.headers;
    // The caller the local authorizer verified, as API Gateway's names it for a deployed /v1
    // route (RequestInfo::iam_caller).
    lreq.extensions_mut()
        .insert(gatehouse::context::RequestInfo {
            iam_caller: caller.map(|c| c.user_arn),
            ..Default::default()
        });
    let result = gatehouse::budget::within(deadline, route.function.call(&app, &lreq)).await;
    to_axum(route.answer(result))
}

fn to_axum(resp: lambda_http::Response<Body>) -> AxumResponse {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, AxumBody::from(bytes))
}

/// The end user the index page's Saison link connects for.
const DEMO_END_USER: &str = "demo-user";

/// Each platform's install kind, and which attribute names the tenant's display name. An
/// install has a partition of its own (`install#sesami#<shop>`; a Saison connection's is its end
/// user's, `conn#saison#<end user>`), so no one partition lists a platform's installs: this local
/// console reads them with a scan of the kind's prefix ([`of_kind`]). That is acceptable here, a
/// developer's page over a small local table, and nowhere else: no function scans, and no
/// policy grants `dynamodb:Scan`.
const INSTALLS: &[(&str, &str, &str)] = &[
    ("Sesami", "install#sesami", "name"),
    ("Haravan", "install#haravan", "orgname"),
    ("Saison connect", "conn#saison", "cardholder"),
];

/// The live items of `kind`, in key order: partition key `kind` itself or `kind#…` (so
/// `install#haravan` lists every org's install, not `install#haravanx`). A scan of the whole
/// table: for the local console and the tests only.
pub async fn of_kind(
    store: &dyn gatehouse::store::Store,
    kind: &str,
) -> Result<Vec<gatehouse::store::Item>, gatehouse::store::StoreError> {
    let within = format!("{kind}#");
    Ok(store
        .scan_prefix(kind)
        .await?
        .into_iter()
        .filter(|item| item.key.pk == kind || item.key.pk.starts_with(&within))
        .collect())
}

/// `/_local/saison/connect`: what the app's back end would do for its user `demo-user` (a
/// connect link, back to `/`), then off to the link. Local only: deployed, links come from
/// `POST /v1/connect-links` under IAM.
async fn demo_connect(
    axum::extract::State(app): axum::extract::State<Arc<Platforms>>,
) -> AxumResponse {
    let result = async {
        let req = lambda_http::Request::default();
        let return_to = app.public_url(&req, "/")?;
        let (url, _) =
            gatehouse::connect::store_link(&app.deps, &req, DEMO_END_USER, &return_to).await?;
        web::redirect(&url)
    }
    .await;
    to_axum(routes::answer(Format::Html, result))
}

/// `/`: the flows to click through and what is stored, tokens redacted; within the request
/// budget like every route, since it reads the store.
async fn index(axum::extract::State(app): axum::extract::State<Arc<Platforms>>) -> AxumResponse {
    let deadline = gatehouse::budget::deadline(
        std::time::Instant::now(),
        app.config.request_timeout,
        None,
        std::time::SystemTime::now(),
    );
    let result = gatehouse::budget::within(deadline, index_page(&app)).await;
    to_axum(routes::answer(Format::Html, result))
}

async fn index_page(app: &Platforms) -> gatehouse::Result<lambda_http::Response<Body>> {
    let mut rows = String::new();
    for (platform, kind, name_attr) in INSTALLS {
        let items = of_kind(app.store.as_ref(), kind).await?;
        for item in items {
            rows.push_str(&format!(
                "<tr><td>{platform}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>encrypted</td></tr>",
                web::escape(&item.key.sk),
                web::escape(item.str(name_attr).unwrap_or("")),
                item.attrs.get("installed_at").and_then(|v| v.as_i64()).unwrap_or(0),
            ));
        }
    }
    let installs_html = if rows.is_empty() {
        "<p>No installs yet.</p>".to_owned()
    } else {
        format!(
            "<table><tr><th>platform</th><th>tenant</th><th>name</th><th>installed at</th><th>tokens</th></tr>{rows}</table>"
        )
    };
    let payments: String = match of_kind(app.store.as_ref(), "tx#momo").await {
        Ok(items) => items
            .iter()
            .map(|tx| {
                format!(
                    "<tr><td><code>{}</code></td><td>{} {}</td><td>{}{}</td></tr>",
                    web::escape(&tx.key.sk),
                    web::escape(tx.str("amount").unwrap_or("")),
                    web::escape(tx.str("currency").unwrap_or("")),
                    web::escape(tx.str("status").unwrap_or("")),
                    // MoMo's answer was lost: the reconciler confirms it.
                    if tx.str("status") == Some("PENDING")
                        && matches!(tx.str("submitted"), Some("sending" | "unknown"))
                    {
                        " (unconfirmed)"
                    } else {
                        ""
                    },
                )
            })
            .collect(),
        Err(e) => return Err(e.into()),
    };
    let payments_html = if payments.is_empty() {
        String::new()
    } else {
        format!(
            "<h2>MoMo payments</h2><table><tr><th>reference</th><th>amount</th><th>status</th></tr>{payments}</table>"
        )
    };
    let base = web::escape(
        app.config
            .public_base_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/'))
            .unwrap_or(""),
    );
    let post = |action: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{}\" style=\"display:inline\"><button>{label}</button></form>",
            web::escape(action)
        )
    };
    let body = format!(
        "<p>Every route of template.yaml runs here on the embedded store, against simulated platforms.</p>\
         <h2>Flows</h2><ul>\
         <li>Sesami: <a href=\"/_sim/sesami/launch?shopId=demo-shop\">install into <code>demo-shop</code></a> \
         (a signed launch from the simulated app store, consent, callback, token exchange); then {}</li>\
         <li>Haravan: <a href=\"/haravan/install/login\">open the app</a> (sign in as the admin of a new shop to \
         install it, again to get a session; as staff to be refused); then {} or {}</li>\
         <li>Saison connect: <a href=\"/_local/saison/connect\">connect a card for the app's user <code>demo-user</code></a> \
         (what <code>POST /v1/connect-links</code> does for the app's back end: a one-time link; sign in with any ID and the password \
         <code>password</code>; the cardholder is read from the profile with a MAC-signed request, and the browser comes back here)</li>\
         <li>MTN MoMo: <code>curl -X POST {base}/momo/requesttopay -H 'content-type: application/json' -d \
         '{{\"amount\":\"10\",\"currency\":\"EUR\",\"externalId\":\"order-1\",\"payer\":{{\"partyIdType\":\"MSISDN\",\"partyId\":\"46733123450\"}}}}'</code> \
         (a payer number ending in 1 fails, 2 stays pending; the simulator calls back and the outcome is confirmed)</li>\
         <li>Administrate WebLink: <a href=\"/weblink/login?portal=demo.administrateweblink.com\">sign in to the demo portal</a> \
         (<code>jane@example.com</code> / <code>password</code>; PKCE S256), then <form method=\"post\" action=\"/weblink/refresh\" style=\"display:inline\">\
         <button>get a fresh access token</button></form>; a guest portal token: <code>curl -X POST {base}/weblink/guest-token \
         -H 'content-type: application/json' -d '{{\"portal\":\"demo.administrateweblink.com\"}}'</code></li>\
         </ul><p>Every verified webhook and payment outcome is an event: <a href=\"/_local/events\">the outbox</a>.</p>\
         <h2>Stored installs</h2>{installs_html}{payments_html}",
        post(
            "/_sim/sesami/webhooks/send?shopId=demo-shop&event=uninstall_app",
            "send a signed uninstall_app webhook",
        ),
        post(
            "/_sim/haravan/_logout?sub=200000011111",
            "log the demo-one admin out (front-channel)",
        ),
        post(
            "/_sim/haravan/_send_webhook?topic=app/uninstalled&orgid=1000111111",
            "uninstall from demo-one (signed app/uninstalled)",
        ),
    );
    Ok(web::html_page(StatusCode::OK, "Gatehouse (local)", &body))
}
