//! Errors of the client and worker APIs.
//!
//! The failures orchestrator and activity code see ([`TaskError`],
//! [`OrchestrationError`], [`ActivityError`]) live in [`crate::failure`] and
//! are re-exported here.

pub use crate::failure::{
    into_activity_error, into_orchestration_error, ActivityError, OrchestrationError, TaskError,
};

/// Errors from the client and worker APIs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend reported an error.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// A value could not be encoded, or a payload could not be decoded.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A value the call reads is not there (e.g. the output of an instance
    /// that has not finished, or was fetched without payloads).
    #[error("{0}")]
    NotAvailable(String),
    /// Registration was inconsistent (e.g. duplicate names).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The process could not listen for its stop signals
    /// ([`Worker::run_until_signal`](crate::Worker::run_until_signal)).
    #[error(
        "could not listen for SIGINT and SIGTERM: {0}; run the worker inside a tokio runtime \
         with I/O enabled (`#[tokio::main]`), or call `Worker::start` and stop it yourself"
    )]
    Signal(#[source] std::io::Error),
}
