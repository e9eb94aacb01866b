use durable::prelude::*;

#[durable::test]
async fn schedules(env: TestEnv, attempts: u32) {
    let _ = (env, attempts);
}

fn main() {}
