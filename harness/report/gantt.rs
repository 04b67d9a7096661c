//! The diagrams of summary.md: the Mermaid gantt of steps and checks, and the service graph.

use chrono::{DateTime, FixedOffset};

use crate::evidence::{Outcome, ServiceEdge};

use super::record::{PHASE, RunRecord, did_not_pass, millis, parse_time};

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
            // A duration no clock can add (a run folder from elsewhere, edited) draws no bar.
            let Some(end) =
                chrono::TimeDelta::try_milliseconds(millis(b.secs)).and_then(|d| b.start.checked_add_signed(d))
            else {
                continue;
            };
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
