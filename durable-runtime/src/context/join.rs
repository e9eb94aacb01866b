//! Typed joins of durable futures of different types:
//! [`OrchestrationContext::join`](super::OrchestrationContext::join) (every
//! outcome) and [`OrchestrationContext::try_join`](super::OrchestrationContext::try_join)
//! (all values, or the first failure).
//!
//! A join is polled by the replay engine only, through the orchestrator; it
//! polls its children in argument order and spawns nothing. The engine
//! applies one history event between two polls, so the set of finished
//! children after each poll depends on the history alone. To report the
//! failure that happened first even when several are visible at once
//! (tasks that finished before the join was first polled), each child's
//! completion is placed by its position in the history, which durable
//! futures record when they resolve.

use super::state::{lock, SharedState};
use crate::failure::TaskError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The machinery behind the public traits: public types in a private
/// module, so that the traits cannot be implemented or their hidden items
/// used outside this crate.
mod sealed {
    use super::*;

    pub trait Sealed {}

    /// The execution state a join reads completion positions from.
    pub struct JoinState(pub(in crate::context) SharedState);

    /// One child of a join: running, finished (its output and its position in
    /// the order of completions), or taken.
    pub enum Child<F: Future> {
        Running(F),
        Done(F::Output, u64),
        Taken,
    }

    impl<F: Future + Unpin> Child<F> {
        /// Polls the child if it runs; returns whether it has finished.
        pub(super) fn poll(&mut self, state: &JoinState, cx: &mut Context<'_>) -> bool {
            let Child::Running(f) = self else {
                return true;
            };
            lock(&state.0).consumed = 0;
            match Pin::new(f).poll(cx) {
                Poll::Pending => false,
                Poll::Ready(out) => {
                    let s = lock(&state.0);
                    // A future that consumed no durable completion (a ready
                    // value, a task that failed at scheduling) finished now.
                    let at = if s.consumed == 0 {
                        s.completions + 1
                    } else {
                        s.consumed
                    };
                    drop(s);
                    *self = Child::Done(out, at);
                    true
                }
            }
        }

        pub(super) fn finished_at(&self) -> u64 {
            match self {
                Child::Done(_, at) => *at,
                _ => 0,
            }
        }

        pub(super) fn take(&mut self) -> F::Output {
            match std::mem::replace(self, Child::Taken) {
                Child::Done(out, _) => out,
                _ => unreachable!("a join takes only finished children"),
            }
        }
    }

    impl<T, F: Future<Output = Result<T, TaskError>> + Unpin> Child<F> {
        /// Where the child failed, if it did.
        pub(super) fn failed_at(&self) -> Option<u64> {
            match self {
                Child::Done(Err(_), at) => Some(*at),
                _ => None,
            }
        }
    }

    /// Tells an enclosing join where this join finished.
    pub(super) fn report_finished(state: &JoinState, at: u64) {
        lock(&state.0).consumed = at;
    }
}

pub(super) use sealed::JoinState;
use sealed::{report_finished, Child};

/// A tuple of 2 to 6 futures that [`OrchestrationContext::join`](super::OrchestrationContext::join)
/// can wait for. Implemented for tuples of `Unpin` futures (durable
/// futures, timers, retried calls), not to be implemented elsewhere.
#[diagnostic::on_unimplemented(
    message = "`ctx.join(..)` takes a tuple of 2 to 6 `Unpin` futures, not `{Self}`",
    label = "not a tuple of 2 to 6 `Unpin` futures",
    note = "pass the futures as one tuple: `ctx.join((a, b))`; `Box::pin` a future that is not `Unpin`; for more futures of one type use `ctx.when_all_settled(vec)`"
)]
pub trait JoinTuple: sealed::Sealed {
    /// The tuple of every child's output, in argument order.
    type Output;
    #[doc(hidden)]
    type Children;
    #[doc(hidden)]
    fn start(self) -> Self::Children;
    #[doc(hidden)]
    fn poll_join(
        children: &mut Self::Children,
        state: &JoinState,
        cx: &mut Context<'_>,
    ) -> Poll<Self::Output>;
}

/// A tuple of 2 to 6 futures of `Result<_, TaskError>` that
/// [`OrchestrationContext::try_join`](super::OrchestrationContext::try_join)
/// can wait for. Not to be implemented elsewhere.
#[diagnostic::on_unimplemented(
    message = "`ctx.try_join(..)` takes a tuple of 2 to 6 `Unpin` futures of `Result<_, TaskError>`, not `{Self}`",
    label = "not a tuple of 2 to 6 `Unpin` futures of `Result<_, TaskError>`",
    note = "durable futures (`ctx.call_activity(..)`, `ctx.call_sub_orchestrator(..)`, retried calls) fit; a timer has no failure: use `ctx.join(..)`"
)]
pub trait TryJoinTuple: JoinTuple {
    /// The tuple of every child's value, in argument order.
    type Ok;
    #[doc(hidden)]
    fn poll_try_join(
        children: &mut Self::Children,
        state: &JoinState,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Ok, TaskError>>;
}

/// Future returned by [`OrchestrationContext::join`](super::OrchestrationContext::join):
/// every child's output, after all have finished.
#[must_use = "a join does nothing unless awaited"]
pub struct Join<T: JoinTuple> {
    pub(super) children: T::Children,
    pub(super) state: JoinState,
}

impl<T: JoinTuple> Unpin for Join<T> {}

impl<T: JoinTuple> Future for Join<T> {
    type Output = T::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = &mut *self;
        T::poll_join(&mut this.children, &this.state, cx)
    }
}

/// Future returned by [`OrchestrationContext::try_join`](super::OrchestrationContext::try_join):
/// every child's value, or the failure that happened first.
#[must_use = "a join does nothing unless awaited"]
pub struct TryJoin<T: TryJoinTuple> {
    pub(super) children: Option<T::Children>,
    pub(super) state: JoinState,
}

impl<T: TryJoinTuple> Unpin for TryJoin<T> {}

impl<T: TryJoinTuple> Future for TryJoin<T> {
    type Output = Result<T::Ok, TaskError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(children) = this.children.as_mut() else {
            panic!("`try_join` polled after it finished");
        };
        let out = T::poll_try_join(children, &this.state, cx);
        if out.is_ready() {
            // Drops the children still running: their results are ignored.
            this.children = None;
        }
        out
    }
}

/// Implements both traits for one tuple size: `(index Future Value)` per
/// element.
macro_rules! joins {
    ($( ($($i:tt $F:ident $T:ident),+) )+) => {$(
        impl<$($F: Future + Unpin),+> sealed::Sealed for ($($F,)+) {}

        impl<$($F: Future + Unpin),+> JoinTuple for ($($F,)+) {
            type Output = ($($F::Output,)+);
            type Children = ($(Child<$F>,)+);

            fn start(self) -> Self::Children {
                ($(Child::Running(self.$i),)+)
            }

            fn poll_join(
                c: &mut Self::Children,
                state: &JoinState,
                cx: &mut Context<'_>,
            ) -> Poll<Self::Output> {
                let mut done = true;
                $( done &= c.$i.poll(state, cx); )+
                if !done {
                    return Poll::Pending;
                }
                report_finished(state, 0 $( .max(c.$i.finished_at()) )+);
                Poll::Ready(($(c.$i.take(),)+))
            }
        }

        impl<$($T, $F: Future<Output = Result<$T, TaskError>> + Unpin),+> TryJoinTuple
            for ($($F,)+)
        {
            type Ok = ($($T,)+);

            fn poll_try_join(
                c: &mut Self::Children,
                state: &JoinState,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Self::Ok, TaskError>> {
                let mut done = true;
                $( done &= c.$i.poll(state, cx); )+
                // The earliest failure in history order; argument order
                // breaks ties (failures that consumed no completion).
                let mut first: Option<(u64, usize)> = None;
                $(
                    if let Some(at) = c.$i.failed_at() {
                        if first.is_none_or(|(f, _)| at < f) {
                            first = Some((at, $i));
                        }
                    }
                )+
                if let Some((at, index)) = first {
                    report_finished(state, at);
                    $(
                        if index == $i {
                            return Poll::Ready(Err(c.$i.take().err().expect("a failed child")));
                        }
                    )+
                }
                if !done {
                    return Poll::Pending;
                }
                report_finished(state, 0 $( .max(c.$i.finished_at()) )+);
                Poll::Ready(Ok(($(
                    match c.$i.take() {
                        Ok(v) => v,
                        Err(_) => unreachable!("failures are returned above"),
                    },
                )+)))
            }
        }
    )+};
}

joins! {
    (0 A TA, 1 B TB)
    (0 A TA, 1 B TB, 2 C TC)
    (0 A TA, 1 B TB, 2 C TC, 3 D TD)
    (0 A TA, 1 B TB, 2 C TC, 3 D TD, 4 E TE)
    (0 A TA, 1 B TB, 2 C TC, 3 D TD, 4 E TE, 5 F TF)
}
