//! The simulator driven over real HTTP (a listener on 127.0.0.1:0, `axum::serve`), as a browser
//! and an app would; its MAC formula is checked against vectors computed by python3.

use super::{SaisonSim, authorization_header, mac};
use crate::haravan::HaravanSim;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};
use std::collections::HashMap;

const CLIENT_ID: &str = "ZT300";
const CLIENT_SECRET: &str = "saison-secret";
const MEMBER: &str = "member01";
const USER: &str = "M0001";
const MOUNT: &str = "/_sim/saison";
const PROFILE: &str = "/auth/account/profile";

/// Each vector was computed by python3 with the one-liner above it.
#[test]
fn mac_matches_python() {
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"saison-secret",
    //   b"1700000000\nabcde12345\nGET\n/auth/account/profile\napit.saisoncard.co.jp\n443\n\n",
    //   hashlib.sha256).digest()).decode())'
    assert_eq!(
        mac(
            "saison-secret",
            1_700_000_000,
            "abcde12345",
            "GET",
            "/auth/account/profile",
            "apit.saisoncard.co.jp",
            443
        ),
        "t7JOst4OFQjZZpeirXlaOi9oqqcEOHjc0aNCi8Ufm9Y="
    );
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"saison-secret",
    //   b"1700000123\nZx9Yw8Vu7T\nGET\n/_sim/saison/auth/account/profile?info_key=birthday%2Csex&data_flg=1\n127.0.0.1\n3000\n\n",
    //   hashlib.sha256).digest()).decode())'
    assert_eq!(
        mac(
            "saison-secret",
            1_700_000_123,
            "Zx9Yw8Vu7T",
            "GET",
            "/_sim/saison/auth/account/profile?info_key=birthday%2Csex&data_flg=1",
            "127.0.0.1",
            3000
        ),
        "l4MO/NNn0xIFUv0Wutr0bS9A0D5Vc4HCg/q0Fqbww1A="
    );
    // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"saison-secret",
    //   b"1700000456\n0123456789\nPOST\n/auth/account/profile\napit.saisoncard.co.jp\n443\n\n",
    //   hashlib.sha256).digest()).decode())'
    assert_eq!(
        mac(
            "saison-secret",
            1_700_000_456,
            "0123456789",
            "POST",
            "/auth/account/profile",
            "apit.saisoncard.co.jp",
            443
        ),
        "EjqituNRZUL2EhvbuSuy+3jTmcYNpdFO9ZogR5KZA4I="
    );
    assert_eq!(
        authorization_header("tok", 1, "abcde12345", "m="),
        "MAC id=\"tok\" ts=\"1\" nonce=\"abcde12345\" mac=\"m=\""
    );
}

#[test]
fn host_without_port_means_the_scheme_default() {
    let host = |sim: &SaisonSim, value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        sim.host_and_port(&headers).unwrap()
    };
    let https = SaisonSim::new(
        "c",
        "s",
        "https://app.example",
        "https://Sim.example/saison",
    );
    let http = SaisonSim::new("c", "s", "http://app.example", "http://sim.example");
    assert_eq!(host(&https, "Sim.Example"), ("sim.example".into(), 443));
    assert_eq!(host(&http, "sim.example"), ("sim.example".into(), 80));
    assert_eq!(
        host(&http, "sim.example:8080"),
        ("sim.example".into(), 8080)
    );
    assert_eq!(host(&http, "[::1]:3000"), ("[::1]".into(), 3000));
    assert_eq!(host(&http, "[::1]"), ("[::1]".into(), 80));
    assert_eq!(https.inner.own_path, "/saison");
    assert_eq!(http.inner.own_path, "");
}

/// The simulator mounted at `/_sim/saison` on a server of its own.
struct Env {
    sim: SaisonSim,
    base: String,
    own: String,
    /// `127.0.0.1` and the port: what the Host header of each request names.
    port: u16,
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
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let own = format!("{base}{MOUNT}");
    let sim = SaisonSim::new(CLIENT_ID, CLIENT_SECRET, &base, &own);
    let router = Router::new().nest_service(MOUNT, sim.router());
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
        port,
        http,
        task,
    }
}

fn now() -> u64 {
    super::now()
}

/// A fresh, well-formed nonce.
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One profile request, signed as the fields say; `Env::call` fills in a correct one.
struct Call {
    method: &'static str,
    query: Option<String>,
    form: Option<Vec<(String, String)>>,
    token: String,
    key: String,
    ts: u64,
    ts_text: Option<String>,
    nonce: String,
    api_version: Option<&'static str>,
    /// The attribute separator: `" "` or `", "`.
    separator: &'static str,
    /// What to sign instead of the request's true request-uri and port.
    signed_uri: Option<String>,
    signed_port: Option<u16>,
    host_header: Option<(&'static str, &'static str, u16)>,
    mac: Option<String>,
    authorization: Option<String>,
}

/// What the app's redirect URI receives from one sign-in.
struct Callback {
    location: String,
    params: HashMap<String, String>,
}

impl Env {
    fn authorize_url(&self, member: &str, params: &[(&str, &str)]) -> String {
        format!(
            "{}/auth/screen/{member}/authorize?{}",
            self.own,
            query(params)
        )
    }

    /// authorize → the sign-in page → ID and PASSWORD typed in → the redirect.
    async fn sign_in(&self, scope: Option<&str>, state: Option<&str>, id: &str) -> Callback {
        let mut params = vec![("client_id", CLIENT_ID), ("response_type", "code")];
        params.extend(scope.map(|s| ("scope", s)));
        params.extend(state.map(|s| ("state", s)));
        let page = self
            .http
            .get(self.authorize_url(MEMBER, &params))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("name=\"id\"") && html.contains("name=\"password\""));
        let resp = self.submit_sign_in(&html, id, "password").await;
        assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
        let location = resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        Callback {
            params: url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
            location,
        }
    }

    /// Fills in the sign-in form of `html` and submits it as a browser would.
    async fn submit_sign_in(&self, html: &str, id: &str, password: &str) -> reqwest::Response {
        let (action, mut fields) = HaravanSim::parse_form_post(html);
        assert_eq!(action, "login", "the form posts to login, beside authorize");
        fields.retain(|(k, _)| k != "id" && k != "password");
        fields.push(("id".into(), id.into()));
        fields.push(("password".into(), password.into()));
        self.http
            .post(format!("{}/auth/screen/{MEMBER}/login", self.own))
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// POST /auth/token with `X-API-VERSION: 1` and the client's credentials added.
    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let mut form = form.to_vec();
        form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
        let resp = self
            .http
            .post(format!("{}/auth/token", self.own))
            .header("X-API-VERSION", "1")
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(query(&form))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn redeem(&self, code: &str) -> (u16, Value) {
        self.token(&[("grant_type", "authorization_code"), ("code", code)])
            .await
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// A signed-in user's tokens.
    async fn tokens(&self) -> Value {
        let code = self.sim.issue_code(MEMBER, USER);
        let (status, tokens) = self.redeem(&code).await;
        assert_eq!(status, 200, "{tokens}");
        tokens
    }

    /// A correctly signed GET of the profile with `token`, keyed with the client secret.
    fn call(&self, token: &str) -> Call {
        Call {
            method: "GET",
            query: None,
            form: None,
            token: token.into(),
            key: CLIENT_SECRET.into(),
            ts: now(),
            ts_text: None,
            nonce: nonce(),
            api_version: Some("1"),
            separator: " ",
            signed_uri: None,
            signed_port: None,
            host_header: None,
            mac: None,
            authorization: None,
        }
    }

    async fn send(&self, call: &Call) -> (u16, Value) {
        let path = format!("{MOUNT}{PROFILE}");
        let request_uri = match &call.query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let (host, sent_host, port) = call.host_header.unwrap_or(("", "127.0.0.1", self.port));
        let mac = call.mac.clone().unwrap_or_else(|| {
            mac(
                &call.key,
                call.ts,
                &call.nonce,
                call.method,
                call.signed_uri.as_deref().unwrap_or(&request_uri),
                sent_host,
                call.signed_port.unwrap_or(port),
            )
        });
        let ts = call.ts_text.clone().unwrap_or(call.ts.to_string());
        let authorization = call.authorization.clone().unwrap_or_else(|| {
            let sep = call.separator;
            format!(
                "MAC id=\"{}\"{sep}ts=\"{ts}\"{sep}nonce=\"{}\"{sep}mac=\"{mac}\"",
                call.token, call.nonce
            )
        });
        let url = format!("{}{request_uri}", self.base);
        let mut req = match call.method {
            "POST" => self.http.post(url),
            _ => self.http.get(url),
        };
        req = req.header(header::AUTHORIZATION, authorization);
        if let Some(v) = call.api_version {
            req = req.header("X-API-VERSION", v);
        }
        if !host.is_empty() {
            req = req.header(header::HOST, host);
        }
        if let Some(form) = &call.form {
            req = req.form(form);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Sends `call`, expects a refusal with `error`, and checks the simulator recorded it.
    async fn refused(&self, call: &Call, status: u16, error: &str) {
        let (_, refused_before) = self.sim.profile_requests();
        let (got, body) = self.send(call).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{body}"
        );
        assert_eq!(self.sim.last_refusal().as_deref(), Some(error));
        assert_eq!(self.sim.profile_requests().1, refused_before + 1);
    }
}

#[tokio::test]
async fn the_whole_flow_reads_the_profile() {
    let env = start().await;
    let cb = env
        .sign_in(Some("profile,card"), Some("st<&>ate"), USER)
        .await;
    assert!(
        cb.location
            .starts_with(&format!("{}/saison/callback?code=", env.base)),
        "{}",
        cb.location
    );
    assert_eq!(cb.params["state"], "st<&>ate");
    assert_eq!(cb.params.len(), 2);

    let (status, tokens) = env.redeem(&cb.params["code"]).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "mac");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "profile,card");
    assert!(tokens.get("mac_key").is_none());
    let access = tokens["access_token"].as_str().unwrap();
    assert!(!tokens["refresh_token"].as_str().unwrap().is_empty());
    assert_eq!(env.sim.token_requests("authorization_code"), 1);

    // GET, no query: the whole profile.
    let (status, profile) = env.send(&env.call(access)).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["member"], MEMBER);
    assert_eq!(profile["user_id"], USER);
    assert_eq!(profile["card_meisho_sousho"], "SAISON TARO");
    assert_eq!(profile["sex_name"], "男性");

    // GET with a query: signed with it, and it selects the fields.
    let mut call = env.call(access);
    call.query = Some(query(&[("info_key", "birthday,sex"), ("data_flg", "1")]));
    let (status, profile) = env.send(&call).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile,
        json!({"member": MEMBER, "user_id": USER, "info_key": "birthday,sex",
               "birthday": "19800115", "sex": "1"})
    );

    // POST with the document's payload, attributes separated by ", ".
    let mut call = env.call(access);
    call.method = "POST";
    call.separator = ", ";
    call.form = Some(vec![
        ("data_flg".into(), "1".into()),
        (
            "info_key".into(),
            "card_meisho_sousho,birthday,sex,sex_name,add_cdA".into(),
        ),
    ]);
    let (status, profile) = env.send(&call).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        profile["info_key"],
        "card_meisho_sousho,birthday,sex,sex_name,add_cdA"
    );
    assert_eq!(profile["card_meisho_sousho"], "SAISON TARO");
    assert_eq!(profile["add_cdA"], "13101");

    // POST with a query string too.
    let mut call = env.call(access);
    call.method = "POST";
    call.query = Some("data_flg=1".into());
    call.form = Some(vec![("info_key".into(), "sex_name".into())]);
    let (status, profile) = env.send(&call).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["sex_name"], "男性");
    assert!(profile.get("birthday").is_none());

    // A Host without a port: the scheme's default (80 over http), host lower-cased.
    let mut call = env.call(access);
    call.host_header = Some(("Saison.EXAMPLE", "saison.example", 80));
    let (status, profile) = env.send(&call).await;
    assert_eq!(status, 200, "{profile}");

    assert_eq!(env.sim.profile_requests(), (5, 0));
    assert_eq!(env.sim.last_refusal(), None);
}

#[tokio::test]
async fn authorize_and_login_refuse_what_is_wrong() {
    let env = start().await;
    let status = |params: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = env.authorize_url(MEMBER, &pairs);
        let http = env.http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let ok = || {
        vec![
            ("client_id", CLIENT_ID.to_owned()),
            ("response_type", "code".to_owned()),
        ]
    };
    assert_eq!(status(ok()).await, 200);
    let mut p = ok();
    p[0].1 = "ZT999".into();
    assert_eq!(status(p).await, 400, "unknown client_id");
    let mut p = ok();
    p[1].1 = "token".into();
    assert_eq!(status(p).await, 400, "response_type token");
    assert_eq!(status(ok()[..1].to_vec()).await, 400, "no response_type");
    let mut p = ok();
    p.push(("redirect_uri", format!("{}/other/callback", env.base)));
    assert_eq!(status(p).await, 400, "unregistered redirect_uri");
    let mut p = ok();
    p.push(("redirect_uri", env.sim.redirect_uri()));
    assert_eq!(status(p).await, 200, "the registered redirect_uri");
    let mut p = ok();
    p.push(("scope", "profile card".into()));
    assert_eq!(status(p).await, 400, "space-separated scope");

    // No state: none comes back.
    let cb = env.sign_in(None, None, "someone").await;
    assert_eq!(cb.params.keys().collect::<Vec<_>>(), ["code"]);

    // A wrong password or no ID: the page again, with the error, and no code.
    let page = env
        .http
        .get(env.authorize_url(
            MEMBER,
            &[("client_id", CLIENT_ID), ("response_type", "code")],
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let wrong = env.submit_sign_in(&page, USER, "passw0rd").await;
    assert_eq!(wrong.status(), 200);
    let html = wrong.text().await.unwrap();
    assert!(html.contains("wrong"), "{html}");
    assert_eq!(HaravanSim::parse_form_post(&html).0, "login");
    let empty = env.submit_sign_in(&page, "", "password").await;
    assert!(empty.text().await.unwrap().contains("Enter your ID"));

    // The login form is checked again.
    let tampered = env
        .http
        .post(format!("{}/auth/screen/{MEMBER}/login", env.own))
        .form(&[
            ("client_id", "ZT999"),
            ("response_type", "code"),
            ("id", USER),
            ("password", "password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 400);
}

#[tokio::test]
async fn the_token_endpoint_follows_rfc_6749() {
    let env = start().await;
    let cb = env.sign_in(None, None, USER).await;
    let code = &cb.params["code"];
    let (status, tokens) = env.redeem(code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "");

    // Each code once.
    let (status, body) = env.redeem(code).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    let (status, body) = env.redeem("no-such-code").await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    let (status, body) = env.token(&[("grant_type", "authorization_code")]).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    let (status, body) = env.token(&[("grant_type", "password")]).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("unsupported_grant_type"))
    );
    assert_eq!(env.sim.token_requests("authorization_code"), 4);
    assert_eq!(env.sim.token_requests("password"), 1);

    let raw = |headers: Vec<(&'static str, &'static str)>, body: String| {
        let mut req = env.http.post(format!("{}/auth/token", env.own)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let form = |code: &str, secret: &str| {
        query(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("code", code),
        ])
    };
    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const V1: (&str, &str) = ("x-api-version", "1");
    let code = env.sim.issue_code(MEMBER, USER);
    assert_eq!(
        raw(vec![FORM, V1], form(&code, "wrong")).await,
        (401, "invalid_client".into())
    );
    assert_eq!(
        raw(
            vec![FORM, V1],
            query(&[("grant_type", "authorization_code"), ("code", &code)])
        )
        .await,
        (401, "invalid_client".into()),
        "no client credentials"
    );
    assert_eq!(
        raw(vec![FORM], form(&code, CLIENT_SECRET)).await,
        (400, "invalid_request".into()),
        "no X-API-VERSION"
    );
    assert_eq!(
        raw(
            vec![FORM, ("x-api-version", "2")],
            form(&code, CLIENT_SECRET)
        )
        .await,
        (400, "invalid_request".into()),
        "X-API-VERSION 2"
    );
    assert_eq!(
        raw(vec![V1], form(&code, CLIENT_SECRET)).await,
        (400, "invalid_request".into()),
        "no Content-Type"
    );
    let json_body = json!({"grant_type": "authorization_code", "client_id": CLIENT_ID,
                           "client_secret": CLIENT_SECRET, "code": code})
    .to_string();
    assert_eq!(
        raw(vec![("content-type", "application/json"), V1], json_body).await,
        (400, "invalid_request".into()),
        "a JSON body"
    );
    // None of those spent the code; the bare media type is accepted too.
    assert_eq!(
        raw(vec![FORM, V1], form(&code, CLIENT_SECRET)).await,
        (200, String::new())
    );
}

#[tokio::test]
async fn refresh_tokens_rotate() {
    let env = start().await;
    let first = env.tokens().await;
    let (status, second) = env.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["token_type"], "mac");
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);

    // The old refresh token is spent.
    let (status, body) = env.refresh(first["refresh_token"].as_str().unwrap()).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    let (status, body) = env.token(&[("grant_type", "refresh_token")]).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));

    // The new one works, once more.
    let (status, third) = env.refresh(second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(env.sim.token_requests("refresh_token"), 4);

    // Only the newest access token is live.
    for old in [&first, &second] {
        env.refused(
            &env.call(old["access_token"].as_str().unwrap()),
            401,
            "superseded_token",
        )
        .await;
    }
    let (status, profile) = env
        .send(&env.call(third["access_token"].as_str().unwrap()))
        .await;
    assert_eq!((status, &profile["user_id"]), (200, &json!(USER)));
}

#[tokio::test]
async fn profile_refusals_name_the_check() {
    let env = start().await;
    let tokens = env.tokens().await;
    let access = tokens["access_token"].as_str().unwrap();

    let mut c = env.call(access);
    c.key = "wrong-key".into();
    env.refused(&c, 401, "invalid_mac").await;
    let mut c = env.call(access);
    c.signed_uri = Some(PROFILE.into());
    env.refused(&c, 401, "invalid_mac").await; // the mount prefix left out
    let mut c = env.call(access);
    c.query = Some("data_flg=1".into());
    c.signed_uri = Some(format!("{MOUNT}{PROFILE}"));
    env.refused(&c, 401, "invalid_mac").await; // the query left out
    let mut c = env.call(access);
    c.signed_port = Some(443);
    env.refused(&c, 401, "invalid_mac").await;
    let mut c = env.call(access);
    c.method = "POST";
    c.mac = Some(mac(
        CLIENT_SECRET,
        c.ts,
        &c.nonce,
        "GET",
        &format!("{MOUNT}{PROFILE}"),
        "127.0.0.1",
        env.port,
    ));
    env.refused(&c, 401, "invalid_mac").await; // a POST signed as GET
    let mut c = env.call(access);
    let good = mac(
        CLIENT_SECRET,
        c.ts,
        &c.nonce,
        "GET",
        &format!("{MOUNT}{PROFILE}"),
        "127.0.0.1",
        env.port,
    );
    c.mac = Some(good.trim_end_matches('=').to_owned());
    env.refused(&c, 401, "invalid_mac").await; // unpadded base64
    // A refused MAC did not spend its nonce.
    c.mac = None;
    assert_eq!(env.send(&c).await.0, 200);

    let mut c = env.call(access);
    c.ts = now() - 301;
    env.refused(&c, 401, "stale_ts").await;
    let mut c = env.call(access);
    c.ts = now() + 301;
    env.refused(&c, 401, "stale_ts").await;
    let mut c = env.call(access);
    c.ts = now() * 1000;
    env.refused(&c, 401, "stale_ts").await; // milliseconds
    let mut c = env.call(access);
    c.ts_text = Some("soon".into());
    env.refused(&c, 401, "invalid_ts").await;
    let mut c = env.call(access);
    c.ts = now() - 290;
    assert_eq!(env.send(&c).await.0, 200, "within the window");

    for bad in ["abcde1234", "abcde123456", "abcde-1234", "abcde_1234", ""] {
        let mut c = env.call(access);
        c.nonce = bad.into();
        env.refused(&c, 401, "invalid_nonce").await;
    }
    let c = env.call(access);
    assert_eq!(env.send(&c).await.0, 200);
    let mut again = env.call(access);
    again.nonce = c.nonce.clone();
    env.refused(&again, 401, "reused_nonce").await;

    let mut c = env.call(access);
    c.api_version = None;
    env.refused(&c, 400, "invalid_api_version").await;
    let mut c = env.call(access);
    c.api_version = Some("2");
    env.refused(&c, 400, "invalid_api_version").await;

    for authorization in [
        format!("Bearer {access}"),
        format!("MAC id={access} ts=\"1\" nonce=\"abcde12345\" mac=\"x\""),
        format!("MAC id=\"{access}\";ts=\"1\";nonce=\"abcde12345\";mac=\"x\""),
        format!("MAC id=\"{access}\" ts=\"1\" nonce=\"abcde12345\""),
        format!("MAC id=\"{access}\" ts=\"1\" nonce=\"abcde12345\" mac=\"x\" ext=\"\""),
    ] {
        let mut c = env.call(access);
        c.authorization = Some(authorization);
        env.refused(&c, 401, "invalid_authorization").await;
    }
    env.refused(&env.call("no-such-token"), 401, "unknown_token")
        .await;

    assert_eq!(env.sim.profile_requests(), (3, 24));

    // Expiry: every token issued so far, then tokens born expired.
    env.sim.expire_access_tokens();
    env.refused(&env.call(access), 401, "expired_token").await;
    let (status, refreshed) = env.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        status, 200,
        "an expired access token's refresh token still works"
    );
    assert_eq!(
        env.send(&env.call(refreshed["access_token"].as_str().unwrap()))
            .await
            .0,
        200
    );
    env.sim.set_access_token_lifetime(0);
    let tokens = env.tokens().await;
    assert_eq!(tokens["expires_in"], 0);
    env.refused(
        &env.call(tokens["access_token"].as_str().unwrap()),
        401,
        "expired_token",
    )
    .await;
}

#[tokio::test]
async fn a_mac_key_replaces_the_client_secret() {
    let env = start().await;
    env.sim.set_issue_mac_key(true);
    let tokens = env.tokens().await;
    let key = tokens["mac_key"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    env.refused(&env.call(access), 401, "invalid_mac").await;
    let mut c = env.call(access);
    c.key = key.into();
    assert_eq!(env.send(&c).await.0, 200);

    // A refreshed token has a key of its own.
    let (_, refreshed) = env.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    let new_key = refreshed["mac_key"].as_str().unwrap();
    assert_ne!(new_key, key);
    let mut c = env.call(refreshed["access_token"].as_str().unwrap());
    c.key = key.into();
    env.refused(&c, 401, "invalid_mac").await;
    c.key = new_key.into();
    assert_eq!(env.send(&c).await.0, 200);

    // Off again: new tokens are signed with the client secret.
    env.sim.set_issue_mac_key(false);
    let tokens = env.tokens().await;
    assert!(tokens.get("mac_key").is_none());
    assert_eq!(
        env.send(&env.call(tokens["access_token"].as_str().unwrap()))
            .await
            .0,
        200
    );
}
