//! Edge cases where the SQLite backend must behave like the in-memory one.

use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy, InstanceQuery};
use durable_runtime::Client;
use durable_sqlite::{SqliteBackend, SqliteOptions};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let p = d.path().join("edge.db");
    (d, p)
}

fn request(id: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: "orch".into(),
        version: None,
        input: Some("0".into()),
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

fn result(kind: ActionKind, id: i32) -> OrchestratorResult {
    OrchestratorResult {
        actions: vec![OrchestratorAction {
            id,
            kind,
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_for_the_old_execution_is_dropped_on_continue_as_new() {
    let (_d, path) = db();
    let b = SqliteBackend::open(&path).unwrap();
    b.create_instance(request("i")).await.unwrap();
    let item = within("first episode", b.next_orchestration_item())
        .await
        .unwrap();
    let task = ActionKind::ScheduleTask {
        name: "a".into(),
        version: None,
        input: None,
        tags: Default::default(),
    };
    b.complete_orchestration_item(item, result(task, 0))
        .await
        .unwrap();
    let activity = within("activity", b.next_activity_item()).await.unwrap();
    b.raise_event("i", "restart", None).await.unwrap();
    let item = within("second episode", b.next_orchestration_item())
        .await
        .unwrap();
    // The old execution's activity finishes while the restarting episode runs.
    b.complete_activity_item(&activity, Ok(Some("\"old\"".into())))
        .await
        .unwrap();
    let restart = ActionKind::continued_as_new(Some("1".into()), Vec::new());
    b.complete_orchestration_item(item, result(restart, 1))
        .await
        .unwrap();
    let item = within(
        "the new execution's first episode",
        b.next_orchestration_item(),
    )
    .await
    .unwrap();
    let kinds: Vec<&str> = item.new_events.iter().map(|e| e.kind.type_name()).collect();
    assert_eq!(
        kinds,
        ["OrchestratorStarted", "ExecutionStarted"],
        "stale result delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_before_a_delayed_start_waits_for_the_start() {
    let (_d, path) = db();
    let b = Arc::new(SqliteBackend::open(&path).unwrap());
    let start = chrono::Utc::now() + chrono::Duration::milliseconds(400);
    b.create_instance(CreateInstanceRequest {
        scheduled_start: Some(start),
        ..request("i")
    })
    .await
    .unwrap();
    b.raise_event("i", "early", Some("1".into())).await.unwrap();
    let item = within("the first episode", b.next_orchestration_item())
        .await
        .unwrap();
    assert!(
        chrono::Utc::now() >= start,
        "an episode ran before the start time"
    );
    let kinds: Vec<&str> = item.new_events.iter().map(|e| e.kind.type_name()).collect();
    assert!(
        kinds.contains(&"ExecutionStarted") && kinds.contains(&"EventRaised"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_timeouts_and_page_sizes_are_not_errors() {
    let (_d, path) = db();
    let b = Arc::new(SqliteBackend::open(&path).unwrap());
    for i in 0..3 {
        b.create_instance(request(&format!("q{i}"))).await.unwrap();
    }
    let page = b
        .query_instances(InstanceQuery {
            page_size: usize::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.instances.len(), 3);
    b.terminate("q0", None, false).await.unwrap();
    let client = Client::new(b.clone());
    // Nobody runs the terminate, so the wait must still be pending, not panicked.
    let wait = tokio::spawn(async move {
        client
            .wait_for_completion("q0", Duration::MAX)
            .await
            .map(|_| ())
    });
    let outcome = tokio::time::timeout(Duration::from_millis(200), wait).await;
    assert!(outcome.is_err(), "the wait ended: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_gives_prefetched_work_back_at_once() {
    let (_d, path) = db();
    let options = SqliteOptions {
        poll_interval: Duration::from_millis(20),
        ..SqliteOptions::default()
    };
    let a = SqliteBackend::open_with(&path, options.clone()).unwrap();
    let b = SqliteBackend::open_with(&path, options).unwrap();
    for i in 0..5 {
        a.create_instance(request(&format!("p{i}"))).await.unwrap();
    }
    // `a` leases one item and prefetches the rest; its worker then stops.
    let item = within("an item", a.next_orchestration_item())
        .await
        .unwrap();
    a.abandon_orchestration_item(item).await.unwrap();
    a.worker_stopped().await;
    // Another process gets all five well before the 60 s leases expire.
    let mut got = std::collections::HashSet::new();
    while got.len() < 5 {
        let item = within("the prefetched items", b.next_orchestration_item())
            .await
            .unwrap();
        got.insert(item.instance_id.clone());
        b.abandon_orchestration_item(item).await.unwrap();
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_with_a_nul_character_matches_like_the_memory_backend() {
    let (_d, path) = db();
    let b = SqliteBackend::open(&path).unwrap();
    let memory = durable_runtime::backend::memory::MemoryBackend::new();
    let ids = [
        "a",
        "a\0",
        "a\0b",
        "a\0\0",
        "a\u{1}",
        "ab",
        "b",
        "\0",
        "a\u{10FFFF}",
        "a\u{10FFFF}z",
    ];
    for id in ids {
        b.create_instance(request(id)).await.unwrap();
        memory.create_instance(request(id)).await.unwrap();
    }
    for prefix in ["a\0", "\0", "a", "a\u{10FFFF}", "\u{10FFFF}", "", "a\0b"] {
        let query = || InstanceQuery {
            instance_id_prefix: Some(prefix.to_string()),
            ..Default::default()
        };
        let found = |page: durable_runtime::backend::QueryPage| -> Vec<String> {
            let mut ids: Vec<String> = page.instances.into_iter().map(|m| m.instance_id).collect();
            ids.sort();
            ids
        };
        let sqlite = found(b.query_instances(query()).await.unwrap());
        let expected = found(memory.query_instances(query()).await.unwrap());
        assert!(!expected.is_empty() || prefix == "\u{10FFFF}");
        assert_eq!(sqlite, expected, "prefix {prefix:?}");
    }
}

/// The timer ids of the `TimerFired` rows in an instance's inbox, read
/// from the file.
fn queued_timers(path: &std::path::Path, instance_id: &str) -> Vec<i32> {
    let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut stmt = conn
        .prepare("SELECT event FROM inbox WHERE instance_id = ?1 ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([instance_id], |r| r.get::<_, String>(0))
        .unwrap();
    let mut ids = Vec::new();
    for r in rows {
        let event: durable_runtime::HistoryEvent = serde_json::from_str(&r.unwrap()).unwrap();
        if let durable_runtime::history::EventKind::TimerFired { timer_id, .. } = event.kind {
            ids.push(timer_id);
        }
    }
    ids
}

/// Runs an instance to where it has two timers queued, #0 (in a day) and
/// #1 (in two days), and an event starts a second episode, which it
/// returns.
async fn two_pending_timers(
    b: &SqliteBackend,
    path: &std::path::Path,
) -> durable_runtime::backend::OrchestrationWorkItem {
    b.create_instance(request("i")).await.unwrap();
    let item = within("first episode", b.next_orchestration_item())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let timer = |id, days| OrchestratorAction {
        id,
        kind: ActionKind::CreateTimer {
            fire_at: now + chrono::Duration::days(days),
        },
        trace: None,
    };
    let episode = OrchestratorResult {
        actions: vec![timer(0, 1), timer(1, 2)],
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    b.complete_orchestration_item(item, episode).await.unwrap();
    assert_eq!(queued_timers(path, "i"), [0, 1]);
    b.raise_event("i", "go", None).await.unwrap();
    within("second episode", b.next_orchestration_item())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_timer_is_deleted_with_its_episode() {
    let (_d, path) = db();
    let b = SqliteBackend::open(&path).unwrap();
    let item = two_pending_timers(&b, &path).await;
    let episode = OrchestratorResult {
        cancelled_timers: vec![0],
        ..OrchestratorResult::default()
    };
    b.complete_orchestration_item(item, episode).await.unwrap();
    assert_eq!(queued_timers(&path, "i"), [1], "only timer #1 is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_that_ends_or_continues_as_new_drops_its_timers() {
    for ending in [
        ActionKind::completed(None),
        ActionKind::continued_as_new(None, Vec::new()),
    ] {
        let (_d, path) = db();
        let b = SqliteBackend::open(&path).unwrap();
        let item = two_pending_timers(&b, &path).await;
        b.complete_orchestration_item(item, result(ending.clone(), 2))
            .await
            .unwrap();
        assert_eq!(
            queued_timers(&path, "i"),
            Vec::<i32>::new(),
            "timers left after {}",
            ending.describe()
        );
    }
}
