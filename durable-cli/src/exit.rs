//! Exit codes and the errors that choose them.
//!
//! Scripts can rely on the codes: they are part of the command line's
//! interface (documented in `durable --help` and docs/cli.md).

use durable_runtime::backend::BackendError;
use durable_runtime::history::OrchestrationStatus;
use std::fmt;

/// The command did what was asked (for `watch`: the instance completed).
pub const OK: u8 = 0;
/// Bad usage (unknown option, malformed JSON or time, an operation the
/// instance's status does not allow) or any other error.
pub const ERROR: u8 = 1;
/// No instance has the id given.
pub const NOT_FOUND: u8 = 2;
/// The store or endpoint cannot be reached or read (missing SQLite file,
/// damaged database, server down, refused credentials).
pub const UNAVAILABLE: u8 = 3;
/// `watch`: the instance failed.
pub const FAILED: u8 = 4;
/// `watch`: the instance was terminated (or canceled).
pub const TERMINATED: u8 = 5;
/// `watch --timeout`: the instance had not finished when the time was up.
pub const TIMED_OUT: u8 = 6;

/// The text `durable --help` shows after the options.
pub const HELP: &str = "\
Exit codes:
  0  ok (watch: the instance completed)
  1  usage or other error (malformed JSON or time, an operation the instance's status refuses)
  2  not found: no instance has that id
  3  store or endpoint unreachable or unreadable (missing SQLite file, server down)
  4  watch: the instance failed
  5  watch: the instance was terminated
  6  watch: --timeout passed before the instance finished

Stores: --store sqlite:PATH (default sqlite:./durable.db; never created by the CLI),
        --store postgres://user:password@host:port/database,
        or --endpoint URL [--taskhub NAME] for a Durable Task sidecar (gRPC).";

/// The text `durable watch --help` shows after the options.
pub const WATCH_HELP: &str = "\
Exit codes:
  0  the instance completed
  2  no instance has that id (or it was purged while watched)
  3  store or endpoint unreachable or unreadable
  4  the instance failed
  5  the instance was terminated
  6  --timeout passed before the instance finished";

/// The exit code `watch` ends with when the instance reached `status`.
///
/// ```
/// use durable_cli::exit;
/// use durable_runtime::OrchestrationStatus;
/// assert_eq!(exit::for_final_status(OrchestrationStatus::Completed), exit::OK);
/// assert_eq!(exit::for_final_status(OrchestrationStatus::Failed), exit::FAILED);
/// ```
pub fn for_final_status(status: OrchestrationStatus) -> u8 {
    match status {
        OrchestrationStatus::Completed => OK,
        OrchestrationStatus::Failed => FAILED,
        OrchestrationStatus::Terminated | OrchestrationStatus::Canceled => TERMINATED,
        // Not final: watch does not stop on these.
        _ => ERROR,
    }
}

/// What went wrong, and which exit code says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Bad usage or input: exit code 1.
    Usage(String),
    /// Unknown instance id: exit code 2.
    NotFound(String),
    /// Store or endpoint unreachable or unreadable: exit code 3.
    Unavailable(String),
    /// Anything else: exit code 1.
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Other(_) => ERROR,
            CliError::NotFound(_) => NOT_FOUND,
            CliError::Unavailable(_) => UNAVAILABLE,
        }
    }

    /// The error for an unknown instance id.
    pub fn not_found(id: &str) -> Self {
        CliError::NotFound(BackendError::NotFound(id.to_string()).to_string())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m)
            | CliError::NotFound(m)
            | CliError::Unavailable(m)
            | CliError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

impl From<BackendError> for CliError {
    fn from(e: BackendError) -> Self {
        let text = e.to_string();
        match e {
            BackendError::NotFound(_) => CliError::NotFound(text),
            BackendError::Unavailable(_) | BackendError::Shutdown | BackendError::Other(_) => {
                CliError::Unavailable(text)
            }
            BackendError::InvalidState { .. }
            | BackendError::InvalidRequest(_)
            | BackendError::AlreadyExists { .. }
            | BackendError::PayloadTooLarge { .. } => CliError::Usage(text),
            BackendError::LeaseLost(_) | BackendError::Timeout(..) => CliError::Other(text),
        }
    }
}

impl From<durable_runtime::Error> for CliError {
    fn from(e: durable_runtime::Error) -> Self {
        match e {
            durable_runtime::Error::Backend(b) => b.into(),
            other => CliError::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_to_documented_codes() {
        let code = |e: BackendError| CliError::from(e).exit_code();
        assert_eq!(code(BackendError::NotFound("x".into())), NOT_FOUND);
        assert_eq!(code(BackendError::Unavailable("down".into())), UNAVAILABLE);
        assert_eq!(code(BackendError::Other("damaged".into())), UNAVAILABLE);
        assert_eq!(
            code(BackendError::InvalidState {
                id: "x".into(),
                operation: "purge",
                status: OrchestrationStatus::Running
            }),
            ERROR
        );
        let nf = CliError::not_found("order-7");
        assert_eq!(nf.exit_code(), NOT_FOUND);
        assert!(nf.to_string().contains("\"order-7\""), "{nf}");
    }

    #[test]
    fn final_statuses_have_distinct_codes() {
        use OrchestrationStatus::*;
        let codes = [Completed, Failed, Terminated].map(for_final_status);
        assert_eq!(codes, [OK, FAILED, TERMINATED]);
        assert_eq!(for_final_status(Canceled), TERMINATED);
        for c in [NOT_FOUND, UNAVAILABLE, TIMED_OUT, ERROR] {
            assert!(!codes.contains(&c));
        }
    }
}
