//! A run: executes the plan phase by phase, collects and judges checks, and keeps the run folder
//! current after every result, so a crash, a timeout or Ctrl-C still leaves a readable report.
//!
//! The same session drives `meshcheck run` and the libtest-mimic conformance entry point, which
//! only maps each phase and check onto a trial.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Instant,
};

use crate::{
    checks::{self, CheckDef, Collector},
    evidence::{Evidence, Outcome, Verdict},
    live::{Live, LiveError},
    names::Phase,
    plan::{self, Plan, RunContext, Source, Step, TrafficAction},
    preflight,
    report::{RunRecord, StepRecord, TrialResult},
    runner::{CommandError, INTERRUPTED, Runner},
    scenario::Scenario,
    traffic::TrafficGenerator,
    util::{now_rfc3339, write_atomic},
};

/// Options of a run that are not part of the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Folder that holds run folders (`reports/`).
    pub reports_dir: PathBuf,
    /// Keep the cluster at the end.
    pub keep: bool,
    /// How progress is shown on the terminal.
    pub progress: crate::progress::Style,
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

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An external command failed (its record is under `commands/`).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A call to the cluster failed.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// Ctrl-C, SIGTERM or SIGHUP.
    #[error("interrupted (Ctrl-C, SIGTERM or SIGHUP)")]
    Interrupted,
    /// A file of the run folder could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The gateway Service's ports cannot be derived.
    #[error("no Istio Gateway with a server port in {0}")]
    NoGatewayPorts(String),
    /// Several waits of one batch failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<StepError>),
}

/// A live run in progress.
pub struct Session {
    /// The scenario.
    pub scenario: Scenario,
    /// The plan being executed.
    pub plan: Plan,
    /// The run folder.
    pub run_dir: PathBuf,
    record: RunRecord,
    runner: Runner,
    rt: tokio::runtime::Runtime,
    live: Option<Live>,
    blocked: Option<String>,
    cluster_created: bool,
    traffic: Option<TrafficGenerator>,
    keep: bool,
    progress: crate::progress::Progress,
}

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

impl Session {
    /// Creates the run folder, writes `plan.json` and a first `run.json`/`junit.xml`.
    pub fn start(scenario: Scenario, opts: &RunOptions) -> std::io::Result<Session> {
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
        write_atomic(&run_dir.join("plan.json"), &serde_json::to_vec_pretty(&plan).expect("plan serializes"))?;
        let latest = opts.reports_dir.join("latest");
        let _ = std::fs::remove_file(&latest);
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink(&run_id, &latest);
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
        let record = RunRecord {
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
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let session = Session {
            runner: Runner::new(&run_dir),
            scenario,
            plan,
            run_dir,
            record,
            rt,
            live: None,
            blocked: None,
            cluster_created: false,
            traffic: None,
            keep: opts.keep,
            progress: crate::progress::Progress::new(opts.progress),
        };
        session.write_reports();
        Ok(session)
    }

    /// The trials of this run in order: preflight, then each phase followed by its checks.
    pub fn trials(plan: &Plan) -> Vec<TrialSpec> {
        let mut out = Vec::new();
        for phase in plan.phases.iter().filter(|p| p.name != Phase::Cleanup) {
            let has_work = phase.steps.iter().any(|s| !matches!(s, Step::Check { .. }));
            if phase.name == Phase::Preflight || has_work {
                out.push(TrialSpec { phase: phase.name, trial: Trial::Phase });
            }
            for step in &phase.steps {
                if let Step::Check { name, .. } = step {
                    let def =
                        checks::find(name).expect("plans name registered checks (catalog and registry agree, tested)");
                    out.push(TrialSpec { phase: phase.name, trial: Trial::Check(def) });
                }
            }
        }
        out
    }

    /// Runs one trial and records its result.
    pub fn run_trial(&mut self, trial: &TrialSpec) -> Verdict {
        let started = Instant::now();
        let phase = trial.phase;
        let (verdict, evidence_root, collected) = if let Some(why) = &self.blocked {
            (Verdict::not_run(format!("not run: {why}")), None, true)
        } else if INTERRUPTED.load(Ordering::SeqCst) {
            self.blocked = Some("interrupted (Ctrl-C, SIGTERM or SIGHUP)".into());
            (Verdict::error("interrupted (Ctrl-C, SIGTERM or SIGHUP) before this step"), None, true)
        } else {
            match trial.trial {
                Trial::Phase => {
                    let v = self.run_phase(phase);
                    if v.outcome != Outcome::Pass {
                        self.blocked = Some(format!("phase `{phase}` did not pass"));
                    }
                    (v, None, true)
                }
                Trial::Check(def) => {
                    self.progress.begin(&format!("{phase}: check {}", def.info.name));
                    let (v, collected) = self.run_check(phase, def);
                    self.progress.end(&v.outcome.to_string());
                    (v, Some(phase.evidence_root().to_string()), collected)
                }
            }
        };
        let duration_secs = started.elapsed().as_secs_f64();
        *self.record.phase_durations_secs.entry(phase.as_str().to_string()).or_default() += duration_secs;
        self.record.results.push(TrialResult {
            suite: phase.as_str().to_string(),
            name: trial.name().to_string(),
            verdict: verdict.clone(),
            started_at: crate::report::start_of(duration_secs),
            duration_secs,
            evidence_root,
            collected,
        });
        self.write_reports();
        verdict
    }

    fn evidence_for(&self, phase: Phase) -> Evidence {
        Evidence::new(self.run_dir.join(phase.evidence_root()))
    }

    fn run_phase(&mut self, name: Phase) -> Verdict {
        if name == Phase::Preflight {
            let problems = preflight::tool_problems(&self.scenario, &self.runner);
            return if problems.is_empty() {
                Verdict::pass("container engine, cluster tool and helm answer")
            } else {
                Verdict::error(format!("preflight: {} missing piece(s) for a live run", problems.len()))
                    .with_details(problems)
            };
        }
        let steps: Vec<Step> =
            self.plan.phases.iter().find(|p| p.name == name).map(|p| p.steps.clone()).unwrap_or_default();
        for batch in plan::batches(&steps) {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Verdict::error(format!("phase `{name}` interrupted (Ctrl-C, SIGTERM or SIGHUP)"));
            }
            let label = batch.iter().map(|s| s.label()).collect::<Vec<_>>().join(" + ");
            self.progress.begin(&format!("{name}: {label}"));
            let (started_at, started) = (now_rfc3339(), Instant::now());
            let result = if batch.len() > 1 { self.run_waits(&batch) } else { self.run_step(batch[0]) };
            self.progress.end(if result.is_ok() { "done" } else { "failed" });
            let result = result.map_err(|e| e.to_string());
            self.record.steps.push(StepRecord {
                phase: name.as_str().to_string(),
                step: label,
                started_at,
                duration_secs: started.elapsed().as_secs_f64(),
                error: result.as_ref().err().cloned(),
            });
            self.write_reports();
            if let Err(e) = result {
                return Verdict::error(format!("phase `{name}` stopped: {}", first_line(&e))).with_details([e]);
            }
        }
        Verdict::pass(format!("phase `{name}`: {} steps done", steps.len()))
    }

    fn run_step(&mut self, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Command { command, advisory, creates_cluster, .. } => {
                // Even a failed create can leave containers behind; cleanup must try.
                self.cluster_created |= *creates_cluster;
                let result = self.runner.run(command);
                self.protect_kubeconfig();
                let Some(file) = advisory else { return result.map(|_| ()).map_err(StepError::from) };
                let text = match result {
                    Err(CommandError::NotFound { .. }) => return Ok(()),
                    Err(CommandError::Interrupted { .. }) => return Err(StepError::Interrupted),
                    Ok(out) => out,
                    // Findings: the full output is in the command record; the tail goes to evidence.
                    Err(e) => e.to_string(),
                };
                Evidence::new(self.run_dir.join("evidence"))
                    .write(file, crate::util::redact(&text).as_bytes())
                    .map(|_| ())
                    .map_err(|source| StepError::Write { path: format!("evidence/{file}"), source })
            }
            Step::WriteFile { path, content, .. } => write_atomic(Path::new(path), content.as_bytes())
                .map_err(|source| StepError::Write { path: path.clone(), source }),
            Step::Apply { source, namespace, dry_run_first, .. } => {
                self.connect()?;
                let live = self.live.as_ref().expect("connected");
                until_interrupted(&self.rt, async {
                    Ok(apply_source(live, source, namespace.as_deref(), *dry_run_first).await?)
                })
            }
            Step::Wait { .. } => self.run_waits(&[step]),
            Step::Traffic { action } => {
                match action {
                    TrafficAction::Start => {
                        let t = &self.scenario.traffic;
                        let url = format!("{}/productpage", self.scenario.ingress.base_url());
                        let max = usize::try_from(t.rate_per_second).unwrap_or(20) * 3600;
                        let _guard = self.rt.enter();
                        let budget =
                            crate::traffic::Budget { failed_requests: t.failure_budget, max_outage: t.max_outage.0 };
                        self.traffic =
                            Some(TrafficGenerator::start(&url, t.rate_per_second, t.request_timeout.0, budget, max));
                        drop(_guard);
                        // The baseline: traffic flows for a while before the upgrade begins.
                        self.settle();
                    }
                    TrafficAction::Stop => {
                        if let Some(g) = self.traffic.take() {
                            let record = self.rt.block_on(g.finish());
                            Evidence::new(self.run_dir.join("evidence"))
                                .write_json("upgrade/traffic.json", &record)
                                .map_err(|source| StepError::Write {
                                    path: "evidence/upgrade/traffic.json".into(),
                                    source,
                                })?;
                        }
                    }
                    TrafficAction::During | TrafficAction::After => {
                        if let Some(g) = &self.traffic {
                            g.set_phase(action.as_str());
                        }
                        if *action == TrafficAction::After {
                            // Keep sending for a while after the last rollout, so "after" has data.
                            self.settle();
                        }
                    }
                }
                Ok(())
            }
            Step::Namespace { name, labels, run } => {
                self.connect()?;
                let live = self.live.as_ref().expect("connected");
                let ensured = until_interrupted(&self.rt, async {
                    Ok(crate::namespaces::ensure(&live.client, name, labels, run).await?)
                })?;
                if let crate::namespaces::Ensured::Created(ns) = ensured {
                    let obj: kube::api::DynamicObject =
                        serde_json::from_value(serde_json::to_value(&*ns).expect("a Namespace serializes"))
                            .expect("a Namespace reads as a DynamicObject");
                    crate::util::record_manifest(&self.run_dir, &obj, None).map_err(|source| StepError::Write {
                        path: format!("manifests/ (namespace {name})"),
                        source,
                    })?;
                }
                Ok(())
            }
            Step::DeleteOwnedNamespaces { run } => {
                self.connect()?;
                let live = self.live.as_ref().expect("connected");
                let deleted = self.rt.block_on(crate::namespaces::delete_owned(&live.client, run))?;
                tracing::info!("deleted the run's namespaces: [{}]", deleted.join(", "));
                Ok(())
            }
            Step::GatewayPorts { gateway, node_port, path } => {
                let objects = until_interrupted(&self.rt, async { Ok(load_source(gateway).await?) })?;
                let ports = crate::providers::gateway_server_ports(&objects);
                if ports.is_empty() {
                    return Err(StepError::NoGatewayPorts(gateway.describe()));
                }
                write_atomic(Path::new(path), crate::providers::gateway_ports(*node_port, &ports).as_bytes())
                    .map_err(|source| StepError::Write { path: path.clone(), source })
            }
            Step::Check { .. } => Ok(()),
        }
    }

    /// Keeps the throw-away cluster's kubeconfig private (0600) as soon as a tool has written it;
    /// a user's own kubeconfig (provider existing) is never touched.
    fn protect_kubeconfig(&self) {
        let path = Path::new(&self.plan.kubeconfig);
        if self.plan.cluster_name.is_some()
            && path.is_file()
            && let Err(e) = make_private(path)
        {
            tracing::warn!("could not make {} private: {e}", path.display());
        }
    }

    /// Lets the traffic generator run for the scenario's `traffic.settle` (until Ctrl-C).
    fn settle(&self) {
        let settle = self.scenario.settle(self.scenario.traffic.settle.0);
        let _ = until_interrupted(&self.rt, async {
            tokio::time::sleep(settle).await;
            Ok(())
        });
    }

    /// Awaits waits concurrently (a batch of consecutive ones, or a single one); every one that
    /// fails is reported.
    fn run_waits(&mut self, waits: &[&Step]) -> Result<(), StepError> {
        self.connect()?;
        let live = self.live.as_ref().expect("connected");
        let futures = waits.iter().filter_map(|step| match step {
            Step::Wait { kind, namespace, name, condition, timeout_secs } => Some(crate::waits::wait_for(
                &live.client,
                kind,
                namespace.as_deref(),
                name,
                condition,
                std::time::Duration::from_secs(*timeout_secs),
            )),
            _ => None,
        });
        until_interrupted(&self.rt, async {
            let mut failures: Vec<StepError> = futures::future::join_all(futures)
                .await
                .into_iter()
                .filter_map(Result::err)
                .map(StepError::from)
                .collect();
            match failures.len() {
                0 => Ok(()),
                1 => Err(failures.remove(0)),
                _ => Err(StepError::Several(failures)),
            }
        })
    }

    /// Connects to the cluster (once the kubeconfig exists).
    fn connect(&mut self) -> Result<(), StepError> {
        if self.live.is_none() {
            let kubeconfig = PathBuf::from(&self.plan.kubeconfig);
            let context = self.plan.context.clone();
            let client = self.rt.block_on(async {
                let bad = |e: &dyn std::fmt::Display| StepError::Kubeconfig {
                    path: kubeconfig.display().to_string(),
                    message: e.to_string(),
                };
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| bad(&e))?;
                let opts = kube::config::KubeConfigOptions { context, ..Default::default() };
                let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| bad(&e))?;
                kube::Client::try_from(cfg).map_err(|e| bad(&e))
            })?;
            let evidence = Evidence::new(self.run_dir.join("evidence"));
            self.live = Some(Live::new(client, self.scenario.clone(), self.run_dir.clone(), evidence)?);
        }
        Ok(())
    }

    fn run_check(&mut self, phase: Phase, def: &'static CheckDef) -> (Verdict, bool) {
        let evidence = self.evidence_for(phase);
        let collected = match def.collect {
            Collector::Scenario(collect) => {
                let (s, ev) = (self.scenario.clone(), evidence.clone());
                self.rt.block_on(collect(&s, &ev)).map_err(|e| e.to_string())
            }
            // A collector is not abandoned on Ctrl-C (the interrupt takes effect at the next
            // trial); `timeouts.check` bounds it. Whatever it changed on the cluster and did not
            // take back (STRICT, default-deny, a deleted policy) is taken back here, whether it
            // returned, failed or ran out of time: on an existing cluster that is the user's mesh.
            Collector::Cluster(collect) => {
                let timeout = self.scenario.timeouts.check.0;
                match self.connect() {
                    Err(e) => Err(e.to_string()),
                    Ok(_) => {
                        let mut live = self.live.take().expect("connected");
                        live.evidence = evidence.clone();
                        let r = self.rt.block_on(async { tokio::time::timeout(timeout, collect(&live)).await });
                        let reverted = self.rt.block_on(live.revert_all(crate::live::MUTATION_DEADLINE));
                        live.evidence = Evidence::new(self.run_dir.join("evidence"));
                        self.live = Some(live);
                        let collected = match r {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!("collector did not finish within {}s", timeout.as_secs())),
                        };
                        return self.judged(def, &evidence, collected, &reverted);
                    }
                }
            }
        };
        self.judged(def, &evidence, collected, &[])
    }

    /// The verdict of a check from its collector's result and what the session took back after it.
    /// A change that could not be taken back makes the check an error that names it, whatever the
    /// evidence says: the cluster is not as the run found it.
    fn judged(
        &self,
        def: &CheckDef,
        evidence: &Evidence,
        collected: Result<(), String>,
        reverted: &[crate::live::Reverted],
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

    /// Cleans up (unless `--keep`), writes the final reports and returns the record.
    pub fn finish(mut self) -> RunRecord {
        if let Some(g) = self.traffic.take() {
            let _ = self.rt.block_on(g.finish());
        }
        if let Some(live) = &self.live
            && !INTERRUPTED.load(Ordering::SeqCst)
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
        let cleanup_started = Instant::now();
        let cleanup: Vec<Step> =
            self.plan.phases.iter().find(|p| p.name == Phase::Cleanup).map(|p| p.steps.clone()).unwrap_or_default();
        if self.keep {
            tracing::info!("--keep: leaving cluster {:?}; kubeconfig {}", self.plan.cluster_name, self.plan.kubeconfig);
        } else {
            for step in cleanup {
                let result = match &step {
                    Step::Command { command, .. } if self.cluster_created => {
                        self.runner.run_ignoring_interrupt(command).map(|_| ()).map_err(StepError::from)
                    }
                    // Only a run that reached the cluster can have created namespaces there.
                    Step::DeleteOwnedNamespaces { .. } if self.live.is_some() => self.run_step(&step),
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!("cleanup failed: {e}");
                }
            }
        }
        self.record.phase_durations_secs.insert("cleanup".into(), cleanup_started.elapsed().as_secs_f64());
        // The private folder holds the throw-away cluster's kubeconfig: it goes with the cluster.
        if !self.keep
            && let Some(dir) = Path::new(&self.plan.kubeconfig).parent().filter(|_| self.plan.cluster_name.is_some())
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("could not delete {}: {e}", dir.display());
        }
        self.record.ended_at = now_rfc3339();
        self.record.outcome = self.record.overall();
        self.write_reports();
        self.record
    }

    /// Marks every trial not yet run as not run (when a run stops early).
    pub fn mark_rest_not_run(&mut self, trials: &[TrialSpec], why: &str) {
        for t in trials {
            if !self.record.results.iter().any(|r| r.suite == t.suite() && r.name == t.name()) {
                self.record.results.push(TrialResult {
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

    fn write_reports(&self) {
        let graph = checks::kiali::recorded_graph(&Evidence::new(self.run_dir.join("evidence")));
        if let Err(e) = self.record.write_all(&self.run_dir, &graph) {
            tracing::error!("could not write the report: {e}");
        }
    }
}

/// Applies a step's manifests: CRDs first, then the rest (with a server-side dry run first when
/// asked). Discovery runs afresh for each of the two batches, so kinds the CRDs define resolve.
async fn apply_source(live: &Live, source: &Source, ns: Option<&str>, dry_run_first: bool) -> Result<(), LiveError> {
    let objects = load_source(source).await?;
    let (crds, rest): (Vec<_>, Vec<_>) =
        objects.into_iter().partition(|o| o.types.as_ref().is_some_and(|t| t.kind == "CustomResourceDefinition"));
    live.apply_objects(&crds, ns, false).await?;
    live.apply_objects(&rest, ns, dry_run_first).await
}

/// The objects of a manifest source: a rendered fixture, or a pinned upstream URL.
async fn load_source(source: &Source) -> Result<Vec<kube::api::DynamicObject>, LiveError> {
    match source {
        Source::Fixture { path, vars } => {
            let name = path.trim_start_matches("manifests/");
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Ok(crate::fixtures::manifest_rendered(name, &vars)?)
        }
        Source::Url { url } => fetch_manifests(url).await,
    }
}

async fn fetch_manifests(url: &str) -> Result<Vec<kube::api::DynamicObject>, LiveError> {
    let what = format!("GET {url}");
    let resp = reqwest::get(url).await.map_err(|e| LiveError::http(&what, &e))?;
    if !resp.status().is_success() {
        return Err(LiveError::Http { what, message: format!("HTTP {}", resp.status()) });
    }
    let text = resp.text().await.map_err(|e| LiveError::http(&what, &e))?;
    Ok(crate::fixtures::parse_manifests(&text, url)?)
}

/// Creates the run's private folder, readable by this user only (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a file readable by this user only (0600): the kubeconfig a cluster tool wrote.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Runs a future on the session's runtime until it ends or Ctrl-C is pressed.
fn until_interrupted<T>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    rt.block_on(async {
        tokio::select! {
            r = fut => r,
            _ = crate::runner::interrupted() => Err(StepError::Interrupted),
        }
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
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
