//! The spans of the order example, as OpenTelemetry receives them: the tree
//! of `order_with_approval` (names, kinds, parents, attributes) on the
//! in-memory and SQLite backends, the same with every episode replayed
//! from the start, and no span reported twice.

use durable::otel::opentelemetry::trace::SpanKind;
use durable::otel::OtelSink;
use durable::prelude::*;
use durable::trace::{SpanRecorder, TraceId};
use durable::{Backend, MemoryBackend, Registry, Worker, WorkerOptions};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor, SpanData};
use order_processing::workflows::*;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// One exporter and one recorder for the whole test binary (sinks are
/// process-wide); each test reads its own trace.
fn sinks() -> &'static (InMemorySpanExporter, SpanRecorder) {
    static SINKS: OnceLock<(InMemorySpanExporter, SpanRecorder)> = OnceLock::new();
    SINKS.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        std::mem::forget(OtelSink::new(SimpleSpanProcessor::new(exporter.clone())).install());
        let recorder = SpanRecorder::new();
        durable::trace::add_sink(recorder.clone());
        (exporter, recorder)
    })
}

const LIMIT: Duration = Duration::from_secs(30);

/// Runs an approved `order_with_approval` on `backend`; returns its
/// instance id and trace id once its orchestration span is out.
async fn approved_order(backend: Arc<dyn Backend>, cache_capacity: usize) -> (String, TraceId) {
    let (_, recorder) = sinks();
    let worker = Worker::new(backend.clone(), Registry::discover().unwrap())
        .with_options(WorkerOptions {
            cache_capacity,
            ..Default::default()
        })
        .start()
        .unwrap();
    let client = Client::new(backend);
    let order = Order {
        customer: "Bob".into(),
        items: vec![OrderItem {
            name: "Server".into(),
            quantity: 1,
            unit_price: 1500.0,
        }],
    };
    let id = client.schedule(order_with_approval, order).await.unwrap();
    client.wait_for_start(&id, LIMIT).await.unwrap();
    client.raise(&id, &Approval(true)).await.unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    let ours = |s: &durable::trace::SpanRecord, name: &str| {
        s.name == name && s.attribute("durabletask.task.instance_id") == Some(id.as_str())
    };
    let spans = recorder
        .wait_for(LIMIT, |spans| {
            spans
                .iter()
                .any(|s| ours(s, "orchestration:order_with_approval"))
        })
        .await
        .unwrap_or_else(|spans| {
            panic!("no orchestration span for {id} within {LIMIT:?}; spans: {spans:#?}")
        });
    let root = spans
        .iter()
        .find(|s| ours(s, "create_orchestration:order_with_approval"))
        .expect("the client's span");
    // The client's raise of the approval is a span of its own.
    let raised = spans
        .iter()
        .find(|s| {
            s.name == format!("orchestration_event:{}", <Approval as durable::Event>::NAME)
                && s.attribute("durabletask.event.target_instance_id") == Some(id.as_str())
        })
        .unwrap_or_else(|| panic!("no event span for {id}: {spans:#?}"));
    assert_eq!(raised.attribute("durabletask.type"), Some("event"));
    worker.shutdown().await;
    (id, root.trace_id)
}

/// The spans of trace `trace` exported so far.
fn exported(trace: TraceId) -> Vec<SpanData> {
    let (exporter, _) = sinks();
    let trace = durable::otel::opentelemetry::trace::TraceId::from_bytes(trace.0);
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// The span tree, one `name (kind)` line per span, children indented under
/// their parent in start order; spans whose parent is not in the trace are
/// roots.
fn tree(spans: &[SpanData]) -> String {
    let ids: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<_, Vec<&SpanData>> = HashMap::new();
    for s in spans {
        let parent = Some(s.parent_span_id).filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| (a.start_time, &a.name).cmp(&(b.start_time, &b.name)));
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Option<durable::otel::opentelemetry::trace::SpanId>, Vec<&SpanData>>,
        at: Option<durable::otel::opentelemetry::trace::SpanId>,
        depth: usize,
    ) {
        for s in children.get(&at).into_iter().flatten() {
            let kind = match s.span_kind {
                SpanKind::Client => "client",
                SpanKind::Server => "server",
                SpanKind::Producer => "producer",
                SpanKind::Consumer => "consumer",
                SpanKind::Internal => "internal",
            };
            out.push_str(&format!("{}{} ({kind})\n", "  ".repeat(depth), s.name));
            walk(out, children, Some(s.span_context.span_id()), depth + 1);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, None, 0);
    out
}

const EXPECTED: &str = "\
create_orchestration:order_with_approval (producer)
  orchestration:order_with_approval (server)
    activity:calculate_total (client)
      activity:calculate_total (server)
    orchestration:process_order (client)
      orchestration:process_order (server)
        activity:validate_order (client)
          activity:validate_order (server)
        activity:calculate_total (client)
          activity:calculate_total (server)
        activity:process_payment (client)
          activity:process_payment (server)
        activity:ship_item (client)
          activity:ship_item (server)
        activity:send_confirmation (client)
          activity:send_confirmation (server)
";

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn check(id: &str, trace: TraceId) {
    let spans = exported(trace);
    assert_eq!(tree(&spans), EXPECTED, "the span tree of {id}");
    // No span is reported twice (replays report nothing).
    let unique: HashSet<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    assert_eq!(
        unique.len(),
        spans.len(),
        "a span reported twice: {spans:#?}"
    );

    let named = |name: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|s| s.name == name && s.span_kind == kind)
            .unwrap_or_else(|| panic!("no {name} span"))
    };
    let orch = named("orchestration:order_with_approval", SpanKind::Server);
    for (key, value) in [
        ("durabletask.type", "orchestration"),
        ("durabletask.task.name", "order_with_approval"),
        ("durabletask.task.instance_id", id),
        ("durabletask.task.status", "Completed"),
    ] {
        assert_eq!(
            attr(orch, key).as_deref(),
            Some(value),
            "{key} of {orch:#?}"
        );
    }
    let call = named("activity:calculate_total", SpanKind::Client);
    let first_call = spans
        .iter()
        .filter(|s| s.name == call.name && s.span_kind == SpanKind::Client)
        .min_by_key(|s| s.start_time)
        .unwrap();
    for (key, value) in [
        ("durabletask.type", "activity"),
        ("durabletask.task.name", "calculate_total"),
        ("durabletask.task.instance_id", id),
        ("durabletask.task.task_id", "0"),
        ("durabletask.task.status", "Completed"),
    ] {
        assert_eq!(
            attr(first_call, key).as_deref(),
            Some(value),
            "{key} of {first_call:#?}"
        );
    }
    let sub = named("orchestration:process_order", SpanKind::Server);
    assert_eq!(
        attr(sub, "durabletask.type").as_deref(),
        Some("orchestration")
    );
    assert_ne!(
        attr(sub, "durabletask.task.instance_id").as_deref(),
        Some(id)
    );
    // The orchestration span covers the whole execution.
    assert!(orch.start_time <= first_call.start_time);
    assert!(orch.end_time >= sub.end_time);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_with_approval_spans_on_memory() {
    let (id, trace) = approved_order(Arc::new(MemoryBackend::new()), 1024).await;
    check(&id, trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_with_approval_spans_on_sqlite() {
    let backend = durable::sqlite::SqliteBackend::in_memory().unwrap();
    let (id, trace) = approved_order(Arc::new(backend), 1024).await;
    check(&id, trace);
}

/// Without the sticky cache every episode replays the history from the
/// start: the spans are the same, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_episodes_report_no_span_twice() {
    let (id, trace) = approved_order(Arc::new(MemoryBackend::new()), 0).await;
    check(&id, trace);
}
