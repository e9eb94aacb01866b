//! `Worker::run_until_signal` in a process of its own (this test binary):
//! SIGTERM and SIGINT stop the worker gracefully, letting running work
//! finish, and say which signal it was.

use durable_runtime::{
    ActivityError, Client, MemoryBackend, Registry, ScheduleOptions, StopSignal, Worker,
    WorkerOptions,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Sends `signal` to this process.
fn send(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &std::process::id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("running `kill -{signal}` failed: {e}"));
    assert!(status.success(), "`kill -{signal}` failed: {status}");
}

/// The orchestration alone: its activity must not run again.
fn registry_for_next() -> Registry {
    Registry::new()
        .activity_fn("slow", |_ctx, _: ()| async move {
            Err::<String, _>(ActivityError::new("RanAgain", "the activity ran again"))
        })
        .orchestrator_fn("calls_slow", |ctx, _: ()| async move {
            let out: String = ctx.call_activity_by_name("slow", &()).await?;
            Ok(out)
        })
}

/// One test, so the two signals are sent one after the other, never while
/// another test's worker listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_the_worker_gracefully_and_is_named() {
    for (signal, expected) in [
        ("TERM", StopSignal::Terminate),
        ("INT", StopSignal::Interrupt),
    ] {
        // "slow" tells the test it started, then waits to be released.
        let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
        let (release_tx, release) = oneshot::channel::<()>();
        let release = Arc::new(Mutex::new(Some(release)));
        let registry = Registry::new()
            .activity_fn("slow", move |_ctx, _: ()| {
                let (started_tx, release) = (started_tx.clone(), release.clone());
                async move {
                    let _ = started_tx.send(());
                    if let Some(r) = release.lock().await.take() {
                        let _ = r.await;
                    }
                    Ok::<_, ActivityError>("finished".to_string())
                }
            })
            .orchestrator_fn("calls_slow", |ctx, _: ()| async move {
                let out: String = ctx.call_activity_by_name("slow", &()).await?;
                Ok(out)
            });
        let backend = Arc::new(MemoryBackend::new());
        let stopped = Worker::new(backend.clone(), registry)
            .with_options(WorkerOptions {
                shutdown_grace: Duration::from_secs(20),
                ..Default::default()
            })
            .run_until_signal()
            .unwrap();
        let stopped = tokio::spawn(stopped);
        let client = Client::new(backend.clone());
        let id = client
            .schedule_by_name("calls_slow", &(), ScheduleOptions::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), started.recv())
            .await
            .expect("the activity did not start within 20 s");
        send(signal);
        // The worker is shutting down with the activity still running: it
        // finishes within the grace period and its result is recorded.
        tokio::task::yield_now().await;
        assert!(
            !stopped.is_finished(),
            "the worker stopped without waiting for its activity"
        );
        release_tx.send(()).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), stopped)
            .await
            .unwrap_or_else(|_| panic!("SIG{signal} did not stop the worker within 20 s"))
            .unwrap();
        assert_eq!(got, expected);
        assert_eq!(got.to_string(), format!("SIG{signal}"));
        // Its result was kept: another worker finishes the orchestration
        // without running the activity again.
        let next = Worker::new(backend.clone(), registry_for_next())
            .start()
            .unwrap();
        let done = client
            .wait_for_completion(&id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(done.output::<String>().unwrap(), "finished");
        assert!(started.try_recv().is_err(), "the activity ran again");
        next.shutdown().await;
    }
}
