//! The import graph of `harness/` against the layers drawn at the top of `harness/lib.rs`: every
//! `crate::` import must point to a lower layer, so the graph is acyclic and the drawing is true.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::root;

/// The layer of each module, from the numbered list in lib.rs's doc comment.
fn declared_layers() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(root().join("harness/lib.rs")).unwrap();
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! ") else { continue };
        let Some((number, rest)) = item.split_once(". ") else { continue };
        let Ok(layer) = number.parse::<usize>() else { continue };
        let modules = rest.split_once(':').map_or(rest, |(m, _)| m);
        for m in modules.split(',') {
            layers.insert(m.trim().to_string(), layer);
        }
    }
    layers
}

/// The modules a source file imports through `crate::` (outside comments and its test module).
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c::{d, e}, f}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

fn first_segment(path: &str) -> String {
    path.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Each module of the library with the imports of all its files: `harness/<m>.rs` and every file
/// under `harness/<m>/` count as module `m` (the binary under `harness/bin/` is not a module).
fn modules() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("harness")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() && stem != "bin" {
            for sub in std::fs::read_dir(&path).unwrap() {
                files.push((stem.clone(), sub.unwrap().path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
            files.push((stem, path));
        }
    }
    for (module, path) in files {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut deps = imports(&std::fs::read_to_string(&path).unwrap());
        deps.remove(&module);
        out.entry(module).or_default().extend(deps);
    }
    out
}

#[test]
fn every_import_points_to_a_lower_layer() {
    let layers = declared_layers();
    let modules = modules();
    let undeclared: Vec<&String> = modules.keys().filter(|m| !layers.contains_key(*m)).collect();
    assert!(undeclared.is_empty(), "modules missing from the layer list in harness/lib.rs: {undeclared:?}");
    let mut wrong = Vec::new();
    for (module, deps) in &modules {
        for dep in deps {
            match layers.get(dep) {
                Some(d) if *d < layers[module] => {}
                Some(d) => wrong.push(format!("{module} (layer {}) imports {dep} (layer {d})", layers[module])),
                None => wrong.push(format!("{module} imports {dep}, which is not in the layer list")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers drawn in harness/lib.rs:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_reader_sees_grouped_nested_and_inline_imports() {
    let source = "use crate::{a::X, b::{self, Y}, c};\nfn f() { crate::d::g(); } // crate::ignored\n#[cfg(test)]\nmod tests { use crate::e; }";
    let found: Vec<String> = imports(source).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
}

#[test]
fn a_back_edge_is_caught() {
    let layers = declared_layers();
    assert!(layers["common"] < layers["report"], "common is a leaf below report");
    assert!(layers["plan"] < layers["cluster"], "the plan is data the cluster stage carries out");
    assert!(
        imports("use crate::report::junit;").contains("report"),
        "an import of report from common would be reported"
    );
}

/// The `.rs` files directly in a folder, without `mod.rs` (the folder's own module).
fn sibling_files(dir: &std::path::Path) -> BTreeMap<String, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "rs") && stem != "mod" {
            out.insert(stem, path);
        }
    }
    out
}

/// The sibling files a file imports: `super::x` and `crate::<folder>::x` where `x.rs` is a file
/// beside it. An item reached through a re-export of the folder's `mod.rs` is not seen.
fn sibling_imports(
    source: &str,
    folder_path: &str,
    siblings: &BTreeMap<String, std::path::PathBuf>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in ["super::".to_string(), format!("{folder_path}::")] {
        let renamed = source.replace(&prefix, "crate::");
        found.extend(imports(&renamed).into_iter().filter(|m| siblings.contains_key(m)));
    }
    found
}

/// A cycle in a graph of file names, if there is one, as the path that closes it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The folders whose files must not import each other in a circle, with the path by which their
/// files name the folder (`crate::run`, `crate::sim`).
fn folders_without_cycles() -> Vec<(std::path::PathBuf, String)> {
    let mut out = vec![(root().join("suites/sim"), "crate::sim".to_string())];
    for entry in std::fs::read_dir(root().join("harness")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            out.push((path, format!("crate::{name}")));
        }
    }
    out
}

#[test]
fn no_two_files_of_a_folder_import_each_other_in_a_circle() {
    let mut cycles = Vec::new();
    for (dir, folder_path) in folders_without_cycles() {
        let siblings = sibling_files(&dir);
        let graph: BTreeMap<String, BTreeSet<String>> = siblings
            .iter()
            .map(|(name, path)| {
                let mut deps = sibling_imports(&std::fs::read_to_string(path).unwrap(), &folder_path, &siblings);
                deps.remove(name);
                (name.clone(), deps)
            })
            .collect();
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!("{}: {}", dir.strip_prefix(root()).unwrap().display(), cycle.join(" → ")));
        }
    }
    assert!(cycles.is_empty(), "files that import each other in a circle:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_finder_sees_a_circle_between_two_files() {
    let siblings: BTreeMap<String, std::path::PathBuf> =
        [("apiserver", "a.rs"), ("services", "b.rs")].map(|(k, v)| (k.to_string(), v.into())).into();
    let a = sibling_imports("use super::services::Kiali;", "crate::sim", &siblings);
    let b = sibling_imports("use crate::sim::apiserver::Shared;", "crate::sim", &siblings);
    let graph = BTreeMap::from([("apiserver".to_string(), a), ("services".to_string(), b)]);
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(3), "apiserver → services → apiserver");
}

/// Every `.rs` file under a folder, recursively.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Most lines a file of `harness/` may have: past it, a file carries more than its name says.
const MAX_FILE_LINES: usize = 600;

#[test]
fn no_file_of_the_harness_is_over_600_lines() {
    let long: Vec<String> = rust_files(&root().join("harness"))
        .into_iter()
        .filter_map(|p| {
            let lines = std::fs::read_to_string(&p).unwrap().lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} ({lines} lines)", p.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines: {long:?}");
}

/// The functions of a source file with their length in lines, from the `fn` line to the line of its
/// closing brace. Braces in strings and comments are rare enough in this code to ignore.
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let Some(at) = code.find("fn ") else { continue };
        let before = code[..at].trim();
        let is_item = before.is_empty()
            || before
                .split_whitespace()
                .all(|w| ["pub", "pub(crate)", "pub(super)", "async", "const", "unsafe"].contains(&w));
        if !is_item || code.trim_end().ends_with(';') {
            continue;
        }
        let name: String = code[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let (mut depth, mut opened) = (0i64, false);
        for (i, l) in lines[start..].iter().enumerate() {
            let l = l.split("//").next().unwrap_or_default();
            depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
            opened |= l.contains('{');
            if opened && depth <= 0 {
                out.push((name.clone(), i + 1));
                break;
            }
        }
    }
    out
}

/// Most lines a function of the executor and the plan may have.
const MAX_FUNCTION_LINES: usize = 60;

#[test]
fn no_function_of_the_executor_or_the_plan_is_over_60_lines() {
    let mut long = Vec::new();
    for folder in ["harness/run", "harness/plan"] {
        for path in rust_files(&root().join(folder)) {
            for (name, lines) in function_lengths(&std::fs::read_to_string(&path).unwrap()) {
                if lines > MAX_FUNCTION_LINES {
                    long.push(format!("{}: {name} ({lines} lines)", path.strip_prefix(root()).unwrap().display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FUNCTION_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_function_measure_counts_from_fn_to_its_closing_brace() {
    let source = "pub async fn a() {\n    if x {\n    }\n}\nfn b() -> u8 { 1 }\n";
    assert_eq!(function_lengths(source), [("a".to_string(), 4), ("b".to_string(), 1)]);
}
