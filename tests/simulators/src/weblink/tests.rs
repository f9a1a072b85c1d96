//! The simulator driven over real HTTP (a listener on 127.0.0.1:0, `axum::serve`), as a browser
//! and an app would, its answers checked with tools other than its own: jsonwebtoken's decoder
//! on the JWKS it serves, aws-lc-rs's SHA-256, and PKCE vectors from RFC 7636, the Administrate
//! document and python3.

use super::{SimUser, WeblinkSim};
use crate::kit::with_query;
use axum::Router;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PORTAL: &str = "demo.administrateweblink.com";
const BRAND: &str = "demo-brand";
const CLIENT_ID: &str = "demo-client";
const IDP: &str = "demo.identity.getadministrate.com";
const JANE: &str = "jane@example.com";
const STATE: &str = "st<&>ate";
/// The scope an OpenID Connect client sends.
const SCOPE: &str = "openid profile email offline_access";
const NONCE: &str = "n-0S6_WzA2Mj";

/// The simulator mounted at `/_sim/weblink` on its own server.
struct Env {
    sim: WeblinkSim,
    base: String,
    own: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let own = format!("{base}/_sim/weblink");
    let sim = WeblinkSim::new(&own, &base);
    let router = Router::new().nest_service("/_sim/weblink", sim.router());
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
        task,
    }
}

/// A fresh valid verifier: 64 hex characters.
fn verifier() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The S256 challenge by aws-lc-rs's SHA-256 rather than the simulator's sha2.
fn independent_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// `(status, JSON body)`.
async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The query of a response's `Location`, which must start with `prefix`.
fn location_query(resp: &reqwest::Response, prefix: &str) -> HashMap<String, String> {
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(location.starts_with(prefix), "{location}");
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

impl Env {
    fn redirect_uri(&self) -> String {
        format!("{}/weblink/callback", self.base)
    }

    async fn guest(&self, content_type: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/portal/guest", self.own))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    async fn host_lookup(&self, host: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(with_query(
                &format!("{}/portal_config", self.own),
                &[("host", host)],
            ))
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// The authorize query the app sends for the demo portal.
    fn authorize_params(&self, challenge: &str) -> Vec<(&'static str, String)> {
        vec![
            ("brand", BRAND.into()),
            ("client_id", CLIENT_ID.into()),
            ("code_challenge", challenge.into()),
            ("code_challenge_method", "S256".into()),
            ("redirect_uri", self.redirect_uri()),
            ("response_type", "code".into()),
            ("scope", SCOPE.into()),
            ("state", STATE.into()),
            ("nonce", NONCE.into()),
        ]
    }

    async fn authorize(&self, domain: &str, params: &[(&str, String)]) -> reqwest::Response {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.http
            .get(with_query(
                &format!("{}/idp/{domain}/authorize", self.own),
                &params,
            ))
            .send()
            .await
            .unwrap()
    }

    /// The sign-in page's form submitted with `email`, `password` (and `extra`) filled in.
    async fn submit(
        &self,
        page: reqwest::Response,
        domain: &str,
        fill: &[(&str, &str)],
    ) -> reqwest::Response {
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        let (action, mut fields) = WeblinkSim::parse_form(&html);
        assert_eq!(action, format!("{}/idp/{domain}/login", self.own));
        for (name, value) in fill {
            fields.retain(|(k, _)| k != name);
            fields.push(((*name).into(), (*value).into()));
        }
        self.http.post(&action).form(&fields).send().await.unwrap()
    }

    /// authorize → sign-in page → `email` signs in → the code the redirect URI receives.
    async fn sign_in_at(&self, domain: &str, params: &[(&str, String)], email: &str) -> String {
        let page = self.authorize(domain, params).await;
        let resp = self
            .submit(page, domain, &[("email", email), ("password", "password")])
            .await;
        let query = location_query(&resp, &format!("{}?", self.redirect_uri()));
        assert_eq!(query["state"], STATE);
        assert_eq!(query.len(), 2, "code and state: {query:?}");
        query["code"].clone()
    }

    /// A code of Jane's at the demo portal's IDP for `verifier`.
    async fn sign_in(&self, verifier: &str) -> String {
        let params = self.authorize_params(&independent_challenge(verifier));
        self.sign_in_at(IDP, &params, JANE).await
    }

    async fn token_json(&self, domain: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/idp/{domain}/token", self.own))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    async fn token_form(&self, domain: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/idp/{domain}/token", self.own))
            .form(form)
            .send()
            .await
            .unwrap();
        answer(resp).await
    }

    /// The document's token request: `{code, client_id, code_verifier}` as JSON.
    async fn exchange(&self, code: &str, verifier: &str) -> (u16, Value) {
        self.token_json(
            IDP,
            &json!({"code": code, "client_id": CLIENT_ID, "code_verifier": verifier}),
        )
        .await
    }

    /// The token's claims, verified with jsonwebtoken against the JWKS the simulator serves.
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let jwks: Value = self
            .http
            .get(format!("{}/.well-known/jwks.json", self.own))
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
            .ok_or("the token's kid is not in the JWKS")?;
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
        validation.set_audience(&["weblink2ui"]);
        validation.set_issuer(&["https://identity.getadministrate.com/"]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }
}

fn assert_invalid_grant((status, body): (u16, Value), description: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": description})
    );
}

#[test]
fn pkce_vectors() {
    // RFC 7636 appendix B.
    assert_eq!(
        WeblinkSim::challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    // The Administrate document's (whose verifier is too short to be valid).
    assert_eq!(
        WeblinkSim::challenge("unique_and_r@nd0M!_string"),
        "Ia6CrXEp0F-eOk_i1JHCLF_LkHW4zBoRYBADp6b0kjg"
    );
    // python3 -c 'import hashlib,base64; v="Zz9-._~"*18+"xx"; print(base64.urlsafe_b64encode(
    //   hashlib.sha256(v.encode()).digest()).decode().rstrip("="))'
    let longest = format!("{}xx", "Zz9-._~".repeat(18));
    assert_eq!(longest.len(), 128);
    assert_eq!(
        WeblinkSim::challenge(&longest),
        "S-6ODx15tWHChO8AIMbLVjBhsb0DLMNJah-KtqZdZwc"
    );
    // python3 -c 'import hashlib,base64; print(base64.urlsafe_b64encode(
    //   hashlib.sha256(b"a"*43).digest()).decode().rstrip("="))'
    let shortest = "a".repeat(43);
    assert_eq!(
        WeblinkSim::challenge(&shortest),
        "ZtNPunH49FD35FWYhT5Tv8I7vRKQJ8uxMaL0_9eHjNA"
    );

    assert!(WeblinkSim::valid_verifier(
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    ));
    assert!(WeblinkSim::valid_verifier(&longest));
    assert!(WeblinkSim::valid_verifier(&shortest));
    assert!(!WeblinkSim::valid_verifier("unique_and_r@nd0M!_string"));
    assert!(!WeblinkSim::valid_verifier(&"a".repeat(42)));
    assert!(!WeblinkSim::valid_verifier(&"a".repeat(129)));
    assert!(!WeblinkSim::valid_verifier(&format!("{}+", "a".repeat(42))));
    assert!(!WeblinkSim::valid_verifier(&format!("{}é", "a".repeat(42))));
}

#[tokio::test]
async fn guest_token_for_a_known_portal() {
    let env = start().await;
    let body = format!("{{\"domain\": \"{PORTAL}\"}}");
    let (status, first) = env.guest("application/json;charset=utf-8", &body).await;
    assert_eq!(status, 200, "{first}");
    let token = first["portal_token"].as_str().unwrap();
    assert_eq!(first.as_object().unwrap().len(), 1);
    assert_eq!(env.sim.guest_token_portal(token).as_deref(), Some(PORTAL));
    let (status, second) = env
        .guest(
            "application/json",
            "{\"domain\":\"Other.AdministrateWebLink.com\"}",
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["portal_token"], first["portal_token"]);
    assert_eq!(
        env.sim
            .guest_token_portal(second["portal_token"].as_str().unwrap())
            .as_deref(),
        Some("other.administrateweblink.com")
    );
    assert_eq!(env.sim.guest_token_portal("made-up"), None);
    assert_eq!(env.sim.guest_requests(), 2);
}

#[tokio::test]
async fn guest_token_refusals() {
    let env = start().await;
    let not_found = json!({"error": "portal not found"});
    let (status, body) = env
        .guest("application/json", "{\"domain\":\"nowhere.example\"}")
        .await;
    assert_eq!((status, body), (404, not_found.clone()));
    // A URL is not a host.
    let (status, body) = env
        .guest(
            "application/json",
            &format!("{{\"domain\":\"https://{PORTAL}\"}}"),
        )
        .await;
    assert_eq!((status, body), (404, not_found));
    for (content_type, body) in [
        ("application/json", ""),
        ("application/json", "{\"domain\":"),
        ("application/json", "{}"),
        ("application/json", "{\"domain\":\"\"}"),
        ("application/json", "{\"domain\":42}"),
        ("application/json", "[\"demo.administrateweblink.com\"]"),
        (
            "application/x-www-form-urlencoded",
            "domain=demo.administrateweblink.com",
        ),
        (
            "text/plain",
            "{\"domain\":\"demo.administrateweblink.com\"}",
        ),
    ] {
        let (status, answer) = env.guest(content_type, body).await;
        assert_eq!(status, 400, "{content_type} {body}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(env.sim.guest_requests(), 10);
}

#[tokio::test]
async fn guest_token_forced_answers_queue_up() {
    let env = start().await;
    let body = format!("{{\"domain\":\"{PORTAL}\"}}");
    env.sim.rate_limit_next(120);
    env.sim.fail_next_guest(500);
    env.sim.fail_next_guest(401);
    assert_eq!(
        env.guest("application/json", &body).await,
        (
            403,
            json!({"error": "Too many requests", "lock_duration": 120})
        )
    );
    assert_eq!(
        env.guest("application/json", &body).await,
        (500, json!({"error": "Internal Server Error"}))
    );
    assert_eq!(
        env.guest("application/json", &body).await,
        (401, json!({"error": "Unauthorized"}))
    );
    let (status, answer) = env.guest("application/json", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(env.sim.guest_requests(), 4);
}

#[tokio::test]
async fn host_lookup() {
    let env = start().await;
    assert_eq!(
        env.host_lookup(PORTAL).await,
        (
            200,
            json!({"brand": BRAND, "idp": {"client_id": CLIENT_ID, "domain": IDP}})
        )
    );
    assert_eq!(
        env.host_lookup("other.administrateweblink.com").await,
        (
            200,
            json!({"brand": "other-brand", "idp": {"client_id": "other-client", "domain": "other.identity.getadministrate.com"}})
        )
    );
    assert_eq!(
        env.host_lookup("nowhere.example").await,
        (404, json!({"error": "portal not found"}))
    );
    let missing = env
        .http
        .get(format!("{}/portal_config", env.own))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    env.sim
        .add_portal("new.example", "new-brand", "new-client", "identity.new");
    assert_eq!(
        env.host_lookup("new.example").await.1["idp"]["domain"],
        "identity.new"
    );
    assert_eq!(env.sim.host_lookups(), 5);
}

#[tokio::test]
async fn code_flow_with_the_documents_json_request() {
    let env = start().await;
    let verifier = verifier();
    let code = env.sign_in(&verifier).await;
    let (status, body) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let refresh_token = body["refresh_token"].as_str().unwrap();
    assert!(!refresh_token.is_empty());
    let access_token = body["access_token"].as_str().unwrap();
    assert_eq!(
        env.sim.access_token_sub(access_token).as_deref(),
        Some("demo:contact:UGVyc29uOjI2NDI=")
    );

    let claims = env
        .verify(body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["iss"], "https://identity.getadministrate.com/");
    assert_eq!(claims["aud"], "weblink2ui");
    // base64("Person:2642"), as in the document.
    assert_eq!(claims["sub"], "demo:contact:UGVyc29uOjI2NDI=");
    assert_eq!(claims["email"], JANE);
    assert_eq!(claims["given_name"], "Jane");
    assert_eq!(claims["family_name"], "Smith");
    assert_eq!(
        claims["nonce"], NONCE,
        "the authorize request's nonce, echoed"
    );
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 36_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat.abs_diff(now) < 60);
    // The access token is a JWT of the same issuer too.
    let header = jsonwebtoken::decode_header(access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(env.sim.current_kid().as_str()));

    // Each code once.
    assert_invalid_grant(env.exchange(&code, &verifier).await, "code already used");
    assert_eq!(env.sim.token_requests("authorization_code"), 2);
}

#[tokio::test]
async fn code_flow_with_a_form_request_at_another_portal() {
    let env = start().await;
    let verifier = verifier();
    let params = vec![
        ("brand", "other-brand".to_owned()),
        ("client_id", "other-client".into()),
        ("code_challenge", independent_challenge(&verifier)),
        ("code_challenge_method", "S256".into()),
        ("redirect_uri", env.redirect_uri()),
        ("response_type", "code".into()),
        ("scope", "openid".into()),
        ("state", STATE.into()),
    ];
    let code = env
        .sign_in_at(
            "other.identity.getadministrate.com",
            &params,
            "JOHN@example.com",
        )
        .await;
    let redirect_uri = env.redirect_uri();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", "other-client"),
        ("code_verifier", &verifier),
        ("redirect_uri", &redirect_uri),
    ];
    // The code belongs to other.identity.getadministrate.com's client, not to demo.identity.getadministrate.com.
    let (status, body) = env.token_form(IDP, &form).await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
    let (status, body) = env
        .token_form("other.identity.getadministrate.com", &form)
        .await;
    assert_eq!(status, 200, "{body}");
    let claims = env
        .verify(body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["sub"], "other:contact:UGVyc29uOjI2NDM=");
    assert_eq!(
        (
            &claims["email"],
            &claims["given_name"],
            &claims["family_name"]
        ),
        (&json!("john@example.com"), &json!("John"), &json!("Doe"))
    );
    assert!(
        claims.get("nonce").is_none(),
        "no nonce asked for, none given"
    );
    assert_eq!(env.sim.token_requests("authorization_code"), 2);
}

#[tokio::test]
async fn pkce_refusals() {
    let env = start().await;
    let verifier = verifier();

    // A wrong verifier is refused, and the attempt spends the code.
    let code = env.sign_in(&verifier).await;
    assert_invalid_grant(
        env.exchange(&code, &self::verifier()).await,
        "PKCE verification failed",
    );
    assert_invalid_grant(env.exchange(&code, &verifier).await, "code already used");

    // No verifier at all.
    let code = env.sign_in(&verifier).await;
    assert_invalid_grant(
        env.token_json(IDP, &json!({"code": code, "client_id": CLIENT_ID}))
            .await,
        "PKCE verification failed",
    );

    // The document's verifier matches its challenge, but is too short to be a verifier.
    let doc_verifier = "unique_and_r@nd0M!_string";
    let params = env.authorize_params("Ia6CrXEp0F-eOk_i1JHCLF_LkHW4zBoRYBADp6b0kjg");
    let code = env.sign_in_at(IDP, &params, JANE).await;
    assert_invalid_grant(
        env.exchange(&code, doc_verifier).await,
        "PKCE verification failed",
    );

    // A redirect_uri, when sent, must be the authorize request's.
    let code = env.sign_in(&verifier).await;
    assert_invalid_grant(
        env.token_json(
            IDP,
            &json!({
                "code": code, "client_id": CLIENT_ID, "code_verifier": verifier,
                "redirect_uri": format!("{}/elsewhere", env.base),
            }),
        )
        .await,
        "redirect_uri differs from the authorize request's",
    );
    // That refusal came before the verifier was tried: the code is still good.
    let (status, body) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{body}");

    assert_invalid_grant(env.exchange("made-up", &verifier).await, "unknown code");
}

#[tokio::test]
async fn authorize_refusals() {
    let env = start().await;
    let challenge = independent_challenge(&verifier());
    let good = env.authorize_params(&challenge);
    let with = |name: &str, value: Option<&str>| -> Vec<(&'static str, String)> {
        let mut params: Vec<(&str, String)> =
            good.iter().filter(|(k, _)| *k != name).cloned().collect();
        if let Some(v) = value {
            params.push((
                good.iter().find(|(k, _)| *k == name).unwrap().0,
                v.to_owned(),
            ));
        }
        params
    };
    let page = env.authorize(IDP, &good).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let (_, fields) = WeblinkSim::parse_form(&html);
    let fields: HashMap<String, String> = fields.into_iter().collect();
    assert_eq!(fields["state"], STATE, "hidden fields survive escaping");
    assert_eq!(fields["code_challenge"], challenge);
    assert!(fields.contains_key("email") && fields.contains_key("password"));

    let short = &challenge[..42];
    let padded = format!("{challenge}=");
    let cases = [
        with("code_challenge_method", Some("plain")),
        with("code_challenge_method", None),
        with("code_challenge", None),
        with("code_challenge", Some(short)),
        with("code_challenge", Some(&padded)),
        with(
            "code_challenge",
            Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"),
        ),
        with(
            "redirect_uri",
            Some(&format!("{}/weblink/callback/", env.base)),
        ),
        with("redirect_uri", None),
        with("brand", Some("other-brand")),
        with("brand", None),
        with("client_id", Some("other-client")),
        with("client_id", None),
        with("response_type", Some("token")),
        with("response_type", None),
        with("state", None),
    ];
    for params in cases {
        let resp = env.authorize(IDP, &params).await;
        assert_eq!(resp.status(), 400, "{params:?}");
        assert!(!resp.text().await.unwrap().contains("<form"), "{params:?}");
    }
    let plain = env
        .authorize(IDP, &with("code_challenge_method", Some("plain")))
        .await;
    assert!(plain.text().await.unwrap().contains("S256"));
    // demo-client is not a client of other.identity.getadministrate.com; no portal's IDP is at identity.nowhere.
    assert_eq!(
        env.authorize("other.identity.getadministrate.com", &good)
            .await
            .status(),
        400
    );
    assert_eq!(env.authorize("identity.nowhere", &good).await.status(), 404);
}

#[tokio::test]
async fn sign_in_refusals_and_cancel() {
    let env = start().await;
    let params = env.authorize_params(&independent_challenge(&verifier()));
    for fill in [
        [("email", JANE), ("password", "wrong")],
        [("email", "nobody@example.com"), ("password", "password")],
        [("email", ""), ("password", "password")],
    ] {
        let page = env.authorize(IDP, &params).await;
        let resp = env.submit(page, IDP, &fill).await;
        assert_eq!(resp.status(), 200, "{fill:?}");
        assert!(resp.headers().get("location").is_none());
        let html = resp.text().await.unwrap();
        assert!(html.contains("class=\"error\""), "{html}");
        assert!(html.contains("<form"), "the form again");
    }
    let page = env.authorize(IDP, &params).await;
    let resp = env.submit(page, IDP, &[("cancel", "1")]).await;
    let query = location_query(&resp, &format!("{}?", env.redirect_uri()));
    assert_eq!(query["error"], "access_denied");
    assert_eq!(query["state"], STATE);
    assert!(!query.contains_key("code"));
}

#[tokio::test]
async fn refresh_rotates() {
    let env = start().await;
    let verifier = verifier();
    let code = env.sign_in(&verifier).await;
    let (_, first) = env.exchange(&code, &verifier).await;
    let old_refresh = first["refresh_token"].as_str().unwrap();

    // Another client cannot use it, and the refusal does not spend it.
    let (status, body) = env
        .token_json(
            "other.identity.getadministrate.com",
            &json!({"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": "other-client"}),
        )
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));

    let (status, second) = env
        .token_json(
            IDP,
            &json!({"grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": CLIENT_ID}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["token_type"], "Bearer");
    let claims = env
        .verify(second["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["sub"], "demo:contact:UGVyc29uOjI2NDI=");

    // The old refresh token is spent; the new one works, as a form too.
    assert_invalid_grant(
        env.token_form(
            IDP,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", old_refresh),
                ("client_id", CLIENT_ID),
            ],
        )
        .await,
        "unknown or already used refresh_token",
    );
    let (status, third) = env
        .token_form(
            IDP,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", second["refresh_token"].as_str().unwrap()),
                ("client_id", CLIENT_ID),
            ],
        )
        .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(env.sim.token_requests("refresh_token"), 4);
    assert_eq!(env.sim.token_requests("authorization_code"), 1);
}

#[tokio::test]
async fn token_request_refusals() {
    let env = start().await;
    let verifier = verifier();
    let code = env.sign_in(&verifier).await;
    let post = |content_type: &'static str, body: String| {
        env.http
            .post(format!("{}/idp/{IDP}/token", env.own))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let doc = json!({"code": code, "client_id": CLIENT_ID, "code_verifier": verifier});
    for (content_type, body) in [
        ("text/plain", doc.to_string()),
        ("application/json", "{\"code\":".into()),
        (
            "application/json",
            json!({"code": code, "client_id": 7}).to_string(),
        ),
    ] {
        let (status, reply) = answer(post(content_type, body).await.unwrap()).await;
        assert_eq!((status, &reply["error"]), (400, &json!("invalid_request")));
    }
    let (status, reply) = env
        .token_json(IDP, &json!({"code": code, "code_verifier": verifier}))
        .await;
    assert_eq!((status, &reply["error"]), (400, &json!("invalid_request")));
    let (status, reply) = env
        .token_json(
            IDP,
            &json!({"code": code, "client_id": "nobody", "code_verifier": verifier}),
        )
        .await;
    assert_eq!((status, &reply["error"]), (401, &json!("invalid_client")));
    let (status, reply) = env
        .token_json(
            IDP,
            &json!({"grant_type": "password", "client_id": CLIENT_ID}),
        )
        .await;
    assert_eq!(
        (status, &reply["error"]),
        (400, &json!("unsupported_grant_type"))
    );
    // None of those spent the code; charset is allowed.
    let (status, reply) = answer(
        post("application/json; charset=utf-8", doc.to_string())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(env.sim.token_requests(""), 3);
    assert_eq!(env.sim.token_requests("password"), 1);
}

#[tokio::test]
async fn keys_verify_only_what_they_signed() {
    let env = start().await;
    let claims = json!({
        "iss": "https://identity.getadministrate.com/", "aud": "weblink2ui",
        "sub": "demo:contact:UGVyc29uOjI2NDI=", "exp": 4_000_000_000u64,
    });
    let good = env.sim.sign_id_token(&claims);
    assert_eq!(env.verify(&good).await.unwrap(), claims);

    let forged = env.sim.sign_with_other_key(&claims);
    assert_eq!(
        jsonwebtoken::decode_header(&forged).unwrap().kid,
        Some(env.sim.current_kid()),
        "same kid: only the signature is wrong"
    );
    assert!(env.verify(&forged).await.is_err());

    let old_kid = env.sim.current_kid();
    env.sim.rotate_key();
    assert_ne!(env.sim.current_kid(), old_kid);
    assert!(env.verify(&good).await.is_err(), "the old kid is gone");
    assert!(env.verify(&env.sim.sign_id_token(&claims)).await.is_ok());
    assert_eq!(env.sim.jwks_fetches(), 4);
}

#[tokio::test]
async fn token_settings() {
    let env = start().await;
    env.sim.add_user(SimUser {
        email: "ann@example.com".into(),
        given_name: "Ann".into(),
        family_name: "Lee".into(),
        person_id: 7,
    });
    env.sim.set_access_token_lifetime(0);
    env.sim.set_token_delay(Duration::from_millis(300));
    let verifier = verifier();
    let params = env.authorize_params(&independent_challenge(&verifier));
    let code = env.sign_in_at(IDP, &params, "ann@example.com").await;
    let started = Instant::now();
    let (status, body) = env.exchange(&code, &verifier).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 0);
    assert_eq!(
        env.sim
            .access_token_sub(body["access_token"].as_str().unwrap()),
        None,
        "born expired"
    );
    let claims = env
        .verify(body["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["given_name"], "Ann");
}

/// An OpenID provider answers a request without `openid` in its scope by sending the error
/// back to the (registered) redirect URI, never with a sign-in page; with it, the page.
#[tokio::test]
async fn authorize_without_openid_is_sent_back_with_invalid_scope() {
    let env = start().await;
    let good = env.authorize_params(&independent_challenge(&verifier()));
    let with_scope = |scope: Option<&str>| -> Vec<(&'static str, String)> {
        let mut params: Vec<_> = good
            .iter()
            .filter(|(k, _)| *k != "scope")
            .cloned()
            .collect();
        if let Some(scope) = scope {
            params.push(("scope", scope.to_owned()));
        }
        params
    };
    for scope in [
        None,
        Some(""),
        Some("profile email"),
        Some("openidx profile"),
    ] {
        let resp = env.authorize(IDP, &with_scope(scope)).await;
        let query = location_query(&resp, &format!("{}?", env.redirect_uri()));
        assert_eq!(query["error"], "invalid_scope", "{scope:?}");
        assert_eq!(query["state"], STATE, "{scope:?}");
        assert!(!query.contains_key("code"), "{scope:?}");
    }
    // The same check when the form is posted: a stripped hidden field yields no code.
    let page = env.authorize(IDP, &good).await;
    let resp = env
        .submit(
            page,
            IDP,
            &[
                ("email", JANE),
                ("password", "password"),
                ("scope", "profile"),
            ],
        )
        .await;
    let query = location_query(&resp, &format!("{}?", env.redirect_uri()));
    assert_eq!(query["error"], "invalid_scope");
    for scope in ["openid", "profile openid"] {
        let resp = env.authorize(IDP, &with_scope(Some(scope))).await;
        assert_eq!(resp.status(), 200, "{scope}");
    }
}

/// The id_token carries the nonce of the authorize request its code came from, unless a test
/// forges it for one exchange.
#[tokio::test]
async fn the_nonce_is_echoed_and_can_be_forged_once() {
    let env = start().await;
    let verifier = verifier();
    let nonce_of = |body: &Value| -> Option<String> {
        let token = body["id_token"].as_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["nonce"].as_str().map(str::to_owned)
    };
    let code = env.sign_in(&verifier).await;
    env.sim.forge_next_nonce(None);
    let (status, body) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(nonce_of(&body), None);
    let code = env.sign_in(&verifier).await;
    env.sim.forge_next_nonce(Some("another"));
    assert_eq!(
        nonce_of(&env.exchange(&code, &verifier).await.1).as_deref(),
        Some("another")
    );
    let code = env.sign_in(&verifier).await;
    assert_eq!(
        nonce_of(&env.exchange(&code, &verifier).await.1).as_deref(),
        Some(NONCE)
    );
}

/// Token requests are counted per IDP domain, so a test can tell where the app sent a code.
#[tokio::test]
async fn token_requests_are_counted_per_domain() {
    let env = start().await;
    let verifier = verifier();
    let code = env.sign_in(&verifier).await;
    env.exchange(&code, &verifier).await;
    env.token_json(
        "other.identity.getadministrate.com",
        &json!({"code": "x", "client_id": "other-client"}),
    )
    .await;
    assert_eq!(env.sim.token_requests_at(IDP, "authorization_code"), 1);
    assert_eq!(
        env.sim
            .token_requests_at("other.identity.getadministrate.com", "authorization_code"),
        1
    );
    assert_eq!(env.sim.token_requests("authorization_code"), 2);
    assert_eq!(env.sim.token_requests_at(IDP, "refresh_token"), 0);
}
