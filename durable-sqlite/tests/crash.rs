//! Crash safety, for real: the `durable-sqlite-crashtest` workload runs in a
//! child process that is SIGKILLed at several points (mid-activity, during a
//! 1,000-activity fan-out, mid-episode, between episodes, right after
//! start) and restarted on the same file until it finishes. Then every
//! instance must have its expected output, every history must be whole and
//! free of duplicates, every activity must have run at least once, and the
//! file must pass `PRAGMA integrity_check`.

use durable_runtime::backend::Backend;
use durable_runtime::history::{EventKind, HistoryEvent, OrchestrationStatus};
use durable_sqlite::SqliteBackend;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Decides, line by line, when to kill the child.
type KillWhen = Box<dyn FnMut(&str) -> bool>;

struct Workload {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    fn start(db: &Path, log: &Path) -> Self {
        Self::spawn(&[db.as_os_str(), log.as_os_str()])
    }

    fn spawn(args: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable-sqlite-crashtest"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the crashtest binary failed: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("the child has no stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Workload { child, lines }
    }

    /// Reads markers until `kill_when` says so (then SIGKILLs the child and
    /// returns true) or the workload finishes (returns false).
    fn run(mut self, what: &str, limit: Duration, mut kill_when: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "ALL DONE" => {
                    let status = self
                        .child
                        .wait()
                        .unwrap_or_else(|e| panic!("waiting for the child failed: {e}"));
                    assert!(status.success(), "the workload exited with {status}");
                    return false;
                }
                Ok(line) if kill_when(&line) => {
                    // std's kill is SIGKILL on Unix: no destructor, no flush.
                    self.child
                        .kill()
                        .unwrap_or_else(|e| panic!("killing the child failed: {e}"));
                    let _ = self.child.wait();
                    return true;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("phase \"{what}\": no progress marker within {limit:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self
                        .child
                        .wait()
                        .unwrap_or_else(|e| panic!("waiting for the child failed: {e}"));
                    panic!("phase \"{what}\": the workload exited early with {status} (its stderr is above)");
                }
            }
        }
    }
}

/// Expected outcome per instance: id, output, activities, timers.
fn expected() -> Vec<(String, i64, usize, usize)> {
    let mut v = vec![("fan".to_string(), (0..1000).map(|k| k * 2).sum(), 1000, 0)];
    for i in 0..40 {
        v.push((format!("chain-{i}"), i + 5, 5, 0));
    }
    for i in 0..5 {
        v.push((format!("timers-{i}"), i + 3, 3, 3));
    }
    v
}

fn check_history(id: &str, h: &[HistoryEvent], activities: usize, timers: usize) {
    let count = |f: &dyn Fn(&EventKind) -> bool| h.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionStarted { .. })),
        1,
        "{id}: ExecutionStarted count"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionCompleted { .. })),
        1,
        "{id}: ExecutionCompleted count"
    );
    assert!(
        matches!(
            h.last().map(|e| &e.kind),
            Some(EventKind::ExecutionCompleted { .. })
        ),
        "{id}: the history does not end with ExecutionCompleted"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::OrchestratorStarted)),
        count(&|k| matches!(k, EventKind::OrchestratorCompleted)),
        "{id}: every episode that started must have completed exactly once"
    );
    let mut scheduled = HashSet::new();
    let mut completed = HashSet::new();
    let mut created = HashSet::new();
    let mut fired = HashSet::new();
    for e in h {
        match &e.kind {
            EventKind::TaskScheduled { .. } => {
                assert!(
                    scheduled.insert(e.event_id),
                    "{id}: task {} scheduled twice",
                    e.event_id
                )
            }
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            } => assert!(
                completed.insert(*task_scheduled_id),
                "{id}: task {task_scheduled_id} completed twice"
            ),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            } => panic!("{id}: task {task_scheduled_id} failed: {failure}"),
            EventKind::TimerCreated { .. } => {
                assert!(
                    created.insert(e.event_id),
                    "{id}: timer {} created twice",
                    e.event_id
                )
            }
            EventKind::TimerFired { timer_id, .. } => {
                assert!(
                    fired.insert(*timer_id),
                    "{id}: timer {timer_id} fired twice"
                )
            }
            _ => {}
        }
    }
    assert_eq!(scheduled.len(), activities, "{id}: activities scheduled");
    assert_eq!(
        completed, scheduled,
        "{id}: completions do not match schedules"
    );
    assert_eq!(created.len(), timers, "{id}: timers created");
    assert_eq!(
        fired, created,
        "{id}: fired timers do not match created ones"
    );
}

/// The file passes `PRAGMA integrity_check`.
async fn check_whole(backend: &SqliteBackend) {
    assert_eq!(
        backend
            .integrity_check()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        vec!["ok".to_string()]
    );
}

/// Instance `id` completed with `output` and a whole history of
/// `activities` tasks and `timers` timers, each once; returns the history.
async fn check_completed(
    backend: &SqliteBackend,
    id: &str,
    output: i64,
    activities: usize,
    timers: usize,
) -> Vec<HistoryEvent> {
    let meta = backend
        .get_instance(id, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("instance {id} is missing (lost)"));
    assert_eq!(
        meta.status,
        OrchestrationStatus::Completed,
        "{id}: {meta:?}"
    );
    assert_eq!(
        meta.output.as_deref(),
        Some(output.to_string().as_str()),
        "{id}"
    );
    let h = backend
        .get_history(id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    check_history(id, &h, activities, timers);
    h
}

/// No message or activity is left queued in the (closed) file at `db`.
fn check_drained(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
    for table in ["inbox", "activities"] {
        let left: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            left, 0,
            "work left in {table} after every instance finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let db = dir.path().join("crash.db");
    let log = dir.path().join("activities.log");
    let limit = Duration::from_secs(60);

    let mut kills = Vec::new();
    let nth = |prefix: &'static str, n: usize| {
        let mut seen = 0;
        Box::new(move |l: &str| {
            if l.starts_with(prefix) {
                seen += 1;
            }
            seen >= n
        }) as KillWhen
    };
    let phases: Vec<(&str, KillWhen)> = vec![
        ("right after start", nth("started", 1)),
        ("during the 1,000 fan-out", nth("fan ", 3)),
        // The fan-out's activities were queued first, so chains advance
        // only once it has drained.
        ("later in the fan-out", nth("fan ", 2)),
        ("mid-episode", nth("episode ", 10)),
        ("mid-activity", nth("mid-activity", 1)),
        ("between episodes", nth("timer-armed", 1)),
    ];
    let planned = phases.len();
    for (what, kill_when) in phases {
        if Workload::start(&db, &log).run(what, limit, kill_when) {
            kills.push(what);
        } else {
            break;
        }
    }
    assert_eq!(
        kills.len(),
        planned,
        "the workload finished before every kill point was reached (killed: {kills:?})"
    );
    assert!(
        !Workload::start(&db, &log).run("final run", Duration::from_secs(120), |_| false),
        "the final run was killed"
    );

    let backend = SqliteBackend::open(&db)
        .unwrap_or_else(|e| panic!("reopening after the crashes failed: {e}"));
    check_whole(&backend).await;
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading the activity log failed: {e}"));
    let mut runs: HashMap<(String, i32), usize> = HashMap::new();
    for line in text.lines() {
        if let Some((inst, task)) = line.split_once(' ') {
            if let Ok(task) = task.parse() {
                *runs.entry((inst.to_string(), task)).or_default() += 1;
            }
        }
    }
    let mut total_tasks = 0;
    for (id, output, activities, timers) in expected() {
        let h = check_completed(&backend, &id, output, activities, timers).await;
        for e in &h {
            if let EventKind::TaskCompleted {
                task_scheduled_id, ..
            } = e.kind
            {
                assert!(
                    runs.contains_key(&(id.clone(), task_scheduled_id)),
                    "{id}: task {task_scheduled_id} completed but never ran"
                );
            }
        }
        total_tasks += activities;
    }
    let executions: usize = runs.values().sum();
    assert!(executions >= total_tasks);
    drop(backend);
    check_drained(&db);
    println!(
        "killed {} times ({kills:?}); {executions} activity executions for {total_tasks} tasks \
         ({} re-runs)",
        kills.len(),
        executions - total_tasks
    );
}

/// A small seeded generator (xorshift64*), so a failing run can be
/// repeated with `DURABLE_CRASH_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Instances of the mix's round `r` (see the crashtest binary's `mix`):
/// id, output, activities and timers in its (last) history.
fn mix_expected(r: u32) -> Vec<(String, i64, usize, usize)> {
    let mut v = Vec::new();
    for i in 0..6 {
        v.push((format!("r{r}-chain-{i}"), i + 5, 5, 0));
    }
    v.push((format!("r{r}-fan"), (0..60).map(|k| k * 2).sum(), 60, 0));
    for i in 0..2 {
        v.push((format!("r{r}-timers-{i}"), i + 3, 3, 3));
    }
    for i in 0..3 {
        // Three children of two steps each: 30 i + 9; no activity of its own.
        v.push((format!("r{r}-parent-{i}"), 30 * i + 9, 0, 0));
        // Four generations of one step; the last one schedules nothing.
        v.push((format!("r{r}-count-{i}"), i + 4, 0, 0));
        v.push((format!("r{r}-event-{i}"), i + 1, 1, 0));
    }
    v
}

/// The adversary's crash mix, seeded: the workload (chains, a fan-out,
/// timers, sub-orchestrations, continue-as-new, events; a new round of
/// instances at each start) runs on the default options and is SIGKILLed
/// 32 times at random moments (after a random number of finished
/// activities, or right after it starts), then runs to the end. Nothing may
/// be lost, no history event duplicated, the file must stay whole; the
/// output reports the re-run activities and how soon each restarted
/// process ran its first activity after the kill (the takeover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_mix_survives_thirty_two_kills_at_random_moments() {
    const KILLS: usize = 32;
    const ROUNDS: u32 = 8;
    let seed = std::env::var("DURABLE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d0ab_1e00_0001_u64);
    println!("crash mix seed {seed} (DURABLE_CRASH_SEED repeats a run)");
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let db = dir.path().join("mix.db");
    let log = dir.path().join("activities.log");
    let limit = Duration::from_secs(60);
    let round_of = |run: usize| (run as u32).min(ROUNDS - 1);

    let mut takeovers = Vec::new();
    let mut killed_at: Option<Instant> = None;
    let mut kills = 0;
    let mut run = 0;
    let finished = loop {
        let round = round_of(run).to_string();
        let w = Workload::spawn(&[
            "mix".as_ref(),
            db.as_os_str(),
            log.as_os_str(),
            round.as_ref(),
        ]);
        let last = kills == KILLS;
        // Kill after this many finished activities; 0: right after start.
        let after = if last { u64::MAX } else { rng.below(40) };
        let mut acts = 0;
        let mut first_act = true;
        let was_killed = w.run(&format!("run {run}"), limit, |line| {
            if line == "act" {
                if first_act {
                    first_act = false;
                    if let Some(t) = killed_at.take() {
                        takeovers.push(t.elapsed());
                    }
                }
                acts += 1;
            }
            let kill = match line {
                "started" => after == 0,
                "act" => acts >= after,
                _ => false,
            };
            if kill {
                killed_at = Some(Instant::now());
            }
            kill
        });
        run += 1;
        if was_killed {
            assert!(!last, "the final run was killed");
            kills += 1;
        } else if last {
            break true;
        } else {
            // Everything scheduled so far finished before the kill point:
            // the next run adds a round (or, past the last, ends it).
            killed_at = None;
            if round_of(run - 1) == ROUNDS - 1 {
                break kills >= KILLS;
            }
        }
    };
    assert!(
        finished,
        "the mix finished after {kills} kills, before the planned {KILLS}"
    );

    let backend = SqliteBackend::open(&db)
        .unwrap_or_else(|e| panic!("reopening after the crashes failed: {e}"));
    check_whole(&backend).await;
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading the activity log failed: {e}"));
    let executions = text.lines().count();
    let distinct = text.lines().collect::<HashSet<_>>().len();
    let mut instances = 0;
    for r in 0..ROUNDS {
        for (id, output, activities, timers) in mix_expected(r) {
            check_completed(&backend, &id, output, activities, timers).await;
            instances += 1;
        }
    }
    drop(backend);
    check_drained(&db);
    takeovers.sort();
    let ms = |d: Option<&Duration>| d.map_or(0, |d| d.as_millis());
    println!(
        "crash mix: {kills} kills over {run} runs; {instances} instances (plus their \
         sub-orchestrations), 0 lost, 0 duplicated history events; {executions} activity \
         executions, {} re-runs of an activity already run; first activity after a kill: \
         min {} ms, median {} ms, max {} ms ({} takeovers)",
        executions - distinct,
        ms(takeovers.first()),
        ms(takeovers.get(takeovers.len() / 2)),
        ms(takeovers.last()),
        takeovers.len()
    );
}

/// Two processes on one file: one holds an episode (and renews its lease,
/// 60 s long) and is SIGKILLed. While it lives, the other never gets the
/// episode; once it is dead, the other gets it within a heartbeat, not when
/// the lease runs out. The output reports the takeover time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_a_killed_process_held_moves_to_a_live_one_at_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let db = dir.path().join("held.db");
    let mut holder = Workload::spawn(&["hold".as_ref(), db.as_os_str(), "60000".as_ref()]);
    match holder.lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if line == "holding held" => {}
        other => {
            let _ = holder.child.kill();
            panic!("the holder did not report its lease: {other:?}");
        }
    }
    let backend = SqliteBackend::open(&db).unwrap_or_else(|e| panic!("opening failed: {e}"));
    // Three heartbeats of this backend: the holder is alive, so its lease
    // stands.
    let early =
        tokio::time::timeout(Duration::from_secs(3), backend.next_orchestration_item()).await;
    assert!(
        early.is_err(),
        "a live process's episode was delivered to another: {early:?}"
    );
    holder
        .child
        .kill()
        .unwrap_or_else(|e| panic!("killing the holder failed: {e}"));
    let _ = holder.child.wait();
    let killed = Instant::now();
    let item = tokio::time::timeout(Duration::from_secs(30), backend.next_orchestration_item())
        .await
        .unwrap_or_else(|_| {
            panic!("the killed process's episode was not delivered within 30 s (its lease is 60 s)")
        })
        .unwrap_or_else(|e| panic!("leasing failed: {e}"));
    let took = killed.elapsed();
    assert_eq!(item.instance_id, "held");
    println!(
        "takeover of a killed process's 60 s lease: {} ms after the kill",
        took.as_millis()
    );
}

/// Two processes share one file and the mix's first three rounds; one is
/// SIGKILLed mid-run, after 30 of its activities. The survivor, which
/// never restarts, must finish everything, including the episodes and
/// activities the dead one held: nothing lost, no history event
/// duplicated, the file whole. The output reports how long the survivor
/// took after the kill and how many activities ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_two_processes_finishes_what_the_killed_one_held() {
    const ROUNDS: u32 = 3;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let db = dir.path().join("pair.db");
    let log = dir.path().join("activities.log");
    let round = (ROUNDS - 1).to_string();
    let args = [
        "mix".as_ref(),
        db.as_os_str(),
        log.as_os_str(),
        round.as_ref(),
    ];
    let victim = Workload::spawn(&args);
    let survivor = Workload::spawn(&args);
    let limit = Duration::from_secs(60);
    let mut acts = 0;
    let killed = victim.run("the process to kill", limit, |line| {
        acts += usize::from(line == "act");
        acts >= 30
    });
    assert!(
        killed,
        "the process to kill finished all the work before its 30th activity"
    );
    let killed_at = Instant::now();
    let mut survivor_acts = 0;
    let finished = !survivor.run("the survivor", limit, |line| {
        survivor_acts += usize::from(line == "act");
        false
    });
    assert!(finished, "the survivor was stopped");
    let took = killed_at.elapsed();

    let backend =
        SqliteBackend::open(&db).unwrap_or_else(|e| panic!("reopening after the run failed: {e}"));
    check_whole(&backend).await;
    let mut instances = 0;
    for r in 0..ROUNDS {
        for (id, output, activities, timers) in mix_expected(r) {
            check_completed(&backend, &id, output, activities, timers).await;
            instances += 1;
        }
    }
    drop(backend);
    check_drained(&db);
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading the activity log failed: {e}"));
    let executions = text.lines().count();
    let distinct = text.lines().collect::<HashSet<_>>().len();
    println!(
        "two processes, one killed after 30 activities: the survivor ran {survivor_acts} \
         activities and finished {instances} instances {} ms after the kill; 0 lost, \
         0 duplicated history events; {executions} activity executions, {} re-runs",
        took.as_millis(),
        executions - distinct
    );
}
