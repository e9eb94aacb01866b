//! What travels to and from entities, and what an entity stores.

use crate::history::{FailureDetails, Timestamp};
use serde::{Deserialize, Serialize};

/// The name of the external event that carries an [`EntityMessage`] to an
/// entity instance.
pub const ENTITY_EVENT: &str = "op";

/// A message to an entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityMessage {
    /// Run an operation; a call (with a `request_id`) is answered with an
    /// [`EntityResponse`] to `parent`, a signal is not answered.
    Operation {
        /// The operation's name.
        op: String,
        /// Its input (JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// Set for calls: the response goes to the event
        /// [`response_event_name`] of this id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// The instance that sent it (orchestration, entity or none for a
        /// client).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        /// A signal to deliver no earlier than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_time: Option<Timestamp>,
    },
    /// Lock the entity for `parent` (a critical section); granted with the
    /// event [`lock_event_name`] of `request_id`.
    Lock {
        /// Identifies the grant.
        request_id: String,
        /// The orchestration that asks.
        parent: String,
    },
    /// Release the lock `parent` holds.
    Unlock {
        /// The orchestration that held it.
        parent: String,
    },
}

impl EntityMessage {
    /// The instance that sent the message, if any.
    pub fn parent(&self) -> Option<&str> {
        match self {
            EntityMessage::Operation { parent, .. } => parent.as_deref(),
            EntityMessage::Lock { parent, .. } | EntityMessage::Unlock { parent } => Some(parent),
        }
    }
}

/// The answer to a call: the operation's output, or its failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityResponse {
    /// The output (JSON) when the operation succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureDetails>,
}

/// What an entity instance stores between batches (its input): the state,
/// the orchestration holding its lock and the requests waiting for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntitySnapshot {
    /// The entity's state (JSON); `None` when it has none (never set, or
    /// deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The orchestration in a critical section on this entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_by: Option<String>,
    /// Requests from others, held while the entity is locked, in arrival
    /// order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<EntityMessage>,
}

impl EntitySnapshot {
    /// Reads a stored snapshot; no input is an empty entity.
    pub fn decode(input: Option<&str>) -> Result<Self, serde_json::Error> {
        match input {
            None => Ok(Self::default()),
            Some(s) if s.trim() == "null" => Ok(Self::default()),
            Some(s) => serde_json::from_str(s),
        }
    }

    /// The snapshot as JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a snapshot is plain data")
    }

    /// Whether the entity has nothing worth keeping: no state, no lock,
    /// nothing queued.
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.locked_by.is_none() && self.queue.is_empty()
    }
}

/// The event name of the response to the call `request_id`.
pub fn response_event_name(request_id: &str) -> String {
    format!("@response@{request_id}")
}

/// The event name of the lock grant `request_id`.
pub fn lock_event_name(request_id: &str) -> String {
    format!("@lock@{request_id}")
}

/// When a message to an entity (the data of an [`ENTITY_EVENT`]) is to be
/// delivered: the scheduled time of a delayed signal, else `None` (now).
pub fn delivery_time(data: Option<&str>) -> Option<Timestamp> {
    match serde_json::from_str::<EntityMessage>(data?).ok()? {
        EntityMessage::Operation { scheduled_time, .. } => scheduled_time,
        _ => None,
    }
}
