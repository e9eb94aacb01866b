//! Entities on the in-memory backend with virtual time (`TestEnv`): many
//! signals, transfers in critical sections, delayed signals, failures.
//! The same entities run on every backend in the conformance suite's
//! `entities` tier.

use durable_runtime::conformance::entities::{registry, Account, Counter};
use durable_runtime::entity::EntityId;
use durable_runtime::testing::replay_registry;
use durable_runtime::{OrchestrationError, OrchestrationStatus, TestEnv};

fn env() -> TestEnv {
    TestEnv::new(registry()).unwrap_or_else(|e| panic!("the test environment did not start: {e}"))
}

async fn run<O: serde::de::DeserializeOwned>(
    env: &TestEnv,
    name: &str,
    input: &impl serde::Serialize,
) -> O {
    let id = env
        .client()
        .schedule_by_name(name, input, Default::default())
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{name} ended {} with {:?}",
        state.status(),
        state.failure()
    );
    state.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_signals_from_many_orchestrations() {
    let env = env();
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(
            env.client()
                .schedule_by_name("entity_signaller", &("total", 100), Default::default())
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        env.wait_for_completion(id).await.unwrap();
    }
    env.wait_until_idle().await;
    let state: Option<Counter> = env
        .client()
        .get_entity_state(&EntityId::of::<Counter>("total"))
        .await
        .unwrap();
    assert_eq!(state.map(|c| c.value), Some(10_000));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_never_lose_or_create_money() {
    let env = env();
    let (a, b) = (EntityId::of::<Account>("a"), EntityId::of::<Account>("b"));
    env.client()
        .signal_entity(&a, "deposit", &300)
        .await
        .unwrap();
    env.client()
        .signal_entity(&b, "deposit", &300)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..100i64 {
        let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        ids.push(
            env.client()
                .schedule_by_name(
                    "entity_transfer",
                    &(from, to, 1 + i * 7 % 120),
                    Default::default(),
                )
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let s = env.wait_for_completion(id).await.unwrap();
        assert_eq!(
            s.status(),
            OrchestrationStatus::Completed,
            "{id}: {:?}",
            s.failure()
        );
    }
    env.wait_until_idle().await;
    let mut total = 0;
    for e in [&a, &b] {
        let meta = env
            .client()
            .get_entity(e)
            .await
            .unwrap()
            .expect("the account exists");
        assert_eq!(
            (meta.locked_by.as_deref(), meta.queued),
            (None, 0),
            "{e} is still locked"
        );
        let balance = meta.state::<Account>().unwrap().unwrap().balance;
        assert!(balance >= 0, "{e} is overdrawn: {balance}");
        total += balance;
    }
    assert_eq!(total, 600);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_delayed_by_an_hour_arrives_after_an_hour() {
    let env = env();
    // One hour of virtual time.
    let (before, after): (i64, i64) =
        run(&env, "entity_delayed_signal", &("d", 3_600_000u64)).await;
    assert_eq!((before, after), (0, 1));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_roll_back_and_reach_the_caller() {
    let env = env();
    assert_eq!(run::<i64>(&env, "entity_adder", &("f", 2)).await, 2);
    let out: String = run(&env, "entity_caller", &("f", "fail_after_add", 40)).await;
    assert_eq!(out, "failed: refused to add 40");
    let out: String = run(&env, "entity_caller", &("f", "panic", ())).await;
    assert!(out.contains("panicked: counter exploded"), "{out}");
    let out: String = run(&env, "entity_caller", &("f", "add", "not a number")).await;
    assert!(out.contains("the input of operation \"add\""), "{out}");
    env.wait_until_idle().await;
    let state: Option<Counter> = env
        .client()
        .get_entity_state(&EntityId::of::<Counter>("f"))
        .await
        .unwrap();
    assert_eq!(state.map(|c| c.value), Some(2));
    env.shutdown().await;
}

/// A call to an entity no worker registers fails with
/// `EntityNotRegistered`, naming the entities there are, as in the Durable
/// Task SDKs, rather than waiting for a worker that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_entity_nobody_registered_fails() {
    let registry = registry().orchestrator_fn("call_nosuch", |ctx, _: ()| async move {
        let id = EntityId::new("nosuch", "k");
        match ctx.call_entity::<i64>(&id, "add", &1).await {
            Ok(v) => Ok(format!("answered {v}")),
            Err(e) => Ok(format!("failed: {e}")),
        }
    });
    let env = TestEnv::new(registry).unwrap();
    let out: String = run(&env, "call_nosuch", &()).await;
    assert!(out.starts_with("failed:"), "{out}");
    assert!(
        out.contains("no entity of this name is registered") && out.contains("counter"),
        "{out}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_released_when_the_orchestration_fails_or_panics() {
    let registry =
        registry().orchestrator_fn("entity_lock_then_panic", |ctx, key: String| async move {
            let id = EntityId::of::<Counter>(key);
            let _section = ctx.lock_entities(std::slice::from_ref(&id)).await?;
            ctx.call_entity::<i64>(&id, "add", &1).await?;
            if true {
                panic!("the orchestrator exploded inside its critical section");
            }
            Ok::<(), OrchestrationError>(())
        });
    let env = TestEnv::new(registry).unwrap();
    for (name, key) in [
        ("entity_lock_then_fail", "x"),
        ("entity_lock_then_panic", "y"),
    ] {
        let id = env
            .client()
            .schedule_by_name(name, &key, Default::default())
            .await
            .unwrap();
        let s = env.wait_for_completion(&id).await.unwrap();
        assert_eq!(s.status(), OrchestrationStatus::Failed, "{name}");
        // Another critical section on the same entity gets the lock.
        assert_eq!(
            run::<i64>(&env, "entity_lock_and_add", &key).await,
            2,
            "{name}"
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrations_using_entities_replay() {
    let env = env();
    let id = env
        .client()
        .schedule_by_name("entity_transfer", &("a", "b", 0), Default::default())
        .await
        .unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let history = env.history(&id).await;
    replay_registry(&registry(), &history).unwrap_or_else(|e| panic!("replay failed: {e}"));
    env.shutdown().await;
}
