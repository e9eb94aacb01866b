//! durable's backend conformance suite, on the gRPC backend against the
//! Python `durabletask` package's in-memory sidecar (a fresh one per case).

use durable_runtime::Backend;
use std::sync::Arc;

durable_runtime::conformance_tests! {
    backend: async { Arc::new(durable_grpc::testing::PeerBackend::start()) as Arc<dyn Backend> },
    lacks: {
        // It stamps the first OrchestratorStarted with the start time.
        delayed_start: "the Python test sidecar accepts a start time but dispatches the \
                        orchestration at once",
        replace_live: "the Python test sidecar replaces a live sub-orchestration without \
                       terminating it: the replacement's result reaches the old parent",
        task_tags: "the Python test sidecar drops a task's tags and execution id (neither \
                    its TaskScheduled nor its ActivityRequest carries them): every activity \
                    sees attempt 1 and a key of its own task",
        instance_tags: "the Python test sidecar puts an instance's tags on its \
                        ExecutionStarted but answers none in GetInstance and QueryInstances",
        cancel_timers: "the Durable Task protocol has no action to cancel a timer: the \
                        sidecar fires it, and the engine ignores it",
        entities: "the tier's client reads entities as @name@key instances and its \
                   critical sections travel as events, which is durable's model; the \
                   Python test sidecar keeps entities apart from instances and takes \
                   locks only in the protocol's form (tests/entities_python.rs runs \
                   entities across languages there)",
    },
    skip: {
        delivery: "not run on the Python test sidecar, which keeps no leases; this \
                   crate's tests/backend.rs drives its work items by hand",
    },
}
