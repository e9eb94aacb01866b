//! The delivery tier: each rule drives the [`Backend`] trait by hand (no
//! worker, hand-written episode results) and checks one delivery
//! guarantee of [the design](crate::backend): exactly-once episodes,
//! at-least-once activities, dropped messages for old executions, delayed
//! starts, and work items that competing callers never share.
//!
//! Rules that depend on a capability say so in their docs; see
//! [the module docs](super#capabilities). Every wait is bounded by
//! [`WAIT`]; rules never assert how long something took.

use super::WAIT;
use crate::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use crate::backend::{
    ActivityWorkItem, Backend, BackendError, CreateInstanceRequest, IdReusePolicy,
    OrchestrationWorkItem,
};
use crate::handler::task_tags;
use crate::history::{EventKind, HistoryEvent, OrchestrationStatus, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

/// Competing callers in the competition rules.
const CALLERS: usize = 4;
/// Work items each competing caller takes.
const ITEMS_PER_CALLER: usize = 6;
/// Work items the competition rules create (and take).
const COMPETED: usize = CALLERS * ITEMS_PER_CALLER;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {WAIT:?}"))
}

#[track_caller]
fn ok<T>(what: &str, r: Result<T, BackendError>) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

#[track_caller]
fn lease_lost<T: std::fmt::Debug>(what: &str, r: Result<T, BackendError>) {
    match r {
        Err(BackendError::LeaseLost(_)) => {}
        other => panic!("{what}: expected BackendError::LeaseLost, got {other:?}"),
    }
}

async fn create(backend: &Arc<dyn Backend>, id: &str, start: Option<Timestamp>) {
    let request = CreateInstanceRequest {
        instance_id: id.into(),
        name: "orchestration".into(),
        version: None,
        input: Some("0".into()),
        scheduled_start: start,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    };
    ok(
        &format!("creating {id}"),
        backend.create_instance(request).await,
    );
}

async fn episode(backend: &Arc<dyn Backend>, what: &str) -> OrchestrationWorkItem {
    let item = within(what, backend.next_orchestration_item()).await;
    ok(what, item)
}

async fn activity(backend: &Arc<dyn Backend>, what: &str) -> ActivityWorkItem {
    let item = within(what, backend.next_activity_item()).await;
    ok(what, item)
}

/// An episode result: these actions with sequence numbers from `first_id`.
fn result(first_id: i32, kinds: impl IntoIterator<Item = ActionKind>) -> OrchestratorResult {
    OrchestratorResult {
        actions: (first_id..)
            .zip(kinds)
            .map(|(id, kind)| OrchestratorAction {
                id,
                kind,
                trace: None,
            })
            .collect(),
        custom_status: None,
        cancelled_timers: Vec::new(),
    }
}

fn task(name: &str) -> ActionKind {
    ActionKind::ScheduleTask {
        name: name.into(),
        version: None,
        input: Some("1".into()),
        tags: Default::default(),
    }
}

fn finish(status: OrchestrationStatus) -> ActionKind {
    ActionKind::CompleteOrchestration {
        status,
        result: Some("1".into()),
        failure: None,
        new_version: None,
        carryover_events: Vec::new(),
    }
}

fn done(text: &str) -> crate::failure::TaskOutcome {
    Ok(Some(format!("\"{text}\"")))
}

fn kinds(events: &[HistoryEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.type_name()).collect()
}

fn count(events: &[HistoryEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.kind.type_name() == kind).count()
}

/// `(task_scheduled_id, result)` of each `TaskCompleted`.
fn completions(events: &[HistoryEvent]) -> Vec<(i32, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskCompleted {
                task_scheduled_id,
                result,
            } => Some((*task_scheduled_id, result.clone())),
            _ => None,
        })
        .collect()
}

async fn history(backend: &Arc<dyn Backend>, id: &str) -> Vec<HistoryEvent> {
    ok(
        &format!("reading the history of {id}"),
        backend.get_history(id).await,
    )
}

/// The next episode carries exactly one activity result: task 0's, `text`.
async fn expect_result(backend: &Arc<dyn Backend>, text: &str, why: &str) {
    let next = episode(backend, "the episode with the activity's result").await;
    assert_eq!(
        completions(&next.new_events),
        [(0, Some(format!("\"{text}\"")))],
        "{why}"
    );
}

/// `id`'s history holds one `TaskScheduled`: its first episode's result
/// (one activity) was applied once.
async fn applied_once(backend: &Arc<dyn Backend>, id: &str) {
    assert_eq!(
        count(&history(backend, id).await, "TaskScheduled"),
        1,
        "the episode was applied more than once"
    );
}

/// `take` run by another caller (a task of its own, as a second worker).
async fn from_another_caller<I, T, TF>(backend: &Arc<dyn Backend>, what: &str, take: T) -> I
where
    I: Send + 'static,
    T: FnOnce(Arc<dyn Backend>) -> TF,
    TF: Future<Output = Result<I, BackendError>> + Send + 'static,
{
    let taken = within(what, tokio::spawn(take(backend.clone())))
        .await
        .unwrap_or_else(|e| panic!("the other caller panicked: {e}"));
    ok(what, taken)
}

/// Creates `id` and completes its first episode with one activity
/// ("work", sequence number 0).
async fn start_with_activity(backend: &Arc<dyn Backend>, id: &str) {
    create(backend, id, None).await;
    let first = episode(backend, "the first episode").await;
    ok(
        "completing the first episode",
        backend
            .complete_orchestration_item(first, result(0, [task("work")]))
            .await,
    );
}

/// Runs `CALLERS` concurrent callers of `take`, each taking
/// `ITEMS_PER_CALLER` items and holding them (nothing is completed), so a
/// backend that hands an item out twice leaves another one untaken.
/// Returns each caller's items.
async fn compete<I, T, TF>(backend: &Arc<dyn Backend>, take: T) -> Vec<Vec<I>>
where
    I: Send + 'static,
    T: Fn(Arc<dyn Backend>) -> TF + Clone + Send + 'static,
    TF: Future<Output = Result<I, BackendError>> + Send,
{
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (backend, take) = (backend.clone(), take.clone());
            tokio::spawn(async move {
                let mut items = Vec::new();
                for _ in 0..ITEMS_PER_CALLER {
                    items.push(ok("taking a work item", take(backend.clone()).await));
                }
                items
            })
        })
        .collect();
    let all = within(
        &format!("{CALLERS} competing callers taking {COMPETED} work items"),
        futures::future::join_all(callers),
    )
    .await;
    all.into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a competing caller panicked: {e}")))
        .collect()
}

/// Each caller completes the items it holds with `complete`, all callers
/// at once; every completion must succeed.
async fn complete_all<I, C, CF>(held: Vec<Vec<I>>, complete: C)
where
    I: Send + 'static,
    C: Fn(I) -> CF + Clone + Send + 'static,
    CF: Future<Output = Result<(), BackendError>> + Send,
{
    let callers = held.into_iter().map(|items| {
        let complete = complete.clone();
        tokio::spawn(async move {
            for item in items {
                ok("completing a competed work item", complete(item).await);
            }
        })
    });
    for done in within(
        "completing the competed work items",
        futures::future::join_all(callers),
    )
    .await
    {
        done.unwrap_or_else(|e| panic!("a competing caller panicked: {e}"));
    }
}

/// Asserts that exactly one of two racing calls succeeded and the other
/// lost the lease.
#[track_caller]
fn one_wins(what: &str, a: Result<(), BackendError>, b: Result<(), BackendError>) {
    match (a, b) {
        (Ok(()), lost) | (lost, Ok(())) => lease_lost(&format!("the loser of {what}"), lost),
        (a, b) => panic!("{what}: neither call succeeded: {a:?}, {b:?}"),
    }
}

cases! { ($) __conformance_delivery_rules, delivery;
    /// Needs `stale_tokens`. An orchestration work item's token is stale
    /// once the item was abandoned and delivered again, or completed:
    /// completing (or abandoning) with it is rejected with
    /// [`BackendError::LeaseLost`] and changes nothing, so an episode is
    /// applied exactly once.
    async fn stale_orchestration_token_is_rejected(backend) needs(stale_tokens) {
        create(&backend, "stale", None).await;
        let first = episode(&backend, "the first delivery").await;
        ok("abandoning", backend.abandon_orchestration_item(first.clone()).await);
        let second = episode(&backend, "the delivery after the abandon").await;
        lease_lost(
            "completing with the token of an abandoned delivery",
            backend
                .complete_orchestration_item(first.clone(), result(0, [task("work")]))
                .await,
        );
        assert_eq!(
            kinds(&history(&backend, "stale").await),
            Vec::<&str>::new(),
            "a rejected completion changed the history"
        );
        lease_lost(
            "abandoning with the token of an abandoned delivery",
            backend.abandon_orchestration_item(first).await,
        );
        ok(
            "completing with the current token",
            backend
                .complete_orchestration_item(second.clone(), result(0, [task("work")]))
                .await,
        );
        lease_lost(
            "completing an episode a second time",
            backend
                .complete_orchestration_item(second, result(0, [task("work")]))
                .await,
        );
        applied_once(&backend, "stale").await;
    }

    /// Needs `stale_tokens`. An activity work item's token is stale once the
    /// item was abandoned and delivered again, or completed: completing (or
    /// abandoning) with it is rejected with [`BackendError::LeaseLost`], and
    /// the orchestration gets exactly one result.
    async fn stale_activity_token_is_rejected(backend) needs(stale_tokens) {
        start_with_activity(&backend, "stale").await;
        let first = activity(&backend, "the activity").await;
        ok("abandoning the activity", backend.abandon_activity_item(&first).await);
        let second = activity(&backend, "the activity after the abandon").await;
        lease_lost(
            "completing an activity with the token of an abandoned delivery",
            backend.complete_activity_item(&first, done("stale")).await,
        );
        lease_lost(
            "abandoning an activity with the token of an abandoned delivery",
            backend.abandon_activity_item(&first).await,
        );
        ok(
            "completing the activity with the current token",
            backend.complete_activity_item(&second, done("current")).await,
        );
        lease_lost(
            "completing an activity a second time",
            backend.complete_activity_item(&second, done("again")).await,
        );
        let why = "the orchestration must get the current delivery's result, once";
        expect_result(&backend, "current", why).await;
    }

    /// An abandoned episode is delivered again, with the events that arrived
    /// while it was leased.
    async fn abandoned_orchestration_is_redelivered(backend) {
        create(&backend, "abandoned", None).await;
        let first = episode(&backend, "the first delivery").await;
        assert_eq!(first.instance_id, "abandoned");
        assert!(
            kinds(&first.new_events).contains(&"ExecutionStarted"),
            "{:?}",
            kinds(&first.new_events)
        );
        ok(
            "raising an event while the episode is leased",
            backend.raise_event("abandoned", "during", Some("1".into())).await,
        );
        ok("abandoning", backend.abandon_orchestration_item(first).await);
        let again = episode(&backend, "the abandoned episode's redelivery").await;
        assert_eq!(again.instance_id, "abandoned");
        let got = kinds(&again.new_events);
        assert!(
            got.contains(&"ExecutionStarted") && got.contains(&"EventRaised"),
            "the redelivery must carry the start and the event raised meanwhile: {got:?}"
        );
        ok(
            "completing the redelivered episode",
            backend
                .complete_orchestration_item(again, result(0, [task("work")]))
                .await,
        );
        let h = history(&backend, "abandoned").await;
        assert_eq!(
            (
                count(&h, "ExecutionStarted"),
                count(&h, "EventRaised"),
                count(&h, "TaskScheduled")
            ),
            (1, 1, 1),
            "{:?}",
            kinds(&h)
        );
    }

    /// An abandoned activity is delivered again, the same task, and its
    /// result reaches the orchestration.
    async fn abandoned_activity_is_redelivered(backend) {
        start_with_activity(&backend, "abandoned").await;
        let first = activity(&backend, "the activity").await;
        ok("abandoning the activity", backend.abandon_activity_item(&first).await);
        let again = activity(&backend, "the abandoned activity's redelivery").await;
        let task = |i: &ActivityWorkItem| {
            let ids = (i.instance_id.clone(), i.execution_id.clone(), i.task_id);
            (ids, i.name.clone(), i.input.clone())
        };
        assert_eq!(
            task(&again),
            task(&first),
            "another task was delivered instead of the abandoned one"
        );
        ok(
            "completing the redelivered activity",
            backend.complete_activity_item(&again, done("redelivered")).await,
        );
        let why = "the orchestration must get the redelivered activity's result, once";
        expect_result(&backend, "redelivered", why).await;
    }

    /// Results of the tasks of an execution that continued as new are
    /// dropped, whether they arrive while the restarting episode is leased
    /// or after the new execution started: the new execution's task 0 gets
    /// only its own result.
    async fn results_for_an_old_execution_are_dropped(backend) {
        create(&backend, "restarts", None).await;
        let first = episode(&backend, "the first episode").await;
        let old_execution = first.execution_id.clone();
        ok(
            "completing the first episode",
            backend
                .complete_orchestration_item(first, result(0, [task("old"), task("old")]))
                .await,
        );
        let during = activity(&backend, "the old execution's first activity").await;
        let after = activity(&backend, "the old execution's second activity").await;
        ok(
            "raising the event that makes it continue as new",
            backend.raise_event("restarts", "restart", None).await,
        );
        let restarting = episode(&backend, "the episode of the event").await;
        ok(
            "completing an old activity while the restarting episode is leased",
            backend.complete_activity_item(&during, done("old")).await,
        );
        ok(
            "continuing as new",
            backend
                .complete_orchestration_item(
                    restarting,
                    result(2, [finish(OrchestrationStatus::ContinuedAsNew)]),
                )
                .await,
        );
        let fresh = episode(&backend, "the new execution's first episode").await;
        assert_ne!(fresh.execution_id, old_execution, "continue-as-new kept the execution id");
        assert_eq!(
            kinds(&fresh.new_events),
            ["OrchestratorStarted", "ExecutionStarted"],
            "the new execution got the old execution's result"
        );
        // The old execution's other activity finishes now; the backend may
        // accept the result (and drop it) or reject it.
        match backend.complete_activity_item(&after, done("old")).await {
            Ok(()) | Err(BackendError::LeaseLost(_)) => {}
            Err(e) => panic!("completing an activity of an old execution failed: {e}"),
        }
        ok(
            "completing the new execution's first episode",
            backend
                .complete_orchestration_item(fresh, result(0, [task("new")]))
                .await,
        );
        let new_task = activity(&backend, "the new execution's activity").await;
        assert_eq!(
            (new_task.name.as_str(), new_task.task_id),
            ("new", 0),
            "an old execution's activity was delivered after the restart"
        );
        ok(
            "completing the new execution's activity",
            backend.complete_activity_item(&new_task, done("new")).await,
        );
        expect_result(&backend, "new", "a result of the old execution reached the new one").await;
    }

    /// A timer of an execution that continued as new never fires in the new
    /// execution, even where the new execution has a timer of the same
    /// sequence number.
    async fn timers_of_an_old_execution_are_dropped(backend) {
        create(&backend, "restarts", None).await;
        let first = episode(&backend, "the first episode").await;
        let old_fire_at = chrono::Utc::now() + chrono::Duration::milliseconds(150);
        ok(
            "completing the first episode with a timer",
            backend
                .complete_orchestration_item(
                    first,
                    result(0, [ActionKind::CreateTimer { fire_at: old_fire_at }]),
                )
                .await,
        );
        ok(
            "raising the event that makes it continue as new",
            backend.raise_event("restarts", "restart", None).await,
        );
        // If the old timer is already due, this episode may carry it; it
        // belongs to the old execution, which is what ends here.
        let restarting = episode(&backend, "the episode of the event").await;
        ok(
            "continuing as new",
            backend
                .complete_orchestration_item(
                    restarting,
                    result(1, [finish(OrchestrationStatus::ContinuedAsNew)]),
                )
                .await,
        );
        let fresh = episode(&backend, "the new execution's first episode").await;
        let new_fire_at = old_fire_at + chrono::Duration::milliseconds(300);
        ok(
            "completing the new execution's first episode with a timer",
            backend
                .complete_orchestration_item(
                    fresh,
                    result(0, [ActionKind::CreateTimer { fire_at: new_fire_at }]),
                )
                .await,
        );
        let fired = episode(&backend, "the new execution's timer").await;
        let timers: Vec<(i32, i64)> = fired
            .new_events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::TimerFired { timer_id, fire_at } => {
                    Some((timer_id, fire_at.timestamp_micros()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            timers,
            [(0, new_fire_at.timestamp_micros())],
            "the new execution's first timer episode must carry its own timer only \
             (the old one was due at {})",
            old_fire_at.timestamp_micros()
        );
    }

    /// Needs `delayed_start`. An event raised on an instance created with a
    /// start time waits for it: the instance stays pending, and its first
    /// episode, handed out no earlier than the start time, carries both the
    /// start and the event.
    async fn events_wait_for_a_delayed_start(backend) needs(delayed_start) {
        let start = chrono::Utc::now() + chrono::Duration::milliseconds(300);
        create(&backend, "delayed", Some(start)).await;
        ok(
            "raising an event before the start time",
            backend.raise_event("delayed", "early", Some("1".into())).await,
        );
        let meta = ok("reading the instance", backend.get_instance("delayed", false).await)
            .expect("the instance exists");
        assert_eq!(meta.status, OrchestrationStatus::Pending);
        let item = episode(&backend, "the first episode").await;
        assert!(
            chrono::Utc::now() >= start,
            "an episode was handed out before the instance's start time"
        );
        assert!(
            item.new_events[0].timestamp >= start,
            "the first episode's OrchestratorStarted ({}) is before the start time ({start})",
            item.new_events[0].timestamp
        );
        let got = kinds(&item.new_events);
        assert!(
            got.contains(&"ExecutionStarted") && got.contains(&"EventRaised"),
            "the first episode must carry the start and the early event: {got:?}"
        );
    }

    /// Needs `lease_expiry` and `stale_tokens`; runs on the `short_leases`
    /// backend. An episode whose lease expires is delivered to another
    /// caller, and the first holder can no longer complete it.
    async fn expired_orchestration_lease_is_redelivered(backend)
        needs(lease_expiry, stale_tokens)
    {
        create(&backend, "expires", None).await;
        let first = episode(&backend, "the first delivery").await;
        let again = from_another_caller(
            &backend,
            "the redelivery of an episode whose lease expired",
            |b| async move { b.next_orchestration_item().await },
        )
        .await;
        assert_eq!(again.instance_id, "expires");
        lease_lost(
            "completing with an expired lease",
            backend
                .complete_orchestration_item(first, result(0, [task("work")]))
                .await,
        );
        ok(
            "completing the redelivered episode",
            backend
                .complete_orchestration_item(again, result(0, [task("work")]))
                .await,
        );
        applied_once(&backend, "expires").await;
    }

    /// Needs `lease_expiry` and `stale_tokens`; runs on the `short_leases`
    /// backend. The backend asks workers to renew running activities'
    /// leases; an activity whose lease expired is delivered to another
    /// caller, and the first holder can neither renew nor complete it.
    async fn expired_activity_lease_is_redelivered(backend)
        needs(lease_expiry, stale_tokens)
    {
        assert!(
            backend.activity_lease_renewal().is_some(),
            "leases expire, so Backend::activity_lease_renewal must ask workers to renew \
             the lease of a running activity (or a long activity runs twice)"
        );
        start_with_activity(&backend, "expires").await;
        let first = activity(&backend, "the activity").await;
        let again = from_another_caller(
            &backend,
            "the redelivery of an activity whose lease expired",
            |b| async move { b.next_activity_item().await },
        )
        .await;
        assert_eq!(
            (&again.instance_id, again.task_id),
            (&first.instance_id, first.task_id)
        );
        lease_lost(
            "renewing an expired lease",
            backend.renew_activity_item(&first).await,
        );
        lease_lost(
            "completing an activity with an expired lease",
            backend.complete_activity_item(&first, done("expired")).await,
        );
        ok(
            "completing the redelivered activity",
            backend.complete_activity_item(&again, done("redelivered")).await,
        );
        let why = "the orchestration must get the redelivered activity's result, once";
        expect_result(&backend, "redelivered", why).await;
    }

    /// Competing callers of `next_orchestration_item` never get the same
    /// episode: while they hold the episodes of all instances, each
    /// instance's went to exactly one of them, and the next episode handed
    /// out is new work, not a second copy of a held one.
    async fn competing_callers_never_share_an_episode(backend) {
        let ids: BTreeSet<String> = (0..COMPETED).map(|i| format!("c-{i:02}")).collect();
        for id in &ids {
            create(&backend, id, None).await;
        }
        let held = compete(&backend, |b: Arc<dyn Backend>| async move {
            b.next_orchestration_item().await
        })
        .await;
        let mut taken: Vec<&str> =
            held.iter().flatten().map(|i| i.instance_id.as_str()).collect();
        taken.sort_unstable();
        let distinct: BTreeSet<&str> = taken.iter().copied().collect();
        assert_eq!(distinct.len(), COMPETED, "an episode went to two callers: {taken:?}");
        assert_eq!(distinct, ids.iter().map(String::as_str).collect::<BTreeSet<_>>());
        create(&backend, "sentinel", None).await;
        let next = episode(&backend, "the episode of an instance created after the others")
            .await;
        assert_eq!(
            next.instance_id, "sentinel",
            "an episode held by a caller was handed out again"
        );
        let b = backend.clone();
        complete_all(held, move |item: OrchestrationWorkItem| {
            let b = b.clone();
            async move {
                let end = result(0, [finish(OrchestrationStatus::Completed)]);
                b.complete_orchestration_item(item, end).await
            }
        })
        .await;
    }

    /// Competing callers of `next_activity_item` never get the same
    /// activity: while they hold all of an orchestration's activities, each
    /// task went to exactly one of them, the next activity handed out is new
    /// work, and the orchestration gets one result per task.
    async fn competing_callers_never_share_an_activity(backend) {
        create(&backend, "fan", None).await;
        let first = episode(&backend, "the first episode").await;
        ok(
            "completing the fan-out episode",
            backend
                .complete_orchestration_item(
                    first,
                    result(0, (0..COMPETED).map(|_| task("work"))),
                )
                .await,
        );
        let held = compete(&backend, |b: Arc<dyn Backend>| async move {
            b.next_activity_item().await
        })
        .await;
        let mut taken: Vec<(&str, i32)> = held
            .iter()
            .flatten()
            .map(|i| (i.instance_id.as_str(), i.task_id))
            .collect();
        taken.sort_unstable();
        let expected: Vec<(&str, i32)> = (0..COMPETED as i32).map(|t| ("fan", t)).collect();
        assert_eq!(
            taken, expected,
            "an activity went to two callers, or an unknown one was delivered"
        );
        start_with_activity(&backend, "sentinel").await;
        let next = activity(&backend, "the activity of an instance created after the others")
            .await;
        assert_eq!(
            next.instance_id, "sentinel",
            "an activity held by a caller was handed out again"
        );
        let b = backend.clone();
        complete_all(held, move |item: ActivityWorkItem| {
            let b = b.clone();
            async move { b.complete_activity_item(&item, done("x")).await }
        })
        .await;
        let mut results = Vec::new();
        while results.len() < COMPETED {
            let next = episode(&backend, "the episodes with the activities' results").await;
            assert_eq!(next.instance_id, "fan", "only the fan-out has results to deliver");
            results.extend(completions(&next.new_events).into_iter().map(|(id, _)| id));
            ok(
                "completing a results episode",
                backend
                    .complete_orchestration_item(next, result(COMPETED as i32, []))
                    .await,
            );
        }
        results.sort_unstable();
        assert_eq!(
            results,
            (0..COMPETED as i32).collect::<Vec<_>>(),
            "the orchestration must get one result per task"
        );
    }

    /// Needs `stale_tokens`. Two callers racing to complete the same
    /// episode, or the same activity: exactly one succeeds, the other gets
    /// [`BackendError::LeaseLost`], and the work is applied once.
    async fn competing_completions_apply_once(backend) needs(stale_tokens) {
        create(&backend, "race", None).await;
        let item = episode(&backend, "the first episode").await;
        let race = |item: OrchestrationWorkItem| {
            let b = backend.clone();
            tokio::spawn(async move {
                b.complete_orchestration_item(item, result(0, [task("work")])).await
            })
        };
        let (a, b) = (race(item.clone()), race(item));
        let (a, b) = within("two racing completions", async { (a.await, b.await) }).await;
        let join = |r: Result<_, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| panic!("a racing caller panicked: {e}"))
        };
        one_wins("two completions of one episode", join(a), join(b));
        applied_once(&backend, "race").await;
        let work = activity(&backend, "the activity").await;
        let race = |text: &'static str| {
            let (b, work) = (backend.clone(), work.clone());
            tokio::spawn(async move { b.complete_activity_item(&work, done(text)).await })
        };
        let (a, b) = (race("a"), race("b"));
        let both = async { (a.await, b.await) };
        let (a, b) = within("two racing activity completions", both).await;
        one_wins("two completions of one activity", join(a), join(b));
        let next = episode(&backend, "the episode with the activity's result").await;
        let got = completions(&next.new_events);
        assert_eq!(got.len(), 1, "the activity's result arrived more than once: {got:?}");
    }

    /// Needs `task_tags`. A task's tags (a retried call's attempt number)
    /// are recorded on its `TaskScheduled` and reach its work item, also
    /// when it is delivered again after being abandoned, so the attempt and
    /// idempotency key an activity sees do not change on redelivery.
    async fn task_tags_survive_redelivery(backend) needs(task_tags) {
        create(&backend, "tagged", None).await;
        let first = episode(&backend, "the first episode").await;
        let tags: BTreeMap<String, String> = [
            (task_tags::ATTEMPT.to_string(), "2".to_string()),
            (task_tags::FIRST_TASK_ID.to_string(), "0".to_string()),
        ]
        .into();
        let tagged = ActionKind::ScheduleTask {
            name: "work".into(),
            version: None,
            input: None,
            tags: tags.clone(),
        };
        ok(
            "completing the first episode",
            backend
                .complete_orchestration_item(first, result(1, [tagged]))
                .await,
        );
        let recorded: Vec<_> = history(&backend, "tagged")
            .await
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::TaskScheduled { tags, .. } => Some(tags),
                _ => None,
            })
            .collect();
        assert_eq!(recorded, vec![tags.clone()], "the history's TaskScheduled lost its tags");
        let item = activity(&backend, "the tagged activity").await;
        assert_eq!(item.tags, tags, "the work item lost the task's tags");
        assert_eq!(item.attempt(), (2, 0));
        ok("abandoning the activity", backend.abandon_activity_item(&item).await);
        let again = activity(&backend, "the abandoned activity's redelivery").await;
        assert_eq!(again.tags, tags, "the redelivered work item lost the task's tags");
    }
}
