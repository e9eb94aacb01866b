//! Spans reported by a worker on the in-memory backend, read from a
//! `SpanRecorder`: an activity sees its own span's context, a rewound
//! execution reports new spans (no span id twice), an unsampled trace stays
//! unsampled, and an instance the worker's versioning fails still reports
//! its orchestration span.

use durable_runtime::trace::{add_sink, SpanKind, SpanRecord, SpanRecorder, TraceContext};
use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
use durable_runtime::{
    ActivityError, Client, MemoryBackend, OrchestrationStatus, Registry, ScheduleOptions, Worker,
    WorkerOptions,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// The process-wide recorder (spans of every test in this binary: each
/// test picks its own by instance id).
fn recorder() -> &'static SpanRecorder {
    static R: OnceLock<SpanRecorder> = OnceLock::new();
    R.get_or_init(|| {
        let r = SpanRecorder::new();
        add_sink(r.clone());
        r
    })
}

fn of_instance(spans: &[SpanRecord], id: &str) -> Vec<SpanRecord> {
    spans
        .iter()
        .filter(|s| s.attribute("durabletask.task.instance_id") == Some(id))
        .cloned()
        .collect()
}

fn client_parent() -> TraceContext {
    TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        None,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_sees_the_context_of_its_own_span() {
    let rec = recorder();
    let seen: Arc<Mutex<Vec<Option<TraceContext>>>> = Arc::default();
    let seen2 = seen.clone();
    let registry = Registry::new()
        .activity_fn("ctx_probe", move |c, _: ()| {
            let seen = seen2.clone();
            async move {
                seen.lock().unwrap().push(c.trace_context().cloned());
                Ok::<_, ActivityError>(())
            }
        })
        .orchestrator_fn("ctx_orch", |ctx, _: ()| async move {
            ctx.call_activity_by_name::<()>("ctx_probe", &()).await?;
            Ok::<(), durable_runtime::OrchestrationError>(())
        });
    let backend = Arc::new(MemoryBackend::new());
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name(
            "ctx_orch",
            &(),
            ScheduleOptions {
                trace_parent: Some(client_parent()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Completed);
    let spans = rec
        .wait_for(LIMIT, |all| {
            of_instance(all, &id)
                .iter()
                .any(|s| s.name == "orchestration:ctx_orch" && s.kind == SpanKind::Server)
        })
        .await
        .unwrap_or_else(|got| panic!("no orchestration span for {id}: {got:#?}"));
    let mine = of_instance(&spans, &id);
    let run = mine
        .iter()
        .find(|s| s.name == "activity:ctx_probe" && s.kind == SpanKind::Server)
        .expect("the activity's run span");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let ctx = seen[0].clone().expect("the activity had a trace context");
    assert_eq!(ctx.trace_id(), Some(run.trace_id));
    assert_eq!(ctx.span_id(), Some(run.span_id));
    assert_eq!(ctx.trace_id(), client_parent().trace_id());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_execution_reports_no_span_id_twice() {
    let rec = recorder();
    let fail_once = Arc::new(AtomicBool::new(true));
    let f = fail_once.clone();
    let registry = Registry::new()
        .activity_fn("rw_flaky", move |_c, _: ()| {
            let f = f.clone();
            async move {
                if f.swap(false, Ordering::SeqCst) {
                    Err(ActivityError::msg("the first run fails"))
                } else {
                    Ok(())
                }
            }
        })
        .orchestrator_fn("rw_orch", |ctx, _: ()| async move {
            ctx.call_activity_by_name::<()>("rw_flaky", &()).await?;
            Ok::<(), durable_runtime::OrchestrationError>(())
        });
    let backend = Arc::new(MemoryBackend::new());
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("rw_orch", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    client.rewind(&id, Some("try again")).await.unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Completed);
    let ends = |all: &[SpanRecord]| {
        of_instance(all, &id)
            .iter()
            .filter(|s| s.name == "orchestration:rw_orch" && s.kind == SpanKind::Server)
            .count()
    };
    let spans = rec
        .wait_for(LIMIT, |all| ends(all) == 2)
        .await
        .unwrap_or_else(|got| panic!("expected two orchestration spans for {id}: {got:#?}"));
    let mine = of_instance(&spans, &id);
    let mut by_id: HashMap<_, Vec<&SpanRecord>> = HashMap::new();
    for s in &mine {
        by_id.entry(s.span_id).or_default().push(s);
    }
    let twice: Vec<_> = by_id.values().filter(|v| v.len() > 1).collect();
    assert!(twice.is_empty(), "span ids reported twice: {twice:#?}");
    // The failed execution and the rewound one, in one trace.
    let orch: Vec<_> = mine
        .iter()
        .filter(|s| s.name == "orchestration:rw_orch" && s.kind == SpanKind::Server)
        .collect();
    assert_eq!(
        orch.iter()
            .map(|s| s.attribute("durabletask.task.status"))
            .collect::<Vec<_>>(),
        [Some("Failed"), Some("Completed")]
    );
    assert_eq!(orch[0].trace_id, orch[1].trace_id);
    let calls = mine
        .iter()
        .filter(|s| s.name == "activity:rw_flaky" && s.kind == SpanKind::Client)
        .count();
    assert_eq!(calls, 2, "the failed call and the call run again");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_trace_reports_unsampled_spans() {
    let rec = recorder();
    let registry = Registry::new()
        .activity_fn(
            "us_act",
            |_c, _: ()| async move { Ok::<_, ActivityError>(()) },
        )
        .orchestrator_fn("us_orch", |ctx, _: ()| async move {
            ctx.call_activity_by_name::<()>("us_act", &()).await?;
            Ok::<(), durable_runtime::OrchestrationError>(())
        });
    let backend = Arc::new(MemoryBackend::new());
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let unsampled = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        None,
    )
    .unwrap();
    let id = client
        .schedule_by_name(
            "us_orch",
            &(),
            ScheduleOptions {
                trace_parent: Some(unsampled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client.wait_for_completion(&id, LIMIT).await.unwrap();
    let spans = rec
        .wait_for(LIMIT, |all| {
            of_instance(all, &id)
                .iter()
                .any(|s| s.name == "orchestration:us_orch" && s.kind == SpanKind::Server)
        })
        .await
        .unwrap_or_else(|got| panic!("no orchestration span for {id}: {got:#?}"));
    let mine = of_instance(&spans, &id);
    // create_orchestration, orchestration, the call and the run.
    assert!(mine.len() >= 4, "{mine:#?}");
    assert!(mine.iter().all(|s| !s.sampled), "{mine:#?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failed_by_versioning_reports_its_span() {
    let rec = recorder();
    let backend = Arc::new(MemoryBackend::new());
    let client = Client::new(backend.clone());
    let id = client
        .schedule_by_name(
            "vf_orch",
            &(),
            ScheduleOptions {
                version: Some("1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let registry = Registry::new().orchestrator_version_fn("vf_orch", "2", |_ctx, _: ()| async {
        Ok::<(), durable_runtime::OrchestrationError>(())
    });
    let worker = Worker::new(backend.clone(), registry)
        .with_options(WorkerOptions {
            versioning: VersioningOptions {
                version: "2".into(),
                match_strategy: MatchStrategy::Strict,
                failure_strategy: FailureStrategy::Fail,
                ..Default::default()
            },
            ..Default::default()
        })
        .start()
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    let spans = rec
        .wait_for(LIMIT, |all| {
            of_instance(all, &id)
                .iter()
                .any(|s| s.kind == SpanKind::Server && s.name.starts_with("orchestration:vf_orch"))
        })
        .await
        .unwrap_or_else(|got| panic!("no orchestration span for {id}: {got:#?}"));
    let span = of_instance(&spans, &id)
        .into_iter()
        .find(|s| s.kind == SpanKind::Server)
        .unwrap();
    assert_eq!(span.attribute("durabletask.task.status"), Some("Failed"));
    assert!(
        span.error
            .as_deref()
            .is_some_and(|e| e.contains("VersionMismatch")),
        "{span:#?}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_store_refuses_reports_a_failed_span() {
    let rec = recorder();
    let registry = Registry::new().orchestrator_fn("big_out", |_ctx, _: ()| async move {
        Ok::<String, durable_runtime::OrchestrationError>("x".repeat(1_000))
    });
    let limits = durable_runtime::backend::transition::Limits {
        max_payload_bytes: 100,
        ..Default::default()
    };
    let backend = Arc::new(MemoryBackend::new().with_limits(limits));
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("big_out", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    let spans = rec
        .wait_for(LIMIT, |all| {
            of_instance(all, &id)
                .iter()
                .any(|s| s.name == "orchestration:big_out" && s.kind == SpanKind::Server)
        })
        .await
        .unwrap_or_else(|got| panic!("no orchestration span for {id}: {got:#?}"));
    let ends: Vec<_> = of_instance(&spans, &id)
        .into_iter()
        .filter(|s| s.name == "orchestration:big_out" && s.kind == SpanKind::Server)
        .collect();
    assert_eq!(ends.len(), 1, "{ends:#?}");
    assert_eq!(ends[0].attribute("durabletask.task.status"), Some("Failed"));
    let error = ends[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("PayloadTooLarge") || error.contains("limit"),
        "{error}"
    );
    worker.shutdown().await;
}
