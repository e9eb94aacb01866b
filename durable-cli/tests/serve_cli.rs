//! The `durable` CLI against `durable serve` (`--endpoint`): a Rust worker
//! serves it over gRPC, and list (filters, paging), show, history, raise,
//! watch, terminate, purge and the exit codes for an unknown id and a
//! missing token work through the server as they do on a store.

mod support;

use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::{Backend, Client, OrchestrationStatus, ScheduleOptions, Worker};
use std::sync::Arc;
use support::{registry, run_raw, start_serve, stop_serve, LIMIT};

const TOKEN: &str = "cli-s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_work_through_durable_serve() {
    let (server, addr, lines) = start_serve(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]);
    let endpoint = format!("http://{addr}");
    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(
            GrpcOptions::new(endpoint.clone()).header("authorization", format!("Bearer {TOKEN}")),
        )
        .expect("valid options"),
    );
    let worker = Worker::new(backend.clone(), registry()).start().unwrap();
    let client = Client::new(backend);
    for (name, id) in [
        ("greet", "g-1"),
        ("greet", "g-2"),
        ("greet", "g-3"),
        ("checkout", "c-1"),
        ("approval", "a-1"),
        ("approval", "a-2"),
    ] {
        let options = ScheduleOptions::with_id(id);
        match name {
            "greet" => client.schedule_by_name(name, &id, options).await,
            "checkout" => client.schedule_by_name(name, &25u32, options).await,
            _ => client.schedule_by_name(name, &(), options).await,
        }
        .unwrap();
    }
    for id in ["g-1", "g-2", "g-3", "c-1"] {
        client.wait_for_completion(id, LIMIT).await.unwrap();
    }
    client.wait_for_start("a-1", LIMIT).await.unwrap();
    client.wait_for_start("a-2", LIMIT).await.unwrap();

    let cli = |args: &[&str]| {
        let mut all = vec!["--endpoint", endpoint.as_str(), "--bearer-token", TOKEN];
        all.extend_from_slice(args);
        run_raw(&all)
    };
    let rows = |text: &str| -> Vec<String> {
        text.lines()
            .skip(1)
            .filter(|l| !l.starts_with("more:"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };

    // list: a status and a prefix, two at a time, then the next page.
    let first = cli(&[
        "list",
        "--status",
        "completed",
        "--prefix",
        "g-",
        "--page-size",
        "2",
    ])
    .ok()
    .stdout;
    assert_eq!(rows(&first), ["g-1", "g-2"], "{first}");
    let token = first
        .lines()
        .find_map(|l| l.strip_prefix("more: add --continue "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a next page is offered: {first}"))
        .to_string();
    let second = cli(&[
        "list",
        "--status",
        "completed",
        "--prefix",
        "g-",
        "--page-size",
        "2",
        "--continue",
        &token,
    ])
    .ok()
    .stdout;
    assert_eq!(rows(&second), ["g-3"], "{second}");
    let all = cli(&["list", "--page-size", "2", "--all"]).ok().stdout;
    assert_eq!(
        rows(&all),
        ["a-1", "a-2", "c-1", "g-1", "g-2", "g-3"],
        "{all}"
    );
    let running = cli(&[
        "list", "--status", "running", "--name", "approval", "--json",
    ])
    .ok();
    let listed = running.json();
    let ids: Vec<&str> = listed["instances"]
        .as_array()
        .expect("an instances array")
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a-1", "a-2"]);

    // show and history.
    let shown = cli(&["show", "c-1"]).ok().stdout;
    assert!(shown.contains("Status         Failed\n"), "{shown}");
    assert!(shown.contains("CardDeclined: card expired"), "{shown}");
    let timeline = cli(&["history", "g-2"]).ok().stdout;
    assert!(timeline.contains("activity  hello"), "{timeline}");
    assert!(
        timeline.contains("completed: \"Hello, g-2!\""),
        "{timeline}"
    );

    // raise, then watch sees it complete (0); a failed one is 4, a
    // terminated one 5.
    cli(&["raise", "a-1", "approve", "true"]).ok();
    let watched = cli(&["watch", "a-1"]).code(0);
    assert!(watched.stdout.contains("  Completed"), "{}", watched.stdout);
    cli(&["watch", "c-1"]).code(4);
    cli(&["terminate", "a-2", "--reason", "not needed"]).ok();
    let state = client.wait_for_completion("a-2", LIMIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Terminated);
    cli(&["watch", "a-2"]).code(5);

    // purge, then the id is unknown: 2, naming it.
    let purged = cli(&["purge", "g-1"]).ok().stdout;
    assert!(purged.contains("purged 1 instance"), "{purged}");
    for args in [["show", "g-1"], ["history", "g-1"], ["watch", "g-1"]] {
        let r = cli(&args).code(2);
        assert!(r.stderr.contains("\"g-1\""), "{}", r.stderr);
    }
    // A running instance is not purged (1), and stays.
    client
        .schedule_by_name("approval", &(), ScheduleOptions::with_id("a-3"))
        .await
        .unwrap();
    client.wait_for_start("a-3", LIMIT).await.unwrap();
    cli(&["purge", "a-3"]).code(1);
    assert!(client.get_status("a-3").await.unwrap().is_some());

    // Without the token the server refuses every call: 3, saying why.
    let r = run_raw(&["--endpoint", endpoint.as_str(), "list"]).code(3);
    assert!(
        r.stderr.to_lowercase().contains("token")
            || r.stderr.to_lowercase().contains("unauthenticated"),
        "{}",
        r.stderr
    );

    worker.shutdown().await;
    stop_serve(server, lines);
}
