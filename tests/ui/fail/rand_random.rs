use durable::prelude::*;

// Stands in for the rand crate: the check reads paths, not types.
mod rand {
    pub fn random() -> u32 {
        4
    }
}

#[orchestrator]
async fn pick(_ctx: OrchestrationContext, choices: Vec<String>) -> String {
    let index = rand::random() as usize % choices.len();
    choices[index].clone()
}

fn main() {}
