//! The metrics (gatehouse::metrics) as the routes emit them: every line captured while the local
//! server answers, each held to the Embedded Metric Format specification, and the counts each
//! request should make.
//!
//! The capture is the test thread's: these tests run in a current-thread runtime, where the
//! local server's tasks run too, so another test's lines never reach them.

use crate::harness::{Browser, Harness};
use gatehouse::metrics::{
    self, ALLOWED_UNITS, MAX_DIMENSION_KEY_CHARS, MAX_DIMENSIONS, MAX_NAME_CHARS, names,
};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One metric line, checked: what a test reads of it.
#[derive(Debug, Clone)]
struct Line {
    name: String,
    unit: String,
    value: f64,
    /// The full dimension set's values (`Function`, `Platform`, the caller's).
    dims: BTreeMap<String, String>,
    root: Map<String, Value>,
}

impl Line {
    fn dim(&self, name: &str) -> Option<&str> {
        self.dims.get(name).map(String::as_str)
    }
}

/// `line` checked against the EMF specification (the root node's `_aws` metadata, its
/// directives, their dimension sets and metric definitions, the target members they refer to,
/// and the limits), and that it is Gatehouse's: one directive of namespace `Gatehouse`, one
/// metric of a name the code declares, `Function` and `Platform` in its first dimension set.
fn validated(line: &str) -> Line {
    let root: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let Value::Object(root) = root else {
        panic!("the root node is not an object: {line}")
    };
    let aws = root["_aws"]
        .as_object()
        .unwrap_or_else(|| panic!("no `_aws` metadata object: {line}"));
    let timestamp = aws
        .get("Timestamp")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("`Timestamp` is not an integer: {line}"));
    let now = gatehouse::store::now() * 1000;
    assert!(
        (now - 60_000..=now + 60_000).contains(&timestamp),
        "`Timestamp` is not milliseconds of now: {line}"
    );
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("`CloudWatchMetrics` is not an array: {line}"));
    assert!(!directives.is_empty(), "no metric directive: {line}");
    let mut seen = Vec::new();
    for directive in directives {
        let directive = directive
            .as_object()
            .unwrap_or_else(|| panic!("a directive is not an object: {line}"));
        let namespace = directive
            .get("Namespace")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("`Namespace` is not a string: {line}"));
        assert!(
            (1..=1024).contains(&namespace.chars().count()) && !namespace.starts_with("AWS/"),
            "{line}"
        );
        let sets = directive
            .get("Dimensions")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("`Dimensions` is not an array: {line}"));
        assert!(!sets.is_empty(), "no dimension set: {line}");
        for set in sets {
            let set = set
                .as_array()
                .unwrap_or_else(|| panic!("a dimension set is not an array: {line}"));
            assert!(
                set.len() <= MAX_DIMENSIONS,
                "more than 30 dimensions: {line}"
            );
            for key in set {
                let key = key
                    .as_str()
                    .unwrap_or_else(|| panic!("a dimension key is not a string: {line}"));
                assert!(
                    (1..=MAX_DIMENSION_KEY_CHARS).contains(&key.chars().count()),
                    "{line}"
                );
                let value = root.get(key).and_then(Value::as_str).unwrap_or_else(|| {
                    panic!("dimension `{key}` is not a top-level string: {line}")
                });
                assert!(
                    (1..=1024).contains(&value.chars().count()),
                    "dimension `{key}`'s value is empty or too long: {line}"
                );
            }
        }
        let metrics = directive
            .get("Metrics")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("`Metrics` is not an array: {line}"));
        assert!((1..=100).contains(&metrics.len()), "{line}");
        let mut names_here = std::collections::BTreeSet::new();
        for metric in metrics {
            let name = metric["Name"]
                .as_str()
                .unwrap_or_else(|| panic!("a metric's `Name` is not a string: {line}"));
            assert!(
                (1..=MAX_NAME_CHARS).contains(&name.chars().count()),
                "{line}"
            );
            assert!(
                names_here.insert(name),
                "metric `{name}` defined twice: {line}"
            );
            assert!(
                !sets
                    .iter()
                    .flat_map(|s| s.as_array().unwrap())
                    .any(|k| k == name),
                "`{name}` is both a metric and a dimension: {line}"
            );
            if let Some(unit) = metric.get("Unit") {
                let unit = unit.as_str().unwrap_or_default();
                assert!(
                    ALLOWED_UNITS.contains(&unit),
                    "unit `{unit}` is not EMF's: {line}"
                );
            }
            if let Some(resolution) = metric.get("StorageResolution") {
                assert!(matches!(resolution.as_i64(), Some(1 | 60)), "{line}");
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) => {
                    assert!(
                        values.len() <= 100 && values.iter().all(Value::is_number),
                        "{line}"
                    );
                }
                _ => panic!("metric `{name}`'s value is not a number or numbers: {line}"),
            }
            seen.push((namespace, sets.clone(), name, metric.clone()));
        }
    }
    // Gatehouse's own shape.
    assert_eq!(seen.len(), 1, "one metric a line: {line}");
    let (namespace, sets, name, metric) = seen.remove(0);
    assert_eq!(namespace, metrics::NAMESPACE);
    assert!(
        names::ALL.contains(&name),
        "`{name}` is not in metrics::names: {line}"
    );
    let full: Vec<String> = sets[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&full[..2], ["Function", "Platform"], "{line}");
    for tenantish in ["tenant", "member", "id", "reference"] {
        assert!(
            !sets
                .iter()
                .any(|s| s.as_array().unwrap().contains(&json!(tenantish))),
            "an id as a dimension: {line}"
        );
    }
    let dims = full
        .iter()
        .map(|k| (k.clone(), root[k].as_str().unwrap().to_owned()))
        .collect();
    Line {
        name: name.to_owned(),
        unit: metric["Unit"].as_str().unwrap_or("None").to_owned(),
        value: root[name].as_f64().unwrap(),
        dims,
        root,
    }
}

/// Every captured line so far, validated, removed from the capture.
fn taken(capture: &metrics::Capture) -> Vec<Line> {
    capture.take().iter().map(|l| validated(l)).collect()
}

/// The lines of metric `name` whose dimensions include every one of `dims`.
fn of<'a>(lines: &'a [Line], name: &str, dims: &[(&str, &str)]) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| l.name == name && dims.iter().all(|(k, v)| l.dim(k) == Some(*v)))
        .collect()
}

/// The sum of metric `name`'s values with `dims`.
fn sum(lines: &[Line], name: &str, dims: &[(&str, &str)]) -> f64 {
    of(lines, name, dims).iter().map(|l| l.value).sum()
}

/// What one request made: its status, its body and the lines emitted while it was answered.
async fn request(
    capture: &metrics::Capture,
    req: reqwest::RequestBuilder,
) -> (u16, String, Vec<Line>) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (status, body, taken(capture))
}

/// The route's one `Responses` line says what the answer said: its route, status class and
/// (for a refusal) its reason; and its function and platform are the route's.
fn answered(lines: &[Line], route: &gatehouse::routes::Route, status: u16, body: &str) {
    let responses = of(lines, names::RESPONSES, &[("Route", &route.key())]);
    assert_eq!(
        responses.len(),
        1,
        "{} answered {status}: {lines:?}",
        route.key()
    );
    let r = responses[0];
    assert_eq!(r.value, 1.0);
    assert_eq!(r.unit, "Count");
    assert_eq!(r.dim("Function"), Some(route.function_name()));
    assert_eq!(
        r.dim("Platform"),
        Some(metrics::platform_of(route.function_name()))
    );
    assert_eq!(r.dim("Status"), Some(metrics::status_class(status)));
    if status >= 400 {
        let reason = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .or_else(|| {
                // A browser route's page: `<code data-reason>…</code>`.
                body.split("<code data-reason>")
                    .nth(1)
                    .and_then(|rest| rest.split('<').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{}: no reason in {body}", route.key()));
        assert_eq!(r.dim("Reason"), Some(reason.as_str()), "{}", route.key());
    } else {
        assert_eq!(r.dim("Reason"), None);
    }
}

/// A request for `route` that asks for nothing it could serve: no parameters, no body, no
/// signature; ids that name nothing.
fn bare(
    h: &Harness,
    client: &reqwest::Client,
    route: &gatehouse::routes::Route,
) -> reqwest::RequestBuilder {
    let path: String = route
        .path
        .split('/')
        .map(|s| match s {
            "{referenceId}" => uuid::Uuid::new_v4().to_string(),
            "{platform}" => "sesami".to_owned(),
            s if s.starts_with('{') => "nothing".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/");
    let method = if route.method == gatehouse::routes::any_method() {
        reqwest::Method::GET
    } else {
        reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap()
    };
    client.request(method, h.url(&path))
}

#[tokio::test]
async fn every_route_counts_its_refusals_by_reason() {
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let client = crate::support::http_without_redirects();
    let mut refused = 0;
    for route in gatehouse::routes::all() {
        let (status, body, lines) = request(&capture, bare(&h, &client, &route)).await;
        answered(&lines, &route, status, &body);
        if status >= 400 {
            refused += 1;
        }
    }
    assert!(refused >= 30, "most bare requests are refused: {refused}");
}

#[tokio::test]
async fn sesami_installs_webhooks_and_removals() {
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let mut b = Browser::new();
    let (page, _) = crate::sesami::install(&h, &mut b, "shop-m").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let lines = taken(&capture);
    let install = of(&lines, names::INSTALLS, &[("Platform", "sesami")]);
    assert_eq!(install.len(), 1, "{lines:?}");
    assert_eq!(install[0].dim("Function"), Some("sesami-callback"));
    assert_eq!(install[0].root["tenant"], "shop-m");
    let token_calls = of(
        &lines,
        names::PLATFORM_CALL_LATENCY,
        &[("Platform", "sesami"), ("Operation", "token")],
    );
    assert_eq!(token_calls.len(), 1, "{lines:?}");
    assert_eq!(token_calls[0].unit, "Milliseconds");
    assert!(token_calls[0].value >= 0.0);
    assert!(of(&lines, names::PLATFORM_CALL_ERRORS, &[]).is_empty());
    for (route, class) in [
        ("GET /sesami/install", "3xx"),
        ("GET /sesami/callback", "2xx"),
    ] {
        assert_eq!(
            sum(
                &lines,
                names::RESPONSES,
                &[("Route", route), ("Status", class)]
            ),
            1.0,
            "{route}: {lines:?}"
        );
    }

    let client = crate::support::http();
    let webhook = |event: &str, shop: &str| {
        let mut data = BTreeMap::new();
        data.insert("shopId".to_owned(), Value::from(shop));
        data.insert(
            "timestamp".to_owned(),
            Value::from(gatehouse_simulators::sesami::now_ms().to_string()),
        );
        serde_json::to_vec(&h.server.sesami.webhook_body(event, data)).unwrap()
    };
    let post = |body: Vec<u8>| {
        client
            .post(h.url("/sesami/webhooks"))
            .header("content-type", "application/json")
            .body(body)
    };
    let route = |key: &str| {
        gatehouse::routes::all()
            .into_iter()
            .find(|r| r.key() == key)
            .unwrap()
    };
    let hooks = route("POST /sesami/webhooks");

    let delivery = webhook("uninstall_app", "shop-m");
    let (status, body, lines) = request(&capture, post(delivery.clone())).await;
    assert_eq!(status, 200, "{body}");
    answered(&lines, &hooks, status, &body);
    assert_eq!(
        sum(
            &lines,
            names::WEBHOOK_ACCEPTED,
            &[("Platform", "sesami"), ("Function", "sesami-webhooks")]
        ),
        1.0
    );
    assert_eq!(sum(&lines, names::REMOVALS, &[("Platform", "sesami")]), 1.0);
    assert_eq!(of(&lines, names::REMOVALS, &[])[0].root["tenant"], "shop-m");

    // Replayed: a duplicate, nothing removed.
    let (status, body, lines) = request(&capture, post(delivery)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        sum(&lines, names::WEBHOOK_DUPLICATE, &[("Platform", "sesami")]),
        1.0
    );
    assert!(of(&lines, names::WEBHOOK_ACCEPTED, &[]).is_empty());
    assert!(of(&lines, names::REMOVALS, &[]).is_empty());

    // A bad signature: refused with its reason.
    let mut tampered: Value = serde_json::from_slice(&webhook("uninstall_app", "shop-m")).unwrap();
    tampered["data"]["shopId"] = json!("shop-other");
    let (status, body, lines) =
        request(&capture, post(serde_json::to_vec(&tampered).unwrap())).await;
    assert_eq!(status, 401, "{body}");
    answered(&lines, &hooks, status, &body);
    let refused = of(&lines, names::WEBHOOK_REFUSED, &[("Platform", "sesami")]);
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert_eq!(refused[0].dim("Reason"), Some("signature_invalid"));
    assert!(of(&lines, names::WEBHOOK_DUPLICATE, &[]).is_empty());
}

#[tokio::test]
async fn haravan_installs_refreshes_and_webhooks() {
    use crate::haravan::{ADMIN, ADMIN_ORG};
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120);
    let mut b = Browser::new();
    assert_eq!(crate::haravan::install(&h, &mut b, ADMIN).await.status, 200);
    let lines = taken(&capture);
    assert_eq!(
        sum(
            &lines,
            names::INSTALLS,
            &[("Platform", "haravan"), ("Function", "haravan-install")]
        ),
        1.0,
        "{lines:?}"
    );
    assert!(
        !of(
            &lines,
            names::PLATFORM_CALL_LATENCY,
            &[("Platform", "haravan"), ("Operation", "token")]
        )
        .is_empty()
    );

    // The sign-in's OIDC documents are Haravan's calls too.
    for operation in ["metadata", "jwks"] {
        assert!(
            !of(
                &lines,
                names::PLATFORM_CALL_LATENCY,
                &[("Platform", "haravan"), ("Operation", operation)]
            )
            .is_empty(),
            "{operation}: {lines:?}"
        );
    }

    // Due (120 s left, under the margin): one refresh, stored.
    gatehouse::haravan::access_token(&h.server.app.haravan, ADMIN_ORG)
        .await
        .unwrap();
    let lines = taken(&capture);
    let refreshed = of(&lines, names::REFRESH_SUCCEEDED, &[("Platform", "haravan")]);
    assert_eq!(refreshed.len(), 1, "{lines:?}");
    assert_eq!(refreshed[0].root["tenant"], ADMIN_ORG);
    assert!(of(&lines, names::REFRESH_FAILED, &[]).is_empty());

    // The refresh token revoked: invalid_grant, once the mark is written.
    sim.revoke_refresh_tokens(ADMIN_ORG);
    let err = gatehouse::haravan::access_token(&h.server.app.haravan, ADMIN_ORG)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 403);
    let lines = taken(&capture);
    let failed = of(&lines, names::REFRESH_FAILED, &[("Platform", "haravan")]);
    assert_eq!(failed.len(), 1, "{lines:?}");
    assert_eq!(failed[0].dim("Reason"), Some("invalid_grant"));
    assert_eq!(
        sum(
            &lines,
            names::PLATFORM_CALL_ERRORS,
            &[("Platform", "haravan"), ("Kind", "4xx")]
        ),
        1.0,
        "{lines:?}"
    );

    // Webhooks: a bad signature, then one delivery twice.
    let secret = h
        .server
        .app
        .secrets
        .credentials("haravan")
        .await
        .unwrap()
        .client_secret
        .expose_secret()
        .to_owned();
    let body = serde_json::to_vec(&sim.webhook_body("shop/update", ADMIN_ORG)).unwrap();
    let sig = gatehouse_simulators::haravan::webhook_signature(&secret, &body);
    let client = crate::support::http();
    let post = |sig: &str| {
        client
            .post(h.url("/haravan/webhooks"))
            .header("content-type", "application/json")
            .header("x-haravan-topic", "shop/update")
            .header("x-haravan-org-id", ADMIN_ORG)
            .header("x-haravan-hmacsha256", sig)
            .body(body.clone())
    };
    let (status, _, lines) = request(&capture, post("d3Jvbmc=")).await;
    assert_eq!(status, 401);
    let refused = of(&lines, names::WEBHOOK_REFUSED, &[("Platform", "haravan")]);
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert_eq!(refused[0].dim("Reason"), Some("signature_invalid"));
    let (status, text, lines) = request(&capture, post(&sig)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        sum(&lines, names::WEBHOOK_ACCEPTED, &[("Platform", "haravan")]),
        1.0
    );
    let (status, _, lines) = request(&capture, post(&sig)).await;
    assert_eq!(status, 200);
    assert_eq!(
        sum(&lines, names::WEBHOOK_DUPLICATE, &[("Platform", "haravan")]),
        1.0
    );
    assert!(of(&lines, names::WEBHOOK_ACCEPTED, &[]).is_empty());
}

#[tokio::test]
async fn momo_callbacks_and_the_reconcilers_backlog() {
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let client = crate::support::http();
    let pay = |msisdn: &str, external: &str| {
        client
            .post(h.url("/momo/requesttopay"))
            .header("content-type", "application/json")
            .body(
                json!({
                    "amount": "10.50", "currency": "EUR", "externalId": external,
                    "payer": {"partyIdType": "MSISDN", "partyId": msisdn},
                    "payerMessage": "m", "payeeNote": "n",
                })
                .to_string(),
            )
    };
    let (status, body, paid) = request(&capture, pay("46733123450", "order-m1")).await;
    assert_eq!(status, 202, "{body}");
    let reference = serde_json::from_str::<Value>(&body).unwrap()["referenceId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The simulator's callback arrives and is confirmed.
    let mut lines = paid;
    for _ in 0..100 {
        lines.extend(taken(&capture));
        if !of(&lines, names::WEBHOOK_ACCEPTED, &[("Platform", "momo")]).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        sum(
            &lines,
            names::WEBHOOK_ACCEPTED,
            &[("Platform", "momo"), ("Function", "momo-callback")]
        ),
        1.0,
        "{lines:?}"
    );
    assert!(
        !of(
            &lines,
            names::PLATFORM_CALL_LATENCY,
            &[("Platform", "momo"), ("Operation", "request_to_pay")]
        )
        .is_empty()
    );

    // Again: recorded already, a duplicate.
    let callback = |reference: &str| {
        client
            .put(h.url(&format!("/momo/callback/{reference}")))
            .header("content-type", "application/json")
            .body("{}")
    };
    let (status, _, lines) = request(&capture, callback(&reference)).await;
    assert_eq!(status, 200);
    assert_eq!(
        sum(&lines, names::WEBHOOK_DUPLICATE, &[("Platform", "momo")]),
        1.0,
        "{lines:?}"
    );
    // For no payment: refused.
    let (status, _, lines) = request(&capture, callback(&uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(status, 404);
    let refused = of(&lines, names::WEBHOOK_REFUSED, &[("Platform", "momo")]);
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert_eq!(refused[0].dim("Reason"), Some("unknown_tenant"));

    // One payment that stays pending: the reconciler's backlog, an hour later, is 1.
    let (status, body, _) = request(&capture, pay("46733123452", "order-m2")).await;
    assert_eq!(status, 202, "{body}");
    let later = gatehouse::store::now() + 3600;
    let run = gatehouse::momo::reconcile_at(&h.server.app.momo, later)
        .await
        .unwrap();
    let lines = taken(&capture);
    let backlog = of(&lines, names::MOMO_PENDING_BACKLOG, &[("Platform", "momo")]);
    let last = backlog
        .last()
        .unwrap_or_else(|| panic!("no backlog: {lines:?}"));
    assert_eq!(last.unit, "Count");
    assert_eq!(last.value, (run.pending + run.failed) as f64);
    assert!(last.value >= 1.0, "{run:?}");
}

#[tokio::test]
async fn the_v1_routes_count_their_answers() {
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let mut b = Browser::new();
    let (page, _) = crate::sesami::install(&h, &mut b, "shop-v").await;
    assert_eq!(page.status, 200);
    taken(&capture);
    let client = crate::support::http();
    for (method, path, route, class) in [
        (
            "GET",
            "/v1/connections/sesami/shop-v",
            "GET /v1/connections/sesami/{tenant}",
            "2xx",
        ),
        (
            "POST",
            "/v1/connections/sesami/shop-v/token",
            "POST /v1/connections/sesami/{tenant}/token",
            "2xx",
        ),
        (
            "GET",
            "/v1/connections?platform=sesami",
            "GET /v1/connections",
            "2xx",
        ),
        (
            "GET",
            "/v1/connections/sesami/shop-none",
            "GET /v1/connections/sesami/{tenant}",
            "4xx",
        ),
    ] {
        let req = client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            h.url(path),
        );
        let (status, body, lines) = request(&capture, req).await;
        assert_eq!(metrics::status_class(status), class, "{path}: {body}");
        let r = gatehouse::routes::all()
            .into_iter()
            .find(|r| r.key() == route)
            .unwrap();
        answered(&lines, &r, status, &body);
    }
    let (status, body, lines) = request(
        &capture,
        client
            .post(h.url("/v1/connect-links"))
            .header("content-type", "application/json")
            .body(
                json!({"platform": "saison", "end_user": "u-1", "return_to": h.url("/done")})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        sum(
            &lines,
            names::RESPONSES,
            &[
                ("Route", "POST /v1/connect-links"),
                ("Status", "2xx"),
                ("Function", "connect-links"),
                ("Platform", "core")
            ]
        ),
        1.0
    );
}

/// Through the Lambda adapter, as a deployed function answers: the route is the event's
/// `routeKey` (API Gateway's is the template's key, with the path parameter's name), the
/// function the one invoked.
#[tokio::test]
async fn the_lambda_adapter_counts_its_answer_by_the_events_route() {
    let h = Harness::embedded().await;
    let capture = metrics::capture();
    let event = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../events/momo-callback-unknown.json"),
    )
    .unwrap();
    let mut event: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
        serde_json::from_str(&event).unwrap();
    let route_key = "PUT /momo/callback/{referenceId}";
    event.route_key = Some(route_key.to_owned());
    let mut context = lambda_http::lambda_runtime::Context::default();
    context.deadline = (gatehouse::store::now() as u64 + 30) * 1000;
    let out = gatehouse::lambda::invoke(
        &h.server.app.momo,
        &gatehouse::routes::MOMO_CALLBACK,
        lambda_http::lambda_runtime::LambdaEvent::new(event, context),
    )
    .await;
    let status = u16::try_from(out.status_code).unwrap();
    assert_eq!(status, 404);
    let lines = taken(&capture);
    let responses = of(&lines, names::RESPONSES, &[("Route", route_key)]);
    assert_eq!(responses.len(), 1, "{lines:?}");
    assert_eq!(responses[0].dim("Function"), Some("momo-callback"));
    assert_eq!(responses[0].dim("Status"), Some("4xx"));
    assert_eq!(responses[0].dim("Reason"), Some("unknown_tenant"));
    let refused = of(
        &lines,
        names::WEBHOOK_REFUSED,
        &[("Function", "momo-callback")],
    );
    assert_eq!(refused.len(), 1, "{lines:?}");
}

/// The publisher: the events accepted, per platform; the records left for the retry, by reason.
#[tokio::test]
async fn the_publisher_counts_what_it_published_and_what_it_left() {
    use crate::publisher::{Bus, batch, publisher_at, record_of};
    let Some(bus) = Bus::create().await else {
        return;
    };
    let capture = metrics::capture();
    let upstream = gatehouse_local::faultproxy::endpoint_from_env().unwrap();
    let publisher = publisher_at(&bus.sdk, &upstream, &bus.name);
    let events = [
        gatehouse::events::Event::new("sesami", "webhook.uninstall_app", "s1", json!({})),
        gatehouse::events::Event::new("sesami", "webhook.uninstall_app", "s2", json!({})),
        gatehouse::events::Event::new("haravan", "webhook.orders/create", "1", json!({})),
    ];
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| record_of(e, i as u64 + 1))
        .collect();
    let published = publisher.publish(&batch(&records), None).await;
    assert!(published.failures.is_empty(), "{:?}", published.failures);
    let lines = taken(&capture);
    assert_eq!(
        sum(&lines, names::EVENTS_PUBLISHED, &[("Platform", "sesami")]),
        2.0
    );
    assert_eq!(
        sum(&lines, names::EVENTS_PUBLISHED, &[("Platform", "haravan")]),
        1.0
    );
    assert!(of(&lines, names::EVENTS_FAILED, &[]).is_empty());

    let gone = publisher_at(&bus.sdk, "http://127.0.0.1:9", &bus.name);
    let published = gone.publish(&batch(&records), None).await;
    assert_eq!(published.failures.len(), 3);
    let lines = taken(&capture);
    assert_eq!(
        sum(&lines, names::EVENTS_FAILED, &[("Reason", "call")]),
        3.0,
        "{lines:?}"
    );
    assert!(of(&lines, names::EVENTS_PUBLISHED, &[]).is_empty());
    let _ = bus.drain().await;
}
