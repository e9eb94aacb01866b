use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "confirm")]
struct Confirm(bool);

async fn confirm(client: &Client, id: &str) -> Result<(), durable::Error> {
    // The payload the orchestration waits for is `Confirm`, not a string.
    client.raise(id, &"yes").await
}

fn main() {
    let _ = confirm;
    let _ = Confirm(true);
}
