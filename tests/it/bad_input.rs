//! Bad input, route by route: one table-driven test over every route of the route table, through
//! the local server over HTTP and through the Lambda adapter (a hand-built API Gateway HTTP API
//! event, for what HTTP cannot carry). Every case must be refused with a 4xx (never a 5xx, never
//! a panic, which would show as a broken connection or a 500), must leave the store exactly as it
//! was (every row of the embedded store is compared), and must not show any secret in its body or
//! headers.
//!
//! Each route has a *baseline*: a request shaped as the route expects, refused for one known
//! reason (a wrong signature, no state cookie, a portal or member the app does not serve). The
//! cases are the baseline with one thing made wrong: a parameter missing, duplicated, oversized
//! or not UTF-8; the body too large, of the wrong type, not UTF-8 or not base64; a method the
//! route does not serve; huge headers; garbage cookies. A route added to the table without a
//! baseline here fails the test. `BAD_INPUT_TRACE=1` prints every case with its answer.

use crate::harness::{Harness, StoredRow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::routes::{self, Route};
use gatehouse::web::Format;
use lambda_http::http::Method;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Where a case is sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Both,
    Http,
    Lambda,
}

/// The body of a case.
#[derive(Clone)]
enum Payload {
    None,
    Bytes(Vec<u8>),
    /// Lambda only: the event's `body` and `isBase64Encoded` exactly as given.
    Event {
        body: String,
        base64: bool,
    },
}

#[derive(Clone)]
struct Case {
    name: String,
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    cookies: Vec<String>,
    payload: Payload,
    via: Via,
    /// The status the app must answer, when the case has one (otherwise any 4xx).
    status: Option<u16>,
    /// Statuses the HTTP layer may answer before the app sees the request (413, 414, 431).
    http_layer: &'static [u16],
    /// Text the app's message must contain, when the refusal is specific.
    message: Option<&'static str>,
}

/// A route's parameters: in the query, a form body, or a JSON body.
#[derive(Clone)]
enum Input {
    None,
    Query(Vec<(String, String)>),
    Form(Vec<(String, String)>),
    Json(Map<String, Value>),
}

/// A route's baseline request and what it answers.
struct Spec {
    input: Input,
    /// Parameters, body fields or headers without which the route refuses the request.
    required: &'static [&'static str],
    headers: Vec<(&'static str, String)>,
    /// The baseline's status.
    status: u16,
    /// Whether the route refuses a body of another media type (415).
    checks_content_type: bool,
    /// Fields or headers whose value the route takes as it comes (an oversized one is not
    /// refused).
    free_form: &'static [&'static str],
    /// Queries of their own (not the baseline changed) and the status each is refused with.
    extra: Vec<(&'static str, String, u16)>,
    /// Query parameters that are ids, refused (400) unless of the id characters.
    ids: &'static [&'static str],
}

/// Ids that must be refused: a path, a Cyrillic lookalike (`о`), CR/LF, NUL, a space.
const BAD_IDS: [&str; 5] = ["../../x", "sh\u{43e}p-1", "a\r\nb", "a\0b", "a b"];

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";
const KB: usize = 1024;
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];
/// Every cookie the app reads, under its local name and its `__Host-` name.
const COOKIE_NAMES: [&str; 6] = [
    "gh-sesami-state",
    "gh-haravan-state",
    "gh-haravan-session",
    "gh-saison-state",
    "gh-weblink-state",
    "gh-weblink-session",
];

fn encode(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// One name or value, form-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The baseline of `route`, or `None` for a route this test does not know yet.
async fn spec(h: &Harness, route: &Route) -> Option<Spec> {
    let query = |list: &[(&str, &str)]| Input::Query(pairs(list));
    let object = |v: Value| match v {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    };
    let s = |input, required, status| Spec {
        input,
        required,
        headers: Vec::new(),
        status,
        checks_content_type: false,
        free_form: &[],
        extra: Vec::new(),
        ids: &[],
    };
    Some(match (route.method.as_str(), route.path) {
        // A wrong hmac.
        ("GET", "/sesami/install") => Spec {
            ids: &["shopId"],
            ..s(
                query(&[
                    ("shopId", "bad-input-shop"),
                    (
                        "timestamp",
                        &gatehouse_simulators::sesami::now_ms().to_string(),
                    ),
                    ("hmac", &"00".repeat(32)),
                ]),
                &["shopId", "timestamp", "hmac"],
                401,
            )
        },
        // Signed by Sesami, but from a browser that did not start the install (no state cookie).
        ("GET", "/sesami/callback") => {
            let signed = h
                .server
                .sesami
                .signed_query(&[("code", "bad-input-code"), ("shopId", "bad-input-shop")]);
            let pairs = url::form_urlencoded::parse(signed.as_bytes())
                .into_owned()
                .collect();
            Spec {
                ids: &["shopId"],
                ..s(
                    Input::Query(pairs),
                    &["code", "shopId", "timestamp", "hmac"],
                    400,
                )
            }
        }
        // A signed uninstall that names no shop: refused after the signature is checked and
        // before anything is written. (An uninstall of a shop that is not installed is done
        // already, and answered 200.)
        ("POST", "/sesami/webhooks") => {
            let data: BTreeMap<String, Value> = BTreeMap::from([("shopId".to_string(), json!(""))]);
            Spec {
                checks_content_type: true,
                // Sesami signs `data` only; a delivery of an event the app does not handle
                // (whatever its name) is acknowledged, as the protocol asks.
                free_form: &["event"],
                ..s(
                    Input::Json(object(h.server.sesami.webhook_body("uninstall_app", data))),
                    &["event", "data", "hmac"],
                    400,
                )
            }
        }
        // The only parameter is optional; given twice, it is refused.
        ("GET", "/haravan/install/login") => Spec {
            extra: vec![
                (
                    "an orgid of 4 KB",
                    format!("orgid={}", "1".repeat(4 * KB)),
                    400,
                ),
                ("an orgid that is not UTF-8", "orgid=%FF".into(), 400),
                ("an orgid that is a path", "orgid=..%2F..%2Fx".into(), 400),
                ("an orgid with CR/LF", "orgid=1%0D%0A2".into(), 400),
                ("an orgid with NUL", "orgid=1%002".into(), 400),
                ("an orgid with a lookalike", "orgid=1%D0%BE2".into(), 400),
            ],
            ..s(
                query(&[("orgid", "1000111111"), ("orgid", "1000222222")]),
                &[],
                400,
            )
        },
        // A form_post from a browser without the state cookie.
        ("POST", "/haravan/install/login" | "/haravan/install/grandservice") => Spec {
            checks_content_type: true,
            ..s(
                Input::Form(pairs(&[
                    ("state", "bad-input-state"),
                    ("code", "bad-input-code"),
                    ("id_token", "e30.e30.c2ln"),
                ])),
                &["state", "code", "id_token"],
                400,
            )
        },
        // The wrong verify token.
        ("GET", "/haravan/webhooks") => s(
            query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", "not-the-verify-token"),
                ("hub.challenge", "12345"),
            ]),
            &["hub.verify_token", "hub.challenge"],
            401,
        ),
        // A signed shop/update for an org that is not installed: refused, and nothing is written
        // (the mark commits only with its effect). (An app/uninstalled for such an org is done
        // already, and answered 200.)
        ("POST", "/haravan/webhooks") => {
            let body = json!({"id": 1_000_999_999u64, "org_id": "1000999999", "name": "Bad input"});
            let creds = h.server.app.secrets.credentials("haravan").await.unwrap();
            let signature = gatehouse_simulators::haravan::webhook_signature(
                secrecy::ExposeSecret::expose_secret(&creds.client_secret),
                body.to_string().as_bytes(),
            );
            Spec {
                // Deliveries of topics the app does not handle are acknowledged, as Haravan asks.
                free_form: &["x-haravan-topic"],
                headers: vec![
                    ("content-type", JSON.into()),
                    ("x-haravan-hmacsha256", signature),
                    ("x-haravan-topic", "shop/update".into()),
                    ("x-haravan-org-id", "1000999999".into()),
                ],
                ..s(
                    Input::Json(object(body)),
                    &["x-haravan-hmacsha256", "x-haravan-topic"],
                    404,
                )
            }
        }
        // An empty sid.
        ("GET", "/haravan/logout") => Spec {
            extra: vec![
                ("a sid that is a path", "sid=..%2F..%2Fx".into(), 400),
                ("a sid with CR/LF", "sid=a%0D%0Ab".into(), 400),
                ("a sid with NUL", "sid=a%00b".into(), 400),
                ("a sid with a lookalike", "sid=a%D0%BEb".into(), 400),
            ],
            ..s(query(&[("sid", "")]), &["sid"], 400)
        },
        // A connect link that was never issued (or was used already). Without one, the
        // anonymous start is off (403).
        ("GET", "/saison/authorize") => Spec {
            ids: &["link"],
            extra: vec![
                ("an anonymous start", "member=demo".into(), 403),
                ("no link at all", String::new(), 403),
                (
                    "a link and a member",
                    "link=bad-input-link&member=demo".into(),
                    400,
                ),
            ],
            ..s(query(&[("link", "bad-input-link")]), &[], 409)
        },
        // A return_to on an origin that is not allowed.
        ("POST", "/v1/connect-links") => Spec {
            checks_content_type: true,
            ..s(
                Input::Json(object(json!({
                    "platform": "saison",
                    "end_user": "bad-input-user",
                    "return_to": "https://not-allowed.example.com/",
                }))),
                &["platform", "end_user", "return_to"],
                400,
            )
        },
        // A cursor the listing never gave.
        ("GET", "/v1/connections") => Spec {
            ids: &["end_user"],
            extra: vec![("a platform that is not one", "platform=nope".into(), 400)],
            ..s(
                query(&[
                    ("platform", "haravan"),
                    ("end_user", "bad-input-user"),
                    ("cursor", "not-a-cursor"),
                ]),
                &["platform"],
                400,
            )
        },
        // A Saison connection nobody made.
        (
            "GET" | "POST",
            "/v1/connections/saison/{tenant}" | "/v1/connections/saison/{tenant}/token",
        ) => Spec {
            ids: &["end_user"],
            ..s(query(&[("end_user", "bad-input-user")]), &["end_user"], 404)
        },
        // A tenant nobody installed (a product the app does not use).
        (
            "GET" | "POST",
            "/v1/connections/sesami/{tenant}"
            | "/v1/connections/sesami/{tenant}/token"
            | "/v1/connections/haravan/{tenant}"
            | "/v1/connections/haravan/{tenant}/token"
            | "/v1/connections/momo/{tenant}"
            | "/v1/connections/momo/{tenant}/token"
            | "/v1/connections/weblink/{tenant}"
            | "/v1/connections/weblink/{tenant}/token",
        ) => s(Input::None, &[], 404),
        // An event that is not in the outbox (each path parameter a fresh uuid: no such
        // platform, so no store read).
        ("GET", "/v1/events/{platform}/{id}") => s(Input::None, &[], 404),
        // No state cookie.
        ("GET", "/saison/callback") => s(query(&[("code", "bad-input-code")]), &["code"], 400),
        // A zero amount.
        ("POST", "/momo/requesttopay") => Spec {
            checks_content_type: true,
            ..s(
                Input::Json(object(json!({
                    "amount": "0",
                    "currency": "EUR",
                    "externalId": "bad-input-1",
                    "payer": {"partyIdType": "MSISDN", "partyId": "46733123450"},
                }))),
                &["amount", "currency", "externalId", "payer"],
                400,
            )
        },
        // A reference that names no payment.
        ("PUT" | "POST", "/momo/callback/{referenceId}") => s(
            Input::Json(object(json!({"status": "SUCCESSFUL"}))),
            &[],
            404,
        ),
        // A portal the app does not serve.
        ("POST", "/weblink/guest-token") => Spec {
            checks_content_type: true,
            ..s(
                Input::Json(object(json!({"portal": "not-served.example.com"}))),
                &["portal"],
                403,
            )
        },
        ("GET", "/weblink/login") => s(
            query(&[("portal", "not-served.example.com")]),
            &["portal"],
            403,
        ),
        // No state cookie.
        ("GET", "/weblink/callback") => s(
            query(&[("code", "bad-input-code"), ("state", "bad-input-state")]),
            &["code", "state"],
            400,
        ),
        // No session cookie.
        ("POST", "/weblink/refresh") => s(Input::None, &[], 401),
        // The proxy, for a tenant with no connection (the path's tenant and platform path are
        // fresh uuids). The query is the platform's and forwarded as it is, except Saison's,
        // which names the app's user and is signed.
        (
            "ANY",
            "/v1/proxy/sesami/{tenant}/{proxy+}"
            | "/v1/proxy/haravan/{tenant}/{proxy+}"
            | "/v1/proxy/momo/{tenant}/{proxy+}"
            | "/v1/proxy/weblink/{tenant}/{proxy+}",
        ) => s(Input::None, &[], 404),
        ("ANY", "/v1/proxy/saison/{tenant}/{proxy+}") => Spec {
            ids: &["end_user"],
            ..s(query(&[("end_user", "bad-input-user")]), &["end_user"], 404)
        },
        _ => return None,
    })
}

/// A path for `pattern`, each `{parameter}` a fresh uuid (what a real reference looks like).
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                uuid::Uuid::new_v4().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The cases of one route.
fn cases(route: &Route, spec: &Spec) -> Vec<Case> {
    let path = concrete(route.path);
    let (query, content_type, body): (String, Option<&str>, Option<Vec<u8>>) = match &spec.input {
        Input::None => (String::new(), None, None),
        Input::Query(pairs) => (encode(pairs), None, None),
        Input::Form(pairs) => (String::new(), Some(FORM), Some(encode(pairs).into_bytes())),
        Input::Json(map) => (
            String::new(),
            Some(JSON),
            Some(serde_json::to_vec(map).expect("JSON")),
        ),
    };
    let mut headers: Vec<(String, Vec<u8>)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    if let Some(ct) = content_type
        && !headers.iter().any(|(k, _)| k == "content-type")
    {
        headers.push(("content-type".into(), ct.as_bytes().to_vec()));
    }
    // A route of every method (`ANY`) is tried with GET.
    let method = if route.method == routes::any_method() {
        Method::GET
    } else {
        route.method.clone()
    };
    let base = Case {
        name: "the baseline".into(),
        method,
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        cookies: Vec::new(),
        payload: body.clone().map_or(Payload::None, Payload::Bytes),
        via: Via::Both,
        status: Some(spec.status),
        http_layer: &[],
        message: None,
    };
    let is_query = matches!(spec.input, Input::Query(_));
    let is_form = matches!(spec.input, Input::Form(_));
    // Whether the baseline's parameters parse (Haravan login's baseline repeats one, which is
    // then the first thing refused).
    let parses = match &spec.input {
        Input::Query(pairs) | Input::Form(pairs) => {
            let names: std::collections::BTreeSet<_> = pairs.iter().map(|(k, _)| k).collect();
            names.len() == pairs.len()
        }
        _ => true,
    };
    let mut out = vec![base.clone()];
    let mut add = |name: String, change: &dyn Fn(&mut Case)| {
        let mut case = base.clone();
        case.name = name;
        case.status = None;
        change(&mut case);
        out.push(case);
    };
    let with_query = |q: String| move |c: &mut Case| c.query = q.clone();
    let with_body = |b: Vec<u8>| move |c: &mut Case| c.payload = Payload::Bytes(b.clone());
    let set_type = |t: Option<&'static str>| {
        move |c: &mut Case| {
            c.headers.retain(|(k, _)| k != "content-type");
            if let Some(t) = t {
                c.headers
                    .push(("content-type".into(), t.as_bytes().to_vec()));
            }
        }
    };

    // --- missing parameters --------------------------------------------------------------
    for name in spec.required {
        let name = *name;
        match &spec.input {
            Input::Query(pairs) if pairs.iter().any(|(k, _)| *k == name) => {
                let rest: Vec<_> = pairs.iter().filter(|(k, _)| *k != name).cloned().collect();
                add(format!("without `{name}`"), &with_query(encode(&rest)));
            }
            Input::Form(pairs) if pairs.iter().any(|(k, _)| *k == name) => {
                let rest: Vec<_> = pairs.iter().filter(|(k, _)| *k != name).cloned().collect();
                add(
                    format!("without `{name}`"),
                    &with_body(encode(&rest).into_bytes()),
                );
            }
            Input::Json(map) if map.contains_key(name) => {
                let mut rest = map.clone();
                rest.remove(name);
                add(
                    format!("without `{name}`"),
                    &with_body(serde_json::to_vec(&rest).unwrap()),
                );
            }
            _ => {
                assert!(
                    spec.headers.iter().any(|(k, _)| *k == name),
                    "{} {}: required `{name}` is neither a parameter nor a header of the baseline",
                    route.method,
                    route.path
                );
                add(format!("without the {name} header"), &|c: &mut Case| {
                    c.headers.retain(|(k, _)| k != name)
                });
            }
        }
    }
    if !spec.required.is_empty() || matches!(spec.input, Input::Form(_) | Input::Json(_)) {
        add("with no parameters and no body".into(), &|c: &mut Case| {
            c.query.clear();
            c.payload = Payload::None;
            c.headers.retain(|(k, _)| k != "content-type");
        });
    }

    // --- duplicated parameters -----------------------------------------------------------
    match &spec.input {
        Input::Query(pairs) | Input::Form(pairs) => {
            for (i, (name, value)) in pairs.iter().enumerate() {
                for (label, second) in [
                    ("twice", value.clone()),
                    ("twice, differently", "other".to_string()),
                ] {
                    let mut dup = pairs.clone();
                    dup.insert(i + 1, (name.clone(), second));
                    let text = encode(&dup);
                    let change: Box<dyn Fn(&mut Case)> = if is_query {
                        Box::new(with_query(text))
                    } else {
                        Box::new(with_body(text.into_bytes()))
                    };
                    add(format!("`{name}` {label}"), &|c: &mut Case| {
                        change(c);
                        c.status = Some(400);
                        c.message = Some("more than once");
                    });
                }
            }
        }
        Input::Json(map) => {
            // JSON text with a key given twice (a map cannot hold it, so it is written by hand).
            for (name, value) in map {
                let mut text = serde_json::to_string(map).unwrap();
                text.pop();
                text.push_str(&format!(",{}:{}}}", json!(name), value));
                // Refused as such (400), except where a signature over the bytes is checked
                // first (Haravan's webhooks: the changed body no longer verifies, 401).
                let signed_bytes = spec
                    .headers
                    .iter()
                    .any(|(k, _)| *k == "x-haravan-hmacsha256");
                add(format!("`{name}` twice in the JSON"), &|c: &mut Case| {
                    c.payload = Payload::Bytes(text.clone().into_bytes());
                    if !signed_bytes {
                        c.status = Some(400);
                        c.message = Some("more than once");
                    }
                });
            }
        }
        Input::None => {}
    }
    add("a query parameter given twice".into(), &|c: &mut Case| {
        let extra = "dup=1&dup=2";
        c.query = if c.query.is_empty() {
            extra.into()
        } else {
            format!("{}&{extra}", c.query)
        };
        if is_query {
            c.status = Some(400);
            c.message = Some("more than once");
        }
    });

    // --- oversized ----------------------------------------------------------------------
    add("a 100 KB query value".into(), &|c: &mut Case| {
        let big = format!("big={}", "a".repeat(100 * KB));
        c.query = if c.query.is_empty() {
            big
        } else {
            format!("{}&{big}", c.query)
        };
        c.http_layer = &[414, 431];
    });
    if is_query {
        add("a 9 KB query".into(), &|c: &mut Case| {
            c.query = format!("{}&big={}", c.query, "a".repeat(9 * KB));
            c.status = Some(400);
            c.message = Some("longer than");
        });
    }
    match &spec.input {
        Input::Query(pairs) | Input::Form(pairs) => {
            for (i, (name, _)) in pairs.iter().enumerate() {
                for size in [4 * KB, 100 * KB] {
                    if is_query && size > 8 * KB {
                        continue; // the whole query's limit is covered above
                    }
                    let mut long = pairs.clone();
                    long[i].1 = "x".repeat(size);
                    let text = encode(&long);
                    let change: Box<dyn Fn(&mut Case)> = if is_query {
                        Box::new(with_query(text))
                    } else {
                        Box::new(with_body(text.into_bytes()))
                    };
                    add(format!("`{name}` of {} KB", size / KB), &*change);
                }
            }
        }
        Input::Json(map) => {
            for name in map.keys().filter(|k| !spec.free_form.contains(&k.as_str())) {
                for size in [4 * KB, 100 * KB] {
                    let mut long = map.clone();
                    long.insert(name.clone(), json!("x".repeat(size)));
                    add(
                        format!("`{name}` of {} KB", size / KB),
                        &with_body(serde_json::to_vec(&long).unwrap()),
                    );
                }
            }
        }
        Input::None => {}
    }
    for (name, _) in &spec.headers {
        if *name == "content-type" || spec.free_form.contains(name) {
            continue;
        }
        add(format!("a {name} header of 4 KB"), &|c: &mut Case| {
            for (k, v) in c.headers.iter_mut() {
                if k == name {
                    *v = "1".repeat(4 * KB).into_bytes();
                }
            }
        });
    }
    add("a 2 MB body".into(), &|c: &mut Case| {
        let filler = "a".repeat(2 * KB * KB);
        let body = match content_type {
            Some(JSON) => format!("{{\"filler\":\"{filler}\"}}"),
            Some(_) => format!("filler={filler}"),
            None => filler,
        };
        c.payload = Payload::Bytes(body.into_bytes());
        if content_type.is_none() {
            set_type(Some("text/plain"))(c);
        }
        c.http_layer = &[413];
    });

    // --- content types ------------------------------------------------------------------
    let wrong_types: [Option<&'static str>; 6] = [
        None,
        Some("text/plain"),
        Some(if content_type == Some(JSON) {
            FORM
        } else {
            JSON
        }),
        Some("multipart/form-data; boundary=x"),
        Some("application/json-patch+json"),
        Some(";;; not a media type"),
    ];
    for t in wrong_types {
        let label = t.unwrap_or("no content type");
        add(format!("the body as {label}"), &|c: &mut Case| {
            if matches!(c.payload, Payload::None) {
                c.payload = Payload::Bytes(b"{\"a\":1}".to_vec());
            }
            set_type(t)(c);
            if spec.checks_content_type {
                c.status = Some(415);
            }
        });
    }

    // --- invalid UTF-8 ------------------------------------------------------------------
    let not_utf8 = ["%FF", "%C0%AF", "%ED%A0%80", "a%FE%FFb"];
    if let Input::Query(pairs) | Input::Form(pairs) = &spec.input {
        for (name, _) in pairs {
            for bad in not_utf8 {
                // Written by hand: the encoder would escape the `%`.
                let text = pairs
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == name { bad.to_string() } else { enc(v) };
                        format!("{}={v}", enc(k))
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                let change: Box<dyn Fn(&mut Case)> = if is_query {
                    Box::new(with_query(text))
                } else {
                    Box::new(with_body(text.into_bytes()))
                };
                add(format!("`{name}` = {bad} (not UTF-8)"), &|c: &mut Case| {
                    change(c);
                    c.status = Some(400);
                    c.message = Some("UTF-8");
                });
            }
        }
    }
    add(
        "a parameter name that is not UTF-8".into(),
        &|c: &mut Case| {
            // First, so that it is the first thing wrong with the query.
            c.query = if c.query.is_empty() {
                "%FF=1".into()
            } else {
                format!("%FF=1&{}", c.query)
            };
            if is_query {
                c.status = Some(400);
                c.message = Some("UTF-8");
            }
        },
    );
    if is_form {
        add(
            "raw bytes that are not UTF-8 in a form value".into(),
            &|c: &mut Case| {
                let Payload::Bytes(body) = &mut c.payload else {
                    unreachable!()
                };
                body.extend_from_slice(b"&extra=\xff\xfe");
                c.status = Some(400);
                c.message = Some("UTF-8");
            },
        );
    }
    if let Input::Json(map) = &spec.input {
        let name = map.keys().next().expect("a field").clone();
        add(
            format!("raw bytes that are not UTF-8 in `{name}`"),
            &|c: &mut Case| {
                let mut text = serde_json::to_vec(&json!({ name.clone(): "\u{1}" })).unwrap();
                let at = text.iter().position(|b| *b == b'\\').unwrap();
                text.splice(at..at + 6, [0xff, 0xfe]);
                c.payload = Payload::Bytes(text);
            },
        );
    }
    add("a body that is not UTF-8".into(), &|c: &mut Case| {
        c.payload = Payload::Bytes(vec![0xff, 0xfe, 0xfd, 0x00, 0x80]);
        if content_type.is_none() {
            set_type(Some("text/plain"))(c);
        }
    });
    // What API Gateway would pass through but an HTTP client would escape: a raw space,
    // raw non-ASCII, a control character in the raw query.
    for raw in ["a b", "caf\u{e9}", "x\u{1}y", "%", "%zz"] {
        add(format!("a raw query value {raw:?}"), &|c: &mut Case| {
            let extra = format!("raw={raw}");
            c.query = if c.query.is_empty() {
                extra
            } else {
                format!("{}&{extra}", c.query)
            };
            c.via = Via::Lambda;
            if is_query && raw.starts_with('%') {
                c.status = Some(400);
                c.message = parses.then_some("percent escape");
            }
        });
    }
    // Invalid percent escapes: refused, not kept as text.
    if is_query || is_form {
        for bad in ["%zz", "%", "%4", "100%"] {
            add(
                format!("a parameter with the invalid escape {bad:?}"),
                &|c: &mut Case| {
                    let extra = format!("escape={bad}");
                    if is_query {
                        c.query = format!("{}&{extra}", c.query);
                    } else if let Payload::Bytes(body) = &mut c.payload {
                        body.extend_from_slice(format!("&{extra}").as_bytes());
                    }
                    c.status = Some(400);
                    c.message = parses.then_some("percent escape");
                },
            );
        }
    }

    // --- identifiers --------------------------------------------------------------------
    // Ids name stored items: only ASCII letters, digits and `-_.:@` (gatehouse::web::check_id).
    if let Input::Query(pairs) = &spec.input {
        for name in spec.ids {
            for bad in BAD_IDS {
                let text = pairs
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == name { bad } else { v.as_str() };
                        format!("{}={}", enc(k), enc(v))
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                add(format!("`{name}` = {bad:?}"), &|c: &mut Case| {
                    c.query = text.clone();
                    c.status = Some(400);
                    c.message = Some("may hold only");
                });
            }
        }
    }

    // --- repeated headers ---------------------------------------------------------------
    // A valid header followed by another is refused, not resolved to either (over HTTP: API
    // Gateway joins repeated headers with commas, which the values' own checks refuse).
    for (name, _) in &spec.headers {
        if *name == "content-type" {
            continue;
        }
        add(format!("the {name} header twice"), &|c: &mut Case| {
            c.headers.push((name.to_string(), b"1000222222".to_vec()));
            c.via = Via::Http;
            c.status = Some(400);
            c.message = Some("more than once");
        });
    }
    if spec.checks_content_type {
        add("the content-type header twice".into(), &|c: &mut Case| {
            let ct = content_type.unwrap_or(JSON);
            c.headers
                .push(("content-type".into(), ct.as_bytes().to_vec()));
            c.via = Via::Http;
            c.status = Some(400);
            c.message = Some("more than once");
        });
    }

    // --- base64 (Lambda) ----------------------------------------------------------------
    for (label, body) in [
        ("not base64 at all", "%%% not base64 %%%"),
        ("base64 with a line break", "eyJh\nIjoxfQ=="),
        ("base64 with bad padding", "eyJhIjoxfQ="),
        ("base64url, not base64", "_-_-"),
    ] {
        add(
            format!("a body flagged base64 that is {label}"),
            &|c: &mut Case| {
                c.payload = Payload::Event {
                    body: body.into(),
                    base64: true,
                };
                c.via = Via::Lambda;
                c.status = Some(400);
                c.message = Some("base64");
            },
        );
    }
    add(
        "a base64 body that decodes to bytes that are not UTF-8".into(),
        &|c: &mut Case| {
            c.payload = Payload::Event {
                body: STANDARD.encode([0xffu8, 0xfe, 0x00]),
                base64: true,
            };
            c.via = Via::Lambda;
        },
    );

    // --- huge headers -------------------------------------------------------------------
    add("a 16 KB cookie".into(), &|c: &mut Case| {
        c.cookies = vec![format!("filler={}", "c".repeat(16 * KB))];
        c.http_layer = &[431];
    });
    add("16 KB of cookies named as ours".into(), &|c: &mut Case| {
        c.cookies = COOKIE_NAMES
            .iter()
            .flat_map(|n| [n.to_string(), format!("__Host-{n}")])
            .map(|n| format!("{n}={}", "v".repeat(1400)))
            .collect();
        c.http_layer = &[431];
    });
    add("a 16 KB custom header".into(), &|c: &mut Case| {
        c.headers
            .push(("x-filler".into(), "h".repeat(16 * KB).into_bytes()));
        c.http_layer = &[431];
    });
    add("200 headers".into(), &|c: &mut Case| {
        for i in 0..200 {
            c.headers.push((format!("x-filler-{i}"), b"h".to_vec()));
        }
        c.http_layer = &[431];
    });

    // --- garbage cookies ----------------------------------------------------------------
    let garbage_values = [
        "garbage",
        "a.b.c.d",
        "YWJj.99999999999.dev1.AAAA",
        "YWJj.1.dev1.AAAA.extra",
        "....",
        "%FF%FE",
        "\"quoted\"",
        "",
    ];
    for value in garbage_values {
        add(
            format!("every cookie of ours = {value:?}"),
            &|c: &mut Case| {
                c.cookies = COOKIE_NAMES
                    .iter()
                    .flat_map(|n| [n.to_string(), format!("__Host-{n}")])
                    .map(|n| format!("{n}={value}"))
                    .collect();
            },
        );
    }
    add("a malformed cookie header".into(), &|c: &mut Case| {
        c.cookies = vec![";;; = ;a=b=c; novalue; =x; gh-weblink-session".into()];
    });
    add(
        "a cookie header that is not UTF-8".into(),
        &|c: &mut Case| {
            let mut value = b"gh-weblink-session=".to_vec();
            value.extend_from_slice(&[0xff, 0xfe]);
            c.headers.push(("cookie".into(), value));
            c.via = Via::Http;
        },
    );
    add("our cookies twice, differently".into(), &|c: &mut Case| {
        c.cookies = COOKIE_NAMES
            .iter()
            .flat_map(|n| [format!("{n}=one"), format!("{n}=two")])
            .collect();
    });

    // --- path parameters ----------------------------------------------------------------
    if route.path.contains('{') {
        for (label, segment) in [
            ("not a uuid", "not-a-uuid".to_string()),
            ("2 000 characters", "r".repeat(2000)),
            ("not UTF-8", "%FF%FE".to_string()),
            ("a uuid in braces", format!("{{{}}}", uuid::Uuid::new_v4())),
        ] {
            let pattern = route.path.to_owned();
            add(
                format!("a path parameter that is {label}"),
                &|c: &mut Case| {
                    c.path = pattern
                        .split('/')
                        .map(|s| {
                            if s.starts_with('{') {
                                segment.as_str()
                            } else {
                                s
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("/");
                },
            );
        }
    }

    // --- the route's own cases -----------------------------------------------------------
    for (name, q, status) in &spec.extra {
        add(name.to_string(), &|c: &mut Case| {
            c.query = q.clone();
            c.status = Some(*status);
        });
    }

    // --- wrong methods (the local server) -------------------------------------------------
    let served: Vec<Method> = routes::all()
        .iter()
        .filter(|r| r.path == route.path)
        .map(|r| r.method.clone())
        .collect();
    for method in METHODS.iter().filter(|m| !served.contains(m)) {
        if served.contains(&routes::any_method()) {
            break;
        }
        add(format!("method {method}"), &|c: &mut Case| {
            c.method = method.clone();
            c.via = Via::Http;
            c.status = Some(405);
        });
    }
    if served.contains(&routes::any_method()) {
        // Every method of HTTP is served; an extension method is not forwarded.
        let method = Method::from_bytes(b"PROPFIND").unwrap();
        add(format!("method {method}"), &|c: &mut Case| {
            c.method = method.clone();
            c.status = Some(405);
        });
    }
    out
}

/// What came back.
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

async fn over_http(h: &Harness, client: &reqwest::Client, case: &Case) -> Result<Answer, String> {
    if case.path.len() + case.query.len() > 32 * KB {
        // Longer than an HTTP client will build (the `http` crate caps a URI at 64 KB).
        return raw_http(h.server.addr, case).await;
    }
    let url = if case.query.is_empty() {
        h.url(&case.path)
    } else {
        h.url(&format!("{}?{}", case.path, case.query))
    };
    let method = reqwest::Method::from_bytes(case.method.as_str().as_bytes()).unwrap();
    let mut request = client.request(method, url);
    for (k, v) in &case.headers {
        request = request.header(
            k.as_str(),
            reqwest::header::HeaderValue::from_bytes(v).expect("header value"),
        );
    }
    if !case.cookies.is_empty() {
        request = request.header("cookie", case.cookies.join("; "));
    }
    match &case.payload {
        Payload::None => {}
        Payload::Bytes(b) => request = request.body(b.clone()),
        Payload::Event { .. } => unreachable!("Lambda only"),
    }
    let resp = request
        .send()
        .await
        .map_err(|e| format!("no answer over HTTP (a panicking handler?): {e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("the body broke off (a panicking handler?): {e}"))?
        .to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Sends a case as HTTP/1.1 written by hand, and reads the answer until the server closes.
async fn raw_http(addr: std::net::SocketAddr, case: &Case) -> Result<Answer, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if case.query.is_empty() {
        case.path.clone()
    } else {
        format!("{}?{}", case.path, case.query)
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n",
        case.method
    )
    .into_bytes();
    for (k, v) in &case.headers {
        head.extend_from_slice(format!("{k}: ").as_bytes());
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    if !case.cookies.is_empty() {
        head.extend_from_slice(format!("cookie: {}\r\n", case.cookies.join("; ")).as_bytes());
    }
    let body = match &case.payload {
        Payload::Bytes(b) => b.clone(),
        _ => Vec::new(),
    };
    head.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    head.extend_from_slice(&body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(&head).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer over HTTP within 10 s".to_string())?
        .map_err(|e| format!("no answer over HTTP (a panicking handler?): {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("a broken answer: {:?}", String::from_utf8_lossy(&answer)))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    })
}

/// The API Gateway HTTP API (payload 2.0) event of a case.
fn event(route: &Route, case: &Case) -> String {
    let mut headers = Map::new();
    for (k, v) in &case.headers {
        let v = String::from_utf8_lossy(v).into_owned();
        match headers.get_mut(k) {
            // API Gateway joins repeated headers with commas.
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(&v);
            }
            _ => {
                headers.insert(k.clone(), Value::String(v));
            }
        }
    }
    headers.insert(
        "host".into(),
        json!("abc123.execute-api.us-east-1.amazonaws.com"),
    );
    let route_key = format!("{} {}", route.method, route.path);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": case.path,
        "rawQueryString": case.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": case.method.as_str(),
                "path": case.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "bad-input"
            },
            "requestId": "bad-input",
            "routeKey": route_key,
            "stage": "$default",
            "time": "24/Nov/2026:20:00:00 +0000",
            "timeEpoch": 1_795_550_400_000u64
        },
        "isBase64Encoded": false
    });
    // API Gateway names the SigV4-verified caller on the IAM-authorized /v1 routes.
    if route.path.starts_with("/v1/") {
        event["requestContext"]["authorizer"] = json!({"iam": {
            "accountId": "123456789012",
            "callerId": "AROABADINPUT:app-backend",
            "userArn": "arn:aws:sts::123456789012:assumed-role/app-backend/bad-input",
            "userId": "AROABADINPUT:app-backend"
        }});
    }
    if !case.cookies.is_empty() {
        event["cookies"] = json!(case.cookies);
    }
    if case.path.starts_with("/v1/") {
        // The app's back-end routes are behind API Gateway's AWS_IAM authorizer: bad input
        // from a caller it authenticated, as it names it.
        event["requestContext"]["authorizer"] = json!({"iam": {
            "accountId": "123456789012",
            "callerId": "AROAEXAMPLE:bad-input",
            "userArn": "arn:aws:sts::123456789012:assumed-role/app/bad-input",
        }});
    }
    match &case.payload {
        Payload::None => {}
        Payload::Bytes(b) => match std::str::from_utf8(b) {
            Ok(text) => event["body"] = json!(text),
            Err(_) => {
                event["body"] = json!(STANDARD.encode(b));
                event["isBase64Encoded"] = json!(true);
            }
        },
        Payload::Event { body, base64 } => {
            event["body"] = json!(body);
            event["isBase64Encoded"] = json!(base64);
        }
    }
    event.to_string()
}

/// Runs a case as the Lambda runtime would (`gatehouse::lambda::run`): the event through the
/// adapter, the handler in a task of its own (a panic is reported, not propagated), the
/// response back into API Gateway's shape.
async fn through_lambda(h: &Harness, route: &Route, case: &Case) -> Result<Answer, String> {
    let resp = match gatehouse::lambda::request_from_json(&event(route, case)) {
        Ok(req) => {
            let app = h.server.app.clone();
            let function = route.function;
            let result = tokio::spawn(async move { function.call(&app, &req).await })
                .await
                .map_err(|e| format!("the handler panicked: {e}"))?;
            routes::answer(route.format(), result)
        }
        Err(e) => routes::answer(Format::Json, Err(e)),
    };
    let out = gatehouse::lambda::response_into_event(resp);
    let mut headers: Vec<(String, Vec<u8>)> = out
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    headers.extend(
        out.cookies
            .iter()
            .map(|c| ("set-cookie".to_owned(), c.as_bytes().to_vec())),
    );
    let body = match out.body {
        Some(lambda_http::Body::Text(t)) if out.is_base64_encoded => STANDARD
            .decode(t)
            .map_err(|e| format!("bad base64 answer: {e}"))?,
        Some(lambda_http::Body::Text(t)) => t.into_bytes(),
        Some(lambda_http::Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    Ok(Answer {
        status: u16::try_from(out.status_code).unwrap_or(0),
        headers,
        body,
    })
}

/// The reason codes (`gatehouse::Reason`) a specific refusal may carry.
fn expected_reasons(message: &str) -> &'static [&'static str] {
    match message {
        "more than once" => &["duplicate_parameter"],
        "base64" => &["malformed_body"],
        // A parameter's value, or a body that is not text at all.
        "UTF-8" => &["malformed_parameter", "malformed_body"],
        "longer than" | "percent escape" | "may hold only" => &["malformed_parameter"],
        other => panic!("no reason is known for the message {other:?}"),
    }
}

/// What is wrong with an answer, if anything.
fn judge(case: &Case, answer: &Answer, over_http: bool, secrets: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let body = String::from_utf8_lossy(&answer.body);
    let from_http_layer = over_http && case.http_layer.contains(&answer.status);
    if !(400..500).contains(&answer.status) {
        problems.push(format!(
            "answered {} (not a 4xx): {body:.300}",
            answer.status
        ));
    } else if let Some(want) = case.status
        && answer.status != want
        && !from_http_layer
    {
        problems.push(format!(
            "answered {}, expected {want}: {body:.300}",
            answer.status
        ));
    } else if let Some(text) = case.message
        && !from_http_layer
    {
        if !body.contains(text) {
            problems.push(format!("the message does not say {text:?}: {body:.300}"));
        }
        // The refusal's typed reason, which callers match rather than the sentence.
        let reasons = expected_reasons(text);
        if !reasons.iter().any(|r| body.contains(r)) {
            problems.push(format!("the answer names none of {reasons:?}: {body:.300}"));
        }
    }
    if !from_http_layer && answer.body.is_empty() && case.method != Method::HEAD {
        problems.push(format!("answered {} with no message", answer.status));
    }
    for secret in secrets {
        if body.contains(secret.as_str()) {
            problems.push("a secret appears in the body".into());
        }
        for (name, value) in &answer.headers {
            if String::from_utf8_lossy(value).contains(secret.as_str()) {
                problems.push(format!("a secret appears in header {name}"));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_input_and_changes_nothing() {
    let h = Harness::embedded().await;
    let secrets = h.secret_values();
    let client = crate::support::http_without_redirects();
    let mut failures = Vec::new();
    let mut count = 0;
    for route in routes::all() {
        let what = format!("{} {}", route.method, route.path);
        let Some(spec) = spec(&h, &route).await else {
            failures.push(format!(
                "{what}: no bad-input cases (give the route a baseline in bad_input::spec)"
            ));
            continue;
        };
        let cases = cases(&route, &spec);
        assert!(cases.len() > 20, "{what}: only {} cases", cases.len());
        for case in &cases {
            for over_http_now in [true, false] {
                let wanted = match case.via {
                    Via::Both => true,
                    Via::Http => over_http_now,
                    Via::Lambda => !over_http_now,
                };
                if !wanted {
                    continue;
                }
                count += 1;
                let before: Vec<StoredRow> = h.stored();
                let answer = if over_http_now {
                    over_http(&h, &client, case).await
                } else {
                    through_lambda(&h, &route, case).await
                };
                let via = if over_http_now { "HTTP" } else { "Lambda" };
                let label = format!("{what} [{via}] {}", case.name);
                match answer {
                    Err(e) => failures.push(format!("{label}: {e}")),
                    Ok(answer) => {
                        if std::env::var_os("BAD_INPUT_TRACE").is_some() {
                            let _ = std::io::Write::write_all(
                                &mut std::io::stderr(),
                                format!(
                                    "{label} -> {} {:.100}\n",
                                    answer.status,
                                    String::from_utf8_lossy(&answer.body).replace('\n', " ")
                                )
                                .as_bytes(),
                            );
                        }
                        for p in judge(case, &answer, over_http_now, &secrets) {
                            failures.push(format!("{label}: {p}"));
                        }
                    }
                }
                let after = h.stored();
                if after != before {
                    let added: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
                    let removed: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
                    failures.push(format!(
                        "{label}: the store changed: added {added:?}, removed {removed:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} bad-input requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
