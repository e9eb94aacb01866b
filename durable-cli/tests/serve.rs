//! `durable serve`: a worker and a client of durable's gRPC backend run an
//! orchestration through it on an SQLite file; SIGTERM stops it cleanly
//! with the work kept; a token is required when given; listening beyond
//! loopback without one (or TLS) is refused with what to do; TLS is served
//! with a certificate made by the test.

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
    let missing = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--tls-cert",
        "no-such-cert.pem",
        "--tls-key",
        "k.pem",
    ])
    .code(1);
    assert!(
        missing.stderr.contains("--tls-cert no-such-cert.pem"),
        "{}",
        missing.stderr
    );
    let half = run_raw(&["--store", "memory", "serve", "--tls-cert", "c.pem"]).code(1);
    assert!(half.stderr.contains("go together"), "{}", half.stderr);
    let bad = run_raw(&["--store", "memory", "serve", "--listen", "localhost"]).code(1);
    assert!(bad.stderr.contains("--listen localhost"), "{}", bad.stderr);
    let sidecar = run_raw(&["--endpoint", "http://127.0.0.1:1", "serve"]).code(1);
    assert!(sidecar.stderr.contains("--endpoint"), "{}", sidecar.stderr);
}

/// A gRPC client of hub `hub` (None: no header) on `addr`.
fn hub_backend(addr: &str, hub: Option<&str>) -> Arc<dyn Backend> {
    let mut options = GrpcOptions::new(format!("http://{addr}"));
    if let Some(hub) = hub {
        options = options.task_hub(hub);
    }
    Arc::new(GrpcBackend::new(options).expect("valid options"))
}

/// A request of the raw protocol for hub `hub`.
fn on_hub<T>(message: T, hub: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("taskhub", hub.parse().unwrap());
    r
}

/// The files of an SQLite store at `db`: the file, its log, its shared
/// memory and its lock directory.
fn sqlite_files(db: &std::path::Path) -> [std::path::PathBuf; 4] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [with(""), with("-wal"), with("-shm"), with(".processes")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_hub_is_a_file_beside_the_sqlite_store_deleted_by_delete_task_hub() {
    use durable_grpc::testing::raw;
    use tonic::Code;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("hubs.db");
    let store = format!("sqlite:{}", path.display());
    let (server, addr, lines) = start(&["--store", &store, "serve", "--listen", "127.0.0.1:0"]);
    let mut workers = Vec::new();
    for hub in ["default", "Orders-EU"] {
        let backend = hub_backend(&addr, Some(hub));
        workers.push(Worker::new(backend.clone(), registry()).start().unwrap());
        let client = Client::new(backend);
        let id = client
            .schedule_by_name("greet", &hub, ScheduleOptions::with_id(format!("in-{hub}")))
            .await
            .unwrap();
        let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
        assert_eq!(state.output::<String>().unwrap(), format!("Hello, {hub}!"));
    }
    // Names ignore case, and '-' is '_': one hub, one file.
    let eu_path = durable_cli::serve::hub_file(&path, "orders_eu");
    assert_eq!(eu_path, dir.path().join("hubs.hub-orders_eu.db"));
    assert!(eu_path.exists());
    let eu = Client::new(hub_backend(&addr, Some("orders_eu")));
    assert!(eu.get_state("in-Orders-EU").await.unwrap().is_some());

    // A hub nobody created: reads are refused and create nothing.
    let nobody = Client::new(hub_backend(&addr, Some("nobody")));
    assert!(nobody.get_state("x").await.is_err());
    let nobody_path = durable_cli::serve::hub_file(&path, "nobody");
    assert!(
        !nobody_path.exists(),
        "{nobody_path:?} was created by a read"
    );

    let mut raw = raw::TaskHubSidecarServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    // Hub "default" is the store itself: never deleted.
    for hub in ["default", "Default"] {
        let e = raw
            .delete_task_hub(on_hub(raw::DeleteTaskHubRequest {}, hub))
            .await
            .expect_err("the default hub was deleted");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("purge"), "{e:?}");
    }
    let default = Client::new(hub_backend(&addr, None));
    assert!(default.get_state("in-default").await.unwrap().is_some());

    // Deleted while its worker streams: the worker's stream ends, the
    // instance is gone, and the worker serves the new, empty hub.
    raw.delete_task_hub(on_hub(raw::DeleteTaskHubRequest {}, "ORDERS-EU"))
        .await
        .expect("DeleteTaskHub");
    let id = eu
        .schedule_by_name("greet", &"again", ScheduleOptions::with_id("after"))
        .await
        .unwrap();
    let state = eu.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Hello, again!");
    assert!(eu.get_state("in-Orders-EU").await.unwrap().is_none());

    // With no worker on it, deleting removes every file of the hub.
    for w in workers {
        w.shutdown().await;
    }
    raw.delete_task_hub(on_hub(raw::DeleteTaskHubRequest {}, "orders_eu"))
        .await
        .expect("DeleteTaskHub");
    for file in sqlite_files(&eu_path) {
        assert!(!file.exists(), "{file:?} is left after DeleteTaskHub");
    }
    // CreateTaskHub makes it again.
    raw.create_task_hub(on_hub(
        raw::CreateTaskHubRequest {
            recreate_if_exists: true,
        },
        "orders_eu",
    ))
    .await
    .expect("CreateTaskHub");
    assert!(eu_path.exists());
    stop(server, lines);

    // The default hub's file kept its instance, and only it.
    let backend = SqliteBackend::open(&path).unwrap();
    assert!(backend
        .get_instance("in-default", false)
        .await
        .unwrap()
        .is_some());
    assert!(backend
        .get_instance("after", false)
        .await
        .unwrap()
        .is_none());
}

/// A hub's file another backend has open is not deleted: that backend
/// would go on writing to a file no one can open again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_file_open_elsewhere_is_not_deleted() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("shared.db");
    let hubs = durable_cli::serve::StoreHubs::Sqlite(path.clone());
    let eu = hubs.open_hub("eu").await.unwrap();
    let e = hubs
        .delete_hub("eu")
        .await
        .expect_err("a hub open elsewhere was deleted");
    assert!(e.to_string().contains("still open"), "{e}");
    let eu_path = durable_cli::serve::hub_file(&path, "eu");
    assert!(eu_path.exists());
    drop(eu);
    hubs.delete_hub("eu").await.unwrap();
    for file in sqlite_files(&eu_path) {
        assert!(!file.exists(), "{file:?} is left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_with_a_token_beyond_loopback() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );

    // TLS alone lets anyone in: beyond loopback a token is still required.
    let open = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
    ])
    .code(1);
    assert!(open.stderr.contains("--token"), "{}", open.stderr);
    // A key that is not the certificate's is refused before listening,
    // saying why.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
    let mismatched = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &other_key.display().to_string(),
    ])
    .code(1);
    assert!(
        mismatched.stderr.contains("private key that belongs to it"),
        "{}",
        mismatched.stderr
    );
    assert!(
        mismatched.stderr.contains("KeyMismatch"),
        "the cause is given: {}",
        mismatched.stderr
    );
    assert!(
        !mismatched.stdout.contains("listening"),
        "{}",
        mismatched.stdout
    );

    let (server, addr, lines) = start(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--token",
        "s3cret",
    ]);
    let port = addr.rsplit(':').next().unwrap();
    let endpoint = format!("https://localhost:{port}");
    let with_token = |options: GrpcOptions| {
        options.bearer_token(|| async { Ok::<_, std::io::Error>("s3cret".to_string()) })
    };

    let trusting = Arc::new(
        GrpcBackend::new(with_token(
            GrpcOptions::new(endpoint.clone()).tls_ca_certificate(cert.pem()),
        ))
        .expect("valid options"),
    );
    let worker = Worker::new(trusting.clone(), registry()).start().unwrap();
    let client = Client::new(trusting);
    let id = client
        .schedule_by_name("greet", &"tls", ScheduleOptions::default())
        .await
        .unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Hello, tls!");
    worker.shutdown().await;

    // With the token, a client that does not trust the certificate, and
    // one that does not speak TLS, cannot reach it.
    for (what, options) in [
        ("untrusted", GrpcOptions::new(endpoint.clone())),
        (
            "plain",
            GrpcOptions::new(format!("http://localhost:{port}")),
        ),
    ] {
        let options = with_token(options.connect_timeout(std::time::Duration::from_secs(5)));
        let other = Client::new(Arc::new(GrpcBackend::new(options).expect("valid options")));
        let e = other
            .get_status(&id)
            .await
            .expect_err("a client without TLS trust was served");
        // Refused in the handshake (unavailable), or, for the plain
        // client, by HTTP/2 framing the TLS server cannot read.
        use durable_runtime::{BackendError, Error};
        assert!(
            matches!(&e, Error::Backend(BackendError::Unavailable(_)))
                || matches!(&e, Error::Backend(BackendError::Other(m)) if what == "plain" && m.contains("protocol error")),
            "a {what} client: {e:?}"
        );
    }
    stop(server, lines);
}
