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
    // Without a version, with two registered: the same, rather than a guess.
    let id = env
        .client()
        .schedule_by_name("greet", &"Di", ScheduleOptions::default())
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    let failure = state.failure().expect("the instance failed");
    assert!(
        failure.message.contains("no version"),
        "{}",
        failure.message
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_single_registration_runs_instances_of_any_version() {
    // An orchestrator that gained (or lost) a version attribute keeps
    // running the instances started before.
    let registry = Registry::new().orchestrator_fn("greet", |ctx, name: String| async move {
        Ok(format!("{:?} {name}", ctx.version()))
    });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("greet", &"Ed", with_version("1"))
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "Some(\"1\") Ed");
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
