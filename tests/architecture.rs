//! The crate's layering, checked on its source text so that it cannot drift:
//!
//! - The graph of the library's top-level modules (edges: `crate::x` paths in
//!   code, `use crate::{x, y}` groups, and uses of the root's re-exports) has
//!   no cycle, and every edge points down the layers
//!   `leaf <- dialect <- handle <- repository <- tool`:
//!   leaf types (`backend`, `error`, `config`, `keys`, `models`, `validate`,
//!   `types`, `migrate`) <- dialects (`sqlite`, `postgres`) <- handle and
//!   dispatch (`db`, `exec`, `tx`) <- repositories (`repo`) <- tools
//!   (`tools`). A dialect imports only leaf modules.
//! - SQL lives only in `src/sqlite/` and `src/postgres/`: no string literal
//!   outside them (tests aside) starts a statement.
//! - No library source file is over 500 lines and no function over 80 lines,
//!   except the ones listed here with the reason the decision ledger gives.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layer of each top-level module of the library; lower is more basic.
const LAYERS: &[(&str, u8)] = &[
    ("backend", 0),
    ("error", 0),
    ("config", 0),
    ("keys", 0),
    ("models", 0),
    ("validate", 0),
    ("types", 0),
    ("migrate", 0),
    ("observe", 0),
    ("sqlite", 1),
    ("postgres", 1),
    ("db", 2),
    ("exec", 2),
    ("tx", 2),
    ("health", 2),
    ("replicas", 2),
    ("repo", 3),
    ("tools", 4),
];

/// Files allowed over the size caps, with the reason (see the ledger).
const LONG_FILES: &[(&str, &str)] = &[];
const LONG_FUNCTIONS: &[(&str, &str)] = &[
    // A table of cases: one arm per kind of schema object compared.
    ("src/tools/compare.rs", "compare_table"),
];

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (the binary's `main.rs` and `cli/` excluded).
fn library_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "cli") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "main.rs")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out.sort();
    out
}

/// The top-level module a file belongs to (`None` for `lib.rs`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "lib.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which module defines each name the crate root re-exports
/// (`pub use error::{Error, Result}` gives `Error -> error`, ...).
fn root_reexports() -> BTreeMap<String, String> {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let lib = code(&lib);
    let mut out = BTreeMap::new();
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module = rest
            .split("::")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let items = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => rest[a + 1..b].to_string(),
            _ => rest.rsplit("::").next().unwrap_or_default().to_string(),
        };
        for item in items.split(',') {
            let name = item.split(" as ").last().unwrap_or_default().trim();
            if !name.is_empty() {
                out.insert(name.to_string(), module.clone());
            }
        }
    }
    out
}

/// The top-level modules `code` refers to through `crate::`.
fn references(code: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let modules: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each
            // top-level item of the group.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            names.push(item);
        } else {
            names.push(rest.to_string());
        }
    }
    names
        .iter()
        .filter_map(|n| {
            let first: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(first.as_str()) {
                Some(first)
            } else {
                reexports.get(&first).cloned()
            }
        })
        .collect()
}

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/architecture.rs"))
}

/// Edges between distinct top-level modules, with a file that makes each.
fn module_graph() -> BTreeMap<(String, String), PathBuf> {
    let reexports = root_reexports();
    let mut edges = BTreeMap::new();
    for path in library_files() {
        let Some(from) = top_module(&path) else {
            continue;
        };
        let text = fs::read_to_string(&path).expect("read source");
        for to in references(&code(&text), &reexports) {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| path.clone());
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    for path in library_files() {
        if let Some(m) = top_module(&path) {
            layer(&m);
        }
    }
}

#[test]
fn module_edges_point_down_the_layers_and_dialects_import_only_leaves() {
    let edges = module_graph();
    assert!(!edges.is_empty(), "the checker found no edge at all");
    let mut wrong = Vec::new();
    for ((from, to), file) in &edges {
        let (lf, lt) = (layer(from), layer(to));
        let dialect_rule = lf == 1 && lt != 0;
        if lt > lf || dialect_rule {
            wrong.push(format!("{from} -> {to} (in {})", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "edges against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn module_graph_is_acyclic() {
    let edges = module_graph();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    // Depth-first search with colours: 1 = on the stack, 2 = done.
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        colour.insert(n, 1);
        stack.push(n);
        for &m in next.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            match colour.get(m) {
                Some(1) => {
                    let start = stack.iter().position(|x| *x == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m);
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, next, colour, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        colour.insert(n, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for (n, _) in LAYERS {
        if !colour.contains_key(n) {
            if let Some(cycle) = visit(n, &next, &mut colour, &mut Vec::new()) {
                panic!("module cycle: {}", cycle.join(" -> "));
            }
        }
    }
}

/// The checker sees grouped imports and root re-exports, so it can fail.
#[test]
fn the_reference_reader_sees_every_form() {
    let reexports = BTreeMap::from([("Db".to_string(), "db".to_string())]);
    let refs = references(
        "use crate::{error::Error, sqlite::{self, tx}, Db};\nlet x = crate::tools::copy::copy;",
        &reexports,
    );
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    assert_eq!(refs, ["db", "error", "sqlite", "tools"]);
}

const STATEMENT_WORDS: &[&str] = &[
    "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "BEGIN", "COMMIT", "ROLLBACK", "CREATE ", "DROP ",
    "ALTER ", "PRAGMA ", "VACUUM", "SET ", "SHOW ", "WITH ",
];

#[test]
fn sql_lives_only_in_the_dialect_folders() {
    let mut found = Vec::new();
    for path in library_files() {
        let m = top_module(&path).unwrap_or_default();
        if m == "sqlite" || m == "postgres" {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read source");
        for (n, line) in code(&text).lines().enumerate() {
            for literal in line.split('"').skip(1).step_by(2) {
                let lit = literal.trim_start();
                if STATEMENT_WORDS.iter().any(|w| lit.starts_with(w)) {
                    found.push(format!("{}:{}: \"{literal}\"", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/sqlite and src/postgres:\n{}",
        found.join("\n")
    );
}

#[test]
fn files_and_functions_stay_small() {
    let mut over = Vec::new();
    for path in library_files() {
        let rel = path
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(&path).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        // Functions are measured in library code, not in test modules.
        let library_lines = if rel.ends_with("tests.rs") {
            0
        } else {
            lines
                .iter()
                .position(|l| l.trim() == "#[cfg(test)]")
                .unwrap_or(lines.len())
        };
        if lines.len() > MAX_FILE_LINES && !LONG_FILES.iter().any(|(f, _)| *f == rel) {
            over.push(format!("{rel}: {} lines", lines.len()));
        }
        for (i, line) in lines.iter().enumerate().take(library_lines) {
            let t = line.trim_start();
            let indent = &line[..line.len() - t.len()];
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) async fn ",
                "pub(super) async fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn || t.ends_with(';') {
                continue;
            }
            let name: String = t
                .split("fn ")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let close = format!("{indent}}}");
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.trim_end() == close)
                .map_or(lines.len(), |p| i + 1 + p);
            let len = end - i + 1;
            if len > MAX_FN_LINES && !LONG_FUNCTIONS.iter().any(|(f, n)| *f == rel && *n == name) {
                over.push(format!("{rel}: fn {name}: {len} lines"));
            }
        }
    }
    assert!(over.is_empty(), "over the size caps:\n{}", over.join("\n"));
}

/// The decision ledger's index lists every entry, in order, with the later
/// entries that amend it (an AMENDMENT entry names the ones it changes).
#[test]
fn ledger_index_lists_every_entry_and_its_amendments() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DECISION_LEDGER.md");
    let text = fs::read_to_string(path).expect("read the ledger");
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## D-"))
        .map(|rest| rest.split_once(' ').unwrap_or((rest, "")))
        .collect();
    assert!(
        entries.len() > 50,
        "the checker found {} entries",
        entries.len()
    );
    let mut amended: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (num, title) in &entries {
        if let Some(rest) = title.strip_prefix("AMENDMENT to ") {
            let targets = rest.split(':').next().unwrap_or_default();
            for word in targets.split(|c: char| !c.is_ascii_alphanumeric() && c != '-') {
                if let Some(n) = word.strip_prefix("D-") {
                    amended
                        .entry(n.to_string())
                        .or_default()
                        .push(format!("D-{num}"));
                }
            }
        }
    }
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| D-")).collect();
    assert_eq!(rows.len(), entries.len(), "one index row per entry");
    for ((num, _), row) in entries.iter().zip(&rows) {
        assert!(
            row.starts_with(&format!("| D-{num} |")),
            "index out of order at D-{num}: {row}"
        );
        let want = match amended.get(*num) {
            Some(by) => format!("in force, amended by {} |", by.join(", ")),
            None => "in force |".to_string(),
        };
        assert!(
            row.ends_with(&want),
            "D-{num}: index says {row}, expected ...{want}"
        );
    }
}
