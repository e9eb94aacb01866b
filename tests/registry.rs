//! Registration: the same definition twice is one registration; two
//! definitions sharing a wire name are an error naming both, even when
//! registered on one line.

use durable::prelude::*;

mod billing {
    use durable::prelude::*;

    /// Charges a card.
    #[activity(name = "charge")]
    pub(crate) async fn charge_card(_ctx: ActivityContext, amount: u32) -> u32 {
        amount
    }
}

mod legacy {
    use durable::prelude::*;

    /// An older activity that took the same wire name.
    #[activity(name = "charge")]
    pub(crate) async fn charge_account(_ctx: ActivityContext, amount: u32) -> u32 {
        amount + 1
    }
}

#[test]
fn the_same_handle_registered_twice_is_one_registration() {
    let explicit = Registry::new().activity(billing::charge_card);
    let again = Registry::new().activity(billing::charge_card);
    let merged = explicit.merge(again);
    assert!(merged.check().is_ok(), "{:?}", merged.check());
    assert_eq!(merged.activity_names(), ["charge"]);
}

#[test]
fn two_definitions_of_one_name_are_an_error_even_on_one_line() {
    #[rustfmt::skip]
    let r = Registry::new().activity(billing::charge_card).activity(legacy::charge_account);
    let err = r
        .check()
        .expect_err("a duplicate wire name was accepted")
        .to_string();
    assert!(
        err.contains("activity \"charge\" is registered twice"),
        "{err}"
    );
}

#[test]
fn discovery_reports_both_definitions() {
    let err = Registry::discover()
        .expect_err("discovery accepted a duplicate")
        .to_string();
    assert!(err.contains("\"charge\""), "{err}");
    assert!(
        err.matches("tests/registry.rs:").count() == 2,
        "both places are named: {err}"
    );
}
