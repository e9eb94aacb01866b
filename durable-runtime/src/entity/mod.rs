//! Durable entities: small addressable objects with durable state whose
//! operations run one at a time, in arrival order.
//!
//! An entity is declared by implementing [`Entity`] on a serde state type
//! (its operations are typed methods, listed in
//! [`Entity::operations`]) and registered with
//! [`Registry::entity`](crate::Registry::entity). It is addressed by an
//! [`EntityId`], written `@name@key` as in the Durable Task protocol.
//!
//! Storage model (see docs/entities.md): an entity is an instance with the
//! id `@name@key`. Its operations are messages to that instance (external
//! events named [`ENTITY_EVENT`] carrying an [`EntityMessage`]); each
//! episode is a batch of them, run by [`run_batch`] one at a time in
//! arrival order, and the batch ends by continuing the instance as new with
//! the entity's [`EntitySnapshot`] (state, lock holder, queued requests)
//! as its input. So every backend stores entities with the machinery it
//! has for instances, and the transition core adds only two rules for
//! messages to `@` ids: the entity is created when the first message comes,
//! and a signal scheduled for later is delivered then.
//!
//! ```
//! use durable_runtime::entity::{Entity, EntityId, Operations};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Counter {
//!     value: i64,
//! }
//!
//! impl Counter {
//!     fn add(&mut self, n: i64) -> Result<i64, String> {
//!         self.value += n;
//!         Ok(self.value)
//!     }
//!     fn get(&mut self, _: ()) -> Result<i64, String> {
//!         Ok(self.value)
//!     }
//! }
//!
//! impl Entity for Counter {
//!     const NAME: &'static str = "counter";
//!     fn operations(ops: &mut Operations<Self>) {
//!         ops.op("add", Counter::add).op("get", Counter::get);
//!     }
//! }
//!
//! let id = EntityId::of::<Counter>("c1");
//! assert_eq!(id.to_string(), "@counter@c1");
//! ```

mod batch;
mod handler;
mod id;
mod message;
mod remote;

pub use batch::run_batch;
pub(crate) use handler::erase;
pub use handler::{Entity, EntityContext, ErasedEntity, Operations};
pub use id::{EntityId, EntityIdError};
pub use message::{
    delivery_time, lock_event_name, response_event_name, EntityMessage, EntityResponse,
    EntitySnapshot, ENTITY_EVENT,
};
pub use remote::{
    finish_remote_batch, plan_remote_batch, RemoteOperation, RemoteOutcome, RemotePlan,
};
