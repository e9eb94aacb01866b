use durable::prelude::*;

#[durable::test]
fn schedules(env: TestEnv) {
    let _ = env.client();
}

fn main() {}
