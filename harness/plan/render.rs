//! The plan for people: `meshcheck plan`'s text and the short step names of progress output.
//! (`meshcheck plan --output json` is the plan's serde form.)

use std::fmt::Write as _;

use super::{Plan, Source, Step};
use crate::common::names::RUN_LABEL;

impl Step {
    /// A short name for progress output.
    pub fn label(&self) -> String {
        match self {
            Step::Command { name, .. } => name.clone(),
            Step::WriteFile { path, .. } => format!("write {}", path.rsplit('/').next().unwrap_or(path)),
            Step::Apply { source: Source::Fixture { path, .. }, .. } => format!("apply {path}"),
            Step::Apply { source: Source::Url { url }, .. } => {
                format!("apply {}", url.rsplit('/').next().unwrap_or(url))
            }
            Step::Wait { kind, namespace, name, .. } => match (namespace, name.as_str()) {
                (_, "") => format!("wait for every {kind}"),
                (Some(ns), n) => format!("wait for {kind} {ns}/{n}"),
                (None, n) => format!("wait for {kind} {n}"),
            },
            Step::Check { name, .. } => format!("check {name}"),
            Step::Namespace { name, .. } => format!("namespace {name}"),
            Step::DeleteOwnedNamespaces { .. } => "delete the run's namespaces".into(),
            Step::Uninstall { release, .. } => format!("uninstall {}", release.name),
            Step::DeleteOwnedObjects { .. } => "delete what the run installed".into(),
            Step::Traffic { action } => format!("traffic {}", action.as_str()),
            Step::GatewayPorts { path, .. } => format!("write {}", path.rsplit('/').next().unwrap_or(path)),
        }
    }
}

/// Renders the plan for people: one numbered line per step with what it comes after, grouped by phase.
pub fn render_text(plan: &Plan) -> String {
    let mut out = header(plan);
    for phase in &plan.phases {
        let _ = writeln!(out, "\n== {} ==", phase.name);
        if phase.steps.is_empty() {
            let _ = writeln!(out, "  (nothing)");
        }
        for planned in &phase.steps {
            let _ = writeln!(out, "{:3}. {}", planned.id, step_line(&planned.step));
            for need in &planned.needs {
                let _ = writeln!(out, "       after {}: {}", need.step, need.why);
            }
            if let Some(o) = &planned.starts_during {
                let _ = writeln!(out, "       may start during {}: {}", o.phase, o.why);
            }
        }
    }
    out
}

/// What the plan is for and where it runs, and how to read the graph below.
fn header(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "meshcheck plan: scenario {} (provider {})", plan.scenario, plan.provider.as_str());
    let _ = writeln!(out, "run folder: {}", plan.run_dir);
    if let Some(c) = &plan.cluster_name {
        let _ = writeln!(out, "cluster: {c}");
        let _ = match plan.host_port {
            Some(port) => writeln!(out, "gateway on the host: 127.0.0.1:{port}"),
            None => writeln!(
                out,
                "gateway on the host: a free port on 127.0.0.1, chosen when the run starts (the steps below show {})",
                crate::scenario::DEFAULT_HOST_PORT
            ),
        };
    }
    let _ = writeln!(
        out,
        "kubeconfig: {}{}",
        plan.kubeconfig,
        plan.context.as_ref().map(|c| format!(" (context {c})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Each step starts once the steps it comes after have finished; a phase starts once the one \
         before it and its checks have ended, but for steps marked to start during an earlier phase."
    );
    out
}

/// An uninstall step's line: the custom resources deleted first, then the command.
fn uninstall_line(step: &Step) -> String {
    let Step::Uninstall { release, delete_first, timeout_secs, command, delete_after } = step else {
        return String::new();
    };
    let first: Vec<String> = delete_first
        .iter()
        .map(|o| {
            format!("delete {} {}/{} and see it gone (within {timeout_secs}s), then ", o.kind, o.namespace, o.name)
        })
        .collect();
    let after: Vec<String> = delete_after
        .iter()
        .map(|o| format!(", then delete {} {}/{} unless it was there before the install", o.kind, o.namespace, o.name))
        .collect();
    format!(
        "run     {}{} (timeout {}s){} if this run started installing {}",
        first.concat(),
        command.display(),
        command.timeout_secs,
        after.concat(),
        release.name
    )
}

/// One step as a line: a verb column, then what it acts on.
fn step_line(step: &Step) -> String {
    match step {
        Step::Command { command, advisory, .. } => {
            format!(
                "run     {}{} (timeout {}s)",
                command.display(),
                advisory.as_ref().map(|f| format!(" [if installed; findings to evidence/{f}]")).unwrap_or_default(),
                command.timeout_secs
            )
        }
        Step::WriteFile { path, from, .. } => format!("write   {path} (from {from})"),
        Step::Apply { source, namespace, objects, dry_run_first } => {
            let src = source.describe();
            let what = if objects.is_empty() { "objects as fetched".to_string() } else { objects.join(", ") };
            format!(
                "apply   {src}{}: {what}{}",
                namespace.as_ref().map(|n| format!(" into {n}")).unwrap_or_default(),
                if *dry_run_first { " (server-side dry run first)" } else { "" }
            )
        }
        Step::Wait { kind, namespace, name, condition, timeout_secs } => {
            let obj = match (namespace, name.as_str()) {
                (_, "") => format!("{kind} (all)"),
                (Some(ns), n) => format!("{kind} {ns}/{n}"),
                (None, n) => format!("{kind} {n}"),
            };
            format!("wait    {obj} until {} (timeout {timeout_secs}s)", condition)
        }
        Step::Check { name, asserts } => format!("check   {name}: {asserts}"),
        Step::Namespace { name, labels, run } => {
            let extra: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "ns      {name}: create labelled {RUN_LABEL}={run}{} unless it exists",
                if extra.is_empty() { String::new() } else { format!(", {}", extra.join(", ")) }
            )
        }
        Step::DeleteOwnedNamespaces { run } => {
            format!("delete  the namespaces this run created (labelled {RUN_LABEL}={run}), by name and uid")
        }
        Step::Uninstall { .. } => uninstall_line(step),
        Step::DeleteOwnedObjects { crd_groups } => format!(
            "delete  what this run's install applied outside its namespaces, by uid; CRDs of {} not there before its first install",
            crd_groups.join(", ")
        ),
        Step::Traffic { action } => format!("traffic {}", action.as_str()),
        Step::GatewayPorts { gateway, node_port, path } => format!(
            "write   {path} (gateway Service ports: http2 NodePort {node_port} → the server ports of the Gateway in {})",
            gateway.describe()
        ),
    }
}
