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
use std::time::Duration;
use tokio::sync::watch;
use tonic::Status;

/// The tonic service type [`SidecarServer::into_service`] returns, to add
/// to a tonic router of your own.
pub use generated::TaskHubSidecarServiceServer;

/// How a [`SidecarServer`] serves.
#[derive(Clone)]
pub struct ServerOptions {
    /// When set, every call must carry `authorization: Bearer <token>`;
    /// others are refused with `UNAUTHENTICATED`.
    pub token: Option<String>,
    /// The largest request the server takes, in bytes (framing included);
    /// larger ones are refused with `RESOURCE_EXHAUSTED`, saying how large
    /// they were. Default: [`DEFAULT_MAX_MESSAGE_SIZE`] (4 MiB), what the
    /// Durable Task SDKs send at most by default.
    pub max_message_size: usize,
    /// With [`SidecarServer::with_hubs`]: how many task hubs besides
    /// `default` may be open at once; a call that would open one more is
    /// refused with `RESOURCE_EXHAUSTED` (each open hub holds its backend's
    /// threads and connections). Default: [`DEFAULT_MAX_HUBS`].
    pub max_hubs: usize,
    /// When set, [`SidecarServer::serve`] serves TLS (HTTP/2 over TLS
    /// 1.2/1.3) with this certificate and key; clients connect to
    /// `https://`. Default: none (plain HTTP/2).
    pub tls: Option<ServerTls>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("max_message_size", &self.max_message_size)
            .field("max_hubs", &self.max_hubs)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The default of [`ServerOptions::max_hubs`].
pub const DEFAULT_MAX_HUBS: usize = 64;

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            token: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_hubs: DEFAULT_MAX_HUBS,
            tls: None,
        }
    }
}

/// The certificate (chain) and private key a [`SidecarServer`] serves TLS
/// with, both PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate, then any intermediates (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"(hidden)")
            .finish()
    }
}

/// Why [`SidecarServer::serve`] stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed (the listener broke, ...).
    #[error("the sidecar server stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificate or key of [`ServerOptions::tls`] cannot be used
    /// (the message says why, e.g. a key that is not the certificate's).
    #[error(
        "cannot serve TLS with the certificate and key given: {0}; give a PEM certificate \
         and the PEM private key that belongs to it"
    )]
    Tls(String),
}

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerTls {
    /// Checks that the certificate and key can be served (both PEM, the
    /// key the certificate's), so a bad pair is reported before anything
    /// is opened or listened on.
    pub fn check(&self) -> Result<(), ServeError> {
        self.apply(tonic::transport::Server::builder()).map(drop)
    }

    /// `builder` serving TLS with this certificate and key.
    fn apply(
        &self,
        builder: tonic::transport::Server,
    ) -> Result<tonic::transport::Server, ServeError> {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        builder.tls_config(config).map_err(|e| {
            // The transport error's own text is only "transport error": the
            // cause (a key mismatch, unreadable PEM) is in its sources.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why.push_str(": ");
                why.push_str(&cause.to_string());
                source = cause.source();
            }
            ServeError::Tls(why)
        })
    }
}

/// Where a [`SidecarServer`] finds its task hubs: one backend per hub,
/// opened when a call first names the hub (the `taskhub` header; `default`
/// when absent) and kept open, so hubs are separate namespaces sharing one
/// store. [`SidecarServer::with_hubs`] takes one.
///
/// Hub names reach a store checked ([`check_hub_name`]) and normalised
/// ([`hub_key`]: lower case, `-` as `_`).
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
    /// Called once per hub until it is deleted.
    async fn open(&self, hub: &str) -> Result<Arc<dyn Backend>, BackendError>;

    /// Deletes the storage of `hub` (`DeleteTaskHub`, never for
    /// [`DEFAULT_HUB`]), after the server has closed its streams and waited
    /// (a few seconds at most) for its calls to end and its backend to be
    /// dropped. A hub that has no storage is not an error. Answer
    /// [`BackendError::InvalidRequest`] when the hub cannot be deleted as it
    /// stands (still in use elsewhere, ...): the caller gets
    /// `FAILED_PRECONDITION` with the message.
    async fn delete(&self, hub: &str) -> Result<(), BackendError>;

    /// Whether `hub` has storage. A call that only reads or changes what a
    /// hub holds (`GetInstance`, `RaiseEvent`, `QueryInstances`, ...) on a
    /// hub that is neither open nor stored is answered `NOT_FOUND`, so a
    /// mistyped name creates nothing; `CreateTaskHub`, `StartInstance` and
    /// `GetWorkItems` create it. The default: every hub exists (any call
    /// opens it).
    async fn exists(&self, hub: &str) -> Result<bool, BackendError> {
        let _ = hub;
        Ok(true)
    }

    /// Why this store cannot hold a hub of this (checked, normalised) name,
    /// beyond [`check_hub_name`]'s rule (a length its storage names cannot
    /// take, ...); answered `INVALID_ARGUMENT`. The default takes every name.
    fn check_name(&self, hub: &str) -> Result<(), String> {
        let _ = hub;
        Ok(())
    }
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

/// The hub a (checked) name means: hub names ignore case, and `-` and `_`
/// are the same, as PostgreSQL schema names and case-insensitive file
/// systems would make them anyway; so `Orders-EU` and `orders_eu` are one
/// hub, `orders_eu`.
///
/// ```
/// use durable_grpc::server::hub_key;
/// assert_eq!(hub_key("Orders-EU"), "orders_eu");
/// assert_eq!(hub_key("default"), "default");
/// ```
pub fn hub_key(hub: &str) -> String {
    hub.to_ascii_lowercase().replace('-', "_")
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
    /// The hubs opening, open or being deleted, by [`hub_key`]. Held only
    /// briefly: hubs open outside it.
    open: std::sync::Mutex<HashMap<String, Slot>>,
    /// Set when the server shuts down: no hub opens any more.
    stopping: AtomicBool,
}

/// A hub's place in [`Hubs::open`].
enum Slot {
    /// Opening (the cell is empty) or open.
    Open(Arc<tokio::sync::OnceCell<Arc<Shared>>>),
    /// Being deleted: calls are refused until its storage is gone.
    Deleting,
}

/// What the calls and the work-item streams of one task hub share.
pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    leases: work::Leases,
    /// Set when the server shuts down or the hub is deleted: streams and
    /// waits end.
    stopping: watch::Sender<bool>,
    /// Set (before `stopping`) when the hub is being deleted.
    deleted: AtomicBool,
}

impl Shared {
    fn new(backend: Arc<dyn Backend>, options: ServerOptions) -> Arc<Shared> {
        Arc::new(Shared {
            backend,
            options,
            leases: work::Leases::new(),
            stopping: watch::channel(false).0,
            deleted: AtomicBool::new(false),
        })
    }

    /// Resolves once the server is shutting down (or the hub is deleted).
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Why streams and waits end, once [`stopped`](Self::stopped): what
    /// the caller is told.
    fn stop_reason(&self) -> &'static str {
        if self.deleted.load(Ordering::SeqCst) {
            "its task hub was deleted"
        } else {
            "the server is shutting down"
        }
    }
}

/// Whether a call may create the hub it names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// `CreateTaskHub`, `StartInstance`, `GetWorkItems`.
    Yes,
    /// Every other call: a hub without storage is `NOT_FOUND`.
    No,
}

/// How long `DeleteTaskHub` waits for a hub's calls and streams to end.
const DELETE_WAIT: Duration = Duration::from_secs(5);

impl Hubs {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open hubs.
    fn opened(&self) -> Vec<Arc<Shared>> {
        self.slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Open(cell) => cell.get().cloned(),
                Slot::Deleting => None,
            })
            .collect()
    }

    /// The hub `hub` (what a call's header named) means, if this server
    /// serves it: its [`hub_key`].
    pub(crate) fn key_of(&self, hub: &str, call: &str) -> Result<String, Status> {
        if hub == DEFAULT_HUB {
            return Ok(DEFAULT_HUB.to_string());
        }
        check_hub_name(hub).map_err(|e| Status::invalid_argument(format!("{call}: {e}")))?;
        let key = hub_key(hub);
        if key == DEFAULT_HUB {
            return Ok(key);
        }
        let Some(store) = &self.store else {
            return Err(Status::permission_denied(format!(
                "{call}: task hub \"{hub}\" is not served here: this server serves one task \
                 hub, \"{DEFAULT_HUB}\"; connect with task hub \"{DEFAULT_HUB}\" (or none)"
            )));
        };
        store
            .check_name(&key)
            .map_err(|e| Status::invalid_argument(format!("{call}: {e}")))?;
        Ok(key)
    }

    /// The hub a call names (checked: `hub` is what the caller sent),
    /// opened if it is not yet and `create` allows.
    async fn get(&self, hub: &str, call: &str, create: Create) -> Result<Arc<Shared>, Status> {
        let being_deleted = |key: &str| {
            Status::unavailable(format!(
                "{call}: task hub \"{key}\" is being deleted; call again once it is (it is then \
                 a new, empty hub)"
            ))
        };
        let key = self.key_of(hub, call)?;
        let found = match self.slots().get(&key) {
            Some(Slot::Open(cell)) => match cell.get() {
                Some(shared) => return Ok(shared.clone()),
                None => Some(cell.clone()),
            },
            Some(Slot::Deleting) => return Err(being_deleted(&key)),
            None => None,
        };
        let Some(store) = &self.store else {
            return Err(Status::failed_precondition(format!(
                "{call}: task hub \"{DEFAULT_HUB}\" is not open; the server is stopping"
            )));
        };
        let cell = match found {
            Some(cell) => cell,
            None => {
                if self.stopping.load(Ordering::SeqCst) {
                    return Err(Status::unavailable(format!(
                        "{call}: the server is shutting down; call again once it is back"
                    )));
                }
                if create == Create::No && key != DEFAULT_HUB {
                    let exists = store.exists(&key).await.map_err(|e| {
                        tracing::warn!(hub = %key, error = %e, "cannot tell whether a task hub exists");
                        Status::unavailable(format!(
                            "{call}: cannot tell whether task hub \"{key}\" exists (the \
                             server's log says why); call again later"
                        ))
                    })?;
                    if !exists {
                        return Err(Status::not_found(format!(
                            "{call}: there is no task hub \"{key}\" here; check the taskhub \
                             header, or create the hub (CreateTaskHub, or start an instance \
                             or a worker on it)"
                        )));
                    }
                }
                let mut slots = self.slots();
                match slots.get(&key) {
                    Some(Slot::Open(cell)) => cell.clone(),
                    Some(Slot::Deleting) => return Err(being_deleted(&key)),
                    None => {
                        let limit = self.options.max_hubs;
                        let others = slots.keys().filter(|k| *k != DEFAULT_HUB).count();
                        if key != DEFAULT_HUB && others >= limit {
                            return Err(Status::resource_exhausted(format!(
                                "{call}: this server has {limit} task hubs besides \"{DEFAULT_HUB}\", \
                                 its limit; delete \
                                 one (DeleteTaskHub) or start the server with more \
                                 (ServerOptions::max_hubs, durable serve --max-hubs)"
                            )));
                        }
                        let cell = Arc::new(tokio::sync::OnceCell::new());
                        slots.insert(key.clone(), Slot::Open(cell.clone()));
                        cell
                    }
                }
            }
        };
        let opened = cell
            .get_or_try_init(|| async {
                let backend = store.open(&key).await?;
                tracing::info!(hub = %key, "task hub opened");
                Ok::<_, BackendError>(Shared::new(backend, self.options.clone()))
            })
            .await;
        match opened {
            Ok(shared) => Ok(shared.clone()),
            Err(e) => {
                tracing::warn!(hub = %key, error = %e, "cannot open a task hub");
                // Not kept: the next call tries again, and a hub that never
                // opened does not count against the limit.
                let mut slots = self.slots();
                if let Some(Slot::Open(c)) = slots.get(&key) {
                    if Arc::ptr_eq(c, &cell) && c.get().is_none() {
                        slots.remove(&key);
                    }
                }
                Err(Status::unavailable(format!(
                    "{call}: cannot open task hub \"{key}\" (the server's log says why); call \
                     again later"
                )))
            }
        }
    }

    /// `DeleteTaskHub`: closes `hub` (its streams and waits end, its leased
    /// work goes back), waits for its calls to end, and deletes its
    /// storage; meanwhile calls naming it are refused, so none reopens it
    /// on storage about to go.
    async fn delete(&self, hub: &str, call: &str) -> Result<(), Status> {
        let Some(store) = &self.store else {
            return Err(Status::failed_precondition(format!(
                "{call}: this server serves one task hub, \"{DEFAULT_HUB}\", given to it when it \
                 started, and does not delete it; purge its instances (PurgeInstances) instead"
            )));
        };
        let key = self.key_of(hub, call)?;
        if key == DEFAULT_HUB {
            return Err(Status::failed_precondition(format!(
                "{call}: task hub \"{DEFAULT_HUB}\" is the store itself and is not deleted; \
                 purge its instances (PurgeInstances) instead, or name another hub"
            )));
        }
        let shared = {
            let mut slots = self.slots();
            match slots.get(&key) {
                Some(Slot::Deleting) => {
                    return Err(Status::unavailable(format!(
                        "{call}: task hub \"{key}\" is already being deleted"
                    )))
                }
                Some(Slot::Open(cell)) if cell.get().is_none() => {
                    return Err(Status::unavailable(format!(
                        "{call}: task hub \"{key}\" is opening; delete it again in a moment"
                    )))
                }
                Some(Slot::Open(cell)) => {
                    let shared = cell.get().cloned();
                    slots.insert(key.clone(), Slot::Deleting);
                    shared
                }
                None => {
                    slots.insert(key.clone(), Slot::Deleting);
                    None
                }
            }
        };
        let deleted = async {
            if let Some(shared) = shared {
                shared.deleted.store(true, Ordering::SeqCst);
                shared.stopping.send_replace(true);
                shared.leases.give_back_all(shared.backend.as_ref()).await;
                let gone = Arc::downgrade(&shared);
                drop(shared);
                let deadline = tokio::time::Instant::now() + DELETE_WAIT;
                while gone.strong_count() > 0 {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Status::failed_precondition(format!(
                            "{call}: calls on task hub \"{key}\" did not end within \
                             {DELETE_WAIT:?}; nothing was deleted; delete it again"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            store.delete(&key).await.map_err(|e| match e {
                BackendError::InvalidRequest(why) => Status::failed_precondition(format!(
                    "{call}: task hub \"{key}\" was not deleted: {why}"
                )),
                e => {
                    tracing::warn!(hub = %key, error = %e, "cannot delete a task hub");
                    Status::unavailable(format!(
                        "{call}: cannot delete task hub \"{key}\" (the server's log says \
                         why); delete it again later"
                    ))
                }
            })
        }
        .await;
        self.slots().remove(&key);
        if deleted.is_ok() {
            tracing::info!(hub = %key, "task hub deleted");
        }
        deleted
    }

    /// Stops every hub (at shutdown).
    async fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let hubs = self.opened();
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
        for shared in self.opened() {
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
        let cell = Arc::new(tokio::sync::OnceCell::new_with(Some(shared)));
        let open = HashMap::from([(DEFAULT_HUB.to_string(), Slot::Open(cell))]);
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
        open: HashMap<String, Slot>,
    ) -> Self {
        SidecarServer {
            service: SidecarService {
                hubs: Arc::new(Hubs {
                    options,
                    store,
                    open: std::sync::Mutex::new(open),
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

    /// [`serve`](Self::serve) on a server builder of your own (timeouts,
    /// ...); [`ServerOptions::tls`] is applied to it.
    pub async fn serve_with(
        self,
        mut builder: tonic::transport::Server,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let hubs = self.service.hubs.clone();
        if let Some(tls) = &hubs.options.tls {
            builder = tls.apply(builder)?;
        }
        let stopping = hubs.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("the sidecar server is shutting down");
            stopping.signal_stop().await;
        };
        let result = builder
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(
                // No Nagle delay: answers and work items are small writes
                // that must leave at once.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                signal,
            )
            .await;
        hubs.stop_all().await;
        result.map_err(ServeError::from)
    }

    /// The tonic service, to add to a router of your own (with
    /// `tonic::transport::Server::builder().add_service(..)`). Work leased
    /// through it is given back when the stream that brought it closes.
    /// [`ServerOptions::tls`] is not applied: TLS is the router's to set.
    pub fn into_service(self) -> TaskHubSidecarServiceServer<SidecarService> {
        let limit = self.service.hubs.options.max_message_size;
        // The server checks the limit itself, to answer with the sizes; the
        // transport's own limit only bounds what is read into memory.
        TaskHubSidecarServiceServer::new(self.service)
            .max_decoding_message_size(limit.saturating_mul(2).max(limit + (1 << 20)))
    }
}
