//! Application state for activities: [`State<T>`], the extractor an
//! `#[activity]` takes after its context, and [`StateMap`], the typed values
//! a worker (or a `TestEnv`) holds and hands to its activities.
//!
//! A worker holds at most one value per type. An activity names the types it
//! needs in its signature (`State(db): State<Db>`); `#[activity]` records
//! them ([`StateRequirement`]), so a worker that lacks one refuses to start
//! and says which activity needs which type, instead of failing tasks later.
//!
//! State values are cloned into every activity call, so make them cheap to
//! clone: put an `Arc` around what is shared (`Arc<Config>`,
//! `Arc<Mutex<..>>`), or use a handle that is already shared, such as a
//! connection pool or an HTTP client.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A value of application state, taken by an activity after its context
/// (as axum's `State` extractor is taken by a handler):
///
/// ```text
/// #[activity]
/// async fn charge(ctx: ActivityContext, State(db): State<Db>, amount: u64) -> Result<Receipt, DbError> { .. }
/// ```
///
/// The `durable` crate's documentation ("Activity state") has the whole
/// example, worker and test included. `State` is a plain wrapper:
///
/// ```
/// use durable_runtime::State;
/// use std::sync::Arc;
///
/// struct Config {
///     region: String,
/// }
/// let State(config) = State(Arc::new(Config { region: "eu-west".into() }));
/// assert_eq!(config.region, "eu-west");
/// let wrapped = State(3u32);
/// assert_eq!(*wrapped + 1, 4); // `Deref` reaches the value
/// ```
///
/// An activity may take any number of `State<T>` parameters, each of a
/// different type, between the context and the input. `T` must be `Clone +
/// Send + Sync + 'static`; the value is cloned for each call, so put an
/// `Arc` (or a pool handle) in it. The worker is given the values with
/// [`Worker::state`](crate::Worker::state), tests with
/// [`TestEnvBuilder::state`](crate::testing::TestEnvBuilder::state) or
/// `#[durable::test(state(value))]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct State<T>(pub T);

impl<T> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for State<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// One type of state an activity needs: its name (for messages) and its
/// `TypeId`. `#[activity]` emits one per `State<T>` parameter, in
/// [`Activity::STATE`](crate::Activity::STATE).
#[derive(Clone, Copy)]
pub struct StateRequirement {
    type_name: fn() -> &'static str,
    type_id: fn() -> TypeId,
}

impl StateRequirement {
    /// The requirement of a value of type `T`.
    pub const fn of<T: 'static>() -> StateRequirement {
        StateRequirement {
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
        }
    }

    /// The type's name, e.g. `my_app::Db`.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// The type's id.
    pub fn type_id(&self) -> TypeId {
        (self.type_id)()
    }
}

impl std::fmt::Debug for StateRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StateRequirement")
            .field(&self.type_name())
            .finish()
    }
}

impl PartialEq for StateRequirement {
    fn eq(&self, other: &Self) -> bool {
        self.type_id() == other.type_id()
    }
}

impl Eq for StateRequirement {}

#[derive(Clone)]
struct Value {
    type_name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

/// Typed state values, at most one per type.
///
/// ```
/// use durable_runtime::app_state::StateMap;
/// let mut states = StateMap::new();
/// states.insert(String::from("eu-west"));
/// states.insert(3u32);
/// assert_eq!(states.get::<String>().map(String::as_str), Some("eu-west"));
/// assert_eq!(states.get::<u64>(), None);
/// ```
#[derive(Clone, Default)]
pub struct StateMap {
    values: HashMap<TypeId, Value>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value`; a value of the same type given before is replaced.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(
            TypeId::of::<T>(),
            Value {
                type_name: std::any::type_name::<T>(),
                value: Arc::new(value),
            },
        );
    }

    /// Adds every value of `other`, replacing values of the same types.
    pub fn extend(&mut self, other: StateMap) {
        self.values.extend(other.values);
    }

    /// The value of type `T`, if one was given.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.value.downcast_ref::<T>())
    }

    /// Whether a value of this type was given.
    pub fn contains(&self, type_id: TypeId) -> bool {
        self.values.contains_key(&type_id)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The names of the types held, sorted.
    pub fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.values.values().map(|v| v.type_name).collect();
        names.sort_unstable();
        names
    }
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// A parameter an activity can take from its worker's state: implemented by
/// [`State<T>`]. `#[activity]` names it for each `State<..>` parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not `durable::State<T>`",
    label = "activities take state as `State(value): durable::State<T>`",
    note = "a parameter whose type is written `State<..>` is read as application state; import `durable::State` (it is in the prelude)"
)]
pub trait StateParam: Sized {
    /// The type of state this parameter needs.
    const REQUIREMENT: StateRequirement;
    /// Takes the value from `states`, if it is there.
    fn from_states(states: &StateMap) -> Option<Self>;
}

impl<T: Clone + Send + Sync + 'static> StateParam for State<T> {
    const REQUIREMENT: StateRequirement = StateRequirement::of::<T>();
    fn from_states(states: &StateMap) -> Option<Self> {
        states.get::<T>().cloned().map(State)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Db(&'static str);

    #[test]
    fn one_value_per_type_the_last_one_wins() {
        let mut states = StateMap::new();
        assert!(states.is_empty());
        states.insert(Db("first"));
        states.insert(Db("second"));
        states.insert(7u8);
        assert_eq!(states.get::<Db>(), Some(&Db("second")));
        assert_eq!(states.get::<u8>(), Some(&7));
        assert_eq!(states.type_names().len(), 2);
        assert!(states.contains(TypeId::of::<Db>()));
        assert!(!states.contains(TypeId::of::<u16>()));
    }

    #[test]
    fn state_params_clone_from_the_map_and_name_their_type() {
        let mut states = StateMap::new();
        assert_eq!(<State<Db> as StateParam>::from_states(&states), None);
        states.insert(Db("pool"));
        let State(db) = <State<Db> as StateParam>::from_states(&states).unwrap();
        assert_eq!(db, Db("pool"));
        let needed = <State<Db> as StateParam>::REQUIREMENT;
        assert_eq!(needed.type_id(), TypeId::of::<Db>());
        assert!(
            needed.type_name().ends_with("::Db"),
            "{}",
            needed.type_name()
        );
        assert_eq!(needed, StateRequirement::of::<Db>());
        assert_ne!(needed, StateRequirement::of::<u8>());
    }

    #[test]
    fn extend_replaces_values_of_the_same_type() {
        let mut a = StateMap::new();
        a.insert(Db("a"));
        a.insert(1u8);
        let mut b = StateMap::new();
        b.insert(Db("b"));
        a.extend(b);
        assert_eq!(a.get::<Db>(), Some(&Db("b")));
        assert_eq!(a.get::<u8>(), Some(&1));
    }
}
