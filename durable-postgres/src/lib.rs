//! The PostgreSQL backend of durable: many workers on many machines, one
//! database.
//!
//! [`PostgresBackend`] keeps instances, histories (one row per event, JSON
//! as on the wire), each instance's inbox (including timers and delayed
//! starts, with the time they become visible) and queued activities in
//! tables of their own PostgreSQL schema. It only persists and queues:
//! what an episode means is decided by the same pure transition core as
//! the in-memory and SQLite backends
//! ([`durable_runtime::backend::transition`]).
//!
//! # Guarantees
//!
//! - **One transaction per episode.** An episode's new history, status,
//!   activities, timers, messages to other instances and sub-orchestrations
//!   are committed together or not at all, with array statements
//!   (`unnest`), so the number of round trips does not grow with the
//!   number of events.
//! - **Episodes are applied exactly once.** Work is leased with a random
//!   token; completing with a token that is no longer current (the lease
//!   expired and another worker took the item, or it was already
//!   completed) is rejected with [`BackendError::LeaseLost`] and changes
//!   nothing. The instance row is locked (`FOR UPDATE`) while the token is
//!   checked and the episode applied.
//! - **Workers never wait for each other.** Claiming selects ready rows
//!   `FOR UPDATE SKIP LOCKED`: rows another worker is claiming are
//!   skipped, not waited for.
//! - **Activities run at least once.** Workers renew the leases of running
//!   episodes and activities every third of
//!   [`PostgresOptions::lease_duration`]; work held by a process that died
//!   is delivered again once its lease expires.
//! - **No message is stranded.** A message for an instance (an activity
//!   result, a child's completion, an event) is queued with a write to the
//!   instance's row, leased or not, so it is ordered with the lease
//!   holder's release by the row lock: the holder either sees the message
//!   when it recomputes when the instance next needs a worker, or the
//!   message's write waits for the release and schedules the instance
//!   itself.
//! - **Conflicts are retried.** A transaction that deadlocks with another
//!   or loses a race on a unique key is rolled back and run again; the
//!   transition core is pure, so running it again is safe.
//!
//! # Delivery
//!
//! Committed writes are announced with `pg_notify`, batched after their
//! commits; each backend listens on one dedicated
//! connection and wakes its idle workers and waiting clients (docs/postgres.md
//! in the repository has the details, the schema and the settings). Clients waiting for an
//! instance are woken by notifications about that instance, never by
//! polling. Idle workers also look again when the next timer falls due
//! and after [`PostgresOptions::poll_interval`], in case a notification
//! was lost while the listening connection was down.
//!
//! # Why tokio-postgres and deadpool-postgres
//!
//! `tokio-postgres` is the asynchronous driver the widely used `postgres`
//! crate is built on: it speaks the protocol directly, pipelines
//! statements, and exposes `LISTEN`/`NOTIFY` messages on the connection,
//! which push delivery needs. `deadpool-postgres` is a small pool for it
//! that caches prepared statements per connection. `sqlx` would also do,
//! but its strength (queries checked at compile time against a live
//! database) would make every build need a server, and without it it only
//! adds weight.
//!
//! # Not yet
//!
//! TLS is not supported yet: connect over a trusted network or a local
//! socket (a URL asking for `sslmode=require` is refused at connect).
//! Times are taken from the clocks of the worker machines; keep them
//! synchronised (NTP).
//!
//! ```no_run
//! use durable_runtime::{Client, Registry, Worker};
//! use durable_postgres::PostgresBackend;
//! use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = Arc::new(PostgresBackend::connect("postgres://app@db.internal/app").await?);
//! let registry = Registry::new()
//!     .orchestrator_fn("hello", |_ctx, name: String| async move { Ok(format!("Hello, {name}!")) });
//! let worker = Worker::new(backend.clone(), registry).start()?;
//! let client = Client::new(backend);
//! let id = client.schedule_by_name("hello", &"world", Default::default()).await?;
//! let state = client.wait_for_completion(&id, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(state.output::<String>()?, "Hello, world!");
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod error;
mod listen;
mod options;
mod schema;
mod store;
pub mod testing;
mod tls;
mod tx;

pub use error::ConnectError;
pub use options::PostgresOptions;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use durable_runtime::actions::OrchestratorResult;
use durable_runtime::backend::transition::ControlRequest;
use durable_runtime::backend::{
    ActivityWorkItem, Backend, BackendError, CreateInstanceRequest, InstanceMetadata,
    InstanceQuery, OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode, WaitFor,
};
use durable_runtime::failure::TaskOutcome;
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use error::{retryable, Fail, Res};
use listen::Signals;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Ctx, Effects, HistoryCache, Leased};
use tokio_postgres::NoTls;

/// The schema version this build of durable writes.
pub const SCHEMA_VERSION: i32 = schema::SCHEMA_VERSION;

/// Items leased per claim when work is plentiful.
const PREFETCH: i64 = 16;

/// How often a transaction that conflicted with another is run again.
const RETRIES: u32 = 8;

struct Shared {
    pool: Pool,
    ctx: Arc<Ctx>,
    options: PostgresOptions,
    signals: Arc<Signals>,
    listener: tokio::task::AbortHandle,
    /// `host:port`, for messages.
    server: String,
    /// Items leased in the same claim as the one handed out, so a busy
    /// worker does not pay a round trip per item.
    orchestration_prefetch: Mutex<VecDeque<(OrchestrationWorkItem, Instant)>>,
    activity_prefetch: Mutex<VecDeque<(ActivityWorkItem, Instant)>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
        // Give prefetched work back at once rather than after its lease
        // expires, if a runtime is still there to do it.
        let orchestrations: Vec<_> = lock(&self.orchestration_prefetch).drain(..).collect();
        let activities: Vec<_> = lock(&self.activity_prefetch).drain(..).collect();
        if orchestrations.is_empty() && activities.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (pool, signals) = (self.pool.clone(), self.signals.clone());
            rt.spawn(async move {
                for (item, _) in orchestrations {
                    give_back_orchestration(&pool, &signals, item).await;
                }
                for (item, _) in activities {
                    give_back_activity(&pool, &signals, item).await;
                }
            });
        }
    }
}

/// The PostgreSQL backend. Cloning gives another handle to the same pool.
/// See the [crate docs](crate).
#[derive(Clone)]
pub struct PostgresBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("server", &self.shared.server)
            .field("options", &self.shared.options)
            .finish()
    }
}

/// Runs `$body` (which uses `$tx`, a transaction, and `$fx`, its
/// [`Effects`]) in a transaction that also sends the notifications for
/// `$fx`; commits, wakes this process's waiters, and runs it again if it
/// conflicted with another transaction.
macro_rules! transaction {
    ($backend:expr, |$tx:ident, $fx:ident| $body:expr) => {{
        let shared = &$backend.shared;
        let mut attempt = 0u32;
        loop {
            let $tx = match shared.pool.get().await {
                Ok(c) => tx::Tx::new(c),
                Err(e) => break Err(error::pool_error(e)),
            };
            let mut $fx = Effects::default();
            let result: Res<_> = async {
                let value = $body;
                if !$tx.is_done() {
                    $tx.commit_with(Vec::new()).await?;
                }
                Ok(value)
            }
            .await;
            match result {
                Ok(value) => {
                    // Committed (by the body or above): the notifications
                    // go out now, unless the body sent them itself.
                    if !$fx.sent {
                        shared.signals.announce(&$fx);
                    }
                    shared.signals.wake(&$fx);
                    break Ok(value);
                }
                Err(e) => {
                    $tx.rollback().await;
                    if retryable(&e) && attempt < RETRIES {
                        attempt += 1;
                        tracing::debug!(attempt, error = ?e, "a transaction conflicted with another; running it again");
                    } else {
                        break Err(BackendError::from(e));
                    }
                }
            }
        }
    }};
}

/// Commits `tx`, then queues the notifications for `fx` (sent after the
/// commit, batched with others: see [`listen::run_notifier`]).
async fn commit_notifying(tx: &tx::Tx, signals: &Signals, fx: &Effects) -> Res<()> {
    tx.commit_with(Vec::new()).await?;
    signals.announce(fx);
    Ok(())
}

/// Prefetched work to give back.
enum Held {
    Orchestration(OrchestrationWorkItem),
    Activity(ActivityWorkItem),
}

async fn give_back_orchestration(pool: &Pool, signals: &Signals, item: OrchestrationWorkItem) {
    give_back(pool, signals, Held::Orchestration(item)).await
}

async fn give_back_activity(pool: &Pool, signals: &Signals, item: ActivityWorkItem) {
    give_back(pool, signals, Held::Activity(item)).await
}

async fn give_back(pool: &Pool, signals: &Signals, held: Held) {
    let result: Res<()> = async {
        let tx = tx::Tx::new(pool.get().await?);
        let mut fx = Effects::default();
        match &held {
            Held::Orchestration(item) => store::abandon_orchestration(&tx, item, &mut fx).await?,
            Held::Activity(item) => store::abandon_activity(&tx, item, &mut fx).await?,
        }
        commit_notifying(&tx, signals, &fx).await?;
        signals.wake(&fx);
        Ok(())
    }
    .await;
    let (instance_id, what) = match &held {
        Held::Orchestration(item) => (&item.instance_id, "episode"),
        Held::Activity(item) => (&item.instance_id, "activity"),
    };
    match result {
        // A lease another worker took over is not ours to give back.
        Ok(()) | Err(Fail::Backend(BackendError::LeaseLost(_))) => {}
        Err(e) => {
            tracing::warn!(instance_id = %instance_id, error = %BackendError::from(e), "giving back a prefetched {what} failed; it is delivered again when its lease expires")
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No user code runs under these locks; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first host and port of a configuration, for messages.
fn server_of(config: &tokio_postgres::Config) -> (String, u16) {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    (host, port)
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`)
    /// with default options: see [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to the database at `url`, creates or migrates durable's
    /// schema ([`PostgresOptions::schema`]) and starts listening for work.
    ///
    /// Fails if the URL is malformed, the server cannot be reached (the
    /// error names the host and port), refuses the connection, or holds a
    /// schema written by a newer version of durable.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, ConnectError> {
        options::check_schema_name(&options.schema).map_err(ConnectError::InvalidOption)?;
        if options.pool_size == 0 {
            return Err(ConnectError::InvalidOption(
                "pool_size must be at least 1".into(),
            ));
        }
        let (url, url_roots) = tls::split_root_file(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| ConnectError::InvalidUrl(e.to_string()))?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("durable");
        }
        let search_path = format!("-c search_path={}", options.schema);
        let pg_options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {search_path}"),
            _ => search_path,
        };
        config.options(&pg_options);
        let tls = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            let roots = options
                .tls_root_certificates
                .as_deref()
                .or(url_roots.as_deref());
            Some(tls::connector(roots).map_err(ConnectError::InvalidOption)?)
        } else {
            None
        };
        let (host, port) = server_of(&config);
        let unreachable = |detail: String| ConnectError::Unreachable {
            host: host.clone(),
            port,
            detail,
        };
        let refused = |e: tokio_postgres::Error| ConnectError::Refused {
            host: host.clone(),
            port,
            detail: error::refusal(&e),
        };
        let with_tls = tls.is_some();
        let classify = |e: tokio_postgres::Error| {
            if e.as_db_error().is_some() {
                refused(e)
            } else {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail = format!("{detail}: {s}");
                    source = s.source();
                }
                // The driver's TLS errors ("error performing TLS
                // handshake", "server does not support TLS").
                if with_tls && detail.contains("TLS") {
                    ConnectError::Tls {
                        host: host.clone(),
                        port,
                        detail,
                    }
                } else {
                    unreachable(detail)
                }
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| ConnectError::InvalidOption(format!("building the pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(e),
            deadpool_postgres::PoolError::Timeout(_) => unreachable(format!(
                "no connection within {:?}",
                options.connect_timeout
            )),
            other => unreachable(other.to_string()),
        })?;
        schema::migrate(&mut client, &options.schema)
            .await
            .map_err(|e| match e {
                schema::MigrateError::Newer(e) => e,
                schema::MigrateError::Db(e) => classify(e),
            })?;
        let retried = store::retry_set_aside(&client).await.map_err(|e| match e {
            Fail::Db(e) => classify(e),
            Fail::Backend(e) => unreachable(e.to_string()),
        })?;
        if retried > 0 {
            tracing::info!(
                retried,
                "retrying instances set aside because a row could not be read"
            );
        }
        drop(client);
        let signals = Arc::new(Signals::new(format!("durable_{}", options.schema)));
        let (notifier, queued) = tokio::sync::mpsc::unbounded_channel();
        signals.set_notifier(notifier);
        tokio::spawn(listen::run_notifier(
            pool.clone(),
            signals.channel.clone(),
            queued,
        ));
        let (ready, listening) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen::run(
            config,
            tls,
            signals.clone(),
            options.poll_interval.min(Duration::from_secs(1)),
            ready,
        ));
        match listening.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(classify(e)),
            Err(_) => return Err(unreachable("the listening connection ended".into())),
        }
        let owner = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            signals.origin
        );
        let ctx = Arc::new(Ctx {
            limits: options.limits.clone(),
            lease_micros: i64::try_from(options.lease_duration.as_micros()).unwrap_or(i64::MAX),
            cache: Mutex::new(HistoryCache::new(options.history_cache_capacity)),
            owner,
        });
        Ok(PostgresBackend {
            shared: Arc::new(Shared {
                pool,
                ctx,
                options,
                signals,
                listener: listener.abort_handle(),
                server: format!("{host}:{port}"),
                orchestration_prefetch: Mutex::new(VecDeque::new()),
                activity_prefetch: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The options this backend was connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.shared.options
    }

    /// How many clients of this backend are waiting in
    /// [`wait_for_instance`](Backend::wait_for_instance) after reading
    /// their instance (for tests that need a waiter parked before they act).
    #[doc(hidden)]
    pub fn parked_waiters(&self) -> usize {
        self.shared
            .signals
            .watchers
            .parked
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, BackendError> {
        self.shared.pool.get().await.map_err(error::pool_error)
    }

    /// How long an idle worker waits before looking again: until the next
    /// due item, at most the poll interval.
    fn idle_wait(&self, next: Option<i64>) -> Duration {
        let poll = self.shared.options.poll_interval;
        match next {
            Some(t) => {
                let until = t.saturating_sub(store::now_micros()).max(0) as u64;
                Duration::from_micros(until).min(poll)
            }
            None => poll,
        }
    }

    /// A prefetched item whose lease is still comfortably valid. Older ones
    /// are given back (if another worker took them meanwhile, the stale
    /// token makes that a no-op).
    fn take_prefetched<T: Send + 'static>(
        &self,
        queue: &Mutex<VecDeque<(T, Instant)>>,
        give_back: impl Fn(Pool, Arc<Signals>, T) + Copy,
    ) -> Option<T> {
        let fresh = self.shared.options.lease_duration / 2;
        let mut q = lock(queue);
        while let Some((item, at)) = q.pop_front() {
            if at.elapsed() < fresh {
                return Some(item);
            }
            give_back(self.shared.pool.clone(), self.shared.signals.clone(), item);
        }
        None
    }

    async fn control(
        &self,
        instance_id: &str,
        request: ControlRequest,
    ) -> Result<(), BackendError> {
        request.check(&self.shared.ctx.limits)?;
        transaction!(self, |tx, fx| {
            store::control(&tx, instance_id, request.clone(), &mut fx).await?
        })
    }
}

fn spawn_give_back_orchestration(pool: Pool, signals: Arc<Signals>, item: OrchestrationWorkItem) {
    tokio::spawn(async move { give_back_orchestration(&pool, &signals, item).await });
}

fn spawn_give_back_activity(pool: Pool, signals: Arc<Signals>, item: ActivityWorkItem) {
    tokio::spawn(async move { give_back_activity(&pool, &signals, item).await });
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError> {
        request.validate()?;
        let ctx = self.shared.ctx.clone();
        transaction!(self, |tx, fx| {
            store::create(&tx, &ctx, &request, None, chrono::Utc::now(), &mut fx).await?
        })
    }

    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        let client = self.client().await?;
        Ok(store::get_instance(&client, instance_id, with_payloads).await?)
    }

    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError> {
        // Woken by commits through this backend and by notifications about
        // this instance from other backends; no reads on a timer.
        let watch = self.shared.signals.watchers.watch(instance_id);
        let deadline = durable_runtime::backend::deadline_after(timeout);
        loop {
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let meta = self
                .get_instance(instance_id, true)
                .await?
                .ok_or_else(|| BackendError::NotFound(instance_id.to_string()))?;
            let done = match wait_for {
                WaitFor::Start => meta.status != OrchestrationStatus::Pending,
                WaitFor::Completion => meta.status.is_terminal(),
            };
            if done {
                return Ok(meta);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(BackendError::Timeout(timeout, instance_id.to_string()));
            }
            let parked = &self.shared.signals.watchers.parked;
            parked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = tokio::time::timeout(deadline - now, notified).await;
            parked.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError> {
        let name = name.to_string();
        self.control(instance_id, ControlRequest::RaiseEvent { name, input })
            .await
    }

    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Terminate { output, recursive })
            .await
    }

    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Suspend { reason })
            .await
    }

    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Resume { reason })
            .await
    }

    async fn rewind(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        ControlRequest::Rewind {
            reason: reason.clone(),
        }
        .check(&self.shared.ctx.limits)?;
        transaction!(self, |tx, fx| {
            store::rewind(&tx, instance_id, reason.clone(), &mut fx).await?
        })
    }

    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
        transaction!(self, |tx, fx| {
            store::purge(&tx, &target, recursive, &mut fx).await?
        })
    }

    async fn remove_idle_entity(
        &self,
        instance_id: &str,
        execution_id: &str,
    ) -> Result<bool, BackendError> {
        transaction!(self, |tx, fx| {
            store::remove_idle_entity(&tx, instance_id, execution_id, &mut fx).await?
        })
    }

    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError> {
        let client = self.client().await?;
        Ok(store::query_instances(&client, &query).await?)
    }

    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
        let client = self.client().await?;
        Ok(store::get_history(&client, instance_id).await?)
    }

    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
        loop {
            if let Some(item) = self.take_prefetched(
                &self.shared.orchestration_prefetch,
                spawn_give_back_orchestration,
            ) {
                return Ok(item);
            }
            let notified = self.shared.signals.orchestration_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ctx = self.shared.ctx.clone();
            let leased = transaction!(self, |tx, fx| {
                store::lease_orchestrations(&tx, &ctx, &self.shared.signals, PREFETCH, &mut fx)
                    .await?
            })?;
            let next = match leased {
                Leased::Item(items) => {
                    let now = Instant::now();
                    let mut items = items.into_iter();
                    let first = items.next();
                    lock(&self.shared.orchestration_prefetch).extend(items.map(|i| (i, now)));
                    match first {
                        Some(item) => return Ok(item),
                        None => continue,
                    }
                }
                Leased::Idle(next) => next,
            };
            let _ = tokio::time::timeout(self.idle_wait(next), notified).await;
        }
    }

    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError> {
        let ctx = self.shared.ctx.clone();
        let id = item.instance_id.clone();
        // A retry reads the history again rather than keeping a second
        // reference to it (which would make extending it copy it).
        let again = OrchestrationWorkItem {
            instance_id: item.instance_id.clone(),
            execution_id: item.execution_id.clone(),
            past_events: Arc::default(),
            new_events: item.new_events.clone(),
            completion_token: item.completion_token.clone(),
            orchestration_span: None,
        };
        let mut first = Some(item);
        let done = transaction!(self, |tx, fx| {
            let item = first.take().unwrap_or_else(|| again.clone());
            store::complete_orchestration(&tx, &ctx, item, &result, &mut fx).await?
        });
        if done.is_err() {
            // The cached history may hold events that were not committed.
            store::forget(&ctx, &id);
        }
        done.map(Some)
    }

    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        transaction!(self, |tx, fx| {
            store::abandon_orchestration(&tx, &item, &mut fx).await?
        })
    }

    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        loop {
            if let Some(item) =
                self.take_prefetched(&self.shared.activity_prefetch, spawn_give_back_activity)
            {
                return Ok(item);
            }
            let notified = self.shared.signals.activity_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let client = self.client().await?;
            let leased = store::lease_activities(&client, &self.shared.ctx, PREFETCH)
                .await
                .map_err(BackendError::from)?;
            drop(client);
            let next = match leased {
                Leased::Item(items) => {
                    let now = Instant::now();
                    let mut items = items.into_iter();
                    let first = items.next();
                    lock(&self.shared.activity_prefetch).extend(items.map(|i| (i, now)));
                    match first {
                        Some(item) => return Ok(item),
                        None => continue,
                    }
                }
                Leased::Idle(next) => next,
            };
            let _ = tokio::time::timeout(self.idle_wait(next), notified).await;
        }
    }

    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: TaskOutcome,
    ) -> Result<(), BackendError> {
        // One statement, so no transaction around it.
        let mut attempt = 0;
        loop {
            let client = self.client().await?;
            let mut fx = Effects::default();
            let signals = &self.shared.signals;
            match store::complete_activity(
                &client,
                &self.shared.ctx,
                item,
                outcome.clone(),
                &mut fx,
            )
            .await
            {
                Ok(()) => {
                    signals.announce(&fx);
                    signals.wake(&fx);
                    return Ok(());
                }
                Err(e) if retryable(&e) && attempt < RETRIES => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        transaction!(self, |tx, fx| {
            store::abandon_activity(&tx, item, &mut fx).await?
        })
    }

    async fn worker_stopped(&self) {
        let orchestrations: Vec<_> = lock(&self.shared.orchestration_prefetch)
            .drain(..)
            .collect();
        let activities: Vec<_> = lock(&self.shared.activity_prefetch).drain(..).collect();
        for (item, _) in orchestrations {
            give_back_orchestration(&self.shared.pool, &self.shared.signals, item).await;
        }
        for (item, _) in activities {
            give_back_activity(&self.shared.pool, &self.shared.signals, item).await;
        }
    }

    fn activity_lease_renewal(&self) -> Option<Duration> {
        Some(self.shared.options.lease_duration / 3)
    }

    fn orchestration_lease_renewal(&self) -> Option<Duration> {
        Some(self.shared.options.lease_duration / 3)
    }

    async fn renew_orchestration_item(
        &self,
        item: &OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let client = self.client().await?;
        Ok(store::renew_orchestration(&client, &self.shared.ctx, item).await?)
    }

    async fn renew_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let client = self.client().await?;
        Ok(store::renew_activity(&client, &self.shared.ctx, item).await?)
    }
}
