//! Collects every error a macro finds, so the user sees them all at once.

use proc_macro2::TokenStream;
use quote::ToTokens;
use std::fmt::Display;

/// Errors gathered while validating one macro invocation.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records an error spanned at `tokens`.
    pub(crate) fn push(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push_error(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error spanned at `span`.
    pub(crate) fn push_at(&mut self, span: proc_macro2::Span, message: impl Display) {
        self.push_error(syn::Error::new(span, message));
    }

    /// Records an error built elsewhere (for example by a syn parser).
    pub(crate) fn push_error(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Moves the errors of `other` into `self`.
    pub(crate) fn extend(&mut self, other: Errors) {
        if let Some(error) = other.combined {
            self.push_error(error);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    /// One `compile_error!` per recorded error, each at its own span.
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        self.combined
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}
