//! Replay-safety lints for `#[orchestrator]` bodies, and the
//! `#[durable::nondeterministic]` marker that silences them per statement.
//!
//! An orchestrator is re-executed from its history, so anything that can
//! differ between executions (clocks, randomness, the environment, I/O,
//! scheduling by tokio) breaks replay. The check is syntactic: it matches
//! paths as written in the body, including inside closures, async blocks,
//! `tokio::select!` branches and the arguments of expression macros.

use crate::errors::Errors;
use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::visit_mut::{self, VisitMut};
use syn::{Attribute, Expr, ExprPath, Item, Macro, Meta, Path, Stmt, Token};

/// Removes every `#[durable::nondeterministic]` marker from `block` and,
/// when `lint` is set, reports each replay-unsafe call outside the marked
/// statements.
pub(crate) fn check_and_strip_markers(block: &mut syn::Block, lint: bool) -> Errors {
    let mut bindings = Bindings(Default::default());
    syn::visit::Visit::visit_block(&mut bindings, block);
    let mut visitor = Lints {
        lint,
        errors: Errors::default(),
        locals: bindings.0,
    };
    visitor.visit_block_mut(block);
    visitor.errors
}

/// The expansion of `#[durable::nondeterministic]` where no orchestrator
/// removed it first: an error beside the unchanged item.
pub(crate) fn misplaced_marker(args: TokenStream, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        if args.is_empty() {
            "`#[durable::nondeterministic]` only has meaning on a statement inside an `#[orchestrator]` function; remove it"
        } else {
            "`#[durable::nondeterministic]` takes no arguments, and only has meaning on a statement inside an `#[orchestrator]` function"
        },
    )
    .to_compile_error();
    quote! { #error #item }
}

struct Lints {
    lint: bool,
    errors: Errors,
    /// Names the body binds (`let`, closure and function parameters): a
    /// bare `sleep` or `rand` that is one of them is the user's, not a
    /// library's.
    locals: std::collections::HashSet<String>,
}

/// Collects the identifiers bound by patterns in a body.
struct Bindings(std::collections::HashSet<String>);

impl<'ast> syn::visit::Visit<'ast> for Bindings {
    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.0.insert(p.ident.to_string());
        syn::visit::visit_pat_ident(self, p);
    }
}

impl VisitMut for Lints {
    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        if let Some(attrs) = stmt_attrs_mut(stmt) {
            if strip_markers(attrs, &mut self.errors) {
                // The whole statement is exempt, nested code included.
                return;
            }
        }
        visit_mut::visit_stmt_mut(self, stmt);
    }

    fn visit_expr_path_mut(&mut self, expr: &mut ExprPath) {
        let bound_locally = expr.path.segments.len() == 1
            && self
                .locals
                .contains(&expr.path.segments[0].ident.to_string());
        if self.lint && expr.qself.is_none() && !bound_locally {
            if let Some(fix) = rule_for(&expr.path) {
                self.errors.push(
                    &expr.path,
                    format!(
                        "`{}` is not replay-safe in an orchestrator; {fix} (if this is deliberate, \
                         or not what it looks like, mark the statement `#[durable::nondeterministic]`)",
                        written(&expr.path)
                    ),
                );
            }
        }
        visit_mut::visit_expr_path_mut(self, expr);
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        self.check_macro(mac);
        // The check read a parsed copy of the macro's input (where markers
        // exempt their statements); the markers must also go from the
        // tokens the compiler will see.
        let tokens = std::mem::take(&mut mac.tokens);
        mac.tokens = strip_marker_tokens(tokens);
    }
}

impl Lints {
    fn check_macro(&mut self, mac: &mut Macro) {
        if !self.lint {
            return;
        }
        let last = mac.path.segments.last().map(|s| s.ident.to_string());
        if last.as_deref() == Some("select") {
            let select = mac.parse_body::<Select>().ok();
            let first = mac.path.segments.first().map(|s| s.ident.to_string());
            if first.as_deref() == Some("futures") {
                self.errors.push(
                    &mac.path,
                    format!(
                        "`{}!` picks among ready branches at random, which is not replay-safe in an orchestrator; use `futures::select_biased!` or `ctx.when_any(..)`",
                        written(&mac.path)
                    ),
                );
            } else if !select.as_ref().is_some_and(|s| s.biased) {
                self.errors.push(
                    &mac.path,
                    format!(
                        "`{}!` without `biased;` polls its branches in random order, which is not replay-safe in an orchestrator; add `biased;` as its first line, or use `ctx.when_any(..)`",
                        written(&mac.path)
                    ),
                );
            }
            if let Some(mut select) = select {
                for expr in &mut select.exprs {
                    self.visit_expr_mut(expr);
                }
            }
            return;
        }
        // Most macros in a body take expressions (`format!`, `vec!`,
        // `assert_eq!`, `tracing::info!`); look into those. Others are
        // opaque to the check.
        if let Ok(mut args) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            for arg in &mut args {
                self.visit_expr_mut(arg);
            }
        }
    }
}

/// The fix for a replay-unsafe path, or `None` if the path is fine.
fn rule_for(path: &Path) -> Option<&'static str> {
    const NOW: &str = "use `ctx.current_utc_datetime()`";
    const RANDOM: &str = "derive values from `ctx.new_uuid()`, or draw them in an activity";
    const UUID: &str = "use `ctx.new_uuid()`";
    const SPAWN: &str = "schedule the work as activities or sub-orchestrations and await them with `ctx.when_all(..)`";
    const JOIN_SET: &str = "a `JoinSet` runs its futures as tokio tasks, outside the replay engine; join durable tasks with `ctx.join((a, b))`, `ctx.when_all(..)` or `ctx.when_all_settled(..)`";
    const SLEEP: &str = "use `ctx.create_timer(duration).await`";
    const TIMEOUT: &str =
        "give the durable task a deadline: `task.timeout(duration)` or `ctx.timeout(future, duration)`; for an interval, await `ctx.create_timer(..)` in a loop";
    const ENV: &str = "read it in an activity, or pass it in the orchestration's input";
    const IO: &str = "do I/O in an activity and call it with `ctx.call_activity(..)`";

    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let segments: Vec<&str> = segments
        .iter()
        .map(|s| s.trim_start_matches("r#"))
        .collect();
    let (&last, init) = segments.split_last()?;
    let first = segments[0];
    let prev = init.last().copied();
    let has = |name: &str| segments.contains(&name);

    let fix = match (prev, last) {
        (Some("SystemTime" | "Instant" | "Utc" | "Local"), "now") => NOW,
        (Some("OffsetDateTime"), "now_utc" | "now_local") => NOW,
        (Some("Uuid"), "new_v4" | "now_v1" | "now_v6" | "now_v7") => UUID,
        (Some("File"), "open" | "create" | "create_new" | "options") => IO,
        (Some("OpenOptions"), "new") => IO,
        // A user's own `Command` type (common in CQRS code) is fine.
        (Some("Command"), "new") if has("process") => IO,
        (
            Some(
                "TcpStream" | "TcpListener" | "UdpSocket" | "UnixStream" | "UnixListener"
                | "UnixDatagram",
            ),
            _,
        ) => IO,
        (Some("io"), "stdin") => IO,
        (Some("env"), "var" | "var_os" | "vars" | "vars_os" | "args" | "args_os")
        | (Some("env"), "current_dir" | "temp_dir" | "home_dir") => ENV,
        (None, "thread_rng") => RANDOM,
        (_, "sleep" | "sleep_until")
            if init.is_empty()
                || matches!(
                    first,
                    "thread" | "time" | "task" | "tokio" | "std" | "async_std" | "smol"
                ) =>
        {
            SLEEP
        }
        (_, "timeout" | "timeout_at" | "interval" | "interval_at")
            if first == "tokio" || prev == Some("time") =>
        {
            TIMEOUT
        }
        (_, "spawn" | "spawn_blocking" | "spawn_local")
            if init.is_empty()
                || matches!(
                    first,
                    "tokio" | "task" | "thread" | "std" | "async_std" | "smol"
                ) =>
        {
            SPAWN
        }
        // `JoinSet::new()`, `tokio::task::JoinSet::new()`: a user type of
        // that name is unlikely, so the bare name counts too.
        _ if has("JoinSet") && (first == "JoinSet" || matches!(first, "tokio" | "task")) => {
            JOIN_SET
        }
        // A seeded generator is deterministic.
        (_, "seed_from_u64" | "from_seed") => return None,
        _ if matches!(first, "rand" | "fastrand" | "getrandom") => RANDOM,
        _ if matches!(first, "reqwest" | "ureq") => IO,
        _ if first == "fs" || (has("fs") && matches!(first, "std" | "tokio" | "async_std")) => IO,
        _ => return None,
    };
    Some(fix)
}

/// The path as the user wrote it, without generic arguments.
fn written(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}

/// Removes `#[durable::nondeterministic]` / `#[nondeterministic]` from raw
/// tokens (a macro's input), at any depth.
fn strip_marker_tokens(tokens: TokenStream) -> TokenStream {
    use proc_macro2::{Group, TokenTree};
    let mut out = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    while let Some(tree) = iter.next() {
        match tree {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                let marker = matches!(
                    iter.peek(),
                    Some(TokenTree::Group(g))
                        if g.delimiter() == proc_macro2::Delimiter::Bracket
                            && syn::parse2::<Path>(g.stream()).is_ok_and(|path| is_marker(&path))
                );
                if marker {
                    iter.next();
                } else {
                    out.push(TokenTree::Punct(p));
                }
            }
            TokenTree::Group(g) => {
                let mut stripped = Group::new(g.delimiter(), strip_marker_tokens(g.stream()));
                stripped.set_span(g.span());
                out.push(TokenTree::Group(stripped));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

fn is_marker(path: &Path) -> bool {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    matches!(
        segments
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["nondeterministic"] | ["durable", "nondeterministic"]
    )
}

/// Removes the markers from `attrs`; returns whether there was one.
fn strip_markers(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> bool {
    let before = attrs.len();
    attrs.retain(|attr| {
        if !is_marker(attr.path()) {
            return true;
        }
        if !matches!(attr.meta, Meta::Path(_)) {
            errors.push(
                &attr.meta,
                "`#[durable::nondeterministic]` takes no arguments; write it alone above the statement",
            );
        }
        false
    });
    attrs.len() != before
}

fn stmt_attrs_mut(stmt: &mut Stmt) -> Option<&mut Vec<Attribute>> {
    match stmt {
        Stmt::Local(local) => Some(&mut local.attrs),
        Stmt::Macro(mac) => Some(&mut mac.attrs),
        Stmt::Item(item) => item_attrs_mut(item),
        Stmt::Expr(expr, _) => expr_attrs_mut(expr),
    }
}

fn expr_attrs_mut(expr: &mut Expr) -> Option<&mut Vec<Attribute>> {
    Some(match expr {
        Expr::Array(e) => &mut e.attrs,
        Expr::Assign(e) => &mut e.attrs,
        Expr::Async(e) => &mut e.attrs,
        Expr::Await(e) => &mut e.attrs,
        Expr::Binary(e) => &mut e.attrs,
        Expr::Block(e) => &mut e.attrs,
        Expr::Break(e) => &mut e.attrs,
        Expr::Call(e) => &mut e.attrs,
        Expr::Cast(e) => &mut e.attrs,
        Expr::Closure(e) => &mut e.attrs,
        Expr::Field(e) => &mut e.attrs,
        Expr::ForLoop(e) => &mut e.attrs,
        Expr::If(e) => &mut e.attrs,
        Expr::Index(e) => &mut e.attrs,
        Expr::Loop(e) => &mut e.attrs,
        Expr::Macro(e) => &mut e.attrs,
        Expr::Match(e) => &mut e.attrs,
        Expr::MethodCall(e) => &mut e.attrs,
        Expr::Paren(e) => &mut e.attrs,
        Expr::Path(e) => &mut e.attrs,
        Expr::Reference(e) => &mut e.attrs,
        Expr::Return(e) => &mut e.attrs,
        Expr::Struct(e) => &mut e.attrs,
        Expr::Try(e) => &mut e.attrs,
        Expr::Tuple(e) => &mut e.attrs,
        Expr::Unary(e) => &mut e.attrs,
        Expr::Unsafe(e) => &mut e.attrs,
        Expr::While(e) => &mut e.attrs,
        _ => return None,
    })
}

fn item_attrs_mut(item: &mut Item) -> Option<&mut Vec<Attribute>> {
    Some(match item {
        Item::Const(i) => &mut i.attrs,
        Item::Enum(i) => &mut i.attrs,
        Item::Fn(i) => &mut i.attrs,
        Item::Impl(i) => &mut i.attrs,
        Item::Macro(i) => &mut i.attrs,
        Item::Mod(i) => &mut i.attrs,
        Item::Static(i) => &mut i.attrs,
        Item::Struct(i) => &mut i.attrs,
        Item::Trait(i) => &mut i.attrs,
        Item::Type(i) => &mut i.attrs,
        Item::Use(i) => &mut i.attrs,
        _ => return None,
    })
}

/// The body of `tokio::select!`, read just far enough to know whether it
/// starts with `biased;` and to check the expressions of its branches:
/// `pattern = future (, if condition)? => handler,` and `else => handler`.
struct Select {
    biased: bool,
    exprs: Vec<Expr>,
}

impl Parse for Select {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let biased = input.peek(syn::Ident) && input.peek2(Token![;]) && {
            let fork = input.fork();
            fork.parse::<syn::Ident>()? == "biased"
        };
        if biased {
            input.parse::<syn::Ident>()?;
            input.parse::<Token![;]>()?;
        }
        let mut exprs = Vec::new();
        while !input.is_empty() {
            if input.peek(Token![else]) {
                input.parse::<Token![else]>()?;
            } else {
                syn::Pat::parse_multi_with_leading_vert(input)?;
                input.parse::<Token![=]>()?;
                exprs.push(input.call(Expr::parse_without_eager_brace)?);
                if input.peek(Token![,]) && input.peek2(Token![if]) {
                    input.parse::<Token![,]>()?;
                    input.parse::<Token![if]>()?;
                    exprs.push(input.call(Expr::parse_without_eager_brace)?);
                }
            }
            input.parse::<Token![=>]>()?;
            let handler: Expr = input.parse()?;
            let is_block = matches!(handler, Expr::Block(_));
            exprs.push(handler);
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
            } else if !input.is_empty() && !is_block {
                return Err(input.error("expected `,` after a `select!` branch"));
            }
        }
        Ok(Select { biased, exprs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str) -> Option<&'static str> {
        rule_for(&syn::parse_str(path).unwrap())
    }

    #[test]
    fn flags_each_unsafe_path() {
        for path in [
            "SystemTime::now",
            "std::time::SystemTime::now",
            "Instant::now",
            "tokio::time::Instant::now",
            "chrono::Utc::now",
            "Local::now",
            "rand::random",
            "rand::thread_rng",
            "thread_rng",
            "rand::rng",
            "Uuid::new_v4",
            "uuid::Uuid::now_v7",
            "tokio::spawn",
            "tokio::task::spawn_blocking",
            "std::thread::spawn",
            "spawn",
            "tokio::time::sleep",
            "sleep",
            "std::thread::sleep",
            "thread::sleep",
            "tokio::time::timeout",
            "std::env::var",
            "env::vars",
            "std::fs::read_to_string",
            "fs::write",
            "tokio::fs::read",
            "File::open",
            "std::fs::File::create",
            "TcpStream::connect",
            "UdpSocket::bind",
            "reqwest::get",
            "std::process::Command::new",
            "JoinSet::new",
            "tokio::task::JoinSet::new",
            "task::JoinSet::from_iter",
        ] {
            assert!(check(path).is_some(), "{path} should be flagged");
        }
    }

    #[test]
    fn leaves_safe_paths_alone() {
        for path in [
            "ctx.current_utc_datetime",
            "Duration::from_secs",
            "Utc",
            "now",
            "Vec::new",
            "String::from",
            "rand::rngs::StdRng::seed_from_u64",
            "Uuid::new_v5",
            "std::env::consts::OS",
            "my_crate::spawn_order",
            "domain::time::sleep",
            "domain::task::spawn",
            "Command::new",
            "File",
            "time::Duration::from_secs",
            "futures::stream::FuturesUnordered::new",
            "futures::future::join_all",
            "futures::future::try_join_all",
            "futures::future::select",
            "my_pool::JoinSet::new",
        ] {
            if let Ok(path) = syn::parse_str::<Path>(path) {
                assert_eq!(
                    rule_for(&path),
                    None,
                    "{} should not be flagged",
                    written(&path)
                );
            }
        }
    }

    #[test]
    fn markers_inside_macro_input_are_removed_and_respected() {
        let mut block: syn::Block = syn::parse_quote!({
            tokio::select! {
                biased;
                _ = timer => {
                    #[durable::nondeterministic]
                    let started = std::time::Instant::now();
                }
            }
        });
        let errors = check_and_strip_markers(&mut block, true);
        assert!(errors.is_empty(), "{}", errors.to_compile_errors());
        let text = quote::quote!(#block).to_string();
        assert!(!text.contains("nondeterministic"), "{text}");
    }

    #[test]
    fn names_the_body_binds_are_the_users() {
        let mut block: syn::Block = syn::parse_quote!({
            let sleep = |d: u64| d;
            let (rand, fs) = (1, 2);
            let spawned = [1, 2].map(|spawn| spawn + sleep(3) + rand + fs);
            tokio::time::sleep(d).await;
        });
        let errors = check_and_strip_markers(&mut block, true);
        let msg = errors.to_compile_errors().to_string();
        assert!(msg.contains("tokio::time::sleep"), "{msg}");
        assert_eq!(msg.matches("not replay-safe").count(), 1, "{msg}");
    }

    #[test]
    fn markers_exempt_their_statement_only() {
        let mut block: syn::Block = syn::parse_quote!({
            #[durable::nondeterministic]
            let started = std::time::Instant::now();
            let now = std::time::SystemTime::now();
        });
        let errors = check_and_strip_markers(&mut block, true);
        let text = errors.to_compile_errors().to_string();
        assert!(text.contains("SystemTime::now"), "{text}");
        assert!(!text.contains("Instant::now"), "{text}");
        assert!(!quote!(#block).to_string().contains("nondeterministic"));
    }

    #[test]
    fn select_needs_biased() {
        let mut unbiased: syn::Block = syn::parse_quote!({
            tokio::select! {
                x = a => x,
                _ = tokio::time::sleep(d) => 0,
            }
        });
        let text = check_and_strip_markers(&mut unbiased, true)
            .to_compile_errors()
            .to_string();
        assert!(text.contains("without `biased;`"), "{text}");
        assert!(text.contains("tokio::time::sleep"), "{text}");

        let mut biased: syn::Block = syn::parse_quote!({
            tokio::select! {
                biased;
                x = a => x,
                else => 1,
            }
        });
        assert!(check_and_strip_markers(&mut biased, true).is_empty());
    }

    #[test]
    fn futures_select_is_always_flagged() {
        let mut block: syn::Block = syn::parse_quote!({
            futures::select! {
                x = a => x,
            }
        });
        let text = check_and_strip_markers(&mut block, true)
            .to_compile_errors()
            .to_string();
        assert!(text.contains("select_biased!"), "{text}");
    }

    #[test]
    fn activities_are_not_linted_but_lose_their_markers() {
        let mut block: syn::Block = syn::parse_quote!({
            #[durable::nondeterministic]
            let now = std::time::SystemTime::now();
            let again = std::time::SystemTime::now();
        });
        assert!(check_and_strip_markers(&mut block, false).is_empty());
        assert!(!quote!(#block).to_string().contains("nondeterministic"));
    }

    #[test]
    fn looks_into_expression_macros() {
        let mut block: syn::Block = syn::parse_quote!({
            println!("{:?}", std::env::var("HOME"));
        });
        assert!(!check_and_strip_markers(&mut block, true).is_empty());
    }
}
