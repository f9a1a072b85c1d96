//! Sesami end to end: the local server against the Sesami simulator over real HTTP.

use crate::harness::{Backend, Browser, Harness, Page, query_param};
use gatehouse::config::Vars;
use gatehouse::sesami::install_key;
use gatehouse_simulators::sesami::{self as sim, now_ms};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Launch → install → consent → callback. Returns the callback page and its URL.
pub(crate) async fn install(h: &Harness, browser: &mut Browser, shop: &str) -> (Page, String) {
    let launch = browser
        .get(&h.url(&format!("/_sim/sesami/launch?shopId={shop}")))
        .await;
    assert_eq!(
        launch.status, 303,
        "the simulator redirects to the signed launch"
    );
    let to_app = browser
        .get(&launch.location.expect("launch location"))
        .await;
    assert_eq!(
        to_app.status, 302,
        "install redirects to consent: {}",
        to_app.body
    );
    let authorize = to_app.location.expect("authorization location");
    assert!(authorize.starts_with(&h.url("/_sim/sesami/api/v1/oauth/authorization?")));
    assert_eq!(query_param(&authorize, "shopId").as_deref(), Some(shop));
    assert_eq!(
        query_param(&authorize, "scopes[]").as_deref(),
        Some("Shop:Read")
    );
    assert_eq!(
        query_param(&authorize, "redirectUri"),
        Some(h.url("/sesami/callback"))
    );
    let consent_page = browser.get(&authorize).await;
    assert_eq!(consent_page.status, 200);
    assert!(consent_page.body.contains("Allow"));
    let consent = browser
        .post_form(
            &h.url("/_sim/sesami/consent"),
            &[
                ("shopId", shop),
                ("redirectUri", &h.url("/sesami/callback")),
                ("decision", "allow"),
            ],
        )
        .await;
    let callback = consent.location.expect("callback location");
    for p in ["code", "shopId", "timestamp", "hmac"] {
        assert!(query_param(&callback, p).is_some(), "callback carries {p}");
    }
    (browser.get(&callback).await, callback)
}

async fn stored_token(h: &Harness, shop: &str) -> Option<String> {
    let item = h.server.app.store.get(&install_key(shop)).await.unwrap()?;
    let sealed = item.str("token_sealed").expect("sealed token").to_owned();
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let key = install_key(shop);
    let token = keys
        .open(&sealed, &format!("{}/{}", key.pk, key.sk), "token_sealed")
        .expect("token decrypts under its own key");
    Some(token.expose_secret().to_owned())
}

async fn full_flow(h: Harness) {
    let mut browser = Browser::new();
    let (page, _) = install(&h, &mut browser, "shop-1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Demo shop shop-1"));
    assert!(
        browser.cookies.is_empty(),
        "the state cookie is cleared: {:?}",
        browser.cookies
    );
    let token = stored_token(&h, "shop-1").await.expect("install stored");
    assert!(token.starts_with("sesami-tok-"));
    assert_eq!(h.server.sesami.token_requests(), 1);
    let item = h
        .server
        .app
        .store
        .get(&install_key("shop-1"))
        .await
        .unwrap()
        .unwrap();
    let raw = serde_json::to_string(&item.attrs).unwrap();
    assert!(
        !raw.contains(&token),
        "no plaintext token in the stored item"
    );
    assert!(
        h.items("state#sesami").await.is_empty(),
        "the state was consumed"
    );

    let index = browser.get(&h.url("/")).await;
    assert!(index.body.contains("shop-1"));
    assert!(
        !index.body.contains(&token),
        "the index page redacts tokens"
    );
}

#[tokio::test]
async fn full_install_on_the_embedded_store() {
    full_flow(Harness::embedded().await).await;
}

#[tokio::test]
async fn full_install_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    full_flow(h).await;
}

#[tokio::test]
async fn dynamodb_install_item_holds_no_plaintext_token() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    let mut browser = Browser::new();
    let (page, _) = install(&h, &mut browser, "shop-raw").await;
    assert_eq!(page.status, 200);
    let token = stored_token(&h, "shop-raw").await.unwrap();
    let client = crate::support::dynamo_client().await.unwrap();
    let table = h.server.app.config.table_name.clone().unwrap();
    let raw = client
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("install#sesami#shop-raw".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("shop-raw".into()),
        )
        .send()
        .await
        .unwrap();
    let item = raw.item().expect("raw item");
    let dump = format!("{item:?}");
    assert!(dump.contains("token_sealed"));
    assert!(
        !dump.contains(&token),
        "the raw DynamoDB item shows no usable token"
    );
    assert!(!dump.contains("sesami-tok-"));
}

#[tokio::test]
async fn a_replayed_callback_never_exchanges_twice() {
    let h = Harness::embedded().await;
    let mut browser = Browser::new();
    let (page, callback) = install(&h, &mut browser, "shop-2").await;
    assert_eq!(page.status, 200);
    let before = stored_token(&h, "shop-2").await.unwrap();

    // The same browser again: its state cookie was cleared and its state consumed.
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("state cookie is missing"));
    // Another browser that started its own install for the shop presents the old callback:
    // its state is valid, but the code was used.
    let mut other = Browser::new();
    let launch = other.get(&h.url("/_sim/sesami/launch?shopId=shop-2")).await;
    let started = other.get(&launch.location.unwrap()).await;
    assert_eq!(started.status, 302);
    let replay = other.get(&callback).await;
    assert_eq!(replay.status, 409, "{}", replay.body);
    assert!(replay.body.contains("used already"));
    assert_eq!(
        h.server.sesami.token_requests(),
        1,
        "the code went to Sesami once"
    );
    assert_eq!(stored_token(&h, "shop-2").await.unwrap(), before);
}

/// The app secret the server uses, to sign test requests.
async fn client_secret(h: &Harness) -> String {
    let creds = h.server.app.secrets.credentials("sesami").await.unwrap();
    creds.client_secret.expose_secret().to_owned()
}

/// Asserts a refusal that left no install, no state and no code mark.
async fn assert_refused(h: &Harness, page: &Page, status: u16, needle: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(
        page.body.contains(needle),
        "expected `{needle}` in: {}",
        page.body
    );
    assert!(
        page.content_type.starts_with("text/html"),
        "browser routes answer HTML"
    );
    assert!(
        h.items("install#sesami").await.is_empty(),
        "no install stored"
    );
    assert!(h.items("code#sesami").await.is_empty(), "no code mark left");
}

#[tokio::test]
async fn bad_launches_are_refused_and_store_nothing() {
    let h = Harness::embedded().await;
    let secret = client_secret(&h).await;
    let mut b = Browser::new();
    let install = |q: String| h.url(&format!("/sesami/install?{q}"));

    let good = sim::signed_query(&secret, &[("shopId", "s1")], now_ms());
    let tampered = good.replace("shopId=s1", "shopId=s2");
    let page = b.get(&install(tampered)).await;
    assert_refused(&h, &page, 401, "hmac does not match").await;

    let wrong_key = sim::signed_query("not-the-secret", &[("shopId", "s1")], now_ms());
    let page = b.get(&install(wrong_key)).await;
    assert_refused(&h, &page, 401, "hmac does not match").await;

    let no_hmac = good.split("&hmac=").next().unwrap().to_owned();
    let page = b.get(&install(no_hmac)).await;
    assert_refused(&h, &page, 400, "`hmac` is missing").await;

    let stale = sim::signed_query(&secret, &[("shopId", "s1")], now_ms() - 10 * 60 * 1000);
    let page = b.get(&install(stale)).await;
    assert_refused(&h, &page, 401, "timestamp outside the window").await;

    let stale_seconds = sim::signed_query(&secret, &[("shopId", "s1")], now_ms() / 1000 - 3600);
    let page = b.get(&install(stale_seconds)).await;
    assert_refused(&h, &page, 401, "timestamp outside the window").await;

    let no_shop = sim::signed_query(&secret, &[], now_ms());
    let page = b.get(&install(no_shop)).await;
    assert_refused(&h, &page, 400, "`shopId` is missing").await;

    let page = b.get(&install(format!("{good}&shopId=s3"))).await;
    assert_refused(&h, &page, 400, "more than once").await;

    let page = b
        .get(&install("shopId=%FF&timestamp=1&hmac=00".into()))
        .await;
    assert_refused(&h, &page, 400, "not valid UTF-8").await;

    assert!(
        h.items("state#sesami").await.is_empty(),
        "no state was started"
    );
    assert!(b.cookies.is_empty(), "no cookie was set");

    // The launch in seconds is accepted as well as in milliseconds.
    let seconds = sim::signed_query(&secret, &[("shopId", "s1")], now_ms() / 1000);
    assert_eq!(b.get(&install(seconds)).await.status, 302);
}

/// A browser that has started an install for `shop` (state cookie set).
async fn started(h: &Harness, shop: &str) -> Browser {
    let mut b = Browser::new();
    let launch = b
        .get(&h.url(&format!("/_sim/sesami/launch?shopId={shop}")))
        .await;
    assert_eq!(b.get(&launch.location.unwrap()).await.status, 302);
    assert_eq!(b.cookies.len(), 1);
    b
}

#[tokio::test]
async fn bad_callbacks_are_refused_and_store_nothing() {
    let h = Harness::embedded().await;
    let secret = client_secret(&h).await;
    let callback = |q: String| h.url(&format!("/sesami/callback?{q}"));

    // A valid code and signature, but no state cookie.
    let code = h.server.sesami.issue_code("s1");
    let signed = sim::signed_query(&secret, &[("code", &code), ("shopId", "s1")], now_ms());
    let page = Browser::new().get(&callback(signed.clone())).await;
    assert_refused(&h, &page, 400, "state cookie is missing").await;

    // A tampered state cookie.
    let mut b = started(&h, "s1").await;
    for v in b.cookies.values_mut() {
        v.replace_range(0..2, "AA");
    }
    let page = b.get(&callback(signed.clone())).await;
    assert_refused(&h, &page, 400, "state cookie is invalid").await;

    // The state of another shop.
    let mut b = started(&h, "other-shop").await;
    let page = b.get(&callback(signed.clone())).await;
    assert_refused(&h, &page, 403, "another shop").await;

    // A wrong signature, a missing code, a stale timestamp.
    let mut b = started(&h, "s1").await;
    let page = b.get(&callback(signed.replace(&code, "forged-code"))).await;
    assert_refused(&h, &page, 401, "hmac does not match").await;
    let no_code = sim::signed_query(&secret, &[("shopId", "s1")], now_ms());
    let page = b.get(&callback(no_code)).await;
    assert_refused(&h, &page, 400, "`code` is missing").await;
    let stale = sim::signed_query(
        &secret,
        &[("code", &code), ("shopId", "s1")],
        now_ms() - 3_600_000,
    );
    let page = b.get(&callback(stale)).await;
    assert_refused(&h, &page, 401, "timestamp").await;

    // A signed code the token endpoint refuses.
    let unknown = sim::signed_query(
        &secret,
        &[("code", "never-issued"), ("shopId", "s1")],
        now_ms(),
    );
    let page = b.get(&callback(unknown)).await;
    assert_refused(&h, &page, 400, "Sesami refused the authorization code").await;
    assert_eq!(h.server.sesami.token_requests(), 1);

    // The real code still works in a fresh flow: nothing above spent it.
    let mut b = started(&h, "s1").await;
    let page = b.get(&callback(signed)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(stored_token(&h, "s1").await.is_some());
}

#[tokio::test]
async fn the_previous_client_secret_still_verifies() {
    let h = Harness::embedded().await;
    let dir = h.server.app.config.secrets_file.clone();
    let mut all: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&dir).unwrap()).unwrap();
    all["sesami"]["client_secret_previous"] = json!("the-old-secret-before-rotation");
    std::fs::write(&dir, serde_json::to_string(&all).unwrap()).unwrap();
    // A fresh server reads the rotated file (the running one caches for its TTL).
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_SECRETS_FILE", dir.to_string_lossy());
    let h2 = Harness::start(Backend::Embedded, vars).await.unwrap();
    let old = sim::signed_query(
        "the-old-secret-before-rotation",
        &[("shopId", "s1")],
        now_ms(),
    );
    let page = Browser::new()
        .get(&h2.url(&format!("/sesami/install?{old}")))
        .await;
    assert_eq!(page.status, 302, "{}", page.body);
    let other = sim::signed_query("some-other-secret", &[("shopId", "s1")], now_ms());
    let page = Browser::new()
        .get(&h2.url(&format!("/sesami/install?{other}")))
        .await;
    assert_eq!(page.status, 401);
}

fn webhook(h: &Harness, event: &str, shop: &str) -> Vec<u8> {
    let mut data = BTreeMap::new();
    data.insert("shopId".to_string(), Value::from(shop));
    data.insert("timestamp".to_string(), Value::from(now_ms().to_string()));
    data.insert("extra".to_string(), json!({"z": 1, "a": "é/ü"}));
    serde_json::to_vec(&h.server.sesami.webhook_body(event, data)).unwrap()
}

#[tokio::test]
async fn uninstall_webhook_removes_the_install_once() {
    let h = Harness::embedded().await;
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, "shop-w").await.0.status, 200);
    let url = h.url("/sesami/webhooks");
    let body = webhook(&h, "uninstall_app", "shop-w");

    let page = b.post(&url, "application/json", body.clone()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.content_type.starts_with("application/json"));
    assert!(
        stored_token(&h, "shop-w").await.is_none(),
        "install removed"
    );

    // Reinstalled; then the old delivery is replayed: it is acknowledged, not acted on.
    assert_eq!(install(&h, &mut b, "shop-w").await.0.status, 200);
    let page = b.post(&url, "application/json", body).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("duplicate"));
    assert!(
        stored_token(&h, "shop-w").await.is_some(),
        "the new install stays"
    );

    // Through the simulator's own sender, as Sesami would deliver it.
    let sent = b
        .post(
            &h.url("/_sim/sesami/webhooks/send?shopId=shop-w&event=uninstall_app"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(stored_token(&h, "shop-w").await.is_none());
}

#[tokio::test]
async fn bad_webhooks_are_refused_and_change_nothing() {
    let h = Harness::embedded().await;
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, "shop-x").await.0.status, 200);
    let url = h.url("/sesami/webhooks");
    let json_error = |page: &Page, status: u16, needle: &str| {
        assert_eq!(page.status, status, "{}", page.body);
        assert!(page.content_type.starts_with("application/json"));
        let v: Value = serde_json::from_str(&page.body).expect("JSON error body");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "`{needle}` in {message}");
    };

    let mut tampered: Value =
        serde_json::from_slice(&webhook(&h, "uninstall_app", "shop-x")).unwrap();
    tampered["data"]["extra"]["z"] = json!(2);
    let page = b
        .post(
            &url,
            "application/json",
            serde_json::to_vec(&tampered).unwrap(),
        )
        .await;
    json_error(&page, 401, "hmac does not match");

    let mut no_hmac = tampered.clone();
    no_hmac.as_object_mut().unwrap().remove("hmac");
    let page = b
        .post(
            &url,
            "application/json",
            serde_json::to_vec(&no_hmac).unwrap(),
        )
        .await;
    json_error(&page, 400, "`hmac`");

    let page = b.post(&url, "application/json", b"not json".to_vec()).await;
    json_error(&page, 400, "not a JSON object");
    let page = b
        .post(&url, "application/json", vec![0xff, 0xfe, b'{'])
        .await;
    json_error(&page, 400, "not a JSON object");
    let page = b
        .post(&url, "text/plain", webhook(&h, "uninstall_app", "shop-x"))
        .await;
    json_error(&page, 415, "application/json");
    let page = b
        .post(&url, "application/json", vec![b' '; 300 * 1024])
        .await;
    json_error(&page, 413, "larger than");

    assert!(
        h.items("webhook#sesami").await.is_empty(),
        "no refusal left a delivery mark"
    );

    // An uninstall for a shop that is not installed holds already: done, so Sesami stops
    // retrying; recorded once, and its replay is a duplicate.
    let delivery = webhook(&h, "uninstall_app", "no-such-shop");
    let page = b.post(&url, "application/json", delivery.clone()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("\"already_done\":true"), "{}", page.body);
    assert_eq!(h.items("webhook#sesami").await.len(), 1);
    let page = b.post(&url, "application/json", delivery).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("duplicate"), "{}", page.body);

    let page = b
        .post(
            &url,
            "application/json",
            webhook(&h, "something_new", "shop-x"),
        )
        .await;
    assert_eq!(page.status, 200, "unknown events are acknowledged");

    assert!(
        stored_token(&h, "shop-x").await.is_some(),
        "the install is untouched"
    );
}

/// The object a signed query signs: its parameters but `hmac`, and the `hmac`.
fn signed_params(query: &str) -> (BTreeMap<String, Value>, String) {
    let mut data = BTreeMap::new();
    let mut hmac = String::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()).into_owned() {
        if k == "hmac" {
            hmac = v;
        } else {
            data.insert(k, Value::from(v));
        }
    }
    (data, hmac)
}

/// Whoever sees a fresh signed launch, callback or app-load URL holds an `hmac` over its
/// parameters, by the same key and rule as a webhook's `data`; posted as `data` of an
/// `uninstall_app` (whose `event` is unsigned), it must not remove the install.
#[tokio::test]
async fn a_signed_browser_url_is_not_a_webhook() {
    let h = Harness::embedded().await;
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, "shop-url").await.0.status, 200);
    let url = h.url("/sesami/webhooks");
    let sim = &h.server.sesami;
    let browser_urls = [
        sim.signed_query(&[("shopId", "shop-url")]),
        sim.signed_query(&[("code", "c0de"), ("shopId", "shop-url")]),
        sim.signed_query(&[
            ("appId", "app-1"),
            ("locale", "en"),
            ("messageId", "m-1"),
            ("shopId", "shop-url"),
            ("target", "admin"),
            ("token", "t"),
        ]),
    ];
    for query in browser_urls {
        let (data, hmac) = signed_params(&query);
        let body = json!({"event": "uninstall_app", "data": data, "hmac": hmac});
        let page = b
            .post(&url, "application/json", serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(page.status, 401, "{query}: {}", page.body);
        assert!(page.body.contains("browser URL"), "{}", page.body);
    }

    // Signed webhook data must name its event, and the same one as the envelope.
    let secret = h.server.app.secrets.credentials("sesami").await.unwrap();
    let secret = secret.client_secret.expose_secret().to_owned();
    for (event_in_data, message) in [
        (None, "`data.event` is missing"),
        (Some(json!("app_updated")), "another event"),
        (Some(json!(7)), "not a string"),
    ] {
        let mut data = BTreeMap::from([
            ("shopId".to_string(), json!("shop-url")),
            ("deliveryId".to_string(), json!("d-1")),
        ]);
        if let Some(e) = event_in_data {
            data.insert("event".into(), e);
        }
        let hmac = sim::sign(&secret, &data);
        let body = json!({"event": "uninstall_app", "data": data, "hmac": hmac});
        let page = b
            .post(&url, "application/json", serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains(message), "{message} in {}", page.body);
    }
    assert!(h.items("webhook#sesami").await.is_empty(), "no mark left");
    assert!(
        stored_token(&h, "shop-url").await.is_some(),
        "the install stays"
    );

    // A genuine delivery, as the simulator sends it, still acts; its replay does not.
    let body = webhook(&h, "uninstall_app", "shop-url");
    let page = b.post(&url, "application/json", body.clone()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(stored_token(&h, "shop-url").await.is_none());
    let page = b.post(&url, "application/json", body).await;
    assert!(page.body.contains("duplicate"), "{}", page.body);
}

/// With `SESAMI_WEBHOOK_SIGNED_EVENT=false` (a Sesami whose webhook data does not name its
/// event), data without `event` acts, and a browser URL's parameter set is still refused.
#[tokio::test]
async fn without_a_signed_event_only_browser_parameter_sets_are_refused() {
    let mut vars = Vars::default();
    vars.set("SESAMI_WEBHOOK_SIGNED_EVENT", "false");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, "shop-plain").await.0.status, 200);
    let url = h.url("/sesami/webhooks");
    let (data, hmac) = signed_params(&h.server.sesami.signed_query(&[("shopId", "shop-plain")]));
    let body = json!({"event": "uninstall_app", "data": data, "hmac": hmac});
    let page = b
        .post(&url, "application/json", serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(stored_token(&h, "shop-plain").await.is_some());

    let secret = h.server.app.secrets.credentials("sesami").await.unwrap();
    let data = BTreeMap::from([
        ("shopId".to_string(), json!("shop-plain")),
        ("uninstalledAt".to_string(), json!("2026-12-01T10:00:00Z")),
    ]);
    let hmac = sim::sign(secret.client_secret.expose_secret(), &data);
    let body = json!({"event": "uninstall_app", "data": data, "hmac": hmac});
    let page = b
        .post(&url, "application/json", serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(stored_token(&h, "shop-plain").await.is_none());
}

/// The merchant's Deny on Sesami's consent page comes back as `?error=access_denied`: reported
/// as Sesami's refusal, not as a missing `code`; nothing stored.
#[tokio::test]
async fn the_merchants_deny_is_reported_as_sesamis_refusal() {
    let h = Harness::embedded().await;
    let mut browser = Browser::new();
    let launch = browser
        .get(&h.url("/_sim/sesami/launch?shopId=shop-deny"))
        .await;
    let to_app = browser.get(&launch.location.expect("launch")).await;
    assert_eq!(to_app.status, 302, "{}", to_app.body);
    let consent = browser
        .post_form(
            &h.url("/_sim/sesami/consent"),
            &[
                ("shopId", "shop-deny"),
                ("redirectUri", &h.url("/sesami/callback")),
                ("decision", "deny"),
            ],
        )
        .await;
    let callback = consent.location.expect("callback location");
    assert_eq!(
        query_param(&callback, "error").as_deref(),
        Some("access_denied")
    );
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("access_denied"), "{}", page.body);
    assert!(!page.body.contains("`code`"), "{}", page.body);
    assert!(stored_token(&h, "shop-deny").await.is_none());
}
