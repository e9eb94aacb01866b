//! Failures seen by orchestrator and activity code, and how user errors
//! become the [`FailureDetails`] a history records.
//!
//! - [`TaskError`]: an awaited durable task (activity, sub-orchestration,
//!   external event) failed. Carries the [`FailureDetails`] that travelled back.
//! - [`OrchestrationError`]: what an orchestrator returns to fail. Any
//!   `std::error::Error` converts into it with `?`.
//! - [`ActivityError`]: what an activity returns to fail; it may be marked
//!   non-retriable so retry policies give up at once.
//! - [`TimedOut`]: a durable task awaited with a deadline did not finish by
//!   it.

use crate::history::{FailureDetails, Timestamp};
use std::any::Any;
use std::fmt;

/// An awaited durable task failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    /// What kind of task, e.g. `activity "ship_item"`.
    pub task: String,
    /// Sequence number of the task in the orchestration (`-1` for external events).
    pub task_id: i32,
    /// The failure as recorded in the history.
    pub details: FailureDetails,
}

impl TaskError {
    /// The failure's message.
    pub fn message(&self) -> &str {
        &self.details.message
    }
    /// The failure's error type.
    pub fn error_type(&self) -> &str {
        &self.details.error_type
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.task_id >= 0 {
            write!(
                f,
                "{} (task #{}) failed: {}",
                self.task, self.task_id, self.details
            )
        } else {
            write!(f, "{} failed: {}", self.task, self.details)
        }
    }
}

impl std::error::Error for TaskError {}

/// A durable task awaited with a deadline (`.timeout(..)`) did not finish
/// by it: the deadline's timer fired first. With `?` it fails the
/// orchestration with error type `TimedOut` and this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOut {
    /// The task that timed out, e.g. `external event "approval"`; `None`
    /// for a combination of tasks given to `ctx.timeout(..)`.
    pub task: Option<String>,
    /// When the deadline passed (the deadline timer's fire time).
    pub deadline: Timestamp,
}

/// The error type of the failure a [`TimedOut`] becomes.
pub const TIMED_OUT_ERROR: &str = "TimedOut";

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deadline = self
            .deadline
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        match &self.task {
            Some(task) => write!(
                f,
                "{task} timed out: not finished by its deadline {deadline}"
            ),
            None => write!(
                f,
                "timed out: the awaited tasks did not finish by their deadline {deadline}"
            ),
        }
    }
}

impl std::error::Error for TimedOut {}

fn timed_out(e: &TimedOut) -> OrchestrationError {
    OrchestrationError {
        details: FailureDetails::new(TIMED_OUT_ERROR, e.to_string()),
    }
}

/// Why an orchestration failed. Build one with [`OrchestrationError::new`],
/// or convert any error with `?`.
///
/// ```
/// use durable_runtime::OrchestrationError;
/// let e = OrchestrationError::new("order has no items");
/// assert_eq!(e.details().message, "order has no items");
/// ```
pub struct OrchestrationError {
    details: FailureDetails,
}

impl OrchestrationError {
    /// An error with a message (type `OrchestrationError`).
    pub fn new(message: impl Into<String>) -> Self {
        OrchestrationError {
            details: FailureDetails::new("OrchestrationError", message),
        }
    }

    /// An error with an explicit type name and message.
    pub fn with_type(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        OrchestrationError {
            details: FailureDetails::new(error_type, message),
        }
    }

    /// From complete failure details.
    pub fn from_details(details: FailureDetails) -> Self {
        OrchestrationError { details }
    }

    /// The failure details recorded for the orchestration.
    pub fn details(&self) -> &FailureDetails {
        &self.details
    }

    /// Consumes the error into its failure details.
    pub fn into_details(self) -> FailureDetails {
        self.details
    }
}

impl fmt::Display for OrchestrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.details, f)
    }
}

impl fmt::Debug for OrchestrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.details, f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for OrchestrationError {
    fn from(e: E) -> Self {
        let any: &dyn Any = &e;
        if let Some(task) = any.downcast_ref::<TaskError>() {
            return task_failed(task);
        }
        if let Some(t) = any.downcast_ref::<TimedOut>() {
            return timed_out(t);
        }
        if any.is::<ContinuedAsNew>() {
            return OrchestrationError::with_type(CONTINUED_AS_NEW, e.to_string());
        }
        OrchestrationError {
            details: display_failure::<E>(&e, "OrchestrationError"),
        }
    }
}

/// Why an activity failed.
///
/// ```
/// use durable_runtime::ActivityError;
/// let e = ActivityError::new("PaymentDeclined", "card expired").non_retriable();
/// assert!(e.details().non_retriable);
/// ```
pub struct ActivityError {
    details: FailureDetails,
}

impl ActivityError {
    /// An error with a type name and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            details: FailureDetails::new(error_type, message),
        }
    }

    /// An error with just a message (type `ActivityError`).
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new("ActivityError", message)
    }

    /// Attaches free-form details (shown as the failure's stack trace field).
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details.stack_trace = Some(details.into());
        self
    }

    /// Marks the failure as not worth retrying.
    pub fn non_retriable(mut self) -> Self {
        self.details.non_retriable = true;
        self
    }

    /// The failure details sent back to the orchestration.
    pub fn details(&self) -> &FailureDetails {
        &self.details
    }

    /// Consumes the error into its failure details.
    pub fn into_details(self) -> FailureDetails {
        self.details
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.details, f)
    }
}

impl fmt::Debug for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.details, f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ActivityError {
    fn from(e: E) -> Self {
        into_activity_error(e)
    }
}

/// Converts any displayable error into an [`ActivityError`], keeping an
/// `ActivityError` as it is and using the Rust type name as the error type.
pub fn into_activity_error<E: fmt::Display + 'static>(e: E) -> ActivityError {
    let any: &dyn Any = &e;
    if let Some(a) = any.downcast_ref::<ActivityError>() {
        return ActivityError {
            details: a.details.clone(),
        };
    }
    if let Some(t) = any.downcast_ref::<TaskError>() {
        return ActivityError {
            details: t.details.clone(),
        };
    }
    ActivityError {
        details: display_failure::<E>(&e, "ActivityError"),
    }
}

/// Failure details from any displayable error: its Rust type name (or
/// `plain` for strings) and its message, with the causes an error chain
/// such as `anyhow`'s shows in alternate form (`{:#}`).
fn display_failure<E: fmt::Display + 'static>(e: &E, plain: &str) -> FailureDetails {
    let ty = std::any::type_name::<E>();
    // `String` / `&str` errors read better as the plain type.
    let ty = if ty == "alloc::string::String" || ty == "&str" {
        plain
    } else {
        ty
    };
    FailureDetails::new(ty, format!("{e:#}"))
}

/// Converts any displayable error into an [`OrchestrationError`] (used by
/// `#[orchestrator]` for `Result<T, E>` returns): an `OrchestrationError`
/// stays as it is, a [`TaskError`] keeps the task's failure as the cause.
pub fn into_orchestration_error<E: fmt::Display + 'static>(e: E) -> OrchestrationError {
    let any: &dyn Any = &e;
    if let Some(o) = any.downcast_ref::<OrchestrationError>() {
        return OrchestrationError {
            details: o.details.clone(),
        };
    }
    if let Some(task) = any.downcast_ref::<TaskError>() {
        return task_failed(task);
    }
    if let Some(t) = any.downcast_ref::<TimedOut>() {
        return timed_out(t);
    }
    if any.is::<ContinuedAsNew>() {
        return OrchestrationError::with_type(CONTINUED_AS_NEW, e.to_string());
    }
    OrchestrationError {
        details: display_failure::<E>(&e, "OrchestrationError"),
    }
}

fn task_failed(task: &TaskError) -> OrchestrationError {
    // Keep the task's failure as the inner cause so callers can see which
    // activity failed and why.
    let details =
        FailureDetails::new("TaskFailedError", task.to_string()).with_inner(task.details.clone());
    OrchestrationError { details }
}

/// What [`OrchestrationContext::continue_as_new`] returns in the error
/// position of an orchestrator's `Result`, so that
/// `return ctx.continue_as_new(&next)` type-checks. It is not a failure:
/// once `continue_as_new` was called, the engine restarts the orchestration
/// and ignores what the orchestrator returned.
///
/// Error types convert from it: [`OrchestrationError`], `String`, and every
/// error type that takes a `std::error::Error` (`anyhow::Error`,
/// `Box<dyn std::error::Error + Send + Sync>`). A custom error type needs
/// `impl From<ContinuedAsNew> for MyError`.
///
/// [`OrchestrationContext::continue_as_new`]: crate::OrchestrationContext::continue_as_new
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContinuedAsNew;

/// The error type of [`ContinuedAsNew`] as an [`OrchestrationError`].
pub const CONTINUED_AS_NEW: &str = "ContinuedAsNew";

impl fmt::Display for ContinuedAsNew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the orchestration continued as new")
    }
}

impl std::error::Error for ContinuedAsNew {}

impl From<ContinuedAsNew> for String {
    fn from(e: ContinuedAsNew) -> Self {
        e.to_string()
    }
}

/// What an orchestrator can return straight from
/// [`continue_as_new`](crate::OrchestrationContext::continue_as_new):
/// `Result<O, E>` for any error type `E` that converts from
/// [`ContinuedAsNew`], and `()` for orchestrators without output. The
/// value only satisfies the return type; the engine ignores it.
///
/// Called as a statement, `ctx.continue_as_new(&next);` leaves this type
/// unknown ("type annotations needed", "cannot satisfy
/// `_: ContinueAsNewResult`"): write `return ctx.continue_as_new(&next);`.
#[diagnostic::on_unimplemented(
    message = "`return ctx.continue_as_new(..)` needs the orchestrator to return a `Result<_, E>` with `E: From<ContinuedAsNew>`, or `()`; it returns `{Self}`",
    label = "`continue_as_new` cannot produce a `{Self}`",
    note = "`OrchestrationError`, `String`, `anyhow::Error` and `Box<dyn std::error::Error + Send + Sync>` convert from `ContinuedAsNew`; for your own error type, implement `From<ContinuedAsNew>`"
)]
pub trait ContinueAsNewResult {
    /// The placeholder value returned by `continue_as_new`.
    fn continued_as_new() -> Self;
}

impl<O, E: From<ContinuedAsNew>> ContinueAsNewResult for Result<O, E> {
    fn continued_as_new() -> Self {
        Err(E::from(ContinuedAsNew))
    }
}

impl ContinueAsNewResult for () {
    fn continued_as_new() -> Self {}
}

/// The error type of the failure recorded when an orchestrator's code no
/// longer matches its history.
pub const NON_DETERMINISM_ERROR: &str = "NonDeterminismError";

/// What a durable task produced: its result as JSON text, or its failure.
/// Activities, sub-orchestrations, timers and external events all end in one.
pub type TaskOutcome = Result<Option<String>, FailureDetails>;

/// The failure recorded for a panic in user code.
pub(crate) fn panic_details(p: Box<dyn Any + Send>) -> FailureDetails {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    };
    FailureDetails::new("Panic", format!("panicked: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_as_new_placeholders_convert_into_every_usual_error_type() {
        let r: Result<u32, OrchestrationError> = ContinueAsNewResult::continued_as_new();
        let e = r.unwrap_err();
        assert_eq!(e.details().error_type, CONTINUED_AS_NEW);
        assert_eq!(e.details().message, ContinuedAsNew.to_string());

        let r: Result<u32, String> = ContinueAsNewResult::continued_as_new();
        assert_eq!(r.unwrap_err(), "the orchestration continued as new");

        let r: Result<u32, Box<dyn std::error::Error + Send + Sync>> =
            ContinueAsNewResult::continued_as_new();
        assert!(r.unwrap_err().is::<ContinuedAsNew>());

        // What `#[orchestrator]` does with the error of a `Result` return.
        let e = into_orchestration_error(ContinuedAsNew);
        assert_eq!(e.details().error_type, CONTINUED_AS_NEW);

        let () = ContinueAsNewResult::continued_as_new();
    }
}
