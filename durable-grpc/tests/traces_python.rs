//! One trace across processes and languages: a Python client (the
//! `durabletask` SDK with OpenTelemetry's SDK) starts a Rust orchestration
//! on durable's server inside a span of its own; the Rust worker calls a
//! Rust activity, a Python activity and a Python sub-orchestration, served
//! by a Python worker in the client's process. Every span, Rust's and
//! Python's, is in the client's trace, and each one's parent is the span
//! that started it, whichever process made that span.

use durable_grpc::server::SidecarServer;
use durable_grpc::testing::PyProcess;
use durable_grpc::{GrpcBackend, GrpcOptions, WorkItemFilters};
use durable_runtime::backend::{Backend, MemoryBackend};
use durable_runtime::trace::{add_sink, SpanKind, SpanRecord, SpanRecorder};
use durable_runtime::{ActivityError, Registry, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

async fn serve(backend: Arc<dyn Backend>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(SidecarServer::new(backend).serve(listener, std::future::pending()));
    address
}

fn registry() -> Registry {
    Registry::new()
        .activity_fn("rust_upper", |_c, s: String| async move {
            Ok::<_, ActivityError>(s.to_uppercase())
        })
        .orchestrator_fn("rust_traced", |ctx, name: String| async move {
            let upper: String = ctx.call_activity_by_name("rust_upper", &name).await?;
            let shouted: String = ctx.call_activity_by_name("py_shout", &upper).await?;
            let child: String = ctx
                .call_sub_orchestrator_by_name("py_child", None, &shouted, None)
                .await?;
            Ok(format!("rust got {child}"))
        })
}

/// A span as traced.py printed it.
#[derive(Debug)]
struct PySpan {
    name: String,
    kind: String,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    attributes: Value,
}

/// Runs traced.py; returns its result and its spans.
async fn traced_python(address: String) -> (Value, Vec<PySpan>) {
    tokio::task::spawn_blocking(move || {
        let mut py = PyProcess::spawn("traced.py", &[&address, "rust_traced", r#""ada""#]);
        let result = py.expect_line("RESULT ", WAIT);
        let result: Value = serde_json::from_str(&result)
            .unwrap_or_else(|e| panic!("traced.py printed {result}: {e}"));
        let mut spans = Vec::new();
        loop {
            let line = py
                .next_line(WAIT)
                .unwrap_or_else(|e| panic!("traced.py's spans: {e}"));
            if line == "DONE" {
                break;
            }
            let Some(json) = line.strip_prefix("SPAN ") else {
                continue;
            };
            let v: Value = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("traced.py printed {line}: {e}"));
            let text = |k: &str| v[k].as_str().map(str::to_string);
            spans.push(PySpan {
                name: text("name").expect("a name"),
                kind: text("kind").expect("a kind"),
                trace_id: text("trace_id").expect("a trace id"),
                span_id: text("span_id").expect("a span id"),
                parent_span_id: text("parent_span_id"),
                attributes: v["attributes"].clone(),
            });
        }
        (result, spans)
    })
    .await
    .expect("the Python task")
}

fn py<'a>(spans: &'a [PySpan], name: &str, kind: &str) -> &'a PySpan {
    spans
        .iter()
        .find(|s| s.name == name && s.kind == kind)
        .unwrap_or_else(|| panic!("Python made no {kind} span {name}; it made {spans:#?}"))
}

fn rust<'a>(spans: &'a [SpanRecord], name: &str, kind: SpanKind) -> &'a SpanRecord {
    spans
        .iter()
        .find(|s| s.name == name && s.kind == kind)
        .unwrap_or_else(|| panic!("Rust made no {kind:?} span {name}; it made {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_clients_trace_runs_through_a_rust_worker_and_back_to_python() {
    let recorder = SpanRecorder::new();
    add_sink(recorder.clone());
    let address = serve(Arc::new(MemoryBackend::new())).await;
    let registry = registry();
    let backend = GrpcBackend::new(
        GrpcOptions::new(format!("http://{address}"))
            .work_item_filters(WorkItemFilters::of_registry(&registry)),
    )
    .expect("valid options");
    let worker = Worker::new(Arc::new(backend), registry).start().unwrap();

    let (result, py_spans) = traced_python(address).await;
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert_eq!(
        result["output"], r#""rust got child says ADA!!""#,
        "{result}"
    );
    let instance = result["instance_id"].as_str().unwrap().to_string();
    // The orchestration's span is reported once its last episode is
    // recorded, which may be just after the client saw it complete.
    let rust_spans = recorder
        .wait_for(WAIT, |spans| {
            spans.iter().any(|s| {
                s.name == "orchestration:rust_traced"
                    && s.attribute("durabletask.task.instance_id") == Some(instance.as_str())
            })
        })
        .await
        .unwrap_or_else(|spans| panic!("no orchestration span from Rust; spans: {spans:#?}"));
    worker.shutdown().await;

    // Python: the request, the client's span under it.
    let request = py(&py_spans, "python request", "INTERNAL");
    let create = py(&py_spans, "create_orchestration:rust_traced", "PRODUCER");
    assert_eq!(create.parent_span_id.as_ref(), Some(&request.span_id));
    assert_eq!(create.attributes["durabletask.task.instance_id"], instance);
    let trace = &request.trace_id;

    // Rust: the orchestration continues the Python client's span.
    let orch = rust(&rust_spans, "orchestration:rust_traced", SpanKind::Server);
    assert_eq!(&orch.trace_id.to_string(), trace, "{orch:#?}");
    assert_eq!(
        orch.parent_span_id.map(|p| p.to_string()).as_ref(),
        Some(&create.span_id),
        "the orchestration's parent is the Python client's span"
    );
    assert_eq!(orch.attribute("durabletask.task.status"), Some("Completed"));
    // Its Rust activity: the call, and the run under it.
    let call = rust(&rust_spans, "activity:rust_upper", SpanKind::Client);
    let run = rust(&rust_spans, "activity:rust_upper", SpanKind::Server);
    assert_eq!(call.parent_span_id, Some(orch.span_id));
    assert_eq!(run.parent_span_id, Some(call.span_id));

    // The Python activity runs under the Rust call's span.
    let py_call = rust(&rust_spans, "activity:py_shout", SpanKind::Client);
    assert_eq!(py_call.parent_span_id, Some(orch.span_id));
    let py_run = py_spans
        .iter()
        .find(|s| {
            s.name == "activity:py_shout"
                && s.kind == "SERVER"
                && s.parent_span_id.as_deref() == Some(py_call.span_id.to_string().as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "no Python activity span under the Rust call {}; Python's spans: {py_spans:#?}",
                py_call.span_id
            )
        });
    assert_eq!(&py_run.trace_id, trace);
    assert_eq!(py_run.attributes["durabletask.type"], "activity");

    // The Python sub-orchestration runs under the Rust call's span, and its
    // own activity under it.
    let child_call = rust(&rust_spans, "orchestration:py_child", SpanKind::Client);
    assert_eq!(child_call.parent_span_id, Some(orch.span_id));
    let child = py(&py_spans, "orchestration:py_child", "SERVER");
    assert_eq!(&child.trace_id, trace);
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(child_call.span_id.to_string().as_str()),
        "the Python sub-orchestration's parent is the Rust call's span"
    );
    let child_activity = py_spans
        .iter()
        .find(|s| {
            s.name == "activity:py_shout"
                && s.kind == "CLIENT"
                && s.parent_span_id.as_deref() == Some(child.span_id.as_str())
        })
        .unwrap_or_else(|| panic!("no activity call under py_child: {py_spans:#?}"));
    assert!(
        py_spans.iter().any(|s| s.kind == "SERVER"
            && s.name == "activity:py_shout"
            && s.parent_span_id.as_deref() == Some(child_activity.span_id.as_str())),
        "the child's activity ran under its call: {py_spans:#?}"
    );

    // One trace throughout, and no span reported twice.
    for s in &py_spans {
        assert_eq!(&s.trace_id, trace, "{s:#?}");
    }
    let ours: Vec<_> = rust_spans
        .iter()
        .filter(|s| s.attribute("durabletask.task.instance_id") == Some(instance.as_str()))
        .collect();
    assert!(ours.len() >= 5, "Rust's spans of {instance}: {ours:#?}");
    for s in &ours {
        assert_eq!(&s.trace_id.to_string(), trace, "{s:#?}");
    }
    let mut ids: Vec<String> = ours.iter().map(|s| s.span_id.to_string()).collect();
    ids.extend(py_spans.iter().map(|s| s.span_id.clone()));
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a span id reported twice: {ids:?}");
}
