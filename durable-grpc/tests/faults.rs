//! Faults between the backend and the sidecar: nothing listening at the
//! endpoint, a sidecar that restarts under a running worker, payloads that
//! are too large or do not fit the orchestration, histories over the
//! outgoing message limit.

use durable_grpc::testing::{free_port, PeerServer, PyProcess};
use durable_grpc::{GrpcBackend, GrpcOptions, ReconnectPolicy};
use durable_runtime::backend::{Backend, BackendError};
use durable_runtime::{
    ActivityError, Client, Error, OrchestrationStatus, Registry, ScheduleOptions, Worker,
};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A free loopback port below the ephemeral range (which starts at 32768
/// on Linux by default), picked from the process id.
fn port_below_ephemeral_range() -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (0..2_000u16)
        .map(|i| 20_000 + (start - 20_000 + i) % 12_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free loopback port between 20000 and 32000")
}

fn registry() -> Registry {
    Registry::new()
        .activity_fn("double", |_c, x: i64| async move {
            Ok::<_, ActivityError>(x * 2)
        })
        .orchestrator_fn("twice", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("double", &x).await?;
            let b: i64 = ctx.call_activity_by_name("double", &a).await?;
            Ok(b)
        })
}

/// Quick reconnects, so the tests do not wait out the default backoff.
fn options(endpoint: String) -> GrpcOptions {
    GrpcOptions::new(endpoint)
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            multiplier: 2.0,
        })
}

async fn run_twice(client: &Client, x: i64) -> i64 {
    let id = client
        .schedule_by_name("twice", &x, ScheduleOptions::default())
        .await
        .unwrap_or_else(|e| panic!("scheduling failed: {e}"));
    let s = client
        .wait_for_completion(&id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("instance {id} did not complete: {e}"));
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    s.output::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sidecar_is_a_clear_error_and_the_worker_waits_for_it() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");

    let e = GrpcBackend::connect(options(endpoint.clone()))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, BackendError::Unavailable(_)), "{text}");
    assert!(
        text.contains(&endpoint),
        "the error names the endpoint: {text}"
    );
    assert!(
        text.contains("check that it is running"),
        "and what to do: {text}"
    );

    // A worker started before its sidecar keeps trying and picks up work
    // once the sidecar is there.
    let backend: Arc<dyn Backend> = Arc::new(GrpcBackend::new(options(endpoint)).unwrap());
    let client = Client::new(backend.clone());
    let worker = Worker::new(backend, registry()).start().unwrap();
    match client.get_status("x").await {
        Err(Error::Backend(BackendError::Unavailable(_))) => {}
        other => panic!("expected Unavailable from the client, got {other:?}"),
    }
    let server = tokio::task::spawn_blocking(move || PeerServer::start_on(port))
        .await
        .unwrap()
        .expect("the sidecar starts on the chosen port");
    assert_eq!(run_twice(&client, 5).await, 20);
    worker.shutdown().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reconnects_when_the_sidecar_restarts() {
    // A port outside the kernel's ephemeral range, so that no other test's
    // `free_port()` can take it while the sidecar is down.
    let port = port_below_ephemeral_range();
    let server = tokio::task::spawn_blocking(move || PeerServer::start_on(port))
        .await
        .unwrap()
        .expect("the sidecar starts");
    let backend: Arc<dyn Backend> = Arc::new(GrpcBackend::new(options(server.endpoint())).unwrap());
    let client = Client::new(backend.clone());
    let worker = Worker::new(backend, registry()).start().unwrap();
    assert_eq!(run_twice(&client, 1).await, 4);

    // The sidecar goes away (its state with it) and comes back on the same port.
    let port = server.stop();
    // A call racing the connection's teardown may fail otherwise (e.g. a
    // reset stream); once it is gone, calls are Unavailable. Bounded.
    let mut last = None;
    for _ in 0..3 {
        match client.get_status("anything").await {
            Err(Error::Backend(BackendError::Unavailable(_))) => {
                last = None;
                break;
            }
            other => last = Some(format!("{other:?}")),
        }
    }
    assert!(
        last.is_none(),
        "expected Unavailable while the sidecar is down, got {last:?}"
    );
    let server = tokio::task::spawn_blocking(move || PeerServer::start_on(port))
        .await
        .unwrap()
        .expect("the sidecar restarts on its port");

    for x in 2..5 {
        assert_eq!(run_twice(&client, x).await, 4 * x);
    }
    worker.shutdown().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_with_sizes_and_limits() {
    let server = PeerServer::start();
    let big = format!("\"{}\"", "x".repeat(5 * 1024 * 1024));

    // Over our own limit: refused before anything is sent.
    let backend = GrpcBackend::new(options(server.endpoint())).unwrap();
    let client = Client::new(Arc::new(backend));
    match client
        .schedule_raw("twice", Some(big.clone()), ScheduleOptions::default())
        .await
    {
        Err(Error::Backend(BackendError::PayloadTooLarge { size, limit, what })) => {
            assert!(size > 5 * 1024 * 1024);
            assert_eq!(limit, 4 * 1024 * 1024);
            assert!(what.contains("twice"), "{what}");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }

    // Over the sidecar's limit (ours raised): the sidecar's refusal is
    // reported the same way.
    let backend =
        GrpcBackend::new(options(server.endpoint()).max_message_size(64 * 1024 * 1024)).unwrap();
    let client = Client::new(Arc::new(backend));
    match client
        .schedule_raw("twice", Some(big), ScheduleOptions::default())
        .await
    {
        Err(Error::Backend(e @ BackendError::PayloadTooLarge { .. })) => {
            assert!(e.to_string().contains("smaller payload"), "{e}");
        }
        other => panic!("expected PayloadTooLarge from the sidecar, got {other:?}"),
    }

    // The connection is still good afterwards.
    assert!(client.get_status("none").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_does_not_fit_the_orchestrator_fails_it_with_a_clear_message() {
    let server = PeerServer::start();
    let backend: Arc<dyn Backend> = Arc::new(GrpcBackend::new(options(server.endpoint())).unwrap());
    let worker = Worker::new(backend, registry()).start().unwrap();

    let address = server.address();
    let line = tokio::task::spawn_blocking(move || {
        // A Python client sends text where the Rust orchestrator takes a number.
        let mut client = PyProcess::spawn("client.py", &[&address, "twice", r#""seven""#]);
        client.expect_line("RESULT ", Duration::from_secs(60))
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "FAILED", "{v}");
    let message = v["failure_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("twice") && message.contains("input"),
        "{v}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_over_the_outgoing_limit_still_reaches_the_worker() {
    // Three 1.5 MB activity results: a 4.5 MB history, which the test
    // sidecar sends inline in every later work item.
    let registry = registry()
        .activity_fn("mb", |_c, _x: i64| async move {
            Ok::<_, ActivityError>("x".repeat(1_500_000))
        })
        .orchestrator_fn("fat", |ctx, _x: i64| async move {
            let mut n = 0usize;
            for i in 0..3i64 {
                let s: String = ctx.call_activity_by_name("mb", &i).await?;
                n += s.len();
            }
            Ok(n)
        });
    let server = PeerServer::start();
    let backend: Arc<dyn Backend> = Arc::new(GrpcBackend::new(options(server.endpoint())).unwrap());
    let client = Client::new(backend.clone());
    let worker = Worker::new(backend, registry).start().unwrap();
    let id = client
        .schedule_by_name("fat", &0i64, ScheduleOptions::default())
        .await
        .unwrap();
    let s = client
        .wait_for_completion(&id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("the orchestration with a 4.5 MB history did not finish: {e}"));
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    assert_eq!(s.output::<usize>().unwrap(), 4_500_000);
    // And the stream still serves the next one.
    assert_eq!(run_twice(&client, 3).await, 12);
    worker.shutdown().await;
}

/// [`registry`] and an activity and an orchestrator whose results are 5 MiB.
fn registry_with_huge_results() -> Registry {
    const FIVE_MIB: usize = 5 * 1024 * 1024;
    registry()
        .activity_fn("huge", |_c, _x: i64| async move {
            Ok::<_, ActivityError>("x".repeat(FIVE_MIB))
        })
        .orchestrator_fn("calls_huge", |ctx, x: i64| async move {
            let r: Result<String, _> = ctx.call_activity_by_name("huge", &x).await;
            Ok(match r {
                Ok(s) => format!("ok {}", s.len()),
                Err(e) => format!("failed: {e}"),
            })
        })
        .orchestrator_fn("big_output", |_ctx, _x: i64| async move {
            Ok("y".repeat(FIVE_MIB))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_too_large_to_send_fail_the_activity_or_the_orchestration() {
    let server = PeerServer::start();
    // Over our limit (the default), and over the sidecar's (ours raised).
    for ours in [4 * 1024 * 1024, 64 * 1024 * 1024] {
        let backend: Arc<dyn Backend> =
            Arc::new(GrpcBackend::new(options(server.endpoint()).max_message_size(ours)).unwrap());
        let client = Client::new(backend.clone());
        let worker = Worker::new(backend, registry_with_huge_results())
            .start()
            .unwrap();

        let id = client
            .schedule_by_name("calls_huge", &1i64, ScheduleOptions::default())
            .await
            .unwrap();
        let s = client
            .wait_for_completion(&id, WAIT)
            .await
            .unwrap_or_else(|e| panic!("limit {ours}: the activity's caller did not finish: {e}"));
        let out = s.output::<String>().unwrap();
        assert!(
            out.starts_with("failed:") && out.contains("huge"),
            "limit {ours}: {out}"
        );

        let id = client
            .schedule_by_name("big_output", &1i64, ScheduleOptions::default())
            .await
            .unwrap();
        let s = client
            .wait_for_completion(&id, WAIT)
            .await
            .unwrap_or_else(|e| panic!("limit {ours}: the orchestration did not finish: {e}"));
        assert_eq!(s.status(), OrchestrationStatus::Failed, "limit {ours}");
        let f = s.failure().expect("a failure");
        assert_eq!(f.error_type, "PayloadTooLarge", "limit {ours}: {f:?}");

        // The worker goes on with other work.
        assert_eq!(run_twice(&client, 2).await, 8);
        worker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_leaves_another_on_the_same_backend_working() {
    let server = PeerServer::start();
    let backend: Arc<dyn Backend> = Arc::new(GrpcBackend::new(options(server.endpoint())).unwrap());
    let client = Client::new(backend.clone());
    let first = Worker::new(backend.clone(), registry()).start().unwrap();
    let second = Worker::new(backend, registry()).start().unwrap();
    assert_eq!(run_twice(&client, 1).await, 4);
    first.shutdown().await;
    for x in 2..4 {
        assert_eq!(run_twice(&client, x).await, 4 * x);
    }
    second.shutdown().await;
}
