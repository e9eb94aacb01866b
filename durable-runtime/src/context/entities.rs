//! What orchestrations do with entities: call, signal, lock.

use super::futures::DurableFuture;
use super::orchestration::OrchestrationContext;
use crate::codec;
use crate::entity::{
    lock_event_name, response_event_name, EntityId, EntityMessage, EntityResponse, ENTITY_EVENT,
};
use crate::failure::TaskError;
use crate::history::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The result of [`OrchestrationContext::call_entity`]: the operation's
/// output, or a [`TaskError`] with the operation's failure.
#[must_use = "a call does nothing unless awaited"]
pub struct EntityCall<O> {
    response: DurableFuture<EntityResponse>,
    task: String,
    _output: PhantomData<fn() -> O>,
}

impl<O> Unpin for EntityCall<O> {}

impl<O: DeserializeOwned> Future for EntityCall<O> {
    type Output = Result<O, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match Pin::new(&mut self.response).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        let failed = |details| TaskError {
            task: self.task.clone(),
            task_id: -1,
            details,
        };
        Poll::Ready(match response.failure {
            Some(details) => Err(failed(details)),
            None => codec::decode(response.result.as_deref()).map_err(|e| {
                failed(
                    e.about(format!("the output of {}", self.task))
                        .into_failure("OutputDeserializationError"),
                )
            }),
        })
    }
}

/// A critical section: the entities it locked stay locked to this
/// orchestration until it is dropped (or [`release`](Self::release)d),
/// including when the orchestrator returns an error or panics inside it.
#[must_use = "the locks are released as soon as the section is dropped"]
#[derive(Debug)]
pub struct CriticalSection {
    ctx: OrchestrationContext,
    entities: Vec<EntityId>,
}

impl CriticalSection {
    /// The entities locked, in the order they were locked.
    pub fn entities(&self) -> &[EntityId] {
        &self.entities
    }

    /// Whether the section holds this entity.
    pub fn holds(&self, id: &EntityId) -> bool {
        self.entities.contains(id)
    }

    /// Releases the locks (the same as dropping the section).
    pub fn release(self) {}
}

impl Drop for CriticalSection {
    fn drop(&mut self) {
        let parent = self.ctx.instance_id();
        for id in &self.entities {
            let unlock = EntityMessage::Unlock {
                parent: parent.clone(),
            };
            self.ctx.send_event(&id.to_string(), ENTITY_EVENT, &unlock);
        }
    }
}

impl OrchestrationContext {
    /// Calls operation `op` of an entity and waits for its output, decoded
    /// into `O`. Operations on one entity run one at a time in arrival
    /// order; a failed operation (an `Err` or a panic; its state change is
    /// rolled back) is an `Err` here with the operation's failure.
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
    ///         ops.op("add", |c: &mut Counter, n: i64| -> Result<i64, String> {
    ///             c.0 += n;
    ///             Ok(c.0)
    ///         });
    ///     }
    /// }
    ///
    /// let registry = Registry::new()
    ///     .entity::<Counter>()
    ///     .orchestrator_fn("add_twice", |ctx, n: i64| async move {
    ///         let id = EntityId::of::<Counter>("c");
    ///         ctx.signal_entity(&id, "add", &n);
    ///         let total: i64 = ctx.call_entity(&id, "add", &n).await?;
    ///         Ok(total)
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("add_twice", &21, Default::default()).await.unwrap();
    /// assert_eq!(env.wait_for_completion(&id).await.unwrap().output::<i64>().unwrap(), 42);
    /// # });
    /// ```
    pub fn call_entity<O: DeserializeOwned>(
        &self,
        id: &EntityId,
        op: &str,
        input: &impl Serialize,
    ) -> EntityCall<O> {
        let task = format!("operation \"{op}\" of entity \"{id}\"");
        let request_id = self.new_uuid().to_string();
        let message = EntityMessage::Operation {
            op: op.to_string(),
            input: self.encode_or_fail(input, &task),
            request_id: Some(request_id.clone()),
            parent: Some(self.instance_id()),
            scheduled_time: None,
        };
        self.send_event(&id.to_string(), ENTITY_EVENT, &message);
        EntityCall {
            response: self.wait_for_external_event(&response_event_name(&request_id)),
            task,
            _output: PhantomData,
        }
    }

    /// Signals operation `op` of an entity: fire and forget (its output
    /// and failure go nowhere).
    pub fn signal_entity(&self, id: &EntityId, op: &str, input: &impl Serialize) {
        self.signal(id, op, input, None)
    }

    /// Signals operation `op` of an entity, delivered no earlier than `at`
    /// (a durable delay: the backend holds the message like a timer).
    pub fn signal_entity_at(&self, id: &EntityId, op: &str, input: &impl Serialize, at: Timestamp) {
        self.signal(id, op, input, Some(at))
    }

    fn signal(&self, id: &EntityId, op: &str, input: &impl Serialize, at: Option<Timestamp>) {
        let task = format!("signal \"{op}\" to entity \"{id}\"");
        let message = EntityMessage::Operation {
            op: op.to_string(),
            input: self.encode_or_fail(input, &task),
            request_id: None,
            parent: Some(self.instance_id()),
            scheduled_time: at,
        };
        self.send_event(&id.to_string(), ENTITY_EVENT, &message);
    }

    /// Locks several entities for a critical section and returns it once
    /// all are held. Locks are taken one at a time in the order of the
    /// entity ids (duplicates once), so two orchestrations locking
    /// overlapping sets cannot deadlock. While the section holds an entity,
    /// only this orchestration's calls and signals run on it; others wait
    /// in its queue. The section releases the locks when dropped: at the
    /// end of its scope, and when the orchestrator returns an error or
    /// panics inside it.
    ///
    /// ```
    /// use durable_runtime::entity::{Entity, EntityId, Operations};
    /// use durable_runtime::{Registry, TestEnv};
    ///
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Account(i64);
    ///
    /// impl Entity for Account {
    ///     const NAME: &'static str = "account";
    ///     fn operations(ops: &mut Operations<Self>) {
    ///         ops.op("add", |a: &mut Account, n: i64| -> Result<i64, String> {
    ///             a.0 += n;
    ///             Ok(a.0)
    ///         });
    ///     }
    /// }
    ///
    /// let registry = Registry::new()
    ///     .entity::<Account>()
    ///     .orchestrator_fn("transfer", |ctx, amount: i64| async move {
    ///         let (from, to) = (EntityId::of::<Account>("a"), EntityId::of::<Account>("b"));
    ///         let section = ctx.lock_entities(&[from.clone(), to.clone()]).await?;
    ///         ctx.call_entity::<i64>(&from, "add", &-amount).await?;
    ///         let to_balance: i64 = ctx.call_entity(&to, "add", &amount).await?;
    ///         section.release();
    ///         Ok(to_balance)
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("transfer", &5, Default::default()).await.unwrap();
    /// assert_eq!(env.wait_for_completion(&id).await.unwrap().output::<i64>().unwrap(), 5);
    /// # });
    /// ```
    pub fn lock_entities(
        &self,
        entities: &[EntityId],
    ) -> impl Future<Output = Result<CriticalSection, TaskError>> + Send + 'static {
        let mut ids = entities.to_vec();
        ids.sort();
        ids.dedup();
        let ctx = self.clone();
        async move {
            let parent = ctx.instance_id();
            let mut section = CriticalSection {
                ctx: ctx.clone(),
                entities: Vec::with_capacity(ids.len()),
            };
            for id in ids {
                let request_id = ctx.new_uuid().to_string();
                let lock = EntityMessage::Lock {
                    request_id: request_id.clone(),
                    parent: parent.clone(),
                };
                ctx.send_event(&id.to_string(), ENTITY_EVENT, &lock);
                // Held from the request on: if the wait fails, dropping the
                // section releases it too.
                section.entities.push(id);
                ctx.wait_for_external_event::<String>(&lock_event_name(&request_id))
                    .await?;
            }
            Ok(section)
        }
    }

    /// The input as a payload; one that does not serialise fails the
    /// orchestration, naming `task`.
    fn encode_or_fail(&self, input: &impl Serialize, task: &str) -> Option<String> {
        match codec::encode(input) {
            Ok(json) => json,
            Err(e) => {
                self.fail_later(
                    e.about(format!("the input of {task}"))
                        .into_failure("SerializationError"),
                );
                None
            }
        }
    }
}
