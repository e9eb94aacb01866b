use durable::prelude::*;

#[activity]
async fn shout<'a>(_ctx: ActivityContext, text: String) -> String {
    text.to_uppercase()
}

fn main() {}
