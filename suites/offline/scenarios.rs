//! Scenario loading. Two corpora pin the format: `bad-scenarios/` (each file says in its header
//! the message the loader must give and where) must be rejected by the loader and by the JSON
//! Schema of `meshcheck schema`; `good-scenarios/` and the shipped `scenarios/` must be accepted
//! by both. The schema side runs the `jsonschema` crate on the file read as YAML 1.2, the way
//! editors read it, and, where `.ci/run` has installed it, check-jsonschema, whose YAML reader
//! (ruamel) and validator (Python jsonschema) share no code with meshcheck's.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use meshcheck::scenario::{
    self, ANNOTATION_KEYWORDS, DEFAULT_SCENARIO, Format, Scenario, ScenarioError, WORDED_KEYWORDS,
};
use serde_json::Value;

use crate::common::root;

const SHIPPED: &[&str] = &["ambient-kind", "ambient-k3d", "existing-cluster", "upgrade-gate"];

/// What a bad scenario's header promises.
struct BadCase {
    path: PathBuf,
    /// A substring of the message (which starts with the field, when there is one).
    expect: String,
    /// Line and column the message names.
    at: String,
    /// `# schema: accepts (…)`: a rule JSON Schema cannot express (it compares two fields).
    schema_accepts: bool,
    /// `# check-jsonschema: skip (…)`: a file that crashes that tool instead of getting a verdict.
    check_jsonschema_skips: bool,
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn bad_cases() -> Vec<BadCase> {
    yaml_files(&root().join("suites/offline/bad-scenarios"))
        .into_iter()
        .map(|path| {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            let header =
                |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string));
            let name = path.display().to_string();
            BadCase {
                expect: header("expect").unwrap_or_else(|| panic!("{name}: no `# expect:` line")),
                at: header("at").unwrap_or_else(|| panic!("{name}: no `# at:` line")),
                schema_accepts: header("schema").is_some_and(|s| s.starts_with("accepts")),
                check_jsonschema_skips: header("check-jsonschema").is_some_and(|s| s.starts_with("skip")),
                path,
            }
        })
        .collect()
}

/// The file as JSON the way an editor validating it sees it: YAML 1.2 types (`yes` is text),
/// duplicate keys and tags refused (they have no JSON meaning), `<<` an ordinary key. `Err` when
/// there is no JSON document to apply the schema to.
fn as_json(path: &Path) -> Result<Value, String> {
    let text = String::from_utf8(std::fs::read(path).unwrap()).map_err(|e| e.to_string())?;
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    options.reject_unsupported_tags = true;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    serde_saphyr::from_str_with_options::<Value>(&text, options).map_err(|e| e.to_string())
}

fn schema_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&scenario::json_schema()).expect("the scenario schema is a valid JSON Schema")
}

#[test]
fn bad_scenarios_are_rejected_by_the_loader_and_the_schema_with_the_expected_message() {
    let validator = schema_validator();
    let cases = bad_cases();
    let mut failures = Vec::new();
    let (mut panics, mut silent, mut wrong_message, mut disagreements, mut loader_only) = (0, 0, 0, 0, 0);
    let mut elsewhere = 0;
    for case in &cases {
        let name = case.path.display().to_string();
        let loaded = std::panic::catch_unwind(|| Scenario::from_path(&case.path));
        match loaded {
            Err(_) => {
                panics += 1;
                failures.push(format!("{name}: the loader panicked"));
            }
            Ok(Ok(_)) => {
                silent += 1;
                failures.push(format!("{name}: the loader accepted it"));
            }
            Ok(Err(e)) => {
                if let ScenarioError::Invalid { field: Some(field), .. } = &e
                    && let Ok(json) = as_json(&case.path)
                    && !validator.is_valid(&json)
                {
                    // The schema must object on the same path: the loader's field, a parent of it
                    // (a missing field) or a part of it (an item of a list).
                    let field = field.replace('.', "/");
                    let paths: Vec<String> = validator
                        .iter_errors(&json)
                        .map(|err| err.instance_path().to_string().trim_start_matches('/').to_string())
                        .collect();
                    let related = |p: &String| {
                        p.is_empty()
                            || field.starts_with(&format!("{p}/"))
                            || *p == field
                            || p.starts_with(&format!("{field}/"))
                    };
                    if !paths.iter().any(related) {
                        elsewhere += 1;
                        failures.push(format!("{name}: the loader names {field}, the schema objects at {paths:?}"));
                    }
                }
                let message = e.to_string();
                let prefix = format!("{name}:{}: ", case.at);
                if !message.starts_with(&prefix) || !message.contains(&case.expect) {
                    wrong_message += 1;
                    failures.push(format!("{name}:\n  got:      {message}\n  expected: {prefix}…{}…", case.expect));
                }
            }
        }
        let schema_accepts = as_json(&case.path).is_ok_and(|json| validator.is_valid(&json));
        if case.schema_accepts {
            loader_only += 1;
        }
        if schema_accepts != case.schema_accepts {
            disagreements += 1;
            let verdict = if schema_accepts { "accepts" } else { "rejects" };
            failures.push(format!("{name}: the JSON Schema {verdict} it, the header says otherwise"));
        }
    }
    eprintln!(
        "bad scenarios: {} files, {panics} panics, {silent} accepted by the loader, {wrong_message} with another \
         message, {disagreements} schema/loader disagreements beyond the {loader_only} documented rules that \
         compare two fields, {elsewhere} rejected by the schema at an unrelated place",
        cases.len()
    );
    assert!(cases.len() >= 100, "the corpus has only {} files", cases.len());
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

fn good_files() -> Vec<PathBuf> {
    let mut files = yaml_files(&root().join("suites/offline/good-scenarios"));
    files.extend(SHIPPED.iter().map(|n| root().join(format!("scenarios/{n}.yaml"))));
    files
}

#[test]
fn good_scenarios_are_accepted_by_the_loader_and_the_schema() {
    let validator = schema_validator();
    let files = good_files();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        if let Err(e) = Scenario::from_path(path) {
            failures.push(format!("loader: {e}"));
        }
        match as_json(path) {
            Ok(json) => {
                let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
                if !errors.is_empty() {
                    failures.push(format!("{name}: schema: {}", errors.join("; ")));
                }
            }
            Err(e) => failures.push(format!("{name}: not readable as JSON: {e}")),
        }
    }
    assert!(files.len() >= 20, "only {} good scenarios", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same two corpora through check-jsonschema, in one run: a second YAML reader and a second
/// validator, so that the schema holds for editors and not only for serde-saphyr and the
/// jsonschema crate. `.ci/run` installs it in target/ci-venv before `cargo test`.
#[test]
fn check_jsonschema_agrees_on_both_corpora() {
    let tool = root().join("target/ci-venv/bin/check-jsonschema");
    if !tool.is_file() {
        crate::common::tool_missing(
            "check_jsonschema_agrees_on_both_corpora",
            &tool.display().to_string(),
            ".ci/run installs it into target/ci-venv; the jsonschema crate half ran",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("scenario.schema.json");
    std::fs::write(&schema, scenario::json_schema().to_string()).unwrap();
    let bad: Vec<BadCase> = bad_cases().into_iter().filter(|c| !c.check_jsonschema_skips).collect();
    let good = good_files();
    let out = std::process::Command::new(&tool)
        .arg("--schemafile")
        .arg(&schema)
        .args(["-o", "json"])
        .args(bad.iter().map(|c| &c.path))
        .args(&good)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check-jsonschema said: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    let rejected: std::collections::BTreeSet<&str> = ["errors", "parse_errors"]
        .iter()
        .flat_map(|k| report[k].as_array().into_iter().flatten())
        .filter_map(|e| e["filename"].as_str())
        .collect();
    let mut disagreements: Vec<String> = bad
        .iter()
        .filter(|c| rejected.contains(c.path.to_str().unwrap()) == c.schema_accepts)
        .map(|c| format!("{}: check-jsonschema disagrees with the header", c.path.display()))
        .collect();
    disagreements.extend(
        good.iter()
            .filter(|p| rejected.contains(p.to_str().unwrap()))
            .map(|p| format!("{}: check-jsonschema rejects it", p.display())),
    );
    eprintln!("check-jsonschema: {} files, {} disagreements", bad.len() + good.len(), disagreements.len());
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Strings near each format's edges: seeds from both sides, then every single-character edit of
/// them and a few thousand seeded random edits (a fixed xorshift, so every run tests the same).
fn candidates(format: Format) -> Vec<String> {
    let digest = "452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f";
    let mut seeds: Vec<String> = match format {
        Format::Name => vec!["a".into(), "ambient-kind".into(), "a".repeat(30), "a".repeat(31), "A".into(), "".into()],
        Format::ChartVersion | Format::IstioVersion | Format::GatewayApiVersion => [
            "1.19.6",
            "v1.5.1",
            "1.30.3",
            "1.24.0",
            "1.23.9",
            "1.100.0",
            "0.0.0",
            "1.31.0-rc.1",
            "1.2.3+b.5",
            "1.2.3-x+y",
            "1.2.3-",
            "01.2.3",
            "999999999.1.1",
            "1000000000.1.1",
            "1.2",
            "1.2.3.4",
            "2.30.0",
        ]
        .map(String::from)
        .to_vec(),
        Format::Duration => {
            let mut d: Vec<String> = [
                "1s",
                "90s",
                "10m",
                "1h",
                "1h30m",
                "1h05m10s",
                "1m30s",
                "168h",
                "169h",
                "10080m",
                "10081m",
                "604800s",
                "604801s",
                "167h59m59s",
                "168h0m",
                "10079m59s",
                "10080m0s",
                "0s",
                "05m",
                "500ms",
                "1h1s",
                "1h60m",
                "1m60s",
                "10s5m",
                "5m5m",
                "1.5h",
                "15",
                "m",
            ]
            .map(String::from)
            .to_vec();
            for unit in ["h", "m", "s"] {
                d.extend((0..=200).map(|n| format!("{n}{unit}")));
            }
            d
        }
        Format::KindNodeImage | Format::K3sNodeImage | Format::KubernetesMinors(..) => vec![
            format!("kindest/node:v1.35.0@sha256:{digest}"),
            format!("mirror.example:5000/x/kindest/node:v1.32.9@sha256:{digest}"),
            format!("localhost:5000/a__b/c.d/e--f/kindest/node:v1.35.0@sha256:{digest}"),
            format!("-bad.example/kindest/node:v1.35.0@sha256:{digest}"),
            format!("a..b/kindest/node:v1.35.0@sha256:{digest}"),
            format!("host:/kindest/node:v1.35.0@sha256:{digest}"),
            format!("ex_ample.com/kindest/node:v1.35.0@sha256:{digest}"),
            format!("mirrors/kindest/node:v1.35.0@sha256:{digest}"),
            "rancher/k3s:v1.35.5-k3s1".into(),
            format!("rancher/k3s:v1.31.0-k3s12@sha256:{digest}"),
            "rancher/k3s:v1.35.5+k3s1".into(),
            "kindest/node:v1.35.0".into(),
            format!("kindest/node:v1.36.0@sha256:{digest}"),
            format!("kindest/node:v1.28.1@sha256:{digest}"),
        ],
        Format::Url => {
            vec!["https://quay.io/".into(), "http://127.0.0.1:8080".into(), "ftp://x".into(), "http://".into()]
        }
        Format::ServiceRef => vec![
            "monitoring/prom-prometheus:9090".into(),
            "istio-system/prometheus:9090".into(),
            "monitoring/kube-prometheus-stack-prometheus:65535".into(),
            "a/b:1".into(),
            "9ns/svc:80".into(),
            "ns/9svc:80".into(),
            "ns/svc-:80".into(),
            "ns/svc:0".into(),
            "ns/svc:65536".into(),
            "ns/svc:080".into(),
            "ns/svc".into(),
            "svc:80".into(),
            format!("{}/svc:80", "n".repeat(63)),
            format!("{}/svc:80", "n".repeat(64)),
            format!("ns/s{}:80", "v".repeat(62)),
            format!("ns/s{}:80", "v".repeat(63)),
        ],
        Format::IstioMinor(_) => {
            vec!["1.30.3".into(), "1.29.0".into(), "1.3.0".into(), "1.300.0".into(), "v1.30.3".into()]
        }
    };
    let alphabet: Vec<char> = "0123456789.-+:/@abhkmsvxAV _".chars().collect();
    let mut edits = Vec::new();
    for seed in &seeds {
        let chars: Vec<char> = seed.chars().collect();
        for i in 0..=chars.len() {
            if i < chars.len() {
                edits.push(chars[..i].iter().chain(&chars[i + 1..]).collect::<String>());
            }
            for c in &alphabet {
                edits.push(chars[..i].iter().chain([c]).chain(&chars[i..]).collect::<String>());
            }
        }
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let seed: Vec<char> = seeds[next() as usize % seeds.len()].chars().collect();
        let mut s = seed.clone();
        for _ in 0..(1 + next() % 3) {
            let i = next() as usize % (s.len() + 1);
            match next() % 3 {
                0 if i < s.len() => {
                    s.remove(i);
                }
                1 if i < s.len() => s[i] = alphabet[next() as usize % alphabet.len()],
                _ => s.insert(i, alphabet[next() as usize % alphabet.len()]),
            }
        }
        edits.push(s.into_iter().collect());
    }
    seeds.extend(edits);
    seeds.sort();
    seeds.dedup();
    seeds
}

#[test]
fn every_format_check_agrees_with_its_schema_pattern() {
    let mut disagreements = Vec::new();
    let mut tried = 0;
    for format in Format::all() {
        let validator =
            jsonschema::validator_for(&serde_json::json!({ "type": "string", "pattern": format.pattern() }))
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        for text in candidates(format) {
            tried += 1;
            let by_pattern = validator.is_valid(&Value::String(text.clone()));
            let by_check = format.check(&text);
            if by_pattern != by_check.is_ok() {
                disagreements.push(format!("{format:?} `{text}`: pattern {by_pattern}, check {by_check:?}"));
            }
        }
    }
    eprintln!("format agreement: {tried} strings, {} disagreements", disagreements.len());
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// Every keyword the schema uses is one whose failures the loader words, or a pure annotation,
/// and every pattern is one a [`Format`] generated; so no failure reaches a user in the
/// validator's generic words.
#[test]
fn the_loader_words_every_keyword_and_pattern_of_the_schema() {
    fn walk(schema: &Value, at: &str, problems: &mut Vec<String>) {
        let Value::Object(map) = schema else { return };
        for (key, value) in map {
            let here = format!("{at}/{key}");
            if !WORDED_KEYWORDS.contains(&key.as_str()) && !ANNOTATION_KEYWORDS.contains(&key.as_str()) {
                problems.push(format!("{here}: keyword whose failures the loader does not word"));
            }
            match key.as_str() {
                "properties" | "$defs" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        walk(sub, &format!("{here}/{name}"), problems);
                    }
                }
                "allOf" | "anyOf" | "oneOf" => {
                    for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                        walk(sub, &format!("{here}/{i}"), problems);
                    }
                }
                "items" | "additionalProperties" | "propertyNames" | "if" | "then" | "else" | "not" | "contains" => {
                    walk(value, &here, problems)
                }
                "pattern" if Format::for_pattern(value.as_str().unwrap_or_default()).is_none() => {
                    problems.push(format!("{here}: no Format generates this pattern"));
                }
                _ => {}
            }
        }
    }
    let mut problems = Vec::new();
    walk(&scenario::json_schema(), "#", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every field path of the schema, `cluster.node_image` style.
fn field_paths(schema: &Value, node: &Value, prefix: &str, out: &mut Vec<String>) {
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(r) => schema.pointer(r.trim_start_matches('#')).unwrap(),
        None => node,
    };
    let node = node.get("anyOf").and_then(|a| a.get(0)).map_or(node, |first| {
        first.get("$ref").and_then(Value::as_str).map_or(first, |r| schema.pointer(r.trim_start_matches('#')).unwrap())
    });
    for (name, sub) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        out.push(path.clone());
        field_paths(schema, sub, &path, out);
    }
}

#[test]
fn readme_reference_names_every_field_and_its_examples_load() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("## Scenario reference").expect("README has a `## Scenario reference` section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let schema = scenario::json_schema();
    let mut paths = Vec::new();
    field_paths(&schema, &schema, "", &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !section.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "the Scenario reference does not describe {missing:?}");
    let examples: Vec<&str> = section.split("```yaml\n").skip(1).map(|b| &b[..b.find("```").unwrap()]).collect();
    assert!(examples.len() >= 3, "the reference has {} YAML examples", examples.len());
    for example in examples {
        if let Err(e) = Scenario::from_yaml(example, "README example") {
            panic!("{e}\n{example}");
        }
    }
}

/// README's check table is the catalog's: each check's row says its stage, default, effect and
/// what it asserts, word for word, and no row names a check the catalog lacks.
#[test]
fn readme_check_table_is_the_catalog() {
    use meshcheck::common::catalog::{CATALOG, Effect};
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("## The checks").expect("README has a `## The checks` section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let expected: Vec<String> = CATALOG
        .iter()
        .map(|c| {
            let stage = serde_json::to_value(c.stage).unwrap();
            let effect = match c.effect {
                Effect::Reads => "reads",
                Effect::Mutates => "changes the mesh",
                Effect::Measures => "measures, alone",
            };
            let default = if c.default_on { "yes" } else { "no" };
            format!("| `{}` | {} | {default} | {effect} | {} |", c.name, stage.as_str().unwrap(), c.asserts)
        })
        .collect();
    assert_eq!(rows, expected.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn embedded_default_is_the_ambient_kind_file() {
    let file = std::fs::read_to_string(root().join("scenarios/ambient-kind.yaml")).unwrap();
    assert_eq!(file, DEFAULT_SCENARIO);
    assert_eq!(Scenario::embedded_default().name, "ambient-kind");
}

#[test]
fn versions_default_to_the_embedded_pins_so_changing_istio_is_one_line() {
    let pins = Scenario::embedded_default().versions;
    let bare = Scenario::from_yaml("name: x\nprovider: existing\nexisting: {}\n", "x.yaml").unwrap();
    assert_eq!(serde_json::to_value(&bare.versions).unwrap(), serde_json::to_value(&pins).unwrap());
    let one_line =
        Scenario::from_yaml("name: x\nprovider: existing\nexisting: {}\nversions: {istio: 1.29.2}\n", "x.yaml")
            .unwrap();
    assert_eq!(one_line.versions.istio, "1.29.2");
    assert_eq!(one_line.versions.bookinfo(), "1.29.2");
    assert_eq!(
        (one_line.versions.cilium.as_str(), one_line.versions.kiali.as_str()),
        (pins.cilium.as_str(), pins.kiali.as_str())
    );
    let schema = scenario::json_schema();
    let defaults: BTreeMap<String, Value> = schema["$defs"]["Versions"]["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.get("default")?.clone())))
        .collect();
    assert_eq!(defaults["istio"], pins.istio.as_str(), "the schema shows the embedded pins as defaults");
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let text = format!("name: x\nprovider: existing\nexisting: {{}}\ndescription: {}\n", "x".repeat(70 * 1024));
    let err = Scenario::from_yaml(&text, "big.yaml").unwrap_err().to_string();
    assert!(err.starts_with("big.yaml:1:1: the file is 70 KiB"), "{err}");
}

/// Issue 26: a file is read only up to the limit (plus one byte), so a huge file or an endless
/// one (`/dev/zero`) is refused at once instead of read into memory.
#[test]
fn an_endless_or_huge_scenario_file_is_refused_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(8 << 20)).unwrap();
    for path in [Path::new("/dev/zero"), big.as_path()] {
        let err = Scenario::from_path(path).unwrap_err().to_string();
        assert!(err.contains(":1:1: the file is larger than 64 KiB"), "{err}");
    }
}

#[test]
fn missing_file_says_which_path_was_tried() {
    let err = Scenario::from_path(Path::new("no/such/scenario.yaml")).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains("no/such/scenario.yaml"), "{err}");
}

#[test]
fn cli_exits_2_on_bad_input_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\nprovider: kind\nbogus: 1\n").unwrap();
    for args in [vec!["plan", "--scenario", bad.to_str().unwrap()], vec!["plan", "--scenario", "/nonexistent.yaml"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn json_schema_lists_every_field_and_check() {
    let text = scenario::json_schema().to_string();
    for needle in ["upgrade_to", "node_image", "negative_control", "traffic-continuity", "mtls"] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}

#[test]
fn the_longest_duration_plans_without_overflow() {
    let text = DEFAULT_SCENARIO.replace("provision: 15m", "provision: 168h").replace("check: 5m", "check: 168h");
    let s = Scenario::from_yaml(&text, "x.yaml").unwrap();
    assert_eq!(s.timeouts.provision, scenario::Span::MAX);
    let _ = meshcheck::plan::build(&s, &meshcheck::plan::RunContext::for_plan());
}

#[test]
fn run_ids_started_in_the_same_second_differ() {
    let ids: std::collections::BTreeSet<String> = (0..50).map(|_| meshcheck::run::new_run_id()).collect();
    assert_eq!(ids.len(), 50, "{ids:?}");
    let id = ids.iter().next().unwrap();
    assert!(id.len() == "20261126-000000-abcdef".len() && id.as_bytes()[15] == b'-', "{id}");
}

#[test]
fn settle_scale_scales_the_fixed_waits() {
    let text = DEFAULT_SCENARIO.replace("  preflight: 20s\n", "  preflight: 20s\n  settle_scale: 0.5\n");
    let s = Scenario::from_yaml(&text, "x.yaml").unwrap();
    assert_eq!(s.settle(std::time::Duration::from_secs(30)), std::time::Duration::from_secs(15));
    assert_eq!(Scenario::embedded_default().settle(std::time::Duration::from_secs(30)).as_secs(), 30);
}

#[test]
fn mirrors_replace_the_longest_matching_prefix() {
    let s = Scenario::from_path(&root().join("suites/offline/good-scenarios/mirrors.yaml")).unwrap();
    assert_eq!(
        s.mirrored("https://quay.io/v2/cilium/cilium/manifests/v1"),
        "https://mirror.example/cilium/cilium/manifests/v1"
    );
    assert_eq!(s.mirrored("https://quay.io/v2/x/manifests/1"), "https://mirror.example/quay.io/v2/x/manifests/1");
    assert_eq!(s.mirrored("https://registry.istio.io/v2/x"), "https://registry.istio.io/v2/x");
}

/// Issue 25, item 3 (the per-step part): a scenario's step rules replace the defaults one step at
/// a time; the steps it leaves out keep theirs, and the gateway has none unless given.
#[test]
fn step_rules_merge_over_the_defaults() {
    let text = "name: x\nprovider: existing\nexisting: {}\ntraffic:\n  step_min_success:\n    ztunnel: 0.99\n    istio-ingress: 0.5\n";
    let s = meshcheck::scenario::Scenario::from_yaml(text, "x").unwrap();
    let rules: Vec<(String, f64)> = s.traffic.step_rules().into_iter().collect();
    let expect: Vec<(String, f64)> =
        [("istio-base", 1.0), ("istio-cni", 1.0), ("istio-ingress", 0.5), ("istiod", 1.0), ("ztunnel", 0.99)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    assert_eq!(rules, expect);
    let plain = meshcheck::scenario::Scenario::from_yaml("name: x\nprovider: existing\nexisting: {}\n", "x").unwrap();
    assert!(!plain.traffic.step_rules().contains_key("istio-ingress"));
}
