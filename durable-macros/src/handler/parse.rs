//! The syntax of an annotated function and of the attribute's options, with
//! spans kept for the errors and the expansion.

use super::Kind;
use crate::errors::Errors;
use crate::options;
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{
    Attribute, Block, FnArg, GenericArgument, Ident, Item, ItemEnum, ItemMod, ItemStruct as Struct,
    ItemTrait, LitStr, Pat, PathArguments, Receiver, ReturnType, Signature, Type, Visibility,
};

/// An annotated function, split into the parts the macro works with.
pub(crate) struct Handler {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) receiver: Option<Receiver>,
    /// Every typed parameter, context and inputs alike, in order.
    pub(crate) params: Vec<Param>,
    pub(crate) output: Output,
    pub(crate) block: Block,
}

/// One `pattern: Type` parameter.
pub(crate) struct Param {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) pat: Pat,
    pub(crate) ty: Type,
}

/// What the function returns, as the trait sees it.
pub(crate) enum Output {
    /// No return type: the output is `()`.
    Unit,
    /// `-> T`: always succeeds with `T`.
    Plain(Type),
    /// `-> Result<T, E>` (or an alias `Result<T>`): succeeds with `T`.
    Result {
        ty: Box<Type>,
        ok: Type,
        err: Option<Box<Type>>,
    },
}

/// Whether a parameter's type is application state: a path whose last
/// segment is `State` with one type argument (`State<Db>`,
/// `durable::State<Db>`).
pub(crate) fn is_state(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().is_some_and(|last| {
            last.ident == "State"
                && matches!(&last.arguments, PathArguments::AngleBracketed(args)
                        if args.args.len() == 1
                            && matches!(args.args.first(), Some(GenericArgument::Type(_))))
        }),
        Type::Paren(paren) => is_state(&paren.elem),
        Type::Group(group) => is_state(&group.elem),
        _ => false,
    }
}

impl Handler {
    /// The `State<..>` parameters after the context, in order.
    pub(crate) fn state_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().skip(1).filter(|p| is_state(&p.ty))
    }

    /// The input parameter: the first after the context that is not state.
    pub(crate) fn input_param(&self) -> Option<&Param> {
        self.params.iter().skip(1).find(|p| !is_state(&p.ty))
    }

    pub(crate) fn parse(kind: Kind, item: TokenStream) -> syn::Result<Handler> {
        let function = match syn::parse2::<Item>(item)? {
            Item::Fn(function) => function,
            other => {
                return Err(syn::Error::new_spanned(
                    item_head(&other),
                    format!(
                        "`#[{}]` applies to an `async fn`; put it on a free function",
                        kind.singular()
                    ),
                ))
            }
        };
        let mut receiver = None;
        let mut params = Vec::new();
        for input in &function.sig.inputs {
            match input {
                FnArg::Receiver(r) => receiver = Some(r.clone()),
                FnArg::Typed(typed) => params.push(Param {
                    attrs: typed.attrs.clone(),
                    pat: (*typed.pat).clone(),
                    ty: (*typed.ty).clone(),
                }),
            }
        }
        let output = match &function.sig.output {
            ReturnType::Default => Output::Unit,
            ReturnType::Type(_, ty) => Output::classify(ty),
        };
        Ok(Handler {
            attrs: function.attrs,
            vis: function.vis,
            sig: function.sig,
            receiver,
            params,
            output,
            block: *function.block,
        })
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.sig.ident
    }
}

impl Output {
    fn classify(ty: &Type) -> Output {
        if let Type::Path(path) = ty {
            if path.qself.is_none() {
                if let Some(last) = path.path.segments.last() {
                    if last.ident == "Result" {
                        if let PathArguments::AngleBracketed(args) = &last.arguments {
                            let mut types = args.args.iter().filter_map(|arg| match arg {
                                GenericArgument::Type(ty) => Some(ty.clone()),
                                _ => None,
                            });
                            if let Some(ok) = types.next() {
                                return Output::Result {
                                    ty: Box::new(ty.clone()),
                                    ok,
                                    err: types.next().map(Box::new),
                                };
                            }
                        }
                    }
                }
            }
        }
        Output::Plain(ty.clone())
    }

    /// The type of a successful result (`None` for `()`).
    pub(crate) fn success_type(&self) -> Option<&Type> {
        match self {
            Output::Unit => None,
            Output::Plain(ty) => Some(ty),
            Output::Result { ok, .. } => Some(ok),
        }
    }
}

/// The validated options of `#[orchestrator(...)]` / `#[activity(...)]`.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitStr>,
}

impl Options {
    /// Parses and checks the options; every problem goes to `errors` and
    /// the option is then left out.
    pub(crate) fn parse(kind: Kind, args: TokenStream, errors: &mut Errors) -> Options {
        let mut parsed = Options::default();
        let mut seen = Vec::new();
        for option in options::parse(args, errors) {
            let key = &option.key;
            if key == "version" && kind == Kind::Activity {
                errors.push(
                    key,
                    "activities are not versioned; remove `version` (it applies to orchestrators only)",
                );
                continue;
            }
            if !kind.options().iter().any(|valid| key == valid) {
                errors.push(key, options::unknown_key(key, kind.options()));
                continue;
            }
            if !options::first_use(&mut seen, key, errors) {
                continue;
            }
            let value = options::string_value(&option, errors);
            if key == "name" {
                parsed.name = value;
            } else {
                parsed.version = value;
            }
        }
        parsed
    }
}

fn item_head(item: &Item) -> TokenStream {
    // Point at the keyword and name rather than the whole (maybe long) item.
    match item {
        Item::Struct(Struct {
            struct_token,
            ident,
            ..
        }) => quote!(#struct_token #ident),
        Item::Enum(ItemEnum {
            enum_token, ident, ..
        }) => quote!(#enum_token #ident),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        Item::Mod(ItemMod {
            mod_token, ident, ..
        }) => quote!(#mod_token #ident),
        Item::Trait(ItemTrait {
            trait_token, ident, ..
        }) => quote!(#trait_token #ident),
        other => other.to_token_stream(),
    }
}
