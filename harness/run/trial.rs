//! The trials of a run: each phase and each check, as the conformance entry and the report name them.

use std::{num::NonZeroUsize, path::PathBuf};

use crate::{checks::CheckDef, common::names::Phase};

/// How many steps (or checks) of a phase run at once unless [`RunOptions::parallel`] says
/// otherwise. The widest layer of the shipped plans is the start of the install: the five
/// namespaces, the values files, then the head of the Istio chain beside
/// the three observability charts and their rollouts. Eight keeps every rollout of a layer awaited
/// at once while bounding the helm processes that render charts side by side on a CI runner (GitHub's
/// standard Linux runner has 4 vCPUs and 16 GB, field guide §7); a helm install spends most of its
/// time waiting on the API server, not on a CPU.
pub const DEFAULT_PARALLEL: NonZeroUsize = NonZeroUsize::new(8).expect("8 is not zero");

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder that holds run folders (`reports/`).
    pub reports_dir: PathBuf,
    /// Keep the cluster at the end.
    pub keep: bool,
    /// How progress is shown on the terminal.
    pub progress: crate::common::progress::Style,
    /// How many steps, or checks, run at once: [`DEFAULT_PARALLEL`]; 1 runs them one after another
    /// in plan order.
    pub parallel: NonZeroUsize,
}

/// One trial of a run: a phase, or a check in a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialSpec {
    /// The phase (the JUnit suite).
    pub phase: Phase,
    /// The phase's own work, or one of its checks.
    pub trial: Trial,
}

/// What a trial runs.
#[derive(Clone, Copy)]
pub enum Trial {
    /// The phase's steps.
    Phase,
    /// A check, with its definition (looked up once, when the trials are listed).
    Check(&'static CheckDef),
}

impl PartialEq for Trial {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Trial {}

impl std::fmt::Debug for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Trial {
    /// `phase`, or the check's name.
    pub fn name(&self) -> &'static str {
        match self {
            Trial::Phase => "phase",
            Trial::Check(def) => def.info.name,
        }
    }
}

impl TrialSpec {
    /// Name as shown by `--list`: `provision::phase`, `checks::mtls`.
    pub fn trial_name(&self) -> String {
        format!("{}::{}", self.phase, self.trial.name())
    }

    /// The JUnit suite (the phase's name).
    pub fn suite(&self) -> &'static str {
        self.phase.as_str()
    }

    /// The JUnit test case name.
    pub fn name(&self) -> &'static str {
        self.trial.name()
    }
}
