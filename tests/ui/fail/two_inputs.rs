use durable::prelude::*;

#[activity]
async fn add(_ctx: ActivityContext, left: u32, right: u32) -> u32 {
    left + right
}

fn main() {}
