//! Rehearsals: the real `meshcheck run` against the simulated cluster (suites/sim), every phase and
//! check through its real collector, then the run folder, `meshcheck judge` and the teardown.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use meshcheck::{evidence::Outcome, report::RunRecord};

use crate::sim::{Faults, Sim, SimOptions};

/// Simulated time per real time, and the matching `timeouts.settle_scale`.
const SCALE: f64 = 0.01;

/// A simulation and a work folder for one run.
struct Rehearsal {
    sim: Sim,
    work: tempfile::TempDir,
}

impl Rehearsal {
    /// `None` (and a SKIP line) when ../shared/upstream is absent: the simulation reads its shapes there.
    fn new(provider: &'static str, faults: Faults) -> Option<Rehearsal> {
        crate::common::upstream()?;
        let mut work = tempfile::tempdir().unwrap();
        // MESHCHECK_REHEARSAL_KEEP=1 keeps the run folders for a look after a failure.
        work.disable_cleanup(std::env::var_os("MESHCHECK_REHEARSAL_KEEP").is_some());
        Some(Rehearsal { sim: Sim::start(SimOptions { provider, scale: SCALE, faults }), work })
    }

    /// A shipped scenario pointed at the simulation: its kubeconfig or ingress port, the mirrors,
    /// the settle scale, and `edit` on top.
    fn scenario(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let mut text = std::fs::read_to_string(crate::common::root().join(format!("scenarios/{name}.yaml"))).unwrap();
        let port = self.sim.ingress_port();
        text = text
            .replace("kubeconfig: ~/.kube/config", &format!("kubeconfig: {}", self.sim.kubeconfig().display()))
            .replace("url: http://127.0.0.1:8080", &format!("url: http://127.0.0.1:{port}"))
            .replace("host_port: 8080", &format!("host_port: {port}"));
        if !text.contains("ingress:") {
            text.push_str(&format!("ingress:\n  host_port: {port}\n"));
        }
        let settle = format!("  settle_scale: {SCALE}\n");
        text = match text.find("timeouts:\n") {
            Some(i) => format!("{}{settle}{}", &text[..i + 10], &text[i + 10..]),
            None => format!("{text}timeouts:\n{settle}"),
        };
        let m = self.sim.mirror();
        text.push_str("mirrors:\n");
        for host in ["raw.githubusercontent.com", "github.com", "quay.io", "registry.istio.io", "registry-1.docker.io"]
        {
            text.push_str(&format!("  https://{host}/: {m}/{host}/\n"));
        }
        let path = self.work.path().join(format!("{name}.yaml"));
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    fn meshcheck(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcheck"));
        cmd.env("PATH", format!("{}:/usr/bin:/bin", self.sim.tools_dir().display()))
            .env("MESHCHECK_PROGRESS", "lines")
            .env("MESHCHECK_LOG", "warn")
            .env_remove("MESHCHECK_SCENARIO")
            .env_remove("MESHCHECK_KEEP")
            .current_dir(self.work.path());
        cmd
    }

    /// `meshcheck run` on the scenario.
    fn run(&self, scenario: &Path) -> Output {
        self.meshcheck()
            .args(["run", "--scenario"])
            .arg(scenario)
            .arg("--reports")
            .arg(self.reports())
            .output()
            .unwrap()
    }

    fn reports(&self) -> PathBuf {
        self.work.path().join("reports")
    }

    fn run_dir(&self) -> PathBuf {
        std::fs::canonicalize(self.reports().join("latest")).expect("a run folder")
    }

    fn record(&self) -> RunRecord {
        RunRecord::load(&self.run_dir()).unwrap()
    }
}

/// `suite::name` → outcome of every result.
fn verdicts(r: &RunRecord) -> BTreeMap<String, Outcome> {
    r.results.iter().map(|t| (format!("{}::{}", t.suite, t.name), t.verdict.outcome)).collect()
}

/// The run folder is complete: run.json final with every trial, junit.xml and summary.md naming
/// each, and `meshcheck judge` on the folder agrees with the live verdicts.
fn assert_report_complete(r: &Rehearsal, scenario: &Path, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "meshcheck panicked:\n{stderr}");
    let record = r.record();
    assert!(!record.ended_at.is_empty(), "run.json is not final");
    let scenario = meshcheck::scenario::Scenario::from_path(scenario).unwrap();
    let plan = meshcheck::plan::build(&scenario, &meshcheck::plan::RunContext::for_plan());
    let trials = meshcheck::session::Session::trials(&plan);
    assert_eq!(record.results.len(), trials.len(), "run.json lacks trials:\n{:#?}", verdicts(&record));
    let junit = std::fs::read_to_string(r.run_dir().join("junit.xml")).unwrap();
    let summary = std::fs::read_to_string(r.run_dir().join("summary.md")).unwrap();
    for t in &record.results {
        assert!(junit.contains(&format!("name=\"{}\"", t.name)), "junit.xml lacks {}::{}", t.suite, t.name);
        assert!(
            summary.contains(&format!("| {} | {} |", t.suite, t.name)),
            "summary.md lacks {}::{}\n{summary}",
            t.suite,
            t.name
        );
    }
    let judged = r.meshcheck().arg("judge").arg(r.run_dir()).output().unwrap();
    assert!(!String::from_utf8_lossy(&judged.stderr).contains("panicked"));
    assert_eq!(verdicts(&r.record()), verdicts(&record), "meshcheck judge disagrees with the live run");
    assert_eq!(judged.status.success(), record.outcome == Outcome::Pass);
}

/// Every trial passed; the explanation of any that did not is in the message.
fn assert_all_pass(r: &Rehearsal, out: &Output) {
    let record = r.record();
    let failed: Vec<String> = record
        .results
        .iter()
        .filter(|t| t.verdict.outcome != Outcome::Pass)
        .map(|t| {
            format!(
                "{}::{} {}: {}\n  {}",
                t.suite,
                t.name,
                t.verdict.outcome,
                t.verdict.reason,
                t.verdict.details.join("\n  ")
            )
        })
        .collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "not every trial passed in {}:\n{}\n--- stderr tail:\n{}",
        r.run_dir().display(),
        failed.join("\n"),
        tail(&String::from_utf8_lossy(&out.stderr), 40)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn existing_cluster_passes_every_check_and_deletes_exactly_what_it_created() {
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let before = r.sim.namespaces();
    let scenario = r.scenario("existing-cluster", |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let left = r.sim.leftovers();
    assert!(left.applied.is_empty(), "left behind: {:?}", left.applied);
    assert_eq!(r.sim.namespaces(), before, "the run must delete exactly the namespaces it created");
}

/// A kind or k3d run: provisioned by the stand-ins, every check passes, the cluster is deleted.
fn provider_rehearsal(provider: &'static str, scenario: &str) {
    let Some(r) = Rehearsal::new(provider, Faults::default()) else { return };
    let scenario = r.scenario(scenario, |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    assert_eq!(r.sim.leftovers(), Default::default(), "the cluster must be deleted");
    let calls = r.sim.calls();
    assert!(calls.iter().any(|c| c.starts_with(&format!("{provider} ")) && c.contains("delete")), "{calls:#?}");
}

#[test]
fn ambient_kind_provisions_installs_passes_every_check_and_deletes_the_cluster() {
    provider_rehearsal("kind", "ambient-kind");
}

#[test]
fn ambient_k3d_provisions_installs_passes_every_check_and_deletes_the_cluster() {
    provider_rehearsal("k3d", "ambient-k3d");
}
