//! The end-to-end tier: each case runs a [`Worker`] and a [`Client`] on a
//! fresh backend and checks what users see: statuses, outputs, failure
//! messages, histories.
//!
//! Cases use real time: timers and retry delays are tens of milliseconds.
//! Every case needs only the basic `Backend` contract except
//! [`scheduled_start`], which needs the `delayed_start` capability,
//! [`replacing_a_live_child`] (`replace_live`) and
//! [`deadline_event_wins_and_its_timer_is_cancelled`] (`cancel_timers`; see
//! [the module docs](super#capabilities)).

use super::WAIT;
use crate::backend::{Backend, BackendError, InstanceQuery, PurgeTarget};
use crate::handler::idempotency_key;
use crate::history::{EventKind, HistoryEvent, OrchestrationStatus};
use crate::{
    ActivityError, Client, Either, Error, OrchestrationError, OrchestrationState, Registry,
    RetryPolicy, ScheduleOptions, Worker, WorkerHandle,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts per instance of the "flaky" activity.
static ATTEMPTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// A typed event of the cases: a numbered tick.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tick(u32);

impl crate::Event for Tick {
    const NAME: &'static str = "tick";
}

/// The orchestrators and activities the cases use, registered by name.
pub fn registry() -> Registry {
    Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .activity_fn("double", |_c, x: i64| async move {
            Ok::<_, ActivityError>(x * 2)
        })
        .activity_fn("fail", |_c, msg: String| async move {
            Err::<(), _>(ActivityError::new("Boom", msg))
        })
        .activity_fn("panic", |_c, _: ()| async move {
            if true {
                panic!("activity exploded");
            }
            Ok::<(), ActivityError>(())
        })
        .activity_fn("flaky", |c, succeed_on: u32| async move {
            let n = {
                let mut map = ATTEMPTS.lock().unwrap_or_else(|p| p.into_inner());
                let n = map
                    .get_or_insert_with(HashMap::new)
                    .entry(c.instance_id().to_string())
                    .or_default();
                *n += 1;
                *n
            };
            if n >= succeed_on {
                Ok(n)
            } else {
                Err(ActivityError::new("Flaky", format!("attempt {n} failed")))
            }
        })
        .activity_fn(
            "flaky_key",
            |_c, (key, succeed_on): (String, u32)| async move {
                let n = {
                    let mut map = ATTEMPTS.lock().unwrap_or_else(|p| p.into_inner());
                    let n = map.get_or_insert_with(HashMap::new).entry(key).or_default();
                    *n += 1;
                    *n
                };
                if n >= succeed_on {
                    Ok(n)
                } else {
                    Err(ActivityError::new("Flaky", format!("attempt {n} failed")))
                }
            },
        )
        .orchestrator_fn("flaky_child", |ctx, input: (String, u32)| async move {
            let n: u32 = ctx.call_activity_by_name("flaky_key", &input).await?;
            Ok(n)
        })
        .orchestrator_fn("retry_child", |ctx, succeed_on: u32| async move {
            let options = crate::SubOrchestratorOptions {
                instance_id: None,
                retry: Some(RetryPolicy::new(3, Duration::from_millis(10))),
            };
            let key = ctx.instance_id();
            let n: u32 = ctx
                .call_sub_orchestrator_by_name_with(
                    "flaky_child",
                    None,
                    &(key, succeed_on),
                    options,
                )
                .await?;
            Ok(n)
        })
        .orchestrator_fn("chain", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("double", &a).await?;
            let c: i64 = ctx.call_activity_by_name("inc", &b).await?;
            Ok(c)
        })
        .orchestrator_fn("fan", |ctx, n: i64| async move {
            let calls = (0..n).map(|i| ctx.call_activity_by_name::<i64>("double", &i));
            let all = ctx.when_all(calls).await?;
            Ok(all.iter().sum::<i64>())
        })
        .orchestrator_fn("parent", |ctx, x: i64| async move {
            let child: i64 = ctx
                .call_sub_orchestrator_by_name("chain", None, &x, None)
                .await?;
            Ok(child * 10)
        })
        .orchestrator_fn("parent_of_failing", |ctx, _: ()| async move {
            match ctx
                .call_sub_orchestrator_by_name::<()>("failing", None, &(), None)
                .await
            {
                Ok(()) => Ok("unexpected success".to_string()),
                Err(e) => Ok(format!("caught: {}", e.message())),
            }
        })
        .orchestrator_fn("failing", |ctx, _: ()| async move {
            ctx.call_activity_by_name::<()>("fail", &"card declined")
                .await?;
            Ok(())
        })
        .orchestrator_fn("parent_catches_waiting", |ctx, _: ()| async move {
            match ctx
                .call_sub_orchestrator_by_name::<String>("wait_event", None, &(), None)
                .await
            {
                Ok(out) => Ok(format!("child finished: {out}")),
                Err(e) => Ok(format!("caught: {}", e.message())),
            }
        })
        .orchestrator_fn("nest", |ctx, depth: u32| async move {
            if depth == 0 {
                ctx.call_activity_by_name::<()>("fail", &"at the bottom")
                    .await?;
            } else {
                ctx.call_sub_orchestrator_by_name::<()>("nest", None, &(depth - 1), None)
                    .await?;
            }
            Ok(())
        })
        .orchestrator_fn("sends_then_fails", |ctx, target: String| async move {
            ctx.set_custom_status(&"stage-2");
            ctx.send_event(&target, "go", &"from a failing episode");
            Err::<(), _>(OrchestrationError::new("failed after sending"))
        })
        .orchestrator_fn("wait_event", |ctx, _: ()| async move {
            let v: String = ctx.wait_for_external_event("go").await?;
            Ok(format!("got {v}"))
        })
        .orchestrator_fn("timer", |ctx, ms: u64| async move {
            let start = ctx.current_utc_datetime();
            ctx.create_timer(Duration::from_millis(ms)).await;
            let elapsed = (ctx.current_utc_datetime() - start).num_milliseconds();
            Ok(elapsed)
        })
        .orchestrator_fn("approval", |ctx, timeout_ms: u64| async move {
            let event = ctx.wait_for_external_event::<bool>("approval");
            let timer = ctx.create_timer(Duration::from_millis(timeout_ms));
            Ok(match ctx.when_any2(event, timer).await {
                Either::First(Ok(true)) => "approved",
                Either::First(Ok(false)) => "rejected",
                Either::First(Err(_)) => "bad event",
                Either::Second(()) => "timed out",
            }
            .to_string())
        })
        .orchestrator_fn("retry", |ctx, succeed_on: u32| async move {
            let policy = RetryPolicy::new(4, Duration::from_millis(10)).backoff_coefficient(2.0);
            let n: u32 = ctx
                .call_activity_by_name_with_retry("flaky", &succeed_on, policy)
                .await?;
            Ok(n)
        })
        .orchestrator_fn("counter", |ctx, n: u32| async move {
            if n < 5 {
                return ctx.continue_as_new(&(n + 1));
            }
            Ok(n)
        })
        .orchestrator_fn("tick_per_execution", |ctx, mut seen: Vec<u32>| async move {
            let Tick(tick) = ctx.wait_for_event::<Tick>().await?;
            seen.push(tick);
            if seen.len() < 4 {
                return ctx.continue_as_new_keep_events(&seen);
            }
            Ok(seen)
        })
        .orchestrator_fn("custom_status", |ctx, _: ()| async move {
            ctx.set_custom_status(&"halfway");
            let _: String = ctx.wait_for_external_event("go").await?;
            Ok(())
        })
        .orchestrator_fn("parent_waits", |ctx, _: ()| async move {
            let _: String = ctx
                .call_sub_orchestrator_by_name("wait_event", None, &(), None)
                .await?;
            Ok(())
        })
        .orchestrator_fn("calls_missing", |ctx, _: ()| async move {
            ctx.call_activity_by_name::<()>("no_such_activity", &())
                .await?;
            Ok(())
        })
        .orchestrator_fn("calls_panic", |ctx, _: ()| async move {
            match ctx.call_activity_by_name::<()>("panic", &()).await {
                Ok(()) => Ok("no panic".to_string()),
                Err(e) => Ok(e.message().to_string()),
            }
        })
        .orchestrator_fn("sends", |ctx, target: String| async move {
            ctx.send_event(&target, "go", &"from a friend");
            Ok(())
        })
        .orchestrator_fn("takes_number", |_ctx, x: i64| async move { Ok(x) })
        .orchestrator_fn("fails_directly", |_ctx, _: ()| async move {
            Err::<(), _>(OrchestrationError::new("order has no items"))
        })
        .activity_fn("sees_attempt", |c, succeed_on: u32| async move {
            let seen = (c.attempt(), c.idempotency_key().to_string());
            SEEN.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .entry(c.instance_id().to_string())
                .or_default()
                .push(seen.clone());
            if c.attempt() >= succeed_on {
                Ok(seen)
            } else {
                Err(ActivityError::new(
                    "NotYet",
                    format!("attempt {} failed", c.attempt()),
                ))
            }
        })
        .orchestrator_fn("attempts", |ctx, _: ()| async move {
            let policy = RetryPolicy::new(4, Duration::from_millis(10));
            let first: (u32, String) = ctx
                .call_activity_by_name_with_retry("sees_attempt", &3u32, policy.clone())
                .await?;
            let second: (u32, String) = ctx
                .call_activity_by_name_with_retry("sees_attempt", &1u32, policy)
                .await?;
            Ok((first, second))
        })
        .orchestrator_fn("deadline", |ctx, deadline_ms: i64| async move {
            let deadline = ctx.current_utc_datetime() + chrono::Duration::milliseconds(deadline_ms);
            let approval = ctx
                .wait_for_external_event::<bool>("approval")
                .timeout(deadline)
                .await;
            // Outlive the deadline: a deadline timer left behind fires
            // while this one runs.
            ctx.create_timer(deadline + chrono::Duration::milliseconds(200))
                .await;
            Ok(match approval {
                Ok(approved) => (format!("approved: {}", approved?), None),
                Err(timed_out) => (timed_out.to_string(), Some(timed_out.deadline)),
            })
        })
        .orchestrator_fn("rewound_child", |ctx, key: String| async move {
            // Runs on each run of "flaky_key": (runs of the first step,
            // runs of the second, which fails the first time).
            let first: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:c1"), 1u32))
                .await?;
            let second: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:c2"), 2u32))
                .await?;
            Ok((first, second))
        })
        .orchestrator_fn("rewound_parent", |ctx, _: ()| async move {
            let key = ctx.instance_id();
            let a: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:a"), 1u32))
                .await?;
            let child: (u32, u32) = ctx
                .call_sub_orchestrator_by_name("rewound_child", None, &key, None)
                .await?;
            let b: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:b"), 2u32))
                .await?;
            Ok((a, child, b))
        })
        .orchestrator_fn("rewind_handled", |ctx, _: ()| async move {
            // A failure handled and gone on from, then a final one.
            let key = ctx.instance_id();
            let a: u32 = match ctx
                .call_activity_by_name::<u32>("flaky_key", &(format!("{key}:a"), 99u32))
                .await
            {
                Ok(v) => v,
                Err(_) => {
                    ctx.call_activity_by_name("flaky_key", &(format!("{key}:b"), 1u32))
                        .await?
                }
            };
            let c: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:c"), 2u32))
                .await?;
            Ok((a, c))
        })
        .orchestrator_fn("rewind_retried", |ctx, _: ()| async move {
            // Two attempts, both failing; the rewind's third succeeds.
            let key = ctx.instance_id();
            let n: u32 = ctx
                .call_activity_by_name_with_retry(
                    "flaky_key",
                    &(key, 3u32),
                    RetryPolicy::new(2, Duration::from_millis(10)),
                )
                .await?;
            Ok(n)
        })
        .orchestrator_fn("rewind_late_child", |ctx, _: ()| async move {
            // Fails while its child still runs; the child finishes later.
            let key = ctx.instance_id();
            let child = ctx.call_sub_orchestrator_by_name::<String>(
                "wait_event",
                None,
                &(),
                Some(format!("{key}:late")),
            );
            let n: u32 = ctx
                .call_activity_by_name("flaky_key", &(format!("{key}:x"), 2u32))
                .await?;
            let got: String = child.await?;
            Ok(format!("{n} {got}"))
        })
        .orchestrator_fn("deadline_or_fail", |ctx, deadline_ms: u64| async move {
            let approved: bool = ctx
                .wait_for_external_event("approval")
                .timeout(Duration::from_millis(deadline_ms))
                .await??;
            Ok(approved)
        })
}

/// (attempt, idempotency key) of each run of "sees_attempt", in order.
type Seen = Vec<(u32, String)>;

/// What "sees_attempt" saw, per instance.
static SEEN: Mutex<Option<HashMap<String, Seen>>> = Mutex::new(None);

/// A worker and client on a backend, stopped on drop of the handle.
pub struct Harness {
    /// The client.
    pub client: Client,
    worker: Option<WorkerHandle>,
}

impl Harness {
    /// Starts a worker with [`registry`] on `backend`.
    pub fn start(backend: Arc<dyn Backend>) -> Self {
        let worker = Worker::new(backend.clone(), registry())
            .start()
            .unwrap_or_else(|e| panic!("worker failed to start: {e}"));
        Harness {
            client: Client::new(backend),
            worker: Some(worker),
        }
    }

    /// Schedules by name and waits for completion.
    pub async fn run(&self, name: &str, input: &impl serde::Serialize) -> OrchestrationState {
        let id = self
            .client
            .schedule_by_name(name, input, ScheduleOptions::default())
            .await
            .unwrap_or_else(|e| panic!("scheduling {name} failed: {e}"));
        self.wait(&id).await
    }

    /// Waits for completion, failing clearly on timeout.
    pub async fn wait(&self, id: &str) -> OrchestrationState {
        self.client
            .wait_for_completion(id, WAIT)
            .await
            .unwrap_or_else(|e| panic!("instance {id} did not complete: {e}"))
    }

    /// Waits until the instance is running.
    pub async fn started(&self, id: &str) {
        self.client
            .wait_for_start(id, WAIT)
            .await
            .unwrap_or_else(|e| panic!("instance {id} did not start: {e}"));
    }

    /// Stops the worker.
    pub async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
    }
}

fn completed(state: &OrchestrationState) {
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "instance {} ended {} with failure {:?}",
        state.instance_id(),
        state.status(),
        state.failure()
    );
}

cases! { ($) __conformance_end_to_end_cases, end_to_end;
    /// Three chained activities.
    async fn activity_chaining(backend) {
        let h = Harness::start(backend);
        let s = h.run("chain", &1).await;
        completed(&s);
        assert_eq!(s.output::<i64>().unwrap(), 5);
        h.stop().await;
    }

    /// Fan-out/fan-in over 50 activities.
    async fn fan_out_fan_in(backend) {
        let h = Harness::start(backend);
        let s = h.run("fan", &50).await;
        completed(&s);
        assert_eq!(
            s.output::<i64>().unwrap(),
            (0..50).map(|i| i * 2).sum::<i64>()
        );
        h.stop().await;
    }

    /// A sub-orchestration's output reaches its parent.
    async fn sub_orchestration(backend) {
        let h = Harness::start(backend);
        let s = h.run("parent", &1).await;
        completed(&s);
        assert_eq!(s.output::<i64>().unwrap(), 50);
        h.stop().await;
    }

    /// A failing sub-orchestration's failure reaches its parent with the cause.
    async fn sub_orchestration_failure(backend) {
        let h = Harness::start(backend);
        let s = h.run("parent_of_failing", &()).await;
        completed(&s);
        let out: String = s.output().unwrap();
        assert!(out.starts_with("caught:"), "{out}");
        assert!(
            out.contains("card declined"),
            "the child's failure message is lost: {out}"
        );
        h.stop().await;
    }

    /// A failing activity fails the orchestration with its message.
    async fn activity_failure(backend) {
        let h = Harness::start(backend);
        let s = h.run("failing", &()).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let f = s.failure().expect("failure details");
        assert!(f.message.contains("card declined"), "{f:?}");
        let inner = f
            .inner
            .as_deref()
            .expect("the activity failure as the inner cause");
        assert_eq!(inner.error_type, "Boom");
        h.stop().await;
    }

    /// An event raised after the orchestration started waiting.
    async fn external_event_after_wait(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        h.client.raise_event(&id, "go", &"now").await.unwrap();
        let s = h.wait(&id).await;
        completed(&s);
        assert_eq!(s.output::<String>().unwrap(), "got now");
        h.stop().await;
    }

    /// An event raised before the orchestration waits is kept for it.
    async fn external_event_before_wait(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name(
                "wait_event",
                &(),
                ScheduleOptions {
                    instance_id: Some("early-event".into()),
                    start_at: Some(chrono::Utc::now() + chrono::Duration::milliseconds(300)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        h.client.raise_event(&id, "go", &"early").await.unwrap();
        let s = h.wait(&id).await;
        completed(&s);
        assert_eq!(s.output::<String>().unwrap(), "got early");
        h.stop().await;
    }

    /// A durable timer fires and advances the orchestration's clock.
    async fn timer(backend) {
        let h = Harness::start(backend);
        let s = h.run("timer", &100u64).await;
        completed(&s);
        assert!(
            s.output::<i64>().unwrap() >= 100,
            "the orchestration's clock did not advance by the timer"
        );
        h.stop().await;
    }

    /// `when_any` of an event and a timer: the event wins when raised in time.
    async fn when_any_event_wins(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("approval", &60_000u64, ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        h.client.raise_event(&id, "approval", &true).await.unwrap();
        let s = h.wait(&id).await;
        completed(&s);
        assert_eq!(s.output::<String>().unwrap(), "approved");
        h.stop().await;
    }

    /// `when_any` of an event and a timer: the timer wins when nobody raises.
    async fn when_any_timer_wins(backend) {
        let h = Harness::start(backend);
        let s = h.run("approval", &50u64).await;
        completed(&s);
        assert_eq!(s.output::<String>().unwrap(), "timed out");
        h.stop().await;
    }

    /// A retry policy retries until the activity succeeds, on durable timers.
    async fn retry_succeeds(backend) {
        let h = Harness::start(backend);
        let s = h.run("retry", &3u32).await;
        completed(&s);
        assert_eq!(
            s.output::<u32>().unwrap(),
            3,
            "succeeds on the third attempt"
        );
        let timers = h
            .client
            .history(s.instance_id())
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TimerCreated { .. }))
            .count();
        assert_eq!(
            timers, 2,
            "two failed attempts should wait on two durable timers"
        );
        h.stop().await;
    }

    /// A retry policy gives up after its maximum attempts.
    async fn retry_exhausted(backend) {
        let h = Harness::start(backend);
        let s = h.run("retry", &u32::MAX).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let f = s.failure().unwrap();
        assert!(f.message.contains("failed"), "{f:?}");
        let tasks = h
            .client
            .history(s.instance_id())
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
            .count();
        assert_eq!(tasks, 4, "max_attempts = 4");
        h.stop().await;
    }

    /// A sub-orchestration retried by policy: each attempt is a new child.
    async fn sub_orchestration_retry(backend) {
        let h = Harness::start(backend);
        let s = h.run("retry_child", &3u32).await;
        completed(&s);
        assert_eq!(s.output::<u32>().unwrap(), 3, "the third child succeeds");
        let created = h
            .client
            .history(s.instance_id())
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::SubOrchestrationInstanceCreated { .. }))
            .count();
        assert_eq!(created, 3);
        let s = h.run("retry_child", &9u32).await;
        assert_eq!(
            s.status(),
            OrchestrationStatus::Failed,
            "three attempts, all failed"
        );
        h.stop().await;
    }

    /// Suspend holds events; resume releases them.
    async fn suspend_resume(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        h.client.suspend(&id, Some("maintenance")).await.unwrap();
        h.client
            .raise_event(&id, "go", &"while suspended")
            .await
            .unwrap();
        let st = h.client.get_status(&id).await.unwrap().unwrap();
        assert_eq!(st.status(), OrchestrationStatus::Suspended);
        assert!(
            h.client
                .wait_for_completion(&id, Duration::from_millis(300))
                .await
                .is_err(),
            "a suspended instance must not complete"
        );
        h.client.resume(&id, None).await.unwrap();
        let s = h.wait(&id).await;
        completed(&s);
        assert_eq!(s.output::<String>().unwrap(), "got while suspended");
        h.stop().await;
    }

    /// Terminate stops an instance with the given output.
    async fn terminate(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        h.client.terminate(&id, &"stopped by test").await.unwrap();
        let s = h.wait(&id).await;
        assert_eq!(s.status(), OrchestrationStatus::Terminated);
        assert_eq!(s.output::<String>().unwrap(), "stopped by test");
        h.stop().await;
    }

    /// Recursive terminate also stops running sub-orchestrations.
    async fn terminate_recursive(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("parent_waits", &(), ScheduleOptions::with_id("tparent"))
            .await
            .unwrap();
        let child = "tparent:0000";
        h.started(&id).await;
        h.started(child).await;
        h.client.terminate_recursive(&id, &"cascade").await.unwrap();
        assert_eq!(h.wait(&id).await.status(), OrchestrationStatus::Terminated);
        assert_eq!(
            h.wait(child).await.status(),
            OrchestrationStatus::Terminated
        );
        h.stop().await;
    }

    /// Purge removes finished instances (one, by filter, recursively) and
    /// refuses running ones.
    async fn purge(backend) {
        let h = Harness::start(backend);
        let a = h.run("chain", &1).await;
        let running = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&running).await;
        assert_eq!(h.client.purge(a.instance_id(), false).await.unwrap(), 1);
        assert!(h
            .client
            .get_status(a.instance_id())
            .await
            .unwrap()
            .is_none());
        match h.client.purge(&running, false).await {
            Err(Error::Backend(BackendError::InvalidState { .. })) => {}
            other => panic!("purging a running instance must be refused, got {other:?}"),
        }
        let p = h
            .client
            .schedule_by_name("parent", &1, ScheduleOptions::with_id("pp"))
            .await
            .unwrap();
        h.wait(&p).await;
        assert_eq!(
            h.client.purge(&p, true).await.unwrap(),
            2,
            "parent and child"
        );
        assert!(h.client.get_status("pp:0000").await.unwrap().is_none());
        h.run("chain", &2).await;
        h.run("chain", &3).await;
        let n = h
            .client
            .purge_where(
                PurgeTarget::Filter {
                    created_from: None,
                    created_to: None,
                    statuses: vec![OrchestrationStatus::Completed],
                },
                false,
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(
            h.client.get_status(&running).await.unwrap().is_some(),
            "a running instance was purged"
        );
        h.stop().await;
    }

    /// Query by status and id prefix, in pages with continuation tokens.
    async fn query_paging(backend) {
        let h = Harness::start(backend);
        for i in 0..7 {
            let id = h
                .client
                .schedule_by_name("chain", &i, ScheduleOptions::with_id(format!("q-{i}")))
                .await
                .unwrap();
            h.wait(&id).await;
        }
        let other = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::with_id("other"))
            .await
            .unwrap();
        h.started(&other).await;
        let query = InstanceQuery {
            instance_id_prefix: Some("q-".into()),
            page_size: 3,
            ..Default::default()
        };
        let (first, token) = h.client.query(query.clone()).await.unwrap();
        assert_eq!(first.len(), 3);
        assert!(token.is_some());
        let all = h.client.query_all(query).await.unwrap();
        let mut ids: Vec<_> = all.iter().map(|s| s.instance_id().to_string()).collect();
        ids.sort();
        assert_eq!(ids, (0..7).map(|i| format!("q-{i}")).collect::<Vec<_>>());
        let running = h
            .client
            .query_all(InstanceQuery {
                statuses: vec![OrchestrationStatus::Running],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].instance_id(), "other");
        h.stop().await;
    }

    /// Continue-as-new restarts with new input until done.
    async fn continue_as_new(backend) {
        let h = Harness::start(backend);
        let s = h.run("counter", &0u32).await;
        completed(&s);
        assert_eq!(s.output::<u32>().unwrap(), 5);
        h.stop().await;
    }

    /// Needs `instance_tags`. The tags an instance is scheduled with are
    /// in its state and in its query results, on the `ExecutionStarted`
    /// of each execution (kept across continue-as-new), and kept by a
    /// restart; another instance has none.
    async fn instance_tags_are_kept(backend) needs(instance_tags) {
        let h = Harness::start(backend);
        let tags: std::collections::BTreeMap<String, String> = [
            ("team".to_string(), "billing".to_string()),
            ("region".to_string(), "eu-west".to_string()),
        ]
        .into();
        let options = ScheduleOptions {
            instance_id: Some("tagged".into()),
            tags: tags.clone(),
            ..Default::default()
        };
        let id = h.client.schedule_by_name("counter", &3u32, options).await.unwrap();
        let done = h.wait(&id).await;
        completed(&done);
        assert_eq!(done.output::<u32>().unwrap(), 5, "it continued as new twice");
        assert_eq!(done.tags(), &tags, "the state's tags");
        let started_tags = |history: &[HistoryEvent]| -> Vec<_> {
            history
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::ExecutionStarted { tags, .. } => Some(tags.clone()),
                    _ => None,
                })
                .collect()
        };
        let history = h.client.history(&id).await.unwrap();
        assert_eq!(
            started_tags(&history),
            std::slice::from_ref(&tags),
            "the last execution's ExecutionStarted carries the tags: {history:?}"
        );
        let (page, _) = h
            .client
            .query(InstanceQuery {
                instance_id_prefix: Some("tagged".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].tags(), &tags, "the query result's tags");

        assert_eq!(h.client.restart(&id).await.unwrap(), id);
        let again = h.wait(&id).await;
        completed(&again);
        assert_eq!(again.tags(), &tags, "a restart keeps the tags");
        let history = h.client.history(&id).await.unwrap();
        assert_eq!(started_tags(&history), std::slice::from_ref(&tags), "{history:?}");

        let plain = h.run("counter", &5u32).await;
        completed(&plain);
        assert!(plain.tags().is_empty(), "an untagged instance: {:?}", plain.tags());
        h.stop().await;
    }

    /// Custom status is visible to clients.
    async fn custom_status(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("custom_status", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        let mut status = None;
        for _ in 0..200 {
            // Bounded: the first episode sets it right after start.
            let st = h.client.get_state(&id).await.unwrap().unwrap();
            if let Ok(s) = st.custom_status::<String>() {
                status = Some(s);
                break;
            }
            h.client
                .wait_for_completion(&id, Duration::from_millis(10))
                .await
                .ok();
        }
        assert_eq!(status.as_deref(), Some("halfway"));
        h.client.raise_event(&id, "go", &"x").await.unwrap();
        completed(&h.wait(&id).await);
        h.stop().await;
    }

    /// Unknown orchestrator and activity names fail clearly; the worker goes on.
    async fn unknown_names(backend) {
        let h = Harness::start(backend);
        let s = h.run("no_such_orchestrator", &()).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let msg = &s.failure().unwrap().message;
        assert!(
            msg.contains("no_such_orchestrator") && msg.contains("not registered"),
            "{msg}"
        );
        let s = h.run("calls_missing", &()).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let msg = &s.failure().unwrap().message;
        assert!(
            msg.contains("no_such_activity") && msg.contains("not registered"),
            "{msg}"
        );
        completed(&h.run("chain", &1).await);
        h.stop().await;
    }

    /// Input that does not deserialise fails naming the type.
    async fn bad_input(backend) {
        let h = Harness::start(backend);
        let s = h.run("takes_number", &"not a number").await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let msg = &s.failure().unwrap().message;
        assert!(msg.contains("i64") && msg.contains("takes_number"), "{msg}");
        // Requests no backend can mean the same way are refused up front.
        let request = |id: &str, name: &str, input: Option<&str>| crate::backend::CreateInstanceRequest {
            instance_id: id.into(),
            name: name.into(),
            version: None,
            input: input.map(str::to_string),
            scheduled_start: None,
            reuse_policy: Default::default(),
            trace: None,
            tags: Default::default(),
        };
        for (req, why) in [
            (request("", "chain", None), "instance id must not be empty"),
            (request("named", "", None), "orchestrator name must not be empty"),
            (request("empty-text", "chain", Some("")), "is empty text"),
        ] {
            match h.client.backend().create_instance(req).await {
                Err(BackendError::InvalidRequest(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("expected InvalidRequest ({why}), got {other:?}"),
            }
        }
        h.stop().await;
    }

    /// An orchestrator's own error is its failure.
    async fn orchestration_error(backend) {
        let h = Harness::start(backend);
        let s = h.run("fails_directly", &()).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        assert_eq!(s.failure().unwrap().message, "order has no items");
        h.stop().await;
    }

    /// A panicking activity fails that task only.
    async fn activity_panic(backend) {
        let h = Harness::start(backend);
        let s = h.run("calls_panic", &()).await;
        completed(&s);
        assert!(s.output::<String>().unwrap().contains("activity exploded"));
        completed(&h.run("chain", &1).await);
        h.stop().await;
    }

    /// Operations on unknown instances are NotFound.
    async fn not_found(backend) {
        let h = Harness::start(backend);
        let nf = |r: Result<(), Error>| matches!(r, Err(Error::Backend(BackendError::NotFound(_))));
        assert!(nf(h.client.raise_event("nope", "e", &1).await));
        assert!(nf(h.client.terminate("nope", &()).await));
        assert!(nf(h.client.suspend("nope", None).await));
        assert!(nf(h.client.resume("nope", None).await));
        assert!(h.client.get_state("nope").await.unwrap().is_none());
        h.stop().await;
    }

    /// A taken id is AlreadyExists while running; finished ids may be reused.
    async fn id_reuse(backend) {
        let h = Harness::start(backend);
        let opts = || ScheduleOptions::with_id("dup");
        h.client
            .schedule_by_name("wait_event", &(), opts())
            .await
            .unwrap();
        match h.client.schedule_by_name("wait_event", &(), opts()).await {
            Err(Error::Backend(BackendError::AlreadyExists { .. })) => {}
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        h.client.raise_event("dup", "go", &"1").await.unwrap();
        h.wait("dup").await;
        h.client
            .schedule_by_name("chain", &1, opts())
            .await
            .unwrap();
        let s = h.wait("dup").await;
        assert_eq!(s.output::<i64>().unwrap(), 5);
        let never = ScheduleOptions {
            reuse_policy: Some(crate::backend::IdReusePolicy::never()),
            ..opts()
        };
        assert!(h.client.schedule_by_name("chain", &1, never).await.is_err());
        h.stop().await;
    }

    /// Replacing a live sub-orchestration (a reuse policy that allows it)
    /// terminates it first: its parent sees it fail as terminated, and the
    /// new instance runs under the id. A replacement the backend refuses
    /// (here: no orchestrator name) changes nothing.
    async fn replacing_a_live_child(backend) needs(replace_live) {
        let h = Harness::start(backend);
        let replace = |id: &str| ScheduleOptions {
            reuse_policy: Some(crate::backend::IdReusePolicy::always()),
            ..ScheduleOptions::with_id(id)
        };
        for parent in ["kparent", "rparent"] {
            h.client
                .schedule_by_name("parent_catches_waiting", &(), ScheduleOptions::with_id(parent))
                .await
                .unwrap();
            // The parent's first episode creates the child.
            h.started(parent).await;
            h.started(&format!("{parent}:0000")).await;
        }

        let kept = "kparent:0000";
        match h.client.schedule_by_name("", &1, replace(kept)).await {
            Err(Error::Backend(BackendError::InvalidRequest(_))) => {}
            other => panic!("a replacement without a name must be refused, got {other:?}"),
        }
        h.client.raise_event(kept, "go", &"on").await.unwrap();
        let s = h.wait("kparent").await;
        completed(&s);
        assert_eq!(
            s.output::<String>().unwrap(),
            "child finished: got on",
            "a refused replacement must leave the child and its parent as they were"
        );

        let child = "rparent:0000";
        h.client.schedule_by_name("chain", &1, replace(child)).await.unwrap();
        let s = h.wait("rparent").await;
        completed(&s);
        let out: String = s.output().unwrap();
        assert!(
            out.starts_with("caught:") && out.contains("was terminated"),
            "the parent should see its replaced child as terminated: {out}"
        );
        let replacement = h.wait(child).await;
        completed(&replacement);
        assert_eq!(replacement.name(), "chain");
        assert_eq!(replacement.output::<i64>().unwrap(), 5);
        h.stop().await;
    }

    /// A failure that travels up 100 levels of sub-orchestrations (each
    /// wrapping its child's) stays bounded in depth and size, so every
    /// instance of the tree stays readable, listable and purgeable.
    async fn deep_failure_chain(backend) {
        use crate::history::{MAX_FAILURE_DEPTH, MAX_FAILURE_TEXT};
        let h = Harness::start(backend.clone());
        let root = h
            .client
            .schedule_by_name("nest", &100u32, ScheduleOptions::with_id("deep"))
            .await
            .unwrap();
        let s = h.wait(&root).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let failure = s.failure().expect("the root failed with details");
        let depth = failure.chain().count();
        assert!(depth <= MAX_FAILURE_DEPTH, "a chain of {depth} causes was kept");
        for f in failure.chain() {
            assert!(
                f.message.len() <= MAX_FAILURE_TEXT + 64,
                "a message of {} bytes was kept",
                f.message.len()
            );
        }
        // Every level is readable: the deepest child, its history, the list.
        let mut id = root.clone();
        for _ in 0..100 {
            id.push_str(":0000");
        }
        let bottom = h.wait(&id).await;
        assert_eq!(bottom.status(), OrchestrationStatus::Failed);
        assert!(bottom.failure().unwrap().message.contains("at the bottom"));
        h.client.history(&root).await.unwrap();
        let page = backend
            .query_instances(InstanceQuery {
                instance_id_prefix: Some("deep".into()),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.instances.len(), 101, "every level is listed");
        assert_eq!(
            h.client.purge(&root, true).await.unwrap(),
            101,
            "the whole tree is purged"
        );
        h.stop().await;
    }

    /// An orchestration whose code fails keeps its last episode: the
    /// custom status it set and the events it sent.
    async fn failing_episode_keeps_its_events(backend) {
        let h = Harness::start(backend);
        let listener = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::with_id("listener"))
            .await
            .unwrap();
        h.started(&listener).await;
        let failing = h
            .client
            .schedule_by_name("sends_then_fails", &listener, ScheduleOptions::default())
            .await
            .unwrap();
        let s = h.wait(&failing).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        assert_eq!(s.failure().unwrap().message, "failed after sending");
        assert_eq!(
            s.custom_status::<String>().unwrap(),
            "stage-2",
            "the failing episode's custom status is kept"
        );
        let got = h.wait(&listener).await;
        completed(&got);
        assert_eq!(got.output::<String>().unwrap(), "got from a failing episode");
        h.stop().await;
    }

    /// Oversized payloads are refused with a clear error.
    async fn payload_too_large(backend) {
        let h = Harness::start(backend);
        let big = "x".repeat(5 * 1024 * 1024);
        match h
            .client
            .schedule_by_name("takes_number", &big, ScheduleOptions::default())
            .await
        {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("bytes") || msg.to_lowercase().contains("large"),
                    "{msg}"
                );
            }
            Ok(id) => panic!("a 5 MiB input was accepted as {id}"),
        }
        completed(&h.run("chain", &1).await);
        h.stop().await;
    }

    /// The history records the run in protocol order.
    async fn history(backend) {
        let h = Harness::start(backend);
        let s = h.run("chain", &1).await;
        let hist = h.client.history(s.instance_id()).await.unwrap();
        let kinds: Vec<&str> = hist.iter().map(|e| e.kind.type_name()).collect();
        assert!(kinds.contains(&"ExecutionStarted"), "{kinds:?}");
        assert_eq!(
            kinds.iter().filter(|k| **k == "TaskScheduled").count(),
            3,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "TaskCompleted").count(),
            3,
            "{kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&"ExecutionCompleted"), "{kinds:?}");
        h.stop().await;
    }

    /// One orchestration raises an event on another.
    async fn send_event(backend) {
        let h = Harness::start(backend);
        let target = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::with_id("receiver"))
            .await
            .unwrap();
        h.started(&target).await;
        completed(&h.run("sends", &"receiver").await);
        let s = h.wait(&target).await;
        assert_eq!(s.output::<String>().unwrap(), "got from a friend");
        h.stop().await;
    }

    /// An orchestration scheduled for later stays pending until then.
    async fn scheduled_start(backend) needs(delayed_start) {
        let h = Harness::start(backend);
        let at = chrono::Utc::now() + chrono::Duration::milliseconds(200);
        let id = h
            .client
            .schedule_by_name(
                "chain",
                &1,
                ScheduleOptions {
                    start_at: Some(at),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let st = h.client.get_status(&id).await.unwrap().unwrap();
        assert_eq!(st.status(), OrchestrationStatus::Pending);
        let s = h.wait(&id).await;
        completed(&s);
        assert!(
            s.completed_at().unwrap() >= at,
            "completed before its start time"
        );
        h.stop().await;
    }

    /// Needs `task_tags`. An activity's attempt number counts the retries
    /// of its call (1, 2, 3), and its idempotency key is the same for every
    /// attempt of one call, derived from the instance, the execution and
    /// the first attempt's sequence number, and different for another call
    /// and another instance.
    async fn activity_attempts_and_idempotency_keys(backend) needs(task_tags) {
        let h = Harness::start(backend);
        let a = h.run("attempts", &()).await;
        let b = h.run("attempts", &()).await;
        completed(&a);
        completed(&b);
        let seen = |s: &OrchestrationState| {
            SEEN.lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|m| m.get(s.instance_id()).cloned())
                .unwrap_or_default()
        };
        let runs = seen(&a);
        let attempts: Vec<u32> = runs.iter().map(|(n, _)| *n).collect();
        assert_eq!(attempts, [1, 2, 3, 1], "attempts seen by the activity: {runs:?}");
        let (first, second) = (&runs[0].1, &runs[3].1);
        assert!(
            runs[..3].iter().all(|(_, k)| k == first),
            "the retries of one call saw different keys: {runs:?}"
        );
        assert_ne!(first, second, "two calls share a key");
        let history = h.client.history(a.instance_id()).await.unwrap();
        let execution_id = history
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::ExecutionStarted { execution_id, .. } => execution_id.clone(),
                _ => None,
            })
            .expect("ExecutionStarted names the execution");
        // The first call is task 0; its retries 2 and 4 (timers 1 and 3);
        // the second call is task 5.
        assert_eq!(first, &idempotency_key(a.instance_id(), &execution_id, 0));
        assert_eq!(second, &idempotency_key(a.instance_id(), &execution_id, 5));
        let output: ((u32, String), (u32, String)) = a.output().unwrap();
        assert_eq!(output, ((3, first.clone()), (1, second.clone())));
        let other = seen(&b);
        assert_eq!(other.len(), 4, "{other:?}");
        assert!(
            other.iter().all(|(_, k)| k != first && k != second),
            "two instances share a key: {runs:?} and {other:?}"
        );
        h.stop().await;
    }

    /// A deadline met in time: the event wins, and its deadline's timer is
    /// cancelled, so it never fires (the orchestration outlives it).
    async fn deadline_event_wins_and_its_timer_is_cancelled(backend) needs(cancel_timers) {
        let h = Harness::start(backend);
        let id = approve_before_the_deadline(&h).await;
        let fired = timers_fired(&h, &id).await;
        assert_eq!(
            fired,
            [1],
            "only the last timer (#1) may fire; the deadline's (#0) was cancelled"
        );
        h.stop().await;
    }

    /// A deadline met in time wins even where the backend cannot cancel
    /// its timer: a `TimerFired` that comes for it later is ignored.
    async fn deadline_event_wins_over_a_late_timer(backend) {
        let h = Harness::start(backend);
        let id = approve_before_the_deadline(&h).await;
        let fired = timers_fired(&h, &id).await;
        assert!(fired.ends_with(&[1]), "the last timer fired last: {fired:?}");
        h.stop().await;
    }

    /// A deadline that passes: a typed `TimedOut` naming the task and the
    /// deadline its timer recorded; with `?` it fails the orchestration.
    async fn deadline_passes_with_typed_timeout(backend) {
        let h = Harness::start(backend);
        let s = h.run("deadline", &50i64).await;
        completed(&s);
        let (message, deadline): (String, Option<chrono::DateTime<chrono::Utc>>) =
            s.output().unwrap();
        assert!(
            message.starts_with("external event \"approval\" timed out"),
            "{message}"
        );
        let recorded = h
            .client
            .history(s.instance_id())
            .await
            .unwrap()
            .into_iter()
            .find_map(|e| match e.kind {
                EventKind::TimerCreated { fire_at } if e.event_id == 0 => Some(fire_at),
                _ => None,
            });
        assert_eq!(deadline, recorded, "TimedOut's deadline is its timer's fire time");
        let s = h.run("deadline_or_fail", &50u64).await;
        assert_eq!(s.status(), OrchestrationStatus::Failed);
        let f = s.failure().expect("failure details");
        assert_eq!(f.error_type, "TimedOut", "{f:?}");
        assert!(f.message.contains("external event \"approval\" timed out"), "{f:?}");
        h.stop().await;
    }

    /// Typed events raised while suspended all arrive in the episode of
    /// the resume; each execution takes one and continues as new keeping
    /// the rest, including those applied after it returned.
    async fn continue_as_new_keeps_every_typed_event(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("tick_per_execution", &Vec::<u32>::new(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&id).await;
        h.client.suspend(&id, None).await.unwrap();
        for tick in 1..=4 {
            h.client.raise(&id, &Tick(tick)).await.unwrap();
        }
        h.client.resume(&id, None).await.unwrap();
        let s = h.wait(&id).await;
        completed(&s);
        assert_eq!(s.output::<Vec<u32>>().unwrap(), [1, 2, 3, 4]);
        h.stop().await;
    }

    /// A finished instance restarts: under its id a new execution runs with
    /// the same orchestrator and input (the old history replaced), or under
    /// a new id with the old instance left as it was. A live instance or an
    /// unknown id is refused.
    async fn restart_runs_a_finished_instance_again(backend) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("chain", &5i64, ScheduleOptions::with_id("restarted"))
            .await
            .unwrap();
        let first = h.wait(&id).await;
        completed(&first);
        assert_eq!(first.output::<i64>().unwrap(), 13);
        let execution = |history: &[HistoryEvent]| {
            history.iter().find_map(|e| match &e.kind {
                EventKind::ExecutionStarted { execution_id, .. } => execution_id.clone(),
                _ => None,
            })
        };
        let first_execution = execution(&h.client.history(&id).await.unwrap());

        assert_eq!(h.client.restart(&id).await.unwrap(), id);
        let again = h.wait(&id).await;
        completed(&again);
        assert_eq!(again.output::<i64>().unwrap(), 13);
        assert_eq!(again.name(), "chain");
        let history = h.client.history(&id).await.unwrap();
        let started = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ExecutionStarted { .. }))
            .count();
        assert_eq!(started, 1, "the restarted history holds one execution: {history:?}");
        // A new execution (sidecars that send no execution id show it by
        // the creation time).
        match (execution(&history), first_execution) {
            (Some(now), Some(before)) => assert_ne!(now, before, "the restart is a new execution"),
            _ => assert!(
                again.created_at() > first.created_at(),
                "the restart is a new execution: created {} then {}",
                first.created_at(),
                again.created_at()
            ),
        }

        let other = h.client.restart_as_new(&id).await.unwrap();
        assert_ne!(other, id);
        let copy = h.wait(&other).await;
        completed(&copy);
        assert_eq!(copy.output::<i64>().unwrap(), 13);
        let original = h.client.get_state(&id).await.unwrap().unwrap();
        assert_eq!(original.status(), OrchestrationStatus::Completed);

        let live = h
            .client
            .schedule_by_name("wait_event", &(), ScheduleOptions::default())
            .await
            .unwrap();
        h.started(&live).await;
        let refused = h.client.restart(&live).await;
        assert!(
            matches!(
                refused,
                Err(crate::Error::Backend(BackendError::InvalidState { .. }))
            ),
            "restarting a running instance: {refused:?}"
        );
        let unknown = h.client.restart("no-such-instance").await;
        assert!(
            matches!(unknown, Err(crate::Error::Backend(BackendError::NotFound(_)))),
            "restarting an unknown id: {unknown:?}"
        );
        h.client.raise_event(&live, "go", &"x").await.unwrap();
        completed(&h.wait(&live).await);
        h.stop().await;
    }

    /// A rewind takes the path the code took: a failure the code handled
    /// and went on from stays, a retried call keeps its failed attempts and
    /// gets one more, and a child that finished after its parent failed
    /// has its result delivered.
    async fn rewind_replays_handled_failures_retries_and_late_children(backend) needs(rewind) {
        let h = Harness::start(backend);
        for (name, want) in [
            ("rewind_handled", serde_json::json!([1, 2])),
            ("rewind_retried", serde_json::json!(3)),
        ] {
            let id = h
                .client
                .schedule_by_name(name, &(), ScheduleOptions::default())
                .await
                .unwrap();
            let first = h.wait(&id).await;
            assert_eq!(first.status(), OrchestrationStatus::Failed, "{name}: {first:?}");
            h.client.rewind(&id, None).await.unwrap();
            let done = h.wait(&id).await;
            completed(&done);
            assert_eq!(done.output::<serde_json::Value>().unwrap(), want, "{name}");
        }
        let id = h
            .client
            .schedule_by_name("rewind_late_child", &(), ScheduleOptions::default())
            .await
            .unwrap();
        let child = format!("{id}:late");
        let first = h.wait(&id).await;
        assert_eq!(first.status(), OrchestrationStatus::Failed, "{first:?}");
        h.client.raise_event(&child, "go", &"late").await.unwrap();
        completed(&h.wait(&child).await);
        h.client.rewind(&id, None).await.unwrap();
        let done = h.wait(&id).await;
        completed(&done);
        assert_eq!(done.output::<String>().unwrap(), "2 got late");
        h.stop().await;
    }

    /// A failed instance rewinds: it continues from where it failed, what
    /// failed runs again (in a failed sub-orchestration too, which is
    /// rewound with its parent), what succeeded is not redone, and the
    /// history shows each rewind. Only a failed instance rewinds.
    async fn rewind_continues_a_failed_instance_from_where_it_failed(backend) needs(rewind) {
        let h = Harness::start(backend);
        let id = h
            .client
            .schedule_by_name("rewound_parent", &(), ScheduleOptions::default())
            .await
            .unwrap();
        // The child's second step fails, so the child and then the parent fail.
        let first = h.wait(&id).await;
        assert_eq!(first.status(), OrchestrationStatus::Failed, "{first:?}");
        let child = h
            .client
            .history(&id)
            .await
            .unwrap()
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::SubOrchestrationInstanceCreated { instance_id, .. } => {
                    Some(instance_id.clone())
                }
                _ => None,
            })
            .expect("the parent started its child");
        let child_state = h.wait(&child).await;
        assert_eq!(child_state.status(), OrchestrationStatus::Failed);

        // The child continues and completes; then the parent's last step
        // fails the first time.
        h.client.rewind(&id, Some("the service is back")).await.unwrap();
        let second = h.wait(&id).await;
        assert_eq!(second.status(), OrchestrationStatus::Failed, "{second:?}");
        let child_state = h.wait(&child).await;
        completed(&child_state);
        assert_eq!(child_state.output::<(u32, u32)>().unwrap(), (1, 2));

        h.client.rewind(&id, None).await.unwrap();
        let done = h.wait(&id).await;
        completed(&done);
        // Every step that succeeded ran once; each failed one ran twice.
        assert_eq!(done.output::<(u32, (u32, u32), u32)>().unwrap(), (1, (1, 2), 2));
        let history = h.client.history(&id).await.unwrap();
        let count = |name| history.iter().filter(|e| e.kind.type_name() == name).count();
        assert_eq!(count("ExecutionRewound"), 2, "{history:?}");
        assert_eq!(count("ExecutionStarted"), 1, "one execution: {history:?}");
        assert_eq!(count("TaskFailed"), 0, "a rewound history keeps no failure");
        assert_eq!(count("TaskCompleted"), 2, "{history:?}");
        let reason = history.iter().find_map(|e| match &e.kind {
            EventKind::ExecutionRewound { reason } => reason.clone(),
            _ => None,
        });
        assert_eq!(reason.as_deref(), Some("the service is back"));
        let child_history = h.client.history(&child).await.unwrap();
        assert_eq!(
            child_history
                .iter()
                .filter(|e| e.kind.type_name() == "ExecutionRewound")
                .count(),
            1,
            "the child was rewound with its parent once: {child_history:?}"
        );

        let refused = h.client.rewind(&id, None).await;
        assert!(
            matches!(
                refused,
                Err(crate::Error::Backend(BackendError::InvalidState { .. }))
            ),
            "rewinding a completed instance: {refused:?}"
        );
        let unknown = h.client.rewind("no-such-instance", None).await;
        assert!(
            matches!(unknown, Err(crate::Error::Backend(BackendError::NotFound(_)))),
            "rewinding an unknown id: {unknown:?}"
        );
        h.stop().await;
    }
}

/// Runs "deadline" with a 2 s deadline and approves at once; returns the
/// instance id once it completed approved.
async fn approve_before_the_deadline(h: &Harness) -> String {
    let id = h
        .client
        .schedule_by_name("deadline", &2_000i64, ScheduleOptions::default())
        .await
        .unwrap();
    h.started(&id).await;
    h.client.raise_event(&id, "approval", &true).await.unwrap();
    let s = h.wait(&id).await;
    completed(&s);
    let (message, _): (String, Option<chrono::DateTime<chrono::Utc>>) = s.output().unwrap();
    assert_eq!(
        message, "approved: true",
        "the event raised at once did not win over a 2 s deadline"
    );
    id
}

/// The ids of the timers that fired, in history order.
async fn timers_fired(h: &Harness, id: &str) -> Vec<i32> {
    h.client
        .history(id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerFired { timer_id, .. } => Some(timer_id),
            _ => None,
        })
        .collect()
}
