//! The simulator driven over real HTTP (a listener on 127.0.0.1:0, `axum::serve`) as an app
//! would, with a stub of the app on the same server receiving the callbacks. The Basic header
//! is checked against the value python3 computes from the document's API user and key.

use super::{MomoSim, RequestToPayFault, basic_authorization};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, header};
use axum::routing::put;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MOUNT: &str = "/_sim/momo";
/// The document's subscription key, here the collection product's.
const COLLECTION_KEY: &str = "d484a1f0d34f4301916d0f2c9e9106a2";
const DISBURSEMENT_KEY: &str = "5b0c7e2f9a1d4e6c8b3a2f1e0d9c8b7a";
/// The document's API user and API key.
const DOC_USER: &str = "c72025f5-5cd1-4630-99e4-8ba4722fad56";
const DOC_KEY: &str = "f1db798c98df4bcf83b538175893bbf0";
/// python3 -c "import base64;print(base64.b64encode(b'c72025f5-5cd1-4630-99e4-8ba4722fad56:f1db798c98df4bcf83b538175893bbf0').decode())"
const DOC_BASIC: &str =
    "YzcyMDI1ZjUtNWNkMS00NjMwLTk5ZTQtOGJhNDcyMmZhZDU2OmYxZGI3OThjOThkZjRiY2Y4M2I1MzgxNzU4OTNiYmYw";

#[test]
fn basic_authorization_matches_python() {
    assert_eq!(
        basic_authorization(DOC_USER, DOC_KEY),
        format!("Basic {DOC_BASIC}")
    );
}

#[test]
fn amounts() {
    for good in ["1", "100", "10.5", "10.50", "0.01", "007"] {
        assert!(super::valid_amount(good), "{good}");
    }
    for bad in [
        "", "0", "0.00", "-5", "1,50", ".5", "5.", "1.2.3", "1e3", " 5", "5 ",
    ] {
        assert!(!super::valid_amount(bad), "{bad}");
    }
}

/// One callback as the stub app received it.
#[derive(Clone, Debug)]
struct Received {
    method: Method,
    /// The last path segment: the reference the app put in its callback URL.
    reference: String,
    content_type: String,
    body: Value,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

/// The simulator at `/_sim/momo` and a stub app at `/momo/callback/{reference}` on one server.
struct Env {
    sim: MomoSim,
    base: String,
    own: String,
    http: reqwest::Client,
    inbox: Inbox,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stub_callback(
    State(inbox): State<Inbox>,
    Path(reference): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    inbox.lock().unwrap().push(Received {
        method,
        reference,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    "{\"ok\":true}"
}

async fn start() -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sim = MomoSim::new(
        &[
            ("collection", COLLECTION_KEY),
            ("disbursement", DISBURSEMENT_KEY),
        ],
        &base,
    );
    let inbox = Inbox::default();
    let router = Router::new()
        .route(
            "/momo/callback/{reference}",
            put(stub_callback).post(stub_callback),
        )
        .with_state(inbox.clone())
        .nest_service(MOUNT, sim.router());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Env {
        sim,
        own: format!("{base}{MOUNT}"),
        base,
        http: reqwest::Client::new(),
        inbox,
        task,
    }
}

fn uuid4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A status and the body as JSON (Null when empty).
async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// A payment body for `msisdn`.
fn payment(msisdn: &str) -> Value {
    json!({
        "amount": "100",
        "currency": "EUR",
        "externalId": "order-1",
        "payer": {"partyIdType": "MSISDN", "partyId": msisdn},
        "payerMessage": "Pay for order 1",
        "payeeNote": "order 1",
    })
}

/// What a request to pay sends: each field can be changed or dropped.
struct Rtp {
    token: String,
    reference: Option<String>,
    target: Option<&'static str>,
    callback: Option<String>,
    key: Option<&'static str>,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.own)
    }

    async fn post_api_user(
        &self,
        reference: Option<&str>,
        body: &Value,
        key: &str,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/v1_0/apiuser"))
            .header("Ocp-Apim-Subscription-Key", key)
            .json(body);
        if let Some(r) = reference {
            req = req.header("X-Reference-Id", r);
        }
        answer(req.send().await.unwrap()).await
    }

    async fn post_api_key(&self, user: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(&format!("/v1_0/apiuser/{user}/apikey")))
            .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
            .header(header::CONTENT_LENGTH, "0")
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    async fn get_api_user(&self, user: &str, key: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(&format!("/v1_0/apiuser/{user}")))
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// `POST {path}` (such as `/collection/token/`) with these headers, when given.
    async fn token_at(
        &self,
        path: &str,
        authorization: Option<&str>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header(header::CONTENT_LENGTH, "0");
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(k) = key {
            req = req.header("Ocp-Apim-Subscription-Key", k);
        }
        answer(req.send().await.unwrap()).await
    }

    /// A collection token for the document's API user.
    async fn collection_token(&self) -> String {
        self.sim.register_api_user(DOC_USER, DOC_KEY, "127.0.0.1");
        let (status, body) = self
            .token_at(
                "/collection/token/",
                Some(&basic_authorization(DOC_USER, DOC_KEY)),
                Some(COLLECTION_KEY),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A correct request to pay for `msisdn`, its callback under the stub app.
    fn rtp(&self, token: &str, msisdn: &str) -> Rtp {
        let reference = uuid4();
        Rtp {
            token: token.into(),
            callback: Some(format!("{}/momo/callback/{reference}", self.base)),
            reference: Some(reference),
            target: Some("sandbox"),
            key: Some(COLLECTION_KEY),
            content_type: "application/json",
            body: serde_json::to_vec(&payment(msisdn)).unwrap(),
        }
    }

    async fn send(&self, r: &Rtp) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.url("/collection/v1_0/requesttopay"))
            .header(header::AUTHORIZATION, format!("Bearer {}", r.token))
            .header(header::CONTENT_TYPE, r.content_type)
            .body(r.body.clone());
        for (name, value) in [
            ("X-Reference-Id", r.reference.as_deref()),
            ("X-Target-Environment", r.target),
            ("X-Callback-Url", r.callback.as_deref()),
            ("Ocp-Apim-Subscription-Key", r.key),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        answer(req.send().await.unwrap()).await
    }

    /// A request to pay that must be accepted; its reference.
    async fn pay(&self, token: &str, msisdn: &str) -> String {
        let r = self.rtp(token, msisdn);
        let (status, body) = self.send(&r).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body, Value::Null, "202 has an empty body");
        r.reference.unwrap()
    }

    async fn status(&self, token: &str, reference: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(&format!("/collection/v1_0/requesttopay/{reference}")))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("X-Target-Environment", "sandbox")
            .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// The callbacks received, once there are at least `n` (panics after 5 s).
    async fn callbacks(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.inbox.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} callbacks, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The callbacks received after a pause long enough for any due one to arrive.
    async fn callbacks_settled(&self) -> Vec<Received> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.inbox.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_documents_credentials_get_a_token_with_the_python_basic_header() {
    let env = start().await;
    env.sim.register_api_user(DOC_USER, DOC_KEY, "clinic.com");
    assert_eq!(env.sim.api_users(), 1);
    let (status, body) = env
        .token_at(
            "/collection/token/",
            Some(&format!("Basic {DOC_BASIC}")),
            Some(COLLECTION_KEY),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "access_token");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.len() >= 32);
    assert_eq!(env.sim.token_requests("collection"), 1);
    assert_eq!(env.sim.token_requests("disbursement"), 0);
    // The token works as a Bearer token.
    let reference = env.pay(token, "25677000000").await;
    assert_eq!(env.status(token, &reference).await.0, 200);
}

#[tokio::test]
async fn provisioning_round_trip() {
    let env = start().await;
    let user = uuid4();
    let host = json!({"providerCallbackHost": "clinic.com"});
    assert_eq!(
        env.post_api_user(Some(&user), &host, COLLECTION_KEY).await,
        (201, Value::Null)
    );
    let (status, body) = env.post_api_user(Some(&user), &host, COLLECTION_KEY).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "RESOURCE_ALREADY_EXIST");
    assert_eq!(
        env.get_api_user(&user, COLLECTION_KEY).await,
        (
            200,
            json!({"providerCallbackHost": "clinic.com", "targetEnvironment": "sandbox"})
        )
    );
    // Provisioning takes a subscription key of any product.
    assert_eq!(env.get_api_user(&user, DISBURSEMENT_KEY).await.0, 200);

    let (status, body) = env.post_api_key(&user).await;
    assert_eq!(status, 201);
    let key = body["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    let basic = basic_authorization(&user, &key);
    let (status, body) = env
        .token_at("/collection/token/", Some(&basic), Some(COLLECTION_KEY))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = env
        .token_at("/disbursement/token/", Some(&basic), Some(DISBURSEMENT_KEY))
        .await;
    assert_eq!(status, 200);

    // A new key replaces the old one.
    let (status, body) = env.post_api_key(&user).await;
    assert_eq!(status, 201);
    let new_key = body["apiKey"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        env.token_at("/collection/token/", Some(&basic), Some(COLLECTION_KEY))
            .await,
        (401, json!({"error": "login_failed"}))
    );
    let (status, _) = env
        .token_at(
            "/collection/token/",
            Some(&basic_authorization(&user, &new_key)),
            Some(COLLECTION_KEY),
        )
        .await;
    assert_eq!(status, 200);

    // Unknown users.
    let unknown = uuid4();
    let (status, body) = env.post_api_key(&unknown).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("RESOURCE_NOT_FOUND"))
    );
    assert_eq!(env.get_api_user(&unknown, COLLECTION_KEY).await.0, 404);

    // Reference ids that are not hyphenated UUID v4s, and bodies without a callback host.
    for bad in [
        None,
        Some("not-a-uuid"),
        Some("c232ab00-9414-11ec-b3c8-9f68deced846"),
        Some("c72025f55cd1463099e48ba4722fad56"),
    ] {
        let (status, body) = env.post_api_user(bad, &host, COLLECTION_KEY).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["message"].is_string());
    }
    for bad in [
        json!({}),
        json!({"providerCallbackHost": ""}),
        json!(["clinic.com"]),
    ] {
        let (status, _) = env
            .post_api_user(Some(&uuid4()), &bad, COLLECTION_KEY)
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(env.sim.api_users(), 1);
}

#[tokio::test]
async fn subscription_keys_are_required_and_per_product() {
    let env = start().await;
    let token = env.collection_token().await;
    let basic = basic_authorization(DOC_USER, DOC_KEY);
    let refused = |(status, body): (u16, Value), missing: bool| {
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["statusCode"], 401);
        let start = if missing {
            "Access denied due to missing subscription key"
        } else {
            "Access denied due to invalid subscription key"
        };
        assert!(
            body["message"].as_str().unwrap().starts_with(start),
            "{body}"
        );
    };
    refused(
        env.token_at("/collection/token/", Some(&basic), None).await,
        true,
    );
    refused(
        env.token_at("/collection/token/", Some(&basic), Some("0000"))
            .await,
        false,
    );
    // Another product's key, and a product the app has no subscription to.
    refused(
        env.token_at("/collection/token/", Some(&basic), Some(DISBURSEMENT_KEY))
            .await,
        false,
    );
    refused(
        env.token_at("/remittance/token/", Some(&basic), Some(COLLECTION_KEY))
            .await,
        false,
    );
    refused(
        env.post_api_user(
            Some(&uuid4()),
            &json!({"providerCallbackHost": "x"}),
            "0000",
        )
        .await,
        false,
    );
    refused(env.get_api_user(DOC_USER, "0000").await, false);

    let mut r = env.rtp(&token, "25677000000");
    r.key = None;
    refused(env.send(&r).await, true);
    r.key = Some(DISBURSEMENT_KEY);
    refused(env.send(&r).await, false);
    let reference = env.pay(&token, "25677000000").await;
    let resp = env
        .http
        .get(env.url(&format!("/collection/v1_0/requesttopay/{reference}")))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("X-Target-Environment", "sandbox")
        .header("Ocp-Apim-Subscription-Key", DISBURSEMENT_KEY)
        .send()
        .await
        .unwrap();
    refused(answer(resp).await, false);
}

#[tokio::test]
async fn token_refusals_lifetime_and_delay() {
    let env = start().await;
    env.sim.register_api_user(DOC_USER, DOC_KEY, "127.0.0.1");
    let login_failed = (401, json!({"error": "login_failed"}));
    for authorization in [
        None,
        Some(basic_authorization(
            DOC_USER,
            "f1db798c98df4bcf83b538175893bbf1",
        )),
        Some(basic_authorization(&uuid4(), DOC_KEY)),
        Some(format!("Bearer {DOC_BASIC}")),
        Some("Basic !!!".to_owned()),
        Some(format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, DOC_USER)
        )),
    ] {
        assert_eq!(
            env.token_at(
                "/collection/token/",
                authorization.as_deref(),
                Some(COLLECTION_KEY)
            )
            .await,
            login_failed,
            "{authorization:?}"
        );
    }
    assert_eq!(env.sim.token_requests("collection"), 6);
    let basic = basic_authorization(DOC_USER, DOC_KEY);
    // Only the trailing-slash path exists, and only for MoMo's products.
    for path in ["/collection/token", "/payments/token/"] {
        let (status, body) = env.token_at(path, Some(&basic), Some(COLLECTION_KEY)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // A token is Bearer only, for its own product only, and only while it lives.
    let collection = env.collection_token().await;
    let mut r = env.rtp(&collection, "25677000000");
    let send_as = |authorization: String| {
        env.http
            .post(env.url("/collection/v1_0/requesttopay"))
            .header(header::AUTHORIZATION, authorization)
            .header("X-Reference-Id", uuid4())
            .header("X-Target-Environment", "sandbox")
            .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
            .json(&payment("25677000000"))
            .send()
    };
    let (status, body) = answer(send_as(format!("access_token {collection}")).await.unwrap()).await;
    assert_eq!(status, 401, "the token_type is not the scheme: {body}");
    assert_eq!(
        answer(send_as(format!("Bearer {collection}")).await.unwrap())
            .await
            .0,
        202
    );
    let (status, body) = env
        .token_at("/disbursement/token/", Some(&basic), Some(DISBURSEMENT_KEY))
        .await;
    assert_eq!(status, 200);
    r.token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.send(&r).await.0, 401, "a disbursement token");
    r.token = "made-up".into();
    assert_eq!(env.send(&r).await.0, 401);

    env.sim.set_token_lifetime(0);
    let (status, body) = env
        .token_at("/collection/token/", Some(&basic), Some(COLLECTION_KEY))
        .await;
    assert_eq!((status, body["expires_in"].clone()), (200, json!(0)));
    r.token = body["access_token"].as_str().unwrap().to_owned();
    r.reference = Some(uuid4());
    let (status, body) = env.send(&r).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        env.sim.last_refusal().as_deref(),
        Some("the access token has expired")
    );
    env.sim.set_token_lifetime(3600);

    env.sim.set_token_delay(Duration::from_millis(300));
    let before = env.sim.token_requests("collection");
    let started = Instant::now();
    let (a, b) = tokio::join!(
        env.token_at("/collection/token/", Some(&basic), Some(COLLECTION_KEY)),
        env.token_at("/collection/token/", Some(&basic), Some(COLLECTION_KEY)),
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_ne!(a.1["access_token"], b.1["access_token"]);
    assert_eq!(env.sim.token_requests("collection"), before + 2);
}

#[tokio::test]
async fn request_to_pay_calls_back_once_with_the_status_reply() {
    let env = start().await;
    let token = env.collection_token().await;
    let reference = env.pay(&token, "25677000000").await;
    let got = env.callbacks(1).await;
    let cb = &got[0];
    assert_eq!(cb.method, Method::PUT);
    assert_eq!(cb.reference, reference);
    assert!(cb.content_type.starts_with("application/json"));
    let txid = cb.body["financialTransactionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(txid.len(), 9);
    assert_eq!(
        cb.body,
        json!({
            "amount": "100",
            "currency": "EUR",
            "financialTransactionId": txid,
            "externalId": "order-1",
            "payer": {"partyIdType": "MSISDN", "partyId": "25677000000"},
            "payerMessage": "Pay for order 1",
            "payeeNote": "order 1",
            "status": "SUCCESSFUL",
        })
    );
    assert_eq!(env.status(&token, &reference).await, (200, cb.body.clone()));
    // Upper-case reference ids name the same payment.
    assert_eq!(env.status(&token, &reference.to_uppercase()).await.0, 200);
    assert_eq!(env.callbacks_settled().await.len(), 1, "sent once");
    assert_eq!(env.sim.callbacks_sent(), 1);
    assert_eq!(env.sim.callback_answers(), vec![(reference.clone(), 200)]);
    assert_eq!(env.sim.requests_to_pay(), 1);

    // Without a callback URL nothing is sent; the status still answers.
    let mut r = env.rtp(&token, "25677000000");
    r.callback = None;
    assert_eq!(env.send(&r).await.0, 202);
    assert_eq!(env.callbacks_settled().await.len(), 1);
    let (status, body) = env.status(&token, r.reference.as_deref().unwrap()).await;
    assert_eq!((status, body["status"].clone()), (200, json!("SUCCESSFUL")));

    // The status of an unknown reference.
    let (status, body) = env.status(&token, &uuid4()).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("RESOURCE_NOT_FOUND"))
    );
}

#[tokio::test]
async fn request_to_pay_refusals() {
    let env = start().await;
    let token = env.collection_token().await;
    let first = env.rtp(&token, "25677000000");
    assert_eq!(env.send(&first).await.0, 202);
    let (status, body) = env.send(&first).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "RESOURCE_ALREADY_EXIST");
    let mut again = env.rtp(&token, "25677000000");
    again.reference = first.reference.as_ref().map(|r| r.to_uppercase());
    assert_eq!(env.send(&again).await.0, 409, "the same uuid in upper case");

    let expect = |status: u16, code: &str, r: Rtp| {
        let code = code.to_owned();
        let env = &env;
        async move {
            let (got, body) = env.send(&r).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(body["code"], code.as_str(), "{body}");
            assert!(body["message"].is_string(), "{body}");
        }
    };
    for bad in [
        None,
        Some("12345"),
        Some("c232ab00-9414-11ec-b3c8-9f68deced846"),
    ] {
        let mut r = env.rtp(&token, "25677000000");
        r.reference = bad.map(str::to_owned);
        expect(400, "BAD_REQUEST", r).await;
    }
    let mut r = env.rtp(&token, "25677000000");
    r.target = Some("mtnuganda");
    expect(403, "NOT_ALLOWED_TARGET_ENVIRONMENT", r).await;
    let mut r = env.rtp(&token, "25677000000");
    r.target = None;
    expect(400, "BAD_REQUEST", r).await;
    let port_prefix = format!("{}0/momo/callback/x", env.base);
    for url in [
        "http://evil.example/momo/callback/x",
        port_prefix.as_str(),
        "clinic.com",
    ] {
        let mut r = env.rtp(&token, "25677000000");
        r.callback = Some(url.to_owned());
        expect(400, "INVALID_CALLBACK_URL_HOST", r).await;
    }
    let mut r = env.rtp(&token, "25677000000");
    r.content_type = "text/plain";
    expect(400, "BAD_REQUEST", r).await;

    let with = |change: &dyn Fn(&mut Value)| {
        let mut r = env.rtp(&token, "25677000000");
        let mut body = payment("25677000000");
        change(&mut body);
        r.body = serde_json::to_vec(&body).unwrap();
        r
    };
    expect(400, "BAD_REQUEST", with(&|b| b["amount"] = json!(100))).await;
    expect(400, "BAD_REQUEST", with(&|b| b["amount"] = json!("1,50"))).await;
    expect(400, "BAD_REQUEST", with(&|b| b["amount"] = json!("0"))).await;
    expect(400, "BAD_REQUEST", with(&|b| b["amount"] = json!("-5"))).await;
    expect(
        400,
        "INVALID_CURRENCY",
        with(&|b| b["currency"] = json!("eur")),
    )
    .await;
    expect(400, "BAD_REQUEST", with(&|b| b["externalId"] = json!(""))).await;
    expect(
        400,
        "BAD_REQUEST",
        with(&|b| b["payer"] = json!("25677000000")),
    )
    .await;
    expect(
        400,
        "BAD_REQUEST",
        with(&|b| b["payer"]["partyIdType"] = json!("PHONE")),
    )
    .await;
    expect(
        400,
        "BAD_REQUEST",
        with(&|b| b["payer"]["partyId"] = json!("+25677000000")),
    )
    .await;
    expect(400, "BAD_REQUEST", with(&|b| b["payerMessage"] = json!(5))).await;
    let mut r = env.rtp(&token, "25677000000");
    r.body = b"amount=100".to_vec();
    expect(400, "BAD_REQUEST", r).await;

    // Other party types; messages are optional.
    let email = with(&|b| {
        b["payer"] = json!({"partyIdType": "EMAIL", "partyId": "payer@example.com"});
        b.as_object_mut().unwrap().remove("payerMessage");
    });
    assert_eq!(env.send(&email).await.0, 202);
    assert_eq!(env.sim.requests_to_pay(), 2);
}

#[tokio::test]
async fn forged_and_replayed_callbacks() {
    let env = start().await;
    let token = env.collection_token().await;
    env.sim.forge_next_callback(json!({"status": "SUCCESSFUL"}));
    let reference = env.pay(&token, "25677000001").await;
    let got = env.callbacks(1).await;
    assert_eq!(got[0].reference, reference);
    assert_eq!(got[0].body, json!({"status": "SUCCESSFUL"}));
    let (status, truth) = env.status(&token, &reference).await;
    assert_eq!(status, 200);
    assert_eq!(
        truth["status"], "FAILED",
        "the forgery does not change MoMo's answer"
    );

    // The forgery was for one callback only.
    let second = env.pay(&token, "25677000001").await;
    let got = env.callbacks(2).await;
    assert_eq!(got[1].reference, second);
    assert_eq!(got[1].body["status"], "FAILED");

    // On demand, with any method and body.
    let forged = json!({"status": "SUCCESSFUL", "financialTransactionId": "1"});
    assert_eq!(
        env.sim.send_callback(&reference, "POST", &forged).await,
        200
    );
    let got = env.callbacks(3).await;
    assert_eq!(
        (got[2].method.clone(), got[2].body.clone()),
        (Method::POST, forged)
    );
    assert_eq!(env.sim.send_callback(&uuid4(), "PUT", &json!({})).await, 0);
    let url = format!("{}/momo/callback/{}", env.base, uuid4());
    assert_eq!(env.sim.send_callback_to(&url, "PUT", &json!({})).await, 200);
    assert_eq!(env.sim.callbacks_sent(), 4);

    // Automatic callbacks by POST.
    env.sim.set_callback_method("post");
    let third = env.pay(&token, "25677000000").await;
    let got = env.callbacks(5).await;
    assert_eq!(
        (got[4].method.clone(), got[4].reference.clone()),
        (Method::POST, third)
    );
}

#[tokio::test]
async fn failed_reasons_come_as_objects_or_strings() {
    let env = start().await;
    let token = env.collection_token().await;
    let not_found = env.pay(&token, "25677000001").await;
    let rejected = env.pay(&token, "25677000003").await;
    let got = env.callbacks(2).await;
    for cb in &got {
        assert_eq!(cb.body["status"], "FAILED");
        assert!(
            cb.body.get("financialTransactionId").is_none(),
            "{:?}",
            cb.body
        );
        assert_eq!(env.status(&token, &cb.reference).await.1, cb.body);
    }
    let by_ref = |r: &str| got.iter().find(|c| c.reference == r).unwrap().body.clone();
    let reason = by_ref(&not_found)["reason"].clone();
    assert_eq!(reason["code"], "PAYER_NOT_FOUND");
    assert!(reason["message"].is_string());
    assert_eq!(by_ref(&rejected)["reason"], "APPROVAL_REJECTED");

    // Outcomes can be changed; the reason follows.
    env.sim.set_status(
        &not_found,
        "FAILED",
        Some(json!({"code": "EXPIRED", "message": "The payer did not answer"})),
    );
    let (_, body) = env.status(&token, &not_found).await;
    assert_eq!(body["reason"]["code"], "EXPIRED");
    env.sim.set_status(&rejected, "SUCCESSFUL", None);
    let (_, body) = env.status(&token, &rejected).await;
    assert_eq!(body["status"], "SUCCESSFUL");
    assert!(body.get("reason").is_none());
    assert!(body["financialTransactionId"].is_string());
    assert_eq!(
        env.callbacks_settled().await.len(),
        2,
        "callbacks already sent are not resent"
    );
}

#[tokio::test]
async fn pending_payments() {
    let env = start().await;
    let token = env.collection_token().await;
    // `2`: the callback says PENDING.
    let noisy = env.pay(&token, "25677000002").await;
    let got = env.callbacks(1).await;
    assert_eq!(got[0].reference, noisy);
    assert_eq!(got[0].body["status"], "PENDING");
    assert!(got[0].body.get("financialTransactionId").is_none());
    assert_eq!(env.status(&token, &noisy).await.1["status"], "PENDING");

    // `4`: silent until it ends, then one callback with the final status.
    let silent = env.pay(&token, "25677000004").await;
    assert_eq!(env.callbacks_settled().await.len(), 1);
    assert_eq!(env.status(&token, &silent).await.1["status"], "PENDING");
    env.sim.set_status(&silent, "SUCCESSFUL", None);
    let got = env.callbacks(2).await;
    assert_eq!(got[1].reference, silent);
    assert_eq!(got[1].body["status"], "SUCCESSFUL");
    assert!(got[1].body["financialTransactionId"].is_string());
    env.sim
        .set_status(&silent, "FAILED", Some(json!("INTERNAL_PROCESSING_ERROR")));
    assert_eq!(
        env.callbacks_settled().await.len(),
        2,
        "one callback per payment"
    );

    // A forgery claiming success for a payment still pending.
    env.sim.forge_next_callback(json!({"status": "SUCCESSFUL"}));
    let pending = env.pay(&token, "25677000002").await;
    let got = env.callbacks(3).await;
    assert_eq!(
        (got[2].reference.clone(), got[2].body.clone()),
        (pending.clone(), json!({"status": "SUCCESSFUL"}))
    );
    assert_eq!(env.status(&token, &pending).await.1["status"], "PENDING");
}

/// Each fault of the next request to pay: what the app gets, and whether MoMo took the payment
/// (its status answers, its callback goes out). Every request arriving is counted.
#[tokio::test]
async fn faults_of_the_next_request_to_pay() {
    let env = start().await;
    let token = env.collection_token().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let send = |r: &Rtp| {
        client
            .post(env.url("/collection/v1_0/requesttopay"))
            .header(header::AUTHORIZATION, format!("Bearer {}", r.token))
            .header(header::CONTENT_TYPE, r.content_type)
            .header("X-Reference-Id", r.reference.clone().unwrap())
            .header("X-Target-Environment", "sandbox")
            .header("X-Callback-Url", r.callback.clone().unwrap())
            .header("Ocp-Apim-Subscription-Key", COLLECTION_KEY)
            .body(r.body.clone())
            .send()
    };

    // Taken, answered too late: the client gives up, the payment exists and calls back.
    env.sim
        .fault_next_request_to_pay(RequestToPayFault::AcceptThenStall(Duration::from_secs(2)));
    let r = env.rtp(&token, "25677000000");
    let err = send(&r)
        .await
        .expect_err("the answer comes after the timeout");
    assert!(err.is_timeout(), "{err}");
    let reference = r.reference.unwrap();
    assert_eq!(env.status(&token, &reference).await.0, 200);
    assert_eq!(env.callbacks(1).await[0].reference, reference);

    // Taken, answered 503.
    env.sim
        .fault_next_request_to_pay(RequestToPayFault::AcceptThenFail(503));
    let r = env.rtp(&token, "25677000000");
    assert_eq!(send(&r).await.unwrap().status().as_u16(), 503);
    assert_eq!(
        env.status(&token, r.reference.as_deref().unwrap()).await.0,
        200
    );

    // Taken, the connection closed without an answer.
    env.sim
        .fault_next_request_to_pay(RequestToPayFault::AcceptThenDrop);
    let r = env.rtp(&token, "25677000000");
    let err = send(&r).await.expect_err("no answer");
    assert!(!err.is_timeout() && !err.is_connect(), "{err}");
    assert_eq!(
        env.status(&token, r.reference.as_deref().unwrap()).await.0,
        200
    );

    // Taken, an answer that is not MoMo's.
    env.sim
        .fault_next_request_to_pay(RequestToPayFault::AcceptThenGarble);
    let r = env.rtp(&token, "25677000000");
    let resp = send(&r).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("<html>"));
    assert_eq!(
        env.status(&token, r.reference.as_deref().unwrap()).await.0,
        200
    );
    assert_eq!(env.sim.requests_to_pay(), 4, "all four were taken");

    // Not taken: 500, then a 400 refusal. The status does not know them; no callback.
    for code in [500, 400] {
        env.sim
            .fault_next_request_to_pay(RequestToPayFault::Refuse(code));
        let r = env.rtp(&token, "25677000000");
        assert_eq!(send(&r).await.unwrap().status().as_u16(), code);
        assert_eq!(
            env.status(&token, r.reference.as_deref().unwrap()).await.0,
            404
        );
    }
    assert_eq!(env.sim.requests_to_pay(), 4);
    assert_eq!(env.sim.requests_to_pay_received(), 6);

    // The fault was for one request only.
    let r = env.rtp(&token, "25677000000");
    assert_eq!(send(&r).await.unwrap().status().as_u16(), 202);
    assert_eq!(env.sim.requests_to_pay_received(), 7);
}

/// Lost callbacks never arrive, and a later status change sends none either.
#[tokio::test]
async fn dropped_callbacks() {
    let env = start().await;
    let token = env.collection_token().await;
    env.sim.set_drop_callbacks(true);
    env.pay(&token, "25677000000").await;
    let silent = env.pay(&token, "25677000004").await;
    env.sim.set_status(&silent, "SUCCESSFUL", None);
    assert!(env.callbacks_settled().await.is_empty());
    assert_eq!(env.sim.callbacks_dropped(), 2);
    assert_eq!(env.sim.callbacks_sent(), 0);

    env.sim.set_drop_callbacks(false);
    env.pay(&token, "25677000000").await;
    assert_eq!(env.callbacks(1).await.len(), 1);
}
