//! What the conformance suite does not cover: connecting (unreachable
//! servers, newer schemas, concurrent migrations), push delivery between
//! backends sharing a schema, and two backends (two pools, as two
//! processes would have) sharing the work of one task hub.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{ConnectError, PostgresBackend, PostgresOptions, SCHEMA_VERSION};
use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy, WaitFor};
use durable_runtime::history::{EventKind, OrchestrationStatus};
use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::check_no_duplicates;

/// How long anything that should happen may take before the test fails.
const LIMIT: Duration = Duration::from_secs(20);

/// Idle workers and waiters that would wait this long without a
/// notification: a test that finishes in time was woken by one.
const NO_POLLING: Duration = Duration::from_secs(3600);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {LIMIT:?}"))
}

async fn connect(schema: &str, options: PostgresOptions) -> PostgresBackend {
    let options = PostgresOptions {
        schema: schema.to_string(),
        pool_size: 4,
        ..options
    };
    PostgresBackend::connect_with(TestCluster::shared().url(), options)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"))
}

/// Connects with its own `application_name`, so a test can kill its
/// connections without touching those of tests running beside it.
async fn connect_as(app: &str, schema: &str, options: PostgresOptions) -> PostgresBackend {
    let url = TestCluster::shared().url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let options = PostgresOptions {
        schema: schema.to_string(),
        pool_size: 4,
        ..options
    };
    PostgresBackend::connect_with(&format!("{url}{sep}application_name={app}"), options)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"))
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

fn no_polling() -> PostgresOptions {
    PostgresOptions {
        poll_interval: NO_POLLING,
        ..PostgresOptions::default()
    }
}

#[tokio::test]
async fn an_unreachable_server_is_reported_with_its_host_and_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port failed: {e}"));
    let url = format!("postgres://durable@127.0.0.1:{port}/durable");
    let e = PostgresBackend::connect(&url)
        .await
        .expect_err("connecting to a port nobody listens on succeeded");
    assert!(
        matches!(e, ConnectError::Unreachable { port: p, .. } if p == port),
        "{e:?}"
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("127.0.0.1:{port}")) && shown.contains("is the server running"),
        "the error must name the host and port and say what to check: {shown}"
    );
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_refused_before_connecting() {
    let e = PostgresBackend::connect("postgres://a@b:notaport/x")
        .await
        .expect_err("a malformed URL was accepted");
    assert!(matches!(e, ConnectError::InvalidUrl(_)), "{e:?}");
    let options = PostgresOptions {
        schema: "Robert'); DROP TABLE".into(),
        ..PostgresOptions::default()
    };
    let e = PostgresBackend::connect_with(TestCluster::shared().url(), options)
        .await
        .expect_err("a schema name that needs quoting was accepted");
    assert!(e.to_string().contains("not allowed"), "{e}");
    let options = PostgresOptions {
        tls_root_certificates: Some("/nonexistent/ca.pem".into()),
        ..PostgresOptions::default()
    };
    let url = format!("{}?sslmode=require", TestCluster::shared().url());
    let e = PostgresBackend::connect_with(&url, options)
        .await
        .expect_err("a missing root certificate file was accepted");
    assert!(matches!(e, ConnectError::InvalidOption(_)), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let schema = TestCluster::shared().fresh_schema();
    drop(connect(&schema, PostgresOptions::default()).await);
    admin()
        .await
        .batch_execute(&format!("UPDATE {schema}.schema_version SET version = 99"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options = PostgresOptions {
        schema: schema.clone(),
        ..PostgresOptions::default()
    };
    let e = PostgresBackend::connect_with(TestCluster::shared().url(), options)
        .await
        .expect_err("a newer schema was accepted");
    assert!(
        matches!(&e, ConnectError::NewerSchema { found: 99, supported, .. } if *supported == SCHEMA_VERSION),
        "{e:?}"
    );
    assert!(e.to_string().contains("upgrade durable"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_connecting_at_once_migrate_once() {
    let schema = TestCluster::shared().fresh_schema();
    let connects = (0..6).map(|_| {
        let schema = schema.clone();
        tokio::spawn(async move { connect(&schema, PostgresOptions::default()).await })
    });
    let backends = within(
        "six concurrent connects",
        futures::future::join_all(connects),
    )
    .await;
    assert_eq!(backends.len(), 6);
    for b in backends {
        b.unwrap_or_else(|e| panic!("a concurrent connect panicked: {e}"));
    }
    let rows = admin()
        .await
        .query(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![SCHEMA_VERSION]);
}

/// A client waiting on one backend is woken by a change made through
/// another (another process, as far as delivery goes): by `NOTIFY`, since
/// neither polls within the test's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_change_made_through_another_backend() {
    let schema = TestCluster::shared().fresh_schema();
    let a = connect(&schema, no_polling()).await;
    let b = connect(&schema, no_polling()).await;
    a.create_instance(request("w")).await.unwrap();
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.wait_for_instance("w", WaitFor::Start, NO_POLLING).await })
    };
    parked(&a, 1).await;
    // Suspending a pending instance sets its status at once.
    b.suspend("w", None).await.unwrap();
    let meta = within("the wake-up of a waiter on another backend", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, OrchestrationStatus::Suspended);
}

/// Waits until `n` waiters of `b` have read their instance and wait to be
/// woken, so what the test does next can only reach them by a wake-up.
async fn parked(b: &PostgresBackend, n: usize) {
    within("the waiter's first read", async {
        while b.parked_waiters() < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// An idle worker on one backend runs work created through another at
/// once: notified, not polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_work_created_through_another_backend() {
    let schema = TestCluster::shared().fresh_schema();
    let worker_side: Arc<dyn Backend> = Arc::new(connect(&schema, no_polling()).await);
    let client_side: Arc<dyn Backend> = Arc::new(connect(&schema, no_polling()).await);
    let registry = Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("one", |ctx, x: i64| async move {
            let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
            Ok(y)
        });
    let worker = Worker::new(worker_side, registry).start().unwrap();
    let client = Client::new(client_side);
    let id = client
        .schedule_by_name("one", &41i64, ScheduleOptions::default())
        .await
        .unwrap();
    let state = within(
        "an orchestration created through another backend",
        client.wait_for_completion(&id, LIMIT),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state.output::<i64>().unwrap(), 42);
    worker.shutdown().await;
}

/// The listening connection is opened again when it drops, and what was
/// sent meanwhile is looked for: a waiter is still woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listening_connection_comes_back_after_it_is_killed() {
    let schema = TestCluster::shared().fresh_schema();
    let a = connect(&schema, no_polling()).await;
    let b = connect(&schema, no_polling()).await;
    a.create_instance(request("l")).await.unwrap();
    let admin = admin().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query = $1) t",
            &[&format!("LISTEN durable_{schema}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 2, "both backends' listening connections are killed");
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.wait_for_instance("l", WaitFor::Start, NO_POLLING).await })
    };
    parked(&a, 1).await;
    b.suspend("l", None).await.unwrap();
    let meta = within("the wake-up after the listener was killed", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.status, OrchestrationStatus::Suspended);
    // Both listen again.
    within("both backends listening again", async {
        loop {
            let listening: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                    &[&format!("LISTEN durable_{schema}")],
                )
                .await
                .unwrap()
                .get(0);
            if listening == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Two backends on one schema, each with its own pool and worker, as two
/// processes would be: 60 orchestrations (chains, fan-outs, timers,
/// sub-orchestrations) each complete once with the right output, both
/// workers take part, and no history holds a duplicated event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backends_share_the_work_and_apply_each_episode_once() {
    let schema = TestCluster::shared().fresh_schema();
    let options = || PostgresOptions {
        lease_duration: Duration::from_secs(3),
        ..PostgresOptions::default()
    };
    let registry = |ran: Arc<AtomicUsize>| {
        Registry::new()
            .activity_fn("inc", move |_c, x: i64| {
                let ran = ran.clone();
                async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ActivityError>(x + 1)
                }
            })
            .orchestrator_fn("child", |ctx, x: i64| async move {
                ctx.create_timer(Duration::from_millis(10)).await;
                let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
                Ok(y)
            })
            .orchestrator_fn("mix", |ctx, x: i64| async move {
                let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
                let fan = (0..10).map(|i| ctx.call_activity_by_name::<i64>("inc", &(a + i)));
                let sum: i64 = ctx.when_all(fan).await?.into_iter().sum();
                let c: i64 = ctx
                    .call_sub_orchestrator_by_name("child", None, &sum, None)
                    .await?;
                Ok(c)
            })
    };
    let ran = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut workers = Vec::new();
    for r in &ran {
        let b: Arc<dyn Backend> = Arc::new(connect(&schema, options()).await);
        workers.push(Worker::new(b, registry(r.clone())).start().unwrap());
    }
    let client_backend = Arc::new(connect(&schema, options()).await);
    let client = Client::new(client_backend.clone());
    let mut ids = Vec::new();
    for i in 0..60i64 {
        let id = client
            .schedule_by_name("mix", &i, ScheduleOptions::default())
            .await
            .unwrap();
        ids.push((id, i));
    }
    for (id, i) in &ids {
        let state = within("an orchestration", client.wait_for_completion(id, LIMIT))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        // a = i + 1; the fan-out adds a+1 .. a+10; the child adds one.
        let a = i + 1;
        let expected = (0..10).map(|k| a + k + 1).sum::<i64>() + 1;
        assert_eq!(state.output::<i64>().unwrap(), expected, "{id}");
    }
    for w in workers {
        w.shutdown().await;
    }
    let mut children = Vec::new();
    for (id, _) in &ids {
        let history = client_backend.get_history(id).await.unwrap();
        check_no_duplicates(id, &history);
        for e in &history {
            if let EventKind::SubOrchestrationInstanceCreated { instance_id, .. } = &e.kind {
                children.push(instance_id.clone());
            }
        }
    }
    assert_eq!(children.len(), ids.len(), "one child per orchestration");
    for child in &children {
        check_no_duplicates(child, &client_backend.get_history(child).await.unwrap());
    }
    let counts: Vec<usize> = ran.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    let total: usize = counts.iter().sum();
    assert!(
        total >= 60 * 12,
        "every activity runs at least once: {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c > 0),
        "both workers must take part: activities run per worker {counts:?}"
    );
    println!("activities run per worker: {counts:?} (of {})", 60 * 12);
}

/// Every connection of the backends is killed three times mid-run (as a
/// restarting server or a dropping network would): the pools connect
/// again, failed operations are retried or their work delivered again,
/// and every orchestration completes once with its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_survives_connections_killed_mid_run() {
    let schema = TestCluster::shared().fresh_schema();
    let options = || PostgresOptions {
        lease_duration: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
        ..PostgresOptions::default()
    };
    let registry = Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("chain", |ctx, x: i64| async move {
            let mut v = x;
            for _ in 0..5 {
                v = ctx.call_activity_by_name("inc", &v).await?;
            }
            Ok(v)
        });
    // Named after the schema: the connections killed are this test's only.
    let worker_side: Arc<dyn Backend> = Arc::new(connect_as(&schema, &schema, options()).await);
    let worker = Worker::new(worker_side, registry).start().unwrap();
    let client_backend = Arc::new(connect_as(&schema, &schema, options()).await);
    let client = Client::new(client_backend.clone());
    let mut ids = Vec::new();
    for i in 0..40i64 {
        let id = client
            .schedule_by_name("chain", &i, ScheduleOptions::default())
            .await
            .unwrap();
        ids.push((id, i));
    }
    let admin = admin().await;
    let mut killed = 0i64;
    for (n, (id, i)) in ids.iter().enumerate() {
        if [0, 10, 25].contains(&n) {
            killed += admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1) t",
                    &[&schema],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        // A wait cut off by a killed connection is simply asked again.
        let state = within(
            "an orchestration after its connections were killed",
            async {
                loop {
                    match client.wait_for_completion(id, LIMIT).await {
                        Ok(state) => break state,
                        Err(e) if e.to_string().contains("connection") => continue,
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
            },
        )
        .await;
        assert_eq!(state.output::<i64>().unwrap(), i + 5, "{id}");
        check_no_duplicates(id, &client_backend.get_history(id).await.unwrap());
    }
    assert!(killed >= 3, "connections were killed: {killed}");
    println!("killed {killed} connections in three rounds; all 40 orchestrations completed");
    worker.shutdown().await;
}

/// An instance one of whose rows cannot be read (here: an event of a kind
/// this build does not know) is set aside: the others still run, clients
/// asking about it are told why, a new connection retries it, and purging
/// it by id deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_sets_its_instance_aside_and_the_rest_runs() {
    let schema = TestCluster::shared().fresh_schema();
    let b = connect(&schema, PostgresOptions::default()).await;
    b.create_instance(request("bad")).await.unwrap();
    admin()
        .await
        .batch_execute(&format!(
            "UPDATE {schema}.inbox SET event = '{{\"type\":\"FromTheFuture\"}}'
             WHERE instance_id = 'bad'"
        ))
        .await
        .unwrap();
    b.create_instance(request("good")).await.unwrap();
    let item = within(
        "the readable instance's episode",
        b.next_orchestration_item(),
    )
    .await
    .unwrap();
    assert_eq!(
        item.instance_id, "good",
        "the unreadable instance was handed out"
    );
    let e = b
        .get_instance("bad", false)
        .await
        .expect_err("a set-aside instance was read");
    assert!(e.to_string().contains("set aside"), "{e}");
    let e = b
        .terminate("bad", None, false)
        .await
        .expect_err("a set-aside instance was terminated");
    assert!(e.to_string().contains("set aside"), "{e}");
    // Connecting again retries it (and it is still unreadable).
    let again = connect(&schema, PostgresOptions::default()).await;
    let meta = again.get_instance("bad", false).await.unwrap();
    assert_eq!(meta.map(|m| m.status), Some(OrchestrationStatus::Pending));
    // The next claim meets it first (it waited longest), sets it aside
    // again and hands out the instance behind it.
    again.create_instance(request("other")).await.unwrap();
    let item = within(
        "the next instance's episode",
        again.next_orchestration_item(),
    )
    .await
    .unwrap();
    assert_eq!(
        item.instance_id, "other",
        "the unreadable instance was handed out"
    );
    assert!(
        again.get_instance("bad", false).await.is_err(),
        "it was not set aside again"
    );
    assert_eq!(
        again
            .purge(
                durable_runtime::backend::PurgeTarget::Instance("bad".into()),
                false
            )
            .await
            .unwrap(),
        1
    );
    assert!(again.get_instance("bad", false).await.unwrap().is_none());
}

/// An activity's result committed while its instance's episode is being
/// applied is still delivered. The result's statement is made to start
/// (and read the instance as leased) before the episode commits, and to
/// commit after it: the episode cannot see the result, so the result's own
/// statement must bring the instance's `ready_at` forward once the lease
/// is released, or no worker ever looks at the instance again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_result_committed_during_an_episode_is_delivered() {
    use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
    let schema = TestCluster::shared().fresh_schema();
    let options = PostgresOptions {
        poll_interval: Duration::from_millis(50),
        ..PostgresOptions::default()
    };
    let b = Arc::new(connect(&schema, options).await);
    let episode_result = |actions: Vec<ActionKind>| OrchestratorResult {
        actions: actions
            .into_iter()
            .enumerate()
            .map(|(id, kind)| OrchestratorAction {
                id: id as i32,
                kind,
                trace: None,
            })
            .collect(),
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    b.create_instance(request("x")).await.unwrap();
    let start = within("the first episode", b.next_orchestration_item())
        .await
        .unwrap();
    let task = ActionKind::ScheduleTask {
        name: "act".into(),
        version: None,
        input: None,
        tags: Default::default(),
    };
    b.complete_orchestration_item(start, episode_result(vec![task]))
        .await
        .unwrap();
    let activity = within("the activity", b.next_activity_item())
        .await
        .unwrap();
    // A second episode, leased while the activity runs.
    b.raise_event("x", "e", None).await.unwrap();
    let second = within("the event's episode", b.next_orchestration_item())
        .await
        .unwrap();
    // Hold the activity row, so the result's statement waits on it after
    // it has read the instance.
    let holder = admin().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .batch_execute(&format!(
            "SELECT 1 FROM {schema}.activities WHERE instance_id = 'x' FOR UPDATE"
        ))
        .await
        .unwrap();
    let completing = tokio::spawn({
        let b = b.clone();
        async move {
            b.complete_activity_item(&activity, Ok(Some("1".into())))
                .await
        }
    });
    let watcher = admin().await;
    within("the result's statement to wait for the held row", async {
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND query LIKE '%DELETE FROM activities%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    b.complete_orchestration_item(second, episode_result(Vec::new()))
        .await
        .unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    within("the activity's completion", completing)
        .await
        .unwrap()
        .unwrap();
    let third = within(
        "the episode with the activity's result (it was stranded)",
        b.next_orchestration_item(),
    )
    .await
    .unwrap();
    assert!(
        third
            .new_events
            .iter()
            .any(|e| matches!(e.kind, EventKind::TaskCompleted { .. })),
        "the episode did not carry the result: {:?}",
        third.new_events
    );
}
