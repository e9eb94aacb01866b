//! OpenTelemetry export of durable's traces (the `otel` feature of the
//! `durable` crate, `durable::otel`).
//!
//! durable reports each finished piece of work as a
//! [`SpanRecord`] with the Durable
//! Task span schema and explicit ids and times (see
//! `docs/observability.md`). [`OtelSink`] turns those into OpenTelemetry
//! spans and hands them to a span processor, so any exporter works: OTLP
//! ([`init_otlp`]), an in-memory one in tests, or your own.
//!
//! Three lines send every span over OTLP/gRPC to the collector at
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4317`):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let _otel = durable_otel::init_otlp("order-service")?;
//! // ... start workers and clients; spans are exported as they finish.
//! # Ok(()) }
//! ```
//!
//! With your own exporter (here the SDK's in-memory one, as tests use):
//!
//! ```
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SimpleSpanProcessor};
//! let exporter = InMemorySpanExporter::default();
//! durable_otel::OtelSink::new(SimpleSpanProcessor::new(exporter.clone())).install();
//! ```

/// Re-export: the OpenTelemetry API this crate builds on.
pub use opentelemetry;
/// Re-export: the OpenTelemetry SDK (processors, exporters, resources).
pub use opentelemetry_sdk;

use durable_runtime::trace::{SpanKind, SpanRecord, SpanSink, TraceContext};
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::sync::Arc;
use std::time::SystemTime;

/// A [`SpanSink`] that exports durable's spans through an OpenTelemetry
/// span processor.
///
/// durable's spans carry ids it chose (an orchestration's span id is the
/// same in every episode; its children name it as parent before it ends)
/// and start times read from history, which the OpenTelemetry tracer API
/// cannot set; so the sink builds the finished spans itself and gives them
/// to the processor, as a tracer would at a span's end.
#[derive(Clone, Debug)]
pub struct OtelSink {
    processor: Arc<dyn SpanProcessor>,
    scope: InstrumentationScope,
}

impl OtelSink {
    /// A sink feeding `processor` (a `BatchSpanProcessor` for production,
    /// a `SimpleSpanProcessor` in tests), with the default resource
    /// (`service.name` from `OTEL_SERVICE_NAME`, else `unknown_service`).
    pub fn new(processor: impl SpanProcessor + 'static) -> Self {
        Self::with_resource(processor, Resource::builder().build())
    }

    /// A sink feeding `processor`, its spans describing `resource`.
    pub fn with_resource(mut processor: impl SpanProcessor + 'static, resource: Resource) -> Self {
        processor.set_resource(&resource);
        OtelSink {
            processor: Arc::new(processor),
            scope: InstrumentationScope::builder("durable")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Installs the sink for the whole process (see
    /// [`durable_runtime::trace::add_sink`]); returns a handle that
    /// flushes it.
    pub fn install(self) -> OtelGuard {
        let processor = self.processor.clone();
        durable_runtime::trace::add_sink(self);
        OtelGuard { processor }
    }

    /// The OpenTelemetry form of a durable span.
    pub fn span_data(&self, span: &SpanRecord) -> SpanData {
        let flags = if span.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        let state = span
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(span.trace_id.0),
                SpanId::from_bytes(span.span_id.0),
                flags,
                false,
                state,
            ),
            parent_span_id: span
                .parent_span_id
                .map(|p| SpanId::from_bytes(p.0))
                .unwrap_or(SpanId::INVALID),
            parent_span_is_remote: span.parent_span_id.is_some(),
            span_kind: kind(span.kind),
            name: span.name.clone().into(),
            start_time: SystemTime::from(span.start),
            end_time: SystemTime::from(span.end),
            attributes: span
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone()))
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match &span.error {
                Some(e) => Status::error(e.clone()),
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

fn kind(k: SpanKind) -> opentelemetry::trace::SpanKind {
    use opentelemetry::trace::SpanKind as K;
    match k {
        SpanKind::Client => K::Client,
        SpanKind::Server => K::Server,
        SpanKind::Producer => K::Producer,
        SpanKind::Consumer => K::Consumer,
        SpanKind::Internal => K::Internal,
    }
}

impl SpanSink for OtelSink {
    fn export(&self, span: &SpanRecord) {
        // The trace's sampling decision was made upstream: an unsampled
        // span is not exported (its context still travels, unsampled).
        if span.sampled {
            self.processor.on_end(self.span_data(span));
        }
    }
}

/// How long [`OtelGuard::flush`] waits for the exporter.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Flushes the installed sink's processor: [`flush`](OtelGuard::flush) on
/// demand, and when dropped (at the end of `main`), so the last spans are
/// exported before the process exits.
#[derive(Debug)]
pub struct OtelGuard {
    processor: Arc<dyn SpanProcessor>,
}

impl OtelGuard {
    /// Exports what the processor holds now.
    pub fn flush(&self) {
        // On a thread of its own, waited for at most FLUSH_LIMIT: a batch
        // processor's flush blocks until its exporter has sent, and an
        // exporter that needs the tokio runtime the caller is running on
        // (OTLP over gRPC on a current-thread or one-worker runtime) cannot
        // send while the caller blocks here. This does not make it send
        // (those spans are lost, and the thread is left to finish or not);
        // it makes the caller return, with a message, instead of hanging.
        let processor = self.processor.clone();
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("durable-otel-flush".into())
            .spawn(move || {
                let _ = done.send(processor.force_flush());
            });
        if let Err(e) = spawned {
            eprintln!("durable-otel: could not start a thread to flush spans: {e}");
            return;
        }
        match wait.recv_timeout(FLUSH_LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("durable-otel: flushing spans failed: {e}"),
            Err(_) => eprintln!(
                "durable-otel: flushing spans did not finish within {FLUSH_LIMIT:?}; the spans \
                 not yet exported are lost (is the collector at OTEL_EXPORTER_OTLP_ENDPOINT \
                 reachable?)"
            ),
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The error of [`init_otlp`]: the OTLP exporter could not be built.
pub type InitError = opentelemetry_otlp::ExporterBuildError;

/// Exports durable's spans over OTLP/gRPC (batched) to the collector at
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4317`), as
/// service `service_name`. Call it once, inside a tokio runtime; keep the
/// guard until the end of `main`.
pub fn init_otlp(service_name: &str) -> Result<OtelGuard, InitError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(OtelSink::with_resource(BatchSpanProcessor::builder(exporter).build(), resource).install())
}

/// The trace context of the OpenTelemetry span current on this thread, to
/// continue in durable (pass it as `ScheduleOptions::trace_parent`); `None`
/// outside a span.
///
/// ```
/// assert_eq!(durable_otel::current_trace_context(), None);
/// ```
pub fn current_trace_context() -> Option<TraceContext> {
    let cx = opentelemetry::Context::current();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(TraceContext {
        traceparent: format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ),
        tracestate: (!state.is_empty()).then_some(state),
    })
}
