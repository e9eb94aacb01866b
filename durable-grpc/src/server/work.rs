//! Work items: the table of items leased to workers (keyed by the
//! completion tokens the server hands out) and the task behind each
//! `GetWorkItems` stream, which leases items from the backend, sends them,
//! renews their leases while workers hold them, and gives them back when
//! the stream closes.

use super::Shared;
use crate::convert;
use crate::proto;
use durable_runtime::backend::{ActivityWorkItem, Backend, BackendError, OrchestrationWorkItem};
use durable_runtime::entity::{plan_remote_batch, EntityId, RemotePlan};
use durable_runtime::history::EventKind;
use futures::future::{BoxFuture, OptionFuture};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tonic::Status;

/// A work item a worker holds.
#[derive(Clone)]
pub(super) enum Item {
    /// An orchestration episode.
    Orchestration(OrchestrationWorkItem),
    /// An activity.
    Activity(ActivityWorkItem),
}

impl Item {
    /// A copy without the events (not needed to renew a lease).
    fn without_events(&self) -> Item {
        match self {
            Item::Orchestration(i) => Item::Orchestration(OrchestrationWorkItem {
                instance_id: i.instance_id.clone(),
                execution_id: i.execution_id.clone(),
                past_events: Arc::default(),
                new_events: Vec::new(),
                completion_token: i.completion_token.clone(),
                orchestration_span: i.orchestration_span,
            }),
            other => other.clone(),
        }
    }

    fn instance_id(&self) -> &str {
        match self {
            Item::Orchestration(i) => &i.instance_id,
            Item::Activity(i) => &i.instance_id,
        }
    }
}

/// One `GetWorkItems` stream's share of the table.
pub(super) struct StreamState {
    id: u64,
    /// Orchestration episodes and activities its worker holds now.
    orchestrations: AtomicUsize,
    activities: AtomicUsize,
    /// Set when the stream has closed: items it brought are given back.
    closed: AtomicBool,
    /// Woken when one of its items is finished.
    finished: Notify,
}

struct Leased {
    stream: Arc<StreamState>,
    item: Item,
}

/// The items leased to workers, by completion token, and where items a
/// stream's filters exclude go.
pub(super) struct Leases {
    /// Makes this server's tokens unlike another's (or a restarted one's).
    nonce: u64,
    next: AtomicU64,
    items: Mutex<HashMap<String, Leased>>,
    /// The open streams, by id: their filters, and where to send them an
    /// item another stream leased for them.
    routes: Mutex<HashMap<u64, Route>>,
    /// Items no open stream's filters take: held (their leases renewed)
    /// until a stream that takes them opens, and given back when the last
    /// stream closes.
    parked: Mutex<Vec<Item>>,
}

struct Route {
    filters: Arc<Filters>,
    inbox: mpsc::UnboundedSender<Item>,
}

/// Which names a stream's worker serves (`workItemFilters`): `None` for a
/// kind means any; otherwise only the names listed, each with the versions
/// listed (none listed: any version).
#[derive(Debug, Default)]
pub(super) struct Filters {
    orchestrations: Option<HashMap<String, HashSet<String>>>,
    activities: Option<HashMap<String, HashSet<String>>>,
    /// Entity names; an `@name@key` instance is matched against these, not
    /// against the orchestrator names.
    entities: Option<HashSet<String>>,
}

impl Filters {
    /// The filters of a request; none when it has no `workItemFilters`.
    pub(super) fn from_request(r: &proto::GetWorkItemsRequest) -> Self {
        let Some(f) = &r.work_item_filters else {
            return Filters::default();
        };
        let build = |pairs: Vec<(&String, &Vec<String>)>| {
            let mut map: HashMap<String, HashSet<String>> = HashMap::new();
            for (name, versions) in pairs {
                map.entry(name.clone())
                    .or_default()
                    .extend(versions.iter().cloned());
            }
            Some(map)
        };
        Filters {
            orchestrations: build(
                f.orchestrations
                    .iter()
                    .map(|o| (&o.name, &o.versions))
                    .collect(),
            ),
            activities: build(
                f.activities
                    .iter()
                    .map(|a| (&a.name, &a.versions))
                    .collect(),
            ),
            entities: Some(
                f.entities
                    .iter()
                    .map(|e| e.name.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    /// Whether the stream's worker takes any item of `kind` (a filter that
    /// lists no names takes none: the stream then leases none).
    fn takes_any(&self, kind: Kind) -> bool {
        match kind {
            Kind::Orchestration => {
                self.orchestrations
                    .as_ref()
                    .is_none_or(|names| !names.is_empty())
                    || self.entities.as_ref().is_none_or(|names| !names.is_empty())
            }
            Kind::Activity => self
                .activities
                .as_ref()
                .is_none_or(|names| !names.is_empty()),
        }
    }

    /// Whether the stream's worker takes `item`. An `@name@key` instance
    /// (an entity) goes by the entity filter, anything else by its
    /// orchestrator's name and version.
    fn matches(&self, item: &Item) -> bool {
        match item {
            Item::Activity(a) => allowed(&self.activities, &a.name, a.version.as_deref()),
            Item::Orchestration(o) => match (&self.entities, o.instance_id.parse::<EntityId>()) {
                (None, Ok(_)) => true,
                (Some(names), Ok(id)) => names.contains(id.name()),
                (_, Err(_)) => self.orchestration_matches(o),
            },
        }
    }

    /// Whether the stream's worker takes the orchestration episode `o`.
    fn orchestration_matches(&self, o: &OrchestrationWorkItem) -> bool {
        if self.orchestrations.is_none() {
            return true;
        }
        let started = o
            .new_events
            .iter()
            .chain(o.past_events.iter())
            .find_map(|e| match &e.kind {
                EventKind::ExecutionStarted { name, version, .. } => {
                    Some((name.as_str(), version.as_deref()))
                }
                _ => None,
            });
        // An episode that names no orchestrator goes anywhere.
        started.is_none_or(|(name, version)| allowed(&self.orchestrations, name, version))
    }
}

/// Whether a name filter (none: everything) takes `name` at `version`.
fn allowed(
    filter: &Option<HashMap<String, HashSet<String>>>,
    name: &str,
    version: Option<&str>,
) -> bool {
    match filter {
        None => true,
        Some(names) => names.get(name).is_some_and(|versions| {
            versions.is_empty() || versions.contains(version.unwrap_or(""))
        }),
    }
}

/// Which kind of item a call expects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Orchestration,
    Activity,
}

impl Kind {
    fn of(item: &Item) -> Kind {
        match item {
            Item::Orchestration(_) => Kind::Orchestration,
            Item::Activity(_) => Kind::Activity,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Orchestration => "an orchestration work item",
            Kind::Activity => "an activity work item",
        }
    }
}

impl Leases {
    pub(super) fn new() -> Self {
        Leases {
            nonce: fastrand::u64(..),
            next: AtomicU64::new(1),
            items: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            parked: Mutex::new(Vec::new()),
        }
    }

    /// Opens a route to a new stream; returns the parked items it takes.
    fn open_route(&self, stream: &StreamState, route: Route) -> Vec<Item> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        let (taken, kept) = parked
            .drain(..)
            .partition(|item| route.filters.matches(item));
        *parked = kept;
        routes.insert(stream.id, route);
        taken
    }

    /// Closes a stream's route; if it was the last stream, also returns
    /// the parked items (no one is left to take them).
    fn close_route(&self, stream: &StreamState) -> Vec<Item> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.remove(&stream.id);
        if routes.is_empty() {
            std::mem::take(&mut *self.parked.lock().unwrap_or_else(|p| p.into_inner()))
        } else {
            Vec::new()
        }
    }

    /// Sends an item a stream's filters exclude to an open stream whose
    /// filters take it, or parks it until one opens.
    fn route(&self, from: &StreamState, item: Item) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut item = item;
        for (id, route) in routes.iter() {
            if *id == from.id || !route.filters.matches(&item) {
                continue;
            }
            match route.inbox.send(item) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
    }

    /// The parked items, for renewing their leases.
    fn parked(&self) -> Vec<Item> {
        self.parked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(Item::without_events)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Leased>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an item handed out on `stream`; returns its token.
    fn insert(&self, stream: &Arc<StreamState>, item: Item) -> String {
        let token = format!(
            "durable-{:016x}-{}",
            self.nonce,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        stream.count(Kind::of(&item)).fetch_add(1, Ordering::SeqCst);
        self.lock().insert(
            token.clone(),
            Leased {
                stream: stream.clone(),
                item,
            },
        );
        token
    }

    /// Takes the item of `token` out of the table, for a call that finishes
    /// it; `instance_id` (if the call names one) must be the item's. A token
    /// of the wrong kind or instance is refused and left in place.
    pub(super) fn take(
        &self,
        shared: &Arc<Shared>,
        token: &str,
        kind: Kind,
        instance_id: &str,
        call: &str,
    ) -> Result<Taken, Status> {
        let mut items = self.lock();
        let Some(leased) = items.get(token) else {
            return Err(Status::failed_precondition(format!(
                "{call}: completion token \"{token}\" is not that of a work item this server \
                 has handed out and not yet seen finished: the item was completed or \
                 abandoned already, the work-item stream that brought it closed (its items \
                 are given back then, to be delivered again), or the token is from another \
                 server; nothing was changed"
            )));
        };
        if Kind::of(&leased.item) != kind {
            return Err(Status::invalid_argument(format!(
                "{call}: completion token \"{token}\" is that of {}, not {}; nothing was \
                 changed",
                Kind::of(&leased.item).noun(),
                kind.noun()
            )));
        }
        if !instance_id.is_empty() && instance_id != leased.item.instance_id() {
            return Err(Status::invalid_argument(format!(
                "{call}: completion token \"{token}\" is that of a work item of instance \
                 \"{}\", not of \"{instance_id}\"; nothing was changed",
                leased.item.instance_id()
            )));
        }
        let leased = items.remove(token).expect("looked up above");
        Ok(Taken {
            shared: shared.clone(),
            token: token.to_string(),
            stream: leased.stream,
            item: Some(leased.item),
        })
    }

    /// Gives back every item still leased (at shutdown).
    pub(super) async fn give_back_all(&self, backend: &dyn Backend) {
        let all: Vec<Leased> = self.lock().drain().map(|(_, l)| l).collect();
        for leased in all {
            leased.stream.closed.store(true, Ordering::SeqCst);
            give_back(backend, leased.item).await;
        }
        let parked = std::mem::take(&mut *self.parked.lock().unwrap_or_else(|p| p.into_inner()));
        for item in parked {
            give_back(backend, item).await;
        }
    }

    /// Takes out the items of a closed stream.
    fn take_stream(&self, stream: &StreamState) -> Vec<Item> {
        let mut items = self.lock();
        let tokens: Vec<String> = items
            .iter()
            .filter(|(_, l)| l.stream.id == stream.id)
            .map(|(t, _)| t.clone())
            .collect();
        tokens
            .into_iter()
            .filter_map(|t| items.remove(&t).map(|l| l.item))
            .collect()
    }

    /// The past events of the episode of `instance_id` a worker holds (of
    /// `execution_id`, if given), for a worker fetching the history its
    /// work item left out.
    pub(super) fn held_history(
        &self,
        instance_id: &str,
        execution_id: Option<&str>,
    ) -> Option<Arc<Vec<durable_runtime::history::HistoryEvent>>> {
        self.lock().values().find_map(|l| match &l.item {
            Item::Orchestration(i)
                if i.instance_id == instance_id
                    && execution_id.is_none_or(|e| e == i.execution_id) =>
            {
                Some(i.past_events.clone())
            }
            _ => None,
        })
    }

    /// The items of a stream, for renewing their leases.
    fn of_stream(&self, stream: &StreamState) -> Vec<Item> {
        self.lock()
            .values()
            .filter(|l| l.stream.id == stream.id)
            .map(|l| l.item.without_events())
            .collect()
    }
}

impl StreamState {
    fn count(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Orchestration => &self.orchestrations,
            Kind::Activity => &self.activities,
        }
    }
}

/// An item taken out of the table by a call that finishes it. Dropped
/// without [`Taken::done`] (the call was cancelled: its client went away),
/// it goes back in, or back to the backend if its stream has closed.
pub(super) struct Taken {
    shared: Arc<Shared>,
    token: String,
    stream: Arc<StreamState>,
    item: Option<Item>,
}

impl Taken {
    /// The item.
    pub(super) fn item(&self) -> &Item {
        self.item.as_ref().expect("present until done or dropped")
    }

    /// The item is finished with: the worker no longer holds it.
    pub(super) fn done(mut self) {
        if let Some(item) = self.item.take() {
            self.release(Kind::of(&item));
        }
    }

    fn release(&self, kind: Kind) {
        self.stream.count(kind).fetch_sub(1, Ordering::SeqCst);
        self.stream.finished.notify_waiters();
    }

    /// Puts the item back in the table, unless its stream has closed: then
    /// it is released and returned, to be given back to the backend. The
    /// check and the insert are one step under the table's lock, so a
    /// stream closing meanwhile (it is marked closed before its items are
    /// taken out) cannot miss the item.
    fn put_back(&mut self) -> Option<Item> {
        let item = self.item.take()?;
        let mut items = self.shared.leases.lock();
        if self.stream.closed.load(Ordering::SeqCst) {
            drop(items);
            self.release(Kind::of(&item));
            return Some(item);
        }
        items.insert(
            self.token.clone(),
            Leased {
                stream: self.stream.clone(),
                item,
            },
        );
        None
    }

    /// Puts the item back after a call that failed without finishing it,
    /// so the worker may complete or abandon it again; gives it back to the
    /// backend instead if its stream closed meanwhile.
    pub(super) async fn restore(mut self) {
        if let Some(item) = self.put_back() {
            give_back(self.shared.backend.as_ref(), item).await;
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(item) = self.put_back() {
            let backend = self.shared.backend.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { give_back(backend.as_ref(), item).await });
            }
        }
    }
}

/// Gives an item back to the backend, logging (not failing) if it cannot.
async fn give_back(backend: &dyn Backend, item: Item) {
    let id = item.instance_id().to_string();
    let result = match item {
        Item::Orchestration(i) => backend.abandon_orchestration_item(i).await,
        Item::Activity(i) => backend.abandon_activity_item(&i).await,
    };
    match result {
        Ok(()) | Err(BackendError::LeaseLost(_)) => {}
        Err(e) => {
            tracing::warn!(instance_id = %id, error = %e, "could not give a work item back to the backend; it is delivered again when its lease expires")
        }
    }
}

/// How many items of each kind a stream's worker may hold at once (0: no
/// limit), and whether it fetches a history left out of a work item
/// (`WORKER_CAPABILITY_HISTORY_STREAMING`), from its request.
pub(super) struct Limits {
    pub(super) orchestrations: usize,
    pub(super) activities: usize,
    pub(super) history_streaming: bool,
}

impl Limits {
    pub(super) fn from_request(r: &proto::GetWorkItemsRequest) -> Self {
        Limits {
            orchestrations: usize::try_from(r.max_concurrent_orchestration_work_items).unwrap_or(0),
            activities: usize::try_from(r.max_concurrent_activity_work_items).unwrap_or(0),
            history_streaming: r
                .capabilities
                .contains(&(proto::WorkerCapability::HistoryStreaming as i32)),
        }
    }
}

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// The pause after the backend failed to hand out work, before asking again.
const RETRY: Duration = Duration::from_millis(200);

type Next<T> = BoxFuture<'static, Result<T, BackendError>>;

fn next_orchestration(backend: Arc<dyn Backend>, pause: bool) -> Next<OrchestrationWorkItem> {
    Box::pin(async move {
        if pause {
            tokio::time::sleep(RETRY).await;
        }
        backend.next_orchestration_item().await
    })
}

fn next_activity(backend: Arc<dyn Backend>, pause: bool) -> Next<ActivityWorkItem> {
    Box::pin(async move {
        if pause {
            tokio::time::sleep(RETRY).await;
        }
        backend.next_activity_item().await
    })
}

/// Hands an item to the stream's worker: records it under a new token and
/// sends it; `false` if the stream has closed (the item is then in the
/// table, and given back with the stream's other items).
///
/// An episode whose work item would be larger than the server's message
/// size limit leaves its past events out (`requiresHistoryStreaming`) if
/// the worker can fetch them (`StreamInstanceHistory`, from the held item).
async fn deliver(
    shared: &Shared,
    stream: &Arc<StreamState>,
    tx: &mpsc::Sender<Result<proto::WorkItem, Status>>,
    history_streaming: bool,
    item: Item,
) -> bool {
    // An entity's episode goes out as an entity work item with the
    // operations to run; one that runs none (locks only) is completed here.
    let mut entity_request = None;
    if let Item::Orchestration(i) = &item {
        if i.instance_id.parse::<EntityId>().is_ok() {
            match plan_remote_batch(
                &i.instance_id,
                &i.execution_id,
                &i.past_events,
                &i.new_events,
            ) {
                RemotePlan::Run { state, operations } => {
                    entity_request = Some(convert::entities::request_to_proto(
                        &i.instance_id,
                        &i.execution_id,
                        state,
                        &operations,
                    ));
                }
                RemotePlan::Done(result) => {
                    let instance_id = i.instance_id.clone();
                    if let Item::Orchestration(i) = item {
                        if let Err(e) = shared.backend.complete_orchestration_item(i, result).await
                        {
                            tracing::warn!(entity = %instance_id, error = %e, "completing an entity batch that runs no operation failed; it is delivered again");
                        }
                    }
                    return true;
                }
            }
        }
    }
    let wire = |token: String| match &item {
        Item::Orchestration(_) if entity_request.is_some() => proto::WorkItem {
            request: Some(proto::work_item::Request::EntityRequestV2(
                entity_request.clone().expect("checked"),
            )),
            completion_token: token,
        },
        Item::Orchestration(i) => {
            let mut wire = convert::orchestration_item_to_proto(i, token);
            let too_large =
                prost::Message::encoded_len(&wire) + 5 > shared.options.max_message_size;
            if history_streaming && too_large {
                if let Some(proto::work_item::Request::OrchestratorRequest(r)) = &mut wire.request {
                    r.past_events.clear();
                    r.requires_history_streaming = true;
                }
            }
            wire
        }
        Item::Activity(i) => convert::activity_item_to_proto(i, token),
    };
    let token = shared.leases.insert(stream, item.clone());
    tx.send(Ok(wire(token))).await.is_ok()
}

/// The task behind one `GetWorkItems` stream: runs until the stream
/// closes or the server stops, then gives back what its worker still holds.
/// Items its filters exclude go to a stream that takes them.
pub(super) async fn run_stream(
    shared: Arc<Shared>,
    limits: Limits,
    filters: Filters,
    tx: mpsc::Sender<Result<proto::WorkItem, Status>>,
) {
    let stream = Arc::new(StreamState {
        id: STREAM_IDS.fetch_add(1, Ordering::Relaxed),
        orchestrations: AtomicUsize::new(0),
        activities: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
        finished: Notify::new(),
    });
    let filters = Arc::new(filters);
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    for item in shared.leases.open_route(
        &stream,
        Route {
            filters: filters.clone(),
            inbox: inbox_tx.clone(),
        },
    ) {
        let _ = inbox_tx.send(item);
    }
    drop(inbox_tx);
    let backend = shared.backend.clone();
    let renewal = [
        backend.orchestration_lease_renewal(),
        backend.activity_lease_renewal(),
    ]
    .into_iter()
    .flatten()
    .min();
    let mut renew = renewal.map(|every| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let wants_orchestrations = filters.takes_any(Kind::Orchestration);
    let wants_activities = filters.takes_any(Kind::Activity);
    let below = |n: &AtomicUsize, limit: usize| limit == 0 || n.load(Ordering::SeqCst) < limit;
    let mut orchestration: Option<Next<OrchestrationWorkItem>> = None;
    let mut activity: Option<Next<ActivityWorkItem>> = None;
    let mut pause_orchestrations = false;
    let mut pause_activities = false;
    tracing::debug!(
        stream = stream.id,
        ?filters,
        "a worker opened a work-item stream"
    );
    loop {
        // Registered before the counts are read, so a finish in between
        // is not missed.
        let finished = stream.finished.notified();
        if wants_orchestrations
            && orchestration.is_none()
            && below(&stream.orchestrations, limits.orchestrations)
        {
            orchestration = Some(next_orchestration(backend.clone(), pause_orchestrations));
        }
        if wants_activities && activity.is_none() && below(&stream.activities, limits.activities) {
            activity = Some(next_activity(backend.clone(), pause_activities));
        }
        let at_limit = orchestration.is_none() || activity.is_none();
        // What this turn brought from the backend or from another stream.
        let item = tokio::select! {
            _ = tx.closed() => break,
            _ = shared.stopped() => break,
            Some(item) = inbox.recv() => Some(item),
            Some(r) = OptionFuture::from(orchestration.as_mut()), if orchestration.is_some() => {
                orchestration = None;
                pause_orchestrations = false;
                match r {
                    Ok(item) => Some(Item::Orchestration(item)),
                    Err(BackendError::Shutdown) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "the backend failed to hand out an orchestration episode; asking again shortly");
                        pause_orchestrations = true;
                        None
                    }
                }
            }
            Some(r) = OptionFuture::from(activity.as_mut()), if activity.is_some() => {
                activity = None;
                pause_activities = false;
                match r {
                    Ok(item) => Some(Item::Activity(item)),
                    Err(BackendError::Shutdown) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "the backend failed to hand out an activity; asking again shortly");
                        pause_activities = true;
                        None
                    }
                }
            }
            _ = finished, if at_limit => None,
            _ = async { renew.as_mut().expect("checked").tick().await }, if renew.is_some() => {
                renew_leases(&shared, &stream).await;
                None
            }
        };
        let Some(item) = item else { continue };
        if !filters.matches(&item) {
            shared.leases.route(&stream, item);
        } else if !deliver(&shared, &stream, &tx, limits.history_streaming, item).await {
            break;
        }
    }
    // Pending `next_*` calls are dropped here: what they had not yet
    // leased stays with the backend.
    drop(orchestration);
    drop(activity);
    stream.closed.store(true, Ordering::SeqCst);
    let mut held = shared.leases.close_route(&stream);
    inbox.close();
    while let Ok(item) = inbox.try_recv() {
        held.push(item);
    }
    let taken = shared.leases.take_stream(&stream);
    for item in &taken {
        stream.count(Kind::of(item)).fetch_sub(1, Ordering::SeqCst);
    }
    held.extend(taken);
    tracing::debug!(
        stream = stream.id,
        given_back = held.len(),
        "a work-item stream closed; giving back the items its worker held"
    );
    for item in held {
        give_back(backend.as_ref(), item).await;
    }
    if *shared.stopping.borrow() {
        let _ = tx
            .send(Err(Status::unavailable(format!(
                "{}; the work items this stream brought were given back, to be delivered again",
                shared.stop_reason()
            ))))
            .await;
    }
}

/// Renews the backend's leases of the items a stream's worker holds.
/// Also renews the parked items (any stream may; renewing twice is harmless).
async fn renew_leases(shared: &Shared, stream: &StreamState) {
    let mut items = shared.leases.of_stream(stream);
    items.extend(shared.leases.parked());
    for item in items {
        let result = match &item {
            Item::Orchestration(i) => shared.backend.renew_orchestration_item(i).await,
            Item::Activity(i) => shared.backend.renew_activity_item(i).await,
        };
        if let Err(e) = result {
            tracing::debug!(instance_id = %item.instance_id(), error = %e, "could not renew the lease of a work item a worker holds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::history::HistoryEvent;

    fn episode(name: &str, version: Option<&str>) -> Item {
        Item::Orchestration(OrchestrationWorkItem {
            instance_id: "i".into(),
            execution_id: "e".into(),
            past_events: Arc::new(vec![HistoryEvent::new(
                Default::default(),
                EventKind::ExecutionStarted {
                    name: name.into(),
                    version: version.map(str::to_string),
                    input: None,
                    instance_id: "i".into(),
                    execution_id: Some("e".into()),
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            )]),
            new_events: vec![],
            completion_token: String::new(),
            orchestration_span: None,
        })
    }

    fn activity(name: &str) -> Item {
        Item::Activity(ActivityWorkItem {
            instance_id: "i".into(),
            execution_id: "e".into(),
            name: name.into(),
            version: None,
            input: None,
            task_id: 0,
            completion_token: String::new(),
            tags: Default::default(),
            trace: None,
        })
    }

    #[test]
    fn filters_take_the_names_and_versions_listed() {
        let none = Filters::from_request(&proto::GetWorkItemsRequest::default());
        assert!(none.matches(&episode("any", None)) && none.matches(&activity("any")));
        assert!(none.takes_any(Kind::Orchestration) && none.takes_any(Kind::Activity));

        let request = proto::GetWorkItemsRequest {
            work_item_filters: Some(proto::WorkItemFilters {
                orchestrations: vec![
                    proto::OrchestrationFilter {
                        name: "o".into(),
                        versions: vec![],
                    },
                    proto::OrchestrationFilter {
                        name: "v".into(),
                        versions: vec!["2".into()],
                    },
                ],
                activities: vec![],
                entities: vec![proto::EntityFilter {
                    name: "Counter".into(),
                }],
            }),
            ..Default::default()
        };
        let some = Filters::from_request(&request);
        // Entities go by the entity filter (names in lower case, as ids
        // have them), not by the orchestrator names.
        let mut counter = episode("counter", None);
        if let Item::Orchestration(o) = &mut counter {
            o.instance_id = "@counter@a".into();
        }
        assert!(some.matches(&counter));
        let mut other = episode("o", None);
        if let Item::Orchestration(o) = &mut other {
            o.instance_id = "@o@a".into();
        }
        assert!(!some.matches(&other));
        assert!(some.matches(&episode("o", None)));
        assert!(some.matches(&episode("o", Some("9"))));
        assert!(some.matches(&episode("v", Some("2"))));
        assert!(!some.matches(&episode("v", Some("1"))));
        assert!(!some.matches(&episode("v", None)));
        assert!(!some.matches(&episode("other", None)));
        // Listing no activities means serving none.
        assert!(!some.matches(&activity("a")));
        assert!(some.takes_any(Kind::Orchestration));
        assert!(!some.takes_any(Kind::Activity));
    }
}
