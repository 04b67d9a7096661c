//! The report being written: run.json, junit.xml and summary.md after every result, and the
//! final one; re-judging a run folder; one run shared by the processes of a nextest run.

use std::path::{Path, PathBuf};

use crate::{
    checks::{self},
    common::names::Phase,
    common::util::{now_rfc3339, write_atomic},
    evidence::{Evidence, Outcome, Verdict},
    report::{RunRecord, TrialResult},
};

use super::{
    Session,
    trial::{Trial, TrialSpec},
};

/// The report being written: run.json, junit.xml and summary.md after every result.
pub(super) struct Reporting {
    pub(super) record: RunRecord,
    /// Whether the final report has been written.
    pub(super) finished: bool,
}

/// Re-judges every check of a run folder from its evidence and rewrites `junit.xml`/`summary.md`.
/// Results whose collector did not finish keep their recorded verdict.
///
/// A run folder may come from anywhere (a nightly artifact), so nothing outside it is read: an
/// `evidence_root` that is absolute, climbs out with `..` or resolves outside the folder, and any
/// evidence file a symlink leads out of its evidence folder, turn that trial into an `error`
/// verdict that names the refusal. The other trials are still judged, so one bad entry neither
/// hides the rest nor passes; the overall outcome is then `error` and `judge` exits non-zero.
pub fn rejudge(run_dir: &Path) -> Result<RunRecord, crate::report::ReportError> {
    let mut record = RunRecord::load(run_dir)?;
    for r in &mut record.results {
        let (Some(root), Some(def)) = (&r.evidence_root, checks::find(&r.name)) else { continue };
        if !r.collected || r.verdict.outcome == Outcome::NotRun {
            continue;
        }
        r.verdict = match Evidence::within(run_dir, root) {
            Ok(evidence) => (def.judge)(&evidence),
            Err(refused) => refused.into(),
        };
    }
    record.outcome = record.overall();
    // The graph drawn in summary.md is read through the same guard as the judges' evidence.
    let graph = Evidence::within(run_dir, "evidence").map(|e| checks::kiali::recorded_graph(&e)).unwrap_or_default();
    record.write_all(run_dir, &graph)?;
    Ok(record)
}

/// Runs a whole run once per `key` across processes and returns its record.
///
/// cargo-nextest runs every trial in a process of its own. The first process of a nextest run
/// (`key` = `NEXTEST_RUN_ID`) executes the whole run with `run`, which returns the finished run
/// folder; every other process waits on the lock and reads that folder's record. Each process then
/// reports the verdict recorded for its own trial, so nextest's JUnit and the run folder's
/// `junit.xml` are two views of one result and cannot disagree.
pub fn shared_run(
    reports_dir: &Path,
    key: &str,
    run: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<RunRecord, String> {
    let dir = reports_dir.join(".nextest");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = dir.join(format!("{key}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let marker = dir.join(format!("{key}.run"));
    let run_dir = match std::fs::read_to_string(&marker) {
        Ok(path) => PathBuf::from(path.trim()),
        Err(_) => {
            let run_dir = run()?;
            write_atomic(&marker, run_dir.display().to_string().as_bytes())
                .map_err(|e| format!("{}: {e}", marker.display()))?;
            run_dir
        }
    };
    let record = RunRecord::load(&run_dir).map_err(|e| e.to_string());
    drop(lock);
    record
}

impl Session {
    /// Cleans up (unless `--keep`), writes the final reports and returns the record.
    pub fn finish(mut self) -> RunRecord {
        self.conclude();
        self.reporting.record.clone()
    }

    /// Cleans up if the cleanup trial did not run, and writes the final reports; once. `finish`
    /// calls it, and so does the drop guard when a panic unwinds past a session.
    pub(super) fn conclude(&mut self) {
        if self.reporting.finished {
            return;
        }
        self.reporting.finished = true;
        if !self.ledger.cleaned {
            self.run_trial(&TrialSpec { phase: Phase::Cleanup, trial: Trial::Phase });
        }
        self.reporting.record.ended_at = now_rfc3339();
        self.reporting.record.outcome = self.reporting.record.overall();
        self.write_reports();
    }

    /// Marks every trial not yet run as not run (when a run stops early).
    pub fn mark_rest_not_run(&mut self, trials: &[TrialSpec], why: &str) {
        for t in trials {
            if !self.reporting.record.results.iter().any(|r| r.suite == t.suite() && r.name == t.name()) {
                self.reporting.record.results.push(TrialResult {
                    suite: t.suite().to_string(),
                    name: t.name().to_string(),
                    verdict: Verdict::not_run(why.to_string()),
                    started_at: String::new(),
                    duration_secs: 0.0,
                    evidence_root: None,
                    collected: true,
                });
            }
        }
        self.write_reports();
    }

    pub(super) fn write_reports(&self) {
        let graph = checks::kiali::recorded_graph(&Evidence::new(self.run_dir.join("evidence")));
        if let Err(e) = self.reporting.record.write_all(&self.run_dir, &graph) {
            tracing::error!("could not write the report: {e}");
        }
    }
}
