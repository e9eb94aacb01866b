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
//! See `docs/serve.md` for the RPCs and how they differ from other servers.

mod rpc;
mod status;
mod work;

use crate::options::DEFAULT_MAX_MESSAGE_SIZE;
use crate::proto::task_hub_sidecar_service_server as generated;
use durable_runtime::backend::Backend;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

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

/// Serves `TaskHubSidecarService` from a durable [`Backend`]. See the
/// [module docs](self).
pub struct SidecarServer {
    service: SidecarService,
}

impl std::fmt::Debug for SidecarServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarServer")
            .field("options", &self.service.shared.options)
            .finish_non_exhaustive()
    }
}

/// The implementation of `TaskHubSidecarService` behind a
/// [`SidecarServer`]; what [`SidecarServer::into_service`] wraps.
#[derive(Clone)]
pub struct SidecarService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SidecarService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarService").finish_non_exhaustive()
    }
}

/// What the calls and the work-item streams share.
pub(crate) struct Shared {
    backend: Arc<dyn Backend>,
    options: ServerOptions,
    leases: work::Leases,
    /// Set when the server shuts down: streams and waits end.
    stopping: watch::Sender<bool>,
}

impl Shared {
    /// Resolves once the server is shutting down.
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl SidecarServer {
    /// A server for `backend`, with the default [`ServerOptions`].
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        SidecarServer::with_options(backend, ServerOptions::default())
    }

    /// A server for `backend` with `options`.
    pub fn with_options(backend: Arc<dyn Backend>, options: ServerOptions) -> Self {
        SidecarServer {
            service: SidecarService {
                shared: Arc::new(Shared {
                    backend,
                    options,
                    leases: work::Leases::new(),
                    stopping: watch::channel(false).0,
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
        let shared = self.service.shared.clone();
        let stopping = shared.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("the sidecar server is shutting down");
            stopping.stopping.send_replace(true);
        };
        let result = tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                signal,
            )
            .await;
        shared.stopping.send_replace(true);
        shared.leases.give_back_all(shared.backend.as_ref()).await;
        result.map_err(ServeError::from)
    }

    /// The tonic service, to add to a router of your own (with
    /// `tonic::transport::Server::builder().add_service(..)`). Work leased
    /// through it is given back when the stream that brought it closes.
    pub fn into_service(self) -> TaskHubSidecarServiceServer<SidecarService> {
        let limit = self.service.shared.options.max_message_size;
        // The server checks the limit itself, to answer with the sizes; the
        // transport's own limit only bounds what is read into memory.
        TaskHubSidecarServiceServer::new(self.service)
            .max_decoding_message_size(limit.saturating_mul(2).max(limit + (1 << 20)))
    }
}
