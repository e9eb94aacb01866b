//! Bad input on the wire to durable's server (`durable_grpc::server`): each
//! gets the right gRPC status and a message naming the problem, nothing
//! stored changes, and the server keeps serving everyone else. Also: work a
//! worker holds is given back when its stream closes and when the server
//! shuts down.

use durable_grpc::server::{ServerOptions, SidecarServer};
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::backend::{Backend, MemoryBackend};
use durable_runtime::{ActivityError, Client, OrchestrationStatus, Registry, ScheduleOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
mod proto {
    tonic::include_proto!("_");
}

use proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient as RawClient;

/// The longest any step may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A server on a fresh loopback port in front of `backend`; it stops when
/// the returned sender is used (or dropped), and the handle ends then.
async fn start(
    backend: Arc<dyn Backend>,
    options: ServerOptions,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = SidecarServer::with_options(backend, options);
    let handle = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("the server serves until it is stopped");
    });
    (endpoint, stop, handle)
}

async fn raw(endpoint: &str) -> RawClient<Channel> {
    RawClient::connect(endpoint.to_string())
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoint}: {e}"))
}

fn start_request(id: &str, input: Option<&str>) -> proto::CreateInstanceRequest {
    proto::CreateInstanceRequest {
        instance_id: id.into(),
        name: "o".into(),
        input: input.map(str::to_string),
        ..Default::default()
    }
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code) -> String {
    match r {
        Err(s) if s.code() == code => s.message().to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The next work item on a stream, within [`WAIT`].
async fn next_item(stream: &mut tonic::Streaming<proto::WorkItem>) -> proto::WorkItem {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a work item within the wait")
        .expect("an open stream")
        .expect("a work item, not the end of the stream")
}

async fn work_stream(client: &mut RawClient<Channel>) -> tonic::Streaming<proto::WorkItem> {
    client
        .get_work_items(proto::GetWorkItemsRequest::default())
        .await
        .expect("a work-item stream")
        .into_inner()
}

fn completes(token: &str, id: &str, result: &str) -> proto::OrchestratorResponse {
    proto::OrchestratorResponse {
        instance_id: id.into(),
        actions: vec![proto::OrchestratorAction {
            id: 0,
            orchestrator_action_type: Some(
                proto::orchestrator_action::OrchestratorActionType::CompleteOrchestration(
                    proto::CompleteOrchestrationAction {
                        orchestration_status: proto::OrchestrationStatus::Completed as i32,
                        result: Some(result.into()),
                        ..Default::default()
                    },
                ),
            ),
        }],
        custom_status: None,
        completion_token: token.into(),
        orchestration_trace_context: None,
    }
}

fn schedules_activity(token: &str, id: &str) -> proto::OrchestratorResponse {
    proto::OrchestratorResponse {
        instance_id: id.into(),
        actions: vec![proto::OrchestratorAction {
            id: 0,
            orchestrator_action_type: Some(
                proto::orchestrator_action::OrchestratorActionType::ScheduleTask(
                    proto::ScheduleTaskAction {
                        name: "a".into(),
                        input: Some("1".into()),
                        ..Default::default()
                    },
                ),
            ),
        }],
        custom_status: None,
        completion_token: token.into(),
        orchestration_trace_context: None,
    }
}

/// A durable worker and client on the same server still get their work done.
async fn others_still_served(endpoint: &str, options: GrpcOptions, id: &str) {
    let backend = Arc::new(GrpcBackend::new(options.clone()).unwrap());
    let _ = endpoint;
    let registry = Registry::new()
        .activity_fn("double", |_c, x: i64| async move {
            Ok::<_, ActivityError>(x * 2)
        })
        .orchestrator_fn("doubler", |ctx, x: i64| async move {
            let y: i64 = ctx.call_activity_by_name("double", &x).await?;
            Ok(y)
        });
    let worker = durable_runtime::Worker::new(backend.clone(), registry)
        .start()
        .unwrap();
    let client = Client::new(backend);
    client
        .schedule_by_name("doubler", &21, ScheduleOptions::with_id(id))
        .await
        .unwrap();
    let state = client.wait_for_completion(id, WAIT).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    assert_eq!(state.output::<i64>().unwrap(), 42);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_calls_are_refused_with_the_right_code_and_change_nothing() {
    let backend = Arc::new(MemoryBackend::new());
    let options = ServerOptions {
        max_message_size: 64 * 1024,
        ..ServerOptions::default()
    };
    let (endpoint, _stop, _server) = start(backend.clone(), options).await;
    let mut c = raw(&endpoint).await;

    // A payload that is not JSON.
    let m = refused(
        c.start_instance(start_request("bad-json", Some("{not json")))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        m.contains("orchestration \"o\"") && m.contains("not JSON"),
        "{m}"
    );
    assert!(backend
        .get_instance("bad-json", false)
        .await
        .unwrap()
        .is_none());

    // An empty orchestrator name.
    let mut nameless = start_request("nameless", None);
    nameless.name.clear();
    let m = refused(c.start_instance(nameless).await, Code::InvalidArgument);
    assert!(m.contains("orchestrator name"), "{m}");

    // Unknown instances.
    let r = c
        .get_instance(proto::GetInstanceRequest {
            instance_id: "nobody".into(),
            get_inputs_and_outputs: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.exists && r.orchestration_state.is_none());
    let m = refused(
        c.raise_event(proto::RaiseEventRequest {
            instance_id: "nobody".into(),
            name: "e".into(),
            input: None,
        })
        .await,
        Code::NotFound,
    );
    assert!(m.contains("\"nobody\""), "{m}");
    let m = refused(
        c.wait_for_instance_completion(proto::GetInstanceRequest {
            instance_id: "nobody".into(),
            get_inputs_and_outputs: false,
        })
        .await,
        Code::NotFound,
    );
    assert!(m.contains("\"nobody\""), "{m}");

    // A taken id.
    c.start_instance(start_request("taken", Some("1")))
        .await
        .unwrap();
    let m = refused(
        c.start_instance(start_request("taken", Some("2"))).await,
        Code::AlreadyExists,
    );
    assert!(m.contains("\"taken\""), "{m}");

    // A wait longer than the caller's deadline (no worker runs "taken").
    let mut wait = Request::new(proto::GetInstanceRequest {
        instance_id: "taken".into(),
        get_inputs_and_outputs: false,
    });
    wait.set_timeout(Duration::from_millis(300));
    let m = refused(
        c.wait_for_instance_completion(wait).await,
        Code::DeadlineExceeded,
    );
    assert!(m.contains("\"taken\""), "{m}");

    // An oversized request.
    let big = format!("\"{}\"", "x".repeat(100 * 1024));
    let m = refused(
        c.start_instance(start_request("big", Some(&big))).await,
        Code::ResourceExhausted,
    );
    assert!(m.contains("vs. 65536") && m.contains("smaller"), "{m}");
    assert!(backend.get_instance("big", false).await.unwrap().is_none());

    // A purge that names nothing, a rewind of an instance that did not
    // fail, and calls the server does not serve.
    let m = refused(
        c.purge_instances(proto::PurgeInstancesRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("neither an instance id nor a filter"), "{m}");
    let m = refused(
        c.rewind_instance(proto::RewindInstanceRequest {
            instance_id: "taken".into(),
            reason: None,
        })
        .await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("cannot rewind") && m.contains("Pending"), "{m}");
    // Entity calls name an entity id, and a client signal is not delayed.
    let m = refused(
        c.signal_entity(proto::SignalEntityRequest {
            instance_id: "not-an-entity".into(),
            name: "add".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        m.contains("not an entity id") && m.contains("@name@key"),
        "{m}"
    );
    let m = refused(
        c.signal_entity(proto::SignalEntityRequest {
            instance_id: "@counter@a".into(),
            name: "add".into(),
            scheduled_time: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
    );
    assert!(m.contains("delayed"), "{m}");

    // Another task hub.
    let mut other_hub = Request::new(());
    other_hub
        .metadata_mut()
        .insert("taskhub", "elsewhere".parse().unwrap());
    let m = refused(c.hello(other_hub).await, Code::PermissionDenied);
    assert!(
        m.contains("\"elsewhere\"") && m.contains("\"default\""),
        "{m}"
    );

    // "taken" is as it was.
    let m = backend.get_instance("taken", true).await.unwrap().unwrap();
    assert_eq!(m.input.as_deref(), Some("1"));
    assert_eq!(m.status, OrchestrationStatus::Pending);

    others_still_served(
        &endpoint,
        GrpcOptions::new(endpoint.clone()),
        "after-bad-calls",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_foreign_and_malformed_completions_are_refused_and_change_nothing() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend.clone(), ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    c.start_instance(start_request("i", None)).await.unwrap();
    let mut stream = work_stream(&mut c).await;
    let item = next_item(&mut stream).await;
    let token = item.completion_token.clone();
    assert!(matches!(
        item.request,
        Some(proto::work_item::Request::OrchestratorRequest(_))
    ));

    // A token the server never handed out.
    let m = refused(
        c.complete_orchestrator_task(completes("bogus", "i", "1"))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        m.contains("\"bogus\"") && m.contains("nothing was changed"),
        "{m}"
    );
    // The right token for another instance.
    let m = refused(
        c.complete_orchestrator_task(completes(&token, "j", "1"))
            .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("\"i\"") && m.contains("\"j\""), "{m}");
    // The right token of the wrong kind.
    let m = refused(
        c.complete_activity_task(proto::ActivityResponse {
            instance_id: "i".into(),
            task_id: 0,
            result: Some("1".into()),
            failure_details: None,
            completion_token: token.clone(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("an orchestration work item"), "{m}");
    // A result that is not JSON.
    let m = refused(
        c.complete_orchestrator_task(completes(&token, "i", "not json"))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        m.contains("output of instance \"i\"") && m.contains("not JSON"),
        "{m}"
    );
    let status = backend
        .get_instance("i", false)
        .await
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(status, OrchestrationStatus::Pending, "nothing was applied");

    // The item is still held: its completion is taken, once.
    c.complete_orchestrator_task(schedules_activity(&token, "i"))
        .await
        .expect("the first completion");
    let m = refused(
        c.complete_orchestrator_task(completes(&token, "i", "2"))
            .await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("completed or abandoned already"), "{m}");
    let m = backend.get_instance("i", false).await.unwrap().unwrap();
    assert_eq!(
        m.status,
        OrchestrationStatus::Running,
        "the stale completion changed nothing"
    );

    // The activity the episode scheduled, then the stream closes: it is
    // given back at once and comes on the next stream, under a new token.
    let activity = next_item(&mut stream).await;
    let Some(proto::work_item::Request::ActivityRequest(a)) = &activity.request else {
        panic!("an activity, got {activity:?}");
    };
    assert_eq!((a.name.as_str(), a.input.as_deref()), ("a", Some("1")));
    drop(stream);
    let mut stream = work_stream(&mut c).await;
    let again = next_item(&mut stream).await;
    assert!(matches!(
        again.request,
        Some(proto::work_item::Request::ActivityRequest(_))
    ));
    assert_ne!(again.completion_token, activity.completion_token);
    let old = proto::ActivityResponse {
        instance_id: "i".into(),
        task_id: 0,
        result: Some("5".into()),
        failure_details: None,
        completion_token: activity.completion_token.clone(),
    };
    refused(
        c.complete_activity_task(old).await,
        Code::FailedPrecondition,
    );
    let m = refused(
        c.complete_activity_task(proto::ActivityResponse {
            completion_token: again.completion_token.clone(),
            result: Some("{oops".into()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(
        m.contains("result of an activity") && m.contains("not JSON"),
        "{m}"
    );
    c.complete_activity_task(proto::ActivityResponse {
        instance_id: "i".into(),
        task_id: 0,
        result: Some("5".into()),
        failure_details: None,
        completion_token: again.completion_token.clone(),
    })
    .await
    .expect("the current token is taken");

    // The episode that receives the result, completed: the instance ends.
    let episode = next_item(&mut stream).await;
    c.complete_orchestrator_task(completes(&episode.completion_token, "i", "5"))
        .await
        .unwrap();
    let m = backend.get_instance("i", true).await.unwrap().unwrap();
    assert_eq!(m.status, OrchestrationStatus::Completed);
    assert_eq!(m.output.as_deref(), Some("5"));
    drop(stream);

    others_still_served(
        &endpoint,
        GrpcOptions::new(endpoint.clone()),
        "after-bad-tokens",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_call_needs_it() {
    let backend = Arc::new(MemoryBackend::new());
    let options = ServerOptions {
        token: Some("s3cret".into()),
        ..ServerOptions::default()
    };
    let (endpoint, _stop, _server) = start(backend, options).await;
    let mut c = raw(&endpoint).await;
    let m = refused(c.hello(Request::new(())).await, Code::Unauthenticated);
    assert!(m.contains("authorization: Bearer"), "{m}");
    let mut wrong = Request::new(start_request("i", None));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().unwrap());
    let m = refused(c.start_instance(wrong).await, Code::Unauthenticated);
    assert!(m.contains("not the one"), "{m}");
    let m = refused(
        c.get_work_items(proto::GetWorkItemsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    assert!(m.contains("GetWorkItems"), "{m}");

    // durable's own backend, with the token, is served.
    let options = GrpcOptions::new(endpoint.clone())
        .bearer_token(|| async { Ok::<_, std::io::Error>("s3cret".to_string()) });
    others_still_served(&endpoint, options, "with-token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_gives_held_work_back() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, stop, server) = start(backend.clone(), ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    c.start_instance(start_request("held", None)).await.unwrap();
    let mut stream = work_stream(&mut c).await;
    let item = next_item(&mut stream).await;
    assert!(matches!(
        item.request,
        Some(proto::work_item::Request::OrchestratorRequest(_))
    ));
    stop.send(()).unwrap();
    // The stream ends with UNAVAILABLE; the server then returns.
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream ends within the wait");
    match end {
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Ok(None) => {}
        Ok(Some(other)) => panic!("expected the end of the stream, got {other:?}"),
    }
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the server stops within the wait")
        .unwrap();
    // The episode is the backend's again.
    let again = tokio::time::timeout(WAIT, backend.next_orchestration_item())
        .await
        .expect("the held episode was given back")
        .unwrap();
    assert_eq!(again.instance_id, "held");
}

/// A stream asking only for the given orchestrator names (and no activities).
async fn filtered_stream(
    client: &mut RawClient<Channel>,
    names: &[&str],
) -> tonic::Streaming<proto::WorkItem> {
    let filters = proto::WorkItemFilters {
        orchestrations: names
            .iter()
            .map(|n| proto::OrchestrationFilter {
                name: n.to_string(),
                versions: vec![],
            })
            .collect(),
        activities: vec![],
        entities: vec![],
    };
    client
        .get_work_items(proto::GetWorkItemsRequest {
            work_item_filters: Some(filters),
            ..Default::default()
        })
        .await
        .expect("a work-item stream")
        .into_inner()
}

fn instance_of(item: &proto::WorkItem) -> &str {
    match &item.request {
        Some(proto::work_item::Request::OrchestratorRequest(r)) => &r.instance_id,
        other => panic!("an orchestration work item, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_item_filters_route_each_item_to_a_worker_that_serves_it() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend.clone(), ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    let start_named = |id: &str, name: &str| proto::CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut alpha = filtered_stream(&mut c, &["alpha"]).await;
    let mut beta = filtered_stream(&mut c, &["beta"]).await;
    // Whichever stream leases an episode, it reaches the one serving it.
    for round in 0..3 {
        c.start_instance(start_named(&format!("b{round}"), "beta"))
            .await
            .unwrap();
        c.start_instance(start_named(&format!("a{round}"), "alpha"))
            .await
            .unwrap();
        let a = next_item(&mut alpha).await;
        let b = next_item(&mut beta).await;
        assert_eq!(instance_of(&a), format!("a{round}"));
        assert_eq!(instance_of(&b), format!("b{round}"));
        c.complete_orchestrator_task(completes(&a.completion_token, "", "1"))
            .await
            .unwrap();
        c.complete_orchestrator_task(completes(&b.completion_token, "", "1"))
            .await
            .unwrap();
    }

    // Work no open stream serves waits for a stream that does.
    c.start_instance(start_named("g", "gamma")).await.unwrap();
    let mut gamma = filtered_stream(&mut c, &["gamma"]).await;
    let g = next_item(&mut gamma).await;
    assert_eq!(instance_of(&g), "g");
    drop(gamma);

    // "g" was given back with its stream; the streams left lease it again
    // and park it (neither serves it), and when the last of them closes it
    // goes back to the backend.
    drop(alpha);
    drop(beta);
    let again = tokio::time::timeout(WAIT, backend.next_orchestration_item())
        .await
        .expect("the unserved episode is the backend's again")
        .unwrap();
    assert_eq!(again.instance_id, "g");
}

fn no_actions(token: &str) -> proto::OrchestratorResponse {
    proto::OrchestratorResponse {
        instance_id: String::new(),
        actions: vec![],
        custom_status: None,
        completion_token: token.into(),
        orchestration_trace_context: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_over_the_size_limit_is_left_out_for_workers_that_stream_it() {
    let backend = Arc::new(MemoryBackend::new());
    let options = ServerOptions {
        max_message_size: 16 * 1024,
        ..ServerOptions::default()
    };
    let (endpoint, _stop, _server) = start(backend.clone(), options).await;
    let mut c = raw(&endpoint).await;
    let mut stream = c
        .get_work_items(proto::GetWorkItemsRequest {
            capabilities: vec![proto::WorkerCapability::HistoryStreaming as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.start_instance(start_request("h", None)).await.unwrap();
    let first = next_item(&mut stream).await;
    c.complete_orchestrator_task(no_actions(&first.completion_token))
        .await
        .unwrap();
    let data = format!("\"{}\"", "d".repeat(6 * 1024));
    let mut streamed = None;
    for n in 0..4 {
        c.raise_event(proto::RaiseEventRequest {
            instance_id: "h".into(),
            name: format!("e{n}"),
            input: Some(data.clone()),
        })
        .await
        .unwrap();
        let item = next_item(&mut stream).await;
        let Some(proto::work_item::Request::OrchestratorRequest(r)) = &item.request else {
            panic!("an episode, got {item:?}");
        };
        if r.requires_history_streaming {
            assert!(r.past_events.is_empty(), "the history is left out");
            streamed = Some(item);
            break;
        }
        assert!(!r.past_events.is_empty());
        c.complete_orchestrator_task(no_actions(&item.completion_token))
            .await
            .unwrap();
    }
    let item = streamed.expect("a work item over the limit leaves its history out");
    let mut chunks = c
        .stream_instance_history(proto::StreamInstanceHistoryRequest {
            instance_id: "h".into(),
            execution_id: None,
            for_work_item_processing: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = 0;
    let mut count = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        assert!(!chunk.events.is_empty());
        count += 1;
        events += chunk.events.len();
    }
    assert_eq!(events, backend.get_history("h").await.unwrap().len());
    assert!(count > 1, "chunks fit the limit: {count} chunk(s)");
    c.complete_orchestrator_task(completes(&item.completion_token, "h", "1"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durables_backend_runs_an_orchestration_whose_history_is_streamed() {
    let options = ServerOptions {
        max_message_size: 16 * 1024,
        ..ServerOptions::default()
    };
    let (endpoint, _stop, _server) = start(Arc::new(MemoryBackend::new()), options).await;
    // The client takes no message over 20 KiB either: the episodes with
    // the whole history (30 KiB) would never reach it.
    let backend = Arc::new(
        GrpcBackend::new(GrpcOptions::new(endpoint).max_incoming_message_size(20 * 1024)).unwrap(),
    );
    let registry = Registry::new().orchestrator_fn("collects", |ctx, n: usize| async move {
        let mut total = 0;
        for i in 0..n {
            let data: String = ctx.wait_for_external_event(&format!("e{i}")).await?;
            total += data.len();
        }
        Ok(total)
    });
    let worker = durable_runtime::Worker::new(backend.clone(), registry)
        .start()
        .unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("collects", &5usize, ScheduleOptions::with_id("big-history"))
        .await
        .unwrap();
    let data = "d".repeat(6 * 1024);
    for i in 0..5 {
        client
            .raise_event(&id, &format!("e{i}"), &data)
            .await
            .unwrap();
    }
    let state = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    assert_eq!(state.output::<usize>().unwrap(), 5 * 6 * 1024);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_list_instance_ids() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend.clone(), ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    let restart = |id: &str, new_id: bool| proto::RestartInstanceRequest {
        instance_id: id.into(),
        restart_with_new_instance_id: new_id,
    };
    let m = refused(
        c.restart_instance(restart("nobody", false)).await,
        Code::NotFound,
    );
    assert!(m.contains("\"nobody\""), "{m}");

    c.start_instance(start_request("r", Some("7")))
        .await
        .unwrap();
    let m = refused(
        c.restart_instance(restart("r", false)).await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("restart") && m.contains("\"r\""), "{m}");

    // Finished, it runs again with the same input, under its id or a new one.
    let mut stream = work_stream(&mut c).await;
    let item = next_item(&mut stream).await;
    c.complete_orchestrator_task(completes(&item.completion_token, "r", "1"))
        .await
        .unwrap();
    let same = c
        .restart_instance(restart("r", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.instance_id, "r");
    let m = backend.get_instance("r", true).await.unwrap().unwrap();
    assert_eq!(
        (m.status, m.input.as_deref()),
        (OrchestrationStatus::Pending, Some("7"))
    );
    let item = next_item(&mut stream).await;
    c.complete_orchestrator_task(completes(&item.completion_token, "r", "2"))
        .await
        .unwrap();
    let other = c
        .restart_instance(restart("r", true))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.instance_id, "r");
    let m = backend
        .get_instance(&other.instance_id, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.name.as_str(), m.input.as_deref()), ("o", Some("7")));
    drop(stream);

    // Ids by status, a page at a time.
    for id in ["p1", "p2", "p3"] {
        c.start_instance(start_request(id, None)).await.unwrap();
    }
    let mut ids = Vec::new();
    let mut key = None;
    loop {
        let page = c
            .list_instance_ids(proto::ListInstanceIdsRequest {
                runtime_status: vec![proto::OrchestrationStatus::Completed as i32],
                page_size: 1,
                last_instance_key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.instance_ids.len() <= 1, "{page:?}");
        ids.extend(page.instance_ids);
        match page.last_instance_key {
            Some(k) => key = Some(k),
            None => break,
        }
        assert!(ids.len() < 10, "paging ends: {ids:?}");
    }
    assert_eq!(ids, ["r"], "only the completed instance");
    let completed_long_ago = c
        .list_instance_ids(proto::ListInstanceIdsRequest {
            completed_time_to: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        completed_long_ago.instance_ids.is_empty(),
        "{completed_long_ago:?}"
    );
}

/// Starts `ids` and completes each through a work-item stream of `c`.
async fn start_and_complete(c: &mut RawClient<Channel>, ids: &[String]) {
    let mut stream = work_stream(c).await;
    for id in ids {
        c.start_instance(start_request(id, None)).await.unwrap();
        let item = next_item(&mut stream).await;
        c.complete_orchestrator_task(completes(&item.completion_token, id, "1"))
            .await
            .unwrap();
    }
}

/// The completion time of a finished instance, as `GetInstance` says.
async fn completed_at(c: &mut RawClient<Channel>, id: &str) -> prost_types::Timestamp {
    c.get_instance(proto::GetInstanceRequest {
        instance_id: id.into(),
        get_inputs_and_outputs: false,
    })
    .await
    .unwrap()
    .into_inner()
    .orchestration_state
    .and_then(|s| s.completed_timestamp)
    .unwrap_or_else(|| panic!("instance {id} has a completion time"))
}

fn nanos(t: &prost_types::Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_instance_ids_pages_finished_instances_by_completion_time() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend, ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    // 20 instances finish early, then (once the clock has moved on) 5 late.
    let early: Vec<String> = (0..20).map(|i| format!("a-{i:02}")).collect();
    let late: Vec<String> = (0..5).map(|i| format!("b-{i:02}")).collect();
    start_and_complete(&mut c, &early).await;
    let mut last_early = completed_at(&mut c, &early[0]).await;
    for id in &early {
        let t = completed_at(&mut c, id).await;
        if nanos(&t) > nanos(&last_early) {
            last_early = t;
        }
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = prost_types::Timestamp::from(std::time::SystemTime::now());
        if nanos(&now) > nanos(&last_early) + 2_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the clock passes the early completions"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start_and_complete(&mut c, &late).await;
    // Neither a pending nor a running instance is ever listed.
    c.start_instance(start_request("c-pending", None))
        .await
        .unwrap();
    let from = completed_at(&mut c, &late[0]).await;

    let list = |page_size: i32, key: Option<String>, from: Option<prost_types::Timestamp>| {
        proto::ListInstanceIdsRequest {
            page_size,
            last_instance_key: key,
            completed_time_from: from,
            ..Default::default()
        }
    };
    // Every finished instance, pages of 7 following the key: all full but
    // the last.
    let mut pages = Vec::new();
    let mut key = None;
    loop {
        let page = c
            .list_instance_ids(list(7, key.clone(), None))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.instance_ids);
        match page.last_instance_key {
            Some(k) => key = Some(k),
            None => break,
        }
        assert!(pages.len() < 10, "paging ends: {pages:?}");
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&n| n == 7) && sizes.iter().sum::<usize>() == 25,
        "{pages:?}"
    );
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = early.iter().chain(&late).cloned().collect();
    assert_eq!(all, expected);

    // Completed since the late ones: the early ones are filtered out. Pages
    // of 2: the first call looks at 8 backend pages (16 early instances),
    // finds none, and says where to go on; the next ones are full.
    let first = c
        .list_instance_ids(list(2, None, Some(from)))
        .await
        .unwrap()
        .into_inner();
    assert!(first.instance_ids.is_empty(), "{first:?}");
    let mut key = Some(
        first
            .last_instance_key
            .expect("a short page says more may follow"),
    );
    let mut ids = Vec::new();
    while let Some(k) = key.take() {
        let page = c
            .list_instance_ids(list(2, Some(k), Some(from)))
            .await
            .unwrap()
            .into_inner();
        assert!(page.instance_ids.len() <= 2, "{page:?}");
        ids.extend(page.instance_ids);
        key = page.last_instance_key;
        assert!(ids.len() <= late.len(), "paging ends: {ids:?}");
    }
    assert_eq!(ids, late);

    // Asking for a live status lists nothing; a finished one only those.
    let running = c
        .list_instance_ids(proto::ListInstanceIdsRequest {
            runtime_status: vec![
                proto::OrchestrationStatus::Pending as i32,
                proto::OrchestrationStatus::Running as i32,
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        running.instance_ids.is_empty() && running.last_instance_key.is_none(),
        "{running:?}"
    );
    let failed = c
        .list_instance_ids(proto::ListInstanceIdsRequest {
            runtime_status: vec![proto::OrchestrationStatus::Failed as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failed.instance_ids.is_empty(), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_instances_pages_with_a_continuation_token() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend, ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    let done: Vec<String> = (0..3).map(|i| format!("q-done-{i}")).collect();
    start_and_complete(&mut c, &done).await;
    for i in 0..4 {
        c.start_instance(start_request(&format!("q-wait-{i}"), Some("5")))
            .await
            .unwrap();
    }
    c.start_instance(start_request("other", None))
        .await
        .unwrap();

    let query =
        |token: Option<String>, statuses: Vec<i32>, payloads: bool| proto::QueryInstancesRequest {
            query: Some(proto::InstanceQuery {
                runtime_status: statuses,
                max_instance_count: 3,
                continuation_token: token,
                instance_id_prefix: Some("q-".into()),
                fetch_inputs_and_outputs: payloads,
                ..Default::default()
            }),
        };
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .query_instances(query(token.clone(), vec![], true))
            .await
            .unwrap()
            .into_inner();
        assert!(page.orchestration_state.len() <= 3, "{page:?}");
        seen.extend(page.orchestration_state);
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(seen.len() <= 7, "paging ends: {seen:?}");
    }
    let ids: Vec<&str> = seen.iter().map(|s| s.instance_id.as_str()).collect();
    assert_eq!(
        ids,
        ["q-done-0", "q-done-1", "q-done-2", "q-wait-0", "q-wait-1", "q-wait-2", "q-wait-3"]
    );
    let waiting = seen.iter().find(|s| s.instance_id == "q-wait-1").unwrap();
    assert_eq!(waiting.input.as_deref(), Some("5"));
    assert_eq!(
        waiting.orchestration_status,
        proto::OrchestrationStatus::Pending as i32
    );
    let done_page = seen.iter().find(|s| s.instance_id == "q-done-0").unwrap();
    assert_eq!(done_page.output.as_deref(), Some("1"));

    // By status, without payloads.
    let completed = c
        .query_instances(query(
            None,
            vec![proto::OrchestrationStatus::Completed as i32],
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = completed
        .orchestration_state
        .iter()
        .map(|s| s.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["q-done-0", "q-done-1", "q-done-2"]);
    assert!(completed
        .orchestration_state
        .iter()
        .all(|s| s.output.is_none() && s.input.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gets_no_more_work_than_its_worker_asked_to_hold() {
    let backend = Arc::new(MemoryBackend::new());
    let (endpoint, _stop, _server) = start(backend, ServerOptions::default()).await;
    let mut c = raw(&endpoint).await;
    let mut one_at_a_time = c
        .get_work_items(proto::GetWorkItemsRequest {
            max_concurrent_orchestration_work_items: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.start_instance(start_request("first", None))
        .await
        .unwrap();
    let first = next_item(&mut one_at_a_time).await;
    assert_eq!(instance_of(&first), "first");
    // Its worker holds one: the next episode goes to another stream.
    let mut other = work_stream(&mut c).await;
    c.start_instance(start_request("second", None))
        .await
        .unwrap();
    let second = next_item(&mut other).await;
    assert_eq!(instance_of(&second), "second");
    drop(other);
    // Once it finishes its item, it gets work again.
    c.complete_orchestrator_task(completes(&first.completion_token, "first", "1"))
        .await
        .unwrap();
    let again = next_item(&mut one_at_a_time).await;
    assert_eq!(
        instance_of(&again),
        "second",
        "given back when the other stream closed"
    );
}
