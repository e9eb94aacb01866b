//! The app binary: durable by default (a second run sees the first run's
//! instances), clear errors for bad input.

use std::process::Command;

fn app() -> Command {
    Command::new(env!("CARGO_BIN_EXE_order-processing"))
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("durable-example-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn second_run_sees_the_first_runs_instances() {
    let dir = scratch_dir("twice");
    let db = dir.join("orders.db");
    for _ in 0..2 {
        let out = app().arg("--db").arg(&db).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("status=completed"), "{stdout}");
    }
    let out = app().arg("--db").arg(&db).arg("list").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Each run leaves three instances: process_order, order_with_approval and its sub-orchestration.
    assert!(stdout.contains("6 instance(s)"), "{stdout}");
    assert_eq!(stdout.matches("Completed").count(), 6, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = scratch_dir("notdb");
    let path = dir.join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = app().arg("--db").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notes.txt"),
        "the error names the file: {stderr}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was modified"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_sidecar_is_a_clear_error() {
    let out = app()
        .args([
            "--backend",
            "grpc",
            "--endpoint",
            "http://127.0.0.1:1",
            "--timeout",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the error names the endpoint: {stderr}"
    );
}
