//! Schedules on the in-memory backend with virtual time: an hourly
//! schedule runs 30 days in milliseconds of wall time, one run an hour;
//! pause, resume, update, end time and delete; bad options are refused.

use durable_runtime::schedule::{Schedule, ScheduleOptions, ScheduleStatus, ScheduleUpdate};
use durable_runtime::{Backend, OrchestrationStatus, Registry, TestEnv};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

fn env() -> TestEnv {
    let registry = Registry::new()
        .entity::<Schedule>()
        .orchestrator_fn("tick", |_ctx, n: i64| async move {
            Ok::<_, durable_runtime::OrchestrationError>(n + 1)
        });
    TestEnv::new(registry).unwrap()
}

/// The instances the schedule started (ids `hourly-<time>`), completed.
async fn runs(env: &TestEnv, prefix: &str) -> Vec<String> {
    let page = env
        .backend()
        .query_instances(durable_runtime::backend::InstanceQuery {
            instance_id_prefix: Some(format!("{prefix}-")),
            fetch_payloads: true,
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for m in page.instances {
        assert_eq!(
            m.status,
            OrchestrationStatus::Completed,
            "{}",
            m.instance_id
        );
        assert_eq!(m.output.as_deref(), Some("42"), "{}", m.instance_id);
        ids.push(m.instance_id);
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_schedule_runs_thirty_days_of_virtual_time() {
    let env = env();
    let start = env.now() + chrono::Duration::minutes(30);
    let mut options = ScheduleOptions::new("hourly", "tick", HOUR);
    options.orchestration_input = Some("41".into());
    options.start_at = Some(start);
    env.client().create_schedule(options).await.unwrap();
    env.wait_until_idle().await;
    let d = env
        .client()
        .describe_schedule("hourly")
        .await
        .unwrap()
        .expect("created");
    assert_eq!(d.schedule.status, ScheduleStatus::Active);
    assert_eq!(d.schedule.next_run_at, Some(start));
    assert_eq!(d.schedule.runs, 0);

    // 30 days after the first run time: runs at +0 h .. +720 h.
    env.advance_to(start + chrono::Duration::days(30))
        .await
        .unwrap();
    let ids = runs(&env, "hourly").await;
    assert_eq!(
        ids.len(),
        721,
        "first {:?}, last {:?}",
        ids.first(),
        ids.last()
    );
    let d = env
        .client()
        .describe_schedule("hourly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.schedule.runs, 721);
    assert_eq!(
        d.schedule.last_run_at,
        Some(start + chrono::Duration::days(30))
    );
    assert_eq!(
        d.schedule.next_run_at,
        Some(start + chrono::Duration::days(30) + chrono::Duration::hours(1))
    );
    // Every run time is on the hour grid of the start, once.
    for (k, id) in ids.iter().enumerate() {
        let when = start + chrono::Duration::hours(k as i64);
        assert_eq!(
            *id,
            format!(
                "hourly-{}",
                when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_update_end_and_delete() {
    let env = env();
    let c = env.client();
    let t0 = env.now();
    let mut options = ScheduleOptions::new("s", "tick", HOUR);
    options.orchestration_input = Some("41".into());
    options.start_at = Some(t0);
    c.create_schedule(options.clone()).await.unwrap();
    env.advance_to(t0 + chrono::Duration::minutes(150))
        .await
        .unwrap();
    // Runs at t0, +1 h, +2 h.
    assert_eq!(runs(&env, "s").await.len(), 3);

    c.pause_schedule("s").await.unwrap();
    env.wait_until_idle().await;
    let paused = c.describe_schedule("s").await.unwrap().unwrap();
    assert_eq!(paused.schedule.status, ScheduleStatus::Paused);
    assert_eq!(paused.schedule.next_run_at, None);
    // Paused: no runs for ten hours; pausing again is refused.
    env.advance_to(t0 + chrono::Duration::hours(12))
        .await
        .unwrap();
    assert_eq!(runs(&env, "s").await.len(), 3);
    let e = c.pause_schedule("s").await.unwrap_err().to_string();
    assert!(e.contains("is paused"), "{e}");

    // Resumed at +12 h: the next run on the grid is +13 h.
    c.resume_schedule("s").await.unwrap();
    env.wait_until_idle().await;
    let resumed = c.describe_schedule("s").await.unwrap().unwrap();
    assert_eq!(
        resumed.schedule.next_run_at,
        Some(t0 + chrono::Duration::hours(13))
    );

    // Every 2 hours from +20 h, ending at +26 h.
    c.update_schedule(
        "s",
        ScheduleUpdate {
            interval: Some(2 * HOUR),
            start_at: Some(t0 + chrono::Duration::hours(20)),
            end_at: Some(t0 + chrono::Duration::hours(26)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    env.advance_to(t0 + chrono::Duration::hours(40))
        .await
        .unwrap();
    let ids = runs(&env, "s").await;
    let at = |h: i64| {
        format!(
            "s-{}",
            (t0 + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    };
    let mut want: Vec<String> = [0, 1, 2, 20, 22, 24, 26].iter().map(|h| at(*h)).collect();
    want.sort();
    assert_eq!(ids, want);
    // After its end the schedule is gone.
    assert!(c.describe_schedule("s").await.unwrap().is_none());
    let e = c.resume_schedule("s").await.unwrap_err().to_string();
    assert!(e.contains("no schedule \"s\""), "{e}");

    // Delete stops a schedule for good.
    let mut other = ScheduleOptions::new("d", "tick", HOUR);
    other.orchestration_input = Some("41".into());
    c.create_schedule(other).await.unwrap();
    env.wait_until_idle().await;
    assert_eq!(c.list_schedules().await.unwrap().len(), 1);
    c.delete_schedule("d").await.unwrap();
    env.wait_until_idle().await;
    let before = runs(&env, "d").await.len();
    env.advance_by(10 * HOUR).await.unwrap();
    assert_eq!(runs(&env, "d").await.len(), before);
    assert!(c.list_schedules().await.unwrap().is_empty());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_schedule_starts_now_only_if_asked() {
    let env = env();
    let c = env.client();
    let t0 = env.now();
    let mut late = ScheduleOptions::new("late", "tick", HOUR);
    late.orchestration_input = Some("41".into());
    late.start_at = Some(t0 - chrono::Duration::minutes(90));
    c.create_schedule(late.clone()).await.unwrap();
    let mut eager = late.clone();
    eager.schedule_id = "eager".into();
    eager.start_immediately_if_late = true;
    c.create_schedule(eager).await.unwrap();
    env.wait_until_idle().await;
    // The late one waits for the grid (t0 + 30 min); the eager one ran now.
    assert!(runs(&env, "late").await.is_empty());
    assert_eq!(runs(&env, "eager").await.len(), 1);
    let d = c.describe_schedule("late").await.unwrap().unwrap();
    assert_eq!(
        d.schedule.next_run_at,
        Some(t0 + chrono::Duration::minutes(30))
    );

    let mut bad = ScheduleOptions::new("bad", "tick", Duration::from_millis(5));
    bad.orchestration_input = Some("1".into());
    let e = c.create_schedule(bad).await.unwrap_err().to_string();
    assert!(e.contains("at least one second"), "{e}");
    env.shutdown().await;
}
