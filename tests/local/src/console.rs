//! The local console: the page at `/` of the local server, and the actions its buttons and
//! forms post to (`POST /_local/console/<action>`).
//!
//! The page shows what is stored, read from the store as it is now (never a token or secret):
//! every connection with its health (status, scopes, times, last error), the Haravan and WebLink
//! sessions, the MoMo payments with their status, the webhook deliveries the server received
//! lately with their verdict ([`crate::deliveries`]) and the outbox's latest events. Every action
//! does its one thing and answers `303` back to `/` with a flash message (`?flash=`) saying what
//! happened, so that a person never lands on raw JSON or on a page without a way back.
//!
//! An action that starts a flow (an install, a sign-in) sends the browser to the flow's first
//! page with the console's cookie ([`CONSOLE_COOKIE`]). While it is set, the local server shows
//! the pages of Gatehouse's own routes to that browser through [`wrap`]: a page gets a link back
//! to the console, and an answer that is not a page (JSON, plain text) becomes one, secrets
//! redacted. The handlers answer exactly as deployed; only what this server passes on to a
//! console's browser changes.

use crate::deliveries::{Deliveries, verdict_of};
use crate::server::of_kind;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response as AxumResponse;
use gatehouse::connection::{self, Connection};
use gatehouse::routes::Platforms;
use gatehouse::store::{Condition, Item, Key, Write};
use gatehouse::web;
use gatehouse_simulators::haravan::HaravanSim;
use gatehouse_simulators::sesami::SesamiSim;
use lambda_http::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Response};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The cookie that marks a browser whose flow the console started: its pages of Gatehouse's
/// routes come with a way back ([`wrap`]).
pub const CONSOLE_COOKIE: &str = "gatehouse_console";

/// The demo portal the WebLink simulator serves.
pub const DEMO_PORTAL: &str = "demo.administrateweblink.com";

/// Where the console's actions post to: `POST /_local/console/<action>`.
pub const ACTIONS: &str = "/_local/console";

/// What the console's actions use besides the app: the simulators whose signing helpers send
/// webhooks as the platforms do, the deliveries kept, and this server's own address (actions
/// call its routes over HTTP, as a platform or the app's back end would, so that the deliveries
/// are recorded and the answers are the routes' own).
#[derive(Clone)]
pub struct Console {
    /// The Sesami simulator.
    pub sesami: SesamiSim,
    /// The Haravan simulator.
    pub haravan: HaravanSim,
    /// The deliveries the dispatcher records.
    pub deliveries: Deliveries,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
}

impl Console {
    /// The console over these simulators and deliveries, calling its own server at `base`.
    pub fn new(sesami: SesamiSim, haravan: HaravanSim, deliveries: Deliveries, base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            sesami,
            haravan,
            deliveries,
            base: base.to_owned(),
            http,
        }
    }
}

/// Unix seconds now.
pub use gatehouse::store::now;

/// `t` (unix seconds) as a person reads it, relative to `now`: `2026-12-01 18:04 UTC (3 min
/// ago)`.
pub fn when(t: i64, now: i64) -> String {
    // `YYYY-MM-DDTHH:MM:SSZ`, read to the minute.
    let iso = gatehouse::rfc3339::format(t);
    let (date, time) = iso.split_once('T').unwrap_or((&iso, ""));
    let minute = time.get(..5).unwrap_or(time);
    let ago = now - t;
    let span = |s: i64| match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    };
    let relative = match ago {
        0 => "now".to_owned(),
        a if a > 0 => format!("{} ago", span(a)),
        a => format!("in {}", span(-a)),
    };
    format!("{date} {minute} UTC ({relative})")
}

fn when_opt(t: Option<i64>, now: i64) -> String {
    t.map_or_else(|| "—".to_owned(), |t| when(t, now))
}

/// `text` as a query-string value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The console's address with a flash message.
pub fn back_with(flash: &str, ok: bool) -> String {
    format!("/?flash={}{}", encode(flash), if ok { "" } else { "&ok=0" })
}

fn to_axum(resp: Response<Body>) -> AxumResponse {
    let (parts, body) = resp.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, axum::body::Body::from(bytes))
}

fn see_other(location: &str) -> Response<Body> {
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Back to the console with `flash`.
fn done(flash: &str, ok: bool) -> Response<Body> {
    see_other(&back_with(flash, ok))
}

/// Off to a flow's first page, marked as started from the console.
fn start_flow(location: &str) -> Response<Body> {
    let mut resp = see_other(location);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gatehouse_console=1; Path=/; HttpOnly; SameSite=Lax"),
    );
    resp
}

/// A page of the console's own look: wider than a flow's page, for its tables.
fn page_html(status: StatusCode, title: &str, body_html: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:90rem;margin:2rem auto;padding:0 1rem;line-height:1.4}}\
         code{{background:#f3f3f3;padding:0 .2em}}table{{border-collapse:collapse;margin:.5em 0}}\
         td,th{{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}}\
         form{{display:inline}}fieldset{{margin:.5em 0}}.flash{{padding:.6em 1em;border-radius:.3em;background:#e6f4ea}}\
         .flash.error{{background:#fde7e7}}.muted{{color:#666}}</style>\
         </head><body><h1>{title}</h1>{body_html}</body></html>",
        title = web::escape(title),
    );
    let mut resp = Response::new(Body::from(page));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'",
        ),
    );
    resp
}

/// A button posting to the console action `action` with `fields` hidden.
fn button(action: &str, label: &str, fields: &[(&str, &str)]) -> String {
    let hidden: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                web::escape(k),
                web::escape(v)
            )
        })
        .collect();
    format!(
        "<form method=\"post\" action=\"{ACTIONS}/{}\">{hidden}<button>{}</button></form>",
        web::escape(action),
        web::escape(label)
    )
}

/// Each connection kind the console lists, its platform's name and the attribute that names the
/// tenant to a person. An install has a partition of its own (`install#sesami#<shop>`), so only
/// a scan of the kind's prefix lists them ([`of_kind`]): acceptable for this page over a
/// developer's small local table, and nowhere else.
const CONNECTION_KINDS: &[(&str, &str, &str)] = &[
    ("Sesami", "install#sesami", "name"),
    ("Haravan", "install#haravan", "orgname"),
    ("Saison connect", "conn#saison", "cardholder"),
    ("Administrate WebLink", "session#weblink", "email"),
];

/// Every stored connection, as the connection model shows it, with its key and display name,
/// in the order of [`CONNECTION_KINDS`]: what the console lists (and the browser test holds it
/// to).
pub async fn connections(
    store: &dyn gatehouse::store::Store,
) -> Result<Vec<(Key, Connection, String)>, gatehouse::store::StoreError> {
    let mut out = Vec::new();
    for (_, kind, name_attr) in CONNECTION_KINDS {
        for item in of_kind(store, kind).await? {
            let view = connection::view(&item)?;
            let name = item.str(name_attr).unwrap_or("").to_owned();
            out.push((item.key, view, name));
        }
    }
    Ok(out)
}

fn platform_title(platform: &str) -> &'static str {
    match platform {
        "sesami" => "Sesami",
        "haravan" => "Haravan",
        "saison" => "Saison connect",
        "weblink" => "Administrate WebLink",
        "momo" => "MTN MoMo",
        _ => "?",
    }
}

/// The flash message of the query string: the console's own (`flash`, `ok=0` for a failure), or
/// the outcome a connect link's flow came back with (`gatehouse=connected|error`).
fn flash_of(query: &web::Params) -> Option<(String, bool)> {
    if let Some(text) = query.get("flash") {
        return Some((text.to_owned(), query.get("ok") != Some("0")));
    }
    match query.get("gatehouse") {
        Some("connected") => Some((
            format!(
                "Connected: {} {}.",
                platform_title(query.get("platform").unwrap_or("")),
                query.get("tenant").unwrap_or("")
            ),
            true,
        )),
        Some("error") => Some((
            format!(
                "The flow ended without a connection: {}.",
                query.get("reason").unwrap_or("unknown reason")
            ),
            false,
        )),
        _ => None,
    }
}

/// `GET /`: the console; within the request budget like every route, since it reads the store.
pub async fn page(
    State(app): State<Arc<Platforms>>,
    axum::Extension(console): axum::Extension<Console>,
    RawQuery(raw): RawQuery,
) -> AxumResponse {
    let deadline = gatehouse::budget::deadline(
        std::time::Instant::now(),
        app.config.request_timeout,
        None,
        std::time::SystemTime::now(),
    );
    let result = gatehouse::budget::within(deadline, async {
        let query = web::Params::parse(raw.as_deref().unwrap_or(""))?;
        render(&app, &console, &query).await
    })
    .await;
    to_axum(gatehouse::routes::answer(web::Format::Html, result))
}

async fn render(
    app: &Platforms,
    console: &Console,
    query: &web::Params,
) -> gatehouse::Result<Response<Body>> {
    let now = now();
    let store = app.store.as_ref();
    let mut body = String::new();
    if let Some((text, ok)) = flash_of(query) {
        body.push_str(&format!(
            "<p id=\"flash\" class=\"flash{}\" role=\"status\">{}</p>",
            if ok { "" } else { " error" },
            web::escape(&text)
        ));
    }
    body.push_str(
        "<p>Every route of template.yaml runs here on the embedded store, against simulated \
         platforms. Every button does one thing and comes back here saying what happened; \
         tokens and secrets are never shown.</p>",
    );
    body.push_str(&actions_html());

    // Connections.
    let mut rows = String::new();
    for (key, c, name) in connections(store).await? {
        let refresh = button(
            "refresh",
            "force a refresh",
            &[("pk", &key.pk), ("sk", &key.sk)],
        );
        let revoke = button("revoke", "revoke", &[("pk", &key.pk), ("sk", &key.sk)]);
        rows.push_str(&format!(
            "<tr class=\"connection\" data-platform=\"{platform}\" data-tenant=\"{tenant}\" data-status=\"{status}\">\
             <td>{title}</td><td><code>{tenant}</code></td><td>{name}</td><td>{end_user}</td>\
             <td class=\"status\">{status}</td><td>{scopes}</td><td>{created}</td><td>{updated}</td>\
             <td>{expires}</td><td>{refreshed}</td><td>{error}</td><td>{refresh} {revoke}</td></tr>",
            platform = web::escape(&c.platform),
            title = platform_title(&c.platform),
            tenant = web::escape(&c.tenant),
            status = c.status.as_str(),
            name = web::escape(&name),
            end_user = web::escape(c.end_user.as_deref().unwrap_or("—")),
            scopes = web::escape(&c.scopes.join(" ")),
            created = when_opt(c.created_at, now),
            updated = when_opt(c.updated_at, now),
            expires = c
                .expires_at
                .map_or_else(|| "does not expire".to_owned(), |t| when(t, now)),
            refreshed = when_opt(c.last_refresh_at, now),
            error = web::escape(c.last_error.as_deref().unwrap_or("—")),
        ));
    }
    body.push_str("<h2 id=\"connections\">Connections</h2>");
    if rows.is_empty() {
        body.push_str("<p>No connections yet: install something above.</p>");
    } else {
        body.push_str(&format!(
            "<table><tr><th>platform</th><th>tenant</th><th>name</th><th>end user</th><th>status</th>\
             <th>scopes</th><th>created</th><th>changed</th><th>access token expires</th>\
             <th>last refresh</th><th>last error</th><th></th></tr>{rows}</table>\
             <p class=\"muted\">Tokens are stored sealed and never shown here.</p>"
        ));
    }

    body.push_str(&sessions_html(app, now).await?);
    body.push_str(&payments_html(app, now).await?);
    body.push_str(&deliveries_html(console, now));
    body.push_str(&events_html(app, now).await?);
    Ok(page_html(
        StatusCode::OK,
        "Gatehouse console (local)",
        &body,
    ))
}

fn actions_html() -> String {
    let a = ACTIONS;
    format!(
        "<h2 id=\"actions\">Actions</h2>\
         <fieldset><legend>Sesami</legend>\
         <form method=\"post\" action=\"{a}/sesami/install\"><label>shop <input name=\"shop\" value=\"demo-shop\"></label> \
         <button id=\"sesami-install\">install</button></form> \
         (a signed launch from the simulated app store, consent, callback, token exchange)<br>\
         <form method=\"post\" action=\"{a}/sesami/webhook\"><label>shop <input name=\"shop\" value=\"demo-shop\"></label> \
         <label>event <select name=\"event\"><option value=\"booking_created\">booking_created</option><option value=\"uninstall_app\">uninstall_app</option></select></label> \
         <button name=\"variant\" value=\"signed\" id=\"sesami-webhook\">send a signed webhook</button> \
         <button name=\"variant\" value=\"twice\" id=\"sesami-webhook-twice\">send it twice</button> \
         <button name=\"variant\" value=\"tampered\" id=\"sesami-webhook-tampered\">send it with a bad signature</button></form>\
         </fieldset>\
         <fieldset><legend>Haravan</legend>\
         {open} (sign in as the admin of a shop not installed yet to install it; once installed, to get a session; \
         as staff to be refused)<br>\
         <form method=\"post\" action=\"{a}/haravan/webhook\"><label>org <input name=\"orgid\" value=\"1000111111\"></label> \
         <label>topic <select name=\"topic\"><option value=\"shop/update\">shop/update</option><option value=\"app/uninstalled\">app/uninstalled</option></select></label> \
         <button name=\"variant\" value=\"signed\" id=\"haravan-webhook\">send a signed webhook</button> \
         <button name=\"variant\" value=\"twice\" id=\"haravan-webhook-twice\">send it twice</button></form>\
         <br><span class=\"muted\">Sign a session out below, under Sessions.</span></fieldset>\
         <fieldset><legend>Saison connect</legend>{saison} (what <code>POST /v1/connect-links</code> does for the app's \
         back end; sign in with any ID and the password <code>password</code>)</fieldset>\
         <fieldset><legend>MTN MoMo</legend>\
         <form method=\"post\" action=\"{a}/momo/pay\"><label>amount <input name=\"amount\" value=\"10\" size=\"8\"></label> \
         <label>currency <input name=\"currency\" value=\"EUR\" size=\"4\"></label> \
         <label>payer <input name=\"payer\" value=\"46733123450\"></label> \
         <button id=\"momo-pay\">request the payment</button></form> \
         (a payer number ending in 1 fails, 2 stays pending; the simulator calls back, then the outcome is confirmed)</fieldset>\
         <fieldset><legend>Administrate WebLink</legend>{weblink_login} (<code>jane@example.com</code> / <code>password</code>) \
         {weblink_refresh} (for this browser's session)</fieldset>\
         <fieldset><legend>Schedules</legend>{health_run} (what the hourly <code>connections-refresh</code> does: \
         refresh connections idle longer than <code>GATEHOUSE_REFRESH_IDLE_DAYS</code>, record their health) \
         {reconcile_run} (what <code>momo-reconcile</code> does every 5 minutes; here it also runs on a timer)</fieldset>\
         <p>Every verified webhook and payment outcome is an event: <a href=\"/_local/events\">the whole outbox</a>.</p>",
        health_run = button_id(
            "schedules/refresh",
            "run the scheduled refresh now",
            "schedules-refresh"
        ),
        reconcile_run = button_id(
            "schedules/reconcile",
            "run the MoMo reconciler now",
            "schedules-reconcile"
        ),
        open = button_id("haravan/open", "open the app", "haravan-open"),
        saison = button_id(
            "saison/connect",
            "connect a card for the app's user demo-user",
            "saison-connect"
        ),
        weblink_login = button_id(
            "weblink/login",
            "sign in to the demo portal",
            "weblink-login"
        ),
        weblink_refresh = button_id(
            "weblink/refresh",
            "get a fresh access token",
            "weblink-refresh"
        ),
    )
}

fn button_id(action: &str, label: &str, id: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{ACTIONS}/{}\"><button id=\"{}\">{}</button></form>",
        web::escape(action),
        web::escape(id),
        web::escape(label)
    )
}

async fn sessions_html(app: &Platforms, now: i64) -> gatehouse::Result<String> {
    let mut rows = String::new();
    for item in of_kind(app.store.as_ref(), "session#haravan").await? {
        let sid = item.str("sid").unwrap_or("");
        let signout = if sid.is_empty() {
            "<span class=\"muted\">no sid: cannot be signed out by Haravan</span>".to_owned()
        } else {
            button("haravan/logout", "sign out", &[("sid", sid)])
        };
        rows.push_str(&format!(
            "<tr class=\"session\" data-platform=\"haravan\" data-sid=\"{sid}\"><td>Haravan</td>\
             <td>{name} (<code>{sub}</code>)</td><td>org <code>{org}</code></td><td><code>{sid}</code></td><td>{expires}</td><td>{signout}</td></tr>",
            sid = web::escape(sid),
            name = web::escape(item.str("name").unwrap_or("")),
            sub = web::escape(item.str("sub").unwrap_or("")),
            org = web::escape(item.str("orgid").unwrap_or("")),
            expires = when_opt(item.expires_at, now),
        ));
    }
    for item in of_kind(app.store.as_ref(), "session#weblink").await? {
        let view = connection::view(&item)?;
        rows.push_str(&format!(
            "<tr class=\"session\" data-platform=\"weblink\"><td>Administrate WebLink</td>\
             <td>{name} ({email})</td><td>portal <code>{portal}</code></td><td>access token until {token}</td><td>{expires}</td><td></td></tr>",
            name = web::escape(item.str("name").unwrap_or("")),
            email = web::escape(item.str("email").unwrap_or("")),
            portal = web::escape(item.str("portal").unwrap_or("")),
            token = when_opt(view.expires_at, now),
            expires = when_opt(item.expires_at, now),
        ));
    }
    Ok(if rows.is_empty() {
        "<h2 id=\"sessions\">Sessions</h2><p>No sessions.</p>".to_owned()
    } else {
        format!(
            "<h2 id=\"sessions\">Sessions</h2><table><tr><th>platform</th><th>who</th><th>where</th>\
             <th>sign-in session</th><th>ends</th><th></th></tr>{rows}</table>"
        )
    })
}

async fn payments_html(app: &Platforms, now: i64) -> gatehouse::Result<String> {
    let mut rows = String::new();
    for tx in of_kind(app.store.as_ref(), "tx#momo").await? {
        let status = tx.str("status").unwrap_or("");
        // MoMo's answer was lost: the reconciler confirms it.
        let unconfirmed =
            status == "PENDING" && matches!(tx.str("submitted"), Some("sending" | "unknown"));
        let reason = match tx.attrs.get("reason") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        rows.push_str(&format!(
            "<tr class=\"payment\" data-reference=\"{reference}\" data-status=\"{status}\"><td><code>{reference}</code></td>\
             <td>{external}</td><td>{amount} {currency}</td><td>{payer}</td><td class=\"status\">{status}{unconfirmed}</td>\
             <td>{reason}</td><td>{created}</td><td>{completed}</td></tr>",
            reference = web::escape(&tx.key.sk),
            external = web::escape(tx.str("external_id").unwrap_or("")),
            amount = web::escape(tx.str("amount").unwrap_or("")),
            currency = web::escape(tx.str("currency").unwrap_or("")),
            payer = web::escape(tx.attrs["payer"]["partyId"].as_str().unwrap_or("")),
            status = web::escape(status),
            unconfirmed = if unconfirmed { " (unconfirmed)" } else { "" },
            reason = web::escape(&reason),
            created = when_opt(tx.attrs.get("created_at").and_then(Value::as_i64), now),
            completed = when_opt(tx.attrs.get("completed_at").and_then(Value::as_i64), now),
        ));
    }
    Ok(if rows.is_empty() {
        "<h2 id=\"payments\">MoMo payments</h2><p>No payments yet.</p>".to_owned()
    } else {
        format!(
            "<h2 id=\"payments\">MoMo payments</h2><p class=\"muted\">As stored now: <a href=\"/#payments\">reload</a> \
             to see the simulator's callback or the reconciler change a status.</p><table><tr><th>reference</th><th>external id</th>\
             <th>amount</th><th>payer</th><th>status</th><th>reason</th><th>requested</th><th>completed</th></tr>{rows}</table>"
        )
    })
}

fn deliveries_html(console: &Console, now: i64) -> String {
    let rows: String = console
        .deliveries
        .latest()
        .iter()
        .map(|d| {
            format!(
                "<tr class=\"delivery\" data-platform=\"{platform}\" data-verdict=\"{verdict}\"><td>{when}</td><td>{title}</td>\
                 <td><code>{what}</code></td><td>{status}</td><td class=\"verdict\">{verdict}</td><td>{detail}</td></tr>",
                platform = web::escape(&d.platform),
                when = when(d.at, now),
                title = platform_title(&d.platform),
                what = web::escape(&d.what),
                status = d.status,
                verdict = d.verdict.as_str(),
                detail = web::escape(&d.detail),
            )
        })
        .collect();
    if rows.is_empty() {
        "<h2 id=\"deliveries\">Webhook deliveries</h2><p>None since the server started.</p>"
            .to_owned()
    } else {
        format!(
            "<h2 id=\"deliveries\">Webhook deliveries</h2><p class=\"muted\">The latest {} since the server \
             started, newest first (kept in memory).</p><table><tr><th>received</th><th>platform</th><th>what</th>\
             <th>answer</th><th>verdict</th><th>why</th></tr>{rows}</table>",
            crate::deliveries::KEPT
        )
    }
}

/// How many of the outbox's events the console shows (the events page shows them all).
const EVENTS_SHOWN: usize = 20;

async fn events_html(app: &Platforms, now: i64) -> gatehouse::Result<String> {
    let all = crate::outbox::events(app.store.as_ref()).await?;
    let rows: String = all
        .iter()
        .rev()
        .take(EVENTS_SHOWN)
        .map(|(event, sent)| {
            format!(
                "<tr class=\"event\" data-name=\"{name}\"><td>{when}</td><td>{source}</td><td>{name}</td>\
                 <td><code>{tenant}</code></td><td>{sent}</td></tr>",
                when = when(event.time, now),
                source = web::escape(&event.source()),
                name = web::escape(&event.name),
                tenant = web::escape(&event.tenant),
                sent = if *sent { "sent" } else { "not sent" },
            )
        })
        .collect();
    Ok(if rows.is_empty() {
        "<h2 id=\"events\">Events</h2><p>No events yet: install something, send a webhook or make a payment.</p>"
            .to_owned()
    } else {
        format!(
            "<h2 id=\"events\">Events</h2><p class=\"muted\">The outbox's latest {shown} of {total}, newest first \
             (<a href=\"/_local/events\">all of them</a>).</p><table><tr><th>time</th><th>source</th>\
             <th>detail-type</th><th>tenant</th><th>relayed</th></tr>{rows}</table>",
            shown = rows.matches("<tr").count(),
            total = all.len(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `POST /_local/console/<action>`: does the one thing and goes back to the console saying what
/// happened (or, for a flow, goes to its first page).
pub async fn action(
    State(app): State<Arc<Platforms>>,
    axum::Extension(console): axum::Extension<Console>,
    Path(action): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> AxumResponse {
    // Another site open in the same browser must not press the console's buttons: browsers
    // name where a form was posted from, and only the console's own pages (or no page) may.
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(site, "same-origin" | "none") {
        return to_axum(page_html(
            StatusCode::FORBIDDEN,
            "Gatehouse console (local)",
            "<p>Refused: the console's actions are taken from the console only.</p>\
             <p id=\"console-back\"><a href=\"/\">Back to the console</a></p>",
        ));
    }
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("").trim();
    let resp = match action.as_str() {
        "sesami/install" => match web::check_id("shop", field("shop")) {
            Ok(shop) => start_flow(&format!("/_sim/sesami/launch?shopId={}", encode(shop))),
            Err(e) => done(&format!("Not started: {e}"), false),
        },
        "haravan/open" => start_flow("/haravan/install/login"),
        "saison/connect" => start_flow("/_local/saison/connect"),
        "weblink/login" => start_flow(&format!("/weblink/login?portal={DEMO_PORTAL}")),
        "sesami/webhook" => {
            sesami_webhook(&console, field("shop"), field("event"), field("variant")).await
        }
        "haravan/webhook" => {
            haravan_webhook(&console, field("orgid"), field("topic"), field("variant")).await
        }
        "haravan/logout" => haravan_logout(&app, &console, field("sid")).await,
        "momo/pay" => momo_pay(&console, field("amount"), field("currency"), field("payer")).await,
        "weblink/refresh" => weblink_refresh(&console, &headers).await,
        "schedules/refresh" => run_health(&app).await,
        "schedules/reconcile" => run_reconciler(&app).await,
        "refresh" => force_refresh(&app, Key::new(field("pk"), field("sk"))).await,
        "revoke" => revoke(&app, Key::new(field("pk"), field("sk"))).await,
        other => done(&format!("There is no console action `{other}`."), false),
    };
    to_axum(resp)
}

/// `GET /_local/console/<action>` (a reload, a typed address): actions are posted, so back to
/// the console, saying so.
pub async fn not_posted() -> AxumResponse {
    to_axum(done(
        "The console's actions are buttons: nothing was done.",
        false,
    ))
}

/// What an answer of a route says of a delivery, for a flash message.
fn verdict_text(status: u16, body: &str) -> String {
    let (verdict, why) = verdict_of(status, body.as_bytes());
    if why.is_empty() {
        format!("{} ({status})", verdict.as_str())
    } else {
        format!("{} ({status}: {why})", verdict.as_str())
    }
}

async fn sesami_webhook(
    console: &Console,
    shop: &str,
    event: &str,
    variant: &str,
) -> Response<Body> {
    if let Err(e) = web::check_id("shop", shop) {
        return done(&format!("Not sent: {e}"), false);
    }
    let event = if event.is_empty() {
        "booking_created"
    } else {
        event
    };
    let mut data = BTreeMap::new();
    data.insert("shopId".to_owned(), Value::from(shop));
    data.insert(
        "timestamp".to_owned(),
        Value::from(gatehouse_simulators::sesami::now_ms().to_string()),
    );
    let mut body = console.sesami.webhook_body(event, data);
    if variant == "tampered" {
        body["hmac"] = Value::from("0".repeat(64));
    }
    let times = if variant == "twice" { 2 } else { 1 };
    let mut verdicts = Vec::new();
    for _ in 0..times {
        let sent = console
            .http
            .post(format!("{}/sesami/webhooks", console.base))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                verdicts.push(verdict_text(status, &text));
            }
            Err(e) => return done(&format!("The Sesami webhook was not delivered: {e}"), false),
        }
    }
    let signed = if variant == "tampered" {
        "a badly signed"
    } else {
        "a signed"
    };
    done(
        &format!(
            "Sent {signed} Sesami webhook {event} for shop {shop}: {}.",
            verdicts.join(", then ")
        ),
        true,
    )
}

async fn haravan_webhook(
    console: &Console,
    orgid: &str,
    topic: &str,
    variant: &str,
) -> Response<Body> {
    if orgid.is_empty() || !orgid.bytes().all(|b| b.is_ascii_digit()) {
        return done("Not sent: the org id is a number.", false);
    }
    let topic = if topic.is_empty() {
        "shop/update"
    } else {
        topic
    };
    if topic == "app/uninstalled" {
        // As Haravan does before it tells the app: the org's tokens stop working.
        console.haravan.uninstall(orgid);
    }
    let body = console.haravan.webhook_body(topic, orgid);
    let times = if variant == "twice" { 2 } else { 1 };
    let mut verdicts = Vec::new();
    for _ in 0..times {
        let (status, text) = console.haravan.send_webhook(topic, orgid, &body).await;
        if status == 0 {
            return done("The Haravan webhook was not delivered.", false);
        }
        verdicts.push(verdict_text(status, &text));
    }
    done(
        &format!(
            "Sent a signed Haravan webhook {topic} for org {orgid}: {}.",
            verdicts.join(", then ")
        ),
        true,
    )
}

async fn haravan_logout(app: &Platforms, console: &Console, sid: &str) -> Response<Body> {
    if web::check_id("sid", sid).is_err() {
        return done(
            "Not signed out: no Haravan sign-in session was named.",
            false,
        );
    }
    let who = match of_kind(app.store.as_ref(), "session#haravan").await {
        Ok(items) => items
            .into_iter()
            .find(|i| i.str("sid") == Some(sid))
            .map(|i| {
                format!(
                    " ({}, org {})",
                    i.str("name").unwrap_or(""),
                    i.str("orgid").unwrap_or("")
                )
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    // What Haravan does when the user signs out there: its front-channel logout names the sid.
    let status = console.haravan.front_channel_logout(sid).await;
    if (200..300).contains(&status) {
        done(
            &format!("Signed out of Haravan session {sid}{who}: its app sessions are ended."),
            true,
        )
    } else {
        done(
            &format!("Haravan's logout of session {sid} was answered {status}."),
            false,
        )
    }
}

async fn momo_pay(console: &Console, amount: &str, currency: &str, payer: &str) -> Response<Body> {
    let external_id = format!(
        "console-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let body = serde_json::json!({
        "amount": amount,
        "currency": currency,
        "externalId": external_id,
        "payer": {"partyIdType": "MSISDN", "partyId": payer},
    });
    let sent = console
        .http
        .post(format!("{}/momo/requesttopay", console.base))
        .json(&body)
        .send()
        .await;
    let (status, answer) = match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or_default();
            (status, answer)
        }
        Err(e) => return done(&format!("The payment was not requested: {e}"), false),
    };
    if (200..300).contains(&status) {
        done(
            &format!(
                "Requested {amount} {currency} from payer {payer}: payment {} is {}{}; the simulator calls back with the outcome.",
                answer["referenceId"].as_str().unwrap_or("?"),
                answer["status"].as_str().unwrap_or("?"),
                match answer["submitted"].as_str() {
                    Some("accepted") => " (MoMo accepted it)",
                    Some("unknown") => " (MoMo's answer was lost: it is being confirmed)",
                    _ => "",
                },
            ),
            true,
        )
    } else {
        done(
            &format!(
                "The payment was refused ({status}): {}",
                answer["message"].as_str().unwrap_or("no reason given")
            ),
            false,
        )
    }
}

/// The browser's WebLink session, its access token refreshed by the route the app's front end
/// calls (`POST /weblink/refresh`, with the browser's cookies); the answer's token is read only
/// to say that there was one, and its expiry.
async fn weblink_refresh(console: &Console, headers: &axum::http::HeaderMap) -> Response<Body> {
    let mut request = console
        .http
        .post(format!("{}/weblink/refresh", console.base));
    if let Some(cookie) = headers.get(header::COOKIE) {
        request = request.header(header::COOKIE, cookie.as_bytes());
    }
    let (status, answer) = match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or_default())
        }
        Err(e) => return done(&format!("No fresh token: {e}"), false),
    };
    let has_token = answer["access_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty());
    if (200..300).contains(&status) && has_token {
        let expiry = answer["expires_at"]
            .as_i64()
            .map_or_else(|| "an unknown time".to_owned(), |t| when(t, now()));
        done(
            &format!(
                "Obtained a fresh WebLink access token for portal {} (token redacted), valid until {expiry}.",
                answer["portal"].as_str().unwrap_or("?"),
            ),
            true,
        )
    } else {
        done(
            &format!(
                "No fresh WebLink access token ({status}): {}",
                answer["message"]
                    .as_str()
                    .unwrap_or("sign in to the demo portal first")
            ),
            false,
        )
    }
}

async fn stored_connection(app: &Platforms, key: &Key) -> Result<(Item, &'static str), String> {
    let Some(platform) = connection::platform_of(key) else {
        return Err("that is not a connection".into());
    };
    match app.store.get(key).await {
        Ok(Some(item)) => Ok((item, platform)),
        Ok(None) => Err(format!(
            "the {} connection {} is no longer stored",
            platform_title(platform),
            key.sk
        )),
        Err(e) => Err(format!("the store did not answer: {e}")),
    }
}

/// A refresh now, whether or not the access token is due: as a platform's 401 would force one.
/// One run of the scheduled connection refresh, as `connections-refresh` makes it, with its
/// counts as the message.
async fn run_health(app: &Platforms) -> Response<Body> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    match gatehouse::health::check(gatehouse::health::Tending::from(app), until).await {
        Ok(c) => done(
            &format!(
                "Scheduled refresh: {} connections seen, {} refreshed, {} now need \
                 re-authorization, {} hold no refresh token, {} failed (tried again next run).",
                c.seen, c.refreshed, c.needs_reauth, c.no_refresh_token, c.failed
            ),
            c.failed == 0,
        ),
        Err(e) => done(&format!("The scheduled refresh failed: {e}."), false),
    }
}

/// One run of the MoMo reconciler, as `momo-reconcile` makes it, with its counts as the
/// message.
async fn run_reconciler(app: &Platforms) -> Response<Body> {
    match gatehouse::momo::reconcile(&app.momo).await {
        Ok(r) => done(
            &format!(
                "MoMo reconciler: {} pending payments seen, {} confirmed with MoMo, {} outcomes \
                 recorded, {} still pending, {} checks failed; {} left for the next run.",
                r.seen, r.checked, r.recorded, r.pending, r.failed, r.left
            ),
            r.failed == 0,
        ),
        Err(e) => done(&format!("The MoMo reconciler run failed: {e}."), false),
    }
}

async fn force_refresh(app: &Platforms, key: Key) -> Response<Body> {
    let (item, platform) = match stored_connection(app, &key).await {
        Ok(found) => found,
        Err(why) => return done(&format!("Not refreshed: {why}."), false),
    };
    let title = platform_title(platform);
    let version = match gatehouse::refresh::version_of(&item) {
        Ok(v) => v,
        Err(e) => return done(&format!("Not refreshed: {e}."), false),
    };
    let result = match platform {
        "sesami" => {
            return done(
                "Sesami's offline tokens do not expire and have no refresh: nothing to refresh.",
                true,
            );
        }
        "haravan" => {
            gatehouse::refresh::fresh_item_replacing(&app.haravan, &key, &app.haravan, &version)
                .await
        }
        "saison" => {
            gatehouse::refresh::fresh_item_replacing(&app.saison, &key, &app.saison, &version).await
        }
        _ => match item.record::<gatehouse::weblink::Session>() {
            Ok(session) => {
                let refresher = gatehouse::weblink::refresher(&app.weblink, &session);
                gatehouse::refresh::fresh_item_replacing(&app.weblink, &key, &refresher, &version)
                    .await
            }
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(fresh) => {
            let renewed = gatehouse::refresh::version_of(&fresh).is_ok_and(|v| v != version);
            let view = connection::view(&fresh).ok();
            let tenant = view.as_ref().map_or(key.sk.as_str(), |v| v.tenant.as_str());
            let until = view
                .as_ref()
                .and_then(|v| v.expires_at)
                .map_or_else(|| "an unknown time".to_owned(), |t| when(t, now()));
            if renewed {
                done(
                    &format!(
                        "Refreshed {title} {tenant}: a new access token, valid until {until}."
                    ),
                    true,
                )
            } else {
                done(
                    &format!(
                        "{title} {tenant} was not refreshed: it has no refresh token; its access token stays valid until {until}."
                    ),
                    false,
                )
            }
        }
        Err(e) => done(&format!("{title} {} was not refreshed: {e}", key.sk), false),
    }
}

/// Removes the connection with its `connection.removed` event, as an uninstall does.
async fn revoke(app: &Platforms, key: Key) -> Response<Body> {
    let (item, platform) = match stored_connection(app, &key).await {
        Ok(found) => found,
        Err(why) => return done(&format!("Not revoked: {why}."), false),
    };
    let title = platform_title(platform);
    let tenant = connection::view(&item).map_or_else(|_| key.sk.clone(), |v| v.tenant);
    let event = match connection::removed_event(app.store.as_ref(), &key).await {
        Ok(e) => e,
        Err(e) => return done(&format!("Not revoked: {e}."), false),
    };
    let mut writes = vec![Write::Delete(key, Condition::Exists)];
    writes.extend(event);
    match app.store.transact(&writes).await {
        Ok(()) => done(
            &format!(
                "Revoked {title} {tenant}: its tokens are deleted and a connection.removed event is in the outbox."
            ),
            true,
        ),
        Err(e) => done(&format!("{title} {tenant} was not revoked: {e}."), false),
    }
}

// ---------------------------------------------------------------------------------------------
// The way back from a flow

/// Whether a request comes from a browser whose flow the console started: its cookie is set and
/// it asks for a page.
pub fn started_here(headers: &HeaderMap) -> bool {
    let marked = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim() == format!("{CONSOLE_COOKIE}=1"));
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    marked && wants_page
}

/// Names whose values are never shown, in a JSON answer passed on to a person.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "key",
        "hmac",
        "signature",
        "code",
        "cookie",
    ]
    .iter()
    .any(|s| name.contains(s))
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_name(k) && !v.is_null() {
                    *v = Value::from("(redacted)");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// What a route answered a console's browser, shown with a way back: a page gets a link back to
/// the console at its top; any other answer (JSON, plain text) becomes a page saying what the
/// route answered, secret-named JSON values redacted. Redirects pass unchanged (the flow goes
/// on), and so do the answer's status and cookies.
pub fn wrap(method: &Method, path: &str, resp: Response<Body>) -> Response<Body> {
    if resp.status().is_redirection() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match body {
        Body::Text(t) => t,
        Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let status = parts.status;
    let note = format!("{method} {path} answered {status}");
    let back = back_with(&format!("Back from {note}."), status.is_success());
    let link = format!(
        "<p id=\"console-back\" style=\"padding:.5em;background:#eef\"><a href=\"{}\">Back to the Gatehouse console</a> \
         <span style=\"color:#666\">({})</span></p>",
        web::escape(&back),
        web::escape(&note)
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if content_type.starts_with("text/html") {
        let page = match text.find("<body>") {
            Some(at) => {
                let at = at + "<body>".len();
                format!("{}{link}{}", &text[..at], &text[at..])
            }
            None => format!("{link}{text}"),
        };
        return Response::from_parts(parts, Body::from(page));
    }
    let shown = match serde_json::from_str::<Value>(&text) {
        Ok(mut json) => {
            redact(&mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default()
        }
        Err(_) => text,
    };
    let body = format!(
        "{link}<p>The route answered <code>{}</code> ({}); what it said, secrets redacted:</p><pre>{}</pre>",
        web::escape(&status.to_string()),
        web::escape(if content_type.is_empty() {
            "no content type"
        } else {
            &content_type
        }),
        web::escape(&shown),
    );
    let page = page_html(status, "Gatehouse (local)", &body);
    let (page_parts, page_body) = page.into_parts();
    for (name, value) in page_parts.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, page_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_date_and_how_long_ago() {
        // 2026-12-01 18:04:00 UTC, per python3's datetime.
        let t = 1_796_148_240;
        assert_eq!(when(t, t + 180), "2026-12-01 18:04 UTC (3 min ago)");
        assert_eq!(when(t, t - 3600), "2026-12-01 18:04 UTC (in 1 h)");
        assert_eq!(when(t, t), "2026-12-01 18:04 UTC (now)");
        assert_eq!(when(0, 86_400 * 3), "1970-01-01 00:00 UTC (3 days ago)");
        assert_eq!(when(951_782_400, 951_782_400), "2000-02-29 00:00 UTC (now)");
    }

    #[test]
    fn a_json_answer_becomes_a_page_without_its_secrets() {
        let answer = web::json(
            StatusCode::OK,
            &serde_json::json!({"access_token": "tok-123", "expires_at": 5, "nested": {"refresh_token": "r"}}),
        );
        let page = wrap(&Method::POST, "/weblink/refresh", answer);
        let Body::Text(text) = page.body() else {
            panic!("a text body")
        };
        assert!(
            page.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            !text.contains("tok-123") && !text.contains("\"r\""),
            "{text}"
        );
        assert!(text.contains("Back to the Gatehouse console"), "{text}");
        assert!(text.contains("expires_at"), "{text}");
    }

    #[test]
    fn a_page_gets_a_link_back_and_a_redirect_passes() {
        let page = web::html_page(StatusCode::OK, "Installed", "<p>done</p>");
        let wrapped = wrap(&Method::GET, "/sesami/callback", page);
        let Body::Text(text) = wrapped.body() else {
            panic!("a text body")
        };
        assert!(text.contains("<body><p id=\"console-back\""), "{text}");
        let redirect = web::redirect("/next").unwrap();
        assert_eq!(
            wrap(&Method::GET, "/x", redirect).status(),
            StatusCode::FOUND
        );
    }

    #[test]
    fn only_a_marked_browser_asking_for_a_page_is_shown_the_way_back() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(!started_here(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; gatehouse_console=1"),
        );
        assert!(started_here(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!started_here(&h));
    }
}
