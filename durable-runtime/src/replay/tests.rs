//! Engine tests driven by histories, without a backend or a clock.
//!
//! A small simulator drives episodes through the pure transition core with
//! fixed timestamps, so every test can (1) replay each prefix of the history
//! from scratch and (2) compare sticky and non-sticky runs event by event.

use super::{replay_episode, Execution};
use crate::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use crate::backend::transition::{self, HistoryUpdate, Limits};
use crate::backend::{CreateInstanceRequest, IdReusePolicy, InstanceMetadata};
use crate::failure::TaskOutcome;
use crate::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
use crate::{ActivityError, Either, OrchestrationError, Registry, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;

fn t0() -> Timestamp {
    chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// One instance driven episode by episode.
struct Sim {
    registry: Arc<Registry>,
    meta: InstanceMetadata,
    history: Vec<HistoryEvent>,
    inbox: Vec<HistoryEvent>,
    cached: Option<Execution>,
    sticky: bool,
    now: Timestamp,
    /// Activities scheduled and not yet completed: (task id, name, input).
    pending: Vec<(i32, String, Option<String>)>,
    timers: Vec<(i32, Timestamp)>,
    results: Vec<OrchestratorResult>,
    /// Every activity work item's (attempt, first task id), in dispatch order.
    attempts: Vec<(u32, i32)>,
    /// Fire cancelled timers anyway, as a Durable Task sidecar does (the
    /// protocol has no cancel action): timers come from the actions, and
    /// the episode's dropped timers are not deleted.
    fires_cancelled_timers: bool,
}

impl Sim {
    fn start(registry: Registry, name: &str, input: &str, sticky: bool) -> Sim {
        Sim::start_on(registry, name, input, sticky, false)
    }

    /// [`Sim::start`], on a simulated sidecar that fires cancelled timers
    /// if `fires_cancelled_timers`.
    fn start_on(
        registry: Registry,
        name: &str,
        input: &str,
        sticky: bool,
        fires_cancelled_timers: bool,
    ) -> Sim {
        let req = CreateInstanceRequest {
            instance_id: "inst".into(),
            name: name.into(),
            version: None,
            input: Some(input.into()),
            scheduled_start: None,
            reuse_policy: IdReusePolicy::default(),
            trace: None,
            tags: Default::default(),
        };
        let (mut meta, start) =
            transition::create_instance(&req, None, t0(), &Limits::default()).unwrap();
        meta.execution_id = "e1".into();
        let mut start = start.event;
        if let EventKind::ExecutionStarted { execution_id, .. } = &mut start.kind {
            *execution_id = Some("e1".into());
        }
        let mut sim = Sim {
            registry: Arc::new(registry),
            meta,
            history: Vec::new(),
            inbox: vec![start],
            cached: None,
            sticky,
            now: t0(),
            pending: Vec::new(),
            timers: Vec::new(),
            results: Vec::new(),
            fires_cancelled_timers,
            attempts: Vec::new(),
        };
        sim.episode();
        sim
    }

    fn episode(&mut self) {
        self.now += chrono::Duration::seconds(1);
        let new_events = transition::episode_events(std::mem::take(&mut self.inbox), self.now);
        let result = match self.cached.take() {
            Some(mut exec) if self.sticky && exec.can_continue(&self.history) => {
                let r = exec.continue_episode(&self.history, &new_events);
                self.cached = Some(exec);
                r
            }
            _ => {
                let mut exec = Execution::new(self.registry.clone(), "inst");
                let r = exec.run_episode(&self.history, &new_events);
                if self.sticky {
                    self.cached = Some(exec);
                }
                r
            }
        };
        let out = transition::apply_episode(
            &self.meta,
            &self.history,
            &new_events,
            &result,
            self.now,
            &Limits::default(),
        );
        self.meta = out.metadata;
        match out.history {
            HistoryUpdate::Append(ev) => self.history.extend(ev),
            HistoryUpdate::Replace(ev) => self.history = ev,
            HistoryUpdate::Restart { inbox_front } => {
                self.history.clear();
                self.cached = None;
                self.inbox = inbox_front;
            }
        }
        for a in out.outbox.activities {
            self.attempts.push(a.attempt());
            self.pending.push((a.task_id, a.name, a.input));
        }
        if self.fires_cancelled_timers {
            for a in &result.actions {
                if let ActionKind::CreateTimer { fire_at } = a.kind {
                    self.timers.push((a.id, fire_at));
                }
            }
        } else {
            let dropped = &out.dropped_timers;
            self.timers.retain(|&(timer_id, fire_at)| {
                !dropped.covers(&HistoryEvent::new(
                    fire_at,
                    EventKind::TimerFired { fire_at, timer_id },
                ))
            });
            for m in out.outbox.messages {
                if let EventKind::TimerFired { timer_id, fire_at } = m.event.kind {
                    if m.instance_id == "inst" {
                        self.timers.push((timer_id, fire_at));
                    }
                }
            }
        }
        self.results.push(result);
        if !self.inbox.is_empty() && !self.meta.status.is_terminal() {
            self.episode();
        }
    }

    /// Completes every pending activity with `f(name, input)`, one episode each.
    fn run_activities(&mut self, mut f: impl FnMut(&str, Option<&str>) -> TaskOutcome) {
        while let Some((id, name, input)) =
            (!self.pending.is_empty()).then(|| self.pending.remove(0))
        {
            let ev = transition::activity_completion(
                id,
                f(&name, input.as_deref()),
                &name,
                self.now,
                &Limits::default(),
            );
            self.inbox.push(ev);
            self.episode();
        }
    }

    fn fire_timers(&mut self) {
        for (id, at) in std::mem::take(&mut self.timers) {
            self.now = self.now.max(at);
            self.inbox.push(HistoryEvent::new(
                at,
                EventKind::TimerFired {
                    fire_at: at,
                    timer_id: id,
                },
            ));
            self.episode();
        }
    }

    fn raise(&mut self, name: &str, data: &str) {
        self.inbox.push(HistoryEvent::new(
            self.now,
            EventKind::EventRaised {
                name: name.into(),
                input: Some(data.into()),
            },
        ));
        self.episode();
    }

    fn status(&self) -> OrchestrationStatus {
        self.meta.status
    }

    fn output(&self) -> Option<&str> {
        self.meta.output.as_deref()
    }

    /// Replays every prefix that ends an episode from scratch and checks it
    /// reproduces what that episode returned.
    fn check_replay_of_every_prefix(&self) {
        let bounds: Vec<usize> = self
            .history
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EventKind::OrchestratorStarted))
            .map(|(i, _)| i)
            .collect();
        for (n, &start) in bounds.iter().enumerate() {
            let end = self
                .history
                .iter()
                .enumerate()
                .skip(start)
                .find(|(_, e)| {
                    matches!(
                        e.kind,
                        EventKind::TaskScheduled { .. }
                            | EventKind::TimerCreated { .. }
                            | EventKind::SubOrchestrationInstanceCreated { .. }
                            | EventKind::EventSent { .. }
                            | EventKind::OrchestratorCompleted
                    )
                })
                .map(|(i, _)| i)
                .unwrap_or(self.history.len());
            let replayed = replay_episode(
                self.registry.clone(),
                "inst",
                &self.history[..start],
                &self.history[start..end],
            );
            let recorded = &self.results[n];
            assert_eq!(
                strip(&replayed),
                strip(recorded),
                "episode {n} replayed from scratch differs from the recorded one"
            );
        }
    }
}

/// Actions without timestamps inside completion failures (stable compare),
/// then the cancelled timers.
fn strip(r: &OrchestratorResult) -> Vec<(i32, String)> {
    r.actions
        .iter()
        .map(|a| (a.id, format!("{:?}", a.kind)))
        .chain([(-1, format!("cancelled {:?}", r.cancelled_timers))])
        .collect()
}

fn ok(v: impl serde::Serialize) -> TaskOutcome {
    Ok(Some(serde_json::to_string(&v).unwrap()))
}

/// A typed event, implemented by hand as the derive would.
#[derive(serde::Serialize, serde::Deserialize)]
struct Approval {
    approved: bool,
    by: String,
}

impl crate::Event for Approval {
    const NAME: &'static str = "approval";
}

fn registry() -> Registry {
    Registry::new()
        .orchestrator_fn("seq", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("inc", &a).await?;
            Ok(b)
        })
        .orchestrator_fn("seq_changed", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("dec", &a).await?;
            Ok(b)
        })
        .orchestrator_fn("seq_timer", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            ctx.create_timer(Duration::from_secs(1)).await;
            Ok(a)
        })
        .orchestrator_fn("fan", |ctx, n: i64| async move {
            let all = ctx
                .when_all((0..n).map(|i| ctx.call_activity_by_name::<i64>("inc", &i)))
                .await?;
            Ok(all.into_iter().sum::<i64>())
        })
        .orchestrator_fn("race", |ctx, _: ()| async move {
            let ev = ctx.wait_for_external_event::<String>("go");
            let t = ctx.create_timer(Duration::from_secs(30));
            Ok(match ctx.when_any2(ev, t).await {
                Either::First(v) => v?,
                Either::Second(()) => "timeout".to_string(),
            })
        })
        .orchestrator_fn("bad_status", |ctx, _: ()| async move {
            // JSON object keys must be strings: this cannot be serialised.
            let status: std::collections::HashMap<(i32, i32), i32> =
                [((1, 2), 3)].into_iter().collect();
            ctx.set_custom_status(&status);
            Ok(())
        })
        .orchestrator_fn("two_events", |ctx, _: ()| async move {
            let a: String = ctx.wait_for_external_event("a").await?;
            let b: String = ctx.wait_for_external_event("b").await?;
            Ok(format!("{a}{b}"))
        })
        .orchestrator_fn("uuids", |ctx, _: ()| async move {
            let u1 = ctx.new_uuid();
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            let u2 = ctx.new_uuid();
            Ok(format!("{u1} {u2}"))
        })
        .orchestrator_fn("non_durable", |_ctx, _: ()| async move {
            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            let _ = rx.await;
            Ok(())
        })
        .orchestrator_fn("panics", |_ctx, _: ()| async move {
            if true {
                panic!("bad orchestrator");
            }
            Ok(())
        })
        .orchestrator_fn("retrying", |ctx, _: ()| async move {
            let r: i64 = ctx
                .call_activity_by_name_with_retry(
                    "inc",
                    &1,
                    RetryPolicy::new(3, Duration::from_secs(5)).backoff_coefficient(2.0),
                )
                .await?;
            Ok(r)
        })
        .orchestrator_fn("retrying_twice", |ctx, _: ()| async move {
            let policy = RetryPolicy::new(3, Duration::from_secs(5));
            let a: i64 = ctx
                .call_activity_by_name_with_retry("inc", &1, policy.clone())
                .await?;
            let b: i64 = ctx
                .call_activity_by_name_with_retry("inc", &a, policy)
                .await?;
            Ok(b)
        })
        .orchestrator_fn("loop", |ctx, n: u32| async move {
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            if n < 3 {
                return ctx.continue_as_new_keep_events(&(n + 1));
            }
            let ev: String = ctx.wait_for_external_event("carried").await?;
            Ok(n * 100 + ev.len() as u32)
        })
        .orchestrator_fn("restart_placeholder", |ctx, n: u32| async move {
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            if n < 2 {
                return ctx.continue_as_new(&(n + 1));
            }
            Ok(n)
        })
        .orchestrator_fn("restart_then_err", |ctx, n: u32| async move {
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            if n < 2 {
                let () = ctx.continue_as_new(&(n + 1));
                return Err(OrchestrationError::new(
                    "ignored: continue_as_new was called",
                ));
            }
            Ok(n)
        })
        .orchestrator_fn("restart_then_ok", |ctx, n: u32| async move {
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            if n < 2 {
                let () = ctx.continue_as_new(&(n + 1));
                return Ok(1000 + n);
            }
            Ok(n)
        })
        .orchestrator_fn("tick_loop", |ctx, n: u32| async move {
            let _: () = ctx.wait_for_external_event("tick").await?;
            if n < 2 {
                return ctx.continue_as_new_keep_events(&(n + 1));
            }
            Ok(n)
        })
        .orchestrator_fn("typed_events", |ctx, _: ()| async move {
            let approval = ctx.wait_for_event::<Approval>().await?;
            ctx.send("other", &approval);
            Ok(approval.by)
        })
        .orchestrator_fn("errs", |_ctx, _: ()| async move {
            Err::<(), _>(OrchestrationError::new("nope"))
        })
        .orchestrator_fn("sends_then_fails", |ctx, panic: bool| async move {
            ctx.set_custom_status(&"stage-2");
            ctx.send_event("other", "go", &"from a failing episode");
            // Scheduled, never awaited: it must not be dispatched.
            let _unawaited = ctx.call_activity_by_name::<i64>("inc", &1);
            if panic {
                panic!("exploded after sending");
            }
            Err::<(), _>(OrchestrationError::new("failed after sending"))
        })
}

fn inc(_: &str, input: Option<&str>) -> TaskOutcome {
    let x: i64 = serde_json::from_str(input.unwrap_or("0")).unwrap();
    ok(x + 1)
}

#[test]
fn chain_completes_and_every_prefix_replays() {
    for sticky in [false, true] {
        let mut sim = Sim::start(registry(), "seq", "1", sticky);
        sim.run_activities(inc);
        assert_eq!(sim.status(), OrchestrationStatus::Completed);
        assert_eq!(sim.output(), Some("3"));
        sim.check_replay_of_every_prefix();
    }
}

#[test]
fn sticky_and_full_replay_give_identical_histories() {
    let scenarios: Vec<(&str, &str)> = vec![
        ("seq", "1"),
        ("fan", "20"),
        ("seq_timer", "5"),
        ("uuids", "null"),
        ("retrying", "null"),
    ];
    for (name, input) in scenarios {
        let run = |sticky: bool| {
            let mut sim = Sim::start(registry(), name, input, sticky);
            let mut fails = 0;
            for _ in 0..10 {
                sim.run_activities(|n, i| {
                    if name == "retrying" && fails < 2 {
                        fails += 1;
                        Err(FailureDetails::new("E", "transient"))
                    } else {
                        inc(n, i)
                    }
                });
                sim.fire_timers();
            }
            assert!(
                sim.status().is_terminal(),
                "{name} did not finish: {:?}",
                sim.status()
            );
            sim
        };
        let a = run(false);
        let b = run(true);
        assert_eq!(
            a.history, b.history,
            "{name}: sticky and full replay differ"
        );
        assert_eq!(a.output(), b.output());
        b.check_replay_of_every_prefix();
    }
}

#[test]
fn fan_out_results_keep_input_order() {
    let mut sim = Sim::start(registry(), "fan", "5", true);
    assert_eq!(
        sim.pending.len(),
        5,
        "all five scheduled in the first episode"
    );
    sim.pending.reverse();
    sim.run_activities(inc);
    assert_eq!(sim.output(), Some("15"));
}

#[test]
fn when_any_event_before_timer() {
    let mut sim = Sim::start(registry(), "race", "null", true);
    sim.raise("go", "\"yes\"");
    assert_eq!(sim.output(), Some("\"yes\""));
    sim.check_replay_of_every_prefix();
}

#[test]
fn when_any_timer_before_event() {
    let mut sim = Sim::start(registry(), "race", "null", true);
    sim.fire_timers();
    assert_eq!(sim.output(), Some("\"timeout\""));
    sim.check_replay_of_every_prefix();
}

#[test]
fn events_are_buffered_until_awaited_in_order() {
    let mut sim = Sim::start(registry(), "two_events", "null", false);
    sim.raise("b", "\"B\"");
    assert_eq!(sim.status(), OrchestrationStatus::Running);
    sim.raise("A", "\"A\"");
    assert_eq!(
        sim.output(),
        Some("\"AB\""),
        "event names are case-insensitive; early events are kept"
    );
    sim.check_replay_of_every_prefix();
}

#[test]
fn new_uuid_is_deterministic_across_replays() {
    let mut a = Sim::start(registry(), "uuids", "null", false);
    a.run_activities(inc);
    let mut b = Sim::start(registry(), "uuids", "null", true);
    b.run_activities(inc);
    assert_eq!(a.output(), b.output());
    let out: String = serde_json::from_str(a.output().unwrap()).unwrap();
    let parts: Vec<&str> = out.split(' ').collect();
    assert_ne!(parts[0], parts[1]);
}

#[test]
fn changed_activity_name_is_non_determinism_naming_both() {
    let mut sim = Sim::start(registry(), "seq", "1", false);
    sim.run_activities(inc);
    let (past, new) = sim.history.split_at(sim.history.len() - 1);
    // Swap the orchestrator for a changed version and replay the history.
    let mut history = past.to_vec();
    if let EventKind::ExecutionStarted { name, .. } = &mut history[1].kind {
        *name = "seq_changed".into();
    }
    let r = replay_episode(Arc::new(registry()), "inst", &history, new);
    let fail = match r.completion() {
        Some(ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::Failed,
            failure: Some(f),
            ..
        }) => f.clone(),
        other => panic!("expected a failure, got {other:?}"),
    };
    assert_eq!(fail.error_type, "NonDeterminismError");
    assert!(fail.message.contains("#1"), "{}", fail.message);
    assert!(
        fail.message.contains("activity \"inc\""),
        "{}",
        fail.message
    );
    assert!(
        fail.message.contains("activity \"dec\""),
        "{}",
        fail.message
    );
}

#[test]
fn timer_in_place_of_activity_is_non_determinism() {
    let mut sim = Sim::start(registry(), "seq", "1", false);
    sim.run_activities(inc);
    let mut history = sim.history.clone();
    if let EventKind::ExecutionStarted { name, .. } = &mut history[1].kind {
        *name = "seq_timer".into();
    }
    let mut exec = Execution::new(Arc::new(registry()), "inst");
    exec.run_episode(&history, &[]);
    let nd = exec.non_determinism().expect("non-determinism detected");
    assert_eq!(nd.sequence_id, 1);
    assert_eq!(nd.history.as_deref(), Some("activity \"inc\""));
    assert_eq!(nd.code.as_deref(), Some("timer"));
}

#[test]
fn awaiting_a_non_durable_future_fails_the_orchestration() {
    let sim = Sim::start(registry(), "non_durable", "null", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    let f = sim.meta.failure.as_ref().unwrap();
    assert_eq!(f.error_type, "NonDurableAwaitError");
    assert!(f.message.contains("not a durable task"), "{}", f.message);
}

#[test]
fn a_panicking_orchestrator_fails_only_itself() {
    let sim = Sim::start(registry(), "panics", "null", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    assert!(sim
        .meta
        .failure
        .as_ref()
        .unwrap()
        .message
        .contains("bad orchestrator"));
}

#[test]
fn a_failing_episode_keeps_its_custom_status_and_sent_events() {
    for panic in [false, true] {
        let sim = Sim::start(registry(), "sends_then_fails", &panic.to_string(), false);
        assert_eq!(sim.status(), OrchestrationStatus::Failed);
        assert_eq!(sim.meta.custom_status.as_deref(), Some("\"stage-2\""));
        let actions: Vec<&ActionKind> = sim.results[0].actions.iter().map(|a| &a.kind).collect();
        assert!(
            matches!(
                actions.as_slice(),
                [ActionKind::SendEvent { name, .. }, ActionKind::CompleteOrchestration { .. }]
                    if name == "go"
            ),
            "only the sent event goes out with the failure: {actions:?}"
        );
        assert!(sim
            .history
            .iter()
            .any(|e| matches!(&e.kind, EventKind::EventSent { instance_id, .. } if instance_id == "other")));
        assert!(!sim
            .history
            .iter()
            .any(|e| matches!(e.kind, EventKind::TaskScheduled { .. })));
        sim.check_replay_of_every_prefix();
    }
}

#[test]
fn a_non_deterministic_episode_dispatches_nothing() {
    let mut sim = Sim::start(registry(), "seq", "1", false);
    sim.run_activities(inc);
    let (past, new) = sim.history.split_at(sim.history.len() - 1);
    // Changed code that now sends an event first: what it sends must not go out.
    let changed = Registry::new().orchestrator_fn("seq", |ctx, x: i64| async move {
        ctx.send_event("other", "go", &x);
        let a: i64 = ctx.call_activity_by_name("dec", &x).await?;
        Ok(a)
    });
    let r = replay_episode(Arc::new(changed), "inst", past, new);
    match r.actions.as_slice() {
        [OrchestratorAction {
            kind:
                ActionKind::CompleteOrchestration {
                    status: OrchestrationStatus::Failed,
                    failure: Some(f),
                    ..
                },
            ..
        }] => assert_eq!(f.error_type, "NonDeterminismError"),
        other => panic!("a non-deterministic episode sends nothing but its failure: {other:?}"),
    }
}

#[test]
fn orchestrator_error_becomes_failure() {
    let sim = Sim::start(registry(), "errs", "null", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    assert_eq!(sim.meta.failure.as_ref().unwrap().message, "nope");
}

#[test]
fn a_custom_status_that_cannot_be_serialised_fails_the_orchestration() {
    let sim = Sim::start(registry(), "bad_status", "null", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    let f = sim.meta.failure.as_ref().unwrap();
    assert_eq!(f.error_type, "SerializationError");
    assert!(
        f.message.contains("custom status") && f.message.contains("HashMap"),
        "{}",
        f.message
    );
}

#[test]
fn unknown_orchestrator_fails_naming_it() {
    let sim = Sim::start(registry(), "missing", "null", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    let msg = &sim.meta.failure.as_ref().unwrap().message;
    assert!(msg.contains("\"missing\" is not registered"), "{msg}");
}

#[test]
fn bad_input_fails_naming_the_type() {
    let sim = Sim::start(registry(), "seq", "\"text\"", false);
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    let msg = &sim.meta.failure.as_ref().unwrap().message;
    assert!(msg.contains("i64"), "{msg}");
}

#[test]
fn retries_wait_on_growing_durable_timers() {
    let mut sim = Sim::start(registry(), "retrying", "null", true);
    let mut delays = Vec::new();
    for _ in 0..2 {
        sim.run_activities(|_, _| Err(FailureDetails::new("E", "transient")));
        let (_, at) = sim.timers[0];
        delays.push((at - sim.now).num_seconds());
        sim.fire_timers();
    }
    sim.run_activities(inc);
    assert_eq!(sim.output(), Some("2"));
    assert_eq!(delays, vec![5, 10], "first interval 5 s, coefficient 2");
    sim.check_replay_of_every_prefix();
}

#[test]
fn retries_exhausted_and_non_retriable() {
    let mut sim = Sim::start(registry(), "retrying", "null", true);
    for _ in 0..3 {
        sim.run_activities(|_, _| Err(FailureDetails::new("E", "always")));
        sim.fire_timers();
    }
    assert_eq!(sim.status(), OrchestrationStatus::Failed);

    let mut sim = Sim::start(registry(), "retrying", "null", true);
    sim.run_activities(|_, _| {
        Err(ActivityError::new("Fatal", "no")
            .non_retriable()
            .into_details())
    });
    assert_eq!(
        sim.status(),
        OrchestrationStatus::Failed,
        "non-retriable failures are not retried"
    );
    assert!(sim.timers.is_empty());
}

#[test]
fn continue_as_new_restarts_and_carries_events() {
    let mut sim = Sim::start(registry(), "loop", "0", true);
    sim.raise("carried", "\"abcd\"");
    for _ in 0..5 {
        sim.run_activities(inc);
    }
    assert_eq!(sim.status(), OrchestrationStatus::Completed);
    assert_eq!(
        sim.output(),
        Some("304"),
        "n = 3 and the carried event's payload"
    );
}

/// The new inputs of the episodes that continued as new, in order.
fn restarts(sim: &Sim) -> Vec<Option<String>> {
    sim.results
        .iter()
        .flat_map(|r| &r.actions)
        .filter_map(|a| match &a.kind {
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::ContinuedAsNew,
                result,
                failure,
                ..
            } => {
                assert_eq!(failure, &None, "a restart records no failure");
                Some(result.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn keep_events_carries_events_that_arrive_after_the_return_in_the_same_episode() {
    for sticky in [false, true] {
        let mut sim = Sim::start(registry(), "tick_loop", "0", sticky);
        // Three ticks in one episode: the first ends the execution, the
        // other two come after the orchestrator returned and go over.
        for _ in 0..3 {
            sim.inbox.push(HistoryEvent::new(
                sim.now,
                EventKind::EventRaised {
                    name: "tick".into(),
                    input: None,
                },
            ));
        }
        sim.episode();
        assert_eq!(sim.status(), OrchestrationStatus::Completed);
        assert_eq!(sim.output(), Some("2"), "one tick per execution");
        assert_eq!(restarts(&sim).len(), 2);
    }
}

#[test]
fn continue_as_new_ignores_what_the_orchestrator_returns() {
    // The placeholder `return ctx.continue_as_new(..)` hands back, a real
    // `Err` and an `Ok` returned after the call: all restart alike.
    for name in ["restart_placeholder", "restart_then_err", "restart_then_ok"] {
        let mut runs = Vec::new();
        for sticky in [false, true] {
            let mut sim = Sim::start(registry(), name, "0", sticky);
            for _ in 0..3 {
                sim.run_activities(inc);
            }
            assert_eq!(sim.status(), OrchestrationStatus::Completed, "{name}");
            assert_eq!(
                sim.output(),
                Some("2"),
                "{name}: the last execution's output"
            );
            assert_eq!(
                restarts(&sim),
                [Some("1".to_string()), Some("2".to_string())],
                "{name}: two restarts, each with the next input"
            );
            runs.push(sim.results.iter().map(strip).collect::<Vec<_>>());
        }
        assert_eq!(runs[0], runs[1], "{name}: sticky and full replay agree");
    }
}

#[test]
fn typed_events_wait_and_send_under_the_types_name() {
    for sticky in [false, true] {
        let mut sim = Sim::start(registry(), "typed_events", "null", sticky);
        // Raised by name, as another language would (names match
        // case-insensitively); the data is the type's JSON.
        sim.raise("Approval", r#"{"approved":true,"by":"ana"}"#);
        assert_eq!(sim.status(), OrchestrationStatus::Completed);
        assert_eq!(sim.output(), Some("\"ana\""));
        let sent: Vec<_> = sim
            .history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::EventSent {
                    instance_id,
                    name,
                    input,
                } => Some((instance_id.as_str(), name.as_str(), input.as_deref())),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent,
            [("other", "approval", Some(r#"{"approved":true,"by":"ana"}"#))],
            "sent under `Approval::NAME` with the value as its data"
        );
        sim.check_replay_of_every_prefix();
    }
}

#[test]
fn suspended_executions_hold_events_until_resumed() {
    let mut sim = Sim::start(registry(), "two_events", "null", true);
    sim.inbox.push(HistoryEvent::new(
        sim.now,
        EventKind::ExecutionSuspended { input: None },
    ));
    sim.episode();
    assert_eq!(sim.status(), OrchestrationStatus::Suspended);
    sim.raise("a", "\"1\"");
    sim.raise("b", "\"2\"");
    assert_eq!(
        sim.status(),
        OrchestrationStatus::Suspended,
        "events are held while suspended"
    );
    sim.inbox.push(HistoryEvent::new(
        sim.now,
        EventKind::ExecutionResumed { input: None },
    ));
    sim.episode();
    assert_eq!(sim.output(), Some("\"12\""));
    sim.check_replay_of_every_prefix();
}

#[test]
fn terminate_ends_a_waiting_orchestration() {
    let mut sim = Sim::start(registry(), "two_events", "null", true);
    sim.inbox.push(HistoryEvent::new(
        sim.now,
        EventKind::ExecutionTerminated {
            input: Some("\"bye\"".into()),
            recurse: false,
        },
    ));
    sim.episode();
    assert_eq!(sim.status(), OrchestrationStatus::Terminated);
    assert_eq!(sim.output(), Some("\"bye\""));
}

#[test]
fn is_replaying_is_true_only_for_past_events() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let reg = Registry::new().orchestrator_fn("r", move |ctx, _: ()| {
        let seen = s2.clone();
        async move {
            seen.lock().unwrap().push(ctx.is_replaying());
            let _: i64 = ctx.call_activity_by_name("inc", &0).await?;
            seen.lock().unwrap().push(ctx.is_replaying());
            Ok(())
        }
    });
    let mut sim = Sim::start(reg, "r", "null", false);
    sim.run_activities(inc);
    // Episode 1: [false]; episode 2 replays the start (true) then sees the result live (false).
    assert_eq!(*seen.lock().unwrap(), vec![false, true, false]);
}

/// A task's outcome as text: `ok:<value>` or `err:<task>#<id>:<message>`.
fn outcome<T: std::fmt::Display>(r: &Result<T, crate::TaskError>) -> String {
    match r {
        Ok(v) => format!("ok:{v}"),
        Err(e) => format!("err:{}#{}:{}", e.task, e.task_id, e.details.message),
    }
}

/// Orchestrators that join differently typed tasks. Those named `*_gated`
/// first wait for the event "go", so their tasks can finish (and fail)
/// before the join is first polled.
fn joins() -> Registry {
    fn gate(
        ctx: &crate::OrchestrationContext,
        gated: bool,
    ) -> impl std::future::Future<Output = ()> {
        let wait = gated.then(|| ctx.wait_for_external_event::<()>("go"));
        async move {
            if let Some(w) = wait {
                let _ = w.await;
            }
        }
    }
    let mut reg = Registry::new();
    for gated in [false, true] {
        let suffix = if gated { "_gated" } else { "" };
        reg = reg
            .orchestrator_fn(&format!("settled{suffix}"), move |ctx, _: ()| async move {
                let flight = ctx.call_activity_by_name::<String>("flight", &"OSL");
                let hotel = ctx.call_activity_by_name::<u32>("hotel", &3);
                let nap = ctx.create_timer(Duration::from_secs(5));
                gate(&ctx, gated).await;
                let (f, h, ()) = ctx.join((flight, hotel, nap)).await;
                Ok(format!("{} {}", outcome(&f), outcome(&h)))
            })
            .orchestrator_fn(&format!("try{suffix}"), move |ctx, _: ()| async move {
                let a = ctx.call_activity_by_name::<String>("a", &0);
                let b = ctx.call_activity_by_name::<i64>("b", &0);
                let c = ctx.call_activity_by_name::<bool>("c", &0);
                gate(&ctx, gated).await;
                Ok(match ctx.try_join((a, b, c)).await {
                    Ok((a, b, c)) => format!("ok:{a} {b} {c}"),
                    Err(e) => outcome::<i64>(&Err(e)),
                })
            })
            .orchestrator_fn(
                &format!("tokio_try{suffix}"),
                move |ctx, _: ()| async move {
                    let a = ctx.call_activity_by_name::<String>("a", &0);
                    let b = ctx.call_activity_by_name::<i64>("b", &0);
                    let c = ctx.call_activity_by_name::<bool>("c", &0);
                    gate(&ctx, gated).await;
                    Ok(match tokio::try_join!(a, b, c) {
                        Ok((a, b, c)) => format!("ok:{a} {b} {c}"),
                        Err(e) => outcome::<i64>(&Err(e)),
                    })
                },
            );
    }
    reg.orchestrator_fn("all_settled", |ctx, n: i64| async move {
        let tasks = (0..n).map(|i| ctx.call_activity_by_name::<i64>("inc", &i));
        let all = ctx.when_all_settled(tasks).await;
        Ok(all.iter().map(outcome).collect::<Vec<_>>())
    })
    .orchestrator_fn("nested", |ctx, _: ()| async move {
        // The inner join fails when "b" fails, after "c" (outer) failed.
        let inner = ctx.try_join((
            ctx.call_activity_by_name::<String>("a", &0),
            ctx.call_activity_by_name::<i64>("b", &0),
        ));
        let c = ctx.call_activity_by_name::<bool>("c", &0);
        gate(&ctx, true).await;
        Ok(match ctx.try_join((inner, c)).await {
            Ok(_) => "ok".to_string(),
            Err(e) => outcome::<i64>(&Err(e)),
        })
    })
    .orchestrator_fn("unordered", |ctx, _: ()| async move {
        use futures::StreamExt;
        let mut tasks: futures::stream::FuturesUnordered<_> = ["a", "b", "c"]
            .into_iter()
            .map(|n| {
                let f = ctx.call_activity_by_name::<serde_json::Value>(n, &0);
                async move { (n, f.await) }
            })
            .collect();
        let mut seen = Vec::new();
        while let Some((name, r)) = tasks.next().await {
            seen.push(format!("{name}={}", outcome(&r)));
        }
        Ok(seen.join(" "))
    })
}

/// Runs `drive` on a sticky and a non-sticky simulation of `name`, checks
/// both give the same history and that every prefix replays, and returns
/// the output.
fn run_both(name: &str, input: &str, drive: impl Fn(&mut Sim)) -> String {
    run_both_as(name, input, drive)
}

/// [`run_both`] for an output of type `T`.
fn run_both_as<T: serde::de::DeserializeOwned>(
    name: &str,
    input: &str,
    drive: impl Fn(&mut Sim),
) -> T {
    let sims: Vec<Sim> = [false, true]
        .into_iter()
        .map(|sticky| {
            let mut sim = Sim::start(joins(), name, input, sticky);
            drive(&mut sim);
            assert_eq!(sim.status(), OrchestrationStatus::Completed, "{name}");
            sim.check_replay_of_every_prefix();
            sim
        })
        .collect();
    assert_eq!(
        sims[0].history, sims[1].history,
        "{name}: sticky and full replay differ"
    );
    serde_json::from_str(sims[0].output().unwrap()).unwrap()
}

/// Completes the pending activities in the order `order` names them, one
/// episode each, failing those in `failing`.
fn complete_in_order(sim: &mut Sim, order: &[&str], failing: &[&str]) {
    for &name in order {
        let i = sim
            .pending
            .iter()
            .position(|(_, n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not pending"));
        let (id, name, _) = sim.pending.remove(i);
        let result = if failing.contains(&name.as_str()) {
            Err(FailureDetails::new("E", format!("{name} failed")))
        } else {
            match name.as_str() {
                "a" | "flight" => ok(format!("{name}-ref")),
                "c" => ok(true),
                _ => ok(7),
            }
        };
        let ev = transition::activity_completion(id, result, &name, sim.now, &Limits::default());
        sim.inbox.push(ev);
        sim.episode();
    }
}

#[test]
fn join_returns_every_outcome_of_differently_typed_tasks() {
    for name in ["settled", "settled_gated"] {
        let out = run_both(name, "null", |sim| {
            complete_in_order(sim, &["hotel", "flight"], &["hotel"]);
            if name == "settled" {
                assert_eq!(
                    sim.status(),
                    OrchestrationStatus::Running,
                    "waits for the timer too"
                );
            }
            sim.fire_timers();
            sim.raise("go", "null");
        });
        assert_eq!(
            out, r##"ok:flight-ref err:activity "hotel"#1:hotel failed"##,
            "{name}"
        );
    }
}

#[test]
fn try_join_fails_with_the_first_failure_in_history_order() {
    for name in ["try", "try_gated"] {
        // "c" fails first, then "a": "c" is reported, whatever the argument order.
        let out = run_both(name, "null", |sim| {
            complete_in_order(sim, &["b", "c", "a"], &["c", "a"]);
            sim.raise("go", "null");
        });
        assert_eq!(out, r##"err:activity "c"#2:c failed"##, "{name}");
        let out = run_both(name, "null", |sim| {
            complete_in_order(sim, &["c", "a", "b"], &["a", "b"]);
            sim.raise("go", "null");
        });
        assert_eq!(out, r##"err:activity "a"#0:a failed"##, "{name}");
    }
}

#[test]
fn try_join_fails_without_waiting_for_the_others() {
    let out = run_both("try", "null", |sim| {
        complete_in_order(sim, &["b"], &["b"]);
        assert_eq!(sim.status(), OrchestrationStatus::Completed);
        assert_eq!(sim.pending.len(), 2, "a and c still run, unawaited");
    });
    assert_eq!(out, r##"err:activity "b"#1:b failed"##);
}

#[test]
fn try_join_returns_every_value_in_argument_order() {
    let out = run_both("try_gated", "null", |sim| {
        sim.raise("go", "null");
        complete_in_order(sim, &["c", "b", "a"], &[]);
    });
    assert_eq!(out, "ok:a-ref 7 true");
}

#[test]
fn a_nested_join_is_placed_where_its_failure_happened() {
    // "c" failed before "b": the outer join reports "c", although the
    // inner join comes first and has failed too.
    let out = run_both("nested", "null", |sim| {
        complete_in_order(sim, &["c", "b"], &["c", "b"]);
        sim.raise("go", "null");
    });
    assert_eq!(out, r##"err:activity "c"#2:c failed"##);
    let out = run_both("nested", "null", |sim| {
        complete_in_order(sim, &["b", "c"], &["c", "b"]);
        sim.raise("go", "null");
    });
    assert_eq!(out, r##"err:activity "b"#1:b failed"##);
}

#[test]
fn when_all_settled_returns_every_result_in_input_order() {
    for n in [3, 40] {
        let out: Vec<String> = run_both_as("all_settled", &n.to_string(), |sim| {
            sim.pending.reverse();
            sim.run_activities(|name, input| {
                let x: i64 = serde_json::from_str(input.unwrap()).unwrap();
                if x % 2 == 1 {
                    Err(FailureDetails::new("E", format!("odd {x}")))
                } else {
                    inc(name, input)
                }
            });
        });
        let expected: Vec<String> = (0..n)
            .map(|x| {
                if x % 2 == 1 {
                    format!(r##"err:activity "inc"#{x}:odd {x}"##)
                } else {
                    format!("ok:{}", x + 1)
                }
            })
            .collect();
        assert_eq!(out, expected, "n = {n}");
    }
}

#[test]
fn tokio_try_join_is_deterministic_under_the_engine() {
    // One completion is applied between two polls, so tokio's rotating
    // start only matters for failures already in when it is first polled;
    // its first poll starts at the first branch.
    let out = run_both("tokio_try", "null", |sim| {
        complete_in_order(sim, &["b", "c", "a"], &["c", "a"]);
    });
    assert_eq!(out, r##"err:activity "c"#2:c failed"##);
    let out = run_both("tokio_try_gated", "null", |sim| {
        complete_in_order(sim, &["b", "c", "a"], &["c", "a"]);
        sim.raise("go", "null");
    });
    assert_eq!(
        out, r##"err:activity "a"#0:a failed"##,
        "failures seen at once come in branch order, not history order"
    );
}

#[test]
fn futures_unordered_yields_in_history_order() {
    let out = run_both("unordered", "null", |sim| {
        complete_in_order(sim, &["c", "a", "b"], &["a"]);
    });
    assert_eq!(out, r##"c=ok:true a=err:activity "a"#0:a failed b=ok:7"##);
}

/// The tags of every `TaskScheduled`, as (id, attempt tag, first task id tag).
fn scheduled_tags(history: &[HistoryEvent]) -> Vec<(i32, Option<&str>, Option<&str>)> {
    use crate::handler::task_tags;
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskScheduled { tags, .. } => Some((
                e.event_id,
                tags.get(task_tags::ATTEMPT).map(String::as_str),
                tags.get(task_tags::FIRST_TASK_ID).map(String::as_str),
            )),
            _ => None,
        })
        .collect()
}

/// Runs "retrying_twice": the first call fails twice, the second once;
/// `between` sees the history once the first call's second attempt failed.
fn run_retrying_twice(sticky: bool, mut between: impl FnMut(&mut Sim)) -> Sim {
    let mut sim = Sim::start(registry(), "retrying_twice", "null", sticky);
    let mut fails = 0;
    for round in 0..10 {
        sim.run_activities(|n, i| {
            fails += 1;
            if fails == 1 || fails == 2 || fails == 4 {
                Err(FailureDetails::new("E", "transient"))
            } else {
                inc(n, i)
            }
        });
        if round == 1 {
            between(&mut sim);
        }
        sim.fire_timers();
    }
    sim
}

#[test]
fn retried_attempts_carry_their_attempt_and_first_task_id_as_tags() {
    let runs = [false, true].map(|sticky| run_retrying_twice(sticky, |_| {}));
    let [full, sticky] = &runs;
    assert_eq!(
        full.history, sticky.history,
        "sticky and full replay differ"
    );
    assert_eq!(sticky.output(), Some("3"));
    // Ids: first call 0, timer 1, 2, timer 3, 4; second call 5, timer 6, 7.
    assert_eq!(
        scheduled_tags(&sticky.history),
        vec![
            (0, None, None),
            (2, Some("2"), Some("0")),
            (4, Some("3"), Some("0")),
            (5, None, None),
            (7, Some("2"), Some("5")),
        ]
    );
    assert_eq!(
        sticky.attempts,
        vec![(1, 0), (2, 0), (3, 0), (1, 5), (2, 5)],
        "work items carry the tags"
    );
    sticky.check_replay_of_every_prefix();
    full.check_replay_of_every_prefix();
}

#[test]
fn a_history_recorded_without_tags_replays_and_later_attempts_get_them() {
    // A history written before attempts were tagged (or by a sidecar that
    // drops tags): tags are not compared on replay.
    let sim = run_retrying_twice(false, |sim| {
        for e in &mut sim.history {
            if let EventKind::TaskScheduled { tags, .. } = &mut e.kind {
                tags.clear();
            }
        }
    });
    assert_eq!(sim.status(), OrchestrationStatus::Completed);
    assert_eq!(sim.output(), Some("3"));
    assert_eq!(
        scheduled_tags(&sim.history),
        vec![
            (0, None, None),
            (2, None, None),
            (4, Some("3"), Some("0")),
            (5, None, None),
            (7, Some("2"), Some("5")),
        ],
        "only the attempt scheduled after the change is tagged"
    );
}

#[test]
fn the_engine_reports_the_events_an_execution_waits_for() {
    let waits = |sim: &Sim| {
        sim.cached
            .as_ref()
            .expect("a sticky run keeps its execution")
            .waiting_for_events()
    };
    let mut sim = Sim::start(registry(), "two_events", "null", true);
    assert_eq!(waits(&sim), ["a"]);
    sim.raise("A", "\"x\"");
    assert_eq!(
        waits(&sim),
        ["b"],
        "names are matched and reported in lower case"
    );
    sim.raise("b", "\"y\"");
    assert_eq!(sim.output(), Some("\"xy\""));
    assert!(waits(&sim).is_empty());

    // The loser of a race is dropped, and so is its wait.
    let mut sim = Sim::start(registry(), "race", "null", true);
    assert_eq!(waits(&sim), ["go"]);
    sim.fire_timers();
    assert_eq!(sim.output(), Some("\"timeout\""));
    assert!(waits(&sim).is_empty(), "{:?}", waits(&sim));
}

/// Orchestrators with deadlines. Each keeps running after its race (an
/// activity "inc", or the event "gate"), so a timer left behind would
/// still be delivered to it.
fn deadlines() -> Registry {
    let day = Duration::from_secs(24 * 3600);
    Registry::new()
        .orchestrator_fn("deadline", move |ctx, _: ()| async move {
            let approval = ctx
                .wait_for_external_event::<String>("approval")
                .timeout(day)
                .await;
            let n: i64 = ctx.call_activity_by_name("inc", &0).await?;
            Ok(match approval {
                Ok(v) => format!("{}:{n}", v?),
                Err(t) => format!("{t}:{n}"),
            })
        })
        .orchestrator_fn("deadline_on_join", move |ctx, _: ()| async move {
            let b = ctx.call_activity_by_name::<i64>("b", &0);
            let d = ctx.call_activity_by_name::<i64>("d", &1);
            let r = ctx
                .timeout(ctx.try_join((b, d)), Duration::from_secs(60))
                .await;
            let _: () = ctx.wait_for_external_event("gate").await?;
            Ok(match r {
                Ok(Ok((b, d))) => format!("ok:{b}+{d}"),
                Ok(Err(e)) => format!("failed:{}", e.task),
                Err(t) => t.to_string(),
            })
        })
        .orchestrator_fn("deadline_awaited_late", move |ctx, _: ()| async move {
            // Both the event and the deadline may be in before the first poll.
            let approval = ctx
                .wait_for_external_event::<String>("approval")
                .timeout(Duration::from_secs(10));
            let _: () = ctx.wait_for_external_event("gate").await?;
            Ok(match approval.await {
                Ok(v) => v?,
                Err(t) => t.to_string(),
            })
        })
        .orchestrator_fn(
            "late_deadline_then_wait_again",
            move |ctx, _: ()| async move {
                // The deadline passes, then the event comes, both before the
                // first poll: the deadline wins, and the event it had received
                // goes to the next wait.
                let approval = ctx
                    .wait_for_external_event::<String>("approval")
                    .timeout(Duration::from_secs(10));
                let _: () = ctx.wait_for_external_event("gate").await?;
                Ok(match approval.await {
                    Ok(v) => format!("in time: {}", v?),
                    Err(_) => {
                        let late: String = ctx.wait_for_external_event("approval").await?;
                        format!("late: {late}")
                    }
                })
            },
        )
        .orchestrator_fn("drops_a_timer", move |ctx, _: ()| async move {
            drop(ctx.create_timer(day));
            let n: i64 = ctx.call_activity_by_name("inc", &0).await?;
            Ok(n.to_string())
        })
        .orchestrator_fn("deadline_or_fail", move |ctx, _: ()| async move {
            let v: String = ctx
                .wait_for_external_event("approval")
                .timeout(day)
                .await??;
            Ok(v)
        })
}

/// Runs `drive` on a sticky and a non-sticky simulation of a [`deadlines`]
/// orchestrator, checks both give the same histories and episode results
/// and that every prefix replays, and returns the sticky one.
fn run_deadline(name: &str, fires_cancelled: bool, drive: impl Fn(&mut Sim)) -> Sim {
    let mut sims: Vec<Sim> = [false, true]
        .into_iter()
        .map(|sticky| {
            let mut sim = Sim::start_on(deadlines(), name, "null", sticky, fires_cancelled);
            drive(&mut sim);
            assert!(sim.status().is_terminal(), "{name}: {:?}", sim.status());
            sim.check_replay_of_every_prefix();
            sim
        })
        .collect();
    assert_eq!(
        sims[0].history, sims[1].history,
        "{name}: sticky and full replay differ"
    );
    let results = |s: &Sim| s.results.iter().map(strip).collect::<Vec<_>>();
    assert_eq!(
        results(&sims[0]),
        results(&sims[1]),
        "{name}: episode results differ"
    );
    sims.pop().unwrap()
}

/// Every timer the episodes reported as cancelled, in order.
fn cancelled(sim: &Sim) -> Vec<i32> {
    sim.results
        .iter()
        .flat_map(|r| r.cancelled_timers.iter().copied())
        .collect()
}

fn timers_fired(sim: &Sim) -> usize {
    sim.history
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TimerFired { .. }))
        .count()
}

#[test]
fn a_deadline_that_passes_times_out_naming_the_task_and_the_deadline() {
    let sim = run_deadline("deadline", false, |sim| {
        sim.fire_timers();
        sim.run_activities(inc);
    });
    assert_eq!(sim.status(), OrchestrationStatus::Completed);
    // The first episode ran at t0 + 1 s; the deadline is a day later.
    assert_eq!(
        sim.output(),
        Some(
            "\"external event \\\"approval\\\" timed out: not finished by its deadline \
             2030-01-02T00:00:01Z:1\""
        )
    );
    assert_eq!(
        cancelled(&sim),
        Vec::<i32>::new(),
        "a timer that fired is not cancelled"
    );
}

#[test]
fn an_event_before_its_deadline_wins_and_cancels_the_timer() {
    let sim = run_deadline("deadline", false, |sim| {
        assert_eq!(sim.timers.len(), 1, "the deadline's timer is pending");
        sim.raise("approval", "\"yes\"");
        assert!(
            sim.timers.is_empty(),
            "the cancelled timer is deleted: {:?}",
            sim.timers
        );
        sim.fire_timers();
        sim.run_activities(inc);
    });
    assert_eq!(sim.output(), Some("\"yes:1\""));
    // Episode 2 (the event's) reported the deadline's timer, #0.
    assert_eq!(sim.results[1].cancelled_timers, vec![0]);
    assert_eq!(
        cancelled(&sim),
        vec![0],
        "reported once, not on later replays"
    );
    assert_eq!(timers_fired(&sim), 0);
}

#[test]
fn a_late_timer_fired_for_a_cancelled_deadline_is_ignored() {
    // As over gRPC: the sidecar cannot cancel, and fires the timer while
    // the orchestration still runs (waiting for its activity).
    let sim = run_deadline("deadline", true, |sim| {
        sim.raise("approval", "\"yes\"");
        assert_eq!(sim.timers.len(), 1, "the sidecar still has the timer");
        sim.fire_timers();
        assert_eq!(sim.status(), OrchestrationStatus::Running);
        assert_eq!(sim.pending.len(), 1, "still waits for its activity only");
        sim.run_activities(inc);
    });
    assert_eq!(sim.output(), Some("\"yes:1\""));
    assert_eq!(
        timers_fired(&sim),
        1,
        "the late TimerFired is in the history"
    );
    let late = sim.results.len() - 2;
    assert!(
        sim.results[late] == OrchestratorResult::default(),
        "the late timer's episode does nothing: {:?}",
        sim.results[late]
    );
}

#[test]
fn a_deadline_on_a_join_cancels_its_timer_or_drops_the_join() {
    // Both tasks finish in time: the timer (#2) is cancelled.
    let sim = run_deadline("deadline_on_join", false, |sim| {
        complete_in_order(sim, &["d", "b"], &[]);
        assert!(sim.timers.is_empty());
        sim.raise("gate", "null");
    });
    assert_eq!(sim.output(), Some("\"ok:7+7\""));
    assert_eq!(cancelled(&sim), vec![2]);
    // One finishes, then the deadline passes: the other's result, when it
    // comes, is ignored.
    let sim = run_deadline("deadline_on_join", false, |sim| {
        complete_in_order(sim, &["b"], &[]);
        sim.fire_timers();
        complete_in_order(sim, &["d"], &[]);
        sim.raise("gate", "null");
    });
    assert_eq!(
        sim.output(),
        Some("\"timed out: the awaited tasks did not finish by their deadline 2030-01-01T00:01:01Z\"")
    );
    assert_eq!(cancelled(&sim), Vec::<i32>::new());
}

#[test]
fn a_deadline_awaited_late_is_decided_by_history_order() {
    // The deadline passed, then the event came, both before the first poll.
    let sim = run_deadline("deadline_awaited_late", false, |sim| {
        sim.fire_timers();
        sim.raise("approval", "\"late\"");
        sim.raise("gate", "null");
    });
    let out = sim.output().unwrap();
    assert!(out.contains("timed out"), "{out}");
    // The event came first, then the deadline passed.
    let sim = run_deadline("deadline_awaited_late", false, |sim| {
        sim.raise("approval", "\"in time\"");
        sim.fire_timers();
        sim.raise("gate", "null");
    });
    assert_eq!(sim.output(), Some("\"in time\""));
}

#[test]
fn an_event_a_late_deadline_received_goes_to_the_next_wait() {
    let sim = run_deadline("late_deadline_then_wait_again", false, |sim| {
        sim.fire_timers();
        sim.raise("approval", "\"ann\"");
        sim.raise("gate", "null");
    });
    assert_eq!(sim.output(), Some("\"late: ann\""));
}

#[test]
fn a_dropped_timer_is_cancelled_in_the_episode_that_created_it() {
    let sim = run_deadline("drops_a_timer", false, |sim| {
        assert!(
            sim.timers.is_empty(),
            "no timer is queued: {:?}",
            sim.timers
        );
        sim.run_activities(inc);
    });
    assert_eq!(sim.output(), Some("\"1\""));
    assert_eq!(sim.results[0].cancelled_timers, vec![0]);
    assert!(
        sim.history
            .iter()
            .any(|e| matches!(e.kind, EventKind::TimerCreated { .. })),
        "the timer keeps its place in the history, so replay matches"
    );
}

#[test]
fn the_losing_timer_of_when_any_is_cancelled() {
    let mut sim = Sim::start(registry(), "race", "null", true);
    sim.raise("go", "\"yes\"");
    assert_eq!(sim.output(), Some("\"yes\""));
    // Event waits take no sequence number: the timer is #0.
    assert_eq!(cancelled(&sim), vec![0]);
    sim.check_replay_of_every_prefix();
}

#[test]
fn a_timed_out_deadline_with_question_mark_fails_the_orchestration() {
    let sim = run_deadline("deadline_or_fail", false, |sim| sim.fire_timers());
    assert_eq!(sim.status(), OrchestrationStatus::Failed);
    let f = sim.meta.failure.as_ref().unwrap();
    assert_eq!(f.error_type, "TimedOut");
    assert!(
        f.message.contains("external event \"approval\" timed out"),
        "{f:?}"
    );
}
