//! Checks shared by the test binaries.

use durable_runtime::history::{EventKind, HistoryEvent};
use std::collections::HashSet;

/// No task is scheduled or completed twice, and no timer fires twice.
pub(crate) fn check_no_duplicates(id: &str, history: &[HistoryEvent]) {
    let (mut scheduled, mut completed) = (HashSet::new(), HashSet::new());
    for e in history {
        let fresh = match &e.kind {
            EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. } => scheduled.insert(e.event_id),
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id, ..
            } => completed.insert(*task_scheduled_id),
            EventKind::TimerFired { timer_id, .. } => completed.insert(*timer_id),
            _ => true,
        };
        assert!(fresh, "instance {id}: duplicated event {e:?}");
    }
}
