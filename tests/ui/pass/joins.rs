//! Joins the replay-safety check accepts: the context's typed joins and
//! tokio's `join!`/`try_join!` (deterministic under the engine).

use durable::prelude::*;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct FlightRef(String);

#[derive(Serialize, Deserialize)]
struct HotelRef(u32);

#[activity]
async fn book_flight(_ctx: ActivityContext, to: String) -> FlightRef {
    FlightRef(to)
}

#[activity]
async fn book_hotel(_ctx: ActivityContext, nights: u32) -> HotelRef {
    HotelRef(nights)
}

#[orchestrator]
async fn trip(ctx: OrchestrationContext, to: String) -> Result<String, OrchestrationError> {
    let (flight, hotel, ()) = ctx
        .join((
            ctx.call_activity(book_flight, to.clone()),
            ctx.call_activity(book_hotel, 2),
            ctx.create_timer(Duration::from_secs(1)),
        ))
        .await;
    let (f, h) = ctx
        .try_join((ctx.call_activity(book_flight, to.clone()), ctx.call_activity(book_hotel, 3)))
        .await?;
    let all = ctx
        .when_all_settled((0..3).map(|n| ctx.call_activity(book_hotel, n)))
        .await;
    let (a, b) = tokio::join!(ctx.call_activity(book_flight, to.clone()), ctx.call_activity(book_hotel, 4));
    let (c, d) = tokio::try_join!(ctx.call_activity(book_flight, to), ctx.call_activity(book_hotel, 5))?;
    Ok(format!(
        "{} {} {} {} {} {} {} {} {}",
        flight.is_ok(),
        hotel.is_ok(),
        f.0,
        h.0,
        all.len(),
        a.is_ok(),
        b.is_ok(),
        c.0,
        d.0
    ))
}

fn main() {}
