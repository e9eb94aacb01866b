use durable::prelude::*;

#[orchestrator]
async fn load(_ctx: OrchestrationContext, path: String) -> Result<String, OrchestrationError> {
    Ok(std::fs::read_to_string(path)?)
}

fn main() {}
