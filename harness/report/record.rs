//! The run record (`run.json`): steps, trials and their verdicts, and how a trial that did not
//! pass is explained (its root cause, the commands that failed while it ran).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::{
    cluster::runner::CommandRecord,
    evidence::{Outcome, Verdict},
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
    /// What ran ([`crate::plan::Step::label`]).
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
    /// Start time, RFC 3339. Empty for a trial the session never reached (one a
    /// test filter left out) and in run folders written before starts were recorded: those load,
    /// they only lack a place on the timeline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
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

pub(super) fn millis(secs: f64) -> i64 {
    // A run's own durations are at most hours; one read from a hostile record saturates (NaN is 0)
    // and whoever adds it to a time checks the sum.
    (secs.max(0.0) * 1000.0).round() as i64
}

pub(super) fn yes() -> bool {
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
    /// Every step executed so far, in the order each ended, with its own start, duration and outcome.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Every result so far, in order.
    pub results: Vec<TrialResult>,
    /// The diagnostic bundle written at the first failure, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleRecord>,
}

/// Where the diagnostic bundle is and what started it (its `index.json` says what it holds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleRecord {
    /// Its index, relative to the run folder (`evidence/bundle/index.json`).
    pub index: String,
    /// The trial whose failure started it (`checks::traces`).
    pub trigger: String,
    /// How many files it holds.
    pub files: usize,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many parts could not be collected (each is named in the index).
    pub missing: usize,
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
        let bytes = crate::common::util::read_run_file(&path, crate::common::util::RUN_FILE_MAX)
            .map_err(|source| ReportError::Io { path: path.clone(), source })?;
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

/// The name of a phase's own trial (`provision::phase`), as the session names it.
pub(super) const PHASE: &str = "phase";

/// Lines of a failed command's output quoted in summary.md and on the console: as many as the
/// runner quotes in a command's error (`runner::STDERR_TAIL_LINES`).
pub(super) const COMMAND_TAIL_LINES: usize = 15;

pub(super) fn did_not_pass(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Fail | Outcome::Error)
}

impl TrialResult {
    /// `suite::name`, the name the conformance suite gives the trial.
    pub fn trial_name(&self) -> String {
        format!("{}::{}", self.suite, self.name)
    }
}

/// The trial that stopped the run, as an index into `results`.
///
/// The session stops after a phase that does not pass, or after an interruption, and records every
/// later trial it reaches as not run. So the root cause is the first phase that failed or errored,
/// else the failed trial right before the first trial that was reached and not run. A check that
/// fails on its own stops nothing and is no root cause.
pub fn root_cause(results: &[TrialResult]) -> Option<usize> {
    if let Some(phase) = results.iter().position(|r| r.name == PHASE && did_not_pass(r.verdict.outcome)) {
        return Some(phase);
    }
    let first_blocked =
        results.iter().position(|r| r.verdict.outcome == Outcome::NotRun && !r.started_at.is_empty())?;
    results[..first_blocked].iter().rposition(|r| did_not_pass(r.verdict.outcome))
}

/// The root cause that kept `results[index]` from running, when that is why it did not run (a
/// trial a test filter left out was never reached and has another reason).
pub fn blocked_by(results: &[TrialResult], index: usize) -> Option<&TrialResult> {
    let r = results.get(index)?;
    if r.verdict.outcome != Outcome::NotRun || r.started_at.is_empty() {
        return None;
    }
    root_cause(results).filter(|&cause| cause < index).map(|cause| &results[cause])
}

/// One line saying what became of `results[index]`, for a reader looking for why a run failed: the
/// root cause says it is one, a trial it kept from running names it, any other gives its reason.
pub fn headline(results: &[TrialResult], index: usize) -> String {
    let r = &results[index];
    if let Some(cause) = blocked_by(results, index) {
        format!("not run because `{}` did not pass", cause.trial_name())
    } else if root_cause(results) == Some(index) {
        format!("root cause: {}", r.verdict.reason)
    } else {
        r.verdict.reason.clone()
    }
}

/// What a trial that did not run says: its [`headline`] and, when a root cause kept it from
/// running, that root cause's whole [`explain`] indented under it. A runner that shows trials in
/// its own order and stops at the first failure (cargo-nextest: alphabetical, fail-fast) may never
/// show the root cause's own trial; every trial it kept from running carries its fixes.
pub fn not_run_explanation(results: &[TrialResult], index: usize) -> String {
    let mut out = headline(results, index);
    if let Some(cause) = root_cause(results).filter(|_| blocked_by(results, index).is_some()) {
        for line in explain(results, cause).lines() {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out
}

/// [`headline`], then the verdict's details one per line. A detail of several lines (a failed
/// command's stderr tail) keeps every line, indented under its first.
pub fn explain(results: &[TrialResult], index: usize) -> String {
    let mut out = headline(results, index);
    for line in detail_lines(&results[index].verdict) {
        out.push_str("\n  ");
        out.push_str(&line);
    }
    out
}

pub(super) fn detail_lines(v: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    for detail in &v.details {
        let mut lines = detail.lines();
        out.push(format!("- {}", lines.next().unwrap_or_default()));
        out.extend(lines.map(|l| format!("  {l}")));
    }
    out
}

/// Everything a reader needs about a trial that failed or errored, as plain text: its
/// [`headline`], then [`failure_details`] indented under it.
pub fn failure_text(results: &[TrialResult], index: usize, commands: &[CommandRecord]) -> String {
    let mut out = headline(results, index);
    for line in failure_details(&results[index], commands).lines() {
        out.push('\n');
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
    }
    out
}

/// What a failed or errored trial recorded beyond its reason: its details (a detail of several
/// lines, such as a failed command's stderr tail, keeps every line), the evidence files it read, and
/// each command that failed while it ran with the end of its output, unless a detail already quotes
/// it. `commands` are the run's [`failed_commands`].
pub fn failure_details(r: &TrialResult, commands: &[CommandRecord]) -> String {
    let mut lines = detail_lines(&r.verdict);
    if let Some(root) = &r.evidence_root {
        lines.extend(r.verdict.evidence.iter().map(|e| format!("evidence: {root}/{e}")));
    }
    let quoted = format!("{}\n{}", r.verdict.reason, r.verdict.details.join("\n"));
    for c in commands_during(r, commands) {
        let last = c.stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        if !last.is_empty() && quoted.contains(last) {
            continue;
        }
        lines.push(String::new());
        lines.push(command_failure(c));
    }
    lines.join("\n")
}

/// The command records of a run folder (`commands/NNN-<tool>.json`) that failed: a non-zero exit or
/// a passed deadline, oldest first. Commands killed by Ctrl-C are left out (the interruption is the
/// reason), and so is a record that cannot be read, with a warning: they only add detail.
pub fn failed_commands(run_dir: &Path) -> Vec<CommandRecord> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(run_dir.join("commands"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut commands: Vec<CommandRecord> = paths
        .iter()
        .filter_map(|p| {
            let read =
                crate::common::util::read_run_file(p, crate::common::util::RUN_FILE_MAX).map_err(|e| e.to_string());
            match read.and_then(|b| serde_json::from_slice::<CommandRecord>(&b).map_err(|e| e.to_string())) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("skipping command record {}: {e}", p.display());
                    None
                }
            }
        })
        .filter(|c| c.timed_out || c.exit_code.is_some_and(|code| code != 0))
        .collect();
    // RFC 3339 in one format sorts by time.
    commands.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    commands
}

/// The commands that started while `r` ran. Both starts are recorded to the millisecond (rounded
/// down), hence the slack.
pub(super) fn commands_during<'a>(r: &TrialResult, commands: &'a [CommandRecord]) -> Vec<&'a CommandRecord> {
    let Some(start) = parse_time(&r.started_at) else { return Vec::new() };
    let slack = chrono::TimeDelta::milliseconds(2);
    // A duration no clock can add (a hostile record) counts to the end of time.
    let end = chrono::TimeDelta::try_milliseconds(millis(r.duration_secs))
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<FixedOffset>::MAX_UTC.fixed_offset());
    commands
        .iter()
        .filter(|c| parse_time(&c.started_at).is_some_and(|t| t >= start - slack && t - slack <= end))
        .collect()
}

pub(super) fn parse_time(rfc3339: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(rfc3339).ok()
}

/// A failed command: its command line, how it ended, and the last lines it wrote (stderr, or
/// stdout when stderr is empty, as some tools report errors there).
pub fn command_failure(c: &CommandRecord) -> String {
    let how = if c.timed_out {
        format!("did not finish within its deadline ({:.0}s) and was killed", c.duration_secs)
    } else {
        format!("exited with code {}", c.exit_code.unwrap_or(-1))
    };
    let (stream, text) = if c.stderr.trim().is_empty() { ("stdout", &c.stdout) } else { ("stderr", &c.stderr) };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(COMMAND_TAIL_LINES)..].join("\n");
    if tail.trim().is_empty() {
        format!("$ {}\n{how} and wrote nothing", c.argv.join(" "))
    } else {
        format!("$ {}\n{how}; {stream} ends with:\n{tail}", c.argv.join(" "))
    }
}
