use durable::prelude::*;

/// What `charge` returns: a type of this file, so the compiler names it the
/// same way whatever else the crate graph holds.
#[derive(Serialize, Deserialize)]
struct Receipt(String);

#[activity]
async fn charge(_ctx: ActivityContext, cents: u64) -> Receipt {
    Receipt(format!("charged {cents}"))
}

/// Takes a `u32`, not the `u64` of `charge`.
#[activity]
async fn fake_charge(_ctx: ActivityContext, cents: u32) -> Receipt {
    Receipt(format!("faked {cents}"))
}

/// Returns a number, not the `Receipt` of `charge`.
#[activity]
async fn fake_charge_number(_ctx: ActivityContext, cents: u64) -> u64 {
    cents
}

#[durable::test(fake(charge = fake_charge))]
async fn with_the_macro(_env: TestEnv) {}

fn main() {
    let _ = Registry::new()
        .activity(charge)
        .replace_activity(charge, fake_charge_number);
    let _ = TestEnv::builder().fake_activity(charge, fake_charge);
}
