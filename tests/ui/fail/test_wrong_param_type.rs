use durable::Client;

#[durable::test]
async fn schedules(client: Client) {
    let _ = client;
}

fn main() {}
