//! A row this build cannot read (written by a newer durable, or changed
//! outside durable) sets its one instance aside, says why, and stops
//! nothing else.

use durable_runtime::actions::OrchestratorResult;
use durable_runtime::backend::{
    Backend, CreateInstanceRequest, IdReusePolicy, InstanceQuery, PurgeTarget,
};
use durable_runtime::{Client, Registry, Worker};
use durable_sqlite::SqliteBackend;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn request(id: &str, input: i64) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: "orch".into(),
        version: None,
        input: Some(input.to_string()),
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Changes one row behind durable's back, as another program (or a newer
/// durable) would.
fn corrupt(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    conn.busy_timeout(LIMIT).unwrap();
    let changed = conn
        .execute(sql, [])
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(changed, 1, "{sql} changed {changed} rows");
}

/// Text that is not UTF-8.
const NOT_UTF8: &str = "CAST(x'7bff7d' AS TEXT)";

/// Asserts that `e` names the instance, the row and what is wrong.
fn assert_names(e: &impl std::fmt::Display, id: &str, words: &[&str]) {
    let e = e.to_string();
    for w in [
        &format!("instance \"{id}\""),
        "other instances are not affected",
    ]
    .into_iter()
    .chain(words.iter().copied())
    {
        assert!(e.contains(w), "the error for {id} does not say {w:?}: {e}");
    }
    assert!(!e.contains("timed out"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_sets_its_instance_aside_and_the_others_complete() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("unreadable.db");
    // Two instances run their first episode, so they have a history.
    {
        let b = SqliteBackend::open(&path).unwrap();
        for id in ["newer-event", "bad-history"] {
            b.create_instance(request(id, 0)).await.unwrap();
        }
        for _ in 0..2 {
            let item = within("a first episode", b.next_orchestration_item())
                .await
                .unwrap();
            let waits = OrchestratorResult {
                actions: Vec::new(),
                custom_status: None,
                cancelled_timers: Vec::new(),
            };
            b.complete_orchestration_item(item, waits).await.unwrap();
        }
        for id in ["bad-inbox", "bad-instance"] {
            b.create_instance(request(id, 0)).await.unwrap();
        }
    }
    corrupt(
        &path,
        "UPDATE history SET event = json_set(event, '$.type', 'HistoryState')
         WHERE instance_id = 'newer-event' AND seq = 1",
    );
    corrupt(
        &path,
        &format!(
            "UPDATE history SET event = {NOT_UTF8} WHERE instance_id = 'bad-history' AND seq = 0"
        ),
    );
    corrupt(
        &path,
        &format!("UPDATE inbox SET event = {NOT_UTF8} WHERE instance_id = 'bad-inbox'"),
    );
    corrupt(
        &path,
        &format!("UPDATE instances SET meta = {NOT_UTF8} WHERE instance_id = 'bad-instance'"),
    );

    let b = Arc::new(SqliteBackend::open(&path).unwrap());
    for id in ["newer-event", "bad-history"] {
        b.raise_event(id, "go", None).await.unwrap();
    }
    // Queued behind the damaged ones.
    let healthy: Vec<String> = (0..5).map(|i| format!("ok{i}")).collect();
    for (i, id) in healthy.iter().enumerate() {
        b.create_instance(request(id, i as i64)).await.unwrap();
    }
    let registry = Registry::new().orchestrator_fn("orch", |_ctx, x: i64| async move { Ok(x) });
    let worker = Worker::new(b.clone(), registry).start().unwrap();
    let client = Client::new(b.clone());

    for (i, id) in healthy.iter().enumerate() {
        let state = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("the healthy instance {id} did not complete: {e}"));
        assert_eq!(state.output::<i64>().unwrap(), i as i64, "{id}");
    }

    let cases: [(&str, &[&str]); 4] = [
        (
            "newer-event",
            &[
                "history row 1",
                "\"HistoryState\"",
                "newer version of durable",
                "upgrade durable",
            ],
        ),
        (
            "bad-history",
            &["history row 0", "not UTF-8 text", "backup"],
        ),
        ("bad-inbox", &["inbox row", "not UTF-8 text", "backup"]),
        ("bad-instance", &["instance row", "meta", "not UTF-8 text"]),
    ];
    for (id, words) in cases {
        let waited = within(
            &format!("the wait for {id}"),
            client.wait_for_completion(id, LIMIT),
        )
        .await
        .map(|s| s.status());
        let e = waited.expect_err(&format!("the wait for {id} succeeded"));
        assert_names(&e, id, words);
        let e = b
            .get_instance(id, false)
            .await
            .expect_err(&format!("get_instance({id}) succeeded"));
        assert_names(&e, id, words);
    }
    for (id, words) in &cases[..2] {
        let e = b.get_history(id).await.expect_err(id);
        assert_names(&e, id, words);
    }
    // Its history (empty: it never started) reads fine.
    let history = b.get_history("bad-inbox").await;
    assert!(history.is_ok(), "{history:?}");

    // Queries and purges over many instances skip an unreadable one.
    corrupt(
        &path,
        &format!("UPDATE instances SET meta = {NOT_UTF8} WHERE instance_id = 'ok0'"),
    );
    corrupt(
        &path,
        &format!("UPDATE history SET event = {NOT_UTF8} WHERE instance_id = 'ok1' AND seq = 0"),
    );
    let page = b
        .query_instances(InstanceQuery {
            fetch_payloads: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = page
        .instances
        .iter()
        .map(|m| m.instance_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "bad-history",
            "bad-inbox",
            "newer-event",
            "ok1",
            "ok2",
            "ok3",
            "ok4"
        ]
    );
    let filter = PurgeTarget::Filter {
        created_from: None,
        created_to: None,
        statuses: Vec::new(),
    };
    let purged = b.purge(filter, true).await.unwrap();
    assert_eq!(purged, 3, "ok2, ok3 and ok4 are purged");
    let e = b
        .purge(PurgeTarget::Instance("ok1".into()), true)
        .await
        .expect_err("purging ok1 recursively succeeded");
    assert_names(&e, "ok1", &["history row 0"]);

    // A set-aside instance cannot be terminated (only an episode would
    // apply it), and says how to delete it instead: purge it by id, which
    // works whatever its status and whichever of its rows is unreadable.
    for id in ["newer-event", "bad-history"] {
        let e = client
            .terminate(id, &"stop")
            .await
            .expect_err(&format!("terminating the set-aside {id} succeeded"));
        assert_names(&e, id, &["cannot be terminated", "purge it by id"]);
    }
    for (id, recursive) in [("newer-event", true), ("bad-instance", false)] {
        let purged = b
            .purge(PurgeTarget::Instance(id.into()), recursive)
            .await
            .unwrap_or_else(|e| panic!("purging the set-aside {id} failed: {e}"));
        assert_eq!(purged, 1, "{id}");
        let gone = b.get_instance(id, false).await;
        assert!(matches!(gone, Ok(None)), "{id} is still there: {gone:?}");
    }
    worker.shutdown().await;

    // Opening the file again gives set-aside instances another chance (the
    // row may have been repaired, or a newer build may read it).
    let again = SqliteBackend::open(&path).unwrap();
    let retried = again.get_instance("bad-inbox", false).await;
    assert!(matches!(retried, Ok(Some(_))), "{retried:?}");
}

/// An activity row that cannot be read is set aside (logged with its
/// instance), the activities queued behind it run, and once the row is
/// repaired, opening the file again runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_activity_row_is_set_aside_and_the_others_run() {
    use durable_runtime::actions::{ActionKind, OrchestratorAction};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("unreadable-activity.db");
    let calls = |id: &str, x: i64| CreateInstanceRequest {
        name: "calls".into(),
        ..request(id, x)
    };
    // The first episode of "bad-activity" schedules its activity; a worker
    // has not run it yet.
    {
        let b = SqliteBackend::open(&path).unwrap();
        b.create_instance(calls("bad-activity", 7)).await.unwrap();
        let item = within("the first episode", b.next_orchestration_item())
            .await
            .unwrap();
        let schedule = OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "double".into(),
                    version: None,
                    input: Some("7".into()),
                    tags: Default::default(),
                },
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        };
        b.complete_orchestration_item(item, schedule).await.unwrap();
    }
    corrupt(
        &path,
        &format!("UPDATE activities SET input = {NOT_UTF8} WHERE instance_id = 'bad-activity'"),
    );

    let registry = || {
        Registry::new()
            .orchestrator_fn("calls", |ctx, x: i64| async move {
                Ok(ctx.call_activity_by_name::<i64>("double", &x).await?)
            })
            .activity_fn("double", |_ctx, x: i64| async move { Ok(x * 2) })
    };
    let b = Arc::new(SqliteBackend::open(&path).unwrap());
    let healthy: Vec<String> = (0..5).map(|i| format!("ok{i}")).collect();
    for (i, id) in healthy.iter().enumerate() {
        b.create_instance(calls(id, i as i64)).await.unwrap();
    }
    let worker = Worker::new(b.clone(), registry()).start().unwrap();
    let client = Client::new(b.clone());
    for (i, id) in healthy.iter().enumerate() {
        let state = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| {
                panic!("{id}, whose activity is queued behind an unreadable one, did not complete: {e}")
            });
        assert_eq!(state.output::<i64>().unwrap(), 2 * i as i64, "{id}");
    }
    worker.shutdown().await;
    drop(client);
    drop(b);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let token: Option<i64> = conn
        .query_row(
            "SELECT lease_token FROM activities WHERE instance_id = 'bad-activity'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(token, Some(-1), "the unreadable activity was not set aside");
    drop(conn);

    // Repaired, and opened again: it runs.
    corrupt(
        &path,
        "UPDATE activities SET input = '7' WHERE instance_id = 'bad-activity'",
    );
    let b = Arc::new(SqliteBackend::open(&path).unwrap());
    let worker = Worker::new(b.clone(), registry()).start().unwrap();
    let state = Client::new(b.clone())
        .wait_for_completion("bad-activity", LIMIT)
        .await
        .unwrap_or_else(|e| panic!("the repaired activity did not run after reopening: {e}"));
    assert_eq!(state.output::<i64>().unwrap(), 14);
    worker.shutdown().await;
}

/// A process waiting on an instance learns at once when another process
/// sets it aside: the wait ends with the reason, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_learns_when_another_process_sets_its_instance_aside() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("set-aside-elsewhere.db");
    let waiting = Arc::new(SqliteBackend::open(&path).unwrap());
    waiting
        .create_instance(request("watched", 0))
        .await
        .unwrap();
    let item = within("the first episode", waiting.next_orchestration_item())
        .await
        .unwrap();
    let waits = OrchestratorResult {
        actions: Vec::new(),
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    waiting
        .complete_orchestration_item(item, waits)
        .await
        .unwrap();
    let client = Client::new(waiting.clone());
    let wait = tokio::spawn(async move {
        client
            .wait_for_completion("watched", Duration::from_secs(60))
            .await
    });
    corrupt(
        &path,
        &format!("UPDATE history SET event = {NOT_UTF8} WHERE instance_id = 'watched' AND seq = 0"),
    );
    // Another process gets the instance's next episode and sets it aside.
    let other = Arc::new(SqliteBackend::open(&path).unwrap());
    other.raise_event("watched", "go", None).await.unwrap();
    let registry = Registry::new().orchestrator_fn("orch", |_ctx, x: i64| async move { Ok(x) });
    let worker = Worker::new(other.clone(), registry).start().unwrap();
    let waited = within("the wait on the set-aside instance", wait)
        .await
        .unwrap()
        .map(|s| s.status());
    let e = waited.expect_err("the wait on the set-aside instance succeeded");
    assert_names(&e, "watched", &["history row 0", "not UTF-8 text"]);
    worker.shutdown().await;
}

/// A full page followed only by unreadable rows is the last page: no
/// continuation token that leads to an empty page.
#[tokio::test]
async fn a_full_page_followed_by_unreadable_rows_is_the_last() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("pages.db");
    let b = SqliteBackend::open(&path).unwrap();
    for id in ["a", "b", "c", "d"] {
        b.create_instance(request(id, 0)).await.unwrap();
    }
    for id in ["c", "d"] {
        corrupt(
            &path,
            &format!("UPDATE instances SET meta = {NOT_UTF8} WHERE instance_id = '{id}'"),
        );
    }
    let page = b
        .query_instances(InstanceQuery {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page
        .instances
        .iter()
        .map(|m| m.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(
        page.continuation_token, None,
        "a token was given though only unreadable rows follow"
    );
}
