//! The `durable` binary against a Durable Task sidecar over gRPC: the
//! Python `durabletask` package's in-memory sidecar (set up by
//! `durable_grpc::testing`, which fails saying how to install it when it
//! cannot), with a worker in the test process serving it.

mod support;

use durable_grpc::testing::PeerServer;
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use durable_runtime::{Client, ScheduleOptions, Worker};
use std::sync::Arc;
use support::{registry, run_raw, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_sidecar() {
    let server = PeerServer::start();
    let endpoint = server.endpoint();
    let backend = Arc::new(
        GrpcBackend::connect(GrpcOptions::new(endpoint.clone()))
            .await
            .unwrap_or_else(|e| panic!("connecting to the test sidecar failed: {e}")),
    );
    let worker = Worker::new(backend.clone(), registry()).start().unwrap();
    let client = Client::new(backend);
    client
        .schedule_by_name("greet", &"sidecar", ScheduleOptions::with_id("sc-greet"))
        .await
        .unwrap();
    client
        .schedule_by_name("approval", &(), ScheduleOptions::with_id("sc-wait"))
        .await
        .unwrap();
    client.wait_for_completion("sc-greet", LIMIT).await.unwrap();
    client.wait_for_start("sc-wait", LIMIT).await.unwrap();

    let cli = |args: &[&str]| {
        let mut all = vec![
            "--endpoint",
            endpoint.as_str(),
            "--taskhub",
            "default",
            "--header",
            "x-durable-cli-test=1",
        ];
        all.extend_from_slice(args);
        run_raw(&all)
    };
    let listed = cli(&["list"]).ok().stdout;
    assert!(listed.contains("sc-greet  greet "), "{listed}");
    assert!(listed.contains("sc-wait   approval "), "{listed}");
    let shown = cli(&["show", "sc-greet"]).ok().stdout;
    assert!(shown.contains("Status         Completed\n"), "{shown}");
    assert!(
        shown.contains("Output         \"Hello, sidecar!\"\n"),
        "{shown}"
    );
    let timeline = cli(&["history", "sc-greet"]).ok().stdout;
    assert!(
        timeline.contains("completed: \"Hello, sidecar!\""),
        "{timeline}"
    );
    let exported: Vec<HistoryEvent> =
        serde_json::from_str(&cli(&["history", "sc-greet", "--json"]).ok().stdout).unwrap();
    assert_eq!(exported, client.history("sc-greet").await.unwrap());
    cli(&["show", "nope"]).code(2);

    cli(&["raise", "sc-wait", "approve", "true"]).ok();
    let state = client.wait_for_completion("sc-wait", LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    let watched = cli(&["watch", "sc-wait"]).code(0);
    assert!(watched.stdout.contains("  Completed"), "{}", watched.stdout);
    worker.shutdown().await;
    drop(server);
}
