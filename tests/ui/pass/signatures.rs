//! Every supported signature form.

use durable::prelude::*;

/// An input with several fields.
#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub id: String,
    /// Its items.
    pub items: Vec<String>,
}

type Result<T, E = OrchestrationError> = std::result::Result<T, E>;

// Patterns in parameters.
#[activity]
async fn add(_: ActivityContext, (left, right): (u32, u32)) -> u32 {
    left + right
}

#[activity]
async fn count(_ctx: ActivityContext, Order { items, .. }: Order) -> usize {
    items.len()
}

#[activity]
async fn push(_ctx: ActivityContext, mut items: Vec<u32>) -> Vec<u32> {
    items.push(1);
    items
}

// Error types: any `Display`, an `ActivityError`, a `std::error::Error`.
#[activity]
async fn parse(_ctx: ActivityContext, text: String) -> std::result::Result<u32, std::num::ParseIntError> {
    text.parse()
}

#[activity]
async fn refuse(_ctx: ActivityContext) -> std::result::Result<(), ActivityError> {
    Err(ActivityError::msg("no"))
}

// Full paths, other visibilities, raw identifiers, a `Result` alias.
#[orchestrator]
pub(crate) async fn full_paths(ctx: durable::OrchestrationContext, text: String) -> Result<u32> {
    let parsed = ctx.call_activity(parse, text).await?;
    Ok(ctx.call_activity(add, (parsed, 1)).await?)
}

#[orchestrator]
async fn r#match(_ctx: OrchestrationContext) -> u32 {
    1
}

// A task error converts into the orchestration's error.
#[orchestrator]
async fn task_error(ctx: OrchestrationContext) -> std::result::Result<(), TaskError> {
    ctx.call_activity(refuse, ()).await
}

// Attributes are kept where they belong: docs and lint levels on the
// handle, `cfg` on everything.
/// Counts the items of an order.
#[allow(clippy::needless_return)]
#[deprecated = "use `count` directly"]
#[orchestrator]
async fn counted(ctx: OrchestrationContext, order: Order) -> Result<usize> {
    return Ok(ctx.call_activity(count, order).await?);
}

#[cfg(any())]
#[orchestrator]
async fn compiled_out(ctx: OrchestrationContext) -> DoesNotExist {}

fn main() {
    assert_eq!(<r#match as OrchestratorSignature>::NAME, "match");
    let _ = (full_paths, task_error, push);
    #[allow(deprecated)]
    let _ = Registry::new().orchestrator(counted);
}
