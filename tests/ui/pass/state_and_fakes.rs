use durable::prelude::*;
use std::sync::Arc;

#[derive(Clone)]
struct Db(Arc<str>);

#[derive(Clone)]
struct Config {
    retries: u32,
}

/// Several states, then the input.
#[activity]
async fn charge(
    _ctx: ActivityContext,
    State(db): State<Db>,
    config: durable::State<Config>,
    amount: u64,
) -> Result<String, String> {
    Ok(format!("{} {amount} {}", db.0, config.retries))
}

/// State and no input.
#[activity]
async fn ping(_ctx: ActivityContext, State(db): State<Db>) -> String {
    db.0.to_string()
}

#[activity]
async fn fake_charge(_ctx: ActivityContext, amount: u64) -> Result<String, String> {
    Ok(format!("fake {amount}"))
}

mod domain {
    /// A type of the user's own named `State` (not generic).
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct State {
        pub open: bool,
    }
}

/// ... is an ordinary input.
#[activity]
async fn is_open(_ctx: ActivityContext, state: domain::State) -> bool {
    state.open
}

#[durable::test(state(Db("db".into()), Config { retries: 3 }), fake(charge = fake_charge))]
async fn with_state_and_fakes(env: TestEnv) {
    let _ = env.state::<Db>();
}

fn main() {
    let _ = TestEnv::builder()
        .state(Db("db".into()))
        .fake_activity(charge, fake_charge);
    let _ = Registry::new()
        .activity(charge)
        .activity(ping)
        .activity(is_open)
        .replace_activity(charge, fake_charge);
    let _ = ActivityContext::new("i", 0, "charge").with_state(Config { retries: 1 });
    let _: &[durable::app_state::StateRequirement] = <charge as Activity>::STATE;
}
