//! Backends under test. A backend is a factory that opens a fresh store for
//! each scenario, plus the scenario sizes that suit it.
//!
//! To add a backend: a variant of [`BackendKind`], its options in
//! [`BackendArgs`], a branch in [`BackendFactory::open`] and, if the default
//! sizes are too large for it, in [`BackendFactory::default_sizes`].

use crate::report::Target;
use crate::scenarios::Sizes;
use clap::{Args, ValueEnum};
use durable_runtime::backend::transition::Limits;
use durable_runtime::{Backend, MemoryBackend};
use std::sync::Arc;

/// Any error a benchmark step can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The backend to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// Everything in this process, nothing persisted.
    Memory,
    /// A SQLite file on disk with default settings (a fresh file per run).
    Sqlite,
}

impl BackendKind {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Sqlite => "sqlite",
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
    pub(crate) db_dir: Option<std::path::PathBuf>,
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
}

impl BackendFactory {
    /// A factory for the backend chosen on the command line.
    pub(crate) fn new(args: BackendArgs) -> Self {
        let base = args.db_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("durable-bench-{}", std::process::id()));
        BackendFactory {
            args,
            scratch: Arc::new(Scratch { dir }),
        }
    }

    /// The backend's name.
    pub(crate) fn name(&self) -> &'static str {
        self.args.backend.name()
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
            BackendKind::Sqlite => Targets {
                s1: Some(Target::AtLeast(1_000.0)),
                s2: Some(Target::Below(5.0)),
                s3: None,
                s4: None,
                s6: None,
            },
        }
    }

    /// Scenario sizes to use unless overridden on the command line.
    pub(crate) fn default_sizes(&self) -> Sizes {
        match self.args.backend {
            BackendKind::Memory | BackendKind::Sqlite => Sizes::default(),
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
            BackendKind::Sqlite => {
                std::fs::create_dir_all(&self.scratch.dir)?;
                let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = self.scratch.dir.join(format!("run-{n}.db"));
                let options = durable_sqlite::SqliteOptions {
                    limits,
                    ..Default::default()
                };
                Ok(Arc::new(durable_sqlite::SqliteBackend::open_with(
                    &path, options,
                )?))
            }
        }
    }
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
