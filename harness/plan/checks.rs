//! The check steps of a stage, which end every phase but cleanup (and are all the preflight phase
//! has): checks that only read run side by side, one that changes the mesh runs alone.

use super::{Step, StepId, graph::Graph};
use crate::{
    common::catalog::{self, Effect, Stage},
    scenario::Scenario,
};

/// Reads checks can run beside each other; one that changes the mesh runs alone.
const AFTER_MUTATING: &str = "that check changes the mesh while it runs (STRICT, default-deny): nothing runs beside it";
const MUTATING_ALONE: &str =
    "this check changes the mesh while it runs (STRICT, default-deny): it waits for the checks before it";

impl Graph {
    /// The scenario's checks of a stage, in catalog order: those that only read run side by side,
    /// one that changes the mesh runs alone, between the reads before and after it.
    pub(super) fn checks(&mut self, s: &Scenario, stage: Stage) {
        let mut mutating: Option<StepId> = None;
        let mut reads: Vec<StepId> = Vec::new();
        for c in catalog::CATALOG.iter().filter(|c| c.stage == stage && s.runs_check(c.name)) {
            let needs: Vec<(StepId, &'static str)> = match c.effect {
                Effect::Reads => mutating.map(|m| (m, AFTER_MUTATING)).into_iter().collect(),
                Effect::Mutates if reads.is_empty() => mutating.map(|m| (m, AFTER_MUTATING)).into_iter().collect(),
                Effect::Mutates => reads.iter().map(|&r| (r, MUTATING_ALONE)).collect(),
            };
            let id = self.add(Step::Check { name: c.name.into(), asserts: c.asserts.into() }, &needs);
            match c.effect {
                Effect::Reads => reads.push(id),
                Effect::Mutates => {
                    mutating = Some(id);
                    reads.clear();
                }
            }
        }
    }
}
