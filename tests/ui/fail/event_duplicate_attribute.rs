use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "approval")]
#[event(name = "Approval")]
struct Approval(bool);

fn main() {}
