//! Versions in work-item filters: two workers of different versions share
//! one `durable serve` hub during a rolling upgrade, and the server sends
//! each only the instances its version runs. Each worker gives back work of
//! another version only after an hour (`reject_pause`), so an instance sent
//! to the wrong worker would miss the test's deadline: only the filters can
//! make every instance finish in time.

use durable_grpc::server::SidecarServer;
use durable_grpc::{GrpcBackend, GrpcOptions, WorkItemFilters};
use durable_runtime::backend::{Backend, MemoryBackend};
use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
use durable_runtime::{
    Client, OrchestrationStatus, Registry, ScheduleOptions, Worker, WorkerHandle, WorkerOptions,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The longest any instance may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

fn registry(who: &'static str) -> Registry {
    Registry::new()
        .orchestrator_version_fn("greet", "1", move |_ctx, name: String| async move {
            Ok(format!("{who} v1: Hello, {name}"))
        })
        .orchestrator_version_fn("greet", "2", move |_ctx, name: String| async move {
            Ok(format!("{who} v2: Hi {name}!"))
        })
}

fn strict(version: &str) -> VersioningOptions {
    VersioningOptions {
        version: version.into(),
        match_strategy: MatchStrategy::Strict,
        failure_strategy: FailureStrategy::Reject,
        reject_pause: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// A worker of `version` on the server at `endpoint`, asking only for the
/// work its registry and versioning run.
fn worker(endpoint: &str, who: &'static str, version: &str) -> (WorkerHandle, Arc<dyn Backend>) {
    let registry = registry(who);
    let versioning = strict(version);
    let filters = WorkItemFilters::of_worker(&registry, &versioning);
    assert_eq!(filters.orchestration_versions["greet"], [version]);
    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(GrpcOptions::new(endpoint).work_item_filters(filters))
            .expect("valid options"),
    );
    let options = WorkerOptions {
        versioning,
        ..Default::default()
    };
    let worker = Worker::new(backend.clone(), registry)
        .with_options(options)
        .start()
        .expect("the worker starts");
    (worker, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_goes_only_to_the_worker_that_runs_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = SidecarServer::new(Arc::new(MemoryBackend::new()));
    let serving = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("the server serves until it is stopped");
    });

    let (old, old_backend) = worker(&endpoint, "old", "1");
    let (new, _) = worker(&endpoint, "new", "2");
    let client = Client::new(old_backend);
    let mut ids = Vec::new();
    for i in 0..6 {
        let version = if i % 2 == 0 { "1" } else { "2" };
        let id = format!("greet-{i}");
        let options = ScheduleOptions {
            version: Some(version.into()),
            ..ScheduleOptions::with_id(id.clone())
        };
        client
            .schedule_by_name("greet", &format!("guest {i}"), options)
            .await
            .expect("scheduled");
        ids.push((id, version));
    }
    for (id, version) in &ids {
        let state = client
            .wait_for_completion(id, WAIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{id} (version {version}) did not finish in {WAIT:?}: {e}; the server \
                     must have sent it to the worker of the other version"
                )
            });
        assert_eq!(state.status(), OrchestrationStatus::Completed, "{id}");
        let output: String = state.output().unwrap();
        let who = if *version == "1" { "old" } else { "new" };
        assert!(
            output.starts_with(&format!("{who} v{version}:")),
            "{id} of version {version} ran as {output:?}"
        );
    }
    old.shutdown().await;
    new.shutdown().await;
    let _ = stop.send(());
    serving.await.unwrap();
}
