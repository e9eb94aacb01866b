//! The entities tier: each case runs a [`Worker`] with the entities of
//! [`registry`] and a [`Client`] on a fresh backend, and checks what users
//! see of entities: operations in order, state kept, failures rolled back,
//! locks that never lose money, and the client's entity calls. Every case
//! needs the `entities` capability (see [the module docs](super#capabilities)).
//!
//! Cases use real time; every wait is bounded by [`super::WAIT`]. A
//! case waits for an entity to have applied earlier signals by calling it
//! after them: operations on one entity run in arrival order.

use super::WAIT;
use crate::backend::Backend;
use crate::client::EntityQuery;
use crate::entity::{Entity, EntityContext, EntityId, Operations};
use crate::history::OrchestrationStatus;
use crate::{Client, OrchestrationError, OrchestrationState, Registry, ScheduleOptions, Worker};
use std::sync::Arc;
use std::time::Duration;

/// A counter: `add` (returns the new value), `get`, `fail_after_add`
/// (adds, then fails: the add must be rolled back), `panic`, `set`,
/// `forward` (signals another counter), `start` (starts "entity_caller").
#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    /// The count.
    pub value: i64,
}

impl Counter {
    fn add(&mut self, n: i64) -> Result<i64, String> {
        self.value += n;
        Ok(self.value)
    }

    fn get(&mut self, _: ()) -> Result<i64, String> {
        Ok(self.value)
    }

    fn fail_after_add(&mut self, ctx: &mut EntityContext, n: i64) -> Result<i64, String> {
        self.value += n;
        // Not sent: the operation fails.
        ctx.signal_entity(&EntityId::new("counter", "never"), "add", &1);
        Err(format!("refused to add {n}"))
    }

    fn panic(&mut self, _: ()) -> Result<(), String> {
        self.value += 1000;
        panic!("counter exploded");
    }

    fn forward(&mut self, ctx: &mut EntityContext, (to, n): (String, i64)) -> Result<(), String> {
        self.value += n;
        ctx.signal_entity(&EntityId::new("counter", to), "add", &n);
        Ok(())
    }

    fn start(&mut self, ctx: &mut EntityContext, key: String) -> Result<String, String> {
        Ok(ctx.start_orchestration("entity_adder", &(key, 5)))
    }
}

impl Entity for Counter {
    const NAME: &'static str = "counter";

    fn operations(ops: &mut Operations<Self>) {
        ops.op("add", Counter::add)
            .op("get", Counter::get)
            .op("set", |c: &mut Counter, v: i64| -> Result<(), String> {
                c.value = v;
                Ok(())
            })
            .op_with_context("fail_after_add", Counter::fail_after_add)
            .op("panic", Counter::panic)
            .op_with_context("forward", Counter::forward)
            .op_with_context("start", Counter::start);
    }
}

/// An account: `deposit`, `withdraw` (fails when the balance is short),
/// `balance`.
#[derive(Default, Debug, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// The balance.
    pub balance: i64,
}

impl Entity for Account {
    const NAME: &'static str = "account";

    fn operations(ops: &mut Operations<Self>) {
        ops.op(
            "deposit",
            |a: &mut Account, n: i64| -> Result<i64, String> {
                a.balance += n;
                Ok(a.balance)
            },
        )
        .op(
            "withdraw",
            |a: &mut Account, n: i64| -> Result<i64, String> {
                if n > a.balance {
                    return Err(format!("balance {} is short of {n}", a.balance));
                }
                a.balance -= n;
                Ok(a.balance)
            },
        )
        .op("balance", |a: &mut Account, _: ()| -> Result<i64, String> {
            Ok(a.balance)
        });
    }
}

fn counter(key: &str) -> EntityId {
    EntityId::of::<Counter>(key)
}

fn account(key: &str) -> EntityId {
    EntityId::of::<Account>(key)
}

/// The entities and orchestrators the cases use.
pub fn registry() -> Registry {
    Registry::new()
        .entity::<Counter>()
        .entity::<Account>()
        // Signals counter `key` `n` times with 1.
        .orchestrator_fn(
            "entity_signaller",
            |ctx, (key, n): (String, u32)| async move {
                for _ in 0..n {
                    ctx.signal_entity(&counter(&key), "add", &1);
                }
                Ok(())
            },
        )
        // Adds `n` to counter `key` by a call; returns the new value.
        .orchestrator_fn("entity_adder", |ctx, (key, n): (String, i64)| async move {
            let v: i64 = ctx.call_entity(&counter(&key), "add", &n).await?;
            Ok(v)
        })
        // Calls `op` on counter `key`; returns the output or the failure's
        // message.
        .orchestrator_fn(
            "entity_caller",
            |ctx, (key, op, input): (String, String, serde_json::Value)| async move {
                let r: Result<serde_json::Value, _> =
                    ctx.call_entity(&counter(&key), &op, &input).await;
                Ok(match r {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("failed: {}", e.message()),
                })
            },
        )
        // Moves `amount` from one account to the other inside a critical
        // section, only if the balance allows; returns whether it moved.
        .orchestrator_fn(
            "entity_transfer",
            |ctx, (from, to, amount): (String, String, i64)| async move {
                let (from, to) = (account(&from), account(&to));
                let section = ctx.lock_entities(&[from.clone(), to.clone()]).await?;
                let balance: i64 = ctx.call_entity(&from, "balance", &()).await?;
                if balance < amount {
                    return Ok(false);
                }
                // Signals inside the section run before anyone else's
                // operations; the calls check the result.
                ctx.call_entity::<i64>(&from, "withdraw", &amount).await?;
                ctx.call_entity::<i64>(&to, "deposit", &amount).await?;
                section.release();
                Ok(true)
            },
        )
        // The balance of account `key`, read by a call.
        .orchestrator_fn("entity_balance", |ctx, key: String| async move {
            let b: i64 = ctx.call_entity(&account(&key), "balance", &()).await?;
            Ok(b)
        })
        // Locks counter `key`, adds 1 inside, then fails while holding it.
        .orchestrator_fn("entity_lock_then_fail", |ctx, key: String| async move {
            let _section = ctx.lock_entities(&[counter(&key)]).await?;
            ctx.call_entity::<i64>(&counter(&key), "add", &1).await?;
            Err::<(), _>(OrchestrationError::new("failed inside a critical section"))
        })
        // Locks counter `key` and adds 1; returns the new value.
        .orchestrator_fn("entity_lock_and_add", |ctx, key: String| async move {
            let _section = ctx.lock_entities(&[counter(&key)]).await?;
            let v: i64 = ctx.call_entity(&counter(&key), "add", &1).await?;
            Ok(v)
        })
        // Signals `add 1` to counter `key` delayed by `ms`, then waits for
        // a timer twice as long and reads the counter.
        .orchestrator_fn(
            "entity_delayed_signal",
            |ctx, (key, ms): (String, u64)| async move {
                let at = ctx.current_utc_datetime() + chrono::Duration::milliseconds(ms as i64);
                ctx.signal_entity_at(&counter(&key), "add", &1, at);
                let before: i64 = ctx.call_entity(&counter(&key), "get", &()).await?;
                ctx.create_timer(Duration::from_millis(2 * ms)).await;
                let after: i64 = ctx.call_entity(&counter(&key), "get", &()).await?;
                Ok((before, after))
            },
        )
}

/// A worker with [`registry`] and a client on one backend.
pub struct EntityHarness {
    /// The client.
    pub client: Client,
    worker: Option<crate::WorkerHandle>,
}

/// Waits (at most [`WAIT`]) until entity `id` has run the start of the
/// execution its last batch continued into: each batch continues the
/// entity as new, and until that start has run the entity has a message
/// waiting (so cleaning keeps it).
pub async fn settled(backend: &dyn Backend, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let history = backend
            .get_history(id)
            .await
            .unwrap_or_else(|e| panic!("reading the history of {id} failed: {e}"));
        if !history.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entity {id} did not start its next execution within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl EntityHarness {
    /// Starts a worker with [`registry`] on `backend`.
    pub fn start(backend: Arc<dyn Backend>) -> Self {
        let worker = Worker::new(backend.clone(), registry())
            .start()
            .unwrap_or_else(|e| panic!("worker failed to start: {e}"));
        EntityHarness {
            client: Client::new(backend),
            worker: Some(worker),
        }
    }

    /// Schedules an orchestration by name.
    pub async fn schedule(&self, name: &str, input: &impl serde::Serialize) -> String {
        self.client
            .schedule_by_name(name, input, ScheduleOptions::default())
            .await
            .unwrap_or_else(|e| panic!("scheduling {name} failed: {e}"))
    }

    /// Waits for an instance to finish.
    pub async fn wait(&self, id: &str) -> OrchestrationState {
        self.client
            .wait_for_completion(id, WAIT)
            .await
            .unwrap_or_else(|e| panic!("instance {id} did not complete: {e}"))
    }

    /// Runs an orchestration to completion and returns its output.
    pub async fn run<O: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        input: &impl serde::Serialize,
    ) -> O {
        let id = self.schedule(name, input).await;
        let state = self.wait(&id).await;
        assert_eq!(
            state.status(),
            OrchestrationStatus::Completed,
            "{name} ({id}) ended {} with {:?}",
            state.status(),
            state.failure()
        );
        state
            .output()
            .unwrap_or_else(|e| panic!("the output of {name} does not decode: {e}"))
    }

    /// The value of counter `key`, read by a call (so after every signal
    /// that reached it before).
    pub async fn counter(&self, key: &str) -> i64 {
        let out: String = self.run("entity_caller", &(key, "get", ())).await;
        out.parse()
            .unwrap_or_else(|_| panic!("reading counter {key} failed: {out}"))
    }

    /// Stops the worker.
    pub async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
    }
}

cases! { ($) __conformance_entities_cases, entities;
    /// 100 orchestrations signal one counter 100 times each: it ends at
    /// exactly 10,000.
    async fn counter_receives_every_signal(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids.push(h.schedule("entity_signaller", &("total", 100)).await);
        }
        for id in &ids {
            h.wait(id).await;
        }
        assert_eq!(h.counter("total").await, 10_000);
        let state: Option<Counter> = h.client.get_entity_state(&counter("total")).await.unwrap();
        assert_eq!(state.map(|c| c.value), Some(10_000));
        h.stop().await;
    }

    /// A call returns the operation's output; calls from one orchestration
    /// run in order and the state persists between them.
    async fn call_returns_output(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        assert_eq!(h.run::<i64>("entity_adder", &("c", 5)).await, 5);
        assert_eq!(h.run::<i64>("entity_adder", &("c", 7)).await, 12);
        let meta = h.client.get_entity(&counter("c")).await.unwrap().expect("the entity exists");
        assert_eq!(meta.state::<Counter>().unwrap().map(|c| c.value), Some(12));
        assert_eq!(meta.locked_by, None);
        h.stop().await;
    }

    /// An operation that fails reports its failure to the caller, and its
    /// state change and signals are rolled back; a panic is a failed
    /// operation too, and the entity goes on.
    async fn failed_operation_rolls_back(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        assert_eq!(h.run::<i64>("entity_adder", &("f", 1)).await, 1);
        let out: String = h.run("entity_caller", &("f", "fail_after_add", 10)).await;
        assert_eq!(out, "failed: refused to add 10");
        let out: String = h.run("entity_caller", &("f", "panic", ())).await;
        assert!(out.contains("counter exploded"), "the panic's failure: {out}");
        let out: String = h.run("entity_caller", &("f", "no_such_op", ())).await;
        assert!(out.contains("no operation \"no_such_op\""), "unknown operation: {out}");
        assert_eq!(h.counter("f").await, 1);
        // The failed operation's signal was never sent.
        assert_eq!(h.client.get_entity(&counter("never")).await.unwrap(), None);
        h.stop().await;
    }

    /// 100 concurrent transfers between two accounts, each inside a
    /// critical section over both, never lose or create money and never
    /// overdraw.
    async fn transfers_keep_the_total(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        h.client.signal_entity(&account("a"), "deposit", &500).await.unwrap();
        h.client.signal_entity(&account("b"), "deposit", &500).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..100i64 {
            let (from, to) = if i % 3 == 0 { ("b", "a") } else { ("a", "b") };
            ids.push(h.schedule("entity_transfer", &(from, to, 10 + i % 7 * 20)).await);
        }
        let mut moved = 0;
        for id in &ids {
            let state = h.wait(id).await;
            assert_eq!(state.status(), OrchestrationStatus::Completed, "{id}: {:?}", state.failure());
            if state.output::<bool>().unwrap() {
                moved += 1;
            }
        }
        assert!(moved > 0, "no transfer happened");
        // Calls wait for the last critical section's release.
        let a: i64 = h.run("entity_balance", &"a").await;
        let b: i64 = h.run("entity_balance", &"b").await;
        assert_eq!(a + b, 1000, "a = {a}, b = {b}");
        assert!(a >= 0 && b >= 0, "a = {a}, b = {b}");
        for e in [account("a"), account("b")] {
            let meta = h.client.get_entity(&e).await.unwrap().unwrap();
            assert_eq!((meta.locked_by, meta.queued), (None, 0), "{e} is still locked");
        }
        h.stop().await;
    }

    /// A lock held by an orchestration that fails inside its critical
    /// section is released: the next one gets the lock.
    async fn failing_orchestration_releases_its_locks(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        let id = h.schedule("entity_lock_then_fail", &"l").await;
        let state = h.wait(&id).await;
        assert_eq!(state.status(), OrchestrationStatus::Failed);
        assert_eq!(h.run::<i64>("entity_lock_and_add", &"l").await, 2);
        h.stop().await;
    }

    /// An entity signals another entity and starts an orchestration.
    async fn entity_signals_and_starts(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        h.client.signal_entity(&counter("from"), "forward", &("to", 3)).await.unwrap();
        assert_eq!(h.counter("from").await, 3);
        // The forwarded signal was sent by the batch that ran `forward`,
        // so it is at "to" before this call.
        assert_eq!(h.counter("to").await, 3);
        let out: String = h.run("entity_caller", &("from", "start", "k")).await;
        let started: String = serde_json::from_str(&out).unwrap();
        let state = h.wait(&started).await;
        assert_eq!(state.status(), OrchestrationStatus::Completed, "{:?}", state.failure());
        // "entity_adder" with ("k", 5).
        assert_eq!(state.output::<i64>().unwrap(), 5);
        h.stop().await;
    }

    /// A signal scheduled for later is delivered then, not before.
    async fn delayed_signal(backend) needs(entities) {
        let h = EntityHarness::start(backend);
        let (before, after): (i64, i64) = h.run("entity_delayed_signal", &("d", 300)).await;
        assert_eq!((before, after), (0, 1));
        h.stop().await;
    }

    /// The client signals entities, reads them, queries them by id
    /// prefix page by page, and removes empty ones.
    async fn client_query_and_clean(backend) needs(entities) {
        let h = EntityHarness::start(backend.clone());
        for k in 0..5 {
            h.client.signal_entity(&counter(&format!("q{k}")), "add", &k).await.unwrap();
        }
        h.client.signal_entity(&account("q"), "deposit", &1).await.unwrap();
        // Reading through calls: each counter has applied its signal.
        for k in 0..5 {
            assert_eq!(h.counter(&format!("q{k}")).await, k);
        }
        h.client.signal_entity(&counter("q0"), "delete", &()).await.unwrap();
        // A read after the delete: it sees the default and leaves the
        // entity without state.
        assert_eq!(h.counter("q0").await, 0);
        let mut seen = Vec::new();
        let mut query = EntityQuery {
            id_prefix: "counter@q".into(),
            include_state: true,
            page_size: 2,
            ..EntityQuery::default()
        };
        loop {
            let page = h.client.query_entities(query.clone()).await.unwrap();
            assert!(page.entities.len() <= 2);
            seen.extend(page.entities);
            match page.continuation_token {
                Some(t) => query.continuation_token = Some(t),
                None => break,
            }
        }
        let ids: Vec<String> = seen.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, ["@counter@q0", "@counter@q1", "@counter@q2", "@counter@q3", "@counter@q4"]);
        assert_eq!(seen[0].state_json, None, "q0 was deleted");
        assert_eq!(seen[3].state::<Counter>().unwrap().map(|c| c.value), Some(3));
        settled(backend.as_ref(), "@counter@q0").await;
        let cleaned = h.client.clean_entity_storage(true, true, WAIT).await.unwrap();
        assert_eq!(cleaned.empty_entities_removed, 1);
        assert_eq!(h.client.get_entity(&counter("q0")).await.unwrap(), None);
        assert_eq!(h.client.get_entity_state::<Counter>(&counter("q3")).await.unwrap().map(|c| c.value), Some(3));
        h.stop().await;
    }

    /// Cleaning never removes an entity that has a message waiting for it,
    /// even an empty one: the message is applied once a worker runs. An
    /// empty entity with nothing waiting is removed, and the next message
    /// creates it again.
    async fn clean_keeps_an_entity_with_a_message_waiting(backend) needs(entities) {
        let h = EntityHarness::start(backend.clone());
        h.client.signal_entity(&counter("w"), "add", &1).await.unwrap();
        assert_eq!(h.counter("w").await, 1);
        h.client.signal_entity(&counter("w"), "delete", &()).await.unwrap();
        assert_eq!(h.counter("w").await, 0);
        // Idle: nothing but the signal below waits for it once the worker
        // stops (so it is the signal that keeps it).
        settled(backend.as_ref(), "@counter@w").await;
        h.stop().await;
        // No worker now: the next signal waits for the empty entity.
        let client = Client::new(backend.clone());
        client.signal_entity(&counter("w"), "add", &7).await.unwrap();
        let cleaned = client.clean_entity_storage(true, false, WAIT).await.unwrap();
        assert_eq!(cleaned.empty_entities_removed, 0, "an entity with a signal waiting was removed");
        let h = EntityHarness::start(backend.clone());
        assert_eq!(h.counter("w").await, 7, "the waiting signal was lost");
        h.client.signal_entity(&counter("w"), "delete", &()).await.unwrap();
        assert_eq!(h.counter("w").await, 0);
        settled(backend.as_ref(), "@counter@w").await;
        let cleaned = h.client.clean_entity_storage(true, false, WAIT).await.unwrap();
        assert_eq!(cleaned.empty_entities_removed, 1);
        assert_eq!(h.client.get_entity(&counter("w")).await.unwrap(), None);
        h.client.signal_entity(&counter("w"), "add", &2).await.unwrap();
        assert_eq!(h.counter("w").await, 2);
        h.stop().await;
    }
}
