//! Watching a policy take effect: a client's curl repeated from a moment (the policy's apply, or
//! its removal) until the answer changes, every attempt timed ([`watch`]), and those attempts read
//! back. The checks that apply an AuthorizationPolicy (l4-authorization, l7-policy) collect with
//! it and judge from its [`Results`].

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Curl;
use crate::{
    cluster::live::{Live, LiveError},
    common::names,
    evidence::Findings,
    plan::fixtures,
};

/// Between two attempts while waiting for a change (a settle wait: scaled by
/// `timeouts.settle_scale`). Each attempt is an exec of curl, itself some 100 ms.
const POLL: Duration = Duration::from_millis(250);
/// How long past the budget a change is still waited for, so that a late policy is measured,
/// not only missed (a settle wait, scaled).
const LATE: Duration = Duration::from_secs(30);

/// One client asking for one URL. Clients are pods of the ambient namespace meshcheck-inside.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The client pod.
    pub client: &'static str,
    /// What it asks for.
    pub url: &'static str,
}

/// `<check>/results.json`: the policy and every attempt, in order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// The policy, as `Kind namespace/name`.
    pub policy: String,
    /// The propagation budget, scaled as the run's settle waits are, in milliseconds.
    pub budget_ms: u64,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// One curl of one probe.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// Before the policy, under it, or after it was taken back.
    pub phase: Phase,
    /// The client pod.
    pub client: String,
    /// The URL asked for.
    pub url: String,
    /// When the attempt started, in milliseconds since its phase began (the policy's apply or
    /// removal returned; for `before`, the first attempt).
    pub started_ms: u64,
    /// When it ended, on the same clock.
    pub ended_ms: u64,
    /// The curl record ([`super::curl_from`]).
    pub curl: Value,
}

/// When an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the policy: what it changes must have been otherwise, else a change proves nothing.
    Before,
    /// The policy in place.
    Policy,
    /// After the policy was deleted.
    After,
}

impl Results {
    /// The attempts of one probe in one phase, in order.
    pub fn of(&self, phase: Phase, probe: Probe) -> Vec<&Attempt> {
        self.attempts.iter().filter(|a| a.phase == phase && a.client == probe.client && a.url == probe.url).collect()
    }
}

/// How a check watches its policy: which fixture it applies, which probe shows the policy, and
/// what answer of that probe means the policy took effect.
pub struct Watch {
    /// The policy, as `Kind namespace/name`.
    pub policy: &'static str,
    /// Its fixture (`manifests/<name>`), applied into book-info.
    pub fixture: &'static str,
    /// Where the results go.
    pub results: &'static str,
    /// The probe whose answer the policy changes.
    pub watched: Probe,
    /// A probe the policy must leave alone.
    pub other: Probe,
    /// Whether an answer of `watched` shows the policy in effect.
    pub takes_effect: fn(&Curl) -> bool,
}

/// Both probes before the policy (the baseline); the policy applied; `watched` until it takes
/// effect; both probes under it; the policy taken back; `watched` until it answers again. Each
/// wait lasts at most [`limit`] of `authorization.propagation_budget`.
pub async fn watch(live: &Live, w: &Watch) -> Result<(), LiveError> {
    let budget = live.scenario.settle(live.scenario.authorization.propagation_budget.0);
    let mut results = Results { policy: w.policy.into(), budget_ms: budget.as_millis() as u64, attempts: Vec::new() };
    let start = Instant::now();
    for probe in [w.other, w.watched] {
        results.attempts.push(attempt(live, Phase::Before, probe, start).await);
    }
    if !w.baseline_held(&results) {
        // Nothing under the policy could prove anything (the judge's rule), and each wait below
        // would run out its whole limit for a change that cannot show: the policy is not applied.
        return live.save_json(w.results, &results);
    }
    let policy = fixtures::manifest(w.fixture)?;
    let change = live.apply(&policy, Some(names::BOOKINFO_NS), true).await?;
    let limit = limit(live, budget);
    let applied = Instant::now();
    poll(live, &mut results, (Phase::Policy, w.watched), applied, limit, w.takes_effect).await;
    for probe in [w.other, w.watched] {
        results.attempts.push(attempt(live, Phase::Policy, probe, applied).await);
    }
    let removed = live.revert(change).await;
    let reverted = Instant::now();
    poll(live, &mut results, (Phase::After, w.watched), reverted, limit, Curl::got_through).await;
    live.save_json(w.results, &results)?;
    removed
}

/// What the attempts under the policy show of its effect ([`Watch::judge_effect`]).
pub enum Effect<'r> {
    /// The first attempt that showed it.
    Shown(&'r Attempt),
    /// It never showed in these attempts.
    Never(Vec<&'r Attempt>),
    /// No attempt was recorded (already said, as unjudged).
    Missing,
}

impl Watch {
    /// Whether both probes got through before the policy.
    pub fn baseline_held(&self, r: &Results) -> bool {
        [self.other, self.watched]
            .into_iter()
            .all(|probe| r.of(Phase::Before, probe).first().is_some_and(|a| Curl::of(&a.curl).got_through()))
    }

    /// The baseline: both probes got through before the policy. Without it a change could be
    /// DNS, a dead pod or a policy that was already there; what came after it is not judged
    /// (and, since the collector stopped there, not there to judge).
    pub fn judge_baseline(&self, r: &Results, found: &mut Findings) {
        for probe in [self.other, self.watched] {
            match r.of(Phase::Before, probe).first().map(|a| Curl::of(&a.curl)) {
                None => found.unjudged(format!(
                    "{} has no baseline attempt of {} from {}",
                    self.results, probe.url, probe.client
                )),
                Some(c) if !c.got_through() => found.unjudged(format!(
                    "before the policy {} got {c} from {}: the baseline failed, so a refusal would prove nothing",
                    probe.client, probe.url
                )),
                Some(c) => found.note(format!("before the policy {} got {c} from {}", probe.client, probe.url)),
            }
        }
    }

    /// The policy's effect on `watched`: the first attempt that shows it, the interval it came in
    /// ([`first_change`]) against the budget (over it only if even the interval's start is), and
    /// no attempt after it that got through again.
    pub fn judge_effect<'r>(&self, r: &'r Results, found: &mut Findings) -> Effect<'r> {
        let budget = r.budget_ms;
        let watched = r.of(Phase::Policy, self.watched);
        let Some((i, low, high)) = first_change(&watched, self.takes_effect) else {
            if watched.is_empty() {
                found.unjudged(format!("{} has no attempt of {} under the policy", self.results, self.watched.url));
                return Effect::Missing;
            }
            return Effect::Never(watched);
        };
        let seen = format!("the policy took effect between {low} and {high} ms after the apply (budget {budget} ms)");
        if low > budget {
            found.fail(format!("{seen}: over budget"));
        } else {
            found.note(seen);
        }
        if let Some(later) = watched[i..].iter().find(|a| Curl::of(&a.curl).got_through()) {
            found.fail(format!(
                "{} was served again at {} ms with the policy still in place ({})",
                self.watched.client,
                later.started_ms,
                Curl::of(&later.curl)
            ));
        }
        Effect::Shown(watched[i])
    }

    /// The probe the policy leaves alone got through under it; `why` says why it should.
    pub fn judge_other(&self, r: &Results, why: &str, found: &mut Findings) {
        let other = self.other;
        match r.of(Phase::Policy, other).last().map(|a| Curl::of(&a.curl)) {
            None => found.unjudged(format!("{} has no attempt of {} under the policy", self.results, other.url)),
            Some(c) if c.got_through() => {
                found.note(format!("under the policy {} got {c} from {}", other.client, other.url))
            }
            Some(c) => found.fail(format!(
                "under the policy {} got {c} from {}, {why}: expected HTTP 200",
                other.client, other.url
            )),
        }
    }

    /// The undo: after the policy was deleted, `watched` got through again.
    pub fn judge_undo(&self, r: &Results, found: &mut Findings) {
        let w = self.watched;
        match r.of(Phase::After, w).last() {
            None => found.unjudged(format!("{} has no attempt after the policy was taken back", self.results)),
            Some(a) if Curl::of(&a.curl).got_through() => found
                .note(format!("after the policy was deleted {} was served again within {} ms", w.client, a.ended_ms)),
            Some(a) => found.fail(format!(
                "{} ms after the policy was deleted {} still gets {} from {}: the policy was not taken back",
                a.ended_ms,
                w.client,
                Curl::of(&a.curl),
                w.url
            )),
        }
    }
}

/// The longest a change is waited for: the budget and [`LATE`] past it.
fn limit(live: &Live, budget: Duration) -> Duration {
    budget + live.scenario.settle(LATE)
}

/// One curl of `probe`, timed from `since`.
async fn attempt(live: &Live, phase: Phase, probe: Probe, since: Instant) -> Attempt {
    let started_ms = since.elapsed().as_millis() as u64;
    let curl = super::curl_from(live, names::INSIDE_NS, probe.client, probe.url, 10).await;
    let ended_ms = since.elapsed().as_millis() as u64;
    Attempt { phase, client: probe.client.into(), url: probe.url.into(), started_ms, ended_ms, curl }
}

/// Curls `probe` until `done` holds for its answer or `limit` has passed since `since`.
async fn poll(
    live: &Live,
    results: &mut Results,
    (phase, probe): (Phase, Probe),
    since: Instant,
    limit: Duration,
    done: impl Fn(&Curl) -> bool,
) {
    loop {
        let a = attempt(live, phase, probe, since).await;
        let finished = done(&Curl::of(&a.curl)) || since.elapsed() >= limit;
        results.attempts.push(a);
        if finished {
            return;
        }
        tokio::time::sleep(live.scenario.settle(POLL)).await;
    }
}

/// When a change showed: the first attempt for which `changed` holds, and the interval the change
/// happened in: after the start of the attempt before it (0 for the first), by that attempt's end.
fn first_change(attempts: &[&Attempt], changed: impl Fn(&Curl) -> bool) -> Option<(usize, u64, u64)> {
    let i = attempts.iter().position(|a| changed(&Curl::of(&a.curl)))?;
    let low = if i == 0 { 0 } else { attempts[i - 1].started_ms };
    Some((i, low, attempts[i].ended_ms))
}
