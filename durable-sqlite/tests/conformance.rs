//! The backend conformance suite, on SQLite: an in-memory database, and a
//! file on disk (where WAL, leases and the connection thread are real).

mod in_memory {
    durable_runtime::conformance_tests!(async {
        std::sync::Arc::new(
            durable_sqlite::SqliteBackend::in_memory()
                .unwrap_or_else(|e| panic!("opening an in-memory database failed: {e}")),
        ) as std::sync::Arc<dyn durable_runtime::Backend>
    });
}

mod on_disk {
    /// A database in a fresh directory under the target directory.
    async fn file_backend() -> std::sync::Arc<dyn durable_runtime::Backend> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let path = dir.path().join("durable.db");
        // Keep the directory: the backend's thread outlives the test body.
        std::mem::forget(dir);
        std::sync::Arc::new(
            durable_sqlite::SqliteBackend::open(&path)
                .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display())),
        )
    }

    durable_runtime::conformance_tests!(file_backend());
}
