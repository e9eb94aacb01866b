//! Typed events and `return ctx.continue_as_new(..)` in every supported form.

use durable::prelude::*;

/// Named fields, renamed on the wire.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "approval")]
pub struct Approval {
    /// Approved or not.
    pub approved: bool,
}

/// A tuple struct under its own name.
#[derive(Serialize, Deserialize, Event)]
struct Confirm(bool);

/// A unit struct.
#[derive(Serialize, Deserialize, Event)]
struct Cancel;

/// An enum.
#[derive(Serialize, Deserialize, Event)]
enum Decision {
    Accept,
    Reject(String),
}

/// A generic event with its own where clause.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "reading")]
struct Reading<T>(T)
where
    T: Clone;

/// Paths to the derive and trait work too.
#[derive(serde::Serialize, serde::Deserialize, durable::Event)]
struct r#Type;

#[orchestrator]
async fn typed(ctx: OrchestrationContext, peer: String) -> Result<String, OrchestrationError> {
    let Approval { approved } = ctx.wait_for_event::<Approval>().await?;
    let Confirm(confirmed) = ctx.wait_for_event::<Confirm>().await?;
    let Reading(celsius) = ctx.wait_for_event::<Reading<f64>>().await?;
    let decision: Decision = ctx.wait_for_event().await?;
    ctx.send(&peer, &Cancel);
    ctx.send(&peer, &Decision::Reject("late".into()));
    ctx.send(&peer, &r#Type);
    Ok(format!("{approved} {confirmed} {celsius} {}", matches!(decision, Decision::Accept)))
}

#[orchestrator]
async fn looping(ctx: OrchestrationContext, n: u32) -> Result<u32, OrchestrationError> {
    if n < 10 {
        return ctx.continue_as_new(&(n + 1));
    }
    if n < 20 {
        return ctx.continue_as_new_keep_events(&(n + 1));
    }
    Ok(n)
}

#[orchestrator]
async fn looping_unit(ctx: OrchestrationContext, n: u32) {
    if n < 10 {
        return ctx.continue_as_new(&(n + 1));
    }
}

#[orchestrator]
async fn looping_string_error(ctx: OrchestrationContext, n: u32) -> Result<u32, String> {
    if n < 10 {
        return ctx.continue_as_new(&(n + 1));
    }
    Ok(n)
}

async fn raise_all(client: &Client, id: &str) -> Result<(), durable::Error> {
    client.raise(id, &Approval { approved: true }).await?;
    client.raise(id, &Confirm(true)).await?;
    client.raise(id, &Reading(21.5)).await?;
    client.raise(id, &Decision::Accept).await?;
    // By name, as for events defined in other languages.
    client.raise_event(id, Approval::NAME, &true).await
}

fn main() {
    let _ = (typed, looping, looping_unit, looping_string_error, raise_all);
    assert_eq!(Approval::NAME, "approval");
    assert_eq!(Confirm::NAME, "Confirm");
    assert_eq!(Cancel::NAME, "Cancel");
    assert_eq!(Decision::NAME, "Decision");
    assert_eq!(<Reading<u8> as Event>::NAME, "reading");
    assert_eq!(r#Type::NAME, "Type");
}
