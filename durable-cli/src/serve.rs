//! `durable serve`: durable's stores behind the Durable Task gRPC protocol
//! ([`durable_grpc::server::SidecarServer`]), so workers and clients of any
//! Durable Task SDK (and durable's own `GrpcBackend`) can use them.

use crate::args::{Cli, ServeArgs};
use crate::exit::CliError;
use crate::store::Target;
use durable_grpc::server::{HubStore, ServerOptions, SidecarServer, DEFAULT_HUB};
use durable_runtime::backend::BackendError;
use durable_runtime::{Backend, MemoryBackend};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The address `durable serve` listens on by default: where the Python,
/// Java and JavaScript SDKs look for a sidecar.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4001";

/// Checks what `durable serve` was asked before anything is opened: the
/// address parses, one reachable from other machines has a token (or
/// `--insecure`), and TLS (not served yet) is not asked for.
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
             run and change instances: give --token TOKEN (clients send it as a bearer token), or \
             --insecure to serve without one on a network you trust"
        )));
    }
    Ok(addr)
}

/// Runs `durable serve` until SIGINT or SIGTERM; returns the exit code.
pub async fn serve(cli: &Cli, args: &ServeArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        return Err(CliError::Usage(
            "durable serve does not serve TLS yet: listen on loopback, or put a TLS-terminating \
             proxy in front of it (and give --token when it is reachable from other machines)"
                .into(),
        ));
    }
    let token = args.token.as_deref().filter(|t| !t.trim().is_empty());
    let addr = check_listen(&args.listen, token.is_some(), args.insecure)?;
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
    let auth = if token.is_some() {
        "a bearer token required"
    } else {
        "no token"
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

/// The SQLite file of task hub `hub` for the store at `path`: `path` for
/// `default`, else `hub` inserted before the extension.
///
/// ```
/// use durable_cli::serve::hub_file;
/// use std::path::Path;
/// assert_eq!(hub_file(Path::new("data/durable.db"), "default"), Path::new("data/durable.db"));
/// assert_eq!(hub_file(Path::new("data/durable.db"), "eu"), Path::new("data/durable.eu.db"));
/// assert_eq!(hub_file(Path::new("store"), "eu"), Path::new("store.eu"));
/// ```
pub fn hub_file(path: &Path, hub: &str) -> PathBuf {
    if hub == DEFAULT_HUB {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{hub}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{hub}"),
    };
    path.with_file_name(name)
}

/// The PostgreSQL schema of task hub `hub` when hub `default` is in
/// `schema`: `schema` itself for `default`, else `schema_hub`, lower-cased
/// with `-` as `_` (PostgreSQL folds unquoted names, so on PostgreSQL hub
/// names that differ only so share a schema).
///
/// ```
/// use durable_cli::serve::hub_schema;
/// assert_eq!(hub_schema("durable", "default"), "durable");
/// assert_eq!(hub_schema("durable", "EU-west"), "durable_eu_west");
/// ```
pub fn hub_schema(schema: &str, hub: &str) -> String {
    if hub == DEFAULT_HUB {
        return schema.to_string();
    }
    format!("{schema}_{}", hub.to_ascii_lowercase().replace('-', "_"))
}

impl StoreHubs {
    /// Opens (creating if need be) the backend of `hub`.
    pub async fn open_hub(&self, hub: &str) -> Result<Arc<dyn Backend>, CliError> {
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

    /// Deletes the storage of `hub` (its backend is closed).
    pub async fn delete_hub(&self, hub: &str) -> Result<(), CliError> {
        match self {
            StoreHubs::Memory => Ok(()),
            StoreHubs::Sqlite(path) => {
                let file = hub_file(path, hub);
                let mut lock_dir = file.file_name().unwrap_or_default().to_os_string();
                lock_dir.push(".processes");
                let lock_dir = file.with_file_name(lock_dir);
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
                let _ = std::fs::remove_dir_all(lock_dir);
                Ok(())
            }
            StoreHubs::Postgres { url, schema } => {
                let schema = hub_schema(schema, hub);
                let config = url
                    .parse::<tokio_postgres::Config>()
                    .map_err(|e| CliError::Usage(format!("the PostgreSQL URL: {e}")))?;
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| CliError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
                let running = tokio::spawn(connection);
                // The name was checked (letters, digits, '_'), so it can be
                // part of the statement.
                let dropped = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
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
        self.hubs
            .delete_hub(hub)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))
    }
}
