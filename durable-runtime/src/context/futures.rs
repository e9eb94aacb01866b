//! The durable futures: what scheduling calls return. They never wake
//! themselves; only the replay engine resolves them, one history event at a
//! time, which keeps the orchestration deterministic.

use super::state::{lock, SharedState};
use crate::codec;
use crate::failure::TaskError;
use crate::history::FailureDetails;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Which of two futures finished first, with its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future won.
    First(A),
    /// The second future won.
    Second(B),
}

/// A durable task's result: activity, sub-orchestration or external event.
#[must_use = "the task is scheduled when this future is made; drop it unawaited and its result is never seen"]
pub struct DurableFuture<T> {
    state: SharedState,
    key: i64,
    failed: Option<(String, FailureDetails)>,
    _t: PhantomData<fn() -> T>,
}

impl<T> DurableFuture<T> {
    pub(super) fn new(state: SharedState, key: i64) -> Self {
        DurableFuture {
            state,
            key,
            failed: None,
            _t: PhantomData,
        }
    }

    pub(super) fn failed(state: SharedState, describe: String, d: FailureDetails) -> Self {
        DurableFuture {
            state,
            key: i64::MIN,
            failed: Some((describe, d)),
            _t: PhantomData,
        }
    }

    /// The sequence number of the task (negative for external events).
    pub fn task_id(&self) -> i64 {
        self.key
    }

    pub(super) fn state(&self) -> &SharedState {
        &self.state
    }

    /// The task, as messages name it (`external event "approval"`).
    pub(super) fn describe(&self) -> String {
        match &self.failed {
            Some((describe, _)) => describe.clone(),
            None => lock(&self.state)
                .describe(self.key)
                .unwrap_or_else(|| "durable task".to_string()),
        }
    }

    /// Where the task finished in the order of completions; 0 while it runs.
    pub(super) fn finished_at(&self) -> u64 {
        if self.failed.is_some() {
            return 0;
        }
        lock(&self.state).finished_at(self.key)
    }
}

impl<T> Unpin for DurableFuture<T> {}

impl<T: DeserializeOwned> Future for DurableFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((task, details)) = self.failed.take() {
            return Poll::Ready(Err(TaskError {
                task,
                task_id: -1,
                details,
            }));
        }
        let mut s = lock(&self.state);
        let Some(slot) = s.slots.get_mut(&self.key) else {
            return Poll::Ready(Err(TaskError {
                task: "durable task".into(),
                task_id: self.key.max(-1) as i32,
                details: FailureDetails::new(
                    "InvalidState",
                    "this durable future was polled after it completed",
                ),
            }));
        };
        match slot.outcome.take() {
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(outcome) => {
                let slot = s.slots.remove(&self.key);
                if let Some(slot) = &slot {
                    s.consumed = s.consumed.max(slot.finished_at);
                }
                drop(s);
                let describe = slot.map(|s| s.describe).unwrap_or_default();
                let task_id = if self.key >= 0 { self.key as i32 } else { -1 };
                Poll::Ready(match outcome {
                    Ok(json) => codec::decode::<T>(json.as_deref()).map_err(|e| TaskError {
                        details: e
                            .about(format!("the result of {describe}"))
                            .into_failure("OutputDeserializationError"),
                        task: describe,
                        task_id,
                    }),
                    Err(details) => Err(TaskError {
                        task: describe,
                        task_id,
                        details,
                    }),
                })
            }
        }
    }
}

impl<T> Drop for DurableFuture<T> {
    fn drop(&mut self) {
        if self.key == i64::MIN {
            return;
        }
        lock(&self.state).forget(self.key);
    }
}

/// A durable timer; completes when it fires. Dropped before it fires, it is
/// cancelled: backends that can delete the pending timer do.
#[must_use = "the timer is scheduled when this future is made; drop it unawaited and it is cancelled"]
pub struct TimerFuture(pub(super) DurableFuture<()>);

impl Future for TimerFuture {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Future returned by [`OrchestrationContext::when_any`](super::OrchestrationContext::when_any).
pub struct WhenAny<F> {
    pub(super) futures: Vec<F>,
}

impl<F: Future + Unpin> Future for WhenAny<F> {
    type Output = (usize, F::Output);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        for (i, f) in self.futures.iter_mut().enumerate() {
            if let Poll::Ready(v) = Pin::new(f).poll(cx) {
                return Poll::Ready((i, v));
            }
        }
        Poll::Pending
    }
}

/// Future returned by [`OrchestrationContext::when_any2`](super::OrchestrationContext::when_any2).
pub struct WhenAny2<A, B> {
    pub(super) a: Option<A>,
    pub(super) b: Option<B>,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for WhenAny2<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(a) = self.a.as_mut() {
            if let Poll::Ready(v) = Pin::new(a).poll(cx) {
                self.a = None;
                self.b = None;
                return Poll::Ready(Either::First(v));
            }
        }
        if let Some(b) = self.b.as_mut() {
            if let Poll::Ready(v) = Pin::new(b).poll(cx) {
                self.a = None;
                self.b = None;
                return Poll::Ready(Either::Second(v));
            }
        }
        Poll::Pending
    }
}
