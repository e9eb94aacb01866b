//! `durable serve`: a worker and a client of durable's gRPC backend run an
//! orchestration through it on an SQLite file; SIGTERM stops it cleanly
//! with the work kept; a token is required when given; listening beyond
//! loopback without one, and TLS, are refused with what to do.

mod support;

use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::{Backend, Client, OrchestrationStatus, ScheduleOptions, Worker};
use durable_sqlite::SqliteBackend;
use std::sync::Arc;
use support::{registry, run_raw, start_serve as start, stop_serve as stop, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_an_sqlite_store_over_grpc_and_stops_on_sigterm() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("served.db");
    let store = format!("sqlite:{}", path.display());
    let (server, addr, lines) = start(&["--store", &store, "serve", "--listen", "127.0.0.1:0"]);

    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).expect("valid options"),
    );
    let worker = Worker::new(backend.clone(), registry()).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("greet", &"serve", ScheduleOptions::with_id("served-1"))
        .await
        .unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Hello, serve!");
    worker.shutdown().await;
    stop(server, lines);

    // What it served is in the file.
    let file = SqliteBackend::open(&path).unwrap();
    let meta = file.get_instance("served-1", true).await.unwrap().unwrap();
    assert_eq!(meta.status, OrchestrationStatus::Completed);
    assert_eq!(meta.output.as_deref(), Some("\"Hello, serve!\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_given() {
    let (server, addr, lines) = start(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "s3cret",
    ]);
    let without = Client::new(Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).expect("valid options"),
    ));
    let e = without
        .schedule_by_name("greet", &"x", ScheduleOptions::default())
        .await
        .expect_err("a call without the token was served");
    assert!(
        e.to_string().to_lowercase().contains("token")
            || e.to_string().to_lowercase().contains("unauthenticated"),
        "{e}"
    );
    let with = Arc::new(
        GrpcBackend::new(
            GrpcOptions::new(format!("http://{addr}")).header("authorization", "Bearer s3cret"),
        )
        .expect("valid options"),
    );
    let worker = Worker::new(with.clone(), registry()).start().unwrap();
    let client = Client::new(with);
    let id = client
        .schedule_by_name("greet", &"token", ScheduleOptions::default())
        .await
        .unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Hello, token!");
    worker.shutdown().await;
    stop(server, lines);
}

#[test]
fn unsafe_or_unsupported_listening_is_refused_with_what_to_do() {
    let open = run_raw(&["--store", "memory", "serve", "--listen", "0.0.0.0:0"]).code(1);
    assert!(
        open.stderr.contains("--token") && open.stderr.contains("--insecure"),
        "{}",
        open.stderr
    );
    let tls = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
    ])
    .code(1);
    assert!(tls.stderr.contains("TLS"), "{}", tls.stderr);
    let bad = run_raw(&["--store", "memory", "serve", "--listen", "localhost"]).code(1);
    assert!(bad.stderr.contains("--listen localhost"), "{}", bad.stderr);
    let sidecar = run_raw(&["--endpoint", "http://127.0.0.1:1", "serve"]).code(1);
    assert!(sidecar.stderr.contains("--endpoint"), "{}", sidecar.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_hub_is_a_file_beside_the_sqlite_store() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("hubs.db");
    let store = format!("sqlite:{}", path.display());
    let (server, addr, lines) = start(&["--store", &store, "serve", "--listen", "127.0.0.1:0"]);
    for hub in ["default", "eu"] {
        let backend: Arc<dyn Backend> = Arc::new(
            GrpcBackend::new(GrpcOptions::new(format!("http://{addr}")).task_hub(hub))
                .expect("valid options"),
        );
        let worker = Worker::new(backend.clone(), registry()).start().unwrap();
        let client = Client::new(backend);
        let id = client
            .schedule_by_name("greet", &hub, ScheduleOptions::with_id(format!("in-{hub}")))
            .await
            .unwrap();
        let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
        assert_eq!(state.output::<String>().unwrap(), format!("Hello, {hub}!"));
        worker.shutdown().await;
    }
    stop(server, lines);

    let eu_path = durable_cli::serve::hub_file(&path, "eu");
    assert_eq!(eu_path, dir.path().join("hubs.eu.db"));
    for (file, has, lacks) in [
        (&path, "in-default", "in-eu"),
        (&eu_path, "in-eu", "in-default"),
    ] {
        let backend = SqliteBackend::open(file).unwrap();
        assert!(
            backend.get_instance(has, false).await.unwrap().is_some(),
            "{has} in {file:?}"
        );
        assert!(
            backend.get_instance(lacks, false).await.unwrap().is_none(),
            "{lacks} not in {file:?}"
        );
    }

    // Deleting a hub deletes its file and leaves the others.
    let hubs = durable_cli::serve::StoreHubs::Sqlite(path.clone());
    hubs.delete_hub("eu").await.unwrap();
    assert!(!eu_path.exists(), "{eu_path:?} deleted");
    assert!(path.exists());
}
