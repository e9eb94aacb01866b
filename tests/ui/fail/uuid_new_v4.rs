use durable::prelude::*;

// Stands in for the uuid crate: the check reads paths, not types.
mod uuid {
    pub struct Uuid;
    impl Uuid {
        pub fn new_v4() -> String {
            String::new()
        }
    }
}

#[orchestrator]
async fn order_id(_ctx: OrchestrationContext) -> String {
    uuid::Uuid::new_v4()
}

fn main() {}
