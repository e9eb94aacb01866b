//! `durable serve`: durable's stores behind the Durable Task gRPC protocol
//! ([`durable_grpc::server::SidecarServer`]), so workers and clients of any
//! Durable Task SDK (and durable's own `GrpcBackend`) can use them.

use crate::args::{Cli, ServeArgs};
use crate::exit::CliError;
use crate::store::Target;
use durable_grpc::server::{
    check_hub_name, hub_key, HubStore, ServerOptions, ServerTls, SidecarServer, DEFAULT_HUB,
};
use durable_runtime::backend::BackendError;
use durable_runtime::{Backend, MemoryBackend};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The address `durable serve` listens on by default: where the Python,
/// Java and JavaScript SDKs look for a sidecar.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4001";

/// Reads `--tls-cert` and `--tls-key` (both or neither).
fn read_tls(args: &ServeArgs) -> Result<Option<ServerTls>, CliError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            CliError::Usage(format!(
                "--{what} {}: {e}; give the path of a PEM file",
                path.display()
            ))
        })
    };
    match (&args.tls_cert, &args.tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ServerTls {
            cert_pem: read(cert, "tls-cert")?,
            key_pem: read(key, "tls-key")?,
        })),
        _ => Err(CliError::Usage(
            "--tls-cert and --tls-key go together: give the PEM certificate and its private key"
                .into(),
        )),
    }
}

/// Checks what `durable serve` was asked before anything is opened: the
/// address parses, and one reachable from other machines requires a token
/// (TLS alone encrypts, but lets anyone in) or `--insecure`.
///
/// ```
/// use durable_cli::serve::check_listen;
/// assert!(check_listen("127.0.0.1:4001", false, false).is_ok());
/// assert!(check_listen("0.0.0.0:4001", false, false).is_err());
/// assert!(check_listen("0.0.0.0:4001", true, false).is_ok());
/// assert!(check_listen("0.0.0.0:4001", false, true).is_ok());
/// assert!(check_listen("localhost", false, false).is_err());
/// ```
pub fn check_listen(listen: &str, token: bool, insecure: bool) -> Result<SocketAddr, CliError> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        CliError::Usage(format!(
            "--listen {listen}: {e}; give an IP address and a port, e.g. {DEFAULT_LISTEN} or 0.0.0.0:4001"
        ))
    })?;
    if !addr.ip().is_loopback() && !token && !insecure {
        return Err(CliError::Usage(format!(
            "--listen {addr} is reachable from other machines, and anyone who can reach it could \
             run and change instances: give --token TOKEN (clients send it as a bearer token; \
             with --tls-cert/--tls-key it also travels encrypted), or --insecure to serve \
             without one on a network you trust"
        )));
    }
    Ok(addr)
}

/// Runs `durable serve` until SIGINT or SIGTERM; returns the exit code.
pub async fn serve(cli: &Cli, args: &ServeArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let tls = read_tls(args)?;
    if let Some(tls) = &tls {
        tls.check()
            .map_err(|e| CliError::Usage(format!("--tls-cert/--tls-key: {e}")))?;
    }
    let token = args.token.as_deref().filter(|t| !t.trim().is_empty());
    let addr = check_listen(&args.listen, token.is_some(), args.insecure)?;
    if !addr.ip().is_loopback() && token.is_some() && tls.is_none() {
        eprintln!(
            "durable serve: warning: --listen {addr} without TLS sends the token unencrypted; \
             give --tls-cert/--tls-key, or put a TLS proxy in front"
        );
    }
    let (hubs, store) = if cli.store.as_deref() == Some("memory") {
        (
            StoreHubs::Memory,
            "memory (lost when it stops), one per task hub".to_string(),
        )
    } else {
        let target = crate::run::target(cli)?;
        match target {
            Target::Sqlite(path) => {
                let shown = format!(
                    "sqlite:{} (task hub NAME in {})",
                    path.display(),
                    hub_file(&path, "NAME").display()
                );
                (StoreHubs::Sqlite(path), shown)
            }
            Target::Postgres { url, schema } => {
                let schema = schema.unwrap_or_else(|| "durable".to_string());
                let shown =
                    format!("PostgreSQL (schema {schema}; task hub NAME in schema {schema}_name)");
                (StoreHubs::Postgres { url, schema }, shown)
            }
            Target::Endpoint { .. } => {
                return Err(CliError::Usage(
                    "durable serve serves a store (--store sqlite:PATH, postgres://..., or \
                     memory), not another sidecar (--endpoint)"
                        .into(),
                ))
            }
        }
    };
    // The default hub opens now, so a bad store fails before listening.
    let hubs = Arc::new(hubs);
    let default = hubs.open_hub(DEFAULT_HUB).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Unavailable(format!("cannot read the address listened on: {e}")))?;
    let auth = match (token.is_some(), args.tls_cert.is_some()) {
        (true, true) => "TLS, a bearer token required",
        (true, false) => "a bearer token required",
        (false, true) => "TLS, no token",
        (false, false) => "no token",
    };
    let _ = writeln!(
        out,
        "durable serve: listening on {local} (gRPC, task hub \"default\" and others by the taskhub header, {auth}), \
         store {store}; \
         stop with Ctrl-C or SIGTERM"
    );
    let _ = out.flush();
    let options = ServerOptions {
        token: token.map(str::to_string),
        max_hubs: args.max_hubs,
        tls,
        ..ServerOptions::default()
    };
    SidecarServer::with_hubs(Arc::new(Opened::new(hubs, default)), options)
        .serve(listener, stop_signal())
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    let _ = writeln!(out, "durable serve: stopped");
    Ok(crate::exit::OK)
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Where `durable serve` keeps each task hub of its store: hub `default`
/// is the store itself; hub NAME is, on SQLite, the file
/// [`hub_file`]`(PATH, NAME)` beside it, on PostgreSQL the schema
/// [`hub_schema`]`(SCHEMA, NAME)`, in memory a backend of its own.
#[derive(Debug)]
pub enum StoreHubs {
    /// `--store memory`.
    Memory,
    /// `--store sqlite:PATH`.
    Sqlite(PathBuf),
    /// `--store postgres://...` and its schema.
    Postgres {
        /// The database URL.
        url: String,
        /// The schema of hub `default`.
        schema: String,
    },
}

/// The SQLite file of task hub `hub` (a [`hub_key`]) for the store at
/// `path`: `path` for `default`, else `hub-HUB` inserted before the
/// extension (so no hub's file is the store's own lock directory,
/// `PATH.processes`).
///
/// ```
/// use durable_cli::serve::hub_file;
/// use std::path::Path;
/// assert_eq!(hub_file(Path::new("data/durable.db"), "default"), Path::new("data/durable.db"));
/// assert_eq!(hub_file(Path::new("data/durable.db"), "eu"), Path::new("data/durable.hub-eu.db"));
/// assert_eq!(hub_file(Path::new("store"), "processes"), Path::new("store.hub-processes"));
/// ```
pub fn hub_file(path: &Path, hub: &str) -> PathBuf {
    if hub == DEFAULT_HUB {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.hub-{hub}.{}", ext.to_string_lossy()),
        None => format!("{stem}.hub-{hub}"),
    };
    path.with_file_name(name)
}

/// The PostgreSQL schema of task hub `hub` (a [`hub_key`]) when hub
/// `default` is in `schema`: `schema` itself for `default`, else
/// `schema_hub`.
///
/// ```
/// use durable_cli::serve::hub_schema;
/// assert_eq!(hub_schema("durable", "default"), "durable");
/// assert_eq!(hub_schema("durable", "eu_west"), "durable_eu_west");
/// ```
pub fn hub_schema(schema: &str, hub: &str) -> String {
    if hub == DEFAULT_HUB {
        return schema.to_string();
    }
    format!("{schema}_{hub}")
}

/// The longest PostgreSQL schema name durable-postgres takes.
const MAX_SCHEMA: usize = 48;

/// How long `DeleteTaskHub` waits for other backends on a hub's SQLite
/// file to close before it refuses.
const IN_USE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The checked, normalised name of `hub`, or why it is refused.
fn checked_key(hub: &str) -> Result<String, CliError> {
    if hub == DEFAULT_HUB {
        return Ok(hub.to_string());
    }
    check_hub_name(hub).map_err(CliError::Usage)?;
    Ok(hub_key(hub))
}

impl StoreHubs {
    /// Opens (creating if need be) the backend of `hub` (checked and
    /// normalised as the server does: [`check_hub_name`], [`hub_key`]).
    pub async fn open_hub(&self, hub: &str) -> Result<Arc<dyn Backend>, CliError> {
        let hub = &checked_key(hub)?;
        self.check_name(hub).map_err(CliError::Usage)?;
        match self {
            StoreHubs::Memory => Ok(Arc::new(MemoryBackend::new())),
            StoreHubs::Sqlite(path) => Target::Sqlite(hub_file(path, hub)).open_or_create().await,
            StoreHubs::Postgres { url, schema } => {
                Target::Postgres {
                    url: url.clone(),
                    schema: Some(hub_schema(schema, hub)),
                }
                .open_or_create()
                .await
            }
        }
    }

    /// Why this store cannot hold hub `hub` (normalised), beyond
    /// [`check_hub_name`]: on PostgreSQL, a schema name too long.
    fn check_name(&self, hub: &str) -> Result<(), String> {
        match self {
            StoreHubs::Postgres { schema, .. } => {
                let name = hub_schema(schema, hub);
                if name.len() > MAX_SCHEMA {
                    return Err(format!(
                        "task hub name {hub:?} is too long for this store: its PostgreSQL schema \
                         {name:?} would have {} characters, over {MAX_SCHEMA}; use at most {} \
                         characters",
                        name.len(),
                        MAX_SCHEMA.saturating_sub(schema.len() + 1)
                    ));
                }
                Ok(())
            }
            StoreHubs::Memory | StoreHubs::Sqlite(_) => Ok(()),
        }
    }

    /// Whether hub `hub` has storage (in memory: never, beyond the open
    /// hubs the server keeps).
    pub async fn hub_exists(&self, hub: &str) -> Result<bool, CliError> {
        let hub = &checked_key(hub)?;
        match self {
            StoreHubs::Memory => Ok(hub == DEFAULT_HUB),
            StoreHubs::Sqlite(path) => Ok(hub_file(path, hub).exists()),
            StoreHubs::Postgres { url, schema } => {
                let schema = hub_schema(schema, hub);
                let client = Self::connect(url).await?;
                let found = client
                    .0
                    .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
                    .await
                    .map_err(|e| CliError::Unavailable(format!("asking PostgreSQL: {e}")))?;
                Ok(found.is_some())
            }
        }
    }

    /// A connection to the PostgreSQL database at `url`, with the task
    /// running it.
    async fn connect(
        url: &str,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), CliError> {
        let mut config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| CliError::Usage(format!("the PostgreSQL URL: {e}")))?;
        config.connect_timeout(std::time::Duration::from_secs(10));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| CliError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        let running = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, running))
    }

    /// Deletes the storage of `hub` (checked and normalised as in
    /// [`open_hub`](Self::open_hub)), whose backend must be closed. Hub
    /// `default` is the store itself and is never deleted. On SQLite, a hub
    /// whose file another backend still has open (another process, say) is
    /// refused once a few seconds have not seen it closed: deleting it would
    /// lose what that backend writes.
    pub async fn delete_hub(&self, hub: &str) -> Result<(), CliError> {
        let hub = &checked_key(hub)?;
        if hub == DEFAULT_HUB {
            return Err(CliError::Usage(format!(
                "task hub \"{DEFAULT_HUB}\" is the store itself and is not deleted; purge its \
                 instances instead"
            )));
        }
        match self {
            StoreHubs::Memory => Ok(()),
            StoreHubs::Sqlite(path) => {
                let file = hub_file(path, hub);
                let deadline = tokio::time::Instant::now() + IN_USE_WAIT;
                loop {
                    let users = durable_sqlite::backends_using(&file);
                    if users == 0 {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(CliError::Usage(format!(
                            "task hub \"{hub}\" is still open in {users} other backend(s) (another \
                             process using its file?); stop them and delete it again"
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = file.clone().into_os_string();
                    name.push(suffix);
                    match std::fs::remove_file(&name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(CliError::Other(format!(
                                "cannot delete {}: {e}",
                                PathBuf::from(name).display()
                            )))
                        }
                    }
                }
                let mut lock_dir = file.file_name().unwrap_or_default().to_os_string();
                lock_dir.push(".processes");
                let _ = std::fs::remove_dir_all(file.with_file_name(lock_dir));
                Ok(())
            }
            StoreHubs::Postgres { url, schema } => {
                let schema = hub_schema(schema, hub);
                let (client, running) = Self::connect(url).await?;
                // A quoted identifier; the name is letters, digits and '_'.
                let dropped = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await;
                drop(client);
                let _ = running.await;
                dropped.map_err(|e| {
                    CliError::Other(format!("dropping schema {schema} of task hub {hub}: {e}"))
                })
            }
        }
    }
}

/// The [`HubStore`] of `durable serve`: [`StoreHubs`], with hub `default`
/// opened before listening.
struct Opened {
    hubs: Arc<StoreHubs>,
    default: Mutex<Option<Arc<dyn Backend>>>,
}

impl Opened {
    fn new(hubs: Arc<StoreHubs>, default: Arc<dyn Backend>) -> Opened {
        Opened {
            hubs,
            default: Mutex::new(Some(default)),
        }
    }
}

#[async_trait::async_trait]
impl HubStore for Opened {
    async fn open(&self, hub: &str) -> Result<Arc<dyn Backend>, BackendError> {
        if hub == DEFAULT_HUB {
            let opened = self
                .default
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(backend) = opened {
                return Ok(backend);
            }
        }
        self.hubs
            .open_hub(hub)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }

    async fn delete(&self, hub: &str) -> Result<(), BackendError> {
        self.hubs.delete_hub(hub).await.map_err(|e| match e {
            CliError::Usage(why) => BackendError::InvalidRequest(why),
            e => BackendError::Unavailable(e.to_string()),
        })
    }

    async fn exists(&self, hub: &str) -> Result<bool, BackendError> {
        self.hubs
            .hub_exists(hub)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }

    fn check_name(&self, hub: &str) -> Result<(), String> {
        self.hubs.check_name(hub)
    }
}
