//! Fakes: a test replaces one activity and keeps everything else
//! discovered; the fake runs under the real activity's name.

use durable::history::EventKind;
use durable::prelude::*;
use durable::RegistryError;
use std::sync::{Arc, Mutex};

/// A payment gateway that tests must not reach (no test gives one).
#[derive(Clone)]
struct Gateway;

/// What a fake recorded: this test's own.
#[derive(Clone, Default)]
struct Charged(Arc<Mutex<Vec<u64>>>);

#[activity]
async fn reserve(_ctx: ActivityContext, seats: u32) -> String {
    format!("reserved {seats}")
}

#[activity]
async fn charge(_ctx: ActivityContext, State(_gateway): State<Gateway>, cents: u64) -> String {
    panic!("the real gateway was called for {cents}")
}

/// Stands in for `charge` in tests: same input and output.
#[activity]
async fn fake_charge(_ctx: ActivityContext, State(charged): State<Charged>, cents: u64) -> String {
    charged.0.lock().unwrap().push(cents);
    format!("fake receipt for {cents}")
}

/// Another fake without state.
#[activity]
async fn declined_charge(_ctx: ActivityContext, cents: u64) -> Result<String, String> {
    Err(format!("card declined for {cents}"))
}

#[orchestrator]
async fn book(ctx: OrchestrationContext, seats: u32) -> Result<String, OrchestrationError> {
    let reservation = ctx.call_activity(reserve, seats).await?;
    let receipt = ctx.call_activity(charge, u64::from(seats) * 100).await?;
    Ok(format!("{reservation}; {receipt}"))
}

#[durable::test(state(Charged::default()), fake(charge = fake_charge))]
async fn a_fake_replaces_one_activity_and_the_rest_stays_discovered(env: TestEnv) {
    let id = env.client().schedule(book, 2).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    // `reserve` is the real one, `charge` the fake.
    assert_eq!(
        state.output::<String>().unwrap(),
        "reserved 2; fake receipt for 200"
    );
    assert_eq!(*env.state::<Charged>().unwrap().0.lock().unwrap(), [200]);
    // The fake ran under the real name.
    let scheduled: Vec<String> = env
        .history(&id)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::TaskScheduled { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(scheduled, ["reserve", "charge"]);
}

#[tokio::test]
async fn the_builder_fakes_an_activity() {
    let env = TestEnv::builder()
        .state(Charged::default())
        .fake_activity(charge, declined_charge)
        .build()
        .unwrap();
    let id = env.client().schedule(book, 1).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    let failure = state.failure().unwrap();
    assert!(
        failure.message.contains("card declined for 100"),
        "{}",
        failure.message
    );
    env.shutdown().await;
}

#[tokio::test]
async fn without_the_fake_the_real_activity_needs_its_state() {
    // The fake takes `Charged`, not `Gateway`: only faking `charge` lets
    // the environment start without a gateway.
    let err = TestEnv::builder()
        .state(Charged::default())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::MissingState { activity, type_name, .. }
            if activity == "charge" && type_name.ends_with("::Gateway")),
        "{err:?}"
    );
    // And a fake's own state is checked like any activity's.
    let err = TestEnv::builder()
        .registry(
            Registry::new()
                .orchestrator(book)
                .activity(reserve)
                .activity(charge),
        )
        .fake_activity(charge, fake_charge)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::MissingState { activity, type_name, faked_by: Some("fake_charge"), .. }
            if activity == "charge" && type_name.ends_with("::Charged")),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("activity \"charge\" (faked by \"fake_charge\" at ")
            && message.contains("fakes.rs:"),
        "{message}"
    );
}

#[tokio::test]
async fn faking_an_activity_that_is_not_registered_is_an_error() {
    let err = TestEnv::builder()
        .registry(Registry::new().orchestrator(book).activity(reserve))
        .fake_activity(charge, declined_charge)
        .build()
        .unwrap_err();
    match &err {
        RegistryError::UnknownFake {
            activity,
            at,
            registered,
        } => {
            assert_eq!(activity, "charge");
            assert_eq!(registered, "reserve");
            // Where the test asked for the fake, not inside the library.
            assert!(at.file.ends_with("fakes.rs"), "{at}");
        }
        other => panic!("expected UnknownFake, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("cannot fake activity \"charge\"")
            && message.contains("registered: [reserve]")
            && message.contains("register the real one first"),
        "{message}"
    );
    // The registry reports it the same way.
    let registry = Registry::new().replace_activity(charge, declined_charge);
    assert!(matches!(
        registry.check(),
        Err(RegistryError::UnknownFake { .. })
    ));
}
