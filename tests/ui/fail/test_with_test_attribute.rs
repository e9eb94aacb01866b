use durable::prelude::*;

#[durable::test]
#[test]
async fn schedules(env: TestEnv) {
    let _ = env;
}

fn main() {}
