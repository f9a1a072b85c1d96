//! Sesami's settings as read from their variables (found by `fuzz/mutants`): the scopes are
//! `Shop:Read` unless set, a comma-separated list whose blank entries are dropped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse::config::Vars;
use gatehouse::sesami::Settings;

#[test]
fn scopes_default_to_shop_read_and_drop_blank_entries() {
    let default = Settings::from_vars(&Vars::default()).expect("settings");
    assert_eq!(default.scopes, ["Shop:Read"]);
    let set = Settings::from_vars(&Vars::from_pairs([(
        "SESAMI_SCOPES",
        " Shop:Read, ,Order:Read,",
    )]))
    .expect("settings");
    assert_eq!(set.scopes, ["Shop:Read", "Order:Read"]);
}
