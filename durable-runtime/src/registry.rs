//! Orchestrators and activities, typed and type-erased.
//!
//! `#[orchestrator]` and `#[activity]` turn a function into a unit struct that
//! implements [`Orchestrator`] or [`Activity`]; the struct is the typed handle
//! used at call sites. A [`Registry`] maps wire names to type-erased handlers
//! that the worker runs. [`Registry::discover`] collects everything annotated
//! in the binary.

use crate::actions::Task;
use crate::codec;
use crate::context::OrchestrationContext;
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
}

/// What a [`Registration`] registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationKind {
    /// An orchestrator.
    Orchestrator,
    /// An activity.
    Activity,
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
            register: |r, at| r.add_activity::<A>(at),
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
    pub(crate) orchestrators: HashMap<String, Arc<Entry<OrchestratorFn>>>,
    pub(crate) activities: HashMap<String, Arc<Entry<ActivityFn>>>,
    errors: Vec<RegistryError>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut o: Vec<_> = self.orchestrators.keys().collect();
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
fn insert<F>(
    map: &mut HashMap<String, Arc<Entry<F>>>,
    errors: &mut Vec<RegistryError>,
    kind: &'static str,
    name: String,
    e: Arc<Entry<F>>,
) {
    match map.get(&name) {
        Some(prev) if prev.identity != e.identity => errors.push(RegistryError::Duplicate {
            kind,
            attr: kind,
            name,
            first: prev.defined_at,
            second: e.defined_at,
        }),
        Some(_) => {}
        None => {
            map.insert(name, e);
        }
    }
}

/// Where the (track_caller) registration call was made.
#[track_caller]
fn here() -> DefinedAt {
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

    /// Everything annotated with `#[orchestrator]` or `#[activity]` in this
    /// binary. Fails if two definitions share a name.
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
        for (name, e) in other.orchestrators {
            insert(
                &mut self.orchestrators,
                &mut self.errors,
                "orchestrator",
                name,
                e,
            );
        }
        for (name, e) in other.activities {
            insert(&mut self.activities, &mut self.errors, "activity", name, e);
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
        self.put_orchestrator(name, handler, here(), std::any::TypeId::of::<F>());
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
        self.put_activity(name, handler, here(), std::any::TypeId::of::<F>());
        self
    }

    fn add_orchestrator<O: Orchestrator>(&mut self, at: DefinedAt) {
        let handler = erase(format!("orchestrator \"{}\"", O::NAME), |ctx, i| {
            O::default().run(ctx, i)
        });
        self.put_orchestrator(O::NAME, handler, at, std::any::TypeId::of::<O>());
    }

    fn add_activity<A: Activity>(&mut self, at: DefinedAt) {
        let handler = erase(Task::Activity(A::NAME).to_string(), |ctx, i| {
            A::default().run(ctx, i)
        });
        self.put_activity(A::NAME, handler, at, std::any::TypeId::of::<A>());
    }

    fn put_orchestrator(
        &mut self,
        name: &str,
        handler: OrchestratorFn,
        defined_at: DefinedAt,
        identity: std::any::TypeId,
    ) {
        let entry = Arc::new(Entry {
            handler,
            defined_at,
            identity,
        });
        insert(
            &mut self.orchestrators,
            &mut self.errors,
            "orchestrator",
            name.to_string(),
            entry,
        );
    }

    fn put_activity(
        &mut self,
        name: &str,
        handler: ActivityFn,
        defined_at: DefinedAt,
        identity: std::any::TypeId,
    ) {
        let entry = Arc::new(Entry {
            handler,
            defined_at,
            identity,
        });
        insert(
            &mut self.activities,
            &mut self.errors,
            "activity",
            name.to_string(),
            entry,
        );
    }

    /// Whether an orchestrator with this name is registered.
    pub fn has_orchestrator(&self, name: &str) -> bool {
        self.orchestrators.contains_key(name)
    }

    /// Whether an activity with this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    /// Names of registered orchestrators, sorted.
    pub fn orchestrator_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.orchestrators.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Names of registered activities, sorted.
    pub fn activity_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.activities.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn get_orchestrator(&self, name: &str) -> Option<OrchestratorFn> {
        self.orchestrators.get(name).map(|e| e.handler.clone())
    }

    pub(crate) fn get_activity(&self, name: &str) -> Option<ActivityFn> {
        self.activities.get(name).map(|e| e.handler.clone())
    }
}
