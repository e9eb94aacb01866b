use durable::prelude::*;

/// A failure type of this file, so the compiler names it the same way
/// whatever else the crate graph holds.
#[derive(Serialize, Deserialize)]
struct Problem(String);

type Fallible<T> = Result<T, Problem>;

// The macro cannot see through the alias: an `Err` would be recorded as a
// successful output, so this is refused.
#[activity]
async fn charge(_ctx: ActivityContext, amount: u32) -> Fallible<u32> {
    if amount > 100 {
        return Err(Problem("too much".into()));
    }
    Ok(amount)
}

fn main() {}
