//! What fuzzing found, as plain tests (besides the inputs kept in `fuzz/seeds/`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse::routes;
use gatehouse::web::Params;
use gatehouse_fuzz::harness::fixture;
use lambda_http::{Body, Request};

fn get(path_and_query: &str) -> Request {
    let mut req = Request::new(Body::Empty);
    *req.uri_mut() = path_and_query.parse().unwrap();
    req
}

/// A flow start that cannot build its redirect (here: no API domain and no PUBLIC_BASE_URL, as
/// in a hand-made event) is a 400 and stores no state. It was a 500 that had already stored it.
/// (Saison's start sends no redirect URI by default, so needs no domain.)
#[test]
fn a_flow_start_refused_late_stores_nothing() {
    let now = gatehouse::store::now();
    let launch = format!("shopId=fuzz-shop&timestamp={now}");
    let object = gatehouse::sesami::signed_object(&Params::parse(&launch).unwrap(), false);
    let hmac = gatehouse::sesami::sign(b"events-only-sesami-secret", &object);
    let all = routes::all();
    for (function, uri) in [
        (
            "sesami-install",
            format!("/sesami/install?{launch}&hmac={hmac}"),
        ),
        ("haravan-login", "/haravan/install/login".to_owned()),
    ] {
        let route = all.iter().find(|r| r.function_name() == function).unwrap();
        let outcome = fixture().call(get(&uri), route.function);
        assert_eq!(outcome.status, 400, "{function}: {}", outcome.text);
        assert!(
            outcome.text.contains("PUBLIC_BASE_URL"),
            "{function}: {}",
            outcome.text
        );
        assert!(
            outcome.changed.is_empty(),
            "{function} stored {:?}",
            outcome.changed
        );
    }
}
