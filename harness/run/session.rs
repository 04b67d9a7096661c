//! The session's lifecycle: starting a run (its folder, plan and first report), and the drop guard
//! that still cleans up and finishes the report after a panic.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::{
    checks::{self},
    cluster::runner::Runner,
    common::names::Phase,
    common::util::{now_rfc3339, write_atomic},
    evidence::Outcome,
    plan::{self, Plan, RunContext, Step},
    report::RunRecord,
    scenario::Scenario,
};

use super::{
    Session,
    cleanup::CleanupLedger,
    executor::ExecState,
    reporting::Reporting,
    step::{Cluster, Exec, create_private_dir},
    trial::{RunOptions, Trial, TrialSpec},
};

/// A fresh run id: UTC time, sortable, plus a random suffix. Runs started in the same second (a CI
/// matrix, a loop) would otherwise share a run folder and a cluster name, and delete each other's
/// cluster at teardown.
pub fn new_run_id() -> String {
    let mut suffix = [0u8; 3];
    // Without an entropy source the nanoseconds still tell runs of one second apart.
    if getrandom::fill(&mut suffix).is_err() {
        let nanos = chrono::Utc::now().timestamp_subsec_nanos().to_le_bytes();
        suffix.copy_from_slice(&nanos[..3]);
    }
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

/// A panic that unwinds past a session still cleans up and finishes the report: the cluster is
/// not left running and run.json does not stay unfinished.
impl Drop for Session {
    fn drop(&mut self) {
        if !self.reporting.finished {
            tracing::error!("the run stopped unexpectedly; cleaning up and writing the report");
            self.conclude();
        }
    }
}

/// The lock that marks the run's cluster as in use for `gc` (a run on an existing cluster has none).
fn cluster_lock(plan: &Plan) -> Option<crate::cluster::liveness::ClusterLock> {
    let cluster = plan.cluster_name.as_deref()?;
    crate::cluster::liveness::hold(cluster)
        .inspect_err(|e| tracing::warn!("cannot mark cluster {cluster} as in use for gc: {e}"))
        .ok()
}

/// A cluster of the run's own whose scenario fixes no host port gets a free one on 127.0.0.1, so
/// that two runs of one scenario on one machine do not both map the same port. The plan and the
/// run record show which (the port is free when chosen; kind or k3d binds it moments later).
fn with_host_port(mut scenario: Scenario) -> std::io::Result<Scenario> {
    if scenario.provider != crate::scenario::Provider::Existing && scenario.ingress.host_port.is_none() {
        scenario.ingress.host_port = Some(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port());
    }
    Ok(scenario)
}

/// `reports/latest` → this run's folder (best effort: a reader's convenience).
fn point_latest(reports_dir: &std::path::Path, run_id: &str) {
    let latest = reports_dir.join("latest");
    let _ = std::fs::remove_file(&latest);
    #[cfg(unix)]
    let _ = std::os::unix::fs::symlink(run_id, &latest);
}

/// `plan.json`, redacted: the plan's commands carry the mirrored URLs, credentials included.
fn write_plan(run_dir: &std::path::Path, plan: &Plan) -> std::io::Result<()> {
    let plan_json = serde_json::to_string_pretty(plan).expect("plan serializes");
    write_atomic(&run_dir.join("plan.json"), crate::redact::redact(&plan_json).as_bytes())
}

impl Session {
    /// Creates the run folder, writes `plan.json` and a first `run.json`/`junit.xml`.
    pub fn start(scenario: Scenario, opts: &RunOptions) -> std::io::Result<Session> {
        let scenario = with_host_port(scenario)?;
        let run_id = new_run_id();
        let run_dir = opts.reports_dir.join(&run_id);
        std::fs::create_dir_all(run_dir.join("evidence"))?;
        let private_dir = std::env::temp_dir().join(format!("meshcheck-{run_id}"));
        create_private_dir(&private_dir)?;
        let ctx = RunContext {
            run_id: run_id.clone(),
            run_dir: run_dir.display().to_string(),
            private_dir: private_dir.display().to_string(),
        };
        let plan = plan::build(&scenario, &ctx);
        write_plan(&run_dir, &plan)?;
        point_latest(&opts.reports_dir, &run_id);
        let record = first_record(&scenario, run_id);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let cluster = Cluster {
            kubeconfig: PathBuf::from(&plan.kubeconfig),
            context: plan.context.clone(),
            scenario: scenario.clone(),
            run_dir: run_dir.clone(),
            live: tokio::sync::OnceCell::new(),
        };
        let exec = Exec {
            runner: Runner::new(&run_dir),
            scenario: Arc::new(scenario.clone()),
            cluster: Arc::new(cluster),
            run_dir: run_dir.clone(),
            traffic: Arc::default(),
            private_kubeconfig: plan.cluster_name.is_some().then(|| PathBuf::from(&plan.kubeconfig)),
            created_namespaces: Arc::default(),
            owned: Arc::default(),
        };
        let session = Session {
            state: ExecState {
                blocked: None,
                progress: crate::common::progress::Progress::new(opts.progress),
                parallel: opts.parallel.get(),
                selected: Session::trials(&plan),
                ended: BTreeMap::new(),
                failures: BTreeMap::new(),
                checked: BTreeMap::new(),
                step_spans: BTreeMap::new(),
                phase_spans: BTreeMap::new(),
            },
            reporting: Reporting { record, finished: false },
            ledger: CleanupLedger { cluster_created: Arc::default(), keep: opts.keep, cleaned: false },
            scenario,
            _cluster_lock: cluster_lock(&plan),
            plan,
            run_dir,
            rt,
            exec,
        };
        session.write_reports();
        crate::cluster::runner::set_left_behind(session.what_may_be_left());
        Ok(session)
    }

    /// The trials of this run in order: preflight, then each phase followed by its checks.
    pub fn trials(plan: &Plan) -> Vec<TrialSpec> {
        let mut out = Vec::new();
        for phase in plan.phases.iter().filter(|p| p.name != Phase::Cleanup) {
            let has_work = phase.steps.iter().any(|s| !matches!(s.step, Step::Check { .. }));
            if phase.name == Phase::Preflight || has_work {
                out.push(TrialSpec { phase: phase.name, trial: Trial::Phase });
            }
            for planned in &phase.steps {
                if let Step::Check { name, .. } = &planned.step {
                    let def =
                        checks::find(name).expect("plans name registered checks (catalog and registry agree, tested)");
                    out.push(TrialSpec { phase: phase.name, trial: Trial::Check(def) });
                }
            }
        }
        // Cleanup is a trial of its own, last, so that every report (libtest, nextest, JUnit,
        // summary.md) says whether the cluster or the run's namespaces are gone.
        out.push(TrialSpec { phase: Phase::Cleanup, trial: Trial::Phase });
        out
    }

    /// The trials the run will be asked for, when a test filter chose some (all by default): the
    /// checks of a phase run together, and one left out must not run with them.
    pub fn select(&mut self, trials: &[TrialSpec]) {
        self.state.selected = trials.to_vec();
    }
}

/// The run record before anything ran: the scenario, the versions, the host.
fn first_record(scenario: &Scenario, run_id: String) -> RunRecord {
    let v = &scenario.versions;
    let mut versions: BTreeMap<String, String> = [
        ("cilium", v.cilium.clone()),
        ("istio", v.istio.clone()),
        ("gateway_api", v.gateway_api.clone()),
        ("kube_prometheus_stack", v.kube_prometheus_stack.clone()),
        ("tempo", v.tempo.clone()),
        ("kiali", v.kiali.clone()),
        ("bookinfo", v.bookinfo().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(up) = &v.upgrade_to {
        versions.insert("istio_upgrade_to".into(), up.clone());
    }
    if let Some(k) = scenario.kubernetes_version() {
        versions.insert("kubernetes".into(), k.to_string());
    }
    let host = BTreeMap::from([
        ("os".to_string(), std::env::consts::OS.to_string()),
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
        ("hostname".to_string(), std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string()),
    ]);
    RunRecord {
        format: crate::report::FORMAT,
        run_id,
        scenario_name: scenario.name.clone(),
        scenario: scenario.to_json(),
        provider: scenario.provider.as_str().into(),
        architecture: scenario.cluster.architecture.resolve().map(|a| a.as_str()).unwrap_or("unknown").into(),
        host,
        versions,
        started_at: now_rfc3339(),
        ended_at: String::new(),
        outcome: Outcome::NotRun,
        phase_durations_secs: BTreeMap::new(),
        steps: Vec::new(),
        results: Vec::new(),
        bundle: None,
    }
}
