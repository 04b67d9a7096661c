//! L4 authorization without a waypoint: ztunnel enforces an ALLOW AuthorizationPolicy by
//! principal. Two meshed clients with their own identities reach details before the policy (the
//! baseline); under it, the client it does not name is refused at the connection (curl exit 56 or
//! 52) while the named one is still served; after the policy is taken back the refused one is
//! served again. How long the policy took to take effect, from the apply to the first refusal,
//! is measured by polling and held against `authorization.propagation_budget`.

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
    // The baseline: without it a refusal could be DNS, a dead pod or a policy already there.
    for probe in [ALLOWED, REFUSED] {
        match results.of(Phase::Before, probe).first().map(|a| Curl::of(&a.curl)) {
            None => found.unjudged(format!("{RESULTS} has no baseline attempt from {}", probe.client)),
            Some(c) if !c.got_through() => found.unjudged(format!(
                "before the policy {} could not reach {TARGET} ({c}): the baseline failed, so a refusal would prove nothing",
                probe.client
            )),
            Some(c) => found.note(format!("before the policy {} got {c}", probe.client)),
        }
    }
    judge_enforcement(&results, &mut found);
    match results.of(Phase::After, REFUSED).last() {
        None => found.unjudged(format!("{RESULTS} has no attempt after the policy was taken back")),
        Some(a) if Curl::of(&a.curl).got_through() => found
            .note(format!("after the policy was deleted {} was served again within {} ms", REFUSED.client, a.ended_ms)),
        Some(a) => found.fail(format!(
            "{} ms after the policy was deleted {} is still refused ({}): the policy was not taken back",
            a.ended_ms,
            REFUSED.client,
            Curl::of(&a.curl)
        )),
    }
    found.verdict(format!("ztunnel enforced {} by principal and let it go", results.policy), |n| {
        format!("{n} L4 authorization finding(s) for {}", results.policy)
    })
}

/// Under the policy: the refused client's first refusal within the budget and the allowed client
/// served. The propagation time is known to lie in an interval ([`enforcement::first_change`]);
/// it is over budget only if even the interval's start is.
fn judge_enforcement(results: &Results, found: &mut Findings) {
    let budget = results.budget_ms;
    let refused = results.of(Phase::Policy, REFUSED);
    match enforcement::first_change(&refused, |c| matches!(c, Curl::Reset(_))) {
        None => match refused.last() {
            None => found.unjudged(format!("{RESULTS} has no attempt from {} under the policy", REFUSED.client)),
            Some(last) => found.fail(format!(
                "{} was never refused in {} attempt(s) over {} ms under {} (last: {}); budget {budget} ms",
                REFUSED.client,
                refused.len(),
                last.ended_ms,
                results.policy,
                Curl::of(&last.curl)
            )),
        },
        Some((i, low, high)) => {
            let seen =
                format!("the policy took effect between {low} and {high} ms after the apply (budget {budget} ms)");
            if low > budget {
                found.fail(format!("{seen}: over budget"));
            } else {
                found.note(seen);
            }
            if let Some(later) = refused[i..].iter().find(|a| Curl::of(&a.curl).got_through()) {
                found.fail(format!(
                    "{} was served again at {} ms with the policy still in place ({})",
                    REFUSED.client,
                    later.started_ms,
                    Curl::of(&later.curl)
                ));
            }
        }
    }
    match results.of(Phase::Policy, ALLOWED).last().map(|a| Curl::of(&a.curl)) {
        None => found.unjudged(format!("{RESULTS} has no attempt from {} under the policy", ALLOWED.client)),
        Some(c) if c.got_through() => found.note(format!("under the policy {} got {c}", ALLOWED.client)),
        Some(c) => found.fail(format!(
            "under the policy {}, whose principal it allows, got {c}: expected HTTP 200 from {TARGET}",
            ALLOWED.client
        )),
    }
}
