//! [`SidecarServer`]: `TaskHubSidecarService` served from any durable
//! [`Backend`] (memory, SQLite, PostgreSQL), so workers and clients of any
//! Durable Task SDK (durable's [`GrpcBackend`](crate::GrpcBackend), the
//! Python, .NET, Java, JavaScript and Go SDKs) share the backend's task hub.
//!
//! Needs the `server` feature.
//!
//! ```
//! use durable_grpc::server::{ServerOptions, SidecarServer};
//! use durable_grpc::{GrpcBackend, GrpcOptions};
//! use durable_runtime::backend::MemoryBackend;
//! use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Serve an in-memory backend on a free loopback port, with a token.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let endpoint = format!("http://{}", listener.local_addr().unwrap());
//! let options = ServerOptions { token: Some("s3cret".into()), ..ServerOptions::default() };
//! let server = SidecarServer::with_options(Arc::new(MemoryBackend::new()), options);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server.serve(listener, async { let _ = stopped.await; }));
//!
//! // Any Durable Task SDK can now use it; here, durable's own gRPC backend.
//! let options = GrpcOptions::new(endpoint)
//!     .bearer_token(|| async { Ok::<_, std::io::Error>("s3cret".to_string()) });
//! let backend = Arc::new(GrpcBackend::connect(options).await.unwrap());
//! let registry = Registry::new()
//!     .activity_fn("double", |_ctx, x: i64| async move { Ok::<_, ActivityError>(x * 2) })
//!     .orchestrator_fn("doubler", |ctx, x: i64| async move {
//!         let y: i64 = ctx.call_activity_by_name("double", &x).await?;
//!         Ok(y)
//!     });
//! let worker = Worker::new(backend.clone(), registry).start().unwrap();
//! let client = Client::new(backend);
//! let id = client.schedule_by_name("doubler", &21, ScheduleOptions::default()).await.unwrap();
//! let state = client.wait_for_completion(&id, Duration::from_secs(30)).await.unwrap();
//! assert_eq!(state.output::<i64>().unwrap(), 42);
//! worker.shutdown().await;
//!
//! // Stop serving: the work leased to workers goes back to the backend.
//! stop.send(()).unwrap();
//! serving.await.unwrap().unwrap();
//! # });
//! ```
//!
//! Work items: each `GetWorkItems` stream has a task of its own that leases
//! orchestration episodes and activities from the backend and sends them.
//! The completion token a worker gets is the server's key into its table of
//! leased items, so a stale or foreign token is refused and changes nothing.
//! While a worker holds an item the server renews its lease with the
//! backend (the protocol has no renewal call); when the stream that brought
//! it closes, the item is given back at once, to be delivered again. Items
//! a stream's work-item filters exclude go to a stream whose filters take
//! them (or wait, held, until one opens).
//!
//! Task hubs: [`SidecarServer::new`] serves one backend as the hub
//! `default`; [`SidecarServer::with_hubs`] serves a backend per hub, opened
//! from a [`HubStore`] when a call's `taskhub` header first names it.
//!
//! See `docs/serve.md` for the RPCs and how they differ from other servers.

mod rpc;
mod status;
mod work;

use crate::options::DEFAULT_MAX_MESSAGE_SIZE;
use crate::proto::task_hub_sidecar_service_server as generated;
use durable_runtime::backend::{Backend, BackendError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tonic::Status;

/// The tonic service type [`SidecarServer::into_service`] returns, to add
/// to a tonic router of your own.
pub use generated::TaskHubSidecarServiceServer;

/// How a [`SidecarServer`] serves.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// When set, every call must carry `authorization: Bearer <token>`;
    /// others are refused with `UNAUTHENTICATED`.
    pub token: Option<String>,
    /// The largest request the server takes, in bytes (framing included);
    /// larger ones are refused with `RESOURCE_EXHAUSTED`, saying how large
    /// they were. Default: [`DEFAULT_MAX_MESSAGE_SIZE`] (4 MiB), what the
    /// Durable Task SDKs send at most by default.
    pub max_message_size: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            token: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// Why [`SidecarServer::serve`] stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed (the listener broke, ...).
    #[error("the sidecar server stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where a [`SidecarServer`] finds its task hubs: one backend per hub,
/// opened when a call first names the hub (the `taskhub` header; `default`
/// when absent) and kept open, so hubs are separate namespaces sharing one
/// store. [`SidecarServer::with_hubs`] takes one.
///
/// ```
/// use durable_grpc::server::{HubStore, SidecarServer, ServerOptions};
/// use durable_runtime::backend::{Backend, BackendError, MemoryBackend};
/// use std::sync::Arc;
///
/// /// A fresh in-memory backend per hub.
/// struct MemoryHubs;
///
/// #[async_trait::async_trait]
/// impl HubStore for MemoryHubs {
///     async fn open(&self, _hub: &str) -> Result<Arc<dyn Backend>, BackendError> {
///         Ok(Arc::new(MemoryBackend::new()))
///     }
///     async fn delete(&self, _hub: &str) -> Result<(), BackendError> {
///         Ok(()) // nothing stored outside the backend, which the server drops
///     }
/// }
///
/// let server = SidecarServer::with_hubs(Arc::new(MemoryHubs), ServerOptions::default());
/// ```
#[async_trait::async_trait]
pub trait HubStore: Send + Sync + 'static {
    /// Opens the backend of `hub`, creating its storage if there is none.
    /// `hub` is a valid name ([`check_hub_name`]). Called once per hub
    /// until it is deleted.
    async fn open(&self, hub: &str) -> Result<Arc<dyn Backend>, BackendError>;

    /// Deletes the storage of `hub` (`DeleteTaskHub`), after the server has
    /// closed its streams and dropped its backend. A hub that has no
    /// storage is not an error.
    async fn delete(&self, hub: &str) -> Result<(), BackendError>;
}

/// The task hub of a call without a `taskhub` header (or an empty one).
pub const DEFAULT_HUB: &str = "default";

/// Checks a task hub name: 1 to 32 ASCII letters, digits, `_` and `-`, so
/// that every store can name its storage after it (a file name, a
/// PostgreSQL schema).
///
/// ```
/// use durable_grpc::server::check_hub_name;
/// assert!(check_hub_name("orders-eu_1").is_ok());
/// assert!(check_hub_name("").is_err());
/// assert!(check_hub_name("../etc").is_err());
/// ```
pub fn check_hub_name(hub: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&hub.len())
        && hub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "task hub name {hub:?} is not allowed: use 1 to 32 ASCII letters, digits, '_' and '-'"
        ))
    }
}

/// Serves `TaskHubSidecarService` from a durable [`Backend`]. See the
/// [module docs](self).
pub struct SidecarServer {
    service: SidecarService,
}

impl std::fmt::Debug for SidecarServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarServer")
            .field("options", &self.service.hubs.options)
            .finish_non_exhaustive()
    }
}

/// The implementation of `TaskHubSidecarService` behind a
/// [`SidecarServer`]; what [`SidecarServer::into_service`] wraps.
#[derive(Clone)]
pub struct SidecarService {
    hubs: Arc<Hubs>,
}

impl std::fmt::Debug for SidecarService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarService").finish_non_exhaustive()
    }
}

/// The task hubs a server serves, and what they share.
pub(crate) struct Hubs {
    options: ServerOptions,
    /// Opens hubs on first use; none: only the one backend, as `default`.
    store: Option<Arc<dyn HubStore>>,
    /// The open hubs, by name.
    open: tokio::sync::Mutex<HashMap<String, Arc<Shared>>>,
    /// Set when the server shuts down: no hub opens any more.
    stopping: AtomicBool,
}

/// What the calls and the work-item streams of one task hub share.
pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    leases: work::Leases,
    /// Set when the server shuts down or the hub is deleted: streams and
    /// waits end.
    stopping: watch::Sender<bool>,
}

impl Shared {
    fn new(backend: Arc<dyn Backend>, options: ServerOptions) -> Arc<Shared> {
        Arc::new(Shared {
            backend,
            options,
            leases: work::Leases::new(),
            stopping: watch::channel(false).0,
        })
    }

    /// Resolves once the server is shutting down (or the hub is deleted).
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl Hubs {
    /// The hub a call names, opened if it is not yet.
    async fn get(&self, hub: &str, call: &str) -> Result<Arc<Shared>, Status> {
        let mut open = self.open.lock().await;
        if let Some(shared) = open.get(hub) {
            return Ok(shared.clone());
        }
        let Some(store) = &self.store else {
            return Err(Status::permission_denied(format!(
                "{call}: task hub \"{hub}\" is not served here: this server serves one task \
                 hub, \"{DEFAULT_HUB}\"; connect with task hub \"{DEFAULT_HUB}\" (or none)"
            )));
        };
        check_hub_name(hub).map_err(|e| Status::invalid_argument(format!("{call}: {e}")))?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!(
                "{call}: the server is shutting down; call again once it is back"
            )));
        }
        let backend = store.open(hub).await.map_err(|e| {
            Status::unavailable(format!("{call}: cannot open task hub \"{hub}\": {e}"))
        })?;
        tracing::info!(hub, "task hub opened");
        let shared = Shared::new(backend, self.options.clone());
        open.insert(hub.to_string(), shared.clone());
        Ok(shared)
    }

    /// Closes a hub: its streams and waits end, its leased work goes back.
    /// Returns whether it was open.
    async fn close(&self, hub: &str) -> bool {
        let shared = self.open.lock().await.remove(hub);
        match shared {
            Some(shared) => {
                shared.stopping.send_replace(true);
                shared.leases.give_back_all(shared.backend.as_ref()).await;
                true
            }
            None => false,
        }
    }

    /// Stops every hub (at shutdown).
    async fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let hubs: Vec<_> = self.open.lock().await.values().cloned().collect();
        for shared in &hubs {
            shared.stopping.send_replace(true);
        }
        for shared in hubs {
            shared.leases.give_back_all(shared.backend.as_ref()).await;
        }
    }

    /// Signals every open hub's streams and waits that the server stops.
    async fn signal_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for shared in self.open.lock().await.values() {
            shared.stopping.send_replace(true);
        }
    }
}

impl SidecarServer {
    /// A server for `backend`, with the default [`ServerOptions`]: one task
    /// hub, `default`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        SidecarServer::with_options(backend, ServerOptions::default())
    }

    /// A server for `backend` with `options`: one task hub, `default`;
    /// calls naming another hub are refused with `PERMISSION_DENIED`.
    pub fn with_options(backend: Arc<dyn Backend>, options: ServerOptions) -> Self {
        let shared = Shared::new(backend, options.clone());
        let open = HashMap::from([(DEFAULT_HUB.to_string(), shared)]);
        SidecarServer::of(options, None, open)
    }

    /// A server of every task hub `store` opens: a call's `taskhub` header
    /// (`default` when absent) selects the hub, opened on first use;
    /// `CreateTaskHub` opens one, `DeleteTaskHub` closes one and deletes
    /// its storage ([`HubStore::delete`]).
    pub fn with_hubs(store: Arc<dyn HubStore>, options: ServerOptions) -> Self {
        SidecarServer::of(options, Some(store), HashMap::new())
    }

    fn of(
        options: ServerOptions,
        store: Option<Arc<dyn HubStore>>,
        open: HashMap<String, Arc<Shared>>,
    ) -> Self {
        SidecarServer {
            service: SidecarService {
                hubs: Arc::new(Hubs {
                    options,
                    store,
                    open: tokio::sync::Mutex::new(open),
                    stopping: AtomicBool::new(false),
                }),
            },
        }
    }

    /// Serves on `listener` until `shutdown` resolves. Then the work-item
    /// streams and pending waits end (clients see `UNAVAILABLE` and
    /// reconnect elsewhere), calls in flight finish, and every work item
    /// still leased to a worker is given back to the backend.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.serve_with(tonic::transport::Server::builder(), listener, shutdown)
            .await
    }

    /// [`serve`](Self::serve) on a server builder of your own (TLS
    /// settings, timeouts, ...).
    pub async fn serve_with(
        self,
        mut builder: tonic::transport::Server,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let hubs = self.service.hubs.clone();
        let stopping = hubs.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("the sidecar server is shutting down");
            stopping.signal_stop().await;
        };
        let result = builder
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                signal,
            )
            .await;
        hubs.stop_all().await;
        result.map_err(ServeError::from)
    }

    /// The tonic service, to add to a router of your own (with
    /// `tonic::transport::Server::builder().add_service(..)`). Work leased
    /// through it is given back when the stream that brought it closes.
    pub fn into_service(self) -> TaskHubSidecarServiceServer<SidecarService> {
        let limit = self.service.hubs.options.max_message_size;
        // The server checks the limit itself, to answer with the sizes; the
        // transport's own limit only bounds what is read into memory.
        TaskHubSidecarServiceServer::new(self.service)
            .max_decoding_message_size(limit.saturating_mul(2).max(limit + (1 << 20)))
    }
}
