use durable::prelude::*;

#[activity]
async fn echo<T: Serialize>(_ctx: ActivityContext, value: T) -> T {
    value
}

fn main() {}
