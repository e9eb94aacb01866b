//! Benchmarks of durable (under construction).
fn main() {}
