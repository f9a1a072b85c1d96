//! Connect links (`POST /v1/connect-links`) and the Saison connections they start, end to end
//! over real HTTP against the Saison simulator: each connection belongs to one of the app's
//! users and one cardholder, a link starts one flow, and a callback completes only in the
//! browser (and, with Saison echoing `state`, the flow) that opened it.

use crate::harness::{Backend, Browser, Harness, saison_link};
use crate::saison::{MEMBER, connect_through, sign_in};
use gatehouse::config::Vars;
use gatehouse::saison::{self, ConnectionId, connection_key};
use serde_json::{Value, json};

const LINKS: &str = "link#connect#saison";

async fn connection(h: &Harness, id: &ConnectionId) -> Option<saison::Connection> {
    h.server
        .app
        .store
        .get(&connection_key(id))
        .await
        .unwrap()
        .map(|item| item.record().unwrap())
}

/// Every Saison connection of `end_user` (one query of the end user's partition).
async fn connections_of(h: &Harness, end_user: &str) -> Vec<String> {
    h.items(&format!("conn#saison#{end_user}"))
        .await
        .into_iter()
        .map(|i| i.key.sk)
        .collect()
}

async fn post_link(h: &Harness, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let page = Browser::new()
        .post(&h.url("/v1/connect-links"), content_type, body)
        .await;
    let answer = serde_json::from_str(&page.body).unwrap_or(Value::Null);
    (page.status, answer)
}

async fn two_users_two_cardholders(h: Harness) {
    let (link_a, link_b) = (
        saison_link(&h, "user-a").await,
        saison_link(&h, "user-b").await,
    );
    let (mut a, mut b) = (Browser::new(), Browser::new());
    let (page_a, _) = connect_through(&mut a, &link_a, "M0001", &h).await;
    let (page_b, _) = connect_through(&mut b, &link_b, "M0002", &h).await;
    for (page, tenant) in [(&page_a, "M0001"), (&page_b, "M0002")] {
        assert_eq!(page.status, 302, "{}", page.body);
        assert_eq!(
            page.location.as_deref(),
            Some(
                h.url(&format!(
                    "/done?gatehouse=connected&platform=saison&tenant={tenant}"
                ))
                .as_str()
            )
        );
    }
    let id_a = ConnectionId::new("user-a", MEMBER, "M0001");
    let id_b = ConnectionId::new("user-b", MEMBER, "M0002");
    let (ca, cb) = (
        connection(&h, &id_a).await.expect("user-a's"),
        connection(&h, &id_b).await.expect("user-b's"),
    );
    assert_eq!(
        (ca.connection.end_user.as_deref(), ca.cardholder.as_str()),
        (Some("user-a"), "M0001")
    );
    assert_eq!(
        (cb.connection.end_user.as_deref(), cb.cardholder.as_str()),
        (Some("user-b"), "M0002")
    );
    // Each connection calls Saison as its own cardholder.
    for (id, cardholder) in [(&id_a, "M0001"), (&id_b, "M0002")] {
        let profile = saison::call(
            &h.server.app.saison,
            id,
            "GET",
            "/auth/account/profile",
            None,
        )
        .await
        .unwrap();
        assert_eq!(profile["user_id"], cardholder);
    }

    // A second card of user-a is a third connection; none replaces another.
    let link = saison_link(&h, "user-a").await;
    let (page, _) = connect_through(&mut Browser::new(), &link, "M0003", &h).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(
        connections_of(&h, "user-a").await,
        vec!["demo#M0001", "demo#M0003"]
    );
    assert_eq!(connections_of(&h, "user-b").await, vec!["demo#M0002"]);
    assert!(h.items(LINKS).await.is_empty(), "every link consumed");
}

#[tokio::test]
async fn two_cardholders_of_two_users_get_two_connections() {
    two_users_two_cardholders(Harness::embedded().await).await;
}

#[tokio::test]
async fn two_cardholders_of_two_users_get_two_connections_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    two_users_two_cardholders(h).await;
}

#[tokio::test]
async fn a_link_is_used_once() {
    let h = Harness::embedded().await;
    let link = saison_link(&h, "user-a").await;
    let first = Browser::new().get(&link).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert_eq!(h.items("state#saison").await.len(), 1);
    for mut browser in [Browser::new(), Browser::new()] {
        let again = browser.get(&link).await;
        assert_eq!(again.status, 409, "{}", again.body);
        assert!(again.body.contains("already_used"), "{}", again.body);
        assert!(browser.cookies.is_empty(), "no flow started");
    }
    assert_eq!(h.items("state#saison").await.len(), 1);
    // An id that was never issued reads the same; one that is not an id is a 400.
    let page = Browser::new()
        .get(&h.url("/saison/authorize?link=never-issued"))
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    let page = Browser::new()
        .get(&h.url("/saison/authorize?link=..%2Fx"))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    // A link names its member; `member` beside it is refused.
    let link = saison_link(&h, "user-a").await;
    let page = Browser::new().get(&format!("{link}&member=demo")).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(h.items("state#saison").await.len(), 1);
}

#[tokio::test]
async fn a_callback_in_another_browser_is_refused_and_stores_nothing() {
    let h = Harness::embedded().await;
    let sim = h.server.saison.clone();
    let link = saison_link(&h, "victim").await;
    let mut opener = Browser::new();
    let callback = sign_in(&h, &mut opener, &link, "M0001").await;
    let exchanges = sim.token_requests("authorization_code");
    let page = Browser::new().get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("state_missing"), "{}", page.body);
    assert!(connections_of(&h, "victim").await.is_empty());
    assert!(h.items("code#saison").await.is_empty());
    assert_eq!(sim.token_requests("authorization_code"), exchanges);
    // The browser that opened the link still completes it.
    let page = opener.get(&callback).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(connections_of(&h, "victim").await, vec!["demo#M0001"]);
}

/// With Saison echoing `state` (`SAISON_SEND_STATE`), a code is bound to the flow it was
/// issued for: an attacker's callback URL, opened in the browser of a victim whose own flow is
/// in progress, is refused, and the attacker's card is not connected to the victim.
#[tokio::test]
async fn another_flows_callback_is_refused_when_saison_echoes_state() {
    let mut vars = Vars::default();
    vars.set("SAISON_SEND_STATE", "true");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let attacker_link = saison_link(&h, "attacker").await;
    let attacker_callback = sign_in(&h, &mut Browser::new(), &attacker_link, "M0003").await;
    let mut victim = Browser::new();
    let page = victim.get(&saison_link(&h, "victim").await).await;
    assert_eq!(page.status, 302, "{}", page.body);
    let page = victim.get(&attacker_callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("state_invalid"), "{}", page.body);
    assert!(connections_of(&h, "victim").await.is_empty());
    assert!(connections_of(&h, "attacker").await.is_empty());
}

#[tokio::test]
async fn return_to_must_be_on_an_allowed_origin() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_RETURN_TO_ORIGINS", "https://app.example.com");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    for return_to in [
        h.url("/done"),
        "https://evil.example.com/done".into(),
        "https://app.example.com.evil.example.com/".into(),
        "http://app.example.com/done".into(),
        "https://app.example.com:444/".into(),
        "//app.example.com/done".into(),
        "https://user@app.example.com/".into(),
    ] {
        let body = json!({"platform": "saison", "end_user": "u", "return_to": return_to});
        let (status, answer) =
            post_link(&h, "application/json", body.to_string().into_bytes()).await;
        assert_eq!(status, 400, "{return_to}: {answer}");
    }
    assert!(h.items(LINKS).await.is_empty());
    let body = json!({"platform": "saison", "end_user": "u", "return_to": "https://app.example.com/x?y=1"});
    let (status, answer) = post_link(&h, "application/json", body.to_string().into_bytes()).await;
    assert_eq!(status, 201, "{answer}");
    let expires_at = answer["expires_at"].as_i64().unwrap();
    let now = gatehouse::store::now();
    assert!(expires_at > now && expires_at <= now + 600, "{answer}");
    let url = answer["url"].as_str().unwrap();
    assert!(url.starts_with(&h.url("/saison/authorize?link=")), "{url}");
    assert_eq!(h.items(LINKS).await.len(), 1);
}

#[tokio::test]
async fn bad_link_requests_are_refused_and_store_nothing() {
    let h = Harness::embedded().await;
    let ok = json!({"platform": "saison", "end_user": "user-1", "return_to": h.url("/done")});
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        o.to_string().into_bytes()
    };
    let without = |k: &str| {
        let mut o = ok.clone();
        o.as_object_mut().unwrap().remove(k);
        o.to_string().into_bytes()
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("no platform", "application/json", without("platform"), 400),
        ("no end_user", "application/json", without("end_user"), 400),
        (
            "no return_to",
            "application/json",
            without("return_to"),
            400,
        ),
        (
            "a platform without links (Sesami)",
            "application/json",
            with("platform", json!("sesami")),
            400,
        ),
        (
            "a platform without user authorization (MoMo)",
            "application/json",
            with("platform", json!("momo")),
            400,
        ),
        (
            "no such platform",
            "application/json",
            with("platform", json!("shopify")),
            400,
        ),
        (
            "a portal for a platform other than weblink",
            "application/json",
            with("portal", json!("demo.administrateweblink.com")),
            400,
        ),
        (
            "a platform that is not text",
            "application/json",
            with("platform", json!(1)),
            400,
        ),
        (
            "an empty end_user",
            "application/json",
            with("end_user", json!("")),
            400,
        ),
        (
            "an end_user with #",
            "application/json",
            with("end_user", json!("a#b")),
            400,
        ),
        (
            "an end_user path",
            "application/json",
            with("end_user", json!("../x")),
            400,
        ),
        (
            "an end_user of 257 bytes",
            "application/json",
            with("end_user", json!("u".repeat(257))),
            400,
        ),
        (
            "an end_user that is a number",
            "application/json",
            with("end_user", json!(7)),
            400,
        ),
        (
            "a relative return_to",
            "application/json",
            with("return_to", json!("/done")),
            400,
        ),
        (
            "not JSON",
            "application/json",
            b"platform=saison".to_vec(),
            400,
        ),
        ("a JSON array", "application/json", b"[]".to_vec(), 400),
        (
            "a key given twice",
            "application/json",
            br#"{"platform":"saison","platform":"haravan","end_user":"u","return_to":"x"}"#
                .to_vec(),
            400,
        ),
        (
            "a form body",
            "application/x-www-form-urlencoded",
            ok.to_string().into_bytes(),
            415,
        ),
        (
            "an oversized body",
            "application/json",
            with("pad", json!("x".repeat(8192))),
            413,
        ),
    ];
    for (what, content_type, body, expected) in cases {
        let (status, answer) = post_link(&h, content_type, body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(
            answer["error"].is_string() || answer.is_object(),
            "{what}: JSON"
        );
    }
    let (status, answer) =
        post_link(&h, "application/json", with("platform", json!("sesami"))).await;
    assert_eq!(status, 400);
    assert!(
        answer.to_string().contains("Sesami's admin"),
        "the message says why: {answer}"
    );
    assert!(h.items(LINKS).await.is_empty(), "nothing stored");
}

/// The `connection.created` events about `tenant` in the outbox.
async fn created(h: &Harness, tenant: &str) -> usize {
    h.items("outbox")
        .await
        .iter()
        .filter_map(|i| gatehouse::events::Event::from_attrs(&i.attrs).ok())
        .filter(|e| e.name == gatehouse::events::names::CONNECTION_CREATED && e.tenant == tenant)
        .count()
}

/// A callback of another app user's link, completed in a browser that opened a link of its own
/// (Saison echoing `state`), is refused: nothing stored for either user and no lifecycle event;
/// each user's own callback then stores one connection with one `connection.created`, and the
/// two are read and listed apart through `/v1/connections`.
#[tokio::test]
async fn another_users_callback_is_refused_and_each_connection_has_one_event() {
    let mut vars = Vars::default();
    vars.set("SAISON_SEND_STATE", "true");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let mut a = Browser::new();
    let callback_a = sign_in(&h, &mut a, &saison_link(&h, "user-a").await, "M0001").await;
    let mut b = Browser::new();
    let callback_b = sign_in(&h, &mut b, &saison_link(&h, "user-b").await, "M0002").await;
    let page = b.get(&callback_a).await;
    assert_ne!(page.status, 200, "{}", page.body);
    assert!(
        page.location
            .as_deref()
            .is_none_or(|l| !l.contains("gatehouse=connected")),
        "{:?}",
        page.location
    );
    assert!(connections_of(&h, "user-a").await.is_empty());
    assert!(connections_of(&h, "user-b").await.is_empty());
    assert_eq!(created(&h, "M0001").await + created(&h, "M0002").await, 0);
    for (browser, callback) in [(&mut a, &callback_a), (&mut b, &callback_b)] {
        let page = browser.get(callback).await;
        assert_eq!(page.status, 302, "{}", page.body);
    }
    assert_eq!(
        (created(&h, "M0001").await, created(&h, "M0002").await),
        (1, 1)
    );
    for (user, cardholder) in [("user-a", "M0001"), ("user-b", "M0002")] {
        let page = Browser::new()
            .get(&h.url(&format!(
                "/v1/connections/saison/{cardholder}?end_user={user}"
            )))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let c: Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(
            (c["end_user"].as_str(), c["tenant"].as_str()),
            (Some(user), Some(cardholder))
        );
        let page = Browser::new()
            .get(&h.url(&format!("/v1/connections?platform=saison&end_user={user}")))
            .await;
        let list: Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(list["connections"].as_array().unwrap().len(), 1, "{list}");
        // Another user's address of the same cardholder is another (absent) connection.
        let other = if user == "user-a" { "user-b" } else { "user-a" };
        let page = Browser::new()
            .get(&h.url(&format!(
                "/v1/connections/saison/{cardholder}?end_user={other}"
            )))
            .await;
        assert_eq!(page.status, 404, "{}", page.body);
    }
    let page = Browser::new()
        .post(
            &h.url("/v1/connections/saison/M0001/token?end_user=user-a"),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("use_proxy"), "{}", page.body);
}
