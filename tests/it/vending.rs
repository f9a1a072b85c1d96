//! Connections for the app's own back end, end to end over real HTTP against the local server
//! and the simulators: connect links for Haravan and WebLink, token vending (one refresh for
//! many callers, `needs_reauth` with a link), the listings on both stores, the refusal of a
//! request without an IAM caller, and the lifecycle events, each written once with its change.

use crate::haravan::{ADMIN, ADMIN_ORG, install, sign_in_at_haravan};
use crate::harness::{Backend, Browser, Harness, query_param, resolve};

/// An admin of another org (role `["com_api.admin", "admin"]`), in the Haravan simulator.
const ARRAY_ADMIN: &str = "200000022222";
const ARRAY_ADMIN_ORG: &str = "1000222222";
use gatehouse::config::Vars;
use gatehouse::connection::{Common, PLATFORM_SHARDS};
use gatehouse::events::{Event, names};
use gatehouse::store::{Condition, Item, Key, Record, Store, now};
use gatehouse_simulators::haravan::HaravanSim;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The outbox's events named `name` about `tenant`.
async fn events(h: &Harness, name: &str, tenant: &str) -> Vec<Event> {
    h.items("outbox")
        .await
        .iter()
        .map(|i| Event::from_attrs(&i.attrs).unwrap())
        .filter(|e| e.name == name && e.tenant == tenant)
        .collect()
}

async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let page = Browser::new()
        .post(url, "application/json", body.to_string().into_bytes())
        .await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

async fn get_json(url: &str) -> (u16, Value) {
    let page = Browser::new().get(url).await;
    (
        page.status,
        serde_json::from_str(&page.body).unwrap_or(Value::Null),
    )
}

/// A connect link of `platform` for `end_user`, back to the local server's `/done`.
async fn link(h: &Harness, platform: &str, end_user: &str) -> String {
    let (status, answer) = post_json(
        &h.url("/v1/connect-links"),
        json!({"platform": platform, "end_user": end_user, "return_to": h.url("/done")}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    answer["url"].as_str().unwrap().to_owned()
}

/// A Haravan install through a connect link: the admin signs in at the simulator, the browser
/// comes back at `return_to`.
async fn haravan_linked_install(h: &Harness, end_user: &str) -> String {
    let url = link(h, "haravan", end_user).await;
    assert!(url.contains("/haravan/install/login?link="), "{url}");
    let mut b = Browser::new();
    let start = b.get(&url).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let scope = query_param(start.location.as_deref().unwrap(), "scope").unwrap();
    assert!(scope.contains("grant_service"), "a link installs: {scope}");
    let back = sign_in_at_haravan(&mut b, &start, ADMIN).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let location = back.location.unwrap();
    assert_eq!(
        location,
        h.url(&format!(
            "/done?gatehouse=connected&platform=haravan&tenant={ADMIN_ORG}"
        ))
    );
    // The link works once.
    let again = Browser::new().get(&url).await;
    assert_eq!(again.status, 409, "{}", again.body);
    url
}

async fn haravan_link_end_to_end(h: Harness) {
    haravan_linked_install(&h, "app-user-7").await;
    let (status, c) = get_json(&h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}"))).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["end_user"], "app-user-7");
    assert_eq!(c["status"], "active");
    assert!(
        c["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "grant_service")
    );
    for field in ["created_at", "updated_at", "expires_at"] {
        assert!(c[field].as_i64().is_some(), "{field}: {c}");
    }
    assert!(!c.to_string().contains("sealed"), "{c}");
    let created = events(&h, names::CONNECTION_CREATED, ADMIN_ORG).await;
    assert_eq!(created.len(), 1, "one created event with the install");
    assert_eq!(created[0].data, c, "the event carries the connection");
    assert_eq!(created[0].source(), "gatehouse.haravan");
    // Listed for its end user (and for no other).
    let (_, mine) = get_json(&h.url("/v1/connections?platform=haravan&end_user=app-user-7")).await;
    assert_eq!(mine["connections"].as_array().unwrap().len(), 1, "{mine}");
    let (_, theirs) = get_json(&h.url("/v1/connections?platform=haravan&end_user=someone")).await;
    assert_eq!(theirs["connections"], json!([]));

    // A platform-initiated install (an admin opening the app) still works without a link:
    // a connection of no end user.
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ARRAY_ADMIN).await.status, 200);
    assert_eq!(
        events(&h, names::CONNECTION_CREATED, ARRAY_ADMIN_ORG)
            .await
            .len(),
        1
    );
    let (_, c) = get_json(&h.url(&format!("/v1/connections/haravan/{ARRAY_ADMIN_ORG}"))).await;
    assert_eq!(c["end_user"], Value::Null, "{c}");
    let (_, all) = get_json(&h.url("/v1/connections?platform=haravan")).await;
    assert_eq!(all["connections"].as_array().unwrap().len(), 2, "{all}");

    // The link's org installed again through a new link: one update, the end user kept.
    haravan_linked_install(&h, "app-user-7").await;
    assert_eq!(
        events(&h, names::CONNECTION_CREATED, ADMIN_ORG).await.len(),
        1
    );
    assert_eq!(
        events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await.len(),
        1
    );
}

#[tokio::test]
async fn a_haravan_connect_link_installs_for_its_end_user() {
    haravan_link_end_to_end(Harness::embedded().await).await;
}

#[tokio::test]
async fn a_haravan_connect_link_installs_for_its_end_user_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    haravan_link_end_to_end(h).await;
}

#[tokio::test]
async fn a_weblink_connect_link_signs_in_for_its_end_user() {
    let h = Harness::embedded().await;
    let url = link(&h, "weblink", "learner-3").await;
    let mut b = Browser::new();
    let start = b.get(&url).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location.unwrap();
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
    let callback = back.location.unwrap();
    let done = b.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let location = done.location.unwrap();
    assert!(
        location.starts_with(&h.url("/done?gatehouse=connected&platform=weblink&tenant=")),
        "{location}"
    );
    let session_id = query_param(&location, "tenant").unwrap();
    assert!(
        b.cookies.keys().any(|k| k.contains("gh-weblink-session")),
        "the browser has its session: {:?}",
        b.cookies.keys()
    );
    let (status, c) = get_json(&h.url(&format!("/v1/connections/weblink/{session_id}"))).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["end_user"], "learner-3");
    let (status, t) = post_json(
        &h.url(&format!("/v1/connections/weblink/{session_id}/token")),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let (_, listed) = get_json(&h.url("/v1/connections?platform=weblink&end_user=learner-3")).await;
    assert_eq!(listed["connections"][0]["tenant"], session_id.as_str());
    assert_eq!(
        events(&h, names::CONNECTION_CREATED, &session_id)
            .await
            .len(),
        1
    );
    // Used once.
    assert_eq!(Browser::new().get(&url).await.status, 409);
}

async fn concurrent_token_callers(h: Harness) {
    let sim = h.server.haravan.clone();
    // The installed token is due at once; the refreshed one is not; each refresh is slow, so
    // that the callers overlap.
    sim.set_access_token_lifetime(120);
    haravan_linked_install(&h, "app-user-1").await;
    sim.set_access_token_lifetime(86_400);
    sim.set_token_delay(std::time::Duration::from_millis(300));
    let before = sim.token_requests("refresh_token");
    let updated_before = events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await.len();
    let url = h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}/token"));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, json!({})).await })
        })
        .collect();
    let mut tokens = BTreeSet::new();
    for call in calls {
        let (status, answer) = call.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["expires_at"].as_i64().unwrap() > now() + 3600,
            "{answer}"
        );
        tokens.insert(answer["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        sim.token_requests("refresh_token") - before,
        1,
        "20 callers, one refresh at Haravan"
    );
    assert_eq!(tokens.len(), 1, "every caller got the same new token");
    assert_eq!(
        events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await.len() - updated_before,
        1,
        "one connection.updated for the one refresh"
    );
    let (_, c) = get_json(&h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}"))).await;
    assert!(c["last_refresh_at"].as_i64().is_some(), "{c}");
    assert!(
        !c.to_string().contains(tokens.first().unwrap()),
        "GET never shows a token"
    );
}

#[tokio::test]
async fn twenty_token_callers_cause_one_refresh() {
    concurrent_token_callers(Harness::embedded().await).await;
}

#[tokio::test]
async fn twenty_token_callers_cause_one_refresh_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    concurrent_token_callers(h).await;
}

#[tokio::test]
async fn a_refused_refresh_is_answered_with_a_connect_link() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120);
    haravan_linked_install(&h, "app-user-9").await;
    sim.revoke_refresh_tokens(ADMIN_ORG);
    let url = h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}/token"));
    let (status, answer) = post_json(&url, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["reason"], "needs_reauth");
    let connect = answer["connect_url"]
        .as_str()
        .expect("a connect link")
        .to_owned();
    assert!(
        connect.contains("/haravan/install/login?link="),
        "{connect}"
    );
    // Asked again: refused again, and the refusal was recorded (and reported) once.
    let (status, again) = post_json(&url, json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(
        events(&h, names::CONNECTION_NEEDS_REAUTH, ADMIN_ORG)
            .await
            .len(),
        1
    );
    let (_, c) = get_json(&h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}"))).await;
    assert_eq!(c["status"], "needs_reauth");
    assert!(
        c["last_error"].as_str().unwrap().contains("invalid_grant"),
        "{c}"
    );
    let (_, listed) = get_json(&h.url("/v1/connections?platform=haravan")).await;
    assert_eq!(listed["connections"][0]["status"], "needs_reauth");
    // The link starts an install for the same end user, which makes the connection active.
    sim.set_access_token_lifetime(86_400);
    let mut b = Browser::new();
    let start = b.get(&connect).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let back = sign_in_at_haravan(&mut b, &start, ADMIN).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let (status, t) = post_json(&url, json!({})).await;
    assert_eq!(status, 200, "{t}");
    let (_, c) = get_json(&h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}"))).await;
    assert_eq!(
        (c["status"].as_str(), c["end_user"].as_str()),
        (Some("active"), Some("app-user-9"))
    );
}

#[tokio::test]
async fn unknown_tenants_and_bad_addresses_are_refused() {
    let h = Harness::embedded().await;
    for (method, path, status, reason) in [
        (
            "GET",
            "/v1/connections/haravan/1000999999",
            404,
            "unknown_tenant",
        ),
        (
            "POST",
            "/v1/connections/haravan/1000999999/token",
            404,
            "unknown_tenant",
        ),
        ("GET", "/v1/connections/sesami/nope", 404, "unknown_tenant"),
        (
            "POST",
            "/v1/connections/sesami/nope/token",
            404,
            "unknown_tenant",
        ),
        (
            "GET",
            "/v1/connections/saison/M0001",
            400,
            "missing_parameter",
        ),
        (
            "GET",
            "/v1/connections/saison/M0001?end_user=u",
            404,
            "unknown_tenant",
        ),
        (
            "POST",
            "/v1/connections/saison/M0001/token?end_user=u",
            404,
            "unknown_tenant",
        ),
        (
            "GET",
            "/v1/connections/saison/M0001?end_user=u&member=other",
            404,
            "unknown_tenant",
        ),
        (
            "GET",
            "/v1/connections/weblink/no-such-session",
            404,
            "unknown_tenant",
        ),
        (
            "POST",
            "/v1/connections/momo/remittance/token",
            404,
            "unknown_tenant",
        ),
        (
            "GET",
            "/v1/connections/haravan/a%23b",
            400,
            "malformed_parameter",
        ),
        ("GET", "/v1/connections", 400, "missing_parameter"),
        (
            "GET",
            "/v1/connections?platform=momo",
            400,
            "malformed_parameter",
        ),
        (
            "GET",
            "/v1/connections?platform=haravan&cursor=zzz",
            400,
            "malformed_parameter",
        ),
        (
            "GET",
            "/v1/connections?platform=haravan&limit=5",
            400,
            "malformed_parameter",
        ),
    ] {
        let (got, answer) = match method {
            "GET" => get_json(&h.url(path)).await,
            _ => post_json(&h.url(path), json!({})).await,
        };
        assert_eq!(
            (got, answer["reason"].as_str()),
            (status, Some(reason)),
            "{method} {path}: {answer}"
        );
    }
    assert!(h.items("link").await.is_empty(), "nothing stored");
}

/// Every /v1 handler, called with a request that API Gateway did not SigV4-verify (no
/// `requestContext.authorizer.iam`): 403, whatever the route.
#[tokio::test]
async fn a_request_without_an_iam_caller_is_refused() {
    let h = Harness::embedded().await;
    let routes = gatehouse::routes::all();
    let mut seen = 0;
    for route in routes.iter().filter(|r| r.path.starts_with("/v1/")) {
        let path = route.path.replace("{tenant}", "t1");
        let mut req = lambda_http::Request::new(lambda_http::Body::Text(
            json!({"platform": "saison", "end_user": "u", "return_to": h.url("/done")}).to_string(),
        ));
        *req.method_mut() = route.method.clone();
        *req.uri_mut() = format!("{path}?platform=haravan&end_user=u")
            .parse()
            .unwrap();
        req.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        req.extensions_mut()
            .insert(gatehouse::context::RequestInfo {
                domain_name: Some("gatehouse.example.com".into()),
                ..Default::default()
            });
        let resp = gatehouse::routes::answer(
            route.format(),
            route.function.call(&h.server.app, &req).await,
        );
        assert_eq!(resp.status(), 403, "{} {}", route.method, route.path);
        let body = match resp.body() {
            lambda_http::Body::Text(t) => t.clone(),
            lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        assert!(body.contains("IAM caller"), "{body}");
        seen += 1;
    }
    assert!(seen >= 12, "every /v1 route: {seen}");
    assert!(h.items("link").await.is_empty(), "nothing stored");
}

/// A connection item of `platform` at `key`, as its flow stores it.
fn seeded(platform: &str, key: Key, end_user: Option<&str>, mut attrs: Value) -> Item {
    let obj = attrs.as_object_mut().unwrap();
    obj.extend(
        Common::new(platform, &key, end_user, Some(1), now())
            .to_attrs()
            .unwrap(),
    );
    Item::new(key, obj.clone())
}

/// Every page of a listing, followed by its cursors.
async fn list_all(h: &Harness, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let url = match &cursor {
            Some(c) => h.url(&format!("/v1/connections?{query}&cursor={c}")),
            None => h.url(&format!("/v1/connections?{query}")),
        };
        let (status, page) = get_json(&url).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["connections"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("the listing never ends");
}

async fn listings(h: Harness) {
    let store = h.server.app.store.clone();
    // 230 Haravan installs (over two pages and every shard), 3 of them for app user u1 and one
    // for u2; Sesami installs; a Saison connection of u1; an expired WebLink session of u1.
    for i in 0..230 {
        let org = format!("2000{i:06}");
        let user = match i {
            0..=2 => Some("u1"),
            3 => Some("u2"),
            _ => None,
        };
        let key = gatehouse::haravan::install_key(&org);
        let item = seeded(
            "haravan",
            key,
            user,
            json!({"orgid": org, "scope": "openid"}),
        );
        store.put(&item, Condition::Always).await.unwrap();
    }
    for i in 0..5 {
        let shop = format!("shop-{i}");
        let key = gatehouse::sesami::install_key(&shop);
        let item = seeded(
            "sesami",
            key,
            None,
            json!({"shop_id": shop, "token_sealed": "v2.x", "scopes": [], "installed_at": 1}),
        );
        store.put(&item, Condition::Always).await.unwrap();
    }
    let key = gatehouse::saison::connection_key(&gatehouse::saison::ConnectionId::new(
        "u1", "demo", "M0009",
    ));
    let item = seeded(
        "saison",
        key,
        Some("u1"),
        json!({"member": "demo", "cardholder": "M0009"}),
    );
    store.put(&item, Condition::Always).await.unwrap();
    let key = gatehouse::weblink::session_key("expired-session");
    let item = seeded("weblink", key, Some("u1"), json!({})).expiring_at(now() - 5);
    store.put(&item, Condition::Always).await.unwrap();

    let haravan = list_all(&h, "platform=haravan").await;
    let tenants: BTreeSet<String> = haravan
        .iter()
        .map(|c| c["tenant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(haravan.len(), 230, "each once");
    assert_eq!(tenants.len(), 230);
    assert!(haravan.iter().all(|c| c["platform"] == "haravan"));
    assert_eq!(list_all(&h, "platform=sesami").await.len(), 5);
    assert_eq!(list_all(&h, "platform=saison").await.len(), 1);
    assert_eq!(
        list_all(&h, "platform=weblink").await.len(),
        0,
        "expired: gone"
    );
    let u1: BTreeSet<String> = list_all(&h, "platform=haravan&end_user=u1")
        .await
        .iter()
        .map(|c| c["tenant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        u1,
        ["2000000000", "2000000001", "2000000002"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(list_all(&h, "platform=haravan&end_user=u2").await.len(), 1);
    assert_eq!(list_all(&h, "platform=saison&end_user=u1").await.len(), 1);
    assert_eq!(list_all(&h, "platform=weblink&end_user=u1").await.len(), 0);
    // Not vacuous: the installs are spread over every shard of the platform index.
    let shards: BTreeSet<u32> = (0..230)
        .map(|i| {
            gatehouse::connection::shard_of(&gatehouse::haravan::install_key(&format!(
                "2000{i:06}"
            )))
        })
        .collect();
    assert_eq!(shards.len(), PLATFORM_SHARDS as usize);
}

#[tokio::test]
async fn listings_are_exact_on_the_embedded_store() {
    listings(Harness::embedded().await).await;
}

#[tokio::test]
async fn listings_are_exact_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    listings(h).await;
}

/// An uninstall delivery removes the connection with one `connection.removed` event (status
/// `revoked`); its repeat, and an uninstall of an org not installed, write none. (A
/// `shop/update` changes the connection's details but is one store call, reported as its
/// delivery's own event: no lifecycle event.)
#[tokio::test]
async fn an_uninstall_removes_the_connection_with_one_event() {
    let h = Harness::embedded().await;
    let sim = h.server.haravan.clone();
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    let update = sim.webhook_body("shop/update", ADMIN_ORG);
    let (status, text) = sim.send_webhook("shop/update", ADMIN_ORG, &update).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        events(&h, names::CONNECTION_UPDATED, ADMIN_ORG)
            .await
            .is_empty()
    );
    let body = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    let (status, text) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await;
    assert_eq!(status, 200);
    let removed = events(&h, names::CONNECTION_REMOVED, ADMIN_ORG).await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].data["status"], "revoked");
    assert_eq!(removed[0].data["tenant"], ADMIN_ORG);
    let (status, _) = get_json(&h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}"))).await;
    assert_eq!(status, 404);
    // Another delivery for the org, now not installed: no second event.
    let other = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    sim.send_webhook("app/uninstalled", ADMIN_ORG, &other).await;
    assert_eq!(
        events(&h, names::CONNECTION_REMOVED, ADMIN_ORG).await.len(),
        1
    );
}

/// The outbox's events named `name` about `tenant`, read from the table around the proxy.
async fn table_events(table: &crate::harness::Table, name: &str, tenant: &str) -> usize {
    table
        .store
        .scan_prefix("outbox#")
        .await
        .unwrap()
        .iter()
        .filter_map(|i| Event::from_attrs(&i.attrs).ok())
        .filter(|e| e.name == name && e.tenant == tenant)
        .count()
}

/// A change's transaction applied but its answer lost (the AWS SDK's retry, or the platform's
/// or caller's, then meets the change done): still exactly one event, for an uninstall and for
/// a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_after_the_change_still_makes_one_event() {
    use gatehouse_local::faultproxy::{Fault, Rule};
    let Some((h, proxy, table)) = Harness::on_proxied_dynamo(Vars::default(), 11).await else {
        return;
    };
    let sim = h.server.haravan.clone();
    sim.set_access_token_lifetime(120);
    let mut b = Browser::new();
    assert_eq!(install(&h, &mut b, ADMIN).await.status, 200);
    proxy.settle(std::time::Duration::from_secs(10)).await;
    sim.set_access_token_lifetime(86_400);

    // A refresh whose transaction's answer is dropped once.
    let updated = table_events(&table, names::CONNECTION_UPDATED, ADMIN_ORG).await;
    proxy.set(vec![
        Rule::every(Fault::AnswerDropped)
            .on(&["TransactWriteItems"])
            .times(1),
    ]);
    let url = h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}/token"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _) = post_json(&url, json!({})).await;
        statuses.push(status);
        if status == 200 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert!(
        !proxy.fired().is_empty(),
        "the fault was put on the refresh"
    );
    proxy.clear();
    proxy.settle(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        table_events(&table, names::CONNECTION_UPDATED, ADMIN_ORG).await - updated,
        1,
        "one refresh, one event ({statuses:?})"
    );

    // An uninstall delivery whose transaction's answer is dropped once, retried by Haravan.
    proxy.set(vec![
        Rule::every(Fault::AnswerDropped)
            .on(&["TransactWriteItems"])
            .times(1),
    ]);
    let body = sim.webhook_body("app/uninstalled", ADMIN_ORG);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = sim.send_webhook("app/uninstalled", ADMIN_ORG, &body).await;
        statuses.push(status);
        if status == 200 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
    assert!(
        !proxy.fired().is_empty(),
        "the fault was put on the uninstall"
    );
    proxy.clear();
    proxy.settle(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        table_events(&table, names::CONNECTION_REMOVED, ADMIN_ORG).await,
        1,
        "one removal, one event ({statuses:?})"
    );
    assert!(
        table
            .store
            .get(&gatehouse::haravan::install_key(ADMIN_ORG))
            .await
            .unwrap()
            .is_none()
    );
}
