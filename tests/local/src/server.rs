//! The local server: every route of template.yaml on 127.0.0.1, on the embedded store and the
//! local secrets file, with each platform's simulator mounted under `/_sim/<platform>/`, and the
//! console at `/` (crate::console). The handlers are the very ones the Lambda binaries run.
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
    /// The webhook deliveries received lately, with their verdicts (what the console lists).
    pub deliveries: crate::deliveries::Deliveries,
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
    // Connect links may send the browser back to the local server itself (its console).
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
    // user is provisioned in it already (`gatehouse-admin momo provision` creates another when asked).
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

    let deliveries = crate::deliveries::Deliveries::default();
    let console =
        crate::console::Console::new(sesami.clone(), haravan.clone(), deliveries.clone(), &base);
    let router = Router::new()
        .route("/", axum::routing::get(crate::console::page))
        .route(
            "/_local/console/{*action}",
            axum::routing::post(crate::console::action).get(crate::console::not_posted),
        )
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
        .layer(axum::Extension(console))
        .layer(axum::Extension(deliveries.clone()))
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
        deliveries,
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
    axum::Extension(deliveries): axum::Extension<crate::deliveries::Deliveries>,
    req: axum::extract::Request,
) -> AxumResponse {
    // A flow the console started shows its pages with a way back (crate::console::wrap), the
    // refusals of this dispatcher too.
    let from_console = crate::console::started_here(req.headers());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let out = |answer: lambda_http::Response<Body>| {
        if from_console {
            to_axum(crate::console::wrap(&method, &path, answer))
        } else {
            to_axum(answer)
        }
    };
    // No IAM here: the app's back-end routes are for this machine only.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if req.uri().path().starts_with("/v1/") && !peer.is_some_and(|ip| ip.is_loopback()) {
        return out(routes::answer(
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
            return out(routes::answer(Format::Json, Err(Error::MethodNotAllowed)));
        }
        Resolved::NotFound => {
            return out(routes::answer(
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
    let delivery_headers =
        crate::deliveries::is_delivery(route.function_name()).then(|| parts.headers.clone());
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return out(routes::answer(Format::Json, Err(Error::TooLarge(MAX_BODY))));
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
                return out(routes::answer(Format::Json, Err(Error::Forbidden(why))));
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
    let answer = route.answer(result);
    if let Some(headers) = delivery_headers {
        deliveries.record(route.function_name(), &path, &headers, &bytes, &answer);
    }
    out(answer)
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

/// The end user the console's Saison button connects for.
const DEMO_END_USER: &str = "demo-user";

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
