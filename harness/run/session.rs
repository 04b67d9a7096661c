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
//! with its own view of the cluster ([`Live`]) and its own ledger of changes to take back.
//! With `parallel` 1 the same executor runs one step at a time in plan order.
//!
//! The same session drives `meshcheck run` and the libtest-mimic conformance entry point, which
//! only maps each phase and check onto a trial. A check's trial reports the check's own start and
//! duration, and a phase's trial the span of its steps, so the report shows what ran side by side.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::{
    checks::{self, CheckDef, Collector},
    cluster::live::{Live, LiveError, Reverted},
    cluster::runner::{CommandError, INTERRUPTED, Runner},
    cluster::traffic::TrafficGenerator,
    common::names::Phase,
    common::util::{first_line, now_rfc3339, write_atomic},
    evidence::{Evidence, Outcome, Verdict},
    plan::{self, Plan, PlannedStep, RunContext, Source, Step, StepId, TrafficAction},
    preflight,
    report::{RunRecord, StepRecord, TrialResult},
    scenario::Scenario,
};

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
}

/// When something of the run started and how long it took: a step, a check, or a phase's span.
#[derive(Debug, Clone)]
struct Timing {
    /// Start, RFC 3339.
    started_at: String,
    /// Start, for arithmetic.
    started: Instant,
    /// Wall time in seconds.
    duration_secs: f64,
}

impl Timing {
    fn since(started_at: String, started: Instant) -> Timing {
        Timing { started_at, started, duration_secs: started.elapsed().as_secs_f64() }
    }

    fn ended(&self) -> Instant {
        self.started + std::time::Duration::from_secs_f64(self.duration_secs)
    }
}

/// A check that ran ahead of its trial (with the others of its phase).
struct CheckRun {
    verdict: Verdict,
    collected: bool,
    timing: Timing,
}

/// The cluster connection every step and collector shares, opened once the kubeconfig exists.
struct Cluster {
    kubeconfig: PathBuf,
    context: Option<String>,
    scenario: Scenario,
    run_dir: PathBuf,
    live: tokio::sync::OnceCell<Live>,
}

impl Cluster {
    /// The connection, opened on first use (a failure is not kept: the kubeconfig may come later).
    async fn live(&self) -> Result<&Live, StepError> {
        self.live
            .get_or_try_init(|| async {
                let bad = |e: &dyn std::fmt::Display| StepError::Kubeconfig {
                    path: self.kubeconfig.display().to_string(),
                    message: e.to_string(),
                };
                let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| bad(&e))?;
                let opts = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
                let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| bad(&e))?;
                let client = kube::Client::try_from(cfg).map_err(|e| bad(&e))?;
                let evidence = Evidence::new(self.run_dir.join("evidence"));
                Ok(Live::new(client, self.scenario.clone(), self.run_dir.clone(), evidence)?)
            })
            .await
    }

    /// A view of the cluster for one check: the shared client, the check's evidence folder, and a
    /// ledger of changes of its own, so that checks running side by side never take back each
    /// other's changes.
    async fn live_for_check(&self, evidence: Evidence) -> Result<Live, StepError> {
        let shared = self.live().await?;
        Ok(Live {
            client: shared.client.clone(),
            scenario: shared.scenario.clone(),
            run_dir: shared.run_dir.clone(),
            evidence,
            changes: Default::default(),
            http: shared.http.clone(),
        })
    }
}

/// What a step in flight works with; cloned into each.
#[derive(Clone)]
struct Exec {
    runner: Runner,
    scenario: Arc<Scenario>,
    cluster: Arc<Cluster>,
    run_dir: PathBuf,
    traffic: Arc<Mutex<Option<TrafficGenerator>>>,
    /// The throw-away cluster's kubeconfig, kept private as soon as a tool writes it.
    private_kubeconfig: Option<PathBuf>,
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
    rt: tokio::runtime::Runtime,
    exec: Exec,
    blocked: Option<String>,
    cluster_created: Arc<AtomicBool>,
    keep: bool,
    progress: crate::common::progress::Progress,
    parallel: usize,
    /// The trials this run will be asked for: its checks run together, so a check that a test
    /// filter left out must not run with them.
    selected: Vec<TrialSpec>,
    /// Every step that ended so far, with why it did not end well: steps of a later phase may
    /// end early.
    ended: BTreeMap<StepId, Option<String>>,
    /// The failures of each phase's steps, in the order they ended (a wait stopped because another
    /// step failed is not one).
    failures: BTreeMap<Phase, Vec<String>>,
    /// Checks that ran ahead of their trials.
    checked: BTreeMap<(Phase, &'static str), CheckRun>,
    /// The span of each phase's steps, for its trial.
    step_spans: BTreeMap<Phase, Timing>,
    /// The span of everything each phase did (steps, checks), for `phase_durations_secs`.
    phase_spans: BTreeMap<Phase, Timing>,
    /// Whether cleanup has run (as its trial, or from `finish` or the drop guard).
    cleaned: bool,
    /// Whether the final report has been written.
    finished: bool,
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

/// Widens `span` to cover `t`.
fn widen(spans: &mut BTreeMap<Phase, Timing>, phase: Phase, t: &Timing) {
    let span = spans.entry(phase).or_insert_with(|| t.clone());
    let end = span.ended().max(t.ended());
    if t.started < span.started {
        span.started = t.started;
        span.started_at = t.started_at.clone();
    }
    span.duration_secs = end.duration_since(span.started).as_secs_f64();
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
        };
        let session = Session {
            selected: Session::trials(&plan),
            scenario,
            plan,
            run_dir,
            record,
            rt,
            exec,
            blocked: None,
            cluster_created: Arc::default(),
            keep: opts.keep,
            progress: crate::common::progress::Progress::new(opts.progress),
            parallel: opts.parallel.get(),
            ended: BTreeMap::new(),
            failures: BTreeMap::new(),
            checked: BTreeMap::new(),
            step_spans: BTreeMap::new(),
            phase_spans: BTreeMap::new(),
            cleaned: false,
            finished: false,
        };
        session.write_reports();
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
        self.selected = trials.to_vec();
    }

    /// Runs one trial and records its result.
    pub fn run_trial(&mut self, trial: &TrialSpec) -> Verdict {
        let called = (now_rfc3339(), Instant::now());
        let phase = trial.phase;
        let root = || Some(phase.evidence_root().to_string());
        let (verdict, evidence_root, collected, timing) = if phase == Phase::Cleanup {
            // Whatever stopped the run before, cleanup runs.
            let v = self.clean_up();
            (v, None, true, Timing::since(called.0, called.1))
        } else if let Trial::Check(def) = trial.trial
            && let Some(run) = self.checked.remove(&(phase, def.info.name))
        {
            // It ran with the others of its phase, before this trial was asked for.
            (run.verdict, root(), run.collected, run.timing)
        } else if let Some(why) = &self.blocked {
            (Verdict::not_run(format!("not run: {why}")), None, true, Timing::since(called.0, called.1))
        } else if INTERRUPTED.load(Ordering::SeqCst) {
            self.blocked = Some("interrupted (Ctrl-C, SIGTERM or SIGHUP)".into());
            let v = Verdict::error("interrupted (Ctrl-C, SIGTERM or SIGHUP) before this step");
            (v, None, true, Timing::since(called.0, called.1))
        } else {
            match trial.trial {
                Trial::Phase => {
                    let v = self.run_phase(phase);
                    if v.outcome != Outcome::Pass {
                        self.blocked = Some(format!("phase `{phase}` did not pass"));
                    }
                    let timing =
                        self.step_spans.get(&phase).cloned().unwrap_or_else(|| Timing::since(called.0, called.1));
                    (v, None, true, timing)
                }
                Trial::Check(def) => {
                    self.run_checks(phase, def);
                    match self.checked.remove(&(phase, def.info.name)) {
                        Some(run) => (run.verdict, root(), run.collected, run.timing),
                        // Ctrl-C came before it could start.
                        None => {
                            self.blocked = Some("interrupted (Ctrl-C, SIGTERM or SIGHUP)".into());
                            let v = Verdict::error("interrupted (Ctrl-C, SIGTERM or SIGHUP) before this step");
                            (v, None, true, Timing::since(called.0, called.1))
                        }
                    }
                }
            }
        };
        self.widen_phase(phase, &timing);
        tracing::debug!(
            trial = %trial.trial_name(),
            started_at = %timing.started_at,
            duration_secs = timing.duration_secs,
            "trial recorded"
        );
        // A trial recorded as not run (a test filter) and run after all (cleanup) keeps one result.
        self.record.results.retain(|r| !(r.suite == trial.suite() && r.name == trial.name()));
        self.record.results.push(TrialResult {
            suite: phase.as_str().to_string(),
            name: trial.name().to_string(),
            verdict: verdict.clone(),
            started_at: timing.started_at.clone(),
            duration_secs: timing.duration_secs,
            evidence_root,
            collected,
        });
        self.write_reports();
        verdict
    }

    /// Counts `t` in the wall time of `phase` (`phase_durations_secs`: from its first start to its
    /// last end, so that what ran side by side is not counted twice).
    fn widen_phase(&mut self, phase: Phase, t: &Timing) {
        widen(&mut self.phase_spans, phase, t);
        self.record.phase_durations_secs.insert(phase.as_str().to_string(), self.phase_spans[&phase].duration_secs);
    }

    fn evidence_for(&self, phase: Phase) -> Evidence {
        Evidence::new(self.run_dir.join(phase.evidence_root()))
    }

    fn run_phase(&mut self, name: Phase) -> Verdict {
        if name == Phase::Preflight {
            let problems = preflight::tool_problems(&self.scenario, &self.exec.runner);
            return if problems.is_empty() {
                Verdict::pass("container engine, cluster tool and helm answer")
            } else {
                Verdict::error(format!("preflight: {} missing piece(s) for a live run", problems.len()))
                    .with_details(problems)
            };
        }
        let own: Vec<StepId> = self
            .plan
            .steps()
            .filter(|(p, s)| *p == name && !matches!(s.step, Step::Check { .. }))
            .map(|(_, s)| s.id)
            .collect();
        // This phase's own steps, those of them that did not start early, and the steps of later
        // phases that may start during it.
        let jobs: Vec<(Phase, PlannedStep)> = self
            .plan
            .steps()
            .filter(|(p, s)| {
                !matches!(s.step, Step::Check { .. })
                    && !self.ended.contains_key(&s.id)
                    && (*p == name || (*p > name && Plan::host_phase(*p, s) == name))
            })
            .map(|(p, s)| (p, s.clone()))
            .collect();
        // A step of this phase that failed early stops it before anything else starts.
        if self.failures.contains_key(&name) {
            return self.phase_verdict(name, &own);
        }
        self.run_graph(name, jobs);
        self.phase_verdict(name, &own)
    }

    fn phase_verdict(&self, name: Phase, own: &[StepId]) -> Verdict {
        if let Some(failures) = self.failures.get(&name) {
            let first = first_line(&failures[0]);
            return Verdict::error(format!("phase `{name}` stopped: {first}")).with_details(failures.clone());
        }
        if own.iter().any(|id| !matches!(self.ended.get(id), Some(None))) {
            return Verdict::error(format!("phase `{name}` interrupted (Ctrl-C, SIGTERM or SIGHUP)"));
        }
        Verdict::pass(format!("phase `{name}`: {} steps done", own.len()))
    }

    /// Whether a step that `needs` can start as far as `need` goes: it ended well, or it is not
    /// part of this run's graph (an earlier phase, or a step a test filter left out).
    fn need_met(&self, need: StepId, pending: &BTreeSet<StepId>) -> bool {
        !pending.contains(&need) && self.ended.get(&need).is_none_or(Option::is_none)
    }

    /// Runs `jobs` (the steps of phase `host` and of later phases that may start during it) as the
    /// plan's graph: each starts once its needs have ended well, up to `parallel` at once, the
    /// lowest step number first. A failure stops new starts in its phase, or everywhere when it is
    /// `host`'s, and stops the waits in flight there; every step that ran is recorded.
    fn run_graph(&mut self, host: Phase, mut waiting: Vec<(Phase, PlannedStep)>) {
        struct Running {
            phase: Phase,
            id: StepId,
            label: String,
            started_at: String,
            started: Instant,
            observes: bool,
            handle: tokio::task::AbortHandle,
        }
        let mut set = tokio::task::JoinSet::new();
        let mut running: BTreeMap<tokio::task::Id, Running> = BTreeMap::new();
        let mut stopped: BTreeMap<Phase, String> = BTreeMap::new();
        loop {
            if !INTERRUPTED.load(Ordering::SeqCst) && !stopped.contains_key(&host) {
                let pending: BTreeSet<StepId> =
                    waiting.iter().map(|(_, s)| s.id).chain(running.values().map(|r| r.id)).collect();
                let mut at = 0;
                while running.len() < self.parallel && at < waiting.len() {
                    let (phase, step) = &waiting[at];
                    let ready =
                        !stopped.contains_key(phase) && step.needs.iter().all(|n| self.need_met(n.step, &pending));
                    if !ready {
                        at += 1;
                        continue;
                    }
                    let (phase, step) = waiting.remove(at);
                    let label = step.step.label();
                    if let Step::Command { creates_cluster: true, .. } = step.step {
                        // Even a failed create can leave containers behind; cleanup must try.
                        self.cluster_created.store(true, Ordering::SeqCst);
                    }
                    self.progress.begin(&format!("{phase}: {label}"));
                    let observes = matches!(step.step, Step::Wait { .. });
                    let started = (now_rfc3339(), Instant::now());
                    let handle = {
                        let _runtime = self.rt.enter();
                        set.spawn(run_step(self.exec.clone(), step.step))
                    };
                    let run = Running {
                        phase,
                        id: step.id,
                        label,
                        started_at: started.0,
                        started: started.1,
                        observes,
                        handle: handle.clone(),
                    };
                    running.insert(handle.id(), run);
                }
            }
            if running.is_empty() {
                break;
            }
            let (task, result) = match self.rt.block_on(set.join_next_with_id()).expect("a step is running") {
                Ok((task, result)) => (task, Some(result)),
                Err(e) if e.is_cancelled() => (e.id(), None),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let run = running.remove(&task).expect("every task is a running step");
            let error = match result {
                Some(Ok(())) => None,
                Some(Err(e)) => {
                    let e = e.to_string();
                    // The first failure of a phase stops it; one of `host` stops everything.
                    let stops: Vec<Phase> = if run.phase == host {
                        running.values().map(|r| r.phase).chain([host]).collect()
                    } else {
                        vec![run.phase]
                    };
                    for phase in stops {
                        stopped.entry(phase).or_insert_with(|| run.label.clone());
                    }
                    for other in running.values().filter(|r| r.observes && stopped.contains_key(&r.phase)) {
                        other.handle.abort();
                    }
                    self.failures.entry(run.phase).or_default().push(e.clone());
                    Some(e)
                }
                None => Some(format!(
                    "not awaited further: the phase stopped when `{}` failed",
                    stopped.get(&run.phase).map_or("a step", String::as_str)
                )),
            };
            let timing = Timing::since(run.started_at.clone(), run.started);
            self.progress
                .end(&format!("{}: {}", run.phase, run.label), if error.is_none() { "done" } else { "failed" });
            widen(&mut self.step_spans, run.phase, &timing);
            self.widen_phase(run.phase, &timing);
            self.record.steps.push(StepRecord {
                phase: run.phase.as_str().to_string(),
                step: run.label,
                started_at: timing.started_at,
                duration_secs: timing.duration_secs,
                error: error.clone(),
            });
            self.ended.insert(run.id, error);
            self.write_reports();
        }
    }

    /// Runs the selected checks of `phase` (and `asked`, whichever trial came first) as the plan's
    /// graph: checks that only read side by side, one that changes the mesh alone. Each check's
    /// result waits in [`Session::checked`] for its trial.
    fn run_checks(&mut self, phase: Phase, asked: &'static CheckDef) {
        let selected: BTreeSet<&str> =
            self.selected.iter().filter(|t| t.phase == phase).map(|t| t.name()).chain([asked.info.name]).collect();
        let mut waiting: Vec<(StepId, &'static CheckDef, Vec<StepId>)> = self
            .plan
            .steps()
            .filter(|(p, _)| *p == phase)
            .filter_map(|(_, s)| match &s.step {
                Step::Check { name, .. } if selected.contains(name.as_str()) => {
                    let def = checks::find(name).expect("plans name registered checks");
                    Some((s.id, def, s.needs.iter().map(|n| n.step).collect()))
                }
                _ => None,
            })
            .collect();
        let evidence = self.evidence_for(phase);
        let timeout = self.scenario.timeouts.check.0;
        let mut set = tokio::task::JoinSet::new();
        let mut running: BTreeMap<tokio::task::Id, (StepId, &'static CheckDef, String, Instant)> = BTreeMap::new();
        loop {
            if !INTERRUPTED.load(Ordering::SeqCst) {
                let pending: BTreeSet<StepId> =
                    waiting.iter().map(|(id, _, _)| *id).chain(running.values().map(|r| r.0)).collect();
                let mut at = 0;
                while running.len() < self.parallel && at < waiting.len() {
                    if waiting[at].2.iter().any(|n| pending.contains(n)) {
                        at += 1;
                        continue;
                    }
                    let (id, def, _) = waiting.remove(at);
                    self.progress.begin(&format!("{phase}: check {}", def.info.name));
                    let collect = collect_check(def, self.exec.clone(), evidence.clone(), timeout);
                    let handle = {
                        let _runtime = self.rt.enter();
                        set.spawn(collect)
                    };
                    running.insert(handle.id(), (id, def, now_rfc3339(), Instant::now()));
                }
            }
            if running.is_empty() {
                break;
            }
            let (task, (collected, reverted)) =
                match self.rt.block_on(set.join_next_with_id()).expect("a check is running") {
                    Ok(done) => done,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
            let (_, def, started_at, started) = running.remove(&task).expect("every task is a running check");
            let (verdict, collected) = self.judged(def, &evidence, collected, &reverted);
            let timing = Timing::since(started_at, started);
            self.progress.end(&format!("{phase}: check {}", def.info.name), &verdict.outcome.to_string());
            self.checked.insert((phase, def.info.name), CheckRun { verdict, collected, timing });
        }
    }

    /// The verdict of a check from its collector's result and what the session took back after it.
    /// A change that could not be taken back makes the check an error that names it, whatever the
    /// evidence says: the cluster is not as the run found it.
    fn judged(
        &self,
        def: &CheckDef,
        evidence: &Evidence,
        collected: Result<(), String>,
        reverted: &[Reverted],
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
        self.conclude();
        self.record.clone()
    }

    /// Cleans up if the cleanup trial did not run, and writes the final reports; once. `finish`
    /// calls it, and so does the drop guard when a panic unwinds past a session.
    fn conclude(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.cleaned {
            self.run_trial(&TrialSpec { phase: Phase::Cleanup, trial: Trial::Phase });
        }
        self.record.ended_at = now_rfc3339();
        self.record.outcome = self.record.overall();
        self.write_reports();
    }

    /// The cleanup trial: stops the traffic generator, keeps the cluster's state as evidence, then
    /// deletes the cluster (kind, k3d) or the namespaces the run created (existing), unless
    /// `--keep`. Each action is a step record; a failure names what may be left and how to remove it.
    fn clean_up(&mut self) -> Verdict {
        self.cleaned = true;
        let traffic = self.exec.traffic.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(g) = traffic {
            let _ = self.rt.block_on(g.finish());
        }
        if let Some(live) = self.exec.cluster.live.get()
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
        let cluster = self.plan.cluster_name.clone();
        let created = self.cluster_created.load(Ordering::SeqCst);
        if self.keep {
            let what = match &cluster {
                Some(c) if created => format!("kept cluster {c} (--keep); kubeconfig {}", self.plan.kubeconfig),
                Some(_) => "--keep: no cluster was created".to_string(),
                None => "kept the run's namespaces (--keep)".to_string(),
            };
            return Verdict::pass(format!("{what}; remove it later with `meshcheck gc --delete`"));
        }
        let cleanup: Vec<Step> = self
            .plan
            .phases
            .iter()
            .filter(|p| p.name == Phase::Cleanup)
            .flat_map(|p| p.steps.iter().map(|s| s.step.clone()))
            .collect();
        let mut failures = Vec::new();
        let mut done = Vec::new();
        for step in cleanup {
            let (started_at, started) = (now_rfc3339(), Instant::now());
            let result = match &step {
                Step::Command { command, .. } if created => {
                    self.exec.runner.run_ignoring_interrupt(command).map(|_| ()).map_err(StepError::from)
                }
                // Only a run that reached the cluster can have created namespaces there.
                Step::DeleteOwnedNamespaces { .. } if self.exec.cluster.live.initialized() => {
                    self.rt.block_on(run_step(self.exec.clone(), step.clone()))
                }
                _ => continue,
            };
            let error = result.err().map(|e| e.to_string());
            self.record.steps.push(StepRecord {
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
        let left = match &cluster {
            Some(c) => {
                let by_hand = match self.plan.provider {
                    crate::scenario::Provider::K3d => format!("k3d cluster delete {c}"),
                    _ => format!("kind delete cluster --name {c}"),
                };
                format!("cluster {c} may be left: delete it with `meshcheck gc --delete` (or `{by_hand}`)")
            }
            None => format!(
                "namespaces labelled {}={} may be left: delete them with `kubectl delete namespace -l {}={}`",
                crate::common::names::RUN_LABEL,
                self.plan.run_id.to_lowercase(),
                crate::common::names::RUN_LABEL,
                self.plan.run_id.to_lowercase()
            ),
        };
        Verdict::error(format!("cleanup failed; {left}")).with_details(failures)
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

/// Runs `fut` until it ends or Ctrl-C is pressed.
async fn interruptible<T>(fut: impl std::future::Future<Output = Result<T, StepError>>) -> Result<T, StepError> {
    tokio::select! {
        r = fut => r,
        _ = crate::cluster::runner::interrupted() => Err(StepError::Interrupted),
    }
}

/// Runs one step. Commands run on a blocking thread each (the runner stops them on Ctrl-C and
/// records what they printed); everything else is a call to the cluster or a file write, raced
/// against Ctrl-C.
async fn run_step(exec: Exec, step: Step) -> Result<(), StepError> {
    match step {
        Step::Command { command, advisory, .. } => {
            let runner = exec.runner.clone();
            let result = match tokio::task::spawn_blocking(move || runner.run(&command)).await {
                Ok(result) => result,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            exec.protect_kubeconfig();
            let Some(file) = advisory else { return result.map(|_| ()).map_err(StepError::from) };
            let text = match result {
                Err(CommandError::NotFound { .. }) => return Ok(()),
                Err(CommandError::Interrupted { .. }) => return Err(StepError::Interrupted),
                Ok(out) => out,
                // Findings: the full output is in the command record; the tail goes to evidence.
                Err(e) => e.to_string(),
            };
            Evidence::new(exec.run_dir.join("evidence"))
                .write(&file, crate::redact::redact(&text).as_bytes())
                .map(|_| ())
                .map_err(|source| StepError::Write { path: format!("evidence/{file}"), source })
        }
        Step::WriteFile { path, content, .. } => {
            write_atomic(Path::new(&path), content.as_bytes()).map_err(|source| StepError::Write { path, source })
        }
        Step::Apply { source, namespace, dry_run_first, .. } => {
            let live = exec.cluster.live().await?;
            interruptible(async { Ok(apply_source(live, &source, namespace.as_deref(), dry_run_first).await?) }).await
        }
        Step::Wait { kind, namespace, name, condition, timeout_secs } => {
            let live = exec.cluster.live().await?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            interruptible(async {
                Ok(crate::cluster::waits::wait_for(
                    &live.client,
                    &kind,
                    namespace.as_deref(),
                    &name,
                    &condition,
                    timeout,
                )
                .await
                .map(|report| {
                    if let Some(note) = report.note() {
                        tracing::warn!(step = %name, "{note}");
                    }
                })?)
            })
            .await
        }
        Step::Traffic { action } => {
            let s = &exec.scenario;
            match action {
                TrafficAction::Start => {
                    let t = &s.traffic;
                    let url = format!("{}/productpage", s.ingress.base_url());
                    let max = usize::try_from(t.rate_per_second).unwrap_or(20) * 3600;
                    let budget = crate::cluster::traffic::Budget {
                        failed_requests: t.failure_budget,
                        max_outage: t.max_outage.0,
                    };
                    let generator = TrafficGenerator::start(&url, t.rate_per_second, t.request_timeout.0, budget, max);
                    *exec.traffic.lock().expect("traffic lock") = Some(generator);
                    // The baseline: traffic flows for a while before the upgrade begins.
                    settle(s).await;
                }
                TrafficAction::Stop => {
                    let generator = exec.traffic.lock().expect("traffic lock").take();
                    if let Some(g) = generator {
                        let record = g.finish().await;
                        Evidence::new(exec.run_dir.join("evidence"))
                            .write_json("upgrade/traffic.json", &record)
                            .map_err(|source| StepError::Write {
                                path: "evidence/upgrade/traffic.json".into(),
                                source,
                            })?;
                    }
                }
                TrafficAction::During | TrafficAction::After => {
                    if let Some(g) = exec.traffic.lock().expect("traffic lock").as_ref() {
                        g.set_phase(action.as_str());
                    }
                    if action == TrafficAction::After {
                        // Keep sending for a while after the last rollout, so "after" has data.
                        settle(s).await;
                    }
                }
            }
            Ok(())
        }
        Step::Namespace { name, labels, run } => {
            let live = exec.cluster.live().await?;
            let ensured = interruptible(async {
                Ok(crate::cluster::namespaces::ensure(&live.client, &name, &labels, &run).await?)
            })
            .await?;
            if let crate::cluster::namespaces::Ensured::Created(ns) = ensured {
                let obj: kube::api::DynamicObject =
                    serde_json::from_value(serde_json::to_value(&*ns).expect("a Namespace serializes"))
                        .expect("a Namespace reads as a DynamicObject");
                crate::evidence::record_manifest(&exec.run_dir, &obj, None)
                    .map_err(|source| StepError::Write { path: format!("manifests/ (namespace {name})"), source })?;
            }
            Ok(())
        }
        Step::DeleteOwnedNamespaces { run } => {
            let live = exec.cluster.live().await?;
            let deleted = crate::cluster::namespaces::delete_owned(&live.client, &run).await?;
            tracing::info!("deleted the run's namespaces: [{}]", deleted.join(", "));
            Ok(())
        }
        Step::GatewayPorts { gateway, node_port, path } => {
            let objects = interruptible(async { Ok(load_source(&gateway).await?) }).await?;
            let ports = crate::plan::providers::gateway_server_ports(&objects);
            if ports.is_empty() {
                return Err(StepError::NoGatewayPorts(gateway.describe()));
            }
            write_atomic(Path::new(&path), crate::plan::providers::gateway_ports(node_port, &ports).as_bytes())
                .map_err(|source| StepError::Write { path, source })
        }
        Step::Check { .. } => Ok(()),
    }
}

/// Lets the traffic generator run for the scenario's `traffic.settle` (until Ctrl-C).
async fn settle(s: &Scenario) {
    let settle = s.settle(s.traffic.settle.0);
    let _ = interruptible(async {
        tokio::time::sleep(settle).await;
        Ok(())
    })
    .await;
}

/// Collects one check's evidence with its own view of the cluster, then takes back whatever it
/// changed and did not take back (STRICT, default-deny, a deleted policy), whether it returned,
/// failed, ran out of `timeout` or was stopped by Ctrl-C: on an existing cluster that is the
/// user's mesh. Returns the collector's result and what was taken back.
async fn collect_check(
    def: &'static CheckDef,
    exec: Exec,
    evidence: Evidence,
    timeout: std::time::Duration,
) -> (Result<(), String>, Vec<Reverted>) {
    match def.collect {
        Collector::Scenario(collect) => {
            let collected = interruptible(async { Ok(collect(&exec.scenario, &evidence).await?) }).await;
            (collected.map_err(|e| e.to_string()), Vec::new())
        }
        Collector::Cluster(collect) => {
            let live = match exec.cluster.live_for_check(evidence).await {
                Ok(live) => live,
                Err(e) => return (Err(e.to_string()), Vec::new()),
            };
            let collected = tokio::select! {
                r = tokio::time::timeout(timeout, collect(&live)) => match r {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("collector did not finish within {}s", timeout.as_secs())),
                },
                _ = crate::cluster::runner::interrupted() => Err(StepError::Interrupted.to_string()),
            };
            let reverted = live.revert_all(crate::cluster::live::MUTATION_DEADLINE).await;
            (collected, reverted)
        }
    }
}

impl Exec {
    /// Keeps the throw-away cluster's kubeconfig private (0600) as soon as a tool has written it;
    /// a user's own kubeconfig (provider existing) is never touched.
    fn protect_kubeconfig(&self) {
        if let Some(path) = &self.private_kubeconfig
            && path.is_file()
            && let Err(e) = make_private(path)
        {
            tracing::warn!("could not make {} private: {e}", path.display());
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
            Ok(crate::plan::fixtures::manifest_rendered(name, &vars)?)
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
    Ok(crate::plan::fixtures::parse_manifests(&text, url)?)
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

/// A panic that unwinds past a session still cleans up and finishes the report: the cluster is
/// not left running and run.json does not stay unfinished.
impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!("the run stopped unexpectedly; cleaning up and writing the report");
            self.conclude();
        }
    }
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
