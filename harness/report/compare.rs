//! `meshcheck compare`: the outcomes of two reports side by side, and the release gate's verdict.

use std::{collections::BTreeMap, path::Path};

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus};

use crate::evidence::{Measurement, NumberRules, Outcome, Unit};

use super::record::{PHASE, ReportError, RunRecord, did_not_pass};

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

impl Comparison {
    /// Whether the candidate lost something the baseline had: a pass that is no pass now, or a
    /// passing trial that is missing.
    pub fn regressed(&self) -> bool {
        self.change == Change::Regressed || (self.change == Change::Missing && self.before == Some(Outcome::Pass))
    }

    /// Whether this is a check rather than a phase's own trial (`provision::phase`).
    pub fn is_check(&self) -> bool {
        self.key.rsplit_once("::").is_none_or(|(_, name)| name != PHASE)
    }
}

/// What a comparison says about a release gate. The gate passes only on checks that passed in the
/// candidate: two runs in which nothing ran have no regression, and still pass nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateVerdict {
    /// No regression, and at least one check passed in the candidate.
    Pass,
    /// A trial that passed in the baseline did not pass in the candidate, or is missing there.
    Regressed,
    /// No regression, but no check passed in the candidate: each one failed or errored.
    NothingPassed,
    /// No check ran in the candidate (each was not run, or there are none): nothing to gate on.
    NothingRan,
}

/// The gate's verdict on a comparison (see [`GateVerdict`]): a number over its rule regresses as a
/// check does.
pub fn gate(rows: &[Comparison], numbers: &[NumberRow]) -> GateVerdict {
    if rows.iter().any(Comparison::regressed) || numbers.iter().any(NumberRow::over) {
        return GateVerdict::Regressed;
    }
    let candidate: Vec<Outcome> = rows.iter().filter(|c| c.is_check()).filter_map(|c| c.after).collect();
    if candidate.contains(&Outcome::Pass) {
        GateVerdict::Pass
    } else if candidate.iter().any(|&o| did_not_pass(o)) {
        GateVerdict::NothingPassed
    } else {
        GateVerdict::NothingRan
    }
}

/// Loads outcomes keyed by `suite::name` from a run folder, its `junit.xml`, or the JUnit file
/// cargo-nextest writes for the conformance suite.
///
/// `pass` picks one pass of a release gate run (`baseline` or `candidate`) and names its suite
/// `checks`, so either pass compares with a plain run; the other pass is left out and every other
/// suite kept. Without `pass` every suite keeps its name. A trial reported twice (two testsuites of
/// one name, say two runs' reports merged into one file) is an error rather than one outcome
/// silently hiding the other, and so is a report without testcases.
pub fn load_outcomes(path: &Path, pass: Option<&str>) -> Result<BTreeMap<String, Outcome>, ReportError> {
    let junit_path = if path.is_dir() { path.join("junit.xml") } else { path.to_path_buf() };
    let io = |source| ReportError::Io { path: junit_path.clone(), source };
    let bytes = crate::common::util::read_run_file(&junit_path, crate::common::util::RUN_FILE_MAX).map_err(io)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ReportError::Format { path: junit_path.clone(), message: e.to_string() })?;
    let report = Report::deserialize_from_str(&text)
        .map_err(|e| ReportError::Format { path: junit_path.clone(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    let mut reported_in: BTreeMap<String, String> = BTreeMap::new();
    for suite in &report.test_suites {
        for case in &suite.test_cases {
            // meshcheck's own JUnit: suite `checks`, case `mtls`. nextest's: suite = the binary id
            // (`meshcheck::conformance`), case = the trial name (`checks::mtls`).
            let (phase, check) =
                case.name.as_str().split_once("::").unwrap_or((suite.name.as_str(), case.name.as_str()));
            let folded = match (phase, pass) {
                ("baseline" | "candidate", Some(p)) if p != phase => continue,
                ("baseline" | "candidate", Some(_)) => "checks",
                (n, _) => n,
            };
            let outcome = match &case.status {
                TestCaseStatus::Success { .. } => Outcome::Pass,
                TestCaseStatus::NonSuccess { kind: NonSuccessKind::Failure, .. } if reported_not_run(case) => {
                    Outcome::NotRun
                }
                TestCaseStatus::NonSuccess { kind: NonSuccessKind::Failure, .. } => Outcome::Fail,
                TestCaseStatus::NonSuccess { kind: NonSuccessKind::Error, .. } => Outcome::Error,
                TestCaseStatus::Skipped { .. } => Outcome::NotRun,
            };
            let key = format!("{folded}::{check}");
            if let Some(first) = reported_in.insert(key.clone(), suite.name.to_string()) {
                return Err(ReportError::Format {
                    path: junit_path,
                    message: format!(
                        "`{key}` is reported twice (in testsuite `{first}` and in testsuite `{}`): a comparison needs \
                         one outcome per trial, so compare the two runs' reports one at a time",
                        suite.name.as_str()
                    ),
                });
            }
            out.insert(key, outcome);
        }
    }
    if out.is_empty() {
        return Err(ReportError::Format {
            path: junit_path,
            message: "no testcase: not a JUnit report of meshcheck or of cargo-nextest".into(),
        });
    }
    Ok(out)
}

/// cargo-nextest has no run-time skip, so the conformance suite reports a trial that did not run
/// as a failure whose message begins with `not run` (suites/conformance.rs). nextest keeps the
/// trial's output, in which libtest-mimic prints that message under `---- <trial> ----`.
fn reported_not_run(case: &TestCase) -> bool {
    let header = format!("---- {} ----\nnot run", case.name.as_str());
    case.system_out.as_ref().is_some_and(|out| out.as_str().contains(&header))
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

/// One number of two runs (or of a release gate's two passes) side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    /// `<suite>::<check> <metric>`, passes folded to `checks` as for outcomes.
    pub key: String,
    /// Its unit.
    pub unit: Unit,
    /// The baseline's value.
    pub before: f64,
    /// The candidate's value.
    pub after: f64,
    /// `after / before`.
    pub ratio: f64,
    /// The candidate's rule it breaks ([`NumberRules::hold`]), if any.
    pub broken: Option<String>,
}

impl NumberRow {
    /// Whether it breaks a rule.
    pub fn over(&self) -> bool {
        self.broken.is_some()
    }
}

/// The numbers of one pass of a run folder (see [`load_outcomes`] for `pass`), keyed like
/// [`NumberRow::key`], with the run's rules. A JUnit file has no numbers (and the default rules).
pub fn load_measurements(
    path: &Path,
    pass: Option<&str>,
) -> Result<(BTreeMap<String, Measurement>, NumberRules), ReportError> {
    if !path.is_dir() {
        return Ok((BTreeMap::new(), NumberRules::of_scenario(&serde_json::Value::Null)));
    }
    let record = RunRecord::load(path)?;
    let rules = NumberRules::of_scenario(&record.scenario);
    let mut out = BTreeMap::new();
    for r in &record.results {
        let suite = match (r.suite.as_str(), pass) {
            ("baseline" | "candidate", Some(p)) if p != r.suite => continue,
            ("baseline" | "candidate", Some(_)) => "checks",
            (s, _) => s,
        };
        for m in &r.verdict.measurements {
            out.insert(format!("{suite}::{} {}", r.name, m.metric), m.clone());
        }
    }
    Ok((out, rules))
}

/// The numbers both sides have, under the candidate's rules.
pub fn compare_numbers(
    before: &BTreeMap<String, Measurement>,
    after: &BTreeMap<String, Measurement>,
    rules: &NumberRules,
) -> Vec<NumberRow> {
    after
        .iter()
        .filter_map(|(key, a)| {
            let b = before.get(key).filter(|b| b.unit == a.unit)?;
            let held = rules.hold(&a.metric, a.unit, b.value, a.value);
            Some(NumberRow {
                key: key.clone(),
                unit: a.unit,
                before: b.value,
                after: a.value,
                ratio: held.ratio,
                broken: held.broken,
            })
        })
        .collect()
}
