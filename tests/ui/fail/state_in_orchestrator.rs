use durable::prelude::*;

#[derive(Clone)]
struct Db;

#[orchestrator]
async fn checkout(_ctx: OrchestrationContext, State(_db): State<Db>, amount: u64) -> u64 {
    amount
}

fn main() {}
