//! The graph under construction: phases opened in order, steps numbered in plan order as they are
//! added, each with the earlier steps it needs. The phase files add their steps through it.

use super::{Need, Overlap, PhasePlan, PlannedStep, Step, StepId};
use crate::common::names::Phase;

/// Builds the graph phase by phase, numbering steps in plan order.
pub(super) struct Graph {
    phases: Vec<PhasePlan>,
    count: usize,
}

impl Graph {
    /// An empty graph: no phase open yet.
    pub(super) fn new() -> Graph {
        Graph { phases: Vec::new(), count: 0 }
    }

    /// Opens the next phase: the steps added from here on belong to it.
    pub(super) fn phase(&mut self, name: Phase) {
        self.phases.push(PhasePlan { name, steps: Vec::new() });
    }

    /// Adds a step to the current phase; every need names an earlier step.
    pub(super) fn add(&mut self, step: Step, needs: &[(StepId, &'static str)]) -> StepId {
        self.count += 1;
        let id = StepId(self.count);
        let mut needs: Vec<Need> = needs.iter().map(|&(step, why)| Need { step, why }).collect();
        needs.sort_by_key(|n| n.step);
        needs.dedup_by_key(|n| n.step);
        let phase = self.phases.last_mut().expect("a phase is open");
        phase.steps.push(PlannedStep { id, needs, starts_during: None, step });
        id
    }

    /// Adds a step that may start during the earlier phase `overlap.phase`.
    pub(super) fn add_early(&mut self, step: Step, needs: &[(StepId, &'static str)], overlap: Overlap) -> StepId {
        let id = self.add(step, needs);
        let phase = self.phases.last_mut().expect("a phase is open");
        phase.steps.last_mut().expect("just added").starts_during = Some(overlap);
        id
    }

    /// The steps added so far, in plan order.
    pub(super) fn steps(&self) -> impl Iterator<Item = &Step> {
        self.phases.iter().flat_map(|p| p.steps.iter().map(|s| &s.step))
    }

    /// The finished phases, in order.
    pub(super) fn into_phases(self) -> Vec<PhasePlan> {
        self.phases
    }
}
