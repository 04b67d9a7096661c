//! The run folder (`reports/<run-id>/`, layout in `reports/README.md`) and what is written into it:
//! `run.json`, `junit.xml`, `summary.md`, recorded manifests. Reporting is kept apart from running:
//! every writer here takes a finished or partial [`RunRecord`], so a run that dies at any phase still
//! leaves a valid `junit.xml` and `summary.md`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use crate::{
    evidence::{Outcome, ServiceEdge, Verdict},
    util::write_atomic,
};

/// Version of the run-folder format written into `run.json`; `judge` reads this and older ones.
/// 2: mtls and metrics keep their own ztunnel evidence (`mtls/ztunnel/`, `metrics/ztunnel/`) instead of
/// sharing `ztunnel/`; the STRICT probe records a baseline and curl's exit codes; probes records the
/// targets before the policy and the enforcement probe; metrics records the ztunnel pods.
pub const FORMAT: u32 = 2;

/// One executed step of a phase; commands and applied objects have their own records under
/// `commands/` and `manifests/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// The phase.
    pub phase: String,
    /// What ran ([`crate::plan::Step::label`]; concurrent waits joined with ` + `).
    pub step: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One result: a phase step, a check, or a trial that did not run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialResult {
    /// JUnit suite: `preflight`, `provision`, `install`, `deploy`, `checks`, `upgrade`, and for
    /// release gates `baseline` and `candidate`.
    pub suite: String,
    /// Test case name (`mtls`, `cilium`, …).
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Wall time.
    pub duration_secs: f64,
    /// For checks: the evidence folder (relative to the run folder) the judge read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_root: Option<String>,
    /// For checks: whether the collector finished. When it did not, the verdict is the collector's
    /// error and `judge` keeps it rather than re-judging partial evidence.
    #[serde(default = "yes")]
    pub collected: bool,
}

fn yes() -> bool {
    true
}

/// `run.json`: everything about a run but the evidence itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`FORMAT`] at the time of writing.
    pub format: u32,
    /// Run id (folder name).
    pub run_id: String,
    /// Scenario name.
    pub scenario_name: String,
    /// The whole scenario.
    pub scenario: serde_json::Value,
    /// Provider.
    pub provider: String,
    /// Expected node architecture.
    pub architecture: String,
    /// Host: OS, architecture, hostname.
    pub host: BTreeMap<String, String>,
    /// Pinned versions.
    pub versions: BTreeMap<String, String>,
    /// Start time.
    pub started_at: String,
    /// End time (empty while running).
    #[serde(default)]
    pub ended_at: String,
    /// Final outcome (`not-run` while running).
    pub outcome: Outcome,
    /// Wall time of each phase so far (its steps and its checks), in seconds, including `cleanup`.
    #[serde(default)]
    pub phase_durations_secs: BTreeMap<String, f64>,
    /// Every step (or batch of concurrent waits) executed so far, in order, with its outcome.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Every result so far, in order.
    pub results: Vec<TrialResult>,
}

impl RunRecord {
    /// The overall outcome: error beats fail beats pass; all not-run is not-run.
    pub fn overall(&self) -> Outcome {
        let outcomes: Vec<Outcome> = self.results.iter().map(|r| r.verdict.outcome).collect();
        if outcomes.contains(&Outcome::Error) {
            Outcome::Error
        } else if outcomes.contains(&Outcome::Fail) {
            Outcome::Fail
        } else if outcomes.contains(&Outcome::Pass) {
            Outcome::Pass
        } else {
            Outcome::NotRun
        }
    }

    /// Reads `run.json` of a run folder.
    pub fn load(run_dir: &Path) -> Result<RunRecord, ReportError> {
        let path = run_dir.join("run.json");
        let bytes = std::fs::read(&path).map_err(|source| ReportError::Io { path: path.clone(), source })?;
        let record: RunRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ReportError::Format { path: path.clone(), message: e.to_string() })?;
        if record.format > FORMAT {
            return Err(ReportError::Format {
                path,
                message: format!("format {} is newer than this meshcheck understands ({FORMAT})", record.format),
            });
        }
        Ok(record)
    }

    /// Writes `run.json`, `junit.xml` and `summary.md` into the run folder, each atomically.
    /// `service_graph` is drawn in summary.md (empty: no graph section).
    pub fn write_all(&self, run_dir: &Path, service_graph: &[ServiceEdge]) -> Result<(), ReportError> {
        let io = |path: PathBuf| move |source| ReportError::Io { path, source };
        let json = serde_json::to_vec_pretty(self).expect("run record serializes");
        write_atomic(&run_dir.join("run.json"), &json).map_err(io(run_dir.join("run.json")))?;
        let xml = junit(self)
            .to_string()
            .map(|x| strip_root_skipped(&x))
            .map_err(|e| ReportError::Format { path: run_dir.join("junit.xml"), message: e.to_string() })?;
        write_atomic(&run_dir.join("junit.xml"), xml.as_bytes()).map_err(io(run_dir.join("junit.xml")))?;
        let md = summary(self, service_graph);
        write_atomic(&run_dir.join("summary.md"), md.as_bytes()).map_err(io(run_dir.join("summary.md")))
    }
}

/// Errors reading or writing reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// Content that is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The JUnit 10 schema (Jenkins xunit) has no `skipped` attribute on `<testsuites>`; quick-junit
/// writes one. Dropping it from the root element keeps the file valid; each `<testsuite>` keeps its
/// own `skipped` count.
fn strip_root_skipped(xml: &str) -> String {
    let Some(start) = xml.find("<testsuites") else { return xml.to_string() };
    let end = start + xml[start..].find('>').unwrap_or(0);
    let head = &xml[start..end];
    let Some(attr) = head.find(" skipped=\"") else { return xml.to_string() };
    let attr_end = attr + 10 + head[attr + 10..].find('"').map(|i| i + 1).unwrap_or(0);
    format!("{}{}{}{}", &xml[..start], &head[..attr], &head[attr_end..], &xml[end..])
}

/// Builds the JUnit report: one testsuite per phase, one testcase per step or check.
pub fn junit(record: &RunRecord) -> Report {
    let mut report = Report::new(format!("meshcheck {}", record.scenario_name));
    let mut suites: Vec<(String, TestSuite)> = Vec::new();
    for r in &record.results {
        if !suites.iter().any(|(n, _)| n == &r.suite) {
            let mut suite = TestSuite::new(r.suite.clone());
            suite.add_property(Property::new("scenario", record.scenario_name.clone()));
            suite.add_property(Property::new("provider", record.provider.clone()));
            suite.add_property(Property::new("architecture", record.architecture.clone()));
            suite.add_property(Property::new("run_id", record.run_id.clone()));
            for (k, v) in &record.versions {
                suite.add_property(Property::new(format!("version.{k}"), v.clone()));
            }
            suites.push((r.suite.clone(), suite));
        }
        let suite = &mut suites.iter_mut().find(|(n, _)| n == &r.suite).expect("just added").1;
        let mut status = match r.verdict.outcome {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Outcome::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
            Outcome::NotRun => TestCaseStatus::skipped(),
        };
        if r.verdict.outcome != Outcome::Pass {
            status.set_message(r.verdict.reason.clone());
            if !r.verdict.details.is_empty() {
                status.set_description(r.verdict.explanation());
            }
        }
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(format!("meshcheck.{}", r.suite));
        case.set_time(Duration::from_secs_f64(r.duration_secs.max(0.0)));
        let mut out = String::new();
        if r.verdict.outcome == Outcome::Pass {
            out.push_str(&r.verdict.explanation());
            out.push('\n');
        }
        if let Some(root) = &r.evidence_root {
            for e in &r.verdict.evidence {
                out.push_str(&format!("evidence: {root}/{e}\n"));
            }
        }
        if !out.is_empty() {
            case.set_system_out(out);
        }
        suite.add_test_case(case);
    }
    report.add_test_suites(suites.into_iter().map(|(_, s)| s));
    report
}

/// `summary.md`: versions on top, a table of results, and Kiali's observed service graph as Mermaid.
pub fn summary(record: &RunRecord, service_graph: &[ServiceEdge]) -> String {
    let mut md = format!("# meshcheck: {} ({})\n\n", record.scenario_name, record.overall());
    md.push_str(&format!(
        "Run `{}` · provider **{}** · architecture **{}** · started {}{}\n\n",
        record.run_id,
        record.provider,
        record.architecture,
        record.started_at,
        if record.ended_at.is_empty() { String::new() } else { format!(" · ended {}", record.ended_at) }
    ));
    if !record.phase_durations_secs.is_empty() {
        let phases: Vec<String> =
            record.phase_durations_secs.iter().map(|(phase, secs)| format!("{phase} {secs:.1}s")).collect();
        md.push_str(&format!("Phase durations: {}\n\n", phases.join(" · ")));
    }
    md.push_str("| component | version |\n|---|---|\n");
    for (k, v) in &record.versions {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n| suite | check | verdict | duration | reason |\n|---|---|---|---|---|\n");
    for r in &record.results {
        let icon = match r.verdict.outcome {
            Outcome::Pass => "✅ pass",
            Outcome::Fail => "❌ fail",
            Outcome::Error => "💥 error",
            Outcome::NotRun => "⏭️ not run",
        };
        md.push_str(&format!(
            "| {} | {} | {} | {:.1}s | {} |\n",
            r.suite,
            r.name,
            icon,
            r.duration_secs,
            r.verdict.reason.replace('|', "\\|").replace('\n', " ")
        ));
    }
    if record.results.iter().any(|r| r.suite == "candidate") {
        md.push_str(&gate_table(record));
    }
    if let Some(mermaid) = mermaid_graph(service_graph) {
        md.push_str("\n## Service graph observed by Kiali\n\n```mermaid\n");
        md.push_str(&mermaid);
        md.push_str("```\n");
    }
    md
}

/// The release-gate view: each check's baseline and candidate verdicts side by side, under the
/// Istio version each pass ran on.
fn gate_table(record: &RunRecord) -> String {
    let version = |k: &str| record.versions.get(k).map(String::as_str).unwrap_or("?");
    let mut md = format!(
        "\n## Release gate: Istio {} → {}\n\n| check | baseline (Istio {}) | candidate (Istio {}) | change |\n|---|---|---|---|\n",
        version("istio"),
        version("istio_upgrade_to"),
        version("istio"),
        version("istio_upgrade_to")
    );
    let pass = |suite: &str| -> BTreeMap<String, Outcome> {
        record
            .results
            .iter()
            .filter(|r| r.suite == suite && r.name != "phase")
            .map(|r| (r.name.clone(), r.verdict.outcome))
            .collect()
    };
    let mut rows: BTreeMap<String, Comparison> =
        compare(&pass("baseline"), &pass("candidate")).into_iter().map(|c| (c.key.clone(), c)).collect();
    // In plan order; taking each row out means a check present in both passes is listed once.
    for r in record.results.iter().filter(|r| (r.suite == "baseline" || r.suite == "candidate") && r.name != "phase") {
        let Some(c) = rows.remove(&r.name) else { continue };
        let change = match c.change {
            Change::Regressed => "**regressed**",
            Change::Fixed => "fixed",
            Change::Missing => "missing",
            Change::New => "new",
            Change::Same => "",
        };
        let show = |o: Option<Outcome>| o.map(|o| o.to_string()).unwrap_or_else(|| "—".into());
        md.push_str(&format!("| {} | {} | {} | {change} |\n", r.name, show(c.before), show(c.after)));
    }
    md
}

/// Renders a service graph as a Mermaid flowchart (edges labelled with their mTLS share).
pub fn mermaid_graph(edges: &[ServiceEdge]) -> Option<String> {
    if edges.is_empty() {
        return None;
    }
    let mut out = String::from("flowchart LR\n");
    for e in edges {
        let id = |s: &str| s.replace(['-', '.'], "_");
        let label = if e.mtls_percent.is_empty() { String::new() } else { format!("|mTLS {}%|", e.mtls_percent) };
        out.push_str(&format!("  {}[{}] -->{} {}[{}]\n", id(&e.source), e.source, label, id(&e.target), e.target));
    }
    Some(out)
}

/// One check's change between two runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Passed in the baseline, not in the candidate.
    Regressed,
    /// Did not pass in the baseline, passes now.
    Fixed,
    /// Only in the candidate.
    New,
    /// Only in the baseline.
    Missing,
    /// Same outcome.
    Same,
}

/// One line of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// `suite::name`, with gate pass names (`baseline`/`candidate`) folded to `checks`.
    pub key: String,
    /// Baseline outcome.
    pub before: Option<Outcome>,
    /// Candidate outcome.
    pub after: Option<Outcome>,
    /// What changed.
    pub change: Change,
}

/// Loads outcomes keyed by `suite::name` from a run folder, its `junit.xml`, or the JUnit file
/// cargo-nextest writes for the conformance suite.
/// `pass` picks one pass of a release gate run (`baseline` or `candidate`); others are kept.
pub fn load_outcomes(path: &Path, pass: Option<&str>) -> Result<BTreeMap<String, Outcome>, ReportError> {
    let junit_path = if path.is_dir() { path.join("junit.xml") } else { path.to_path_buf() };
    let text =
        std::fs::read_to_string(&junit_path).map_err(|source| ReportError::Io { path: junit_path.clone(), source })?;
    let report = Report::deserialize_from_str(&text)
        .map_err(|e| ReportError::Format { path: junit_path.clone(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    for suite in &report.test_suites {
        for case in &suite.test_cases {
            // meshcheck's own JUnit: suite `checks`, case `mtls`. nextest's: suite = the binary id
            // (`meshcheck::conformance`), case = the trial name (`checks::mtls`).
            let (phase, check) =
                case.name.as_str().split_once("::").unwrap_or((suite.name.as_str(), case.name.as_str()));
            let folded = match (phase, pass) {
                ("baseline" | "candidate", Some(p)) if p != phase => continue,
                ("baseline" | "candidate", _) => "checks",
                (n, _) => n,
            };
            let outcome = match &case.status {
                TestCaseStatus::Success { .. } => Outcome::Pass,
                TestCaseStatus::NonSuccess { kind: NonSuccessKind::Failure, .. } => Outcome::Fail,
                TestCaseStatus::NonSuccess { kind: NonSuccessKind::Error, .. } => Outcome::Error,
                TestCaseStatus::Skipped { .. } => Outcome::NotRun,
            };
            out.insert(format!("{folded}::{check}"), outcome);
        }
    }
    Ok(out)
}

/// Compares two outcome maps.
pub fn compare(before: &BTreeMap<String, Outcome>, after: &BTreeMap<String, Outcome>) -> Vec<Comparison> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (b, a) = (before.get(k).copied(), after.get(k).copied());
            let change = match (b, a) {
                (Some(_), None) => Change::Missing,
                (None, _) => Change::New,
                (Some(Outcome::Pass), Some(x)) if x != Outcome::Pass => Change::Regressed,
                (Some(x), Some(Outcome::Pass)) if x != Outcome::Pass => Change::Fixed,
                _ => Change::Same,
            };
            Comparison { key: k.clone(), before: b, after: a, change }
        })
        .collect()
}
