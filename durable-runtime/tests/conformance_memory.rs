//! The conformance suite on the in-memory backend (real clock).

use durable_runtime::{Backend, MemoryBackend};
use std::sync::Arc;

durable_runtime::conformance_tests! {
    backend: async { Arc::new(MemoryBackend::new()) as Arc<dyn Backend> },
    lacks: {
        lease_expiry: "the in-memory backend's leases never expire: its work lives and dies \
                       with the process holding it",
    },
}
