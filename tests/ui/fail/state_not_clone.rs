use durable::prelude::*;

/// Not `Clone`: state is cloned into every call.
struct Pool;

#[activity]
async fn query(_ctx: ActivityContext, State(_pool): State<Pool>, id: u32) -> u32 {
    id
}

fn main() {}
