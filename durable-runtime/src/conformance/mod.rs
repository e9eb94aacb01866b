//! The conformance suite: what every [`Backend`](crate::Backend) must do,
//! checked the same way on each.
//!
//! **Needs the `conformance` feature of durable-runtime** (off by default,
//! so users' builds do not compile the suite). A backend crate enables it
//! for its tests only:
//!
//! ```toml
//! [dev-dependencies]
//! durable-runtime = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! # Tiers
//!
//! - [`end_to_end`]: each case runs a worker and a client on the backend and
//!   checks what users see (outputs, statuses, failures, histories).
//! - [`delivery`]: each rule drives the `Backend` trait by hand, with no
//!   worker, and checks the delivery guarantees: stale lease tokens are
//!   rejected, abandoned and expired work is delivered again, results and
//!   timers of an old execution are dropped, a delayed start holds events
//!   back, competing callers never share a work item.
//! - [`entities`]: each case runs a worker with entities and checks
//!   operations, state, failures, critical sections and the client's
//!   entity calls.
//!
//! Each case and rule is an `async fn(Arc<dyn Backend>)` of its tier's
//! module, defined once: the same definition also puts it on the list that
//! [`conformance_tests!`] expands, so a new case cannot be left out of any
//! backend's tests.
//!
//! # Running it
//!
//! [`conformance_tests!`] generates one `#[tokio::test]` per case and rule,
//! in the modules `end_to_end`, `delivery` and `entities` of the module where it is
//! invoked, so a failure names its case (`delivery::abandoned_activity_is_redelivered`):
//!
//! ```text
//! durable_runtime::conformance_tests! {
//!     // A fresh backend for each test (an async expression).
//!     backend: async { Arc::new(MyBackend::new()) as Arc<dyn Backend> },
//!     // A fresh backend whose leases expire quickly, for the lease
//!     // expiry rules (needed unless `lease_expiry` is listed below).
//!     short_leases: async {
//!         Arc::new(MyBackend::with_lease(Duration::from_secs(1))) as Arc<dyn Backend>
//!     },
//!     // Capabilities the backend does not have, with the reason.
//!     lacks: { delayed_start: "start times are ignored by this sidecar" },
//!     // Tiers not run on this backend, with the reason.
//!     skip: { delivery: "work items are driven by hand in tests/backend.rs" },
//! }
//! ```
//!
//! `short_leases`, `lacks` and `skip` are optional, in this order. The
//! expressions are expanded inside the generated modules, which glob-import
//! the invoking module, so they may call its functions.
//!
//! # Capabilities
//!
//! A rule that depends on something not every backend can do names it;
//! a backend that cannot lists it under `lacks:`.
//!
//! | capability | meaning | rules and cases that need it |
//! |---|---|---|
//! | `stale_tokens` | completing or abandoning a work item with a token that is no longer current (the item was abandoned, completed, or its lease expired) is rejected with [`BackendError::LeaseLost`](crate::BackendError::LeaseLost) and changes nothing | [`delivery::stale_orchestration_token_is_rejected`], [`delivery::stale_activity_token_is_rejected`], [`delivery::competing_completions_apply_once`], the lease expiry rules |
//! | `lease_expiry` | a lease not completed in time expires and the item is delivered again; the backend asks workers to renew running activities ([`Backend::activity_lease_renewal`](crate::Backend::activity_lease_renewal)) | [`delivery::expired_orchestration_lease_is_redelivered`], [`delivery::expired_activity_lease_is_redelivered`] (on the `short_leases` backend) |
//! | `delayed_start` | an instance created with a start time runs no episode before it | [`delivery::events_wait_for_a_delayed_start`], [`end_to_end::scheduled_start`] |
//! | `replace_live` | creating an instance over a live one (a reuse policy that allows it) terminates the old one first, so a sub-orchestration's parent sees it fail as terminated | [`end_to_end::replacing_a_live_child`] |
//! | `task_tags` | a scheduled task's tags are kept in its `TaskScheduled` and reach its activity work item, with the execution id (an activity's [attempt](crate::ActivityContext::attempt) and [idempotency key](crate::ActivityContext::idempotency_key) come from them) | [`delivery::task_tags_survive_redelivery`], [`end_to_end::activity_attempts_and_idempotency_keys`] |
//! | `instance_tags` | the tags an instance is created with ([`ScheduleOptions::tags`](crate::ScheduleOptions::tags)) are kept in its metadata and on the `ExecutionStarted` of each execution | [`end_to_end::instance_tags_are_kept`] |
//! | `rewind` | [`Backend::rewind`](crate::Backend::rewind): a failed instance and its failed sub-orchestrations run again from where they failed | [`end_to_end::rewind_continues_a_failed_instance_from_where_it_failed`] |
//! | `entities` | entities run: a message to an `@name@key` instance creates it, a delayed signal waits until its time, and continue-as-new with a snapshot keeps the state ([`crate::entity`]) | every case of [`entities`] |
//! | `cancel_timers` | a timer the orchestration dropped before it fired (reported in [`OrchestratorResult::cancelled_timers`](crate::actions::OrchestratorResult::cancelled_timers)) is deleted and never fires | [`end_to_end::deadline_event_wins_and_its_timer_is_cancelled`] |
//!
//! A rule or case whose capability is listed, or whose tier is skipped, is
//! still generated, as an ignored test whose reason is the one given: the
//! test summary counts it as ignored (`... ignored, <reason>`), never as
//! passed. `cargo test -- --ignored` runs it anyway, to see whether the
//! backend still lacks the capability (the lease expiry rules then run on
//! `backend`). An unknown capability or tier is a compile error.
//!
//! Rules and cases use real time; each wait is bounded by [`WAIT`] and
//! fails saying what did not happen.
//!
//! [`conformance_tests!`]: crate::conformance_tests

use std::time::Duration;

/// How long a case or rule waits for something to happen before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Defines a tier's cases: each `async fn name(backend) needs(cap, ...) {}`
/// becomes `pub async fn name(backend: Arc<dyn Backend>)`, and the exported
/// macro `$list` hands `[name [caps]]` for every case, in order, to
/// `conformance_tests!`. One definition, so the functions and the list
/// cannot disagree.
macro_rules! cases {
    (
        ($d:tt) $list:ident, $tier:ident;
        $(
            $(#[$attr:meta])*
            async fn $name:ident($backend:ident) $(needs($($req:ident),+))? $body:block
        )*
    ) => {
        $(
            $(#[$attr])*
            pub async fn $name($backend: Arc<dyn Backend>) $body
        )*

        #[doc(hidden)]
        #[macro_export]
        macro_rules! $list {
            () => {
                $d crate::conformance_tests! { @cases $tier [ $( $name [$($($req)+)?] )* ] }
            };
        }
    };
}

pub mod delivery;
pub mod end_to_end;
pub mod entities;

/// Generates the conformance suite for a backend: one `#[tokio::test]` per
/// case and rule, in modules `end_to_end`, `delivery` and `entities`. See the
/// [module docs](crate::conformance) for the arguments and capabilities.
///
/// Needs the `conformance` feature of durable-runtime, and `tokio` (with
/// the `macros` and `rt-multi-thread` features) in the invoking crate.
#[macro_export]
macro_rules! conformance_tests {
    // The tests of one tier, from its list (see `cases!`).
    (@cases $tier:ident [ $( $name:ident [$($req:ident)*] )* ]) => {
        $(
            __durable_conformance_case! {
                [$tier $($req)*] [$tier $($req)*] $name $crate::conformance::$tier::$name
            }
        )*
    };
    (@test $name:ident; $case:path; $factory:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let backend: ::std::sync::Arc<dyn $crate::Backend> = $factory.await;
            $case(backend).await;
        }
    };
    (@ignored $reason:literal; $name:ident; $case:path; $factory:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = $reason]
        async fn $name() {
            let backend: ::std::sync::Arc<dyn $crate::Backend> = $factory.await;
            $case(backend).await;
        }
    };
    // `__durable_conformance_backend!(mode [requirements])`: the factory a
    // test uses. Rules needing `lease_expiry` use `short_leases`; without
    // one, a test that would run is a compile error, an ignored one uses
    // `backend`.
    (@factories ($d:tt) [$backend:expr] [$short:expr]) => {
        macro_rules! __durable_conformance_backend {
            ($d mode:ident [lease_expiry $d ($d rest:ident)*]) => { $short };
            ($d mode:ident [$d first:ident $d ($d rest:ident)*]) => {
                __durable_conformance_backend!($d mode [$d ($d rest)*])
            };
            ($d mode:ident []) => { $backend };
        }
    };
    (@factories ($d:tt) [$backend:expr] []) => {
        macro_rules! __durable_conformance_backend {
            (strict [lease_expiry $d ($d rest:ident)*]) => {
                ::core::compile_error!(
                    "the lease expiry rules need a backend with short leases: pass \
                     `short_leases: <async expression>`, or list `lease_expiry` under `lacks:`"
                )
            };
            (lenient [lease_expiry $d ($d rest:ident)*]) => { $backend };
            ($d mode:ident [$d first:ident $d ($d rest:ident)*]) => {
                __durable_conformance_backend!($d mode [$d ($d rest)*])
            };
            ($d mode:ident []) => { $backend };
        }
    };
    (@define ($d:tt) [$backend:expr] [$($short:expr)?]
        [$($cap:ident $cap_reason:literal)*] [$($tier:ident $tier_reason:literal)*]) => {
        $( $crate::__conformance_capability!($cap); )*
        $( $crate::__conformance_tier!($tier); )*
        $crate::conformance_tests! { @factories ($d) [$backend] [$($short)?] }
        // `[requirements left to check] [all requirements] name path`: the
        // first requirement the backend lacks (or skipped tier) makes the
        // test ignored with its reason; none makes it a test that runs.
        macro_rules! __durable_conformance_case {
            $(
                ([$tier $d ($d rest:ident)*] [$d ($d all:ident)*] $d name:ident $d case:path) => {
                    $crate::conformance_tests! {
                        @ignored $tier_reason; $d name; $d case;
                        __durable_conformance_backend!(lenient [$d ($d all)*])
                    }
                };
            )*
            $(
                ([$cap $d ($d rest:ident)*] [$d ($d all:ident)*] $d name:ident $d case:path) => {
                    $crate::conformance_tests! {
                        @ignored $cap_reason; $d name; $d case;
                        __durable_conformance_backend!(lenient [$d ($d all)*])
                    }
                };
            )*
            ([$d first:ident $d ($d rest:ident)*] $d all:tt $d name:ident $d case:path) => {
                __durable_conformance_case! { [$d ($d rest)*] $d all $d name $d case }
            };
            ([] [$d ($d all:ident)*] $d name:ident $d case:path) => {
                $crate::conformance_tests! {
                    @test $d name; $d case;
                    __durable_conformance_backend!(strict [$d ($d all)*])
                }
            };
        }
        /// The end-to-end tier of the conformance suite.
        mod end_to_end {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_end_to_end_cases! {}
        }
        /// The delivery tier of the conformance suite.
        mod delivery {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_delivery_rules! {}
        }
        /// The entities tier of the conformance suite.
        mod entities {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_entities_cases! {}
        }
    };
    (
        backend: $backend:expr
        $(, short_leases: $short:expr)?
        $(, lacks: { $($cap:ident : $cap_reason:literal),* $(,)? })?
        $(, skip: { $($tier:ident : $tier_reason:literal),* $(,)? })?
        $(,)?
    ) => {
        $crate::conformance_tests! {
            @define ($) [$backend] [$($short)?]
            [$($($cap $cap_reason)*)?] [$($($tier $tier_reason)*)?]
        }
    };
}

/// Checks a capability named under `lacks:` of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_capability {
    (stale_tokens) => {};
    (lease_expiry) => {};
    (delayed_start) => {};
    (replace_live) => {};
    (task_tags) => {};
    (instance_tags) => {};
    (cancel_timers) => {};
    (rewind) => {};
    (entities) => {};
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "unknown conformance capability `",
            ::core::stringify!($other),
            "`; the capabilities are stale_tokens, lease_expiry, delayed_start, replace_live, \
             task_tags, instance_tags, cancel_timers, rewind and entities"
        ));
    };
}

/// Checks a tier named under `skip:` of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tier {
    (end_to_end) => {};
    (delivery) => {};
    (entities) => {};
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "unknown conformance tier `",
            ::core::stringify!($other),
            "`; the tiers are end_to_end, delivery and entities"
        ));
    };
}
