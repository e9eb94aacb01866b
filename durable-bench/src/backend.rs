//! Backends under test. A backend is a factory that opens a fresh store for
//! each scenario, plus the scenario sizes that suit it.
//!
//! To add a backend: a variant of [`BackendKind`], its options in
//! [`BackendArgs`], a branch in [`BackendFactory::open`] and, if the default
//! sizes are too large for it, in [`BackendFactory::default_sizes`].

use crate::report::Target;
use crate::scenarios::Sizes;
use clap::{Args, ValueEnum};
use durable_grpc::testing::{PeerServer, PyProcess};
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::transition::Limits;
use durable_runtime::{Backend, MemoryBackend};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Any error a benchmark step can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The backend to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// Everything in this process, nothing persisted.
    Memory,
    /// A SQLite file on disk with default settings (a fresh file per run).
    Sqlite,
    /// A Durable Task sidecar over gRPC (`--endpoint`, `--taskhub`), or the
    /// Python `durabletask` package's in-memory sidecar (`--peer`).
    Grpc,
    /// PostgreSQL (`--postgres-url`, or a throwaway local server the bench
    /// starts); a fresh schema per run.
    Postgres,
    /// durable's own sidecar server (`durable serve`'s `SidecarServer`) in
    /// this process over a fresh SQLite file per run, on a loopback TCP
    /// port, used through durable's `GrpcBackend`.
    Serve,
}

impl BackendKind {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Sqlite => "sqlite",
            BackendKind::Grpc => "grpc",
            BackendKind::Postgres => "postgres",
            BackendKind::Serve => "serve",
        }
    }
}

/// Command-line options of the backends (each backend reads its own).
#[derive(Clone, Debug, Args)]
pub(crate) struct BackendArgs {
    /// Which backend to measure.
    #[arg(long, value_enum, default_value_t = BackendKind::Memory)]
    pub(crate) backend: BackendKind,

    /// Directory for the SQLite files (with --backend sqlite; default: the
    /// system's temporary directory). Each run gets a fresh file; all are
    /// removed when the bench exits.
    #[arg(long)]
    pub(crate) db_dir: Option<PathBuf>,

    /// With --backend sqlite: `PRAGMA synchronous` of the files (default
    /// normal, the backend's default). `full` flushes the log to disk at
    /// every commit, so commits also survive power loss.
    #[arg(long, value_enum)]
    pub(crate) sqlite_synchronous: Option<SqliteSynchronous>,

    /// The sidecar's gRPC endpoint (with --backend grpc, without --peer).
    #[arg(long, default_value = durable_grpc::DEFAULT_ENDPOINT)]
    pub(crate) endpoint: String,

    /// The task hub sent to the sidecar (with --backend grpc).
    #[arg(long, default_value = durable_grpc::DEFAULT_TASK_HUB)]
    pub(crate) taskhub: String,

    /// With --backend grpc: start the Python `durabletask` package's
    /// in-memory sidecar on a free loopback port and measure against it
    /// (instead of --endpoint). Needs python3; the package is installed into
    /// a virtual environment under target/ on first use.
    #[arg(long)]
    pub(crate) peer: bool,

    /// With --backend grpc or serve: after each S1 run, once the Rust worker
    /// has stopped, run S1 again with the Python SDK's own worker and client
    /// (bench/grpc_python_s1.py) against the same sidecar, and report both
    /// throughputs and their ratio. With serve, also run it on the Python
    /// package's in-memory sidecar (started by the bench) and report the
    /// Python SDK's serve/own-server ratio.
    #[arg(long)]
    pub(crate) compare_python: bool,

    /// The PostgreSQL server to measure against (with --backend postgres),
    /// e.g. postgres://user:password@host:5432/database. Each run uses a
    /// fresh schema, left in place. Default: a throwaway server on a free
    /// loopback port, started by the bench with the local PostgreSQL
    /// installation's initdb and pg_ctl, removed when the bench exits.
    #[arg(long)]
    pub(crate) postgres_url: Option<String>,
}

/// `--sqlite-synchronous`: the SQLite backend's durability setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SqliteSynchronous {
    /// `synchronous = NORMAL`: no flush per commit (survives process crashes).
    Normal,
    /// `synchronous = FULL`: one flush per commit (survives power loss).
    Full,
}

impl SqliteSynchronous {
    fn setting(self) -> durable_sqlite::Synchronous {
        match self {
            SqliteSynchronous::Normal => durable_sqlite::Synchronous::Normal,
            SqliteSynchronous::Full => durable_sqlite::Synchronous::Full,
        }
    }
}

/// The targets a backend is held to (`None`: no target for it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Targets {
    /// S1 throughput, orchestrations per second.
    pub(crate) s1: Option<Target>,
    /// S2 fan-out wall time, seconds.
    pub(crate) s2: Option<Target>,
    /// S3 long/short ratio.
    pub(crate) s3: Option<Target>,
    /// S4 bytes per waiting instance.
    pub(crate) s4: Option<Target>,
    /// S6 p50 latency, milliseconds.
    pub(crate) s6: Option<Target>,
}

/// What a scenario needs from the store it runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Needs {
    /// The longest history one execution will reach, in events.
    pub(crate) max_history_events: usize,
}

/// Opens a fresh backend for each scenario run.
#[derive(Clone, Debug)]
pub(crate) struct BackendFactory {
    args: BackendArgs,
    scratch: Arc<Scratch>,
    /// The Python sidecar this invocation started (`--peer`), stopped when
    /// the last factory handle is dropped.
    peer: Option<Arc<Peer>>,
    /// With `--backend serve`: the server of the latest run.
    served: Arc<Mutex<Option<Served>>>,
}

/// A `SidecarServer` the bench started; it stops when this is dropped.
#[derive(Debug)]
struct Served {
    endpoint: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The Python sidecar started with `--peer`.
struct Peer(Mutex<PeerServer>);

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peer")
    }
}

/// What S1 with the Python SDK's worker and client measured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PythonS1 {
    /// Orchestrations per second, first schedule to last completion seen.
    pub(crate) per_second: f64,
}

impl BackendFactory {
    /// A factory for the backend chosen on the command line. With `--peer`
    /// this starts the Python sidecar (blocking: call it off the async
    /// runtime's threads).
    pub(crate) fn new(args: BackendArgs) -> Result<Self, BoxError> {
        let base = args.db_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("durable-bench-{}", std::process::id()));
        if args.backend != BackendKind::Grpc && args.peer {
            return Err("--peer needs --backend grpc".into());
        }
        if !matches!(args.backend, BackendKind::Grpc | BackendKind::Serve) && args.compare_python {
            return Err("--compare-python needs --backend grpc or serve".into());
        }
        if args.backend != BackendKind::Postgres && args.postgres_url.is_some() {
            return Err("--postgres-url needs --backend postgres".into());
        }
        if args.backend != BackendKind::Sqlite && args.sqlite_synchronous.is_some() {
            return Err("--sqlite-synchronous needs --backend sqlite".into());
        }
        let peer = if args.peer || (args.backend == BackendKind::Serve && args.compare_python) {
            let server = catch_panic(PeerServer::start)
                .map_err(|e| format!("cannot start the Python sidecar: {e}"))?;
            Some(Arc::new(Peer(Mutex::new(server))))
        } else {
            None
        };
        Ok(BackendFactory {
            args,
            scratch: Arc::new(Scratch { dir }),
            peer,
            served: Arc::new(Mutex::new(None)),
        })
    }

    /// The backend's name.
    pub(crate) fn name(&self) -> &'static str {
        self.args.backend.name()
    }

    /// The backend, with where it is, for the report.
    pub(crate) fn describe(&self) -> String {
        match self.args.backend {
            BackendKind::Grpc if self.peer.is_some() => format!(
                "grpc, the Python durabletask package's in-memory sidecar (started by the bench) at {}, task hub {}",
                self.endpoint(),
                self.args.taskhub
            ),
            BackendKind::Grpc => format!(
                "grpc, sidecar at {}, task hub {}",
                self.endpoint(),
                self.args.taskhub
            ),
            BackendKind::Postgres => match &self.args.postgres_url {
                Some(url) => format!("postgres at {}", without_password(url)),
                None => "postgres, a throwaway local server (fsync off) started by the bench"
                    .to_string(),
            },
            BackendKind::Sqlite => format!(
                "sqlite, synchronous = {}",
                match self.sqlite_synchronous() {
                    durable_sqlite::Synchronous::Full => "FULL",
                    _ => "NORMAL",
                }
            ),
            BackendKind::Serve => "serve: durable's SidecarServer in process over SQLite (a fresh \
                 file per run), GrpcBackend worker and client over loopback TCP"
                .to_string(),
            other => other.name().to_string(),
        }
    }

    /// The `synchronous` setting SQLite files are opened with.
    fn sqlite_synchronous(&self) -> durable_sqlite::Synchronous {
        self.args
            .sqlite_synchronous
            .map_or_else(Default::default, SqliteSynchronous::setting)
    }

    /// Whether the instances live in another process (a sidecar), so this
    /// process's memory says nothing about them.
    pub(crate) fn is_remote(&self) -> bool {
        self.args.backend == BackendKind::Grpc
    }

    /// Whether S1 also runs with the Python SDK's worker and client.
    pub(crate) fn compare_python(&self) -> bool {
        self.args.compare_python
    }

    fn endpoint(&self) -> String {
        if self.args.backend == BackendKind::Serve {
            let served = self.served.lock().unwrap_or_else(|e| e.into_inner());
            return served
                .as_ref()
                .map_or_else(String::new, |s| s.endpoint.clone());
        }
        match &self.peer {
            Some(peer) => peer
                .0
                .lock()
                .map_or_else(|e| e.into_inner().endpoint(), |s| s.endpoint()),
            None => self.args.endpoint.clone(),
        }
    }

    /// Runs S1 with `count` orchestrations using the Python SDK's own worker
    /// and client (`bench/grpc_python_s1.py`) against this backend's
    /// sidecar. Call it only when no durable worker is connected: the
    /// sidecar would hand the Python orchestrations to it too.
    pub(crate) async fn python_s1(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<PythonS1, BoxError> {
        self.python_s1_at(self.endpoint(), count, timeout).await
    }

    /// With `--backend serve --compare-python`: S1 with the Python SDK's
    /// worker and client on the Python package's own in-memory sidecar.
    pub(crate) async fn python_s1_on_python_server(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Option<Result<PythonS1, BoxError>> {
        if self.args.backend != BackendKind::Serve {
            return None;
        }
        let peer = self.peer.as_ref()?;
        let endpoint = peer
            .0
            .lock()
            .map_or_else(|e| e.into_inner().endpoint(), |s| s.endpoint());
        Some(self.python_s1_at(endpoint, count, timeout).await)
    }

    async fn python_s1_at(
        &self,
        endpoint: String,
        count: usize,
        timeout: Duration,
    ) -> Result<PythonS1, BoxError> {
        let Some(address) = endpoint.strip_prefix("http://") else {
            return Err(
                format!("the Python comparison speaks plain http only, not to {endpoint}").into(),
            );
        };
        let address = address.trim_end_matches('/').to_string();
        let taskhub = self.args.taskhub.clone();
        let joined = tokio::task::spawn_blocking(move || {
            catch_panic(|| run_python_s1(&address, &taskhub, count, timeout))
        })
        .await?;
        joined?
    }

    /// The targets set for this backend: the in-memory backend's from the
    /// core runtime's issue, SQLite's (a file on disk) from its own.
    pub(crate) fn targets(&self) -> Targets {
        match self.args.backend {
            BackendKind::Memory => Targets {
                s1: Some(Target::AtLeast(5_000.0)),
                s2: Some(Target::Below(1.0)),
                s3: Some(Target::AtMost(15.0)),
                s4: Some(Target::AtMost(4096.0)),
                s6: Some(Target::Below(1.0)),
            },
            // Issue 12's targets on a 2-core machine: S1 5,000 orch/s with
            // `synchronous = NORMAL`, 1,000 with FULL; S2 300 ms; S6 p50
            // 0.5 ms.
            BackendKind::Sqlite => Targets {
                s1: Some(Target::AtLeast(match self.sqlite_synchronous() {
                    durable_sqlite::Synchronous::Full => 1_000.0,
                    _ => 5_000.0,
                })),
                s2: Some(Target::AtMost(0.3)),
                s3: None,
                s4: None,
                s6: Some(Target::AtMost(0.5)),
            },
            BackendKind::Postgres => Targets {
                s1: Some(Target::AtLeast(1_000.0)),
                s2: Some(Target::Below(5.0)),
                s3: None,
                s4: None,
                s6: None,
            },
            BackendKind::Serve => Targets {
                s1: Some(Target::AtLeast(1_000.0)),
                s2: None,
                s3: None,
                s4: None,
                s6: None,
            },
            BackendKind::Grpc => Targets {
                s1: None,
                s2: None,
                s3: None,
                s4: None,
                s6: None,
            },
        }
    }

    /// Scenario sizes to use unless overridden on the command line.
    pub(crate) fn default_sizes(&self) -> Sizes {
        match self.args.backend {
            BackendKind::Memory | BackendKind::Sqlite | BackendKind::Postgres => Sizes::default(),
            // Over a gRPC hop: S1 and S2 at full size, the rest smaller.
            BackendKind::Serve => Sizes {
                s3_short: 100,
                s3_long: 1_000,
                s3_nocache_budget: Duration::ZERO,
                s4_count: 1_000,
                s5_count: 200,
                s6_count: 100,
                ..Sizes::default()
            },
            // A sidecar is a network hop per call, and the Python test
            // sidecar serves gRPC from 10 threads (its work-item stream and
            // every pending wait hold one): small runs, no uncached long
            // chain.
            BackendKind::Grpc => Sizes {
                s1_count: 200,
                s2_count: 200,
                s3_short: 10,
                s3_long: 100,
                s3_nocache_budget: Duration::ZERO,
                s4_count: 50,
                s5_count: 50,
                s6_count: 50,
                s1_idle_waiters: 0,
            },
        }
    }

    /// A fresh, empty backend able to hold what `needs` asks for.
    pub(crate) async fn open(&self, needs: Needs) -> Result<Arc<dyn Backend>, BoxError> {
        let defaults = Limits::default();
        let limits = Limits {
            max_history_events: defaults.max_history_events.max(needs.max_history_events),
            ..defaults
        };
        match self.args.backend {
            BackendKind::Memory => Ok(Arc::new(MemoryBackend::new().with_limits(limits))),
            BackendKind::Serve => {
                std::fs::create_dir_all(&self.scratch.dir)?;
                let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = self.scratch.dir.join(format!("serve-{n}.db"));
                let options = durable_sqlite::SqliteOptions {
                    limits,
                    ..Default::default()
                };
                let sqlite = Arc::new(durable_sqlite::SqliteBackend::open_with(&path, options)?);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let endpoint = format!("http://{}", listener.local_addr()?);
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let server = durable_grpc::server::SidecarServer::new(sqlite);
                tokio::spawn(server.serve(listener, async {
                    let _ = stopped.await;
                }));
                // The previous run's server stops as this one replaces it.
                *self.served.lock().unwrap_or_else(|e| e.into_inner()) = Some(Served {
                    endpoint: endpoint.clone(),
                    _stop: stop,
                });
                Ok(Arc::new(
                    GrpcBackend::connect(GrpcOptions::new(endpoint)).await?,
                ))
            }
            BackendKind::Sqlite => {
                std::fs::create_dir_all(&self.scratch.dir)?;
                let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = self.scratch.dir.join(format!("run-{n}.db"));
                let options = durable_sqlite::SqliteOptions {
                    limits,
                    synchronous: self.sqlite_synchronous(),
                    ..Default::default()
                };
                Ok(Arc::new(durable_sqlite::SqliteBackend::open_with(
                    &path, options,
                )?))
            }
            BackendKind::Postgres => {
                let url = match &self.args.postgres_url {
                    Some(url) => url.clone(),
                    None => catch_panic(|| TestCluster::shared().url().to_string())
                        .map_err(|e| format!("cannot start a local PostgreSQL server: {e}"))?,
                };
                let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let options = PostgresOptions {
                    schema: format!("bench_{}_{n}", std::process::id()),
                    limits,
                    ..PostgresOptions::default()
                };
                Ok(Arc::new(
                    PostgresBackend::connect_with(&url, options).await?,
                ))
            }
            // The sidecar keeps its own limits; each run gets a new
            // connection to the same sidecar (instance ids do not repeat).
            BackendKind::Grpc => {
                let options = GrpcOptions::new(self.endpoint()).task_hub(self.args.taskhub.clone());
                Ok(Arc::new(GrpcBackend::connect(options).await?))
            }
        }
    }
}

/// `url` with its password, if any, left out.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or(user);
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Runs `f`, turning a panic (the peer harness panics with its setup
/// instructions when python3 or the package is missing) into an error.
fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, BoxError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        message.into()
    })
}

/// The script that runs S1 with the Python SDK's worker and client.
fn python_s1_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("bench")
        .join("grpc_python_s1.py")
}

/// Runs the script and reads its `RESULT {json}` line (blocking).
fn run_python_s1(
    address: &str,
    taskhub: &str,
    count: usize,
    timeout: Duration,
) -> Result<PythonS1, BoxError> {
    let count_arg = count.to_string();
    let timeout_arg = timeout.as_secs().max(1).to_string();
    let mut script = PyProcess::spawn_path(
        &python_s1_script(),
        &[
            "--address",
            address,
            "--taskhub",
            taskhub,
            "--count",
            &count_arg,
            "--timeout",
            &timeout_arg,
        ],
    );
    // Bounded by the script's own waits (each instance at most `timeout`),
    // plus its start-up.
    let deadline = Instant::now() + timeout + Duration::from_secs(120);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = script.next_line(left)?;
        if let Some(json) = line.strip_prefix("RESULT ") {
            break json.to_string();
        }
    };
    let result: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| format!("grpc_python_s1.py printed a bad result line ({e}): {line}"))?;
    if !script.wait_exit(Duration::from_secs(60)) {
        return Err(format!(
            "grpc_python_s1.py failed after printing its result; its log:\n{}",
            script.log_text()
        )
        .into());
    }
    let per_second = result["per_second"]
        .as_f64()
        .ok_or_else(|| format!("no per_second in the result line: {line}"))?;
    if result["count"].as_u64() != Some(count as u64) {
        return Err(format!("the script ran another count than {count}: {line}").into());
    }
    Ok(PythonS1 { per_second })
}

static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The directory of this invocation's database files, removed when the last
/// factory handle is dropped (after every backend is closed).
#[derive(Debug)]
struct Scratch {
    dir: std::path::PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        backend: BackendArgs,
    }

    fn factory(args: &[&str]) -> Result<BackendFactory, BoxError> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        BackendFactory::new(cli.backend)
    }

    #[test]
    fn grpc_runs_small_and_names_its_sidecar() {
        let f = factory(&[
            "--backend",
            "grpc",
            "--endpoint",
            "http://127.0.0.1:9",
            "--taskhub",
            "hub",
        ])
        .unwrap();
        assert_eq!(f.default_sizes().s1_count, 200);
        assert!(f.default_sizes().s3_nocache_budget.is_zero());
        assert!(f.is_remote());
        assert!(!f.compare_python());
        assert_eq!(
            f.describe(),
            "grpc, sidecar at http://127.0.0.1:9, task hub hub"
        );
    }

    #[test]
    fn postgres_takes_a_url_and_hides_its_password() {
        let f = factory(&[
            "--backend",
            "postgres",
            "--postgres-url",
            "postgres://app:secret@db:5432/app",
        ])
        .unwrap();
        assert_eq!(f.describe(), "postgres at postgres://app@db:5432/app");
        assert!(!f.is_remote());
        let e = factory(&["--postgres-url", "postgres://db/app"]).unwrap_err();
        assert!(e.to_string().contains("--backend postgres"), "{e}");
    }

    #[test]
    fn sqlite_synchronous_sets_the_setting_and_its_target() {
        let normal = factory(&["--backend", "sqlite"]).unwrap();
        assert_eq!(normal.describe(), "sqlite, synchronous = NORMAL");
        let full = factory(&["--backend", "sqlite", "--sqlite-synchronous", "full"]).unwrap();
        assert_eq!(full.describe(), "sqlite, synchronous = FULL");
        assert_eq!(full.sqlite_synchronous(), durable_sqlite::Synchronous::Full);
        let at_least = |f: &BackendFactory| match f.targets().s1 {
            Some(Target::AtLeast(t)) => t,
            other => panic!("S1 target {other:?}"),
        };
        assert_eq!(at_least(&normal), 5_000.0);
        assert_eq!(at_least(&full), 1_000.0);
        let e = factory(&["--backend", "memory", "--sqlite-synchronous", "full"]).unwrap_err();
        assert!(e.to_string().contains("--backend sqlite"), "{e}");
    }

    #[test]
    fn peer_options_need_the_grpc_backend() {
        for flag in ["--peer", "--compare-python"] {
            let e = factory(&["--backend", "sqlite", flag]).unwrap_err();
            assert!(e.to_string().contains("--backend grpc"), "{e}");
        }
    }
}
