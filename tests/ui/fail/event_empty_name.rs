use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "")]
struct Approval(bool);

fn main() {}
