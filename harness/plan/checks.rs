//! The check steps of a stage, which end every phase but cleanup (and are all the preflight phase
//! has): checks that only read run side by side; one that changes the mesh, or measures it, runs
//! alone.

use super::{Step, StepId, graph::Graph};
use crate::{
    common::catalog::{self, Effect, Stage},
    scenario::Scenario,
};

/// Why nothing runs beside the check before (of this effect).
fn after_alone(effect: Effect) -> &'static str {
    match effect {
        Effect::Measures => "that check measures the mesh's footprint while it runs: nothing runs beside it",
        _ => "that check changes the mesh while it runs (STRICT, default-deny): nothing runs beside it",
    }
}

/// Why this check (of this effect) waits for the checks before it.
fn alone(effect: Effect) -> &'static str {
    match effect {
        Effect::Measures => "this check measures the mesh's footprint while it runs: it waits for the checks before it",
        _ => "this check changes the mesh while it runs (STRICT, default-deny): it waits for the checks before it",
    }
}

impl Graph {
    /// The scenario's checks of a stage, in catalog order: those that only read run side by side,
    /// one that changes the mesh (or measures) runs alone, between the reads before and after it.
    pub(super) fn checks(&mut self, s: &Scenario, stage: Stage) {
        let mut last_alone: Option<(StepId, Effect)> = None;
        let mut reads: Vec<StepId> = Vec::new();
        for c in catalog::CATALOG.iter().filter(|c| c.stage == stage && s.runs_check(c.name)) {
            let runs_alone = c.effect.runs_alone();
            let needs: Vec<(StepId, &'static str)> = if !runs_alone || reads.is_empty() {
                last_alone.map(|(m, e)| (m, after_alone(e))).into_iter().collect()
            } else {
                reads.iter().map(|&r| (r, alone(c.effect))).collect()
            };
            let id = self.add(Step::Check { name: c.name.into(), asserts: c.asserts.into() }, &needs);
            if runs_alone {
                last_alone = Some((id, c.effect));
                reads.clear();
            } else {
                reads.push(id);
            }
        }
    }
}
