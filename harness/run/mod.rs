//! The run: executes a plan and owns every side effect on the cluster.
//!
//! A [`Session`] is three parts with their own types: the executor's state (`ExecState`, in
//! `executor`), the report being written (`Reporting`, in `reporting`) and the cleanup ledger
//! (`CleanupLedger`, in `cleanup`). Files: `session` (start, the drop guard), `executor` (the graph
//! of a phase), `step` (one step), `trials` (a phase's or a check's trial), `cleanup`, `reporting`,
//! `trial` (the trial names). `step` and `trial` import no other file of this folder; the others
//! import them and `executor`, never each other in a circle.
//!
//! A run: executes the plan phase by phase, collects and judges checks, and keeps the run folder
//! current after every result, so a crash, a timeout or Ctrl-C still leaves a readable report.
//!
//! Within a phase the executor runs the plan's graph: every step whose needs have finished starts,
//! up to [`RunOptions::parallel`] at once, the lowest step number first, together with the steps
//! of later phases the plan lets start during this one. When a step fails, nothing new starts in
//! its phase (nor anywhere, when the failure is the running phase's own), the waits in flight are
//! stopped, the other steps in flight finish, everything is recorded, and the phase fails naming
//! its first failure. The checks of a phase run the same way once its steps have: those that only
//! read side by side, one that changes the mesh alone (the plan's needs among checks say so), each
//! with its own view of the cluster ([`Live`](crate::cluster::live::Live)) and its own ledger of changes to take back.
//! With `parallel` 1 the same executor runs one step at a time in plan order.
//!
//! The same session drives `meshcheck run` and the libtest-mimic conformance entry point, which
//! only maps each phase and check onto a trial. A check's trial reports the check's own start and
//! duration, and a phase's trial the span of its steps, so the report shows what ran side by side.
//!
//! May import: every other stage (it is the top of the graph); nothing imports it but the entry
//! points (`harness/bin/meshcheck.rs`, `suites/conformance.rs`).

use std::path::PathBuf;

use crate::{plan::Plan, scenario::Scenario};

mod cleanup;
mod diagnostics;
mod executor;
mod reporting;
mod session;
mod step;
mod trial;
mod trials;

pub use reporting::{rejudge, shared_run};
pub use session::new_run_id;
pub use step::StepError;
pub use trial::{DEFAULT_PARALLEL, RunOptions, Trial, TrialSpec};

use cleanup::CleanupLedger;
use executor::ExecState;
use reporting::Reporting;
use step::Exec;

/// A live run in progress: the plan, and the three parts of what happens to it.
pub struct Session {
    /// The scenario.
    pub scenario: Scenario,
    /// The plan being executed.
    pub plan: Plan,
    /// The run folder.
    pub run_dir: PathBuf,
    rt: tokio::runtime::Runtime,
    exec: Exec,
    /// The executor's state: what ended, what failed, when.
    state: ExecState,
    /// The report being written.
    reporting: Reporting,
    /// What cleanup must take back, and whether it has.
    ledger: CleanupLedger,
    /// The lock that tells `gc` this run's cluster is in use, held for the session's life.
    _cluster_lock: Option<crate::cluster::liveness::ClusterLock>,
}
