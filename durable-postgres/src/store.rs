//! The storage operations. Each runs inside one transaction (see
//! `PostgresBackend::transaction`) and only persists and queues what the
//! pure transition core decides: no orchestration logic lives here.
//!
//! Statements that touch many rows take arrays (`= ANY($1)`, `unnest`), so
//! an episode costs a fixed number of round trips however many events,
//! activities and messages it produces.

use crate::error::{Fail, Res};
use crate::listen::Signals;
use crate::tx::{Conn, Tx, Write};
use durable_runtime::actions::OrchestratorResult;
use durable_runtime::backend::transition::{
    self, ControlRequest, HistoryUpdate, InstanceMessage, Limits, NewInstance, Reuse,
};
pub(crate) use durable_runtime::backend::HistoryCache;
use durable_runtime::backend::{
    ActivityWorkItem, BackendError, CreateInstanceRequest, InstanceMetadata, InstanceQuery,
    OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode,
};
use durable_runtime::failure::TaskOutcome;
use durable_runtime::history::{
    EventKind, HistoryEvent, OrchestrationStatus, ParentInstance, Timestamp,
};
use durable_runtime::metrics::{KIND_ACTIVITY, KIND_ORCHESTRATION};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::types::ToSql;

/// What every operation needs besides the connection.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) limits: Limits,
    pub(crate) lease_micros: i64,
    pub(crate) cache: Mutex<HistoryCache>,
    /// Who holds the leases this backend takes (host, process id and a
    /// random part), recorded with each lease for diagnosis.
    pub(crate) owner: String,
}

/// How often at most the backlog is counted (it costs a scan of the ready
/// rows' index).
const BACKLOG_EVERY_MICROS: u64 = 1_000_000;

/// When this process last counted the backlog of orchestrations and of
/// activities (µs). Per process rather than per backend: the gauge has no
/// label telling backends apart, so one count a second is all it can show.
static BACKLOG_SAMPLED: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// The backlog of orchestrations: instances with work due at `$1` that no
/// live lease holds (a leased instance's `ready_at` is its lease's expiry,
/// so one whose lease expired is counted: it is ready to be delivered again).
const ORCHESTRATION_BACKLOG: &str = "SELECT count(*) FROM instances WHERE ready_at <= $1";

/// The backlog of activities, as [`ORCHESTRATION_BACKLOG`] (`visible_at`
/// is a leased activity's lease expiry).
const ACTIVITY_BACKLOG: &str = "SELECT count(*) FROM activities WHERE visible_at <= $1";

/// Whether the backlog of `kind` work is to be counted now (`now`, µs):
/// the first caller a second after the last count gets `true`.
fn backlog_due(kind: &'static str, now: i64) -> bool {
    let at = &BACKLOG_SAMPLED[usize::from(kind == KIND_ACTIVITY)];
    let last = at.load(Ordering::Relaxed);
    // Either way, so a clock stepped back does not stop the counts.
    now.abs_diff(last) >= BACKLOG_EVERY_MICROS
        && at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Sets the backlog gauge of `kind` work (see
/// [`durable_runtime::metrics::BACKLOG`]) to a count of ready rows.
fn report_backlog(kind: &'static str, ready: i64) {
    durable_runtime::metrics::backlog(kind, ready.max(0) as usize);
}

fn cache(ctx: &Ctx) -> std::sync::MutexGuard<'_, HistoryCache> {
    // Nothing panics while holding it; the data stays consistent.
    ctx.cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a committed operation changed: whom to wake, here and (by
/// `NOTIFY`) in other processes.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Instances whose status may have changed.
    pub(crate) touched: Vec<String>,
    /// Orchestration work may be available.
    pub(crate) orchestrations: bool,
    /// Activity work may be available.
    pub(crate) activities: bool,
    /// The notifications were sent with the writes.
    pub(crate) sent: bool,
}

/// The outcome of looking for work.
#[derive(Debug)]
pub(crate) enum Leased<T> {
    /// Work, leased (possibly none, if the candidates had nothing to run
    /// after all: look again at once).
    Item(T),
    /// Nothing to do now; something becomes due at this time (µs), if known.
    Idle(Option<i64>),
}

/// Marks an instance set aside in `instances.lease_token`: one of its rows
/// cannot be read, so no worker gets it until a backend connects again.
/// Real tokens are never negative.
pub(crate) const SET_ASIDE: i64 = -1;

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn now_micros() -> i64 {
    micros(chrono::Utc::now())
}

fn new_token() -> i64 {
    // Random, so processes sharing the database never hand out the same token.
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, BackendError> {
    serde_json::to_string(v).map_err(|e| BackendError::Other(format!("serialising: {e}")))
}

fn unreadable(id: &str, what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!(
        "the stored {what} of instance \"{id}\" cannot be read ({e}); was it written by a \
         newer version of durable?"
    ))
}

fn parse_event(id: &str, what: &str, text: &str) -> Result<HistoryEvent, BackendError> {
    serde_json::from_str(text).map_err(|e| unreadable(id, what, e))
}

fn parse_meta(id: &str, text: &str) -> Result<InstanceMetadata, BackendError> {
    serde_json::from_str(text).map_err(|e| unreadable(id, "instance row", e))
}

fn meta_json(m: &InstanceMetadata) -> Result<String, BackendError> {
    // The payloads live in their own columns.
    to_json(&InstanceMetadata {
        input: None,
        output: None,
        custom_status: None,
        ..m.clone()
    })
}

async fn query<C: Conn>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Res<Vec<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn query_opt<C: Conn>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Res<Option<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

async fn execute<C: Conn>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Res<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// An instance row.
struct Row {
    meta: InstanceMetadata,
    history_len: i32,
    lease_token: Option<i64>,
}

async fn load<C: Conn>(c: &C, id: &str, payloads: bool, lock: bool) -> Res<Option<Row>> {
    let sql = if lock {
        "SELECT meta, input, output, custom_status, history_len, lease_token
         FROM instances WHERE instance_id = $1 FOR UPDATE"
    } else {
        "SELECT meta, input, output, custom_status, history_len, lease_token
         FROM instances WHERE instance_id = $1"
    };
    let Some(r) = query_opt(c, sql, &[&id]).await? else {
        return Ok(None);
    };
    let mut meta = parse_meta(id, r.get(0))?;
    if payloads {
        meta.input = r.get(1);
        meta.output = r.get(2);
        meta.custom_status = r.get(3);
    }
    Ok(Some(Row {
        meta,
        history_len: r.get(4),
        lease_token: r.get(5),
    }))
}

/// Writes metadata only (the payload columns keep their values).
async fn update_status(tx: &Tx, m: &InstanceMetadata) -> Res<()> {
    execute(
        tx,
        "UPDATE instances SET status = $2, meta = $3 WHERE instance_id = $1",
        &[&m.instance_id, &m.status.to_string(), &meta_json(m)?],
    )
    .await?;
    Ok(())
}

async fn delete_instance(tx: &Tx, id: &str) -> Res<()> {
    for sql in [
        "DELETE FROM instances WHERE instance_id = $1",
        "DELETE FROM history WHERE instance_id = $1",
        "DELETE FROM inbox WHERE instance_id = $1",
        "DELETE FROM activities WHERE instance_id = $1",
    ] {
        execute(tx, sql, &[&id]).await?;
    }
    Ok(())
}

/// Releases the leases of `ids` and recomputes when each next needs a worker.
async fn release(tx: &Tx, ids: &[String]) -> Res<()> {
    execute(tx, RELEASE, &[&ids]).await?;
    Ok(())
}

const RELEASE: &str =
    "UPDATE instances SET lease_token = NULL, lease_expires = NULL, lease_owner = NULL,
        ready_at = (SELECT min(visible_at) FROM inbox
                    WHERE inbox.instance_id = instances.instance_id)
 WHERE instance_id = ANY($1)";

/// Sends notifications (one per payload) on a channel.
pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// Events read with `sql` (selecting `event` for instance `$1`).
async fn load_events<C: Conn>(c: &C, sql: &str, id: &str, what: &str) -> Res<Vec<HistoryEvent>> {
    let rows = query(c, sql, &[&id]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(parse_event(id, what, r.get(0))?);
    }
    Ok(out)
}

async fn load_history<C: Conn>(c: &C, id: &str) -> Res<Vec<HistoryEvent>> {
    load_events(
        c,
        "SELECT event FROM history WHERE instance_id = $1 ORDER BY seq",
        id,
        "history",
    )
    .await
}

/// The first events of a history: enough to hold its `ExecutionStarted`.
async fn load_history_start(tx: &Tx, id: &str) -> Res<Vec<HistoryEvent>> {
    load_events(
        tx,
        "SELECT event FROM history WHERE instance_id = $1 ORDER BY seq LIMIT 8",
        id,
        "history",
    )
    .await
}

async fn load_inbox(tx: &Tx, id: &str) -> Res<Vec<HistoryEvent>> {
    load_events(
        tx,
        "SELECT event FROM inbox WHERE instance_id = $1 ORDER BY visible_at, seq",
        id,
        "inbox",
    )
    .await
}

/// When the earliest queued `ExecutionStarted` or `ExecutionTerminated` of an
/// instance becomes visible, if any is queued.
async fn next_start_or_terminate(tx: &Tx, id: &str) -> Res<Option<i64>> {
    let rows = query(
        tx,
        "SELECT visible_at, event FROM inbox WHERE instance_id = $1 ORDER BY visible_at, seq",
        &[&id],
    )
    .await?;
    for r in rows {
        let e: Option<HistoryEvent> = serde_json::from_str(r.get(1)).ok();
        if e.is_some_and(|e| {
            matches!(
                e.kind,
                EventKind::ExecutionStarted { .. } | EventKind::ExecutionTerminated { .. }
            )
        }) {
            return Ok(Some(r.get(0)));
        }
    }
    Ok(None)
}

/// Routes messages: into their targets' inboxes (now or, for timers and
/// delayed starts, later) or nowhere (unknown or finished instance,
/// another execution), as the in-memory backend does. The targets' rows
/// are locked first (in id order), so a message is checked against the
/// status its target has when it is queued.
async fn deliver(tx: &Tx, msgs: &[InstanceMessage], now: i64, fx: &mut Effects) -> Res<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&str> = msgs.iter().map(|m| m.instance_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = query(
        tx,
        "SELECT instance_id, meta FROM instances WHERE instance_id = ANY($1)
         ORDER BY instance_id FOR UPDATE",
        &[&ids],
    )
    .await?;
    let mut targets: HashMap<String, Option<InstanceMetadata>> = HashMap::new();
    for r in rows {
        let id: String = r.get(0);
        let meta = match parse_meta(&id, r.get(1)) {
            Ok(m) => Some(m),
            Err(e) => {
                // Kept unchecked, for when the row can be read again.
                tracing::error!(instance_id = %id, error = %e, "queueing a message for an instance whose row cannot be read");
                None
            }
        };
        targets.insert(id, meta);
    }
    let (mut to, mut execution, mut visible, mut checked, mut event) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for msg in msgs {
        let Some(target) = targets.get(&msg.instance_id) else {
            tracing::debug!(instance_id = %msg.instance_id, "dropping message for unknown instance");
            continue;
        };
        let delayed = msg.visible_at.map(micros).filter(|t| *t > now);
        // A delayed message is checked when it becomes due, like a timer firing.
        let check = delayed.is_none() && target.is_some();
        if check
            && target
                .as_ref()
                .is_some_and(|t| !transition::accepts_message(t, msg))
        {
            tracing::debug!(instance_id = %msg.instance_id, event = msg.event.kind.type_name(), "dropping message for finished instance or old execution");
            continue;
        }
        to.push(msg.instance_id.as_str());
        execution.push(msg.execution_id.as_deref());
        visible.push(delayed.unwrap_or(now));
        checked.push(check);
        event.push(to_json(&msg.event)?);
    }
    if to.is_empty() {
        return Ok(());
    }
    execute(
        tx,
        "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[], $5::text[])",
        &[&to, &execution, &visible, &checked, &event],
    )
    .await?;
    execute(
        tx,
        "UPDATE instances i SET ready_at = LEAST(COALESCE(i.ready_at, v.t), v.t)
         FROM (SELECT id, min(t) AS t FROM unnest($1::text[], $2::int8[]) AS u(id, t)
               GROUP BY id) v
         WHERE i.instance_id = v.id AND i.lease_token IS NULL",
        &[&to, &visible],
    )
    .await?;
    fx.orchestrations = true;
    Ok(())
}

/// Creates an instance (applying the reuse policy) and queues its start.
pub(crate) async fn create(
    tx: &Tx,
    ctx: &Ctx,
    request: &CreateInstanceRequest,
    parent: Option<ParentInstance>,
    now: Timestamp,
    fx: &mut Effects,
) -> Res<()> {
    let existing = load(tx, &request.instance_id, false, true)
        .await?
        .map(|r| r.meta);
    let decision = transition::check_reuse(existing.as_ref(), &request.reuse_policy)?;
    // Validate the new instance before touching the old one.
    let (meta, start) = transition::create_instance(request, parent, now, &ctx.limits)?;
    let id = &request.instance_id;
    if decision == Reuse::TerminateAndReplace {
        let notice = transition::terminated_for_replacement(
            id,
            &load_history_start(tx, id).await?,
            &load_inbox(tx, id).await?,
            now,
        );
        if let Some(notice) = notice {
            deliver(tx, &[notice], micros(now), fx).await?;
        }
    }
    if decision != Reuse::Create {
        // Replace: the old instance goes away; a worker still holding its
        // lease gets LeaseLost.
        delete_instance(tx, id).await?;
    }
    // The new instance and its start, in one pipelined batch. The start is
    // accepted by the instance it creates (pending, same execution), so it
    // is queued checked unless it is delayed (then it is checked when due).
    let now = micros(now);
    let delayed = start.visible_at.map(micros).filter(|t| *t > now);
    let visible = delayed.unwrap_or(now);
    let s_instance = tx
        .prepare_cached(
            "INSERT INTO instances (instance_id, execution_id, status, created_at, meta, input,
                                    output, custom_status, history_len, ready_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
        )
        .await?;
    let s_start = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    let (status, meta_text, event) = (
        meta.status.to_string(),
        meta_json(&meta)?,
        to_json(&start.event)?,
    );
    let instance_p: [&(dyn ToSql + Sync); 9] = [
        &meta.instance_id,
        &meta.execution_id,
        &status,
        &micros(meta.created_at),
        &meta_text,
        &meta.input,
        &meta.output,
        &meta.custom_status,
        &visible,
    ];
    let checked = delayed.is_none();
    let start_p: [&(dyn ToSql + Sync); 5] = [id, &start.execution_id, &visible, &checked, &event];
    pipelined(vec![
        write(tx, &s_instance, &instance_p),
        write(tx, &s_start, &start_p),
    ])
    .await?;
    fx.orchestrations = true;
    fx.touched.push(id.clone());
    Ok(())
}

/// Creates a sub-orchestration; if that is refused, tells the parent instead.
async fn create_child(
    tx: &Tx,
    ctx: &Ctx,
    child: &NewInstance,
    now: Timestamp,
    fx: &mut Effects,
) -> Res<()> {
    tx.batch_execute("SAVEPOINT child").await?;
    match create(tx, ctx, &child.request, child.parent.clone(), now, fx).await {
        Ok(()) => Ok(tx.batch_execute("RELEASE SAVEPOINT child").await?),
        Err(Fail::Backend(e)) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT child; RELEASE SAVEPOINT child")
                .await?;
            match child.creation_failed(&e, now) {
                Some(notice) => deliver(tx, &[notice], micros(now), fx).await,
                None => Ok(()),
            }
        }
        // A database error (a conflict to retry, a lost connection) is the
        // whole transaction's.
        Err(e) => Err(e),
    }
}

fn set_aside_error(id: &str) -> BackendError {
    BackendError::Other(format!(
        "instance \"{id}\" was set aside because one of its rows could not be read (the \
         error was logged when it happened); repair the row and connect again to run it, or \
         purge it by id to delete it"
    ))
}

pub(crate) async fn get_instance<C: Conn>(
    c: &C,
    id: &str,
    payloads: bool,
) -> Res<Option<InstanceMetadata>> {
    match load(c, id, payloads, false).await? {
        Some(row) if row.lease_token == Some(SET_ASIDE) => Err(set_aside_error(id).into()),
        row => Ok(row.map(|r| r.meta)),
    }
}

pub(crate) async fn get_history<C: Conn>(c: &C, id: &str) -> Res<Vec<HistoryEvent>> {
    if load(c, id, false, false).await?.is_none() {
        return Err(BackendError::NotFound(id.to_string()).into());
    }
    load_history(c, id).await
}

/// Queues a client's event (raise, terminate, suspend, resume), setting the
/// status at once where the transition core says so.
pub(crate) async fn control(
    tx: &Tx,
    id: &str,
    request: ControlRequest,
    fx: &mut Effects,
) -> Res<()> {
    let now = chrono::Utc::now();
    let row = load(tx, id, false, true)
        .await?
        .ok_or_else(|| BackendError::NotFound(id.to_string()))?;
    if row.lease_token == Some(SET_ASIDE) && !matches!(request, ControlRequest::RaiseEvent { .. }) {
        return Err(set_aside_error(id).into());
    }
    let mut meta = row.meta;
    let Some((event, status)) = request.decide(id, meta.status)? else {
        return Ok(());
    };
    if let Some(st) = status {
        meta.status = st;
        meta.last_updated_at = now;
        update_status(tx, &meta).await?;
    }
    let msg = InstanceMessage {
        instance_id: id.to_string(),
        execution_id: Some(meta.execution_id.clone()),
        event: HistoryEvent::new(now, event),
        visible_at: None,
    };
    deliver(tx, &[msg], micros(now), fx).await?;
    fx.touched.push(id.to_string());
    Ok(())
}

/// Rewinds a failed instance and, recursively, its failed
/// sub-orchestrations, in one transaction.
pub(crate) async fn rewind(tx: &Tx, id: &str, reason: Option<String>, fx: &mut Effects) -> Res<()> {
    let request = ControlRequest::Rewind { reason };
    rewind_one(tx, id, request.clone(), fx).await?;
    let now = chrono::Utc::now();
    let mut queue = vec![id.to_string()];
    while let Some(parent) = queue.pop() {
        let Some(parent_row) = load(tx, &parent, false, false).await? else {
            continue;
        };
        let history = load_history(tx, &parent).await?;
        for (child, task_id) in transition::rewind_children(&history) {
            let Some(c) = load(tx, &child, true, true).await? else {
                continue;
            };
            match transition::child_on_rewind(&parent_row.meta, task_id, &c.meta, now) {
                Some(transition::ChildOnRewind::Rewind) => {
                    rewind_one(tx, &child, request.clone(), fx).await?;
                    queue.push(child);
                }
                Some(transition::ChildOnRewind::Deliver(msg)) => {
                    deliver(tx, &[*msg], micros(now), fx).await?;
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Queues the rewind of one failed instance. What waits in its inbox goes
/// first: messages sent to the failed execution (a child's late result,
/// an event from another orchestration) are not for the rewound one, and
/// a worker that took them with the status already `Running` but without
/// the rewind (its lease read the inbox as of a moment before the rewind
/// was queued) would replay the failure and fail the instance again. A
/// child's late result is delivered again by [`rewind`]. The row is locked
/// first, as leases lock it, before its inbox rows.
async fn rewind_one(tx: &Tx, id: &str, request: ControlRequest, fx: &mut Effects) -> Res<()> {
    load(tx, id, false, true).await?;
    execute(tx, "DELETE FROM inbox WHERE instance_id = $1", &[&id]).await?;
    control(tx, id, request, fx).await
}

/// Takes the guard of entity `$1` exclusively, until the transaction ends
/// (see [`ENTITY_GUARD_SHARED`]).
const ENTITY_GUARD: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('durable-entity:' || $1::text, 0))";

/// Takes the guards of entities `$1` shared, until the transaction ends:
/// an episode sending messages to entities holds them while it queues the
/// messages, so removing an empty entity (which holds its guard
/// exclusively) never comes between an episode's check that the entity
/// exists and its message.
const ENTITY_GUARD_SHARED: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('durable-entity:' || x, 0))
     FROM unnest($1::text[]) AS x";

/// Deletes an entity instance if it runs `execution_id`, is not leased and
/// has no message waiting (see `Backend::remove_idle_entity`). Writers of
/// messages to the entity are kept out first: clients' controls lock its
/// row (as this does), episodes hold its guard shared
/// ([`ENTITY_GUARD_SHARED`], taken here exclusively). So one that came
/// first has committed its message by the time the check below reads the
/// inbox, and one that comes later finds the entity gone and creates it
/// again.
pub(crate) async fn remove_idle_entity(
    tx: &Tx,
    id: &str,
    execution_id: &str,
    fx: &mut Effects,
) -> Res<bool> {
    query(tx, ENTITY_GUARD, &[&id]).await?;
    let Some(row) = load(tx, id, false, true).await? else {
        return Ok(false);
    };
    if row.meta.execution_id != execution_id
        || row.meta.status != OrchestrationStatus::Running
        || row.lease_token.is_some()
    {
        return Ok(false);
    }
    let waiting = query_opt(
        tx,
        "SELECT 1 FROM inbox WHERE instance_id = $1
         UNION ALL SELECT 1 FROM activities WHERE instance_id = $1 LIMIT 1",
        &[&id],
    )
    .await?;
    if waiting.is_some() {
        return Ok(false);
    }
    delete_instance(tx, id).await?;
    fx.touched.push(id.to_string());
    Ok(true)
}

pub(crate) async fn purge(
    tx: &Tx,
    target: &PurgeTarget,
    recursive: bool,
    fx: &mut Effects,
) -> Res<usize> {
    let mut roots: Vec<String> = match target {
        PurgeTarget::Instance(id) => {
            let row = load(tx, id, false, true)
                .await?
                .ok_or_else(|| BackendError::NotFound(id.clone()))?;
            if row.lease_token != Some(SET_ASIDE) && !row.meta.status.is_terminal() {
                return Err(BackendError::InvalidState {
                    id: id.clone(),
                    operation: "purge",
                    status: row.meta.status,
                }
                .into());
            }
            vec![id.clone()]
        }
        PurgeTarget::Filter {
            created_from,
            created_to,
            statuses,
        } => {
            let wanted: Vec<String> = OrchestrationStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal() && (statuses.is_empty() || statuses.contains(s)))
                .map(|s| s.to_string())
                .collect();
            query(
                tx,
                "SELECT instance_id FROM instances
                 WHERE status = ANY($1) AND created_at >= $2 AND created_at < $3
                 ORDER BY instance_id",
                &[
                    &wanted,
                    &created_from.map(micros).unwrap_or(i64::MIN),
                    &created_to.map(micros).unwrap_or(i64::MAX),
                ],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect()
        }
    };
    let mut count = 0;
    while let Some(id) = roots.pop() {
        let Some(row) = load(tx, &id, false, true).await? else {
            continue;
        };
        let set_aside = row.lease_token == Some(SET_ASIDE);
        // A set-aside instance runs no more whatever its status says, and
        // purging it by id is how it is deleted.
        let named = matches!(target, PurgeTarget::Instance(named) if *named == id);
        let purgeable = row.meta.status.is_terminal() || (set_aside && named);
        if !purgeable {
            continue;
        }
        if recursive {
            match load_history(tx, &id).await {
                Ok(history) => roots.extend(transition::all_children(&history)),
                Err(e) if set_aside => {
                    tracing::error!(instance_id = %id, error = %BackendError::from(e), "purging a set-aside instance whose history cannot be read: its sub-orchestrations, if any, are kept");
                }
                Err(e) => return Err(e),
            }
        }
        delete_instance(tx, &id).await?;
        fx.touched.push(id);
        count += 1;
    }
    Ok(count)
}

pub(crate) async fn query_instances<C: Conn>(c: &C, q: &InstanceQuery) -> Res<QueryPage> {
    let page = q.effective_page_size();
    let after = q.continuation_token.clone().unwrap_or_default();
    let prefix = q.instance_id_prefix.clone();
    let end = prefix.as_deref().and_then(prefix_successor);
    let from = q.created_from.map(micros).unwrap_or(i64::MIN);
    let to = q.created_to.map(micros).unwrap_or(i64::MAX);
    let statuses: Vec<String> = q.statuses.iter().map(|s| s.to_string()).collect();
    let limit = page as i64 + 1;
    let rows = query(
        c,
        "SELECT instance_id, meta, input, output, custom_status FROM instances
         WHERE instance_id > $1
           AND ($2::text IS NULL OR instance_id >= $2)
           AND ($3::text IS NULL OR instance_id < $3)
           AND created_at >= $4 AND created_at < $5
           AND (cardinality($6::text[]) = 0 OR status = ANY($6))
         ORDER BY instance_id LIMIT $7",
        &[&after, &prefix, &end, &from, &to, &statuses, &limit],
    )
    .await?;
    let mut instances = Vec::new();
    let mut more = false;
    for r in rows {
        if instances.len() == page {
            more = true;
            break;
        }
        let id: String = r.get(0);
        let mut m = match parse_meta(&id, r.get(1)) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(instance_id = %id, error = %e, "the query skips an instance whose row cannot be read");
                continue;
            }
        };
        if q.fetch_payloads {
            m.input = r.get(2);
            m.output = r.get(3);
            m.custom_status = r.get(4);
        }
        instances.push(m);
    }
    let continuation_token = if more {
        instances
            .last()
            .map(|m: &InstanceMetadata| m.instance_id.clone())
    } else {
        None
    };
    Ok(QueryPage {
        instances,
        continuation_token,
    })
}

/// The smallest string greater than every string that starts with `prefix`,
/// or `None` if there is none. Ids compare byte-wise (`COLLATE "C"`), and
/// UTF-8 byte order is code point order, so bumping the last character that
/// can be bumped is enough.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A leased instance, before its history is attached.
struct Candidate {
    id: String,
    meta: InstanceMetadata,
    history_len: i32,
    events: Vec<HistoryEvent>,
    /// An earlier lease on it expired (so handing it out is a redelivery).
    expired: bool,
}

/// Leases up to `max` instances that have work now, longest waiting first.
/// Rows other workers are claiming are skipped (`SKIP LOCKED`), so workers
/// never wait for each other. One statement picks the instances and reads
/// their due inbox; one pipelined batch writes the leases and reads the
/// histories not cached.
///
/// Counts a redelivery for each instance leased that still had an earlier
/// lease on it: a leased instance's `ready_at` is its lease's expiry, so
/// such a row is ready only once that lease expired unrenewed (its worker
/// stopped or stalled). When something is leased, it also counts the
/// backlog, at most once a second, in the same transaction after the new
/// leases.
pub(crate) async fn lease_orchestrations(
    tx: &Tx,
    ctx: &Ctx,
    signals: &Signals,
    max: i64,
    fx: &mut Effects,
) -> Res<Leased<Vec<OrchestrationWorkItem>>> {
    let now_ts = chrono::Utc::now();
    let now = micros(now_ts);
    let rows = query(
        tx,
        "WITH c AS (
             SELECT instance_id, meta, history_len, ready_at, lease_token IS NOT NULL AS expired
             FROM instances
             WHERE ready_at <= $1 ORDER BY ready_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         SELECT c.instance_id, c.meta, c.history_len, i.seq, i.execution_id, i.checked, i.event,
                c.expired
         FROM c LEFT JOIN inbox i ON i.instance_id = c.instance_id AND i.visible_at <= $1
         ORDER BY c.ready_at, c.instance_id, i.visible_at, i.seq",
        &[&now, &max],
    )
    .await?;
    if rows.is_empty() {
        let next: Option<i64> = query(
            tx,
            "SELECT min(ready_at) FROM instances WHERE ready_at IS NOT NULL",
            &[],
        )
        .await?
        .first()
        .and_then(|r| r.get(0));
        return Ok(Leased::Idle(next));
    }
    // The rows of one instance are adjacent.
    let mut groups: Vec<(String, Vec<tokio_postgres::Row>)> = Vec::new();
    for r in rows {
        let id: String = r.get(0);
        match groups.last_mut() {
            Some((last, rows)) if *last == id => rows.push(r),
            _ => groups.push((id, vec![r])),
        }
    }
    let (mut dropped, mut finished, mut idle, mut waiting, mut set_aside) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut leased_seqs = Vec::new();
    let mut leased = Vec::new();
    for (id, rows) in groups {
        // The candidate (`None` if finished), the inbox rows it takes and
        // those that no longer apply.
        type Read = Option<(Candidate, Vec<i64>, Vec<i64>)>;
        let read = || -> Result<Read, BackendError> {
            let meta = parse_meta(&id, rows[0].get(1))?;
            if meta.status.is_terminal() {
                return Ok(None);
            }
            let (mut events, mut seqs, mut drop) = (Vec::new(), Vec::new(), Vec::new());
            for m in &rows {
                let Some(seq) = m.get::<_, Option<i64>>(3) else {
                    continue; // no inbox row (the outer join's empty side)
                };
                let event = parse_event(&id, "inbox", m.get(6))?;
                let checked: bool = m.get(5);
                if !checked {
                    let msg = InstanceMessage {
                        instance_id: id.clone(),
                        execution_id: m.get(4),
                        event,
                        visible_at: None,
                    };
                    if !transition::accepts_message(&meta, &msg) {
                        drop.push(seq);
                        continue;
                    }
                    events.push(msg.event);
                } else {
                    events.push(event);
                }
                seqs.push(seq);
            }
            let candidate = Candidate {
                id: id.clone(),
                meta,
                history_len: rows[0].get(2),
                events,
                expired: rows[0].get(7),
            };
            Ok(Some((candidate, seqs, drop)))
        };
        match read() {
            Ok(None) => finished.push(id),
            Ok(Some((c, seqs, drop))) => {
                dropped.extend(drop);
                if c.events.is_empty() {
                    idle.push(c.id);
                } else if !transition::runnable(c.history_len == 0, &c.events) {
                    waiting.push(c.id);
                } else {
                    leased_seqs.extend(seqs);
                    leased.push(c);
                }
            }
            Err(e) => {
                tracing::error!(instance_id = %id, error = %e, "a row of the instance cannot be read; the instance is set aside");
                set_aside.push(id);
            }
        }
    }
    for id in &waiting {
        // Not started yet (e.g. an event raised before a delayed start):
        // wait for the start, or a terminate, whichever is queued first.
        let next = next_start_or_terminate(tx, id).await?;
        execute(
            tx,
            "UPDATE instances SET ready_at = $2 WHERE instance_id = $1",
            &[id, &next],
        )
        .await?;
    }
    idle.extend(finished.iter().cloned());
    let token = new_token();
    let expires = now.saturating_add(ctx.lease_micros);
    let leased_ids: Vec<&str> = leased.iter().map(|c| c.id.as_str()).collect();
    let mut histories: HashMap<String, Arc<Vec<HistoryEvent>>> = HashMap::new();
    let mut missing = Vec::new();
    {
        let cache = cache(ctx);
        for c in &leased {
            match cache.get(
                &c.id,
                &c.meta.execution_id,
                c.history_len as usize,
                c.meta.last_updated_at,
            ) {
                Some(h) => {
                    histories.insert(c.id.clone(), h);
                }
                None if c.history_len == 0 => {
                    histories.insert(c.id.clone(), Arc::default());
                }
                None => missing.push(c.id.as_str()),
            }
        }
    }
    let s_drop = tx
        .prepare_cached("DELETE FROM inbox WHERE seq = ANY($1)")
        .await?;
    let s_finished = tx
        .prepare_cached("DELETE FROM inbox WHERE instance_id = ANY($1)")
        .await?;
    let s_release = tx.prepare_cached(RELEASE).await?;
    let s_set_aside = tx
        .prepare_cached(
            "UPDATE instances SET lease_token = $2, lease_expires = NULL, ready_at = NULL,
                    lease_owner = NULL
             WHERE instance_id = ANY($1)",
        )
        .await?;
    let s_inbox = tx
        .prepare_cached("UPDATE inbox SET lease_token = $2 WHERE seq = ANY($1)")
        .await?;
    let s_lease = tx
        .prepare_cached(
            "UPDATE instances SET lease_token = $2, lease_expires = $3, ready_at = $3,
                    lease_owner = $4
             WHERE instance_id = ANY($1)",
        )
        .await?;
    let s_history = tx
        .prepare_cached(
            "SELECT instance_id, event FROM history WHERE instance_id = ANY($1)
             ORDER BY instance_id, seq",
        )
        .await?;
    let s_backlog = if !leased.is_empty() && backlog_due(KIND_ORCHESTRATION, now) {
        Some(tx.prepare_cached(ORCHESTRATION_BACKLOG).await?)
    } else {
        None
    };
    let backlog = AtomicI64::new(-1);
    let backlog_p: [&(dyn ToSql + Sync); 1] = [&now];
    let drop_p: [&(dyn ToSql + Sync); 1] = [&dropped];
    let finished_p: [&(dyn ToSql + Sync); 1] = [&finished];
    let release_p: [&(dyn ToSql + Sync); 1] = [&idle];
    let set_aside_p: [&(dyn ToSql + Sync); 2] = [&set_aside, &SET_ASIDE];
    let inbox_p: [&(dyn ToSql + Sync); 2] = [&leased_seqs, &token];
    let lease_p: [&(dyn ToSql + Sync); 4] = [&leased_ids, &token, &expires, &ctx.owner];
    fx.touched.extend(set_aside.iter().cloned());
    let payloads = signals.payloads(fx);
    fx.sent = true;
    let s_notify = tx.prepare_cached(NOTIFY).await?;
    let notify_p: [&(dyn ToSql + Sync); 2] = [&signals.channel, &payloads];
    let mut batch: Vec<Write<'_>> = Vec::new();
    if !dropped.is_empty() {
        batch.push(write(tx, &s_drop, &drop_p));
    }
    if !finished.is_empty() {
        batch.push(write(tx, &s_finished, &finished_p));
    }
    if !idle.is_empty() {
        batch.push(write(tx, &s_release, &release_p));
    }
    if !set_aside.is_empty() {
        batch.push(write(tx, &s_set_aside, &set_aside_p));
        batch.push(write(tx, &s_notify, &notify_p));
    }
    if !leased.is_empty() {
        batch.push(write(tx, &s_inbox, &inbox_p));
        batch.push(write(tx, &s_lease, &lease_p));
    }
    if let Some(s) = &s_backlog {
        // After the leases, so the instances just taken are not counted.
        let (backlog, params) = (&backlog, &backlog_p);
        batch.push(Box::pin(async move {
            if let Some(r) = tx.query(s, params).await?.first() {
                backlog.store(r.get(0), Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let history_rows = async {
        if missing.is_empty() {
            Ok(Vec::new())
        } else {
            tx.query(&s_history, &[&missing]).await
        }
    };
    // The history read goes first, then the writes, then the commit, all in
    // one round trip.
    let (history_rows, ()) = futures::future::try_join(history_rows, tx.commit_with(batch)).await?;
    if leased.is_empty() {
        return Ok(Leased::Item(Vec::new()));
    }
    for _ in leased.iter().filter(|c| c.expired) {
        durable_runtime::metrics::redelivered(KIND_ORCHESTRATION);
    }
    if s_backlog.is_some() {
        report_backlog(KIND_ORCHESTRATION, backlog.load(Ordering::Relaxed));
    }
    let mut loaded: HashMap<String, Vec<HistoryEvent>> = HashMap::new();
    for r in history_rows {
        let id: String = r.get(0);
        let e = parse_event(&id, "history", r.get(1))?;
        loaded.entry(id).or_default().push(e);
    }
    {
        let mut cache = cache(ctx);
        for (id, h) in loaded {
            let h = Arc::new(h);
            if let Some(c) = leased.iter().find(|c| c.id == id) {
                cache.put(
                    id.clone(),
                    c.meta.execution_id.clone(),
                    c.meta.last_updated_at,
                    h.clone(),
                );
            }
            histories.insert(id, h);
        }
    }
    let items = leased
        .into_iter()
        .map(|c| OrchestrationWorkItem {
            past_events: histories.remove(&c.id).unwrap_or_default(),
            instance_id: c.id,
            execution_id: c.meta.execution_id,
            new_events: transition::episode_events(c.events, now_ts),
            completion_token: token.to_string(),
            orchestration_span: None,
        })
        .collect();
    Ok(Leased::Item(items))
}

fn lost(what: &str) -> Fail {
    BackendError::LeaseLost(what.to_string()).into()
}

/// Runs `writes` pipelined: all are sent at once and the server runs them
/// in order, so the batch costs one round trip.
async fn pipelined(writes: Vec<Write<'_>>) -> Res<()> {
    futures::future::try_join_all(writes).await?;
    Ok(())
}

fn write<'a>(
    tx: &'a Tx,
    stmt: &'a tokio_postgres::Statement,
    params: &'a [&'a (dyn ToSql + Sync)],
) -> Write<'a> {
    Box::pin(async move { tx.execute(stmt, params).await.map(|_| ()) })
}

/// Columns of messages queued unchecked (see [`queue_unchecked`]).
#[derive(Default)]
struct Queued<'a> {
    to: Vec<&'a str>,
    execution: Vec<Option<&'a str>>,
    visible: Vec<i64>,
    event: Vec<String>,
}

impl<'a> Queued<'a> {
    fn of(msgs: &'a [InstanceMessage], now: i64) -> Result<Self, BackendError> {
        let mut q = Queued::default();
        for m in msgs {
            q.to.push(&m.instance_id);
            q.execution.push(m.execution_id.as_deref());
            q.visible
                .push(m.visible_at.map(micros).filter(|t| *t > now).unwrap_or(now));
            q.event.push(to_json(&m.event)?);
        }
        Ok(q)
    }
}

/// Queues messages sent by workers (an episode's outbox, an activity's
/// result) without reading their targets first: they are checked
/// against the target's status and execution when it is leased
/// (`accepts_message`, in [`lease_orchestrations`]), exactly as timers
/// are. Every such message that names an execution is a task, timer or
/// sub-orchestration result, which does not survive a continue-as-new
/// either way, so checking later decides the same as checking now.
/// Messages for instances that do not exist are dropped.
const QUEUE_UNCHECKED: &str =
    "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
     SELECT u.i, u.x, u.v, false, u.e FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
                             AS u(i, x, v, e)
     WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = u.i)";

/// Brings the targets' `ready_at` forward to their messages (unless leased:
/// then it is recomputed when the lease ends).
///
/// A leased target's row is written too (unchanged): writing takes its row
/// lock, which orders this commit with the lease holder's release. The
/// holder locks its row before it reads the inbox to compute `ready_at`,
/// so either it sees these messages, or this update waits for its release
/// and then sees the row unleased. Skipping leased rows in the `WHERE`
/// instead would not wait: a message committed just after the holder read
/// the inbox would be left with no `ready_at`, and no worker would ever
/// look at it.
const READY_SOONER: &str = "UPDATE instances i SET ready_at = CASE WHEN i.lease_token IS NULL
                               THEN LEAST(COALESCE(i.ready_at, v.t), v.t) ELSE i.ready_at END
     FROM (SELECT id, min(t) AS t FROM unnest($1::text[], $2::int8[]) AS u(id, t)
           GROUP BY id) v
     WHERE i.instance_id = v.id";

/// How an episode changes the stored history.
enum HistoryWrite {
    /// Rows from `seqs`; with `clear`, after deleting the old ones (a
    /// rewind rewrites the history of the same execution).
    Append {
        clear: bool,
        seqs: Vec<i32>,
        types: Vec<&'static str>,
        texts: Vec<String>,
    },
    Restart {
        visible: Vec<i64>,
        texts: Vec<String>,
    },
}

/// Applies an episode's result: one statement to lock and check the
/// instance, then every write in one pipelined batch.
pub(crate) async fn complete_orchestration(
    tx: &Tx,
    ctx: &Ctx,
    item: OrchestrationWorkItem,
    result: &OrchestratorResult,
    fx: &mut Effects,
) -> Res<RecordedEpisode> {
    let now_ts = chrono::Utc::now();
    let now = micros(now_ts);
    let id = item.instance_id.clone();
    let token: i64 = item.completion_token.parse().map_err(|_| lost(&id))?;
    let row = load(tx, &id, true, true).await?.ok_or_else(|| lost(&id))?;
    if row.lease_token != Some(token) {
        return Err(lost(&id));
    }
    // Drop the cached copy so the item's history is the only reference and
    // can grow in place.
    cache(ctx).remove(&id);
    let mut past = item.past_events;
    if past.len() as i64 != row.history_len as i64 || item.execution_id != row.meta.execution_id {
        past = Arc::new(load_history(tx, &id).await?);
    }
    let outcome = transition::apply_episode(
        &row.meta,
        &past,
        &item.new_events,
        result,
        now_ts,
        &ctx.limits,
    );
    let meta = outcome.metadata;
    let out = outcome.outbox;
    // The entities this episode messages are guarded (a shared advisory
    // lock each, which episodes hold together) before their messages go
    // out: so an empty entity being removed (`remove_idle_entity`, which
    // takes the lock exclusively) is either removed first, and created
    // again below, or waits for this commit and then sees the message and
    // stays.
    let mut entities: Vec<&str> = out
        .messages
        .iter()
        .map(|m| m.instance_id.as_str())
        .filter(|id| durable_runtime::entity::EntityId::is_entity_instance(id))
        .collect();
    if !entities.is_empty() {
        entities.sort_unstable();
        entities.dedup();
        query(tx, ENTITY_GUARD_SHARED, &[&entities]).await?;
    }
    // Sub-orchestrations first: each reads what it replaces.
    for child in &out.new_instances {
        create_child(tx, ctx, child, now_ts, fx).await?;
    }
    // What a continue-as-new drops needs a read first (rare).
    let stale: Vec<i64> = match &outcome.history {
        HistoryUpdate::Restart { .. } => query(
            tx,
            "SELECT seq, event FROM inbox WHERE instance_id = $1 AND lease_token IS DISTINCT FROM $2",
            &[&id, &token],
        )
        .await?
        .iter()
        .filter(|r| {
            serde_json::from_str::<HistoryEvent>(r.get(1))
                .is_ok_and(|e| !transition::survives_restart(&e))
        })
        .map(|r| r.get(0))
        .collect(),
        HistoryUpdate::Append(_) | HistoryUpdate::Replace(_) => Vec::new(),
    };
    // Timers the episode cancelled: their TimerFired rows, due later or
    // already waiting (an execution that ended or continued as new loses
    // all of them with its inbox, above and below).
    let cancelled: Vec<i64> = match &outcome.dropped_timers {
        transition::DroppedTimers::Cancelled(ids) if !ids.is_empty() => query(
            tx,
            "SELECT seq, event FROM inbox WHERE instance_id = $1 AND execution_id = $2",
            &[&id, &row.meta.execution_id],
        )
        .await?
        .iter()
        .filter(|r| {
            serde_json::from_str::<HistoryEvent>(r.get(1))
                .is_ok_and(|e| outcome.dropped_timers.covers(&e))
        })
        .map(|r| r.get(0))
        .collect(),
        _ => Vec::new(),
    };

    // Everything below goes out in one batch; build the parameters first.
    let s_taken = tx
        .prepare_cached("DELETE FROM inbox WHERE instance_id = $1 AND lease_token = $2")
        .await?;
    let status = meta.status.to_string();
    let meta_text = meta_json(&meta)?;
    let terminal = meta.status.is_terminal();
    let (history_len, new_history, history_write) = match outcome.history {
        HistoryUpdate::Append(events) => {
            let len = row.history_len + events.len() as i32;
            let seqs: Vec<i32> = (0..events.len() as i32)
                .map(|i| row.history_len + i)
                .collect();
            let types: Vec<&'static str> = events.iter().map(|e| e.kind.type_name()).collect();
            let texts = events.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
            Arc::make_mut(&mut past).extend(events);
            let write = HistoryWrite::Append {
                clear: false,
                seqs,
                types,
                texts,
            };
            (len, past, write)
        }
        HistoryUpdate::Replace(events) => {
            let len = events.len() as i32;
            let seqs: Vec<i32> = (0..len).collect();
            let types: Vec<&'static str> = events.iter().map(|e| e.kind.type_name()).collect();
            let texts = events.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
            let write = HistoryWrite::Append {
                clear: true,
                seqs,
                types,
                texts,
            };
            (len, Arc::new(events), write)
        }
        HistoryUpdate::Restart { inbox_front } => {
            // Ahead of everything already queued.
            let visible: Vec<i64> = (0..inbox_front.len() as i64)
                .map(|i| i64::MIN + i)
                .collect();
            let texts = inbox_front
                .iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()?;
            (
                0,
                Arc::new(Vec::new()),
                HistoryWrite::Restart { visible, texts },
            )
        }
    };
    let s_history = tx
        .prepare_cached(
            "INSERT INTO history (instance_id, seq, execution_id, event_type, event)
             SELECT $1, s, $2, t, e FROM unnest($3::int4[], $4::text[], $5::text[]) AS u(s, t, e)",
        )
        .await?;
    let s_clear_history = tx
        .prepare_cached("DELETE FROM history WHERE instance_id = $1")
        .await?;
    let s_drop_seqs = tx
        .prepare_cached("DELETE FROM inbox WHERE seq = ANY($1)")
        .await?;
    let s_front = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
             SELECT $1, $2, v, true, e FROM unnest($3::int8[], $4::text[]) AS u(v, e)",
        )
        .await?;
    let s_clear_inbox = tx
        .prepare_cached("DELETE FROM inbox WHERE instance_id = $1")
        .await?;
    let n = out.activities.len();
    let mut a_tags: Vec<Option<String>> = Vec::with_capacity(n);
    let (mut a_ids, mut a_execs, mut a_tasks, mut a_names, mut a_versions, mut a_inputs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for a in &out.activities {
        a_ids.push(a.instance_id.as_str());
        a_execs.push(a.execution_id.as_str());
        a_tasks.push(a.task_id);
        a_names.push(a.name.as_str());
        a_versions.push(a.version.as_deref());
        a_inputs.push(a.input.as_deref());
        // The trace context rides with the tags (one column for both).
        let tags = durable_runtime::trace::stored_tags(&a.tags, a.trace.as_ref());
        a_tags.push(
            (!tags.is_empty())
                .then(|| serde_json::to_string(&tags).expect("a map of strings serialises")),
        );
    }
    let s_activities = tx
        .prepare_cached(
            "INSERT INTO activities (instance_id, execution_id, task_id, name, version, input,
                                     visible_at, tags)
             SELECT i, e, t, n, v, p, $7, g FROM unnest($1::text[], $2::text[], $3::int4[],
                                                        $4::text[], $5::text[], $6::text[],
                                                        $8::text[])
                                             AS u(i, e, t, n, v, p, g)",
        )
        .await?;
    let queued = Queued::of(&out.messages, now)?;
    let s_queue = tx.prepare_cached(QUEUE_UNCHECKED).await?;
    let s_ready = tx.prepare_cached(READY_SOONER).await?;
    // Last, so `ready_at` counts the messages this episode sent itself.
    let s_instance = tx
        .prepare_cached(
            "UPDATE instances SET execution_id = $2, status = $3, meta = $4, input = $5,
                    output = $6, custom_status = $7, history_len = $8,
                    lease_token = NULL, lease_expires = NULL, lease_owner = NULL,
                    ready_at = (SELECT min(visible_at) FROM inbox WHERE instance_id = $1)
             WHERE instance_id = $1",
        )
        .await?;
    if !out.activities.is_empty() {
        fx.activities = true;
    }
    // Messages may have arrived for this instance during the episode.
    fx.orchestrations = true;
    if meta.status != row.meta.status {
        fx.touched.push(id.clone());
    }

    let taken_p: [&(dyn ToSql + Sync); 2] = [&id, &token];
    let clear_p: [&(dyn ToSql + Sync); 1] = [&id];
    let stale_p: [&(dyn ToSql + Sync); 1] = [&stale];
    let activities_p: [&(dyn ToSql + Sync); 8] = [
        &a_ids,
        &a_execs,
        &a_tasks,
        &a_names,
        &a_versions,
        &a_inputs,
        &now,
        &a_tags,
    ];
    let queue_p: [&(dyn ToSql + Sync); 4] = [
        &queued.to,
        &queued.execution,
        &queued.visible,
        &queued.event,
    ];
    let ready_p: [&(dyn ToSql + Sync); 2] = [&queued.to, &queued.visible];
    let instance_p: [&(dyn ToSql + Sync); 8] = [
        &id,
        &meta.execution_id,
        &status,
        &meta_text,
        &meta.input,
        &meta.output,
        &meta.custom_status,
        &history_len,
    ];
    let history_p: [&(dyn ToSql + Sync); 5];
    let front_p: [&(dyn ToSql + Sync); 4];
    let cancelled_p: [&(dyn ToSql + Sync); 1] = [&cancelled];
    let mut batch: Vec<Write<'_>> = vec![write(tx, &s_taken, &taken_p)];
    if !cancelled.is_empty() {
        batch.push(write(tx, &s_drop_seqs, &cancelled_p));
    }
    match &history_write {
        HistoryWrite::Append {
            clear,
            seqs,
            types,
            texts,
        } => {
            if *clear {
                batch.push(write(tx, &s_clear_history, &clear_p));
            }
            if !seqs.is_empty() {
                history_p = [&id, &meta.execution_id, seqs, types, texts];
                batch.push(write(tx, &s_history, &history_p));
            }
        }
        HistoryWrite::Restart { visible, texts } => {
            batch.push(write(tx, &s_clear_history, &clear_p));
            if !stale.is_empty() {
                batch.push(write(tx, &s_drop_seqs, &stale_p));
            }
            if !texts.is_empty() {
                front_p = [&id, &meta.execution_id, visible, texts];
                batch.push(write(tx, &s_front, &front_p));
            }
        }
    }
    if terminal {
        batch.push(write(tx, &s_clear_inbox, &clear_p));
    }
    if !a_ids.is_empty() {
        batch.push(write(tx, &s_activities, &activities_p));
    }
    if !queued.to.is_empty() {
        batch.push(write(tx, &s_queue, &queue_p));
        batch.push(write(tx, &s_ready, &ready_p));
    }
    batch.push(write(tx, &s_instance, &instance_p));
    tx.commit_with(batch).await?;
    let recorded = RecordedEpisode {
        status: meta.status,
        failure: meta.failure.clone(),
    };
    if !terminal {
        cache(ctx).put(id, meta.execution_id, meta.last_updated_at, new_history);
    }
    Ok(recorded)
}

/// Forgets the cached history of an instance (a transaction that would
/// have updated it did not commit).
pub(crate) fn forget(ctx: &Ctx, id: &str) {
    cache(ctx).remove(id);
}

pub(crate) async fn abandon_orchestration(
    tx: &Tx,
    item: &OrchestrationWorkItem,
    fx: &mut Effects,
) -> Res<()> {
    let id = &item.instance_id;
    let token: i64 = item.completion_token.parse().map_err(|_| lost(id))?;
    let row = load(tx, id, false, true).await?.ok_or_else(|| lost(id))?;
    if row.lease_token != Some(token) {
        return Err(lost(id));
    }
    execute(
        tx,
        "UPDATE inbox SET lease_token = NULL WHERE instance_id = $1 AND lease_token = $2",
        &[id, &token],
    )
    .await?;
    release(tx, std::slice::from_ref(id)).await?;
    fx.orchestrations = true;
    Ok(())
}

pub(crate) async fn renew_orchestration<C: Conn>(
    c: &C,
    ctx: &Ctx,
    item: &OrchestrationWorkItem,
) -> Res<()> {
    let id = &item.instance_id;
    let token: i64 = item.completion_token.parse().map_err(|_| lost(id))?;
    let expires = now_micros().saturating_add(ctx.lease_micros);
    let n = execute(
        c,
        "UPDATE instances SET lease_expires = $3, ready_at = $3, lease_owner = $4
         WHERE instance_id = $1 AND lease_token = $2",
        &[id, &token, &expires, &ctx.owner],
    )
    .await?;
    if n == 0 {
        return Err(lost(id));
    }
    Ok(())
}

/// Leases up to `max` activities, longest waiting first, in one statement.
///
/// Counts a redelivery for each activity leased that still had an
/// earlier lease on it (a leased activity's `visible_at` is its lease's expiry,
/// so it is visible again only once that lease expired unrenewed). When
/// something is leased, it also counts the backlog, at most once a second,
/// on the same connection after the new leases.
pub(crate) async fn lease_activities<C: Conn>(
    c: &C,
    ctx: &Ctx,
    max: i64,
) -> Res<Leased<Vec<ActivityWorkItem>>> {
    let now = now_micros();
    let token = new_token();
    let rows = query(
        c,
        "WITH picked AS (
             SELECT id, lease_token IS NOT NULL AS expired FROM activities WHERE visible_at <= $1
             ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE activities a SET lease_token = $3, visible_at = $4, lease_owner = $5
         FROM picked WHERE a.id = picked.id
         RETURNING a.id, a.instance_id, a.execution_id, a.task_id, a.name, a.version, a.input,
                   a.tags, picked.expired",
        &[
            &now,
            &max,
            &token,
            &now.saturating_add(ctx.lease_micros),
            &ctx.owner,
        ],
    )
    .await?;
    if rows.is_empty() {
        let next: Option<i64> = query(c, "SELECT min(visible_at) FROM activities", &[])
            .await?
            .first()
            .and_then(|r| r.get(0));
        return Ok(Leased::Idle(next));
    }
    let mut items: Vec<(i64, ActivityWorkItem)> = rows
        .into_iter()
        .map(|r| {
            if r.get::<_, bool>(8) {
                durable_runtime::metrics::redelivered(KIND_ACTIVITY);
            }
            let id: i64 = r.get(0);
            let (tags, trace) = durable_runtime::trace::split_stored_tags(read_tags(r.get(7)));
            (
                id,
                ActivityWorkItem {
                    instance_id: r.get(1),
                    execution_id: r.get(2),
                    task_id: r.get(3),
                    name: r.get(4),
                    version: r.get(5),
                    input: r.get(6),
                    completion_token: format!("{id}:{token}"),
                    tags,
                    trace,
                },
            )
        })
        .collect();
    items.sort_by_key(|(id, _)| *id);
    if backlog_due(KIND_ACTIVITY, now) {
        // The activities are leased already: a count that fails must not
        // lose them.
        match query(c, ACTIVITY_BACKLOG, &[&now]).await {
            Ok(rows) => {
                if let Some(r) = rows.first() {
                    report_backlog(KIND_ACTIVITY, r.get(0));
                }
            }
            Err(e) => {
                tracing::debug!(error = %BackendError::from(e), "counting the activity backlog failed")
            }
        }
    }
    Ok(Leased::Item(items.into_iter().map(|(_, i)| i).collect()))
}

/// An activity's stored tags (a JSON object of strings). Tags only inform
/// the activity (its attempt number), so ones that do not parse are read
/// as none, with a warning.
fn read_tags(tags: Option<&str>) -> std::collections::BTreeMap<String, String> {
    let Some(text) = tags else {
        return Default::default();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(tags = text, error = %e, "an activity's stored tags do not parse; it runs without them");
        Default::default()
    })
}

fn activity_lease(item: &ActivityWorkItem) -> Res<(i64, i64)> {
    let bad = || lost(&item.completion_token);
    let (id, token) = item.completion_token.split_once(':').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        token.parse().map_err(|_| bad())?,
    ))
}

/// Records an activity's outcome and queues it for its orchestration, in
/// one statement (so one round trip, and no transaction around it): the
/// activity row is deleted only while the lease is current, and the
/// result is queued only if it was. The instance row is written whether
/// leased or not, as in [`READY_SOONER`], so a result that arrives while
/// an episode is being applied is never left without a `ready_at`.
pub(crate) async fn complete_activity<C: Conn>(
    c: &C,
    ctx: &Ctx,
    item: &ActivityWorkItem,
    outcome: TaskOutcome,
    fx: &mut Effects,
) -> Res<()> {
    let now_ts = chrono::Utc::now();
    let now = micros(now_ts);
    let (rowid, token) = activity_lease(item)?;
    let event =
        transition::activity_completion(item.task_id, outcome, &item.name, now_ts, &ctx.limits);
    let event = to_json(&event)?;
    fx.orchestrations = true;
    let done = query_opt(
        c,
        "WITH done AS (
             DELETE FROM activities WHERE id = $1 AND lease_token = $2
             RETURNING instance_id, execution_id),
         queued AS (
             INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
             SELECT instance_id, execution_id, $3, false, $4 FROM done
             RETURNING instance_id),
         ready AS (
             UPDATE instances SET ready_at = CASE WHEN lease_token IS NULL
                                             THEN LEAST(COALESCE(ready_at, $3), $3)
                                             ELSE ready_at END
             WHERE instance_id IN (SELECT instance_id FROM queued))
         SELECT 1 FROM done",
        &[&rowid, &token, &now, &event],
    )
    .await?;
    if done.is_none() {
        return Err(lost(&item.completion_token));
    }
    Ok(())
}

pub(crate) async fn renew_activity<C: Conn>(c: &C, ctx: &Ctx, item: &ActivityWorkItem) -> Res<()> {
    let (rowid, token) = activity_lease(item)?;
    let expires = now_micros().saturating_add(ctx.lease_micros);
    let n = execute(
        c,
        "UPDATE activities SET visible_at = $3, lease_owner = $4
         WHERE id = $1 AND lease_token = $2",
        &[&rowid, &token, &expires, &ctx.owner],
    )
    .await?;
    if n == 0 {
        return Err(lost(&item.completion_token));
    }
    Ok(())
}

pub(crate) async fn abandon_activity<C: Conn>(
    c: &C,
    item: &ActivityWorkItem,
    fx: &mut Effects,
) -> Res<()> {
    let (rowid, token) = activity_lease(item)?;
    let n = execute(
        c,
        "UPDATE activities SET lease_token = NULL, lease_owner = NULL, visible_at = $3
         WHERE id = $1 AND lease_token = $2",
        &[&rowid, &token, &now_micros()],
    )
    .await?;
    if n == 0 {
        return Err(lost(&item.completion_token));
    }
    fx.activities = true;
    Ok(())
}

/// Gives set-aside instances another chance (at connect): their rows may
/// have been repaired, or this build may read what an older one could not.
pub(crate) async fn retry_set_aside<C: Conn>(c: &C) -> Res<u64> {
    execute(
        c,
        "UPDATE instances SET lease_token = NULL, lease_expires = NULL,
                ready_at = (SELECT min(visible_at) FROM inbox
                            WHERE inbox.instance_id = instances.instance_id)
         WHERE lease_token = $1",
        &[&SET_ASIDE],
    )
    .await
}
