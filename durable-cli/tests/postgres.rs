//! The `durable` binary against PostgreSQL: a throwaway server (or the one
//! `DURABLE_TEST_POSTGRES_URL` names), a schema of its own, and a worker
//! in the test process filling it.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use durable_runtime::{Client, ScheduleOptions, Worker};
use std::sync::Arc;
use support::{registry, run_raw, LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_a_postgres_store() {
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let options = PostgresOptions {
        schema: schema.clone(),
        pool_size: 4,
        ..PostgresOptions::default()
    };
    let backend = Arc::new(
        PostgresBackend::connect_with(cluster.url(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}")),
    );
    let worker = Worker::new(backend.clone(), registry()).start().unwrap();
    let client = Client::new(backend);
    for (name, id) in [("greet", "pg-greet"), ("approval", "pg-wait")] {
        let input = if name == "greet" {
            serde_json::json!("postgres")
        } else {
            serde_json::Value::Null
        };
        client
            .schedule_by_name(name, &input, ScheduleOptions::with_id(id))
            .await
            .unwrap();
    }
    client.wait_for_completion("pg-greet", LIMIT).await.unwrap();
    client.wait_for_start("pg-wait", LIMIT).await.unwrap();

    let cli = |args: &[&str]| {
        let mut all = vec!["--store", cluster.url(), "--schema", schema.as_str()];
        all.extend_from_slice(args);
        run_raw(&all)
    };
    let listed = cli(&["list"]).ok().stdout;
    assert!(listed.contains("pg-greet  greet "), "{listed}");
    assert!(listed.contains(" Running "), "{listed}");
    let shown = cli(&["show", "pg-greet"]).ok().stdout;
    assert!(
        shown.contains("Output         \"Hello, postgres!\"\n"),
        "{shown}"
    );
    let exported: Vec<HistoryEvent> =
        serde_json::from_str(&cli(&["history", "pg-greet", "--json"]).ok().stdout).unwrap();
    assert_eq!(exported, client.history("pg-greet").await.unwrap());
    cli(&["show", "nope"]).code(2);

    cli(&["raise", "pg-wait", "approve", "true"]).ok();
    let state = client.wait_for_completion("pg-wait", LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert_eq!(state.output::<String>().unwrap(), "approved");
    let watched = cli(&["watch", "pg-wait"]).code(0);
    assert!(watched.stdout.contains("  Completed"), "{}", watched.stdout);
    // A schema without a store is reported, and not created by the look.
    for _ in 0..2 {
        let missing = run_raw(&[
            "--store",
            cluster.url(),
            "--schema",
            "no_store_here",
            "list",
        ])
        .code(3);
        assert!(
            missing
                .stderr
                .contains("no durable store in schema \"no_store_here\""),
            "{}",
            missing.stderr
        );
    }
    // A schema that is not a valid name is refused before connecting.
    let bad = run_raw(&["--store", cluster.url(), "--schema", "No Such", "list"]).code(1);
    assert!(bad.stderr.contains("schema"), "{}", bad.stderr);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_hub_of_a_postgres_store_is_a_schema_deleted_with_it() {
    use durable_cli::serve::{hub_schema, StoreHubs};
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let hubs = StoreHubs::Postgres {
        url: cluster.url().to_string(),
        schema: schema.clone(),
    };
    assert!(!hubs.hub_exists("EU-1").await.unwrap());
    let default = hubs.open_hub("default").await.unwrap();
    let eu = hubs.open_hub("EU-1").await.unwrap();
    assert!(hubs.hub_exists("eu_1").await.unwrap(), "the same hub");
    for (backend, id) in [(&default, "in-default"), (&eu, "in-eu")] {
        Client::new(backend.clone())
            .schedule_by_name("greet", &"x", ScheduleOptions::with_id(id))
            .await
            .unwrap();
    }
    assert!(default
        .get_instance("in-eu", false)
        .await
        .unwrap()
        .is_none());
    assert!(eu
        .get_instance("in-default", false)
        .await
        .unwrap()
        .is_none());
    assert!(eu.get_instance("in-eu", false).await.unwrap().is_some());
    drop(eu);
    // "eu_1" is the same hub as "EU-1".
    let same = hubs.open_hub("eu_1").await.unwrap();
    assert!(same.get_instance("in-eu", false).await.unwrap().is_some());
    drop(same);
    // Hub "default" is the store's own schema: never deleted.
    assert!(hubs.delete_hub("default").await.is_err());

    hubs.delete_hub("EU-1").await.unwrap();
    assert!(!hubs.hub_exists("EU-1").await.unwrap());
    let listed = run_raw(&[
        "--store",
        cluster.url(),
        "--schema",
        &hub_schema(&schema, "eu_1"),
        "list",
    ])
    .code(3);
    assert!(
        listed.stderr.contains("no durable store"),
        "{}",
        listed.stderr
    );
    // A deleted hub opens again, empty; the default hub kept its instance.
    let eu = hubs.open_hub("EU-1").await.unwrap();
    assert!(eu.get_instance("in-eu", false).await.unwrap().is_none());
    assert!(default
        .get_instance("in-default", false)
        .await
        .unwrap()
        .is_some());
    // A hub whose schema name would be one character too long for
    // PostgreSQL is refused, naming the limit.
    let long = "h".repeat(48 - schema.len());
    let e = match hubs.open_hub(&long).await {
        Err(e) => e,
        Ok(_) => panic!("a hub whose schema has 49 characters was opened"),
    };
    assert!(e.to_string().contains("over 48"), "{e}");
}
