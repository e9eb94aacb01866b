use durable::prelude::*;

#[activity(name = "ShipItem", name = "Ship")]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

fn main() {}
