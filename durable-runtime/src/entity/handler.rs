//! Declaring entities: the [`Entity`] trait, its typed operations and the
//! context an operation gets.

use super::id::EntityId;
use super::message::{EntityMessage, ENTITY_EVENT};
use crate::actions::ActionKind;
use crate::codec;
use crate::history::{FailureDetails, Timestamp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A durable entity: a serde state type with named, typed operations.
///
/// The state starts as `Default::default()` and is stored after every
/// batch of operations. An operation that returns `Err` (or panics) leaves
/// the state as it was before that operation, sends nothing, and fails the
/// caller's `call_entity`.
///
/// ```
/// use durable_runtime::entity::{Entity, EntityContext, EntityId, Operations};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Account {
///     balance: i64,
/// }
///
/// impl Account {
///     fn deposit(&mut self, amount: i64) -> Result<i64, String> {
///         self.balance += amount;
///         Ok(self.balance)
///     }
///     fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
///         if amount > self.balance {
///             return Err(format!("balance {} is less than {amount}", self.balance));
///         }
///         self.balance -= amount;
///         Ok(self.balance)
///     }
///     /// An operation with a context: it may signal other entities.
///     fn close(&mut self, ctx: &mut EntityContext, into: String) -> Result<(), String> {
///         ctx.signal_entity(&EntityId::new("account", into), "deposit", &self.balance);
///         self.balance = 0;
///         ctx.delete_state();
///         Ok(())
///     }
/// }
///
/// impl Entity for Account {
///     const NAME: &'static str = "account";
///     fn operations(ops: &mut Operations<Self>) {
///         ops.op("deposit", Account::deposit)
///             .op("withdraw", Account::withdraw)
///             .op_with_context("close", Account::close);
///     }
/// }
///
/// let registry = durable_runtime::Registry::new().entity::<Account>();
/// assert!(registry.has_entity("account"));
/// ```
pub trait Entity: Serialize + DeserializeOwned + Default + Send + 'static {
    /// The entity's name (compared in lower case).
    const NAME: &'static str;

    /// Lists the operations, by name.
    fn operations(ops: &mut Operations<Self>);
}

impl EntityId {
    /// The entity of type `E` with this key.
    pub fn of<E: Entity>(key: impl Into<String>) -> Self {
        Self::new(E::NAME, key)
    }
}

type OpFn<S> = Box<
    dyn Fn(&mut S, &mut EntityContext, Option<&str>) -> Result<Option<String>, FailureDetails>
        + Send
        + Sync,
>;

/// The operations of an entity with state `S`, by name.
pub struct Operations<S> {
    ops: BTreeMap<String, OpFn<S>>,
}

impl<S> fmt::Debug for Operations<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ops.keys()).finish()
    }
}

/// The failure of an operation that returned `Err(e)`.
fn op_failure<E: fmt::Display>(e: E) -> FailureDetails {
    let full = std::any::type_name::<E>();
    let short = full.rsplit("::").next().unwrap_or(full);
    FailureDetails::new(short, e.to_string())
}

impl<S: 'static> Operations<S> {
    fn new() -> Self {
        Operations {
            ops: BTreeMap::new(),
        }
    }

    /// Adds the operation `name`: `f(state, input)`. Its input is decoded
    /// from the caller's JSON (`()` for none) and its output encoded.
    pub fn op<I, O, E, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned,
        O: Serialize,
        E: fmt::Display,
        F: Fn(&mut S, I) -> Result<O, E> + Send + Sync + 'static,
    {
        self.op_with_context(name, move |s: &mut S, _: &mut EntityContext, i: I| f(s, i))
    }

    /// Adds the operation `name`: `f(state, ctx, input)`, for operations
    /// that signal entities, start orchestrations or delete the state.
    pub fn op_with_context<I, O, E, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned,
        O: Serialize,
        E: fmt::Display,
        F: Fn(&mut S, &mut EntityContext, I) -> Result<O, E> + Send + Sync + 'static,
    {
        let op = name.to_string();
        let run: OpFn<S> = Box::new(move |s, ctx, input| {
            let input: I = codec::decode(input).map_err(|e| {
                e.about(format!("the input of operation \"{op}\""))
                    .into_failure("InputDeserializationError")
            })?;
            let out = f(s, ctx, input).map_err(op_failure)?;
            codec::encode(&out).map_err(|e| {
                e.about(format!("the output of operation \"{op}\""))
                    .into_failure("OutputSerializationError")
            })
        });
        self.ops.insert(name.to_lowercase(), run);
        self
    }
}

/// What an operation can do besides changing the state: signal entities,
/// start orchestrations, delete its state. What it asks for is sent only
/// if the operation succeeds.
#[derive(Debug)]
pub struct EntityContext {
    id: EntityId,
    now: Timestamp,
    seed: String,
    pub(crate) actions: Vec<ActionKind>,
    pub(crate) delete: bool,
}

impl EntityContext {
    /// A context for an operation of entity `id` in a batch that started at
    /// `now`; `seed` makes the ids of started orchestrations unique.
    pub(crate) fn new(id: EntityId, now: Timestamp, seed: String) -> Self {
        EntityContext {
            id,
            now,
            seed,
            actions: Vec::new(),
            delete: false,
        }
    }

    /// The entity's id.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// When the batch of this operation started.
    pub fn current_utc_datetime(&self) -> Timestamp {
        self.now
    }

    /// Signals an operation on another entity (fire and forget).
    pub fn signal_entity(&mut self, id: &EntityId, op: &str, input: &impl Serialize) {
        self.signal(id, op, input, None)
    }

    /// Signals an operation on another entity, delivered no earlier than
    /// `at`.
    pub fn signal_entity_at(
        &mut self,
        id: &EntityId,
        op: &str,
        input: &impl Serialize,
        at: Timestamp,
    ) {
        self.signal(id, op, input, Some(at))
    }

    fn signal(&mut self, id: &EntityId, op: &str, input: &impl Serialize, at: Option<Timestamp>) {
        let input = match codec::encode(input) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(entity = %self.id, error = %e, "a signal's input does not serialize; the signal is not sent");
                return;
            }
        };
        let message = EntityMessage::Operation {
            op: op.to_string(),
            input,
            request_id: None,
            parent: Some(self.id.to_string()),
            scheduled_time: at,
        };
        self.actions.push(ActionKind::SendEvent {
            instance_id: id.to_string(),
            name: ENTITY_EVENT.to_string(),
            data: Some(serde_json::to_string(&message).expect("plain data")),
        });
    }

    /// Starts an orchestration (fire and forget) and returns its instance
    /// id.
    pub fn start_orchestration(&mut self, name: &str, input: &impl Serialize) -> String {
        let n = self.actions.len();
        let instance_id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}/{}/{n}", self.seed, self.id).as_bytes(),
        )
        .to_string();
        let input = codec::encode(input).unwrap_or_else(|e| {
            tracing::warn!(entity = %self.id, error = %e, "an orchestration's input does not serialize; it starts without input");
            None
        });
        self.actions.push(ActionKind::CreateSubOrchestration {
            instance_id: instance_id.clone(),
            name: name.to_string(),
            version: None,
            input,
        });
        instance_id
    }

    /// Starts an orchestration with the instance id `instance_id` (fire and
    /// forget; an instance of that id that exists already is kept as it
    /// is).
    pub fn start_orchestration_with_id(
        &mut self,
        name: &str,
        instance_id: &str,
        input: Option<String>,
    ) {
        self.actions.push(ActionKind::CreateSubOrchestration {
            instance_id: instance_id.to_string(),
            name: name.to_string(),
            version: None,
            input,
        });
    }

    /// Deletes the entity's state once the operation succeeds: the entity
    /// then has no state (reads return `None`) until an operation sets one.
    pub fn delete_state(&mut self) {
        self.delete = true;
    }
}

/// An entity with its type erased, as the registry keeps it.
pub trait ErasedEntity: Send + Sync {
    /// The entity's name.
    fn name(&self) -> &str;

    /// Runs operation `op` on `state` (JSON, `None`: default) and returns
    /// the new state (`None`: deleted) and the output.
    fn run(
        &self,
        state: Option<&str>,
        op: &str,
        input: Option<&str>,
        ctx: &mut EntityContext,
    ) -> Result<(Option<String>, Option<String>), FailureDetails>;

    /// The operations' names.
    fn operation_names(&self) -> Vec<String>;
}

struct Typed<S> {
    name: String,
    ops: Operations<S>,
}

impl<S: Entity> ErasedEntity for Typed<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &self,
        state: Option<&str>,
        op: &str,
        input: Option<&str>,
        ctx: &mut EntityContext,
    ) -> Result<(Option<String>, Option<String>), FailureDetails> {
        let key = op.to_lowercase();
        let Some(f) = self.ops.ops.get(&key) else {
            if key == "delete" {
                // As in the Durable Task SDKs: every entity has `delete`.
                return Ok((None, None));
            }
            return Err(FailureDetails::new(
                "UnknownOperation",
                format!(
                    "entity \"{}\" has no operation \"{op}\"; it has: {}",
                    self.name,
                    self.operation_names().join(", ")
                ),
            ));
        };
        let mut s: S = match state {
            None => S::default(),
            Some(json) => codec::decode(Some(json)).map_err(|e| {
                e.about(format!("the state of entity \"{}\"", ctx.id))
                    .into_failure("StateDeserializationError")
            })?,
        };
        let out = f(&mut s, ctx, input)?;
        if ctx.delete {
            return Ok((None, out));
        }
        let encode = |s: &S| {
            codec::encode(s).map_err(|e| {
                e.about(format!("the state of entity \"{}\"", ctx.id))
                    .into_failure("StateSerializationError")
            })
        };
        let new_state = encode(&s)?;
        // An entity without state that the operation left at the default
        // (a read) keeps no state.
        if state.is_none() && new_state == encode(&S::default())? {
            return Ok((None, out));
        }
        Ok((new_state, out))
    }

    fn operation_names(&self) -> Vec<String> {
        self.ops.ops.keys().cloned().collect()
    }
}

/// The erased handler of `E`.
pub(crate) fn erase<E: Entity>() -> Arc<dyn ErasedEntity> {
    let mut ops = Operations::new();
    E::operations(&mut ops);
    Arc::new(Typed::<E> {
        name: E::NAME.to_lowercase(),
        ops,
    })
}
