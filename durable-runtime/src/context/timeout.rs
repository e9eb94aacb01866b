//! [`Timeout`]: a durable future raced against a durable timer, its
//! deadline. Made by [`DurableFuture::timeout`](super::DurableFuture::timeout)
//! and [`OrchestrationContext::timeout`](super::OrchestrationContext::timeout).
//!
//! The winner is the one that finished first in the history: the engine
//! applies one event between two polls, so at most one of them is new at
//! each poll; when both were already in before the first poll (the
//! `Timeout` was awaited late), their positions in the order of completions
//! decide. Whichever loses is dropped: a losing timer is cancelled, a
//! losing task's result is ignored when it comes, and a losing event wait
//! leaves its event for a later wait, even one it had already received
//! (the deadline passed first, then the event came, and the `Timeout` was
//! awaited after both). With [`OrchestrationContext::timeout`] around a
//! join, the join has consumed what its children received: those events
//! are not put back.

use super::futures::TimerFuture;
use super::state::{lock, SharedState};
use crate::failure::TimedOut;
use crate::history::Timestamp;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A future with a deadline: resolves to `Ok(output)` if the future
/// finishes first, or `Err(`[`TimedOut`]`)` if the deadline's durable timer
/// fires first. The timer is cancelled when the future wins.
#[must_use = "the task and its deadline timer are scheduled when this is made; await it to see which finished first"]
pub struct Timeout<F> {
    pub(super) future: Option<F>,
    pub(super) timer: Option<TimerFuture>,
    pub(super) task: Option<String>,
    /// The slot of the single durable future raced (`DurableFuture::timeout`).
    pub(super) slot: Option<i64>,
    pub(super) deadline: Timestamp,
    pub(super) state: SharedState,
}

impl<F> Timeout<F> {
    /// When the deadline passes (the fire time of its timer).
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    fn timed_out(&mut self) -> TimedOut {
        self.future = None;
        self.timer = None;
        TimedOut {
            task: self.task.clone(),
            deadline: self.deadline,
        }
    }
}

impl<F: Future + Unpin> Future for Timeout<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let (Some(future), Some(timer)) = (this.future.as_mut(), this.timer.as_mut()) else {
            panic!("a Timeout was polled after it completed");
        };
        // Where the timer fired, if it did, before anything consumes it.
        let timer_at = timer.0.finished_at();
        if let Some(slot) = this.slot.filter(|k| *k != i64::MIN) {
            // A single durable future: if the deadline passed before it
            // finished, it loses without being consumed, so an event it
            // received is put back for the next wait when it is dropped.
            let at = lock(&this.state).finished_at(slot);
            if timer_at != 0 && (at == 0 || timer_at < at) {
                lock(&this.state).consumed = timer_at;
                return Poll::Ready(Err(this.timed_out()));
            }
        }
        lock(&this.state).consumed = 0;
        if let Poll::Ready(out) = Pin::new(future).poll(cx) {
            // Where the future finished; 0 if it consumed no completion
            // (ready from the start, e.g. an input that failed to encode),
            // and then it wins.
            let at = lock(&this.state).consumed;
            if timer_at != 0 && at != 0 && timer_at < at {
                // Both were in before this poll; the deadline passed first.
                lock(&this.state).consumed = timer_at;
                return Poll::Ready(Err(this.timed_out()));
            }
            // Dropping the timer that has not fired cancels it.
            this.timer = None;
            this.future = None;
            return Poll::Ready(Ok(out));
        }
        match Pin::new(timer).poll(cx) {
            Poll::Ready(()) => {
                // Tell an enclosing join where this finished: where the
                // timer fired (the engine resolved it before this poll).
                lock(&this.state).consumed = timer_at;
                Poll::Ready(Err(this.timed_out()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
