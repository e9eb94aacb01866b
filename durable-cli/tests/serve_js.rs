//! The JavaScript Durable Task SDK (`@microsoft/durabletask-js`, pinned in
//! durable-grpc's `tests/peer/js/package.json`, installed by the test under
//! target/) runs its worker and client on `durable serve`: an activity
//! chain and a fan-out. Without node and npm the test fails saying how to
//! install them.

mod support;

use durable_grpc::testing::node_script;
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::{Backend, OrchestrationStatus};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::{drain, start_serve, stop_serve, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_runs_a_chain_and_a_fan_out_on_durable_serve() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = format!("sqlite:{}", dir.path().join("js.db").display());
    // Installs the package on first use (blocking: once per build dir).
    let mut node = node_script("chain_fan_out.js", &[]);
    let (server, addr, lines) =
        start_serve(&["--store", &store, "serve", "--listen", "127.0.0.1:0"]);
    let mut child = node.arg(&addr).spawn().expect("starting node");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let out = tokio::task::spawn_blocking(move || stdout.recv_timeout(LIMIT))
        .await
        .unwrap();
    let Ok(out) = out else {
        let _ = child.kill();
        panic!("the JavaScript peer did not finish within {LIMIT:?}");
    };
    let status = child.wait().expect("waiting for node");
    let err = stderr.recv_timeout(LIMIT).unwrap_or_default();
    assert!(
        status.success() && out.lines().last() == Some("done"),
        "the JavaScript peer failed ({status:?}):\n{out}\n{err}"
    );

    let want: BTreeMap<&str, &str> = [
        ("js-chain-0", "3"),
        ("js-chain-1", "13"),
        ("js-chain-2", "23"),
        // 1² + ... + 10², 1² + ... + 11²
        ("js-fan-0", "385"),
        ("js-fan-1", "506"),
    ]
    .into();
    let mut seen = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["status"], "COMPLETED", "{line}");
        seen.insert(
            v["id"].as_str().unwrap().to_string(),
            v["output"].as_str().unwrap().to_string(),
        );
    }
    let seen: BTreeMap<&str, &str> = seen.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(seen, want, "what the JavaScript client saw:\n{out}");

    // The store holds the same: what durable's own client reads there.
    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).expect("valid options"),
    );
    for (id, output) in &want {
        let meta = backend
            .get_instance(id, true)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} is not in the store"));
        assert_eq!(meta.status, OrchestrationStatus::Completed, "{id}");
        assert_eq!(meta.output.as_deref(), Some(*output), "{id}");
    }
    drop(backend);
    stop_serve(server, lines);
}
