//! Entity episodes: a batch of messages to an `@name@key` instance, run by
//! [`crate::entity::run_batch`] instead of the replay engine.

use crate::backend::{Backend, BackendError, OrchestrationWorkItem};
use crate::entity::EntityId;
use crate::registry::Registry;
use std::time::Duration;

/// How long an entity of a name no one registered waits before it is given
/// back (for a worker that has it).
const UNKNOWN_ENTITY_PAUSE: Duration = Duration::from_secs(1);

/// Whether the item is an entity's: an `@name@key` instance of a name
/// registered as an entity, or of a name registered as nothing (an
/// entity this worker does not have; an orchestrator of that name runs as
/// one).
pub(super) fn is_entity_item(registry: &Registry, item: &OrchestrationWorkItem) -> bool {
    match item.instance_id.parse::<EntityId>() {
        Ok(id) => registry.has_entity(id.name()) || !registry.has_orchestrator(id.name()),
        Err(_) => false,
    }
}

/// Runs one entity batch and completes it.
pub(super) async fn run(backend: &dyn Backend, registry: &Registry, item: OrchestrationWorkItem) {
    let id: EntityId = item
        .instance_id
        .parse()
        .expect("is_entity_item checked the id");
    let Some(entity) = registry.get_entity(id.name()) else {
        tracing::warn!(entity = %id, known = ?registry.entity_names(), "no entity of this name is registered on this worker; giving its messages back for a worker that has it (register it with Registry::entity)");
        tokio::time::sleep(UNKNOWN_ENTITY_PAUSE).await;
        let lease = OrchestrationWorkItem {
            instance_id: item.instance_id.clone(),
            execution_id: item.execution_id.clone(),
            past_events: Default::default(),
            new_events: Vec::new(),
            completion_token: item.completion_token.clone(),
        };
        if let Err(e) = backend.abandon_orchestration_item(lease).await {
            tracing::warn!(entity = %id, error = %e, "giving back an entity's messages failed; they are delivered again when the lease expires");
        }
        return;
    };
    let result = crate::entity::run_batch(
        entity.as_ref(),
        &item.instance_id,
        &item.execution_id,
        &item.past_events,
        &item.new_events,
    );
    if backend.wants_event_waits() {
        backend.record_event_waits(&item, Vec::new());
    }
    match backend.complete_orchestration_item(item, result).await {
        Ok(()) | Err(BackendError::Shutdown) => {}
        Err(e) => {
            // Lost lease: whoever holds it runs the batch again, from the
            // same snapshot. Other errors: it is delivered again.
            tracing::warn!(entity = %id, error = %e, "completing an entity batch failed; it runs again");
        }
    }
}
