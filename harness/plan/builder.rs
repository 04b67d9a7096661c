//! The steps every phase makes the same way: helm repositories, releases and values files,
//! waits, namespaces, fixture applies. A [`Builder`] holds what they share: the scenario, where the
//! run lives, and how to reach its cluster.

use super::{CommandSpec, Condition, ReleaseRef, RunContext, Source, Step, fixtures};
use crate::scenario::Scenario;

/// Why a helm command follows the step that writes its values file.
pub(super) const READS_VALUES: &str = "helm reads this values file";
/// Why a rollout wait follows its helm command.
pub(super) const ROLLOUT: &str = "the workload this chart installs";
/// Why a step follows the namespace it puts objects into.
pub(super) const INTO_NAMESPACE: &str = "its objects go into this namespace, which the run creates and owns";
/// Why a wait follows the apply of what it awaits.
pub(super) const APPLIED: &str = "the objects this applies";

/// A command that neither creates the cluster nor is advisory: a non-zero exit fails its step.
pub(super) fn command(name: impl Into<String>, command: CommandSpec) -> Step {
    Step::Command { name: name.into(), command, advisory: None, creates_cluster: false, installs: None }
}

/// A file of the bookinfo sample at the scenario's bookinfo release (through its mirrors).
pub fn bookinfo_url(s: &Scenario, file: &str) -> String {
    s.mirrored(&format!(
        "https://raw.githubusercontent.com/istio/istio/{}/samples/bookinfo/{file}",
        s.versions.bookinfo()
    ))
}

/// A helm release of a pinned chart version.
pub(super) struct HelmRelease<'a> {
    /// Release name.
    pub(super) name: &'a str,
    /// The chart repository's URL, as its project documents it.
    pub(super) repo: &'a str,
    /// The chart's name in that repository.
    pub(super) chart: &'a str,
    /// Chart version.
    pub(super) version: &'a str,
    /// Namespace it installs into.
    pub(super) namespace: &'a str,
}

/// What the steps of every phase share: the scenario, the run's context, and the cluster it reaches.
pub(super) struct Builder<'a> {
    pub(super) s: &'a Scenario,
    pub(super) ctx: &'a RunContext,
    /// The kubeconfig every command connects with.
    pub(super) kubeconfig: String,
    /// Its context, if not the current one.
    pub(super) context: Option<String>,
    /// The kind/k3d cluster the run creates; `None` on an existing cluster.
    pub(super) cluster: Option<String>,
}

impl Builder<'_> {
    /// The flags every helm command gets: the run's kubeconfig and context, and a repository
    /// config in the run folder, so the user's own helm repositories are neither read nor changed.
    fn helm_globals(&self) -> Vec<String> {
        let mut g = vec!["--kubeconfig".into(), self.kubeconfig.clone()];
        if let Some(c) = &self.context {
            g.extend(["--kube-context".into(), c.clone()]);
        }
        g.extend(["--repository-config".into(), format!("{}/helm/repositories.yaml", self.ctx.run_dir)]);
        g
    }

    /// Writes a values fixture into the run folder, where helm reads it and the reader finds it.
    /// Returns the step and the file's path.
    pub(super) fn values(&self, fixture: &str) -> (Step, String) {
        let file = fixture.trim_start_matches("values/");
        let path = format!("{}/values/{file}", self.ctx.run_dir);
        let step = Step::WriteFile {
            path: path.clone(),
            from: format!("fixtures/{fixture}"),
            content: fixtures::text(fixture),
        };
        (step, path)
    }

    /// Writes a file the plan generates into the run folder. Returns the step and the file's path.
    pub(super) fn generated(&self, file: &str, content: String) -> (Step, String) {
        let path = format!("{}/{file}", self.ctx.run_dir);
        (Step::WriteFile { path: path.clone(), from: "generated".into(), content }, path)
    }

    /// `helm upgrade [--install] … --repo <url>`: `install` for a first install, plain `upgrade`
    /// for the documented in-place upgrade. Namespaces come from [`Step::Namespace`], not from helm,
    /// so that the run knows which ones it created.
    ///
    /// `--repo` instead of `helm repo add`: each command downloads its repository's index under a
    /// random name of its own (helm v3.22.0 pkg/repo/chartrepo.go
    /// `FindChartInAuthAndTLSAndPassRepoURL`: "Download and write the index file to a temporary
    /// location"). Concurrent `helm repo add`s hold one repository-file lock for a whole index
    /// download and give up after 30 s (cmd/helm/repo_add.go), and an install reads
    /// repositories.yaml without that lock while an add rewrites it ("repo istio not found"). The
    /// URL goes through the scenario's `mirrors`, as preflight probes it.
    pub(super) fn helm_release(&self, install: bool, release: &HelmRelease, values: &[String], wait: bool) -> Step {
        let mut args: Vec<String> = vec!["upgrade".into()];
        if install {
            args.push("--install".into());
        }
        args.extend([
            release.name.into(),
            release.chart.into(),
            "--repo".into(),
            self.s.mirrored(release.repo),
            "--version".into(),
            release.version.into(),
            "--namespace".into(),
            release.namespace.into(),
        ]);
        for v in values {
            args.extend(["--values".into(), v.clone()]);
        }
        if wait {
            args.push("--wait".into());
        }
        args.extend(["--timeout".into(), format!("{}s", self.s.timeouts.install.0.as_secs())]);
        args.extend(self.helm_globals());
        let timeout = self.s.timeouts.install.0 + std::time::Duration::from_secs(60);
        Step::Command {
            name: format!("helm {}", release.name),
            command: CommandSpec::new("helm", args, timeout),
            advisory: None,
            creates_cluster: false,
            installs: install.then(|| ReleaseRef { name: release.name.into(), namespace: release.namespace.into() }),
        }
    }

    /// `helm uninstall` of a release, waiting until its objects are gone. `--ignore-not-found`: an
    /// install that failed before helm recorded the release leaves nothing to uninstall (helm
    /// v3.22.0 cmd/helm/uninstall.go; pkg/action/uninstall.go returns "Release not loaded" without
    /// it).
    pub(super) fn helm_uninstall(&self, release: &ReleaseRef, timeout: std::time::Duration) -> CommandSpec {
        let mut args: Vec<String> = vec![
            "uninstall".into(),
            release.name.clone(),
            "--namespace".into(),
            release.namespace.clone(),
            "--ignore-not-found".into(),
            "--wait".into(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs()),
        ];
        args.extend(self.helm_globals());
        CommandSpec::new("helm", args, timeout + std::time::Duration::from_secs(60))
    }

    /// A watch on `kind` `ns/name` until `condition`, within `timeout`.
    pub(super) fn wait(
        &self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        condition: Condition,
        timeout: std::time::Duration,
    ) -> Step {
        Step::Wait {
            kind: kind.into(),
            namespace: ns.map(String::from),
            name: name.into(),
            condition,
            timeout_secs: timeout.as_secs(),
        }
    }

    /// A namespace of the run's own, with `labels` besides the ownership label.
    pub(super) fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> Step {
        Step::Namespace {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            run: self.run_label(),
        }
    }

    /// The run's [`RUN_LABEL`](crate::common::names::RUN_LABEL) value: label values must be
    /// lowercase-friendly, run ids need not be.
    pub(super) fn run_label(&self) -> String {
        self.ctx.run_id.to_lowercase()
    }

    /// The apply of a manifest fixture (`manifests/<name>`, placeholders filled from `vars`), its
    /// objects listed in the plan; `ns` for objects without a namespace.
    pub(super) fn fixture_apply(&self, name: &str, ns: Option<&str>, vars: &[(&str, &str)]) -> Step {
        self.fixture_apply_with_secrets(name, ns, vars, &[])
    }

    /// [`Self::fixture_apply`], with `secrets` placeholders the run fills with fresh random values.
    pub(super) fn fixture_apply_with_secrets(
        &self,
        name: &str,
        ns: Option<&str>,
        vars: &[(&str, &str)],
        secrets: &[&str],
    ) -> Step {
        let objects = fixtures::manifest_rendered(name, vars)
            .expect("fixtures parse (tested)")
            .iter()
            .map(|o| {
                let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
                let ns = o.metadata.namespace.clone().or(ns.map(String::from)).unwrap_or_else(|| "-".into());
                format!("{kind}/{ns}/{}", o.metadata.name.clone().unwrap_or_default())
            })
            .collect();
        Step::Apply {
            source: Source::Fixture {
                path: format!("manifests/{name}"),
                vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
            },
            namespace: ns.map(String::from),
            objects,
            dry_run_first: true,
        }
    }
}
