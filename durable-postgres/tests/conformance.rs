//! The backend conformance suite on PostgreSQL: a throwaway server for the
//! test binary (or the one `DURABLE_TEST_POSTGRES_URL` names), a schema of
//! its own for each test.

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::Backend;
use std::sync::Arc;
use std::time::Duration;

async fn backend(options: PostgresOptions) -> Arc<dyn Backend> {
    let cluster = TestCluster::shared();
    let options = PostgresOptions {
        schema: cluster.fresh_schema(),
        pool_size: 8,
        ..options
    };
    Arc::new(
        PostgresBackend::connect_with(cluster.url(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}")),
    )
}

/// Leases short enough for the lease expiry rules to see one expire, long
/// enough for the steps before it.
fn short_leases() -> PostgresOptions {
    PostgresOptions {
        lease_duration: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        ..PostgresOptions::default()
    }
}

durable_runtime::conformance_tests! {
    backend: backend(PostgresOptions::default()),
    short_leases: backend(short_leases()),
}
