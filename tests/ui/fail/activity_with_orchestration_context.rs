use durable::prelude::*;

#[activity]
async fn ship_item(_ctx: OrchestrationContext, name: String) -> String {
    format!("TRACK-{name}")
}

fn main() {}
