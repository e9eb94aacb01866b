//! Orchestrators and activities, typed and type-erased.
//!
//! `#[orchestrator]` and `#[activity]` turn a function into a unit struct that
//! implements [`Orchestrator`] or [`Activity`]; the struct is the typed handle
//! used at call sites. A [`Registry`] maps wire names to type-erased handlers
//! that the worker runs. [`Registry::discover`] collects everything annotated
//! in the binary.

use crate::actions::Task;
use crate::app_state::{StateMap, StateRequirement};
use crate::codec;
use crate::context::OrchestrationContext;
use crate::entity::{Entity, ErasedEntity};
use crate::failure::{ActivityError, OrchestrationError, TaskOutcome};
use crate::handler::{ActivityContext, ActivitySignature, BoxFuture, OrchestratorSignature};
use crate::history::FailureDetails;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// An orchestrator: deterministic code that schedules durable tasks.
/// Implemented by `#[orchestrator]`, with its [`OrchestratorSignature`].
pub trait Orchestrator: OrchestratorSignature {
    /// Runs the orchestrator body.
    fn run(
        self,
        ctx: OrchestrationContext,
        input: Self::Input,
    ) -> BoxFuture<'static, Result<Self::Output, OrchestrationError>>;
}

/// An activity: ordinary async code that does the work. Implemented by
/// `#[activity]`, with its [`ActivitySignature`].
pub trait Activity: ActivitySignature {
    /// The application state the activity takes (one entry per `State<T>`
    /// parameter, emitted by `#[activity]`). A worker refuses to start
    /// without a value of each type ([`RegistryError::MissingState`]).
    const STATE: &'static [StateRequirement] = &[];

    /// Runs the activity.
    fn run(
        self,
        ctx: ActivityContext,
        input: Self::Input,
    ) -> BoxFuture<'static, Result<Self::Output, ActivityError>>;
}

/// A type-erased orchestrator: JSON input in, JSON output out.
pub type OrchestratorFn = Erased<OrchestrationContext>;

/// A type-erased activity: JSON input in, JSON output out.
pub type ActivityFn = Erased<ActivityContext>;

/// Where something was defined or registered, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefinedAt {
    /// Source file.
    pub file: &'static str,
    /// Line.
    pub line: u32,
}

impl std::fmt::Display for DefinedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Registration problems, reported when a worker starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two definitions share a name.
    #[error(
        "{kind} \"{name}\" is registered twice: at {first} and at {second}; \
         rename one (e.g. `#[{attr}(name = \"...\")]`) or register it once"
    )]
    Duplicate {
        /// "orchestrator" or "activity".
        kind: &'static str,
        /// The attribute to use in the hint.
        attr: &'static str,
        /// The shared name.
        name: String,
        /// The first definition.
        first: DefinedAt,
        /// The second definition.
        second: DefinedAt,
    },
    /// An activity takes `State<T>` and the worker has no value of type `T`.
    #[error(
        "activity \"{activity}\" ({}) takes `State<{type_name}>`, but this worker \
         has no `{type_name}`; give it one with `Worker::new(..).state(value)` (in tests \
         `TestEnv::builder().state(value)` or `#[durable::test(state(value))]`), or fake the activity",
        match faked_by {
            Some(fake) => format!("faked by \"{fake}\" at {defined_at}"),
            None => format!("defined at {defined_at}"),
        }
    )]
    MissingState {
        /// The activity's name.
        activity: String,
        /// The type of state it needs.
        type_name: &'static str,
        /// Where the activity was defined (or registered, or faked).
        defined_at: DefinedAt,
        /// The name of the fake that runs in its place, if it is faked
        /// (the state is the fake's).
        faked_by: Option<&'static str>,
    },
    /// A fake was given for an activity that is not registered.
    #[error(
        "cannot fake activity \"{activity}\" (at {at}): no activity of that name is registered \
         (registered: [{registered}]); register the real one first (discovery, or `.activity(..)`) \
         or fix the name"
    )]
    UnknownFake {
        /// The name of the activity to fake.
        activity: String,
        /// Where the fake was given.
        at: DefinedAt,
        /// The activities registered, comma-separated.
        registered: String,
    },
}

/// What a [`Registration`] registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationKind {
    /// An orchestrator.
    Orchestrator,
    /// An activity.
    Activity,
    /// An entity.
    Entity,
}

/// A definition submitted for discovery by the macros.
pub struct Registration {
    /// Orchestrator or activity.
    pub kind: RegistrationKind,
    /// Wire name.
    pub name: &'static str,
    /// Where it was defined.
    pub defined_at: DefinedAt,
    /// Rust module path of the definition.
    pub module_path: &'static str,
    /// The application state an activity takes (empty for orchestrators).
    pub state: &'static [StateRequirement],
    register: fn(&mut Registry, DefinedAt),
}

impl Registration {
    /// Registration of an orchestrator (used by `#[orchestrator]`).
    pub const fn orchestrator<O: Orchestrator>(
        file: &'static str,
        line: u32,
        module_path: &'static str,
    ) -> Registration {
        Registration {
            kind: RegistrationKind::Orchestrator,
            name: O::NAME,
            defined_at: DefinedAt { file, line },
            module_path,
            state: &[],
            register: |r, at| r.add_orchestrator::<O>(at),
        }
    }

    /// Registration of an activity (used by `#[activity]`).
    pub const fn activity<A: Activity>(
        file: &'static str,
        line: u32,
        module_path: &'static str,
    ) -> Registration {
        Registration {
            kind: RegistrationKind::Activity,
            name: A::NAME,
            defined_at: DefinedAt { file, line },
            module_path,
            state: A::STATE,
            register: |r, at| r.add_activity::<A>(at),
        }
    }

    /// Registration of an entity (used by
    /// [`register_entity!`](crate::register_entity)).
    pub const fn entity<E: Entity>(
        file: &'static str,
        line: u32,
        module_path: &'static str,
    ) -> Registration {
        Registration {
            kind: RegistrationKind::Entity,
            name: E::NAME,
            defined_at: DefinedAt { file, line },
            module_path,
            state: &[],
            register: |r, at| r.add_entity::<E>(at),
        }
    }
}

inventory::collect!(Registration);

pub(crate) struct Entry<F> {
    pub(crate) handler: F,
    defined_at: DefinedAt,
    /// The handle's (or closure's) type: the same definition registered
    /// twice (e.g. explicitly and by discovery) is one registration.
    identity: std::any::TypeId,
    /// The application state the handler takes.
    needs: &'static [StateRequirement],
    /// The name of the fake that runs in place of the handler registered
    /// under this name, if any.
    faked_by: Option<&'static str>,
}

/// Wire names mapped to orchestrators and activities.
///
/// ```
/// use durable_runtime::Registry;
/// let registry = Registry::new()
///     .orchestrator_fn("hello", |_ctx, name: String| async move { Ok(format!("Hello, {name}!")) });
/// assert!(registry.has_orchestrator("hello"));
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    /// Keyed by name and version: versions of one name run side by side.
    pub(crate) orchestrators: HashMap<(String, Option<String>), Arc<Entry<OrchestratorFn>>>,
    pub(crate) activities: HashMap<String, Arc<Entry<ActivityFn>>>,
    /// Entities by (lower-case) name.
    pub(crate) entities: HashMap<String, Arc<Entry<Arc<dyn ErasedEntity>>>>,
    errors: Vec<RegistryError>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut o: Vec<_> = self
            .orchestrators
            .keys()
            .map(|(n, v)| shown(n, v))
            .collect();
        let mut a: Vec<_> = self.activities.keys().collect();
        o.sort();
        a.sort();
        f.debug_struct("Registry")
            .field("orchestrators", &o)
            .field("activities", &a)
            .finish()
    }
}

/// Errors user code returns, turned into the failure details recorded.
trait IntoFailure {
    fn into_failure(self) -> FailureDetails;
}

impl IntoFailure for OrchestrationError {
    fn into_failure(self) -> FailureDetails {
        self.into_details()
    }
}

impl IntoFailure for ActivityError {
    fn into_failure(self) -> FailureDetails {
        self.into_details()
    }
}

/// A type-erased handler: JSON input in, JSON output out.
pub type Erased<C> =
    Arc<dyn Fn(C, Option<String>) -> BoxFuture<'static, TaskOutcome> + Send + Sync>;

/// Wraps a typed function (`what` names it in errors) into a JSON-in,
/// JSON-out handler.
fn erase<C, I, O, E, F, Fut>(what: String, f: F) -> Erased<C>
where
    C: 'static,
    I: DeserializeOwned,
    O: Serialize,
    E: IntoFailure,
    F: Fn(C, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    Arc::new(
        move |ctx, input| match codec::decode::<I>(input.as_deref()) {
            Ok(i) => {
                let fut = f(ctx, i);
                let what = what.clone();
                Box::pin(async move {
                    let out = fut.await.map_err(IntoFailure::into_failure)?;
                    codec::encode(&out).map_err(|e| {
                        e.about(format!("the output of {what}"))
                            .into_failure("OutputSerializationError")
                    })
                })
            }
            Err(e) => Box::pin(std::future::ready(Err(e
                .about(format!("the input of {what}"))
                .into_failure("InputDeserializationError")))),
        },
    )
}

/// Adds `e` under `name`, recording a duplicate (a different definition of
/// the same name) as an error; the same definition again is ignored.
fn insert<K: Eq + std::hash::Hash, F>(
    map: &mut HashMap<K, Arc<Entry<F>>>,
    errors: &mut Vec<RegistryError>,
    kind: &'static str,
    key: K,
    name: impl FnOnce() -> String,
    e: Arc<Entry<F>>,
) {
    match map.get(&key) {
        Some(prev) if prev.identity != e.identity => errors.push(RegistryError::Duplicate {
            kind,
            attr: kind,
            name: name(),
            first: prev.defined_at,
            second: e.defined_at,
        }),
        Some(_) => {}
        None => {
            map.insert(key, e);
        }
    }
}

/// An orchestrator's name with its version, as messages show it.
fn shown(name: &str, version: &Option<String>) -> String {
    match version {
        Some(v) => format!("{name}\" version \"{v}"),
        None => name.to_string(),
    }
}

/// Where the (track_caller) registration call was made.
#[track_caller]
pub(crate) fn here() -> DefinedAt {
    let loc = std::panic::Location::caller();
    DefinedAt {
        file: loc.file(),
        line: loc.line(),
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything annotated with `#[orchestrator]` or `#[activity]`, and
    /// every entity named in [`register_entity!`](crate::register_entity),
    /// in this binary. Fails if two definitions share a name.
    pub fn discover() -> Result<Registry, RegistryError> {
        let mut r = Registry::new();
        for reg in inventory::iter::<Registration> {
            (reg.register)(&mut r, reg.defined_at);
        }
        r.check()?;
        Ok(r)
    }

    /// The first registration error, if any (duplicates are recorded while
    /// building and reported here, and when a worker starts).
    pub fn check(&self) -> Result<(), RegistryError> {
        match self.errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Adds a typed orchestrator.
    #[track_caller]
    pub fn orchestrator<O: Orchestrator>(mut self, _handle: O) -> Self {
        self.add_orchestrator::<O>(here());
        self
    }

    /// Adds a typed activity.
    #[track_caller]
    pub fn activity<A: Activity>(mut self, _handle: A) -> Self {
        self.add_activity::<A>(here());
        self
    }

    /// Adds everything from another registry (duplicates are errors).
    pub fn merge(mut self, other: Registry) -> Self {
        for ((name, version), e) in other.orchestrators {
            let named = shown(&name, &version);
            insert(
                &mut self.orchestrators,
                &mut self.errors,
                "orchestrator",
                (name, version),
                || named,
                e,
            );
        }
        for (name, e) in other.activities {
            let named = name.clone();
            insert(
                &mut self.activities,
                &mut self.errors,
                "activity",
                name,
                || named,
                e,
            );
        }
        for (name, e) in other.entities {
            let named = name.clone();
            insert(
                &mut self.entities,
                &mut self.errors,
                "entity",
                name,
                || named,
                e,
            );
        }
        self.errors.extend(other.errors);
        self
    }

    /// Adds an orchestrator from a closure, by name (no macro needed).
    #[track_caller]
    pub fn orchestrator_fn<I, O, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, OrchestrationError>> + Send + 'static,
    {
        let handler = erase(format!("orchestrator \"{name}\""), f);
        self.put_orchestrator(name, None, handler, here(), std::any::TypeId::of::<F>());
        self
    }

    /// Adds version `version` of an orchestrator from a closure, beside
    /// the other versions of `name` (an instance runs the version it
    /// started with; see [`OrchestrationContext::version`]).
    ///
    /// ```
    /// use durable_runtime::{Registry, ScheduleOptions, TestEnv};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new()
    ///     .orchestrator_version_fn("greet", "1", |_ctx, name: String| async move { Ok(format!("Hello, {name}")) })
    ///     .orchestrator_version_fn("greet", "2", |_ctx, name: String| async move { Ok(format!("Hi {name}!")) });
    /// let env = TestEnv::new(registry).unwrap();
    /// let v1 = ScheduleOptions { version: Some("1".into()), ..Default::default() };
    /// let id = env.client().schedule_by_name("greet", &"Ann", v1).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<String>().unwrap(), "Hello, Ann");
    /// # env.shutdown().await;
    /// # });
    /// ```
    #[track_caller]
    pub fn orchestrator_version_fn<I, O, F, Fut>(mut self, name: &str, version: &str, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, OrchestrationError>> + Send + 'static,
    {
        let handler = erase(format!("orchestrator \"{name}\" version \"{version}\""), f);
        self.put_orchestrator(
            name,
            Some(version),
            handler,
            here(),
            std::any::TypeId::of::<F>(),
        );
        self
    }

    /// Adds an activity from a closure, by name (no macro needed).
    #[track_caller]
    pub fn activity_fn<I, O, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let handler = erase(Task::Activity(name).to_string(), f);
        self.put_activity(name, handler, here(), std::any::TypeId::of::<F>(), &[]);
        self
    }

    fn add_orchestrator<O: Orchestrator>(&mut self, at: DefinedAt) {
        let handler = erase(format!("orchestrator \"{}\"", O::NAME), |ctx, i| {
            O::default().run(ctx, i)
        });
        self.put_orchestrator(
            O::NAME,
            O::VERSION,
            handler,
            at,
            std::any::TypeId::of::<O>(),
        );
    }

    fn add_activity<A: Activity>(&mut self, at: DefinedAt) {
        let handler = erase(Task::Activity(A::NAME).to_string(), |ctx, i| {
            A::default().run(ctx, i)
        });
        self.put_activity(A::NAME, handler, at, std::any::TypeId::of::<A>(), A::STATE);
    }

    fn put_orchestrator(
        &mut self,
        name: &str,
        version: Option<&str>,
        handler: OrchestratorFn,
        defined_at: DefinedAt,
        identity: std::any::TypeId,
    ) {
        let entry = Arc::new(Entry {
            handler,
            defined_at,
            identity,
            needs: &[],
            faked_by: None,
        });
        let version = version.map(str::to_string);
        let named = shown(name, &version);
        insert(
            &mut self.orchestrators,
            &mut self.errors,
            "orchestrator",
            (name.to_string(), version),
            || named,
            entry,
        );
    }

    fn put_activity(
        &mut self,
        name: &str,
        handler: ActivityFn,
        defined_at: DefinedAt,
        identity: std::any::TypeId,
        needs: &'static [StateRequirement],
    ) {
        let entry = Arc::new(Entry {
            handler,
            defined_at,
            identity,
            needs,
            faked_by: None,
        });
        insert(
            &mut self.activities,
            &mut self.errors,
            "activity",
            name.to_string(),
            || name.to_string(),
            entry,
        );
    }

    /// Runs `fake` in place of `real`, under `real`'s name: for tests that
    /// replace one activity and keep everything else (discovered or
    /// registered). The fake must have the same input and output types
    /// (checked at compile time); the state it takes replaces what `real`
    /// took. Faking an activity that is not registered is an error,
    /// reported like a duplicate (by [`check`](Registry::check) and when a
    /// worker starts).
    ///
    /// ```
    /// use durable_runtime::{Activity, ActivityContext, ActivityError, ActivitySignature, BoxFuture, Registry};
    ///
    /// // What `#[activity]` generates, written out (no macros in this crate).
    /// #[derive(Clone, Copy, Default)]
    /// struct Charge;
    /// impl ActivitySignature for Charge {
    ///     const NAME: &'static str = "charge";
    ///     type Input = u64;
    ///     type Output = String;
    /// }
    /// impl Activity for Charge {
    ///     fn run(self, _: ActivityContext, cents: u64) -> BoxFuture<'static, Result<String, ActivityError>> {
    ///         Box::pin(async move { Err(ActivityError::msg("the payment gateway is down")) })
    ///     }
    /// }
    /// #[derive(Clone, Copy, Default)]
    /// struct FakeCharge;
    /// impl ActivitySignature for FakeCharge {
    ///     const NAME: &'static str = "fake_charge";
    ///     type Input = u64;
    ///     type Output = String;
    /// }
    /// impl Activity for FakeCharge {
    ///     fn run(self, _: ActivityContext, cents: u64) -> BoxFuture<'static, Result<String, ActivityError>> {
    ///         Box::pin(async move { Ok(format!("receipt for {cents}")) })
    ///     }
    /// }
    ///
    /// let registry = Registry::new().activity(Charge).replace_activity(Charge, FakeCharge);
    /// assert!(registry.check().is_ok());
    /// assert_eq!(registry.activity_names(), ["charge"]);
    ///
    /// let unknown = Registry::new().replace_activity(Charge, FakeCharge);
    /// assert!(unknown.check().unwrap_err().to_string().contains("cannot fake activity \"charge\""));
    /// ```
    #[track_caller]
    pub fn replace_activity<A, F>(self, real: A, fake: F) -> Self
    where
        A: Activity,
        F: Activity<Input = A::Input, Output = A::Output>,
    {
        self.replace_activity_at(real, fake, here())
    }

    /// [`replace_activity`](Registry::replace_activity), given where it was asked for.
    pub(crate) fn replace_activity_at<A, F>(mut self, real: A, fake: F, at: DefinedAt) -> Self
    where
        A: Activity,
        F: Activity<Input = A::Input, Output = A::Output>,
    {
        let _ = (real, fake);
        if !self.activities.contains_key(A::NAME) {
            self.errors.push(RegistryError::UnknownFake {
                activity: A::NAME.to_string(),
                at,
                registered: self.activity_names().join(", "),
            });
            return self;
        }
        let handler = erase(Task::Activity(A::NAME).to_string(), |ctx, i| {
            F::default().run(ctx, i)
        });
        self.activities.insert(
            A::NAME.to_string(),
            Arc::new(Entry {
                handler,
                defined_at: at,
                identity: std::any::TypeId::of::<F>(),
                needs: F::STATE,
                faked_by: Some(F::NAME),
            }),
        );
        self
    }

    /// Checks that `states` has a value of every type of application state
    /// a registered activity takes; the first activity (by name) missing
    /// one is reported, with the type and how to give it. Run when a
    /// worker starts.
    pub fn check_state(&self, states: &StateMap) -> Result<(), RegistryError> {
        let mut names: Vec<&String> = self.activities.keys().collect();
        names.sort_unstable();
        for name in names {
            let entry = &self.activities[name];
            if let Some(missing) = entry.needs.iter().find(|r| !states.contains(r.type_id())) {
                return Err(RegistryError::MissingState {
                    activity: name.clone(),
                    type_name: missing.type_name(),
                    defined_at: entry.defined_at,
                    faked_by: entry.faked_by,
                });
            }
        }
        Ok(())
    }

    /// The application state the activity registered under `name` takes,
    /// if it is registered.
    pub fn activity_state(&self, name: &str) -> Option<&'static [StateRequirement]> {
        self.activities.get(name).map(|e| e.needs)
    }

    /// Whether an orchestrator with this name is registered.
    pub fn has_orchestrator(&self, name: &str) -> bool {
        self.orchestrators.keys().any(|(n, _)| n == name)
    }

    /// Whether an activity with this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    /// Names of registered orchestrators, sorted.
    pub fn orchestrator_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.orchestrators.keys().map(|(n, _)| n.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The versions registered under an orchestrator name, sorted (`None`
    /// for a registration without a version).
    pub fn orchestrator_versions(&self, name: &str) -> Vec<Option<&str>> {
        let mut v: Vec<Option<&str>> = self
            .orchestrators
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref())
            .collect();
        v.sort_unstable();
        v
    }

    /// Adds an entity (see [`Entity`]): instances `@name@key` of its
    /// name run its operations.
    #[track_caller]
    pub fn entity<E: Entity>(mut self) -> Self {
        self.add_entity::<E>(here());
        self
    }

    fn add_entity<E: Entity>(&mut self, at: DefinedAt) {
        let handler = crate::entity::erase::<E>();
        let name = handler.name().to_string();
        let entry = Arc::new(Entry {
            handler,
            defined_at: at,
            identity: std::any::TypeId::of::<E>(),
            needs: &[],
            faked_by: None,
        });
        let named = name.clone();
        insert(
            &mut self.entities,
            &mut self.errors,
            "entity",
            name,
            || named,
            entry,
        );
    }

    /// Whether an entity with this name (compared in lower case) is
    /// registered.
    pub fn has_entity(&self, name: &str) -> bool {
        self.entities.contains_key(&name.to_lowercase())
    }

    /// The entity registered under `name` (compared in lower case).
    pub fn get_entity(&self, name: &str) -> Option<Arc<dyn ErasedEntity>> {
        self.entities
            .get(&name.to_lowercase())
            .map(|e| e.handler.clone())
    }

    /// Names of registered entities, sorted.
    pub fn entity_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.entities.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Names of registered activities, sorted.
    pub fn activity_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.activities.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The handler for an instance of `name` started with `version`: the
    /// registration of that version. An instance started without a version
    /// (before the orchestrator had versions) runs the oldest registration
    /// (by [`compare_versions`](crate::versioning::compare_versions); one
    /// without a version is the oldest of all), which is the code it
    /// started on when the old code keeps its place as the first version.
    /// `Err` with the registered versions when the name is registered but
    /// not this version; `Ok(None)` when the name is not registered. A name
    /// registered only without a version runs instances of any version.
    pub(crate) fn get_orchestrator(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<OrchestratorFn>, Vec<Option<&str>>> {
        let key = (name.to_string(), version.map(str::to_string));
        if let Some(e) = self.orchestrators.get(&key) {
            return Ok(Some(e.handler.clone()));
        }
        let versions = self.orchestrator_versions(name);
        let oldest = versions
            .iter()
            .min_by(|a, b| crate::versioning::compare_versions(a.unwrap_or(""), b.unwrap_or("")));
        match (version, oldest) {
            (_, None) => Ok(None),
            (None, Some(oldest)) => {
                let key = (name.to_string(), oldest.map(str::to_string));
                Ok(self.orchestrators.get(&key).map(|e| e.handler.clone()))
            }
            // A name registered only without a version runs every version
            // (as the SDKs' registries do): a default version, or another
            // language's client, does not stop it.
            (Some(_), Some(None)) if versions.len() == 1 => {
                let key = (name.to_string(), None);
                Ok(self.orchestrators.get(&key).map(|e| e.handler.clone()))
            }
            (Some(_), Some(_)) => Err(versions),
        }
    }

    /// A registry holding only the registration of `name` at `version`,
    /// registered as `as_version` instead (to replay a history of one
    /// version against another version's code).
    pub(crate) fn only_orchestrator(
        &self,
        name: &str,
        version: Option<&str>,
        as_version: Option<&str>,
    ) -> Option<Registry> {
        let key = (name.to_string(), version.map(str::to_string));
        let entry = self.orchestrators.get(&key)?.clone();
        let mut only = Registry::new();
        only.orchestrators
            .insert((name.to_string(), as_version.map(str::to_string)), entry);
        Some(only)
    }

    pub(crate) fn get_activity(&self, name: &str) -> Option<ActivityFn> {
        self.activities.get(name).map(|e| e.handler.clone())
    }
}

/// The failure of an activity whose `State<T>` parameter found no value in
/// its context (used by the code `#[activity]` generates): non-retriable,
/// naming the type. A worker prevents it by refusing to start without the
/// value; it can happen when an activity is called directly with an
/// [`ActivityContext`] that was not given the value.
pub fn missing_state(ctx: &ActivityContext, needed: StateRequirement) -> ActivityError {
    let type_name = needed.type_name();
    ActivityError::new(
        "MissingState",
        format!(
            "activity \"{}\" takes `State<{type_name}>`, but its context has no `{type_name}`; \
             give the worker one with `.state(value)`, or the context with `.with_state(value)`",
            ctx.name()
        ),
    )
    .non_retriable()
}

/// Makes entities discoverable: [`Registry::discover`](crate::Registry::discover)
/// (and so `#[durable::test]` and `TestEnv::discover`) registers every
/// entity type named here, as it does `#[orchestrator]` and `#[activity]`
/// functions. Write it once per type, at module level.
///
/// ```
/// use durable_runtime::entity::{Entity, Operations};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Flag(bool);
///
/// impl Entity for Flag {
///     const NAME: &'static str = "flag";
///     fn operations(ops: &mut Operations<Self>) {
///         ops.op("set", |f: &mut Flag, v: bool| -> Result<(), String> {
///             f.0 = v;
///             Ok(())
///         });
///     }
/// }
///
/// durable_runtime::register_entity!(Flag);
///
/// assert!(durable_runtime::Registry::discover().unwrap().has_entity("flag"));
/// ```
#[macro_export]
macro_rules! register_entity {
    ($($entity:ty),+ $(,)?) => {
        $(
            $crate::__inventory::submit! {
                $crate::Registration::entity::<$entity>(file!(), line!(), module_path!())
            }
        )+
    };
}
