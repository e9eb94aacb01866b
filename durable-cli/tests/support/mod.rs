//! What the tests of the binary share: the orchestrations a worker runs,
//! and running the binary with bounded waits.
#![allow(dead_code)] // each test binary uses a part

use durable_runtime::{ActivityError, Registry};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long any one wait may take before the test fails saying what it
/// waited for.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// The orchestrations and activities the tests' worker runs.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .activity_fn("hello", |_ctx, name: String| async move {
            Ok::<_, ActivityError>(format!("Hello, {name}!"))
        })
        .activity_fn("charge", |_ctx, _amount: u32| async move {
            Err::<u32, _>(ActivityError::new("CardDeclined", "card expired").non_retriable())
        })
        .orchestrator_fn("greet", |ctx, name: String| async move {
            let greeting: String = ctx.call_activity_by_name("hello", &name).await?;
            Ok(greeting)
        })
        .orchestrator_fn("checkout", |ctx, amount: u32| async move {
            let charged: u32 = ctx.call_activity_by_name("charge", &amount).await?;
            Ok(charged)
        })
        .orchestrator_fn("approval", |ctx, _: ()| async move {
            ctx.set_custom_status(&"waiting for approval");
            let approved: bool = ctx.wait_for_external_event("approve").await?;
            Ok(if approved { "approved" } else { "rejected" }.to_string())
        })
        .orchestrator_fn("parent", |ctx, name: String| async move {
            let child: String = ctx
                .call_sub_orchestrator_by_name("greet", None, &name, None)
                .await?;
            Ok(child)
        })
        .orchestrator_fn("waiting_parent", |ctx, _: ()| async move {
            let child: String = ctx
                .call_sub_orchestrator_by_name("approval", None, &(), None)
                .await?;
            Ok(child)
        })
        .orchestrator_fn("timed", |ctx, name: String| async move {
            ctx.create_timer(Duration::from_millis(1)).await;
            let greeting: String = ctx.call_activity_by_name("hello", &name).await?;
            Ok(greeting)
        })
}

/// What a run of the binary printed and how it ended.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self
    }

    #[track_caller]
    pub(crate) fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}, got {self:#?}");
        self
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

pub(crate) fn durable(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_durable"));
    cmd.args(args)
        .env_remove("DURABLE_STORE")
        .env_remove("DURABLE_ENDPOINT")
        .env_remove("DURABLE_TASKHUB")
        .env_remove("DURABLE_SCHEMA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads a child's whole stream on a thread.
pub(crate) fn drain(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// Waits for the child to end (within [`LIMIT`], else kills it and fails).
pub(crate) fn finish(mut child: Child, stdout: mpsc::Receiver<String>, what: &str) -> Run {
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let stdout = match stdout.recv_timeout(LIMIT) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            panic!("`{what}` did not finish within {LIMIT:?}");
        }
    };
    let status = child.wait().expect("waiting for the child");
    Run {
        code: status.code().expect("the CLI exits with a code"),
        stdout,
        stderr: stderr.recv_timeout(LIMIT).unwrap_or_default(),
    }
}

/// Runs the binary with these arguments and `input` on its standard input.
pub(crate) fn run_with_input(args: &[&str], input: &str) -> Run {
    let mut cmd = durable(args);
    cmd.stdin(Stdio::piped());
    let mut child = Running::spawn(cmd);
    {
        use std::io::Write;
        let mut stdin = child.child().stdin.take().expect("stdin is piped");
        stdin
            .write_all(input.as_bytes())
            .expect("writing to the CLI");
    }
    let stdout = drain(child.child().stdout.take().expect("stdout is piped"));
    child.finish(stdout, &args.join(" "))
}

/// Runs the binary with exactly these arguments.
pub(crate) fn run_raw(args: &[&str]) -> Run {
    let mut child = durable(args).spawn().expect("starting the durable binary");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    finish(child, stdout, &args.join(" "))
}

/// A child process that is killed when dropped, so a test that fails
/// while it runs leaves nothing behind.
pub(crate) struct Running(Option<Child>);

impl Running {
    /// Starts the command.
    pub(crate) fn spawn(mut cmd: Command) -> Running {
        Running(Some(cmd.spawn().expect("starting the durable binary")))
    }

    /// The child, until [`finish`](Self::finish) takes it.
    pub(crate) fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still running")
    }

    /// Waits for the child to end, as [`finish`] does.
    pub(crate) fn finish(mut self, stdout: mpsc::Receiver<String>, what: &str) -> Run {
        finish(self.0.take().expect("finished once"), stdout, what)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `durable serve` with these arguments; returns it and the address
/// it printed.
pub(crate) fn start_serve(args: &[&str]) -> (Running, String, mpsc::Receiver<String>) {
    let mut server = Running::spawn(durable(args));
    let stdout = server.child().stdout.take().expect("stdout is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("durable serve printed nothing within {LIMIT:?}"));
    let addr = first
        .strip_prefix("durable serve: listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (server, addr, lines)
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
pub(crate) fn stop_serve(mut server: Running, lines: mpsc::Receiver<String>) {
    let pid = server.child().id().to_string();
    // The shell's own kill: no kill binary needed.
    let sent = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("running sh -c kill");
    assert!(sent.success(), "kill -TERM failed");
    let last = loop {
        match lines.recv_timeout(LIMIT) {
            Ok(line) if line == "durable serve: stopped" => break line,
            Ok(_) => continue,
            Err(_) => panic!("durable serve did not stop within {LIMIT:?} of SIGTERM"),
        }
    };
    assert_eq!(last, "durable serve: stopped");
    let status = server.child().wait().expect("waiting for durable serve");
    assert_eq!(
        status.code(),
        Some(0),
        "durable serve exited with {status:?}"
    );
}
