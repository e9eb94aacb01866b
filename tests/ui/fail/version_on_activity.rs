use durable::prelude::*;

#[activity(version = "2")]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

fn main() {}
