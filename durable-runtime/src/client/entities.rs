//! The client's entity API: signal, read, query, clean.

use super::Client;
use crate::backend::{
    BackendError, CreateInstanceRequest, IdReusePolicy, InstanceMetadata, InstanceQuery,
};
use crate::codec;
use crate::entity::{EntityId, EntityMessage, EntitySnapshot, ENTITY_EVENT};
use crate::error::Error;
use crate::history::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// An entity as stored: its id, state and lock.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityMetadata {
    /// The entity's id.
    pub id: EntityId,
    /// When its last batch of operations was stored.
    pub last_modified: Timestamp,
    /// The orchestration holding it in a critical section.
    pub locked_by: Option<String>,
    /// Requests waiting for the lock.
    pub queued: usize,
    /// Its state (JSON); `None` if it has none, or the query left states
    /// out.
    pub state_json: Option<String>,
}

impl EntityMetadata {
    /// The state decoded into `T`; `None` if the entity has none.
    pub fn state<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.state_json
            .as_deref()
            .map(|s| {
                codec::decode(Some(s))
                    .map_err(|e| e.about(format!("the state of entity \"{}\"", self.id)))
            })
            .transpose()
            .map_err(Error::from)
    }

    fn from_instance(meta: InstanceMetadata) -> Result<Option<Self>, Error> {
        let Ok(id) = meta.instance_id.parse::<EntityId>() else {
            return Ok(None);
        };
        let snapshot = EntitySnapshot::decode(meta.input.as_deref()).map_err(|e| {
            Error::NotAvailable(format!(
                "the stored snapshot of entity \"{id}\" does not parse ({e}); inspect the \
                 instance's input, or purge it to start the entity afresh"
            ))
        })?;
        Ok(Some(EntityMetadata {
            id,
            last_modified: meta.last_updated_at,
            locked_by: snapshot.locked_by,
            queued: snapshot.queue.len(),
            state_json: snapshot.state,
        }))
    }
}

/// Filter and paging of [`Client::query_entities`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityQuery {
    /// Only entities whose instance id (`@name@key`) starts with `@` and
    /// this (e.g. `counter@` for every counter, `counter@eu-` for some).
    pub id_prefix: String,
    /// Only entities modified at or after this.
    pub last_modified_from: Option<Timestamp>,
    /// Only entities modified before this.
    pub last_modified_to: Option<Timestamp>,
    /// Include each entity's state.
    pub include_state: bool,
    /// Page size (0: 100). A page may hold fewer entities when the
    /// modified-time range leaves some out.
    pub page_size: usize,
    /// Token from the previous page.
    pub continuation_token: Option<String>,
}

/// One page of [`Client::query_entities`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityPage {
    /// The entities, ordered by id.
    pub entities: Vec<EntityMetadata>,
    /// Pass to the next query for the next page; `None` when done.
    pub continuation_token: Option<String>,
}

/// What [`Client::clean_entity_storage`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanEntityStorage {
    /// Entities without state, lock or queue that were removed.
    pub empty_entities_removed: usize,
    /// Locks whose orchestration no longer runs that were released.
    pub orphaned_locks_released: usize,
}

impl Client {
    /// Signals operation `op` of an entity (fire and forget), creating the
    /// entity if it does not exist yet.
    pub async fn signal_entity(
        &self,
        id: &EntityId,
        op: &str,
        input: &impl Serialize,
    ) -> Result<(), Error> {
        let input = codec::encode(input)
            .map_err(|e| e.about(format!("the input of signal \"{op}\" to entity \"{id}\"")))?;
        self.send_entity_message(
            id,
            &EntityMessage::Operation {
                op: op.to_string(),
                input,
                request_id: None,
                parent: None,
                scheduled_time: None,
            },
        )
        .await
    }

    /// Sends a message to an entity, creating the entity if it does not
    /// exist yet: what [`signal_entity`](Self::signal_entity) does with an
    /// input already encoded (for servers of the Durable Task protocol).
    pub async fn send_entity_message(
        &self,
        id: &EntityId,
        message: &EntityMessage,
    ) -> Result<(), Error> {
        let request = CreateInstanceRequest {
            instance_id: id.to_string(),
            name: id.name().to_string(),
            version: None,
            input: None,
            scheduled_start: None,
            reuse_policy: IdReusePolicy::never(),
            trace: None,
            tags: Default::default(),
        };
        let data = serde_json::to_string(message).expect("plain data");
        // An empty entity removed by clean_entity_storage between the two
        // steps is gone when the message comes: it is created again.
        let mut tries = 0;
        loop {
            match self.backend.create_instance(request.clone()).await {
                Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match self
                .backend
                .raise_event(&id.to_string(), ENTITY_EVENT, Some(data.clone()))
                .await
            {
                Err(BackendError::NotFound(_)) if tries < 3 => tries += 1,
                r => return Ok(r?),
            }
        }
    }

    /// An entity's metadata and state; `None` if it does not exist.
    pub async fn get_entity(&self, id: &EntityId) -> Result<Option<EntityMetadata>, Error> {
        match self.backend.get_instance(&id.to_string(), true).await? {
            Some(meta) => EntityMetadata::from_instance(meta),
            None => Ok(None),
        }
    }

    /// An entity's state decoded into `T`; `None` if the entity does not
    /// exist or has no state.
    ///
    /// ```
    /// use durable_runtime::entity::{Entity, EntityId, Operations};
    /// use durable_runtime::{Registry, TestEnv};
    ///
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Counter(i64);
    ///
    /// impl Entity for Counter {
    ///     const NAME: &'static str = "counter";
    ///     fn operations(ops: &mut Operations<Self>) {
    ///         ops.op("add", |c: &mut Counter, n: i64| -> Result<(), String> {
    ///             c.0 += n;
    ///             Ok(())
    ///         });
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(Registry::new().entity::<Counter>()).unwrap();
    /// let id = EntityId::of::<Counter>("c");
    /// env.client().signal_entity(&id, "add", &3).await.unwrap();
    /// env.client().signal_entity(&id, "add", &4).await.unwrap();
    /// env.wait_until_idle().await;
    /// let state: Option<Counter> = env.client().get_entity_state(&id).await.unwrap();
    /// assert_eq!(state.unwrap().0, 7);
    /// # });
    /// ```
    pub async fn get_entity_state<T: DeserializeOwned>(
        &self,
        id: &EntityId,
    ) -> Result<Option<T>, Error> {
        match self.get_entity(id).await? {
            Some(e) => e.state(),
            None => Ok(None),
        }
    }

    /// One page of entities matching a query, ordered by id. An entity
    /// whose stored snapshot does not parse is left out (and logged);
    /// [`get_entity`](Self::get_entity) on its id says why.
    pub async fn query_entities(&self, query: EntityQuery) -> Result<EntityPage, Error> {
        let page = self
            .backend
            .query_instances(InstanceQuery {
                instance_id_prefix: Some(format!("@{}", query.id_prefix)),
                page_size: query.page_size,
                continuation_token: query.continuation_token.clone(),
                // The snapshot is the input: it holds the lock too.
                fetch_payloads: true,
                ..InstanceQuery::default()
            })
            .await?;
        let mut entities = Vec::with_capacity(page.instances.len());
        for meta in page.instances {
            let instance_id = meta.instance_id.clone();
            let mut e = match EntityMetadata::from_instance(meta) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                // One entity whose snapshot does not parse does not hide the
                // others: it is left out of the page and logged
                // (`get_entity` on its id reports the error).
                Err(e) => {
                    tracing::warn!(instance_id = %instance_id, error = %e, "an entity whose stored snapshot does not parse is left out of the query");
                    continue;
                }
            };
            if query
                .last_modified_from
                .is_some_and(|t| e.last_modified < t)
                || query.last_modified_to.is_some_and(|t| e.last_modified >= t)
            {
                continue;
            }
            if !query.include_state {
                e.state_json = None;
            }
            entities.push(e);
        }
        Ok(EntityPage {
            entities,
            continuation_token: page.continuation_token,
        })
    }

    /// Every entity matching a query (follows continuation tokens).
    pub async fn query_all_entities(
        &self,
        mut query: EntityQuery,
    ) -> Result<Vec<EntityMetadata>, Error> {
        let mut all = Vec::new();
        loop {
            let page = self.query_entities(query.clone()).await?;
            all.extend(page.entities);
            match page.continuation_token {
                Some(t) => query.continuation_token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Cleans entity storage: with `remove_empty`, removes entities that
    /// have no state, no lock and nothing queued (they come back, empty,
    /// with the next message); with `release_orphaned_locks`, releases
    /// locks held by orchestrations that no longer exist or have finished.
    ///
    /// An entity is removed only if, at the moment of removal, no batch ran
    /// since its snapshot was read and no message waits for it (see
    /// [`Backend::remove_idle_entity`](crate::Backend::remove_idle_entity)),
    /// so a signal on its way is never lost; one that arrives later creates
    /// the entity again. A backend that cannot check that in one step
    /// removes nothing. An entity whose stored snapshot does not parse is
    /// left alone (and logged), not a reason to stop. `timeout` is kept
    /// for compatibility: removal no longer waits for a worker.
    pub async fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
        timeout: Duration,
    ) -> Result<CleanEntityStorage, Error> {
        let _ = timeout;
        if let Some((removed, released)) = self
            .backend
            .clean_entity_storage(remove_empty, release_orphaned_locks)
            .await?
        {
            return Ok(CleanEntityStorage {
                empty_entities_removed: removed,
                orphaned_locks_released: released,
            });
        }
        let mut done = CleanEntityStorage::default();
        let mut token = None;
        let mut entities = Vec::new();
        loop {
            let page = self
                .backend
                .query_instances(InstanceQuery {
                    instance_id_prefix: Some("@".to_string()),
                    continuation_token: token.take(),
                    fetch_payloads: true,
                    ..InstanceQuery::default()
                })
                .await?;
            for meta in page.instances {
                let execution_id = meta.execution_id.clone();
                let instance_id = meta.instance_id.clone();
                match EntityMetadata::from_instance(meta) {
                    Ok(Some(e)) => entities.push((e, execution_id)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(instance_id = %instance_id, error = %e, "cleaning entity storage skips an entity whose snapshot does not parse");
                    }
                }
            }
            match page.continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for (e, execution_id) in entities {
            let instance_id = e.id.to_string();
            if let Some(holder) = &e.locked_by {
                let running = match self.backend.get_instance(holder, false).await? {
                    Some(m) => !m.status.is_terminal(),
                    None => false,
                };
                if release_orphaned_locks && !running {
                    let unlock = EntityMessage::Unlock {
                        parent: holder.clone(),
                    };
                    let data = serde_json::to_string(&unlock).expect("plain data");
                    self.backend
                        .raise_event(&instance_id, ENTITY_EVENT, Some(data))
                        .await?;
                    done.orphaned_locks_released += 1;
                }
                continue;
            }
            if remove_empty
                && e.state_json.is_none()
                && e.queued == 0
                && self
                    .backend
                    .remove_idle_entity(&instance_id, &execution_id)
                    .await?
            {
                done.empty_entities_removed += 1;
            }
        }
        Ok(done)
    }
}
