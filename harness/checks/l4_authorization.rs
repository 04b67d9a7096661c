//! L4 authorization without a waypoint: ztunnel enforces an ALLOW AuthorizationPolicy by
//! principal. Two meshed clients with their own identities reach details before the policy (the
//! baseline); under it, the client it does not name is refused at the connection (curl exit 56 or
//! 52) while the named one is still served; after the policy is taken back the refused one is
//! served again. How long the policy took to take effect, from the apply to the first refusal,
//! is measured by polling and held against `authorization.propagation_budget`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector, Curl};
use crate::{
    cluster::live::{Live, LiveError},
    common::{catalog, names},
    evidence::{Evidence, Findings, Verdict},
    plan::fixtures,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::L4_AUTHORIZATION, collect: Collector::Cluster(collect), judge };

const RESULTS: &str = "l4-authorization/results.json";
/// The policy's target: details, which the policy's selector (`app: details`) chooses.
const TARGET: &str = "http://details.book-info.svc.cluster.local:9080/details/0";
/// The client the policy names (`cluster.local/ns/meshcheck-inside/sa/curl-inside`).
const ALLOWED: &str = "curl-inside";
/// The meshed client the policy does not name.
const REFUSED: &str = "curl-other";
/// Between two attempts while waiting for the policy to take effect or to go (a settle wait:
/// scaled by `timeouts.settle_scale`). Each attempt is an exec of curl, itself some 100 ms.
const POLL: Duration = Duration::from_millis(250);
/// How long past the budget the collector still waits for the policy to take effect (or to go),
/// so that a late policy is measured, not only missed (a settle wait, scaled).
const LATE: Duration = Duration::from_secs(30);

/// `l4-authorization/results.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// The policy, as `Kind namespace/name`.
    pub policy: String,
    /// The URL both clients ask for.
    pub target: String,
    /// The propagation budget, scaled as the run's settle waits are, in milliseconds.
    pub budget_ms: u64,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// One curl from one client.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// `before` the policy, `policy` while it is in place, `after` it was taken back.
    pub phase: Phase,
    /// The client pod, in meshcheck-inside.
    pub client: String,
    /// When the attempt started and ended, in milliseconds since the policy's apply (or its
    /// removal, for `after`) returned; `before` counts from the first attempt.
    pub started_ms: u64,
    /// See `started_ms`.
    pub ended_ms: u64,
    /// The curl record ([`super::curl_from`]).
    pub curl: Value,
}

/// When an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the policy: both clients must be served, else a refusal proves nothing.
    Before,
    /// The policy in place.
    Policy,
    /// After the policy was deleted.
    After,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let budget = live.scenario.settle(live.scenario.authorization.propagation_budget.0);
        let mut results = Results {
            policy: "AuthorizationPolicy book-info/meshcheck-l4-allow".into(),
            target: TARGET.into(),
            budget_ms: budget.as_millis() as u64,
            attempts: Vec::new(),
        };
        let start = Instant::now();
        for client in [ALLOWED, REFUSED] {
            results.attempts.push(attempt(live, Phase::Before, client, start).await);
        }
        let policy = fixtures::manifest("l4-allow.yaml")?;
        let change = live.apply(&policy, Some(names::BOOKINFO_NS), true).await?;
        let limit = budget + live.scenario.settle(LATE);
        let applied = Instant::now();
        poll(live, &mut results, Phase::Policy, applied, limit, |c| matches!(c, Curl::Reset(_))).await;
        for client in [ALLOWED, REFUSED] {
            results.attempts.push(attempt(live, Phase::Policy, client, applied).await);
        }
        let removed = live.revert(change).await;
        let reverted = Instant::now();
        poll(live, &mut results, Phase::After, reverted, limit, Curl::got_through).await;
        live.save_json(RESULTS, &results)?;
        removed
    })
}

/// Curls from the refused client until `done` holds for its answer or `limit` has passed.
async fn poll(
    live: &Live,
    results: &mut Results,
    phase: Phase,
    since: Instant,
    limit: Duration,
    done: impl Fn(&Curl) -> bool,
) {
    loop {
        let a = attempt(live, phase, REFUSED, since).await;
        let finished = done(&Curl::of(&a.curl)) || since.elapsed() >= limit;
        results.attempts.push(a);
        if finished {
            return;
        }
        tokio::time::sleep(live.scenario.settle(POLL)).await;
    }
}

async fn attempt(live: &Live, phase: Phase, client: &str, since: Instant) -> Attempt {
    let started_ms = since.elapsed().as_millis() as u64;
    let curl = super::curl_from(live, names::INSIDE_NS, client, TARGET, 10).await;
    Attempt { phase, client: client.into(), started_ms, ended_ms: since.elapsed().as_millis() as u64, curl }
}

/// Judges the baseline, the enforcement, its propagation time and the policy's removal.
pub fn judge(ev: &Evidence) -> Verdict {
    let results: Results = match ev.read_json(RESULTS) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let mut found = Findings::reading([RESULTS.to_string()]);
    let of = |phase: Phase, client: &str| -> Vec<&Attempt> {
        results.attempts.iter().filter(|a| a.phase == phase && a.client == client).collect()
    };
    // The baseline: without it a refusal could be DNS, a dead pod or a policy already there.
    for client in [ALLOWED, REFUSED] {
        match of(Phase::Before, client).first().map(|a| Curl::of(&a.curl)) {
            None => found.unjudged(format!("{RESULTS} has no baseline attempt from {client}")),
            Some(c) if !c.got_through() => found.unjudged(format!(
                "before the policy {client} could not reach {} ({c}): the baseline failed, so a refusal would prove nothing",
                results.target
            )),
            Some(c) => found.note(format!("before the policy {client} got {c}")),
        }
    }
    judge_enforcement(&results, &of(Phase::Policy, REFUSED), &of(Phase::Policy, ALLOWED), &mut found);
    match of(Phase::After, REFUSED).last() {
        None => found.unjudged(format!("{RESULTS} has no attempt after the policy was taken back")),
        Some(a) if Curl::of(&a.curl).got_through() => {
            found.note(format!("after the policy was deleted {REFUSED} was served again within {} ms", a.ended_ms))
        }
        Some(a) => found.fail(format!(
            "{ms} ms after the policy was deleted {REFUSED} is still refused ({}): the policy was not taken back",
            Curl::of(&a.curl),
            ms = a.ended_ms
        )),
    }
    found.verdict(format!("ztunnel enforced {} by principal and let it go", results.policy), |n| {
        format!("{n} L4 authorization finding(s) for {}", results.policy)
    })
}

/// Under the policy: the refused client's first refusal within the budget and the allowed client
/// served. The propagation time lies between the last attempt that still got through (its start)
/// and the first refusal (its end); it is over budget only if it certainly is.
fn judge_enforcement(results: &Results, refused: &[&Attempt], allowed: &[&Attempt], found: &mut Findings) {
    let budget = results.budget_ms;
    let first_refusal = refused.iter().position(|a| matches!(Curl::of(&a.curl), Curl::Reset(_)));
    match first_refusal {
        None => match refused.last() {
            None => found.unjudged(format!("{RESULTS} has no attempt from {REFUSED} under the policy")),
            Some(last) => found.fail(format!(
                "{REFUSED} was never refused in {} attempt(s) over {} ms under {} (last: {}); budget {budget} ms",
                refused.len(),
                last.ended_ms,
                results.policy,
                Curl::of(&last.curl)
            )),
        },
        Some(i) => {
            let low = if i == 0 { 0 } else { refused[i - 1].started_ms };
            let high = refused[i].ended_ms;
            let seen =
                format!("the policy took effect between {low} and {high} ms after the apply (budget {budget} ms)");
            if low > budget {
                found.fail(format!("{seen}: over budget"));
            } else {
                found.note(seen);
            }
            if let Some(later) = refused[i..].iter().find(|a| Curl::of(&a.curl).got_through()) {
                found.fail(format!(
                    "{REFUSED} was served again at {} ms with the policy still in place ({})",
                    later.started_ms,
                    Curl::of(&later.curl)
                ));
            }
        }
    }
    match allowed.last().map(|a| Curl::of(&a.curl)) {
        None => found.unjudged(format!("{RESULTS} has no attempt from {ALLOWED} under the policy")),
        Some(c) if c.got_through() => found.note(format!("under the policy {ALLOWED} got {c}")),
        Some(c) => found.fail(format!(
            "under the policy {ALLOWED}, whose principal it allows, got {c}: expected HTTP 200 from {}",
            results.target
        )),
    }
}
