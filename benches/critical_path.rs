//! How close a run comes to its critical path, measured: `cargo bench --bench critical_path`.
//!
//! Each shipped scenario below runs twice through the real `meshcheck run` against the simulated
//! cluster (suites/sim) with upstream durations ([`sim::Timings::upstream`], a table with the
//! source of each figure): once one step at a time (`--parallel 1`), once with the default
//! concurrency. For each, it prints the run's wall time divided by the plan's critical path:
//!
//! `<scenario> wall/critical-path: sequential S.SS, concurrent C.CC`
//!
//! The critical path is the longest path through the plan's graph, as the executor must follow
//! it: each step's needs, phases in order (a phase starts once the one before and its checks have
//! ended, steps the plan lets start during an earlier phase excepted), checks after their phase's
//! steps. A step weighs what it takes: a rollout wait what the table says the rollout takes once
//! what it awaits exists (a DaemonSet upgrade a node at a time), everything meshcheck does itself
//! (a helm command with its process, an apply, a check) the least it took in the two runs. The
//! wall time runs from the start of the run to the end of its last check (cleanup excluded).
//!
//! Then it times `judge` and `compare` on the concurrent ambient-kind run folder grown to 100 and to
//! 1000 nodes (every per-node file the judges read: nodes, ztunnel config dumps and scrapes,
//! DaemonSet pods, Prometheus targets), each in a process of its own (this benchmark run again
//! with `MESHCHECK_BENCH_CHILD`) so that its peak memory (`VmHWM` of /proc/self/status) is its own,
//! and prints `judge N-node folder: X.XXX s, peak P MiB` (the median of five) and the same for
//! `compare`. Goal (issue 24): at most 0.3 s for 1000 nodes in a release build, memory flat.
//!
//! Needs the upstream data (`$MESHCHECK_UPSTREAM` or `../shared/upstream`: the simulation's shapes);
//! without it, it says so and stops.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use meshcheck::{
    common::names::Phase,
    plan::{Plan, PlannedStep, Step, StepId},
    report::RunRecord,
    scenario::Scenario,
};
use serde_json::{Value, json};

// The benchmark uses part of the simulation the offline tests share.
#[allow(dead_code)]
#[path = "../suites/sim/mod.rs"]
mod sim;

use sim::{Sim, SimOptions, Timings};

/// Real seconds per cluster second. The two scenarios take some 50 minutes of cluster time run
/// both ways; at 0.03 that is about a minute and a half, and a step meshcheck does itself (an
/// apply, a helm process) still weighs little beside the rollouts.
const SCALE: f64 = 0.03;

/// Nodes of the grown run folders `judge` and `compare` are timed on.
const JUDGE_NODES: [usize; 2] = [100, 1000];

/// Set in the child process that runs one `judge` or `compare` and reports its own peak memory.
const CHILD: &str = "MESHCHECK_BENCH_CHILD";

/// The upstream data: `$MESHCHECK_UPSTREAM`, else `../shared/upstream`.
fn upstream() -> PathBuf {
    std::env::var_os("MESHCHECK_UPSTREAM").map(PathBuf::from).unwrap_or_else(|| root().join("../shared/upstream"))
}

/// The real helm and the pinned charts the simulation's stand-in helm renders with: as the offline
/// suite finds them (`$MESHCHECK_HELM` or `target/go-tools/bin/helm`, `$MESHCHECK_CHARTS` or the
/// upstream data's `charts/`).
fn helm() -> Option<sim::helm::Helm> {
    let binary = std::env::var_os("MESHCHECK_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/go-tools/bin/helm"));
    let charts = std::env::var_os("MESHCHECK_CHARTS").map(PathBuf::from).unwrap_or_else(|| upstream().join("charts"));
    (binary.is_file() && charts.is_dir()).then_some(sim::helm::Helm { binary, charts })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> ExitCode {
    if let Ok(what) = std::env::var(CHILD) {
        return child(&what);
    }
    if !upstream().is_dir() || helm().is_none() {
        println!(
            "SKIP: no upstream data ($MESHCHECK_UPSTREAM or ../shared/upstream) or no pinned helm and charts (`.ci/build-go-tools helm`); the simulated cluster needs both"
        );
        return ExitCode::SUCCESS;
    }
    let work = tempfile::tempdir().expect("a work folder");
    let mut kind_run = None;
    for name in ["ambient-kind", "upgrade-gate"] {
        let sequential = run(name, 1, work.path());
        let concurrent = run(name, meshcheck::run::DEFAULT_PARALLEL.get(), work.path());
        let (Ok(sequential), Ok(concurrent)) = (sequential, concurrent) else {
            return ExitCode::FAILURE;
        };
        let scenario = Scenario::from_path(&root().join(format!("scenarios/{name}.yaml"))).expect("a shipped scenario");
        let plan = meshcheck::plan::build(&scenario, &meshcheck::plan::RunContext::for_plan());
        let nodes = 1 + scenario.cluster.workers;
        let path = critical_path(&plan, &[&sequential.record, &concurrent.record], nodes);
        println!(
            "{name} wall/critical-path: sequential {:.2}, concurrent {:.2}",
            sequential.wall / path.length,
            concurrent.wall / path.length
        );
        println!(
            "  critical path {:.1} s (about {:.0} s of cluster time); wall {:.1} s sequential, {:.1} s concurrent",
            path.length,
            path.length / SCALE,
            sequential.wall,
            concurrent.wall
        );
        println!("  on it: {}", path.steps.join(" → "));
        if name == "ambient-kind" {
            kind_run = Some(concurrent.dir);
        }
    }
    let Some(kind_run) = kind_run else { return ExitCode::FAILURE };
    for nodes in JUDGE_NODES {
        match time_judge_and_compare(&kind_run, work.path(), nodes) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The child: one `judge` (a re-judge of the folder, as `meshcheck judge` does) or `compare` (the
/// folder with itself), then its peak resident memory in KiB on stdout.
fn child(what: &str) -> ExitCode {
    let (verb, dir) = what.split_once(' ').expect("`judge DIR` or `compare DIR`");
    let dir = Path::new(dir);
    match verb {
        "judge" => {
            meshcheck::run::rejudge(dir).expect("the grown folder re-judges");
        }
        _ => {
            let before = meshcheck::report::load_outcomes(dir, None).expect("outcomes");
            let rows = meshcheck::report::compare(&before, &before);
            assert!(!rows.is_empty());
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("0 kB").trim().to_string();
    println!("{}", peak.trim_end_matches(" kB"));
    ExitCode::SUCCESS
}

/// A finished run: its record, folder and wall time in real seconds.
struct Run {
    record: RunRecord,
    dir: PathBuf,
    wall: f64,
}

/// `meshcheck run` of a shipped scenario against a fresh simulated kind cluster.
fn run(name: &str, parallel: usize, work: &Path) -> Result<Run, ()> {
    let sim = Sim::start_timed(
        SimOptions {
            provider: "kind",
            scale: SCALE,
            faults: Default::default(),
            upstream: upstream(),
            helm: helm().expect("checked in main"),
        },
        Timings::upstream(),
    );
    let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml"))).expect("a shipped scenario");
    let scenario = work.join(format!("{name}.yaml"));
    std::fs::write(&scenario, sim.point_scenario(&text)).expect("write the scenario");
    let reports = work.join(format!("{name}-parallel-{parallel}"));
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).expect("a temporary folder");
    let out = Command::new(env!("CARGO_BIN_EXE_meshcheck"))
        .env("PATH", format!("{}:/usr/bin:/bin", sim.tools_dir().display()))
        .env("MESHCHECK_PROGRESS", "quiet")
        .env("MESHCHECK_LOG", "warn")
        .env("TMPDIR", &tmp)
        .env_remove("MESHCHECK_SCENARIO")
        .current_dir(work)
        .args(["run", "--parallel", &parallel.to_string(), "--scenario"])
        .arg(&scenario)
        .arg("--reports")
        .arg(&reports)
        .output()
        .expect("meshcheck runs");
    let dir = std::fs::canonicalize(reports.join("latest")).expect("a run folder");
    let record = RunRecord::load(&dir).expect("run.json");
    if !out.status.success() {
        eprintln!("error: {name} with --parallel {parallel} did not pass ({}):", dir.display());
        for r in record.results.iter().filter(|r| r.verdict.outcome != meshcheck::evidence::Outcome::Pass) {
            eprintln!("  {}::{} {}: {}", r.suite, r.name, r.verdict.outcome, r.verdict.explanation());
        }
        return Err(());
    }
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339").timestamp_millis() as f64 / 1000.0;
    let cleanup = record.phase_durations_secs.get("cleanup").copied().unwrap_or_default();
    let wall = at(&record.ended_at) - at(&record.started_at) - cleanup;
    Ok(Run { record, dir, wall })
}

/// The longest path through the plan's graph and the steps on it.
struct CriticalPath {
    length: f64,
    steps: Vec<String>,
}

/// The critical path of `plan` in real seconds, as the executor must follow the plan: a step
/// starts once its needs and the phases before its own (or before the one it may start during)
/// have ended, a check once its phase's steps have. Rollouts weigh what the upstream table says (at
/// [`SCALE`]) from the moment what they await exists (a rollout awaited late is already under way);
/// meshcheck's own work weighs the least it took in `runs`.
fn critical_path(plan: &Plan, runs: &[&RunRecord], nodes: u32) -> CriticalPath {
    let timings = Timings::upstream();
    let least = |found: &dyn Fn(&RunRecord) -> Option<f64>| {
        let t = runs.iter().filter_map(|r| found(r)).fold(f64::INFINITY, f64::min);
        if t.is_finite() { t } else { 0.0 }
    };
    let measured = |phase: Phase, label: &str| {
        least(&|r: &RunRecord| {
            r.steps.iter().find(|s| s.phase == phase.as_str() && s.step == label).map(|s| s.duration_secs)
        })
    };
    let trial = |phase: Phase, name: &str| {
        least(&|r: &RunRecord| {
            r.results.iter().find(|t| t.suite == phase.as_str() && t.name == name).map(|t| t.duration_secs)
        })
    };
    // Execution order: each phase's steps (with the later phases' steps it hosts), then its checks.
    let mut order: Vec<(Phase, &PlannedStep, bool)> = Vec::new();
    for phase in plan.phases.iter().filter(|p| p.name != Phase::Cleanup) {
        for (own, s) in plan.steps().filter(|(_, s)| !matches!(s.step, Step::Check { .. })) {
            if Plan::host_phase(own, s) == phase.name {
                order.push((own, s, false));
            }
        }
        for s in phase.steps.iter().filter(|s| matches!(s.step, Step::Check { .. })) {
            order.push((phase.name, s, true));
        }
    }
    // The preflight phase's own trial (tools, network) comes first.
    let preflight = trial(Phase::Preflight, "phase");
    let mut end: BTreeMap<StepId, (f64, String)> = BTreeMap::new();
    // When what a step makes exists: a helm release's objects appear when helm has sent them (the
    // table's time after it started), before the runner sees the process exit; anything else at
    // its end.
    let mut appears: BTreeMap<StepId, f64> = BTreeMap::new();
    let mut came_after: BTreeMap<StepId, Option<StepId>> = BTreeMap::new();
    // The latest end of the steps run in each phase, and of those steps and the phase's checks.
    let mut steps_end: BTreeMap<Phase, (f64, Option<StepId>)> = BTreeMap::new();
    let mut all_end: BTreeMap<Phase, (f64, Option<StepId>)> = BTreeMap::new();
    for (own, s, is_check) in order {
        let host = Plan::host_phase(own, s);
        let mut needs = (preflight, None);
        for n in &s.needs {
            if let Some((t, _)) = end.get(&n.step)
                && *t > needs.0
            {
                needs = (*t, Some(n.step));
            }
        }
        let mut start = needs;
        let barriers = all_end.range(..host).map(|(_, e)| e).chain(steps_end.get(&host).filter(|_| is_check));
        for (t, from) in barriers {
            if *t > start.0 {
                start = (*t, *from);
            }
        }
        let finish = match &s.step {
            Step::Check { name, .. } => start.0 + trial(own, name),
            Step::Wait { kind, name, .. } if kind != "CustomResourceDefinition" => {
                let from = s.needs.iter().filter_map(|n| appears.get(&n.step)).fold(preflight, |a, b| a.max(*b));
                let rolled_out = from + rollout(kind, name, own, &timings, nodes) * SCALE;
                if rolled_out >= start.0 {
                    start = needs;
                }
                rolled_out.max(start.0)
            }
            other => start.0 + measured(own, &other.label()),
        };
        let label = s.step.label();
        let made = match label.strip_prefix("helm ") {
            Some(release) if !release.starts_with("repo ") => start.0 + timings.helm(release).as_secs_f64() * SCALE,
            _ => finish,
        };
        appears.insert(s.id, made.min(finish));
        end.insert(s.id, (finish, format!("{own}: {label}")));
        came_after.insert(s.id, start.1);
        let phases = if is_check { vec![&mut all_end] } else { vec![&mut steps_end, &mut all_end] };
        for ends in phases {
            let e = ends.entry(if is_check { own } else { host }).or_insert((0.0, None));
            if finish > e.0 {
                *e = (finish, Some(s.id));
            }
        }
    }
    let Some((last, (length, _))) = end.iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0)) else {
        return CriticalPath { length: preflight, steps: Vec::new() };
    };
    let mut steps = Vec::new();
    let mut at = Some(*last);
    while let Some(id) = at {
        steps.push(end[&id].1.clone());
        at = came_after[&id];
    }
    steps.reverse();
    CriticalPath { length: *length, steps }
}

/// Cluster seconds a rollout takes once the steps it needs have ended (simulation rules: a pod
/// starts its table time after scheduling; the operators create Prometheus and Kiali once they
/// are up; an upgraded DaemonSet replaces one node's pod at a time).
fn rollout(kind: &str, name: &str, phase: Phase, t: &Timings, nodes: u32) -> f64 {
    let pod = |w: &str| t.pod(w).as_secs_f64();
    match (kind, name) {
        // Nodes become Ready when Cilium's agent runs on them.
        ("Node", _) => pod("cilium"),
        ("Deployment", "kiali") => pod("kiali-operator") + pod("kiali"),
        ("StatefulSet", "prometheus-prom-prometheus") => pod("prom-operator") + pod(name),
        ("DaemonSet", _) if phase == Phase::Upgrade => f64::from(nodes) * pod(name),
        _ => pod(name),
    }
}

/// Times `judge` and `compare` on a copy of `run_dir` grown to `nodes` nodes, each the median of
/// five runs in a child process, with the child's peak memory.
fn time_judge_and_compare(run_dir: &Path, work: &Path, nodes: usize) -> Result<Vec<String>, String> {
    let grown = work.join(format!("judge-{nodes}-nodes"));
    sim::helm::copy_dir(run_dir, &grown).map_err(|e| format!("copy {}: {e}", run_dir.display()))?;
    grow(&grown.join("evidence"), nodes)?;
    let mut lines = Vec::new();
    for verb in ["judge", "compare"] {
        let mut times = Vec::new();
        let mut peak_kib = 0u64;
        for _ in 0..5 {
            let started = Instant::now();
            let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .env(CHILD, format!("{verb} {}", grown.display()))
                .env("MESHCHECK_LOG", "warn")
                .output()
                .map_err(|e| format!("{verb}: {e}"))?;
            times.push(started.elapsed().as_secs_f64());
            if !out.status.success() {
                return Err(format!("{verb} on the grown folder failed:\n{}", String::from_utf8_lossy(&out.stderr)));
            }
            let kib = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0);
            peak_kib = peak_kib.max(kib);
        }
        times.sort_by(f64::total_cmp);
        let secs = times[times.len() / 2];
        lines.push(format!("{verb} {nodes}-node folder: {secs:.3} s, peak {:.1} MiB", peak_kib as f64 / 1024.0));
    }
    Ok(lines)
}

fn node_name(i: usize) -> String {
    format!("meshcheck-node-{i:03}")
}

/// Grows an evidence folder to `n` nodes: every node of `cluster/nodes.json`, one pod per node for
/// every DaemonSet in each PodList, one Prometheus target per node for each DaemonSet pod's
/// target, and a ztunnel folder per node (`*/ztunnel/<node>/`), copied from the simulated nodes'
/// in turn.
fn grow(evidence: &Path, n: usize) -> Result<(), String> {
    let mut renamed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for file in json_files(evidence) {
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let changed = match doc["kind"].as_str() {
            Some("NodeList") => {
                let template = doc["items"][0].clone();
                doc["items"] = (0..n)
                    .map(|i| {
                        let mut node = template.clone();
                        node["metadata"]["name"] = json!(node_name(i));
                        node
                    })
                    .collect();
                true
            }
            Some("PodList") => grow_daemonset_pods(&mut doc, n, &mut renamed),
            _ => false,
        };
        if changed {
            std::fs::write(&file, serde_json::to_vec(&doc).expect("JSON")).map_err(|e| e.to_string())?;
        }
    }
    // Targets after pods: a DaemonSet pod's target follows the pod's new names.
    for file in json_files(evidence) {
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if doc.pointer("/data/activeTargets").is_some() && grow_targets(&mut doc, &renamed) {
            std::fs::write(&file, serde_json::to_vec(&doc).expect("JSON")).map_err(|e| e.to_string())?;
        }
    }
    for ztunnels in ["mtls/ztunnel", "metrics/ztunnel"].map(|d| evidence.join(d)).into_iter().filter(|d| d.is_dir()) {
        let mut nodes: Vec<PathBuf> =
            std::fs::read_dir(&ztunnels).map_err(|e| e.to_string())?.flatten().map(|e| e.path()).collect();
        nodes.sort();
        if nodes.is_empty() {
            return Err(format!("no node under {}", ztunnels.display()));
        }
        // The simulated nodes' folders in turn: each holds the workloads and connections of its node.
        let staged = ztunnels.with_extension("simulated");
        std::fs::rename(&ztunnels, &staged).map_err(|e| e.to_string())?;
        for i in 0..n {
            let from = staged.join(nodes[i % nodes.len()].file_name().expect("a node folder"));
            sim::helm::copy_dir(&from, &ztunnels.join(node_name(i))).map_err(|e| e.to_string())?;
        }
        std::fs::remove_dir_all(&staged).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out
}

/// Replaces each DaemonSet's pods in a PodList with one per node; `renamed` keeps, per old pod
/// name, the new (pod, IP) names, so targets can follow.
fn grow_daemonset_pods(doc: &mut Value, n: usize, renamed: &mut BTreeMap<String, Vec<(String, String)>>) -> bool {
    let items = doc["items"].as_array().cloned().unwrap_or_default();
    let owner = |p: &Value| {
        p.pointer("/metadata/ownerReferences/0")
            .filter(|o| o["kind"] == "DaemonSet")
            .and_then(|o| o["name"].as_str())
            .map(String::from)
    };
    if !items.iter().any(|p| owner(p).is_some()) {
        return false;
    }
    let mut out: Vec<Value> = items.iter().filter(|p| owner(p).is_none()).cloned().collect();
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    for p in &items {
        if let Some(o) = owner(p) {
            seen.entry(o).or_insert_with(|| p.clone());
        }
    }
    for (ds, template) in seen {
        let old = template.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut names = Vec::new();
        for i in 0..n {
            let mut pod = template.clone();
            let (name, ip) = (format!("{ds}-{i:03}"), format!("10.{}.{}.{}", 100 + i / 250, i % 250, 2));
            pod["metadata"]["name"] = json!(name);
            pod["spec"]["nodeName"] = json!(node_name(i));
            pod["status"]["podIP"] = json!(ip);
            pod["status"]["podIPs"] = json!([{ "ip": ip }]);
            names.push((name, ip));
            out.push(pod);
        }
        for p in items.iter().filter(|p| owner(p).as_deref() == Some(ds.as_str())) {
            let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            renamed.insert(name, names.clone());
        }
        renamed.insert(old, names);
    }
    doc["items"] = json!(out);
    true
}

/// Replaces each target of a grown DaemonSet pod with one per new pod.
fn grow_targets(doc: &mut Value, renamed: &BTreeMap<String, Vec<(String, String)>>) -> bool {
    let targets = doc["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut changed = false;
    let mut grown: std::collections::BTreeSet<String> = Default::default();
    for t in targets {
        let pod = t.pointer("/labels/pod").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(names) = renamed.get(&pod) else {
            out.push(t);
            continue;
        };
        changed = true;
        // One target per new pod, whichever old pod of the DaemonSet came first.
        let pool = t["scrapePool"].as_str().unwrap_or_default().to_string();
        if !grown.insert(format!("{pool}{}", names[0].0)) {
            continue;
        }
        for (name, ip) in names {
            let mut target = t.clone();
            target["labels"]["pod"] = json!(name);
            if let Some(url) = t["scrapeUrl"].as_str()
                && let Some((scheme, rest)) = url.split_once("://")
                && let Some((_, path)) = rest.split_once(':')
            {
                target["scrapeUrl"] = json!(format!("{scheme}://{ip}:{path}"));
            }
            out.push(target);
        }
    }
    doc["data"]["activeTargets"] = json!(out);
    changed
}
