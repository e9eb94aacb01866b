use durable::prelude::*;

#[activity]
async fn shout(_ctx: ActivityContext, text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
