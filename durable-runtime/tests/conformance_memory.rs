//! The conformance suite on the in-memory backend.

durable_runtime::conformance_tests!(async {
    std::sync::Arc::new(durable_runtime::MemoryBackend::new())
        as std::sync::Arc<dyn durable_runtime::Backend>
});
