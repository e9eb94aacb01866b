//! Attribute options shared by the macros: `key = "value"` and `key(a, b)`.

use crate::errors::Errors;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Meta, Token};

/// One option as written, before its key is checked.
pub(crate) struct RawOption {
    pub(crate) key: Ident,
    pub(crate) meta: Meta,
}

/// Parses the attribute's arguments into options. Fails only when they are
/// not a comma-separated list of `key`, `key = value` or `key(...)`.
pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Vec<RawOption> {
    let metas =
        match syn::parse::Parser::parse2(Punctuated::<Meta, Token![,]>::parse_terminated, args) {
            Ok(metas) => metas,
            Err(error) => {
                errors.push_error(error);
                return Vec::new();
            }
        };
    let mut options = Vec::new();
    for meta in metas {
        match meta.path().get_ident() {
            Some(key) => options.push(RawOption {
                key: key.clone(),
                meta,
            }),
            None => errors.push(
                meta.path(),
                format!(
                    "unknown option `{}`; options are single words such as `name = \"...\"`",
                    meta.path().to_token_stream().to_string().replace(' ', "")
                ),
            ),
        }
    }
    options
}

/// "unknown option `nam`; valid options are `name` and `version`"
pub(crate) fn unknown_key(key: &Ident, valid: &[&str]) -> String {
    let listed: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
    let list = match listed.as_slice() {
        [] => return format!("unknown option `{key}`; this attribute takes no options"),
        [one] => return format!("unknown option `{key}`; the only valid option is {one}"),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    format!("unknown option `{key}`; valid options are {list}")
}

/// Records an error for every key seen before; returns whether `key` is new.
pub(crate) fn first_use(seen: &mut Vec<Ident>, key: &Ident, errors: &mut Errors) -> bool {
    if seen.iter().any(|k| k == key) {
        errors.push(key, format!("duplicate option `{key}`; give it once"));
        false
    } else {
        seen.push(key.clone());
        true
    }
}

/// The string of `key = "..."`, or an error saying how to write it.
pub(crate) fn string_value(option: &RawOption, errors: &mut Errors) -> Option<LitStr> {
    let key = &option.key;
    let expected = format!("`{key}` takes a string: `{key} = \"...\"`");
    match &option.meta {
        Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => {
                if s.value().trim().is_empty() {
                    errors.push(s, format!("`{key}` cannot be empty"));
                    None
                } else {
                    Some(s.clone())
                }
            }
            other => {
                errors.push(other, expected);
                None
            }
        },
        Meta::Path(path) => {
            errors.push(path, expected);
            None
        }
        Meta::List(list) => {
            errors.push(list, expected);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    #[test]
    fn unknown_key_lists_valid_keys() {
        let key = Ident::new("nam", Span::call_site());
        assert_eq!(
            unknown_key(&key, &["name", "version"]),
            "unknown option `nam`; valid options are `name` and `version`"
        );
        assert_eq!(
            unknown_key(&key, &["name"]),
            "unknown option `nam`; the only valid option is `name`"
        );
        assert_eq!(
            unknown_key(&key, &["a", "b", "c"]),
            "unknown option `nam`; valid options are `a`, `b` and `c`"
        );
    }
}
