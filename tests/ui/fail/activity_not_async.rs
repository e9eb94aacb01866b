use durable::prelude::*;

#[activity]
fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

fn main() {}
