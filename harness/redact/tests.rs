//! The redaction corpus (`corpus/`, one shape per file; its README gives the format): every secret
//! of every shape is gone, every harmless phrase next to it stays.

use std::path::{Path, PathBuf};

use super::{REDACTED, redact, redact_argv};

/// One shape of the corpus in `corpus/` (its README gives the format).
struct Shape {
    file: String,
    secrets: Vec<String>,
    keeps: Vec<String>,
    argv: bool,
    json: bool,
    body: String,
}

fn corpus() -> Vec<Shape> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/redact/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let (header, body) = text
                .strip_prefix("---\n")
                .map(|body| ("", body))
                .or_else(|| text.split_once("\n---\n"))
                .unwrap_or_else(|| panic!("{}: no `---` line", path.display()));
            let mut shape = Shape {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                secrets: Vec::new(),
                keeps: Vec::new(),
                argv: false,
                json: false,
                body: body.to_string(),
            };
            for line in header.lines() {
                match line.split_once(": ") {
                    Some(("secret", v)) => shape.secrets.push(v.to_string()),
                    Some(("keep", v)) => shape.keeps.push(v.to_string()),
                    Some(("unit", "argv")) => shape.argv = true,
                    Some(("json", "true")) => shape.json = true,
                    _ => panic!("{}: header line `{line}` is not understood", path.display()),
                }
            }
            shape
        })
        .collect()
}

fn redacted(shape: &Shape) -> String {
    if shape.argv {
        let argv: Vec<String> = shape.body.lines().map(String::from).collect();
        redact_argv(&argv).join("\n")
    } else {
        redact(&shape.body)
    }
}

/// Every secret of every shape is gone, every harmless phrase next to it stays, JSON stays JSON,
/// and redacting twice changes nothing. All shapes are checked before the test fails, so one run
/// shows every leak.
#[test]
fn corpus_secrets_are_gone_and_harmless_text_stays() {
    let corpus = corpus();
    let mut problems = Vec::new();
    let mut secrets = 0;
    let mut leaked = 0;
    for shape in &corpus {
        let out = redacted(shape);
        for secret in &shape.secrets {
            secrets += 1;
            if out.contains(secret.as_str()) {
                leaked += 1;
                problems.push(format!("{}: secret `{secret}` leaked", shape.file));
            }
        }
        for keep in &shape.keeps {
            if !out.contains(keep.as_str()) {
                problems.push(format!("{}: harmless `{keep}` was removed", shape.file));
            }
        }
        if shape.secrets.is_empty() && out != shape.body {
            problems.push(format!("{}: a negative control was changed", shape.file));
        }
        if !shape.secrets.is_empty() && !out.contains(REDACTED) {
            problems.push(format!("{}: nothing was marked redacted", shape.file));
        }
        if shape.json && serde_json::from_str::<serde_json::Value>(&out).is_err() {
            problems.push(format!("{}: no longer JSON", shape.file));
        }
        if !shape.argv && redact(&out) != out {
            problems.push(format!("{}: redacting twice changes the text", shape.file));
        }
        if !problems.is_empty() && problems.last().is_some_and(|p| p.starts_with(shape.file.as_str())) {
            problems.push(format!("{}: redacted text was:\n{out}", shape.file));
        }
    }
    eprintln!("redaction corpus: {} shapes, {secrets} secrets, {leaked} leaked", corpus.len());
    assert!(corpus.len() >= 20, "the corpus holds {} shapes, at least 20 are wanted", corpus.len());
    assert!(corpus.iter().any(|s| s.secrets.is_empty()), "the corpus lacks a negative control");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The per-line cases of the issue, each on its own so a failure names it.
#[test]
fn the_shapes_the_issue_names_are_redacted() {
    for (text, secret) in [
        ("PASSWORD=issue-pw-1", "issue-pw-1"),
        ("run --password issue-pw-2 now", "issue-pw-2"),
        ("run --token issue-tok-3 now", "issue-tok-3"),
        ("--set grafana.adminPassword=issue-pw-4", "issue-pw-4"),
        ("adminPassword=issue-pw-5", "issue-pw-5"),
        ("Authorization: Basic aXNzdWUtYmFzaWMtNg==", "aXNzdWUtYmFzaWMtNg=="),
        ("aws_secret_access_key = issue-aws-7", "issue-aws-7"),
        ("token: issue-first-8 password: issue-second-9", "issue-second-9"),
        ("TOKEN=issue-first-10 PASSWORD=issue-second-11", "issue-second-11"),
        ("Password: issue-case-12", "issue-case-12"),
    ] {
        let out = redact(text);
        assert!(!out.contains(secret), "`{text}` kept its secret: {out}");
    }
}

/// A secret flag's value given as an argument of its own goes too; `redact` on each argument
/// alone could not see it.
#[test]
fn argv_values_after_secret_flags_are_redacted() {
    let argv: Vec<String> =
        ["docker", "login", "--password", "s3cr3t", "--username", "ci", "-p", "8080:80"].map(String::from).into();
    let out = redact_argv(&argv);
    assert_eq!(out, ["docker", "login", "--password", REDACTED, "--username", "ci", "-p", "8080:80"]);
    assert!(argv.iter().map(|a| redact(a)).any(|a| a == "s3cr3t"), "per-argument redaction cannot see it");
}

/// Lines are remembered per thread ([`super::engine`]): a text redacted where every line was met
/// before (in other texts, other states) comes out as it does on a thread that met none of them.
/// The env var's `value` below was remembered as harmless at rest, and the `data` line outside a
/// Secret; after a secret `name`, and in a Secret, they are not.
#[test]
fn remembered_lines_redact_as_fresh_ones() {
    let env = "env:\n- name: DB_PASSWORD\n  value: hunter2-memo\n".to_string();
    let secret = "kind: Secret\ndata: {\"config\": \"in-a-secret-memo\"}\n".to_string();
    let mut texts: Vec<String> = corpus().iter().filter(|s| !s.argv).map(|s| s.body.clone()).collect();
    texts.extend([env, secret]);
    texts.push(texts.concat());
    let fresh: Vec<String> = texts
        .iter()
        .map(|t| {
            let t = t.clone();
            std::thread::spawn(move || redact(&t)).join().unwrap()
        })
        .collect();
    let warm = std::thread::spawn(move || {
        for harmless in ["  value: hunter2-memo\n", "data: {\"config\": \"in-a-secret-memo\"}\n"] {
            assert_eq!(redact(harmless), harmless, "harmless alone");
        }
        texts.iter().chain(texts.iter()).map(|t| redact(t)).collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let (first, second) = warm.split_at(fresh.len());
    assert_eq!(first, fresh.as_slice());
    assert_eq!(second, fresh.as_slice());
    assert!(!fresh[fresh.len() - 3].contains("hunter2-memo"), "{}", fresh[fresh.len() - 3]);
    assert!(!fresh[fresh.len() - 2].contains("in-a-secret-memo"), "{}", fresh[fresh.len() - 2]);
}
