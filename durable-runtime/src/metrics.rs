//! Metrics: what the worker and the stores count and time, reported
//! through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Nothing is collected until the application installs a recorder (a
//! Prometheus exporter, an OpenTelemetry bridge, or a test's in-memory
//! one); without one each report is a call to the facade's no-op recorder.
//! The names and labels are listed in `docs/observability.md`; each is a
//! constant here.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`ORCHESTRATIONS_STARTED`] | counter | `name` |
//! | [`ORCHESTRATIONS_COMPLETED`] | counter | `name`, `status` |
//! | [`ORCHESTRATIONS_FAILED`] | counter | `name` |
//! | [`EPISODE_DURATION`] | histogram (seconds) | `name`, `replay` |
//! | [`EPISODES`] | counter | `name`, `replay` |
//! | [`ACTIVITY_DURATION`] | histogram (seconds) | `name`, `status` |
//! | [`LEASES_LOST`] | counter | `kind` |
//! | [`REDELIVERIES`] | counter | `kind` |
//! | [`BACKLOG`] | gauge | `kind` |
//! | [`HISTORY_CACHE_HITS`] | counter | |
//! | [`HISTORY_CACHE_MISSES`] | counter | |

/// Executions started (episodes with an `ExecutionStarted` recorded), by
/// orchestrator `name`.
pub const ORCHESTRATIONS_STARTED: &str = "durable_orchestrations_started_total";
/// Executions ended, by orchestrator `name` and `status` (`Completed`,
/// `Failed`, `Terminated`, `ContinuedAsNew`).
pub const ORCHESTRATIONS_COMPLETED: &str = "durable_orchestrations_completed_total";
/// Executions that ended `Failed`, by orchestrator `name` (also counted in
/// [`ORCHESTRATIONS_COMPLETED`]).
pub const ORCHESTRATIONS_FAILED: &str = "durable_orchestrations_failed_total";
/// Time from a worker taking an episode to its result being recorded, by
/// orchestrator `name` and `replay` (see [`EPISODES`]).
pub const EPISODE_DURATION: &str = "durable_episode_duration_seconds";
/// Episodes recorded, by orchestrator `name` and `replay`: `cached` (the
/// worker's execution cache held the instance, nothing was replayed),
/// `full` (the code replayed the whole history), `rewind`, or
/// [`REPLAY_NONE`].
pub const EPISODES: &str = "durable_episodes_total";
/// The `replay` label of an episode whose code did not run: the worker's
/// versioning failed the instance (`FailureStrategy::Fail`).
pub const REPLAY_NONE: &str = "none";
/// Time an activity ran, by activity `name` and `status` (`Completed`,
/// `Failed`).
pub const ACTIVITY_DURATION: &str = "durable_activity_duration_seconds";
/// Results a worker could not record because its lease had expired (or
/// the work was taken over), by `kind` (`orchestration`, `activity`).
pub const LEASES_LOST: &str = "durable_leases_lost_total";
/// Work items a store handed out again after an earlier lease on them
/// expired, by `kind` (`orchestration`, `activity`).
pub const REDELIVERIES: &str = "durable_redeliveries_total";
/// Work ready to run and not taken, by `kind` (`orchestration`,
/// `activity`), as of the last time a worker asked the store for work.
pub const BACKLOG: &str = "durable_backlog";
/// Episodes whose history a store read from its history cache.
pub const HISTORY_CACHE_HITS: &str = "durable_history_cache_hits_total";
/// Episodes whose history a store read from storage (nothing cached, or
/// the cached copy stale).
pub const HISTORY_CACHE_MISSES: &str = "durable_history_cache_misses_total";

/// The value of the `kind` label for orchestration work.
pub const KIND_ORCHESTRATION: &str = "orchestration";
/// The value of the `kind` label for activity work.
pub const KIND_ACTIVITY: &str = "activity";

/// Counts a redelivery of `kind` work (for stores).
pub fn redelivered(kind: &'static str) {
    ::metrics::counter!(REDELIVERIES, "kind" => kind).increment(1);
}

/// Counts a lost lease on `kind` work.
pub(crate) fn lease_lost(kind: &'static str) {
    ::metrics::counter!(LEASES_LOST, "kind" => kind).increment(1);
}

/// Sets the backlog of `kind` work (for stores).
pub fn backlog(kind: &'static str, ready: usize) {
    ::metrics::gauge!(BACKLOG, "kind" => kind).set(ready as f64);
}

/// Counts a history-cache lookup (for stores).
pub fn history_cache(hit: bool) {
    let name = if hit {
        HISTORY_CACHE_HITS
    } else {
        HISTORY_CACHE_MISSES
    };
    ::metrics::counter!(name).increment(1);
}

/// Reports one recorded episode of orchestrator `name`: how it ran
/// (`replay`), how long it took, whether it started the execution, and how
/// the execution ended if it did.
pub(crate) fn episode(
    name: &str,
    replay: &'static str,
    seconds: f64,
    started: bool,
    ended: Option<crate::history::OrchestrationStatus>,
) {
    // One allocation, shared by every label below.
    let name = ::metrics::SharedString::from(std::sync::Arc::<str>::from(name));
    ::metrics::counter!(EPISODES, "name" => name.clone(), "replay" => replay).increment(1);
    ::metrics::histogram!(EPISODE_DURATION, "name" => name.clone(), "replay" => replay)
        .record(seconds);
    if started {
        ::metrics::counter!(ORCHESTRATIONS_STARTED, "name" => name.clone()).increment(1);
    }
    if let Some(status) = ended {
        if status == crate::history::OrchestrationStatus::Failed {
            ::metrics::counter!(ORCHESTRATIONS_FAILED, "name" => name.clone()).increment(1);
        }
        ::metrics::counter!(ORCHESTRATIONS_COMPLETED, "name" => name, "status" => status.to_string())
            .increment(1);
    }
}

/// Reports one activity run of activity `name`.
pub(crate) fn activity(name: &str, seconds: f64, failed: bool) {
    let status = if failed { "Failed" } else { "Completed" };
    ::metrics::histogram!(ACTIVITY_DURATION, "name" => name.to_string(), "status" => status)
        .record(seconds);
}
