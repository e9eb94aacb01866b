use durable::prelude::*;

#[orchestrator]
async fn greet(_ctx: ActivityContext, name: String) -> String {
    format!("hello, {name}")
}

fn main() {}
