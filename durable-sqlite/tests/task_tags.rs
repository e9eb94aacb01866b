//! A task's tags (a retried activity call's attempt number) are stored with
//! the queued activity: they survive reopening the file, as after a crash,
//! and a value changed outside durable is read as no tags.

use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::handler::task_tags;
use durable_sqlite::SqliteBackend;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn tags() -> BTreeMap<String, String> {
    [
        (task_tags::ATTEMPT.to_string(), "3".to_string()),
        (task_tags::FIRST_TASK_ID.to_string(), "1".to_string()),
    ]
    .into()
}

/// Creates "tagged" and completes its first episode with a tagged task 5.
async fn schedule_tagged(path: &Path) {
    let b = SqliteBackend::open(path).unwrap();
    b.create_instance(CreateInstanceRequest {
        instance_id: "tagged".into(),
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
    let item = within("the first episode", b.next_orchestration_item())
        .await
        .unwrap();
    let result = OrchestratorResult {
        actions: vec![OrchestratorAction {
            id: 5,
            kind: ActionKind::ScheduleTask {
                name: "charge".into(),
                version: None,
                input: None,
                tags: tags(),
            },
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    b.complete_orchestration_item(item, result).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_survive_reopening_the_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tags.db");
    schedule_tagged(&path).await;
    let b = SqliteBackend::open(&path).unwrap();
    let item = within("the tagged activity", b.next_activity_item())
        .await
        .unwrap();
    assert_eq!(item.tags, tags());
    assert_eq!(item.attempt(), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_changed_outside_durable_are_read_as_none() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bad-tags.db");
    schedule_tagged(&path).await;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(LIMIT).unwrap();
        let changed = conn
            .execute("UPDATE activities SET tags = 'not json'", [])
            .unwrap();
        assert_eq!(changed, 1);
    }
    let b = SqliteBackend::open(&path).unwrap();
    let item = within("the activity", b.next_activity_item())
        .await
        .unwrap();
    assert!(item.tags.is_empty(), "{:?}", item.tags);
    assert_eq!(item.attempt(), (1, 5), "a first attempt of its own task");
}
