//! The client: schedule, query and control orchestration instances.

mod entities;
mod schedules;

pub use entities::{CleanEntityStorage, EntityMetadata, EntityPage, EntityQuery};
pub use schedules::ScheduleDescription;

use crate::backend::{
    Backend, BackendError, CreateInstanceRequest, IdReusePolicy, InstanceMetadata, InstanceQuery,
    PurgeTarget, WaitFor,
};
use crate::codec;
use crate::error::Error;
use crate::handler::{BoxFuture, Event};
use crate::history::{FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
use crate::registry::Orchestrator;
use crate::trace::TraceContext;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Options for scheduling an orchestration.
#[derive(Clone, Debug, Default)]
pub struct ScheduleOptions {
    /// Instance id; default: a random UUID.
    pub instance_id: Option<String>,
    /// Start no earlier than this.
    pub start_at: Option<Timestamp>,
    /// What to do if the id is taken; default: replace finished instances only.
    pub reuse_policy: Option<IdReusePolicy>,
    /// Orchestrator version to record.
    pub version: Option<String>,
    /// The span the new orchestration's trace continues (e.g. the request
    /// that started it, from its `traceparent` header); default: a new
    /// trace. See [`crate::trace`].
    pub trace_parent: Option<TraceContext>,
    /// Labels for the instance (the protocol's instance tags): kept in its
    /// metadata ([`OrchestrationState::tags`]), on the `ExecutionStarted`
    /// of each of its executions, and across continue-as-new and restart.
    /// Over gRPC they are sent with the start request.
    pub tags: BTreeMap<String, String>,
}

impl ScheduleOptions {
    /// Options with this instance id.
    pub fn with_id(id: impl Into<String>) -> Self {
        ScheduleOptions {
            instance_id: Some(id.into()),
            ..Default::default()
        }
    }
}

/// What a client sees of an instance.
#[derive(Clone, Debug, PartialEq)]
pub struct OrchestrationState {
    meta: InstanceMetadata,
}

impl OrchestrationState {
    /// Wraps backend metadata.
    pub fn from_metadata(meta: InstanceMetadata) -> Self {
        OrchestrationState { meta }
    }
    /// The raw metadata.
    pub fn metadata(&self) -> &InstanceMetadata {
        &self.meta
    }
    /// Instance id.
    pub fn instance_id(&self) -> &str {
        &self.meta.instance_id
    }
    /// Orchestrator name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }
    /// The orchestrator version the instance's current execution started
    /// on, if it has one.
    pub fn version(&self) -> Option<&str> {
        self.meta.version.as_deref()
    }
    /// Runtime status.
    pub fn status(&self) -> OrchestrationStatus {
        self.meta.status
    }
    /// The output decoded into `T`. Fails if there is none (the instance
    /// failed, was terminated, has not finished, or was fetched without
    /// payloads; the error says which) or it does not decode.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.meta.output.is_none() {
            let why = match (self.meta.status, &self.meta.failure) {
                (OrchestrationStatus::Failed, Some(f)) => Some(format!("it failed with {f}")),
                (OrchestrationStatus::Failed, None) => Some("it failed".to_string()),
                (OrchestrationStatus::Terminated, _) => Some("it was terminated".to_string()),
                _ => None,
            };
            if let Some(why) = why {
                let id = &self.meta.instance_id;
                return Err(Error::NotAvailable(format!(
                    "instance \"{id}\" has no output: {why}"
                )));
            }
        }
        decode(
            self.meta.output.as_deref(),
            "the output of",
            &self.meta.instance_id,
        )
    }
    /// The output as JSON text.
    pub fn output_json(&self) -> Option<&str> {
        self.meta.output.as_deref()
    }
    /// The input decoded into `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(
            self.meta.input.as_deref(),
            "the input of",
            &self.meta.instance_id,
        )
    }
    /// The input as JSON text.
    pub fn input_json(&self) -> Option<&str> {
        self.meta.input.as_deref()
    }
    /// The custom status decoded into `T`.
    pub fn custom_status<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(
            self.meta.custom_status.as_deref(),
            "the custom status of",
            &self.meta.instance_id,
        )
    }
    /// The failure, if the instance failed.
    pub fn failure(&self) -> Option<&FailureDetails> {
        self.meta.failure.as_ref()
    }
    /// The tags the instance was created with (empty if none; see
    /// [`ScheduleOptions::tags`]).
    ///
    /// ```
    /// use durable_runtime::{Registry, ScheduleOptions, TestEnv};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new().orchestrator_fn("noop", |_ctx, _: ()| async move { Ok(()) });
    /// let env = TestEnv::new(registry).unwrap();
    /// let options = ScheduleOptions {
    ///     tags: [("team".to_string(), "billing".to_string())].into(),
    ///     ..Default::default()
    /// };
    /// let id = env.client().schedule_by_name("noop", &(), options).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.tags()["team"], "billing");
    /// # env.shutdown().await;
    /// # });
    /// ```
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.meta.tags
    }

    /// When it was created.
    pub fn created_at(&self) -> Timestamp {
        self.meta.created_at
    }
    /// When it last changed.
    pub fn last_updated_at(&self) -> Timestamp {
        self.meta.last_updated_at
    }
    /// When it finished.
    pub fn completed_at(&self) -> Option<Timestamp> {
        self.meta.completed_at
    }
}

fn decode<T: DeserializeOwned>(json: Option<&str>, what: &str, id: &str) -> Result<T, Error> {
    let text = json.ok_or_else(|| {
        Error::NotAvailable(format!(
            "{what} \"{id}\" is not available (not finished, or fetched without payloads)"
        ))
    })?;
    codec::decode(Some(text)).map_err(|e| Error::Codec(e.about(format!("{what} \"{id}\""))))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Option<String>, Error> {
    codec::encode(value).map_err(|e| Error::Codec(e.about(what)))
}

/// A suspend or resume reason as a payload (a JSON string).
fn encode_reason(reason: Option<&str>) -> Result<Option<String>, Error> {
    match reason {
        Some(r) => encode(&r, "the reason"),
        None => Ok(None),
    }
}

/// Schedules and controls orchestrations on a backend. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    backend: Arc<dyn Backend>,
    /// The version new instances start on when neither the options nor a
    /// typed orchestrator name one.
    default_version: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client for a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Client {
            backend,
            default_version: None,
        }
    }

    /// This client with a default version: instances it schedules without
    /// a version (in [`ScheduleOptions::version`] or on a typed
    /// orchestrator) start on `version`, as the SDKs' client
    /// `default_version` does. Use it when a deploy moves an unversioned
    /// name to versions, so new instances start on the new code.
    ///
    /// ```
    /// # use durable_runtime::{Client, MemoryBackend, ScheduleOptions};
    /// # use std::sync::Arc;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let backend = Arc::new(MemoryBackend::new());
    /// let client = Client::new(backend.clone()).with_default_version("2");
    /// let id = client.schedule_by_name("greet", &"Ann", ScheduleOptions::default()).await?;
    /// let meta = client.get_state(&id).await?.expect("scheduled");
    /// assert_eq!(meta.version(), Some("2"));
    /// # Ok::<(), durable_runtime::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_default_version(mut self, version: impl Into<String>) -> Self {
        self.default_version = Some(version.into());
        self
    }

    /// The backend this client talks to.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Schedules a typed orchestration with a fresh instance id; returns the id.
    pub async fn schedule<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
    ) -> Result<String, Error> {
        self.schedule_with(_orchestrator, input, ScheduleOptions::default())
            .await
    }

    /// Schedules a typed orchestration with options (id, start time, reuse policy).
    pub async fn schedule_with<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
        mut options: ScheduleOptions,
    ) -> Result<String, Error> {
        if options.version.is_none() {
            options.version = O::VERSION.map(str::to_string);
        }
        self.schedule_by_name(O::NAME, &input, options).await
    }

    /// Schedules an orchestration by name (e.g. one served by a worker in
    /// another language).
    pub async fn schedule_by_name(
        &self,
        name: &str,
        input: &impl Serialize,
        options: ScheduleOptions,
    ) -> Result<String, Error> {
        let input = encode(input, &format!("the input of orchestration \"{name}\""))?;
        self.schedule_raw(name, input, options).await
    }

    /// Schedules with input already as JSON text.
    pub async fn schedule_raw(
        &self,
        name: &str,
        input: Option<String>,
        options: ScheduleOptions,
    ) -> Result<String, Error> {
        let instance_id = options
            .instance_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let version = options.version.or_else(|| self.default_version.clone());
        // The client's span: its context goes into `ExecutionStarted`, so
        // the orchestration's span is its child.
        let started = chrono::Utc::now();
        let mut span = crate::observe::create_orchestration_span(
            name,
            version.as_deref(),
            &instance_id,
            options.trace_parent.as_ref(),
            (started, started),
        );
        let created = self
            .backend
            .create_instance(CreateInstanceRequest {
                instance_id: instance_id.clone(),
                name: name.to_string(),
                version,
                input,
                scheduled_start: options.start_at,
                reuse_policy: options.reuse_policy.unwrap_or_default(),
                trace: Some(span.context()),
                tags: options.tags,
            })
            .await;
        span.end = chrono::Utc::now();
        span.error = created.as_ref().err().map(|e| e.to_string());
        crate::trace::emit(span);
        created?;
        Ok(instance_id)
    }

    /// The instance's state with input, output and custom status, or `None`.
    pub async fn get_state(&self, instance_id: &str) -> Result<Option<OrchestrationState>, Error> {
        Ok(self
            .backend
            .get_instance(instance_id, true)
            .await?
            .map(OrchestrationState::from_metadata))
    }

    /// The instance's state without payloads (cheaper), or `None`.
    pub async fn get_status(&self, instance_id: &str) -> Result<Option<OrchestrationState>, Error> {
        Ok(self
            .backend
            .get_instance(instance_id, false)
            .await?
            .map(OrchestrationState::from_metadata))
    }

    /// Waits until the instance has started (left `Pending`).
    pub async fn wait_for_start(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<OrchestrationState, Error> {
        Ok(OrchestrationState::from_metadata(
            self.backend
                .wait_for_instance(instance_id, WaitFor::Start, timeout)
                .await?,
        ))
    }

    /// Waits until the instance finished (completed, failed or terminated).
    pub async fn wait_for_completion(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<OrchestrationState, Error> {
        Ok(OrchestrationState::from_metadata(
            self.backend
                .wait_for_instance(instance_id, WaitFor::Completion, timeout)
                .await?,
        ))
    }

    /// Raises an external event on an instance, by name: for events
    /// defined in other languages, or waited for with
    /// `wait_for_external_event`. For an [`Event`] type, prefer
    /// [`raise`](Self::raise), which takes the name from the type.
    pub async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        payload: &impl Serialize,
    ) -> Result<(), Error> {
        let data = encode(payload, &format!("the data of event \"{name}\""))?;
        self.raise_encoded(instance_id, name, data).await
    }

    /// Raises an encoded event, in a span `orchestration_event:{name}` when
    /// spans are wanted.
    async fn raise_encoded(
        &self,
        instance_id: &str,
        name: &str,
        data: Option<String>,
    ) -> Result<(), Error> {
        if !crate::trace::wanted() {
            return Ok(self.backend.raise_event(instance_id, name, data).await?);
        }
        let start = chrono::Utc::now();
        let raised = self.backend.raise_event(instance_id, name, data).await;
        let mut span =
            crate::observe::raise_event_span(name, instance_id, (start, chrono::Utc::now()));
        span.error = raised.as_ref().err().map(|e| e.to_string());
        crate::trace::emit(span);
        Ok(raised?)
    }

    /// Raises the event `E` on an instance: the event named `E::NAME`
    /// with `event` as its data, received by
    /// [`wait_for_event::<E>`](crate::OrchestrationContext::wait_for_event).
    /// A value that is not an event type does not compile. (It returns a
    /// boxed future: `client.raise(&id, &event).await`.) On the wire it
    /// is the same as `raise_event(instance_id, E::NAME, event)`, so an
    /// orchestration in another language waits for it by that name.
    ///
    /// ```
    /// use durable_runtime::{Event, Registry, TestEnv};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Confirmed(bool);
    /// impl Event for Confirmed {
    ///     const NAME: &'static str = "confirmed";
    /// }
    ///
    /// let registry = Registry::new().orchestrator_fn("booking", |ctx, _: ()| async move {
    ///     let Confirmed(yes) = ctx.wait_for_event::<Confirmed>().await?;
    ///     Ok(yes)
    /// });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let client = env.client();
    /// let id = client.schedule_by_name("booking", &(), Default::default()).await.unwrap();
    /// client.raise(&id, &Confirmed(true)).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert!(state.output::<bool>().unwrap());
    /// # });
    /// ```
    pub fn raise<'a, E: Event>(
        &'a self,
        instance_id: &'a str,
        event: &E,
    ) -> BoxFuture<'a, Result<(), Error>> {
        // Encoded before the future is built, so the future does not
        // depend on `E` and a value that is not an event is reported once.
        let data = encode(event, &format!("the data of event \"{}\"", E::NAME));
        Box::pin(async move { self.raise_encoded(instance_id, E::NAME, data?).await })
    }

    /// Starts a finished instance (completed, failed, terminated) again
    /// under the same id: a new execution of the same orchestrator and
    /// version with the input its last execution started with, as the
    /// Durable Task SDKs' `restart` does. The old history is replaced.
    /// Returns the id.
    ///
    /// Fails with [`BackendError::NotFound`] for an unknown id, and with
    /// [`BackendError::InvalidState`] while the instance is pending, running
    /// or suspended (terminate it first, or wait for it).
    ///
    /// ```
    /// use durable_runtime::{Registry, ScheduleOptions, TestEnv};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new().orchestrator_fn("double", |_ctx, x: i64| async move { Ok(x * 2) });
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("double", &21, ScheduleOptions::with_id("d-1")).await.unwrap();
    /// env.wait_for_completion(&id).await.unwrap();
    ///
    /// assert_eq!(env.client().restart(&id).await.unwrap(), "d-1");
    /// let again = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(again.output::<i64>().unwrap(), 42);
    /// # env.shutdown().await;
    /// # });
    /// ```
    pub async fn restart(&self, instance_id: &str) -> Result<String, Error> {
        self.restart_under(instance_id, instance_id.to_string())
            .await
    }

    /// Like [`restart`](Self::restart), but the new execution gets a new,
    /// random instance id (returned); the finished instance stays as it is.
    pub async fn restart_as_new(&self, instance_id: &str) -> Result<String, Error> {
        self.restart_under(instance_id, uuid::Uuid::new_v4().simple().to_string())
            .await
    }

    async fn restart_under(&self, instance_id: &str, new_id: String) -> Result<String, Error> {
        let meta = self
            .backend
            .get_instance(instance_id, true)
            .await?
            .ok_or_else(|| BackendError::NotFound(instance_id.to_string()))?;
        if !meta.status.is_terminal() {
            return Err(BackendError::InvalidState {
                id: instance_id.to_string(),
                operation: "restart",
                status: meta.status,
            }
            .into());
        }
        // Only a finished instance may be replaced: one restarted by
        // someone else meanwhile is running, and this restart is refused.
        let options = ScheduleOptions {
            instance_id: Some(new_id),
            version: meta.version,
            reuse_policy: Some(IdReusePolicy::default()),
            tags: meta.tags,
            ..Default::default()
        };
        self.schedule_raw(&meta.name, meta.input, options).await
    }

    /// Terminates an instance, recording `output` as its output.
    pub async fn terminate(&self, instance_id: &str, output: &impl Serialize) -> Result<(), Error> {
        let output = encode(output, "the termination output")?;
        Ok(self.backend.terminate(instance_id, output, false).await?)
    }

    /// Terminates an instance and all its running sub-orchestrations.
    pub async fn terminate_recursive(
        &self,
        instance_id: &str,
        output: &impl Serialize,
    ) -> Result<(), Error> {
        let output = encode(output, "the termination output")?;
        Ok(self.backend.terminate(instance_id, output, true).await?)
    }

    /// Suspends an instance; events are held until it is resumed.
    pub async fn suspend(&self, instance_id: &str, reason: Option<&str>) -> Result<(), Error> {
        Ok(self
            .backend
            .suspend(instance_id, encode_reason(reason)?)
            .await?)
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, instance_id: &str, reason: Option<&str>) -> Result<(), Error> {
        Ok(self
            .backend
            .resume(instance_id, encode_reason(reason)?)
            .await?)
    }

    /// Rewinds a failed instance: it continues from where it failed. The
    /// activities and timers that failed or had not finished run again,
    /// failed sub-orchestrations are rewound with it (recursively), and
    /// what succeeded is not redone; its history keeps what succeeded and
    /// shows an `ExecutionRewound` event with `reason`. Use it once the
    /// cause is fixed (a deploy, a downstream service back). Fails with
    /// `InvalidState` unless the instance failed.
    ///
    /// ```
    /// # use durable_runtime::{ActivityError, Client, MemoryBackend, OrchestrationStatus, Registry, ScheduleOptions, Worker};
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let down = Arc::new(AtomicBool::new(true));
    /// let gateway = down.clone();
    /// let registry = Registry::new()
    ///     .activity_fn("charge", move |_c, amount: u32| {
    ///         let down = gateway.load(Ordering::SeqCst);
    ///         async move {
    ///             if down { return Err(ActivityError::new("Unavailable", "the gateway is down")); }
    ///             Ok(format!("charged {amount}"))
    ///         }
    ///     })
    ///     .orchestrator_fn("pay", |ctx, amount: u32| async move {
    ///         Ok(ctx.call_activity_by_name::<String>("charge", &amount).await?)
    ///     });
    /// let backend = Arc::new(MemoryBackend::new());
    /// let worker = Worker::new(backend.clone(), registry).start()?;
    /// let client = Client::new(backend);
    /// let id = client.schedule_by_name("pay", &5, ScheduleOptions::default()).await?;
    /// let state = client.wait_for_completion(&id, Duration::from_secs(10)).await?;
    /// assert_eq!(state.status(), OrchestrationStatus::Failed);
    ///
    /// down.store(false, Ordering::SeqCst); // the gateway is back
    /// client.rewind(&id, Some("gateway restored")).await?;
    /// let state = client.wait_for_completion(&id, Duration::from_secs(10)).await?;
    /// assert_eq!(state.output::<String>()?, "charged 5");
    /// worker.shutdown().await;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn rewind(&self, instance_id: &str, reason: Option<&str>) -> Result<(), Error> {
        Ok(self
            .backend
            .rewind(instance_id, reason.map(str::to_string))
            .await?)
    }

    /// Deletes a finished instance and its history (and its
    /// sub-orchestrations if `recursive`); returns how many were deleted.
    pub async fn purge(&self, instance_id: &str, recursive: bool) -> Result<usize, Error> {
        Ok(self
            .backend
            .purge(PurgeTarget::Instance(instance_id.to_string()), recursive)
            .await?)
    }

    /// Deletes every finished instance matching a filter.
    pub async fn purge_where(&self, target: PurgeTarget, recursive: bool) -> Result<usize, Error> {
        Ok(self.backend.purge(target, recursive).await?)
    }

    /// One page of instances matching a query.
    pub async fn query(
        &self,
        query: InstanceQuery,
    ) -> Result<(Vec<OrchestrationState>, Option<String>), Error> {
        let page = self.backend.query_instances(query).await?;
        Ok((
            page.instances
                .into_iter()
                .map(OrchestrationState::from_metadata)
                .collect(),
            page.continuation_token,
        ))
    }

    /// Every instance matching a query (follows continuation tokens).
    pub async fn query_all(
        &self,
        mut query: InstanceQuery,
    ) -> Result<Vec<OrchestrationState>, Error> {
        let mut all = Vec::new();
        loop {
            let (page, token) = self.query(query.clone()).await?;
            all.extend(page);
            match token {
                Some(t) => query.continuation_token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// The history of the instance's current execution. Serialise it with
    /// serde (see `docs/history-format.md`) to replay it in a test.
    pub async fn history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, Error> {
        Ok(self.backend.get_history(instance_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: OrchestrationStatus, failure: Option<FailureDetails>) -> OrchestrationState {
        let t = chrono::DateTime::UNIX_EPOCH;
        OrchestrationState::from_metadata(InstanceMetadata {
            instance_id: "order-1".into(),
            execution_id: "e".into(),
            name: "checkout".into(),
            version: None,
            status,
            input: None,
            output: None,
            custom_status: None,
            failure,
            created_at: t,
            last_updated_at: t,
            completed_at: None,
            scheduled_start: None,
            parent_instance_id: None,
            tags: Default::default(),
        })
    }

    #[test]
    fn a_missing_output_says_why() {
        let failed = state(
            OrchestrationStatus::Failed,
            Some(FailureDetails::new("PaymentDeclined", "card expired")),
        );
        let e = failed.output::<u32>().unwrap_err().to_string();
        assert_eq!(
            e,
            "instance \"order-1\" has no output: it failed with PaymentDeclined: card expired"
        );
        let e = state(OrchestrationStatus::Terminated, None)
            .output::<u32>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("it was terminated"), "{e}");
        let e = state(OrchestrationStatus::Running, None)
            .output::<u32>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not finished, or fetched without payloads"),
            "{e}"
        );
    }
}
