//! The auth-injecting proxy (`ANY /v1/proxy/{platform}/{tenant}/{path+}`) against every
//! simulator over real HTTP: each simulator judges the injected auth as its platform would (the
//! Saison MAC included) and records what reached it.
//!
//! Each check runs once per platform (`proxy::<platform>::<check>`), on a tenant connected
//! through the platform's real flow.

use crate::harness::{Backend, Browser, Harness};
use gatehouse::config::Vars;
use gatehouse_simulators::kit::ApiKnobs;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq)]
enum P {
    Sesami,
    Haravan,
    Saison,
    Momo,
    Weblink,
}

const SHOP: &str = "proxy-shop";
const HARAVAN_ADMIN: &str = "200000011111";
const HARAVAN_ORG: &str = "1000111111";
/// What the caller sends as its own auth: never forwarded.
const CALLER_TOKEN: &str = "caller-secret-token-7f3a";

/// One platform's proxy, on a tenant connected through its real flow.
struct Case {
    h: Harness,
    p: P,
    tenant: String,
}

impl Case {
    async fn new(p: P) -> Case {
        Self::on(p, Harness::embedded().await).await
    }

    async fn on(p: P, h: Harness) -> Case {
        let mut b = Browser::new();
        let tenant = match p {
            P::Sesami => {
                let (page, _) = crate::sesami::install(&h, &mut b, SHOP).await;
                assert_eq!(page.status, 200, "{}", page.body);
                SHOP.to_owned()
            }
            P::Haravan => {
                let page = crate::haravan::install(&h, &mut b, HARAVAN_ADMIN).await;
                assert_eq!(page.status, 200, "{}", page.body);
                HARAVAN_ORG.to_owned()
            }
            P::Saison => {
                let (page, _) = crate::saison::connect(&h, &mut b).await;
                assert!(page.status < 400, "{} {}", page.status, page.body);
                crate::saison::CARDHOLDER.to_owned()
            }
            P::Momo => "collection".to_owned(),
            P::Weblink => {
                let callback = crate::weblink::sign_in(&h, &mut b).await;
                let page = b.get(&callback).await;
                assert_eq!(page.status, 200, "{}", page.body);
                let sessions = h.items("session#weblink").await;
                assert_eq!(sessions.len(), 1);
                sessions[0].key.sk.clone()
            }
        };
        let c = Case { h, p, tenant };
        if p == P::Momo {
            // MoMo's product token is fetched on first use: fetched here, so that what the
            // tests count is the proxy's own renewals.
            let (status, _, body) = c.call(&[]).await;
            assert_read(&c, status, &body);
        }
        c
    }

    fn name(&self) -> &'static str {
        match self.p {
            P::Sesami => "sesami",
            P::Haravan => "haravan",
            P::Saison => "saison",
            P::Momo => "momo",
            P::Weblink => "weblink",
        }
    }

    fn knobs(&self) -> &ApiKnobs {
        let s = &self.h.server;
        match self.p {
            P::Sesami => s.sesami.api(),
            P::Haravan => s.haravan.api(),
            P::Saison => s.saison.api(),
            P::Momo => s.momo.api(),
            P::Weblink => s.weblink.api(),
        }
    }

    /// Calls to the platform's token endpoint that renew the tenant's access (refreshes; MoMo's
    /// product token requests).
    fn refreshes(&self) -> usize {
        let s = &self.h.server;
        match self.p {
            P::Sesami => 0,
            P::Haravan => s.haravan.token_requests("refresh_token"),
            P::Saison => s.saison.token_requests("refresh_token"),
            P::Momo => s.momo.token_requests("collection"),
            P::Weblink => s.weblink.token_requests("refresh_token"),
        }
    }

    /// The platform's API read: method, path under the API base, query, body.
    fn read(
        &self,
    ) -> (
        reqwest::Method,
        &'static str,
        &'static str,
        Option<&'static str>,
    ) {
        match self.p {
            P::Sesami => (reqwest::Method::GET, "api/v1/shop", "", None),
            P::Haravan => (reqwest::Method::GET, "com/shop.json", "", None),
            P::Saison => (
                reqwest::Method::GET,
                "auth/account/profile",
                "info_key=sex",
                None,
            ),
            P::Momo => (
                reqwest::Method::GET,
                "collection/v1_0/account/balance",
                "",
                None,
            ),
            P::Weblink => (
                reqwest::Method::POST,
                "graphql",
                "",
                Some(r#"{"query":"{ viewer { email } } # proxy-body-marker"}"#),
            ),
        }
    }

    /// Where the simulator sees the read: the API base's path (as mounted) and the path.
    fn seen_path(&self) -> String {
        let (_, path, _, _) = self.read();
        let base = match self.p {
            P::Sesami => "/",
            P::Haravan => "/api/",
            P::Saison => "/",
            P::Momo => "/",
            P::Weblink => "/api/",
        };
        format!("{base}{path}")
    }

    /// The proxy URL of `path` for this tenant, with `query` (and Saison's `end_user`).
    fn url_for(&self, tenant: &str, path: &str, query: &str) -> String {
        let mut q = query.to_owned();
        if self.p == P::Saison {
            q = [format!("end_user={}", crate::saison::END_USER), q]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("&");
        }
        let q = if q.is_empty() { q } else { format!("?{q}") };
        self.h
            .url(&format!("/v1/proxy/{}/{tenant}/{path}{q}", self.name()))
    }

    /// The platform's read through the proxy, with the caller's `extra` headers.
    async fn call(&self, extra: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let (method, path, query, body) = self.read();
        self.send(
            method,
            &self.url_for(&self.tenant, path, query),
            body,
            extra,
        )
        .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = crate::support::http().request(method, url);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("the proxy answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap().to_vec())
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// What each platform's read answers for the tests' tenant.
fn assert_read(c: &Case, status: u16, body: &[u8]) {
    let v = json_of(body);
    assert_eq!(status, 200, "{}: {v}", c.name());
    match c.p {
        P::Sesami => assert_eq!(v["id"], SHOP),
        P::Haravan => assert_eq!(v["shop"]["id"].to_string(), HARAVAN_ORG),
        P::Saison => assert_eq!(v["user_id"], crate::saison::CARDHOLDER),
        P::Momo => assert_eq!(v["currency"], "EUR"),
        P::Weblink => assert_eq!(v["data"]["viewer"]["email"], "jane@example.com"),
    }
}

async fn auth_is_injected_and_the_callers_is_not(p: P) {
    let c = Case::new(p).await;
    let before = c.knobs().calls();
    let (status, _, body) = c
        .call(&[
            ("authorization", &format!("Bearer {CALLER_TOKEN}")),
            ("x-api-key", CALLER_TOKEN),
            ("x-shop-id", "someone-else"),
            ("ocp-apim-subscription-key", CALLER_TOKEN),
            ("weblink-portal", "evil.example"),
            ("cookie", "session=caller"),
            ("x-amz-security-token", CALLER_TOKEN),
            ("x-request-id", "kept-1"),
        ])
        .await;
    assert_read(&c, status, &body);
    assert_eq!(
        c.knobs().calls(),
        before + 1,
        "one call reached the platform"
    );
    let seen = c.knobs().seen().pop().unwrap();
    let (path, query) = seen
        .path_and_query
        .split_once('?')
        .unwrap_or((&seen.path_and_query, ""));
    assert_eq!(path, c.seen_path());
    if c.p == P::Saison {
        assert_eq!(query, "info_key=sex", "end_user is ours, not Saison's");
    }
    let all = |name: &str| -> Vec<String> {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    for (name, count) in [
        ("authorization", usize::from(c.p != P::Sesami)),
        ("x-api-key", usize::from(c.p == P::Sesami)),
        ("cookie", 0),
        ("x-amz-security-token", 0),
        ("x-request-id", 1),
    ] {
        assert_eq!(all(name).len(), count, "{}: {name}", c.name());
    }
    for value in seen.headers.values() {
        assert!(
            !value.to_str().unwrap_or_default().contains(CALLER_TOKEN),
            "the caller's credential reached the platform"
        );
    }
    match c.p {
        P::Sesami => {
            assert_eq!(all("x-shop-id"), [SHOP]);
            assert_eq!(all("x-client-id"), ["gatehouse-local-sesami"]);
        }
        P::Saison => {
            assert!(all("authorization")[0].starts_with("MAC id=\""));
            assert_eq!(all("x-api-version"), ["1"]);
        }
        P::Momo => {
            assert!(all("authorization")[0].starts_with("Bearer "));
            assert_eq!(all("x-target-environment"), ["sandbox"]);
            assert_eq!(all("ocp-apim-subscription-key").len(), 1);
        }
        P::Weblink => {
            assert!(all("authorization")[0].starts_with("Bearer "));
            assert_eq!(all("weblink-portal"), ["demo.administrateweblink.com"]);
        }
        P::Haravan => assert!(all("authorization")[0].starts_with("Bearer ")),
    }
}

async fn a_401_refreshes_once_and_retries_once(p: P) {
    let c = Case::new(p).await;
    let (calls, refreshes) = (c.knobs().calls(), c.refreshes());
    c.knobs().answer_401(1);
    let (status, _, body) = c.call(&[]).await;
    if c.p == P::Sesami {
        // An offline token has nothing to refresh it with: the 401 comes back, not retried.
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
        assert_eq!(c.knobs().calls(), calls + 1);
        return;
    }
    assert_read(&c, status, &body);
    assert_eq!(c.knobs().calls(), calls + 2, "one call, one retry");
    assert_eq!(c.refreshes(), refreshes + 1, "one refresh");
    let seen = c.knobs().seen();
    let auth = |i: usize| seen[seen.len() - i].headers.get("authorization").cloned();
    assert_ne!(auth(1), auth(2), "the retry carries the new credentials");

    // A second 401 is passed back: one retry only.
    c.knobs().answer_401(2);
    let (status, headers, _) = c.call(&[]).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(c.knobs().calls(), calls + 4);
    assert_eq!(c.refreshes(), refreshes + 2);
}

async fn too_many_requests_and_retry_after_pass_through(p: P) {
    let c = Case::new(p).await;
    let calls = c.knobs().calls();
    c.knobs().answer_429(7);
    let (status, headers, body) = c.call(&[]).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(
        json_of(&body)["error"],
        "rate_limited",
        "the platform's own body"
    );
    assert_eq!(c.knobs().calls(), calls + 1, "not retried");
}

/// Sends `target` as the request line's path, byte for byte (an HTTP client would normalise
/// `..` and `.` away), and returns the status.
async fn raw_status(h: &Harness, method: &str, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        h.server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Paths that would leave the API base if joined leniently.
const HOSTILE: &[&str] = &[
    "..",
    "../x",
    "../../../../etc/passwd",
    "a/../../x",
    "./x",
    "a/./b",
    "a//b",
    "x/",
    "%2e%2e/x",
    "%2E%2E/%2E%2E/x",
    ".%2e/x",
    "a%2fb",
    "a%2F..%2F..%2Fx",
    "a%5cb",
    "a\\..\\x",
    "@evil.example/x",
    "x@evil.example",
    "http:%2F%2Fevil.example/x",
    "https:evil.example",
    "evil.example:80/x",
    "/evil.example/x",
    "x%00",
    "x%0d%0aHost:%20evil.example",
    "x%09y",
    "%",
    "a%zz",
];

async fn no_path_leaves_the_api_base(p: P) {
    let c = Case::new(p).await;
    let calls = c.knobs().calls();
    for hostile in HOSTILE {
        let url = c.url_for(&c.tenant, hostile, "");
        let target = url.strip_prefix(&c.h.url("")).unwrap();
        let status = raw_status(&c.h, "GET", target).await;
        assert!(
            (400..500).contains(&status),
            "{}: {hostile} answered {status}",
            c.name()
        );
    }
    // None reached the platform; anything that did would be under the base anyway.
    assert_eq!(c.knobs().calls(), calls, "{}", c.name());
    for seen in c.knobs().seen() {
        assert!(!seen.path_and_query.contains(".."));
    }
}

async fn hop_by_hop_headers_are_stripped_both_ways(p: P) {
    let c = Case::new(p).await;
    let (status, _, body) = c
        .call(&[
            ("connection", "x-hop-named"),
            ("x-hop-named", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ])
        .await;
    assert_read(&c, status, &body);
    let seen = c.knobs().seen().pop().unwrap();
    for name in [
        "x-hop-named",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "trailer",
    ] {
        assert!(!seen.headers.contains_key(name), "{}: {name}", c.name());
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    let host = seen.headers["host"].to_str().unwrap();
    assert_eq!(
        host,
        c.h.server.addr.to_string(),
        "the base's host, not the caller's"
    );
}

async fn oversized_bodies_are_refused(p: P) {
    let c = Case::new(p).await;
    let calls = c.knobs().calls();
    let (_, path, query, _) = c.read();
    let big = "x".repeat(gatehouse::proxy::MAX_REQUEST_BODY + 1);
    let (status, _, body) = c
        .send(
            reqwest::Method::POST,
            &c.url_for(&c.tenant, path, query),
            Some(&big),
            &[],
        )
        .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(
        json_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("larger than")
    );
    assert_eq!(c.knobs().calls(), calls, "nothing forwarded");

    c.knobs()
        .answer_bytes(gatehouse::proxy::MAX_RESPONSE_BODY + 1);
    let (status, _, body) = c.call(&[]).await;
    assert_eq!(status, 502);
    let message = json_of(&body)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("larger than"), "{message}");
}

async fn an_unknown_tenant_is_404(p: P) {
    let c = Case::new(p).await;
    let calls = c.knobs().calls();
    let (method, path, query, body) = c.read();
    let nobody = if c.p == P::Momo {
        "remittance"
    } else {
        "nobody-here"
    };
    let (status, _, answer) = c
        .send(method, &c.url_for(nobody, path, query), body, &[])
        .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(json_of(&answer)["reason"], "unknown_tenant");
    assert_eq!(c.knobs().calls(), calls);
}

/// The handler itself, invoked as Lambda runs it: a request whose context names no IAM caller
/// (a route deployed without `AWS_IAM`, a direct invocation) is refused; with one it is served.
async fn a_request_without_an_iam_identity_is_403(p: P) {
    use gatehouse::lambda::invoke;
    use gatehouse::routes;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
    use lambda_http::{Context, LambdaEvent};
    let c = Case::new(p).await;
    let (method, path, query, body) = c.read();
    let url = url::Url::parse(&c.url_for(&c.tenant, path, query)).unwrap();
    let event = |iam: bool| {
        let mut ctx = json!({
            "http": {"method": method.as_str(), "path": url.path(), "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"},
            "domainName": "api.example.com",
            "requestId": "r-1",
        });
        if iam {
            ctx["authorizer"] = json!({"iam": {
                "accountId": "123456789012",
                "callerId": "AROAEXAMPLE:app",
                "userArn": "arn:aws:sts::123456789012:assumed-role/app/app",
            }});
        }
        let event: ApiGatewayV2httpRequest = serde_json::from_value(json!({
            "version": "2.0",
            "routeKey": "ANY /v1/proxy",
            "rawPath": url.path(),
            "rawQueryString": url.query().unwrap_or(""),
            "headers": {"content-type": "application/json"},
            "requestContext": ctx,
            "body": body,
            "isBase64Encoded": false,
        }))
        .unwrap();
        LambdaEvent::new(event, Context::default())
    };
    let app = &c.h.server.app;
    let run = |iam: bool| async move {
        let e = event(iam);
        match c.p {
            P::Sesami => invoke(&app.sesami, &routes::SESAMI_PROXY, e).await,
            P::Haravan => invoke(&app.haravan, &routes::HARAVAN_PROXY, e).await,
            P::Saison => invoke(&app.saison, &routes::SAISON_PROXY, e).await,
            P::Momo => invoke(&app.momo, &routes::MOMO_PROXY, e).await,
            P::Weblink => invoke(&app.weblink, &routes::WEBLINK_PROXY, e).await,
        }
    };
    let calls = c.knobs().calls();
    let refused = run(false).await;
    assert_eq!(refused.status_code, 403);
    assert_eq!(c.knobs().calls(), calls, "nothing forwarded");
    let served = run(true).await;
    assert_eq!(served.status_code, 200, "{:?}", served.body);
    assert_eq!(c.knobs().calls(), calls + 1);
}

macro_rules! per_platform {
    ($($check:ident),* $(,)?) => {
        per_platform!(@platform sesami Sesami $($check),*);
        per_platform!(@platform haravan Haravan $($check),*);
        per_platform!(@platform saison Saison $($check),*);
        per_platform!(@platform momo Momo $($check),*);
        per_platform!(@platform weblink Weblink $($check),*);
    };
    (@platform $module:ident $p:ident $($check:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::P::$p).await;
                }
            )*
        }
    };
}

per_platform!(
    auth_is_injected_and_the_callers_is_not,
    a_401_refreshes_once_and_retries_once,
    too_many_requests_and_retry_after_pass_through,
    no_path_leaves_the_api_base,
    hop_by_hop_headers_are_stripped_both_ways,
    oversized_bodies_are_refused,
    an_unknown_tenant_is_404,
    a_request_without_an_iam_identity_is_403,
);

/// Twenty callers whose token the platform stopped accepting, at once, on DynamoDB: one refresh
/// (a forced refresh is one per token version), and every caller served.
#[tokio::test]
async fn concurrent_401s_make_one_refresh() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    let c = Arc::new(Case::on(P::Haravan, h).await);
    let refreshes = c.refreshes();
    c.h.server.haravan.expire_access_tokens(HARAVAN_ORG);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call(&[]).await })
        })
        .collect();
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        assert_read(&c, status, &body);
    }
    assert_eq!(c.refreshes(), refreshes + 1, "one refresh for twenty 401s");
}

/// MoMo's product token refused early, by twenty callers at once on DynamoDB: one new token is
/// fetched (the renewal is one per refused token across callers), and every caller is served.
#[tokio::test]
async fn concurrent_401s_fetch_one_momo_token() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    let c = Arc::new(Case::on(P::Momo, h).await);
    let fetched = c.refreshes();
    c.h.server.momo.expire_tokens();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call(&[]).await })
        })
        .collect();
    for call in calls {
        let (status, _, body) = call.await.unwrap();
        assert_read(&c, status, &body);
    }
    assert_eq!(c.refreshes(), fetched + 1, "one token for twenty 401s");
}

/// A refresh token the platform refuses: 409 `needs_reauth`, and the tenant marked.
#[tokio::test]
async fn a_refused_refresh_token_is_409_needs_reauth() {
    let c = Case::new(P::Haravan).await;
    c.h.server.haravan.expire_access_tokens(HARAVAN_ORG);
    c.h.server.haravan.revoke_refresh_tokens(HARAVAN_ORG);
    let (status, _, body) = c.call(&[]).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["reason"], "needs_reauth");
    let (status, _, _) = c.call(&[]).await;
    assert_eq!(status, 409, "still, without asking Haravan again");
}

/// Saison's own parameters: `end_user` is required, `member` must be served.
#[tokio::test]
async fn saison_needs_its_end_user_and_a_served_member() {
    let c = Case::new(P::Saison).await;
    let base = c.h.url(&format!(
        "/v1/proxy/saison/{}/auth/account/profile",
        c.tenant
    ));
    let (status, _, body) = c.send(reqwest::Method::GET, &base, None, &[]).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["reason"], "missing_parameter");
    let (status, _, _) = c
        .send(
            reqwest::Method::GET,
            &format!("{base}?end_user=app-user-1&member=other"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, body) = c
        .send(
            reqwest::Method::GET,
            &format!("{base}?end_user=app-user-1&member=demo"),
            None,
            &[],
        )
        .await;
    assert_read(&c, status, &body);
}

/// Everything logged while every platform's read is proxied, bodies and caller auth included:
/// no token, no secret, no body.
#[tokio::test]
async fn nothing_of_bodies_or_tokens_is_logged() {
    let logs = capture_logs();
    let mut secrets = vec![CALLER_TOKEN.to_owned(), "proxy-body-marker".to_owned()];
    for p in [P::Sesami, P::Haravan, P::Saison, P::Momo, P::Weblink] {
        let c = Case::new(p).await;
        c.knobs().answer_401(1);
        let (status, _, body) = c
            .call(&[("authorization", &format!("Bearer {CALLER_TOKEN}"))])
            .await;
        if p != P::Sesami {
            assert_read(&c, status, &body);
        }
        secrets.extend(c.h.secret_values());
        let keys = c.h.server.app.secrets.app_keys().await.unwrap();
        for kind in ["install", "conn", "session#weblink"] {
            for item in c.h.items(kind).await {
                if let Ok(tokens) = gatehouse::refresh::open(&keys, &item) {
                    secrets.push(tokens.access_token.expose_secret().to_owned());
                }
            }
        }
        for item in c.h.items("token#momo").await {
            let context = format!("{}/{}", item.key.pk, item.key.sk);
            if let Some(Ok(token)) = item
                .str("token_sealed")
                .map(|sealed| keys.open(sealed, &context, "token_sealed"))
            {
                secrets.push(token.expose_secret().to_owned());
            }
        }
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("proxied"), "the proxy's lines were captured");
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !text.contains(secret.as_str()),
            "a secret or body was logged"
        );
    }
}

/// Every log line of this test binary from now on (the app's targets, at every level), into one
/// buffer: the server runs on other threads, so the subscriber is the global one.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = buffer.clone();
            use tracing_subscriber::layer::SubscriberExt as _;
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .finish()
                .with(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("gatehouse", tracing::Level::TRACE)
                        .with_target("gatehouse_local", tracing::Level::TRACE),
                );
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other test sets a global subscriber");
            buffer
        })
        .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
