//! The import graph among the library's top-level modules (`src/X.rs` and
//! everything under `src/X/`): printed, and checked for cycles. A cycle ties
//! behaviour in a circle (nothing in it can be understood or tested alone),
//! so each edge that closes one must be listed below with its reason: one
//! that carries no behaviour (a type or a constant named across), or one
//! that is known and waits for its fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Submodules read as nodes of their own: (module, submodule, why).
const SPLIT: &[(&str, &str, &str)] = &[(
    "rpc",
    "methods",
    "rpc holds two layers: the wire format (message, json, error, notifications, table), \
     which nearly every module uses, and the method handlers (methods/), which use nearly \
     every module",
)];

/// Edges that close a cycle but carry no behaviour: (from, to, why).
const NO_BEHAVIOUR: &[(&str, &str, &str)] = &[
    (
        "config",
        "tasks",
        "config names the type of `[tasks] process_tree` (tasks::tree::TreeMode) and the \
         longest task timeout (tasks::MAX_TIMEOUT_S): a type and a constant",
    ),
    (
        "config",
        "transport",
        "config names the default frame size and TLS port (transport::DEFAULT_MAX_FRAME, \
         transport::tls::DEFAULT_PORT): two constants",
    ),
];

/// Edges that close a cycle and carry behaviour, known and waiting for
/// their fix: (from, to, what is to be done).
const PENDING: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The library's top-level modules, as `lib.rs` declares them.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

/// The nodes of the graph: the top-level modules, and the submodules `SPLIT` names.
fn nodes() -> Vec<String> {
    let mut nodes = modules();
    for (module, sub, _) in SPLIT {
        assert!(
            nodes.iter().any(|m| m == module),
            "SPLIT names `{module}`, not a module"
        );
        nodes.push(format!("{module}::{sub}"));
    }
    nodes
}

/// Every `.rs` file of node `name` (a module without its split-off submodules).
fn files(name: &str) -> Vec<PathBuf> {
    let rel = name.replace("::", "/");
    let split_off: Vec<PathBuf> = SPLIT
        .iter()
        .filter(|(module, _, _)| *module == name)
        .map(|(module, sub, _)| src().join(module).join(sub))
        .collect();
    let mut found = Vec::new();
    let file = src().join(format!("{rel}.rs"));
    if file.is_file() {
        found.push(file);
    }
    let mut dirs = vec![src().join(&rel)];
    // Bounded: a source tree is finite, and each directory is visited once.
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if split_off.iter().any(|p| path.starts_with(p)) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The top-level modules a file names through `crate::` paths (in `use`
/// declarations, groups like `crate::{a, b::c}`, and inline paths), with
/// comments left out.
fn references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // The leading name of each top-level item of the group.
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        found.insert(node_at(&group[i..]));
                        item_start = false;
                    }
                    c if item_start && !c.is_whitespace() => item_start = false,
                    _ => {}
                }
            }
        } else {
            let name = node_at(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The node a path starting at `text` names: its first segment, or
/// `module::sub` for a submodule `SPLIT` names.
fn node_at(text: &str) -> String {
    let first = ident(text);
    for (module, sub, _) in SPLIT {
        if first == *module
            && let Some(rest) = text[first.len()..].strip_prefix("::")
            && ident(rest) == *sub
        {
            return format!("{module}::{sub}");
        }
    }
    first
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn graph() -> Graph {
    let modules = nodes();
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut graph = Graph::new();
    for module in &modules {
        let mut deps = BTreeSet::new();
        // A submodule may use its parent (`super::`).
        if let Some((parent, _)) = module.split_once("::") {
            deps.insert(parent.to_owned());
        }
        for file in files(module) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for name in references(&text) {
                if name != *module && known.contains(name.as_str()) {
                    deps.insert(name);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn references_are_read_from_paths_groups_and_not_comments() {
    let text = "use crate::a::B;\nuse crate::{c, d::{E, F}, e as g};\nfn f() { crate::h::call(); }\n\
                // crate::comment\nmacro_rules! m { () => { $crate::i } }\nlet x = other_crate::j;\n\
                use crate::rpc::methods::X; use crate::{rpc::methodsx, rpc::json};";
    let found: Vec<String> = references(text).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "e", "h", "rpc", "rpc::methods"]);
}

#[test]
fn the_module_graph_has_no_cycle_that_is_not_accounted_for() {
    let graph = graph();
    println!("The import graph among src/ modules (module -> what it names):");
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("  {module} -> {}", deps.join(" "));
    }
    let listed: Vec<(&str, &str, &str)> = NO_BEHAVIOUR.iter().chain(PENDING).copied().collect();
    for (from, to, why) in &listed {
        assert!(
            graph.get(*from).is_some_and(|d| d.contains(*to)),
            "{from} -> {to} is listed ({why}) but no longer exists: remove it from the list"
        );
        assert!(!why.trim().is_empty(), "{from} -> {to} needs its reason");
    }
    let mut pruned = graph.clone();
    for (from, to, _) in &listed {
        if let Some(deps) = pruned.get_mut(*from) {
            deps.remove(*to);
        }
    }
    let left = cycles(&pruned);
    let described: Vec<String> = left
        .iter()
        .map(|component| {
            let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    pruned[from]
                        .iter()
                        .filter(|to| inside.contains(to.as_str()))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            format!("{{{}}} via {}", component.join(", "), edges.join(", "))
        })
        .collect();
    assert!(
        left.is_empty(),
        "import cycles among src/ modules:\n  {}\nbreak each (a leaf module for what both sides need, \
         or a trait the lower side defines), or list an edge with its reason",
        described.join("\n  ")
    );
    // Every listed edge is needed: without it, its cycle is back.
    for (from, to, why) in &listed {
        let mut without = pruned.clone();
        without
            .get_mut(*from)
            .map(|d| d.insert((*to).to_owned()))
            .expect("a listed module");
        assert!(
            !cycles(&without).is_empty(),
            "{from} -> {to} ({why}) closes no cycle any more: remove it from the list"
        );
    }
}
