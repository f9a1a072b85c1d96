//! The typed client (`gatehouse-client`) against the local server with its authorizer as a
//! developer gets it (`GATEHOUSE_LOCAL_IAM=sigv4`): every `/v1` call is SigV4-signed with the
//! local key pair and checked again by the server with the SDK's signer; what is unsigned,
//! signed with another key, or changed after signing is refused with a 403, and stores nothing.

use crate::harness::{Backend, Browser, Harness};
use gatehouse::config::Vars;
use gatehouse_client::{Client, Error, Signer};
use gatehouse_local::sigv4::{DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY};
use serde_json::json;

async fn signed_harness() -> Harness {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_LOCAL_IAM", "sigv4");
    Harness::start(Backend::Embedded, vars).await.unwrap()
}

fn client(h: &Harness, secret: &str) -> Client {
    Client::new(
        &h.url("/"),
        Signer::fixed(DEFAULT_ACCESS_KEY_ID, secret, "us-east-1"),
    )
    .unwrap()
}

async fn links_stored(h: &Harness) -> usize {
    crate::harness::of_kind(h.server.app.store.as_ref(), "link")
        .await
        .len()
}

#[tokio::test]
async fn a_signed_connect_link_opens_the_flow() {
    let h = signed_harness().await;
    let link = client(&h, DEFAULT_SECRET_ACCESS_KEY)
        .connect_link("saison", "user-a", &h.url("/done"))
        .await
        .unwrap();
    assert!(
        link.url.starts_with(&h.url("/saison/authorize?link=")),
        "{}",
        link.url
    );
    assert!(link.expires_at > gatehouse::store::now());
    let page = Browser::new().get(&link.url).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(links_stored(&h).await, 0, "the link was consumed");
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_calls_are_refused_and_store_nothing() {
    let h = signed_harness().await;
    let body = json!({"platform": "saison", "end_user": "u", "return_to": h.url("/done")});
    // Unsigned.
    let page = Browser::new()
        .post(
            &h.url("/v1/connect-links"),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("not signed"), "{}", page.body);
    // Signed with another secret.
    match client(&h, "not-the-secret")
        .connect_link("saison", "u", &h.url("/done"))
        .await
    {
        Err(Error::Api { status: 403, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Signed, then changed: another body under the same signature.
    let url = h.url("/v1/connect-links");
    let host = url::Url::parse(&url).unwrap();
    let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap());
    let signer = Signer::fixed(
        DEFAULT_ACCESS_KEY_ID,
        DEFAULT_SECRET_ACCESS_KEY,
        "us-east-1",
    );
    let signed = signer
        .sign(
            "POST",
            &url,
            &[("host", &host), ("content-type", "application/json")],
            body.to_string().as_bytes(),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    let other = json!({"platform": "saison", "end_user": "mallory", "return_to": h.url("/done")});
    let mut request = crate::support::http()
        .post(&url)
        .header("content-type", "application/json")
        .body(other.to_string());
    for (name, value) in &signed {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 403);
    assert_eq!(links_stored(&h).await, 0);
}

/// The client's proxy call, signed, through the local authorizer, to Haravan's simulator as an
/// org installed through its real flow: the platform's answer comes back as it was.
#[tokio::test]
async fn a_signed_proxy_call_reaches_the_platform_as_the_tenant() {
    let h = signed_harness().await;
    let mut browser = Browser::new();
    let page = crate::haravan::install(&h, &mut browser, "200000011111").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let org = gatehouse_client::Tenant::haravan("1000111111");
    let answer = client(&h, DEFAULT_SECRET_ACCESS_KEY)
        .proxy(&org, reqwest::Method::GET, "com/shop.json", None)
        .await
        .unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.json().unwrap()["shop"]["id"].to_string(),
        "1000111111"
    );
    // The connection, without its tokens, and a valid token for the app's own calls.
    let gatehouse = client(&h, DEFAULT_SECRET_ACCESS_KEY);
    let client = &gatehouse;
    let connection = client.connection(&org).await.unwrap();
    assert_eq!(
        (
            connection.platform.as_str(),
            connection.tenant.as_str(),
            connection.status.as_str()
        ),
        ("haravan", "1000111111", "active")
    );
    let token = client.token(&org).await.unwrap();
    assert!(token.expires_at > gatehouse::store::now());
    let item = h
        .server
        .app
        .store
        .get(&gatehouse::haravan::install_key("1000111111"))
        .await
        .unwrap()
        .unwrap();
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let stored = gatehouse::refresh::open(&keys, &item).unwrap();
    assert_eq!(
        gatehouse_client::ExposeSecret::expose_secret(&token.access_token),
        secrecy::ExposeSecret::expose_secret(&stored.access_token)
    );
    let page = client.connections("haravan", None, None).await.unwrap();
    assert!(
        page.connections.iter().any(|c| c.tenant == "1000111111"),
        "{page:?}"
    );
    // An unknown org is Gatehouse's own refusal, typed.
    match client
        .proxy(
            &gatehouse_client::Tenant::haravan("999"),
            reqwest::Method::GET,
            "com/shop.json",
            None,
        )
        .await
    {
        Err(Error::Api {
            status: 404,
            reason,
            ..
        }) => assert_eq!(reason, "unknown_tenant"),
        other => panic!("{other:?}"),
    }
    // Unsigned: refused by the authorizer before the proxy runs.
    let page = Browser::new()
        .get(&h.url("/v1/proxy/haravan/1000111111/com/shop.json"))
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
}
