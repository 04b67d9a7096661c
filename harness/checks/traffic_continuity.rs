//! Traffic continuity during an Istio upgrade: failed requests stay within the scenario's budget.
//! The evidence is written by the upgrade phase's traffic generator; there is nothing to collect
//! afterwards.

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    cluster::traffic::{TrafficRecord, longest_outage_secs, phase_stats, step_stats},
    common::catalog,
    evidence::{Evidence, Verdict},
    scenario::DEFAULT_STEP_MIN_SUCCESS,
};

use std::collections::BTreeMap;

/// Registration.
pub const CHECK: CheckDef =
    CheckDef { info: &catalog::TRAFFIC_CONTINUITY, collect: Collector::Cluster(collect), judge };

const FILE: &str = "upgrade/traffic.json";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        if live.evidence.exists(FILE) {
            Ok(())
        } else {
            Err(LiveError::Http {
                what: "traffic-continuity".into(),
                message: "the upgrade phase recorded no traffic".into(),
            })
        }
    })
}

/// Judges the generator's record: no failure before or after the upgrade; during it, failed
/// requests and the longest outage within the budget.
pub fn judge(ev: &Evidence) -> Verdict {
    let record: TrafficRecord = match ev.read_json(FILE) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let stats = phase_stats(&record);
    let outage = longest_outage_secs(&record, "during");
    let lines: Vec<String> = stats
        .iter()
        .map(|s| {
            format!(
                "{}: {} requests, {} failed, p50 {:.0} ms, p99 {:.0} ms{}",
                s.phase,
                s.total,
                s.failed,
                s.p50_ms,
                s.p99_ms,
                if s.phase == "during" { format!(", longest outage {outage:.1} s") } else { String::new() }
            )
        })
        .collect();
    let steps = step_stats(&record);
    // The run's rules; a record from before they were recorded is held to the defaults.
    let rules: BTreeMap<String, f64> = if record.step_min_success.is_empty() {
        DEFAULT_STEP_MIN_SUCCESS.iter().map(|(s, m)| (s.to_string(), *m)).collect()
    } else {
        record.step_min_success.clone()
    };
    let lines: Vec<String> = lines
        .into_iter()
        .chain(steps.iter().map(|s| {
            let rule = rules.get(&s.step).copied();
            format!(
                "  step {}: {} requests, {} failed ({:.1} % answered{}), longest outage {:.1} s",
                s.step,
                s.total,
                s.failed,
                100.0 * s.success(),
                rule.map(|m| format!(", rule >= {:.0} %", 100.0 * m)).unwrap_or_default(),
                s.longest_outage_secs
            )
        }))
        .collect();
    let find = |phase: &str| stats.iter().find(|s| s.phase == phase);
    let missing: Vec<&str> =
        ["before", "during", "after"].into_iter().filter(|p| find(p).is_none_or(|s| s.total == 0)).collect();
    if !missing.is_empty() {
        return Verdict::error(format!(
            "no requests were recorded {}: continuity cannot be judged",
            missing.iter().map(|p| format!("{p} the upgrade")).collect::<Vec<_>>().join(", ")
        ))
        .with_details(lines)
        .with_evidence([FILE.to_string()]);
    }
    let mut problems = Vec::new();
    for phase in ["before", "after"] {
        if let Some(s) = find(phase).filter(|s| s.failed > 0) {
            problems.push(format!(
                "{} of {} requests failed {phase} the upgrade; no failure is allowed outside it",
                s.failed, s.total
            ));
        }
    }
    let during = find("during").expect("checked above");
    if during.failed as u64 > record.failure_budget {
        problems.push(format!(
            "{} of {} requests failed during the upgrade, budget {}",
            during.failed, during.total, record.failure_budget
        ));
    }
    for s in &steps {
        if let Some(min) = rules.get(&s.step)
            && s.success() < *min
        {
            problems.push(format!(
                "the {} step answered {:.1} % of its {} requests ({} failed), its rule is at least {:.0} %",
                s.step,
                100.0 * s.success(),
                s.total,
                s.failed,
                100.0 * min
            ));
        }
    }
    if let Some(max) = record.max_outage_secs
        && outage > max
    {
        problems.push(format!("the longest outage during the upgrade was {outage:.1} s, budget {max:.1} s"));
    }
    let summary = format!(
        "during the upgrade {} of {} requests failed (budget {}), longest outage {outage:.1} s{}, p99 {:.0} ms",
        during.failed,
        during.total,
        record.failure_budget,
        record.max_outage_secs.map(|m| format!(" (budget {m:.1} s)")).unwrap_or_default(),
        during.p99_ms
    );
    if problems.is_empty() {
        return Verdict::pass(format!("no failure before or after; {summary}"))
            .with_details(lines)
            .with_evidence([FILE.to_string()]);
    }
    let first: Vec<String> = record
        .requests
        .iter()
        .filter(|r| !(200..300).contains(&r.status))
        .take(5)
        .map(|r| {
            let step = r.step.as_ref().map(|s| format!(", step {s}")).unwrap_or_default();
            format!(
                "at {} ms ({}{step}): status {} {}",
                r.at_ms,
                r.phase,
                r.status,
                r.error.clone().unwrap_or_default()
            )
        })
        .collect();
    Verdict::fail(problems.join("; "))
        .with_details(lines.into_iter().chain([summary]).chain(first))
        .with_evidence([FILE.to_string()])
}
