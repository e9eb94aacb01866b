//! What the replay-safety check accepts: the context's own APIs, `biased`
//! selects, seeded generators, and marked statements.

use durable::prelude::*;
use std::time::Duration;

// Stands in for the rand crate: the check reads paths, not types.
mod rand {
    pub mod rngs {
        pub struct StdRng(pub u64);
        impl StdRng {
            pub fn seed_from_u64(seed: u64) -> StdRng {
                StdRng(seed)
            }
        }
    }
}

#[orchestrator]
async fn approval(ctx: OrchestrationContext) -> Result<String, OrchestrationError> {
    let started = ctx.current_utc_datetime();
    let id = ctx.new_uuid();
    let decision = tokio::select! {
        biased;
        approved = ctx.wait_for_external_event::<bool>("approval") => {
            if approved? { "approved" } else { "rejected" }
        }
        _ = ctx.create_timer(Duration::from_secs(30)) => "timed out",
    };
    let seeded = rand::rngs::StdRng::seed_from_u64(7);
    Ok(format!("{decision} {started} {id} {}", seeded.0))
}

// Deadlines are durable: `.timeout(..)` and `ctx.timeout(..)` are not
// `tokio::time::timeout`.
#[orchestrator]
async fn deadlines(ctx: OrchestrationContext) -> Result<bool, OrchestrationError> {
    let approved = ctx
        .wait_for_external_event::<bool>("approval")
        .timeout(Duration::from_secs(86400))
        .await??;
    let both = ctx.join((
        ctx.wait_for_external_event::<bool>("legal"),
        ctx.wait_for_external_event::<bool>("finance"),
    ));
    let signed = match ctx.timeout(both, Duration::from_secs(3600)).await {
        Ok((legal, finance)) => legal? && finance?,
        Err(TimedOut { .. }) => false,
    };
    Ok(approved && signed)
}

#[orchestrator]
async fn marked(ctx: OrchestrationContext) -> u64 {
    // On a `let`.
    #[durable::nondeterministic]
    let started = std::time::Instant::now();
    // On a call, with the short spelling.
    #[nondeterministic]
    std::thread::sleep(Duration::from_millis(0));
    // On a block: everything inside is exempt.
    #[durable::nondeterministic]
    {
        let _ = std::env::var("HOME");
        let _ = std::time::SystemTime::now();
    }
    // On an `if`.
    #[durable::nondeterministic]
    if std::env::var("DEBUG").is_ok() {
        ctx.log_info("debugging");
    }
    // The marker is removed, so the statements compile as usual.
    started.elapsed().as_secs()
}

fn main() {}
