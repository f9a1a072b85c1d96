//! The Lambda adapter's reading of API Gateway events ([`gatehouse::lambda::request_from_json`])
//! and writing of answers ([`response_into_event`](gatehouse::lambda::response_into_event)):
//! any text is a request or a 400, never a panic (`lambda_http::run` panics on some), and an
//! event built from parts reads back to those parts.

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::Error;
use gatehouse::lambda::{request_from_json, response_into_event};
use lambda_http::Body;
use serde_json::json;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    cookies: Vec<String>,
    body: Option<Vec<u8>>,
    base64: bool,
    /// A base64 flag that lies about the body.
    lie: bool,
    status: u16,
    set_cookie: String,
}

/// The target: input that starts with `{` is an event's text (the sample events are seeds),
/// anything else describes one.
pub fn run(data: &[u8]) {
    if data.first() == Some(&b'{') {
        if let Ok(text) = std::str::from_utf8(data) {
            match request_from_json(text) {
                Ok(_) | Err(Error::Refused { .. }) => {}
                Err(other) => panic!("an event was answered {other:?}"),
            }
        }
        return;
    }
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };

    let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][usize::from(input.method % 5)];
    let body_text = input.body.as_ref().map(|b| {
        if input.base64 {
            if input.lie {
                String::from_utf8_lossy(b).into_owned()
            } else {
                STANDARD.encode(b)
            }
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    });
    let headers: serde_json::Map<String, serde_json::Value> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), json!(v)))
        .collect();
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": input.path,
        "rawQueryString": input.query,
        "cookies": input.cookies,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api", "requestId": "r", "routeKey": "$default", "stage": "$default",
            "time": "24/Nov/2026:00:00:00 +0000", "timeEpoch": 0,
            "http": {"method": method, "path": input.path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "fuzz"}
        },
        "body": body_text,
        "isBase64Encoded": input.base64,
    });
    match request_from_json(&event.to_string()) {
        Ok(req) => {
            assert_eq!(req.method().as_str(), method);
            let body: &[u8] = req.body().as_ref();
            match (&input.body, input.base64 && !input.lie) {
                (Some(b), true) => assert_eq!(body, b.as_slice()),
                (Some(_), false) if !input.base64 => {
                    assert_eq!(body, body_text.as_deref().unwrap_or("").as_bytes())
                }
                _ => {}
            }
            if !input.query.is_empty() {
                assert_eq!(req.uri().query(), Some(input.query.as_str()));
            }
        }
        Err(Error::Refused { .. }) => {}
        Err(other) => panic!("an event was answered {other:?}"),
    }

    // Answers: any status and cookie text becomes an event, its body kept whole.
    let Ok(status) = lambda_http::http::StatusCode::from_u16(input.status) else {
        return;
    };
    let bytes = input.body.unwrap_or_default();
    let mut resp = lambda_http::Response::new(Body::Binary(bytes.clone()));
    *resp.status_mut() = status;
    let cookie = lambda_http::http::HeaderValue::from_str(&input.set_cookie).ok();
    if let Some(v) = cookie.clone() {
        resp.headers_mut().append("set-cookie", v);
    }
    let event = response_into_event(resp);
    assert_eq!(event.status_code, i64::from(status.as_u16()));
    let cookies: Vec<String> = cookie.iter().map(|_| input.set_cookie.clone()).collect();
    assert_eq!(event.cookies, cookies, "Set-Cookie goes to `cookies`");
    assert!(!event.headers.contains_key("set-cookie"));
    let back = match (event.body, event.is_base64_encoded) {
        (Some(lambda_http::Body::Text(t)), false) => t.into_bytes(),
        (Some(lambda_http::Body::Text(t)), true) => STANDARD.decode(t).unwrap(),
        (Some(lambda_http::Body::Binary(b)), true) => b,
        (None, _) | (Some(lambda_http::Body::Empty), _) => Vec::new(),
        (Some(other), flag) => panic!("answer body {other:?} with base64 {flag}"),
    };
    assert_eq!(back, bytes);
}
