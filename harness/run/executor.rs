//! The graph executor: runs a phase's steps as their needs allow, up to `parallel` at once, and
//! records what ended and what failed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::Ordering,
    time::Instant,
};

use crate::{
    cluster::runner::is_interrupted,
    common::names::Phase,
    common::util::{first_line, now_rfc3339},
    evidence::Verdict,
    plan::{Plan, PlannedStep, Step, StepId},
    preflight,
    report::StepRecord,
};

use super::{Session, step::run_step, trial::TrialSpec};

/// When something of the run started and how long it took: a step, a check, or a phase's span.
#[derive(Debug, Clone)]
pub(super) struct Timing {
    /// Start, RFC 3339.
    pub(super) started_at: String,
    /// Start, for arithmetic.
    pub(super) started: Instant,
    /// Wall time in seconds.
    pub(super) duration_secs: f64,
}

impl Timing {
    pub(super) fn since(started_at: String, started: Instant) -> Timing {
        Timing { started_at, started, duration_secs: started.elapsed().as_secs_f64() }
    }

    pub(super) fn ended(&self) -> Instant {
        self.started + std::time::Duration::from_secs_f64(self.duration_secs)
    }
}

/// A check that ran ahead of its trial (with the others of its phase).
pub(super) struct CheckRun {
    pub(super) verdict: Verdict,
    pub(super) collected: bool,
    pub(super) timing: Timing,
}

/// A step in flight.
struct Running {
    phase: Phase,
    id: StepId,
    label: String,
    started_at: String,
    started: Instant,
    /// A wait: stopped when its phase stops.
    observes: bool,
    handle: tokio::task::AbortHandle,
}

/// What the executor has in flight while it runs a phase's graph.
#[derive(Default)]
struct InFlight {
    set: tokio::task::JoinSet<Result<(), super::StepError>>,
    running: BTreeMap<tokio::task::Id, Running>,
    /// The phases stopped, each with the step whose failure stopped it.
    stopped: BTreeMap<Phase, String>,
}

/// The executor's state across phases.
pub(super) struct ExecState {
    /// The root cause that stopped the run, once one did.
    pub(super) blocked: Option<String>,
    /// The console.
    pub(super) progress: crate::common::progress::Progress,
    /// How many steps (or checks) run at once.
    pub(super) parallel: usize,
    /// The trials this run will be asked for: its checks run together, so a check that a test
    /// filter left out must not run with them.
    pub(super) selected: Vec<TrialSpec>,
    /// Every step that ended so far, with why it did not end well: steps of a later phase may
    /// end early.
    pub(super) ended: BTreeMap<StepId, Option<String>>,
    /// The failures of each phase's steps, in the order they ended (a wait stopped because another
    /// step failed is not one).
    pub(super) failures: BTreeMap<Phase, Vec<String>>,
    /// Checks that ran ahead of their trials.
    pub(super) checked: BTreeMap<(Phase, &'static str), CheckRun>,
    /// The span of each phase's steps, for its trial.
    pub(super) step_spans: BTreeMap<Phase, Timing>,
    /// The span of everything each phase did (steps, checks), for `phase_durations_secs`.
    pub(super) phase_spans: BTreeMap<Phase, Timing>,
}

/// Widens `span` to cover `t`.
pub(super) fn widen(spans: &mut BTreeMap<Phase, Timing>, phase: Phase, t: &Timing) {
    let span = spans.entry(phase).or_insert_with(|| t.clone());
    let end = span.ended().max(t.ended());
    if t.started < span.started {
        span.started = t.started;
        span.started_at = t.started_at.clone();
    }
    span.duration_secs = end.duration_since(span.started).as_secs_f64();
}

impl Session {
    /// Counts `t` in the wall time of `phase` (`phase_durations_secs`: from its first start to its
    /// last end, so that what ran side by side is not counted twice).
    pub(super) fn widen_phase(&mut self, phase: Phase, t: &Timing) {
        widen(&mut self.state.phase_spans, phase, t);
        self.reporting
            .record
            .phase_durations_secs
            .insert(phase.as_str().to_string(), self.state.phase_spans[&phase].duration_secs);
    }

    pub(super) fn run_phase(&mut self, name: Phase) -> Verdict {
        if name == Phase::Preflight {
            let problems = preflight::tool_problems(&self.scenario, &self.exec.runner);
            return if problems.is_empty() {
                Verdict::pass(preflight::checked(&self.scenario))
            } else {
                Verdict::error(format!("preflight: {} missing piece(s) for a live run", problems.len()))
                    .with_details(problems)
            };
        }
        let own: Vec<StepId> = self
            .plan
            .steps()
            .filter(|(p, s)| *p == name && !matches!(s.step, Step::Check { .. }))
            .map(|(_, s)| s.id)
            .collect();
        // This phase's own steps, those of them that did not start early, and the steps of later
        // phases that may start during it.
        let jobs: Vec<(Phase, PlannedStep)> = self
            .plan
            .steps()
            .filter(|(p, s)| {
                !matches!(s.step, Step::Check { .. })
                    && !self.state.ended.contains_key(&s.id)
                    && (*p == name || (*p > name && Plan::host_phase(*p, s) == name))
            })
            .map(|(p, s)| (p, s.clone()))
            .collect();
        // A step of this phase that failed early stops it before anything else starts.
        if self.state.failures.contains_key(&name) {
            return self.phase_verdict(name, &own);
        }
        self.run_graph(name, jobs);
        self.phase_verdict(name, &own)
    }

    pub(super) fn phase_verdict(&self, name: Phase, own: &[StepId]) -> Verdict {
        if let Some(failures) = self.state.failures.get(&name) {
            let first = first_line(&failures[0]);
            return Verdict::error(format!("phase `{name}` stopped: {first}")).with_details(failures.clone());
        }
        if own.iter().any(|id| !matches!(self.state.ended.get(id), Some(None))) {
            return Verdict::error(format!("phase `{name}` interrupted (Ctrl-C, SIGTERM or SIGHUP)"));
        }
        Verdict::pass(format!("phase `{name}`: {} steps done", own.len()))
    }

    /// Whether a step that `needs` can start as far as `need` goes: it ended well, or it is not
    /// part of this run's graph (an earlier phase, or a step a test filter left out).
    pub(super) fn need_met(&self, need: StepId, pending: &BTreeSet<StepId>) -> bool {
        !pending.contains(&need) && self.state.ended.get(&need).is_none_or(Option::is_none)
    }

    /// Runs `jobs` (the steps of phase `host` and of later phases that may start during it) as the
    /// plan's graph: each starts once its needs have ended well, up to `parallel` at once, the
    /// lowest step number first. A failure stops new starts in its phase, or everywhere when it is
    /// `host`'s, and stops the waits in flight there; every step that ran is recorded.
    pub(super) fn run_graph(&mut self, host: Phase, mut waiting: Vec<(Phase, PlannedStep)>) {
        let mut flight = InFlight::default();
        loop {
            if !is_interrupted() && !flight.stopped.contains_key(&host) {
                self.start_ready(&mut flight, &mut waiting);
            }
            if flight.running.is_empty() {
                break;
            }
            let (task, result) = match self.rt.block_on(flight.set.join_next_with_id()).expect("a step is running") {
                Ok((task, result)) => (task, Some(result)),
                Err(e) if e.is_cancelled() => (e.id(), None),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let run = flight.running.remove(&task).expect("every task is a running step");
            let error = match result {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(self.step_failed(&mut flight, host, &run, e.to_string())),
                None => Some(format!(
                    "not awaited further: the phase stopped when `{}` failed",
                    flight.stopped.get(&run.phase).map_or("a step", String::as_str)
                )),
            };
            self.step_ended(run, error);
        }
    }

    /// Starts every waiting step whose needs have ended well, up to `parallel` in flight, in order.
    fn start_ready(&mut self, flight: &mut InFlight, waiting: &mut Vec<(Phase, PlannedStep)>) {
        let pending: BTreeSet<StepId> =
            waiting.iter().map(|(_, s)| s.id).chain(flight.running.values().map(|r| r.id)).collect();
        let mut at = 0;
        while flight.running.len() < self.state.parallel && at < waiting.len() {
            let (phase, step) = &waiting[at];
            let ready =
                !flight.stopped.contains_key(phase) && step.needs.iter().all(|n| self.need_met(n.step, &pending));
            if !ready {
                at += 1;
                continue;
            }
            let (phase, step) = waiting.remove(at);
            let label = step.step.label();
            if let Step::Command { creates_cluster: true, .. } = step.step {
                // Even a failed create can leave containers behind; cleanup must try.
                self.ledger.cluster_created.store(true, Ordering::SeqCst);
            }
            self.state.progress.begin(&format!("{phase}: {label}"));
            let observes = matches!(step.step, Step::Wait { .. });
            let (started_at, started) = (now_rfc3339(), Instant::now());
            let handle = {
                let _runtime = self.rt.enter();
                flight.set.spawn(run_step(self.exec.clone(), step.step))
            };
            let run = Running { phase, id: step.id, label, started_at, started, observes, handle: handle.clone() };
            flight.running.insert(handle.id(), run);
        }
    }

    /// A step failed: the first failure of a phase stops it, one of `host` stops everything, and
    /// the waits of a stopped phase are no longer awaited. Returns the failure.
    fn step_failed(&mut self, flight: &mut InFlight, host: Phase, run: &Running, e: String) -> String {
        let stops: Vec<Phase> = if run.phase == host {
            flight.running.values().map(|r| r.phase).chain([host]).collect()
        } else {
            vec![run.phase]
        };
        for phase in stops {
            flight.stopped.entry(phase).or_insert_with(|| run.label.clone());
        }
        for other in flight.running.values().filter(|r| r.observes && flight.stopped.contains_key(&r.phase)) {
            other.handle.abort();
        }
        self.state.failures.entry(run.phase).or_default().push(e.clone());
        e
    }

    /// Records a step that ended: the console, the spans, its step record, the report.
    fn step_ended(&mut self, run: Running, error: Option<String>) {
        let timing = Timing::since(run.started_at.clone(), run.started);
        let verb = if error.is_none() { "done" } else { "failed" };
        self.state.progress.end(&format!("{}: {}", run.phase, run.label), verb);
        widen(&mut self.state.step_spans, run.phase, &timing);
        self.widen_phase(run.phase, &timing);
        self.reporting.record.steps.push(StepRecord {
            phase: run.phase.as_str().to_string(),
            step: run.label,
            started_at: timing.started_at,
            duration_secs: timing.duration_secs,
            error: error.clone(),
        });
        self.state.ended.insert(run.id, error);
        self.write_reports();
    }
}
