//! Every route's handler, as its Lambda function runs it, on requests assembled from the
//! parameter, header and cookie names the flows read and from anything else: never a panic, a
//! 500 or a secret in the answer, and an answer other than 2xx or 3xx changes nothing stored.

use crate::harness::fixture;
use arbitrary::{Arbitrary, Unstructured};
use gatehouse::context::RequestInfo;
use gatehouse::routes;
use lambda_http::http::{HeaderName, HeaderValue, Method};
use lambda_http::{Body, Request};
use std::sync::OnceLock;

/// Names the flows read, so that inputs reach past "missing parameter".
const PARAMS: &[&str] = &[
    "shopId",
    "timestamp",
    "hmac",
    "code",
    "state",
    "id_token",
    "hub.verify_token",
    "hub.challenge",
    "sid",
    "portal",
    "member",
    "error",
    "orgid",
    "shop",
    "nonce",
    "session_state",
];
const HEADERS: &[&str] = &[
    "content-type",
    "x-haravan-hmacsha256",
    "x-haravan-topic",
    "x-haravan-org-id",
    "idempotency-key",
    "authorization",
    "origin",
    "x-reference-id",
    "host",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "text/plain",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Other(String),
}

impl Name {
    fn resolve<'a>(&'a self, known: &'a [&'a str]) -> &'a str {
        match self {
            Name::Known(i) => known[usize::from(*i) % known.len()],
            Name::Other(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    route: u8,
    /// Another method than the route's.
    method: Option<u8>,
    /// For a path parameter.
    segment: String,
    query: Vec<(Name, String)>,
    raw_query: Option<String>,
    headers: Vec<(Name, Vec<u8>)>,
    content_type: Option<u8>,
    cookies: Vec<(String, String)>,
    body: Vec<u8>,
    form_body: Option<Vec<(Name, String)>>,
    domain: bool,
}

fn all() -> &'static [routes::Route] {
    static ROUTES: OnceLock<Vec<routes::Route>> = OnceLock::new();
    ROUTES.get_or_init(routes::all)
}

fn encode(pairs: &[(Name, String)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        out.append_pair(name.resolve(PARAMS), value);
    }
    out.finish()
}

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let routes = all();
    let route = &routes[usize::from(input.route) % routes.len()];
    let path = route.path.replace(
        "{referenceId}",
        &url::form_urlencoded::byte_serialize(input.segment.as_bytes()).collect::<String>(),
    );
    let query = input
        .raw_query
        .clone()
        .unwrap_or_else(|| encode(&input.query));
    let Ok(uri) = format!("{path}?{query}").parse::<lambda_http::http::Uri>() else {
        return;
    };
    let body = match &input.form_body {
        Some(pairs) => encode(pairs).into_bytes(),
        None => input.body.clone(),
    };
    let mut req = Request::new(if body.is_empty() {
        Body::Empty
    } else {
        Body::Binary(body)
    });
    *req.method_mut() = match input.method {
        Some(m) => {
            [Method::GET, Method::POST, Method::PUT, Method::DELETE][usize::from(m) % 4].clone()
        }
        None => route.method.clone(),
    };
    *req.uri_mut() = uri;
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.resolve(HEADERS).as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            req.headers_mut().append(name, value);
        }
    }
    if let Some(ct) = input.content_type {
        let ct = CONTENT_TYPES[usize::from(ct) % CONTENT_TYPES.len()];
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static(ct));
    }
    let cookie = input
        .cookies
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        req.headers_mut().append("cookie", value);
    }
    req.extensions_mut().insert(RequestInfo {
        domain_name: input.domain.then(|| "gatehouse.example.com".to_owned()),
        request_id: Some("fuzz".into()),
        ..Default::default()
    });

    let outcome = fixture().call(req, route.function);
    if !(200..400).contains(&outcome.status) {
        assert!(
            outcome.changed.is_empty(),
            "{} answered {} but changed {:?}: {}",
            route.function_name(),
            outcome.status,
            outcome.changed,
            outcome.text
        );
    }
}
