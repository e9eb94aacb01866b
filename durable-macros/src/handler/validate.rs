//! Signature checks: pure, and every problem is reported, each spanned at
//! the token to change.

use super::parse::{is_state, Handler, Output, Param};
use super::Kind;
use crate::errors::Errors;
use quote::quote;
use syn::visit::Visit;
use syn::{GenericParam, Lifetime, Type, TypeImplTrait, TypeReference};

/// Checks the function's signature; an empty result means the full
/// expansion is sound.
pub(crate) fn signature(kind: Kind, handler: &Handler) -> Errors {
    let mut errors = Errors::default();
    let plural = kind.plural();
    let sig = &handler.sig;

    if let Some(constness) = &sig.constness {
        errors.push(
            constness,
            format!("{plural} cannot be `const fn`; remove `const`"),
        );
    }
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            format!("{plural} must be `async fn`; add `async`"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(
            unsafety,
            format!("{plural} cannot be `unsafe fn`; remove `unsafe` and use an `unsafe` block in the body"),
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi,
            format!("{plural} cannot have an ABI; remove `{}`", quote!(#abi)),
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(
            variadic,
            format!("{plural} cannot be variadic; remove `...`"),
        );
    }

    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(lifetime) => errors.push(
                lifetime,
                format!(
                    "{plural} cannot have lifetime parameters; remove `{}` and take owned data (`String`, not `&str`)",
                    lifetime.lifetime
                ),
            ),
            GenericParam::Type(ty) => errors.push(
                ty,
                format!(
                    "{plural} cannot be generic; remove `{}` and use concrete types (one {} per type)",
                    ty.ident,
                    kind.singular()
                ),
            ),
            GenericParam::Const(c) => errors.push(
                c,
                format!(
                    "{plural} cannot be generic; remove `{}` and use concrete types or values in the input",
                    c.ident
                ),
            ),
        }
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        if sig.generics.params.is_empty() {
            errors.push(
                where_clause,
                format!("{plural} cannot have a `where` clause; remove it"),
            );
        }
    }

    if let Some(receiver) = &handler.receiver {
        errors.push(
            receiver,
            format!(
                "{plural} cannot take `self`; make it a free function (the macro turns its name into a handle)"
            ),
        );
    }

    check_params(kind, handler, &mut errors);

    match &handler.output {
        Output::Unit => {}
        Output::Plain(ty) => owned(kind, ty, "output", &mut errors),
        Output::Result { ok, err, .. } => {
            owned(kind, ok, "output", &mut errors);
            if let Some(err) = err {
                if let Some(found) = first_impl_trait(err) {
                    errors.push(
                        found,
                        format!("{plural} must name their error type; replace `impl Trait` with a concrete type"),
                    );
                }
            }
        }
    }
    errors
}

fn check_params(kind: Kind, handler: &Handler, errors: &mut Errors) {
    let plural = kind.plural();
    let context = kind.context();
    let params = &handler.params;

    let Some(first) = params.first() else {
        if handler.receiver.is_none() {
            errors.push_at(
                handler.sig.paren_token.span.join(),
                format!("{plural} take the context as their first parameter; add `ctx: {context}`"),
            );
        }
        return;
    };

    match context_of(&first.ty) {
        Some(ContextType::Of(found)) if found == kind => {}
        Some(ContextType::Borrowed(reference)) => errors.push(
            reference,
            format!("take the context by value: `{context}`, not `&{context}`"),
        ),
        Some(ContextType::Of(kind_of_other)) => errors.push(
            &first.ty,
            format!(
                "{plural} take `{context}`, not `{}`; change the type (or use `#[{}]`)",
                kind_of_other.context(),
                kind_of_other.singular()
            ),
        ),
        None => {
            let misplaced = params[1..].iter().find(
                |p| matches!(context_of(&p.ty), Some(ContextType::Of(found)) if found == kind),
            );
            match misplaced {
                Some(param) => errors.push(
                    param_tokens(param),
                    "the context must be the first parameter; move it before the input",
                ),
                None => errors.push(
                    param_tokens(first),
                    format!(
                        "{plural} take `ctx: {context}` as their first parameter; add it before this one"
                    ),
                ),
            }
            return;
        }
    }

    let mut inputs = Vec::new();
    for param in &params[1..] {
        if !is_state(&param.ty) {
            inputs.push(param);
        } else if kind == Kind::Orchestrator {
            errors.push(
                param_tokens(param),
                "orchestrators cannot take `State`: they are replayed and must be deterministic; \
                 use the state in an activity, or pass what the orchestration needs in its input",
            );
        } else if !inputs.is_empty() {
            errors.push(
                param_tokens(param),
                "`State` parameters come between the context and the input: \
                 move this one before the input (`ctx, State(..): State<T>, .., input`)",
            );
        }
    }
    for param in inputs.iter().skip(1) {
        errors.push(
            param_tokens(param),
            format!(
                "{plural} take at most one input after the context; bundle the inputs into a struct or a tuple"
            ),
        );
    }
    if let Some(input) = inputs.first() {
        owned(kind, &input.ty, "input", errors);
    }
}

fn param_tokens(param: &Param) -> proc_macro2::TokenStream {
    let Param { pat, ty, .. } = param;
    quote!(#pat: #ty)
}

/// How a parameter's type relates to the context types.
enum ContextType<'a> {
    /// The context of the given kind, by value.
    Of(Kind),
    /// A reference to a context.
    Borrowed(&'a TypeReference),
}

/// Recognises a context type by its last path segment, so any import style
/// (`OrchestrationContext`, `durable::OrchestrationContext`) works.
fn context_of(ty: &Type) -> Option<ContextType<'_>> {
    match ty {
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            [Kind::Orchestrator, Kind::Activity]
                .into_iter()
                .find(|kind| last.ident == kind.context())
                .map(ContextType::Of)
        }
        Type::Reference(reference) => {
            context_of(&reference.elem).map(|_| ContextType::Borrowed(reference))
        }
        Type::Paren(paren) => context_of(&paren.elem),
        Type::Group(group) => context_of(&group.elem),
        _ => None,
    }
}

/// Inputs and outputs travel as JSON in the history, so they must be owned
/// and concrete.
fn owned(kind: Kind, ty: &Type, what: &str, errors: &mut Errors) {
    let singular = kind.singular();
    let mut finder = Borrowed::default();
    finder.visit_type(ty);
    if let Some(reference) = finder.reference {
        errors.push(
            reference,
            format!(
                "{singular} {what}s are stored as JSON in the history and must be owned; use an owned type (`String`, not `&str`; `Vec<T>`, not `&[T]`)"
            ),
        );
    } else if let Some(lifetime) = finder.lifetime {
        errors.push(
            lifetime,
            format!(
                "{singular} {what}s are stored as JSON in the history and must be owned; remove the lifetime `{lifetime}` or use `'static`"
            ),
        );
    }
    if let Some(found) = first_impl_trait(ty) {
        errors.push(
            found,
            format!(
                "{singular} {what}s must be concrete types; replace `impl Trait` with a named type"
            ),
        );
    }
}

#[derive(Default)]
struct Borrowed<'ast> {
    reference: Option<&'ast TypeReference>,
    lifetime: Option<&'ast Lifetime>,
}

impl<'ast> Visit<'ast> for Borrowed<'ast> {
    fn visit_type_reference(&mut self, reference: &'ast TypeReference) {
        self.reference.get_or_insert(reference);
    }

    fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
        if lifetime.ident != "static" {
            self.lifetime.get_or_insert(lifetime);
        }
    }
}

fn first_impl_trait(ty: &Type) -> Option<&TypeImplTrait> {
    #[derive(Default)]
    struct Finder<'ast>(Option<&'ast TypeImplTrait>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type_impl_trait(&mut self, found: &'ast TypeImplTrait) {
            self.0.get_or_insert(found);
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    finder.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn messages(kind: Kind, item: proc_macro2::TokenStream) -> String {
        let handler = Handler::parse(kind, item).expect("a function");
        signature(kind, &handler).to_compile_errors().to_string()
    }

    #[test]
    fn accepts_the_supported_forms() {
        for item in [
            quote!(
                async fn a(ctx: OrchestrationContext) {}
            ),
            quote!(
                async fn a(_: durable::OrchestrationContext, x: u32) -> u32 {
                    x
                }
            ),
            quote!(
                async fn a(ctx: OrchestrationContext, (a, b): (u32, u32)) -> Result<u32, E> {
                    Ok(a)
                }
            ),
            quote!(
                pub async fn a(ctx: OrchestrationContext, x: std::borrow::Cow<'static, str>) {}
            ),
        ] {
            assert_eq!(messages(Kind::Orchestrator, item.clone()), "", "{item}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = messages(
            Kind::Activity,
            quote!(
                fn a<'a, T>(self, ctx: ActivityContext, x: &'a str, y: T) -> impl Sized {}
            ),
        );
        for expected in [
            "must be `async fn`",
            "cannot have lifetime parameters",
            "cannot be generic",
            "cannot take `self`",
            "at most one input",
            "must be owned",
            "must be concrete types",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn recognises_contexts_by_their_last_segment() {
        let wrong = messages(
            Kind::Activity,
            quote!(
                async fn a(ctx: durable::OrchestrationContext) {}
            ),
        );
        assert!(
            wrong.contains("take `ActivityContext`, not `OrchestrationContext`"),
            "{wrong}"
        );
        let borrowed = messages(
            Kind::Activity,
            quote!(
                async fn a(ctx: &ActivityContext) {}
            ),
        );
        assert!(borrowed.contains("by value"), "{borrowed}");
        let swapped = messages(
            Kind::Activity,
            quote!(
                async fn a(x: u32, ctx: ActivityContext) {}
            ),
        );
        assert!(swapped.contains("must be the first parameter"), "{swapped}");
    }

    #[test]
    fn state_parameters_come_between_the_context_and_the_input() {
        for item in [
            quote!(
                async fn a(ctx: ActivityContext, State(db): State<Db>, x: u32) {}
            ),
            quote!(
                async fn a(ctx: ActivityContext, a: State<A>, b: durable::State<B>) {}
            ),
            quote!(
                async fn a(ctx: ActivityContext, State(a): State<A>, State(b): State<B>, x: u32) {}
            ),
            // Not generic: an ordinary input of the user's own type.
            quote!(
                async fn a(ctx: ActivityContext, state: State) {}
            ),
        ] {
            assert_eq!(messages(Kind::Activity, item.clone()), "", "{item}");
        }
        let after = messages(
            Kind::Activity,
            quote!(
                async fn a(ctx: ActivityContext, x: u32, State(db): State<Db>) {}
            ),
        );
        assert!(
            after.contains("come between the context and the input"),
            "{after}"
        );
        let two_inputs = messages(
            Kind::Activity,
            quote!(
                async fn a(ctx: ActivityContext, State(db): State<Db>, x: u32, y: u32) {}
            ),
        );
        assert!(two_inputs.contains("at most one input"), "{two_inputs}");
        let orchestrator = messages(
            Kind::Orchestrator,
            quote!(
                async fn a(ctx: OrchestrationContext, State(db): State<Db>) {}
            ),
        );
        assert!(
            orchestrator.contains("orchestrators cannot take `State`"),
            "{orchestrator}"
        );
    }

    #[test]
    fn classifies_results() {
        let handler = Handler::parse(
            Kind::Orchestrator,
            quote!(
                async fn a(ctx: OrchestrationContext) -> anyhow::Result<Vec<u8>> {
                    todo!()
                }
            ),
        )
        .unwrap();
        match &handler.output {
            Output::Result { ok, err: None, .. } => {
                assert_eq!(ok.to_token_stream().to_string(), "Vec < u8 >")
            }
            _ => panic!("a one-argument `Result` alias is fallible"),
        }
    }
}
