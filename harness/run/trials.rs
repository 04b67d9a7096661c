//! Running a trial: a phase through the executor, or a check (collected with the others of its
//! phase, then judged from its evidence alone).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use crate::{
    checks::{self, CheckDef, Collector},
    cluster::live::Reverted,
    cluster::runner::is_interrupted,
    common::names::Phase,
    common::util::{first_line, now_rfc3339},
    evidence::{Evidence, Outcome, Verdict},
    plan::{Step, StepId},
    report::TrialResult,
};

use super::{
    Session,
    executor::{CheckRun, Timing},
    step::{Exec, StepError, interruptible},
    trial::{Trial, TrialSpec},
};

/// Collects one check's evidence with its own view of the cluster, then takes back whatever it
/// changed and did not take back (STRICT, default-deny, a deleted policy), whether it returned,
/// failed, ran out of `timeout` or was stopped by Ctrl-C: on an existing cluster that is the
/// user's mesh. Returns the collector's result and what was taken back.
pub(super) async fn collect_check(
    def: &'static CheckDef,
    exec: Exec,
    evidence: Evidence,
    timeout: std::time::Duration,
) -> (Result<(), String>, Vec<Reverted>) {
    match def.collect {
        Collector::Scenario(collect) => {
            let collected = interruptible(async { Ok(collect(&exec.scenario, &evidence).await?) }).await;
            (collected.map_err(|e| e.to_string()), Vec::new())
        }
        Collector::Cluster(collect) => {
            let live = match exec.cluster.live_for_check(evidence).await {
                Ok(live) => live,
                Err(e) => return (Err(e.to_string()), Vec::new()),
            };
            let collected = tokio::select! {
                r = tokio::time::timeout(timeout, collect(&live)) => match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("collector did not finish within {}s", timeout.as_secs())),
                },
                _ = crate::cluster::runner::interrupted() => Err(StepError::Interrupted.to_string()),
            };
            let reverted = live.revert_all(crate::cluster::live::MUTATION_DEADLINE).await;
            (collected, reverted)
        }
    }
}

impl Session {
    /// Runs one trial and records its result.
    pub fn run_trial(&mut self, trial: &TrialSpec) -> Verdict {
        let called = (now_rfc3339(), Instant::now());
        let phase = trial.phase;
        let root = || Some(phase.evidence_root().to_string());
        let (verdict, evidence_root, collected, timing) = if phase == Phase::Cleanup {
            // Whatever stopped the run before, cleanup runs.
            let v = self.clean_up();
            (v, None, true, Timing::since(called.0, called.1))
        } else if let Trial::Check(def) = trial.trial
            && let Some(run) = self.state.checked.remove(&(phase, def.info.name))
        {
            // It ran with the others of its phase, before this trial was asked for.
            (run.verdict, root(), run.collected, run.timing)
        } else if let Some(why) = &self.state.blocked {
            (Verdict::not_run(format!("not run: {why}")), None, true, Timing::since(called.0, called.1))
        } else if is_interrupted() {
            (self.interrupted(), None, true, Timing::since(called.0, called.1))
        } else {
            match trial.trial {
                Trial::Phase => {
                    let (v, timing) = self.phase_trial(phase, called);
                    (v, None, true, timing)
                }
                Trial::Check(def) => {
                    self.run_checks(phase, def);
                    match self.state.checked.remove(&(phase, def.info.name)) {
                        Some(run) => (run.verdict, root(), run.collected, run.timing),
                        // Ctrl-C came before it could start.
                        None => (self.interrupted(), None, true, Timing::since(called.0, called.1)),
                    }
                }
            }
        };
        self.bundle_on_first_failure(phase, &trial.trial_name(), &verdict);
        self.record_trial(trial, &verdict, evidence_root, collected, timing);
        verdict
    }

    /// A trial that Ctrl-C (or SIGTERM, SIGHUP) stopped before it could start; the run stops too.
    fn interrupted(&mut self) -> Verdict {
        self.state.blocked = Some("interrupted (Ctrl-C, SIGTERM or SIGHUP)".into());
        Verdict::error("interrupted (Ctrl-C, SIGTERM or SIGHUP) before this step")
    }

    /// A phase's own trial: its steps through the executor, spanning them. A phase that did not
    /// pass is the root cause of the trials after it.
    fn phase_trial(&mut self, phase: Phase, called: (String, Instant)) -> (Verdict, Timing) {
        let v = self.run_phase(phase);
        if v.outcome != Outcome::Pass {
            self.state.blocked = Some(format!("phase `{phase}` did not pass"));
        }
        let timing = self.state.step_spans.get(&phase).cloned().unwrap_or_else(|| Timing::since(called.0, called.1));
        (v, timing)
    }

    /// Records a trial's result (one per trial: a trial recorded as not run by a test filter and
    /// run after all, cleanup, keeps the later one) and writes the reports.
    fn record_trial(
        &mut self,
        trial: &TrialSpec,
        verdict: &Verdict,
        evidence_root: Option<String>,
        collected: bool,
        timing: Timing,
    ) {
        self.widen_phase(trial.phase, &timing);
        tracing::debug!(
            trial = %trial.trial_name(),
            started_at = %timing.started_at,
            duration_secs = timing.duration_secs,
            "trial recorded"
        );
        self.reporting.record.results.retain(|r| !(r.suite == trial.suite() && r.name == trial.name()));
        self.reporting.record.results.push(TrialResult {
            suite: trial.phase.as_str().to_string(),
            name: trial.name().to_string(),
            verdict: verdict.clone(),
            started_at: timing.started_at.clone(),
            duration_secs: timing.duration_secs,
            evidence_root,
            collected,
        });
        self.write_reports();
    }

    pub(super) fn evidence_for(&self, phase: Phase) -> Evidence {
        Evidence::new(self.run_dir.join(phase.evidence_root()))
    }

    /// Runs the selected checks of `phase` (and `asked`, whichever trial came first) as the plan's
    /// graph: checks that only read side by side, one that changes the mesh alone. Each check's
    /// result waits in [`Session::checked`] for its trial.
    pub(super) fn run_checks(&mut self, phase: Phase, asked: &'static CheckDef) {
        let selected: BTreeSet<&str> = self
            .state
            .selected
            .iter()
            .filter(|t| t.phase == phase)
            .map(|t| t.name())
            .chain([asked.info.name])
            .collect();
        let mut waiting: Vec<(StepId, &'static CheckDef, Vec<StepId>)> = self
            .plan
            .steps()
            .filter(|(p, _)| *p == phase)
            .filter_map(|(_, s)| match &s.step {
                Step::Check { name, .. } if selected.contains(name.as_str()) => {
                    let def = checks::find(name).expect("plans name registered checks");
                    Some((s.id, def, s.needs.iter().map(|n| n.step).collect()))
                }
                _ => None,
            })
            .collect();
        let evidence = self.evidence_for(phase);
        let timeout = self.scenario.timeouts.check.0;
        let mut set = tokio::task::JoinSet::new();
        let mut running: BTreeMap<tokio::task::Id, (StepId, &'static CheckDef, String, Instant)> = BTreeMap::new();
        loop {
            if !is_interrupted() {
                let pending: BTreeSet<StepId> =
                    waiting.iter().map(|(id, _, _)| *id).chain(running.values().map(|r| r.0)).collect();
                let mut at = 0;
                while running.len() < self.state.parallel && at < waiting.len() {
                    if waiting[at].2.iter().any(|n| pending.contains(n)) {
                        at += 1;
                        continue;
                    }
                    let (id, def, _) = waiting.remove(at);
                    self.state.progress.begin(&format!("{phase}: check {}", def.info.name));
                    let collect = collect_check(def, self.exec.clone(), evidence.clone(), timeout);
                    let handle = {
                        let _runtime = self.rt.enter();
                        set.spawn(collect)
                    };
                    running.insert(handle.id(), (id, def, now_rfc3339(), Instant::now()));
                }
            }
            if running.is_empty() {
                break;
            }
            let (task, (collected, reverted)) =
                match self.rt.block_on(set.join_next_with_id()).expect("a check is running") {
                    Ok(done) => done,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
            let (_, def, started_at, started) = running.remove(&task).expect("every task is a running check");
            let (verdict, collected) = self.judged(def, &evidence, collected, &reverted);
            let timing = Timing::since(started_at, started);
            self.state.progress.end(&format!("{phase}: check {}", def.info.name), &verdict.outcome.to_string());
            self.state.checked.insert((phase, def.info.name), CheckRun { verdict, collected, timing });
        }
    }

    /// The verdict of a check from its collector's result and what the session took back after it.
    /// A change that could not be taken back makes the check an error that names it, whatever the
    /// evidence says: the cluster is not as the run found it.
    pub(super) fn judged(
        &self,
        def: &CheckDef,
        evidence: &Evidence,
        collected: Result<(), String>,
        reverted: &[Reverted],
    ) -> (Verdict, bool) {
        let name = def.info.name;
        if !reverted.is_empty()
            && let Err(e) = evidence.write_json(&format!("reverted/{name}.json"), &reverted)
        {
            tracing::warn!("could not record what was taken back after {name}: {e}");
        }
        let left: Vec<String> =
            reverted.iter().filter_map(|r| r.error.as_ref().map(|e| format!("could not {}: {e}", r.action))).collect();
        let taken_back: Vec<String> = reverted
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| format!("taken back by the session: {}", r.action))
            .collect();
        match collected {
            Ok(()) if left.is_empty() => ((def.judge)(evidence), true),
            Ok(()) => (
                Verdict::error(format!("{name} left changes on the cluster that could not be taken back"))
                    .with_details(left),
                true,
            ),
            Err(e) => {
                let mut details = vec![e.clone()];
                details.extend(left);
                details.extend(taken_back);
                (
                    Verdict::error(format!("could not collect evidence for {name}: {}", first_line(&e)))
                        .with_details(details),
                    false,
                )
            }
        }
    }
}
