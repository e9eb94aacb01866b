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
    /// A value could not be serialised or deserialised.
    #[error("{what}: {source}")]
    Serde {
        /// What was being converted (names the type).
        what: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// Registration was inconsistent (e.g. duplicate names).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}
