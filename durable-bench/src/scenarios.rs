//! The scenarios S1..S6 of the benchmark, run against any backend.
//!
//! Every run of a scenario gets a fresh backend and a fresh worker, so runs
//! do not see each other's instances. The client and the worker share one
//! process (and, for the in-memory backend, one store).

use crate::backend::{BackendFactory, BoxError, Needs};
use crate::report::{Combine, Measurement, Unit};
use clap::{Args, ValueEnum};
use durable_runtime::{
    ActivityError, Backend, Client, OrchestrationState, OrchestrationStatus, Registry,
    ScheduleOptions, Worker, WorkerHandle, WorkerOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The scenarios, in the numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Scenario {
    /// Many short orchestrations chaining three activities: throughput.
    S1,
    /// One orchestration fanning out to many activities: wall time.
    S2,
    /// One long chain of sequential activities: linearity, sticky cache.
    S3,
    /// Many instances waiting for an external event: memory, event rate.
    S4,
    /// One parent starting many sub-orchestrations: wall time.
    S5,
    /// Single short orchestrations one after another: latency.
    S6,
}

impl Scenario {
    /// Every scenario, in the order they run: S4 first, so its resident
    /// memory reading starts from a heap no other scenario has grown.
    pub(crate) const ALL: [Scenario; 6] = [
        Scenario::S4,
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S5,
        Scenario::S6,
    ];

    /// The id used in reports.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
            Scenario::S5 => "S5",
            Scenario::S6 => "S6",
        }
    }

    /// A short description.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Scenario::S1 => "seq3 throughput",
            Scenario::S2 => "fan-out",
            Scenario::S3 => "long chain",
            Scenario::S4 => "waiting instances",
            Scenario::S5 => "sub-orchestrations",
            Scenario::S6 => "seq3 latency",
        }
    }
}

/// How big each scenario is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sizes {
    /// S1: orchestrations.
    pub(crate) s1_count: usize,
    /// S2: activities fanned out.
    pub(crate) s2_count: usize,
    /// S3: activities in the short chain.
    pub(crate) s3_short: usize,
    /// S3: activities in the long chain.
    pub(crate) s3_long: usize,
    /// S3: how long the long chain may run without the sticky cache before
    /// it is cut short (zero skips that run).
    pub(crate) s3_nocache_budget: Duration,
    /// S4: waiting instances.
    pub(crate) s4_count: usize,
    /// S5: sub-orchestrations.
    pub(crate) s5_count: usize,
    /// S6: orchestrations measured (after a few unmeasured warm-up ones).
    pub(crate) s6_count: usize,
    /// S1: extra instances waiting for an event that never comes, each with
    /// a client waiting for its completion throughout the run.
    pub(crate) s1_idle_waiters: usize,
}

impl Default for Sizes {
    /// The sizes the targets are stated for.
    fn default() -> Self {
        Sizes {
            s1_count: 1_000,
            s2_count: 10_000,
            s3_short: 1_000,
            s3_long: 10_000,
            s3_nocache_budget: Duration::from_secs(60),
            s4_count: 10_000,
            s5_count: 1_000,
            s6_count: 200,
            s1_idle_waiters: 0,
        }
    }
}

/// Command-line overrides of the scenario sizes (e.g. smaller runs for a
/// slow remote backend). Unset options keep the backend's defaults.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct SizeArgs {
    /// S1: number of seq3 orchestrations.
    #[arg(long)]
    s1_count: Option<usize>,
    /// S2: number of activities fanned out.
    #[arg(long)]
    s2_count: Option<usize>,
    /// S3: length of the short chain.
    #[arg(long)]
    s3_short: Option<usize>,
    /// S3: length of the long chain.
    #[arg(long)]
    s3_long: Option<usize>,
    /// S3: seconds the long chain may run without the sticky cache (0 skips it).
    #[arg(long)]
    s3_nocache_budget: Option<u64>,
    /// S4: number of waiting instances.
    #[arg(long)]
    s4_count: Option<usize>,
    /// S5: number of sub-orchestrations.
    #[arg(long)]
    s5_count: Option<usize>,
    /// S6: number of measured orchestrations.
    #[arg(long)]
    s6_count: Option<usize>,
    /// S1: extra instances that wait for an event that never comes, each
    /// with a client waiting for its completion during the whole run.
    #[arg(long = "idle-waiters")]
    s1_idle_waiters: Option<usize>,
}

impl SizeArgs {
    /// `base` with these overrides applied.
    pub(crate) fn apply(&self, base: Sizes) -> Sizes {
        Sizes {
            s1_count: self.s1_count.unwrap_or(base.s1_count).max(1),
            s2_count: self.s2_count.unwrap_or(base.s2_count).max(1),
            s3_short: self.s3_short.unwrap_or(base.s3_short).max(1),
            s3_long: self.s3_long.unwrap_or(base.s3_long).max(1),
            s3_nocache_budget: self
                .s3_nocache_budget
                .map_or(base.s3_nocache_budget, Duration::from_secs),
            s4_count: self.s4_count.unwrap_or(base.s4_count).max(1),
            s5_count: self.s5_count.unwrap_or(base.s5_count).max(1),
            s6_count: self.s6_count.unwrap_or(base.s6_count).max(1),
            s1_idle_waiters: self.s1_idle_waiters.unwrap_or(base.s1_idle_waiters),
        }
    }
}

/// Command-line overrides of the worker's options (for diagnosis: e.g. one
/// orchestration episode at a time).
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct WorkerArgs {
    /// Orchestration episodes the worker runs at once (default: the worker's default).
    #[arg(long)]
    max_concurrent_orchestrations: Option<usize>,
    /// Activities the worker runs at once (default: the worker's default).
    #[arg(long)]
    max_concurrent_activities: Option<usize>,
    /// Live executions the worker keeps between episodes (default: the
    /// worker's default; S3's uncached runs always use 0).
    #[arg(long)]
    cache_capacity: Option<usize>,
}

impl WorkerArgs {
    /// `base` with these overrides applied.
    fn apply(&self, base: WorkerOptions) -> WorkerOptions {
        WorkerOptions {
            max_concurrent_orchestrations: self
                .max_concurrent_orchestrations
                .unwrap_or(base.max_concurrent_orchestrations),
            max_concurrent_activities: self
                .max_concurrent_activities
                .unwrap_or(base.max_concurrent_activities),
            cache_capacity: self.cache_capacity.unwrap_or(base.cache_capacity),
            ..base
        }
    }
}

/// How many times the body of a single-instance scenario's orchestrator
/// (chain, fanout, parent) was started. The engine starts a body once per
/// execution it builds from scratch, so for one instance every start after
/// the first is a full replay of the history: a sticky-cache miss.
static BODY_STARTS: AtomicUsize = AtomicUsize::new(0);

/// S4 runs so far in this process.
static S4_RUNS: AtomicUsize = AtomicUsize::new(0);

/// S1 runs with idle waiters so far in this process.
static IDLE_RUNS: AtomicUsize = AtomicUsize::new(0);

fn body_started() {
    BODY_STARTS.fetch_add(1, Ordering::Relaxed);
}

/// Counts full replays of the one instance a closure runs.
async fn counting_replays<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = BODY_STARTS.load(Ordering::Relaxed);
    let out = f.await;
    let starts = BODY_STARTS.load(Ordering::Relaxed) - before;
    (out, starts.saturating_sub(1))
}

/// The orchestrators and activities every scenario uses.
fn registry() -> Registry {
    Registry::new()
        .activity_fn("inc", |_ctx, x: i64| async move {
            Ok::<_, ActivityError>(x + 1)
        })
        .orchestrator_fn("seq3", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("inc", &a).await?;
            let c: i64 = ctx.call_activity_by_name("inc", &b).await?;
            Ok(c)
        })
        .orchestrator_fn("chain", |ctx, n: i64| async move {
            body_started();
            let mut x = 0i64;
            for _ in 0..n {
                x = ctx.call_activity_by_name("inc", &x).await?;
            }
            Ok(x)
        })
        .orchestrator_fn("fanout", |ctx, n: i64| async move {
            body_started();
            let calls: Vec<_> = (0..n)
                .map(|i| ctx.call_activity_by_name::<i64>("inc", &i))
                .collect();
            let results = ctx.when_all(calls).await?;
            Ok(results.iter().sum::<i64>())
        })
        .orchestrator_fn("wait", |ctx, _: ()| async move {
            let v: i64 = ctx.wait_for_external_event("go").await?;
            Ok(v)
        })
        .orchestrator_fn("parent", |ctx, n: i64| async move {
            body_started();
            let calls: Vec<_> = (0..n)
                .map(|i| ctx.call_sub_orchestrator_by_name::<i64>("child", None, &i, None))
                .collect();
            let results = ctx.when_all(calls).await?;
            Ok(results.iter().sum::<i64>())
        })
        .orchestrator_fn("child", |ctx, x: i64| async move {
            let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
            Ok(y)
        })
}

/// A backend with a worker on it, for one scenario run.
struct Running {
    backend: Arc<dyn Backend>,
    client: Client,
    worker: WorkerHandle,
}

impl Running {
    async fn stop(self) {
        self.worker.shutdown().await;
        drop(self.client);
        drop(self.backend);
    }
}

/// Runs of each cached chain in one S3 run.
const CACHED_RUNS: usize = 3;

/// What one chain run did.
struct ChainRun {
    /// Wall time, if it finished within its budget.
    secs: Option<f64>,
    /// Activities completed (all of them if it finished).
    steps_done: usize,
    /// Times the orchestration was replayed from the start.
    replays: usize,
}

/// Runs scenarios on one backend.
#[derive(Debug)]
pub(crate) struct Bench {
    factory: BackendFactory,
    sizes: Sizes,
    worker: WorkerArgs,
    timeout: Duration,
}

fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn n_fmt(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Resident memory of this process in bytes, where the system reports it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Bench {
    /// A bench for `factory` with these sizes and worker overrides;
    /// `timeout` bounds every wait.
    pub(crate) fn new(
        factory: BackendFactory,
        sizes: Sizes,
        worker: WorkerArgs,
        timeout: Duration,
    ) -> Self {
        Bench {
            factory,
            sizes,
            worker,
            timeout,
        }
    }

    /// The sizes in use.
    pub(crate) fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// A fresh backend and a worker on it: default options, then the
    /// command-line overrides, then `force` (what the scenario itself needs).
    async fn start(
        &self,
        needs: Needs,
        force: impl FnOnce(&mut WorkerOptions),
    ) -> Result<Running, BoxError> {
        let backend = self.factory.open(needs).await?;
        let mut options = self.worker.apply(WorkerOptions::default());
        force(&mut options);
        let worker = Worker::new(backend.clone(), registry())
            .with_options(options)
            .start()?;
        Ok(Running {
            client: Client::new(backend.clone()),
            backend,
            worker,
        })
    }

    async fn start_default(&self) -> Result<Running, BoxError> {
        self.start(
            Needs {
                max_history_events: 0,
            },
            |_| {},
        )
        .await
    }

    /// Waits for `id` to complete successfully and checks its output.
    async fn expect_output(&self, client: &Client, id: &str, want: i64) -> Result<(), BoxError> {
        let state = client.wait_for_completion(id, self.timeout).await?;
        check(&state, id, want)
    }

    /// Runs one scenario once.
    pub(crate) async fn run(&self, s: Scenario) -> Result<Vec<Measurement>, BoxError> {
        match s {
            Scenario::S1 => self.s1().await,
            Scenario::S2 => self.s2().await,
            Scenario::S3 => self.s3().await,
            Scenario::S4 => self.s4().await,
            Scenario::S5 => self.s5().await,
            Scenario::S6 => self.s6().await,
        }
    }

    /// S1: schedule n seq3 orchestrations, then wait for all of them.
    async fn s1(&self) -> Result<Vec<Measurement>, BoxError> {
        let n = self.sizes.s1_count;
        let r = self.start_default().await?;
        let idle = self.idle_waiters(&r.client).await?;
        let t0 = Instant::now();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(
                r.client
                    .schedule_by_name("seq3", &(i as i64), ScheduleOptions::default())
                    .await?,
            );
        }
        for (i, id) in ids.iter().enumerate() {
            self.expect_output(&r.client, id, i as i64 + 3).await?;
        }
        let secs = since(t0);
        for waiter in &idle {
            waiter.abort();
        }
        // Stopping the worker closes its work-item stream on a sidecar, so
        // the Python worker below gets all of its own work.
        r.stop().await;
        let mut params = format!("{} orchestrations x 3 activities", n_fmt(n));
        if !idle.is_empty() {
            params += &format!(", {} idle waiters", n_fmt(idle.len()));
        }
        let rust = n as f64 / secs;
        let mut out = vec![Measurement::new(
            "S1",
            "seq3 throughput",
            if self.factory.compare_python() {
                format!("{params}, Rust (durable) worker + client")
            } else {
                params.clone()
            },
            Unit::PerSecond("orch"),
            rust,
        )
        .target(self.factory.targets().s1)];
        if self.factory.compare_python() {
            let python = self.factory.python_s1(n, self.timeout).await?;
            out.push(Measurement::new(
                "S1",
                "seq3 throughput, Python SDK",
                format!("{params}, Python SDK worker + client, same sidecar"),
                Unit::PerSecond("orch"),
                python.per_second,
            ));
            out.push(
                Measurement::new(
                    "S1",
                    "Rust/Python throughput ratio",
                    "per run: durable's S1 over the Python SDK's S1 run just after it",
                    Unit::Ratio,
                    rust / python.per_second,
                )
                .note("the median of the per-run ratios, not the ratio of the medians"),
            );
            if let Some(own) = self
                .factory
                .python_s1_on_python_server(n, self.timeout)
                .await
            {
                let own = own?;
                out.push(Measurement::new(
                    "S1",
                    "seq3 throughput, Python SDK on its own server",
                    format!(
                        "{params}, Python SDK worker + client, the Python package's in-memory sidecar"
                    ),
                    Unit::PerSecond("orch"),
                    own.per_second,
                ));
                out.push(
                    Measurement::new(
                        "S1",
                        "Python SDK serve/own-server ratio",
                        "per run: the Python SDK's S1 on durable's server over its S1 on the \
                         Python in-memory sidecar",
                        Unit::Ratio,
                        python.per_second / own.per_second,
                    )
                    .note("above 1: faster on durable's server"),
                );
            }
        }
        Ok(out)
    }

    /// S1's idle waiters: instances waiting for an event nobody raises, once
    /// all of them are waiting, each with a client task waiting for its
    /// completion (until aborted).
    async fn idle_waiters(
        &self,
        client: &Client,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
        let n = self.sizes.s1_idle_waiters;
        let run = IDLE_RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("idle-{pid}-{run}-{i:05}");
            ids.push(
                client
                    .schedule_by_name("wait", &(), ScheduleOptions::with_id(id))
                    .await?,
            );
        }
        for id in &ids {
            client.wait_for_start(id, self.timeout).await?;
        }
        let timeout = self.timeout;
        Ok(ids
            .into_iter()
            .map(|id| {
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = client.wait_for_completion(&id, timeout).await;
                })
            })
            .collect())
    }

    /// S2: one orchestration calling n activities at once and summing them.
    async fn s2(&self) -> Result<Vec<Measurement>, BoxError> {
        let n = self.sizes.s2_count;
        let r = self
            .start(
                Needs {
                    max_history_events: 3 * n + 100,
                },
                |_| {},
            )
            .await?;
        let t0 = Instant::now();
        let (done, replays) = counting_replays(async {
            let id = r
                .client
                .schedule_by_name("fanout", &(n as i64), ScheduleOptions::default())
                .await?;
            let n64 = n as i64;
            self.expect_output(&r.client, &id, n64 * (n64 + 1) / 2)
                .await
        })
        .await;
        done?;
        let secs = since(t0);
        r.stop().await;
        let params = format!("1 orchestration, {} parallel activities", n_fmt(n));
        Ok(vec![
            Measurement::new(
                "S2",
                "fan-out wall time",
                params.clone(),
                Unit::Seconds,
                secs,
            )
            .target(self.factory.targets().s2),
            Measurement::new(
                "S2",
                "full replays (cache misses)",
                params,
                Unit::Count("replays"),
                replays as f64,
            ),
        ])
    }

    /// One chain of `n` activities, cut short after `budget`.
    async fn chain(&self, n: usize, cache: bool, budget: Duration) -> Result<ChainRun, BoxError> {
        let r = self
            .start(
                Needs {
                    max_history_events: 5 * n + 100,
                },
                |o| {
                    if !cache {
                        o.cache_capacity = 0;
                    }
                },
            )
            .await?;
        let t0 = Instant::now();
        let (run, replays) = counting_replays(async {
            let id = r
                .client
                .schedule_by_name("chain", &(n as i64), ScheduleOptions::default())
                .await?;
            let waited = tokio::time::timeout(
                budget,
                r.client.wait_for_completion(&id, budget + self.timeout),
            )
            .await;
            Ok::<_, BoxError>(match waited {
                Ok(state) => {
                    check(&state?, &id, n as i64)?;
                    (Some(since(t0)), n)
                }
                Err(_) => {
                    let history = r.client.history(&id).await?;
                    let done = history
                        .iter()
                        .filter(|e| e.kind.type_name() == "TaskCompleted")
                        .count();
                    (None, done)
                }
            })
        })
        .await;
        r.stop().await;
        let (secs, steps_done) = run?;
        Ok(ChainRun {
            secs,
            steps_done,
            replays,
        })
    }

    /// A cached chain of `n` run [`CACHED_RUNS`] times: the median wall time
    /// and the full replays summed over the runs.
    async fn chain_median(&self, n: usize) -> Result<(f64, usize), BoxError> {
        let mut times = Vec::with_capacity(CACHED_RUNS);
        let mut replays = 0;
        for _ in 0..CACHED_RUNS {
            let run = self.chain(n, true, self.timeout).await?;
            let Some(secs) = run.secs else {
                return Err(format!("the {n}-step chain did not finish").into());
            };
            times.push(secs);
            replays += run.replays;
        }
        times.sort_by(f64::total_cmp);
        Ok((times[times.len() / 2], replays))
    }

    /// S3: chains of `short` and `long` activities with the sticky cache,
    /// then without it.
    async fn s3(&self) -> Result<Vec<Measurement>, BoxError> {
        let (short, long) = (self.sizes.s3_short, self.sizes.s3_long);
        let forever = self.timeout;
        let steps = |n: usize| format!("{} sequential activities", n_fmt(n));
        let uncached = |n: usize| format!("{} sequential activities, cache_capacity 0", n_fmt(n));
        let mut out = Vec::new();
        // The cached chains are short (the 1,000-step one takes about 10 ms),
        // so one scheduling hiccup moves their ratio a lot: each is run
        // CACHED_RUNS times and the median taken; replays are summed, so
        // none is hidden.
        let (t_short, _) = self.chain_median(short).await?;
        let (t_long, replays) = self.chain_median(long).await?;
        out.push(Measurement::new(
            "S3",
            "chain wall time (cache)",
            format!("{}, median of {CACHED_RUNS}", steps(short)),
            Unit::Seconds,
            t_short,
        ));
        out.push(Measurement::new(
            "S3",
            "long chain wall time (cache)",
            format!("{}, median of {CACHED_RUNS}", steps(long)),
            Unit::Seconds,
            t_long,
        ));
        out.push(
            Measurement::new(
                "S3",
                "long/short ratio (cache)",
                format!(
                    "{} vs {} steps (linear = {})",
                    n_fmt(long),
                    n_fmt(short),
                    long / short
                ),
                Unit::Ratio,
                t_long / t_short,
            )
            .target(self.factory.targets().s3),
        );
        out.push(Measurement::new(
            "S3",
            "long chain full replays (cache misses)",
            format!("{}, sum over {CACHED_RUNS}", steps(long)),
            Unit::Count("replays"),
            replays as f64,
        ));
        let Some(u_short) = self.chain(short, false, forever).await?.secs else {
            return Err("the uncached chain did not finish".into());
        };
        out.push(Measurement::new(
            "S3",
            "chain wall time (no cache)",
            uncached(short),
            Unit::Seconds,
            u_short,
        ));
        let budget = self.sizes.s3_nocache_budget;
        if !budget.is_zero() {
            let c = self.chain(long, false, budget).await?;
            match c.secs {
                Some(u_long) => {
                    out.push(Measurement::new(
                        "S3",
                        "long chain wall time (no cache)",
                        uncached(long),
                        Unit::Seconds,
                        u_long,
                    ));
                    out.push(Measurement::new(
                        "S3",
                        "long/short ratio (no cache)",
                        format!("{} vs {} steps", n_fmt(long), n_fmt(short)),
                        Unit::Ratio,
                        u_long / u_short,
                    ));
                }
                None => out.push(
                    Measurement::new(
                        "S3",
                        "long chain wall time (no cache)",
                        uncached(long),
                        Unit::Seconds,
                        budget.as_secs_f64(),
                    )
                    .lower_bound()
                    .note(format!(
                        "cut short after {} s at step {} of {} (every episode replays the whole history)",
                        budget.as_secs(),
                        n_fmt(c.steps_done),
                        n_fmt(long)
                    )),
                ),
            }
        }
        Ok(out)
    }

    /// S4: n instances waiting for an event; memory per waiting instance,
    /// then the rate at which raised events complete them.
    async fn s4(&self) -> Result<Vec<Measurement>, BoxError> {
        let n = self.sizes.s4_count;
        let r = self.start_default().await?;
        let before = resident_bytes();
        // Ids unique per run and process: a sidecar keeps instances between
        // runs and between invocations.
        let run = S4_RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(
                r.client
                    .schedule_by_name(
                        "wait",
                        &(),
                        ScheduleOptions::with_id(format!("wait-{pid}-{run}-{i:05}")),
                    )
                    .await?,
            );
        }
        for id in &ids {
            let state = r.client.wait_for_start(id, self.timeout).await?;
            if state.status() != OrchestrationStatus::Running {
                return Err(
                    format!("instance {id} is {} instead of waiting", state.status()).into(),
                );
            }
        }
        let after = resident_bytes();
        let t0 = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            r.client.raise_event(id, "go", &(i as i64)).await?;
        }
        for (i, id) in ids.iter().enumerate() {
            self.expect_output(&r.client, id, i as i64).await?;
        }
        let secs = since(t0);
        r.stop().await;
        let mut out = vec![Measurement::new(
            "S4",
            "events raised -> completed",
            format!("{} waiting instances, one event each", n_fmt(n)),
            Unit::PerSecond("events"),
            n as f64 / secs,
        )];
        // On a sidecar the instances live in another process.
        if self.factory.is_remote() {
            return Ok(out);
        }
        if let (Some(b), Some(a)) = (before, after) {
            out.push(
                Measurement::new(
                    "S4",
                    "resident memory per waiting instance",
                    format!("VmRSS delta / {}", n_fmt(n)),
                    Unit::Bytes,
                    a.saturating_sub(b) as f64 / n as f64,
                )
                .combine(Combine::First)
                .target(self.factory.targets().s4),
            );
        }
        Ok(out)
    }

    /// S5: one parent starting n children that each call one activity.
    async fn s5(&self) -> Result<Vec<Measurement>, BoxError> {
        let n = self.sizes.s5_count;
        let r = self
            .start(
                Needs {
                    max_history_events: 3 * n + 100,
                },
                |_| {},
            )
            .await?;
        let t0 = Instant::now();
        let (done, replays) = counting_replays(async {
            let id = r
                .client
                .schedule_by_name("parent", &(n as i64), ScheduleOptions::default())
                .await?;
            let n64 = n as i64;
            self.expect_output(&r.client, &id, n64 * (n64 + 1) / 2)
                .await
        })
        .await;
        done?;
        let secs = since(t0);
        r.stop().await;
        let params = format!("1 parent, {} children x 1 activity", n_fmt(n));
        Ok(vec![
            Measurement::new(
                "S5",
                "sub-orchestrations wall time",
                params.clone(),
                Unit::Seconds,
                secs,
            ),
            Measurement::new(
                "S5",
                "parent full replays (cache misses)",
                params,
                Unit::Count("replays"),
                replays as f64,
            ),
        ])
    }

    /// S6: seq3 orchestrations one at a time, schedule to completion seen.
    async fn s6(&self) -> Result<Vec<Measurement>, BoxError> {
        const WARM_UP: usize = 10;
        let n = self.sizes.s6_count;
        let r = self.start_default().await?;
        let mut lat = Vec::with_capacity(n);
        for i in 0..WARM_UP + n {
            let t0 = Instant::now();
            let id = r
                .client
                .schedule_by_name("seq3", &(i as i64), ScheduleOptions::default())
                .await?;
            self.expect_output(&r.client, &id, i as i64 + 3).await?;
            if i >= WARM_UP {
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        r.stop().await;
        lat.sort_by(f64::total_cmp);
        let params = format!("{} seq3 orchestrations one at a time", n_fmt(n));
        let at = |p: f64| percentile(&lat, p);
        Ok(vec![
            Measurement::new("S6", "latency p50", params.clone(), Unit::Millis, at(50.0))
                .target(self.factory.targets().s6),
            Measurement::new("S6", "latency p90", params.clone(), Unit::Millis, at(90.0)),
            Measurement::new("S6", "latency p99", params.clone(), Unit::Millis, at(99.0)),
            Measurement::new("S6", "latency max", params, Unit::Millis, at(100.0)),
        ])
    }
}

fn check(state: &OrchestrationState, id: &str, want: i64) -> Result<(), BoxError> {
    if state.status() != OrchestrationStatus::Completed {
        return Err(format!(
            "instance {id} ended {}: {}",
            state.status(),
            state
                .failure()
                .map_or("no failure details", |f| f.message.as_str())
        )
        .into());
    }
    let got: i64 = state.output()?;
    if got != want {
        return Err(format!("instance {id} returned {got}, expected {want}").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }

    #[test]
    fn overrides_apply() {
        let s = SizeArgs {
            s1_count: Some(200),
            ..SizeArgs::default()
        }
        .apply(Sizes::default());
        assert_eq!(s.s1_count, 200);
        assert_eq!(s.s2_count, 10_000);
    }
}
