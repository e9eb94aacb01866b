//! [`HistoryCache`]: the histories of recently run executions, kept by a
//! storage backend so an episode does not re-read a whole history.

use crate::history::{HistoryEvent, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;

/// Histories of recently run executions, by instance id, at most
/// `capacity` of them. An entry is used only when its execution id, its
/// length and the instance's last update time (`last_updated_at`) match
/// what the store holds, so writes by other processes are never missed: a
/// history grown elsewhere has another length, and one rewritten elsewhere
/// (a rewind, which can leave the length as it was) another update time. A
/// stale entry is a miss, and a miss costs one read.
///
/// ```
/// use durable_runtime::backend::HistoryCache;
/// use std::sync::Arc;
///
/// let t = chrono::DateTime::UNIX_EPOCH;
/// let mut cache = HistoryCache::new(2);
/// cache.put("order-1".into(), "exec-1".into(), t, Arc::new(Vec::new()));
/// assert!(cache.get("order-1", "exec-1", 0, t).is_some());
/// // Another execution, a history that grew elsewhere, or one rewritten
/// // elsewhere since: not used.
/// assert!(cache.get("order-1", "exec-2", 0, t).is_none());
/// assert!(cache.get("order-1", "exec-1", 3, t).is_none());
/// let later = t + chrono::Duration::seconds(1);
/// assert!(cache.get("order-1", "exec-1", 0, later).is_none());
/// ```
#[derive(Debug, Default)]
pub struct HistoryCache {
    capacity: usize,
    entries: HashMap<String, Entry>,
}

impl HistoryCache {
    /// An empty cache holding at most `capacity` histories (0: none).
    pub fn new(capacity: usize) -> Self {
        HistoryCache {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The cached history of instance `id`, if it is of execution
    /// `execution_id`, `len` events long, and was cached when the instance
    /// was last updated at `updated_at`.
    pub fn get(
        &self,
        id: &str,
        execution_id: &str,
        len: usize,
        updated_at: Timestamp,
    ) -> Option<Arc<Vec<HistoryEvent>>> {
        let found = self
            .entries
            .get(id)
            .filter(|e| {
                e.execution_id == execution_id
                    && e.history.len() == len
                    && e.updated_at == updated_at
            })
            .map(|e| e.history.clone());
        crate::metrics::history_cache(found.is_some());
        found
    }

    /// Keeps the history of instance `id`'s execution `execution_id`, as
    /// of the instance's last update at `updated_at`, evicting another
    /// entry when full.
    pub fn put(
        &mut self,
        id: String,
        execution_id: String,
        updated_at: Timestamp,
        history: Arc<Vec<HistoryEvent>>,
    ) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&id) {
            // Evicting an arbitrary entry is enough: a miss costs one read.
            if let Some(k) = self.entries.keys().next().cloned() {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(
            id,
            Entry {
                execution_id,
                updated_at,
                history,
            },
        );
    }

    /// Forgets instance `id`'s history.
    pub fn remove(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// Forgets every history (a transaction that would have updated some
    /// did not commit).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// One cached history and what it must match to be used.
#[derive(Debug)]
struct Entry {
    execution_id: String,
    updated_at: Timestamp,
    history: Arc<Vec<HistoryEvent>>,
}
