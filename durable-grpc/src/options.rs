//! How to reach a sidecar: endpoint, task hub, credentials, transport limits
//! and reconnect policy.

use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
use durable_runtime::Registry;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The default of [`GrpcOptions::max_message_size`]: 4 MiB, gRPC's usual
/// limit, which sidecars apply to what they receive.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The default of [`GrpcOptions::max_incoming_message_size`]: 64 MiB.
pub const DEFAULT_MAX_INCOMING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The endpoint of the Durable Task Scheduler emulator, the default.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:8080";

/// The task hub the Durable Task Scheduler emulator serves by default.
pub const DEFAULT_TASK_HUB: &str = "default";

/// A boxed future returning a bearer token.
pub type TokenFuture =
    Pin<Box<dyn Future<Output = Result<String, Box<dyn std::error::Error + Send + Sync>>> + Send>>;

/// Supplies bearer tokens, e.g. from an Azure credential.
///
/// Called before every call to the sidecar (and before every reconnect of
/// the work-item stream), so an implementation should cache its token until
/// shortly before it expires. Any `Fn() -> impl Future<Output =
/// Result<String, E>>` closure is a provider.
pub trait TokenProvider: Send + Sync + 'static {
    /// Returns the token to send as `authorization: Bearer <token>`.
    fn token(&self) -> TokenFuture;
}

impl<F, Fut, E> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    fn token(&self) -> TokenFuture {
        let fut = self();
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Capped exponential backoff with full jitter, used when the work-item
/// stream breaks or the sidecar cannot be reached.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
    /// Growth factor per failed attempt.
    pub multiplier: f64,
}

impl Default for ReconnectPolicy {
    /// 100 ms, doubling, at most 15 s.
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(15),
            multiplier: 2.0,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before retry number `attempt` (0-based): a uniformly random
    /// duration between half the capped exponential delay and all of it, so
    /// that many workers restarted together do not reconnect in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let capped = (self.initial_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        let jittered = capped * (0.5 + 0.5 * fastrand::f64());
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// Names (and versions) this worker serves, sent to the sidecar so that it
/// only hands out matching work items. Without filters a sidecar sends every
/// orchestration and activity of the task hub to every connected worker; with
/// them, workers in different languages can share one task hub, each serving
/// its own, and workers of different versions share one hub during a rolling
/// upgrade, each receiving only the instances it can run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkItemFilters {
    /// Orchestrator names.
    pub orchestrations: Vec<String>,
    /// Activity names.
    pub activities: Vec<String>,
    /// The versions taken of an orchestrator name (`""` stands for
    /// instances started without a version); a name absent here takes
    /// every version.
    pub orchestration_versions: BTreeMap<String, Vec<String>>,
}

impl WorkItemFilters {
    /// What a worker with `registry` runs: its orchestrator and activity
    /// names, and for an orchestrator registered only with versions, those
    /// versions (and instances without a version, which run the oldest
    /// registration). A name with a registration without a version takes
    /// every version. Equal to
    /// [`of_worker`](Self::of_worker) with default versioning.
    ///
    /// ```
    /// use durable_grpc::WorkItemFilters;
    /// use durable_runtime::{ActivityError, Registry};
    /// let registry = Registry::new()
    ///     .activity_fn("greet", |_c, n: String| async move { Ok::<_, ActivityError>(n) });
    /// let filters = WorkItemFilters::of_registry(&registry);
    /// assert_eq!(filters.activities, ["greet"]);
    /// assert!(filters.orchestrations.is_empty());
    /// ```
    pub fn of_registry(registry: &Registry) -> Self {
        Self::of_worker(registry, &VersioningOptions::default())
    }

    /// What a worker with `registry` and `versioning` runs. With
    /// [`FailureStrategy::Reject`] the match strategy narrows the versions
    /// too ([`MatchStrategy::Strict`]: only the worker's version), so the
    /// sidecar sends such a worker no instance it would only give back; with
    /// [`FailureStrategy::Fail`] it does not, since the worker must see those
    /// instances to fail them. A name left with no version it can run is not
    /// listed.
    ///
    /// ```
    /// use durable_grpc::WorkItemFilters;
    /// use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
    /// use durable_runtime::{OrchestrationContext, OrchestrationError, Registry};
    ///
    /// async fn run(_: OrchestrationContext, _: ()) -> Result<(), OrchestrationError> { Ok(()) }
    /// let registry = Registry::new()
    ///     .orchestrator_version_fn("order", "1", run)
    ///     .orchestrator_version_fn("order", "2", run);
    /// let all = WorkItemFilters::of_registry(&registry);
    /// assert_eq!(all.orchestration_versions["order"], ["", "1", "2"]);
    ///
    /// let v2_only = VersioningOptions {
    ///     version: "2".into(),
    ///     match_strategy: MatchStrategy::Strict,
    ///     failure_strategy: FailureStrategy::Reject,
    ///     ..Default::default()
    /// };
    /// let strict = WorkItemFilters::of_worker(&registry, &v2_only);
    /// assert_eq!(strict.orchestration_versions["order"], ["2"]);
    /// ```
    pub fn of_worker(registry: &Registry, versioning: &VersioningOptions) -> Self {
        let narrow = versioning.match_strategy != MatchStrategy::None
            && versioning.failure_strategy == FailureStrategy::Reject;
        let mut filters = WorkItemFilters {
            activities: registry
                .activity_names()
                .into_iter()
                .map(str::to_string)
                .collect(),
            ..WorkItemFilters::default()
        };
        for name in registry.orchestrator_names() {
            let registered = registry.orchestrator_versions(name);
            // `None`: every version (a registration without a version runs
            // them all, see `Registry`); else the versions it runs.
            let runs: Option<Vec<String>> = if registered == [None] {
                None
            } else {
                let mut v: Vec<String> = std::iter::once(String::new())
                    .chain(registered.iter().flatten().map(|v| v.to_string()))
                    .collect();
                v.dedup();
                Some(v)
            };
            let taken = match (runs, narrow) {
                (runs, false) => runs,
                (None, true) if versioning.match_strategy == MatchStrategy::Strict => {
                    Some(vec![versioning.version.clone()])
                }
                // Older versions cannot be listed: the worker gives back
                // newer ones itself.
                (None, true) => None,
                (Some(v), true) => Some(
                    v.into_iter()
                        .filter(|v| versioning.accepts(Some(v)))
                        .collect(),
                ),
            };
            match taken {
                Some(v) if v.is_empty() => continue,
                Some(v) => {
                    filters.orchestration_versions.insert(name.to_string(), v);
                }
                None => {}
            }
            filters.orchestrations.push(name.to_string());
        }
        filters
    }
}

/// Options of a [`crate::GrpcBackend`].
///
/// ```
/// use durable_grpc::GrpcOptions;
/// use std::time::Duration;
///
/// let options = GrpcOptions::new("https://my-scheduler.example:443")
///     .task_hub("orders")
///     .bearer_token(|| async { Ok::<_, std::io::Error>("token".to_string()) })
///     .max_message_size(16 * 1024 * 1024)
///     .keep_alive(Duration::from_secs(20), Duration::from_secs(10));
/// assert_eq!(options.endpoint, "https://my-scheduler.example:443");
/// assert_eq!(options.task_hub, "orders");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct GrpcOptions {
    /// `http://host:port` or `https://host:port` (TLS, checked against the
    /// web PKI roots). Default: [`DEFAULT_ENDPOINT`].
    pub endpoint: String,
    /// Sent as the `taskhub` metadata header on every call. Default:
    /// [`DEFAULT_TASK_HUB`].
    pub task_hub: String,
    /// Source of `authorization: Bearer` tokens, if the sidecar needs them.
    pub token_provider: Option<Arc<dyn TokenProvider>>,
    /// Extra metadata headers sent with every call, e.g. Dapr's
    /// `dapr-api-token`. Names are lowercase ASCII; values ASCII.
    pub headers: Vec<(String, String)>,
    /// A PEM certificate (or bundle) of a certificate authority to trust for
    /// `https` endpoints, besides the web PKI roots (e.g. a private CA).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Deadline of ordinary calls (not of waits, which take their own, nor of
    /// the work-item stream).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (`None`: no pings).
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for a keep-alive ping's answer.
    pub keep_alive_timeout: Duration,
    /// Largest message sent, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]). Larger requests are refused before
    /// they are sent with
    /// [`durable_runtime::backend::BackendError::PayloadTooLarge`]; an
    /// activity result or an episode result over it fails the activity or
    /// the orchestration instead.
    pub max_message_size: usize,
    /// Largest message accepted from the sidecar, in bytes (default
    /// [`DEFAULT_MAX_INCOMING_MESSAGE_SIZE`]). Larger than the outgoing
    /// limit because a work item carries its instance's history: sidecars
    /// that stream long histories separately (the worker announces that it
    /// can fetch them) keep work items small, but others send the history
    /// inline. A work item over this limit breaks the work-item stream and
    /// is logged as an error naming this option.
    pub max_incoming_message_size: usize,
    /// Backoff of the work-item stream's reconnects.
    pub reconnect: ReconnectPolicy,
    /// Names this worker serves (`None`: everything).
    pub work_item_filters: Option<WorkItemFilters>,
    /// How many orchestration work items the sidecar may hand this worker
    /// at once (announced when the work-item stream opens; default 100, the
    /// worker's own default). Some sidecars send nothing when it is 0.
    pub max_concurrent_orchestrations: u32,
    /// The same for activities (default 100).
    pub max_concurrent_activities: u32,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            task_hub: DEFAULT_TASK_HUB.to_string(),
            token_provider: None,
            headers: Vec::new(),
            tls_ca_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_incoming_message_size: DEFAULT_MAX_INCOMING_MESSAGE_SIZE,
            reconnect: ReconnectPolicy::default(),
            work_item_filters: None,
            max_concurrent_orchestrations: 100,
            max_concurrent_activities: 100,
        }
    }
}

impl fmt::Debug for GrpcOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcOptions")
            .field("endpoint", &self.endpoint)
            .field("task_hub", &self.task_hub)
            .field(
                "token_provider",
                &self.token_provider.as_ref().map(|_| ".."),
            )
            // Header values may be secrets: names only.
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|p| p.len()))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_incoming_message_size", &self.max_incoming_message_size)
            .field("reconnect", &self.reconnect)
            .field("work_item_filters", &self.work_item_filters)
            .finish_non_exhaustive()
    }
}

impl GrpcOptions {
    /// Default options for this endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        GrpcOptions {
            endpoint: endpoint.into(),
            ..GrpcOptions::default()
        }
    }

    /// Sets the task hub name.
    pub fn task_hub(mut self, name: impl Into<String>) -> Self {
        self.task_hub = name.into();
        self
    }

    /// Sends `authorization: Bearer <token>` with every call, the token
    /// coming from `provider` (see [`TokenProvider`]).
    pub fn bearer_token(mut self, provider: impl TokenProvider) -> Self {
        self.token_provider = Some(Arc::new(provider));
        self
    }

    /// Sends a metadata header with every call (e.g. `dapr-api-token` for a
    /// Dapr sidecar with API-token authentication).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Trusts this certificate authority (PEM) for `https` endpoints, in
    /// addition to the web PKI roots.
    pub fn tls_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the deadline of ordinary calls.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the HTTP/2 keep-alive interval and timeout.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self.keep_alive_timeout = timeout;
        self
    }

    /// Sets the largest message sent, in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the largest message accepted from the sidecar, in bytes
    /// (`usize::MAX`: no limit).
    pub fn max_incoming_message_size(mut self, bytes: usize) -> Self {
        self.max_incoming_message_size = bytes;
        self
    }

    /// Sets the reconnect backoff.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Sets the concurrency announced to the sidecar (keep it in line with
    /// the worker's own limits).
    pub fn max_concurrent(mut self, orchestrations: u32, activities: u32) -> Self {
        self.max_concurrent_orchestrations = orchestrations;
        self.max_concurrent_activities = activities;
        self
    }

    /// Only receive work items for these orchestrators and activities.
    pub fn work_item_filters(mut self, filters: WorkItemFilters) -> Self {
        self.work_item_filters = Some(filters);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_scheduler_emulator() {
        let o = GrpcOptions::default();
        assert_eq!(o.endpoint, "http://localhost:8080");
        assert_eq!(o.task_hub, "default");
        assert!(o.token_provider.is_none());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
        };
        for _ in 0..100 {
            let d0 = p.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d30 = p.delay(30);
            assert!(d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2));
            assert!(p.delay(u32::MAX) <= Duration::from_secs(2));
        }
    }
}
