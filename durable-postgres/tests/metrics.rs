//! The PostgreSQL store's metrics, read from an in-memory recorder: the
//! backlog of orchestrations and of activities, and work handed out again
//! after its lease expired.
//!
//! The recorder is global to the test binary and the backlog is counted at
//! most once a second per process, so the tests take turns ([`SERIAL`]).

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::metrics as m;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long anything that should happen may take before the test fails.
const LIMIT: Duration = Duration::from_secs(20);

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A metric's name and its `kind` label, if it has one.
type Key = (String, Option<String>);

/// What the recorder holds.
struct Reading {
    /// Counter totals since the recorder was installed.
    counters: HashMap<Key, u64>,
    /// Gauges as set since the previous reading (a snapshot resets gauges
    /// to zero but keeps them listed).
    gauges: HashMap<Key, f64>,
}

impl Reading {
    fn counter(&self, name: &str, kind: &str) -> u64 {
        let key = (name.to_string(), Some(kind.to_string()));
        self.counters.get(&key).copied().unwrap_or(0)
    }

    /// The gauge, rounded (it holds a count), if it was ever set.
    fn gauge(&self, name: &str, kind: &str) -> Option<i64> {
        let key = (name.to_string(), Some(kind.to_string()));
        self.gauges.get(&key).map(|g| g.round() as i64)
    }
}

/// Reads the recorder. A snapshot drains its counters, so every reading
/// is added to the totals kept here.
fn read() -> Reading {
    static TOTALS: Mutex<Option<HashMap<Key, u64>>> = Mutex::new(None);
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let counters = totals.get_or_insert_with(HashMap::new);
    let mut gauges = HashMap::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let kind = key
            .labels()
            .find(|l| l.key() == "kind")
            .map(|l| l.value().to_string());
        let key = (key.name().to_string(), kind);
        match value {
            DebugValue::Counter(c) => *counters.entry(key).or_default() += c,
            DebugValue::Gauge(g) => {
                gauges.insert(key, g.into_inner());
            }
            DebugValue::Histogram(_) => {}
        }
    }
    Reading {
        counters: counters.clone(),
        gauges,
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {LIMIT:?}"))
}

/// A backend on a schema of its own, and that schema.
async fn connect(options: PostgresOptions) -> (PostgresBackend, String) {
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let options = PostgresOptions {
        schema: schema.clone(),
        pool_size: 4,
        ..options
    };
    let backend = PostgresBackend::connect_with(cluster.url(), options)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"));
    (backend, schema)
}

/// A plain connection to the test server, for looking behind the backend.
async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(TestCluster::shared().url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"));
    tokio::spawn(connection);
    client
}

/// How many rows of `table` (`instances`, `activities`) are leased.
async fn leased(db: &tokio_postgres::Client, schema: &str, table: &str) -> i64 {
    db.query_one(
        &format!("SELECT count(*) FROM \"{schema}\".{table} WHERE lease_token IS NOT NULL"),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("counting the leased {table} failed: {e}"))
    .get(0)
}

fn request(id: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: "orch".into(),
        version: None,
        input: None,
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

/// An episode's result that schedules `n` activities.
fn schedule(n: i32) -> OrchestratorResult {
    OrchestratorResult {
        actions: (0..n)
            .map(|id| OrchestratorAction {
                id,
                kind: ActionKind::ScheduleTask {
                    name: "work".into(),
                    version: None,
                    input: Some(id.to_string()),
                    tags: Default::default(),
                },
                trace: None,
            })
            .collect(),
        custom_status: None,
        cancelled_timers: Vec::new(),
    }
}

/// Work items to schedule: more than a claim leases at once (one handed
/// out, the others kept for the next calls), so some are left ready.
const READY: i64 = 40;

/// What one pass of the backlog checks saw.
enum Backlog {
    /// The gauge reads what is ready and not leased.
    Right,
    /// Not counted at this take (this process counted it less than a
    /// second ago): give the work back and take it again.
    NotCounted,
}

/// Checks the backlog gauge of `kind` after a take that left `taken` of
/// [`READY`] items leased.
fn check_backlog(kind: &str, taken: i64) -> Backlog {
    assert!(
        (1..READY).contains(&taken),
        "{taken} of {READY} {kind} items are leased after one take: \
         a claim must lease some, and leave some ready"
    );
    match read().gauge(m::BACKLOG, kind) {
        Some(b) if b == READY - taken => Backlog::Right,
        None | Some(0) => Backlog::NotCounted,
        Some(b) => {
            panic!("the {kind} backlog reads {b}, with {READY} ready of which {taken} are leased")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestration_backlog_is_what_is_ready_and_not_leased() {
    let _turn = SERIAL.lock().await;
    snapshotter();
    let (backend, schema) = connect(PostgresOptions::default()).await;
    let db = admin().await;
    for i in 0..READY {
        backend
            .create_instance(request(&format!("i{i}")))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        // Gauges back to zero: what the next reading shows this take set.
        read();
        let item = within("an episode", backend.next_orchestration_item())
            .await
            .unwrap();
        let taken = leased(&db, &schema, "instances").await;
        match check_backlog(m::KIND_ORCHESTRATION, taken) {
            Backlog::Right => break,
            Backlog::NotCounted => assert!(
                Instant::now() < deadline,
                "the orchestration backlog was not counted in {LIMIT:?} of takes"
            ),
        }
        backend.abandon_orchestration_item(item).await.unwrap();
        // The episodes leased with it.
        backend.worker_stopped().await;
        assert_eq!(leased(&db, &schema, "instances").await, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_backlog_is_what_is_ready_and_not_leased() {
    let _turn = SERIAL.lock().await;
    snapshotter();
    let (backend, schema) = connect(PostgresOptions::default()).await;
    let db = admin().await;
    backend.create_instance(request("x")).await.unwrap();
    let episode = within("an episode", backend.next_orchestration_item())
        .await
        .unwrap();
    backend
        .complete_orchestration_item(episode, schedule(READY as i32))
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        read();
        let item = within("an activity", backend.next_activity_item())
            .await
            .unwrap();
        let taken = leased(&db, &schema, "activities").await;
        match check_backlog(m::KIND_ACTIVITY, taken) {
            Backlog::Right => break,
            Backlog::NotCounted => assert!(
                Instant::now() < deadline,
                "the activity backlog was not counted in {LIMIT:?} of takes"
            ),
        }
        backend.abandon_activity_item(&item).await.unwrap();
        backend.worker_stopped().await;
        assert_eq!(leased(&db, &schema, "activities").await, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_taken_again_after_its_lease_expired_is_a_redelivery() {
    let _turn = SERIAL.lock().await;
    snapshotter();
    // Long enough for the steps between a take and its completion.
    let short_leases = PostgresOptions {
        lease_duration: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        ..PostgresOptions::default()
    };
    let (backend, _schema) = connect(short_leases).await;
    let before = read();
    let redelivered = |kind: &str| read().counter(m::REDELIVERIES, kind);
    let orchestrations = before.counter(m::REDELIVERIES, m::KIND_ORCHESTRATION);
    let activities = before.counter(m::REDELIVERIES, m::KIND_ACTIVITY);
    backend.create_instance(request("x")).await.unwrap();

    // Taken and never completed: handed out again once the lease expires
    // (the next take waits for that).
    let lost = within("an episode", backend.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(
        redelivered(m::KIND_ORCHESTRATION),
        orchestrations,
        "a first delivery counted as a redelivery"
    );
    let episode = within("the episode again", backend.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(episode.instance_id, "x");
    assert_ne!(episode.completion_token, lost.completion_token);
    assert_eq!(
        redelivered(m::KIND_ORCHESTRATION) - orchestrations,
        1,
        "the episode handed out again after its lease expired"
    );
    backend
        .complete_orchestration_item(episode, schedule(1))
        .await
        .unwrap();

    // The same with the activity.
    let lost = within("an activity", backend.next_activity_item())
        .await
        .unwrap();
    assert_eq!(
        redelivered(m::KIND_ACTIVITY),
        activities,
        "a first delivery counted as a redelivery"
    );
    let again = within("the activity again", backend.next_activity_item())
        .await
        .unwrap();
    assert_eq!((again.instance_id.as_str(), again.task_id), ("x", 0));
    assert_ne!(again.completion_token, lost.completion_token);
    assert_eq!(
        redelivered(m::KIND_ACTIVITY) - activities,
        1,
        "the activity handed out again after its lease expired"
    );
    backend
        .complete_activity_item(&again, Ok(Some("done".into())))
        .await
        .unwrap();

    // The episode of the activity's result: delivered for the first time,
    // no redelivery.
    let next = within("the result's episode", backend.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(
        (next.instance_id.as_str(), next.new_events.is_empty()),
        ("x", false)
    );
    assert_eq!(redelivered(m::KIND_ORCHESTRATION) - orchestrations, 1);
    assert_eq!(redelivered(m::KIND_ACTIVITY) - activities, 1);
}

/// The store says what it recorded: an output over the payload limit is
/// recorded as a failure, and the worker reports that (its span and
/// metrics), not what the episode asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_the_store_fails_says_so() {
    // It takes work, which samples the backlog: not while another test
    // reads it.
    let _turn = SERIAL.lock().await;
    let limits = durable_runtime::backend::transition::Limits {
        max_payload_bytes: 100,
        ..Default::default()
    };
    let (backend, _schema) = connect(PostgresOptions {
        limits,
        ..PostgresOptions::default()
    })
    .await;
    backend
        .create_instance(request("too-big"))
        .await
        .expect("create");
    let item = within("an episode", backend.next_orchestration_item())
        .await
        .expect("an episode");
    let result = OrchestratorResult {
        actions: vec![OrchestratorAction {
            id: 0,
            kind: ActionKind::CompleteOrchestration {
                status: durable_runtime::OrchestrationStatus::Completed,
                result: Some(format!("\"{}\"", "x".repeat(1_000))),
                failure: None,
                new_version: None,
                carryover_events: Vec::new(),
            },
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    let recorded = backend
        .complete_orchestration_episode(item, result)
        .await
        .expect("the episode is recorded")
        .expect("PostgreSQL says what it recorded");
    assert_eq!(
        recorded.status,
        durable_runtime::OrchestrationStatus::Failed
    );
    let failure = recorded.failure.expect("the store's failure");
    assert!(failure.message.contains("limit"), "{failure:?}");
}
