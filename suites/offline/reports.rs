//! JUnit (validated against the upstream XSD), summaries, offline re-judging, comparison, redaction.

use std::collections::BTreeMap;

use meshcheck::{
    evidence::{Outcome, Verdict},
    report::{self, Change, RunRecord, TrialResult},
};

use crate::common::upstream;

fn result(suite: &str, name: &str, v: Verdict) -> TrialResult {
    TrialResult {
        suite: suite.into(),
        name: name.into(),
        verdict: v,
        duration_secs: 1.5,
        evidence_root: Some("evidence".into()),
        collected: true,
    }
}

fn record(results: Vec<TrialResult>) -> RunRecord {
    RunRecord {
        format: report::FORMAT,
        run_id: "r1".into(),
        scenario_name: "ambient-kind".into(),
        scenario: serde_json::json!({}),
        provider: "kind".into(),
        architecture: "arm64".into(),
        host: BTreeMap::new(),
        versions: BTreeMap::from([("istio".to_string(), "1.30.3".to_string())]),
        started_at: "2026-11-25T00:00:00Z".into(),
        ended_at: String::new(),
        outcome: Outcome::NotRun,
        phase_durations_secs: BTreeMap::from([("checks".to_string(), 4.5)]),
        steps: Vec::new(),
        results,
    }
}

fn sample() -> RunRecord {
    record(vec![
        result("preflight", "phase", Verdict::pass("ok")),
        result(
            "checks",
            "mtls",
            Verdict::fail("STRICT <broken> & \"quoted\"")
                .with_details(["a".to_string()])
                .with_evidence(["mtls/strict.json".to_string()]),
        ),
        result("checks", "traces", Verdict::error("could not collect")),
        result("checks", "kiali", Verdict::not_run("not run: phase failed")),
    ])
}

#[test]
fn junit_validates_against_the_xsd_and_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    sample().write_all(dir.path(), &[]).unwrap();
    let xml = dir.path().join("junit.xml");
    if let Some(up) = upstream() {
        match std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(up.join("schemas/junit-10.xunit-plugin.xsd"))
            .arg(&xml)
            .output()
        {
            Ok(out) => assert!(out.status.success(), "xmllint: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => {
                eprintln!("SKIP: xmllint is not installed (.ci/run installs libxml2-utils); XSD validation not run")
            }
        }
    }
    let outcomes = report::load_outcomes(dir.path(), None).unwrap();
    assert_eq!(outcomes["checks::mtls"], Outcome::Fail);
    assert_eq!(outcomes["checks::traces"], Outcome::Error);
    assert_eq!(outcomes["checks::kiali"], Outcome::NotRun);
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains("name=\"version.istio\"") && text.contains("evidence: evidence/mtls/strict.json"));
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("| checks | mtls | ❌ fail |") && summary.contains("| istio | 1.30.3 |"));
    assert!(summary.contains("Phase durations: checks 4.5s"), "{summary}");
}

#[test]
fn compare_finds_regressions_fixes_new_and_missing() {
    let before = BTreeMap::from([
        ("checks::a".to_string(), Outcome::Pass),
        ("checks::b".to_string(), Outcome::Fail),
        ("checks::c".to_string(), Outcome::Pass),
    ]);
    let after = BTreeMap::from([
        ("checks::a".to_string(), Outcome::Fail),
        ("checks::b".to_string(), Outcome::Pass),
        ("checks::d".to_string(), Outcome::Pass),
    ]);
    let changes: BTreeMap<String, Change> =
        report::compare(&before, &after).into_iter().map(|c| (c.key, c.change)).collect();
    assert_eq!(changes["checks::a"], Change::Regressed);
    assert_eq!(changes["checks::b"], Change::Fixed);
    assert_eq!(changes["checks::c"], Change::Missing);
    assert_eq!(changes["checks::d"], Change::New);
}

#[test]
fn compare_cli_exits_non_zero_on_regression_and_gate_passes_fold() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    record(vec![result("checks", "mtls", Verdict::pass("ok"))]).write_all(&a, &[]).unwrap();
    record(vec![result("checks", "mtls", Verdict::fail("no"))]).write_all(&b, &[]).unwrap();
    let bin = env!("CARGO_BIN_EXE_meshcheck");
    assert!(!std::process::Command::new(bin).args(["compare"]).arg(&a).arg(&b).status().unwrap().success());
    assert!(std::process::Command::new(bin).args(["compare"]).arg(&a).arg(&a).status().unwrap().success());
    let gate = dir.path().join("gate");
    record(vec![result("baseline", "mtls", Verdict::pass("ok")), result("candidate", "mtls", Verdict::fail("no"))])
        .write_all(&gate, &[])
        .unwrap();
    let out = std::process::Command::new(bin).args(["compare"]).arg(&gate).arg(&gate).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("REGRESSED  checks::mtls"));
}

#[test]
fn gate_summary_puts_baseline_and_candidate_side_by_side() {
    let mut r = record(vec![
        result("baseline", "mtls", Verdict::pass("ok")),
        result("baseline", "traces", Verdict::fail("late")),
        result("upgrade", "traffic-continuity", Verdict::pass("0 of 200 failed")),
        result("candidate", "mtls", Verdict::fail("plaintext")),
        result("candidate", "traces", Verdict::pass("ok")),
    ]);
    r.versions.insert("istio_upgrade_to".into(), "1.31.0".into());
    let md = report::summary(&r, &[]);
    assert!(md.contains("## Release gate: Istio 1.30.3 → 1.31.0"), "{md}");
    assert!(md.contains("| check | baseline (Istio 1.30.3) | candidate (Istio 1.31.0) | change |"), "{md}");
    assert!(md.contains("| mtls | pass | fail | **regressed** |"), "{md}");
    assert!(md.contains("| traces | fail | pass | fixed |"), "{md}");
    assert!(!report::summary(&sample(), &[]).contains("Release gate"));
}

#[test]
fn judge_reproduces_verdicts_from_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("evidence");
    std::fs::create_dir_all(ev.join("kiali")).unwrap();
    std::fs::write(ev.join("kiali/status.json"), br#"{"status":{"Kiali state":"running","Kiali version":"v2"}}"#)
        .unwrap();
    std::fs::write(ev.join("kiali/graph-book-info.json"), br#"{"elements":{"nodes":[],"edges":[]}}"#).unwrap();
    let mut r = record(vec![
        result("checks", "kiali", Verdict::fail("graph lacks edges")),
        result("checks", "traces", Verdict::not_run("skipped")),
    ]);
    r.results[0].verdict = (meshcheck::checks::find("kiali").unwrap().judge)(&meshcheck::evidence::Evidence::new(&ev));
    r.write_all(dir.path(), &[]).unwrap();
    let before = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck")).arg("judge").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let after = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(before, after, "re-judging changed a verdict");
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks::traces not-run"));
}

#[test]
fn secrets_are_redacted() {
    let text = "users:\n- name: x\n  user:\n    token: abc.def\n    client-key-data: LS0tLS1\nAuthorization: Bearer eyJhbGci\nurl: https://admin:hunter2@host/x\n";
    let r = meshcheck::util::redact(text);
    for secret in ["abc.def", "LS0tLS1", "eyJhbGci", "hunter2"] {
        assert!(!r.contains(secret), "{secret} leaked:\n{r}");
    }
    let secret = "apiVersion: v1\nkind: Secret\ndata:\n  password: c2VjcmV0\n  api: dG9rZW4=\nmetadata:\n  name: s\n";
    let r = meshcheck::util::redact(secret);
    assert!(!r.contains("c2VjcmV0") && !r.contains("dG9rZW4="), "{r}");
    assert!(r.contains("name: s"));
}

/// A writer whose bytes the test can read back.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn progress_is_timestamped_lines_off_a_terminal_and_a_spinner_on_one() {
    use meshcheck::progress::{Progress, Style};
    let buf = Shared::default();
    let p = Progress::to_writer(Style::Lines, Box::new(buf.clone()));
    p.begin("install: helm istiod");
    p.end("install: helm istiod", "done");
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("[20") && lines[0].ends_with("] install: helm istiod …"), "{text}");
    assert!(lines[1].contains("] install: helm istiod done in "), "{text}");

    let buf = Shared::default();
    let p = Progress::to_writer(Style::Spinner, Box::new(buf.clone()));
    p.begin("provision: create kind cluster");
    std::thread::sleep(std::time::Duration::from_millis(350));
    p.end("provision: create kind cluster", "failed");
    drop(p);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.matches('\r').count() >= 3, "redrawn in place: {text:?}");
    assert!(text.contains("\r\x1b[2K✘ provision: create kind cluster (") && text.ends_with(")\n"), "{text:?}");
    assert!(!text.contains("[20"), "no timestamps on a terminal: {text:?}");
}

#[test]
fn under_nextest_one_process_runs_and_the_others_report_its_verdicts() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let reports = tempfile::tempdir().unwrap();
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let trials: Vec<_> = (0..4)
        .map(|_| {
            let (reports, runs) = (reports.path().to_path_buf(), runs.clone());
            std::thread::spawn(move || {
                meshcheck::session::shared_run(&reports, "1f79aa0d-4ec8", || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // The whole run takes a while; the other processes wait for it.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let dir = reports.join("20261125-101500");
                    let mut r = record(vec![
                        result("checks", "mtls", Verdict::pass("ok")),
                        result("checks", "traces", Verdict::fail("late")),
                    ]);
                    r.ended_at = "2026-11-25T10:30:00Z".into();
                    r.write_all(&dir, &[]).map_err(|e| e.to_string())?;
                    Ok(dir)
                })
                .unwrap()
            })
        })
        .collect();
    let records: Vec<RunRecord> = trials.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one process executes the run");
    for r in &records {
        assert_eq!(r.ended_at, "2026-11-25T10:30:00Z", "every process sees the finished run");
        assert_eq!(r.results[1].verdict.outcome, Outcome::Fail);
    }
    // A new nextest run (another id) runs again.
    let again = meshcheck::session::shared_run(reports.path(), "other-run", || Err("no cluster".into()));
    assert_eq!(again.unwrap_err(), "no cluster");
}

#[test]
fn nextest_junit_reads_as_the_same_trials_as_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let nextest = dir.path().join("junit.xml");
    std::fs::write(
        &nextest,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="3" failures="2" errors="0" uuid="2f7b8f02-79c8-4147-9c96-ac64e8abe68e" timestamp="2026-11-25T22:53:16.000+00:00" time="0.2">
    <testsuite name="meshcheck::conformance" tests="3" disabled="0" errors="0" failures="2">
        <testcase name="preflight::phase" classname="meshcheck::conformance" timestamp="2026-11-25T22:53:16.000+00:00" time="0.01"/>
        <testcase name="provision::phase" classname="meshcheck::conformance" timestamp="2026-11-25T22:53:16.000+00:00" time="0.01">
            <failure type="test failure">error: kubeconfig missing</failure>
        </testcase>
        <testcase name="checks::mtls" classname="meshcheck::conformance" timestamp="2026-11-25T22:53:16.000+00:00" time="0.01">
            <failure type="test failure">not run: phase `provision` did not pass</failure>
        </testcase>
    </testsuite>
</testsuites>"#,
    )
    .unwrap();
    let from_nextest = report::load_outcomes(&nextest, None).unwrap();
    assert_eq!(
        from_nextest.keys().collect::<Vec<_>>(),
        ["checks::mtls", "preflight::phase", "provision::phase"],
        "trial names, not the binary id"
    );
    let folder = dir.path().join("run");
    record(vec![
        result("preflight", "phase", Verdict::pass("ok")),
        result("provision", "phase", Verdict::error("kubeconfig missing")),
        result("checks", "mtls", Verdict::not_run("not run: phase `provision` did not pass")),
    ])
    .write_all(&folder, &[])
    .unwrap();
    let from_folder = report::load_outcomes(&folder, None).unwrap();
    for way in [report::compare(&from_folder, &from_nextest), report::compare(&from_nextest, &from_folder)] {
        assert!(way.iter().all(|c| c.change == Change::Same), "{way:?}");
    }
}
