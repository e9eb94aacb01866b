//! An entity whose stored snapshot does not parse is left out of queries
//! (and of cleaning) rather than failing them for every other entity.

use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::client::EntityQuery;
use durable_runtime::entity::EntityId;
use durable_runtime::{Client, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_bad_snapshot_is_left_out_of_queries_and_reported_by_get() {
    let backend = Arc::new(MemoryBackend::new());
    // As a store could hold it after a bad write: an entity instance whose
    // input is not a snapshot.
    backend
        .create_instance(CreateInstanceRequest {
            instance_id: "@counter@bad".into(),
            name: "counter".into(),
            version: None,
            input: Some("not a snapshot".into()),
            scheduled_start: None,
            reuse_policy: IdReusePolicy::default(),
            trace: None,
            tags: Default::default(),
        })
        .await
        .unwrap();
    let client = Client::new(backend);
    let good = EntityId::new("counter", "good");
    client.signal_entity(&good, "add", &1).await.unwrap();
    let page = client
        .query_entities(EntityQuery {
            id_prefix: "counter@".into(),
            ..EntityQuery::default()
        })
        .await
        .expect("one bad snapshot does not fail the query");
    let ids: Vec<String> = page.entities.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["@counter@good"]);
    let bad = EntityId::new("counter", "bad");
    let e = client.get_entity(&bad).await.unwrap_err().to_string();
    assert!(
        e.contains("@counter@bad") && e.contains("does not parse"),
        "{e}"
    );
    let cleaned = client
        .clean_entity_storage(false, true, Duration::from_secs(1))
        .await
        .expect("one bad snapshot does not fail cleaning");
    assert_eq!(cleaned.orphaned_locks_released, 0);
}
