use durable::prelude::*;

pub struct Opaque;

#[activity]
async fn charge(_ctx: ActivityContext, amount: f64) -> Result<f64, Opaque> {
    if amount <= 0.0 {
        return Err(Opaque);
    }
    Ok(amount)
}

fn main() {}
