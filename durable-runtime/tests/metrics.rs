//! The worker's metrics, read from an in-memory recorder: executions
//! started, completed and failed by name and status, episodes by how they
//! replayed and their durations, activity durations, lost leases, and the
//! in-memory backend's backlog.

use async_trait::async_trait;
use durable_runtime::actions::OrchestratorResult;
use durable_runtime::backend::{
    ActivityWorkItem, BackendError, CreateInstanceRequest, InstanceMetadata, InstanceQuery,
    OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode, WaitFor,
};
use durable_runtime::failure::TaskOutcome;
use durable_runtime::history::HistoryEvent;
use durable_runtime::metrics as m;
use durable_runtime::{
    ActivityError, Backend, Client, MemoryBackend, OrchestrationError, OrchestrationStatus,
    Registry, ScheduleOptions, Worker, WorkerOptions,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// The process-wide recorder (one per test binary).
fn snapshotter() -> &'static Snapshotter {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snap = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snap
    })
}

/// Held by each test: a reading drains the recorder, so tests must not
/// read while another runs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The metrics reported since the previous reading (a snapshot drains the
/// recorder's counters and histograms): (name, sorted labels, value).
struct Reading(Vec<(String, Labels, DebugValue)>);

/// A metric's labels, sorted.
type Labels = Vec<(String, String)>;

fn read() -> Reading {
    Reading(
        snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect();
                labels.sort();
                (key.name().to_string(), labels, value)
            })
            .collect(),
    )
}

impl Reading {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.0
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
    }

    /// The sum of the counters `name` with (at least) `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .map(|v| match v {
                DebugValue::Counter(c) => *c,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    /// The samples of the histograms `name` with (at least) `labels`.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .flat_map(|v| match v {
                DebugValue::Histogram(h) => h.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).find_map(|v| match v {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
    }
}

fn registry(prefix: &str) -> Registry {
    let act = format!("{prefix}_double");
    let act2 = act.clone();
    Registry::new()
        .activity_fn(
            &act,
            |_c, x: u32| async move { Ok::<_, ActivityError>(x * 2) },
        )
        .orchestrator_fn(&format!("{prefix}_twice"), move |ctx, x: u32| {
            let act = act2.clone();
            async move {
                let a: u32 = ctx.call_activity_by_name(&act, &x).await?;
                let b: u32 = ctx.call_activity_by_name(&act, &a).await?;
                Ok(b)
            }
        })
        .orchestrator_fn(&format!("{prefix}_fails"), |_ctx, x: u32| async move {
            Err::<u32, _>(OrchestrationError::with_type("Refused", format!("no {x}")))
        })
}

async fn run(backend: Arc<dyn Backend>, prefix: &str, cache_capacity: usize) {
    let worker = Worker::new(backend.clone(), registry(prefix))
        .with_options(WorkerOptions {
            cache_capacity,
            ..Default::default()
        })
        .start()
        .unwrap();
    let client = Client::new(backend);
    let mut ids = Vec::new();
    for i in 0..3u32 {
        ids.push(
            client
                .schedule_by_name(&format!("{prefix}_twice"), &i, ScheduleOptions::default())
                .await
                .unwrap(),
        );
    }
    let failing = client
        .schedule_by_name(
            &format!("{prefix}_fails"),
            &7u32,
            ScheduleOptions::default(),
        )
        .await
        .unwrap();
    for id in &ids {
        let s = client.wait_for_completion(id, LIMIT).await.unwrap();
        assert_eq!(
            s.status(),
            OrchestrationStatus::Completed,
            "{:?}",
            s.failure()
        );
    }
    let s = client.wait_for_completion(&failing, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_episodes_and_activities_are_counted_and_timed() {
    let _serial = SERIAL.lock().await;
    read();
    run(Arc::new(MemoryBackend::new()), "cached", 1024).await;
    run(Arc::new(MemoryBackend::new()), "replayed", 0).await;
    let r = read();

    for prefix in ["cached", "replayed"] {
        let twice = format!("{prefix}_twice");
        let fails = format!("{prefix}_fails");
        assert_eq!(r.counter(m::ORCHESTRATIONS_STARTED, &[("name", &twice)]), 3);
        assert_eq!(r.counter(m::ORCHESTRATIONS_STARTED, &[("name", &fails)]), 1);
        assert_eq!(
            r.counter(
                m::ORCHESTRATIONS_COMPLETED,
                &[("name", &twice), ("status", "Completed")]
            ),
            3
        );
        assert_eq!(
            r.counter(
                m::ORCHESTRATIONS_COMPLETED,
                &[("name", &twice), ("status", "Failed")]
            ),
            0
        );
        assert_eq!(
            r.counter(
                m::ORCHESTRATIONS_COMPLETED,
                &[("name", &fails), ("status", "Failed")]
            ),
            1
        );
        assert_eq!(r.counter(m::ORCHESTRATIONS_FAILED, &[("name", &fails)]), 1);
        assert_eq!(r.counter(m::ORCHESTRATIONS_FAILED, &[("name", &twice)]), 0);
        // Three episodes per `twice` instance (start, two completions), one
        // per `fails`; each timed.
        let episodes = r.counter(m::EPISODES, &[("name", &twice)]);
        assert_eq!(episodes, 9, "episodes of {twice}");
        assert_eq!(r.samples(m::EPISODE_DURATION, &[("name", &twice)]).len(), 9);
        let activity = format!("{prefix}_double");
        let runs = r.samples(
            m::ACTIVITY_DURATION,
            &[("name", &activity), ("status", "Completed")],
        );
        assert_eq!(runs.len(), 6, "activity runs of {activity}");
        assert!(runs.iter().all(|s| *s >= 0.0));
    }
    // With the execution cache the episodes after the first continue the
    // cached execution; without it, each replays the whole history.
    assert_eq!(
        r.counter(
            m::EPISODES,
            &[("name", "cached_twice"), ("replay", "cached")]
        ),
        6
    );
    assert_eq!(
        r.counter(m::EPISODES, &[("name", "cached_twice"), ("replay", "full")]),
        3
    );
    assert_eq!(
        r.counter(
            m::EPISODES,
            &[("name", "replayed_twice"), ("replay", "full")]
        ),
        9
    );
    assert_eq!(
        r.counter(
            m::EPISODES,
            &[("name", "replayed_twice"), ("replay", "cached")]
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_the_work_left_when_work_is_taken() {
    let _serial = SERIAL.lock().await;
    read();
    // No worker: five instances wait; taking one leaves four.
    let backend = MemoryBackend::new();
    let client = Client::new(Arc::new(backend.clone()));
    for i in 0..5u32 {
        client
            .schedule_by_name("backlog_probe", &i, ScheduleOptions::default())
            .await
            .unwrap();
    }
    let item = backend.next_orchestration_item().await.unwrap();
    assert_eq!(
        read().gauge(m::BACKLOG, &[("kind", "orchestration")]),
        Some(4.0)
    );
    let item2 = backend.next_orchestration_item().await.unwrap();
    assert_eq!(
        read().gauge(m::BACKLOG, &[("kind", "orchestration")]),
        Some(3.0)
    );
    backend.abandon_orchestration_item(item).await.unwrap();
    backend.abandon_orchestration_item(item2).await.unwrap();
}

/// A backend whose first activity completion is refused as if its lease
/// had expired (the activity is given back, so it runs again).
struct LosesFirstActivityLease {
    inner: MemoryBackend,
    lost: AtomicBool,
}

#[async_trait]
impl Backend for LosesFirstActivityLease {
    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError> {
        self.inner.create_instance(request).await
    }
    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        self.inner.get_instance(instance_id, with_payloads).await
    }
    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError> {
        self.inner
            .wait_for_instance(instance_id, wait_for, timeout)
            .await
    }
    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError> {
        self.inner.raise_event(instance_id, name, input).await
    }
    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError> {
        self.inner.terminate(instance_id, output, recursive).await
    }
    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.inner.suspend(instance_id, reason).await
    }
    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.inner.resume(instance_id, reason).await
    }
    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
        self.inner.purge(target, recursive).await
    }
    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError> {
        self.inner.query_instances(query).await
    }
    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
        self.inner.get_history(instance_id).await
    }
    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
        self.inner.next_orchestration_item().await
    }
    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError> {
        self.inner
            .complete_orchestration_episode(item, result)
            .await
    }
    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        self.inner.abandon_orchestration_item(item).await
    }
    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        self.inner.next_activity_item().await
    }
    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: TaskOutcome,
    ) -> Result<(), BackendError> {
        if !self.lost.swap(true, Ordering::SeqCst) {
            self.inner.abandon_activity_item(item).await?;
            return Err(BackendError::LeaseLost(item.completion_token.clone()));
        }
        self.inner.complete_activity_item(item, outcome).await
    }
    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        self.inner.abandon_activity_item(item).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_activity_lease_is_counted() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    // Drain what earlier tests left.
    read();
    let backend = Arc::new(LosesFirstActivityLease {
        inner: MemoryBackend::new(),
        lost: AtomicBool::new(false),
    });
    let worker = Worker::new(backend.clone(), registry("lease"))
        .start()
        .unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("lease_twice", &5u32, ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    assert_eq!(s.output::<u32>().unwrap(), 20);
    worker.shutdown().await;
    let r = read();
    assert_eq!(r.counter(m::LEASES_LOST, &[("kind", "activity")]), 1);
    // The refused run and the one recorded are both timed.
    assert_eq!(
        r.samples(m::ACTIVITY_DURATION, &[("name", "lease_double")])
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_the_store_fails_is_counted_failed() {
    let _serial = SERIAL.lock().await;
    read();
    let registry = Registry::new().orchestrator_fn("store_fails_big", |_ctx, _: ()| async move {
        Ok::<String, OrchestrationError>("x".repeat(1_000))
    });
    let limits = durable_runtime::backend::transition::Limits {
        max_payload_bytes: 100,
        ..Default::default()
    };
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new().with_limits(limits));
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("store_fails_big", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    worker.shutdown().await;
    let r = read();
    let name = [("name", "store_fails_big")];
    assert_eq!(r.counter(m::ORCHESTRATIONS_FAILED, &name), 1);
    assert_eq!(
        r.counter(
            m::ORCHESTRATIONS_COMPLETED,
            &[("name", "store_fails_big"), ("status", "Completed")]
        ),
        0
    );
    assert_eq!(
        r.counter(
            m::ORCHESTRATIONS_COMPLETED,
            &[("name", "store_fails_big"), ("status", "Failed")]
        ),
        1
    );
}
