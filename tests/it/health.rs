//! Connection health kept up by the schedule (`connections-refresh`, [`gatehouse::health`]):
//! Haravan installs made through the simulator over real HTTP, on both stores. An idle
//! connection is refreshed and its new tokens stored; one whose refresh token the simulator
//! refuses becomes `needs_reauth` with exactly one event; one without a refresh token becomes
//! `no_refresh_token` with exactly one event; a recently granted one is left as it is, with no
//! platform call; and a second run changes nothing at all.

use crate::haravan::{ADMIN, ADMIN_ORG, install};
use crate::harness::{Backend, Browser, Harness};
use gatehouse::config::Vars;
use gatehouse::events::{Event, names};
use gatehouse::haravan::install_key;
use gatehouse::health::{self, Checked, Tending};
use gatehouse::store::{Condition, Item, now};
use gatehouse_simulators::haravan::SimUser;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// An admin of another org (role `["com_api.admin", "admin"]`) in the simulator.
const ARRAY_ADMIN: &str = "200000022222";
const ARRAY_ADMIN_ORG: &str = "1000222222";
/// Admins of two more orgs, added to the simulator.
const BARE_ADMIN: &str = "200000066666";
const BARE_ORG: &str = "1000666666";
const RECENT_ADMIN: &str = "200000077777";
const RECENT_ORG: &str = "1000777777";

const DAY: i64 = 86_400;

fn admin(sub: &str, orgid: &str, orgname: &str) -> SimUser {
    SimUser {
        sub: sub.into(),
        name: format!("Admin {orgname}"),
        email: format!("admin@{orgname}.example"),
        orgid: orgid.into(),
        orgname: orgname.into(),
        role: json!("admin"),
    }
}

/// The outbox's events about `tenant`, by name.
async fn events(h: &Harness, name: &str, tenant: &str) -> Vec<Event> {
    h.items("outbox")
        .await
        .iter()
        .map(|i| Event::from_attrs(&i.attrs).unwrap())
        .filter(|e| e.name == name && e.tenant == tenant)
        .collect()
}

async fn stored(h: &Harness, orgid: &str) -> Item {
    h.server
        .app
        .store
        .get(&install_key(orgid))
        .await
        .unwrap()
        .expect("installed")
}

/// Makes the install of `orgid` look as if its tokens were granted `days` ago.
async fn age(h: &Harness, orgid: &str, days: i64) {
    age_key(h, &install_key(orgid), days).await;
}

/// Makes the tokens of the connection at `key` look granted `days` ago.
async fn age_key(h: &Harness, key: &gatehouse::store::Key, days: i64) {
    let mut set = Map::new();
    set.insert("granted_at".into(), json!(now() - days * DAY));
    h.server
        .app
        .store
        .update(key, &set, Condition::Exists)
        .await
        .unwrap();
}

/// One run of the schedule over the server's app, with a minute to spare.
async fn run(h: &Harness) -> Checked {
    health::check(
        Tending::from(&*h.server.app),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap()
}

async fn keeps_connections_healthy(h: Harness) {
    let sim = h.server.haravan.clone();
    sim.add_user(admin(BARE_ADMIN, BARE_ORG, "demo-bare"));
    sim.add_user(admin(RECENT_ADMIN, RECENT_ORG, "demo-recent"));
    for sub in [ADMIN, ARRAY_ADMIN, RECENT_ADMIN] {
        assert_eq!(install(&h, &mut Browser::new(), sub).await.status, 200);
    }
    sim.withhold_refresh_tokens(true);
    assert_eq!(
        install(&h, &mut Browser::new(), BARE_ADMIN).await.status,
        200
    );
    sim.withhold_refresh_tokens(false);

    // Idle for longer than the week's horizon: ADMIN's org (refreshable) and ARRAY_ADMIN's
    // (whose grant Haravan then revokes). RECENT's was granted just now; BARE's has no refresh
    // token whatever its age.
    age(&h, ADMIN_ORG, 8).await;
    age(&h, ARRAY_ADMIN_ORG, 30).await;
    age(&h, BARE_ORG, 30).await;
    sim.revoke_refresh_tokens(ARRAY_ADMIN_ORG);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let before = stored(&h, ADMIN_ORG).await;
    let old = gatehouse::refresh::open(&keys, &before).unwrap();
    let recent = stored(&h, RECENT_ORG).await;
    let refreshes = sim.token_requests("refresh_token");
    let outbox = h.items("outbox").await.len();

    let first = run(&h).await;
    assert_eq!(
        first,
        Checked {
            seen: 4,
            refreshed: 1,
            needs_reauth: 1,
            no_refresh_token: 1,
            ..Checked::default()
        }
    );
    assert_eq!(
        sim.token_requests("refresh_token"),
        refreshes + 2,
        "the idle and the revoked connections only"
    );

    // The idle one: new tokens stored, the connection says when, one connection.updated.
    let after = stored(&h, ADMIN_ORG).await;
    let new = gatehouse::refresh::open(&keys, &after).unwrap();
    assert_ne!(
        new.access_token.expose_secret(),
        old.access_token.expose_secret()
    );
    assert_ne!(after.attrs["token_version"], before.attrs["token_version"]);
    let at = now();
    for field in ["granted_at", "last_refresh_at", "checked_at"] {
        let t = after.attrs[field].as_i64().unwrap_or_default();
        assert!((at - 60..=at).contains(&t), "{field}: {:?}", after.attrs);
    }
    assert_eq!(after.attrs["status"], "active");
    let updated = events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await;
    assert_eq!(updated.len(), 1, "{updated:?}");
    crate::event_schemas::assert_valid(&updated[0]);

    // The refused one: needs_reauth, with exactly one event.
    let refused = stored(&h, ARRAY_ADMIN_ORG).await;
    assert_eq!(refused.attrs["needs_reauth"], json!(true));
    assert_eq!(refused.attrs["status"], "needs_reauth");
    assert!(
        refused.attrs["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    let marked = events(&h, names::CONNECTION_NEEDS_REAUTH, ARRAY_ADMIN_ORG).await;
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].data["status"], "needs_reauth");
    crate::event_schemas::assert_valid(&marked[0]);

    // The one without a refresh token: no_refresh_token, with exactly one event, and so it is
    // shown to the app's back end.
    let bare = stored(&h, BARE_ORG).await;
    assert_eq!(bare.attrs["status"], "no_refresh_token");
    assert!(bare.attrs["checked_at"].as_i64().is_some());
    let marked = events(&h, names::CONNECTION_NO_REFRESH_TOKEN, BARE_ORG).await;
    assert_eq!(marked.len(), 1, "{marked:?}");
    crate::event_schemas::assert_valid(&marked[0]);
    let page = Browser::new()
        .get(&h.url(&format!("/v1/connections/haravan/{BARE_ORG}")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let shown: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(shown["status"], "no_refresh_token", "{shown}");
    assert_eq!(shown, marked[0].data, "the event carries the connection");

    // The recent one: not a byte changed.
    assert_eq!(stored(&h, RECENT_ORG).await, recent);
    assert_eq!(h.items("outbox").await.len(), outbox + 3);

    // A second run: nothing to do, no platform call, nothing written.
    let snapshot: Vec<Item> = {
        let mut all = Vec::new();
        for org in [ADMIN_ORG, ARRAY_ADMIN_ORG, BARE_ORG, RECENT_ORG] {
            all.push(stored(&h, org).await);
        }
        all
    };
    let second = run(&h).await;
    assert_eq!(
        second,
        Checked {
            seen: 4,
            ..Checked::default()
        }
    );
    assert_eq!(sim.token_requests("refresh_token"), refreshes + 2);
    for (org, item) in [ADMIN_ORG, ARRAY_ADMIN_ORG, BARE_ORG, RECENT_ORG]
        .iter()
        .zip(&snapshot)
    {
        assert_eq!(&stored(&h, org).await, item, "{org}");
    }
    assert_eq!(h.items("outbox").await.len(), outbox + 3);
}

#[tokio::test]
async fn the_schedule_keeps_connections_healthy() {
    keeps_connections_healthy(Harness::embedded().await).await;
}

#[tokio::test]
async fn the_schedule_keeps_connections_healthy_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    keeps_connections_healthy(h).await;
}

/// A run whose time is up reads nothing and says how much it left; the next run does it all.
#[tokio::test]
async fn a_run_out_of_time_leaves_the_rest_for_the_next() {
    let h = Harness::embedded().await;
    assert_eq!(install(&h, &mut Browser::new(), ADMIN).await.status, 200);
    age(&h, ADMIN_ORG, 8).await;
    let cut = health::check(Tending::from(&*h.server.app), Instant::now())
        .await
        .unwrap();
    assert_eq!(
        cut,
        Checked {
            partitions_left: 3 * gatehouse::connection::PLATFORM_SHARDS as usize,
            ..Checked::default()
        }
    );
    assert_eq!(run(&h).await.refreshed, 1);
}

/// The horizon is a setting: with a day's, a connection two days idle is refreshed; with the
/// default week's, it is not.
#[tokio::test]
async fn the_horizon_is_gatehouse_refresh_idle_days() {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_REFRESH_IDLE_DAYS", "1");
    let short = Harness::start(Backend::Embedded, vars).await.unwrap();
    let long = Harness::embedded().await;
    for h in [&short, &long] {
        assert_eq!(install(h, &mut Browser::new(), ADMIN).await.status, 200);
        age(h, ADMIN_ORG, 2).await;
    }
    assert_eq!(run(&short).await.refreshed, 1);
    assert_eq!(run(&long).await.refreshed, 0);
}

// ---------------------------------------------------------------------------------------------
// Under each function's own policy (tests/it/iam.rs runs this scenario on the IAM-enforcing moto)

/// A connection of `platform` at `key`, as its install or sign-in stores it: `fields`, the
/// common attributes (both indexes) and tokens sealed to the item, granted `days` ago.
async fn seed_connection(
    b: &crate::events::EventBench,
    platform: &str,
    key: gatehouse::store::Key,
    fields: Value,
    refresh_token: Option<&str>,
    days: i64,
) {
    use gatehouse::store::Record;
    let keys = b.app.secrets.app_keys().await.unwrap();
    let Value::Object(mut attrs) = fields else {
        panic!("fields are an object")
    };
    let mut common = gatehouse::connection::Common::new(platform, &key, None, None, now());
    common.granted_at = Some(now() - days * DAY);
    attrs.extend(common.to_attrs().unwrap());
    let grant = gatehouse::refresh::Grant {
        access_token: secrecy::SecretString::from(format!("events-access-{platform}")),
        refresh_token: refresh_token.map(|t| secrecy::SecretString::from(t.to_owned())),
        expires_in: 3600,
        extra: Vec::new(),
    };
    gatehouse::refresh::seal(&keys, &key, &grant, &mut attrs).unwrap();
    b.app
        .store
        .put(&Item::new(key, attrs), Condition::Absent)
        .await
        .unwrap();
}

/// `connections-refresh` over one connection of each platform it walks: a Haravan install
/// without a refresh token (marked `no_refresh_token`), an idle Saison connection and an idle
/// WebLink session whose refresh tokens the simulators refuse (marked `needs_reauth`, through
/// the shared refresh's lease). Every mark is an in-place update with its event; a second run
/// reads the index and does nothing.
pub(crate) async fn connections_refresh_scenario(b: &crate::events::EventBench) {
    seed_connection(
        b,
        "haravan",
        install_key("1000999999"),
        json!({"orgid": "1000999999", "scope": "openid org", "installed_at": now()}),
        None,
        1,
    )
    .await;
    let saison = gatehouse::saison::connection_key(&gatehouse::saison::ConnectionId::new(
        "events-user-9",
        "demo",
        "events-cardholder-9",
    ));
    seed_connection(
        b,
        "saison",
        saison,
        json!({"member": "demo", "cardholder": "events-cardholder-9", "end_user": "events-user-9"}),
        Some("events-refresh-unknown-to-saison"),
        30,
    )
    .await;
    seed_connection(
        b,
        "weblink",
        gatehouse::weblink::session_key("events-session-9"),
        json!({"portal": "demo.administrateweblink.com", "sub": "events-sub-9",
               "idp_domain": "demo.identity.getadministrate.com", "client_id": "demo-client"}),
        Some("events-refresh-unknown-to-the-idp"),
        30,
    )
    .await;
    let app = b.function_app("connections-refresh");
    let until = || Instant::now() + Duration::from_secs(60);
    let first = health::check(Tending::from(&**app), until()).await.unwrap();
    let mut errors = Vec::new();
    for kind in ["conn#saison", "session#weblink"] {
        for item in crate::harness::of_kind(b.app.store.as_ref(), kind).await {
            errors.push(item.attrs.get("last_error").cloned());
        }
    }
    assert_eq!(
        first,
        Checked {
            seen: 3,
            needs_reauth: 2,
            no_refresh_token: 1,
            ..Checked::default()
        },
        "{errors:?}"
    );
    let events = crate::outbox::outbox(b.app.store.as_ref()).await;
    let mut names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.platform.as_str(), e.name.as_str()))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ("haravan", names::CONNECTION_NO_REFRESH_TOKEN),
            ("saison", names::CONNECTION_NEEDS_REAUTH),
            ("weblink", names::CONNECTION_NEEDS_REAUTH),
        ]
    );
    for event in &events {
        crate::event_schemas::assert_valid(event);
    }
    let second = health::check(Tending::from(&**app), until()).await.unwrap();
    assert_eq!(
        second,
        Checked {
            seen: 3,
            ..Checked::default()
        }
    );
    assert_eq!(crate::outbox::outbox(b.app.store.as_ref()).await.len(), 3);
}

#[tokio::test]
async fn the_schedule_marks_each_platforms_connections() {
    connections_refresh_scenario(&crate::events::EventBench::new().await).await;
}

/// The schedule and requests that need a refresh at the same moment share the refresh lease:
/// one refresh call in all, whoever makes it, and everyone gets its tokens.
async fn never_races_a_request(h: Harness) {
    let sim = h.server.haravan.clone();
    // Born due (a minute left, under the refresh margin), so that a request refreshes too.
    sim.set_access_token_lifetime(60);
    assert_eq!(install(&h, &mut Browser::new(), ADMIN).await.status, 200);
    sim.set_access_token_lifetime(86_400);
    age(&h, ADMIN_ORG, 8).await;
    sim.set_token_delay(Duration::from_millis(300));
    let refreshes = sim.token_requests("refresh_token");
    let updates = events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await.len();
    let url = h.url(&format!("/v1/connections/haravan/{ADMIN_ORG}/token"));
    let request = || {
        let url = url.clone();
        async move {
            let page = Browser::new()
                .post(&url, "application/json", b"{}".to_vec())
                .await;
            assert_eq!(page.status, 200, "{}", page.body);
            let answer: Value = serde_json::from_str(&page.body).unwrap();
            answer["access_token"].as_str().unwrap().to_owned()
        }
    };
    let (checked, a, b) = tokio::join!(run(&h), request(), request());
    // The run counts the refresh if it held the lease or waited on a request's; if a request
    // was done before the run read the connection, the run found it fresh and left it alone.
    assert!(checked.refreshed <= 1, "{checked:?}");
    assert_eq!(checked.failed, 0, "{checked:?}");
    assert_eq!(
        sim.token_requests("refresh_token"),
        refreshes + 1,
        "one refresh call for the schedule and both requests"
    );
    assert_eq!(a, b);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let stored = gatehouse::refresh::open(&keys, &stored(&h, ADMIN_ORG).await).unwrap();
    assert_eq!(stored.access_token.expose_secret(), a);
    assert_eq!(
        events(&h, names::CONNECTION_UPDATED, ADMIN_ORG).await.len(),
        updates + 1,
        "one event for the one refresh"
    );
}

#[tokio::test]
async fn the_schedule_never_races_a_request() {
    never_races_a_request(Harness::embedded().await).await;
}

#[tokio::test]
async fn the_schedule_never_races_a_request_on_dynamodb() {
    let Some(h) = Harness::start(Backend::Dynamo, Vars::default()).await else {
        return;
    };
    never_races_a_request(h).await;
}

/// A WebLink session signed in through a connect link (the simulator's default portal, with
/// offline access) is refreshed at its own IDP once idle, like an install.
#[tokio::test]
async fn an_idle_weblink_session_is_refreshed_at_its_idp() {
    use crate::harness::{query_param, resolve};
    let h = Harness::embedded().await;
    let page = Browser::new()
        .post(
            &h.url("/v1/connect-links"),
            "application/json",
            json!({"platform": "weblink", "end_user": "learner-9", "return_to": h.url("/done")})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.body);
    let link: Value = serde_json::from_str(&page.body).unwrap();
    let mut b = Browser::new();
    let start = b.get(link["url"].as_str().unwrap()).await;
    assert_eq!(start.status, 302, "{}", start.body);
    let authorize = start.location.unwrap();
    let page = b.get(&authorize).await;
    let (action, mut fields) =
        gatehouse_simulators::haravan::HaravanSim::parse_form_post(&page.body);
    fields.retain(|(k, _)| k != "email" && k != "password");
    fields.push(("email".into(), "jane@example.com".into()));
    fields.push(("password".into(), "password".into()));
    let f: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let back = b.post_form(&resolve(&authorize, &action), &f).await;
    let done = b.get(&back.location.unwrap()).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let session_id = query_param(&done.location.unwrap(), "tenant").unwrap();
    let key = gatehouse::weblink::session_key(&session_id);

    let sim = h.server.weblink.clone();
    let refreshes = sim.token_requests("refresh_token");
    assert_eq!(run(&h).await.refreshed, 0, "just signed in");
    age_key(&h, &key, 8).await;
    let first = run(&h).await;
    assert_eq!(
        (first.seen, first.refreshed, first.failed),
        (1, 1, 0),
        "{first:?}"
    );
    assert_eq!(sim.token_requests("refresh_token"), refreshes + 1);
    let session = h.server.app.store.get(&key).await.unwrap().unwrap();
    assert_eq!(session.attrs["status"], "active");
    assert!(session.attrs["last_refresh_at"].as_i64().is_some());
    assert_eq!(run(&h).await.refreshed, 0, "not idle any more");
    assert_eq!(sim.token_requests("refresh_token"), refreshes + 1);
}

/// A Saison connection made through a connect link is refreshed at Saison's token endpoint once
/// idle, its new tokens stored; a second run does nothing.
#[tokio::test]
async fn an_idle_saison_connection_is_refreshed() {
    let h = Harness::embedded().await;
    let (page, _) = crate::saison::connect(&h, &mut Browser::new()).await;
    assert_eq!(page.status, 302, "{}", page.body);
    let key = h
        .items("conn#saison")
        .await
        .first()
        .expect("connected")
        .key
        .clone();
    let before = h.server.app.store.get(&key).await.unwrap().unwrap();
    let sim = h.server.saison.clone();
    let refreshes = sim.token_requests("refresh_token");
    age_key(&h, &key, 8).await;
    let first = run(&h).await;
    assert_eq!(
        (first.seen, first.refreshed, first.failed),
        (1, 1, 0),
        "{first:?}"
    );
    assert_eq!(sim.token_requests("refresh_token"), refreshes + 1);
    let after = h.server.app.store.get(&key).await.unwrap().unwrap();
    assert_ne!(after.attrs["token_version"], before.attrs["token_version"]);
    let second = run(&h).await;
    assert_eq!((second.seen, second.refreshed), (1, 0), "{second:?}");
    assert_eq!(sim.token_requests("refresh_token"), refreshes + 1);
}
