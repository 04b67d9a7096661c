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
