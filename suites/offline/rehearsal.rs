//! Rehearsals: the real `meshcheck run` against the simulated cluster (suites/sim), every phase and
//! check through its real collector, then the run folder, `meshcheck judge` and the teardown.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use meshcheck::{evidence::Outcome, report::RunRecord};

use crate::sim::{Faults, Key, Sim, Timings};

/// Simulated time per real time (the collectors' settle waits are scaled alike).
const SCALE: f64 = 0.01;

/// A simulation and a work folder for one run.
struct Rehearsal {
    sim: Sim,
    work: tempfile::TempDir,
}

impl Rehearsal {
    /// `None` (and a SKIP line) when ../shared/upstream is absent: the simulation reads its shapes there.
    fn new(provider: &'static str, faults: Faults) -> Option<Rehearsal> {
        Rehearsal::timed(provider, faults, Timings::rehearsal())
    }

    /// A rehearsal whose cluster takes `timings` (in cluster time, scaled by [`SCALE`]).
    fn timed(provider: &'static str, faults: Faults, timings: Timings) -> Option<Rehearsal> {
        let options = crate::common::sim_options(provider, SCALE, faults)?;
        let mut work = tempfile::tempdir().unwrap();
        // MESHCHECK_REHEARSAL_KEEP=1 keeps the run folders for a look after a failure.
        work.disable_cleanup(std::env::var_os("MESHCHECK_REHEARSAL_KEEP").is_some());
        Some(Rehearsal { sim: Sim::start_timed(options, timings), work })
    }

    /// A shipped scenario pointed at the simulation ([`Sim::point_scenario`]), `edit` on top.
    fn scenario(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(crate::common::root().join(format!("scenarios/{name}.yaml"))).unwrap();
        let path = self.work.path().join(format!("{name}.yaml"));
        std::fs::write(&path, edit(cut_timeouts(self.sim.point_scenario(&text)))).unwrap();
        path
    }

    fn meshcheck(&self) -> Command {
        self.command(Path::new(env!("CARGO_BIN_EXE_meshcheck")))
    }

    /// `program` with the stand-in tools on PATH, in the rehearsal's folder.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        as_a_user_runs_it(&mut cmd, &format!("{}:/usr/bin:/bin", self.sim.tools_dir().display()), &self.tmp());
        cmd.current_dir(self.work.path());
        cmd
    }

    /// The runs' temporary folder, where the private folder with the kubeconfig goes.
    fn tmp(&self) -> PathBuf {
        let tmp = self.work.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        tmp
    }

    /// `meshcheck run` on the scenario.
    fn run(&self, scenario: &Path) -> Output {
        self.run_with(scenario, &[])
    }

    /// `meshcheck run` on the scenario with more arguments.
    /// `meshcheck run` of `scenario` with `env` set on top of the rehearsal's.
    fn run_env(&self, scenario: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Output {
        let mut cmd = self.meshcheck();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(["run", "--scenario"]).arg(scenario).arg("--reports").arg(self.reports()).output().unwrap()
    }

    fn run_with(&self, scenario: &Path, args: &[&str]) -> Output {
        self.meshcheck()
            .args(["run", "--scenario"])
            .arg(scenario)
            .arg("--reports")
            .arg(self.reports())
            .args(args)
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

/// A rehearsal's environment for a meshcheck process: `path` as PATH, line progress, the log level
/// of `MESHCHECK_REHEARSAL_LOG` (`debug` shows a run's tracing in a failing test's output),
/// temporary files under `tmp`, and none of this process's own settings a run would take for its
/// own.
pub(crate) fn as_a_user_runs_it(cmd: &mut Command, path: &str, tmp: &Path) {
    cmd.env("PATH", path)
        .env("MESHCHECK_PROGRESS", "lines")
        .env("MESHCHECK_LOG", std::env::var("MESHCHECK_REHEARSAL_LOG").unwrap_or_else(|_| "warn".into()))
        .env_remove("MESHCHECK_SCENARIO")
        .env_remove("MESHCHECK_KEEP")
        .env("TMPDIR", tmp);
    // Under nextest this process has NEXTEST_EXECUTION_MODE and NEXTEST_RUN_ID; the conformance
    // entry would take them for its own and act as one trial of that nextest run.
    for (name, _) in std::env::vars_os().filter(|(name, _)| name.to_string_lossy().starts_with("NEXTEST")) {
        cmd.env_remove(name);
    }
}

/// With `MESHCHECK_REHEARSAL_TIMEOUTS=<duration>` (the mutation runner's setting) every phase
/// deadline of the scenario becomes that duration: a mutated run waiting for what never comes
/// fails in seconds instead of the shipped 10 to 15 minutes.
fn cut_timeouts(text: String) -> String {
    let Ok(cut) = std::env::var("MESHCHECK_REHEARSAL_TIMEOUTS") else { return text };
    text.lines()
        .map(|line| match line.split_once(": ") {
            Some((key, _)) if ["  provision", "  install", "  deploy", "  check"].contains(&key) => {
                format!("{key}: {cut}")
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `suite::name` → outcome of every result.
fn verdicts(r: &RunRecord) -> BTreeMap<String, Outcome> {
    r.results.iter().map(|t| (format!("{}::{}", t.suite, t.name), t.verdict.outcome)).collect()
}

/// The run folder is complete: run.json final with every trial, junit.xml and summary.md naming
/// each, and `meshcheck judge` on the folder agrees with the live verdicts.
/// No kubeconfig in the uploaded reports/, and none left in the private folder after the run.
fn assert_no_kubeconfig_kept(r: &Rehearsal) {
    let mut found = Vec::new();
    let mut stack = vec![r.reports(), r.tmp()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().contains("kubeconfig")) {
                found.push(path);
            }
        }
    }
    assert!(found.is_empty(), "kubeconfig files left in reports/ or the private folder: {found:?}");
}

fn assert_report_complete(r: &Rehearsal, scenario: &Path, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "meshcheck panicked:\n{stderr}");
    assert_no_kubeconfig_kept(r);
    let record = r.record();
    assert!(!record.ended_at.is_empty(), "run.json is not final");
    let scenario = meshcheck::scenario::Scenario::from_path(scenario).unwrap();
    let plan = meshcheck::plan::build(&scenario, &meshcheck::plan::RunContext::for_plan());
    let trials = meshcheck::run::Session::trials(&plan);
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
    // Issue 25, item 6: a run without a failure takes no diagnostic bundle.
    assert!(record.bundle.is_none() && !r.run_dir().join("evidence/bundle").exists(), "{:?}", record.bundle);
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

/// The waypoint scenario: istiod deploys the waypoint from its Gateway, ztunnel routes book-info's
/// Services through it, and the waypoint answers the L7 policy's path 403 (not ztunnel refusing the
/// connection); the cluster, and with it the waypoint and the policies, is deleted.
#[test]
fn ambient_waypoint_deploys_the_waypoint_passes_its_checks_and_deletes_the_cluster() {
    provider_rehearsal("kind", "ambient-waypoint");
}

/// Kiali behind OpenID Connect: Keycloak imports the realm from the Secret with the run's fresh
/// credentials, Kiali (given its client secret before it started) sends the browser to Keycloak,
/// the posted login comes back with a code Kiali exchanges, and the graph is read with the session.
/// The anonymous call is refused. No credential the run generated is anywhere in the run folder,
/// and the cluster, Keycloak and its Secrets with it, is deleted.
#[test]
fn ambient_kiali_oidc_logs_in_through_keycloak_keeps_no_credential_and_deletes_the_cluster() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kiali-oidc", |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let kiali = r.record().results.into_iter().find(|t| t.name == "kiali").expect("a kiali trial");
    assert!(kiali.verdict.reason.contains("after an OpenID login"), "{}", kiali.verdict.reason);
    let login: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run_dir().join("evidence/kiali/login.json")).unwrap()).unwrap();
    let hops: Vec<String> = login["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {} {}", h["method"].as_str().unwrap(), h["status"], h["url"].as_str().unwrap()))
        .collect();
    assert!(hops.iter().any(|h| h.starts_with("POST 302 http://keycloak.keycloak")), "{hops:#?}");
    assert_eq!(login["anonymous"][0]["status"], 401, "{login}");
    // The run's fresh credentials: the client secret and the user's password (48 hex digits each).
    let generated: Vec<String> = r
        .sim
        .secret_values()
        .into_iter()
        .filter(|v| v.len() == 48 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(generated.len(), 2, "the client secret and the password: {generated:?}");
    let mut files = vec![r.run_dir()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            for secret in &generated {
                assert!(!text.contains(secret.as_str()), "{} holds a generated credential", path.display());
            }
        }
    }
    assert_eq!(r.sim.leftovers(), Default::default(), "the cluster must be deleted");
}

#[test]
fn ambient_k3d_provisions_installs_passes_every_check_and_deletes_the_cluster() {
    provider_rehearsal("k3d", "ambient-k3d");
}

/// The conformance entry (`cargo test --test conformance`, a libtest-mimic harness with
/// `test = false`) built by the cargo that runs these tests: plain `cargo test` does not build it.
fn conformance_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--test", "conformance", "--message-format=json", "--quiet"])
        .current_dir(crate::common::root())
        .output()
        .unwrap();
    assert!(out.status.success(), "building the conformance entry: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "conformance")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the conformance executable")
}

#[test]
fn the_conformance_entry_runs_every_trial_against_a_kind_cluster_and_deletes_it() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let entry = conformance_binary();
    let listed = r.command(&entry).env("MESHCHECK_SCENARIO", &scenario).arg("--list").output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let out = r
        .command(&entry)
        .env("MESHCHECK_SCENARIO", &scenario)
        .env("MESHCHECK_REPORTS", r.reports())
        .env("MESHCHECK_PROGRESS", "quiet")
        .output()
        .unwrap();
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every trial the entry lists ran as a libtest trial and passed, and the run folder agrees.
    let record = r.record();
    for t in &record.results {
        let name = format!("{}::{}", t.suite, t.name);
        assert!(listed.contains(&format!("{name}: test")), "--list lacks {name}:\n{listed}");
        let passed = stdout.lines().any(|l| l.starts_with(&format!("test {name} ")) && l.ends_with("... ok"));
        assert!(passed, "{name} did not pass as a trial:\n{stdout}");
    }
    assert_eq!(r.sim.leftovers(), Default::default(), "the cluster must be deleted");
}

#[test]
fn a_test_filter_on_one_check_runs_that_check_and_the_phases_it_stands_on() {
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let scenario = r.scenario("existing-cluster", |t| t);
    let out = r
        .command(&conformance_binary())
        .env("MESHCHECK_SCENARIO", &scenario)
        .env("MESHCHECK_REPORTS", r.reports())
        .env("MESHCHECK_PROGRESS", "quiet")
        .arg("checks::mtls")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let ran: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with("... ok"))
        .filter_map(|l| l.strip_prefix("test ")?.split_whitespace().next())
        .collect();
    assert_eq!(
        ran,
        ["preflight::phase", "provision::phase", "deploy::phase", "checks::mtls", "cleanup::phase"],
        "{stdout}"
    );
    let record = r.record();
    assert_eq!(verdicts(&record).get("checks::mtls"), Some(&Outcome::Pass));
    assert!(!verdicts(&record).contains_key("checks::traces"), "a check the filter left out is not part of the run");
    assert_eq!(r.sim.leftovers(), Default::default());
}

#[test]
fn upgrade_gate_passes_baseline_upgrade_under_traffic_and_candidate() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("upgrade-gate", |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    assert_eq!(r.sim.leftovers(), Default::default(), "the cluster must be deleted");
    let calls = r.sim.calls();
    for release in ["istio-base", "istiod", "istio-cni", "ztunnel", "istio-ingress"] {
        assert!(
            calls.iter().any(|c| c.starts_with(&format!("helm upgrade {release} ")) && c.contains("--version 1.30.3")),
            "no upgrade of {release}"
        );
    }
    let traffic: meshcheck::cluster::traffic::TrafficRecord =
        serde_json::from_slice(&std::fs::read(r.run_dir().join("evidence/upgrade/traffic.json")).unwrap()).unwrap();
    let phases = meshcheck::cluster::traffic::phase_stats(&traffic);
    assert!(phases.iter().any(|p| p.phase == "during" && p.total > 0), "no traffic during the upgrade: {phases:?}");
    // The charts' rollouts replace before they remove (ztunnel `maxSurge: 1`, the gateway's
    // Deployment surge), and a draining pod takes no new connection: nothing fails. The baseline
    // of `a_ztunnel_upgrade_without_surge_…`.
    assert!(phases.iter().all(|p| p.failed == 0), "requests failed: {phases:?}");
    // Every request during the upgrade is attributed to the step under way, in the chain's order
    // (istio.io docs/ambient/upgrade/helm), and each step saw traffic.
    let steps = meshcheck::cluster::traffic::step_stats(&traffic);
    let order: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(order, ["istio-base", "istiod", "istio-cni", "ztunnel", "istio-ingress"], "{steps:?}");
    assert!(steps.iter().all(|s| s.total > 0 && s.failed == 0), "{steps:?}");
    // The rules the run held them to are recorded with the traffic: the defaults here.
    let rules: Vec<(&str, f64)> = traffic.step_min_success.iter().map(|(s, m)| (s.as_str(), *m)).collect();
    assert_eq!(rules, [("istio-base", 1.0), ("istio-cni", 1.0), ("istiod", 1.0), ("ztunnel", 0.9)]);
}

/// Issue 25: a candidate ztunnel that needs twice the memory fails the release gate's footprint
/// check, in the candidate pass only, with a message naming the metric, both values and the rule;
/// the baseline pass (Istio 1.29.2) passes and records its numbers. Nothing in the fault names the
/// check: the simulated kubelet's cAdvisor series of ztunnel 1.30.3 pods double, and Prometheus
/// finds them through the operator's kubelet Service as kube-prometheus-stack has it.
#[test]
fn a_candidate_ztunnel_that_doubles_its_memory_fails_the_footprint_gate() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { ztunnel_memory_doubles: Some("1.30.3".into()), ..Faults::default() };
    let r = fault(
        "kind",
        "upgrade-gate",
        faults,
        |t| only_checks(t, &["footprint"]),
        &[
            ("baseline::footprint", Outcome::Pass, "ztunnel.memory.load: 12."),
            ("candidate::footprint", Outcome::Fail, "ratio 2.0"),
            ("candidate::footprint", Outcome::Fail, "over gate.footprint.max_ratio 1.2"),
        ],
    );
    let record = r.record();
    let candidate = record.results.iter().find(|t| t.suite == "candidate" && t.name == "footprint").unwrap();
    assert!(
        candidate.verdict.reason.starts_with("ztunnel.memory.")
            && candidate.verdict.reason.contains("MiB in the baseline"),
        "{}",
        candidate.verdict.reason
    );
    let memory = |suite: &str| {
        let t = record.results.iter().find(|t| t.suite == suite && t.name == "footprint").unwrap();
        t.verdict.measurements.iter().find(|m| m.metric == "ztunnel.memory.load").map(|m| m.value).unwrap()
    };
    let ratio = memory("candidate") / memory("baseline");
    assert!((1.9..2.2).contains(&ratio), "candidate / baseline working set {ratio}");
    // istiod is untouched by the fault and stays within the rule.
    assert!(!candidate.verdict.details.iter().any(|d| d.starts_with("istiod.memory") && d.contains("ratio")));
    // The release gate over the same run folder regresses on it.
    let out = r.meshcheck().args(["compare"]).arg(r.run_dir()).arg(r.run_dir()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("footprint") && text.contains("ztunnel.memory.load"), "{text}");
}

/// Issue 25: a candidate ztunnel that adds 1 ms to each request it carries grows the mesh's
/// latency overhead by about 2 ms (both ends of an in-mesh request are captured), over the 1 ms
/// rule: the candidate's latency check fails naming the number, both values and the rule; the
/// baseline's passes with the overhead Istio publishes, of the order of 0.2 ms. Outside the mesh
/// nothing changes: the fault is ztunnel's alone.
#[test]
fn a_candidate_ztunnel_that_adds_latency_fails_the_latency_gate() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { ztunnel_adds_ms: Some(("1.30.3".into(), 1.0)), ..Faults::default() };
    let r = fault(
        "kind",
        "upgrade-gate",
        faults,
        |t| only_checks(t, &["latency"]),
        &[
            ("baseline::latency", Outcome::Pass, "the mesh adds +0."),
            ("candidate::latency", Outcome::Fail, "over gate.latency.p99_overhead_ms 1"),
        ],
    );
    let record = r.record();
    let value = |suite: &str, metric: &str| {
        let t = record.results.iter().find(|t| t.suite == suite && t.name == "latency").unwrap();
        t.verdict.measurements.iter().find(|m| m.metric == metric).map(|m| m.value).unwrap()
    };
    let grown = value("candidate", "latency.overhead.p99") - value("baseline", "latency.overhead.p99");
    assert!((2.5..4.0).contains(&grown), "p99 overhead grew by {grown} ms");
    let outside = value("candidate", "latency.outside.p50") - value("baseline", "latency.outside.p50");
    assert!(outside.abs() < 0.1, "outside the mesh moved by {outside} ms");
    let summary = std::fs::read_to_string(r.run_dir().join("summary.md")).unwrap();
    assert!(
        summary.contains("| latency latency.overhead.p99 |")
            && summary.contains("over gate.latency.p99_overhead_ms 1**"),
        "{summary}"
    );
}

/// When a step of the run ran: start and end in seconds since the run started.
fn span(record: &RunRecord, step: &str) -> (f64, f64) {
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as f64 / 1000.0;
    let s = record
        .steps
        .iter()
        .find(|s| s.step == step)
        .unwrap_or_else(|| panic!("no step `{step}` in run.json: {:#?}", record.steps));
    let start = t(&s.started_at) - t(&record.started_at);
    (start, start + s.duration_secs)
}

/// The executor runs the plan's graph. With upstream durations: kube-prometheus-stack installs
/// while the Istio chain does, bookinfo is applied during the install once ztunnel is up, and the
/// checks that only read run side by side.
#[test]
fn ambient_kind_runs_what_does_not_depend_on_each_other_side_by_side() {
    let Some(r) = Rehearsal::timed("kind", Faults::default(), Timings::upstream()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let record = r.record();
    let kps = span(&record, "helm kps");
    let chain = (span(&record, "helm istio-base").0, span(&record, "wait for DaemonSet istio-system/ztunnel").1);
    assert!(kps.0 < chain.1 && chain.0 < kps.1, "kps {kps:?} does not overlap the Istio chain {chain:?}");
    let bookinfo = span(&record, "apply bookinfo.yaml");
    let ztunnel = span(&record, "wait for DaemonSet istio-system/ztunnel");
    let gateway = span(&record, "wait for Deployment istio-ingress/istio-ingress");
    assert!(
        ztunnel.1 <= bookinfo.0 && bookinfo.0 < gateway.1,
        "bookinfo {bookinfo:?}: not after ztunnel {ztunnel:?} and during the gateway's rollout {gateway:?}"
    );
    // Checks side by side take less wall time than one after another.
    let checks: f64 = record.results.iter().filter(|t| t.suite == "checks").map(|t| t.duration_secs).sum();
    let wall = record.phase_durations_secs["checks"];
    assert!(wall < checks, "the checks took {wall}s of wall time for {checks}s of work");
}

/// `--parallel 1` runs one step at a time, in plan order, and the run still passes.
#[test]
fn with_parallel_1_steps_run_one_after_another_in_plan_order() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let out = r.run_with(&scenario, &["--parallel", "1"]);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let record = r.record();
    let plan = meshcheck::plan::build(
        &meshcheck::scenario::Scenario::from_path(&scenario).unwrap(),
        &meshcheck::plan::RunContext::for_plan(),
    );
    let in_plan: Vec<String> = plan
        .steps()
        .filter(|(phase, s)| {
            *phase != meshcheck::common::names::Phase::Cleanup && !matches!(s.step, meshcheck::plan::Step::Check { .. })
        })
        .map(|(_, s)| s.step.label())
        .collect();
    let steps: Vec<_> = record.steps.iter().filter(|s| s.phase != "cleanup").cloned().collect();
    let ran: Vec<String> = steps.iter().map(|s| s.step.clone()).collect();
    assert_eq!(ran, in_plan, "not in plan order");
    for pair in steps.windows(2) {
        let (a, b) = (span(&record, &pair[0].step), span(&record, &pair[1].step));
        // Start times are kept to the millisecond.
        assert!(b.0 >= a.1 - 0.001, "`{}` {a:?} and `{}` {b:?} overlap", pair[0].step, pair[1].step);
    }
}

#[test]
fn parallel_0_is_refused_before_anything_runs() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let out = r.run_with(&scenario, &["--parallel", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--parallel"));
    assert!(r.sim.calls().is_empty(), "{:#?}", r.sim.calls());
}

/// The documented in-place upgrade awaits each rollout before the next chart. Revealed by the
/// simulation: the waits return while the new pods are not Ready yet, because old pods still count.
#[test]
fn upgrade_gate_awaits_each_rollout_before_the_next_chart() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("upgrade-gate", |t| t);
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_eq!(r.sim.calls_during_rollout(), Vec::<String>::new(), "upgraded while a rollout was in progress");
}

// ---------------------------------------------------------------------------------------------
// Fault rehearsals: each asserts the verdicts, their explanation, what was left behind, and the
// completeness of the report.

/// Keeps only `checks` in a scenario's `checks:` list (the fault at hand needs no others).
pub(crate) fn only_checks(text: String, checks: &[&str]) -> String {
    let list: String = checks.iter().map(|c| format!("  - {c}\n")).collect();
    match text.find("\nchecks:\n") {
        Some(i) => {
            let start = i + "\nchecks:\n".len();
            let end = text[start..].find(|c: char| c != ' ' && c != '-').map(|_| ()).and_then(|_| {
                text[start..]
                    .lines()
                    .position(|l| !l.starts_with("  - "))
                    .map(|n| text[start..].lines().take(n).map(|l| l.len() + 1).sum::<usize>())
            });
            format!("{}{list}{}", &text[..start], &text[start + end.unwrap_or(text.len() - start)..])
        }
        None => format!("{text}checks:\n{list}"),
    }
}

/// What a fault must produce: the trial, its outcome and words its explanation must contain.
type Expect<'a> = (&'a str, Outcome, &'a str);

fn assert_verdicts(r: &Rehearsal, expected: &[Expect]) {
    let record = r.record();
    for (trial, outcome, words) in expected {
        let t = record
            .results
            .iter()
            .find(|t| format!("{}::{}", t.suite, t.name) == *trial)
            .unwrap_or_else(|| panic!("no result for {trial}: {:#?}", verdicts(&record)));
        let explanation = format!("{}\n{}", t.verdict.reason, t.verdict.details.join("\n"));
        assert_eq!(t.verdict.outcome, *outcome, "{trial}: {explanation}");
        assert!(explanation.contains(words), "{trial} does not explain `{words}`:\n{explanation}");
    }
}

/// Nothing the run applied or created is left: no cluster, and on an existing cluster none of
/// its objects and exactly the namespaces that were there before.
fn assert_nothing_left(r: &Rehearsal, namespaces_before: &[String]) {
    let left = r.sim.leftovers();
    assert_eq!(left, Default::default(), "left behind after the run");
    if r.sim.provider() == "existing" {
        assert_eq!(r.sim.namespaces(), namespaces_before, "namespaces differ from before the run");
    }
}

/// Runs a scenario against a faulty simulation and checks the verdicts, the report and the teardown.
fn fault(
    provider: &'static str,
    scenario: &str,
    faults: Faults,
    edit: impl FnOnce(String) -> String,
    expected: &[Expect],
) -> Rehearsal {
    let r = Rehearsal::new(provider, faults).expect("upstream present (checked by the caller)");
    let before = r.sim.namespaces();
    let scenario = r.scenario(scenario, edit);
    let out = r.run(&scenario);
    assert!(!out.status.success(), "a faulty run must not pass");
    assert_report_complete(&r, &scenario, &out);
    assert_verdicts(&r, expected);
    assert_nothing_left(&r, &before);
    r
}

/// Issue 20, item 7: an existing cluster whose kube-prometheus-stack was installed by the chart's
/// own guide (release `kube-prometheus-stack`, no `fullnameOverride`): its Prometheus is
/// `monitoring/kube-prometheus-stack-prometheus:9090`. Where meshcheck looks by default, the
/// metrics, probes and footprint checks error naming the Service they looked for and the field
/// that points them elsewhere; with `existing.prometheus` set to it, they pass on that cluster.
#[test]
fn an_existing_cluster_with_kube_prometheus_stacks_default_names_needs_existing_prometheus() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = || Faults { kps_default_names: true, ..Faults::default() };
    let hint = "no Service monitoring/prom-prometheus:9090; on a cluster set up otherwise, set `existing.prometheus`";
    fault(
        "existing",
        "existing-cluster",
        faults(),
        |t| only_checks(t, &["metrics", "footprint"]),
        &[("checks::metrics", Outcome::Error, hint), ("checks::footprint", Outcome::Error, hint)],
    );
    let Some(r) = Rehearsal::new("existing", faults()) else { return };
    let scenario = r.scenario("existing-cluster", |t| {
        only_checks(t, &["metrics", "probes", "footprint"]).replace(
            "  install: false\n",
            "  install: false\n  prometheus: monitoring/kube-prometheus-stack-prometheus:9090\n",
        )
    });
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
}

/// Issue 20, item 7: an existing cluster set up by Istio's own addons: its Prometheus is istio
/// 1.30.3 samples/addons/prometheus.yaml at `istio-system/prometheus:9090`, with no operator and
/// no monitors; its `kubernetes-pods` job scrapes istiod (15014) and each ztunnel (15020) by their
/// pods' `prometheus.io/*` annotations, its `kubernetes-nodes-cadvisor` job each kubelet's
/// cAdvisor. Where meshcheck looks by default, metrics errors naming the field; with
/// `existing.prometheus` there, metrics and footprint pass on the targets of those jobs, the
/// simulated Prometheus computing them from the addon's own scrape configuration. The negative
/// control: a ztunnel that refuses its scrape fails metrics, naming that ztunnel's target.
#[test]
fn an_existing_cluster_with_istios_addon_prometheus_passes_metrics_and_footprint_where_the_scenario_says() {
    if crate::common::upstream().is_none() {
        return;
    }
    let addon = |down: bool| Faults { istio_addon_prometheus: true, ztunnel_target_down: down, ..Faults::default() };
    let at_addon =
        |t: String| t.replace("  install: false\n", "  install: false\n  prometheus: istio-system/prometheus:9090\n");
    let there = |t: String| at_addon(only_checks(t, &["metrics"]));
    let hint = "no Service monitoring/prom-prometheus:9090; on a cluster set up otherwise, set `existing.prometheus`";
    fault(
        "existing",
        "existing-cluster",
        addon(false),
        |t| only_checks(t, &["metrics"]),
        &[("checks::metrics", Outcome::Error, hint)],
    );
    let Some(r) = Rehearsal::new("existing", addon(false)) else { return };
    let scenario = r.scenario("existing-cluster", |t| at_addon(only_checks(t, &["metrics", "footprint"])));
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_verdicts(
        &r,
        &[
            ("checks::metrics", Outcome::Pass, "scrape pools {\"kubernetes-pods\"}"),
            ("checks::footprint", Outcome::Pass, "ztunnel.memory.load: 12."),
        ],
    );
    assert_all_pass(&r, &out);
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run_dir().join("evidence/metrics/targets.json")).unwrap()).unwrap();
    let pools: std::collections::BTreeSet<&str> =
        targets["data"]["activeTargets"].as_array().unwrap().iter().filter_map(|t| t["scrapePool"].as_str()).collect();
    assert_eq!(
        pools,
        ["kubernetes-nodes", "kubernetes-nodes-cadvisor", "kubernetes-pods"].into(),
        "the addon's jobs with targets, no operator pool"
    );
    // The footprint's series come from the `node` role: each kubelet at its InternalIP and
    // `daemonEndpoints` port, over HTTPS, `instance` the node's name (prometheus v3.5.0
    // discovery/kubernetes/node.go `buildNode`).
    let cadvisor: Vec<&serde_json::Value> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["scrapePool"] == "kubernetes-nodes-cadvisor")
        .collect();
    assert!(!cadvisor.is_empty());
    for t in cadvisor {
        let url = t["scrapeUrl"].as_str().unwrap();
        assert!(url.starts_with("https://172.18.0.") && url.ends_with(":10250/metrics/cadvisor"), "{t}");
        assert!(t["labels"]["instance"].as_str().is_some_and(|i| !i.contains(':')), "instance is a node name: {t}");
        assert_eq!(t["labels"]["metrics_path"], "/metrics/cadvisor", "{t}");
        assert_eq!(t["health"], "up", "{t}");
    }
    fault(
        "existing",
        "existing-cluster",
        addon(true),
        there,
        &[("checks::metrics", Outcome::Fail, ":15020/metrics is down (Get")],
    );
}

/// A gateway that answers nothing (the scenario's ingress URL on a closed port): no request started
/// a trace, so the traces check asks no Tempo and errors naming the gateway's silence, even where
/// the scenario's Tempo is not there (which a collector waiting for those traces would meet first
/// and name instead).
#[test]
fn traces_of_requests_the_gateway_never_answered_are_not_awaited() {
    if crate::common::upstream().is_none() {
        return;
    }
    fault(
        "existing",
        "existing-cluster",
        Faults::default(),
        |t| {
            let closed = regex::Regex::new(r"url: http://127\.0\.0\.1:\d+").unwrap();
            let t = closed.replace(&t, "url: http://127.0.0.1:1").into_owned();
            only_checks(t, &["traces"])
                .replace("  install: false\n", "  install: false\n  tempo: observability/tempo:3200\n")
        },
        &[("checks::traces", Outcome::Error, "got no answer from the gateway")],
    );
}

/// Issue 20, item 7: Tempo and Kiali are read where `existing.tempo` and `existing.kiali` say; a
/// place where there is no Service errors naming it and the field, before any wait (the traces
/// check does not poll a Service that is not there for its three minutes).
#[test]
fn existing_tempo_and_kiali_are_read_where_the_scenario_says() {
    if crate::common::upstream().is_none() {
        return;
    }
    fault(
        "existing",
        "existing-cluster",
        Faults::default(),
        |t| {
            only_checks(t, &["traces", "kiali"]).replace(
                "  install: false\n",
                "  install: false\n  tempo: observability/tempo:3200\n  kiali: kiali/kiali-server:20001\n",
            )
        },
        &[
            (
                "checks::traces",
                Outcome::Error,
                "no Service observability/tempo:3200; on a cluster set up otherwise, set `existing.tempo`",
            ),
            (
                "checks::kiali",
                Outcome::Error,
                "no Service kiali/kiali-server:20001; on a cluster set up otherwise, set `existing.kiali`",
            ),
        ],
    );
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let scenario = r.scenario("existing-cluster", |t| {
        only_checks(t, &["traces", "kiali"]).replace(
            "  install: false\n",
            "  install: false\n  tempo: tempo/tempo:3200\n  kiali: istio-system/kiali:20001\n",
        )
    });
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
}

#[test]
fn fault_ztunnel_reporting_bookinfo_as_tcp_fails_mtls_naming_the_workloads() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { ztunnel_reports_tcp: true, ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["mtls"]),
        &[("checks::mtls", Outcome::Fail, "has protocol TCP (not captured by ambient)")],
    );
}

/// ratings opted out of ambient (its pods labelled `istio.io/dataplane-mode: none`): istio-cni
/// leaves them out, so ztunnel logs the reviews -> ratings connections without identities, and
/// mtls fails naming that hop in the access log (besides the capture and the metrics). Nothing in
/// the fault speaks of logs: the log lines follow from the pod's label by ztunnel's rules.
#[test]
fn a_workload_opted_out_of_ambient_fails_mtls_naming_the_plaintext_hop() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { opted_out: Some("ratings-v1".into()), ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["mtls"]),
        &[
            ("checks::mtls", Outcome::Fail, "reviews -> ratings: "),
            ("checks::mtls", Outcome::Fail, "access-log line(s), none with both SPIFFE identities"),
            ("checks::mtls", Outcome::Fail, "src.identity=(absent), dst.identity=(absent)"),
        ],
    );
}

#[test]
fn fault_tempo_never_receiving_traces_fails_traces() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { tempo_drops_traces: true, ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["traces"]),
        &[("checks::traces", Outcome::Fail, "never arrived in Tempo")],
    );
}

/// Issue 25, item 6: the first failure (here traces, on a kind cluster whose Tempo drops every
/// span) takes the diagnostic bundle while the cluster is still there: the mesh's and Cilium's
/// pods, events and container logs, each ztunnel's config dump, the policies in force; what the
/// cluster could not give (istiod's debug endpoints, `cilium-dbg` in the simulated agents) is named
/// in the index. It holds none of the cluster's Secret values, and run.json, the failing JUnit case
/// and summary.md point at it.
#[test]
fn the_first_failure_takes_a_redacted_diagnostic_bundle_linked_from_the_reports() {
    if crate::common::upstream().is_none() {
        return;
    }
    // istiod's container was OOM-killed once: the bundle also keeps its previous instance's log.
    let faults = Faults { tempo_drops_traces: true, oom_killed: Some("istiod".into()), ..Faults::default() };
    let r = fault(
        "kind",
        "ambient-kind",
        faults,
        |t| only_checks(t, &["mtls", "traces"]),
        &[("checks::traces", Outcome::Fail, "never arrived in Tempo")],
    );
    let record = r.record();
    let bundle = record.bundle.clone().expect("a bundle in run.json");
    assert_eq!(bundle.trigger, "checks::traces");
    let index: meshcheck::checks::bundle::Index =
        serde_json::from_slice(&std::fs::read(r.run_dir().join(&bundle.index)).unwrap()).unwrap();
    let files: Vec<&str> = index.files.iter().map(|f| f.path.as_str()).collect();
    for needed in [
        "bundle/pods-istio-system.json",
        "bundle/events-book-info.json",
        "bundle/policies/ciliumclusterwidenetworkpolicies.json",
        "bundle/policies/peerauthentications.json",
    ] {
        assert!(files.contains(&needed), "{needed} in {files:#?}");
    }
    assert!(
        files.iter().any(|f| f.starts_with("bundle/logs/istio-system/istiod-") && f.ends_with("/discovery.log")),
        "{files:#?}"
    );
    assert!(files.iter().any(|f| f.starts_with("bundle/logs/kube-system/cilium-")), "{files:#?}");
    assert_eq!(files.iter().filter(|f| f.ends_with("config_dump.json")).count(), 3, "one per node: {files:#?}");
    assert!(index.missing.iter().any(|m| m.contains("syncz")), "{:#?}", index.missing);
    assert_eq!(bundle.files, index.files.len());
    let on_disk: u64 =
        index.files.iter().map(|f| std::fs::metadata(r.run_dir().join("evidence").join(&f.path)).unwrap().len()).sum();
    assert_eq!(on_disk, index.bytes);
    for f in &index.files {
        let text = std::fs::read_to_string(r.run_dir().join("evidence").join(&f.path)).unwrap();
        for secret in r.sim.secret_values().iter().filter(|v| v.len() >= 8) {
            assert!(!text.contains(secret.as_str()), "{} holds a Secret value", f.path);
        }
    }
    // Every log the run read was bounded (the simulated API server notes each request's options).
    let logs: Vec<String> = r.sim.calls().into_iter().filter(|c| c.starts_with("log ")).collect();
    assert!(logs.len() > 20, "{logs:#?}");
    assert!(logs.iter().all(|c| c.contains("tailLines=") && c.contains("limitBytes=")), "{logs:#?}");
    // Each container by name (a pod of several refuses a log request without one), and the
    // restarted one's previous instance asked for as such.
    assert!(!index.missing.iter().any(|m| m.contains("a container name must be specified")), "{:#?}", index.missing);
    assert!(logs.iter().any(|c| c.starts_with("log istio-system/istiod-") && c.contains("previous=true")), "{logs:#?}");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("bundle/logs/istio-system/istiod-") && f.ends_with("/discovery.previous.log")),
        "{files:#?}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(&index.collected_at).is_ok(), "{}", index.collected_at);
    let junit = std::fs::read_to_string(r.run_dir().join("junit.xml")).unwrap();
    let case = junit.split("<testcase").find(|c| c.contains("name=\"traces\"")).unwrap();
    assert!(case.contains("diagnostic bundle: evidence/bundle/index.json"), "{case}");
    let summary = std::fs::read_to_string(r.run_dir().join("summary.md")).unwrap();
    assert!(summary.contains("## Diagnostic bundle") && summary.contains("(evidence/bundle/index.json)"), "{summary}");
}

#[test]
/// A target that is down from the start fails metrics (that ztunnel is not scraped) but is not
/// collateral damage of default-deny: probes compares the targets before and under the policy.
fn fault_a_ztunnel_scrape_target_down_fails_metrics_not_probes() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { ztunnel_target_down: true, ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["metrics", "probes"]),
        &[
            ("checks::metrics", Outcome::Fail, "connect: connection refused"),
            ("checks::probes", Outcome::Pass, "stayed Ready under default-deny"),
        ],
    );
}

#[test]
fn fault_probed_pods_restarting_under_default_deny_fail_probes() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { probes_dropped_under_deny: true, ..Faults::default() };
    let r = fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["probes"]),
        &[("checks::probes", Outcome::Fail, "restarted"), ("checks::probes", Outcome::Fail, "Unhealthy event")],
    );
    // Issue 25, item 7: summary.md cites the upstream issue that names this failure's cause.
    let summary = std::fs::read_to_string(r.run_dir().join("summary.md")).unwrap();
    assert!(
        summary.contains(
            "**Known issue** [ambient-probes-under-cilium-policy](https://github.com/istio/istio/issues/49277)"
        ),
        "{summary}"
    );
}

#[test]
fn fault_helm_install_failing_after_the_cluster_exists_stops_the_run_and_deletes_the_cluster() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { helm_fails: Some("istiod".into()), ..Faults::default() };
    let r = fault(
        "kind",
        "ambient-kind",
        faults,
        |t| t,
        &[
            ("provision::phase", Outcome::Pass, "steps done"),
            ("install::phase", Outcome::Error, "simulated failure of istiod"),
            ("checks::mtls", Outcome::NotRun, "phase `install` did not pass"),
        ],
    );
    // Nothing starts once istiod's install has failed; what was in flight is recorded.
    let record = r.record();
    let failed = span(&record, "helm istiod");
    // Cleanup (after the run, a step record of its own) is the one thing that starts later.
    for s in record.steps.iter().filter(|s| s.phase != "provision" && s.phase != "cleanup") {
        assert!(span(&record, &s.step).0 <= failed.1 + 0.001, "`{}` started after istiod's install failed", s.step);
    }
    assert!(!record.steps.iter().any(|s| s.step == "helm istio-cni"), "the chain went on after istiod");
}

#[test]
fn fault_a_rollout_that_never_completes_times_out_naming_what_it_saw() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { rollout_stuck: Some("istiod".into()), ..Faults::default() };
    fault(
        "k3d",
        "ambient-k3d",
        faults,
        // 3 s: long enough for the waits before istiod (the Gateway API CRDs) on a loaded machine.
        |t| t.replace("  install: 10m\n", "  install: 3s\n"),
        &[
            ("install::phase", Outcome::Error, "waiting for Deployment istio-system/istiod"),
            ("install::phase", Outcome::Error, "last seen: replicas 1, current 1, updated 1, available 0"),
            ("deploy::phase", Outcome::NotRun, "phase `install` did not pass"),
        ],
    );
}

#[test]
fn fault_the_api_server_going_away_mid_run_errors_and_still_deletes_the_cluster() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { api_down_after_applies: Some(30), ..Faults::default() };
    // A wait in flight when the API server goes rides out the refused connections until its
    // deadline (issue 22, item 4): 10 s here, not the shipped 10 minutes.
    let short = |t: String| t.replace("  install: 10m", "  install: 10s").replace("  deploy: 10m", "  deploy: 10s");
    let r = fault("kind", "ambient-kind", faults, short, &[("provision::phase", Outcome::Pass, "steps done")]);
    assert!(r.sim.calls().iter().any(|c| c == "API server went away"));
    let record = r.record();
    let first = record.results.iter().find(|t| t.verdict.outcome != Outcome::Pass).expect("a trial that did not pass");
    assert_eq!(first.verdict.outcome, Outcome::Error, "{first:?}");
    let explanation = format!("{} {}", first.verdict.reason, first.verdict.details.join(" "));
    assert!(["server-side", "API discovery", "ridden out"].iter().any(|w| explanation.contains(w)), "{explanation}");
}

/// `meshcheck run` of `scenario` in the background, its output piped.
fn spawn_run(r: &Rehearsal, scenario: &Path) -> std::process::Child {
    r.meshcheck()
        .args(["run", "--scenario"])
        .arg(scenario)
        .arg("--reports")
        .arg(r.reports())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Returns once the simulation has seen a call starting with `trigger` (and 100 ms more, so the
/// run is inside it), within 30 s.
fn await_call(r: &Rehearsal, trigger: &str) {
    let started = std::time::Instant::now();
    while !r.sim.calls().iter().any(|c| c.starts_with(trigger)) {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "`{trigger}` never came: {:#?}", r.sim.calls());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
}

/// Sends `signal` (`-INT`, `-TERM`) to a process.
fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
}

/// Runs `meshcheck run` and sends `signal` once the simulation has seen `trigger`; returns its output.
fn interrupted(r: &Rehearsal, scenario: &Path, trigger: &str, sig: &str) -> Output {
    let child = spawn_run(r, scenario);
    await_call(r, trigger);
    signal(child.id(), sig);
    child.wait_with_output().unwrap()
}

fn hanging_istiod() -> Faults {
    Faults { helm_hangs: Some("istiod".into()), ..Faults::default() }
}

#[test]
fn with_keep_the_kubeconfig_stays_private_outside_reports() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kind", |t| only_checks(t, &["node-architecture"]));
    let out = r
        .meshcheck()
        .args(["run", "--keep", "--scenario"])
        .arg(&scenario)
        .arg("--reports")
        .arg(r.reports())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run_dir().join("plan.json")).unwrap()).unwrap();
    let kubeconfig = PathBuf::from(plan["kubeconfig"].as_str().unwrap());
    assert!(kubeconfig.starts_with(r.tmp()), "{} is not in the private folder", kubeconfig.display());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&kubeconfig), 0o600, "the kubeconfig holds a client key");
    assert_eq!(mode(kubeconfig.parent().unwrap()), 0o700);
    assert!(
        !std::fs::read_dir(r.reports())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("kubeconfig"))
    );
}

#[test]
fn fault_ctrl_c_mid_install_stops_helm_deletes_the_cluster_and_reports() {
    let Some(r) = Rehearsal::new("kind", hanging_istiod()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let out = interrupted(&r, &scenario, "helm upgrade --install istiod", "-INT");
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert_report_complete(&r, &scenario, &out);
    assert_verdicts(
        &r,
        &[
            ("install::phase", Outcome::Error, "was interrupted (Ctrl-C, SIGTERM or SIGHUP)"),
            ("checks::mtls", Outcome::NotRun, ""),
        ],
    );
    assert_nothing_left(&r, &[]);
}

#[test]
fn fault_sigterm_mid_install_deletes_the_cluster_and_reports() {
    let Some(r) = Rehearsal::new("kind", hanging_istiod()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let out = interrupted(&r, &scenario, "helm upgrade --install istiod", "-TERM");
    assert_report_complete(&r, &scenario, &out);
    assert_verdicts(&r, &[("install::phase", Outcome::Error, "interrupted")]);
    assert_nothing_left(&r, &[]);
}

#[test]
fn fault_mtls_collector_exceeding_its_timeout_under_strict_removes_the_policy() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { curl_hangs_under_strict: true, ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["mtls"]).replace("timeouts:\n", "timeouts:\n  check: 2s\n"),
        &[("checks::mtls", Outcome::Error, "collector did not finish within 2s")],
    );
}

#[test]
fn fault_probes_collector_exceeding_its_timeout_under_default_deny_removes_the_policies() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { events_hang_under_deny: true, ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| only_checks(t, &["probes"]).replace("timeouts:\n", "timeouts:\n  check: 2s\n"),
        &[("checks::probes", Outcome::Error, "collector did not finish within 2s")],
    );
}

#[test]
fn fault_probes_collector_failing_half_way_under_default_deny_has_its_policies_taken_back() {
    if crate::common::upstream().is_none() {
        return;
    }
    // The negative control's delete of the Cilium probe policy fails with default-deny applied: the
    // collector returns early, and the session takes back default-deny (and re-applies the probe
    // policy it meant to delete), which `fault` checks through the simulation's leftovers.
    let faults = Faults { ccnp_delete_fails: true, ..Faults::default() };
    let r = fault(
        "existing",
        "existing-cluster",
        faults,
        |t| format!("{}\nprobes:\n  negative_control: true\n", only_checks(t, &["probes"])),
        &[("checks::probes", Outcome::Error, "could not collect evidence for probes")],
    );
    let record = r.record();
    let probes = record.results.iter().find(|t| t.name == "probes").unwrap();
    let details = probes.verdict.details.join("\n");
    assert!(details.contains("taken back by the session: delete NetworkPolicy"), "{details}");
}

/// kube-prometheus-stack's control-plane monitors as the chart enables them by default
/// (meshcheck's values turn them off): on kind, kubeadm binds the controller manager's, the
/// scheduler's and etcd's metrics to 127.0.0.1, so the simulation, evaluating the chart's monitors
/// against kubeadm's static pods, finds their targets down; probes and metrics still pass. The
/// values come through `MESHCHECK_FIXTURES`, as a user's would.
#[test]
fn kind_control_plane_targets_down_as_on_a_real_kind_cluster_still_pass_probes() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let fixtures = r.work.path().join("fixtures");
    std::fs::create_dir_all(fixtures.join("values")).unwrap();
    let values = meshcheck::plan::fixtures::text("values/kube-prometheus-stack.yaml");
    let defaults = ["kubeControllerManager", "kubeEtcd", "kubeScheduler"]
        .iter()
        .fold(values.clone(), |v, c| v.replace(&format!("{c}:\n  enabled: false"), &format!("{c}:\n  enabled: true")));
    assert_ne!(defaults, values, "the values turn the control-plane monitors off");
    std::fs::write(fixtures.join("values/kube-prometheus-stack.yaml"), defaults).unwrap();
    let scenario = r.scenario("ambient-kind", |t| only_checks(t, &["probes", "metrics"]));
    let out = r.run_env(&scenario, &[(meshcheck::plan::fixtures::OVERRIDE_ENV, fixtures.as_os_str())]);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    // The could-fail sign: the monitors selected their targets, and those are down.
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.run_dir().join("evidence/metrics/targets.json")).unwrap()).unwrap();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    for component in ["kube-controller-manager", "kube-scheduler", "kube-etcd"] {
        let pool = format!("serviceMonitor/monitoring/prom-{component}/0");
        let target = active.iter().find(|t| t["scrapePool"] == pool.as_str()).unwrap_or_else(|| panic!("no {pool}"));
        assert_eq!(target["health"], "down", "{target}");
        assert!(target["lastError"].as_str().unwrap().contains("connection refused"), "{target}");
    }
}

/// A panic that unwinds past a session (here a bug in the caller, after the run created its
/// namespaces on an existing cluster) still takes back what the run created and finishes run.json:
/// the session's drop guard.
#[test]
fn a_panic_mid_run_still_deletes_what_the_run_created_and_finishes_the_report() {
    use meshcheck::{common::names::Phase, run::Session};
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let before = r.sim.namespaces();
    let path = r.scenario("existing-cluster", |t| only_checks(t, &["mtls"]));
    let scenario = meshcheck::scenario::Scenario::from_path(&path).unwrap();
    let opts = meshcheck::run::RunOptions {
        reports_dir: r.reports(),
        keep: false,
        progress: meshcheck::common::progress::Style::Quiet,
        parallel: std::num::NonZeroUsize::new(1).unwrap(),
    };
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = created.clone();
    let sim_namespaces = {
        let r = &r;
        move || r.sim.namespaces()
    };
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut session = Session::start(scenario, &opts).unwrap();
                let trials = Session::trials(&session.plan);
                for t in trials.iter().filter(|t| t.phase == Phase::Provision || t.phase == Phase::Deploy) {
                    session.run_trial(t);
                }
                *seen.lock().unwrap() = sim_namespaces();
                panic!("a bug in the middle of a run");
            })
            .join()
    });
    assert!(outcome.is_err(), "the run panicked");
    let during = created.lock().unwrap().clone();
    assert!(during.iter().any(|n| n == "meshcheck-outside"), "the run had created its namespaces: {during:?}");
    assert_nothing_left(&r, &before);
    let record = r.record();
    assert!(!record.ended_at.is_empty(), "run.json is final");
    let cleanup = record.results.iter().find(|t| t.suite == "cleanup").expect("a cleanup result");
    assert_eq!(cleanup.verdict.outcome, Outcome::Pass, "{}", cleanup.verdict.reason);
}

/// Issue 27, items 2 and 6: a test filter that selects no trial (a typo) exits 3 and lists the
/// trials instead of running nothing and passing; `MESHCHECK_LOG` reaches the conformance entry's
/// log as it does `meshcheck`'s. No cluster is needed: both happen before a session starts.
#[test]
fn a_filter_that_selects_nothing_exits_3_naming_the_trials_and_meshcheck_log_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.yaml");
    let text = std::fs::read_to_string(crate::common::root().join("scenarios/existing-cluster.yaml")).unwrap();
    std::fs::write(&scenario, text.replace("~/.kube/config", "/nonexistent/kubeconfig")).unwrap();
    let run = |filter: &str, log: &str| {
        Command::new(conformance_binary())
            .arg(filter)
            .env("MESHCHECK_SCENARIO", &scenario)
            .env("MESHCHECK_REPORTS", dir.path().join("reports"))
            .env("MESHCHECK_LOG", log)
            .env("MESHCHECK_PROGRESS", "quiet")
            .env_remove("NEXTEST_EXECUTION_MODE")
            .output()
            .unwrap()
    };
    let out = run("checks::mlts", "debug");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("selects no trial") && stderr.contains("checks::mtls"), "{stderr}");
    assert!(stderr.contains("conformance run") && stderr.contains("existing"), "MESHCHECK_LOG=debug: {stderr}");
    assert!(!dir.path().join("reports").exists(), "nothing ran, so no run folder");
    // The negative control: at the default level the debug line stays out.
    let out = run("checks::mlts", "info");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("conformance run"));
}

/// Issue 26: on an existing cluster the Cilium probe policy may be the user's own. The probes
/// negative control deletes it for a while; what it puts back is the policy as it was (the user's
/// label and extra rule included), not meshcheck's fixture.
#[test]
fn the_probes_negative_control_puts_back_the_users_probe_policy_as_it_was() {
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let kubeconfig = std::fs::read_to_string(r.sim.kubeconfig()).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let url = format!("{server}/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/allow-ambient-hostprobes");
    let users = serde_json::json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "allow-ambient-hostprobes", "labels": {"team": "platform"}},
        "spec": {"description": "ours, with a rule for the node-local DNS cache",
                 "enableDefaultDeny": {"egress": false, "ingress": false}, "endpointSelector": {},
                 "ingress": [{"fromCIDR": ["169.254.7.127/32"]}, {"fromCIDR": ["169.254.20.10/32"]}]}});
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let put = rt.block_on(
        http.patch(format!("{url}?fieldManager=platform-team"))
            .header("content-type", "application/apply-patch+yaml")
            .body(users.to_string())
            .send(),
    );
    assert!(put.unwrap().status().is_success());
    let scenario = r.scenario("existing-cluster", |t| {
        format!("{}\nprobes:\n  negative_control: true\n", only_checks(t, &["probes"]))
    });
    let out = r.run(&scenario);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(r.sim.calls().iter().any(|c| c.starts_with("delete ciliumclusterwidenetworkpolicies")), "the control ran");
    let after: serde_json::Value = rt.block_on(async { http.get(&url).send().await.unwrap().json().await.unwrap() });
    assert_eq!(after["metadata"]["labels"]["team"], "platform", "{after}");
    assert_eq!(after["spec"]["description"], users["spec"]["description"], "{after}");
    assert_eq!(after["spec"]["ingress"], users["spec"]["ingress"], "the user's rules are back: {after}");
}

/// A kind rehearsal of `checks` with one fixture edited (`find` → `replace`) through
/// `MESHCHECK_FIXTURES`, as a user adapting a value would: the simulation evaluates what the edit
/// makes of the cluster.
fn with_fixture_edit(file: &str, find: &str, replace: &str, checks: &[&str]) -> Option<Rehearsal> {
    with_fixture_edit_in("ambient-kind", file, find, replace, |t| only_checks(t, checks))
}

/// [`with_fixture_edit`] on a shipped scenario of kind, with `edit` on its text.
fn with_fixture_edit_in(
    scenario: &str,
    file: &str,
    find: &str,
    replace: &str,
    edit: impl FnOnce(String) -> String,
) -> Option<Rehearsal> {
    let r = Rehearsal::new("kind", Faults::default())?;
    let fixtures = r.work.path().join("fixtures");
    let path = fixtures.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = meshcheck::plan::fixtures::text(file);
    assert_eq!(text.matches(find).count(), 1, "{file} holds `{find}` once");
    std::fs::write(&path, text.replace(find, replace)).unwrap();
    let scenario = r.scenario(scenario, edit);
    let out = r.run_env(&scenario, &[(meshcheck::plan::fixtures::OVERRIDE_ENV, fixtures.as_os_str())]);
    assert_report_complete(&r, &scenario, &out);
    Some(r)
}

/// A PodMonitor that selects no pod (its label edited): Prometheus, evaluating the monitor against
/// the pods, has no ztunnel target, and metrics fails naming the PodMonitor and each unscraped
/// ztunnel. The healthy kind rehearsal is the baseline.
#[test]
fn a_monitor_that_selects_nothing_fails_metrics_naming_the_monitor() {
    fixture_fault(
        ("manifests/istio-monitors.yaml", "      app: ztunnel", "      app: ztunnel-node"),
        ("metrics", Outcome::Fail, "no target of the ztunnel PodMonitor"),
    );
}

/// A kind rehearsal of one check with one fixture edited (`file`, `find`, `replace`), whose
/// verdict must be `outcome` with `words` in its explanation.
fn fixture_fault((file, find, replace): (&str, &str, &str), (check, outcome, words): (&str, Outcome, &str)) {
    let Some(r) = with_fixture_edit(file, find, replace, &[check]) else { return };
    assert_verdicts(&r, &[(&format!("checks::{check}"), outcome, words)]);
}

/// An L4 policy whose selector matches no workload: ztunnel holds it for nobody, the other
/// identity is never refused, and l4-authorization fails saying so.
#[test]
fn an_l4_policy_that_selects_nothing_fails_l4_authorization() {
    fixture_fault(
        ("manifests/l4-allow.yaml", "      app: details", "      app: detail"),
        ("l4-authorization", Outcome::Fail, "curl-other was never refused"),
    );
}

/// A principal written with its `spiffe://` scheme matches no peer (ztunnel strips the scheme
/// before matching): the allowed client is refused as well, and l4-authorization fails naming it.
#[test]
fn an_l4_principal_with_its_scheme_refuses_the_allowed_client() {
    fixture_fault(
        (
            "manifests/l4-allow.yaml",
            "        - cluster.local/ns/meshcheck-inside/sa/curl-inside",
            "        - spiffe://cluster.local/ns/meshcheck-inside/sa/curl-inside",
        ),
        ("l4-authorization", Outcome::Fail, "under the policy curl-inside got HTTP 000, curl exit 56"),
    );
}

/// istiod pushing policy late (25 s of cluster time against a 1 s budget): the refusal comes,
/// measured, after the budget, and l4-authorization fails naming both. The budget is far below the
/// delay so that even slow execs (a loaded machine) leave a served attempt past the budget.
#[test]
fn a_policy_pushed_after_the_budget_fails_l4_authorization() {
    if crate::common::upstream().is_none() {
        return;
    }
    let faults = Faults { policy_push_delay: Some(std::time::Duration::from_secs(25)), ..Faults::default() };
    fault(
        "existing",
        "existing-cluster",
        faults,
        |t| format!("{}authorization:\n  propagation_budget: 1s\n", only_checks(t, &["l4-authorization"])),
        &[("checks::l4-authorization", Outcome::Fail, "over budget")],
    );
}

/// A waypoint for workloads (`istio.io/waypoint-for: workload`) while bookinfo's traffic is
/// addressed to Services: istiod assigns the waypoint to no Service, so ztunnel carries the traffic
/// at L4 alone. The waypoint check names each Service without it, l7-policy never sees a 403, the
/// HTTPRoute changes nothing (reviews-v3 still answers) and no trace has a span from the waypoint.
#[test]
fn a_waypoint_for_workloads_fails_waypoint_and_l7_policy() {
    let Some(r) = with_fixture_edit_in(
        "ambient-waypoint",
        "manifests/waypoint.yaml",
        "    istio.io/waypoint-for: service",
        "    istio.io/waypoint-for: workload",
        |t| t,
    ) else {
        return;
    };
    assert_verdicts(
        &r,
        &[
            ("checks::waypoint", Outcome::Fail, "ratings.book-info.svc.cluster.local has no waypoint"),
            ("checks::l7-policy", Outcome::Fail, "was never refused"),
            ("checks::l7-routing", Outcome::Fail, "came from versions outside it: the route is not applied"),
            ("checks::l7-traces", Outcome::Fail, "no span from the waypoint (`waypoint.book-info`)"),
        ],
    );
}

/// The L7 policy attached by `selector` instead of `targetRefs`: it goes to ztunnel, which behind
/// the waypoint sees the waypoint's identity, never the client's, so the DENY never applies and
/// l7-policy fails saying where such a policy belongs.
#[test]
fn an_l7_policy_with_a_selector_fails_l7_policy() {
    let Some(r) = with_fixture_edit_in(
        "ambient-waypoint",
        "manifests/l7-deny.yaml",
        "  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: waypoint\n",
        "  selector:\n    matchLabels:\n      app: ratings\n",
        |t| only_checks(t, &["l7-policy"]),
    ) else {
        return;
    };
    assert_verdicts(&r, &[("checks::l7-policy", Outcome::Fail, "attach it to the waypoint with targetRefs")]);
}

/// Kiali on `token` auth (its CR edited): through the API server's service proxy its status API
/// answers 401, and the kiali check errors saying why and what to set.
#[test]
fn kiali_on_token_auth_errors_with_the_fix() {
    fixture_fault(
        ("values/kiali-operator.yaml", "      strategy: anonymous", "      strategy: token"),
        ("kiali", Outcome::Error, "set `auth.strategy: anonymous` in the Kiali CR"),
    );
}

/// A probe policy that selects no pod (its `endpointSelector` edited): under default-deny the
/// SNAT-ed probes of the ambient probe targets are dropped, and probes fails.
#[test]
fn a_probe_policy_that_selects_no_pod_fails_probes() {
    fixture_fault(
        (
            "manifests/cilium-allow-ambient-hostprobes.yaml",
            "  endpointSelector: {}",
            "  endpointSelector:\n    matchLabels:\n      app: nothing-has-this-label",
        ),
        ("probes", Outcome::Fail, "Unhealthy"),
    );
}

/// The upgrade's traffic record of a rehearsal's run.
fn upgrade_traffic(r: &Rehearsal) -> meshcheck::cluster::traffic::TrafficRecord {
    serde_json::from_slice(&std::fs::read(r.run_dir().join("evidence/upgrade/traffic.json")).unwrap()).unwrap()
}

/// Issue 20 (a ztunnel upgrade with drain): ztunnel rolled without surge (`maxSurge: 0`, the
/// DaemonSet default) with a 300 s grace period deletes the old pod first; it drains 295 s (the
/// grace period minus 5 s) with its listeners closed, and the node gets its new ztunnel only once
/// the old one is gone. Requests to productpage through that node fail meanwhile:
/// traffic-continuity counts them and measures the outage, and fails on budgets of 5 requests and
/// 1 s (100 s of cluster time). The healthy upgrade gate (the chart's `maxSurge: 1`) is the
/// baseline: no request fails there.
#[test]
fn a_ztunnel_upgrade_without_surge_drains_before_replacing_and_fails_continuity() {
    let Some(r) = with_fixture_edit_in(
        "upgrade-gate",
        "values/ztunnel.yaml",
        "logLevel: info",
        "logLevel: info\nterminationGracePeriodSeconds: 300\nupdateStrategy:\n  type: RollingUpdate\n  rollingUpdate:\n    maxSurge: 0\n    maxUnavailable: 1",
        |t| {
            only_checks(t, &["traffic-continuity"])
                .replace("max_outage: 10s", "max_outage: 1s")
                .replace("failure_budget: 200", "failure_budget: 5")
        },
    ) else {
        return;
    };
    assert_verdicts(&r, &[("upgrade::traffic-continuity", Outcome::Fail, "requests failed during the upgrade")]);
    // The failures are the ztunnel step's, and over its rule (Istio's 90 % bar for a restart).
    let steps = meshcheck::cluster::traffic::step_stats(&upgrade_traffic(&r));
    let failed: Vec<(&str, usize)> =
        steps.iter().filter(|s| s.failed > 0).map(|s| (s.step.as_str(), s.failed)).collect();
    assert!(failed.iter().all(|(s, _)| *s == "ztunnel") && !failed.is_empty(), "{steps:?}");
    assert_verdicts(&r, &[("upgrade::traffic-continuity", Outcome::Fail, "the ztunnel step answered")]);
    let outage = meshcheck::cluster::traffic::longest_outage_secs(&upgrade_traffic(&r), "during");
    // Drain (295 s) plus the new pod's start (5 s) of cluster time. The generator orders requests
    // by when they were sent, and on a loaded machine answers come late and interleave, which cuts
    // the measured stretch short (0.7 s seen under a parallel suite): the bound is 25 s of cluster
    // time, five times what the new pod's start alone would cost.
    assert!(outage > 25.0 * SCALE, "outage {outage:.3} s, no more than a pod start");
}

/// Issue 22, item 4, against the simulated API server: etcd compacts under the waits (every other
/// watch of a named object ends at once with a 410 `Expired`). kube-runtime's watcher yields each
/// as an error and relists; the waits ride them out, count them, and the run passes. Before, the
/// first such error failed the phase. Pods take 100 s of cluster time here, so that the waits
/// outlast their watchers' first list and watch.
#[test]
fn waits_ride_out_watches_that_expire_and_say_how_many() {
    let timings = Timings { pod_default: std::time::Duration::from_secs(100), ..Timings::rehearsal() };
    let Some(r) = Rehearsal::timed("kind", Faults { watches_expire: true, ..Faults::default() }, timings) else {
        return;
    };
    let scenario = r.scenario("ambient-kind", |t| only_checks(t, &["mtls"]));
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    assert!(r.sim.calls().iter().any(|c| c.starts_with("watch ") && c.ends_with(" expired")), "no watch expired");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("watch error(s) ridden out") && log.contains("too old resource version"),
        "{}",
        tail(&log, 40)
    );
}

/// Issue 22, item 5, against the simulated API server: an earlier run's namespace is still
/// Terminating (a pod in it takes 300 s of cluster time to stop). The run waits for it to go, then
/// creates it as its own; before, the create met 403 and the phase failed.
#[test]
fn an_existing_cluster_rerun_waits_out_the_previous_runs_terminating_namespace() {
    let timings = Timings { pod_exit: std::time::Duration::from_secs(300), ..Timings::rehearsal() };
    let Some(r) = Rehearsal::timed("existing", Faults::default(), timings) else { return };
    let kubeconfig = std::fs::read_to_string(r.sim.kubeconfig()).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let apply = |path: &str, body: serde_json::Value| {
        let put = rt.block_on(
            http.patch(format!("{server}{path}?fieldManager=meshcheck"))
                .header("content-type", "application/apply-patch+yaml")
                .body(body.to_string())
                .send(),
        );
        assert!(put.unwrap().status().is_success(), "{path}");
    };
    apply(
        "/api/v1/namespaces/meshcheck-inside",
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshcheck-inside"}}),
    );
    apply(
        "/api/v1/namespaces/meshcheck-inside/pods/slow-to-stop",
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "slow-to-stop"},
            "spec": {"terminationGracePeriodSeconds": 600, "containers": [{"name": "app", "image": "docker.io/library/busybox:1.37"}]}}),
    );
    let pod = format!("{server}/api/v1/namespaces/meshcheck-inside/pods/slow-to-stop");
    let phase = || -> String {
        let p: serde_json::Value = rt.block_on(async { http.get(&pod).send().await.unwrap().json().await.unwrap() });
        p["status"]["phase"].as_str().unwrap_or_default().to_string()
    };
    let started = std::time::Instant::now();
    while phase() != "Running" {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the pod never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let deleted = rt.block_on(http.delete(format!("{server}/api/v1/namespaces/meshcheck-inside")).send()).unwrap();
    assert!(deleted.status().is_success());
    // The sign that the condition holds: creating in it is refused as the API server refuses it.
    let refused = rt.block_on(
        http.post(format!("{server}/api/v1/namespaces/meshcheck-inside/configmaps"))
            .body(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#)
            .send(),
    );
    assert_eq!(refused.unwrap().status(), 403);
    let scenario = r.scenario("existing-cluster", |t| only_checks(t, &["mtls"]));
    let out = r.run_env(&scenario, &[("MESHCHECK_LOG", std::ffi::OsStr::new("info"))]);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("namespace meshcheck-inside is still Terminating"), "{}", tail(&log, 40));
}

/// Issue 26: on an existing cluster cleanup deletes exactly the namespaces the run created. While
/// the run goes on, someone creates `shop` with labels copied from the run's own namespace: before,
/// cleanup deleted by label and took `shop` with it; now it deletes by name and uid, and `shop`
/// stays.
#[test]
fn cleanup_leaves_a_namespace_someone_made_with_the_runs_labels() {
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let kubeconfig = std::fs::read_to_string(r.sim.kubeconfig()).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let copier = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let http = reqwest::Client::new();
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(60) {
                let found = http.get(format!("{server}/api/v1/namespaces/meshcheck-inside")).send().await;
                let Some(ns) = found.ok().filter(|r| r.status().is_success()) else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let ns: serde_json::Value = ns.json().await.unwrap();
                let shop = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "shop", "labels": ns["metadata"]["labels"]}});
                let made = http
                    .patch(format!("{server}/api/v1/namespaces/shop?fieldManager=someone-else"))
                    .header("content-type", "application/apply-patch+yaml")
                    .body(shop.to_string())
                    .send()
                    .await
                    .unwrap();
                assert!(made.status().is_success());
                return ns["metadata"]["labels"].clone();
            }
            panic!("the run never created meshcheck-inside");
        })
    });
    let before = r.sim.namespaces();
    let scenario = r.scenario("existing-cluster", |t| only_checks(t, &["mtls"]));
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let copied = copier.join().unwrap();
    assert!(copied.get("meshcheck.io/run").is_some(), "the run's label was copied: {copied}");
    let mut expected = before;
    expected.push("shop".into());
    expected.sort();
    let mut after = r.sim.namespaces();
    after.sort();
    assert_eq!(after, expected, "the run's own namespaces gone, `shop` kept");
}

/// Issue 26: a second Ctrl-C stops a run whose cleanup hangs (here `kind delete cluster` never
/// returns, as with a wedged container engine) within seconds, and says what may be left and how to
/// remove it. Before, the second signal did nothing and the run hung with the cleanup.
#[test]
fn a_second_ctrl_c_stops_a_hanging_cleanup_and_says_what_may_be_left() {
    let faults = Faults { cluster_delete_hangs: true, ..hanging_istiod() };
    let Some(r) = Rehearsal::new("kind", faults) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let mut child = spawn_run(&r, &scenario);
    await_call(&r, "helm upgrade --install istiod");
    signal(child.id(), "-INT");
    await_call(&r, "kind delete cluster");
    let second = std::time::Instant::now();
    signal(child.id(), "-INT");
    let status =
        crate::common::exit_within(&mut child, second, std::time::Duration::from_secs(30), "after the second Ctrl-C");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(second.elapsed() < std::time::Duration::from_secs(10), "took {:?}", second.elapsed());
    assert!(stderr.contains("interrupted again (Ctrl-C): stopping now"), "{}", tail(&stderr, 20));
    assert!(
        stderr
            .contains("may be left: delete it with `meshcheck gc --delete` (or `kind delete cluster --name meshcheck-"),
        "{}",
        tail(&stderr, 20)
    );
}

/// Issue 26: `gc --delete` leaves alone the cluster of a run still working (the run holds its
/// lock) and deletes one a finished run kept (`--keep`; the control).
#[test]
fn gc_leaves_the_cluster_of_a_running_run_and_deletes_a_kept_one() {
    let Some(r) = Rehearsal::new("kind", hanging_istiod()) else { return };
    let scenario = r.scenario("ambient-kind", |t| t);
    let gc = || r.meshcheck().args(["gc", "--delete"]).output().unwrap();
    let child = spawn_run(&r, &scenario);
    await_call(&r, "helm upgrade --install istiod");
    let out = gc();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("in use by a running meshcheck: left alone"), "{said}");
    assert!(r.sim.leftovers().cluster.is_some(), "gc deleted the cluster of a running run");
    assert!(!r.sim.calls().iter().any(|c| c.starts_with("kind delete")), "{:#?}", r.sim.calls());
    signal(child.id(), "-INT");
    child.wait_with_output().unwrap();

    let kept = Rehearsal::new("kind", Faults::default()).unwrap();
    let scenario = kept.scenario("ambient-kind", |t| only_checks(t, &["node-architecture"]));
    let out = kept.run_with(&scenario, &["--keep"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(kept.sim.leftovers().cluster.is_some(), "--keep keeps the cluster");
    let out = kept.meshcheck().args(["gc", "--delete"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(kept.sim.leftovers().cluster.is_none(), "a kept cluster of a finished run is a leftover");
}

/// A rehearsal of ambient-kiali-oidc's kiali check with one fixture edited: the kiali check must
/// fail naming `words`. The healthy ambient-kiali-oidc rehearsal is the baseline.
fn kiali_login_fault(file: &str, find: &str, replace: &str, words: &str) {
    let Some(r) = with_fixture_edit_in("ambient-kiali-oidc", file, find, replace, |t| only_checks(t, &["kiali"]))
    else {
        return;
    };
    assert_verdicts(&r, &[("checks::kiali", Outcome::Fail, words)]);
}

/// The Secret kiali holding another value than the realm's client secret: Keycloak's token
/// endpoint refuses Kiali's client credentials (401), and Kiali redirects with `openid_error`.
#[test]
fn a_kiali_client_secret_keycloak_does_not_know_fails_kiali_naming_the_secret() {
    kiali_login_fault(
        "manifests/keycloak.yaml",
        "  oidc-secret: \"{{CLIENT_SECRET}}\"",
        "  oidc-secret: \"{{USER_PASSWORD}}\"",
        "the Secret kiali (oidc-secret) must hold the realm's client secret",
    );
}

/// A realm whose client registers another redirect URI than the one Kiali computes: Keycloak's
/// authorization endpoint answers 400 and never sends the browser back.
#[test]
fn a_redirect_uri_the_realm_does_not_register_fails_kiali() {
    kiali_login_fault(
        "manifests/keycloak.yaml",
        "\"redirectUris\": [\"http://kiali.istio-system.svc.cluster.local:20001/kiali\"]",
        "\"redirectUris\": [\"http://kiali.istio-system:20001/kiali\"]",
        "answered HTTP 400 (We are sorry...)",
    );
}

/// An issuer_uri with a trailing slash: Keycloak's discovery document states the issuer without
/// it, Kiali refuses the provider and cannot even start the login.
#[test]
fn an_issuer_uri_that_differs_from_keycloaks_issuer_fails_kiali() {
    kiali_login_fault(
        "values/kiali-openid.yaml",
        "issuer_uri: http://keycloak.keycloak.svc.cluster.local:8080/realms/meshcheck",
        "issuer_uri: http://keycloak.keycloak.svc.cluster.local:8080/realms/meshcheck/",
        "Kiali could not start the login",
    );
}

/// A user without first and last name: Keycloak's declarative user profile stops the login at
/// "Update Account Information" instead of redirecting back to Kiali.
#[test]
fn a_user_without_a_complete_profile_fails_kiali_at_update_account_information() {
    kiali_login_fault(
        "manifests/keycloak.yaml",
        "          \"firstName\": \"Mesh\",\n          \"lastName\": \"Check\",\n",
        "",
        "Update Account Information",
    );
}

/// Kiali left on anonymous while the scenario says openid: the anonymous call is served, and the
/// kiali check fails saying so.
#[test]
fn kiali_serving_without_a_login_fails_kiali_under_openid() {
    kiali_login_fault(
        "values/kiali-openid.yaml",
        "      strategy: openid",
        "      strategy: anonymous",
        "Kiali serves without a login",
    );
}

/// Issue 26: a runner whose environment names a proxy (`HTTPS_PROXY`, here one that answers
/// nothing) and no `NO_PROXY`: kind's API server on 127.0.0.1 is reached directly, as kubectl and
/// helm reach it, and the run passes. Before, kube refused to build a client at all.
#[test]
fn a_proxy_in_the_environment_does_not_stand_between_the_run_and_a_local_cluster() {
    let Some(r) = Rehearsal::new("kind", Faults::default()) else { return };
    let scenario = r.scenario("ambient-kind", |t| only_checks(t, &["node-architecture", "gateway-binding"]));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let out = r.run_env(
        &scenario,
        &[
            ("HTTPS_PROXY", std::ffi::OsStr::new(&proxy)),
            ("NO_PROXY", std::ffi::OsStr::new("")),
            ("no_proxy", std::ffi::OsStr::new("")),
        ],
    );
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
}

/// Issue 25, item 5: a ztunnel container that was OOM-killed once (the pod Running again, Ready):
/// every other check passes, health fails naming the pod, the container and the kill. The healthy
/// kind rehearsal, where health passes, is the baseline.
#[test]
fn an_oom_killed_ztunnel_fails_health_naming_it() {
    if crate::common::upstream().is_none() {
        return;
    }
    fault(
        "kind",
        "ambient-kind",
        Faults { oom_killed: Some("ztunnel-".into()), ..Faults::default() },
        |t| only_checks(t, &["node-architecture", "health"]),
        &[
            ("checks::health", Outcome::Fail, "container istio-proxy was OOM-killed (restarts 1)"),
            ("provision::node-architecture", Outcome::Pass, ""),
        ],
    );
}

/// Issue 26: `existing.install: true` on a cluster with Cilium and the user's own objects but no
/// mesh installs everything, passes, and leaves the cluster exactly as found: every object that
/// was there keeps its uid, and nothing the run made is left. Before, cleanup deleted only the
/// namespaces, leaving istiod's validating webhooks (`failurePolicy: Fail`), the charts' cluster
/// roles, the CRDs, the probe policy, and a Kiali CR whose finalizer held istio-system Terminating.
#[test]
fn an_existing_cluster_install_is_uninstalled_leaving_the_cluster_as_found() {
    let Some(r) = Rehearsal::new("existing", Faults { mesh_absent: true, ..Faults::default() }) else { return };
    let before = settled_objects(&r);
    let scenario = r.scenario("existing-cluster", |t| t.replace("install: false", "install: true"));
    let out = r.run(&scenario);
    assert_report_complete(&r, &scenario, &out);
    assert_all_pass(&r, &out);
    let after = settled_objects(&r);
    let churn = |(g, p, _, _): &&Key| g == "coordination.k8s.io" || (g.is_empty() && p == "endpoints");
    let left: Vec<&Key> = after.keys().filter(|k| !before.contains_key(*k)).filter(|k| !churn(k)).collect();
    assert!(left.is_empty(), "left behind on the user's cluster: {left:#?}");
    let changed: Vec<&Key> = before.iter().filter(|(k, uid)| after.get(*k) != Some(*uid)).map(|(k, _)| k).collect();
    assert!(changed.is_empty(), "the user's objects deleted or replaced: {changed:#?}");
    let calls = r.sim.calls();
    let order: Vec<&String> = calls.iter().filter(|c| c.starts_with("helm uninstall")).collect();
    assert_eq!(order.len(), 8, "one uninstall per release the run installed: {order:#?}");
    assert!(order[0].contains("kiali-operator") && order[7].contains("istio-base"), "newest first: {order:#?}");
}

/// Issue 26: `existing.install: true` on a cluster whose mesh is already installed by helm
/// (the simulated existing cluster, releases and their records included) stops at the first
/// release that is there, names it and the fix, and changes nothing: before, `helm upgrade
/// --install` upgraded the user's Istio with meshcheck's values, and cleanup would have uninstalled it.
#[test]
fn an_existing_cluster_install_refuses_a_release_already_there_and_changes_nothing() {
    let Some(r) = Rehearsal::new("existing", Faults::default()) else { return };
    let before = settled_objects(&r);
    let scenario = r.scenario("existing-cluster", |t| t.replace("install: false", "install: true"));
    let out = r.run(&scenario);
    assert!(!out.status.success(), "an install over the user's mesh must not pass");
    assert_report_complete(&r, &scenario, &out);
    assert_verdicts(
        &r,
        &[
            ("install::phase", Outcome::Error, "helm release istio-base is already in namespace istio-system"),
            ("install::phase", Outcome::Error, "set existing.install: false"),
        ],
    );
    let calls = r.sim.calls();
    assert!(!calls.iter().any(|c| c.starts_with("helm upgrade") || c.starts_with("helm uninstall")), "{calls:#?}");
    let after = settled_objects(&r);
    let left: Vec<&Key> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let changed: Vec<&Key> = before.iter().filter(|(k, uid)| after.get(*k) != Some(*uid)).map(|(k, _)| k).collect();
    assert!(left.is_empty() && changed.is_empty(), "left: {left:#?}\nchanged: {changed:#?}");
}

/// The simulated cluster's objects once its controllers and operators have stopped making new
/// ones (two looks 300 ms apart agree; bounded) and no namespace is Terminating.
fn settled_objects(r: &Rehearsal) -> std::collections::BTreeMap<Key, String> {
    let _ = r.sim.namespaces();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = r.sim.objects();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = r.sim.objects();
        if now == seen || std::time::Instant::now() > deadline {
            return now;
        }
        seen = now;
    }
}

/// Issue 26: when taking back an existing-cluster install fails half-way (here the API server
/// refuses to delete the CiliumClusterwideNetworkPolicy the install applied), the other cleanup
/// steps still run (every release uninstalled, the namespaces deleted) and the verdict names the
/// step that failed and everything that may be left, with how to remove it.
#[test]
fn a_failed_existing_install_cleanup_names_what_may_be_left() {
    let faults = Faults { mesh_absent: true, ccnp_delete_fails: true, ..Faults::default() };
    let Some(r) = Rehearsal::new("existing", faults) else { return };
    let scenario =
        r.scenario("existing-cluster", |t| only_checks(t.replace("install: false", "install: true"), &["mtls"]));
    let out = r.run(&scenario);
    assert!(!out.status.success(), "a cleanup that failed must not pass");
    assert_verdicts(
        &r,
        &[
            ("checks::mtls", Outcome::Pass, ""),
            ("cleanup::phase", Outcome::Error, "delete what the run installed"),
            ("cleanup::phase", Outcome::Error, "helm list -A"),
            ("cleanup::phase", Outcome::Error, "allow-ambient-hostprobes"),
        ],
    );
    // A checks subset installs only the Istio charts: five releases, all uninstalled; Istio's CRDs
    // deleted though the policy's deletion failed before them; the namespaces deleted last.
    let calls = r.sim.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("helm uninstall")).count(), 5, "{calls:#?}");
    let telemetry_crd = "delete customresourcedefinitions /telemetries.telemetry.istio.io";
    assert!(calls.iter().any(|c| c.starts_with(telemetry_crd)), "{calls:#?}");
    assert!(
        calls.iter().any(|c| c.starts_with("delete namespaces /istio-system")),
        "the namespaces still go: {calls:#?}"
    );
}
