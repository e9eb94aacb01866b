use durable::prelude::*;

#[orchestrator]
async fn report(_ctx: OrchestrationContext, names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|name| format!("{name} at {:?}", std::time::SystemTime::now()))
        .collect()
}

fn main() {}
