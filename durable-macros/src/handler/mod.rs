//! `#[orchestrator]` and `#[activity]`: one pipeline, two kinds.
//!
//! parse (into [`parse::Handler`]) -> replay-safety lints (orchestrators)
//! -> validate -> expand. Any error still expands to a stub handle beside the
//! `compile_error!`s, so code that uses the handle keeps type-checking.

mod expand;
mod parse;
mod validate;

use crate::errors::Errors;
use crate::lints;
use proc_macro2::TokenStream;
use quote::quote;

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Orchestrator,
    Activity,
}

impl Kind {
    /// "orchestrators" / "activities", to start messages with.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Orchestrator => "orchestrators",
            Kind::Activity => "activities",
        }
    }

    /// "orchestrator" / "activity".
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Kind::Orchestrator => "orchestrator",
            Kind::Activity => "activity",
        }
    }

    /// The type of the first parameter.
    pub(crate) fn context(self) -> &'static str {
        match self {
            Kind::Orchestrator => "OrchestrationContext",
            Kind::Activity => "ActivityContext",
        }
    }

    /// The options the attribute accepts.
    pub(crate) fn options(self) -> &'static [&'static str] {
        match self {
            Kind::Orchestrator => &["name", "version"],
            Kind::Activity => &["name"],
        }
    }
}

/// Expands `#[orchestrator(args)]` / `#[activity(args)]` on `item`.
pub(crate) fn run(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut handler = match parse::Handler::parse(kind, item.clone()) {
        Ok(handler) => handler,
        // Not a function at all: keep the item so the rest of the crate
        // still sees it, and say where the attribute belongs.
        Err(error) => {
            let error = error.to_compile_error();
            return quote! { #error #item };
        }
    };
    let mut errors = Errors::default();
    let options = parse::Options::parse(kind, args, &mut errors);
    errors.extend(lints::check_and_strip_markers(
        &mut handler.block,
        kind == Kind::Orchestrator,
    ));
    let signature = validate::signature(kind, &handler);
    let signature_ok = signature.is_empty();
    errors.extend(signature);
    expand::expand(kind, &handler, &options, signature_ok, &errors)
}
