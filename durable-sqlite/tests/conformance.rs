//! The backend conformance suite, on SQLite: an in-memory database, and a
//! file on disk (where WAL, leases and the connection thread are real).

use durable_runtime::Backend;
use durable_sqlite::{SqliteBackend, SqliteOptions};
use std::sync::Arc;
use std::time::Duration;

/// Leases short enough for the lease expiry rules to see one expire, long
/// enough for the steps before it.
fn short_leases() -> SqliteOptions {
    SqliteOptions {
        lease_duration: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        ..SqliteOptions::default()
    }
}

mod in_memory {
    use super::*;

    fn backend(options: SqliteOptions) -> Arc<dyn Backend> {
        Arc::new(
            SqliteBackend::in_memory_with(options)
                .unwrap_or_else(|e| panic!("opening an in-memory database failed: {e}")),
        )
    }

    durable_runtime::conformance_tests! {
        backend: async { backend(SqliteOptions::default()) },
        short_leases: async { backend(short_leases()) },
    }
}

mod on_disk {
    use super::*;

    /// A database in a fresh directory under the target directory.
    fn backend(options: SqliteOptions) -> Arc<dyn Backend> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let path = dir.path().join("durable.db");
        // Keep the directory: the backend's thread outlives the test body.
        std::mem::forget(dir);
        Arc::new(
            SqliteBackend::open_with(&path, options)
                .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display())),
        )
    }

    durable_runtime::conformance_tests! {
        backend: async { backend(SqliteOptions::default()) },
        short_leases: async { backend(short_leases()) },
    }
}
