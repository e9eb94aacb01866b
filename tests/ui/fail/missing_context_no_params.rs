use durable::prelude::*;

#[activity]
async fn tick() -> u32 {
    1
}

fn main() {}
