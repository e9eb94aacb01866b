//! durable's backend conformance suite on the gRPC backend talking, over
//! loopback TCP, to durable's own server (`durable_grpc::server`) in front
//! of the in-memory backend and of the SQLite backend: the protocol and the
//! server together must keep every promise the backend beneath keeps.

use durable_grpc::server::SidecarServer;
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::Backend;
use std::sync::Arc;

/// Serves `backend` on a fresh loopback port (until the test's runtime
/// ends) and returns a gRPC backend talking to it.
async fn served(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a loopback port failed: {e}"));
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(SidecarServer::new(backend).serve(listener, std::future::pending()));
    Arc::new(
        GrpcBackend::connect(GrpcOptions::new(format!("http://{addr}")))
            .await
            .unwrap_or_else(|e| panic!("connecting to the server at {addr} failed: {e}")),
    )
}

mod memory {
    use super::*;
    use durable_runtime::backend::MemoryBackend;

    durable_runtime::conformance_tests! {
        backend: async { served(Arc::new(MemoryBackend::new())).await },
        lacks: {
            lease_expiry: "the protocol has no lease renewal: the server holds a worker's \
                           lease for as long as the work-item stream that brought the item \
                           is open, and gives the item back when that stream closes",
            cancel_timers: "the Durable Task protocol has no action to cancel a timer: the \
                            backend fires it, and the engine ignores it",
        },
    }
}

mod sqlite {
    use super::*;
    use durable_sqlite::SqliteBackend;

    /// A SQLite database in a fresh directory under the target directory.
    fn database() -> Arc<dyn Backend> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let path = dir.path().join("durable.db");
        // Kept: the backend's thread outlives the test body.
        std::mem::forget(dir);
        Arc::new(
            SqliteBackend::open(&path)
                .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display())),
        )
    }

    durable_runtime::conformance_tests! {
        backend: async { served(database()).await },
        lacks: {
            lease_expiry: "the protocol has no lease renewal: the server holds a worker's \
                           lease (renewing it with SQLite) for as long as the work-item \
                           stream that brought the item is open, and gives the item back \
                           when that stream closes",
            cancel_timers: "the Durable Task protocol has no action to cancel a timer: the \
                            backend fires it, and the engine ignores it",
        },
    }
}
