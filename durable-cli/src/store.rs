//! Where instances live: parsing `--store` and `--endpoint`, and opening
//! the backend without creating anything a read would not need.

use crate::exit::CliError;
use durable_runtime::Backend;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store when neither `--store` nor `--endpoint` is given.
pub const DEFAULT_STORE: &str = "sqlite:./durable.db";

/// A store named by `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// An SQLite file (`sqlite:PATH`, `sqlite://PATH`, or a bare path).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...` or `postgresql://...`).
    Postgres(String),
}

impl StoreSpec {
    /// Parses a `--store` value.
    ///
    /// ```
    /// use durable_cli::store::StoreSpec;
    /// use std::path::PathBuf;
    /// assert_eq!(StoreSpec::parse("sqlite:./app.db").unwrap(), StoreSpec::Sqlite(PathBuf::from("./app.db")));
    /// assert_eq!(StoreSpec::parse("sqlite:///var/lib/app.db").unwrap(), StoreSpec::Sqlite(PathBuf::from("/var/lib/app.db")));
    /// assert!(matches!(StoreSpec::parse("postgres://app@db/app").unwrap(), StoreSpec::Postgres(_)));
    /// assert!(StoreSpec::parse("mysql://db/app").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreSpec::Postgres(text.to_string()));
        }
        let path = if let Some(rest) = text.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = text.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(CliError::Usage(format!(
                "unknown store \"{scheme}://...\"; use sqlite:PATH or postgres://user:password@host:port/database \
                 (or --endpoint URL for a sidecar)"
            )));
        } else {
            text
        };
        if path.is_empty() {
            return Err(CliError::Usage(
                "the store names no file; use sqlite:PATH, e.g. sqlite:./durable.db".into(),
            ));
        }
        Ok(StoreSpec::Sqlite(PathBuf::from(path)))
    }
}

/// What the command talks to: a store, or a sidecar over gRPC.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, and the schema holding durable's tables
    /// (`None`: the backend's default, `durable`).
    Postgres {
        /// `postgres://user:password@host:port/database`.
        url: String,
        /// `--schema`.
        schema: Option<String>,
    },
    /// A running sidecar (`--endpoint`), with its task hub.
    Endpoint {
        /// `http://host:port` or `https://host:port`.
        url: String,
        /// The task hub sent with every call.
        task_hub: String,
        /// Metadata headers sent with every call (`--header`, and
        /// `authorization` for a bearer token).
        headers: Vec<(String, String)>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Target::Postgres { url, schema } => f
                .debug_struct("Postgres")
                .field("url", url)
                .field("schema", schema)
                .finish(),
            // Header values may be secrets: names only.
            Target::Endpoint {
                url,
                task_hub,
                headers,
            } => f
                .debug_struct("Endpoint")
                .field("url", url)
                .field("task_hub", task_hub)
                .field(
                    "headers",
                    &headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// The global options that choose the [`Target`]. (Not `Debug`: it may
/// hold a token.)
#[derive(Clone, Copy, Default)]
pub struct TargetOptions<'a> {
    /// `--store`.
    pub store: Option<&'a str>,
    /// `--endpoint`.
    pub endpoint: Option<&'a str>,
    /// `--taskhub`.
    pub task_hub: &'a str,
    /// `--schema`.
    pub schema: Option<&'a str>,
    /// `--header NAME=VALUE`, each.
    pub headers: &'a [String],
    /// `--bearer-token` (used only with an endpoint).
    pub bearer_token: Option<&'a str>,
}

/// Parses a `--header NAME=VALUE`.
///
/// ```
/// use durable_cli::store::parse_header;
/// assert_eq!(parse_header("Dapr-Api-Token=s3cret").unwrap(), ("dapr-api-token".into(), "s3cret".into()));
/// assert!(parse_header("no-value").is_err());
/// ```
pub fn parse_header(text: &str) -> Result<(String, String), CliError> {
    let bad = |why: &str| {
        CliError::Usage(format!(
            "--header {}: {why}; write it as NAME=VALUE, e.g. dapr-api-token=TOKEN",
            text.split_once('=').map_or(text, |(name, _)| name)
        ))
    };
    let (name, value) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("the name must be ASCII letters, digits, '-' or '_'"));
    }
    if !value.is_ascii() || value.chars().any(|c| c.is_ascii_control()) {
        return Err(bad("the value must be printable ASCII"));
    }
    Ok((name, value.to_string()))
}

impl Target {
    /// The target of the global options: `--endpoint` if given, else
    /// `--store` (default [`DEFAULT_STORE`]). Both at once is a usage
    /// error, and so is `--schema` with anything but a PostgreSQL store.
    pub fn from_options(o: TargetOptions<'_>) -> Result<Self, CliError> {
        let target = match (o.store, o.endpoint) {
            (Some(_), Some(_)) => {
                return Err(CliError::Usage(
                    "give either --store or --endpoint, not both (check the DURABLE_STORE and \
                     DURABLE_ENDPOINT environment variables too)"
                        .into(),
                ))
            }
            (_, Some(url)) => {
                let mut headers = o
                    .headers
                    .iter()
                    .map(|h| parse_header(h))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(token) = o.bearer_token.filter(|t| !t.is_empty()) {
                    headers.push(("authorization".into(), format!("Bearer {}", token.trim())));
                }
                Target::Endpoint {
                    url: url.to_string(),
                    task_hub: o.task_hub.to_string(),
                    headers,
                }
            }
            (store, None) => match StoreSpec::parse(store.unwrap_or(DEFAULT_STORE))? {
                StoreSpec::Sqlite(path) => Target::Sqlite(path),
                StoreSpec::Postgres(url) => Target::Postgres {
                    url,
                    schema: o.schema.map(str::to_string),
                },
            },
        };
        if !o.headers.is_empty() && !matches!(target, Target::Endpoint { .. }) {
            return Err(CliError::Usage(
                "--header applies only to a sidecar (--endpoint URL)".into(),
            ));
        }
        if o.schema.is_some() && !matches!(target, Target::Postgres { .. }) {
            return Err(CliError::Usage(
                "--schema applies only to a PostgreSQL store (--store postgres://...)".into(),
            ));
        }
        Ok(target)
    }

    /// Opens the backend. An SQLite file that does not exist is an error
    /// (exit code 3), never created.
    pub async fn open(&self) -> Result<Arc<dyn Backend>, CliError> {
        self.open_backend(false).await
    }

    /// Opens the backend, creating an SQLite file that does not exist yet
    /// (for commands that run work rather than read it).
    pub async fn open_or_create(&self) -> Result<Arc<dyn Backend>, CliError> {
        self.open_backend(true).await
    }

    async fn open_backend(&self, create: bool) -> Result<Arc<dyn Backend>, CliError> {
        match self {
            Target::Sqlite(path) => open_sqlite(path, create),
            Target::Postgres { url, schema } => {
                use durable_postgres::{ConnectError, PostgresBackend, PostgresOptions};
                let mut options = PostgresOptions::default();
                if let Some(schema) = schema {
                    options.schema = schema.clone();
                }
                // Connecting creates durable's tables; a command that only
                // reads must not leave an empty store behind a typo.
                if !create && postgres_store_missing(url, &options.schema).await {
                    return Err(CliError::Unavailable(format!(
                        "the database holds no durable store in schema \"{}\" (the CLI never \
                         creates one); check --schema (default durable), or start a worker on \
                         the database first",
                        options.schema
                    )));
                }
                // A command holds one connection at a time.
                options.pool_size = 2;
                match PostgresBackend::connect_with(url, options).await {
                    Ok(b) => Ok(Arc::new(b)),
                    Err(e @ (ConnectError::InvalidUrl(_) | ConnectError::InvalidOption(_))) => {
                        Err(CliError::Usage(e.to_string()))
                    }
                    Err(e) => Err(CliError::Unavailable(e.to_string())),
                }
            }
            Target::Endpoint {
                url,
                task_hub,
                headers,
            } => {
                let mut options = durable_grpc::GrpcOptions::new(url.clone())
                    .task_hub(task_hub.clone())
                    .connect_timeout(Duration::from_secs(5));
                for (name, value) in headers {
                    options = options.header(name.clone(), value.clone());
                }
                match durable_grpc::GrpcBackend::connect(options).await {
                    Ok(b) => Ok(Arc::new(b)),
                    Err(e) => Err(match CliError::from(e) {
                        // A malformed URL is bad usage; everything else
                        // about a sidecar that does not answer is exit 3.
                        CliError::Usage(m) => CliError::Usage(m),
                        other => CliError::Unavailable(format!(
                            "cannot reach the sidecar at {url}: {other}"
                        )),
                    }),
                }
            }
        }
    }
}

/// Whether the database answers that `schema` has no `instances` table.
/// Anything else (a bad URL, a server that does not answer, an invalid
/// schema name) is left for the backend's connect to report in full.
async fn postgres_store_missing(url: &str, schema: &str) -> bool {
    let valid_name = schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let Ok(mut config) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    if !valid_name || config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return false;
    }
    config.connect_timeout(Duration::from_secs(10));
    let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
        return false;
    };
    let running = tokio::spawn(connection);
    let found = client
        .query_opt(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'instances'",
            &[&schema],
        )
        .await;
    drop(client);
    let _ = running.await;
    matches!(found, Ok(None))
}

fn open_sqlite(path: &Path, create: bool) -> Result<Arc<dyn Backend>, CliError> {
    if !create && !path.exists() {
        return Err(CliError::Unavailable(format!(
            "no SQLite database at {}: the file does not exist (the CLI never creates one). \
             Check --store (default {DEFAULT_STORE}) or the directory you run in",
            path.display()
        )));
    }
    if path.is_dir() {
        return Err(CliError::Unavailable(format!(
            "{} is a directory, not an SQLite database; pass --store sqlite:PATH to the database file",
            path.display()
        )));
    }
    durable_sqlite::SqliteBackend::open(path)
        .map(|b| Arc::new(b) as Arc<dyn Backend>)
        .map_err(|e| CliError::Unavailable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs() {
        let sqlite = |p: &str| StoreSpec::Sqlite(PathBuf::from(p));
        assert_eq!(StoreSpec::parse("sqlite:a.db").unwrap(), sqlite("a.db"));
        assert_eq!(StoreSpec::parse("sqlite://a.db").unwrap(), sqlite("a.db"));
        assert_eq!(StoreSpec::parse("data/a.db").unwrap(), sqlite("data/a.db"));
        assert_eq!(
            StoreSpec::parse("postgresql://u@h/d").unwrap(),
            StoreSpec::Postgres("postgresql://u@h/d".into())
        );
        let e = StoreSpec::parse("redis://h").unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::ERROR);
        assert!(e.to_string().contains("redis://"), "{e}");
        assert!(StoreSpec::parse("sqlite:").is_err());
    }

    #[test]
    fn targets() {
        let o = |store, endpoint, schema| TargetOptions {
            store,
            endpoint,
            task_hub: "orders",
            schema,
            headers: &[],
            bearer_token: None,
        };
        assert_eq!(
            Target::from_options(o(None, None, None)).unwrap(),
            Target::Sqlite(PathBuf::from("./durable.db"))
        );
        assert_eq!(
            Target::from_options(o(None, Some("http://localhost:4001"), None)).unwrap(),
            Target::Endpoint {
                url: "http://localhost:4001".into(),
                task_hub: "orders".into(),
                headers: vec![],
            }
        );
        assert_eq!(
            Target::from_options(o(Some("postgres://u@h/d"), None, Some("app"))).unwrap(),
            Target::Postgres {
                url: "postgres://u@h/d".into(),
                schema: Some("app".into())
            }
        );
        let both = Target::from_options(o(Some("sqlite:x"), Some("http://h:1"), None)).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let schema = Target::from_options(o(Some("sqlite:x"), None, Some("app"))).unwrap_err();
        assert!(
            schema.to_string().contains("only to a PostgreSQL"),
            "{schema}"
        );
    }

    #[test]
    fn headers_and_tokens_go_to_sidecars_only() {
        let headers = ["dapr-api-token=abc".to_string()];
        let o = TargetOptions {
            endpoint: Some("http://h:1"),
            task_hub: "default",
            headers: &headers,
            bearer_token: Some("t0ken"),
            ..TargetOptions::default()
        };
        let target = Target::from_options(o).unwrap();
        assert_eq!(
            target,
            Target::Endpoint {
                url: "http://h:1".into(),
                task_hub: "default".into(),
                headers: vec![
                    ("dapr-api-token".into(), "abc".into()),
                    ("authorization".into(), "Bearer t0ken".into())
                ],
            }
        );
        let shown = format!("{target:?}");
        assert!(
            !shown.contains("abc") && !shown.contains("t0ken"),
            "{shown}"
        );
        // A token from the environment does not get in the way of a store.
        let store = TargetOptions {
            store: Some("sqlite:x.db"),
            bearer_token: Some("t0ken"),
            ..TargetOptions::default()
        };
        assert!(Target::from_options(store).is_ok());
        let e = Target::from_options(TargetOptions {
            headers: &headers,
            ..store
        })
        .unwrap_err();
        assert!(e.to_string().contains("only to a sidecar"), "{e}");
        for bad in ["x", "=v", "a b=v", "k=caf\u{e9}"] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_sqlite_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.db");
        let e = open_sqlite(&path, false)
            .err()
            .expect("a missing file is an error");
        assert_eq!(e.exit_code(), crate::exit::UNAVAILABLE);
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!path.exists(), "the file was created");
        let e = open_sqlite(dir.path(), true)
            .err()
            .expect("a directory is an error");
        assert!(e.to_string().contains("is a directory"), "{e}");
        drop(open_sqlite(&path, true).expect("creating the file"));
        assert!(path.exists(), "open_or_create creates the file");
        drop(open_sqlite(&path, false).expect("then it opens"));
    }
}
