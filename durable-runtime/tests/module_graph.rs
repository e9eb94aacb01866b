//! durable-runtime's modules form a ladder: no module depends, directly or
//! through others, on a module that depends on it.
//!
//! The check reads the crate's source (production code only: comments and
//! `#[cfg(test)]` modules are left out), finds every `crate::`, `super::`
//! and `self::` path in `use` declarations and in code, follows `pub use`
//! re-exports to the module that defines the item, and looks for a cycle
//! among the resulting file-to-file dependencies, and for a dependency that
//! climbs the ladder of docs/design.md. `mod` declarations, and `pub use`
//! re-exports of a module's own descendants (or anything, from the crate
//! root), are the crate's façade, not dependencies.

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

/// The text with comments and the contents of string and character
/// literals blanked out (line breaks kept), so neither can be taken for code.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j - i + 1));
            i = j + 1;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str(&" ".repeat(e - i + 1));
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The file's code without comments and without its `#[cfg(test)]` items.
fn production_code(text: &str) -> String {
    let text = blank_comments_and_literals(text);
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut cfg_test = false;
    for code in text.lines() {
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

/// Expands a use tree (`a::{b, c::{d, e as f}}`) into flat paths; a
/// renamed import keeps its new name after ` as `.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split_whitespace().collect::<Vec<_>>().join(" ")];
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
            if p == "self" || p.starts_with("self as ") {
                format!("{prefix}{}", &p[4..])
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
            // A macro (`crate::conformance_tests!`) is exported at the root
            // and expands where it is invoked: not a module dependency.
            if bytes.get(end) == Some(&b'!') {
                continue;
            }
            // `$crate::$name` in a macro: the item is not named here.
            if end == at + start.len() {
                continue;
            }
            out.push(code[at..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Paths through this module's child modules (`child::item`) used in code.
fn child_paths(module: &Module, modules: &BTreeSet<Module>, code: &str) -> Vec<String> {
    modules
        .iter()
        .filter(|child| child.len() == module.len() + 1 && child.starts_with(module))
        .flat_map(|child| paths_after(code, child.last().unwrap()))
        .collect()
}

/// Paths in code that start with `name::`.
fn paths_after(code: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}::");
    let mut out = Vec::new();
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

/// The ladder of docs/design.md ("The module map of durable-runtime"):
/// each module's rung, by its top-level module.
fn rung(m: &Module) -> u8 {
    match m.first().map(String::as_str) {
        Some("history" | "codec" | "app_state" | "versioning" | "trace") => 1,
        Some("actions" | "failure" | "handler" | "retry" | "entity" | "metrics") => 2,
        Some("context" | "schedule") => 3,
        Some("registry") => 4,
        Some("replay" | "backend" | "observe") => 5,
        Some("error" | "client" | "worker") => 6,
        Some("testing" | "conformance") => 7,
        None => 8, // the crate root only re-exports
        Some(other) => panic!(
            "module `{other}` has no rung: place it on the ladder here and in docs/design.md"
        ),
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
    // (module, use path, the name it is imported as, is `pub use`)
    let mut imports = Vec::new();
    for (module, code) in &parsed {
        let (uses, _) = split_uses(code);
        for (public, written) in uses {
            let (path, alias) = match written.split_once(" as ") {
                Some((path, alias)) => (path.trim().to_string(), alias.trim().to_string()),
                None => {
                    let last = written.rsplit("::").next().unwrap().to_string();
                    (written.clone(), last)
                }
            };
            let Some(abs) = absolute(module, &path, &modules) else {
                continue;
            };
            if public && alias != "_" && alias != "*" && !modules.contains(&abs) {
                krate
                    .reexports
                    .insert((module.clone(), alias.clone()), abs.clone());
            }
            imports.push((module.clone(), abs, alias, public));
        }
    }

    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut add = |from: &Module, to: Module| {
        if to != *from {
            edges.entry(from.clone()).or_default().insert(to);
        }
    };
    // Module aliases a file imports (`use super::transition;`), by name.
    let mut aliases: BTreeMap<Module, BTreeMap<String, Module>> = BTreeMap::new();
    for (module, abs, alias, public) in &imports {
        let target = krate.defining_module(abs.clone());
        // A `pub use` of the module's own descendants (or anything, from the
        // crate root) is the façade; any other re-export is a dependency.
        let facade = *public && (module.is_empty() || target.starts_with(module));
        if !facade {
            add(module, target.clone());
        }
        if modules.contains(abs) {
            aliases
                .entry(module.clone())
                .or_default()
                .insert(alias.clone(), abs.clone());
        }
    }
    for (module, code) in &parsed {
        let (_, rest) = split_uses(code);
        let mut referenced: Vec<Vec<String>> = code_paths(&rest)
            .into_iter()
            .chain(child_paths(module, &modules, &rest))
            .filter_map(|p| absolute(module, &p, &modules))
            .collect();
        for (alias, target) in aliases.get(module).into_iter().flatten() {
            for path in paths_after(&rest, alias) {
                let mut abs = target.clone();
                abs.extend(path.split("::").skip(1).map(str::to_string));
                referenced.push(abs);
            }
        }
        for abs in referenced {
            let target = krate.defining_module(abs);
            add(module, target);
        }
    }
    // Every dependency goes to the same rung or a lower one.
    let mut misplaced = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if rung(from) < rung(to) {
                misplaced.push(format!(
                    "{} (rung {}) uses {} (rung {})",
                    name(from),
                    rung(from),
                    name(to),
                    rung(to)
                ));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "dependencies that climb the ladder (see docs/design.md, \"The module map\"):\n  {}",
        misplaced.join("\n  ")
    );

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
            "crate::a::c::e as f",
            "crate::a"
        ]
    );
    let (uses, rest) = split_uses("use crate::x;\npub use y::Z;\nfn f() { crate::q::r(); }\n");
    assert_eq!(
        uses,
        [(false, "crate::x".to_string()), (true, "y::Z".to_string())]
    );
    assert_eq!(code_paths(&rest), ["crate::q::r"]);
    let code = production_code(
        "use a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    let _ = '}';\n}\nfn g() {}\n",
    );
    assert!(
        !code.contains("crate::b") && code.contains("fn g"),
        "{code}"
    );
    let code = production_code(
        "let s = \"// crate::x {\"; // crate::y\nlet c = '{'; let r = r#\"crate::w\"#; crate::z();\n",
    );
    assert_eq!(code_paths(&code), ["crate::z"], "{code}");
    assert_eq!(
        paths_after("transition::apply(x); my_transition::no", "transition"),
        ["transition::apply"]
    );
}
