use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
#[event(nmae = "approval")]
struct Approval(bool);

fn main() {}
