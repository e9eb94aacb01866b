use durable::prelude::*;

#[orchestrator(name = "Report", retries = 3)]
fn report(_ctx: OrchestrationContext, day: u32, month: u32) -> String {
    let now = std::time::SystemTime::now();
    format!("{day}/{month} at {now:?}")
}

fn main() {}
