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
    enforcement::{self, Phase, Probe, Results},
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
    for probe in [DENIED, OTHER] {
        match results.of(Phase::Before, probe).first().map(|a| Curl::of(&a.curl)) {
            None => found.unjudged(format!("{RESULTS} has no baseline attempt of {}", probe.url)),
            Some(c) if !c.got_through() => found.unjudged(format!(
                "before the policy {} got {c} from {}: the baseline failed, so a refusal would prove nothing",
                probe.client, probe.url
            )),
            Some(c) => found.note(format!("before the policy {} got {c}", probe.url)),
        }
    }
    judge_denial(&results, &mut found);
    match results.of(Phase::Policy, OTHER).last().map(|a| Curl::of(&a.curl)) {
        None => found.unjudged(format!("{RESULTS} has no attempt of {} under the policy", OTHER.url)),
        Some(c) if c.got_through() => found.note(format!("under the policy {} got {c}", OTHER.url)),
        Some(c) => found.fail(format!(
            "under the policy {} got {c} from {}, a path the policy does not name: expected HTTP 200",
            OTHER.client, OTHER.url
        )),
    }
    match results.of(Phase::After, DENIED).last() {
        None => found.unjudged(format!("{RESULTS} has no attempt after the policy was taken back")),
        Some(a) if Curl::of(&a.curl).got_through() => {
            found.note(format!("after the policy was deleted {} answered again within {} ms", DENIED.url, a.ended_ms))
        }
        Some(a) => found.fail(format!(
            "{} ms after the policy was deleted {} still gets {}: the policy was not taken back",
            a.ended_ms,
            DENIED.url,
            Curl::of(&a.curl)
        )),
    }
    found.verdict(format!("the waypoint enforced {} on its path alone and let it go", results.policy), |n| {
        format!("{n} L7 policy finding(s) for {}", results.policy)
    })
}

/// The denied path under the policy: a 403 from the waypoint, first within the budget. A reset
/// is ztunnel refusing the connection: the L7 policy did not reach the waypoint.
fn judge_denial(results: &Results, found: &mut Findings) {
    let budget = results.budget_ms;
    let denied = results.of(Phase::Policy, DENIED);
    match enforcement::first_change(&denied, |c| !c.got_through()) {
        None => match denied.last() {
            None => found.unjudged(format!("{RESULTS} has no attempt of {} under the policy", DENIED.url)),
            Some(last) => found.fail(format!(
                "{} was never refused in {} attempt(s) over {} ms under {} (last: {}): either the Service's traffic \
                 skips the waypoint (see the waypoint check), or the policy is not on the waypoint; attach it to the \
                 waypoint with targetRefs: behind a waypoint the destination's ztunnel sees the waypoint's identity, \
                 never the client's, so a selector policy by client principal never applies",
                DENIED.url,
                denied.len(),
                last.ended_ms,
                results.policy,
                Curl::of(&last.curl)
            )),
        },
        Some((i, low, high)) => {
            match Curl::of(&denied[i].curl) {
                Curl::Answered(code) if code == "403" => {}
                Curl::Reset(x) => found.fail(format!(
                    "{} was refused at the connection (curl exit {x}), not with HTTP 403: ztunnel, not the waypoint, \
                     enforced the policy, and ztunnel refuses every connection an L7 DENY names (attach the policy \
                     to the waypoint with targetRefs, not a selector)",
                    DENIED.url
                )),
                other => found
                    .fail(format!("{} got {other} under the policy: expected HTTP 403 from the waypoint", DENIED.url)),
            }
            let seen =
                format!("the policy took effect between {low} and {high} ms after the apply (budget {budget} ms)");
            if low > budget {
                found.fail(format!("{seen}: over budget"));
            } else {
                found.note(seen);
            }
            if let Some(later) = denied[i..].iter().find(|a| Curl::of(&a.curl).got_through()) {
                found.fail(format!(
                    "{} answered again at {} ms with the policy still in place ({})",
                    DENIED.url,
                    later.started_ms,
                    Curl::of(&later.curl)
                ));
            }
        }
    }
}
