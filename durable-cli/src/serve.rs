//! `durable serve`: durable's stores behind the Durable Task gRPC protocol
//! ([`durable_grpc::server::SidecarServer`]), so workers and clients of any
//! Durable Task SDK (and durable's own `GrpcBackend`) can use them.

use crate::args::{Cli, ServeArgs};
use crate::exit::CliError;
use crate::store::Target;
use durable_grpc::server::{ServerOptions, SidecarServer};
use durable_runtime::{Backend, MemoryBackend};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

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
    let (backend, store): (Arc<dyn Backend>, String) = if cli.store.as_deref() == Some("memory") {
        (
            Arc::new(MemoryBackend::new()),
            "memory (lost when it stops)".into(),
        )
    } else {
        let target = crate::run::target(cli)?;
        let shown = match &target {
            Target::Sqlite(path) => format!("sqlite:{}", path.display()),
            Target::Postgres { schema, .. } => format!(
                "PostgreSQL (schema {})",
                schema.as_deref().unwrap_or("durable")
            ),
            Target::Endpoint { .. } => {
                return Err(CliError::Usage(
                    "durable serve serves a store (--store sqlite:PATH, postgres://..., or \
                     memory), not another sidecar (--endpoint)"
                        .into(),
                ))
            }
        };
        (target.open_or_create().await?, shown)
    };
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
        "durable serve: listening on {local} (gRPC, task hub \"default\", {auth}), store {store}; \
         stop with Ctrl-C or SIGTERM"
    );
    let _ = out.flush();
    let options = ServerOptions {
        token: token.map(str::to_string),
        ..ServerOptions::default()
    };
    SidecarServer::with_options(backend, options)
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
