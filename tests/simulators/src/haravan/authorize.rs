//! The sign-in: `GET /connect/authorize` checks the request and shows the users, `POST /login`
//! answers the app by `form_post` (code, id_token, session_state).

use super::{CODE_LIFETIME, CodeGrant, HaravanSim, PLAIN_SCOPES, SITE, Session, SimUser};
use crate::kit::{self, Params, escape, lock, now, random_hex};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl HaravanSim {
    /// Parses an HTML page as a browser would before submitting its first form: the form's
    /// `action` and the `name`/`value` of each `<input>` in it, entities decoded. Buttons are
    /// left out (add the one clicked). See [`kit::parse_form`].
    pub fn parse_form_post(html: &str) -> (String, Vec<(String, String)>) {
        kit::parse_form(html)
    }

    /// Checks an authorize request (query of `/connect/authorize`, or the same fields posted to
    /// `/login`). Errors are an OAuth error code and a description.
    pub(super) fn check_authorize(
        &self,
        p: &Params,
    ) -> Result<AuthRequest, (&'static str, String)> {
        let required = |name: &str| {
            p.get(name)
                .map(str::to_owned)
                .ok_or(("invalid_request", format!("{name} is required")))
        };
        let client_id = required("client_id")?;
        if client_id != self.inner.client_id {
            return Err((
                "unauthorized_client",
                format!("unknown client_id {client_id}"),
            ));
        }
        let redirect_uri = required("redirect_uri")?;
        let registered = self.redirect_uris();
        if !registered.contains(&redirect_uri) {
            return Err((
                "invalid_request",
                format!(
                    "redirect_uri {redirect_uri} is not registered for this app (registered: {})",
                    registered.join(", ")
                ),
            ));
        }
        let response_type = required("response_type")?;
        let mut types: Vec<&str> = response_type.split(' ').collect();
        types.sort_unstable();
        if types != ["code", "id_token"] {
            return Err((
                "unsupported_response_type",
                format!("response_type must be \"code id_token\", not \"{response_type}\""),
            ));
        }
        let response_mode = required("response_mode")?;
        if response_mode != "form_post" {
            return Err((
                "invalid_request",
                format!("response_mode must be form_post, not {response_mode}"),
            ));
        }
        let scope = required("scope")?;
        check_scope(&scope)?;
        let nonce = required("nonce")?;
        Ok(AuthRequest {
            client_id,
            redirect_uri,
            response_type,
            scope,
            nonce,
            state: p.get("state").map(str::to_owned),
            orgid: p.get("orgid").map(str::to_owned),
        })
    }

    /// `sub`'s sign-in session, started now if there is none.
    pub(super) fn session_for(&self, sub: &str) -> Session {
        lock(&self.inner.grants)
            .sessions
            .entry(sub.to_owned())
            .or_insert_with(|| Session {
                sid: random_hex(16),
                auth_time: now(),
            })
            .clone()
    }
}

/// An authorize request that passed the checks.
pub(super) struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    scope: String,
    nonce: String,
    state: Option<String>,
    orgid: Option<String>,
}

impl AuthRequest {
    /// The request again, as the sign-in form's hidden fields.
    pub(super) fn fields(&self) -> Vec<(&'static str, &str)> {
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", &self.redirect_uri),
            ("response_type", &self.response_type),
            ("response_mode", "form_post"),
            ("scope", &self.scope),
            ("nonce", &self.nonce),
        ];
        if let Some(state) = &self.state {
            fields.push(("state", state));
        }
        if let Some(orgid) = &self.orgid {
            fields.push(("orgid", orgid));
        }
        fields
    }
}

/// Haravan's scopes: the plain ones, `com.read_x`/`com.write_x` and `web.read_x`/`web.write_x`,
/// a write only with its read; `openid` always.
pub(super) fn check_scope(scope: &str) -> Result<(), (&'static str, String)> {
    let scopes: Vec<&str> = scope.split(' ').collect();
    let bad = |why: String| Err(("invalid_scope", why));
    if !scopes.contains(&"openid") {
        return bad(format!(
            "scope must contain openid (scopes are space-separated): {scope}"
        ));
    }
    for s in &scopes {
        if PLAIN_SCOPES.contains(s) {
            continue;
        }
        let Some((prefix, name)) = s.split_once('.') else {
            return bad(format!("unknown scope \"{s}\""));
        };
        let (access, what) = name.split_once('_').unwrap_or(("", ""));
        if !matches!(prefix, "com" | "web")
            || !matches!(access, "read" | "write")
            || what.is_empty()
        {
            return bad(format!("unknown scope \"{s}\""));
        }
        if access == "write" && !scopes.contains(&format!("{prefix}.read_{what}").as_str()) {
            return bad(format!("{s} needs {prefix}.read_{what} too"));
        }
    }
    Ok(())
}

pub(super) fn error_page(error: &str, description: &str) -> Response {
    SITE.page(
        StatusCode::BAD_REQUEST,
        "Haravan — error",
        &format!(
            "<p>Sorry, there was an error: <code>{}</code></p><p>{}</p>",
            escape(error),
            escape(description)
        ),
    )
}

/// The `form_post` response mode: a page whose form POSTs `fields` to `action` on load.
pub(super) fn form_post(action: &str, fields: &[(&str, &str)]) -> Response {
    let inputs = kit::hidden_inputs(fields);
    let mut resp = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Submit this form</title></head>\
         <body onload=\"document.forms[0].submit()\">\
         <form method=\"post\" action=\"{}\">{inputs}\
         <noscript><p>Script is disabled. Click Continue.</p></noscript>\
         <button type=\"submit\">Continue</button></form></body></html>",
        escape(action)
    ))
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) async fn authorize(State(sim): State<HaravanSim>, RawQuery(raw): RawQuery) -> Response {
    let params = match Params::parse(raw.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    let req = match sim.check_authorize(&params) {
        Ok(req) => req,
        Err((error, why)) => return error_page(error, &why),
    };
    let users: Vec<SimUser> = sim
        .users()
        .into_iter()
        .filter(|u| req.orgid.as_ref().is_none_or(|org| &u.orgid == org))
        .collect();
    let hidden = kit::hidden_inputs(&req.fields());
    let buttons: String = users
        .iter()
        .map(|u| {
            format!(
                "<li><button name=\"sub\" value=\"{sub}\">{name}</button> — {email}, shop \
                 <strong>{orgname}</strong> (<code>{orgid}</code>), role <code>{role}</code></li>",
                sub = escape(&u.sub),
                name = escape(&u.name),
                email = escape(&u.email),
                orgname = escape(&u.orgname),
                orgid = escape(&u.orgid),
                role = escape(&u.role.to_string()),
            )
        })
        .collect();
    let purpose = if req.scope.split(' ').any(|s| s == "grant_service") {
        "install"
    } else {
        "sign in to"
    };
    let who = if users.is_empty() {
        "<p>No user belongs to this org.</p>".to_owned()
    } else {
        format!("<p>Sign in as:</p><ul>{buttons}</ul>")
    };
    SITE.page(
        StatusCode::OK,
        "Haravan — sign in",
        &format!(
            "<p>The app <code>{client}</code> asks to {purpose} your shop{org} with the scopes \
             <strong>{scope}</strong>.</p>\
             <form method=\"post\" action=\"{action}\">{hidden}{who}\
             <p><button name=\"cancel\" value=\"1\">Cancel</button></p></form>",
            client = escape(&req.client_id),
            org = req
                .orgid
                .as_ref()
                .map(|o| format!(" <code>{}</code>", escape(o)))
                .unwrap_or_default(),
            scope = escape(&req.scope),
            action = escape(&format!("{}/login", sim.inner.own_base)),
        ),
    )
}

pub(super) async fn login(State(sim): State<HaravanSim>, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(why) => return error_page("invalid_request", &why),
    };
    let req = match sim.check_authorize(&params) {
        Ok(req) => req,
        Err((error, why)) => return error_page(error, &why),
    };
    let state = req.state.as_deref();
    if params.get("cancel").is_some() {
        let mut fields = vec![("error", "access_denied")];
        fields.extend(state.map(|s| ("state", s)));
        return form_post(&req.redirect_uri, &fields);
    }
    let Some(user) = params.get("sub").and_then(|sub| sim.user(sub)) else {
        return error_page("invalid_request", "choose a user (sub) to sign in as");
    };
    if let Some(orgid) = req.orgid.as_ref().filter(|o| **o != user.orgid) {
        return error_page(
            "invalid_request",
            &format!("{} does not belong to org {orgid}", user.name),
        );
    }
    let session = sim.session_for(&user.sub);
    let code = random_hex(32);
    let id_token = sim.id_token(&user, &session, Some(&req.nonce), ("c_hash", &code));
    let session_state = session_state(&req.client_id, &req.redirect_uri, &session.sid);
    lock(&sim.inner.grants).codes.insert(
        code.clone(),
        CodeGrant {
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scope.clone(),
            nonce: req.nonce.clone(),
            user,
            session,
            expires_at: now() + CODE_LIFETIME,
            used: false,
        },
    );
    let mut fields = vec![
        ("code", code.as_str()),
        ("id_token", &id_token),
        ("scope", &req.scope),
        ("session_state", &session_state),
    ];
    fields.extend(state.map(|s| ("state", s)));
    form_post(&req.redirect_uri, &fields)
}

/// OIDC Session Management's `session_state`: a salted hash of client, origin and session.
pub(super) fn session_state(client_id: &str, redirect_uri: &str, sid: &str) -> String {
    let origin = url::Url::parse(redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let salt = random_hex(16);
    let hash = kit::sha256(format!("{client_id} {origin} {sid} {salt}").as_bytes());
    format!("{}.{salt}", URL_SAFE_NO_PAD.encode(hash))
}
