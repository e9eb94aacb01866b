//! Order processing example (under construction).
fn main() {}
