//! L7 authorization at the waypoint: a DENY AuthorizationPolicy attached to book-info's waypoint
//! (`targetRefs`) refuses GET /ratings/* to the meshcheck-inside/curl-inside client with HTTP 403,
//! while the same client still gets 200 from another path of the same Service. Before the policy
//! both paths answer 200 (the baseline); after it is taken back the denied path answers 200
//! again. The time from the apply to the first 403 is held against
//! `authorization.propagation_budget`.
//!
//! A refusal at the connection (curl exit 56) instead of a 403 means ztunnel, not the waypoint,
//! refused: the policy reached ztunnel (a `selector` instead of `targetRefs`), and ztunnel, which
//! cannot see paths, refuses every connection a DENY with L7 attributes names (istio/istio@1.30.3
//! pilot/pkg/serviceregistry/ambient/authorization.go `handleRule`). The verdict names that trap.

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
pub const CHECK: CheckDef = CheckDef { info: &catalog::L7_POLICY, collect: Collector::Cluster(collect), judge };

const RESULTS: &str = "l7-policy/results.json";
/// The path the policy denies (ratings answers GET /ratings/<id>: istio/istio@1.30.3
/// samples/bookinfo/src/ratings/ratings.js).
const DENIED: Probe = Probe { client: "curl-inside", url: "http://ratings.book-info.svc.cluster.local:9080/ratings/0" };
/// Another path of the same Service, which the policy leaves alone (ratings.js `/health`).
const OTHER: Probe = Probe { client: "curl-inside", url: "http://ratings.book-info.svc.cluster.local:9080/health" };

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(enforcement::watch(live, &WATCH))
}

/// The policy and its probes. Any refusal ends the wait, a 403 or a reset: the judge tells them apart.
const WATCH: enforcement::Watch = enforcement::Watch {
    policy: "AuthorizationPolicy book-info/meshcheck-l7-deny",
    fixture: "l7-deny.yaml",
    results: RESULTS,
    watched: DENIED,
    other: OTHER,
    takes_effect: |c| !c.got_through(),
};

/// Judges the baseline, the 403 and its timing, the other path, and the policy's removal.
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
    found.verdict(format!("the waypoint enforced {} on its path alone and let it go", results.policy), |n| {
        format!("{n} L7 policy finding(s) for {}", results.policy)
    })
}

/// Under the policy: the denied path refused by the waypoint with 403 in time, the other path
/// served, and the removal seen.
fn under_policy(results: &Results, found: &mut Findings) {
    // A refusal must be the waypoint's 403; a reset is ztunnel refusing the connection: the L7
    // policy did not reach the waypoint.
    match WATCH.judge_effect(results, found) {
        Effect::Shown(first) => match Curl::of(&first.curl) {
            Curl::Answered(code) if code == "403" => {}
            Curl::Reset(x) => found.fail(format!(
                "{} was refused at the connection (curl exit {x}), not with HTTP 403: ztunnel, not the waypoint, \
                 enforced the policy, and ztunnel refuses every connection an L7 DENY names (attach the policy \
                 to the waypoint with targetRefs, not a selector)",
                DENIED.url
            )),
            other => {
                found.fail(format!("{} got {other} under the policy: expected HTTP 403 from the waypoint", DENIED.url))
            }
        },
        Effect::Never(attempts) => {
            let last = attempts[attempts.len() - 1];
            found.fail(format!(
                "{} was never refused in {} attempt(s) over {} ms under {} (last: {}): either the Service's traffic \
                 skips the waypoint (see the waypoint check), or the policy is not on the waypoint; attach it to the \
                 waypoint with targetRefs: behind a waypoint the destination's ztunnel sees the waypoint's identity, \
                 never the client's, so a selector policy by client principal never applies",
                DENIED.url,
                attempts.len(),
                last.ended_ms,
                results.policy,
                Curl::of(&last.curl)
            ));
        }
        Effect::Missing => {}
    }
    WATCH.judge_other(results, "a path the policy does not name", found);
    WATCH.judge_undo(results, found);
}
