//! `meshcheck run` of the shipped `ambient-kind` scenario on the real control plane (issue 21,
//! item 3): the unchanged binary provisions, installs, deploys, judges and cleans up, with `kind`,
//! `helm`, `docker` and `sysctl` on its PATH answered by [`Kind`] (the stand-ins' protocol,
//! `crate::sim::tools::serve_calls`):
//! - `kind create cluster` starts a control plane (start.sh, one kwok node per node of the kind
//!   config meshcheck wrote), writes its kubeconfig where meshcheck asked, puts in what kind's
//!   kubeadm installs ([`crate::sim::bootstrap::addons`]: CoreDNS and its `kube-dns` Service, the
//!   local-path provisioner), forwards the config's `extraPortMappings` host port to the
//!   simulation's ingress gateway, and starts what runs in the pods: the simulation's programs
//!   ([`super::programs`]) with the kubelet's probes, istiod's webhook patcher, Cilium's operator
//!   ([`CiliumOperator`]),
//!   kiali-operator's rule ([`KialiOperator`]) and, once its Deployment is there, the real
//!   prometheus-operator ([`Operator`]); `kind delete cluster` stops it all.
//! - `helm` is the real helm against the real API server: `upgrade --install` with the
//!   repository's chart mapped to the pinned one ([`crate::sim::helm::Helm::chart`], the same
//!   mapping the Rust-only tier renders with), every other argument as meshcheck gave it.
//! - `docker info` answers as Docker 28 does (there is no container engine here); `sysctl -n`
//!   answers the inotify limits of a host set up for kind (no node containers run here).
//!
//! The bookinfo and Gateway API manifests come from the simulation's mirror (the scenario's
//! `mirrors`, as in the rehearsals).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::DynamicObject};
use meshcheck::evidence::Outcome;

use super::{
    ControlPlane,
    cilium::CiliumOperator,
    dataplane::{KialiOperator, Operator},
    programs::Programs,
    run::{all_passed, edited_fixtures, meshcheck_run_scenario, verdicts},
};
use crate::{
    common::root,
    sim::tools::{Answer, fail, helm_upgrade_positional, ok, opt},
};

/// The checks judged here: every check of `ambient-kind` but `image-architectures`, which reads
/// registries, not the cluster.
const CHECKS: &[&str] = &[
    "node-architecture",
    "cilium-prerequisites",
    "gateway-binding",
    "mtls",
    "l4-authorization",
    "traces",
    "metrics",
    "kiali",
    "health",
    "probes",
];

/// The stand-in tools' side of the tier: the programs, the pinned charts, and the cluster
/// `kind create cluster` made, if any.
struct Kind {
    programs: Mutex<Programs>,
    helm: crate::sim::helm::Helm,
    helm_home: tempfile::TempDir,
    tools: PathBuf,
    cluster: tokio::sync::Mutex<Option<Cluster>>,
}

/// A cluster `kind create cluster` made: the control plane and what runs beside it.
struct Cluster {
    name: String,
    cp: ControlPlane,
    live: meshcheck::cluster::live::Live,
    _evidence: tempfile::TempDir,
    _cilium: CiliumOperator,
    _kiali: KialiOperator,
    prometheus: Option<Operator>,
    /// The forward of the kind config's host port, if it has one.
    ingress: Option<tokio::task::JoinHandle<()>>,
}

impl Kind {
    async fn answer(self: Arc<Self>, tool: String, args: Vec<String>) -> Answer {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match (tool.as_str(), a.as_slice()) {
            ("kind", ["version"]) => ok("kind v0.31.0 go1.25.5 linux/amd64\n"),
            ("kind", ["get", "clusters"]) => {
                ok(self.cluster.lock().await.as_ref().map(|c| format!("{}\n", c.name)).unwrap_or_default())
            }
            ("kind", ["create", "cluster", ..]) => self.create(&args).await,
            ("kind", ["delete", "cluster", ..]) => {
                let name = opt(&args, "--name").unwrap_or("kind").to_string();
                let mut cluster = self.cluster.lock().await;
                if let Some(c) = cluster.take_if(|c| c.name == name) {
                    c.ingress.iter().for_each(tokio::task::JoinHandle::abort);
                    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
                }
                Answer { code: 0, stdout: String::new(), stderr: format!("Deleting cluster \"{name}\" ...\n") }
            }
            // What Docker 28's CLI prints for `docker info --format {{.ServerVersion}}`.
            ("docker", ["info", ..]) => ok("28.5.1\n"),
            // The inotify limits kind's nodes need, as on a host set up by kind's known-issues page
            // (kind.sigs.k8s.io/docs/user/known-issues, "Pod errors due to too many open files"):
            // this tier's `kind` runs no node containers, so this machine's own limits are not
            // what a real kind here would meet.
            ("sysctl", ["-n", "fs.inotify.max_user_watches"]) => ok("524288\n"),
            ("sysctl", ["-n", "fs.inotify.max_user_instances"]) => ok("512\n"),
            ("helm", ["upgrade", ..]) => {
                let mapped = match self.mapped(&args) {
                    Ok(mapped) => mapped,
                    Err(refused) => return refused,
                };
                let answer = self.helm(&mapped).await;
                if answer.code == 0 {
                    self.start_prometheus_operator().await;
                }
                answer
            }
            ("helm", [..]) => self.helm(&args).await,
            _ => fail(1, format!("{tool}: the real control-plane tier does not know `{}`\n", args.join(" "))),
        }
    }

    /// `kind create cluster --name N --config FILE --kubeconfig PATH --wait 0s`.
    async fn create(&self, args: &[String]) -> Answer {
        let name = opt(args, "--name").unwrap_or("kind").to_string();
        let mut cluster = self.cluster.lock().await;
        if cluster.is_some() {
            return fail(
                1,
                format!(
                    "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"{name}\"\n"
                ),
            );
        }
        let config: serde_json::Value = match opt(args, "--config").map(std::fs::read_to_string) {
            Some(Ok(text)) => serde_saphyr::from_str(&text).unwrap_or_default(),
            _ => return fail(1, "ERROR: failed to create cluster: unable to read config\n"),
        };
        let Some(kubeconfig) = opt(args, "--kubeconfig").map(PathBuf::from) else {
            return fail(1, "ERROR: no --kubeconfig\n");
        };
        let nodes = config["nodes"].as_array().cloned().unwrap_or_default();
        let host_port = nodes
            .iter()
            .flat_map(|n| n["extraPortMappings"].as_array().cloned().unwrap_or_default())
            .find_map(|m| m["hostPort"].as_u64().and_then(|p| u16::try_from(p).ok()));
        let socket = self.programs.lock().unwrap().socket().display().to_string();
        let count = nodes.len().max(1).to_string();
        let env = [("MESHCHECK_KUBELET_SOCKET", socket), ("MESHCHECK_CP_NODES", count)];
        let Some(cp) = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ControlPlane::start(&env)
        })
        .await
        .unwrap() else {
            return fail(1, "ERROR: failed to create cluster: the control plane did not start\n");
        };
        if let Err(e) = std::fs::copy(cp.var("KUBECONFIG"), &kubeconfig) {
            return fail(1, format!("ERROR: failed to create cluster: {e}\n"));
        }
        let client = cp.client(None).await;
        {
            let mut programs = self.programs.lock().unwrap();
            programs.mirror(client.clone());
            programs.patch_webhooks(client.clone());
            programs.probe(client.clone());
        }
        let (live, evidence) = cp.live().await;
        let addons: Vec<DynamicObject> =
            crate::sim::bootstrap::addons("kind").into_iter().map(|o| serde_json::from_value(o).unwrap()).collect();
        if let Err(e) = live.apply_objects(&addons, Some("kube-system"), false).await {
            return fail(1, format!("ERROR: failed to create cluster: kubeadm's add-ons: {e}\n"));
        }
        let ingress = self.programs.lock().unwrap().ingress();
        let ingress = match host_port {
            Some(port) => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => Some(tokio::spawn(forward(listener, ingress))),
                Err(e) => return fail(1, format!("ERROR: failed to create cluster: port {port}: {e}\n")),
            },
            None => None,
        };
        *cluster = Some(Cluster {
            name: name.clone(),
            _cilium: CiliumOperator::start(client, &self.tools),
            _kiali: KialiOperator::start(&live),
            prometheus: None,
            cp,
            live,
            _evidence: evidence,
            ingress,
        });
        Answer {
            code: 0,
            stdout: String::new(),
            stderr: format!(
                "Creating cluster \"{name}\" ...\n ✓ Ensuring node image\n ✓ Preparing nodes\n ✓ Starting control-plane\nSet kubectl context to \"kind-{name}\"\n"
            ),
        }
    }

    /// meshcheck's `helm upgrade --install REL CHART --repo URL --version V ...` with the chart the
    /// pinned one of that repository and version (its `--set` flags added), `--repo` and
    /// `--version` taken off; helm's own error when the repository does not have it.
    fn mapped(&self, args: &[String]) -> Result<Vec<String>, Answer> {
        let (Some(repo), Some(version)) = (opt(args, "--repo"), opt(args, "--version")) else {
            return Err(fail(1, "Error: the tier maps only `--repo URL --version V` charts\n"));
        };
        let Some(&at) = helm_upgrade_positional(args).get(1) else {
            return Err(fail(1, "Error: \"helm upgrade\" requires 2 arguments\n"));
        };
        let chart = self.helm.chart(&unmirrored(repo), &args[at], version).map_err(|e| fail(1, format!("{e}\n")))?;
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "--repo" | "--version" => i += 2,
                _ if i == at => {
                    out.push(chart.path.display().to_string());
                    i += 1;
                }
                a => {
                    out.push(a.to_string());
                    i += 1;
                }
            }
        }
        out.extend(chart.sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]));
        Ok(out)
    }

    /// The real helm with `args`, its caches and configuration in a folder of the tier's own.
    async fn helm(&self, args: &[String]) -> Answer {
        let home = self.helm_home.path();
        let out = tokio::process::Command::new(&self.helm.binary)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .await;
        match out {
            Ok(out) => Answer {
                code: out.status.code().unwrap_or(1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => fail(127, format!("helm: {e}\n")),
        }
    }

    /// Starts the real prometheus-operator once kube-prometheus-stack's Deployment of it exists,
    /// as its pod's container would start.
    async fn start_prometheus_operator(&self) {
        let mut cluster = self.cluster.lock().await;
        let Some(c) = cluster.as_mut().filter(|c| c.prometheus.is_none()) else { return };
        let deployments: Api<Deployment> = Api::namespaced(c.live.client.clone(), "monitoring");
        if deployments.get_opt("prom-operator").await.ok().flatten().is_some() {
            c.prometheus = Some(Operator::start(&c.cp, &c.live).await);
        }
    }
}

/// A repository URL with the mirror's prefix taken off (the scenario's `mirrors` point the chart
/// repositories at the simulation's mirror): `http://127.0.0.1:P/<host>/<path>` is
/// `https://<host>/<path>`.
fn unmirrored(url: &str) -> String {
    match url.strip_prefix("http://127.0.0.1:").and_then(|rest| rest.split_once('/')) {
        Some((_, rest)) => format!("https://{rest}"),
        None => url.to_string(),
    }
}

/// The kind config's host port, as Docker publishes it: each connection to `listener` is passed
/// to the ingress gateway at `to`.
async fn forward(listener: tokio::net::TcpListener, to: SocketAddr) {
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut gateway) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut gateway).await;
            }
        });
    }
}

/// The shipped `ambient-kind` scenario with only [`CHECKS`], its settle waits cut to half (probes
/// then watches 12.5 s under default-deny, longer than probe-target's readiness needs to fail: 2
/// failures 5 s apart), and every upstream host it reaches (manifests, chart repositories, the
/// registries the preflight asks) mirrored at `mirror`.
fn scenario(mirror: SocketAddr) -> String {
    let text = std::fs::read_to_string(root().join("scenarios/ambient-kind.yaml")).unwrap();
    let mut text =
        crate::rehearsal::only_checks(text, CHECKS).replace("timeouts:\n", "timeouts:\n  settle_scale: 0.5\n");
    text.push_str("mirrors:\n");
    for host in crate::common::UPSTREAM_HOSTS {
        text.push_str(&format!("  https://{host}/: http://{mirror}/{host}/\n"));
    }
    text
}

/// The shipped `ambient-kind` scenario, run by the unchanged `meshcheck run` on the real control
/// plane from `kind create cluster` to `kind delete cluster`: every chart installed by the real
/// helm from the pinned charts, every wait of the install met by the real controllers, kwok and
/// the operators that run beside them, bookinfo deployed, and each of [`CHECKS`] passes; the
/// cluster is gone when the run exits.
/// Could-fail: with kube-prometheus-stack's values asking for monitors labelled with its release
/// (`podMonitorSelectorNilUsesHelmValues: true`), the real prometheus-operator leaves meshcheck's
/// PodMonitor out of the configuration it writes: `metrics` fails naming ztunnel, and `kiali`
/// too, its graph drawn from ztunnel's metrics having no edge; every other check passes.
#[tokio::test]
async fn an_ambient_kind_run_provisions_installs_and_passes_on_the_real_control_plane() {
    if crate::charts::rendered("ambient-kind").is_none() {
        return;
    }
    let Some(tools) = crate::common::control_plane_tools() else { return };
    let Some((out, work)) = kind_run(&tools, &[]).await else { return };
    all_passed(&out, &work.path().join("reports"), CHECKS);

    let values = "values/kube-prometheus-stack.yaml";
    let by_release = edited_fixtures(
        values,
        "podMonitorSelectorNilUsesHelmValues: false",
        "podMonitorSelectorNilUsesHelmValues: true",
    );
    let f = by_release.path().display().to_string();
    let Some((out, work)) = kind_run(&tools, &[("MESHCHECK_FIXTURES", &f)]).await else { return };
    assert!(!out.status.success(), "a run whose Prometheus selects no PodMonitor must fail");
    let got = verdicts(&work.path().join("reports"));
    let (outcome, why) = &got["metrics"];
    assert_eq!(*outcome, Outcome::Fail, "{why}");
    assert!(why.contains("ztunnel"), "the verdict must name ztunnel: {why}");
    // Kiali draws its graph from ztunnel's metrics in that Prometheus: it has no edge either.
    let (outcome, why) = &got["kiali"];
    assert_eq!(*outcome, Outcome::Fail, "{why}");
    assert!(why.contains("graph lacks the edge productpage → details"), "{why}");
    for check in CHECKS.iter().filter(|c| !["metrics", "kiali"].contains(*c)) {
        assert_eq!(got[*check].0, Outcome::Pass, "{check}: {}", got[*check].1);
    }
}

/// One `meshcheck run` of [`scenario`] with `env`, its tools answered by a [`Kind`] of its own,
/// whose cluster must be gone when the run exits; the run's output and folder.
async fn kind_run(tools: &Path, env: &[(&str, &str)]) -> Option<(std::process::Output, tempfile::TempDir)> {
    let options = crate::common::sim_options("existing", 1.0, crate::sim::Faults::default())?;
    let programs = Programs::listen()?;
    let mirror = programs.mirror_at();
    let kind = Arc::new(Kind {
        programs: Mutex::new(programs),
        helm: options.helm.clone(),
        helm_home: tempfile::tempdir().unwrap(),
        tools: tools.to_path_buf(),
        cluster: tokio::sync::Mutex::new(None),
    });
    let stand_ins = tempfile::tempdir().unwrap();
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    crate::sim::tools::write_stand_ins(stand_ins.path(), control.local_addr().unwrap().port());
    let k = kind.clone();
    let serving = tokio::spawn(crate::sim::tools::serve_calls(control, move |tool, args| k.clone().answer(tool, args)));

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("ambient-kind.yaml");
    std::fs::write(&file, scenario(mirror)).unwrap();
    let path = format!("{}:/usr/bin:/bin", stand_ins.path().join("bin").display());
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let w = work.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        meshcheck_run_scenario(&w, &file, &path, &env)
    })
    .await
    .unwrap();
    assert!(kind.cluster.lock().await.is_none(), "the run must delete the cluster it created");
    serving.abort();
    Some((out, work))
}
