//! The storage operations. Each runs on the connection thread inside a
//! transaction (see [`crate::writer`]) and only persists and queues what the
//! pure transition core decides: no orchestration logic lives here.

use crate::error::{Problem, ReadError, RowName, SqlResult, Text, Unreadable};
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
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What every operation needs besides the connection.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) limits: Limits,
    pub(crate) lease_micros: i64,
    pub(crate) cache: Mutex<HistoryCache>,
    /// This backend's id in `processes`, recorded as the owner of its leases.
    pub(crate) process_id: i64,
    /// The last other process's lease an idle worker was told it waits for
    /// (instance or activity, expiry), so it is logged once, not per poll.
    pub(crate) waiting_for: Mutex<Option<(String, i64)>>,
    /// When the backlog gauge of orchestrations and of activities was last
    /// set (microseconds; see [`sample_backlog`]).
    pub(crate) backlog_sampled: [std::sync::atomic::AtomicI64; 2],
}

/// How often at most the backlog is counted (it costs a scan of the ready
/// rows' index).
const BACKLOG_EVERY_MICROS: i64 = 1_000_000;

/// Sets the backlog gauge of `kind` work (see
/// [`durable_runtime::metrics::BACKLOG`]) from `count_sql` (a count of the
/// rows ready at `?1`), at most once a second.
pub(crate) fn sample_backlog(
    conn: &Connection,
    ctx: &Ctx,
    now: i64,
    kind: &'static str,
) -> Result<(), BackendError> {
    use std::sync::atomic::Ordering;
    let (at, sql) = if kind == durable_runtime::metrics::KIND_ACTIVITY {
        (
            &ctx.backlog_sampled[1],
            "SELECT COUNT(*) FROM activities WHERE visible_at <= ?1",
        )
    } else {
        (
            &ctx.backlog_sampled[0],
            "SELECT COUNT(*) FROM instances WHERE ready_at <= ?1",
        )
    };
    let last = at.load(Ordering::Relaxed);
    if now.saturating_sub(last) < BACKLOG_EVERY_MICROS
        || at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return Ok(());
    }
    let ready: i64 = conn
        .prepare_cached(sql)
        .db()?
        .query_row([now], |r| r.get(0))
        .db()?;
    durable_runtime::metrics::backlog(kind, ready.max(0) as usize);
    Ok(())
}

fn cache(ctx: &Ctx) -> std::sync::MutexGuard<'_, HistoryCache> {
    // Nothing panics while holding it; the data stays consistent.
    ctx.cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a committed operation changed, for in-process wake-ups.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Instances whose status may have changed.
    pub(crate) touched: Vec<String>,
    /// Orchestration work may be available.
    pub(crate) orchestrations: bool,
    /// Activity work may be available.
    pub(crate) activities: bool,
}

/// The outcome of looking for work.
#[derive(Debug)]
pub(crate) enum Leased<T> {
    /// Work, leased.
    Item(T),
    /// Nothing to do now; something becomes due at this time (µs), if known.
    Idle(Option<i64>),
}

pub(crate) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn new_token() -> i64 {
    // Random, so processes sharing the file never hand out the same token.
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, BackendError> {
    serde_json::to_string(v).map_err(|e| BackendError::Other(format!("serialising: {e}")))
}

/// Marks an instance as set aside in `instances.lease_token`: one of its
/// rows cannot be read, so no worker gets it (its `ready_at` is NULL) and
/// clients asking about it are told why, until a backend opens the file
/// again (`schema::prepare` retries it then). Real tokens are never negative.
pub(crate) const SET_ASIDE: i64 = -1;

fn malformed(id: &str, row: impl std::fmt::Display, e: impl std::fmt::Display) -> Unreadable {
    Unreadable {
        instance_id: id.to_string(),
        row: row.to_string(),
        problem: Problem::Malformed(e.to_string()),
    }
}

/// Parses the event stored in `row` (e.g. `history row 3`) of instance `id`.
fn parse_event(
    id: &str,
    row: impl std::fmt::Display + Copy,
    text: Text,
) -> Result<HistoryEvent, Unreadable> {
    let text = text.of(id, row, "event")?;
    serde_json::from_str(&text).map_err(|e| match newer_event_kind(&text) {
        Some(kind) => Unreadable {
            instance_id: id.to_string(),
            row: row.to_string(),
            problem: Problem::NewerEvent(kind),
        },
        None => malformed(id, row, e),
    })
}

/// The event, or `None` if it cannot be read (for scans that only look for
/// some kinds of event; the row is reported when the instance is leased).
fn event_of(text: Text) -> Option<HistoryEvent> {
    serde_json::from_str(&text.text().ok()?).ok()
}

/// The kind of the stored event `text`, if it is one this build does not
/// know (a newer durable wrote it).
fn newer_event_kind(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = value.get("type")?.as_str()?;
    let probe = serde_json::json!({ "type": kind });
    match serde_json::from_value::<EventKind>(probe) {
        Err(e) if e.to_string().starts_with("unknown variant") => Some(kind.to_string()),
        _ => None,
    }
}

/// An instance row.
struct Row {
    meta: InstanceMetadata,
    history_len: i64,
    lease_token: Option<i64>,
}

fn load(conn: &Connection, id: &str, payloads: bool) -> Result<Option<Row>, ReadError> {
    let row = conn
        .prepare_cached(
            "SELECT meta, input, output, custom_status, history_len, lease_token
             FROM instances WHERE instance_id = ?1",
        )
        .db()?
        .query_row([id], |r| {
            Ok((
                r.get::<_, Text>(0)?,
                r.get::<_, Option<Text>>(1)?,
                r.get::<_, Option<Text>>(2)?,
                r.get::<_, Option<Text>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()
        .db()?;
    let Some((meta, input, output, custom_status, history_len, lease_token)) = row else {
        return Ok(None);
    };
    let mut meta = parse_meta(id, meta)?;
    if payloads {
        (meta.input, meta.output, meta.custom_status) =
            parse_payloads(id, input, output, custom_status)?;
    }
    Ok(Some(Row {
        meta,
        history_len,
        lease_token,
    }))
}

const INSTANCE_ROW: &str = "instance row";

fn parse_meta(id: &str, meta: Text) -> Result<InstanceMetadata, Unreadable> {
    let meta = meta.of(id, INSTANCE_ROW, "meta")?;
    if let Some(parsed) = meta_cache::get(id, &meta) {
        return Ok(parsed);
    }
    let parsed: InstanceMetadata =
        serde_json::from_str(&meta).map_err(|e| malformed(id, INSTANCE_ROW, e))?;
    meta_cache::put(id, meta, parsed.clone());
    Ok(parsed)
}

/// Parsed `instances.meta` texts of recently used instances, so the
/// instance row read at every lease, completion and delivery is not parsed
/// again each time (parsing it, timestamps included, was most of the cost
/// of reading the row).
///
/// An entry is used only when the stored text is exactly the text it was
/// parsed from (or serialised from), so it can never be stale: a row
/// changed by another process, or by a transaction that was rolled back,
/// simply misses. One cache per connection thread (each backend has its
/// own), at most [`CAPACITY`](meta_cache::CAPACITY) entries.
mod meta_cache {
    use durable_runtime::backend::InstanceMetadata;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Most instances whose metadata is kept.
    pub(super) const CAPACITY: usize = 1024;

    thread_local! {
        static ENTRIES: RefCell<HashMap<String, (String, InstanceMetadata)>> =
            RefCell::new(HashMap::new());
    }

    /// The metadata parsed from `text`, if instance `id`'s entry holds
    /// exactly that text.
    pub(super) fn get(id: &str, text: &str) -> Option<InstanceMetadata> {
        ENTRIES.with(|e| {
            e.borrow()
                .get(id)
                .filter(|(t, _)| t == text)
                .map(|(_, m)| m.clone())
        })
    }

    /// Remembers that `text` is instance `id`'s metadata `meta` (without
    /// payloads).
    pub(super) fn put(id: &str, text: String, meta: InstanceMetadata) {
        ENTRIES.with(|e| {
            let mut e = e.borrow_mut();
            if let Some(entry) = e.get_mut(id) {
                *entry = (text, meta);
                return;
            }
            if e.len() >= CAPACITY {
                // Evicting an arbitrary entry is enough: a miss costs one parse.
                if let Some(k) = e.keys().next().cloned() {
                    e.remove(&k);
                }
            }
            e.insert(id.to_string(), (text, meta));
        })
    }
}

type Payloads = (Option<String>, Option<String>, Option<String>);

fn parse_payloads(
    id: &str,
    input: Option<Text>,
    output: Option<Text>,
    custom_status: Option<Text>,
) -> Result<Payloads, Unreadable> {
    let text = |t: Option<Text>, column| t.map(|t| t.of(id, INSTANCE_ROW, column)).transpose();
    Ok((
        text(input, "input")?,
        text(output, "output")?,
        text(custom_status, "custom_status")?,
    ))
}

/// The `meta` column's text for `m`, also remembered in the metadata
/// cache, so reading the row back does not parse it.
fn meta_json(m: &InstanceMetadata) -> Result<String, BackendError> {
    // The payloads live in their own columns.
    let stored = InstanceMetadata {
        instance_id: m.instance_id.clone(),
        execution_id: m.execution_id.clone(),
        name: m.name.clone(),
        version: m.version.clone(),
        status: m.status,
        input: None,
        output: None,
        custom_status: None,
        failure: m.failure.clone(),
        created_at: m.created_at,
        last_updated_at: m.last_updated_at,
        completed_at: m.completed_at,
        scheduled_start: m.scheduled_start,
        parent_instance_id: m.parent_instance_id.clone(),
        tags: m.tags.clone(),
    };
    let text = to_json(&stored)?;
    // The cache hands out `stored` for this text instead of parsing it:
    // they must agree (checked in debug builds, the tests included).
    debug_assert_eq!(
        serde_json::from_str::<InstanceMetadata>(&text)
            .ok()
            .as_ref(),
        Some(&stored),
        "instance metadata does not survive a round trip through JSON"
    );
    meta_cache::put(&m.instance_id, text.clone(), stored);
    Ok(text)
}

fn insert_instance(conn: &Connection, m: &InstanceMetadata) -> Result<(), BackendError> {
    conn.prepare_cached(
        "INSERT INTO instances (instance_id, execution_id, status, created_at, meta, input,
                                output, custom_status, history_len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
    )
    .db()?
    .execute(params![
        m.instance_id,
        m.execution_id,
        m.status.to_string(),
        micros(m.created_at),
        meta_json(m)?,
        m.input,
        m.output,
        m.custom_status,
    ])
    .db()?;
    Ok(())
}

/// Writes metadata only (the payload columns keep their values).
fn update_status(conn: &Connection, m: &InstanceMetadata) -> Result<(), BackendError> {
    conn.prepare_cached("UPDATE instances SET status = ?2, meta = ?3 WHERE instance_id = ?1")
        .db()?
        .execute(params![m.instance_id, m.status.to_string(), meta_json(m)?])
        .db()?;
    Ok(())
}

fn delete_instance(conn: &Connection, id: &str) -> Result<(), BackendError> {
    for sql in [
        "DELETE FROM instances WHERE instance_id = ?1",
        "DELETE FROM history WHERE instance_id = ?1",
        "DELETE FROM inbox WHERE instance_id = ?1",
        "DELETE FROM activities WHERE instance_id = ?1",
    ] {
        conn.prepare_cached(sql).db()?.execute([id]).db()?;
    }
    Ok(())
}

/// Releases any lease and recomputes when the instance next needs a worker.
fn release(conn: &Connection, id: &str) -> Result<(), BackendError> {
    conn.prepare_cached(
        "UPDATE instances SET lease_token = NULL, lease_expires = NULL, lease_owner = NULL,
                ready_at = (SELECT MIN(visible_at) FROM inbox WHERE instance_id = ?1)
         WHERE instance_id = ?1",
    )
    .db()?
    .execute([id])
    .db()?;
    Ok(())
}

/// When the earliest queued `ExecutionStarted` or `ExecutionTerminated` of an
/// instance becomes visible, if any is queued.
fn next_start_or_terminate(conn: &Connection, id: &str) -> Result<Option<i64>, BackendError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT visible_at, event FROM inbox WHERE instance_id = ?1 ORDER BY visible_at",
        )
        .db()?;
    let rows = stmt
        .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Text>(1)?)))
        .db()?;
    for r in rows {
        let (at, text) = r.db()?;
        if event_of(text).is_some_and(|e| {
            matches!(
                e.kind,
                EventKind::ExecutionStarted { .. } | EventKind::ExecutionTerminated { .. }
            )
        }) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

fn load_history(conn: &Connection, id: &str) -> Result<Vec<HistoryEvent>, ReadError> {
    load_events(
        conn,
        "history",
        "SELECT seq, event FROM history WHERE instance_id = ?1 ORDER BY seq",
        id,
    )
}

/// The first events of an instance's history: enough to hold its
/// `ExecutionStarted` (after `OrchestratorStarted`), without reading a long
/// history.
fn load_history_start(conn: &Connection, id: &str) -> Result<Vec<HistoryEvent>, ReadError> {
    load_events(
        conn,
        "history",
        "SELECT seq, event FROM history WHERE instance_id = ?1 ORDER BY seq LIMIT 8",
        id,
    )
}

/// The events queued for an instance, in delivery order.
fn load_inbox(conn: &Connection, id: &str) -> Result<Vec<HistoryEvent>, ReadError> {
    load_events(
        conn,
        "inbox",
        "SELECT seq, event FROM inbox WHERE instance_id = ?1 ORDER BY visible_at, seq",
        id,
    )
}

/// Reads events with `sql` (selecting `seq, event` of instance `?1`) from
/// `table`, naming the first unreadable row if there is one.
fn load_events(
    conn: &Connection,
    table: &str,
    sql: &str,
    id: &str,
) -> Result<Vec<HistoryEvent>, ReadError> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    let rows = stmt
        .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Text>(1)?)))
        .db()?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, text) = row.db()?;
        out.push(parse_event(id, RowName(table, seq), text)?);
    }
    Ok(out)
}

/// Whether instance `id` is set aside ([`SET_ASIDE`]), read without parsing
/// any of its rows.
fn is_set_aside(conn: &Connection, id: &str) -> Result<bool, BackendError> {
    let token: Option<Option<i64>> = conn
        .prepare_cached("SELECT lease_token FROM instances WHERE instance_id = ?1")
        .db()?
        .query_row([id], |r| r.get(0))
        .optional()
        .db()?;
    Ok(token.flatten() == Some(SET_ASIDE))
}

/// Why a set-aside instance was set aside: its first unreadable row.
fn set_aside_error(conn: &Connection, id: &str) -> BackendError {
    match load_history(conn, id).and_then(|_| load_inbox(conn, id)) {
        Err(e) => e.into(),
        Ok(_) => BackendError::Other(format!(
            "instance \"{id}\" was set aside because one of its rows could not be read, and its \
             rows read fine now; open the database again to run it, or purge it by id to delete it"
        )),
    }
}

/// Routes a message: into the target's inbox (now or, for timers and
/// delayed starts, later) or nowhere (unknown or finished instance, another
/// execution), exactly as the in-memory backend does.
fn deliver(
    conn: &Connection,
    msg: &InstanceMessage,
    now: i64,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let target = match load(conn, &msg.instance_id, false) {
        Ok(Some(target)) => Some(target.meta),
        Ok(None) => {
            tracing::debug!(instance_id = %msg.instance_id, "dropping message for unknown instance");
            return Ok(());
        }
        // Kept unchecked, for when the row can be read again.
        Err(ReadError::Row(e)) => {
            tracing::error!(instance_id = %msg.instance_id, error = %e, "queueing a message for an instance whose row cannot be read");
            None
        }
        Err(ReadError::Db(e)) => return Err(e),
    };
    let delayed = msg.visible_at.map(micros).filter(|t| *t > now);
    // A delayed message is checked when it becomes due, like a timer firing.
    let checked = delayed.is_none() && target.is_some();
    if checked
        && target
            .as_ref()
            .is_some_and(|t| !transition::accepts_message(t, msg))
    {
        tracing::debug!(instance_id = %msg.instance_id, event = msg.event.kind.type_name(), "dropping message for finished instance or old execution");
        return Ok(());
    }
    let visible = delayed.unwrap_or(now);
    conn.prepare_cached(
        "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .db()?
    .execute(params![
        msg.instance_id,
        msg.execution_id,
        visible,
        checked,
        to_json(&msg.event)?,
    ])
    .db()?;
    conn.prepare_cached(
        "UPDATE instances SET ready_at = MIN(COALESCE(ready_at, ?2), ?2)
         WHERE instance_id = ?1 AND lease_token IS NULL",
    )
    .db()?
    .execute(params![msg.instance_id, visible])
    .db()?;
    fx.orchestrations = true;
    Ok(())
}

/// Creates an instance (applying the reuse policy) and queues its start.
pub(crate) fn create(
    conn: &Connection,
    ctx: &Ctx,
    request: &CreateInstanceRequest,
    parent: Option<ParentInstance>,
    now: Timestamp,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let existing = load(conn, &request.instance_id, false)?.map(|r| r.meta);
    let decision = transition::check_reuse(existing.as_ref(), &request.reuse_policy)?;
    // Validate the new instance before touching the old one.
    let (meta, start) = transition::create_instance(request, parent, now, &ctx.limits)?;
    if decision == Reuse::TerminateAndReplace {
        let id = &request.instance_id;
        let notice = transition::terminated_for_replacement(
            id,
            &load_history_start(conn, id)?,
            &load_inbox(conn, id)?,
            now,
        );
        if let Some(notice) = notice {
            deliver(conn, &notice, micros(now), fx)?;
        }
    }
    if decision != Reuse::Create {
        // Replace: the old instance goes away; a worker still holding its
        // lease gets LeaseLost.
        delete_instance(conn, &request.instance_id)?;
    }
    insert_instance(conn, &meta)?;
    deliver(conn, &start, micros(now), fx)?;
    fx.touched.push(request.instance_id.clone());
    Ok(())
}

/// Creates a sub-orchestration; if that fails, tells the parent instead.
fn create_child(
    conn: &Connection,
    ctx: &Ctx,
    child: &NewInstance,
    now: Timestamp,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    conn.prepare_cached("SAVEPOINT child")
        .db()?
        .execute([])
        .db()?;
    match create(conn, ctx, &child.request, child.parent.clone(), now, fx) {
        Ok(()) => conn
            .prepare_cached("RELEASE child")
            .db()?
            .execute([])
            .map(drop)
            .db(),
        Err(e) => {
            conn.execute_batch("ROLLBACK TO child; RELEASE child")
                .db()?;
            match child.creation_failed(&e, now) {
                Some(notice) => deliver(conn, &notice, micros(now), fx),
                None => Ok(()),
            }
        }
    }
}

pub(crate) fn get_instance(
    conn: &Connection,
    id: &str,
    payloads: bool,
) -> Result<Option<InstanceMetadata>, BackendError> {
    match load(conn, id, payloads)? {
        Some(row) if row.lease_token == Some(SET_ASIDE) => Err(set_aside_error(conn, id)),
        row => Ok(row.map(|r| r.meta)),
    }
}

pub(crate) fn get_history(conn: &Connection, id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
    if load(conn, id, false)?.is_none() {
        return Err(BackendError::NotFound(id.to_string()));
    }
    Ok(load_history(conn, id)?)
}

/// Writes `events` as history rows from sequence number `first` on.
fn insert_history(
    conn: &Connection,
    id: &str,
    execution_id: &str,
    first: i64,
    events: &[HistoryEvent],
) -> Result<(), BackendError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO history (instance_id, seq, execution_id, event_type, event)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?;
    for (i, e) in events.iter().enumerate() {
        stmt.execute(params![
            id,
            first + i as i64,
            execution_id,
            e.kind.type_name(),
            to_json(e)?,
        ])
        .db()?;
    }
    Ok(())
}

/// Rewinds a failed instance and, recursively, its failed
/// sub-orchestrations, in the caller's transaction.
pub(crate) fn rewind(
    conn: &Connection,
    id: &str,
    reason: Option<String>,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let request = ControlRequest::Rewind { reason };
    rewind_one(conn, id, request.clone(), fx)?;
    let now = chrono::Utc::now();
    let mut queue = vec![id.to_string()];
    while let Some(parent) = queue.pop() {
        let Some(parent_row) = load(conn, &parent, false)? else {
            continue;
        };
        for (child, task_id) in transition::rewind_children(&load_history(conn, &parent)?) {
            let Some(c) = load(conn, &child, true)? else {
                continue;
            };
            match transition::child_on_rewind(&parent_row.meta, task_id, &c.meta, now) {
                Some(transition::ChildOnRewind::Rewind) => {
                    rewind_one(conn, &child, request.clone(), fx)?;
                    queue.push(child);
                }
                Some(transition::ChildOnRewind::Deliver(msg)) => {
                    deliver(conn, &msg, micros(now), fx)?;
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// Queues the rewind of one failed instance, after dropping what waits in
/// its inbox: messages sent to the failed execution (a child's late
/// result, an event from another orchestration) are not for the rewound
/// one, and taken without the rewind they would replay the failure. A
/// child's late result is delivered again by [`rewind`].
fn rewind_one(
    conn: &Connection,
    id: &str,
    request: ControlRequest,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ?1")
        .db()?
        .execute([id])
        .db()?;
    control(conn, id, request, fx)
}

/// Queues a client's event (raise, terminate, suspend, resume), optionally
/// setting the status at once.
pub(crate) fn control(
    conn: &Connection,
    id: &str,
    request: ControlRequest,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let now = chrono::Utc::now();
    let row = load(conn, id, false)?.ok_or_else(|| BackendError::NotFound(id.to_string()))?;
    if row.lease_token == Some(SET_ASIDE) && !matches!(request, ControlRequest::RaiseEvent { .. }) {
        // Only an episode applies a terminate, suspend or resume, and a
        // set-aside instance runs none: refuse rather than queue a request
        // that would silently wait.
        return Err(BackendError::Other(format!(
            "{}; it cannot be terminated, suspended or resumed until it can run again \
             (events raised on it are kept). To delete it, purge it by id",
            set_aside_error(conn, id)
        )));
    }
    let mut meta = row.meta;
    let Some((event, status)) = request.decide(id, meta.status)? else {
        return Ok(());
    };
    if let Some(st) = status {
        meta.status = st;
        meta.last_updated_at = now;
        update_status(conn, &meta)?;
    }
    deliver(
        conn,
        &InstanceMessage {
            instance_id: id.to_string(),
            execution_id: Some(meta.execution_id.clone()),
            event: HistoryEvent::new(now, event),
            visible_at: None,
        },
        micros(now),
        fx,
    )?;
    fx.touched.push(id.to_string());
    Ok(())
}

/// Deletes an entity instance if it runs `execution_id`, is not leased and
/// has no message waiting (see `Backend::remove_idle_entity`); in the
/// write transaction, so nothing can come between the check and the delete.
pub(crate) fn remove_idle_entity(
    conn: &Connection,
    id: &str,
    execution_id: &str,
    fx: &mut Effects,
) -> Result<bool, BackendError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM instances
             WHERE instance_id = ?1 AND execution_id = ?2 AND status = ?3
               AND lease_token IS NULL
               AND NOT EXISTS (SELECT 1 FROM inbox WHERE instance_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM activities WHERE instance_id = ?1)",
        )
        .db()?
        .execute(params![
            id,
            execution_id,
            OrchestrationStatus::Running.to_string()
        ])
        .db()?;
    if deleted == 0 {
        return Ok(false);
    }
    delete_instance(conn, id)?;
    fx.touched.push(id.to_string());
    Ok(true)
}

pub(crate) fn purge(
    conn: &Connection,
    target: &PurgeTarget,
    recursive: bool,
    fx: &mut Effects,
) -> Result<usize, BackendError> {
    let (mut roots, mut count): (Vec<String>, usize) = match target {
        PurgeTarget::Instance(id) if is_set_aside(conn, id)? => {
            // A set-aside instance runs no more, whatever its status says,
            // and purging it by id is how it is deleted: its own rows go;
            // its sub-orchestrations too if its history can be read.
            let children = if recursive {
                match load_history(conn, id) {
                    Ok(history) => transition::all_children(&history),
                    Err(e) => {
                        tracing::error!(instance_id = %id, error = %BackendError::from(e), "purging a set-aside instance whose history cannot be read: its sub-orchestrations, if any, are kept");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            delete_instance(conn, id)?;
            fx.touched.push(id.clone());
            (children, 1)
        }
        PurgeTarget::Instance(id) => {
            let meta = load(conn, id, false)?
                .ok_or_else(|| BackendError::NotFound(id.clone()))?
                .meta;
            if !meta.status.is_terminal() {
                return Err(BackendError::InvalidState {
                    id: id.clone(),
                    operation: "purge",
                    status: meta.status,
                });
            }
            (vec![id.clone()], 0)
        }
        PurgeTarget::Filter {
            created_from,
            created_to,
            statuses,
        } => {
            let wanted: Vec<OrchestrationStatus> = OrchestrationStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal() && (statuses.is_empty() || statuses.contains(s)))
                .collect();
            let mut ids = Vec::new();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT instance_id FROM instances
                     WHERE status = ?1 AND created_at >= ?2 AND created_at < ?3",
                )
                .db()?;
            for s in wanted {
                let rows = stmt
                    .query_map(
                        params![
                            s.to_string(),
                            created_from.map(micros).unwrap_or(i64::MIN),
                            created_to.map(micros).unwrap_or(i64::MAX),
                        ],
                        |r| r.get::<_, Text>(0),
                    )
                    .db()?;
                for id in rows {
                    match id.db()?.text() {
                        Ok(id) => ids.push(id),
                        Err(e) => {
                            tracing::error!(instance_id = %e.lossy, "purge skips an instance whose id is {}", e.found);
                        }
                    }
                }
            }
            (ids, 0)
        }
    };
    while let Some(id) = roots.pop() {
        let children = load(conn, &id, false).and_then(|row| match row {
            Some(row) if row.meta.status.is_terminal() => Ok(Some(if recursive {
                transition::all_children(&load_history(conn, &id)?)
            } else {
                Vec::new()
            })),
            _ => Ok(None),
        });
        let children = match children {
            Ok(Some(children)) => children,
            Ok(None) => continue,
            // One unreadable instance does not stop a purge by filter, nor
            // the purge of another instance's children.
            Err(ReadError::Row(e)) if !matches!(target, PurgeTarget::Instance(named) if *named == id) =>
            {
                tracing::error!(instance_id = %id, error = %e, "purge skips an instance whose rows cannot be read");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        roots.extend(children);
        delete_instance(conn, &id)?;
        fx.touched.push(id);
        count += 1;
    }
    Ok(count)
}

pub(crate) fn query(conn: &Connection, q: &InstanceQuery) -> Result<QueryPage, BackendError> {
    let page = q.effective_page_size();
    let mut sql = String::from(
        "SELECT instance_id, meta, input, output, custom_status FROM instances
         WHERE instance_id > ?1",
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![q.continuation_token.clone().unwrap_or_default().into()];
    if let Some(p) = &q.instance_id_prefix {
        // A range rather than `substr`/`length`, which stop at a NUL
        // character; it also uses the primary key's index.
        args.push(p.clone().into());
        sql += &format!(" AND instance_id >= ?{}", args.len());
        if let Some(end) = prefix_successor(p) {
            args.push(end.into());
            sql += &format!(" AND instance_id < ?{}", args.len());
        }
    }
    if let Some(t) = q.created_from {
        args.push(micros(t).into());
        sql += &format!(" AND created_at >= ?{}", args.len());
    }
    if let Some(t) = q.created_to {
        args.push(micros(t).into());
        sql += &format!(" AND created_at < ?{}", args.len());
    }
    if !q.statuses.is_empty() {
        let mut marks = Vec::new();
        for s in &q.statuses {
            args.push(s.to_string().into());
            marks.push(format!("?{}", args.len()));
        }
        sql += &format!(" AND status IN ({})", marks.join(", "));
    }
    // No LIMIT: rows are read one at a time until the page is full and one
    // more readable row shows that another page follows; unreadable rows,
    // which are skipped, do not count.
    sql += " ORDER BY instance_id";
    let mut stmt = conn.prepare(&sql).db()?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, Text>(0)?,
                r.get::<_, Text>(1)?,
                r.get::<_, Option<Text>>(2)?,
                r.get::<_, Option<Text>>(3)?,
                r.get::<_, Option<Text>>(4)?,
            ))
        })
        .db()?;
    let mut instances = Vec::new();
    let mut more = false;
    for row in rows {
        let (id, meta, input, output, custom_status) = row.db()?;
        let id = match id.text() {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(instance_id = %e.lossy, "the query skips an instance whose id is {}", e.found);
                continue;
            }
        };
        let read = || -> Result<InstanceMetadata, Unreadable> {
            let mut m = parse_meta(&id, meta)?;
            if q.fetch_payloads {
                (m.input, m.output, m.custom_status) =
                    parse_payloads(&id, input, output, custom_status)?;
            }
            Ok(m)
        };
        match read() {
            // Another page follows only if a readable row does: a page
            // is never empty because the rows after a full one are not.
            Ok(_) if instances.len() == page => {
                more = true;
                break;
            }
            Ok(m) => instances.push(m),
            Err(e) => {
                tracing::error!(instance_id = %id, error = %e, "the query skips an instance whose row cannot be read");
            }
        }
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
/// or `None` if there is none (an empty prefix, or one of only `char::MAX`).
/// Text compares byte-wise, and UTF-8 byte order is code point order, so
/// bumping the last character that can be bumped is enough.
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

/// When the next item becomes due (`sql` selects the earliest one's
/// instance id, due time, lease token and lease owner), for an idle worker.
/// If that is the expiry of a lease another process holds and that process
/// shows no sign of life (no heartbeat for longer than a lease), the wait
/// is logged at info level, once per lease: a restarted worker that sits
/// idle says what it waits for and until when.
fn next_due(
    conn: &Connection,
    ctx: &Ctx,
    sql: &str,
    kind: &str,
) -> Result<Option<i64>, BackendError> {
    let row = conn
        .prepare_cached(sql)
        .db()?
        .query_row([], |r| {
            Ok((
                r.get::<_, Text>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .optional()
        .db()?;
    let Some((id, due, token, owner)) = row else {
        return Ok(None);
    };
    let others_lease = token.is_some_and(|t| t >= 0) && owner != Some(ctx.process_id);
    if !others_lease {
        return Ok(Some(due));
    }
    let heartbeat: Option<i64> = match owner {
        Some(owner) => conn
            .prepare_cached("SELECT heartbeat_at FROM processes WHERE id = ?1")
            .db()?
            .query_row([owner], |r| r.get(0))
            .optional()
            .db()?,
        None => None,
    };
    let now = micros(chrono::Utc::now());
    let silent = heartbeat.is_none_or(|h| now.saturating_sub(h) > ctx.lease_micros);
    let instance_id = id.text().unwrap_or_else(|e| e.lossy);
    let key = (instance_id, due);
    let mut last = ctx.waiting_for.lock().unwrap_or_else(|p| p.into_inner());
    if last.as_ref() != Some(&key) {
        let until = chrono::DateTime::from_timestamp_micros(due)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| due.to_string());
        let in_ms = due.saturating_sub(now).max(0) / 1000;
        let owner = owner.map_or_else(|| "unknown".to_string(), |o| o.to_string());
        if silent {
            tracing::info!(instance_id = %key.0, owner, until, in_ms, "idle: waiting for the {kind} lease of a process that shows no sign of life to expire");
        } else {
            tracing::debug!(instance_id = %key.0, owner, until, in_ms, "idle: the next {kind} work is held by another live process");
        }
        *last = Some(key);
    }
    Ok(Some(due))
}

/// Leases up to `max` items with `lease_one`, in one transaction.
pub(crate) fn lease_many<T>(
    max: usize,
    mut lease_one: impl FnMut() -> Result<Leased<T>, BackendError>,
) -> Result<Leased<Vec<T>>, BackendError> {
    let mut items = Vec::new();
    while items.len() < max.max(1) {
        match lease_one()? {
            Leased::Item(item) => items.push(item),
            Leased::Idle(next) if items.is_empty() => return Ok(Leased::Idle(next)),
            Leased::Idle(_) => break,
        }
    }
    Ok(Leased::Item(items))
}

/// Leases the instance that has waited longest for a worker. An instance
/// one of whose rows cannot be read is set aside ([`SET_ASIDE`]), logged,
/// and the next one is tried: it must not stop everyone else's work.
pub(crate) fn lease_orchestration(
    conn: &Connection,
    ctx: &Ctx,
    fx: &mut Effects,
) -> Result<Leased<OrchestrationWorkItem>, BackendError> {
    let now_ts = chrono::Utc::now();
    let now = micros(now_ts);
    loop {
        let next = conn
            .prepare_cached(
                "SELECT rowid, instance_id, lease_token IS NOT NULL FROM instances
                 WHERE ready_at <= ?1 ORDER BY ready_at LIMIT 1",
            )
            .db()?
            .query_row([now], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Text>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .optional()
            .db()?;
        let Some((rowid, id, lease_expired)) = next else {
            // The condition lets SQLite answer from the partial index
            // instead of scanning every instance.
            let next = next_due(
                conn,
                ctx,
                "SELECT instance_id, ready_at, lease_token, lease_owner FROM instances
                 WHERE ready_at IS NOT NULL ORDER BY ready_at LIMIT 1",
                "orchestration",
            )?;
            return Ok(Leased::Idle(next));
        };
        let leased = match id.text() {
            Ok(id) => lease_instance(conn, ctx, id, now_ts),
            Err(e) => Err(ReadError::Row(Unreadable {
                instance_id: e.lossy,
                row: INSTANCE_ROW.into(),
                problem: Problem::NotText {
                    column: "instance_id",
                    found: e.found,
                },
            })),
        };
        match leased {
            Ok(Some(item)) => {
                // Ready while still leased: the lease expired unrenewed
                // (its worker stopped or stalled), so this is a redelivery.
                if lease_expired {
                    durable_runtime::metrics::redelivered(
                        durable_runtime::metrics::KIND_ORCHESTRATION,
                    );
                }
                sample_backlog(conn, ctx, now, durable_runtime::metrics::KIND_ORCHESTRATION)?;
                return Ok(Leased::Item(item));
            }
            Ok(None) => {}
            Err(ReadError::Row(e)) => {
                tracing::error!(instance_id = %e.instance_id, error = %e, "a row of the instance cannot be read; the instance is set aside");
                conn.prepare_cached(
                    "UPDATE instances SET lease_token = ?2, lease_expires = NULL, ready_at = NULL,
                            lease_owner = NULL
                     WHERE rowid = ?1",
                )
                .db()?
                .execute(params![rowid, SET_ASIDE])
                .db()?;
                fx.touched.push(e.instance_id);
            }
            Err(ReadError::Db(e)) => return Err(e),
        }
    }
}

/// Leases instance `id` if it has work that can run now.
fn lease_instance(
    conn: &Connection,
    ctx: &Ctx,
    id: String,
    now_ts: Timestamp,
) -> Result<Option<OrchestrationWorkItem>, ReadError> {
    let now = micros(now_ts);
    let Some(row) = load(conn, &id, false)? else {
        return Ok(None);
    };
    if row.meta.status.is_terminal() {
        conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ?1")
            .db()?
            .execute([&id])
            .db()?;
        release(conn, &id)?;
        return Ok(None);
    }
    let mut events = Vec::new();
    let mut dropped = Vec::new();
    {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, execution_id, checked, event FROM inbox
                     WHERE instance_id = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq",
            )
            .db()?;
        let rows = stmt
            .query_map(params![id, now], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<Text>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Text>(3)?,
                ))
            })
            .db()?;
        for r in rows {
            let (seq, execution_id, checked, text) = r.db()?;
            let row_name = RowName("inbox", seq);
            let event = parse_event(&id, row_name, text)?;
            let execution_id = execution_id
                .map(|t| t.of(&id, row_name, "execution_id"))
                .transpose()?;
            if !checked {
                let msg = InstanceMessage {
                    instance_id: id.clone(),
                    execution_id,
                    event,
                    visible_at: None,
                };
                if !transition::accepts_message(&row.meta, &msg) {
                    dropped.push(seq);
                    continue;
                }
                events.push(msg.event);
            } else {
                events.push(event);
            }
        }
    }
    for seq in dropped {
        conn.prepare_cached("DELETE FROM inbox WHERE seq = ?1")
            .db()?
            .execute([seq])
            .db()?;
    }
    if events.is_empty() {
        release(conn, &id)?;
        return Ok(None);
    }
    if !transition::runnable(row.history_len == 0, &events) {
        // Not started yet (e.g. an event raised before a delayed start):
        // wait for the start, or a terminate, whichever is queued first.
        let next = next_start_or_terminate(conn, &id)?;
        conn.prepare_cached("UPDATE instances SET ready_at = ?2 WHERE instance_id = ?1")
            .db()?
            .execute(params![id, next])
            .db()?;
        return Ok(None);
    }
    let token = new_token();
    let expires = now.saturating_add(ctx.lease_micros);
    conn.prepare_cached(
        "UPDATE inbox SET lease_token = ?3 WHERE instance_id = ?1 AND visible_at <= ?2",
    )
    .db()?
    .execute(params![id, now, token])
    .db()?;
    conn.prepare_cached(
        "UPDATE instances SET lease_token = ?2, lease_expires = ?3, ready_at = ?3,
                lease_owner = ?4
             WHERE instance_id = ?1",
    )
    .db()?
    .execute(params![id, token, expires, ctx.process_id])
    .db()?;
    let cached = cache(ctx).get(
        &id,
        &row.meta.execution_id,
        row.history_len as usize,
        row.meta.last_updated_at,
    );
    let past_events = match cached {
        Some(h) => h,
        None => {
            let h = Arc::new(load_history(conn, &id)?);
            cache(ctx).put(
                id.clone(),
                row.meta.execution_id.clone(),
                row.meta.last_updated_at,
                h.clone(),
            );
            h
        }
    };
    Ok(Some(OrchestrationWorkItem {
        instance_id: id,
        execution_id: row.meta.execution_id,
        past_events,
        new_events: transition::episode_events(events, now_ts),
        completion_token: token.to_string(),
        orchestration_span: None,
    }))
}

fn check_lease(
    conn: &Connection,
    item_id: &str,
    token: &str,
    payloads: bool,
) -> Result<(Row, i64), BackendError> {
    let lost = || BackendError::LeaseLost(item_id.to_string());
    let token: i64 = token.parse().map_err(|_| lost())?;
    let row = load(conn, item_id, payloads)?.ok_or_else(lost)?;
    if row.lease_token != Some(token) {
        return Err(lost());
    }
    Ok((row, token))
}

/// Applies an episode's result in the caller's transaction.
pub(crate) fn complete_orchestration(
    conn: &Connection,
    ctx: &Ctx,
    item: OrchestrationWorkItem,
    result: &OrchestratorResult,
    fx: &mut Effects,
) -> Result<RecordedEpisode, BackendError> {
    let now_ts = chrono::Utc::now();
    let now = micros(now_ts);
    let id = item.instance_id.clone();
    let (row, token) = check_lease(conn, &id, &item.completion_token, true)?;
    // Drop the cached copy so the item's history is the only reference and
    // can grow in place.
    cache(ctx).remove(&id);
    let mut past = item.past_events;
    if past.len() as i64 != row.history_len || item.execution_id != row.meta.execution_id {
        past = Arc::new(load_history(conn, &id)?);
    }
    let outcome = transition::apply_episode(
        &row.meta,
        &past,
        &item.new_events,
        result,
        now_ts,
        &ctx.limits,
    );
    conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ?1 AND lease_token = ?2")
        .db()?
        .execute(params![id, token])
        .db()?;
    // Timers the episode cancelled: their TimerFired rows, due later or
    // already waiting. (An execution that ended or continued as new loses
    // all of them below, with the rest of its inbox.)
    if let transition::DroppedTimers::Cancelled(ids) = &outcome.dropped_timers {
        if !ids.is_empty() {
            delete_timers(conn, &id, &row.meta.execution_id, &outcome.dropped_timers)?;
        }
    }
    let meta = outcome.metadata;
    let (history_len, cache_update) = match outcome.history {
        HistoryUpdate::Append(events) => {
            insert_history(conn, &id, &meta.execution_id, row.history_len, &events)?;
            let len = row.history_len + events.len() as i64;
            Arc::make_mut(&mut past).extend(events);
            (len, Some((meta.execution_id.clone(), past)))
        }
        HistoryUpdate::Replace(events) => {
            // A rewind: the same execution, its history rewritten.
            conn.prepare_cached("DELETE FROM history WHERE instance_id = ?1")
                .db()?
                .execute([&id])
                .db()?;
            insert_history(conn, &id, &meta.execution_id, 0, &events)?;
            let len = events.len() as i64;
            (len, Some((meta.execution_id.clone(), Arc::new(events))))
        }
        HistoryUpdate::Restart { inbox_front } => {
            conn.prepare_cached("DELETE FROM history WHERE instance_id = ?1")
                .db()?
                .execute([&id])
                .db()?;
            // Results of the old execution's tasks still queued would match
            // the new execution's tasks of the same sequence numbers.
            let stale: Vec<i64> = {
                let mut stmt = conn
                    .prepare_cached("SELECT seq, event FROM inbox WHERE instance_id = ?1")
                    .db()?;
                let rows = stmt
                    .query_map([&id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Text>(1)?)))
                    .db()?;
                let mut stale = Vec::new();
                for r in rows {
                    let (seq, text) = r.db()?;
                    if event_of(text).is_some_and(|e| !transition::survives_restart(&e)) {
                        stale.push(seq);
                    }
                }
                stale
            };
            for seq in stale {
                conn.prepare_cached("DELETE FROM inbox WHERE seq = ?1")
                    .db()?
                    .execute([seq])
                    .db()?;
            }
            // Ahead of everything already queued.
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO inbox (instance_id, execution_id, visible_at, checked, event)
                     VALUES (?1, ?2, ?3, 1, ?4)",
                )
                .db()?;
            for (i, e) in inbox_front.iter().enumerate() {
                stmt.execute(params![
                    id,
                    meta.execution_id,
                    i64::MIN + i as i64,
                    to_json(e)?
                ])
                .db()?;
            }
            (0, Some((meta.execution_id.clone(), Arc::new(Vec::new()))))
        }
    };
    if meta.status.is_terminal() {
        conn.prepare_cached("DELETE FROM inbox WHERE instance_id = ?1")
            .db()?
            .execute([&id])
            .db()?;
    }
    // The new metadata, payloads and history length, and the lease
    // released (as `release` does), in one statement.
    conn.prepare_cached(
        "UPDATE instances SET execution_id = ?2, status = ?3, meta = ?4, input = ?5,
                output = ?6, custom_status = ?7, history_len = ?8,
                lease_token = NULL, lease_expires = NULL, lease_owner = NULL,
                ready_at = (SELECT MIN(visible_at) FROM inbox WHERE instance_id = ?1)
         WHERE instance_id = ?1",
    )
    .db()?
    .execute(params![
        id,
        meta.execution_id,
        meta.status.to_string(),
        meta_json(&meta)?,
        meta.input,
        meta.output,
        meta.custom_status,
        history_len,
    ])
    .db()?;
    let out = outcome.outbox;
    if !out.activities.is_empty() {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO activities (instance_id, execution_id, task_id, name, version, input,
                                         visible_at, tags)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .db()?;
        for a in &out.activities {
            // The trace context rides with the tags (one column for both).
            let tags = durable_runtime::trace::stored_tags(&a.tags, a.trace.as_ref());
            let tags = (!tags.is_empty())
                .then(|| serde_json::to_string(&tags).expect("a map of strings serialises"));
            stmt.execute(params![
                a.instance_id,
                a.execution_id,
                a.task_id,
                a.name,
                a.version,
                a.input,
                now,
                tags
            ])
            .db()?;
        }
        fx.activities = true;
    }
    for child in &out.new_instances {
        create_child(conn, ctx, child, now_ts, fx)?;
    }
    for msg in &out.messages {
        deliver(conn, msg, now, fx)?;
    }
    fx.touched.push(id.clone());
    fx.orchestrations = true;
    // Cached before the commit: if the transaction is rolled back, the
    // connection thread clears the whole cache (see `SqliteBackend::start`).
    if let Some((execution_id, history)) = cache_update.filter(|_| !meta.status.is_terminal()) {
        cache(ctx).put(id, execution_id, meta.last_updated_at, history);
    }
    Ok(RecordedEpisode {
        status: meta.status,
        failure: meta.failure,
    })
}

/// Deletes the inbox rows of an execution's timers that `dropped` covers.
fn delete_timers(
    conn: &Connection,
    id: &str,
    execution_id: &str,
    dropped: &transition::DroppedTimers,
) -> Result<(), BackendError> {
    let rows: Vec<i64> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, event FROM inbox WHERE instance_id = ?1 AND execution_id = ?2",
            )
            .db()?;
        let rows = stmt
            .query_map(params![id, execution_id], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Text>(1)?))
            })
            .db()?;
        let mut found = Vec::new();
        for r in rows {
            let (seq, text) = r.db()?;
            if event_of(text).is_some_and(|e| dropped.covers(&e)) {
                found.push(seq);
            }
        }
        found
    };
    for seq in rows {
        conn.prepare_cached("DELETE FROM inbox WHERE seq = ?1")
            .db()?
            .execute([seq])
            .db()?;
    }
    Ok(())
}

pub(crate) fn abandon_orchestration(
    conn: &Connection,
    item: &OrchestrationWorkItem,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let (_, token) = check_lease(conn, &item.instance_id, &item.completion_token, false)?;
    conn.prepare_cached(
        "UPDATE inbox SET lease_token = NULL WHERE instance_id = ?1 AND lease_token = ?2",
    )
    .db()?
    .execute(params![item.instance_id, token])
    .db()?;
    release(conn, &item.instance_id)?;
    fx.orchestrations = true;
    Ok(())
}

/// Leases the activity that has waited longest.
pub(crate) fn lease_activity(
    conn: &Connection,
    ctx: &Ctx,
) -> Result<Leased<ActivityWorkItem>, BackendError> {
    let now = micros(chrono::Utc::now());
    loop {
        let row = conn
            .prepare_cached(
                "SELECT id, instance_id, execution_id, task_id, name, version, input, tags,
                        lease_token IS NOT NULL
                 FROM activities WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT 1",
            )
            .db()?
            .query_row([now], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Text>(1)?,
                    r.get::<_, Text>(2)?,
                    r.get::<_, i32>(3)?,
                    r.get::<_, Text>(4)?,
                    r.get::<_, Option<Text>>(5)?,
                    r.get::<_, Option<Text>>(6)?,
                    r.get::<_, Option<Text>>(7)?,
                    r.get::<_, bool>(8)?,
                ))
            })
            .optional()
            .db()?;
        let Some((rowid, instance_id, execution_id, task_id, name, version, input, tags, expired)) =
            row
        else {
            let next = next_due(
                conn,
                ctx,
                "SELECT instance_id, visible_at, lease_token, lease_owner FROM activities
                 ORDER BY visible_at LIMIT 1",
                "activity",
            )?;
            return Ok(Leased::Idle(next));
        };
        let read = || -> Result<ActivityWorkItem, Unreadable> {
            let instance_id = instance_id.text().map_err(|e| Unreadable {
                instance_id: e.lossy,
                row: format!("activity row {rowid}"),
                problem: Problem::NotText {
                    column: "instance_id",
                    found: e.found,
                },
            })?;
            let row = format!("activity row {rowid} (task {task_id})");
            let optional = |t: Option<Text>, column| t.map(|t| t.of(&instance_id, &row, column));
            // Tags are hints (the attempt number, the trace context):
            // unreadable ones count as none rather than setting the
            // activity aside.
            let (tags, trace) = durable_runtime::trace::split_stored_tags(read_tags(
                tags.and_then(|t| t.text().ok()).as_deref(),
            ));
            Ok(ActivityWorkItem {
                execution_id: execution_id.of(&instance_id, &row, "execution_id")?,
                name: name.of(&instance_id, &row, "name")?,
                version: optional(version, "version").transpose()?,
                input: optional(input, "input").transpose()?,
                task_id,
                completion_token: String::new(),
                instance_id,
                tags,
                trace,
            })
        };
        let mut item = match read() {
            Ok(item) => item,
            Err(e) => {
                // Set aside, like an instance with an unreadable row: never
                // leased again until the database is reopened, so the
                // other activities keep running.
                tracing::error!(instance_id = %e.instance_id, error = %e, "an activity row cannot be read; the activity is set aside");
                conn.prepare_cached(
                    "UPDATE activities SET lease_token = ?2, visible_at = ?3, lease_owner = NULL
                     WHERE id = ?1",
                )
                .db()?
                .execute(params![rowid, SET_ASIDE, i64::MAX])
                .db()?;
                continue;
            }
        };
        let token = new_token();
        conn.prepare_cached(
            "UPDATE activities SET lease_token = ?2, visible_at = ?3, lease_owner = ?4 WHERE id = ?1",
        )
        .db()?
        .execute(params![
            rowid,
            token,
            now.saturating_add(ctx.lease_micros),
            ctx.process_id
        ])
        .db()?;
        item.completion_token = format!("{rowid}:{token}");
        // Visible while still leased: the lease expired unrenewed.
        if expired {
            durable_runtime::metrics::redelivered(durable_runtime::metrics::KIND_ACTIVITY);
        }
        sample_backlog(conn, ctx, now, durable_runtime::metrics::KIND_ACTIVITY)?;
        return Ok(Leased::Item(item));
    }
}

/// An activity's stored tags. Tags only inform the activity (its attempt
/// number), so a value that does not parse is read as none, with a warning,
/// rather than holding the activity back.
fn read_tags(tags: Option<&str>) -> BTreeMap<String, String> {
    let Some(text) = tags else {
        return BTreeMap::new();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(tags = text, error = %e, "an activity's stored tags do not parse; it runs without them");
        BTreeMap::new()
    })
}

fn activity_lease(item: &ActivityWorkItem) -> Result<(i64, i64), BackendError> {
    let lost = || BackendError::LeaseLost(item.completion_token.clone());
    let (id, token) = item.completion_token.split_once(':').ok_or_else(lost)?;
    Ok((
        id.parse().map_err(|_| lost())?,
        token.parse().map_err(|_| lost())?,
    ))
}

pub(crate) fn complete_activity(
    conn: &Connection,
    ctx: &Ctx,
    item: &ActivityWorkItem,
    outcome: TaskOutcome,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let now_ts = chrono::Utc::now();
    let (rowid, token) = activity_lease(item)?;
    let row = conn
        .prepare_cached(
            "DELETE FROM activities WHERE id = ?1 AND lease_token = ?2
             RETURNING task_id, name, instance_id, execution_id",
        )
        .db()?
        .query_row(params![rowid, token], |r| {
            Ok((
                r.get::<_, i32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .optional()
        .db()?;
    let Some((task_id, name, instance_id, execution_id)) = row else {
        return Err(BackendError::LeaseLost(item.completion_token.clone()));
    };
    let event = transition::activity_completion(task_id, outcome, &name, now_ts, &ctx.limits);
    deliver(
        conn,
        &InstanceMessage {
            instance_id,
            execution_id: Some(execution_id),
            event,
            visible_at: None,
        },
        micros(now_ts),
        fx,
    )
}

pub(crate) fn renew_activity(
    conn: &Connection,
    ctx: &Ctx,
    item: &ActivityWorkItem,
) -> Result<(), BackendError> {
    let (rowid, token) = activity_lease(item)?;
    let expires = micros(chrono::Utc::now()).saturating_add(ctx.lease_micros);
    let n = conn
        .prepare_cached(
            "UPDATE activities SET visible_at = ?3, lease_owner = ?4
             WHERE id = ?1 AND lease_token = ?2",
        )
        .db()?
        .execute(params![rowid, token, expires, ctx.process_id])
        .db()?;
    if n == 0 {
        return Err(BackendError::LeaseLost(item.completion_token.clone()));
    }
    Ok(())
}

pub(crate) fn renew_orchestration(
    conn: &Connection,
    ctx: &Ctx,
    item: &OrchestrationWorkItem,
) -> Result<(), BackendError> {
    let lost = || BackendError::LeaseLost(item.instance_id.clone());
    let token: i64 = item.completion_token.parse().map_err(|_| lost())?;
    let expires = micros(chrono::Utc::now()).saturating_add(ctx.lease_micros);
    let n = conn
        .prepare_cached(
            "UPDATE instances SET lease_expires = ?3, ready_at = ?3, lease_owner = ?4
             WHERE instance_id = ?1 AND lease_token = ?2",
        )
        .db()?
        .execute(params![item.instance_id, token, expires, ctx.process_id])
        .db()?;
    if n == 0 {
        return Err(lost());
    }
    Ok(())
}

pub(crate) fn abandon_activity(
    conn: &Connection,
    item: &ActivityWorkItem,
    fx: &mut Effects,
) -> Result<(), BackendError> {
    let (rowid, token) = activity_lease(item)?;
    let n = conn
        .prepare_cached(
            "UPDATE activities SET lease_token = NULL, lease_owner = NULL, visible_at = ?3
             WHERE id = ?1 AND lease_token = ?2",
        )
        .db()?
        .execute(params![rowid, token, micros(chrono::Utc::now())])
        .db()?;
    if n == 0 {
        return Err(BackendError::LeaseLost(item.completion_token.clone()));
    }
    fx.activities = true;
    Ok(())
}
