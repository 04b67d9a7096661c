//! What a live run needs before it starts: a container engine that answers, kind or k3d, helm, a
//! supported host architecture, kind's inotify limits, and for existing clusters a kubeconfig
//! context that answers. Each missing piece is one line saying what and how to get it.

use std::time::Duration;

use crate::{
    runner::{CommandError, CommandSpec, Runner},
    scenario::{Architecture, Provider, Scenario},
};

/// Runs the tool checks; returns one line per problem (empty when all is well).
pub fn tool_problems(s: &Scenario, runner: &Runner) -> Vec<String> {
    let t = s.timeouts.preflight.0;
    let mut problems = Vec::new();
    let probe = |program: &str, args: &[&str], timeout: Duration| {
        runner.run(&CommandSpec::new(program, args.iter().copied(), timeout))
    };
    if s.provider != Provider::Existing {
        let docker = probe("docker", &["info", "--format", "{{.ServerVersion}}"], t);
        let podman = docker.is_err() && probe("podman", &["info", "--format", "{{.Version.Version}}"], t).is_ok();
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
        if !engine_ok {
            let why = match docker {
                Err(CommandError::NotFound { .. }) => "docker is not installed".to_string(),
                Err(e) => format!("`docker info` failed: {}", first_line(&e.to_string())),
                Ok(_) => unreachable!("engine_ok"),
            };
            problems.push(format!(
                "container engine: {why}. Install Docker Engine (or Podman) and start it; `docker info` must answer"
            ));
        }
        match s.provider {
            Provider::Kind => {
                if let Err(e) = probe("kind", &["version"], t) {
                    problems.push(format!("kind: {}. Install kind v0.31+ from https://kind.sigs.k8s.io/docs/user/quick-start/#installation", short(&e)));
                }
                problems.extend(inotify_problems(runner, t));
            }
            Provider::K3d => {
                if let Err(e) = probe("k3d", &["version"], t) {
                    problems.push(format!("k3d: {}. Install k3d v5.6+ from https://k3d.io/#installation", short(&e)));
                }
            }
            Provider::Existing => {}
        }
    }
    if let Err(e) = probe("helm", &["version", "--short"], t) {
        problems.push(format!("helm: {}. Install Helm 3.6+ from https://helm.sh/docs/intro/install/", short(&e)));
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

fn short(e: &CommandError) -> String {
    match e {
        CommandError::NotFound { program, .. } => format!("`{program}` is not on PATH"),
        other => first_line(&other.to_string()),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// kind's documented inotify limits for multi-node clusters (field guide §1.4), read with
/// `sysctl -n` through the runner so that what preflight saw is in `commands/` like every other
/// probe (and a stand-in host can answer); `/proc/sys` when sysctl is not installed.
pub fn inotify_problems(runner: &Runner, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, min) in [("max_user_watches", 524_288u64), ("max_user_instances", 512)] {
        let key = format!("fs.inotify.{file}");
        let text = match runner.run(&CommandSpec::new("sysctl", ["-n", key.as_str()], timeout)) {
            Err(CommandError::NotFound { .. }) => std::fs::read_to_string(format!("/proc/sys/fs/inotify/{file}")).ok(),
            other => other.ok(),
        };
        if let Some(v) = text.and_then(|t| t.trim().parse::<u64>().ok())
            && v < min
        {
            problems.push(format!(
                "inotify: fs.inotify.{file} is {v}, kind needs at least {min} (pods fail with `too many open files`). Fix: sudo sysctl fs.inotify.{file}={min}"
            ));
        }
    }
    problems
}
