//! Entity episodes: a batch of messages to an `@name@key` instance, run by
//! [`crate::entity::run_batch`] instead of the replay engine.

use crate::backend::{Backend, BackendError, OrchestrationWorkItem};
use crate::entity::{EntityContext, EntityId, ErasedEntity};
use crate::history::FailureDetails;
use crate::registry::Registry;

/// The entity of a name this worker has not registered: every operation
/// fails with `EntityNotRegistered` naming the registered entities, so a
/// caller learns of it (as in the Durable Task SDKs) instead of waiting;
/// the stored state is kept.
struct Unregistered {
    name: String,
    known: Vec<String>,
}

impl ErasedEntity for Unregistered {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &self,
        _state: Option<&str>,
        op: &str,
        _input: Option<&str>,
        _ctx: &mut EntityContext,
    ) -> Result<(Option<String>, Option<String>), FailureDetails> {
        Err(FailureDetails::new(
            "EntityNotRegistered",
            format!(
                "operation \"{op}\" of entity \"{}\": no entity of this name is registered on \
                 the worker (registered: {:?}); register it with Registry::entity, or check the \
                 name",
                self.name, self.known
            ),
        ))
    }

    fn operation_names(&self) -> Vec<String> {
        Vec::new()
    }
}

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
    let entity: std::sync::Arc<dyn ErasedEntity> = match registry.get_entity(id.name()) {
        Some(entity) => entity,
        None => {
            tracing::warn!(entity = %id, known = ?registry.entity_names(), "no entity of this name is registered on this worker; its operations fail with EntityNotRegistered (register it with Registry::entity)");
            std::sync::Arc::new(Unregistered {
                name: id.name().to_string(),
                known: registry
                    .entity_names()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            })
        }
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
