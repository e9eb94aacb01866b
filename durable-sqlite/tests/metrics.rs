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

fn totals() -> Totals {
    static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let map = totals.get_or_insert_with(HashMap::new);
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        if let DebugValue::Counter(c) = value {
            let key = key.key();
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            *map.entry((key.name().to_string(), labels)).or_default() += c;
        }
    }
    map.clone()
}

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
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, _, _, v)| {
            let key = key.key();
            key.name() == name
                && key.labels().any(|l| l.key() == "kind" && l.value() == kind)
                && matches!(v, DebugValue::Gauge(_))
        })
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
