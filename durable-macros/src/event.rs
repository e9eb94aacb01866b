//! `#[derive(Event)]`: implements `durable::Event` for a type, naming the
//! event on the wire. It does not derive serde's traits.

use crate::errors::Errors;
use crate::options;
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{Attribute, Data, DeriveInput, LitStr, Meta};

/// The only option of `#[event(..)]`.
const OPTIONS: &[&str] = &["name"];

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    let name = event_name(&input.attrs, &mut errors);
    if let Data::Union(union) = &input.data {
        errors.push(
            union.union_token,
            "`#[derive(Event)]` works on structs and enums, not unions",
        );
        return errors.to_compile_errors();
    }
    let ident = &input.ident;
    // With an error in the options the impl is still emitted (under the
    // default name), so uses of the type keep type-checking.
    let name = name.unwrap_or_else(|| LitStr::new(&ident.unraw().to_string(), ident.span()));
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    if !input.generics.params.is_empty() {
        // A generic event is an event for the parameters that make it a
        // payload; say so, rather than ask for bounds on every parameter.
        where_clause.predicates.push(syn::parse_quote! {
            Self: ::durable::__private::serde::Serialize
                + for<'__de> ::durable::__private::serde::Deserialize<'__de>
                + ::core::marker::Send
                + 'static
        });
    }
    let errors = errors.to_compile_errors();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::durable::__private::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
        }
        #errors
    }
}

/// The name given by `#[event(name = "...")]`, if any; records an error for
/// every malformed, unknown, empty or repeated option or attribute.
fn event_name(attrs: &[Attribute], errors: &mut Errors) -> Option<LitStr> {
    let mut name = None;
    let mut seen_attr = false;
    let mut seen_keys = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        if seen_attr {
            errors.push(
                attr,
                "duplicate `#[event(..)]` attribute; give every option in one `#[event(..)]`",
            );
            continue;
        }
        seen_attr = true;
        let list = match &attr.meta {
            Meta::List(list) => list,
            other => {
                errors.push(
                    other,
                    "write the event's options in parentheses: `#[event(name = \"...\")]`",
                );
                continue;
            }
        };
        for option in options::parse(list.tokens.clone(), errors) {
            let key = &option.key;
            if !OPTIONS.iter().any(|valid| key == valid) {
                errors.push(key, options::unknown_key(key, OPTIONS));
                continue;
            }
            if !options::first_use(&mut seen_keys, key, errors) {
                continue;
            }
            name = options::string_value(&option, errors);
        }
        if list.tokens.is_empty() {
            errors.push(
                list.to_token_stream(),
                "`#[event()]` gives no option; write `#[event(name = \"...\")]` or remove it",
            );
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(item: TokenStream) -> String {
        derive(item).to_string()
    }

    #[test]
    fn the_default_name_is_the_type_name_as_written() {
        let out = expand(quote!(
            struct r#Approval(bool);
        ));
        assert!(
            out.contains("const NAME : & 'static str = \"Approval\""),
            "{out}"
        );
        let out = expand(quote!(
            enum Decision {
                Yes,
                No,
            }
        ));
        assert!(out.contains("\"Decision\""), "{out}");
    }

    #[test]
    fn name_option_renames_the_event() {
        let out = expand(quote!(
            #[event(name = "approval")]
            struct Approval {
                ok: bool,
            }
        ));
        assert!(out.contains("\"approval\""), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn generic_events_bound_self_not_their_parameters() {
        let out = expand(quote!(
            struct Wrapped<T>(T);
        ));
        assert!(out.contains("for Wrapped < T >"), "{out}");
        assert!(
            out.contains("Self : :: durable :: __private :: serde :: Serialize"),
            "{out}"
        );
    }

    #[test]
    fn every_mistake_in_the_options_is_reported() {
        let cases = [
            (
                quote!(
                    #[event(nam = "a")]
                    struct A;
                ),
                "unknown option `nam`; the only valid option is `name`",
            ),
            (
                quote!(
                    #[event(name = 5)]
                    struct A;
                ),
                "`name` takes a string: `name = \\\"...\\\"`",
            ),
            (
                quote!(
                    #[event(name = "")]
                    struct A;
                ),
                "`name` cannot be empty",
            ),
            (
                quote!(
                    #[event(name = "a", name = "b")]
                    struct A;
                ),
                "duplicate option `name`; give it once",
            ),
            (
                quote!(
                    #[event(name = "a")]
                    #[event(name = "b")]
                    struct A;
                ),
                "duplicate `#[event(..)]` attribute",
            ),
            (
                quote!(
                    #[event]
                    struct A;
                ),
                "write the event's options in parentheses",
            ),
            (
                quote!(
                    #[event()]
                    struct A;
                ),
                "`#[event()]` gives no option",
            ),
            (
                quote!(union U { a: u32 }),
                "works on structs and enums, not unions",
            ),
        ];
        for (item, message) in cases {
            let out = expand(item.clone());
            assert!(
                out.contains("compile_error") && out.contains(message),
                "{item}: expected an error containing {message:?}, got {out}"
            );
        }
    }
}
