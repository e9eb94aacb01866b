use durable::prelude::*;

mod mine {
    /// A generic type of the user's own, also named `State`.
    #[derive(Clone)]
    pub struct State<T>(pub T);
}

#[derive(Clone)]
struct Db;

#[activity]
async fn save(_ctx: ActivityContext, _db: mine::State<Db>, id: u32) -> u32 {
    id
}

fn main() {}
