//! Backends under test. A backend is a factory that opens a fresh store for
//! each scenario, plus the scenario sizes that suit it.
//!
//! To add a backend: a variant of [`BackendKind`], its options in
//! [`BackendArgs`], a branch in [`BackendFactory::open`] and, if the default
//! sizes are too large for it, in [`BackendFactory::default_sizes`].

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
}

impl BackendKind {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
        }
    }
}

/// Command-line options of the backends (each backend reads its own).
#[derive(Clone, Debug, Args)]
pub(crate) struct BackendArgs {
    /// Which backend to measure.
    #[arg(long, value_enum, default_value_t = BackendKind::Memory)]
    pub(crate) backend: BackendKind,
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
}

impl BackendFactory {
    /// A factory for the backend chosen on the command line.
    pub(crate) fn new(args: BackendArgs) -> Self {
        BackendFactory { args }
    }

    /// The backend's name.
    pub(crate) fn name(&self) -> &'static str {
        self.args.backend.name()
    }

    /// Scenario sizes to use unless overridden on the command line.
    pub(crate) fn default_sizes(&self) -> Sizes {
        match self.args.backend {
            BackendKind::Memory => Sizes::default(),
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
        }
    }
}
