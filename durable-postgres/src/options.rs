//! Settings of the PostgreSQL backend.

use durable_runtime::backend::transition::Limits;
use std::path::PathBuf;
use std::time::Duration;

/// Settings for [`PostgresBackend::connect_with`](crate::PostgresBackend::connect_with).
///
/// ```
/// use durable_postgres::PostgresOptions;
/// use std::time::Duration;
/// let options = PostgresOptions {
///     schema: "orders".into(),
///     pool_size: 32,
///     lease_duration: Duration::from_secs(60),
///     ..PostgresOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The PostgreSQL schema that holds durable's tables (default
    /// `durable`), created at connect if missing. Applications sharing a
    /// database use one schema each; backends given the same schema share
    /// one task hub. Lower-case ASCII letters, digits and `_`, starting with
    /// a letter or `_`, at most 48 characters.
    pub schema: String,
    /// Connections in the pool (default 16). Each operation holds one for
    /// its transaction only; the backend also keeps one more connection of
    /// its own that listens for notifications.
    pub pool_size: usize,
    /// How long a lease lasts unless it is renewed (default 30 s). Workers
    /// renew the leases of the episodes and activities they run every third
    /// of this duration, so live work keeps its lease however long it
    /// runs; work held by a process that died is delivered again this long
    /// after its last renewal.
    pub lease_duration: Duration,
    /// The fallback poll (default 1 s): how long an idle worker waits
    /// before looking for work again when no notification arrived. Work
    /// is announced with `NOTIFY`, and timers wake workers when they are
    /// due, so this bounds only the delay after a notification was lost
    /// (while the listening connection was down).
    pub poll_interval: Duration,
    /// How long connecting to the server may take before it is reported
    /// unreachable (default 10 s).
    pub connect_timeout: Duration,
    /// Payload and history size limits.
    pub limits: Limits,
    /// Histories kept in memory between episodes so a long orchestration
    /// is not re-read at every step (default 1,024 instances). An entry is
    /// used only when the stored execution and history length match.
    pub history_cache_capacity: usize,
    /// For a URL with `sslmode=require`: a PEM file of the certificates to
    /// trust (a managed service's CA bundle, or a self-signed server
    /// certificate). Default: none, which trusts Mozilla's root
    /// certificates; the URL parameter `sslrootcert=<file>` sets it too.
    /// The certificate chain and the host name are always verified.
    pub tls_root_certificates: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "durable".into(),
            pool_size: 16,
            lease_duration: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            history_cache_capacity: 1024,
            tls_root_certificates: None,
        }
    }
}

/// Why a schema name is refused, if it is.
pub(crate) fn check_schema_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if name.is_empty() || name.len() > 48 || !first_ok || !rest_ok {
        return Err(format!(
            "the schema name {name:?} is not allowed: use 1 to 48 lower-case ASCII letters, \
             digits and underscores, starting with a letter or an underscore"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["durable", "_x", "app_2"] {
            assert!(check_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Durable", "2app", "a-b", "a\"b", &"x".repeat(49)] {
            let e = check_schema_name(bad).unwrap_err();
            assert!(e.contains("not allowed"), "{e}");
        }
    }
}
