//! The generated code is clean under strict crate-level lints.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub, rust_2018_idioms, unused, nonstandard_style)]

use durable::prelude::*;

/// Greets.
#[activity]
pub async fn greet(_ctx: ActivityContext, name: String) -> Result<String, String> {
    Ok(format!("hello, {name}"))
}

/// Greets twice.
#[orchestrator(version = "1")]
pub async fn greet_twice(ctx: OrchestrationContext, name: String) -> Result<String, OrchestrationError> {
    let first = ctx.call_activity(greet, name.clone()).await?;
    let second = ctx.call_activity(greet, name).await?;
    Ok(format!("{first} {second}"))
}

/// A typed event.
#[derive(Serialize, Deserialize, Event)]
#[event(name = "greeted")]
pub struct Greeted(pub String);

/// A generic typed event.
#[derive(Serialize, Deserialize, Event)]
pub enum Tagged<T> {
    /// One value.
    One(T),
}

#[durable::test]
async fn greets(env: TestEnv) {
    let id = env.client().schedule(greet_twice, "ada".into()).await.unwrap();
    let _ = env.wait_for_completion(&id).await;
}

fn main() {
    let _ = Registry::new().orchestrator(greet_twice).activity(greet);
}
