//! Code generation for `#[orchestrator]` and `#[activity]`. Cannot fail:
//! every decision was made by parse and validate.

use super::parse::{is_state, Handler, Options, Output, Param};
use super::Kind;
use crate::errors::Errors;
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr, Type};

/// The handle struct, the trait impl and the registration, followed by the
/// errors. With `signature_ok` false the impl is a stub (types guessed where
/// possible, the body kept in an unused function, nothing registered) so
/// that uses of the handle and the body itself still type-check.
pub(crate) fn expand(
    kind: Kind,
    handler: &Handler,
    options: &Options,
    signature_ok: bool,
    errors: &Errors,
) -> TokenStream {
    let errors = errors.to_compile_errors();
    if handler.receiver.is_some() {
        // A method: no handle can be generated inside an `impl`, so keep
        // the method as it is and let the error explain.
        let Handler {
            attrs,
            vis,
            sig,
            block,
            ..
        } = handler;
        return quote! {
            #errors
            #(#attrs)*
            #vis #sig #block
        };
    }

    let attrs = Attrs::split(&handler.attrs);
    let ident = handler.ident();
    let vis = &handler.vis;
    let cfg = &attrs.cfg;
    let on_struct = &attrs.on_struct;

    // Spanned at the function's name, so notes that point at the handle's
    // definition ("the trait `Activity` is not implemented for `x`") show
    // the user's function.
    let handle = quote_spanned! {ident.span()=>
        #(#cfg)*
        #(#on_struct)*
        #[allow(non_camel_case_types)]
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::default::Default,
        )]
        #vis struct #ident;
    };
    let body = if signature_ok {
        implementation(kind, handler, options, &attrs)
    } else {
        stub(kind, handler, options, &attrs)
    };
    quote! {
        #handle
        #(#cfg)*
        #[allow(deprecated)]
        const _: () = {
            #body
        };
        #errors
    }
}

/// The user's attributes, sorted by where they belong.
struct Attrs<'a> {
    /// `#[cfg]`: on everything generated.
    cfg: Vec<&'a Attribute>,
    /// Docs, `#[deprecated]` and lint levels: on the handle struct.
    on_struct: Vec<&'a Attribute>,
    /// Everything else (lint levels too): on the function holding the body.
    on_fn: Vec<&'a Attribute>,
}

impl<'a> Attrs<'a> {
    fn split(attrs: &'a [Attribute]) -> Attrs<'a> {
        let mut split = Attrs {
            cfg: Vec::new(),
            on_struct: Vec::new(),
            on_fn: Vec::new(),
        };
        for attr in attrs {
            let path = attr.path();
            let is = |name: &str| path.is_ident(name);
            if is("cfg") {
                split.cfg.push(attr);
            } else if is("doc") || is("deprecated") {
                split.on_struct.push(attr);
            } else if is("allow") || is("warn") || is("deny") || is("forbid") {
                split.on_struct.push(attr);
                split.on_fn.push(attr);
            } else {
                split.on_fn.push(attr);
            }
        }
        split
    }
}

struct Paths {
    trait_: TokenStream,
    signature: TokenStream,
    context: TokenStream,
    error: TokenStream,
    register: TokenStream,
}

fn paths(kind: Kind) -> Paths {
    match kind {
        Kind::Orchestrator => Paths {
            trait_: quote!(::durable::__private::Orchestrator),
            signature: quote!(::durable::__private::OrchestratorSignature),
            context: quote!(::durable::__private::OrchestrationContext),
            error: quote!(::durable::__private::OrchestrationError),
            register: quote!(::durable::__private::Registration::orchestrator),
        },
        Kind::Activity => Paths {
            trait_: quote!(::durable::__private::Activity),
            signature: quote!(::durable::__private::ActivitySignature),
            context: quote!(::durable::__private::ActivityContext),
            error: quote!(::durable::__private::ActivityError),
            register: quote!(::durable::__private::Registration::activity),
        },
    }
}

fn name_and_version(kind: Kind, handler: &Handler, options: &Options) -> TokenStream {
    let ident = handler.ident();
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&ident.unraw().to_string(), ident.span()));
    let version = match (&options.version, kind) {
        (_, Kind::Activity) => quote!(),
        (Some(version), Kind::Orchestrator) => quote! {
            const VERSION: ::core::option::Option<&'static str> =
                ::core::option::Option::Some(#version);
        },
        (None, Kind::Orchestrator) => quote!(),
    };
    quote! {
        const NAME: &'static str = #name;
        #version
    }
}

fn unit() -> Type {
    syn::parse_quote!(())
}

fn implementation(
    kind: Kind,
    handler: &Handler,
    options: &Options,
    attrs: &Attrs<'_>,
) -> TokenStream {
    let Paths {
        trait_,
        signature,
        context,
        error,
        register,
    } = paths(kind);
    let ident = handler.ident();
    let on_fn = &attrs.on_fn;
    let block = &handler.block;
    let constants = name_and_version(kind, handler, options);

    let context_param = &handler.params[0];
    let input_param = handler.input_param();
    let params = handler
        .params
        .iter()
        .map(|Param { attrs, pat, ty }| quote!(#(#attrs)* #pat: #ty));
    let output = &handler.sig.output;

    let input_ty = input_param.map_or_else(unit, |p| p.ty.clone());
    let input_assoc = quote_spanned!(input_ty.span()=> type Input = #input_ty;);
    let output_ty = handler.output.success_type().cloned().unwrap_or_else(unit);
    let output_assoc = quote_spanned!(output_ty.span()=> type Output = #output_ty;);
    // A plain return type that is really a `Result` (an alias) would record
    // an `Err` as a successful output: refuse it, pointing at the type.
    let not_a_result = match &handler.output {
        Output::Plain(ty) => quote_spanned! {ty.span()=>
            const _: () = {
                #[allow(clippy::let_unit_value)]
                fn __durable_output_is_not_a_result_alias() {
                    let _ = <#ty as ::durable::__private::ReturnTypeIsNotAResult<_>>::CHECK;
                }
            };
        },
        _ => quote!(),
    };

    let body_fn = syn::Ident::new("__durable_body", Span::mixed_site());
    let ctx = syn::Ident::new("ctx", Span::mixed_site());
    let input = syn::Ident::new("input", Span::mixed_site());
    // Each `State<T>` parameter is taken from the context before the body
    // runs, spanned at its type so an unmet bound (`T: Clone`) points there.
    let states: Vec<(syn::Ident, &Type)> = handler
        .state_params()
        .enumerate()
        .map(|(i, p)| {
            (
                syn::Ident::new(&format!("__durable_state_{i}"), Span::mixed_site()),
                &p.ty,
            )
        })
        .collect();
    let value = syn::Ident::new("value", Span::mixed_site());
    let extract = states.iter().map(|(name, ty)| {
        // Written as the requirement below is, so an unmet bound is
        // reported once.
        quote_spanned! {ty.span()=>
            let #name: #ty = match <#ty as ::durable::__private::StateParam>::from_states(
                ::durable::__private::ActivityContext::state_map(&#ctx),
            ) {
                ::core::option::Option::Some(#value) => #value,
                ::core::option::Option::None => {
                    return ::core::result::Result::Err(::durable::__private::missing_state(
                        &#ctx,
                        <#ty as ::durable::__private::StateParam>::REQUIREMENT,
                    ))
                }
            };
        }
    });
    let requirements = states.iter().map(|(_, ty)| {
        quote_spanned! {ty.span()=>
            <#ty as ::durable::__private::StateParam>::REQUIREMENT
        }
    });
    let state_const = match kind {
        Kind::Activity if !states.is_empty() => quote! {
            const STATE: &'static [::durable::__private::StateRequirement] = &[#(#requirements),*];
        },
        _ => quote!(),
    };
    let state_args = states.iter().map(|(name, _)| name);
    let call = match input_param {
        Some(_) => {
            quote_spanned!(context_param.ty.span()=> #body_fn(#ctx, #(#state_args,)* #input))
        }
        None => quote_spanned!(context_param.ty.span()=> {
            let () = #input;
            #body_fn(#ctx #(, #state_args)*)
        }),
    };
    let convert = match (&handler.output, kind) {
        (Output::Unit | Output::Plain(_), _) => quote! {
            ::core::result::Result::Ok(#call.await)
        },
        (Output::Result { ty, err, .. }, Kind::Orchestrator) => {
            // Every token of the conversion carries the error type's span,
            // so "`E` doesn't implement `Display`" points at `E`.
            let span = err.as_ref().map_or_else(|| ty.span(), |err| err.span());
            let result = syn::Ident::new("result", Span::mixed_site());
            quote_spanned! {span=>
                let #result = #call.await;
                ::core::result::Result::map_err(
                    #result,
                    ::durable::__private::into_orchestration_error,
                )
            }
        }
        (Output::Result { ty, err, .. }, Kind::Activity) => {
            let span = err.as_ref().map_or_else(|| ty.span(), |err| err.span());
            quote_spanned! {span=>
                ::core::result::Result::map_err(
                    #call.await,
                    ::durable::__private::into_activity_error,
                )
            }
        }
    };
    let registration = registration(ident, &register);

    quote! {
        #not_a_result
        #(#on_fn)*
        async fn #body_fn(#(#params),*) #output #block

        #[automatically_derived]
        impl #signature for #ident {
            #constants
            #input_assoc
            #output_assoc
        }

        #[automatically_derived]
        impl #trait_ for #ident {
            #state_const
            fn run(
                self,
                #ctx: #context,
                #input: <Self as #signature>::Input,
            ) -> ::durable::__private::BoxFuture<
                'static,
                ::core::result::Result<<Self as #signature>::Output, #error>,
            > {
                ::std::boxed::Box::pin(async move {
                    #(#extract)*
                    #convert
                })
            }
        }

        #registration
    }
}

fn registration(ident: &syn::Ident, register: &TokenStream) -> TokenStream {
    // Spanned at the function's name so `line!()` reports its line.
    let location = quote_spanned! {ident.span()=>
        ::core::file!(), ::core::line!(), ::core::module_path!()
    };
    quote! {
        ::durable::__private::inventory::submit! {
            #register::<#ident>(#location)
        }
    }
}

/// The trait impl for a function whose signature is wrong: the types are the
/// user's where they are usable, `()` elsewhere, and `run` is never called
/// because the crate does not compile.
fn stub(kind: Kind, handler: &Handler, options: &Options, attrs: &Attrs<'_>) -> TokenStream {
    let Paths {
        trait_,
        signature,
        context,
        error,
        ..
    } = paths(kind);
    let ident = handler.ident();
    let constants = name_and_version(kind, handler, options);
    let inputs: Vec<&Param> = handler
        .params
        .iter()
        .filter(|p| !looks_like_context(&p.ty) && !is_state(&p.ty))
        .collect();
    let input_ty = match inputs.as_slice() {
        [only] if is_owned(&only.ty) => only.ty.clone(),
        _ => unit(),
    };
    let output_ty = match handler.output.success_type() {
        Some(ty) if is_owned(ty) => ty.clone(),
        _ => unit(),
    };
    // The body is kept, made `async` whatever the signature said, so it is
    // still type-checked and the editor keeps working inside it.
    let mut sig = handler.sig.clone();
    sig.ident = syn::Ident::new("__durable_body", Span::mixed_site());
    sig.asyncness = Some(Default::default());
    sig.constness = None;
    sig.abi = None;
    let on_fn = &attrs.on_fn;
    let block = &handler.block;
    quote! {
        #(#on_fn)*
        #[allow(dead_code, unused_variables)]
        #sig #block

        #[automatically_derived]
        impl #signature for #ident {
            #constants
            type Input = #input_ty;
            type Output = #output_ty;
        }

        #[automatically_derived]
        impl #trait_ for #ident {
            fn run(
                self,
                _: #context,
                _: <Self as #signature>::Input,
            ) -> ::durable::__private::BoxFuture<
                'static,
                ::core::result::Result<<Self as #signature>::Output, #error>,
            > {
                ::core::unreachable!()
            }
        }
    }
}

fn looks_like_context(ty: &Type) -> bool {
    let text = ty.to_token_stream().to_string();
    text.ends_with("OrchestrationContext") || text.ends_with("ActivityContext")
}

fn is_owned(ty: &Type) -> bool {
    let text = ty.to_token_stream().to_string();
    !text.contains('&') && !text.contains('\'') && !text.contains("impl ")
}
