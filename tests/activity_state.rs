//! Application state for activities: `State<T>` parameters, the worker's
//! and the test environment's values, the startup check, and per-test
//! state.
//!
//! Every activity of this binary is discovered by its tests, so every
//! `TestEnv` here is given the state they take (or shows the error when
//! it is not).

use durable::prelude::*;
use durable::{MemoryBackend, RegistryError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stand-in for a connection pool: cheap to clone, shared inside.
#[derive(Clone, Default)]
struct Db {
    rows: Arc<Mutex<Vec<String>>>,
}

/// Configuration, shared through an `Arc`.
#[derive(Clone)]
struct Config(Arc<str>);

/// Counts calls; each test that is given one counts only its own calls.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicU32>);

impl Calls {
    fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Two kinds of state and an input.
#[activity]
async fn save(
    _ctx: ActivityContext,
    State(db): State<Db>,
    State(config): State<Config>,
    row: String,
) -> String {
    let stored = format!("{}:{row}", config.0);
    db.rows.lock().unwrap().push(stored.clone());
    stored
}

/// State and no input; the full path of `State` works too.
#[activity]
async fn count(_ctx: ActivityContext, calls: durable::State<Calls>) -> u32 {
    calls.0 .0.fetch_add(1, Ordering::SeqCst) + 1
}

#[orchestrator]
async fn save_all(
    ctx: OrchestrationContext,
    rows: Vec<String>,
) -> Result<Vec<String>, OrchestrationError> {
    let mut saved = Vec::new();
    for row in rows {
        saved.push(ctx.call_activity(save, row).await?);
    }
    ctx.call_activity(count, ()).await?;
    Ok(saved)
}

#[orchestrator]
async fn count_times(ctx: OrchestrationContext, n: u32) -> Result<u32, OrchestrationError> {
    let mut last = 0;
    for _ in 0..n {
        last = ctx.call_activity(count, ()).await?;
    }
    Ok(last)
}

fn config() -> Config {
    Config("eu-west".into())
}

#[durable::test(state(Db::default(), config(), Calls::default()))]
async fn state_reaches_the_activities(env: TestEnv) {
    let id = env
        .client()
        .schedule(save_all, vec!["a".into(), "b".into()])
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert_eq!(
        state.output::<Vec<String>>().unwrap(),
        ["eu-west:a", "eu-west:b"]
    );
    let db = env.state::<Db>().expect("the test gave a Db");
    assert_eq!(*db.rows.lock().unwrap(), ["eu-west:a", "eu-west:b"]);
    assert_eq!(env.state::<Calls>().unwrap().get(), 1);
}

/// Run 3 times; the other test runs it 5 times. Each sees only its own
/// calls, however the test harness interleaves them.
#[durable::test(state(Db::default(), config(), Calls::default()))]
async fn state_is_per_test_three(env: TestEnv) {
    let id = env.client().schedule(count_times, 3).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<u32>().unwrap(), 3);
    assert_eq!(env.state::<Calls>().unwrap().get(), 3);
}

#[durable::test(state(Db::default(), config(), Calls::default()))]
async fn state_is_per_test_five(env: TestEnv) {
    let id = env.client().schedule(count_times, 5).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<u32>().unwrap(), 5);
    assert_eq!(env.state::<Calls>().unwrap().get(), 5);
}

#[tokio::test]
async fn the_builder_gives_state_and_a_second_value_replaces_the_first() {
    let calls = Calls::default();
    let env = TestEnv::builder()
        .state(Db::default())
        .state(Config("first".into()))
        .state(config())
        .state(calls.clone())
        .build()
        .unwrap();
    let id = env
        .client()
        .schedule(save_all, vec!["x".into()])
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<Vec<String>>().unwrap(), ["eu-west:x"]);
    // The value given to the builder is the one the activity counted on.
    assert_eq!(calls.get(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn a_test_env_missing_state_does_not_start_and_says_what_to_give() {
    let err = TestEnv::builder()
        .state(Db::default())
        .state(Calls::default())
        .build()
        .unwrap_err();
    match &err {
        RegistryError::MissingState {
            activity,
            type_name,
            defined_at,
            faked_by: None,
        } => {
            assert_eq!(activity, "save");
            assert!(type_name.ends_with("::Config"), "{type_name}");
            assert!(
                defined_at.file.ends_with("activity_state.rs"),
                "{defined_at}"
            );
        }
        other => panic!("expected MissingState, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        "activity \"save\" (defined at ",
        "takes `State<activity_state::Config>`",
        "has no `activity_state::Config`",
        ".state(value)",
    ] {
        assert!(message.contains(part), "{part:?} missing in: {message}");
    }
}

#[tokio::test]
async fn a_worker_missing_state_does_not_start() {
    let backend = Arc::new(MemoryBackend::new());
    let registry = Registry::new().orchestrator(count_times).activity(count);
    let err = Worker::new(backend.clone(), registry.clone())
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::MissingState { activity, type_name, .. }
            if activity == "count" && type_name.ends_with("::Calls")),
        "{err:?}"
    );
    // Given the value, the same worker starts and the activity runs.
    let calls = Calls::default();
    let worker = Worker::new(backend.clone(), registry)
        .state(calls.clone())
        .start()
        .unwrap();
    let client = Client::new(backend);
    let id = client.schedule(count_times, 2).await.unwrap();
    let state = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(state.output::<u32>().unwrap(), 2);
    assert_eq!(calls.get(), 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn state_on_sqlite_end_to_end() {
    let backend = Arc::new(durable::sqlite::SqliteBackend::in_memory().unwrap());
    let db = Db::default();
    let calls = Calls::default();
    let worker = Worker::new(backend.clone(), Registry::discover().unwrap())
        .state(db.clone())
        .state(config())
        .state(calls.clone())
        .start()
        .unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule(save_all, vec!["s1".into(), "s2".into()])
        .await
        .unwrap();
    let state = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    assert_eq!(
        state.output::<Vec<String>>().unwrap(),
        ["eu-west:s1", "eu-west:s2"]
    );
    assert_eq!(*db.rows.lock().unwrap(), ["eu-west:s1", "eu-west:s2"]);
    assert_eq!(calls.get(), 1);
    worker.shutdown().await;
}

#[test]
fn registrations_record_the_state_they_take() {
    let registry = Registry::discover().unwrap();
    let names = |activity: &str| -> Vec<&'static str> {
        registry
            .activity_state(activity)
            .unwrap()
            .iter()
            .map(|r| r.type_name())
            .collect()
    };
    assert_eq!(
        names("save"),
        ["activity_state::Db", "activity_state::Config"]
    );
    assert_eq!(names("count"), ["activity_state::Calls"]);
    assert_eq!(<save as Activity>::STATE.len(), 2);
    let registration = durable::__private::inventory::iter::<durable::Registration>
        .into_iter()
        .find(|r| r.name == "count")
        .unwrap();
    assert_eq!(registration.state.len(), 1);
}

#[tokio::test]
async fn an_activity_called_directly_takes_state_from_its_context() {
    let calls = Calls::default();
    let ctx = ActivityContext::new("i-1", 0, "count").with_state(calls.clone());
    assert_eq!(count.run(ctx, ()).await.unwrap(), 1);
    assert_eq!(calls.get(), 1);

    // Without the value: a non-retriable failure naming the type.
    let err = count
        .run(ActivityContext::new("i-1", 1, "count"), ())
        .await
        .unwrap_err();
    let details = err.details();
    assert_eq!(details.error_type, "MissingState");
    assert!(details.non_retriable);
    assert!(
        details
            .message
            .contains("activity \"count\" takes `State<activity_state::Calls>`"),
        "{}",
        details.message
    );
}
