//! The simulator driven over real HTTP (a listener on 127.0.0.1:0, `axum::serve`), as a browser
//! and an app would, its answers checked with tools other than its own: jsonwebtoken's decoder
//! on the JWKS it serves, aws-lc-rs's SHA-256, and an HMAC computed by python3.

use super::{HaravanSim, SimUser, left_half_hash};
use crate::kit::with_query;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Router, body::Bytes};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "sim-client";
const CLIENT_SECRET: &str = "sim-secret";
/// The default admin of org 1000111111 (role "admin").
const ADMIN: &str = "200000011111";
const ORG: &str = "1000111111";
/// The default staff member of org 1000333333.
const STAFF: &str = "200000033333";
const LOGIN_SCOPE: &str = "openid profile email org userinfo";
const INSTALL_SCOPE: &str = "openid profile email org userinfo grant_service offline_access \
                             wh_api com.write_products com.read_products";

/// What the stub app received.
#[derive(Default)]
struct AppLog {
    /// Topic, org id, signature header and raw body of each webhook.
    webhooks: Vec<(String, String, String, String)>,
    /// The query of each front-channel logout.
    logouts: Vec<String>,
}

type Log = Arc<Mutex<AppLog>>;

/// The simulator mounted at `/_sim/haravan` beside a stub of the app's webhook and logout
/// routes, on one server.
struct Env {
    sim: HaravanSim,
    base: String,
    own: String,
    http: reqwest::Client,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn app_webhook(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> &'static str {
    log.lock().unwrap().webhooks.push((
        header(&headers, "x-haravan-topic"),
        header(&headers, "x-haravan-org-id"),
        header(&headers, "x-haravan-hmacsha256"),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    "received"
}

async fn app_verify(RawQuery(raw): RawQuery) -> (axum::http::StatusCode, String) {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if q.get("hub.verify_token").map(String::as_str) == Some("verify-me") {
        (axum::http::StatusCode::OK, q["hub.challenge"].clone())
    } else {
        (axum::http::StatusCode::UNAUTHORIZED, String::new())
    }
}

async fn app_logout(State(log): State<Log>, RawQuery(raw): RawQuery) -> &'static str {
    log.lock().unwrap().logouts.push(raw.unwrap_or_default());
    "signed out"
}

async fn start() -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let own = format!("{base}/_sim/haravan");
    let sim = HaravanSim::new(CLIENT_ID, CLIENT_SECRET, &base, &own);
    let log = Log::default();
    let router = Router::new()
        .route("/haravan/webhooks", post(app_webhook).get(app_verify))
        .route("/haravan/logout", get(app_logout))
        .with_state(log.clone())
        .nest_service("/_sim/haravan", sim.router());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env {
        sim,
        base,
        own,
        http,
        log,
        task,
    }
}

/// What the app's redirect URI receives from one sign-in.
struct Callback {
    action: String,
    fields: HashMap<String, String>,
    nonce: String,
}

impl Env {
    fn login_uri(&self) -> String {
        format!("{}/haravan/install/login", self.base)
    }

    fn install_uri(&self) -> String {
        format!("{}/haravan/install/grandservice", self.base)
    }

    async fn authorize(&self, params: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .get(with_query(
                &format!("{}/connect/authorize", self.own),
                params,
            ))
            .send()
            .await
            .unwrap()
    }

    /// authorize → the sign-in page → `sub` chosen → the form_post page, read as a browser.
    async fn sign_in(&self, redirect_uri: &str, scope: &str, sub: &str, orgid: &str) -> Callback {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let page = self
            .authorize(&[
                ("response_mode", "form_post"),
                ("response_type", "code id_token"),
                ("scope", scope),
                ("client_id", CLIENT_ID),
                ("redirect_uri", redirect_uri),
                ("nonce", &nonce),
                ("state", "st<&>ate"),
                ("orgid", orgid),
            ])
            .await;
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(sub), "the sign-in page offers {sub}: {html}");
        let (action, mut fields) = HaravanSim::parse_form_post(&html);
        assert_eq!(action, format!("{}/login", self.own));
        fields.push(("sub".into(), sub.into()));
        let posted = self.http.post(&action).form(&fields).send().await.unwrap();
        assert_eq!(posted.status(), 200);
        let html = posted.text().await.unwrap();
        assert!(html.contains("<form method=\"post\""));
        assert!(html.contains("submit()"), "the form submits itself");
        assert!(html.contains("<button"), "and can be submitted by hand");
        let (action, fields) = HaravanSim::parse_form_post(&html);
        Callback {
            action,
            fields: fields.into_iter().collect(),
            nonce,
        }
    }

    async fn token(&self, form: &[(&str, &str)], basic: bool) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/connect/token", self.own));
        let mut form: Vec<(&str, &str)> = form.to_vec();
        if basic {
            req = req.basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
        } else {
            form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
        }
        let resp = req.form(&form).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn redeem(&self, code: &str, redirect_uri: &str, basic: bool) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ],
            basic,
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            false,
        )
        .await
    }

    async fn bearer(&self, method: reqwest::Method, path: &str, token: &str) -> u16 {
        self.http
            .request(method, format!("{}{path}", self.own))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Verifies `token` as a relying party would: discovery → jwks_uri → the key of the
    /// token's kid → RS256 signature, iss, aud, exp.
    async fn verify(&self, token: &str) -> Value {
        let discovery: Value = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.own))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(discovery["issuer"], self.own);
        let jwks: Value = self
            .http
            .get(discovery["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("the token's kid is in the JWKS");
        assert_eq!(
            (&jwk["kty"], &jwk["use"], &jwk["alg"]),
            (&json!("RSA"), &json!("sig"), &json!("RS256"))
        );
        let key = jsonwebtoken::DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[CLIENT_ID]);
        validation.set_issuer(&[&self.own]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .expect("the id_token verifies against the served JWKS")
            .claims
    }
}

/// c_hash / at_hash computed with aws-lc-rs's SHA-256 rather than the simulator's sha2.
fn independent_half_hash(value: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

#[test]
fn hashes_reproduce_the_documents_vectors() {
    let code = "c309cc6a97e7da821975d2440645892a95f13ce8e06af81ecffe5ed9db8fe7a3";
    let access_token = "86f6ab839b301903cc6223dbe236aaa874fa5aa882b8d3d121ba91f8ce660f35";
    assert_eq!(left_half_hash(code), "FoWHTKQNtIaQVwEJX9mPLA");
    assert_eq!(left_half_hash(access_token), "yUpphhMynvTIJVWKsJC-Kw");
    assert_eq!(independent_half_hash(code), "FoWHTKQNtIaQVwEJX9mPLA");
}

#[tokio::test]
async fn login_install_refresh_and_subscribe() {
    let env = start().await;

    // Login: the form_post carries code, id_token, scope, session_state and the state.
    let login = env.sign_in(&env.login_uri(), LOGIN_SCOPE, ADMIN, ORG).await;
    assert_eq!(login.action, env.login_uri());
    let mut names: Vec<&str> = login.fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["code", "id_token", "scope", "session_state", "state"]
    );
    assert_eq!(login.fields["state"], "st<&>ate");
    assert_eq!(login.fields["scope"], LOGIN_SCOPE);
    let code = &login.fields["code"];
    let claims = env.verify(&login.fields["id_token"]).await;
    assert_eq!(claims["nonce"], login.nonce.as_str());
    assert_eq!(claims["c_hash"], independent_half_hash(code).as_str());
    assert_eq!(claims["sub"], ADMIN);
    assert_eq!(claims["orgid"], ORG);
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["orgname"], "demo-one");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    for claim in ["nbf", "auth_time", "name", "email"] {
        assert!(claims.get(claim).is_some(), "{claim} is present");
    }
    let sid = claims["sid"].as_str().unwrap().to_owned();
    assert_eq!(env.sim.session_sid(ADMIN).as_deref(), Some(sid.as_str()));

    // The code, with the client in the body: no refresh token without offline_access.
    let (status, tokens) = env.redeem(code, &env.login_uri(), false).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 86400);
    assert_eq!(tokens["scope"], LOGIN_SCOPE);
    assert!(tokens.get("refresh_token").is_none());
    let login_access = tokens["access_token"].as_str().unwrap();
    let claims = env.verify(tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(
        claims["at_hash"],
        independent_half_hash(login_access).as_str()
    );
    assert_eq!(claims["nonce"], login.nonce.as_str());
    assert_eq!(claims["sid"], sid.as_str());

    // userinfo takes any live token with openid.
    let info: Value = env
        .http
        .get(format!("{}/connect/userinfo", env.own))
        .bearer_auth(login_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&info["sub"], &info["orgid"]), (&json!(ADMIN), &json!(ORG)));

    // A code works once.
    let (status, again) = env.redeem(code, &env.login_uri(), false).await;
    assert_eq!((status, &again["error"]), (400, &json!("invalid_grant")));

    // Install: same user, same sid; the client in HTTP Basic; offline_access → refresh token.
    let install = env
        .sign_in(&env.install_uri(), INSTALL_SCOPE, ADMIN, ORG)
        .await;
    assert_eq!(install.action, env.install_uri());
    let claims = env.verify(&install.fields["id_token"]).await;
    assert_eq!(claims["sid"], sid.as_str(), "one session across sign-ins");
    let code = &install.fields["code"];
    let (status, wrong) = env.redeem(code, &env.login_uri(), true).await;
    assert_eq!(
        (status, &wrong["error"]),
        (400, &json!("invalid_grant")),
        "redirect_uri must be the authorize request's"
    );
    // (the code was not spent by the refused attempt)
    let (status, tokens) = env.redeem(code, &env.install_uri(), true).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(env.sim.token_requests("authorization_code"), 4);

    // The shop API and webhook subscription take the install token only.
    use reqwest::Method;
    assert_eq!(
        env.bearer(Method::GET, "/api/com/shop.json", &access).await,
        200
    );
    assert_eq!(
        env.bearer(Method::GET, "/api/com/shop.json", login_access)
            .await,
        403
    );
    assert_eq!(
        env.bearer(Method::GET, "/api/com/shop.json", "nope").await,
        401
    );
    let shop: Value = env
        .http
        .get(format!("{}/api/com/shop.json", env.own))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shop["shop"]["id"], 1000111111u64);
    let sub = "/webhook/api/subscribe";
    assert_eq!(
        env.bearer(Method::POST, sub, login_access).await,
        403,
        "no wh_api"
    );
    assert_eq!(env.bearer(Method::POST, sub, "nope").await, 401);
    assert_eq!(env.sim.subscriptions(ORG), 0);
    assert_eq!(env.bearer(Method::POST, sub, &access).await, 200);
    assert_eq!(env.bearer(Method::POST, sub, &access).await, 200);
    assert_eq!(env.sim.subscriptions(ORG), 1, "subscribing again adds none");
    assert_eq!(env.sim.subscribe_calls(ORG), 3);
    let listed: Value = env
        .http
        .get(format!("{}{sub}", env.own))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["client_id"], CLIENT_ID);
    assert_eq!(env.bearer(Method::DELETE, sub, &access).await, 200);
    assert_eq!(env.sim.subscriptions(ORG), 0);

    // Refresh rotates: a new pair, the old refresh token refused, the new one honoured.
    let (status, wider) = env
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "openid com.write_orders"),
            ],
            false,
        )
        .await;
    assert_eq!((status, &wider["error"]), (400, &json!("invalid_scope")));
    let (status, renewed) = env.refresh(&refresh).await;
    assert_eq!(status, 200, "{renewed}");
    let new_refresh = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh);
    assert_ne!(renewed["access_token"], access.as_str());
    let claims = env.verify(renewed["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sid"], sid.as_str());
    assert_eq!(
        claims["at_hash"],
        independent_half_hash(renewed["access_token"].as_str().unwrap()).as_str()
    );
    let renewed_access = renewed["access_token"].as_str().unwrap();
    assert_eq!(
        env.bearer(Method::GET, "/api/com/shop.json", renewed_access)
            .await,
        200
    );
    let (status, reused) = env.refresh(&refresh).await;
    assert_eq!((status, &reused["error"]), (400, &json!("invalid_grant")));
    let (status, _) = env.refresh(&new_refresh).await;
    assert_eq!(status, 200);
    assert_eq!(env.sim.token_requests("refresh_token"), 4);
}

#[tokio::test]
async fn token_endpoint_errors_are_rfc6749() {
    let env = start().await;
    let login = env.sign_in(&env.login_uri(), LOGIN_SCOPE, ADMIN, ORG).await;
    let code = login.fields["code"].as_str();
    let url = format!("{}/connect/token", env.own);
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &env.login_uri()),
    ];
    let status_and_error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    };

    let wrong_secret = env
        .http
        .post(&url)
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&grant)
        .send()
        .await
        .unwrap();
    assert!(wrong_secret.headers().contains_key("www-authenticate"));
    assert_eq!(
        status_and_error(wrong_secret).await,
        (401, "invalid_client".into())
    );
    let mut body_wrong = grant.to_vec();
    body_wrong.extend([("client_id", CLIENT_ID), ("client_secret", "wrong")]);
    let resp = env.http.post(&url).form(&body_wrong).send().await.unwrap();
    assert_eq!(status_and_error(resp).await, (401, "invalid_client".into()));
    let resp = env.http.post(&url).form(&grant).send().await.unwrap();
    assert_eq!(
        status_and_error(resp).await,
        (401, "invalid_client".into()),
        "no client authentication at all"
    );

    let (status, body) = env.token(&[("grant_type", "password")], false).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("unsupported_grant_type"))
    );
    let (status, body) = env.token(&[("code", code)], false).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    let json_body = env
        .http
        .post(&url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .json(&json!({"grant_type": "authorization_code", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_error(json_body).await,
        (400, "invalid_request".into()),
        "the body must be a form"
    );
    let (status, body) = env.redeem("unknown-code", &env.login_uri(), false).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    // None of the refused attempts spent the code.
    let (status, _) = env.redeem(code, &env.login_uri(), true).await;
    assert_eq!(status, 200);
    assert_eq!(env.sim.token_requests("authorization_code"), 5);
    assert_eq!(env.sim.token_requests("password"), 1);
}

#[tokio::test]
async fn authorize_refuses_what_haravan_would() {
    let env = start().await;
    let login_uri = env.login_uri();
    let good: Vec<(&str, &str)> = vec![
        ("response_mode", "form_post"),
        ("response_type", "code id_token"),
        ("scope", LOGIN_SCOPE),
        ("client_id", CLIENT_ID),
        ("redirect_uri", &login_uri),
        ("nonce", "n-0S6_WzA2Mj"),
    ];
    assert_eq!(env.authorize(&good).await.status(), 200);
    let with = |name: &'static str, value: &'static str| {
        let mut params = good.clone();
        params.retain(|(k, _)| *k != name);
        if !value.is_empty() {
            params.push((name, value));
        }
        params
    };
    let cases = [
        with("client_id", "someone-else"),
        with("redirect_uri", "http://127.0.0.1:1/haravan/install/login"),
        with("redirect_uri", "http://evil.example/install/login"),
        with("response_mode", "query"),
        with("response_mode", ""),
        with("response_type", "code"),
        with("nonce", ""),
        with("scope", "profile email"),
        with("scope", "openid,profile,email"),
        with("scope", "openid com.write_products"),
        with("scope", "openid com.products"),
    ];
    for params in cases {
        let resp = env.authorize(&params).await;
        assert_eq!(resp.status(), 400, "{params:?} is refused");
        assert!(resp.text().await.unwrap().contains("error"));
    }
    let mut repeated = good.clone();
    repeated.push(("nonce", "again"));
    assert_eq!(env.authorize(&repeated).await.status(), 400);

    // orgid filters the sign-in page, and a user of another org cannot sign in under it.
    let mut for_org = good.clone();
    for_org.push(("orgid", ORG));
    let html = env.authorize(&for_org).await.text().await.unwrap();
    assert!(html.contains(ADMIN) && !html.contains(STAFF));
    let (action, mut fields) = HaravanSim::parse_form_post(&html);
    fields.push(("sub".into(), STAFF.into()));
    let resp = env.http.post(&action).form(&fields).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // Cancel posts access_denied back to the app.
    let (action, mut fields) = HaravanSim::parse_form_post(&html);
    fields.push(("cancel".into(), "1".into()));
    let html = env
        .http
        .post(&action)
        .form(&fields)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, fields) = HaravanSim::parse_form_post(&html);
    assert_eq!(action, login_uri);
    assert_eq!(fields, [("error".to_owned(), "access_denied".to_owned())]);
}

#[tokio::test]
async fn keys_rotate_and_unpublished_keys_stay_unlisted() {
    let env = start().await;
    let claims = json!({"iss": env.own, "aud": CLIENT_ID, "sub": "x", "exp": 4_000_000_000u64});
    let first = env.sim.sign_id_token(&claims);
    assert_eq!(env.verify(&first).await["sub"], "x");
    assert_eq!(env.sim.jwks_fetches(), 1);
    let first_kid = env.sim.current_kid();

    env.sim.rotate_key();
    assert_ne!(env.sim.current_kid(), first_kid);
    let jwks: Value = env
        .http
        .get(format!("{}/.well-known/openid-configuration/jwks", env.own))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [env.sim.current_kid()], "only the new key is served");
    let second = env.sim.sign_id_token(&claims);
    assert_eq!(env.verify(&second).await["sub"], "x");
    assert_eq!(env.sim.jwks_fetches(), 3);

    let rogue = env.sim.sign_with_unpublished_key(&claims);
    let rogue_kid = jsonwebtoken::decode_header(&rogue).unwrap().kid.unwrap();
    assert!(!kids.contains(&rogue_kid.as_str()));
    assert_ne!(rogue_kid, first_kid);
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let env = start().await;
    env.sim.set_access_token_lifetime(0);
    let install = env
        .sign_in(&env.install_uri(), INSTALL_SCOPE, ADMIN, ORG)
        .await;
    let (_, tokens) = env
        .redeem(&install.fields["code"], &env.install_uri(), false)
        .await;
    assert_eq!(tokens["expires_in"], 0);
    let access = tokens["access_token"].as_str().unwrap();
    let shop = "/api/com/shop.json";
    assert_eq!(env.bearer(reqwest::Method::GET, shop, access).await, 401);

    env.sim.set_access_token_lifetime(3600);
    let (status, renewed) = env.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let access = renewed["access_token"].as_str().unwrap();
    assert_eq!(env.bearer(reqwest::Method::GET, shop, access).await, 200);

    env.sim.revoke_refresh_tokens(ORG);
    let (status, body) = env
        .refresh(renewed["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    assert_eq!(
        env.bearer(reqwest::Method::GET, shop, access).await,
        200,
        "access tokens outlive a refresh-token revocation"
    );
    env.sim.uninstall(ORG);
    assert_eq!(env.bearer(reqwest::Method::GET, shop, access).await, 401);
}

#[tokio::test]
async fn webhooks_and_logouts_reach_the_app() {
    let env = start().await;

    // The signature, against python3: base64(hmac.new(b"sim-secret", body, sha256).digest()).
    let body = json!({"org_id": 1000111111u64, "name": "demo-one"});
    let (status, answer) = env.sim.send_webhook("shop/update", ORG, &body).await;
    assert_eq!((status, answer.as_str()), (200, "received"));
    {
        let log = env.log.lock().unwrap();
        let (topic, org, signature, raw) = &log.webhooks[0];
        assert_eq!((topic.as_str(), org.as_str()), ("shop/update", ORG));
        assert_eq!(raw, r#"{"org_id":1000111111,"name":"demo-one"}"#);
        assert_eq!(signature, "JavzP1pxalWd4B48UEMy9dlH0EppNHv60wcUGv8wyQM=");
    }

    // The dev button sends the documented uninstall record and uninstalls first.
    let install = env
        .sign_in(&env.install_uri(), INSTALL_SCOPE, ADMIN, ORG)
        .await;
    let (_, tokens) = env
        .redeem(&install.fields["code"], &env.install_uri(), false)
        .await;
    let access = tokens["access_token"].as_str().unwrap();
    let relayed = env
        .http
        .post(format!(
            "{}/_send_webhook?topic=app/uninstalled&orgid={ORG}",
            env.own
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.status(), 200);
    assert_eq!(relayed.text().await.unwrap(), "received");
    {
        let log = env.log.lock().unwrap();
        let (topic, _, _, raw) = &log.webhooks[1];
        assert_eq!(topic, "app/uninstalled");
        let record: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(record["org_id"], 1000111111u64);
        assert_eq!(record["client_id"], CLIENT_ID);
        assert_eq!(record["event_type"], "app/uninstalled");
    }
    assert_eq!(
        env.bearer(reqwest::Method::GET, "/api/com/shop.json", access)
            .await,
        401
    );

    // Front-channel logout: the app hears sid and iss; the next sign-in is a new session.
    let sid = env.sim.session_sid(ADMIN).unwrap();
    assert_eq!(env.sim.front_channel_logout(&sid).await, 200);
    let expected: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sid", &sid)
        .append_pair("iss", &env.own)
        .finish();
    assert_eq!(env.log.lock().unwrap().logouts, [expected]);
    assert_eq!(env.sim.session_sid(ADMIN), None);
    let again = env.sign_in(&env.login_uri(), LOGIN_SCOPE, ADMIN, ORG).await;
    let claims = env.verify(&again.fields["id_token"]).await;
    assert_ne!(claims["sid"], sid.as_str());

    // The dev logout button, by sub.
    let relayed = env
        .http
        .post(format!("{}/_logout?sub={ADMIN}", env.own))
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.status(), 200);
    assert_eq!(relayed.text().await.unwrap(), "signed out");
    assert_eq!(env.log.lock().unwrap().logouts.len(), 2);

    // RP-initiated logout: the hinted session ends, the app hears it, the browser goes back.
    let signed_in = env.sign_in(&env.login_uri(), LOGIN_SCOPE, ADMIN, ORG).await;
    let sid = env.sim.session_sid(ADMIN).unwrap();
    let back = format!("{}/signed-out", env.base);
    let end = env
        .http
        .get(with_query(
            &format!("{}/connect/endsession", env.own),
            &[
                ("id_token_hint", &signed_in.fields["id_token"]),
                ("post_logout_redirect_uri", &back),
                ("state", "s 1"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), 303);
    assert_eq!(
        end.headers()["location"],
        format!("{back}?state=s+1").as_str()
    );
    assert_eq!(env.sim.session_sid(ADMIN), None);
    let logouts = env.log.lock().unwrap().logouts.clone();
    assert_eq!(logouts.len(), 3);
    assert!(logouts[2].starts_with(&format!("sid={sid}&")));
    let forged = env.sim.sign_with_unpublished_key(&json!({"sid": "x"}));
    let refused = env
        .http
        .get(with_query(
            &format!("{}/connect/endsession", env.own),
            &[("id_token_hint", &forged)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    assert_eq!(env.sim.verify_webhook("verify-me").await, (200, true));
    assert_eq!(env.sim.verify_webhook("wrong").await.0, 401);
}

#[tokio::test]
async fn users_can_be_added_with_array_roles() {
    let env = start().await;
    env.sim.add_user(SimUser {
        sub: "300000000001".into(),
        name: "Thu Pham".into(),
        email: "thu@demo-four.example".into(),
        orgid: "1000444444".into(),
        orgname: "demo-four".into(),
        role: json!(["staff", "admin"]),
    });
    let login = env
        .sign_in(&env.login_uri(), LOGIN_SCOPE, "300000000001", "1000444444")
        .await;
    let claims = env.verify(&login.fields["id_token"]).await;
    assert_eq!(claims["role"], json!(["staff", "admin"]));
    assert_eq!(claims["orgid"], "1000444444");
    let defaults = env.sim.users();
    let two = defaults.iter().find(|u| u.orgid == "1000222222").unwrap();
    assert_eq!(two.role, json!(["com_api.admin", "admin"]));
}

#[tokio::test]
async fn token_delay_holds_the_answer() {
    let env = start().await;
    env.sim.set_token_delay(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _) = env.token(&[("grant_type", "refresh_token")], false).await;
    assert_eq!(status, 400);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn parse_form_post_reads_like_a_browser() {
    let html = "<html><body onload='document.forms[0].submit()'>\
        <FORM method=post action=\"https://app.example/cb?a=1&amp;b=2\">\
        <input type=\"hidden\" name=\"code\" value=\"a&quot;b&#39;c&lt;&gt;&#x26;\"/>\
        <input type='hidden' name='state' value='x > y'>\
        <input name=empty>\
        <button type=submit>Go</button></FORM>\
        <form action=\"/other\"><input name=\"no\" value=\"no\"></form>";
    let (action, fields) = HaravanSim::parse_form_post(html);
    assert_eq!(action, "https://app.example/cb?a=1&b=2");
    let expected = [("code", "a\"b'c<>&"), ("state", "x > y"), ("empty", "")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields, expected);
}
