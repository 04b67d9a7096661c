//! Carrying out one step of the plan: a command, an apply, a wait, the traffic generator. Every step
//! gets an [`Exec`] of its own, so steps run side by side.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use crate::{
    cluster::live::{Live, LiveError},
    cluster::owned::{Owned, delete_and_await},
    cluster::runner::{CommandError, Runner},
    cluster::traffic::TrafficGenerator,
    common::util::write_atomic,
    evidence::Evidence,
    plan::{ObjectRef, ReleaseRef, Source, Step, TrafficAction},
    scenario::{Provider, Scenario},
};

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
    /// On an existing cluster, a helm release the run would install is already there.
    #[error(
        "helm release {name} is already in namespace {namespace}, and this run did not install it: with \
         existing.install: true meshcheck installs only where its releases are absent. Fix: set existing.install: \
         false to check the mesh that is there, or uninstall it first"
    )]
    ReleaseExists {
        /// Release name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The gateway Service's ports cannot be derived.
    #[error("no Istio Gateway with a server port in {0}")]
    NoGatewayPorts(String),
}

/// The cluster connection every step and collector shares, opened once the kubeconfig exists.
pub(super) struct Cluster {
    pub(super) kubeconfig: PathBuf,
    pub(super) context: Option<String>,
    pub(super) scenario: Scenario,
    pub(super) run_dir: PathBuf,
    pub(super) live: tokio::sync::OnceCell<Live>,
}

impl Cluster {
    /// The connection, opened on first use (a failure is not kept: the kubeconfig may come later).
    pub(super) async fn live(&self) -> Result<&Live, StepError> {
        self.live
            .get_or_try_init(|| async {
                let bad = |e: &dyn std::fmt::Display| StepError::Kubeconfig {
                    path: self.kubeconfig.display().to_string(),
                    message: crate::cluster::live::kubeconfig_error(e),
                };
                let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| bad(&e))?;
                let opts = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
                let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| bad(&e))?;
                let client = crate::cluster::live::client_for(cfg).map_err(|e| bad(&e))?;
                let evidence = Evidence::new(self.run_dir.join("evidence"));
                Ok(Live::new(client, self.scenario.clone(), self.run_dir.clone(), evidence)?)
            })
            .await
    }

    /// A view of the cluster for one check: the shared client, the check's evidence folder, and a
    /// ledger of changes of its own, so that checks running side by side never take back each
    /// other's changes.
    pub(super) async fn live_for_check(&self, evidence: Evidence) -> Result<Live, StepError> {
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
pub(super) struct Exec {
    pub(super) runner: Runner,
    pub(super) scenario: Arc<Scenario>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) run_dir: PathBuf,
    pub(super) traffic: Arc<Mutex<Option<TrafficGenerator>>>,
    /// The throw-away cluster's kubeconfig, kept private as soon as a tool writes it.
    pub(super) private_kubeconfig: Option<PathBuf>,
    /// The namespaces this run created (name and uid): what cleanup deletes.
    pub(super) created_namespaces: Arc<Mutex<Vec<crate::cluster::namespaces::CreatedNamespace>>>,
    /// On an existing cluster, the releases and objects the run installed outside its namespaces.
    pub(super) owned: Arc<Owned>,
}

impl Exec {
    /// Keeps the throw-away cluster's kubeconfig private (0600) as soon as a tool has written it;
    /// a user's own kubeconfig (provider existing) is never touched.
    pub(super) fn protect_kubeconfig(&self) {
        if let Some(path) = &self.private_kubeconfig
            && path.is_file()
            && let Err(e) = make_private(path)
        {
            tracing::warn!("could not make {} private: {e}", path.display());
        }
    }
}

/// Runs `fut` until it ends or Ctrl-C is pressed.
pub(super) async fn interruptible<T>(
    fut: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    tokio::select! {
        r = fut => r,
        _ = crate::cluster::runner::interrupted() => Err(StepError::Interrupted),
    }
}

/// Carries out one step of the plan.
pub(super) async fn run_step(exec: Exec, step: Step) -> Result<(), StepError> {
    match step {
        Step::Command { command, advisory, installs, .. } => {
            if let Some(release) = installs.filter(|_| exec.scenario.provider == Provider::Existing) {
                note_install(&exec, &release).await?;
            }
            run_command(&exec, command, advisory).await
        }
        Step::Uninstall { delete_first, timeout_secs, command, delete_after, .. } => {
            uninstall(&exec, &delete_first, timeout_secs, command).await?;
            Ok(exec.owned.delete_made_since(exec.cluster.live().await?, &delete_after).await?)
        }
        Step::DeleteOwnedObjects { crd_groups } => {
            Ok(exec.owned.delete(exec.cluster.live().await?, &crd_groups).await?)
        }
        Step::WriteFile { path, content, .. } => {
            write_atomic(Path::new(&path), content.as_bytes()).map_err(|source| StepError::Write { path, source })
        }
        Step::Apply { source, namespace, dry_run_first, .. } => {
            let live = exec.cluster.live().await?;
            // On an existing cluster: the user's objects left as they are, the run's recorded.
            let owned = (exec.scenario.provider == Provider::Existing).then_some(&*exec.owned);
            interruptible(async { Ok(apply_source(live, &source, namespace.as_deref(), dry_run_first, owned).await?) })
                .await
        }
        Step::Wait { kind, namespace, name, condition, timeout_secs } => {
            let live = exec.cluster.live().await?;
            let timeout = std::time::Duration::from_secs(timeout_secs);
            interruptible(async {
                let ns = namespace.as_deref();
                let report =
                    crate::cluster::waits::wait_for(&live.client, &kind, ns, &name, &condition, timeout).await?;
                if let Some(note) = report.note() {
                    tracing::warn!(step = %name, "{note}");
                }
                Ok(())
            })
            .await
        }
        Step::Traffic { action } => traffic(&exec, action).await,
        Step::Namespace { name, labels, run } => namespace(&exec, &name, &labels, &run).await,
        Step::DeleteOwnedNamespaces { .. } => {
            let live = exec.cluster.live().await?;
            let created = exec.created_namespaces.lock().expect("namespaces lock").clone();
            let deleted = crate::cluster::namespaces::delete_created(&live.client, &created).await?;
            Ok(crate::cluster::namespaces::wait_deleted(&live.client, &deleted).await?)
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

/// Records, before helm creates anything, that the run installs `release` on an existing cluster,
/// and the first time the CRDs already there (not the run's); refuses a release that is there and
/// not the run's (an upgrade would change the user's mesh).
async fn note_install(exec: &Exec, release: &ReleaseRef) -> Result<(), StepError> {
    let live = exec.cluster.live().await?;
    if !exec.owned.installed(release)
        && interruptible(async { Ok(Owned::release_present(live, release).await?) }).await?
    {
        return Err(StepError::ReleaseExists { name: release.name.clone(), namespace: release.namespace.clone() });
    }
    interruptible(async { Ok(exec.owned.note_crds(live).await?) }).await?;
    let made = crate::plan::operator_made(&release.name);
    interruptible(async { Ok(exec.owned.note_present(live, &made).await?) }).await?;
    exec.owned.install_started(release);
    Ok(())
}

/// Deletes the custom resources an operator release made objects from and sees them gone, then
/// `helm uninstall`s it; a cleanup step, so Ctrl-C does not cut the command short.
async fn uninstall(
    exec: &Exec,
    delete_first: &[ObjectRef],
    timeout_secs: u64,
    command: crate::plan::CommandSpec,
) -> Result<(), StepError> {
    let live = exec.cluster.live().await?;
    for object in delete_first {
        delete_and_await(live, object, std::time::Duration::from_secs(timeout_secs)).await?;
    }
    let runner = exec.runner.clone();
    match tokio::task::spawn_blocking(move || runner.run_ignoring_interrupt(&command)).await {
        Ok(result) => result.map(|_| ()).map_err(StepError::from),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A command, off the async threads. An advisory command's findings go to evidence, and its
/// failure is a finding, not a failed step.
async fn run_command(
    exec: &Exec,
    command: crate::plan::CommandSpec,
    advisory: Option<String>,
) -> Result<(), StepError> {
    // An in-place `helm upgrade` (no --install) while the traffic generator runs is a step of the
    // upgrade chain: requests from now until the next one are attributed to its release.
    if command.program == "helm"
        && command.args.first().is_some_and(|a| a == "upgrade")
        && !command.args.iter().any(|a| a == "--install")
        && let (Some(release), Some(generator)) =
            (command.args.get(1), exec.traffic.lock().expect("traffic lock").as_ref())
    {
        generator.set_step(release);
    }
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

/// The traffic generator: started with a baseline, labelled by upgrade phase, stopped into evidence.
async fn traffic(exec: &Exec, action: TrafficAction) -> Result<(), StepError> {
    let s = &exec.scenario;
    match action {
        TrafficAction::Start => {
            let t = &s.traffic;
            let url = format!("{}/productpage", s.ingress.base_url());
            let max = usize::try_from(t.rate_per_second).unwrap_or(20) * 3600;
            let budget = crate::cluster::traffic::Budget {
                failed_requests: t.failure_budget,
                max_outage: t.max_outage.0,
                step_min_success: t.step_rules(),
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
                    .map_err(|source| StepError::Write { path: "evidence/upgrade/traffic.json".into(), source })?;
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

/// A namespace of the run's own, created when missing and recorded under `manifests/`.
async fn namespace(exec: &Exec, name: &str, labels: &[(String, String)], run: &str) -> Result<(), StepError> {
    let live = exec.cluster.live().await?;
    let ensured =
        interruptible(async { Ok(crate::cluster::namespaces::ensure(&live.client, name, labels, run).await?) }).await?;
    if let crate::cluster::namespaces::Ensured::Created(ns) = ensured {
        if let Some(created) = crate::cluster::namespaces::CreatedNamespace::of(&ns) {
            exec.created_namespaces.lock().expect("namespaces lock").push(created);
        }
        let obj: kube::api::DynamicObject =
            serde_json::from_value(serde_json::to_value(&*ns).expect("a Namespace serializes"))
                .expect("a Namespace reads as a DynamicObject");
        crate::evidence::record_manifest(&exec.run_dir, &obj, None)
            .map_err(|source| StepError::Write { path: format!("manifests/ (namespace {name})"), source })?;
    }
    Ok(())
}

/// Lets the traffic generator run for the scenario's `traffic.settle` (until Ctrl-C).
pub(super) async fn settle(s: &Scenario) {
    let settle = s.settle(s.traffic.settle.0);
    let _ = interruptible(async {
        tokio::time::sleep(settle).await;
        Ok(())
    })
    .await;
}

/// Applies a step's manifests: CRDs first, then the rest (with a server-side dry run first when
/// asked). Discovery runs afresh for each of the two batches, so kinds the CRDs define resolve.
pub(super) async fn apply_source(
    live: &Live,
    source: &Source,
    ns: Option<&str>,
    dry_run_first: bool,
    owned: Option<&Owned>,
) -> Result<(), LiveError> {
    let objects = load_source(source).await?;
    let (objects, downgrades) = live.without_downgrades(&objects, ns).await?;
    for skipped in downgrades {
        tracing::warn!("{skipped}");
    }
    let (crds, rest): (Vec<_>, Vec<_>) =
        objects.into_iter().partition(|o| o.types.as_ref().is_some_and(|t| t.kind == "CustomResourceDefinition"));
    match owned {
        Some(owned) => {
            let mut left = owned.apply(live, &crds, ns, false).await?;
            left.extend(owned.apply(live, &rest, ns, dry_run_first).await?);
            for line in left {
                tracing::warn!("{line}");
            }
            Ok(())
        }
        None => {
            live.apply_objects(&crds, ns, false).await?;
            live.apply_objects(&rest, ns, dry_run_first).await.map(|_| ())
        }
    }
}

/// The objects of a manifest source: a rendered fixture, or a pinned upstream URL.
pub(super) async fn load_source(source: &Source) -> Result<Vec<kube::api::DynamicObject>, LiveError> {
    match source {
        Source::Fixture { path, vars, secrets } => {
            let name = path.trim_start_matches("manifests/");
            let fresh = secrets
                .iter()
                .map(|k| Ok((k.as_str(), crate::plan::fixtures::fresh_secret()?)))
                .collect::<Result<Vec<_>, std::io::Error>>()
                .map_err(|e| LiveError::Http {
                    what: format!("fresh credentials for {path}"),
                    message: e.to_string(),
                })?;
            let vars: Vec<(&str, &str)> = vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(fresh.iter().map(|(k, v)| (*k, v.as_str())))
                .collect();
            Ok(crate::plan::fixtures::manifest_rendered(name, &vars)?)
        }
        Source::Url { url } => fetch_manifests(url).await,
    }
}

pub(super) async fn fetch_manifests(url: &str) -> Result<Vec<kube::api::DynamicObject>, LiveError> {
    // Connect and total deadlines, retried: a stalled download no longer hangs the run (issue 22).
    let text = crate::cluster::download::MANIFESTS.text(url).await?;
    Ok(crate::plan::fixtures::parse_manifests(&text, url)?)
}

/// Creates the run's private folder, readable by this user only (0700).
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a file readable by this user only (0600): the kubeconfig a cluster tool wrote.
pub(super) fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
