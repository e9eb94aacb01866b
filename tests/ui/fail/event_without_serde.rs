use durable::prelude::*;

// `#[derive(Event)]` does not derive serde's traits.
#[derive(Event)]
struct Approval(bool);

fn main() {}
