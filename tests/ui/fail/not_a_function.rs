use durable::prelude::*;

#[activity]
struct ShipItem {
    name: String,
}

fn main() {}
