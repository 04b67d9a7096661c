//! `summary.md`: the human summary, root cause first, with the failed commands' output.

use std::collections::BTreeMap;

use crate::{
    cluster::runner::CommandRecord,
    evidence::{Measurement, NumberRules, Outcome, ServiceEdge},
};

use super::{
    compare::{Change, Comparison, compare, compare_numbers},
    gantt::{gantt, mermaid_graph},
    record::{RunRecord, blocked_by, did_not_pass, failure_details, headline, parse_time, root_cause},
};

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
        // In the order the phases ran (their trials' order), not alphabetically.
        let mut order: Vec<&str> = Vec::new();
        for r in &record.results {
            if !order.contains(&r.suite.as_str()) {
                order.push(&r.suite);
            }
        }
        let rest: Vec<&str> =
            record.phase_durations_secs.keys().map(String::as_str).filter(|p| !order.contains(p)).collect();
        order.extend(rest);
        let phases: Vec<String> = order
            .iter()
            .filter_map(|p| record.phase_durations_secs.get(*p).map(|secs| format!("{p} {secs:.1}s")))
            .collect();
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
    md.push_str(&failures(record, failed_commands));
    if let Some(b) = &record.bundle {
        md.push_str(&format!(
            "\n## Diagnostic bundle\n\nTaken at the first failure (`{}`): [{}]({}), {} files, {} KiB{}. Logs, events, ztunnel config dumps, istiod's debug endpoints, Cilium's status and the policies in force, redacted.\n",
            b.trigger,
            b.index,
            b.index,
            b.files,
            b.bytes / 1024,
            if b.missing > 0 { format!("; {} parts could not be collected (listed in the index)", b.missing) } else { String::new() }
        ));
    }
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
/// `<details>` block that holds its [`failure_details`], the root cause's open (a preflight's list
/// of fixes is what the reader came for), and after it any known upstream issue that explains it.
fn failures(record: &RunRecord, commands: &[CommandRecord]) -> String {
    let results = &record.results;
    let cause = root_cause(results);
    let mut order: Vec<usize> = cause.into_iter().collect();
    order.extend((0..results.len()).filter(|&i| Some(i) != cause && did_not_pass(results[i].verdict.outcome)));
    if order.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n## Failures\n");
    for index in order {
        let r = &results[index];
        let (role, open) = if Some(index) == cause { (" — root cause", " open") } else { ("", "") };
        md.push_str(&format!(
            "\n### {} `{}`{role}\n\n<details{open}><summary>{}</summary>\n\n",
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
        md.push_str(&super::known_issues::citations(record, r));
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
    md + &numbers_table(record)
}

/// The numbers both passes measured (the footprint check's), with the ratio and the rule.
fn numbers_table(record: &RunRecord) -> String {
    let pass = |suite: &str| -> BTreeMap<String, Measurement> {
        record
            .results
            .iter()
            .filter(|r| r.suite == suite)
            .flat_map(|r| r.verdict.measurements.iter().map(|m| (format!("{} {}", r.name, m.metric), m.clone())))
            .collect()
    };
    let rules = NumberRules::of_scenario(&record.scenario);
    let rows = compare_numbers(&pass("baseline"), &pass("candidate"), &rules);
    if rows.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "\n### Numbers\n\n![each latency run and footprint reading, baseline then candidate]({})\n\nFootprint per pod: `memory` is the cAdvisor working set, `cpu` cores over the reading, `requests` what each pod reserves; \
         each CPU and memory number at most {} times the baseline's (`gate.footprint.max_ratio`), growths under 4 MiB or 10 mcore being noise. \
         Latency: medians over the repetitions; the p99 overhead (in the mesh minus outside) at most {} ms more than the baseline's (`gate.latency.p99_overhead_ms`).\n\n\
         | number | baseline | candidate | ratio | verdict |\n|---|---|---|---|---|\n",
        super::NUMBERS_SVG,
        rules.max_ratio,
        rules.p99_overhead_ms
    );
    for n in rows {
        let verdict = match &n.broken {
            Some(rule) => format!("**{rule}**"),
            None if n.key.contains(".requests.") => "configuration".into(),
            None => "within".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {verdict} |\n",
            n.key,
            n.unit.show(n.before),
            n.unit.show(n.after),
            n.ratio
        ));
    }
    md
}
