//! What a live run needs before it starts, checked so that a run never fails half-way through for
//! something it could have known at the start: a container engine that answers; kind, k3d and helm
//! at the versions the README names; a supported host architecture; kind's inotify limits;
//! `cluster.image_archive`; the chart repositories and registries the run reaches;
//! and for an existing cluster its kubeconfig, context, API server and the user's permissions for
//! what this scenario does there. Each problem is one line that says what is wrong and how to fix it.

use std::time::Duration;

use crate::{
    cluster::runner::{CommandError, Runner},
    common::util::first_line,
    plan::CommandSpec,
    plan::{self, RunContext},
    scenario::{Architecture, Provider, Scenario},
};

mod access;
mod network;
mod tools;

use access::existing_cluster_problems;
use network::{image_archive_problems, reachability_problems};
use tools::tool_problem;
pub use tools::{Tool, ToolVersion, inotify_problems};

/// Runs every preflight check; returns one line per problem (empty when all is well).
pub fn tool_problems(s: &Scenario, runner: &Runner) -> Vec<String> {
    let t = s.timeouts.preflight.0;
    // The plan says which repositories, kubeconfig and context the run will use; the preflight
    // reads them from there rather than knowing them twice.
    let plan = plan::build(s, &RunContext::for_plan());
    let mut problems = host_problems(s, runner, t);
    problems.extend(image_archive_problems(s));
    let network = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
        rt.block_on(async {
            let checks = async {
                let (reach, cluster) =
                    tokio::join!(reachability_problems(s, &plan, t), existing_cluster_problems(s, &plan, t));
                reach.into_iter().chain(cluster).collect::<Vec<_>>()
            };
            // Ctrl-C stops the probes at once rather than after their timeout.
            tokio::select! {
                problems = checks => problems,
                () = crate::cluster::runner::interrupted() => {
                    vec!["preflight: interrupted (Ctrl-C, SIGTERM or SIGHUP) during the network checks".to_string()]
                }
            }
        })
    });
    match network {
        Ok(lines) => problems.extend(lines),
        Err(e) => problems.push(format!("preflight: cannot start the network checks: {e}")),
    }
    // A problem quotes URLs and tool output: credentials in a mirror's URL go no further.
    problems.iter().map(|p| crate::redact::redact(p)).collect()
}

/// What [`tool_problems`] checks for this scenario, said when it found nothing wrong: an existing
/// cluster's run never hears of a container engine or a cluster tool it did not need.
pub fn checked(s: &Scenario) -> String {
    let mut parts: Vec<&str> = match s.provider {
        Provider::Kind => vec!["the container engine", "kind and the inotify limits"],
        Provider::K3d => vec!["the container engine", "k3d"],
        Provider::Existing => vec!["the kubeconfig, its context, the API server and the run's permissions"],
    };
    if s.installs() {
        parts.push("helm");
    }
    parts.push("the hosts the run downloads from");
    format!("checked {}: all answer", parts.join(", "))
}

/// The container engine, the tools, the architecture and (for kind) the inotify limits.
fn host_problems(s: &Scenario, runner: &Runner, t: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    let probe = |program: &str, args: &[&str]| runner.run(&CommandSpec::new(program, args.iter().copied(), t));
    if s.provider != Provider::Existing {
        let docker = probe("docker", &["info", "--format", "{{.ServerVersion}}"]);
        let podman = docker.is_err() && probe("podman", &["info", "--format", "{{.Version.Version}}"]).is_ok();
        if podman && s.provider == Provider::K3d {
            // k3d talks to the Docker API, and meshcheck makes the node mounts shared with
            // `docker exec` (providers::K3D_MOUNT_SCRIPT): Podman alone cannot do either.
            problems.push(
                "container engine: only Podman answers, and k3d needs the docker CLI (meshcheck runs `docker exec` on the \
                 k3d nodes). Install the docker CLI and point it at Podman's socket \
                 (DOCKER_HOST=unix:///run/podman/podman.sock, k3d docs: usage/advanced/podman), or use provider kind"
                    .to_string(),
            );
        }
        let engine_ok = docker.is_ok() || podman;
        if !engine_ok && let Err(e) = docker {
            problems.push(engine_problem(&e));
        }
        match s.provider {
            Provider::Kind => {
                problems.extend(tool_problem(runner, Tool::Kind, t));
                problems.extend(inotify_problems(runner, t));
            }
            Provider::K3d => problems.extend(tool_problem(runner, Tool::K3d, t)),
            Provider::Existing => {}
        }
    }
    // helm installs Cilium, Istio and the observability stack; an existing cluster without
    // `existing.install` gets none of them (plan::build has no helm step then).
    if s.installs() {
        problems.extend(tool_problem(runner, Tool::Helm, t));
    }
    match (Architecture::host(), s.cluster.architecture) {
        (None, _) => problems.push(format!(
            "host architecture {} is not supported: kind and k3d publish node images for amd64 and arm64 only",
            std::env::consts::ARCH
        )),
        (Some(h), want) if s.provider != Provider::Existing && want != Architecture::Auto && want != h => problems.push(format!(
            "the scenario expects {} nodes but this host is {}: kind/k3d nodes run the host's architecture; use a matching runner or architecture: auto",
            want.as_str(),
            h.as_str()
        )),
        _ => {}
    }
    problems
}

/// The container-engine problem, from how `docker info` failed: not installed, or installed with
/// its daemon down (the docker CLI then prints "Cannot connect to the Docker daemon at
/// unix:///var/run/docker.sock. Is the docker daemon running?" and exits 1), or anything else,
/// quoted by its last lines rather than a first line that says only that stderr follows.
fn engine_problem(e: &CommandError) -> String {
    match e {
        CommandError::NotFound { .. } => {
            "container engine: docker is not installed. Install Docker Engine (or Podman) and start it; `docker info` must answer".to_string()
        }
        CommandError::Failed { code, stderr_tail, .. } => {
            let lines: Vec<&str> = stderr_tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let said = lines[lines.len().saturating_sub(2)..].join(" / ");
            let fix = if said.contains("Cannot connect to the Docker daemon") || said.contains("daemon running") {
                "start the Docker daemon (e.g. `sudo systemctl start docker`), or point DOCKER_HOST at a running one"
            } else {
                "make `docker info` answer (Docker Engine or Podman, running)"
            };
            format!("container engine: `docker info` failed with exit code {code}: {said}. Fix: {fix}")
        }
        other => format!("container engine: `docker info` failed: {}. Fix: make `docker info` answer", first_line(&other.to_string())),
    }
}
