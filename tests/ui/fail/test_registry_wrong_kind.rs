use durable::prelude::*;

#[activity]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

#[durable::test(orchestrators(ship_item))]
async fn ships(env: TestEnv) {
    let _ = env;
}

fn main() {}
