//! Cleanup, the last trial of every run: what the run owes the cluster, and taking it back.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::{
    cluster::runner::is_interrupted, common::names::Phase, common::util::now_rfc3339, evidence::Verdict, plan::Step,
    report::StepRecord,
};

use super::{
    Session,
    step::{StepError, run_step},
};

/// What cleanup owes the cluster.
pub(super) struct CleanupLedger {
    /// The run's cluster tool has started creating the cluster: from then on cleanup deletes it.
    pub(super) cluster_created: Arc<AtomicBool>,
    /// Keep the cluster (`--keep`).
    pub(super) keep: bool,
    /// Whether cleanup has run (as its trial, or from `finish` or the drop guard).
    pub(super) cleaned: bool,
}

impl Session {
    /// The cleanup trial: stops the traffic generator, keeps the cluster's state as evidence, then
    /// deletes the cluster (kind, k3d) or the namespaces the run created (existing), unless
    /// `--keep`. Each action is a step record; a failure names what may be left and how to remove it.
    pub(super) fn clean_up(&mut self) -> Verdict {
        self.ledger.cleaned = true;
        self.stop_traffic_and_snapshot();
        let cluster = self.plan.cluster_name.clone();
        let created = self.ledger.cluster_created.load(Ordering::SeqCst);
        if self.ledger.keep {
            return Verdict::pass(match &cluster {
                Some(c) if created => format!(
                    "kept cluster {c} (--keep); kubeconfig {}; remove it later with `meshcheck gc --delete`",
                    self.plan.kubeconfig
                ),
                Some(_) => "--keep: no cluster was created, so none is left".to_string(),
                None => "kept the run's namespaces (--keep)".to_string(),
            });
        }
        let (done, failures) = self.run_cleanup_steps(created);
        // The private folder holds the throw-away cluster's kubeconfig: it goes with the cluster.
        if let Some(dir) = Path::new(&self.plan.kubeconfig).parent().filter(|_| cluster.is_some())
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not delete {}: {e}", dir.display());
        }
        if failures.is_empty() {
            return if done.is_empty() {
                Verdict::pass("nothing to clean up: the run created no cluster and reached none")
            } else {
                Verdict::pass(format!("cleaned up: {}", done.join(", ")))
            };
        }
        Verdict::error(format!("cleanup failed; {}", self.what_may_be_left())).with_details(failures)
    }

    /// Stops the traffic generator, and keeps the cluster's state as evidence unless interrupted.
    fn stop_traffic_and_snapshot(&mut self) {
        let traffic = self.exec.traffic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(g) = traffic {
            let _ = self.rt.block_on(g.finish());
        }
        if let Some(live) = self.exec.cluster.live.get()
            && !is_interrupted()
        {
            // The timer must be created inside the runtime: a `Sleep` built outside panics.
            let snapshot =
                async { tokio::time::timeout(std::time::Duration::from_secs(60), live.snapshot_cluster()).await };
            match self.rt.block_on(snapshot) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("cluster snapshot incomplete: {e}"),
                Err(_) => tracing::warn!("cluster snapshot incomplete: no answer within 60s"),
            }
        }
    }

    /// The plan's cleanup steps that apply (deleting a cluster the run created; the run's
    /// namespaces, when it reached a cluster), each a step record. Returns what was done and what
    /// failed.
    fn run_cleanup_steps(&mut self, created: bool) -> (Vec<String>, Vec<String>) {
        let cleanup: Vec<Step> = self
            .plan
            .phases
            .iter()
            .filter(|p| p.name == Phase::Cleanup)
            .flat_map(|p| p.steps.iter().map(|s| s.step.clone()))
            .collect();
        let (mut done, mut failures) = (Vec::new(), Vec::new());
        for step in cleanup {
            let (started_at, started) = (now_rfc3339(), Instant::now());
            let result = match &step {
                Step::Command { command, .. } if created => {
                    self.exec.runner.run_ignoring_interrupt(command).map(|_| ()).map_err(StepError::from)
                }
                // A release is the run's to uninstall once its install started.
                Step::Uninstall { release, .. } if self.exec.owned.installed(release) => {
                    self.rt.block_on(run_step(self.exec.clone(), step.clone()))
                }
                // Only a run that reached the cluster can have created namespaces or objects there.
                Step::DeleteOwnedNamespaces { .. } | Step::DeleteOwnedObjects { .. }
                    if self.exec.cluster.live.initialized() =>
                {
                    self.rt.block_on(run_step(self.exec.clone(), step.clone()))
                }
                _ => continue,
            };
            let error = result.err().map(|e| e.to_string());
            self.reporting.record.steps.push(StepRecord {
                phase: Phase::Cleanup.as_str().to_string(),
                step: step.label(),
                started_at,
                duration_secs: started.elapsed().as_secs_f64(),
                error: error.clone(),
            });
            match error {
                Some(e) => failures.push(format!("{}: {e}", step.label())),
                None => done.push(step.label()),
            }
        }
        (done, failures)
    }

    /// What a failed cleanup may have left, and how to remove it.
    pub(super) fn what_may_be_left(&self) -> String {
        let run = self.plan.run_id.to_lowercase();
        match &self.plan.cluster_name {
            Some(c) => {
                let by_hand = match self.plan.provider {
                    crate::scenario::Provider::K3d => format!("k3d cluster delete {c}"),
                    _ => format!("kind delete cluster --name {c}"),
                };
                format!("cluster {c} may be left: delete it with `meshcheck gc --delete` (or `{by_hand}`)")
            }
            None if self.scenario.installs() => format!(
                "namespaces labelled {label}={run} may be left: delete them with `kubectl delete namespace -l {label}={run}`; \
                 and what the run installed: its helm releases (`helm list -A`; delete the Kiali CR istio-system/kiali before \
                 `helm uninstall kiali-operator`), the CiliumClusterwideNetworkPolicy allow-ambient-hostprobes and the CRDs of \
                 istio.io, gateway.networking.k8s.io, monitoring.coreos.com and kiali.io if the cluster had none before",
                label = crate::common::names::RUN_LABEL
            ),
            None => format!(
                "namespaces labelled {label}={run} may be left: delete them with `kubectl delete namespace -l {label}={run}`",
                label = crate::common::names::RUN_LABEL
            ),
        }
    }
}
