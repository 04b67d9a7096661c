//! Security of the report (issue 14): no secret reaches the run folder, and `judge` reads nothing
//! outside the run folder it is given. The redaction engine's own corpus tests are beside it, in
//! `harness/redact/tests.rs`.

use std::path::{Path, PathBuf};

use meshcheck::{
    evidence::{Escape, Evidence, EvidenceError, Outcome, Verdict},
    redact::redact,
    report::{self, RunRecord, TrialResult},
};

fn object(json: serde_json::Value) -> kube::api::DynamicObject {
    serde_json::from_value(json).unwrap()
}

fn recorded(dir: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(dir.join("manifests")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).unwrap()
}

/// A Secret's values are replaced before it is serialized, whatever the keys are called (`api`
/// matches no secret word), including the copy `kubectl apply` keeps in an annotation; its keys
/// and name stay. A ConfigMap's data is evidence and stays.
#[test]
fn record_manifest_blanks_secret_values_structurally() {
    let dir = tempfile::tempdir().unwrap();
    let secret = object(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-creds", "namespace": "book-info", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"api\":\"bGFzdC1hcHBsaWVk\"}}"}},
        "data": {"api": "c3RydWN0LWFwaQ==", "ca.crt": "c3RydWN0LWNh"},
        "stringData": {"config": "url=https://db\nkey=struct-plain"}
    }));
    meshcheck::evidence::record_manifest(dir.path(), &secret, None).unwrap();
    let text = recorded(dir.path());
    for value in ["c3RydWN0LWFwaQ==", "c3RydWN0LWNh", "struct-plain", "bGFzdC1hcHBsaWVk"] {
        assert!(!text.contains(value), "{value} leaked:\n{text}");
    }
    for kept in ["\"api\"", "\"ca.crt\"", "\"config\"", "\"name\": \"db-creds\""] {
        assert!(text.contains(kept), "{kept} is missing:\n{text}");
    }
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "no longer JSON:\n{text}");

    let dir = tempfile::tempdir().unwrap();
    let config = object(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"},
        "data": {"mesh": "defaultConfig:\n  discoveryAddress: istiod:15012"}
    }));
    meshcheck::evidence::record_manifest(dir.path(), &config, Some("istio-system")).unwrap();
    assert!(recorded(dir.path()).contains("discoveryAddress: istiod:15012"));
}

/// Real upstream outputs (pods, config dumps, metrics, Kiali and Prometheus responses, Bookinfo
/// manifests) are what meshcheck records: the lines redaction touches there measure its false
/// positives on real data. The only lines it may touch are Kiali's own config keys that do name
/// secrets (Kiali already prints `xxx` for them).
#[test]
fn real_upstream_outputs_lose_only_secret_values() {
    let Some(up) = crate::common::upstream() else { return };
    let secret_keys = ["\"clientSecret\" :", "\"password\" :", "\"token\" :"];
    let mut changed = 0;
    let mut lines = 0;
    let mut wrong = Vec::new();
    for sub in ["observed", "bookinfo"] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(up.join(sub)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let out = redact(&text);
            lines += text.lines().count();
            for (before, after) in text.lines().zip(out.lines()).filter(|(b, a)| b != a) {
                changed += 1;
                if !secret_keys.iter().any(|k| before.trim_start().starts_with(k)) {
                    wrong.push(format!("{}:\n  {before}\n  {after}", file.display()));
                }
            }
        }
    }
    eprintln!("real upstream outputs: {lines} lines, {changed} redacted, {} of them not a secret", wrong.len());
    assert!(wrong.is_empty(), "redaction changed harmless lines of real outputs:\n{}", wrong.join("\n"));
}

// ----- judge stays inside the run folder -----

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

const KIALI_STATUS: &[u8] = br#"{"status":{"Kiali state":"running","Kiali version":"v2.29.0"}}"#;

/// A Kiali graph with the three edges the kiali check wants; `prefix` names its nodes.
fn kiali_graph(prefix: &str) -> Vec<u8> {
    let node = |id: &str, w: &str| serde_json::json!({"data": {"id": id, "workload": format!("{prefix}{w}")}});
    let edge = |s: &str, t: &str| serde_json::json!({"data": {"source": s, "target": t, "isMTLS": "100"}});
    serde_json::to_vec(&serde_json::json!({"elements": {
        "nodes": [node("a", "productpage-v1"), node("b", "details-v1"), node("c", "reviews-v2"), node("d", "ratings-v1")],
        "edges": [edge("a", "b"), edge("a", "c"), edge("c", "d")]}}))
    .unwrap()
}

/// Writes passing Kiali evidence into `dir`.
fn kiali_evidence(dir: &Path, prefix: &str) {
    std::fs::create_dir_all(dir.join("kiali")).unwrap();
    std::fs::write(dir.join("kiali/status.json"), KIALI_STATUS).unwrap();
    std::fs::write(dir.join("kiali/graph-book-info.json"), kiali_graph(prefix)).unwrap();
}

#[cfg(unix)]
#[test]
fn evidence_reads_refuse_paths_that_leave_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("evidence");
    kiali_evidence(&root, "");
    std::fs::write(dir.path().join("outside.json"), b"{}").unwrap();
    symlink(dir.path().join("outside.json"), root.join("kiali/escape.json"));
    symlink("status.json", root.join("kiali/alias.json"));
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    std::fs::write(dir.path().join("elsewhere/x.json"), b"{}").unwrap();
    symlink(dir.path().join("elsewhere"), root.join("linked"));
    let ev = Evidence::new(&root);

    let outside = |r: Result<Vec<u8>, EvidenceError>| {
        matches!(r, Err(EvidenceError::Refused { why: Escape::Outside { .. }, .. }))
    };
    assert!(outside(ev.read_bytes("kiali/escape.json")), "a symlinked file leading out");
    assert!(outside(ev.read_bytes("linked/x.json")), "a file under a symlinked folder leading out");
    assert!(matches!(ev.read_bytes("../outside.json"), Err(EvidenceError::Refused { why: Escape::NotBelow, .. })));
    let absolute = dir.path().join("outside.json").display().to_string();
    assert!(matches!(ev.read_bytes(&absolute), Err(EvidenceError::Refused { why: Escape::NotBelow, .. })));
    assert!(!ev.exists("../outside.json"));
    // A symlink that stays inside is fine, and so are plain files.
    assert_eq!(ev.read_bytes("kiali/alias.json").unwrap(), KIALI_STATUS);
    assert!(ev.read_json::<serde_json::Value>("kiali/status.json").is_ok());
    assert!(matches!(ev.read_bytes("kiali/none.json"), Err(EvidenceError::Missing(_))));
    // Listings show the symlinked folder, so reading under it fails by name, not silently.
    assert!(ev.subdirs("").contains(&"linked".to_string()));
    let v: Verdict = ev.read_bytes("kiali/escape.json").unwrap_err().into();
    assert_eq!(v.outcome, Outcome::Error);
    assert!(v.reason.contains("kiali/escape.json refused") && v.reason.contains("outside"), "{}", v.reason);
}

fn trial(suite: &str, root: &str) -> TrialResult {
    TrialResult {
        suite: suite.into(),
        name: "kiali".into(),
        verdict: Verdict::pass("recorded"),
        duration_secs: 1.0,
        started_at: "2026-11-25T00:00:00Z".into(),
        evidence_root: Some(root.into()),
        collected: true,
    }
}

/// `judge` on a run folder whose record points out of it. Choice: each offending trial becomes an
/// `error` verdict naming the refusal, rather than the whole judge failing with bad input, so one
/// bad entry neither hides the verdicts that can be reproduced nor passes; the overall outcome is
/// `error` and the exit code 1. Refused evidence is also kept out of the summary's graph.
#[cfg(unix)]
#[test]
fn judge_refuses_evidence_outside_the_run_folder() {
    let base = tempfile::tempdir().unwrap();
    let run = base.path().join("run");
    kiali_evidence(&run.join("evidence"), "");
    // Passing evidence outside the run folder, reachable by `..`, an absolute path and symlinks.
    let outside = base.path().join("outside/evidence");
    kiali_evidence(&outside, "outside-");
    symlink(&outside, run.join("linked"));
    let escaping = run.join("escaping");
    std::fs::create_dir_all(escaping.join("kiali")).unwrap();
    std::fs::write(escaping.join("kiali/status.json"), KIALI_STATUS).unwrap();
    symlink(outside.join("kiali/graph-book-info.json"), escaping.join("kiali/graph-book-info.json"));
    // The summary's graph must not be drawn from outside either.
    let graph_link = base.path().join("run-graph");
    kiali_evidence(&graph_link.join("evidence"), "");
    std::fs::remove_file(graph_link.join("evidence/kiali/graph-book-info.json")).unwrap();
    symlink(outside.join("kiali/graph-book-info.json"), graph_link.join("evidence/kiali/graph-book-info.json"));

    let absolute = outside.display().to_string();
    let mut record: RunRecord = serde_json::from_value(serde_json::json!({
        "format": report::FORMAT, "run_id": "r", "scenario_name": "s", "scenario": {}, "provider": "kind",
        "architecture": "amd64", "host": {}, "versions": {}, "started_at": "", "ended_at": "",
        "outcome": "not-run", "phase_durations_secs": {}, "steps": [], "results": []
    }))
    .unwrap();
    record.results = vec![
        trial("inside", "evidence"),
        trial("dotdot", "../outside/evidence"),
        trial("dotdot-inside", "evidence/../evidence"),
        trial("absolute", &absolute),
        trial("linked", "linked"),
        trial("escaping", "escaping"),
    ];
    record.write_all(&run, &[]).unwrap();
    record.results.truncate(1);
    record.write_all(&graph_link, &[]).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck")).arg("judge").arg(&run).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let judged = RunRecord::load(&run).unwrap();
    let verdict = |suite: &str| &judged.results.iter().find(|r| r.suite == suite).unwrap().verdict;
    assert_eq!(verdict("inside").outcome, Outcome::Pass, "{}", verdict("inside").reason);
    for (suite, says) in [
        ("dotdot", "evidence folder ../outside/evidence refused: the path is absolute or climbs out"),
        ("dotdot-inside", "evidence folder evidence/../evidence refused: the path is absolute or climbs out"),
        ("absolute", "refused: the path is absolute or climbs out"),
        ("linked", "evidence folder linked refused: it resolves to"),
        ("escaping", "evidence file kiali/graph-book-info.json refused: it resolves to"),
    ] {
        let v = verdict(suite);
        assert_eq!(v.outcome, Outcome::Error, "{suite}: {}", v.reason);
        assert!(v.reason.contains(says), "{suite}: {}", v.reason);
        assert!(stdout.contains(&format!("{suite}::kiali error: ")), "{stdout}");
    }
    assert_eq!(judged.outcome, Outcome::Error);
    let junit = std::fs::read_to_string(run.join("junit.xml")).unwrap();
    assert!(junit.contains("refused"), "{junit}");

    let judged = meshcheck::run::rejudge(&graph_link).unwrap();
    assert_eq!(judged.results[0].verdict.outcome, Outcome::Error, "{}", judged.results[0].verdict.reason);
    let summary = std::fs::read_to_string(graph_link.join("summary.md")).unwrap();
    assert!(!summary.contains("outside-"), "the summary drew a graph read from outside:\n{summary}");
}

/// Issue 26: objects saved as evidence (the cluster snapshot, the PodLists the checks keep) lose
/// their secret-bearing fields structurally: env values, values after secret flags, secret
/// annotations, a Secret's data. Names, shapes and everything else stay; a body without any of
/// them is kept byte for byte (the control).
#[test]
fn api_responses_lose_env_values_secret_flags_and_annotations_before_they_are_kept() {
    let pods = serde_json::json!({"kind": "PodList", "items": [{
        "metadata": {"name": "csi-node", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"password\":\"hunter2\"}}",
            "note": "db password: swordfish"}},
        "spec": {"containers": [{"name": "driver",
            "command": ["/driver", "--token", "s3cr3t-token", "--endpoint=unix:///csi.sock"],
            "args": ["--client-secret=abcdef123456"],
            "env": [{"name": "AWS_REGION", "value": "eu-west-1"},
                    {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]}]}}]});
    let bytes = serde_json::to_vec(&pods).unwrap();
    let kept = meshcheck::redact::api_json(&bytes);
    let text = String::from_utf8_lossy(&kept);
    for secret in ["hunter2", "swordfish", "s3cr3t-token", "abcdef123456", "wJalrXUtnFEMI", "eu-west-1"] {
        assert!(!text.contains(secret), "{secret} kept:\n{text}");
    }
    for kept_as_is in ["AWS_SECRET_ACCESS_KEY", "secretKeyRef", "--endpoint=unix:///csi.sock", "/driver", "csi-node"] {
        assert!(text.contains(kept_as_is), "{kept_as_is} lost:\n{text}");
    }
    let plain = br#"{"kind":"NodeList","items":[{"metadata":{"name":"n1"}}]}"#;
    assert!(matches!(meshcheck::redact::api_json(plain), std::borrow::Cow::Borrowed(b) if b == plain));
}

/// Issue 26: credentials in a mirror's URL (a private registry or chart mirror) reach no file of
/// the run folder, not the console, and not `meshcheck plan`, although the run's own commands use
/// them. The run stops at preflight here (nothing answers), which quotes every mirrored URL.
#[test]
fn credentials_in_mirror_urls_stay_out_of_the_run_folder_and_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let scenario = dir.path().join("s.yaml");
    std::fs::write(
        &scenario,
        format!(
            "name: creds\nprovider: kind\ncluster:\n  node_image: kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f\nmirrors:\n  https://quay.io/: http://bob:S3CRETPW@127.0.0.1:{closed}/quay.io/\n  https://helm.cilium.io/: http://bob:S3CRETPW@127.0.0.1:{closed}/cilium/\n"
        ),
    )
    .unwrap();
    let meshcheck = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"));
        cmd.env("PATH", "/nonexistent").env_remove("MESHCHECK_SCENARIO");
        cmd
    };
    let reports = dir.path().join("reports");
    let run = meshcheck().args(["run", "--scenario"]).arg(&scenario).arg("--reports").arg(&reports).output().unwrap();
    let mut said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    for args in [vec!["plan", "--scenario"], vec!["plan", "-o", "json", "--scenario"]] {
        let plan = meshcheck().args(&args).arg(&scenario).output().unwrap();
        assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
        said.push_str(&String::from_utf8_lossy(&plan.stdout));
    }
    assert!(
        said.contains("bob:[REDACTED]@127.0.0.1") || said.contains("[REDACTED]@127.0.0.1"),
        "the URLs are shown, masked:\n{said}"
    );
    assert!(!said.contains("S3CRETPW"), "on the console:\n{said}");
    let mut files = 0;
    let mut stack = vec![reports.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_symlink() {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                assert!(!text.contains("S3CRETPW"), "{} holds the password:\n{text}", path.display());
            }
        }
    }
    assert!(files >= 4, "plan.json, run.json, junit.xml, summary.md at least: {files}");
}

/// Issue 26: every file `judge` and `compare` read from a run folder that came from elsewhere is
/// read only as a regular file of bounded size: run.json as a symlink out of the folder, as a FIFO
/// (which blocked for ever) or as a 300 MiB file is refused with a line saying why; a FIFO among
/// the command records is skipped; compare refuses a junit.xml FIFO. Each answers within seconds.
#[cfg(unix)]
#[test]
fn run_folder_files_are_read_only_as_bounded_regular_files() {
    let meshcheck = |args: &[&std::ffi::OsStr]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        crate::common::exit_within(
            &mut child,
            std::time::Instant::now(),
            std::time::Duration::from_secs(20),
            &format!("meshcheck {args:?}"),
        );
        let out = child.wait_with_output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let fifo = |path: &Path| assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    let base = tempfile::tempdir().unwrap();
    let os = |p: &Path| p.as_os_str().to_owned();
    let judge = |dir: &Path| meshcheck(&[std::ffi::OsStr::new("judge"), &os(dir)]);

    let linked = base.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::fs::write(base.path().join("elsewhere.json"), "{}").unwrap();
    symlink(base.path().join("elsewhere.json"), linked.join("run.json"));
    let (code, said) = judge(&linked);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("a symlink"), "{said}");

    let piped = base.path().join("piped");
    std::fs::create_dir_all(&piped).unwrap();
    fifo(&piped.join("run.json"));
    let (code, said) = judge(&piped);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a regular file"), "{said}");

    let huge = base.path().join("huge");
    std::fs::create_dir_all(&huge).unwrap();
    std::fs::File::create(huge.join("run.json")).unwrap().set_len(300 << 20).unwrap();
    let (code, said) = judge(&huge);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("more than the"), "{said}");

    // A readable record whose trial failed, beside a FIFO among its command records.
    let commands = base.path().join("commands");
    let mut record: RunRecord = serde_json::from_value(serde_json::json!({
        "format": report::FORMAT, "run_id": "r", "scenario_name": "s", "scenario": {}, "provider": "kind",
        "architecture": "amd64", "host": {}, "versions": {}, "started_at": "", "ended_at": "",
        "outcome": "error", "phase_durations_secs": {}, "steps": [], "results": []
    }))
    .unwrap();
    record.results = vec![TrialResult {
        suite: "provision".into(),
        name: "phase".into(),
        verdict: Verdict::error("kind create failed"),
        duration_secs: 1.0,
        started_at: "2026-11-25T00:00:00Z".into(),
        evidence_root: None,
        collected: false,
    }];
    record.write_all(&commands, &[]).unwrap();
    std::fs::create_dir_all(commands.join("commands")).unwrap();
    fifo(&commands.join("commands/001-kind.json"));
    let (code, said) = judge(&commands);
    assert_eq!(code, Some(1), "judged, not blocked: {said}");

    let junit_fifo = base.path().join("junit-fifo.xml");
    fifo(&junit_fifo);
    let (code, said) = meshcheck(&[std::ffi::OsStr::new("compare"), &os(&junit_fifo), &os(&junit_fifo)]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("not a regular file"), "{said}");
}
