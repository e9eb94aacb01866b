//! `#[durable::test]`: an `async fn(env: TestEnv)` becomes a `#[test] fn`
//! that runs it against an in-memory backend with a virtual clock.

use crate::errors::Errors;
use crate::options;
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, Meta, MetaNameValue, Path, Token, Type};

const OPTIONS: &[&str] = &["orchestrators", "activities", "state", "fake"];

/// Expands `#[durable::test(args)]` on `item`.
pub(crate) fn run(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "`#[durable::test]` applies to an `async fn`; write `async fn name(env: TestEnv) { .. }`",
            )
            .to_compile_error();
            return quote! { #error #item };
        }
    };
    let mut errors = Errors::default();
    let registry = Registry::parse(args, &mut errors);
    let signature = validate(&function);
    let signature_ok = signature.is_empty();
    errors.extend(signature);
    expand(&function, &registry, signature_ok, &errors)
}

/// What the attribute configures: the handlers named (`None` means
/// "everything discovered"), the state values and the fakes.
struct Registry {
    explicit: Option<Vec<(Handler, Path)>>,
    states: Vec<Expr>,
    /// `(real, fake)` activity handles.
    fakes: Vec<(Path, Path)>,
}

#[derive(Clone, Copy)]
enum Handler {
    Orchestrator,
    Activity,
}

impl Registry {
    fn parse(args: TokenStream, errors: &mut Errors) -> Registry {
        let mut seen = Vec::new();
        let mut explicit: Option<Vec<(Handler, Path)>> = None;
        let mut states = Vec::new();
        let mut fakes = Vec::new();
        for option in options::parse(args, errors) {
            let key = &option.key;
            if key == "state" || key == "fake" {
                if !options::first_use(&mut seen, key, errors) {
                    continue;
                }
                let Meta::List(list) = &option.meta else {
                    let form = if key == "state" {
                        "`state(first_value, second_value)`"
                    } else {
                        "`fake(real_activity = fake_activity, ..)`"
                    };
                    errors.push(&option.meta, format!("`{key}` takes a list: {form}"));
                    continue;
                };
                if key == "state" {
                    match list.parse_args_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
                        Ok(values) => states.extend(values),
                        Err(error) => errors.push_error(error),
                    }
                    continue;
                }
                match list.parse_args_with(Punctuated::<MetaNameValue, Token![,]>::parse_terminated)
                {
                    Ok(pairs) => {
                        for pair in pairs {
                            match pair.value {
                                Expr::Path(fake) if fake.qself.is_none() => {
                                    fakes.push((pair.path, fake.path))
                                }
                                other => errors.push(
                                    other,
                                    "the fake is an `#[activity]` handle: `fake(real_activity = fake_activity)`",
                                ),
                            }
                        }
                    }
                    Err(error) => errors.push_at(
                        error.span(),
                        "`fake` takes `real_activity = fake_activity` pairs: `fake(charge = fake_charge)`",
                    ),
                }
                continue;
            }
            let handler = if key == "orchestrators" {
                Handler::Orchestrator
            } else if key == "activities" {
                Handler::Activity
            } else {
                errors.push(key, options::unknown_key(key, OPTIONS));
                continue;
            };
            if !options::first_use(&mut seen, key, errors) {
                continue;
            }
            let Meta::List(list) = &option.meta else {
                errors.push(
                    &option.meta,
                    format!("`{key}` takes a list of names: `{key}(first, second)`"),
                );
                continue;
            };
            match list.parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated) {
                Ok(paths) => explicit
                    .get_or_insert_with(Vec::new)
                    .extend(paths.into_iter().map(|path| (handler, path))),
                Err(error) => errors.push_error(error),
            }
        }
        Registry {
            explicit,
            states,
            fakes,
        }
    }
}

fn validate(function: &ItemFn) -> Errors {
    let mut errors = Errors::default();
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            "`#[durable::test]` functions must be `async fn`; add `async`",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.push(
            constness,
            "`#[durable::test]` functions cannot be `const`; remove `const`",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.push(
            &sig.generics,
            "`#[durable::test]` functions cannot be generic; remove the parameters",
        );
    }
    for attr in &function.attrs {
        if attr.path().is_ident("test") {
            errors.push(
                attr,
                "`#[durable::test]` already makes this a test; remove `#[test]`",
            );
        }
    }
    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push(
                receiver,
                "`#[durable::test]` functions cannot take `self`; make it a free function",
            ),
            FnArg::Typed(param) => typed.push(param),
        }
    }
    if let Some(first) = typed.first() {
        if !is_test_env(&first.ty) {
            errors.push(
                &first.ty,
                "`#[durable::test]` functions take `env: TestEnv` or nothing; change this type to `TestEnv`",
            );
        }
    }
    for extra in typed.iter().skip(1) {
        errors.push(
            extra,
            "`#[durable::test]` functions take one parameter, `env: TestEnv`; remove this one",
        );
    }
    errors
}

fn is_test_env(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "TestEnv"),
        Type::Paren(paren) => is_test_env(&paren.elem),
        Type::Group(group) => is_test_env(&group.elem),
        _ => false,
    }
}

fn expand(
    function: &ItemFn,
    registry: &Registry,
    signature_ok: bool,
    errors: &Errors,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let ident = &sig.ident;
    let errors = errors.to_compile_errors();
    if !signature_ok {
        // Keep the function (made `async`, no longer a test) so its body is
        // still type-checked and the editor keeps working inside it.
        let mut sig = sig.clone();
        sig.asyncness = Some(Default::default());
        sig.constness = None;
        let attrs = attrs.iter().filter(|attr| {
            !["test", "should_panic", "ignore"]
                .iter()
                .any(|name| attr.path().is_ident(name))
        });
        return quote! {
            #errors
            #(#attrs)*
            #[allow(dead_code)]
            #vis #sig #block
        };
    }

    let explicit = registry.explicit.as_ref().map(|handlers| {
        let calls = handlers.iter().map(|(handler, path)| match handler {
            Handler::Orchestrator => quote_spanned!(path.span()=> .orchestrator(#path)),
            Handler::Activity => quote_spanned!(path.span()=> .activity(#path)),
        });
        quote! {
            .registry(::durable::__private::Registry::new() #(#calls)*)
        }
    });
    let states = registry
        .states
        .iter()
        .map(|value| quote_spanned!(value.span()=> .state(#value)));
    let fakes = registry
        .fakes
        .iter()
        .map(|(real, fake)| quote_spanned!(fake.span()=> .fake_activity(#real, #fake)));
    let configure = quote! {
        || ::durable::__private::TestEnv::builder() #explicit #(#states)* #(#fakes)*
    };
    let body = Ident::new("__durable_test", Span::mixed_site());
    let inputs = &sig.inputs;
    let output = &sig.output;
    let test = if inputs.is_empty() {
        quote!(|_| #body())
    } else {
        quote!(#body)
    };
    let run = quote_spanned! {output.span()=>
        ::durable::__private::run_test(#configure, #test)
    };
    // Outside `cfg(test)` the function stays an ordinary (unused) function
    // rather than disappearing, so its body is still type-checked, and a
    // doctest can call it.
    let attrs = attrs.iter().map(|attr| {
        if attr.path().is_ident("should_panic") || attr.path().is_ident("ignore") {
            let meta = &attr.meta;
            quote!(#[cfg_attr(test, #meta)])
        } else {
            quote!(#attr)
        }
    });
    quote! {
        #errors
        #(#attrs)*
        #[cfg_attr(test, ::core::prelude::v1::test)]
        #[cfg_attr(not(test), allow(dead_code))]
        #vis fn #ident() {
            async fn #body(#inputs) #output #block
            #run
        }
    }
}
