use durable::prelude::*;
use std::time::SystemTime;

#[orchestrator]
async fn stamp(_ctx: OrchestrationContext) -> u64 {
    let now = SystemTime::now();
    now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn main() {}
