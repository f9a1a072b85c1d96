//! Saison connect end to end: the local server against the Saison simulator over real HTTP.

use crate::harness::{Backend, Browser, Harness, Page, query_param, resolve, saison_link};
use gatehouse::config::Vars;
use gatehouse::saison::{self, ConnectionId, connection_key};
use gatehouse_simulators::haravan::HaravanSim;
use secrecy::ExposeSecret;

pub(crate) const MEMBER: &str = "demo";
pub(crate) const END_USER: &str = "app-user-1";
pub(crate) const CARDHOLDER: &str = "M0001";

/// The connection of the tests' end user and cardholder.
fn id() -> ConnectionId {
    ConnectionId::new(END_USER, MEMBER, CARDHOLDER)
}

/// A connect link for the tests' end user → Saison's sign-in screen → callback. Returns the
/// callback's answer and its URL.
pub(crate) async fn connect(h: &Harness, b: &mut Browser) -> (Page, String) {
    let link = saison_link(h, END_USER).await;
    connect_through(b, &link, CARDHOLDER, h).await
}

/// `link` opened in `b`, signed in at Saison as `cardholder`, and the callback followed.
pub(crate) async fn connect_through(
    b: &mut Browser,
    link: &str,
    cardholder: &str,
    h: &Harness,
) -> (Page, String) {
    let callback = sign_in(h, b, link, cardholder).await;
    (b.get(&callback).await, callback)
}

/// `link` opened in `b` and signed in at Saison as `cardholder`: the callback URL Saison sends
/// the browser to (not followed).
pub(crate) async fn sign_in(h: &Harness, b: &mut Browser, link: &str, cardholder: &str) -> String {
    let start = b.get(link).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let screen = start.location.unwrap();
    assert!(
        screen.contains(&format!("/auth/screen/{MEMBER}/authorize?")),
        "{screen}"
    );
    assert_eq!(
        query_param(&screen, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(&screen, "client_id").as_deref(),
        Some("gatehouse-local-saison")
    );
    let page = b.get(&screen).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (action, mut fields) = HaravanSim::parse_form_post(&page.body);
    fields.retain(|(k, _)| k != "id" && k != "password");
    fields.push(("id".into(), cardholder.into()));
    fields.push(("password".into(), "password".into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed_in = b.post_form(&resolve(&screen, &action), &f).await;
    assert_eq!(signed_in.status, 302, "{}", signed_in.body);
    let callback = signed_in.location.unwrap();
    assert!(
        callback.starts_with(&h.url("/saison/callback?code=")),
        "{callback}"
    );
    callback
}

async fn stored(h: &Harness) -> Option<gatehouse::store::Item> {
    h.server
        .app
        .store
        .get(&connection_key(&id()))
        .await
        .unwrap()
}

async fn journey(h: Harness) {
    let sim = h.server.saison.clone();
    let mut b = Browser::new();
    let (page, _) = connect(&h, &mut b).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(
        page.location.as_deref(),
        Some(
            h.url("/done?gatehouse=connected&platform=saison&tenant=M0001")
                .as_str()
        ),
        "back to the app with the outcome"
    );
    assert_eq!(sim.profile_requests(), (1, 0), "{:?}", sim.last_refusal());
    let item = stored(&h).await.expect("connection stored");
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let tokens = gatehouse::refresh::open(&keys, &item).unwrap();
    let raw = serde_json::to_string(&item.attrs).unwrap();
    assert!(!raw.contains(tokens.access_token.expose_secret()));
    assert!(tokens.refresh_token.is_some());
    assert!(h.items("state#saison").await.is_empty());
    assert!(h.items("link#connect#saison").await.is_empty());
    let connection = item.record::<saison::Connection>().unwrap();
    assert_eq!(connection.connection.end_user.as_deref(), Some(END_USER));
    assert_eq!(connection.cardholder, CARDHOLDER);

    // Many signed calls: fresh nonces every time, all accepted.
    for _ in 0..20 {
        saison::call(
            &h.server.app.saison,
            &id(),
            "GET",
            "/auth/account/profile",
            None,
        )
        .await
        .expect("signed GET accepted");
    }
    saison::call(
        &h.server.app.saison,
        &id(),
        "POST",
        "/auth/account/profile",
        Some(&[("data_flg", "1"), ("info_key", "birthday,sex")]),
    )
    .await
    .expect("signed POST accepted");
    saison::call(
        &h.server.app.saison,
        &id(),
        "GET",
        "/auth/account/profile?info_key=sex",
        None,
    )
    .await
    .expect("signed GET with a query accepted");
    assert_eq!(sim.profile_requests(), (23, 0), "{:?}", sim.last_refusal());
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
async fn an_expired_access_token_is_refreshed_before_use() {
    let h = Harness::embedded().await;
    let sim = h.server.saison.clone();
    let mut b = Browser::new();
    assert_eq!(connect(&h, &mut b).await.0.status, 302);
    let before = sim.token_requests("refresh_token");
    sim.expire_access_tokens();
    // The stored expiry says the token is still good; make it due as time would.
    let mut item = stored(&h).await.unwrap();
    item.attrs
        .insert("expires_at".into(), (gatehouse::store::now() + 10).into());
    h.server
        .app
        .store
        .put(&item, gatehouse::store::Condition::Always)
        .await
        .unwrap();
    saison::call(
        &h.server.app.saison,
        &id(),
        "GET",
        "/auth/account/profile",
        None,
    )
    .await
    .expect("refreshed, then accepted");
    assert_eq!(sim.token_requests("refresh_token"), before + 1);
    let (accepted, refused) = sim.profile_requests();
    assert_eq!(refused, 0, "{:?}", sim.last_refusal());
    assert!(accepted >= 2);
}

/// Opens a fresh connect link of the tests' end user in `b`.
async fn start(h: &Harness, b: &mut Browser) {
    let link = saison_link(h, END_USER).await;
    let page = b.get(&link).await;
    assert_eq!(page.status, 302, "{}", page.body);
}

#[tokio::test]
async fn bad_callbacks_are_refused_and_store_nothing() {
    let h = Harness::embedded().await;
    let sim = h.server.saison.clone();

    // No state cookie.
    let code = sim.issue_code(MEMBER, "M0001");
    let page = Browser::new()
        .get(&h.url(&format!("/saison/callback?code={code}")))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(stored(&h).await.is_none());

    // A code the token endpoint refuses: back to the app with the reason, nothing stored, no
    // mark left.
    let mut b = Browser::new();
    start(&h, &mut b).await;
    let page = b.get(&h.url("/saison/callback?code=never-issued")).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(
        page.location.as_deref(),
        Some(
            h.url("/done?gatehouse=error&reason=platform_refused")
                .as_str()
        )
    );
    assert!(stored(&h).await.is_none());
    assert!(h.items("code#saison").await.is_empty());

    // The anonymous start is off: no state stored, whatever the member. (The refused callback
    // above left its flow's state as it was: a callback stores with the state's consumption,
    // or nothing.)
    let states = h.items("state#saison").await.len();
    assert_eq!(states, 1, "the refused callback's state is not consumed");
    for path in [
        "/saison/authorize?member=other",
        "/saison/authorize?member=demo",
        "/saison/authorize",
    ] {
        let page = Browser::new().get(&h.url(path)).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(
            page.body.contains("SAISON_ANONYMOUS_START"),
            "{}",
            page.body
        );
    }
    assert_eq!(h.items("state#saison").await.len(), states);

    // Reused state: a second callback with the cookie of a flow that already completed.
    let mut b = Browser::new();
    start(&h, &mut b).await;
    let cookies = b.cookies.clone();
    let first = sim.issue_code(MEMBER, "M0001");
    let page = b
        .get(&h.url(&format!("/saison/callback?code={first}")))
        .await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert!(page.location.unwrap().contains("gatehouse=connected"));
    b.cookies = cookies;
    let second = sim.issue_code(MEMBER, "M0001");
    let exchanges = sim.token_requests("authorization_code");
    let page = b
        .get(&h.url(&format!("/saison/callback?code={second}")))
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert_eq!(sim.token_requests("authorization_code"), exchanges);

    // A replayed callback URL in a browser with a fresh flow: the code was used.
    let mut other = Browser::new();
    start(&h, &mut other).await;
    let page = other
        .get(&h.url(&format!("/saison/callback?code={first}")))
        .await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(
        page.location.as_deref(),
        Some(h.url("/done?gatehouse=error&reason=already_used").as_str())
    );
    assert_eq!(sim.token_requests("authorization_code"), exchanges);
}

/// `SAISON_ANONYMOUS_START=true` keeps the start without a link: a member the app does not
/// serve is a 404; a served one connects a cardholder of no end user, shown on a page.
#[tokio::test]
async fn the_anonymous_start_is_a_setting() {
    let mut vars = Vars::default();
    vars.set("SAISON_ANONYMOUS_START", "true");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let page = Browser::new()
        .get(&h.url("/saison/authorize?member=other"))
        .await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(h.items("state#saison").await.is_empty());
    let mut b = Browser::new();
    let callback = sign_in(&h, &mut b, &h.url("/saison/authorize?member=demo"), "M0002").await;
    let page = b.get(&callback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Connected"), "{}", page.body);
    assert!(
        page.body.contains("M0002"),
        "the profile is shown: {}",
        page.body
    );
    let anonymous = ConnectionId {
        end_user: None,
        member: MEMBER.into(),
        cardholder: "M0002".into(),
    };
    assert_eq!(connection_key(&anonymous).pk, "conn#saison#~anonymous");
    let item = h
        .server
        .app
        .store
        .get(&connection_key(&anonymous))
        .await
        .unwrap();
    assert!(item.is_some(), "stored for no end user");
}

#[tokio::test]
async fn the_simulator_refuses_bad_signatures() {
    let h = Harness::embedded().await;
    let sim = h.server.saison.clone();
    let mut b = Browser::new();
    assert_eq!(connect(&h, &mut b).await.0.status, 302);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let item = stored(&h).await.unwrap();
    let token = gatehouse::refresh::open(&keys, &item).unwrap().access_token;
    let secret = h
        .server
        .app
        .secrets
        .credentials("saison")
        .await
        .unwrap()
        .client_secret
        .expose_secret()
        .to_owned();
    let url = url::Url::parse(&format!(
        "{}/_sim/saison/auth/account/profile",
        h.server.base()
    ))
    .unwrap();
    let (uri, host, port) = saison::mac_target(&url).unwrap();
    let client = crate::support::http();
    let send = |header: String| {
        let req = client
            .get(url.clone())
            .header("X-API-VERSION", "1")
            .header("Authorization", header);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let now = gatehouse::store::now() as u64;
    let header = |key: &str, ts: u64, nonce: &str| {
        format!(
            "MAC id=\"{}\" ts=\"{ts}\" nonce=\"{nonce}\" mac=\"{}\"",
            token.expose_secret(),
            saison::mac(key.as_bytes(), ts, nonce, "GET", &uri, &host, port)
        )
    };
    assert_eq!(send(header(&secret, now, "aaaaa11111")).await, 200);
    assert_eq!(
        send(header(&secret, now, "aaaaa11111")).await,
        401,
        "reused nonce"
    );
    assert_eq!(
        send(header("wrong-key", now, "bbbbb22222")).await,
        401,
        "wrong key"
    );
    assert_eq!(
        send(header(&secret, now - 3600, "ccccc33333")).await,
        401,
        "stale ts"
    );
    assert_eq!(
        send(header(&secret, now, "short")).await,
        401,
        "malformed nonce"
    );
    assert_eq!(
        send(header(&secret, now, "ddddd44444")).await,
        200,
        "a good one still works"
    );
    assert_eq!(sim.profile_requests().1, 4);
}

#[tokio::test]
async fn comma_separator_mac_key_and_echoed_state_are_settings() {
    let mut vars = Vars::default();
    vars.set("SAISON_MAC_SEPARATOR", "comma");
    vars.set("SAISON_MAC_KEY", "mac_key");
    vars.set("SAISON_SEND_STATE", "true");
    vars.set("SAISON_SEND_REDIRECT_URI", "true");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let sim = h.server.saison.clone();
    sim.set_issue_mac_key(true);
    let mut b = Browser::new();
    let (page, callback) = connect(&h, &mut b).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert!(
        query_param(&callback, "state").is_some(),
        "the state is echoed"
    );
    assert_eq!(sim.profile_requests(), (1, 0), "{:?}", sim.last_refusal());
    let item = stored(&h).await.unwrap();
    assert!(item.str("mac_key_sealed").is_some());

    // A forged echoed state is refused.
    let mut c = Browser::new();
    start(&h, &mut c).await;
    let code = sim.issue_code(MEMBER, "M0002");
    let page = c
        .get(&h.url(&format!("/saison/callback?code={code}&state=forged")))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
}
