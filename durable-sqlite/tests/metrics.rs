//! The SQLite store's metrics, read from an in-memory recorder: work handed
//! out again after its lease expired, history-cache hits and misses, and
//! the backlog.

use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::metrics as m;
use durable_runtime::{
    ActivityError, Client, OrchestrationStatus, Registry, ScheduleOptions, Worker,
};
use durable_sqlite::{SqliteBackend, SqliteOptions};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

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

/// Counter totals so far: a snapshot drains the recorder's counters, so
/// every reading is added here.
/// Counter totals by name and sorted labels.
type Totals = HashMap<(String, Vec<(String, String)>), u64>;

/// Gauges by name and `kind` label, as the last snapshot read them.
type Gauges = HashMap<(String, String), f64>;

/// Takes a snapshot: the counter totals so far and the gauges set since
/// the previous snapshot (a snapshot resets gauges to zero).
fn reading() -> (Totals, Gauges) {
    static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let map = totals.get_or_insert_with(HashMap::new);
    let mut gauges = Gauges::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<_> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        labels.sort();
        match value {
            DebugValue::Counter(c) => {
                *map.entry((key.name().to_string(), labels)).or_default() += c;
            }
            DebugValue::Gauge(g) => {
                let kind = labels
                    .into_iter()
                    .find(|(k, _)| k == "kind")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                gauges.insert((key.name().to_string(), kind), g.into_inner());
            }
            DebugValue::Histogram(_) => {}
        }
    }
    (map.clone(), gauges)
}

fn totals() -> Totals {
    reading().0
}

/// Held by each test: the gauges are the whole process's, so tests that
/// read them must not run beside others that set them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The total of the counters `name` (with label `kind` if given).
fn counter(name: &str, kind: Option<&str>) -> u64 {
    totals()
        .iter()
        .filter(|((n, labels), _)| {
            n == name && kind.is_none_or(|k| labels.iter().any(|(lk, lv)| lk == "kind" && lv == k))
        })
        .map(|(_, c)| *c)
        .sum()
}

/// Whether gauge `name` with label `kind` was ever set (a snapshot resets
/// gauges to zero but keeps them listed).
fn gauge_seen(name: &str, kind: &str) -> bool {
    reading()
        .1
        .contains_key(&(name.to_string(), kind.to_string()))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {LIMIT:?}"))
}

fn short_leases() -> SqliteOptions {
    SqliteOptions {
        lease_duration: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
        ..SqliteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_taken_again_after_its_lease_expired_is_a_redelivery() {
    let _turn = SERIAL.lock().await;
    snapshotter();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("metrics.db");
    let a = SqliteBackend::open_with(&path, short_leases()).unwrap();
    let b = SqliteBackend::open_with(&path, short_leases()).unwrap();
    let orchestrations = counter(m::REDELIVERIES, Some("orchestration"));
    let activities = counter(m::REDELIVERIES, Some("activity"));
    a.create_instance(CreateInstanceRequest {
        instance_id: "x".into(),
        name: "orch".into(),
        version: None,
        input: None,
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    })
    .await
    .unwrap();
    // `a` takes the episode and never completes it; `b` gets it once the
    // lease expires.
    let _lost = within("an episode", a.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(
        counter(m::REDELIVERIES, Some("orchestration")),
        orchestrations
    );
    let episode = within("the episode again", b.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(
        counter(m::REDELIVERIES, Some("orchestration")) - orchestrations,
        1
    );
    let schedule = OrchestratorResult {
        actions: vec![OrchestratorAction {
            id: 0,
            kind: ActionKind::ScheduleTask {
                name: "work".into(),
                version: None,
                input: Some("1".into()),
                tags: Default::default(),
            },
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    b.complete_orchestration_item(episode, schedule)
        .await
        .unwrap();
    // The same with the activity.
    let _lost = within("an activity", a.next_activity_item()).await.unwrap();
    assert_eq!(counter(m::REDELIVERIES, Some("activity")), activities);
    let again = within("the activity again", b.next_activity_item())
        .await
        .unwrap();
    assert_eq!(counter(m::REDELIVERIES, Some("activity")) - activities, 1);
    b.complete_activity_item(&again, Ok(Some("2".into())))
        .await
        .unwrap();
    // Work delivered for the first time is no redelivery.
    let next = within("the completion's episode", b.next_orchestration_item())
        .await
        .unwrap();
    assert_eq!(
        (next.instance_id.as_str(), next.new_events.is_empty()),
        ("x", false)
    );
    assert_eq!(
        counter(m::REDELIVERIES, Some("orchestration")) - orchestrations,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cache_hits_misses_and_backlog_are_reported() {
    let _turn = SERIAL.lock().await;
    snapshotter();
    let hits = counter(m::HISTORY_CACHE_HITS, None);
    let misses = counter(m::HISTORY_CACHE_MISSES, None);
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::in_memory().unwrap());
    let registry = Registry::new()
        .activity_fn(
            "inc",
            |_c, x: u32| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("three", |ctx, x: u32| async move {
            let mut x = x;
            for _ in 0..3 {
                x = ctx.call_activity_by_name("inc", &x).await?;
            }
            Ok(x)
        });
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("three", &0u32, ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    worker.shutdown().await;
    // Four episodes: the first finds nothing cached (and no history), the
    // next three the history the one before left.
    assert!(
        counter(m::HISTORY_CACHE_MISSES, None) > misses,
        "no history-cache miss counted"
    );
    assert!(
        counter(m::HISTORY_CACHE_HITS, None) - hits >= 3,
        "fewer than 3 history-cache hits counted"
    );
    assert!(gauge_seen(m::BACKLOG, "orchestration"));
    assert!(gauge_seen(m::BACKLOG, "activity"));
}

/// With no worker taking work, the backlog still reads what waits: the
/// backend counts it at its heartbeat (at most once a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_counted_with_no_worker_taking_work() {
    let _turn = SERIAL.lock().await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let backend =
        SqliteBackend::open_with(dir.path().join("b.db"), SqliteOptions::default()).unwrap();
    for i in 0..3 {
        backend
            .create_instance(CreateInstanceRequest {
                instance_id: format!("waiting-{i}"),
                name: "nobody_runs_this".into(),
                version: None,
                input: None,
                scheduled_start: None,
                reuse_policy: IdReusePolicy::default(),
                trace: None,
                tags: Default::default(),
            })
            .await
            .unwrap();
    }
    let key = (m::BACKLOG.to_string(), "orchestration".to_string());
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        // Each snapshot resets the gauge, so a 3 read here was set after
        // the instances were created.
        if reading().1.get(&key) == Some(&3.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orchestration backlog did not read 3 within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
