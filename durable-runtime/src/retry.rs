//! Retry policies for activities and sub-orchestrations.
//!
//! Retries are ordinary orchestration code: each attempt is a new task and
//! each wait a durable timer, so a retry schedule survives restarts and
//! replays exactly.

use crate::failure::TaskError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

type RetryPredicate = Arc<dyn Fn(&TaskError) -> bool + Send + Sync>;

/// When and how often to retry a failed task.
///
/// ```
/// use durable_runtime::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::new(5, Duration::from_secs(1))
///     .backoff_coefficient(2.0)
///     .max_interval(Duration::from_secs(30))
///     .retry_if(|e| e.error_type() != "ValidationError");
/// assert_eq!(policy.delay_for_attempt(3), Duration::from_secs(4));
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    first_interval: Duration,
    backoff_coefficient: f64,
    max_interval: Option<Duration>,
    timeout: Option<Duration>,
    predicate: Option<RetryPredicate>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("first_interval", &self.first_interval)
            .field("backoff_coefficient", &self.backoff_coefficient)
            .field("max_interval", &self.max_interval)
            .field("timeout", &self.timeout)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all, waiting `first_interval` before
    /// the second (backoff coefficient 1 until changed).
    pub fn new(max_attempts: u32, first_interval: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            first_interval,
            backoff_coefficient: 1.0,
            max_interval: None,
            timeout: None,
            predicate: None,
        }
    }

    /// Multiplies the wait after each failed attempt.
    pub fn backoff_coefficient(mut self, c: f64) -> Self {
        self.backoff_coefficient = if c.is_finite() && c >= 1.0 { c } else { 1.0 };
        self
    }

    /// Caps the wait between attempts.
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = Some(d);
        self
    }

    /// Gives up once this much orchestration time has passed since the first attempt.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Retries only failures for which `f` returns true (non-retriable
    /// failures are never retried).
    pub fn retry_if(mut self, f: impl Fn(&TaskError) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(f));
        self
    }

    /// Maximum number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_for_attempt(&self, attempt: u32) -> Duration {
        let factor = self
            .backoff_coefficient
            .powi(attempt.saturating_sub(1).min(1000) as i32);
        let secs = self.first_interval.as_secs_f64() * factor;
        let d = if secs.is_finite() && secs < 1e12 {
            Duration::from_secs_f64(secs)
        } else {
            Duration::from_secs(1_000_000_000_000)
        };
        match self.max_interval {
            Some(m) if d > m => m,
            _ => d,
        }
    }

    /// The timeout set with [`timeout`](Self::timeout), if any.
    pub(crate) fn timeout_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether a failure may be retried (never a non-retriable one).
    pub(crate) fn should_retry(&self, e: &TaskError) -> bool {
        !e.details.non_retriable && self.predicate.as_ref().is_none_or(|p| p(e))
    }
}
