use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
#[event(name = approval)]
struct Approval(bool);

fn main() {}
