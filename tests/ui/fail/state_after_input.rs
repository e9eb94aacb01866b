use durable::prelude::*;

#[derive(Clone)]
struct Db;

#[activity]
async fn charge(_ctx: ActivityContext, amount: u64, State(_db): State<Db>) -> u64 {
    amount
}

fn main() {}
