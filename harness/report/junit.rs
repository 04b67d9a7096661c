//! `junit.xml`: one `<testsuite>` per phase, one `<testcase>` per trial, as JUnit consumers read it.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::{
    common::util::{first_line, xml_chars},
    evidence::Outcome,
};

use super::record::{PHASE, RunRecord, explain, headline, parse_time};

/// Builds the JUnit report: one testsuite per phase, one testcase per step or check. Text from
/// the record passes through [`xml_chars`]: a record from elsewhere may hold characters XML 1.0
/// cannot (quick-junit drops the rest of a text at the first of them).
///
/// Each testsuite's `timestamp` is the start of its first trial. The Jenkins xUnit schema
/// (`junit-10.xsd`, which the offline tests validate against) allows no `timestamp` on a
/// testcase, so a testcase's start is the first line of its `system-out`, and a phase lists its
/// steps there with their starts and durations.
///
/// `time` is on every element (report actions that sum testsuites compute NaN without it): a
/// testcase its own duration, a testsuite the sum of its testcases', the root the sum of all.
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
            status.set_message(xml_chars(&headline(results, index)));
            if !r.verdict.details.is_empty() {
                status.set_description(xml_chars(&explain(results, index)));
            }
        }
        let mut case = TestCase::new(xml_chars(&r.name), status);
        case.set_classname(xml_chars(&format!("meshcheck.{}", r.suite)));
        // A duration no `Duration` holds (a hostile record) is left out rather than panicking.
        if let Ok(time) = Duration::try_from_secs_f64(r.duration_secs.max(0.0)) {
            case.set_time(time);
        }
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
        if let Some(b) = record.bundle.as_ref().filter(|b| b.trigger == r.trial_name()) {
            out.push_str(&format!("diagnostic bundle: {} ({} files, {} KiB)\n", b.index, b.files, b.bytes / 1024));
        }
        if !out.is_empty() {
            case.set_system_out(xml_chars(&out));
        }
        suite.add_test_case(case);
    }
    let mut total = Duration::ZERO;
    report.add_test_suites(suites.into_iter().map(|(name, mut suite, first_start)| {
        if let Some(t) = first_start {
            suite.set_timestamp(t);
        }
        let secs: f64 = results.iter().filter(|r| r.suite == name).map(|r| r.duration_secs.max(0.0)).sum();
        let time = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        suite.set_time(time);
        total = total.saturating_add(time);
        suite
    }));
    report.set_time(total);
    report
}
