//! Haravan end to end: the local server against the Haravan simulator over real HTTP.

use crate::harness::{Backend, Browser, Harness, Page, query_param, resolve};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::config::Vars;
use gatehouse::haravan::{self, install_key, org_sessions_partition, sid_partition};
use gatehouse::routes::Platforms;
use gatehouse_simulators::haravan::HaravanSim;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::sync::Arc;

pub(crate) const ADMIN: &str = "200000011111"; // admin (role "admin") of org 1000111111
pub(crate) const ADMIN_ORG: &str = "1000111111";
const ARRAY_ADMIN: &str = "200000022222"; // role ["com_api.admin", "admin"] of org 1000222222
const STAFF: &str = "200000033333"; // role "staff" of org 1000333333
const STAFF_ORG: &str = "1000333333";

/// From an authorize redirect (`to_authorize`), signs in at the simulator as `sub`, and POSTs the
/// form_post answer to the app as the browser would. Returns the app's answer.
pub(crate) async fn sign_in_at_haravan(b: &mut Browser, to_authorize: &Page, sub: &str) -> Page {
    assert_eq!(to_authorize.status, 302, "{}", to_authorize.body);
    let authorize = to_authorize.location.clone().expect("authorize location");
    let page = b.get(&authorize).await;
    assert_eq!(page.status, 200, "sign-in page: {}", page.body);
    let (action, mut fields) = HaravanSim::parse_form_post(&page.body);
    fields.push(("sub".into(), sub.into()));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = b.post_form(&resolve(&authorize, &action), &fields).await;
    assert_eq!(answer.status, 200, "form_post page: {}", answer.body);
    let (action, fields) = HaravanSim::parse_form_post(&answer.body);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for name in ["code", "id_token", "scope", "session_state", "state"] {
        assert!(
            fields.iter().any(|(k, _)| *k == name),
            "form_post carries {name}"
        );
    }
    b.post_form(&action, &fields).await
}

/// Opens the app (login) as `sub`: the app's answer to the login form_post.
async fn login(h: &Harness, b: &mut Browser, sub: &str) -> Page {
    let start = b.get(&h.url("/haravan/install/login")).await;
    let location = start.location.clone().unwrap_or_default();
    assert_eq!(
        query_param(&location, "response_mode").as_deref(),
        Some("form_post")
    );
    assert_eq!(
        query_param(&location, "response_type").as_deref(),
        Some("code id_token")
    );
    assert!(query_param(&location, "nonce").is_some_and(|n| n.len() >= 16));
    assert!(query_param(&location, "state").is_some());
    sign_in_at_haravan(b, &start, sub).await
}

/// Logs in as an admin of a new org and completes the install. Returns the app page.
pub(crate) async fn install(h: &Harness, b: &mut Browser, sub: &str) -> Page {
    let to_install = login(h, b, sub).await;
    let location = to_install.location.clone().unwrap_or_default();
    assert!(
        location.contains("/connect/authorize"),
        "a new org's admin is sent to install: {} {}",
        to_install.status,
        to_install.body
    );
    let scope = query_param(&location, "scope").unwrap_or_default();
    for s in ["grant_service", "offline_access", "wh_api"] {
        assert!(
            scope.split(' ').any(|x| x == s),
            "install scope has {s}: {scope}"
        );
    }
    assert!(query_param(&location, "orgid").is_some());
    assert_eq!(
        query_param(&location, "prompt").as_deref(),
        Some("consent"),
        "the install asks for consent, so that offline_access gives a refresh token"
    );
    assert_eq!(
        query_param(&location, "redirect_uri"),
        Some(h.url("/haravan/install/grandservice"))
    );
    sign_in_at_haravan(b, &to_install, sub).await
}

async fn count(h: &Harness, pk: &str) -> usize {
    h.items(pk).await.len()
}

#[tokio::test]
async fn the_whole_journey() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();

    let page = install(&h, &mut b, ADMIN).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("demo-one"),
        "the app page names the shop: {}",
        page.body
    );
    let item = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .expect("install");
    assert_eq!(item.attrs["webhooks_subscribed"], json!(true));
    assert_eq!(sim.subscriptions(ADMIN_ORG), 1);
    let raw = serde_json::to_string(&item.attrs).unwrap();
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let tokens = gatehouse::refresh::open(&keys, &item).unwrap();
    assert!(!raw.contains(tokens.access_token.expose_secret()));
    assert!(
        tokens.refresh_token.is_some(),
        "offline_access gave a refresh token"
    );
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 1);
    assert!(b.cookies.keys().any(|k| k.contains("gh-haravan-session")));
    assert_eq!(sim.token_requests("authorization_code"), 1);

    // A second login of the same org: a session, no second install.
    let mut other = Browser::new();
    let page = login(&h, &mut other, ADMIN).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Signed in as"));
    assert_eq!(sim.token_requests("authorization_code"), 1);
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 2);

    // Front-channel logout by sid: that sid's sessions go.
    let sid = sim.session_sid(ADMIN).expect("signed in at the simulator");
    assert_eq!(count(&h, &sid_partition(&sid)).await, 2);
    assert_eq!(sim.front_channel_logout(&sid).await, 200);
    assert_eq!(count(&h, &sid_partition(&sid)).await, 0);
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 0);
    assert_eq!(sim.front_channel_logout("no-such-sid").await, 200);

    // shop/update refreshes the stored shop details.
    let body = sim.webhook_body("shop/update", ADMIN_ORG);
    let (status, text) = sim.send_webhook("shop/update", ADMIN_ORG, &body).await;
    assert_eq!(status, 200, "{text}");
    let item = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item.attrs["shop"]["myharavan_domain"],
        json!("demo-one.myharavan.com")
    );

    // app/uninstalled: install, tokens and sessions go; a replay acts on nothing.
    login(&h, &mut other, ADMIN).await;
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 1);
    let body = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        h.server
            .app
            .store
            .get(&install_key(ADMIN_ORG))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 0);
    assert_eq!(
        count(&h, &sid_partition(&sim.session_sid(ADMIN).unwrap())).await,
        0
    );
    let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await;
    assert_eq!(status, 200);
    assert!(text.contains("duplicate"), "{text}");
}

#[tokio::test]
async fn an_admin_with_an_array_role_installs_and_staff_are_refused() {
    let h = Harness::embedded().await;
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ARRAY_ADMIN).await.status, 200);

    let mut staff = Browser::new();
    let page = login(&h, &mut staff, STAFF).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("only a shop admin can install"));
    assert!(
        h.server
            .app
            .store
            .get(&install_key(STAFF_ORG))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(count(&h, &org_sessions_partition(STAFF_ORG)).await, 0);
}

#[tokio::test]
async fn a_replayed_install_acts_once() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    let to_install = login(&h, &mut b, ADMIN).await;
    let page = b.get(&to_install.location.clone().unwrap()).await;
    let (action, mut fields) = HaravanSim::parse_form_post(&page.body);
    fields.push(("sub".into(), ADMIN.into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = b
        .post_form(&resolve(&to_install.location.clone().unwrap(), &action), &f)
        .await;
    let (action, fields) = HaravanSim::parse_form_post(&answer.body);
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let saved_cookies = b.cookies.clone();
    assert_eq!(b.post_form(&action, &f).await.status, 200);
    b.cookies = saved_cookies;
    let replay = b.post_form(&action, &f).await;
    assert_eq!(replay.status, 409, "{}", replay.body);
    assert_eq!(sim.token_requests("authorization_code"), 1);
    assert_eq!(sim.subscribe_calls(ADMIN_ORG), 1);
}

/// A login started in `b`: the state and nonce it was given.
async fn started_login(h: &Harness, b: &mut Browser) -> (String, String) {
    let start = b.get(&h.url("/haravan/install/login")).await;
    let location = start.location.unwrap();
    (
        query_param(&location, "state").unwrap(),
        query_param(&location, "nonce").unwrap(),
    )
}

fn claims(h: &Harness, nonce: &str, code: &str) -> Value {
    let now = gatehouse::store::now();
    json!({
        "iss": h.server.haravan.issuer(),
        "aud": "gatehouse-local-haravan",
        "nonce": nonce,
        "iat": now, "nbf": now, "exp": now + 300,
        "sub": ADMIN, "sid": "sid-crafted", "role": "admin",
        "orgid": ADMIN_ORG, "orgname": "demo-one",
        "c_hash": gatehouse::oidc::half_hash(code),
    })
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT", "kid": "k"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let tag = gatehouse::crypto::hmac_sha256(secret, signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(tag))
}

#[tokio::test]
async fn id_tokens_that_must_be_refused() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let code = "crafted-code";
    let jwks = reqwest::get(format!(
        "{}/.well-known/openid-configuration/jwks",
        sim.issuer()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();

    type Craft = Box<dyn Fn(&Value) -> String>;
    let s1 = sim.clone();
    let s2 = sim.clone();
    let s3 = sim.clone();
    let with = move |patch: Value| -> Craft {
        let sim = s3.clone();
        Box::new(move |c: &Value| {
            let mut c = c.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            sim.sign_id_token(&c)
        })
    };
    let now = gatehouse::store::now();
    let cases: Vec<(&str, Craft, &str)> = vec![
        (
            "bad signature",
            Box::new(move |c| {
                let t = s1.sign_id_token(c);
                let (head, sig) = t.rsplit_once('.').unwrap();
                let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
                sig[0] ^= 1;
                format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig))
            }),
            "signature does not verify",
        ),
        (
            "unknown kid",
            Box::new(move |c| s2.sign_with_unpublished_key(c)),
            "does not publish",
        ),
        (
            "wrong iss",
            with(json!({"iss": "https://evil.example"})),
            "issuer",
        ),
        ("wrong aud", with(json!({"aud": "another-app"})), "audience"),
        (
            "expired",
            with(json!({"exp": now - 3600, "iat": now - 4000, "nbf": now - 4000})),
            "expired",
        ),
        (
            "from the future",
            with(json!({"iat": now + 3600, "nbf": now - 10})),
            "future",
        ),
        (
            "nonce mismatch",
            with(json!({"nonce": "another-nonce"})),
            "nonce",
        ),
        (
            "no c_hash",
            with(json!({"c_hash": null})),
            "lacks the `c_hash`",
        ),
        (
            "several audiences, no azp",
            with(json!({"aud": ["gatehouse-local-haravan", "another-app"]})),
            "azp",
        ),
        (
            "issued to another party",
            with(json!({"azp": "another-app"})),
            "azp",
        ),
        (
            "c_hash mismatch",
            with(json!({"c_hash": gatehouse::oidc::half_hash("other")})),
            "c_hash",
        ),
        (
            "alg none",
            Box::new(|c| unsigned(json!({"alg": "none", "typ": "JWT"}), c)),
            "RS256",
        ),
        (
            "HS256 keyed with the public key",
            Box::new(move |c| hs256(c, jwks.as_bytes())),
            "RS256",
        ),
        ("not a JWT", Box::new(|_| "not.a.jwt".into()), "well-formed"),
    ];
    for (name, craft, needle) in cases {
        let mut b = Browser::new();
        let (state, nonce) = started_login(&h, &mut b).await;
        let token = craft(&claims(&h, &nonce, code));
        let page = b
            .post_form(
                &h.url("/haravan/install/login"),
                &[
                    ("code", code),
                    ("id_token", &token),
                    ("scope", "openid"),
                    ("session_state", "x"),
                    ("state", &state),
                ],
            )
            .await;
        assert_eq!(page.status, 401, "{name}: {}", page.body);
        assert!(
            page.body.contains(needle),
            "{name}: expected `{needle}` in {}",
            page.body
        );
        assert_eq!(
            count(&h, &org_sessions_partition(ADMIN_ORG)).await,
            0,
            "{name}"
        );
        assert!(
            h.server
                .app
                .store
                .get(&install_key(ADMIN_ORG))
                .await
                .unwrap()
                .is_none()
        );
    }
    // The good token is accepted (so the refusals above are about what they name).
    let mut b = Browser::new();
    let (state, nonce) = started_login(&h, &mut b).await;
    let token = sim.sign_id_token(&claims(&h, &nonce, code));
    let page = b
        .post_form(
            &h.url("/haravan/install/login"),
            &[("code", code), ("id_token", &token), ("state", &state)],
        )
        .await;
    assert_eq!(
        page.status, 302,
        "an admin of a new org goes on to install: {}",
        page.body
    );
}

#[tokio::test]
async fn at_hash_is_checked_against_the_access_token() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let jwks = gatehouse::oidc::Jwks::new(format!(
        "{}/.well-known/openid-configuration/jwks",
        sim.issuer()
    ));
    let now = gatehouse::store::now();
    let token = sim.sign_id_token(&json!({
        "iss": sim.issuer(), "aud": "app", "iat": now, "exp": now + 300,
        "at_hash": gatehouse::oidc::half_hash("the-real-access-token"),
    }));
    let issuers = [sim.issuer().to_owned()];
    let audiences = ["app".to_owned()];
    let expect = |access: &'static str| gatehouse::oidc::Expect {
        issuers: &issuers,
        audiences: &audiences,
        nonce: None,
        code: None,
        access_token: Some(access),
        skew: 60,
    };
    let http = crate::support::http();
    assert!(
        gatehouse::oidc::verify_id_token(&http, &jwks, &token, &expect("the-real-access-token"))
            .await
            .is_ok()
    );
    let err = gatehouse::oidc::verify_id_token(&http, &jwks, &token, &expect("another-token"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at_hash"), "{err}");
}

/// OIDC Core 3.3.3.6: an install whose token endpoint's id_token names another user, org or
/// audience than the sign-in's is refused, and nothing is stored.
#[tokio::test]
async fn the_token_endpoints_id_token_must_name_who_signed_in() {
    for patch in [
        json!({"sub": STAFF}),
        json!({"orgid": STAFF_ORG}),
        json!({"orgid": null}),
        json!({"aud": ["gatehouse-local-haravan", "another-app"], "azp": "gatehouse-local-haravan"}),
    ] {
        let h = Harness::embedded().await;
        let sim = h.server.haravan.clone();
        sim.patch_token_id_tokens(&patch);
        let mut b = Browser::new();
        let page = install(&h, &mut b, ADMIN).await;
        assert_eq!(page.status, 401, "{patch}: {}", page.body);
        assert!(
            page.body.contains("token endpoint"),
            "{patch}: {}",
            page.body
        );
        assert!(
            h.server
                .app
                .store
                .get(&install_key(ADMIN_ORG))
                .await
                .unwrap()
                .is_none(),
            "{patch}"
        );
        assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 0);
    }
}

/// An install that asked for offline_access and got no refresh token is recorded as such, and
/// the admin is told.
#[tokio::test]
async fn an_install_without_a_refresh_token_says_so() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    sim.withhold_refresh_tokens(true);
    let mut b = Browser::new();
    let page = install(&h, &mut b, ADMIN).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("no refresh token"), "{}", page.body);
    let item = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(item.attrs["no_refresh_token"], json!(true));
    // Later sign-ins see it too, until an install with a refresh token.
    let page = login(&h, &mut Browser::new(), ADMIN).await;
    assert!(page.body.contains("no refresh token"), "{}", page.body);
    sim.withhold_refresh_tokens(false);
    let h2 = Harness::embedded().await;
    let page = install(&h2, &mut Browser::new(), ADMIN).await;
    assert!(!page.body.contains("no refresh token"), "{}", page.body);
    let item = h2
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .expect("installed");
    assert_eq!(item.attrs["no_refresh_token"], json!(false));
}

/// The identity server's metadata must name an allowed issuer: otherwise no sign-in starts,
/// and nothing is stored. Without discovery the documented paths are used and nothing is read.
#[tokio::test]
async fn discovery_naming_an_issuer_not_allowed_stops_the_sign_in() {
    let mut vars = Vars::default();
    vars.set("HARAVAN_ISSUERS", "https://accounts.haravan.com");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new().get(&h.url("/haravan/install/login")).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(
        page.body.contains("issuer that is not allowed"),
        "{}",
        page.body
    );
    assert!(h.items("state#haravan").await.is_empty());

    let mut vars = Vars::default();
    vars.set("HARAVAN_ISSUERS", "https://accounts.haravan.com");
    vars.set("HARAVAN_DISCOVERY", "false");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new().get(&h.url("/haravan/install/login")).await;
    assert_eq!(page.status, 302, "{}", page.body);
    let location = page.location.unwrap();
    assert!(
        location.starts_with(&format!("{}/connect/authorize?", h.server.haravan.issuer())),
        "{location}"
    );
}

#[tokio::test]
async fn state_must_come_from_this_browser() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let code = "c";
    // No state cookie at all.
    let mut a = Browser::new();
    let (state, nonce) = started_login(&h, &mut a).await;
    let token = sim.sign_id_token(&claims(&h, &nonce, code));
    let form = [
        ("code", code),
        ("id_token", token.as_str()),
        ("state", state.as_str()),
    ];
    let page = Browser::new()
        .post_form(&h.url("/haravan/install/login"), &form)
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    // Another browser's state cookie.
    let mut other = Browser::new();
    started_login(&h, &mut other).await;
    let page = other
        .post_form(&h.url("/haravan/install/login"), &form)
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("another browser"));
    // The right browser, once: replayed with the same cookie, the consumed state is refused.
    let cookies = a.cookies.clone();
    assert_eq!(
        a.post_form(&h.url("/haravan/install/login"), &form)
            .await
            .status,
        302
    );
    a.cookies = cookies;
    let replay = a.post_form(&h.url("/haravan/install/login"), &form).await;
    assert_eq!(replay.status, 409, "{}", replay.body);
}

#[tokio::test]
async fn signing_key_rotation_is_followed_with_one_refetch() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let fetches = sim.jwks_fetches();
    sim.rotate_key();
    let mut c = Browser::new();
    assert_eq!(login(&h, &mut c, ADMIN).await.status, 200);
    assert_eq!(
        sim.jwks_fetches(),
        fetches + 1,
        "one refetch on the new kid"
    );
    assert_eq!(login(&h, &mut c, ADMIN).await.status, 200);
    assert_eq!(sim.jwks_fetches(), fetches + 1, "then cached");
}

#[tokio::test]
async fn webhook_deliveries_are_verified_and_deduped() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let url = h.url("/haravan/webhooks");
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
    let client = crate::support::http();
    let post = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let body = serde_json::to_vec(&sim.webhook_body("shop/update", ADMIN_ORG)).unwrap();
    let sig = gatehouse_simulators::haravan::webhook_signature(&secret, &body);
    let topic = || ("x-haravan-topic", "shop/update".to_string());
    let org = || ("x-haravan-org-id", ADMIN_ORG.to_string());

    let (s, t) = post(body.clone(), vec![topic(), org()]).await;
    assert_eq!(s, 401, "missing signature: {t}");
    let wrong = gatehouse_simulators::haravan::webhook_signature("not-the-secret", &body);
    let (s, t) = post(
        body.clone(),
        vec![topic(), org(), ("x-haravan-hmacsha256", wrong)],
    )
    .await;
    assert_eq!(s, 401, "wrong signature: {t}");
    let mut tampered = body.clone();
    tampered[2] ^= 1;
    let (s, _) = post(
        tampered,
        vec![topic(), org(), ("x-haravan-hmacsha256", sig.clone())],
    )
    .await;
    assert_eq!(s, 401, "tampered body");
    let junk = b"not json at all".to_vec();
    let junk_sig = gatehouse_simulators::haravan::webhook_signature(&secret, &junk);
    let (s, t) = post(
        junk,
        vec![topic(), org(), ("x-haravan-hmacsha256", junk_sig)],
    )
    .await;
    assert_eq!(s, 400, "signed but not JSON: {t}");
    assert_eq!(
        count(&h, "webhook#haravan").await,
        0,
        "refusals leave no mark"
    );

    // The other header spelling; then the same delivery again is processed once.
    let (s, t) = post(
        body.clone(),
        vec![topic(), org(), ("x-haravan-hmac-sha256", sig.clone())],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"handled\":true"), "{t}");
    let (s, t) = post(
        body.clone(),
        vec![topic(), org(), ("x-haravan-hmacsha256", sig.clone())],
    )
    .await;
    assert_eq!(s, 200);
    assert!(t.contains("duplicate"), "{t}");
    assert_eq!(count(&h, "webhook#haravan").await, 1);

    // Unknown topics are acknowledged.
    let other = serde_json::to_vec(&json!({"org_id": ADMIN_ORG})).unwrap();
    let other_sig = gatehouse_simulators::haravan::webhook_signature(&secret, &other);
    let (s, t) = post(
        other,
        vec![
            ("x-haravan-topic", "orders/create".into()),
            org(),
            ("x-haravan-hmacsha256", other_sig),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert!(t.contains("\"handled\":false"));

    // The topic and org headers are not signed: a signed shop/update body replayed as an
    // uninstall, or under another org's header, acts on nothing.
    let (s, t) = post(
        body.clone(),
        vec![
            ("x-haravan-topic", "app/uninstalled".into()),
            org(),
            ("x-haravan-hmacsha256", sig.clone()),
        ],
    )
    .await;
    assert_eq!(s, 400, "a shop body is no uninstall: {t}");
    let (s, t) = post(
        body.clone(),
        vec![
            topic(),
            ("x-haravan-org-id", "1000222222".into()),
            ("x-haravan-hmacsha256", sig.clone()),
        ],
    )
    .await;
    assert_eq!(s, 400, "the header may not redirect a signed body: {t}");
    assert!(
        h.server
            .app
            .store
            .get(&install_key(ADMIN_ORG))
            .await
            .unwrap()
            .is_some(),
        "still installed"
    );

    // The subscription handshake.
    let token = h
        .server
        .app
        .secrets
        .credentials("haravan")
        .await
        .unwrap()
        .extra["webhook_verify_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.verify_webhook(&token).await, (200, true));
    assert_eq!(sim.verify_webhook("wrong-token").await.0, 401);
}

/// Apps that share one store, as separate containers do.
async fn sibling_apps(h: &Harness, n: usize) -> Vec<Arc<Platforms>> {
    let mut vars = Vars::default();
    vars.set("PUBLIC_BASE_URL", h.server.base());
    vars.set(
        "GATEHOUSE_SECRETS_FILE",
        h.server.app.config.secrets_file.to_string_lossy(),
    );
    vars.set("HARAVAN_ACCOUNTS_BASE", h.server.haravan.issuer());
    vars.set("HARAVAN_ISSUERS", h.server.haravan.issuer());
    vars.set(
        "HARAVAN_API_BASE",
        format!("{}/api", h.server.haravan.issuer()),
    );
    vars.set(
        "HARAVAN_WEBHOOK_BASE",
        format!("{}/webhook", h.server.haravan.issuer()),
    );
    let config = gatehouse::config::Config::from_vars(&vars).unwrap();
    (0..n)
        .map(|_| {
            Arc::new(
                Platforms::with_store(&vars, config.clone(), h.server.app.store.clone(), None)
                    .unwrap(),
            )
        })
        .collect()
}

async fn concurrent_refresh(h: Harness) {
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120); // inside the refresh margin: due at once
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let before = sim.token_requests("refresh_token");
    let old = {
        let item = h
            .server
            .app
            .store
            .get(&install_key(ADMIN_ORG))
            .await
            .unwrap()
            .unwrap();
        let keys = h.server.app.secrets.app_keys().await.unwrap();
        gatehouse::refresh::open(&keys, &item)
            .unwrap()
            .access_token
            .expose_secret()
            .to_owned()
    };
    sim.set_access_token_lifetime(86_400);
    sim.set_token_delay(std::time::Duration::from_millis(300));
    let apps = sibling_apps(&h, 20).await;
    let calls = apps.iter().map(|app| {
        let app = app.clone();
        tokio::spawn(async move { haravan::access_token(&app.haravan, ADMIN_ORG).await })
    });
    let tokens: Vec<String> = futures_join(calls).await;
    assert_eq!(
        sim.token_requests("refresh_token") - before,
        1,
        "one refresh reached Haravan"
    );
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "every caller got the same token"
    );
    assert_ne!(tokens[0], old, "and it is the new one");
    let resp = crate::support::http()
        .get(format!("{}/api/com/shop.json", sim.issuer()))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the new token works");
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<gatehouse::Result<secrecy::SecretString>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for h in handles {
        out.push(
            h.await
                .unwrap()
                .expect("a token")
                .expose_secret()
                .to_owned(),
        );
    }
    out
}

#[tokio::test]
async fn twenty_concurrent_callers_cause_one_refresh_on_the_embedded_store() {
    concurrent_refresh(Harness::embedded().await).await;
}

#[tokio::test]
async fn twenty_concurrent_callers_cause_one_refresh_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    concurrent_refresh(h).await;
}

#[tokio::test]
async fn a_dead_refresh_token_asks_for_reauthorization() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120);
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    sim.revoke_refresh_tokens(ADMIN_ORG);
    let err = haravan::access_token(&h.server.app.haravan, ADMIN_ORG)
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 403, "{err}");
    let item = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.attrs["needs_reauth"], json!(true));
    // The next admin login installs again, which clears the mark.
    sim.set_access_token_lifetime(86_400);
    let mut c = Browser::new();
    assert_eq!(install(&h, &mut c, ADMIN).await.status, 200);
    assert!(
        haravan::access_token(&h.server.app.haravan, ADMIN_ORG)
            .await
            .is_ok()
    );
}

/// A refresher that lets a "sibling" rotate the refresh token first, then presents the old one
/// itself: Haravan answers invalid_grant, and re-reading must find the sibling's tokens.
struct RotatedBySibling<'a>(&'a haravan::Haravan);

#[async_trait::async_trait]
impl gatehouse::refresh::Refresher for RotatedBySibling<'_> {
    async fn refresh(
        &self,
        refresh_token: &secrecy::SecretString,
    ) -> Result<gatehouse::refresh::Grant, gatehouse::refresh::RefreshError> {
        let app = self.0;
        let key = install_key(ADMIN_ORG);
        let sibling = app
            .refresh(refresh_token)
            .await
            .unwrap_or_else(|_| panic!("the sibling's refresh works"));
        let item = app.store.get(&key).await.unwrap().unwrap();
        let mut attrs = item.attrs.clone();
        let keys = app.secrets.app_keys().await.unwrap();
        gatehouse::refresh::seal(&keys, &key, &sibling, &mut attrs).unwrap();
        app.store
            .put(
                &gatehouse::store::Item::new(key, attrs),
                gatehouse::store::Condition::Always,
            )
            .await
            .unwrap();
        app.refresh(refresh_token).await
    }
}

#[tokio::test]
async fn invalid_grant_after_a_siblings_rotation_is_recovered() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120);
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    sim.set_access_token_lifetime(86_400);
    let token = gatehouse::refresh::access_token(
        &h.server.app,
        &install_key(ADMIN_ORG),
        &RotatedBySibling(&h.server.app.haravan),
    )
    .await
    .expect("recovered by re-reading");
    let item = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.attrs["needs_reauth"], json!(false));
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let stored = gatehouse::refresh::open(&keys, &item).unwrap();
    assert_eq!(stored.access_token.expose_secret(), token.expose_secret());
}

/// A store that counts the calls made through it, over the embedded store.
struct Counting {
    inner: gatehouse::store::EmbeddedStore,
    calls: std::sync::atomic::AtomicUsize,
}

impl Counting {
    fn count(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn called(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl gatehouse::store::Store for Counting {
    async fn get(
        &self,
        key: &gatehouse::store::Key,
    ) -> Result<Option<gatehouse::store::Item>, gatehouse::store::StoreError> {
        self.called();
        self.inner.get(key).await
    }
    async fn put(
        &self,
        item: &gatehouse::store::Item,
        condition: gatehouse::store::Condition,
    ) -> Result<(), gatehouse::store::StoreError> {
        self.called();
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &gatehouse::store::Key,
        set: &serde_json::Map<String, Value>,
        condition: gatehouse::store::Condition,
    ) -> Result<(), gatehouse::store::StoreError> {
        self.called();
        self.inner.update(key, set, condition).await
    }
    async fn take(
        &self,
        key: &gatehouse::store::Key,
    ) -> Result<Option<gatehouse::store::Item>, gatehouse::store::StoreError> {
        self.called();
        self.inner.take(key).await
    }
    async fn scan_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<gatehouse::store::Item>, gatehouse::store::StoreError> {
        self.inner.scan_prefix(prefix).await
    }
    async fn query(
        &self,
        pk: &str,
    ) -> Result<Vec<gatehouse::store::Item>, gatehouse::store::StoreError> {
        self.called();
        self.inner.query(pk).await
    }
    async fn transact(
        &self,
        writes: &[gatehouse::store::Write],
    ) -> Result<(), gatehouse::store::StoreError> {
        self.called();
        self.inner.transact(writes).await
    }
}

/// A `shop/update` delivery costs one store call: the delivery mark and the in-place update of
/// the install in one transaction. For an org that is not installed the transaction is refused
/// (404) and nothing is stored, mark included: still one call.
#[tokio::test]
async fn shop_update_makes_one_store_call() {
    let (h, counting) = Harness::on_wrapped_embedded(Vars::default(), |inner| Counting {
        inner,
        calls: Default::default(),
    })
    .await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let before = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .expect("installed");

    let body = sim.webhook_body("shop/update", ADMIN_ORG);
    let start = counting.count();
    let (status, text) = sim.send_webhook("shop/update", ADMIN_ORG, &body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"handled\":true"), "{text}");
    assert_eq!(
        counting.count() - start,
        1,
        "the mark and the update, in one transaction"
    );

    let after = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.attrs["shop"]["myharavan_domain"],
        json!("demo-one.myharavan.com")
    );
    assert!(after.attrs["shop_updated_at"].is_i64());
    // Everything else of the install is as it was, the token version included.
    let mut unchanged = after.attrs.clone();
    unchanged.remove("shop");
    unchanged.remove("shop_updated_at");
    let mut was = before.attrs.clone();
    was.remove("shop");
    was.remove("shop_updated_at");
    assert_eq!(unchanged, was);

    // An org that is not installed: 404, nothing created, no mark.
    let marks = h.items("webhook#haravan").await.len();
    let body = sim.webhook_body("shop/update", STAFF_ORG);
    let start = counting.count();
    let (status, text) = sim.send_webhook("shop/update", STAFF_ORG, &body).await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(counting.count() - start, 1, "one refused transaction");
    assert_eq!(h.items("webhook#haravan").await.len(), marks, "no mark");
    assert!(
        h.server
            .app
            .store
            .get(&install_key(STAFF_ORG))
            .await
            .unwrap()
            .is_none()
    );
}

/// A refresher that lets a `shop/update` delivery land between the refresh's read of the
/// install and its write, as a webhook handled by another container would.
struct ShopUpdatedMeanwhile<'a>(HaravanSim, &'a haravan::Haravan);

#[async_trait::async_trait]
impl gatehouse::refresh::Refresher for ShopUpdatedMeanwhile<'_> {
    async fn refresh(
        &self,
        refresh_token: &secrecy::SecretString,
    ) -> Result<gatehouse::refresh::Grant, gatehouse::refresh::RefreshError> {
        let app = self.1;
        let body = self.0.webhook_body("shop/update", ADMIN_ORG);
        let (status, text) = self.0.send_webhook("shop/update", ADMIN_ORG, &body).await;
        assert_eq!(status, 200, "{text}");
        app.refresh(refresh_token).await
    }
}

/// A token refresh and a `shop/update` at the same time: both land, neither undoes the other.
async fn refresh_keeps_a_concurrent_shop_update(h: Harness) {
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120); // inside the refresh margin: due at once
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    sim.set_access_token_lifetime(86_400);
    let key = install_key(ADMIN_ORG);
    // Shop details from an earlier delivery, which the refresh reads with the install: a write
    // of that copy would put them back over the newer ones.
    let mut old_shop = serde_json::Map::new();
    old_shop.insert(
        "shop".into(),
        json!({"myharavan_domain": "old.myharavan.com"}),
    );
    h.server
        .app
        .store
        .update(&key, &old_shop, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    let before = h.server.app.store.get(&key).await.unwrap().unwrap();

    let token = gatehouse::refresh::access_token(
        &h.server.app,
        &key,
        &ShopUpdatedMeanwhile(sim.clone(), &h.server.app.haravan),
    )
    .await
    .expect("refreshed");

    let after = h.server.app.store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        after.attrs["shop"]["myharavan_domain"],
        json!("demo-one.myharavan.com"),
        "the shop update survived the refresh"
    );
    assert_ne!(after.attrs["token_version"], before.attrs["token_version"]);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let stored = gatehouse::refresh::open(&keys, &after).unwrap();
    assert_eq!(stored.access_token.expose_secret(), token.expose_secret());
    assert_eq!(after.attrs["orgname"], before.attrs["orgname"]);
}

#[tokio::test]
async fn refresh_keeps_a_concurrent_shop_update_on_the_embedded_store() {
    refresh_keeps_a_concurrent_shop_update(Harness::embedded().await).await;
}

#[tokio::test]
async fn refresh_keeps_a_concurrent_shop_update_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    refresh_keeps_a_concurrent_shop_update(h).await;
}

/// Twenty distinct `app/uninstalled` deliveries for one org (Haravan sends one per event, and
/// retries each until it gets a 2xx): the first removes the install; the other nineteen find
/// it gone, which is what they ask for, so they are answered 200 (`already_done`) and recorded,
/// and Haravan stops retrying them. Their replays are duplicates. None answers 404.
async fn distinct_uninstalls_all_succeed(h: Harness) {
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    assert_eq!(count(&h, "install#haravan").await, 1);
    let deliveries: Vec<Value> = (0..20)
        .map(|i| {
            let mut body = sim.webhook_body("app/uninstalled", ADMIN_ORG);
            body["user_id"] = json!(200_000_000_000u64 + i);
            body
        })
        .collect();
    let sends: Vec<_> = deliveries
        .iter()
        .map(|body| {
            let sim = sim.clone();
            let body = body.clone();
            tokio::spawn(async move { sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for send in sends {
        answers.push(send.await.unwrap());
    }
    let mut removed = 0;
    for (status, text) in &answers {
        assert_eq!(*status, 200, "{text}");
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["handled"], json!(true), "{text}");
        if v.get("already_done").is_none() {
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "one delivery removed the install: {answers:?}");
    assert_eq!(count(&h, "install#haravan").await, 0);
    assert_eq!(count(&h, &org_sessions_partition(ADMIN_ORG)).await, 0);
    assert_eq!(count(&h, "webhook#haravan").await, 20, "each recorded once");
    for body in &deliveries {
        let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, body).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("duplicate"), "{text}");
    }
    assert_eq!(count(&h, "webhook#haravan").await, 20);
}

#[tokio::test]
async fn distinct_uninstalls_all_succeed_on_the_embedded_store() {
    distinct_uninstalls_all_succeed(Harness::embedded().await).await;
}

#[tokio::test]
async fn distinct_uninstalls_all_succeed_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    distinct_uninstalls_all_succeed(h).await;
}

/// A case's name, body, headers and the text its refusal must hold.
type Refusal<'a> = (&'a str, Vec<u8>, Vec<(&'a str, String)>, &'a str);

/// A signed POST to the webhook URL with `headers`, and the app's status and body.
async fn post_signed(h: &Harness, body: &[u8], headers: &[(&str, String)]) -> (u16, String) {
    let mut req = crate::support::http()
        .post(h.url("/haravan/webhooks"))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn haravan_secret(h: &Harness) -> String {
    h.server
        .app
        .secrets
        .credentials("haravan")
        .await
        .unwrap()
        .client_secret
        .expose_secret()
        .to_owned()
}

/// Input that a lenient reader would resolve one way or another is refused, and nothing is
/// written: a repeated signature, topic, org or content-type header (a valid one followed by
/// another), both signature spellings at once, a repeated JSON key, and a `shop/update` whose
/// shop fields are not text (which used to replace the stored shop with `{}`).
#[tokio::test]
async fn webhook_deliveries_with_ambiguous_or_mistyped_input_change_nothing() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let (status, _) = sim
        .send_webhook(
            "shop/update",
            ADMIN_ORG,
            &sim.webhook_body("shop/update", ADMIN_ORG),
        )
        .await;
    assert_eq!(status, 200);
    let shop_before = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap()
        .attrs["shop"]
        .clone();
    assert!(shop_before["name"].is_string(), "{shop_before}");
    let secret = haravan_secret(&h).await;
    let sign = |body: &[u8]| gatehouse_simulators::haravan::webhook_signature(&secret, body);
    let body = serde_json::to_vec(&json!({"id": 1000111111u64, "name": "Changed"})).unwrap();
    let sig = sign(&body);
    let ct = || ("content-type", "application/json".to_string());
    let topic = || ("x-haravan-topic", "shop/update".to_string());
    let org = || ("x-haravan-org-id", ADMIN_ORG.to_string());
    let good = || ("x-haravan-hmacsha256", sig.clone());
    let cases: Vec<Refusal> = vec![
        (
            "a valid signature followed by another",
            body.clone(),
            vec![
                ct(),
                topic(),
                org(),
                good(),
                ("x-haravan-hmacsha256", "AAAA".into()),
            ],
            "more than once",
        ),
        (
            "both signature spellings",
            body.clone(),
            vec![
                ct(),
                topic(),
                org(),
                good(),
                ("x-haravan-hmac-sha256", sig.clone()),
            ],
            "both",
        ),
        (
            "the topic twice",
            body.clone(),
            vec![
                ct(),
                topic(),
                ("x-haravan-topic", "app/uninstalled".into()),
                org(),
                good(),
            ],
            "more than once",
        ),
        (
            "the org twice",
            body.clone(),
            vec![
                ct(),
                topic(),
                org(),
                ("x-haravan-org-id", "1000222222".into()),
                good(),
            ],
            "more than once",
        ),
    ];
    let dup_key = br#"{"id":1000111111,"name":"Changed","name":"Again"}"#.to_vec();
    let mistyped: Vec<Vec<u8>> = [
        json!({"id": 1000111111u64, "name": 7}),
        json!({"id": 1000111111u64, "name": "ok", "email": {"a": 1}}),
        json!({"id": 1000111111u64, "domain": ["x"]}),
        json!({"id": true, "name": "Changed"}),
        json!({"id": 1000111111u64, "org_id": "../../x", "name": "Changed"}),
    ]
    .iter()
    .map(|v| serde_json::to_vec(v).unwrap())
    .collect();
    let mut cases = cases;
    cases.push((
        "a JSON key twice",
        dup_key.clone(),
        vec![
            ct(),
            topic(),
            org(),
            ("x-haravan-hmacsha256", sign(&dup_key)),
        ],
        "more than once",
    ));
    for body in &mistyped {
        cases.push((
            "a shop/update with a field of the wrong type",
            body.clone(),
            vec![ct(), topic(), ("x-haravan-hmacsha256", sign(body))],
            "",
        ));
    }
    for (name, body, headers, needle) in cases {
        let (status, text) = post_signed(&h, &body, &headers).await;
        assert_eq!(status, 400, "{name}: {text}");
        assert!(text.contains(needle), "{name}: `{needle}` in {text}");
    }
    assert_eq!(
        count(&h, "webhook#haravan").await,
        1,
        "no refusal left a mark"
    );
    let shop_after = h
        .server
        .app
        .store
        .get(&install_key(ADMIN_ORG))
        .await
        .unwrap()
        .unwrap()
        .attrs["shop"]
        .clone();
    assert_eq!(shop_after, shop_before, "the shop details are untouched");
}

/// Haravan's deliveries carry no id and no signed time, and their marks expire after 7 days:
/// an `app/uninstalled` whose body says it was made before the current install (an old one
/// replayed after a reinstall) is recorded and not acted on; a current one still acts.
#[tokio::test]
async fn webhook_uninstall_older_than_the_install_is_not_acted_on() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let mut old = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    old["created_at"] = json!("2020-01-01T00:00:00.000Z");
    let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &old).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"stale\":true"), "{text}");
    assert!(
        h.server
            .app
            .store
            .get(&install_key(ADMIN_ORG))
            .await
            .unwrap()
            .is_some(),
        "the install stays"
    );

    let mut bad = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    bad["created_at"] = json!("last week");
    let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &bad).await;
    assert_eq!(status, 400, "{text}");

    let mut current = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    current["created_at"] = json!(format!("{}", iso(now)));
    let (status, text) = sim
        .send_webhook("app/uninstalled", ADMIN_ORG, &current)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"handled\":true"), "{text}");
    assert!(
        h.server
            .app
            .store
            .get(&install_key(ADMIN_ORG))
            .await
            .unwrap()
            .is_none(),
        "removed"
    );
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (civil from days, Howard Hinnant's algorithm).
fn iso(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap();
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
