//! durable-runtime's modules form a ladder: no module depends, directly or
//! through others, on a module that depends on it.
//!
//! The check reads the crate's source (production code only: comments and
//! `#[cfg(test)]` modules are left out), finds every `crate::`, `super::`
//! and `self::` path in `use` declarations and in code, follows `pub use`
//! re-exports to the module that defines the item, and looks for a cycle
//! among the resulting file-to-file dependencies. `mod` declarations and
//! `pub use` re-exports themselves are the crate's façade, not dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without comments and without its `#[cfg(test)]` items.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut cfg_test = false;
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let trimmed = code.trim();
        if skip_depth.is_none() && trimmed == "#[cfg(test)]" {
            cfg_test = true;
            continue;
        }
        if cfg_test && skip_depth.is_none() && !trimmed.is_empty() {
            cfg_test = false;
            if trimmed.ends_with(';') {
                continue; // `mod tests;`: a file of its own, found by name
            }
            skip_depth = Some(depth);
        }
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into flat paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return vec![path.to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut level, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand_use)
        .map(|p| {
            if p == "self" {
                prefix.to_string()
            } else if prefix.is_empty() {
                p
            } else {
                format!("{prefix}::{p}")
            }
        })
        .collect()
}

/// `use` declarations: (is `pub use`, flat paths), and the code without them.
fn split_uses(code: &str) -> (Vec<(bool, String)>, String) {
    let mut uses = Vec::new();
    let mut rest = String::new();
    let mut remaining = code;
    while let Some(i) = find_use(remaining) {
        rest.push_str(&remaining[..i]);
        let decl = &remaining[i..];
        let end = decl.find(';').unwrap();
        let text = &decl[..end];
        let public = text.starts_with("pub");
        let tree = text[text.find("use ").unwrap() + 4..].to_string();
        for path in expand_use(&tree) {
            uses.push((public, path));
        }
        remaining = &decl[end + 1..];
    }
    rest.push_str(remaining);
    (uses, rest)
}

fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let before = code[..at].trim_end();
        let line_start = before.is_empty() || before.ends_with(['\n', ';', '{', '}']);
        if line_start
            || before.ends_with("pub")
            || before.ends_with("pub(crate)")
            || before.ends_with("pub(super)")
        {
            let start = if before.ends_with(')') || before.ends_with("pub") {
                before.rfind("pub").unwrap()
            } else {
                at
            };
            return Some(start);
        }
        from = at + 4;
    }
    None
}

/// `crate::`, `super::` and `self::` paths used in code.
fn code_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let prev = at.checked_sub(1).map(|p| bytes[p] as char);
            from = at + start.len();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut end = at;
            while end < code.len() {
                let c = bytes[end] as char;
                if c.is_alphanumeric() || c == '_' || c == ':' {
                    end += 1;
                } else {
                    break;
                }
            }
            out.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Paths through this module's child modules (`child::item`) used in code.
fn child_paths(module: &Module, modules: &BTreeSet<Module>, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for child in modules {
        if child.len() != module.len() + 1 || !child.starts_with(module) {
            continue;
        }
        let prefix = format!("{}::", child.last().unwrap());
        for (at, _) in code.match_indices(&prefix) {
            let prev = code[..at].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Resolves a path as written in `module` to (module, item) segments from the root.
fn absolute(module: &Module, path: &str, modules: &BTreeSet<Module>) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Module = match segs.first().copied() {
        Some("crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some("super") | Some("self") => module.clone(),
        Some(first) => {
            // A relative path names a child module of this one (`mod x; use x::Y`).
            let mut child = module.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            module.clone()
        }
        None => return None,
    };
    while let Some(&s) = segs.first() {
        match s {
            "super" => {
                base.pop();
                segs.remove(0);
            }
            "self" => {
                segs.remove(0);
            }
            _ => break,
        }
    }
    base.extend(segs.iter().map(|s| s.to_string()));
    Some(base)
}

struct Crate {
    modules: BTreeSet<Module>,
    /// (module, item name) -> the path the module re-exports it from.
    reexports: BTreeMap<(Module, String), Vec<String>>,
}

impl Crate {
    /// The module that defines what `path` names.
    fn defining_module(&self, mut path: Vec<String>) -> Module {
        for _ in 0..16 {
            let mut module = path.clone();
            while !module.is_empty() && !self.modules.contains(&module) {
                module.pop();
            }
            let Some(item) = path.get(module.len()) else {
                return module;
            };
            match self.reexports.get(&(module.clone(), item.clone())) {
                Some(target) => {
                    let mut next = target.clone();
                    next.extend(path[module.len() + 1..].iter().cloned());
                    path = next;
                }
                None => return module,
            }
        }
        panic!("re-exports of {path:?} do not end");
    }
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

#[test]
fn durable_runtime_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut parsed = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        // Test-only files (`#[cfg(test)] mod tests;`) are not production code.
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        modules.insert(module.clone());
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        parsed.push((module, code));
    }
    assert!(modules.len() > 10, "found only {modules:?} under {src:?}");

    let mut krate = Crate {
        modules: modules.clone(),
        reexports: BTreeMap::new(),
    };
    let mut uses_of = Vec::new();
    for (module, code) in &parsed {
        let (uses, rest) = split_uses(code);
        for (public, path) in &uses {
            let Some(abs) = absolute(module, path, &modules) else {
                continue;
            };
            if *public {
                let item = abs.last().unwrap().clone();
                if !modules.contains(&abs) {
                    krate.reexports.insert((module.clone(), item), abs);
                }
            }
        }
        uses_of.push((module.clone(), uses, rest));
    }

    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, uses, rest) in &uses_of {
        let referenced = uses
            .iter()
            .filter(|(public, _)| !public)
            .map(|(_, p)| p.clone())
            .chain(code_paths(rest))
            .chain(child_paths(module, &modules, rest));
        for path in referenced {
            let Some(abs) = absolute(module, &path, &modules) else {
                continue;
            };
            let target = krate.defining_module(abs);
            if target != *module {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // Sanity: the check sees real dependencies.
    let replay = vec!["replay".to_string()];
    assert!(
        edges
            .get(&replay)
            .is_some_and(|e| e.contains(&vec!["registry".to_string()])),
        "the check lost the replay -> registry dependency: {edges:?}"
    );

    // Depth-first search for a cycle.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|s| s == m).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(m.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            let shown: Vec<String> = cycle.iter().map(name).collect();
            let graph: Vec<String> = edges
                .iter()
                .map(|(from, to)| {
                    let to: Vec<String> = to.iter().map(name).collect();
                    format!("  {} -> {}", name(from), to.join(", "))
                })
                .collect();
            panic!(
                "durable-runtime has an import cycle: {}\nthe module graph:\n{}",
                shown.join(" -> "),
                graph.join("\n")
            );
        }
    }
}

#[test]
fn use_trees_expand() {
    assert_eq!(
        expand_use("crate::a::{b, c::{d, e as f}, self}"),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a"
        ]
    );
    let (uses, rest) = split_uses("use crate::x;\npub use y::Z;\nfn f() { crate::q::r(); }\n");
    assert_eq!(
        uses,
        [(false, "crate::x".to_string()), (true, "y::Z".to_string())]
    );
    assert_eq!(code_paths(&rest), ["crate::q::r"]);
    let code =
        production_code("use a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\nfn g() {}\n");
    assert!(
        !code.contains("crate::b") && code.contains("fn g"),
        "{code}"
    );
}
