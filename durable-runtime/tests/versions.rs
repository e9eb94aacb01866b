//! Several versions of one orchestrator side by side: each instance runs
//! the version it started with.

use durable_runtime::{Registry, ScheduleOptions, TestEnv};

fn with_version(version: &str) -> ScheduleOptions {
    ScheduleOptions {
        version: Some(version.into()),
        ..Default::default()
    }
}

fn two_versions() -> Registry {
    Registry::new()
        .orchestrator_version_fn("greet", "1", |ctx, name: String| async move {
            Ok(format!("v{:?}: Hello, {name}", ctx.version()))
        })
        .orchestrator_version_fn("greet", "2", |ctx, name: String| async move {
            Ok(format!("v{:?}: Hi {name}!", ctx.version()))
        })
}

#[tokio::test]
async fn each_instance_runs_the_version_it_started_with() {
    let env = TestEnv::new(two_versions()).unwrap();
    let v1 = env
        .client()
        .schedule_by_name("greet", &"Ann", with_version("1"))
        .await
        .unwrap();
    let v2 = env
        .client()
        .schedule_by_name("greet", &"Bo", with_version("2"))
        .await
        .unwrap();
    let out = |id: String| {
        let env = &env;
        async move {
            env.wait_for_completion(&id)
                .await
                .unwrap()
                .output::<String>()
                .unwrap()
        }
    };
    assert_eq!(out(v1).await, "vSome(\"1\"): Hello, Ann");
    assert_eq!(out(v2).await, "vSome(\"2\"): Hi Bo!");
    env.shutdown().await;
}

#[tokio::test]
async fn a_version_not_registered_fails_naming_the_registered_ones() {
    let env = TestEnv::new(two_versions()).unwrap();
    let id = env
        .client()
        .schedule_by_name("greet", &"Cy", with_version("3"))
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    let failure = state.failure().expect("the instance failed");
    assert_eq!(failure.error_type, "VersionNotRegistered");
    for text in ["\"3\"", "\"greet\"", "[\"1\", \"2\"]"] {
        assert!(
            failure.message.contains(text),
            "{text} in {}",
            failure.message
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn an_instance_started_before_versions_runs_the_oldest_version() {
    // The old code kept its place as version "1" when "2" was added: an
    // instance scheduled before (no version) runs it.
    let env = TestEnv::new(two_versions()).unwrap();
    let id = env
        .client()
        .schedule_by_name("greet", &"Di", ScheduleOptions::default())
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "vNone: Hello, Di");
    env.shutdown().await;
}

#[tokio::test]
async fn a_name_registered_without_a_version_runs_every_version() {
    // As the SDKs' registries: an orchestrator without a version attribute
    // runs whatever version a client (or a default version) started.
    let registry = Registry::new().orchestrator_fn("greet", |_ctx, name: String| async move {
        Ok(format!("unversioned {name}"))
    });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("greet", &"Ed", with_version("1"))
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "unversioned Ed");
    env.shutdown().await;
}

#[tokio::test]
async fn an_instance_of_a_version_no_longer_registered_fails() {
    // Versions "2" and "3" are registered and "1" was removed: its
    // instances fail clearly rather than run other code.
    let registry = Registry::new()
        .orchestrator_version_fn("greet", "2", |_ctx, name: String| async move {
            Ok(format!("v2 {name}"))
        })
        .orchestrator_version_fn("greet", "3", |_ctx, name: String| async move {
            Ok(format!("v3 {name}"))
        });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("greet", &"Ed", with_version("1"))
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    let failure = state.failure().expect("the instance failed");
    assert_eq!(failure.error_type, "VersionNotRegistered");
    assert!(
        failure.message.contains("[\"2\", \"3\"]"),
        "{}",
        failure.message
    );
    env.shutdown().await;
}

#[tokio::test]
async fn one_version_registered_twice_is_a_startup_error() {
    let registry =
        two_versions().orchestrator_version_fn("greet", "2", |_ctx, _: ()| async move { Ok(()) });
    let e = TestEnv::new(registry).expect_err("a duplicate version was accepted");
    let text = e.to_string();
    assert!(text.contains("\"greet\" version \"2\""), "{text}");
    assert!(text.contains("registered twice"), "{text}");
}

mod worker_versioning {
    use durable_runtime::backend::MemoryBackend;
    use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
    use durable_runtime::{Backend, Client, Registry, ScheduleOptions, Worker, WorkerOptions};
    use std::sync::Arc;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(30);

    fn registry(who: &'static str) -> Registry {
        Registry::new()
            .orchestrator_version_fn("greet", "1", move |_ctx, _: ()| async move {
                Ok(format!("v1 on {who}"))
            })
            .orchestrator_version_fn("greet", "2", move |_ctx, _: ()| async move {
                Ok(format!("v2 on {who}"))
            })
    }

    fn strict_v2(failure_strategy: FailureStrategy) -> WorkerOptions {
        WorkerOptions {
            versioning: VersioningOptions {
                version: "2".into(),
                match_strategy: MatchStrategy::Strict,
                failure_strategy,
                reject_pause: Duration::from_millis(10),
                ..VersioningOptions::default()
            },
            ..WorkerOptions::default()
        }
    }

    async fn schedule(client: &Client, version: &str) -> String {
        let options = ScheduleOptions {
            version: Some(version.into()),
            ..Default::default()
        };
        client
            .schedule_by_name("greet", &(), options)
            .await
            .unwrap()
    }

    /// A strict version-2 worker that rejects leaves a version-1 instance to
    /// a worker that runs it, and runs version 2 itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_strict_worker_gives_other_versions_back() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let client = Client::new(backend.clone());
        let strict = Worker::new(backend.clone(), registry("the strict worker"))
            .with_options(strict_v2(FailureStrategy::Reject))
            .start()
            .unwrap();
        let old = schedule(&client, "1").await;
        let new = schedule(&client, "2").await;
        let state = client.wait_for_completion(&new, WAIT).await.unwrap();
        assert_eq!(state.output::<String>().unwrap(), "v2 on the strict worker");
        // Version 1 waits for a worker that runs it.
        let any = Worker::new(backend.clone(), registry("any worker"))
            .start()
            .unwrap();
        let state = client.wait_for_completion(&old, WAIT).await.unwrap();
        assert_eq!(state.output::<String>().unwrap(), "v1 on any worker");
        strict.shutdown().await;
        any.shutdown().await;
    }

    /// A strict version-2 worker that fails: a version-1 instance fails
    /// with `VersionMismatch`, naming both versions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_strict_worker_that_fails_fails_other_versions() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let client = Client::new(backend.clone());
        let strict = Worker::new(backend.clone(), registry("the strict worker"))
            .with_options(strict_v2(FailureStrategy::Fail))
            .start()
            .unwrap();
        let old = schedule(&client, "1").await;
        let state = client.wait_for_completion(&old, WAIT).await.unwrap();
        let failure = state.failure().expect("the instance failed");
        assert_eq!(failure.error_type, "VersionMismatch");
        assert!(
            failure.message.contains("version \"1\""),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("\"2\""), "{}", failure.message);
        strict.shutdown().await;
    }
}

mod default_versions {
    use super::two_versions;
    use durable_runtime::backend::MemoryBackend;
    use durable_runtime::versioning::VersioningOptions;
    use durable_runtime::{Backend, Client, ScheduleOptions, Worker, WorkerOptions};
    use std::sync::Arc;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(30);

    /// A client's default version applies to what it schedules without
    /// one; a version in the options still wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_s_default_version_starts_new_instances_on_it() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let worker = Worker::new(backend.clone(), two_versions())
            .start()
            .unwrap();
        let client = Client::new(backend).with_default_version("2");
        let defaulted = client
            .schedule_by_name("greet", &"Fa", ScheduleOptions::default())
            .await
            .unwrap();
        let named = client
            .schedule_by_name("greet", &"Gu", super::with_version("1"))
            .await
            .unwrap();
        let state = client.wait_for_completion(&defaulted, WAIT).await.unwrap();
        assert_eq!(state.version(), Some("2"));
        assert_eq!(state.output::<String>().unwrap(), "vSome(\"2\"): Hi Fa!");
        let state = client.wait_for_completion(&named, WAIT).await.unwrap();
        assert_eq!(state.output::<String>().unwrap(), "vSome(\"1\"): Hello, Gu");
        worker.shutdown().await;
    }

    /// A worker's default version starts the sub-orchestrations its code
    /// starts without naming a version; a version the code names wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_s_default_version_starts_sub_orchestrations_on_it() {
        let registry = two_versions().orchestrator_fn("parent", |ctx, _: ()| async move {
            let defaulted: String = ctx
                .call_sub_orchestrator_by_name("greet", None, &"Ha", None)
                .await?;
            let named: String = ctx
                .call_sub_orchestrator_by_name("greet", Some("1"), &"Io", None)
                .await?;
            Ok(vec![defaulted, named])
        });
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let options = WorkerOptions {
            versioning: VersioningOptions {
                default_version: Some("2".into()),
                ..VersioningOptions::default()
            },
            ..WorkerOptions::default()
        };
        let worker = Worker::new(backend.clone(), registry)
            .with_options(options)
            .start()
            .unwrap();
        let client = Client::new(backend);
        let id = client
            .schedule_by_name("parent", &(), ScheduleOptions::default())
            .await
            .unwrap();
        let state = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert_eq!(
            state.output::<Vec<String>>().unwrap(),
            ["vSome(\"2\"): Hi Ha!", "vSome(\"1\"): Hello, Io"]
        );
        worker.shutdown().await;
    }
}

/// A client's and a worker's default versions leave names without versions
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_versions_do_not_stop_unversioned_orchestrators() {
    use durable_runtime::backend::MemoryBackend;
    use durable_runtime::versioning::VersioningOptions;
    use durable_runtime::{Backend, Client, Worker, WorkerOptions};
    use std::sync::Arc;
    use std::time::Duration;
    let registry = two_versions()
        .orchestrator_fn("notify", |_ctx, who: String| async move {
            Ok(format!("notified {who}"))
        })
        .orchestrator_fn("parent", |ctx, _: ()| async move {
            let out: String = ctx
                .call_sub_orchestrator_by_name("notify", None, &"Jo", None)
                .await?;
            Ok(out)
        });
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = WorkerOptions {
        versioning: VersioningOptions {
            default_version: Some("2".into()),
            ..VersioningOptions::default()
        },
        ..WorkerOptions::default()
    };
    let worker = Worker::new(backend.clone(), registry)
        .with_options(options)
        .start()
        .unwrap();
    let client = Client::new(backend).with_default_version("2");
    let wait = Duration::from_secs(30);
    let direct = client
        .schedule_by_name("notify", &"Al", ScheduleOptions::default())
        .await
        .unwrap();
    let state = client.wait_for_completion(&direct, wait).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "notified Al");
    let parent = client
        .schedule_by_name("parent", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let state = client.wait_for_completion(&parent, wait).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "notified Jo");
    worker.shutdown().await;
}
