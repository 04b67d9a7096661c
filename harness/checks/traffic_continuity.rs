//! Traffic continuity during an Istio upgrade: failed requests stay within the scenario's budget.
//! The evidence is written by the upgrade phase's traffic generator; there is nothing to collect
//! afterwards.

use super::{BoxFuture, CheckDef, Stage};
use crate::{
    evidence::{Evidence, Verdict},
    live::{Live, LiveError},
    traffic::{TrafficRecord, phase_stats},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef {
    name: "traffic-continuity",
    stage: Stage::Upgrade,
    default_on: false,
    asserts: "requests to productpage during the Istio upgrade fail no more than the budget",
    collect,
    judge,
};

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

/// Judges the generator's record.
pub fn judge(ev: &Evidence) -> Verdict {
    let record: TrafficRecord = match ev.read_json(FILE) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let stats = phase_stats(&record);
    let lines: Vec<String> = stats
        .iter()
        .map(|s| {
            format!(
                "{}: {} requests, {} failed, p50 {:.0} ms, p99 {:.0} ms",
                s.phase, s.total, s.failed, s.p50_ms, s.p99_ms
            )
        })
        .collect();
    let during = stats.iter().find(|s| s.phase == "during");
    if record.requests.is_empty() || during.is_none_or(|d| d.total == 0) {
        return Verdict::error("no requests were recorded during the upgrade: continuity cannot be judged")
            .with_details(lines)
            .with_evidence([FILE.to_string()]);
    }
    let failed: usize = stats.iter().map(|s| s.failed).sum();
    let total: usize = stats.iter().map(|s| s.total).sum();
    if failed as u64 > record.failure_budget {
        let mut first: Vec<String> = record
            .requests
            .iter()
            .filter(|r| !(200..300).contains(&r.status))
            .take(5)
            .map(|r| {
                format!("at {} ms ({}): status {} {}", r.at_ms, r.phase, r.status, r.error.clone().unwrap_or_default())
            })
            .collect();
        first.splice(0..0, lines);
        Verdict::fail(format!("{failed} of {total} requests failed, budget {}", record.failure_budget))
            .with_details(first)
            .with_evidence([FILE.to_string()])
    } else {
        Verdict::pass(format!("{failed} of {total} requests failed, within budget {}", record.failure_budget))
            .with_details(lines)
            .with_evidence([FILE.to_string()])
    }
}
