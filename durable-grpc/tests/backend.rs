//! The backend, driven by hand, against the Python `durabletask` package's
//! in-memory sidecar: every client call, and work items completed without a
//! worker so each protocol step is visible.

use durable_grpc::testing::{eventually, PeerServer};
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{
    Backend, BackendError, CreateInstanceRequest, IdReusePolicy, InstanceQuery, PurgeTarget,
    WaitFor,
};
use durable_runtime::history::{EventKind, FailureDetails, OrchestrationStatus};
use std::time::Duration;

const STEP: Duration = Duration::from_secs(20);

fn create(id: &str, name: &str, input: Option<&str>) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.to_string(),
        name: name.to_string(),
        version: None,
        input: input.map(str::to_string),
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

fn complete(id: i32, status: OrchestrationStatus, result: Option<&str>) -> OrchestratorAction {
    OrchestratorAction {
        id,
        kind: ActionKind::CompleteOrchestration {
            status,
            result: result.map(str::to_string),
            failure: None,
            new_version: None,
            carryover_events: vec![],
        },
        trace: None,
    }
}

async fn next_orchestration(b: &GrpcBackend) -> durable_runtime::backend::OrchestrationWorkItem {
    tokio::time::timeout(STEP, b.next_orchestration_item())
        .await
        .expect("no orchestration work item arrived in time")
        .expect("fetching an orchestration work item")
}

async fn next_activity(b: &GrpcBackend) -> durable_runtime::backend::ActivityWorkItem {
    tokio::time::timeout(STEP, b.next_activity_item())
        .await
        .expect("no activity work item arrived in time")
        .expect("fetching an activity work item")
}

fn backend(server: &PeerServer) -> GrpcBackend {
    GrpcBackend::new(GrpcOptions::new(server.endpoint())).expect("valid options")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestration_driven_by_hand_goes_through_every_protocol_step() {
    let server = PeerServer::start();
    let b = GrpcBackend::connect(GrpcOptions::new(server.endpoint()))
        .await
        .expect("the peer answers hello");

    b.create_instance(create("hand-1", "greet", Some(r#""world""#)))
        .await
        .unwrap();
    let m = b.get_instance("hand-1", true).await.unwrap().unwrap();
    assert_eq!(m.status, OrchestrationStatus::Pending);
    assert_eq!(m.name, "greet");
    assert_eq!(m.input.as_deref(), Some(r#""world""#));

    // Episode 1: the sidecar starts the batch with OrchestratorStarted.
    let item = next_orchestration(&b).await;
    assert_eq!(item.instance_id, "hand-1");
    assert!(item.past_events.is_empty());
    let kinds: Vec<_> = item.new_events.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(kinds, ["OrchestratorStarted", "ExecutionStarted"]);
    match &item.new_events[1].kind {
        EventKind::ExecutionStarted {
            name,
            input,
            instance_id,
            ..
        } => {
            assert_eq!(name, "greet");
            assert_eq!(input.as_deref(), Some(r#""world""#));
            assert_eq!(instance_id, "hand-1");
        }
        other => panic!("expected ExecutionStarted, got {other:?}"),
    }
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "say_hello".into(),
                    version: None,
                    input: Some(r#""world""#.into()),
                    tags: Default::default(),
                },
                trace: None,
            }],
            custom_status: Some(r#""scheduled""#.into()),
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();

    let m = b.get_instance("hand-1", true).await.unwrap().unwrap();
    assert_eq!(m.status, OrchestrationStatus::Running);
    assert_eq!(m.custom_status.as_deref(), Some(r#""scheduled""#));

    // The activity, then its result back to the orchestration.
    let act = next_activity(&b).await;
    assert_eq!(act.name, "say_hello");
    assert_eq!(act.instance_id, "hand-1");
    assert_eq!(act.task_id, 0);
    assert_eq!(act.input.as_deref(), Some(r#""world""#));
    b.complete_activity_item(&act, Ok(Some(r#""Hello, world!""#.into())))
        .await
        .unwrap();

    let item = next_orchestration(&b).await;
    let past: Vec<_> = item
        .past_events
        .iter()
        .map(|e| e.kind.type_name())
        .collect();
    assert_eq!(
        past,
        [
            "OrchestratorStarted",
            "ExecutionStarted",
            "TaskScheduled",
            "OrchestratorCompleted"
        ]
    );
    let new: Vec<_> = item.new_events.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(new, ["OrchestratorStarted", "TaskCompleted"]);
    assert_eq!(
        item.new_events[1].kind,
        EventKind::TaskCompleted {
            task_scheduled_id: 0,
            result: Some(r#""Hello, world!""#.into())
        }
    );
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![complete(
                1,
                OrchestrationStatus::Completed,
                Some(r#""Hello, world!""#),
            )],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();

    let done = b
        .wait_for_instance("hand-1", WaitFor::Completion, STEP)
        .await
        .unwrap();
    assert_eq!(done.status, OrchestrationStatus::Completed);
    assert_eq!(done.output.as_deref(), Some(r#""Hello, world!""#));
    // Each episode states the custom status anew; this one set none.
    assert_eq!(done.custom_status, None);
    assert!(done.completed_at.is_some());

    let history = b.get_history("hand-1").await.unwrap();
    let kinds: Vec<_> = history.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(kinds.first(), Some(&"OrchestratorStarted"));
    assert_eq!(kinds.last(), Some(&"ExecutionCompleted"));
    assert!(kinds.contains(&"TaskScheduled") && kinds.contains(&"TaskCompleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_terminate_suspend_and_resume_reach_the_orchestration() {
    let server = PeerServer::start();
    let b = backend(&server);

    b.create_instance(create("ev-1", "waiter", None))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    match &item.new_events[1].kind {
        EventKind::ExecutionStarted { input, .. } => assert_eq!(*input, None),
        other => panic!("expected ExecutionStarted, got {other:?}"),
    }
    b.complete_orchestration_item(item, OrchestratorResult::default())
        .await
        .unwrap();

    b.raise_event("ev-1", "approval", Some(r#"{"ok":true}"#.into()))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    assert_eq!(
        item.new_events.last().unwrap().kind,
        EventKind::EventRaised {
            name: "approval".into(),
            input: Some(r#"{"ok":true}"#.into())
        }
    );
    b.complete_orchestration_item(item, OrchestratorResult::default())
        .await
        .unwrap();

    b.suspend("ev-1", Some(r#""maintenance""#.into()))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    assert_eq!(
        item.new_events.last().unwrap().kind,
        EventKind::ExecutionSuspended {
            input: Some(r#""maintenance""#.into())
        }
    );
    b.complete_orchestration_item(item, OrchestratorResult::default())
        .await
        .unwrap();
    eventually(STEP, "the instance to be suspended", || async {
        let m = b.get_instance("ev-1", false).await.unwrap().unwrap();
        (m.status == OrchestrationStatus::Suspended).then_some(())
    })
    .await;
    // Suspending twice is not an error.
    b.suspend("ev-1", None).await.unwrap();

    b.resume("ev-1", None).await.unwrap();
    let item = next_orchestration(&b).await;
    assert_eq!(
        item.new_events.last().unwrap().kind,
        EventKind::ExecutionResumed { input: None }
    );
    b.complete_orchestration_item(item, OrchestratorResult::default())
        .await
        .unwrap();

    b.terminate("ev-1", Some(r#""enough""#.into()), false)
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    assert_eq!(
        item.new_events.last().unwrap().kind,
        EventKind::ExecutionTerminated {
            input: Some(r#""enough""#.into()),
            recurse: false
        }
    );
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![complete(
                0,
                OrchestrationStatus::Terminated,
                Some(r#""enough""#),
            )],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();
    let done = b
        .wait_for_instance("ev-1", WaitFor::Completion, STEP)
        .await
        .unwrap();
    assert_eq!(done.status, OrchestrationStatus::Terminated);
    assert_eq!(done.output.as_deref(), Some(r#""enough""#));

    // Terminating a finished instance does nothing; other operations say why they cannot.
    b.terminate("ev-1", None, false).await.unwrap();
    let e = b.raise_event("ev-1", "late", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::InvalidState {
                status: OrchestrationStatus::Terminated,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_travel_intact_both_ways() {
    let server = PeerServer::start();
    let b = backend(&server);
    b.create_instance(create("fail-1", "fragile", None))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "explode".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();
    let act = next_activity(&b).await;
    assert_eq!(act.input, None);
    let failure = FailureDetails {
        error_type: "std::io::Error".into(),
        message: "disk on fire".into(),
        stack_trace: Some("at explode()".into()),
        inner: Some(Box::new(FailureDetails::new("Cause", "smoke"))),
        non_retriable: true,
    };
    b.complete_activity_item(&act, Err(failure.clone()))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    assert_eq!(
        item.new_events.last().unwrap().kind,
        EventKind::TaskFailed {
            task_scheduled_id: 0,
            failure: failure.clone()
        }
    );
    let orchestration_failure = FailureDetails::new("TaskFailed", "activity \"explode\" failed")
        .with_inner(failure.clone());
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 1,
                kind: ActionKind::failed(orchestration_failure.clone()),
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();
    let done = b
        .wait_for_instance("fail-1", WaitFor::Completion, STEP)
        .await
        .unwrap();
    assert_eq!(done.status, OrchestrationStatus::Failed);
    assert_eq!(done.failure, Some(orchestration_failure));

    // A failure with an empty message must still read as a failure.
    b.create_instance(create("fail-2", "fragile", None))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "explode".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();
    let act = next_activity(&b).await;
    b.complete_activity_item(&act, Err(FailureDetails::new("Silent", "")))
        .await
        .unwrap();
    let item = next_orchestration(&b).await;
    match &item.new_events.last().unwrap().kind {
        EventKind::TaskFailed { failure, .. } => {
            assert_eq!(failure.error_type, "Silent");
            assert_eq!(failure.message, "Silent");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_missing_or_taken_are_reported_as_such() {
    let server = PeerServer::start();
    let b = backend(&server);

    assert_eq!(b.get_instance("nope", true).await.unwrap(), None);
    for (what, e) in [
        ("raise", b.raise_event("nope", "e", None).await.unwrap_err()),
        (
            "terminate",
            b.terminate("nope", None, false).await.unwrap_err(),
        ),
        ("suspend", b.suspend("nope", None).await.unwrap_err()),
        ("resume", b.resume("nope", None).await.unwrap_err()),
        ("history", b.get_history("nope").await.unwrap_err()),
        (
            "purge",
            b.purge(PurgeTarget::Instance("nope".into()), false)
                .await
                .unwrap_err(),
        ),
        (
            "wait",
            b.wait_for_instance("nope", WaitFor::Completion, STEP)
                .await
                .unwrap_err(),
        ),
    ] {
        assert!(
            matches!(&e, BackendError::NotFound(id) if id == "nope"),
            "{what}: {e}"
        );
    }

    b.create_instance(create("taken", "n", None)).await.unwrap();
    let e = b
        .create_instance(create("taken", "n", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BackendError::AlreadyExists { id, status: OrchestrationStatus::Pending } if id == "taken"),
        "{e}"
    );
    let mut never = create("taken", "n", None);
    never.reuse_policy = IdReusePolicy::never();
    assert!(matches!(
        b.create_instance(never).await.unwrap_err(),
        BackendError::AlreadyExists { .. }
    ));
    let e = b
        .purge(PurgeTarget::Instance("taken".into()), false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::InvalidState {
                operation: "purge",
                ..
            }
        ),
        "{e}"
    );

    // A wait that runs out says so.
    let e = b
        .wait_for_instance("taken", WaitFor::Completion, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BackendError::Timeout(_, ref id) if id == "taken"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_pages_and_purge_select_what_they_should() {
    let server = PeerServer::start();
    let b = backend(&server);
    for i in 0..5 {
        b.create_instance(create(&format!("q-{i}"), "listed", Some(&i.to_string())))
            .await
            .unwrap();
    }
    b.create_instance(create("other-1", "listed", None))
        .await
        .unwrap();

    // Finish q-0 and q-1 by hand.
    let mut finished = 0;
    while finished < 6 {
        let item = next_orchestration(&b).await;
        let result = if item.instance_id == "q-0" || item.instance_id == "q-1" {
            OrchestratorResult {
                actions: vec![complete(0, OrchestrationStatus::Completed, Some("1"))],
                custom_status: None,
                cancelled_timers: Vec::new(),
            }
        } else {
            OrchestratorResult::default()
        };
        b.complete_orchestration_item(item, result).await.unwrap();
        finished += 1;
    }
    for id in ["q-0", "q-1"] {
        b.wait_for_instance(id, WaitFor::Completion, STEP)
            .await
            .unwrap();
    }

    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = b
            .query_instances(InstanceQuery {
                instance_id_prefix: Some("q-".into()),
                page_size: 2,
                continuation_token: token.take(),
                fetch_payloads: true,
                ..InstanceQuery::default()
            })
            .await
            .unwrap();
        assert!(page.instances.len() <= 2);
        seen.extend(page.instances.into_iter().map(|m| (m.instance_id, m.input)));
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    seen.sort();
    let expected: Vec<_> = (0..5)
        .map(|i| (format!("q-{i}"), Some(i.to_string())))
        .collect();
    assert_eq!(seen, expected);

    let completed = b
        .query_instances(InstanceQuery {
            statuses: vec![OrchestrationStatus::Completed],
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = completed
        .instances
        .iter()
        .map(|m| m.instance_id.clone())
        .collect();
    ids.sort();
    assert_eq!(ids, ["q-0", "q-1"]);
    assert!(
        completed.instances.iter().all(|m| m.input.is_none()),
        "no payloads unless asked"
    );

    assert_eq!(
        b.purge(PurgeTarget::Instance("q-0".into()), false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(b.get_instance("q-0", false).await.unwrap(), None);
    let purged = b
        .purge(
            PurgeTarget::Filter {
                created_from: None,
                created_to: None,
                statuses: vec![],
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(purged, 1, "only the finished q-1 is left to purge");
    assert_eq!(b.get_instance("q-1", false).await.unwrap(), None);
    assert!(b.get_instance("q-2", false).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_episode_is_delivered_again() {
    let server = PeerServer::start();
    let b = backend(&server);
    b.create_instance(create("ab-1", "n", None)).await.unwrap();
    let item = next_orchestration(&b).await;
    let token = item.completion_token.clone();
    b.abandon_orchestration_item(item).await.unwrap();
    let again = next_orchestration(&b).await;
    assert_eq!(again.instance_id, "ab-1");
    assert_eq!(again.completion_token, token);
    let kinds: Vec<_> = again
        .new_events
        .iter()
        .map(|e| e.kind.type_name())
        .collect();
    assert_eq!(kinds, ["OrchestratorStarted", "ExecutionStarted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_without_a_limit_returns_when_the_instance_completes() {
    let server = PeerServer::start();
    let b = backend(&server);
    b.create_instance(create("forever", "n", None))
        .await
        .unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.wait_for_instance("forever", WaitFor::Completion, Duration::MAX)
                .await
        })
    };
    let item = next_orchestration(&b).await;
    b.complete_orchestration_item(
        item,
        OrchestratorResult {
            actions: vec![complete(0, OrchestrationStatus::Completed, Some("7"))],
            custom_status: None,
            cancelled_timers: Vec::new(),
        },
    )
    .await
    .unwrap();
    let done = tokio::time::timeout(STEP, waiter)
        .await
        .expect("the wait returned")
        .unwrap()
        .unwrap();
    assert_eq!(done.status, OrchestrationStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_right_after_a_resume_is_not_lost() {
    use durable_runtime::{Client, Registry, ScheduleOptions, Worker};
    use std::sync::Arc;

    let server = PeerServer::start();
    let b = Arc::new(backend(&server));
    let registry = Registry::new().orchestrator_fn("waits", |ctx, _x: i64| async move {
        let v: i64 = ctx.wait_for_external_event("go").await?;
        Ok(v)
    });
    let worker = Worker::new(b.clone(), registry).start().unwrap();
    let client = Client::new(b.clone());
    let id = client
        .schedule_by_name("waits", &1i64, ScheduleOptions::default())
        .await
        .unwrap();
    client.wait_for_start(&id, STEP).await.unwrap();

    b.suspend(&id, None).await.unwrap();
    let status = |b: Arc<GrpcBackend>, id: String| async move {
        b.get_instance(&id, false).await.unwrap().unwrap().status
    };
    assert_eq!(
        status(b.clone(), id.clone()).await,
        OrchestrationStatus::Suspended
    );
    b.resume(&id, None).await.unwrap();
    b.suspend(&id, None).await.unwrap();
    // Both calls reached the orchestration, in order.
    let kinds: Vec<_> = b
        .get_history(&id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.type_name())
        .filter(|k| k.starts_with("Execution") && *k != "ExecutionStarted")
        .collect();
    assert_eq!(
        kinds,
        [
            "ExecutionSuspended",
            "ExecutionResumed",
            "ExecutionSuspended"
        ]
    );
    assert_eq!(
        status(b.clone(), id.clone()).await,
        OrchestrationStatus::Suspended
    );

    b.terminate(&id, None, false).await.unwrap();
    client.wait_for_completion(&id, STEP).await.unwrap();
    worker.shutdown().await;
}
