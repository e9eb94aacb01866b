#[durable::nondeterministic]
fn helper() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

fn main() {
    let _ = helper();
}
