//! Typed joins end to end: a saga books a flight and a hotel (results of
//! different types) at once, and compensates what succeeded when the other
//! step failed.

use durable_runtime::{ActivityError, OrchestrationStatus, Registry, RetryPolicy, TestEnv};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct FlightRef {
    code: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HotelRef {
    room: u32,
}

#[derive(Serialize, Deserialize)]
struct Trip {
    to: String,
    nights: u32,
}

fn saga() -> Registry {
    Registry::new()
        .activity_fn("book_flight", |_, to: String| async move {
            if to.is_empty() {
                return Err(ActivityError::new("NoFlight", "no destination"));
            }
            Ok(FlightRef {
                code: format!("FL-{to}"),
            })
        })
        .activity_fn("book_hotel", |_, nights: u32| async move {
            if nights > 7 {
                return Err(
                    ActivityError::new("NoRooms", format!("no room for {nights} nights"))
                        .non_retriable(),
                );
            }
            Ok(HotelRef { room: 100 + nights })
        })
        .activity_fn("cancel_flight", |_, code: String| async move {
            Ok::<_, ActivityError>(format!("cancelled {code}"))
        })
        .activity_fn("cancel_hotel", |_, room: u32| async move {
            Ok::<_, ActivityError>(format!("cancelled room {room}"))
        })
        .orchestrator_fn("trip", |ctx, trip: Trip| async move {
            let flight = ctx.call_activity_by_name::<FlightRef>("book_flight", &trip.to);
            // A retried call joins like any other durable task.
            let hotel = ctx.call_activity_by_name_with_retry::<HotelRef>(
                "book_hotel",
                &trip.nights,
                RetryPolicy::new(3, Duration::from_secs(1)),
            );
            let undone = match ctx.join((flight, hotel)).await {
                (Ok(f), Ok(h)) => return Ok(format!("booked {} and room {}", f.code, h.room)),
                (Ok(f), Err(_)) => {
                    ctx.call_activity_by_name::<String>("cancel_flight", &f.code)
                        .await?
                }
                (Err(_), Ok(h)) => {
                    ctx.call_activity_by_name::<String>("cancel_hotel", &h.room)
                        .await?
                }
                (Err(f), Err(_)) => return Err(f.into()),
            };
            Ok(format!("undone: {undone}"))
        })
        .orchestrator_fn("trip_or_fail", |ctx, trip: Trip| async move {
            let (f, h) = ctx
                .try_join((
                    ctx.call_activity_by_name::<FlightRef>("book_flight", &trip.to),
                    ctx.call_activity_by_name::<HotelRef>("book_hotel", &trip.nights),
                ))
                .await?;
            Ok(format!("booked {} and room {}", f.code, h.room))
        })
}

async fn run(
    env: &TestEnv,
    name: &str,
    to: &str,
    nights: u32,
) -> durable_runtime::OrchestrationState {
    let trip = Trip {
        to: to.into(),
        nights,
    };
    let id = env
        .client()
        .schedule_by_name(name, &trip, Default::default())
        .await
        .unwrap();
    env.wait_for_completion(&id).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_joins_two_differently_typed_bookings_and_compensates() {
    let env = TestEnv::new(saga()).unwrap();
    let s = run(&env, "trip", "Oslo", 2).await;
    assert_eq!(s.output::<String>().unwrap(), "booked FL-Oslo and room 102");
    let s = run(&env, "trip", "Oslo", 9).await;
    assert_eq!(s.output::<String>().unwrap(), "undone: cancelled FL-Oslo");
    let s = run(&env, "trip", "", 2).await;
    assert_eq!(s.output::<String>().unwrap(), "undone: cancelled room 102");
    let s = run(&env, "trip", "", 9).await;
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    assert!(s.failure().unwrap().message.contains("no destination"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_join_gives_both_values_or_the_failure() {
    let env = TestEnv::new(saga()).unwrap();
    let s = run(&env, "trip_or_fail", "Rome", 1).await;
    assert_eq!(s.output::<String>().unwrap(), "booked FL-Rome and room 101");
    let s = run(&env, "trip_or_fail", "Rome", 8).await;
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    assert!(
        s.failure()
            .unwrap()
            .message
            .contains("no room for 8 nights"),
        "{:?}",
        s.failure()
    );
    env.shutdown().await;
}
