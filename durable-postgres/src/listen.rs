//! Push delivery: who waits for what, and the connection that listens.
//!
//! Every write transaction ends with `pg_notify` on the schema's channel
//! (delivered by PostgreSQL at commit, to every listening backend): `o`
//! when orchestration work may be ready, `a` for activity work, `i <id>`
//! when an instance may have changed status. Each backend keeps one
//! dedicated connection that `LISTEN`s and wakes its idle workers and
//! waiting clients. Writes made through this backend wake its own waiters
//! directly (their notifications, tagged with this backend's origin, are
//! ignored when they come back).
//!
//! If the listening connection drops, it is opened again, and then
//! everyone is woken once: notifications sent meanwhile are lost, so idle
//! workers and waiters look again. Idle workers also look again after
//! `poll_interval` and when the next timer falls due.

use crate::store::Effects;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, NoTls, Socket};

/// The longest instance id sent in a notification; longer ones wake every
/// waiter (`*`) instead (a payload must stay under 8,000 bytes).
const MAX_ID_IN_PAYLOAD: usize = 7000;

/// Wake-ups of one backend.
#[derive(Debug)]
pub(crate) struct Signals {
    /// The schema's notification channel.
    pub(crate) channel: String,
    /// Tags this backend's notifications, so it ignores its own.
    pub(crate) origin: String,
    pub(crate) orchestration_work: Notify,
    pub(crate) activity_work: Notify,
    pub(crate) watchers: Watchers,
    /// Where committed writes' notifications go to be sent
    /// ([`run_notifier`]); unset, nothing is sent.
    notifier: std::sync::OnceLock<mpsc::UnboundedSender<Vec<String>>>,
}

impl Signals {
    pub(crate) fn new(channel: String) -> Self {
        Signals {
            channel,
            origin: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            orchestration_work: Notify::new(),
            activity_work: Notify::new(),
            watchers: Watchers::default(),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// Sends the notifications of committed writes through `notifier`
    /// from now on.
    pub(crate) fn set_notifier(&self, notifier: mpsc::UnboundedSender<Vec<String>>) {
        let _ = self.notifier.set(notifier);
    }

    /// Tells other backends about a committed write's effects: its
    /// notifications are queued for [`run_notifier`], which sends them
    /// with those of other writes committed meanwhile.
    pub(crate) fn announce(&self, fx: &Effects) {
        let payloads = self.payloads(fx);
        if payloads.is_empty() {
            return;
        }
        if let Some(n) = self.notifier.get() {
            let _ = n.send(payloads);
        }
    }

    /// Wakes whoever a committed write's effects concern, in this process.
    pub(crate) fn wake(&self, fx: &Effects) {
        if fx.orchestrations {
            wake_workers(&self.orchestration_work);
        }
        if fx.activities {
            wake_workers(&self.activity_work);
        }
        for id in &fx.touched {
            self.watchers.wake(id);
        }
    }

    /// Everyone looks again (after notifications may have been lost).
    fn wake_everyone(&self) {
        wake_workers(&self.orchestration_work);
        wake_workers(&self.activity_work);
        self.watchers.wake_all();
    }

    /// The notification payloads that tell other backends about `fx`.
    pub(crate) fn payloads(&self, fx: &Effects) -> Vec<String> {
        let origin = &self.origin;
        let mut out = Vec::new();
        if fx.orchestrations {
            out.push(format!("{origin} o"));
        }
        if fx.activities {
            out.push(format!("{origin} a"));
        }
        for id in &fx.touched {
            if id.len() > MAX_ID_IN_PAYLOAD {
                out.push(format!("{origin} *"));
            } else {
                out.push(format!("{origin} i {id}"));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Acts on a notification from another backend.
    fn dispatch(&self, payload: &str) {
        let Some((origin, what)) = payload.split_once(' ') else {
            return;
        };
        if origin == self.origin {
            return;
        }
        match what {
            "o" => wake_workers(&self.orchestration_work),
            "a" => wake_workers(&self.activity_work),
            "*" => self.watchers.wake_all(),
            _ => {
                if let Some(id) = what.strip_prefix("i ") {
                    self.watchers.wake(id);
                }
            }
        }
    }
}

/// Wakes every idle worker, and the next one to wait if none is waiting
/// now (it may be between two looks).
fn wake_workers(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

/// Clients waiting for instances, by instance id.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    map: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Waiters that have read their instance and are waiting to be woken.
    pub(crate) parked: std::sync::atomic::AtomicUsize,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        // No user code runs under this lock.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `id` until the returned guard is dropped.
    pub(crate) fn watch<'a>(&'a self, id: &str) -> Watch<'a> {
        let mut map = self.lock();
        let entry = map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Watch {
            watchers: self,
            id: id.to_string(),
            notify: entry.0.clone(),
        }
    }

    fn wake(&self, id: &str) {
        if let Some((n, _)) = self.lock().get(id) {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for (n, _) in self.lock().values() {
            n.notify_waiters();
        }
    }

    /// How many instances are watched.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        self.lock().len()
    }
}

/// A registered waiter; unregisters when dropped.
pub(crate) struct Watch<'a> {
    watchers: &'a Watchers,
    id: String,
    notify: Arc<Notify>,
}

impl Watch<'_> {
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.watchers.lock();
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// The most notifications sent in one statement.
const NOTIFY_BATCH: usize = 1000;

/// Sends the notifications queued by [`Signals::announce`] until every
/// sender is gone: what was queued while the previous statement ran goes
/// in the next one (deduplicated), so the server takes its notification
/// lock (held by a notifying transaction until it commits, one such
/// transaction at a time) once per batch rather than once per write. A
/// batch that cannot be sent is dropped: the fallback poll finds its work.
pub(crate) async fn run_notifier(
    pool: deadpool_postgres::Pool,
    channel: String,
    mut queued: mpsc::UnboundedReceiver<Vec<String>>,
) {
    while let Some(first) = queued.recv().await {
        let mut batch: std::collections::BTreeSet<String> = first.into_iter().collect();
        while batch.len() < NOTIFY_BATCH {
            match queued.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let payloads: Vec<String> = batch.into_iter().collect();
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let stmt = client
                .prepare_cached(crate::store::NOTIFY)
                .await
                .map_err(|e| e.to_string())?;
            client
                .execute(&stmt, &[&channel, &payloads])
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, dropped = payloads.len(), "sending notifications failed; other backends find the work by polling");
        }
    }
}

/// Runs the listening connection until aborted; `ready` learns whether the
/// first `LISTEN` succeeded.
pub(crate) async fn run(
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    signals: Arc<Signals>,
    retry: Duration,
    ready: oneshot::Sender<Result<(), tokio_postgres::Error>>,
) {
    let mut ready = Some(ready);
    loop {
        let ended = match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &signals, &mut ready).await,
            None => listen_once(&config, NoTls, &signals, &mut ready).await,
        };
        if let Some(ready) = ready.take() {
            // The first attempt failed: connecting reports it.
            let _ = ready.send(ended.map(|_| ()));
            return;
        }
        match ended {
            Ok(()) => {
                tracing::warn!("the PostgreSQL connection listening for work closed; reconnecting")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the PostgreSQL connection listening for work failed; reconnecting")
            }
        }
        tokio::time::sleep(retry).await;
    }
}

async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    signals: &Signals,
    ready: &mut Option<oneshot::Sender<Result<(), tokio_postgres::Error>>>,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen_sql = format!("LISTEN {}", signals.channel);
    let listen = client.batch_execute(&listen_sql);
    let mut listen = Box::pin(listen);
    // The connection makes progress only while its messages are polled.
    loop {
        tokio::select! {
            r = &mut listen => { r?; break; }
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(n))) => signals.dispatch(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    drop(listen);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    // Whatever was sent while nobody listened is looked for now.
    signals.wake_everyone();
    while let Some(m) = messages.next().await {
        match m {
            Ok(AsyncMessage::Notification(n)) => signals.dispatch(n.payload()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    drop(client);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_work_and_instances_and_own_ones_are_ignored() {
        let s = Signals::new("durable_x".into());
        let fx = Effects {
            touched: vec!["b".into(), "a".into(), "a".into(), "x".repeat(7001)],
            orchestrations: true,
            activities: false,
            sent: false,
        };
        let o = &s.origin;
        assert_eq!(
            s.payloads(&fx),
            vec![
                format!("{o} *"),
                format!("{o} i a"),
                format!("{o} i b"),
                format!("{o} o")
            ]
        );
        let w = s.watchers.watch("a");
        {
            let woken = w.notify().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            s.dispatch(&format!("{o} i a"));
            assert!(
                futures::FutureExt::now_or_never(woken.as_mut()).is_none(),
                "a backend's own notification woke its waiter"
            );
            s.dispatch("0123456789abcdef i a");
            assert!(
                futures::FutureExt::now_or_never(woken.as_mut()).is_some(),
                "another backend's notification did not wake the waiter"
            );
        }
        drop(w);
        assert_eq!(s.watchers.watched(), 0, "a dropped waiter left its entry");
    }
}
