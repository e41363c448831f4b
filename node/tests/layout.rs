//! The node's layout stays layered: no import circles between its modules, at any level of
//! the tree; and no module of the workspace over 600 lines of code without a reason at its
//! top.
//!
//! Every file is a module (`metadata/model.rs` is `metadata::model`, `formats/oci.rs` and
//! `formats/oci/` are `formats::oci`). A path a file names (`crate::metadata::model::X`,
//! `super::Txn`) is an edge from the file's module to the module it names; two modules that
//! share a parent make an edge between their ancestors just below that parent, so the check
//! holds among the top-level modules, among the modules inside `metadata/`, and so on. A
//! submodule reaching its parent is part of the parent and does not count; test code
//! (`#[cfg(test)] mod tests`) may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(root)
        .expect("under src")
        .with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file, without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` and `super::…::a…` path in `text`, as its segments.
fn paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut found = Vec::new();
    for (start, base) in [("crate::", true), ("super::", false)] {
        let mut rest = text;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segments = Vec::new();
            if !base {
                segments.push("super".to_string());
            }
            let mut tail = rest;
            loop {
                let len = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if len == 0 {
                    break;
                }
                segments.push(tail[..len].to_string());
                tail = &tail[len..];
                match tail.strip_prefix("::") {
                    Some(next) => tail = next,
                    None => break,
                }
            }
            found.push((base, segments));
        }
    }
    found
}

struct Tree {
    modules: BTreeSet<Module>,
    /// `pub use a::b;` of a module: `parent::b` names `parent::a::b`.
    aliases: BTreeMap<Module, Module>,
}

impl Tree {
    fn resolve(&self, path: &[String]) -> Option<Module> {
        (1..=path.len()).rev().find_map(|n| {
            let prefix = path[..n].to_vec();
            self.aliases
                .get(&prefix)
                .cloned()
                .or_else(|| self.modules.contains(&prefix).then_some(prefix))
        })
    }
}

#[test]
fn no_module_imports_one_that_imports_it_back_at_any_level() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let texts: BTreeMap<Module, String> = files
        .iter()
        .map(|f| {
            (
                module_of(&root, f),
                std::fs::read_to_string(f).expect("read"),
            )
        })
        // Test modules kept in their own file (`chunk_store/tests.rs`) are test code too.
        .filter(|(module, _)| module.last().map(String::as_str) != Some("tests"))
        .collect();
    let mut modules: BTreeSet<Module> = texts.keys().cloned().collect();
    for module in texts.keys() {
        for n in 1..module.len() {
            modules.insert(module[..n].to_vec());
        }
    }
    let mut aliases = BTreeMap::new();
    for (module, text) in &texts {
        for line in text.lines() {
            let Some(target) = line
                .strip_prefix("pub use ")
                .and_then(|l| l.strip_suffix(';'))
            else {
                continue;
            };
            let mut full = module.clone();
            full.extend(target.split("::").map(str::to_string));
            if modules.contains(&full) {
                let mut alias = module.clone();
                alias.push(full.last().cloned().unwrap_or_default());
                aliases.insert(alias, full);
            }
        }
    }
    let tree = Tree { modules, aliases };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, text) in &texts {
        for (from_crate, segments) in paths(&code(text)) {
            let target = if from_crate {
                tree.resolve(&segments)
            } else {
                let mut parent: Module = module[..module.len().saturating_sub(1)].to_vec();
                let mut rest = &segments[..];
                while rest.first().map(String::as_str) == Some("super") {
                    rest = &rest[1..];
                    if rest.first().map(String::as_str) == Some("super") {
                        parent.pop();
                    }
                }
                let mut full = parent.clone();
                full.extend(rest.iter().cloned());
                tree.resolve(&full).or(Some(parent))
            };
            let Some(target) = target else { continue };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // a module and its own submodule
            }
            edges
                .entry(module[..=common].to_vec())
                .or_default()
                .insert(target[..=common].to_vec());
        }
    }
    // A circle among siblings is a path from a module back to itself through siblings.
    let mut circles = Vec::new();
    for (from, targets) in &edges {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<Module>> = targets.iter().map(|t| vec![t.clone()]).collect();
        while let Some(route) = stack.pop() {
            let last = route.last().expect("non-empty").clone();
            if last == *from {
                circles.push(
                    std::iter::once(from.join("::"))
                        .chain(route.iter().map(|m| m.join("::")))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                );
                break;
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            for next in edges.get(&last).into_iter().flatten() {
                let mut longer = route.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn modules_over_600_lines_say_why_at_their_top() {
    // Every crate of the workspace, not only this one.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in [
        "proto",
        "raft",
        "replication",
        "node",
        "cli",
        "chaos",
        "benches",
    ] {
        source_files(&workspace.join(krate).join("src"), &mut files);
    }
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let lines = code(&text).lines().count();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if lines > 600 && !header.contains("longer than") {
            long.push(format!("{} ({lines} lines of code)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "modules over 600 lines whose header does not say why it is longer than the others:\n{}",
        long.join("\n")
    );
}
