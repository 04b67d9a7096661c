//! The run folder (`reports/<run-id>/`, layout in `reports/README.md`) and what is written into it:
//! `run.json`, `junit.xml`, `summary.md`, recorded manifests. Reporting is kept apart from running:
//! every writer here takes a finished or partial [`RunRecord`], so a run that dies at any phase still
//! leaves a valid `junit.xml` and `summary.md`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, FixedOffset};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use crate::{
    cluster::runner::CommandRecord,
    common::util::{first_line, write_atomic},
    evidence::{Outcome, ServiceEdge, Verdict},
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

fn millis(secs: f64) -> i64 {
    // Durations are wall times of a run (at most hours): far inside i64 milliseconds.
    (secs.max(0.0) * 1000.0).round() as i64
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
    /// Every step executed so far, in the order each ended, with its own start, duration and outcome.
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
    /// `service_graph` is drawn in summary.md (empty: no graph section). When a trial failed,
    /// summary.md also quotes the commands that failed while it ran, read from `commands/`.
    pub fn write_all(&self, run_dir: &Path, service_graph: &[ServiceEdge]) -> Result<(), ReportError> {
        let io = |path: PathBuf| move |source| ReportError::Io { path, source };
        let json = serde_json::to_vec_pretty(self).expect("run record serializes");
        write_atomic(&run_dir.join("run.json"), &json).map_err(io(run_dir.join("run.json")))?;
        let xml = junit(self)
            .to_string()
            .map(|x| strip_root_skipped(&x))
            .map_err(|e| ReportError::Format { path: run_dir.join("junit.xml"), message: e.to_string() })?;
        write_atomic(&run_dir.join("junit.xml"), xml.as_bytes()).map_err(io(run_dir.join("junit.xml")))?;
        let commands = if self.results.iter().any(|r| did_not_pass(r.verdict.outcome)) {
            failed_commands(run_dir)
        } else {
            Vec::new()
        };
        let md = summary(self, service_graph, &commands);
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

/// The name of a phase's own trial (`provision::phase`), as the session names it.
const PHASE: &str = "phase";

/// Lines of a failed command's output quoted in summary.md and on the console: as many as the
/// runner quotes in a command's error (`runner::STDERR_TAIL_LINES`).
const COMMAND_TAIL_LINES: usize = 15;

fn did_not_pass(outcome: Outcome) -> bool {
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

fn detail_lines(v: &Verdict) -> Vec<String> {
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
            let read = std::fs::read(p).map_err(|e| e.to_string());
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
fn commands_during<'a>(r: &TrialResult, commands: &'a [CommandRecord]) -> Vec<&'a CommandRecord> {
    let Some(start) = parse_time(&r.started_at) else { return Vec::new() };
    let slack = chrono::TimeDelta::milliseconds(2);
    let end = start + chrono::TimeDelta::milliseconds(millis(r.duration_secs));
    commands
        .iter()
        .filter(|c| parse_time(&c.started_at).is_some_and(|t| t >= start - slack && t <= end + slack))
        .collect()
}

fn parse_time(rfc3339: &str) -> Option<DateTime<FixedOffset>> {
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

/// Builds the JUnit report: one testsuite per phase, one testcase per step or check.
///
/// Each testsuite's `timestamp` is the start of its first trial. The Jenkins xUnit schema
/// (`junit-10.xsd`, which the offline tests validate against) allows no `timestamp` on a
/// testcase, so a testcase's start is the first line of its `system-out`, and a phase lists its
/// steps there with their starts and durations.
pub fn junit(record: &RunRecord) -> Report {
    let results = &record.results;
    let mut report = Report::new(format!("meshcheck {}", record.scenario_name));
    let mut suites: Vec<(String, TestSuite, Option<DateTime<FixedOffset>>)> = Vec::new();
    for (index, r) in results.iter().enumerate() {
        if !suites.iter().any(|(n, _, _)| n == &r.suite) {
            let mut suite = TestSuite::new(r.suite.clone());
            suite.add_property(Property::new("scenario", record.scenario_name.clone()));
            suite.add_property(Property::new("provider", record.provider.clone()));
            suite.add_property(Property::new("architecture", record.architecture.clone()));
            suite.add_property(Property::new("run_id", record.run_id.clone()));
            for (k, v) in &record.versions {
                suite.add_property(Property::new(format!("version.{k}"), v.clone()));
            }
            suites.push((r.suite.clone(), suite, None));
        }
        let (_, suite, first_start) = suites.iter_mut().find(|(n, _, _)| n == &r.suite).expect("just added");
        let started = parse_time(&r.started_at);
        if let Some(t) = started
            && first_start.is_none_or(|first| t < first)
        {
            *first_start = Some(t);
        }
        let mut status = match r.verdict.outcome {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Outcome::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
            Outcome::NotRun => TestCaseStatus::skipped(),
        };
        if r.verdict.outcome != Outcome::Pass {
            status.set_message(headline(results, index));
            if !r.verdict.details.is_empty() {
                status.set_description(explain(results, index));
            }
        }
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(format!("meshcheck.{}", r.suite));
        case.set_time(Duration::from_secs_f64(r.duration_secs.max(0.0)));
        let mut out = String::new();
        if started.is_some() {
            out.push_str(&format!("started_at: {}\n", r.started_at));
        }
        if r.verdict.outcome == Outcome::Pass {
            out.push_str(&r.verdict.explanation());
            out.push('\n');
        }
        if r.name == PHASE {
            for step in record.steps.iter().filter(|s| s.phase == r.suite) {
                let failed = step.error.as_deref().map(|e| format!(": {}", first_line(e))).unwrap_or_default();
                out.push_str(&format!("step {} {:.3}s {}{failed}\n", step.started_at, step.duration_secs, step.step));
            }
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
    report.add_test_suites(suites.into_iter().map(|(_, mut suite, first_start)| {
        if let Some(t) = first_start {
            suite.set_timestamp(t);
        }
        suite
    }));
    report
}

/// `summary.md`, the GitHub job summary: what stopped the run (if anything) first, versions, a
/// table of results, every failure with its details and the failed commands' output, the release
/// gate, a timeline of steps and checks, and Kiali's observed service graph.
pub fn summary(record: &RunRecord, service_graph: &[ServiceEdge], failed_commands: &[CommandRecord]) -> String {
    let results = &record.results;
    let mut md = format!("# meshcheck: {} ({})\n\n", record.scenario_name, record.overall());
    md.push_str(&format!(
        "Run `{}` · provider **{}** · architecture **{}** · started {}{}\n\n",
        record.run_id,
        record.provider,
        record.architecture,
        record.started_at,
        if record.ended_at.is_empty() { String::new() } else { format!(" · ended {}", record.ended_at) }
    ));
    if let Some(cause) = root_cause(results) {
        let r = &results[cause];
        let blocked = (0..results.len()).filter(|&i| blocked_by(results, i).is_some()).count();
        md.push_str(&format!(
            "**Stopped at `{}`** ({}): {}",
            r.trial_name(),
            r.verdict.outcome,
            markdown_text(&r.verdict.reason)
        ));
        if blocked > 0 {
            md.push_str(&format!(" — {blocked} trial(s) after it did not run"));
        }
        md.push_str(". See [Failures](#failures).\n\n");
    }
    if !record.phase_durations_secs.is_empty() {
        let phases: Vec<String> =
            record.phase_durations_secs.iter().map(|(phase, secs)| format!("{phase} {secs:.1}s")).collect();
        md.push_str(&format!("Phase durations: {}\n\n", phases.join(" · ")));
    }
    md.push_str("| component | version |\n|---|---|\n");
    for (k, v) in &record.versions {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n| suite | check | verdict | started (UTC) | duration | reason |\n|---|---|---|---|---|---|\n");
    for (index, r) in results.iter().enumerate() {
        let started = parse_time(&r.started_at).map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_else(|| "—".into());
        md.push_str(&format!(
            "| {} | {} | {} | {started} | {:.1}s | {} |\n",
            r.suite,
            r.name,
            icon(r.verdict.outcome),
            r.duration_secs,
            table_cell(&headline(results, index))
        ));
    }
    md.push_str(&failures(results, failed_commands));
    if results.iter().any(|r| r.suite == "candidate") {
        md.push_str(&gate_table(record));
    }
    if let Some(chart) = gantt(record) {
        md.push_str("\n## Timeline\n\nWhen each step and check ran (UTC); bars that overlap ran at the same time.\n\n```mermaid\n");
        md.push_str(&chart);
        md.push_str("```\n");
    }
    if let Some(mermaid) = mermaid_graph(service_graph) {
        md.push_str("\n## Service graph observed by Kiali\n\n```mermaid\n");
        md.push_str(&mermaid);
        md.push_str("```\n");
    }
    md
}

fn icon(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "✅ pass",
        Outcome::Fail => "❌ fail",
        Outcome::Error => "💥 error",
        Outcome::NotRun => "⏭️ not run",
    }
}

/// The failed and errored trials, root cause first: each with its reason as the summary of a
/// `<details>` block that holds its [`failure_details`].
fn failures(results: &[TrialResult], commands: &[CommandRecord]) -> String {
    let cause = root_cause(results);
    let mut order: Vec<usize> = cause.into_iter().collect();
    order.extend((0..results.len()).filter(|&i| Some(i) != cause && did_not_pass(results[i].verdict.outcome)));
    if order.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n## Failures\n");
    for index in order {
        let r = &results[index];
        let role = if Some(index) == cause { " — root cause" } else { "" };
        md.push_str(&format!(
            "\n### {} `{}`{role}\n\n<details><summary>{}</summary>\n\n",
            icon(r.verdict.outcome),
            r.trial_name(),
            markdown_text(&r.verdict.reason)
        ));
        let details = failure_details(r, commands);
        if details.is_empty() {
            md.push_str("No further details were recorded.\n");
        } else {
            md.push_str(&fenced(&details));
        }
        md.push_str("\n</details>\n");
    }
    md
}

/// Text for Markdown prose or HTML: `&`, `<` and `>` as entities, so GitHub shows them rather than
/// reading a tag (`STRICT <broken>` would vanish).
fn markdown_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn table_cell(s: &str) -> String {
    markdown_text(s).replace('|', "\\|").replace('\n', " ")
}

/// A fenced code block longer than any run of backticks in `text`, so the text cannot close it.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}text\n{text}\n{fence}\n")
}

/// Words that start a statement in a Mermaid gantt chart (lexer rules of `gantt.jison`, matched
/// case-insensitively before a task name): a task name that begins with one is prefixed.
const GANTT_KEYWORDS: &[&str] = &[
    "gantt",
    "dateformat",
    "inclusiveenddates",
    "topaxis",
    "axisformat",
    "tickinterval",
    "includes",
    "excludes",
    "todaymarker",
    "weekday",
    "weekend",
    "title",
    "acc",
    "section",
    "click",
    "call",
    "href",
];

/// Longest task name in the chart; longer labels (a batch of waits) are cut.
const GANTT_LABEL_CHARS: usize = 70;

/// A Mermaid `gantt` chart of every step and check with its recorded start and duration, one
/// section per phase, so a reader sees what ran when and what ran at the same time. A phase
/// without recorded steps (preflight) is one bar.
///
/// Syntax, from mermaid-js/mermaid `packages/mermaid/src/docs/syntax/gantt.md` ("Setting dates"
/// and the task metadata table) and its grammar `src/diagrams/gantt/parser/gantt.jison`:
/// `dateFormat` is a dayjs parse format (`SSS`: milliseconds), `axisFormat` a d3-time-format
/// string, a task is `name :[crit,] <start>, <end>` with both dates in `dateFormat`, a task name is
/// lexed as `[^#:\n;]+`, and `%` starts a comment. Times are written in UTC without an offset:
/// Mermaid parses and draws them in the viewer's zone alike, so the axis shows the UTC clock the
/// rest of the report uses.
pub fn gantt(record: &RunRecord) -> Option<String> {
    struct Bar {
        section: String,
        label: String,
        start: DateTime<FixedOffset>,
        secs: f64,
        failed: bool,
    }
    let mut bars: Vec<Bar> = Vec::new();
    for s in &record.steps {
        let Some(start) = parse_time(&s.started_at) else { continue };
        bars.push(Bar {
            section: s.phase.clone(),
            label: s.step.clone(),
            start,
            secs: s.duration_secs,
            failed: s.error.is_some(),
        });
    }
    for r in &record.results {
        let has_steps = record.steps.iter().any(|s| s.phase == r.suite);
        let Some(start) = parse_time(&r.started_at) else { continue };
        if r.verdict.outcome == Outcome::NotRun || (r.name == PHASE && has_steps) {
            continue;
        }
        let label = if r.name == PHASE { format!("{} phase", r.suite) } else { format!("check {}", r.name) };
        bars.push(Bar {
            section: r.suite.clone(),
            label,
            start,
            secs: r.duration_secs,
            failed: did_not_pass(r.verdict.outcome),
        });
    }
    if bars.is_empty() {
        return None;
    }
    bars.sort_by_key(|b| b.start);
    let mut sections: Vec<&str> = Vec::new();
    for b in &bars {
        if !sections.contains(&b.section.as_str()) {
            sections.push(&b.section);
        }
    }
    let when = |t: DateTime<FixedOffset>| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S%.3f").to_string();
    let mut out = String::from(
        "gantt\n    title Steps and checks (UTC)\n    dateFormat YYYY-MM-DD HH:mm:ss.SSS\n    axisFormat %H:%M:%S\n",
    );
    for section in sections {
        out.push_str(&format!("    section {}\n", gantt_label(section)));
        for b in bars.iter().filter(|b| b.section == section) {
            let end = b.start + chrono::TimeDelta::milliseconds(millis(b.secs));
            let tag = if b.failed { "crit, " } else { "" };
            out.push_str(&format!("    {} :{tag}{}, {}\n", gantt_label(&b.label), when(b.start), when(end)));
        }
    }
    Some(out)
}

/// A step or check label as a gantt task name: without the characters the grammar reserves, cut
/// to [`GANTT_LABEL_CHARS`], and never starting like a statement or a date.
fn gantt_label(text: &str) -> String {
    let cleaned: String = text.chars().map(|c| if matches!(c, '#' | ':' | ';' | '%') { ' ' } else { c }).collect();
    let mut label = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    if label.chars().count() > GANTT_LABEL_CHARS {
        label = label.chars().take(GANTT_LABEL_CHARS - 1).collect::<String>() + "…";
    }
    let lower = label.to_lowercase();
    if label.is_empty()
        || label.starts_with(|c: char| c.is_ascii_digit())
        || GANTT_KEYWORDS.iter().any(|k| lower.starts_with(k))
    {
        label = format!("▸ {label}");
    }
    label
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

/// The gate's verdict on a comparison (see [`GateVerdict`]).
pub fn gate(rows: &[Comparison]) -> GateVerdict {
    if rows.iter().any(Comparison::regressed) {
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
    let text =
        std::fs::read_to_string(&junit_path).map_err(|source| ReportError::Io { path: junit_path.clone(), source })?;
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
