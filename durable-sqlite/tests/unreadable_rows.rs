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
        "UPDATE history SET event = json_set(event, '$.type', 'ExecutionRewound')
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
                "\"ExecutionRewound\"",
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
    worker.shutdown().await;

    // Opening the file again gives set-aside instances another chance (the
    // row may have been repaired, or a newer build may read it).
    let again = SqliteBackend::open(&path).unwrap();
    let retried = again.get_instance("bad-inbox", false).await;
    assert!(matches!(retried, Ok(Some(_))), "{retried:?}");
}
