//! durable's backend conformance suite on the gRPC backend talking, over
//! loopback TCP, to durable's own server in front of the PostgreSQL backend
//! (a throwaway server for the test binary, or the one
//! `DURABLE_TEST_POSTGRES_URL` names; a schema of its own for each test).

use durable_grpc::server::SidecarServer;
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::Backend;
use std::sync::Arc;

/// A fresh schema on the test server, served on a fresh loopback port;
/// returns a gRPC backend talking to it.
async fn served_postgres() -> Arc<dyn Backend> {
    let cluster = TestCluster::shared();
    let options = PostgresOptions {
        schema: cluster.fresh_schema(),
        pool_size: 8,
        ..PostgresOptions::default()
    };
    let backend = PostgresBackend::connect_with(cluster.url(), options)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a loopback port failed: {e}"));
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(SidecarServer::new(Arc::new(backend)).serve(listener, std::future::pending()));
    Arc::new(
        GrpcBackend::connect(GrpcOptions::new(format!("http://{addr}")))
            .await
            .unwrap_or_else(|e| panic!("connecting to the server at {addr} failed: {e}")),
    )
}

durable_runtime::conformance_tests! {
    backend: served_postgres(),
    lacks: {
        lease_expiry: "the protocol has no lease renewal: the server holds a worker's lease \
                       (renewing it with PostgreSQL) for as long as the work-item stream \
                       that brought the item is open, and gives the item back when that \
                       stream closes",
        cancel_timers: "the Durable Task protocol has no action to cancel a timer: the \
                        backend fires it, and the engine ignores it",
    },
}
