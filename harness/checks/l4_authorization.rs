//! L4 authorization without a waypoint: ztunnel enforces an ALLOW AuthorizationPolicy by
//! principal. Two meshed clients with their own identities reach details before the policy (the
//! baseline); under it, the client it does not name is refused at the connection (curl exit 56 or
//! 52) while the named one is still served; after the policy is taken back the refused one is
//! served again. How long the policy took to take effect, from the apply to the first refusal,
//! is measured by polling and held against `authorization.propagation_budget`.

use super::{
    BoxFuture, CheckDef, Collector, Curl,
    enforcement::{self, Effect, Probe, Results},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Verdict},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::L4_AUTHORIZATION, collect: Collector::Cluster(collect), judge };

const RESULTS: &str = "l4-authorization/results.json";
/// The policy's target: details, which the policy's selector (`app: details`) chooses.
const TARGET: &str = "http://details.book-info.svc.cluster.local:9080/details/0";
/// The client the policy names (`cluster.local/ns/meshcheck-inside/sa/curl-inside`).
const ALLOWED: Probe = Probe { client: "curl-inside", url: TARGET };
/// The meshed client the policy does not name.
const REFUSED: Probe = Probe { client: "curl-other", url: TARGET };

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(enforcement::watch(live, &WATCH))
}

/// The policy and its probes: a refusal at the connection is ztunnel enforcing it.
const WATCH: enforcement::Watch = enforcement::Watch {
    policy: "AuthorizationPolicy book-info/meshcheck-l4-allow",
    fixture: "l4-allow.yaml",
    results: RESULTS,
    watched: REFUSED,
    other: ALLOWED,
    takes_effect: |c| matches!(c, Curl::Reset(_)),
};

/// Judges the baseline, the enforcement, its propagation time and the policy's removal.
pub fn judge(ev: &Evidence) -> Verdict {
    let results: Results = match ev.read_json(RESULTS) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let mut found = Findings::reading([RESULTS.to_string()]);
    WATCH.judge_baseline(&results, &mut found);
    if WATCH.baseline_held(&results) {
        under_policy(&results, &mut found);
    }
    found.verdict(format!("ztunnel enforced {} by principal and let it go", results.policy), |n| {
        format!("{n} L4 authorization finding(s) for {}", results.policy)
    })
}

/// Under the policy: curl-other refused in time and kept out, curl-inside let through, and the
/// removal seen.
fn under_policy(results: &Results, found: &mut Findings) {
    if let Effect::Never(attempts) = WATCH.judge_effect(results, found) {
        let last = attempts[attempts.len() - 1];
        found.fail(format!(
            "{} was never refused in {} attempt(s) over {} ms under {} (last: {}); budget {} ms",
            REFUSED.client,
            attempts.len(),
            last.ended_ms,
            results.policy,
            Curl::of(&last.curl),
            results.budget_ms
        ));
    }
    WATCH.judge_other(results, "whose principal the policy allows", found);
    WATCH.judge_undo(results, found);
}
