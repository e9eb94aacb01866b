//! Typed events end to end on the in-memory backend: `#[derive(Event)]`,
//! `ctx.wait_for_event::<E>()`, `ctx.send(id, &event)`,
//! `client.raise(id, &event)`, and their interop with the by-name calls.

use durable::prelude::*;

/// A manager's decision, renamed on the wire.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "approval")]
struct Approval(bool);

/// A struct with named fields, under its own name.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
struct Shipped {
    order: String,
    tracking: String,
}

/// An enum event.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
enum Decision {
    Accept,
    Reject { reason: String },
}

/// A unit event: a signal without data.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
struct Cancel;

/// A generic event: one name for every payload type.
#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(name = "reading")]
struct Reading<T>(T);

#[test]
fn names_are_the_option_or_the_type_name_as_written() {
    assert_eq!(Approval::NAME, "approval");
    assert_eq!(Shipped::NAME, "Shipped");
    assert_eq!(Decision::NAME, "Decision");
    assert_eq!(Cancel::NAME, "Cancel");
    assert_eq!(<Reading<f64>>::NAME, "reading");
    assert_eq!(<Reading<String>>::NAME, "reading");
}

#[orchestrator]
async fn needs_approval(ctx: OrchestrationContext) -> Result<bool, OrchestrationError> {
    let Approval(approved) = ctx.wait_for_event::<Approval>().await?;
    Ok(approved)
}

#[durable::test]
async fn a_typed_raise_reaches_a_typed_wait(env: TestEnv) {
    let id = env.client().schedule(needs_approval, ()).await.unwrap();
    env.client().raise(&id, &Approval(true)).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert!(state.output::<bool>().unwrap());
}

#[orchestrator]
async fn warehouse(ctx: OrchestrationContext, to: String) -> Result<(), OrchestrationError> {
    ctx.send(
        &to,
        &Shipped {
            order: "o-1".into(),
            tracking: "TRACK-1".into(),
        },
    );
    ctx.send(
        &to,
        &Decision::Reject {
            reason: "late".into(),
        },
    );
    ctx.send(&to, &Cancel);
    Ok(())
}

#[orchestrator]
async fn customer(ctx: OrchestrationContext) -> Result<String, OrchestrationError> {
    // Waited for in another order than sent: each wait takes its own name.
    let cancel = ctx.wait_for_event::<Cancel>().await?;
    let decision = ctx.wait_for_event::<Decision>().await?;
    let shipped = ctx.wait_for_event::<Shipped>().await?;
    Ok(format!("{shipped:?} {decision:?} {cancel:?}"))
}

#[durable::test]
async fn typed_events_sent_between_instances_arrive_typed(env: TestEnv) {
    let client = env.client();
    let receiver = client.schedule(customer, ()).await.unwrap();
    let sender = client.schedule(warehouse, receiver.clone()).await.unwrap();
    let sent = env.wait_for_completion(&sender).await.unwrap();
    assert_eq!(sent.status(), OrchestrationStatus::Completed);
    let state = env.wait_for_completion(&receiver).await.unwrap();
    assert_eq!(
        state.output::<String>().unwrap(),
        "Shipped { order: \"o-1\", tracking: \"TRACK-1\" } \
         Reject { reason: \"late\" } Cancel"
    );
}

#[orchestrator]
async fn waits_by_name(ctx: OrchestrationContext) -> Result<bool, OrchestrationError> {
    // What an orchestrator in another language does: the name and JSON data.
    Ok(ctx.wait_for_external_event::<bool>("APPROVAL").await?)
}

#[durable::test]
async fn on_the_wire_a_typed_event_is_its_name_and_its_json(env: TestEnv) {
    let client = env.client();
    // Typed raise, waited for by name (case-insensitive).
    let by_name = client.schedule(waits_by_name, ()).await.unwrap();
    client.raise(&by_name, &Approval(true)).await.unwrap();
    assert!(env
        .wait_for_completion(&by_name)
        .await
        .unwrap()
        .output::<bool>()
        .unwrap());
    // Raised by name, as another language would, waited for typed.
    let typed = client.schedule(needs_approval, ()).await.unwrap();
    client.raise_event(&typed, "approval", &true).await.unwrap();
    assert!(env
        .wait_for_completion(&typed)
        .await
        .unwrap()
        .output::<bool>()
        .unwrap());
    let history = client.history(&typed).await.unwrap();
    let raised = history
        .iter()
        .find_map(|e| match &e.kind {
            durable::history::EventKind::EventRaised { name, input } => {
                Some((name.clone(), input.clone()))
            }
            _ => None,
        })
        .expect("the history records the raised event");
    assert_eq!(raised, ("approval".to_string(), Some("true".to_string())));
}

#[orchestrator]
async fn sensor(ctx: OrchestrationContext) -> Result<f64, OrchestrationError> {
    let Reading(celsius) = ctx.wait_for_event::<Reading<f64>>().await?;
    Ok(celsius)
}

#[durable::test]
async fn a_payload_of_the_wrong_shape_from_another_language_fails_the_wait(env: TestEnv) {
    let client = env.client();
    let id = client.schedule(sensor, ()).await.unwrap();
    client.raise_event(&id, "reading", &"warm").await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    let failure = state.failure().expect("a failed instance has its failure");
    let text = format!("{failure}");
    assert!(
        text.contains("reading") && text.contains("f64"),
        "the failure names the event and the type: {text}"
    );
}
