//! Administrate WebLink end to end: the local server against the WebLink simulator over HTTP.

use crate::harness::{Backend, Browser, Harness, Page, query_param, resolve};
use gatehouse::config::Vars;
use gatehouse_simulators::haravan::HaravanSim;
use serde_json::{Value, json};

const PORTAL: &str = "demo.administrateweblink.com";
/// The demo portal's IDP, as the simulator's host lookup names it.
const IDP: &str = "demo.identity.getadministrate.com";
/// Another IDP the simulator serves (the other portal's), inside the default allow-list.
const OTHER_IDP: &str = "other.identity.getadministrate.com";

/// login → the IDP's sign-in → the redirect back. Returns the callback URL (not yet visited).
pub(crate) async fn sign_in(h: &Harness, b: &mut Browser) -> String {
    let start = b
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location.unwrap();
    for (name, want) in [
        ("code_challenge_method", Some("S256")),
        ("response_type", Some("code")),
        ("brand", Some("demo-brand")),
        ("client_id", Some("demo-client")),
        ("scope", Some("openid profile email offline_access")),
    ] {
        assert_eq!(query_param(&authorize, name).as_deref(), want, "{name}");
    }
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        Some(h.url("/weblink/callback"))
    );
    assert_eq!(
        query_param(&authorize, "code_challenge").map(|c| c.len()),
        Some(43)
    );
    assert!(query_param(&authorize, "state").is_some());
    assert!(
        query_param(&authorize, "nonce").is_some_and(|n| n.len() >= 32),
        "a fresh nonce: {authorize}"
    );
    let page = b.get(&authorize).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (action, mut fields) = HaravanSim::parse_form_post(&page.body);
    fields.retain(|(k, _)| k != "email" && k != "password");
    fields.push(("email".into(), "jane@example.com".into()));
    fields.push(("password".into(), "password".into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let back = b.post_form(&resolve(&authorize, &action), &f).await;
    assert_eq!(back.status, 302, "{}", back.body);
    back.location.unwrap()
}

async fn sessions(h: &Harness) -> usize {
    h.items("session#weblink").await.len()
}

async fn refresh(h: &Harness, b: &Browser) -> (u16, Value) {
    refresh_at(h.url("/weblink/refresh"), cookie_header(b)).await
}

fn cookie_header(b: &Browser) -> String {
    b.cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn refresh_at(url: String, cookie: String) -> (u16, Value) {
    let resp = crate::support::http()
        .post(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn journey(h: Harness) {
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    let page: Page = b.get(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Jane"),
        "who signed in is shown: {}",
        page.body
    );
    assert_eq!(sessions(&h).await, 1);
    assert!(h.items("state#weblink").await.is_empty());

    let (status, first) = refresh(&h, &b).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        sim.token_requests("refresh_token"),
        0,
        "still fresh: no refresh"
    );
    // Make the stored token due, as time would; the next refresh rotates it.
    let mut item = h.items("session#weblink").await.remove(0);
    item.attrs
        .insert("expires_at".into(), (gatehouse::store::now() + 10).into());
    h.server
        .app
        .store
        .put(&item, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    let session_expiry = item.expires_at.expect("a session expires");
    let (status, second) = refresh(&h, &b).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(sim.token_requests("refresh_token"), 1);
    assert_ne!(first["access_token"], second["access_token"]);
    // The refresh wrote the tokens in place: the session still ends when it was going to.
    let refreshed = h.items("session#weblink").await.remove(0);
    assert_eq!(refreshed.expires_at, Some(session_expiry));
    let (_, third) = refresh(&h, &b).await;
    assert_eq!(
        third["access_token"], second["access_token"],
        "the new token is kept"
    );
}

#[tokio::test]
async fn the_whole_journey_on_the_embedded_store() {
    journey(Harness::embedded().await).await;
}

#[tokio::test]
async fn the_whole_journey_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    journey(h).await;
}

#[tokio::test]
async fn concurrent_refreshes_make_one_call() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    assert_eq!(b.get(&callback).await.status, 200);
    let mut item = h.items("session#weblink").await.remove(0);
    item.attrs
        .insert("expires_at".into(), (gatehouse::store::now() + 10).into());
    h.server
        .app
        .store
        .put(&item, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    sim.set_token_delay(std::time::Duration::from_millis(300));
    let handles: Vec<_> = (0..10)
        .map(|_| tokio::spawn(refresh_at(h.url("/weblink/refresh"), cookie_header(&b))))
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(_, v)| v["access_token"] == answers[0].1["access_token"])
    );
    assert_eq!(sim.token_requests("refresh_token"), 1);
}

#[tokio::test]
async fn state_and_verifier_refusals_store_nothing() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();

    // Missing state cookie.
    let mut a = Browser::new();
    let callback = sign_in(&h, &mut a).await;
    let page = Browser::new().get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    // A foreign state cookie (another browser's flow).
    let mut other = Browser::new();
    other
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    let page = other.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("another browser"));
    // Unknown state: the cookie is valid but names no stored state.
    let unknown = callback.replace(
        &query_param(&callback, "state").unwrap(),
        "unknown-state-value",
    );
    let page = a.get(&unknown).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(sessions(&h).await, 0);

    // The right browser once, then the same callback again: the state is spent.
    let cookies = a.cookies.clone();
    assert_eq!(a.get(&callback).await.status, 200);
    a.cookies = cookies;
    let page = a.get(&callback).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert_eq!(sessions(&h).await, 1);

    // A wrong verifier: the IDP refuses the code.
    let mut c = Browser::new();
    let callback = sign_in(&h, &mut c).await;
    let state = query_param(&callback, "state").unwrap();
    let key = gatehouse::store::Key::single("state#weblink", &state);
    let mut item = h.server.app.store.get(&key).await.unwrap().unwrap();
    item.attrs.insert("verifier".into(), json!("x".repeat(64)));
    h.server
        .app
        .store
        .put(&item, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    let exchanges = sim.token_requests("authorization_code");
    let page = c.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(sim.token_requests("authorization_code"), exchanges + 1);
    assert_eq!(sessions(&h).await, 1, "nothing new stored");
}

/// Sign-ins whose id_token the app must refuse, each made so by configuration.
#[tokio::test]
async fn id_tokens_from_the_wrong_issuer_audience_or_key_are_refused() {
    for (name, var, value) in [
        (
            "issuer",
            "WEBLINK_ISSUERS",
            "https://identity.example.com/".to_owned(),
        ),
        ("audience", "WEBLINK_AUDIENCES", "another-ui".to_owned()),
    ] {
        let mut vars = Vars::default();
        vars.set(var, value);
        // With discovery, another issuer is refused at login already (the metadata's, see
        // `the_idps_metadata_must_name_an_allowed_issuer`); without it, by the id_token's `iss`.
        vars.set("WEBLINK_DISCOVERY", "false");
        let h = Harness::start(Backend::Embedded, vars).await.unwrap();
        let mut b = Browser::new();
        let callback = sign_in(&h, &mut b).await;
        let page = b.get(&callback).await;
        assert_eq!(page.status, 401, "{name}: {}", page.body);
        assert_eq!(sessions(&h).await, 0, "{name}");
    }
    // Signed with a key the IDP does not publish.
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let jwks = gatehouse::oidc::Jwks::new(format!(
        "{}/_sim/weblink/.well-known/jwks.json",
        h.server.base()
    ));
    let now = gatehouse::store::now();
    let claims = json!({"iss": "https://identity.getadministrate.com/", "aud": "weblink2ui",
                        "sub": "demo:contact:1", "iat": now, "exp": now + 3600});
    let issuers = ["https://identity.getadministrate.com/".to_owned()];
    let audiences = ["weblink2ui".to_owned()];
    let expect = gatehouse::oidc::Expect {
        issuers: &issuers,
        audiences: &audiences,
        nonce: None,
        code: None,
        access_token: None,
        skew: 60,
    };
    let http = crate::support::http();
    let good = sim.sign_id_token(&claims);
    assert!(
        gatehouse::oidc::verify_id_token(&http, &jwks, &good, &expect)
            .await
            .is_ok()
    );
    let forged = sim.sign_with_other_key(&claims);
    let err = gatehouse::oidc::verify_id_token(&http, &jwks, &forged, &expect)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    expired["iat"] = json!(now - 7200);
    let err = gatehouse::oidc::verify_id_token(&http, &jwks, &sim.sign_id_token(&expired), &expect)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

/// A refresh token the IDP refuses (the grant revoked, consent withdrawn) ends the session's
/// refreshes with a 403 that says what to do, sign in again, at once and from then on without
/// asking the IDP again.
#[tokio::test]
async fn a_refused_refresh_token_asks_the_user_to_sign_in_again() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    assert_eq!(b.get(&callback).await.status, 200);
    // The IDP no longer knows the session's refresh token, and its access token is due.
    let item = h.items("session#weblink").await.remove(0);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let mut set = serde_json::Map::new();
    let grant = gatehouse::refresh::Grant {
        access_token: "due".to_owned().into(),
        refresh_token: Some("revoked-at-the-idp".to_owned().into()),
        expires_in: 10,
        extra: Vec::new(),
    };
    gatehouse::refresh::seal(&keys, &item.key, &grant, &mut set).unwrap();
    h.server
        .app
        .store
        .update(&item.key, &set, gatehouse::store::Condition::Exists)
        .await
        .unwrap();
    let before = sim.token_requests("refresh_token");
    for _ in 0..2 {
        let (status, body) = refresh(&h, &b).await;
        assert_eq!(status, 403, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("sign in again"), "{message}");
        assert!(
            message.contains("no longer accepts this session"),
            "{message}"
        );
        assert!(
            message.contains(&format!("/weblink/login?portal={PORTAL}")),
            "{message}"
        );
        assert!(
            !message.contains("install the app"),
            "not an install's wording: {message}"
        );
    }
    // Refused by the IDP up to the shared machinery's re-reads (another container may have
    // rotated it), then marked: the second refresh does not ask again.
    let asked = sim.token_requests("refresh_token") - before;
    assert!(asked >= 1, "the IDP was asked");
    let (status, _) = refresh(&h, &b).await;
    assert_eq!(status, 403);
    assert_eq!(sim.token_requests("refresh_token") - before, asked);
}

/// With `WEBLINK_DISCOVERY` (the default) the IDP's endpoints and keys come from its metadata,
/// whose issuer must be an allowed one: metadata naming another refuses the login before
/// anything is stored or the user is sent anywhere.
#[tokio::test]
async fn the_idps_metadata_must_name_an_allowed_issuer() {
    let mut vars = Vars::default();
    vars.set("WEBLINK_ISSUERS", "https://identity.example.com/");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new()
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.location.is_none());
    assert!(page.body.contains("issuer"), "{}", page.body);
    assert!(h.items("state#weblink").await.is_empty());
}

/// Without discovery, the IDP base's documented paths and the configured keys serve the whole
/// journey, as they did before discovery.
#[tokio::test]
async fn without_discovery_the_documented_paths_serve() {
    let mut vars = Vars::default();
    vars.set("WEBLINK_DISCOVERY", "false");
    journey(Harness::start(Backend::Embedded, vars).await.unwrap()).await;
}

/// An endpoint set in the configuration overrides the metadata's: the login sends the browser
/// to `WEBLINK_AUTHORIZE_URL` (its `{domain}` the IDP's), the callback exchanges the code at
/// `WEBLINK_TOKEN_URL` (here one where nothing answers: a 502, nothing stored).
#[tokio::test]
async fn configured_endpoints_override_the_metadata() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", probe.local_addr().unwrap());
    drop(probe);
    let mut vars = Vars::default();
    vars.set("WEBLINK_TOKEN_URL", format!("{nowhere}/{{domain}}/token"));
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    let exchanges = sim.token_requests("authorization_code");
    let page = b.get(&callback).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(sim.token_requests("authorization_code"), exchanges);
    assert_eq!(sessions(&h).await, 0);

    let mut vars = Vars::default();
    vars.set(
        "WEBLINK_AUTHORIZE_URL",
        "https://sign-in.example.com/{domain}/authorize",
    );
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new()
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(page.status, 302, "{}", page.body);
    let location = page.location.unwrap();
    assert!(
        location.starts_with(&format!("https://sign-in.example.com/{IDP}/authorize?")),
        "{location}"
    );
    for bad in ["not a url", "ftp://x/{domain}", "/relative/{domain}"] {
        let mut vars = Vars::default();
        vars.set("WEBLINK_TOKEN_URL", bad);
        assert!(
            gatehouse::weblink::Settings::from_vars(&vars).is_err(),
            "{bad}"
        );
    }
}

async fn guest(h: &Harness, body: &str) -> (u16, Option<String>, Value) {
    let resp = crate::support::http()
        .post(h.url("/weblink/guest-token"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn guest_tokens_for_allowed_portals_only() {
    let mut vars = Vars::default();
    vars.set(
        "WEBLINK_PORTALS",
        format!("{PORTAL},ghost.administrateweblink.com,other.administrateweblink.com"),
    );
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let sim = h.server.weblink.clone();

    let (status, _, body) = guest(&h, &json!({"portal": PORTAL}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["portal_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["expires_at"].as_i64().unwrap() > gatehouse::store::now());
    let calls = sim.guest_requests();

    let (status, _, body) = guest(&h, &json!({"portal": "evil.example.com"}).to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        sim.guest_requests(),
        calls,
        "a portal not allowed is never asked for"
    );
    let (status, _, _) = guest(&h, "not json").await;
    assert_eq!(status, 400);
    let (status, _, _) = guest(&h, &json!({"other": 1}).to_string()).await;
    assert_eq!(status, 400);

    let (status, _, body) = guest(
        &h,
        &json!({"portal": "ghost.administrateweblink.com"}).to_string(),
    )
    .await;
    assert_eq!(status, 404, "unknown to Administrate: {body}");
    // Administrate's failures for a portal not yet cached (a cached one is not asked).
    sim.fail_next_guest(500);
    let (status, _, body) = guest_from(&h, "other.administrateweblink.com").await;
    assert_eq!(status, 502, "{body}");
    sim.rate_limit_next(42);
    let (status, retry, body) = guest_from(&h, "other.administrateweblink.com").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("42"));
}

#[tokio::test]
async fn the_host_lookup_is_cached() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    sign_in(&h, &mut b).await;
    sign_in(&h, &mut b).await;
    assert_eq!(sim.host_lookups(), 1);
    let page = Browser::new()
        .get(&h.url("/weblink/login?portal=evil.example.com"))
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(h.items("state#weblink").await.len() == 2);
}

/// The state of the sign-in a callback URL belongs to.
async fn state_of(h: &Harness, callback: &str) -> gatehouse::store::Item {
    let state = query_param(callback, "state").unwrap();
    let key = gatehouse::store::Key::single("state#weblink", &state);
    h.server.app.store.get(&key).await.unwrap().unwrap()
}

/// An IDP domain from the host lookup that is not a host name inside `WEBLINK_IDP_DOMAINS` is
/// refused before anything is stored or sent there: code, verifier and refresh tokens go only to
/// the identity provider the operator allowed.
#[tokio::test]
async fn idp_domains_outside_the_allow_list_are_refused_at_login() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    for bad in [
        "127.0.0.1",
        "169.254.169.254",
        "localhost",
        "[::1]",
        "0x7f.1",
        "evil.example.com",
        "getadministrate.com.evil.example.com",
        "identity.getadministrate.com:8443",
        "user@identity.getadministrate.com",
        "identity.getadministrate.com/x",
        "identity.getadministrate.com.",
        "",
    ] {
        sim.add_portal(PORTAL, "demo-brand", "demo-client", bad);
        h.server.app.weblink.forget_lookups().await;
        let page = Browser::new()
            .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
            .await;
        assert_eq!(page.status, 502, "{bad}: {}", page.body);
        assert!(page.location.is_none(), "{bad}");
        assert!(page.body.contains("IDP domain"), "{bad}: {}", page.body);
        assert!(h.items("state#weblink").await.is_empty(), "{bad}");
    }
    // Inside the allow-list (the default: Administrate's identity domains) it goes through.
    sim.add_portal(PORTAL, "demo-brand", "demo-client", IDP);
    h.server.app.weblink.forget_lookups().await;
    let mut b = Browser::new();
    sign_in(&h, &mut b).await;
}

/// The allow-list is configurable: exact hosts and `*.suffix` patterns.
#[tokio::test]
async fn the_idp_allow_list_is_configurable() {
    let mut vars = Vars::default();
    vars.set("WEBLINK_IDP_DOMAINS", format!("{OTHER_IDP}, *.example.com"));
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new()
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(
        page.status, 502,
        "{IDP} is no longer allowed: {}",
        page.body
    );
    let sim = h.server.weblink.clone();
    sim.add_portal(PORTAL, "demo-brand", "demo-client", OTHER_IDP);
    h.server.app.weblink.forget_lookups().await;
    let page = Browser::new()
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(page.status, 302, "{}", page.body);
    for bad in [
        "*",
        "*.com",
        "127.0.0.1",
        "a.example.com:443",
        "*.",
        "https://a.example.com",
    ] {
        let mut vars = Vars::default();
        vars.set("WEBLINK_IDP_DOMAINS", bad);
        assert!(
            gatehouse::weblink::Settings::from_vars(&vars).is_err(),
            "{bad} is not a valid allow-list entry"
        );
    }
}

/// The callback exchanges the code where the login sent the user, with the client id the login
/// used, whatever the host lookup says by then (another container, or Administrate's answer
/// changed); and refreshes go to the session's IDP.
#[tokio::test]
async fn a_lookup_that_changes_after_login_does_not_move_the_code_exchange() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    // Another portal's IDP and client now, as far as the lookup is concerned; the IDP the user
    // signed in at still serves its client (for another portal).
    sim.add_portal(
        "kept.administrateweblink.com",
        "demo-brand",
        "demo-client",
        IDP,
    );
    sim.add_portal(PORTAL, "demo-brand", "other-client", OTHER_IDP);
    h.server.app.weblink.forget_lookups().await;
    let page = b.get(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(sim.token_requests_at(IDP, "authorization_code"), 1);
    assert_eq!(sim.token_requests_at(OTHER_IDP, "authorization_code"), 0);
    let session = h.items("session#weblink").await.remove(0);
    assert_eq!(session.str("idp_domain"), Some(IDP));
    assert_eq!(session.str("client_id"), Some("demo-client"));

    let mut item = session;
    item.attrs
        .insert("expires_at".into(), (gatehouse::store::now() + 10).into());
    h.server
        .app
        .store
        .put(&item, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    let (status, body) = refresh(&h, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.token_requests_at(IDP, "refresh_token"), 1);
    assert_eq!(sim.token_requests_at(OTHER_IDP, "refresh_token"), 0);
}

/// The login keeps what the callback needs in its state: the nonce sent, and the IDP and
/// client it sent the user to.
#[tokio::test]
async fn the_state_holds_the_nonce_and_the_idp() {
    let h = Harness::embedded().await;
    let mut b = Browser::new();
    let start = b
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    let authorize = start.location.unwrap();
    let state = state_of(
        &h,
        &format!(
            "{}?state={}",
            h.url("/weblink/callback"),
            query_param(&authorize, "state").unwrap()
        ),
    )
    .await;
    assert_eq!(
        state.str("nonce"),
        query_param(&authorize, "nonce").as_deref()
    );
    assert_eq!(state.str("idp_domain"), Some(IDP));
    assert_eq!(state.str("client_id"), Some("demo-client"));

    // A state without them (an older app's) is refused as such, not looked up again.
    for field in ["nonce", "idp_domain", "client_id"] {
        let mut b = Browser::new();
        let callback = sign_in(&h, &mut b).await;
        let mut item = state_of(&h, &callback).await;
        item.attrs.remove(field);
        h.server
            .app
            .store
            .put(&item, gatehouse::store::Condition::Always)
            .await
            .unwrap();
        let lookups = h.server.weblink.host_lookups();
        let page = b.get(&callback).await;
        assert_eq!(page.status, 400, "{field}: {}", page.body);
        assert_eq!(h.server.weblink.host_lookups(), lookups, "{field}");
        assert_eq!(sessions(&h).await, 0, "{field}");
    }
}

/// An id_token without this sign-in's nonce (none at all, or another one: a token replayed from
/// another sign-in) is refused, and nothing is stored.
#[tokio::test]
async fn id_tokens_without_this_sign_ins_nonce_are_refused() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    for forged in [None, Some("another-sign-ins-nonce")] {
        let mut b = Browser::new();
        let callback = sign_in(&h, &mut b).await;
        sim.forge_next_nonce(forged);
        let page = b.get(&callback).await;
        assert_eq!(page.status, 401, "{forged:?}: {}", page.body);
        assert!(page.body.contains("nonce"), "{forged:?}: {}", page.body);
        assert_eq!(sessions(&h).await, 0, "{forged:?}");
    }
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b).await;
    assert_eq!(b.get(&callback).await.status, 200);
}

/// `WEBLINK_SCOPES` is what the authorization request asks for; it must include `openid`,
/// which an OpenID provider requires (the simulator, as one, sends a request without it back
/// with `invalid_scope`).
#[tokio::test]
async fn the_scope_is_configurable_and_must_include_openid() {
    let mut vars = Vars::default();
    vars.set("WEBLINK_SCOPES", "openid email");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let start = Browser::new()
        .get(&h.url(&format!("/weblink/login?portal={PORTAL}")))
        .await;
    assert_eq!(start.status, 302, "{}", start.body);
    assert_eq!(
        query_param(&start.location.unwrap(), "scope").as_deref(),
        Some("openid email")
    );
    for bad in ["profile email", "openidx", "email,profile"] {
        let mut vars = Vars::default();
        vars.set("WEBLINK_SCOPES", bad);
        assert!(
            gatehouse::weblink::Settings::from_vars(&vars).is_err(),
            "{bad:?} lacks openid"
        );
    }
}

async fn guest_from(h: &Harness, portal: &str) -> (u16, Option<String>, Value) {
    guest(h, &json!({ "portal": portal }).to_string()).await
}

/// Twenty guests of one portal, all at once, cost Administrate one call: the portal token is
/// cached per container until shortly before it expires, and concurrent callers wait for the
/// one fetch.
#[tokio::test]
async fn twenty_guest_tokens_for_one_portal_make_one_call() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    let url = h.url("/weblink/guest-token");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let resp = crate::support::http()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(json!({ "portal": PORTAL }).to_string())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let token = &answers[0].1["portal_token"];
    assert!(answers.iter().all(|(_, v)| &v["portal_token"] == token));
    assert!(
        answers
            .iter()
            .all(|(_, v)| v["expires_at"] == answers[0].1["expires_at"])
    );
    assert_eq!(sim.guest_requests(), 1);
    assert_eq!(
        sim.guest_token_portal(token.as_str().unwrap()).as_deref(),
        Some(PORTAL)
    );
}

/// Administrate's rate limiting of a portal is remembered until it ends, so callers do not
/// keep asking (and extending it); failures are not cached.
#[tokio::test]
async fn administrates_rate_limit_is_remembered_and_failures_are_not_cached() {
    let h = Harness::embedded().await;
    let sim = h.server.weblink.clone();
    sim.fail_next_guest(500);
    assert_eq!(guest_from(&h, PORTAL).await.0, 502);
    sim.rate_limit_next(42);
    let (status, retry, _) = guest_from(&h, PORTAL).await;
    assert_eq!((status, retry.as_deref()), (429, Some("42")));
    let (status, retry, _) = guest_from(&h, PORTAL).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.unwrap().parse().unwrap();
    assert!((40..=42).contains(&retry), "{retry}");
    assert_eq!(sim.guest_requests(), 2, "the lock is remembered");
}

/// A client (by source IP) over `WEBLINK_GUEST_REQUESTS_PER_MINUTE` requests for served portals
/// gets a 429 with `Retry-After`, and costs nothing upstream. The local server carries no source IP, so all
/// its callers are one client.
#[tokio::test]
async fn a_client_over_its_guest_token_limit_gets_429() {
    let mut vars = Vars::default();
    vars.set("WEBLINK_GUEST_REQUESTS_PER_MINUTE", "5");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let sim = h.server.weblink.clone();
    for _ in 0..5 {
        assert_eq!(guest_from(&h, PORTAL).await.0, 200);
    }
    let (status, retry, body) = guest_from(&h, PORTAL).await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many")),
        "{body}"
    );
    assert_eq!(sim.guest_requests(), 1);
    // Requests refused before any upstream work are answered as what they are, and not counted.
    let (status, _, body) = guest_from(&h, "evil.example.com").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(guest(&h, "not json").await.0, 400);
}
