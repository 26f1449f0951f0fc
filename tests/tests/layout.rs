//! The workspace's shape, checked on its source: within each crate the
//! modules import each other without a cycle; `unsafe` appears only in
//! `ntp-udp`, the one crate that calls the kernel (and so holds the only
//! libc dependency); and the crates depend on each other as
//! `docs/architecture.md` draws them. Cargo itself refuses a cycle between
//! packages, so the crate graph needs no check of its own beyond its edges.
//!
//! `LAYOUT_ROOT` points the checks at another checkout (to see them fail on
//! an older tree); by default they read this repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    std::env::var_os("LAYOUT_ROOT").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), PathBuf::from)
}

/// The workspace's crates under `crates/`: name -> directory.
fn crates() -> BTreeMap<String, PathBuf> {
    let dir = root().join("crates");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").exists() {
            found.insert(path.file_name().unwrap().to_string_lossy().into_owned(), path);
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of a library source file (`src/a/b.rs` and
/// `src/a/b/mod.rs` are `a::b`, `src/lib.rs` is the root); `None` for
/// binaries, which are crates of their own.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// The code of a file without its comments (line comments, doc comments)
/// and without its unit tests (a `#[cfg(test)] mod tests` at the end may
/// use any module: that is no dependency of the module itself).
fn code(text: &str) -> String {
    let code = text.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    match code.find("#[cfg(test)]\nmod tests") {
        Some(tests) => code[..tests].to_string(),
        None => code,
    }
}

/// `code` with every `use` group spelled out: `a::{b, c::{d, e}}` becomes
/// `a::b, a::c::d, a::c::e`, so that a path inside braces is seen whole.
fn expand_groups(code: &str) -> String {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut out = code.to_string();
    while let Some(open) = out.find("::{") {
        let prefix_start = out[..open].rfind(|c: char| !ident(c)).map_or(0, |i| i + 1);
        let prefix = out[prefix_start..open].to_string();
        let (mut depth, mut close) = (0usize, None);
        for (i, c) in out[open + 2..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + 2 + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let inner = &out[open + 3..close];
        let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(inner[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(inner[start..].trim().to_string());
        let spelled: Vec<String> = items
            .iter()
            .filter(|item| !item.is_empty())
            .map(|item| if item == "self" { prefix.clone() } else { format!("{prefix}::{item}") })
            .collect();
        out.replace_range(prefix_start..=close, &spelled.join(", "));
    }
    out
}

/// Names the crate root re-exports (`pub use a::b::Name;` in lib.rs) and the
/// module each comes from, so that `crate::Name` counts as an import of `a::b`.
fn root_reexports(src: &Path) -> BTreeMap<String, Vec<String>> {
    let text = expand_groups(&code(&std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default()));
    let mut found = BTreeMap::new();
    for statement in text.split(';') {
        let Some(list) = statement.trim().strip_prefix("pub use ") else { continue };
        for path in list.split(',') {
            let segments: Vec<String> =
                path.trim().trim_start_matches("crate::").split("::").map(|s| s.trim().to_string()).collect();
            if let [module @ .., name] = segments.as_slice() {
                if !module.is_empty() && !name.is_empty() && name != "*" {
                    found.insert(name.clone(), module.to_vec());
                }
            }
        }
    }
    found
}

/// The paths `crate::a::b...` and `super::...::a` used in `code`, resolved
/// against `module`, as segment lists.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !ident(bytes[i - 1]) && bytes[i - 1] != ':';
        if !at_word_start || !ident(bytes[i]) {
            i += 1;
            continue;
        }
        // Read a path a::b::c.
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            segments.push(bytes[start..j].iter().collect::<String>());
            if j + 2 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' && ident(bytes[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        i = j.max(i + 1);
        let resolved = match segments.first().map(String::as_str) {
            Some("crate") => segments[1..].to_vec(),
            Some("super") => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                if ups > module.len() {
                    continue;
                }
                let mut path = module[..module.len() - ups].to_vec();
                path.extend(segments[ups..].iter().cloned());
                path
            }
            _ => continue,
        };
        paths.push(resolved);
    }
    paths
}

/// Module -> modules it imports, within one crate: an edge to a module's
/// own ancestor or descendant (a folder's `mod.rs` and its files) is the
/// same room and left out.
fn module_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: Vec<(Vec<String>, PathBuf)> =
        rust_files(src).into_iter().filter_map(|f| module_of(src, &f).map(|m| (m, f))).collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let reexports = root_reexports(src);
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for mut path in referenced_paths(&expand_groups(&code(&text)), module) {
            // `crate::Name` re-exported by the root is an import of where it lives.
            if let Some(home) = (!module.is_empty()).then(|| path.first().and_then(|n| reexports.get(n))).flatten() {
                path = home.iter().cloned().chain(path.into_iter().skip(1)).collect();
            }
            // The longest prefix of the path that is a module.
            let Some(target) = (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)) else {
                continue;
            };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle of `graph`, if it has one, as the modules along it.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<N: Ord + Clone>(
        node: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        marks: &mut BTreeMap<N, Mark>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let mut cycles = Vec::new();
    for (name, dir) in crates() {
        let graph = module_graph(&dir.join("src"));
        assert!(graph.len() > 1 || name == "ntp-tools", "{name}: no modules found");
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<String> =
                cycle.iter().map(|m| if m.is_empty() { "(root)".into() } else { m.join("::") }).collect();
            cycles.push(format!("{name}: {}", names.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "module import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::from([
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1])),
        (4, BTreeSet::new()),
    ]);
    assert_eq!(find_cycle(&graph), Some(vec![1, 2, 3, 1]));
    let paths = referenced_paths("use crate::a::b; super::super::c::d(); x::crate_y", &["m".into(), "n".into()]);
    assert_eq!(paths, [vec!["a", "b"], vec!["c", "d"]]);
    // Paths inside use groups are seen whole.
    let grouped = expand_groups("use crate::{a::X, b::{c::Y, self}};");
    assert_eq!(referenced_paths(&grouped, &[]), [vec!["a", "X"], vec!["b", "c", "Y"], vec!["b"]]);
}

#[test]
fn only_ntp_udp_holds_unsafe_code_and_libc() {
    let mut found = Vec::new();
    for (name, dir) in crates() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        if name != "ntp-udp" && manifest.lines().any(|l| l.trim_start().starts_with("libc")) {
            found.push(format!("{name}/Cargo.toml depends on libc"));
        }
        for file in rust_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            // `#![forbid(unsafe_code)]` says the opposite, and is welcome.
            if name != "ntp-udp" && text.replace("#![forbid(unsafe_code)]", "").contains("unsafe") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "unsafe code or libc outside ntp-udp:\n{}", found.join("\n"));
}

#[test]
fn crates_depend_on_each_other_as_the_architecture_says() {
    // (crate, what it must not depend on)
    let forbidden: [(&str, &[&str]); 6] = [
        ("ntp-proto", &["ntp-udp", "ntp-client", "ntp-daemon", "ntp-sim", "ntp-plot", "tokio", "libc"]),
        ("ntp-udp", &["ntp-client", "ntp-daemon", "ntp-sim", "ntp-plot"]),
        ("ntp-plot", &["ntp-proto", "ntp-udp", "tokio"]),
        ("ntp-sim", &["ntp-udp", "ntp-client", "ntp-daemon", "tokio"]),
        ("ntp-client", &["ntp-daemon", "ntp-sim", "ntp-plot"]),
        ("ntp-tools", &["ntp-daemon", "ntp-sim"]),
    ];
    let crates = crates();
    let mut wrong = Vec::new();
    for (name, bad) in forbidden {
        let manifest = std::fs::read_to_string(crates[name].join("Cargo.toml")).unwrap();
        let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let dependencies = dependencies.split("\n[").next().unwrap_or("");
        for line in dependencies.lines() {
            let dependency = line.split(['.', '=', ' ']).next().unwrap_or("");
            if bad.contains(&dependency) {
                wrong.push(format!("{name} depends on {dependency}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
