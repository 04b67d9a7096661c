//! The diagnostic bundle, taken at the run's first failure while the cluster is still there
//! ([`crate::checks::bundle`]): linked from run.json, the failing JUnit case and summary.md.

use crate::{
    checks::bundle,
    cluster::runner::is_interrupted,
    common::names::Phase,
    evidence::{Outcome, Verdict},
    report::BundleRecord,
};

use super::Session;

/// How long the bundle may take: it reads a few hundred small files over the API.
const BUNDLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);

impl Session {
    /// Collects the bundle for `trigger`'s failure, once per run: only for a trial that failed
    /// or errored before cleanup, on a cluster the run has reached, and not after Ctrl-C.
    pub(super) fn bundle_on_first_failure(&mut self, phase: Phase, trigger: &str, verdict: &Verdict) {
        let failed = matches!(verdict.outcome, Outcome::Fail | Outcome::Error);
        if !failed || phase == Phase::Cleanup || self.reporting.record.bundle.is_some() || is_interrupted() {
            return;
        }
        let Some(live) = self.exec.cluster.live.get() else { return };
        let label = format!("diagnostic bundle for {trigger}");
        self.state.progress.begin(&label);
        let collect = async {
            tokio::select! {
                index = tokio::time::timeout(BUNDLE_DEADLINE, bundle::collect(live, trigger)) => index.ok(),
                _ = crate::cluster::runner::interrupted() => None,
            }
        };
        let Some(index) = self.rt.block_on(collect) else {
            self.state.progress.end(&label, "unfinished");
            tracing::warn!("diagnostic bundle: not finished within {}s or interrupted", BUNDLE_DEADLINE.as_secs());
            return;
        };
        self.state.progress.end(&label, &format!("{} files, {} KiB", index.files.len(), index.bytes / 1024));
        self.reporting.record.bundle = Some(BundleRecord {
            index: format!("evidence/{}", bundle::INDEX),
            trigger: trigger.to_string(),
            files: index.files.len(),
            bytes: index.bytes,
            missing: index.missing.len(),
        });
    }
}
