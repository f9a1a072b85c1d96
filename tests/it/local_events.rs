//! The outbox on the local server: signed Sesami deliveries (from the simulator, over real
//! HTTP) become events that `/_local/events(.json)` lists, and that the relay POSTs to
//! `GATEHOUSE_LOCAL_EVENTS_URL` as the bus would deliver them, once each, again after a failure.

use crate::harness::{Backend, Browser, Harness};
use gatehouse::config::Vars;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An app's endpoint on this machine: refuses the first `failures` POSTs (500), then keeps what
/// it accepts.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let keep = accepted.clone();
    let router = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: String| {
            let (keep, refused) = (keep.clone(), refused.clone());
            async move {
                {
                    let mut n = refused.lock().unwrap();
                    if *n < failures {
                        *n += 1;
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                }
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_lists_its_events_and_posts_each_once() {
    let (url, accepted) = receiver(2).await;
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_LOCAL_EVENTS_URL", &url);
    vars.set("GATEHOUSE_LOCAL_EVENTS_SECONDS", "1");
    let h = Harness::start(Backend::Embedded, vars).await.unwrap();
    let mut b = Browser::new();
    for shop in ["shop-a", "shop-b", "shop-c"] {
        let page = b
            .post(
                &h.url(&format!(
                    "/_sim/sesami/webhooks/send?shopId={shop}&event=booking_created"
                )),
                "application/x-www-form-urlencoded",
                Vec::new(),
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    // Delivered in the end, after the two refusals, each once.
    let start = Instant::now();
    while accepted.lock().unwrap().len() < 3 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    let mut shops: Vec<&str> = got
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "gatehouse.sesami");
            assert_eq!(e["detail-type"], "webhook.booking_created");
            assert_eq!(e["id"], e["detail"]["id"]);
            let problems = crate::event_schemas::problems("webhook.booking_created", &e["detail"]);
            assert!(problems.is_empty(), "{problems:?}");
            e["detail"]["tenant"].as_str().unwrap()
        })
        .collect();
    shops.sort();
    assert_eq!(shops, ["shop-a", "shop-b", "shop-c"], "in order, each once");

    let page = b.get(&h.url("/_local/events.json")).await;
    assert_eq!(page.status, 200);
    let listed: Value = serde_json::from_str(&page.body).unwrap();
    let listed = listed["events"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|e| e["sent"] == json!(true)),
        "{listed:?}"
    );
    let page = b.get(&h.url("/_local/events")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("webhook.booking_created"),
        "{}",
        page.body
    );
    assert!(page.body.contains("shop-b"));
}
