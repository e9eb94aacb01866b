//! [`HistoryCache`]: the histories of recently run executions, kept by a
//! storage backend so an episode does not re-read a whole history.

use crate::history::HistoryEvent;
use std::collections::HashMap;
use std::sync::Arc;

/// Histories of recently run executions, by instance id, at most
/// `capacity` of them. An entry is used only when its execution id and its
/// length match what the store holds, so writes by other processes are
/// never missed: a stale entry is a miss, and a miss costs one read.
///
/// ```
/// use durable_runtime::backend::HistoryCache;
/// use std::sync::Arc;
///
/// let mut cache = HistoryCache::new(2);
/// cache.put("order-1".into(), "exec-1".into(), Arc::new(Vec::new()));
/// assert!(cache.get("order-1", "exec-1", 0).is_some());
/// // Another execution, or a history that grew elsewhere: not used.
/// assert!(cache.get("order-1", "exec-2", 0).is_none());
/// assert!(cache.get("order-1", "exec-1", 3).is_none());
/// ```
#[derive(Debug, Default)]
pub struct HistoryCache {
    capacity: usize,
    entries: HashMap<String, (String, Arc<Vec<HistoryEvent>>)>,
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
    /// `execution_id` and `len` events long.
    pub fn get(&self, id: &str, execution_id: &str, len: usize) -> Option<Arc<Vec<HistoryEvent>>> {
        self.entries
            .get(id)
            .filter(|(e, h)| e == execution_id && h.len() == len)
            .map(|(_, h)| h.clone())
    }

    /// Keeps the history of instance `id`'s execution `execution_id`,
    /// evicting another entry when full.
    pub fn put(&mut self, id: String, execution_id: String, history: Arc<Vec<HistoryEvent>>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&id) {
            // Evicting an arbitrary entry is enough: a miss costs one read.
            if let Some(k) = self.entries.keys().next().cloned() {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(id, (execution_id, history));
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
