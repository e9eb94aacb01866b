use durable::prelude::*;

#[durable::test]
async fn counts(_env: TestEnv) -> u32 {
    3
}

fn main() {}
