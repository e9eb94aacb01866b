use durable::prelude::*;

pub struct Order {
    pub id: String,
}

#[activity]
async fn validate_order(_ctx: ActivityContext, order: Order) -> bool {
    !order.id.is_empty()
}

fn main() {}
