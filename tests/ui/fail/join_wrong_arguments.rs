use durable::prelude::*;
use std::time::Duration;

#[activity]
async fn book_hotel(_ctx: ActivityContext, nights: u32) -> u32 {
    nights
}

#[orchestrator]
async fn not_a_tuple(ctx: OrchestrationContext) -> Result<(), OrchestrationError> {
    let hotels = vec![ctx.call_activity(book_hotel, 1), ctx.call_activity(book_hotel, 2)];
    let _ = ctx.join(hotels).await;
    Ok(())
}

#[orchestrator]
async fn timer_in_try_join(ctx: OrchestrationContext) -> Result<(), OrchestrationError> {
    let hotel = ctx.call_activity(book_hotel, 1);
    let _ = ctx.try_join((hotel, ctx.create_timer(Duration::from_secs(1)))).await?;
    Ok(())
}

fn main() {}
