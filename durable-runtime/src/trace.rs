//! Distributed tracing: W3C trace contexts, finished spans, and where
//! they go.
//!
//! A [`TraceContext`] is a W3C `traceparent` (and `tracestate`), the form
//! every Durable Task SDK stores in history and sends on the wire. The
//! runtime records one on the events that start work elsewhere
//! (`ExecutionStarted`, `TaskScheduled`, `SubOrchestrationInstanceCreated`,
//! `EventSent`, see `HistoryEvent::trace`),
//! so a trace follows an orchestration across workers, processes and
//! languages.
//!
//! The runtime describes each finished piece of work as a [`SpanRecord`]
//! (the Durable Task span schema: names such as `orchestration:{name}`,
//! `durabletask.*` attributes, see `docs/observability.md`), with explicit
//! ids and start times: an orchestration's span is reported once, when its
//! execution ends, with the id its children were given while it ran. Every
//! record is logged as a `tracing` event (target `durable::span`) and handed
//! to the [`SpanSink`]s installed with [`add_sink`]; the `durable-otel`
//! crate's sink exports them to OpenTelemetry.
//!
//! ```
//! use durable_runtime::trace::{add_sink, SpanRecorder};
//! let recorder = SpanRecorder::new();
//! add_sink(recorder.clone());
//! // ... run orchestrations; then, in a test:
//! let spans = recorder.spans();
//! # let _ = spans;
//! ```

/// A point in time (the same type as [`crate::history::Timestamp`]).
type Timestamp = chrono::DateTime<chrono::Utc>;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A W3C trace context: the `traceparent` header value
/// (`00-{trace id}-{span id}-{flags}`) and the optional `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `00-{32 hex digits}-{16 hex digits}-{2 hex digits}`.
    pub traceparent: String,
    /// Vendor-specific trace state, passed on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// A 16-byte trace id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

/// A stable 64-bit hash of `parts` (FNV-1a with a separator between
/// parts, then a splitmix64 finish), started from `seed`: the same in every
/// process and every version of durable.
fn digest64(seed: u64, parts: &[&str]) -> u64 {
    let mut h = seed;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const SEED_A: u64 = 0xcbf2_9ce4_8422_2325;
const SEED_B: u64 = 0x5c1e_7a0e_d0ab_4e11;

/// 64 random bits from a per-thread generator (splitmix64) seeded once
/// from the OS: ids need to be unique, not secret, and a system call per
/// id would cost more than the rest of a span.
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let b = uuid::Uuid::new_v4().into_bytes();
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
        });
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&random_u64().to_be_bytes());
        id[8..].copy_from_slice(&random_u64().to_be_bytes());
        if id == [0; 16] {
            id[15] = 1;
        }
        TraceId(id)
    }

    /// The id derived from `parts`: the same parts give the same id in
    /// every process and every version of durable (a stable hash of them).
    pub fn derived(parts: &[&str]) -> Self {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&digest64(SEED_A, parts).to_be_bytes());
        id[8..].copy_from_slice(&digest64(SEED_B, parts).to_be_bytes());
        if id == [0; 16] {
            id[15] = 1;
        }
        TraceId(id)
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        match random_u64() {
            0 => SpanId(1u64.to_be_bytes()),
            x => SpanId(x.to_be_bytes()),
        }
    }

    /// A span id written as 16 lowercase hex digits, not all zeros.
    ///
    /// ```
    /// use durable_runtime::trace::SpanId;
    /// assert_eq!(SpanId::parse("b7ad6b7169203331").unwrap().to_string(), "b7ad6b7169203331");
    /// assert!(SpanId::parse("0000000000000000").is_none());
    /// assert!(SpanId::parse("B7AD6B7169203331").is_none());
    /// ```
    pub fn parse(hex: &str) -> Option<SpanId> {
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        parse_hex::<8>(hex).filter(|b| *b != [0; 8]).map(SpanId)
    }

    /// The id derived from `parts`, stable like [`TraceId::derived`]: an
    /// orchestration's span id is the same in every episode.
    pub fn derived(parts: &[&str]) -> Self {
        match digest64(SEED_B ^ SEED_A, parts) {
            0 => SpanId(1u64.to_be_bytes()),
            x => SpanId(x.to_be_bytes()),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut s = String::with_capacity(2 * bytes.len());
    push_hex(&mut s, bytes);
    f.write_str(&s)
}

/// `00-{trace}-{span}-{flags}`.
pub(crate) fn traceparent(trace: TraceId, span: SpanId, flags: u8) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, &trace.0);
    s.push('-');
    push_hex(&mut s, &span.0);
    s.push('-');
    push_hex(&mut s, &[flags]);
    s
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

/// The longest `tracestate` kept (the W3C format's recommended limit).
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// The most `tracestate` members kept (the W3C format's limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A `traceparent` that is not of the W3C form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid traceparent \"{0}\": expected 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, \
     with a trace id and span id that are not all zeros"
)]
pub struct TraceContextError(pub String);

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            // Read, for contexts earlier versions of durable stored as
            // given; `TraceContext::parse` refuses them from now on.
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(s[2 * i])? << 4) | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

impl TraceContext {
    /// The context of span `span_id` in trace `trace_id`, sampled.
    pub fn new(trace_id: TraceId, span_id: SpanId) -> Self {
        TraceContext {
            traceparent: traceparent(trace_id, span_id, 1),
            tracestate: None,
        }
    }

    /// A context from a `traceparent` header value (and `tracestate`),
    /// checked and rewritten in the form this version of the W3C format
    /// defines (version `00`, so a future version's extra fields are not
    /// passed on). A `tracestate` longer than [`MAX_TRACESTATE_BYTES`] or
    /// with more than [`MAX_TRACESTATE_MEMBERS`] members is dropped, as the
    /// W3C format allows: it is copied onto every call the orchestration
    /// makes, outside the payload limits.
    ///
    /// ```
    /// use durable_runtime::trace::TraceContext;
    /// let t = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None).unwrap();
    /// assert_eq!(t.span_id().unwrap().to_string(), "b7ad6b7169203331");
    /// assert!(t.sampled());
    /// assert!(TraceContext::parse("nonsense", None).is_err());
    /// ```
    pub fn parse(traceparent: &str, tracestate: Option<String>) -> Result<Self, TraceContextError> {
        // W3C trace contexts are lowercase: an uppercase one is not valid
        // (other SDKs drop it), so it is not taken either.
        if traceparent.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(TraceContextError(traceparent.to_string()));
        }
        let read = TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: None,
        };
        let (trace, span, flags) = read
            .ids()
            .ok_or_else(|| TraceContextError(traceparent.to_string()))?;
        let tracestate = tracestate.filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_TRACESTATE_BYTES
                && s.split(',').count() <= MAX_TRACESTATE_MEMBERS
        });
        Ok(TraceContext {
            traceparent: self::traceparent(trace, span, flags),
            tracestate,
        })
    }

    /// Whether the context is marked sampled (flag `01`): a span in an
    /// unsampled trace is not exported, and its children are unsampled
    /// too. An ill-formed context counts as sampled.
    pub fn sampled(&self) -> bool {
        self.ids().is_none_or(|(_, _, flags)| flags & 1 == 1)
    }

    /// Trace id, span id and flags, if the `traceparent` is well formed
    /// (contexts read from history written elsewhere may not be).
    pub fn ids(&self) -> Option<(TraceId, SpanId, u8)> {
        let mut parts = self.traceparent.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if parse_hex::<1>(version).is_none()
            || version == "ff"
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let trace = TraceId(parse_hex::<16>(trace)?);
        let span = SpanId(parse_hex::<8>(span)?);
        let [flags] = parse_hex::<1>(flags)?;
        if trace.0 == [0; 16] || span.0 == [0; 8] {
            return None;
        }
        Some((trace, span, flags))
    }

    /// The trace id, if well formed.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.ids().map(|(t, _, _)| t)
    }

    /// The span id, if well formed.
    pub fn span_id(&self) -> Option<SpanId> {
        self.ids().map(|(_, s, _)| s)
    }

    /// The context of another span of the same trace (flags and trace
    /// state kept); `None` if this context is not well formed.
    pub fn with_span(&self, span_id: SpanId) -> Option<TraceContext> {
        let (trace, _, flags) = self.ids()?;
        Some(TraceContext {
            traceparent: traceparent(trace, span_id, flags),
            tracestate: self.tracestate.clone(),
        })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent)
    }
}

/// The task tag under which a store that keeps an activity's tags but
/// not its trace context keeps that context's `traceparent` (see
/// [`stored_tags`]).
pub const TRACEPARENT_TAG: &str = "durable.traceparent";
/// The task tag for the `tracestate` (see [`TRACEPARENT_TAG`]).
pub const TRACESTATE_TAG: &str = "durable.tracestate";

/// An activity's tags with its trace context added, for a store that keeps
/// tags as one value (the SQL stores); [`split_stored_tags`] undoes it.
///
/// ```
/// use durable_runtime::trace::{split_stored_tags, stored_tags, SpanId, TraceContext, TraceId};
/// let t = TraceContext::new(TraceId::derived(&["t"]), SpanId::derived(&["s"]));
/// let tags = [("durable.attempt".to_string(), "2".to_string())].into();
/// let stored = stored_tags(&tags, Some(&t));
/// assert_eq!(split_stored_tags(stored), (tags, Some(t)));
/// ```
pub fn stored_tags(
    tags: &std::collections::BTreeMap<String, String>,
    trace: Option<&TraceContext>,
) -> std::collections::BTreeMap<String, String> {
    let mut out = tags.clone();
    if let Some(t) = trace {
        out.insert(TRACEPARENT_TAG.to_string(), t.traceparent.clone());
        if let Some(state) = &t.tracestate {
            out.insert(TRACESTATE_TAG.to_string(), state.clone());
        }
    }
    out
}

/// Tags as [`stored_tags`] wrote them, split back into the tags and the
/// trace context (none if the stored one is not well formed).
pub fn split_stored_tags(
    mut tags: std::collections::BTreeMap<String, String>,
) -> (
    std::collections::BTreeMap<String, String>,
    Option<TraceContext>,
) {
    let parent = tags.remove(TRACEPARENT_TAG);
    let state = tags.remove(TRACESTATE_TAG);
    let trace = parent.and_then(|p| TraceContext::parse(&p, state).ok());
    (tags, trace)
}

/// The role of a span, as OpenTelemetry names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// The start of work elsewhere that is waited for (an activity or
    /// sub-orchestration called by an orchestration).
    Client,
    /// Work done on request (an orchestration's execution, an activity's run).
    Server,
    /// A message sent without waiting (a new orchestration, an event).
    Producer,
    /// A message received.
    Consumer,
    /// Work within a process (a timer).
    Internal,
}

/// Span attribute names of the Durable Task schema, shared with the other
/// Durable Task SDKs.
pub mod attr {
    /// `orchestration`, `activity`, `timer` or `event`.
    pub const TYPE: &str = "durabletask.type";
    /// Orchestrator, activity or event name.
    pub const TASK_NAME: &str = "durabletask.task.name";
    /// Orchestrator or activity version.
    pub const TASK_VERSION: &str = "durabletask.task.version";
    /// The orchestration instance id.
    pub const INSTANCE_ID: &str = "durabletask.task.instance_id";
    /// The execution id of the orchestration.
    pub const EXECUTION_ID: &str = "durabletask.task.execution_id";
    /// The task's sequence number in its orchestration.
    pub const TASK_ID: &str = "durabletask.task.task_id";
    /// `Completed`, `Failed`, `Terminated` or `ContinuedAsNew`.
    pub const STATUS: &str = "durabletask.task.status";
    /// The instance an event is sent to.
    pub const EVENT_TARGET: &str = "durabletask.event.target_instance_id";
    /// When a timer fires (RFC 3339).
    pub const FIRE_AT: &str = "durabletask.fire_at";
}

/// A finished span: what the runtime reports once a piece of work is done.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// E.g. `orchestration:process_order` or `activity:charge`.
    pub name: String,
    /// Its role.
    pub kind: SpanKind,
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent, when it has one (in this or another process).
    pub parent_span_id: Option<SpanId>,
    /// The trace state of the context it continues.
    pub tracestate: Option<String>,
    /// Whether its trace is sampled (the W3C flag, taken from the context
    /// it continues; a new trace is sampled). Sinks should not export a
    /// span that is not.
    pub sampled: bool,
    /// When it started.
    pub start: Timestamp,
    /// When it ended.
    pub end: Timestamp,
    /// `durabletask.*` attributes ([`attr`]), in a fixed order.
    pub attributes: Vec<(&'static str, String)>,
    /// The error message, for a span that failed.
    pub error: Option<String>,
}

impl SpanRecord {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// This span's own context (to give its children).
    pub fn context(&self) -> TraceContext {
        TraceContext {
            traceparent: traceparent(self.trace_id, self.span_id, u8::from(self.sampled)),
            tracestate: self.tracestate.clone(),
        }
    }
}

/// Where finished spans go (an OpenTelemetry exporter, a test's recorder).
pub trait SpanSink: Send + Sync + 'static {
    /// Takes one finished span. Called on the worker's and client's tasks:
    /// it should not block for long.
    fn export(&self, span: &SpanRecord);
}

fn sinks() -> &'static RwLock<Vec<Arc<dyn SpanSink>>> {
    static SINKS: RwLock<Vec<Arc<dyn SpanSink>>> = RwLock::new(Vec::new());
    &SINKS
}

/// Set once the first sink is installed (read on every episode: cheaper
/// than the lock).
static HAS_SINKS: AtomicBool = AtomicBool::new(false);

/// Installs a sink for the whole process: every span reported from then on
/// goes to it (and to the sinks installed before it).
pub fn add_sink(sink: impl SpanSink) {
    sinks()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::new(sink));
    HAS_SINKS.store(true, Ordering::Release);
}

/// Whether any sink is installed (when none is, spans are only logged).
pub fn has_sinks() -> bool {
    HAS_SINKS.load(Ordering::Acquire)
}

/// Whether a finished span would be seen: a sink is installed or the
/// `durable::span` log is on. When not, the runtime does not build spans.
pub fn wanted() -> bool {
    has_sinks() || tracing::enabled!(target: "durable::span", tracing::Level::DEBUG)
}

/// Reports a finished span: logs it as a `tracing` event (target
/// `durable::span`, level debug) and hands it to every installed sink.
pub fn emit(span: SpanRecord) {
    tracing::debug!(
        target: "durable::span",
        name = %span.name,
        kind = ?span.kind,
        trace_id = %span.trace_id,
        span_id = %span.span_id,
        parent_span_id = span.parent_span_id.map(|p| p.to_string()),
        duration_ms = (span.end - span.start).num_milliseconds(),
        error = span.error.as_deref(),
        "span"
    );
    for sink in sinks().read().unwrap_or_else(|p| p.into_inner()).iter() {
        sink.export(&span);
    }
}

/// A sink that keeps every span, for tests.
#[derive(Clone, Default)]
pub struct SpanRecorder(Arc<Recorded>);

#[derive(Default)]
struct Recorded {
    spans: Mutex<Vec<SpanRecord>>,
    changed: tokio::sync::Notify,
}

impl SpanRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The spans recorded so far, in the order they were reported.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.0
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the spans recorded satisfy `done` (checked at each new
    /// span), for at most `limit`; returns them, or on timeout the spans
    /// recorded by then as the error.
    pub async fn wait_for(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Result<Vec<SpanRecord>, Vec<SpanRecord>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.spans());
            }
        }
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: TraceId) -> Vec<SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

impl fmt::Debug for SpanRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanRecorder").finish_non_exhaustive()
    }
}

impl SpanSink for SpanRecorder {
    fn export(&self, span: &SpanRecord) {
        self.0
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(span.clone());
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_print() {
        let t = TraceContext::new(TraceId::derived(&["a"]), SpanId::derived(&["b"]));
        let (trace, span, flags) = t.ids().unwrap();
        assert_eq!(TraceContext::parse(&t.traceparent, None).unwrap(), t);
        assert_eq!(flags, 1);
        assert_eq!(trace, TraceId::derived(&["a"]));
        let child = t.with_span(SpanId::derived(&["c"])).unwrap();
        assert_eq!(child.trace_id(), Some(trace));
        assert_ne!(child.span_id(), Some(span));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            let e = TraceContext::parse(bad, None).unwrap_err();
            assert!(e.to_string().contains("expected 00-"), "{e}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00_and_a_long_tracestate_dropped() {
        let t = TraceContext::parse(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more",
            Some("a=1,b=2".into()),
        )
        .unwrap();
        assert_eq!(
            t.traceparent,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        );
        assert_eq!(t.tracestate.as_deref(), Some("a=1,b=2"));
        assert!(!t.sampled());
        let p = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let long = "k=".to_string() + &"v".repeat(MAX_TRACESTATE_BYTES);
        assert_eq!(TraceContext::parse(p, Some(long)).unwrap().tracestate, None);
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(TraceContext::parse(p, Some(many)).unwrap().tracestate, None);
        assert_eq!(
            TraceContext::parse(p, Some(String::new()))
                .unwrap()
                .tracestate,
            None
        );
        // One an earlier version stored in upper case is still read.
        let old = TraceContext {
            traceparent: "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01".into(),
            tracestate: None,
        };
        assert_eq!(
            old.trace_id().unwrap().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    /// What durable derives for the parts below, written down when the
    /// derivation was made: it must never change.
    const PINNED_SPAN: &str = "3252f90f6d76d642";
    const PINNED_TRACE: &str = "3e7313779b8849fc34d8ce28c37fdc7b";

    #[test]
    fn derived_ids_are_stable() {
        // Pinned to literal values: ids derived in one version of durable
        // must match those of another, since one execution's episodes may
        // run on both (a rolling upgrade) and children name their parent by
        // the id the scheduling episode derived.
        assert_eq!(
            SpanId::derived(&["orchestration", "order-1", "e1"]).to_string(),
            PINNED_SPAN
        );
        assert_eq!(
            TraceId::derived(&["trace", "order-1", "e1"]).to_string(),
            PINNED_TRACE
        );
        assert_ne!(
            SpanId::derived(&["orchestration", "order-1", "e1"]),
            SpanId::derived(&["orchestration", "order-1", "e2"])
        );
        assert_ne!(TraceId::random(), TraceId::random());
    }
}
