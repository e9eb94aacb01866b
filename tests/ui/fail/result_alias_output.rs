use durable::prelude::*;

type Fallible<T> = Result<T, String>;

// The macro cannot see through the alias: an `Err` would be recorded as a
// successful output, so this is refused.
#[activity]
async fn charge(_ctx: ActivityContext, amount: u32) -> Fallible<u32> {
    if amount > 100 {
        return Err("too much".into());
    }
    Ok(amount)
}

fn main() {}
