//! The attributes of the flows' cookies, which a round trip through `set` and `read` does not
//! show (found by `fuzz/mutants`): a secure app names them `__Host-…` and marks them `Secure`
//! whatever their `SameSite`; over plain http (the local server) they keep their base name and
//! only a `SameSite=None` one is `Secure`, as browsers require.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use cookie::SameSite;
use gatehouse::Deps;
use gatehouse::config::{Config, Vars};
use gatehouse::flow::{CookieSpec, state_cookie};
use gatehouse::store::EmbeddedStore;
use std::sync::Arc;

/// An app on a fresh embedded store with the events' test secrets, at `base` if given.
fn app(dir: &tempfile::TempDir, base: Option<&str>) -> Deps {
    let mut vars = Vars::default();
    vars.set("GATEHOUSE_DATA_DIR", dir.path().to_string_lossy());
    vars.set(
        "GATEHOUSE_SECRETS_FILE",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../events/secrets.json"),
    );
    if let Some(base) = base {
        vars.set("PUBLIC_BASE_URL", base);
    }
    let config = Config::from_vars(&vars).expect("config");
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store.sqlite3")).expect("store"));
    Deps::with_store(config, store, None).expect("app")
}

const LAX: CookieSpec = state_cookie("gh-test-state");
const CROSS_SITE: CookieSpec = CookieSpec {
    name: "gh-test-post",
    same_site: SameSite::None,
    max_age: 60,
};

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn wire_names_carry_the_host_prefix_only_when_secure() {
    assert_eq!(LAX.wire_name(true), "__Host-gh-test-state");
    assert_eq!(LAX.wire_name(false), "gh-test-state");
}

#[tokio::test]
async fn a_secure_apps_cookies_are_host_bound_and_secure() {
    let dir = tempfile::tempdir().expect("dir");
    let app = app(&dir, None);
    assert!(app.config.secure_cookies());
    let keys = app.secrets.app_keys().await.expect("keys");
    for (spec, same_site) in [(LAX, "samesite=lax"), (CROSS_SITE, "samesite=none")] {
        for set in [spec.set(&app, &keys, "v"), spec.clear(&app)] {
            assert!(set.starts_with(&format!("__Host-{}=", spec.name)), "{set}");
            let attrs = attributes(&set);
            for want in ["secure", "httponly", "path=/", same_site] {
                assert!(attrs.iter().any(|a| a == want), "{want} in {set}");
            }
        }
    }
}

#[tokio::test]
async fn over_plain_http_only_a_cross_site_cookie_is_secure() {
    let dir = tempfile::tempdir().expect("dir");
    let app = app(&dir, Some("http://127.0.0.1:3000"));
    assert!(!app.config.secure_cookies());
    let keys = app.secrets.app_keys().await.expect("keys");
    for set in [LAX.set(&app, &keys, "v"), LAX.clear(&app)] {
        assert!(set.starts_with("gh-test-state="), "{set}");
        assert!(!attributes(&set).iter().any(|a| a == "secure"), "{set}");
    }
    for set in [CROSS_SITE.set(&app, &keys, "v"), CROSS_SITE.clear(&app)] {
        assert!(set.starts_with("gh-test-post="), "{set}");
        assert!(attributes(&set).iter().any(|a| a == "secure"), "{set}");
    }
}
