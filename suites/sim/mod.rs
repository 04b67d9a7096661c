//! A simulated cluster for rehearsing whole `meshcheck run`s without a container engine.
//!
//! One [`Sim`] is a Kubernetes API server on 127.0.0.1 (plain HTTP; discovery, list/watch, server-
//! side apply, exec and port-forward over WebSocket, the service proxy), the controllers that turn
//! workloads into pods on simulated nodes, the programs those pods run (ztunnel, istiod,
//! Prometheus, Tempo, Kiali, the curl clients), the ingress gateway on the host, a mirror for the
//! upstream manifests and registry indexes, and stand-in `kind`, `k3d`, `helm`, `docker` and
//! `sysctl` that act on it. Faults are switches.
//!
//! What is installed is real, what answers is evaluated. The stand-in helm puts into the API
//! server what the **real helm** renders of the **pinned chart** with the run's values
//! ([`helm`]). Each component then computes its answer from the objects there by the rules of the
//! upstream program at the pinned version (suites/sim/UPSTREAM-RULES.md, cited beside the code):
//! which program a pod runs comes from its image; a Service leads to a pod's port by its selector
//! and `targetPort`; Prometheus selects monitors by its custom resource and keeps targets by
//! prometheus-operator's relabelling rules, scraping each; Kiali follows its custom resource
//! (auth strategy, web root, Prometheus URL); Cilium's policies are evaluated for kubelet probes
//! and plaintext clients; ambient capture follows istio-cni's enablement selector; spans reach
//! Tempo only along istiod's extension provider to a receiver that listens. Upstream shapes
//! (CRDs, bookinfo, config dumps, index documents) are read from the upstream data folder at run
//! time (`SimOptions::upstream`), never copied here.
//!
//! Files, and the direction of their imports (none imports one that imports it back; the offline
//! `layers` test checks): `store` (objects, history, label selectors) and `web` (HTTP plumbing) are
//! the floor; `apiserver` serves the API and hands the service proxy, port-forward, logs and exec
//! to `services`, which routes each to the program in the pod: `ztunnel`, `istiod`,
//! `prometheus`, `tempo`, `kiali`, `clients` (curl in the client pods); `gateway` and `mirror`
//! serve on the host through `host_servers`; `mesh` (programs, capture, Service resolution),
//! `cilium` (policy), `shapes` (upstream recordings) and `controllers` (workloads into pods, the
//! operators, the kubelet) are below the components; `bootstrap` (cluster bootstrap, the existing
//! cluster), `helm` (the real helm and charts) and `tools` (the stand-in kind, k3d, helm, docker)
//! act on the store; `timings` says how long things take. `mirrored` puts the programs behind a
//! real API server instead (the real control-plane tier): its store a copy of that server's
//! objects, its calls the kubelet's.
//!
//! Simulated time runs at `scale` of real time: a pod that takes 5 s to start takes 5 s × scale.
//! How long each thing takes is a [`Timings`] table: uniform and short for the rehearsals, upstream
//! figures for the critical-path benchmark.

mod apiserver;
pub mod bootstrap;
mod cilium;
mod clients;
pub mod controllers;
pub mod fortio;
mod gateway;
pub mod helm;
mod host_servers;
mod istiod;
mod keycloak;
mod kiali;
mod kubelet;
mod mesh;
mod mirror;
pub mod mirrored;
mod prometheus;
mod services;
mod shapes;
mod store;
mod tempo;
mod timings;
pub mod tools;
mod web;
mod xds;
mod ztunnel;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::Value;

pub use store::Key;
pub use timings::Timings;

/// Fault switches. Each makes the simulation misbehave the way a real cluster does.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// ztunnel's config dump reports book-info workloads with protocol TCP (not captured).
    pub ztunnel_reports_tcp: bool,
    /// The gateway's spans never reach Tempo.
    pub tempo_drops_traces: bool,
    /// Prometheus cannot scrape the ztunnel on the first node (`connection refused`).
    pub ztunnel_target_down: bool,
    /// Kubelet probes are dropped under default-deny even with the Cilium probe policy (the
    /// SNAT-ed 169.254.7.127 path broken), so probed pods fail and restart.
    pub probes_dropped_under_deny: bool,
    /// `helm upgrade --install` of this release fails after the cluster exists.
    pub helm_fails: Option<String>,
    /// `helm upgrade --install` of this release hangs (for interrupting a run mid-install).
    pub helm_hangs: Option<String>,
    /// This workload's new pods are labelled `istio.io/dataplane-mode: none` (a team opting its
    /// Deployment out of ambient): the mesh leaves them out by its own rules, nothing more.
    pub opted_out: Option<String>,
    /// istiod pushes security policy to ztunnel this long (cluster time) after a change, instead
    /// of [`Timings::policy_push`]: a control plane slow under load.
    pub policy_push_delay: Option<Duration>,
    /// This workload's new pods never become Ready, so its rollout never completes.
    pub rollout_stuck: Option<String>,
    /// The API server goes away when this many server-side applies have been made.
    pub api_down_after_applies: Option<usize>,
    /// curl in the client pods hangs while a STRICT PeerAuthentication is in book-info.
    pub curl_hangs_under_strict: bool,
    /// The first list of book-info's events while a NetworkPolicy is in book-info hangs.
    pub events_hang_under_deny: bool,
    /// etcd compacts under the clients: every other watch of one named object from a
    /// resourceVersion ends at once with
    /// a 410 `Expired` ERROR event, as kube-apiserver's watch cache answers for a resourceVersion
    /// older than its window (apiserver v0.35.4 pkg/storage/cacher/watch_cache.go
    /// `errors.NewResourceExpired`). Clients must relist and watch again.
    pub watches_expire: bool,
    /// `kind delete cluster` hangs (a wedged container engine): cleanup cannot finish.
    pub cluster_delete_hangs: bool,
    /// Deleting a CiliumClusterwideNetworkPolicy fails with 500 (the probes negative control
    /// then fails half-way, with default-deny applied).
    pub ccnp_delete_fails: bool,
    /// The existing cluster runs Cilium and the user's own objects, without the mesh or the
    /// observability stack: what `existing.install: true` installs onto.
    pub mesh_absent: bool,
    /// The existing cluster's kube-prometheus-stack was installed by the chart's own guide: release
    /// `kube-prometheus-stack`, no `fullnameOverride`, so its Prometheus is
    /// `monitoring/kube-prometheus-stack-prometheus:9090`, not where meshcheck's guide puts it.
    pub kps_default_names: bool,
    /// The existing cluster's Prometheus is Istio's own addon (istio 1.30.3
    /// samples/addons/prometheus.yaml, `istio-system/prometheus:9090`) instead of
    /// kube-prometheus-stack: no operator and no monitors; it scrapes every pod its
    /// `prometheus.io/*` annotations offer.
    pub istio_addon_prometheus: bool,
    /// ztunnel pods of this Istio version (image tag) add this many milliseconds to each request
    /// they carry.
    pub ztunnel_adds_ms: Option<(String, f64)>,
    /// ztunnel pods of this Istio version (image tag) use twice the working set.
    pub ztunnel_memory_doubles: Option<String>,
    /// Containers of pods whose name starts with this were OOM-killed once (kubelet's
    /// `lastState.terminated.reason: OOMKilled`).
    pub oom_killed: Option<String>,
}

/// How to start a simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `kind`, `k3d` (the stand-ins create the cluster) or `existing` (a cluster already set up).
    pub provider: &'static str,
    /// Simulated seconds per real second, inverted: 0.02 makes 5 s of cluster time 100 ms.
    pub scale: f64,
    /// Fault switches.
    pub faults: Faults,
    /// The upstream data folder the simulation reads its shapes from (the tests' resolved one:
    /// `$MESHCHECK_UPSTREAM`, `../shared/upstream` or the fetched cache).
    pub upstream: PathBuf,
    /// The real helm and the pinned charts the stand-in `helm` renders with.
    pub helm: helm::Helm,
}

/// What a run left behind, for the teardown assertions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leftovers {
    /// The kind/k3d cluster still exists.
    pub cluster: Option<String>,
    /// Objects created or applied with meshcheck's field manager that still exist.
    pub applied: Vec<String>,
    /// Objects the run did not create that it deleted and did not put back.
    pub removed: Vec<String>,
}

/// A simulated cluster, alive until dropped.
pub struct Sim {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    _runtime: std::thread::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// State shared by the servers, the controllers and the stand-in tools.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub scale: f64,
    pub timings: Timings,
    pub provider: &'static str,
    pub upstream: PathBuf,
    pub helm: helm::Helm,
    pub api_port: u16,
    pub mirror_port: u16,
    pub ingress_port: u16,
    pub ctl_port: u16,
    /// The forward proxy into the pods a real Prometheus scrapes through
    /// ([`services::serve_scrape_proxy`]).
    pub scrape_proxy_port: u16,
    /// `true` while the API server answers.
    pub api_up: tokio::sync::watch::Sender<bool>,
}

/// A kind/k3d cluster the stand-ins created.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub name: String,
    pub nodes: Vec<String>,
    pub host_port: Option<u16>,
    /// The node port the host port maps to (kind `containerPort`, k3d `-p …:H:NP@server:0`).
    pub node_port: Option<u16>,
}

/// A helm release the stand-in installed.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub version: String,
    /// helm's revision: 1 at install, one more per upgrade.
    pub revision: u32,
    /// What the release's manifest holds, as `helm uninstall` deletes it: (group, plural,
    /// namespace, name) of each object.
    pub objects: Vec<Key>,
}

/// Everything that changes.
pub(crate) struct State {
    pub store: store::Store,
    pub faults: Faults,
    pub cluster: Option<Cluster>,
    pub releases: BTreeMap<(String, String), Release>,
    /// Objects the run created or applied (field manager `meshcheck`).
    pub applied: BTreeSet<Key>,
    /// Objects that were there before the run and that it deleted.
    pub removed: BTreeSet<Key>,
    pub applies: usize,
    /// Watches asked for from a resourceVersion (for [`Faults::watches_expire`]).
    pub watch_requests: u64,
    /// Every stand-in call and notable API call, in order.
    pub calls: Vec<String>,
    /// Trace id (hex) → spans recorded by the gateway and the apps.
    pub traces: BTreeMap<String, Vec<services::Span>>,
    /// (source workload, destination workload) → connections opened, book-info traffic.
    pub connections: BTreeMap<(String, String), u64>,
    /// Per-pod simulation bookkeeping (start times, probe failures), by pod name.
    pub pods: BTreeMap<String, controllers::PodSim>,
    /// Exec and port-forward calls made while some rollout was still in progress.
    pub during_rollout: Vec<String>,
    /// Pod IPs handed out so far (IPAM).
    pub ips: u32,
    /// The policies and routes istiod has pushed to ztunnel and waypoints, and what it has yet to push.
    pub xds: xds::Xds,
    /// Keycloak's login flows and Kiali's sessions.
    pub oidc: keycloak::Oidc,
    /// Requests the simulated Services have balanced so far: the seed of the next choice of backend.
    pub draws: u64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A duration of cluster time in real time.
    pub fn sim(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale)
    }

    pub fn note(&self, call: String) {
        self.lock().calls.push(call);
    }
}

fn bind() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    l.set_nonblocking(true).expect("nonblocking");
    l
}

impl Sim {
    /// Starts the servers and controllers with the rehearsals' timings; for `existing`, with a
    /// cluster already set up.
    pub fn start(opts: SimOptions) -> Sim {
        Sim::start_timed(opts, Timings::rehearsal())
    }

    /// [`Sim::start`] with durations of its own.
    pub fn start_timed(opts: SimOptions, timings: Timings) -> Sim {
        let dir = tempfile::tempdir().expect("temp dir");
        let (api, mirror, ingress, ctl, scrape_proxy) = (bind(), bind(), bind(), bind(), bind());
        let port = |l: &std::net::TcpListener| l.local_addr().expect("bound").port();
        let ports = [port(&api), port(&mirror), port(&ingress), port(&ctl), port(&scrape_proxy)];
        let shared = shared(&opts, timings, ports);
        tools::write_stand_ins(dir.path(), shared.ctl_port);
        if opts.provider == "existing" {
            bootstrap::existing_cluster(&shared, dir.path()).expect("the existing cluster installs");
            std::fs::write(dir.path().join("kubeconfig"), tools::kubeconfig(&shared, "existing"))
                .expect("write kubeconfig");
        }
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            rt.block_on(async move {
                let listen = |l: std::net::TcpListener| tokio::net::TcpListener::from_std(l).expect("tokio listener");
                tokio::spawn(apiserver::serve(listen(api), s.clone()));
                tokio::spawn(services::serve_mirror(listen(mirror), s.clone()));
                tokio::spawn(services::serve_gateway(listen(ingress), s.clone()));
                tokio::spawn(tools::serve(listen(ctl), s.clone()));
                tokio::spawn(services::serve_scrape_proxy(listen(scrape_proxy), s.clone()));
                tokio::spawn(controllers::run(s.clone()));
                let _ = stopped.await;
            });
            rt.shutdown_background();
        });
        Sim { shared, dir, _runtime: runtime, stop: Some(stop) }
    }

    /// The kubeconfig of an `existing` cluster.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Base URL of the API server (plain HTTP), for tests that ask it directly.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.api_port)
    }

    /// The configuration under which a real Prometheus scrapes what the simulated one does, through
    /// the forward proxy into the pods ([`prometheus::real_config`]): of the first Ready Prometheus
    /// pod, or `None` while there is none.
    pub fn real_prometheus_config(&self) -> Option<Value> {
        let st = self.shared.lock();
        let pod = st
            .store
            .iter("", "pods", None)
            .find(|p| mesh::program(p) == mesh::Program::Prometheus && mesh::pod_ready(p))?;
        let proxy = format!("http://127.0.0.1:{}", self.shared.scrape_proxy_port);
        Some(prometheus::real_config(&st, pod, &proxy))
    }

    /// The folder holding the stand-in tools; put it first on PATH.
    pub fn tools_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The host port the ingress gateway answers on.
    pub fn ingress_port(&self) -> u16 {
        self.shared.ingress_port
    }

    /// Base URL of the mirror serving upstream manifests and registry indexes: map
    /// `https://raw.githubusercontent.com/` to `{mirror}/raw.githubusercontent.com/` and so on.
    pub fn mirror(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.mirror_port)
    }

    /// Every stand-in tool call (`helm upgrade --install …`) and notable API call, in order.
    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }

    /// Exec, port-forward and `helm upgrade` calls the run made while a rollout was still in
    /// progress (old pods beside new ones that are not Ready yet).
    pub fn calls_during_rollout(&self) -> Vec<String> {
        self.shared.lock().during_rollout.clone()
    }

    /// Every value a Secret ever held in this cluster, decoded: what a run folder must never
    /// contain.
    pub fn secret_values(&self) -> BTreeSet<String> {
        use base64::Engine as _;
        let st = self.shared.lock();
        st.store
            .history
            .iter()
            .filter(|c| c.group.is_empty() && c.plural == "secrets")
            .flat_map(|c| c.object["data"].as_object().cloned().unwrap_or_default())
            .filter_map(|(_, v)| base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok())
            .filter_map(|b| String::from_utf8(b).ok())
            .collect()
    }

    /// What the run left behind, once namespaces being deleted are gone (waits up to 5 s).
    pub fn leftovers(&self) -> Leftovers {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = {
                let st = self.shared.lock();
                // The keys of `keys` whose object is (`present`) or is not in the store now.
                let named = |keys: &BTreeSet<Key>, present: bool| -> Vec<String> {
                    keys.iter()
                        .filter(|(g, p, ns, n)| st.store.get(g, p, ns, n).is_some() == present)
                        .map(|(g, p, ns, n)| format!("{p}.{g}/{ns}/{n}").replace("./", "/"))
                        .collect()
                };
                Leftovers {
                    cluster: st.cluster.as_ref().map(|c| c.name.clone()),
                    applied: named(&st.applied, true),
                    removed: named(&st.removed, false),
                }
            };
            if left == Leftovers::default() || std::time::Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every object but events and those a controller made for an owner (pods, ReplicaSets,
    /// ControllerRevisions: their owners stand for them), with its uid: what "left exactly as
    /// found" compares.
    pub fn objects(&self) -> BTreeMap<Key, String> {
        let st = self.shared.lock();
        st.store
            .keys()
            .into_iter()
            .filter(|(g, p, _, _)| !(g.is_empty() && p == "events"))
            .filter_map(|k| {
                let obj = st.store.get(&k.0, &k.1, &k.2, &k.3)?;
                if obj.pointer("/metadata/ownerReferences").is_some() {
                    return None;
                }
                Some((k, obj.pointer("/metadata/uid")?.as_str()?.to_string()))
            })
            .collect()
    }

    /// Names of the namespaces that exist, once none is Terminating (or after 5 s).
    pub fn namespaces(&self) -> Vec<String> {
        // Deleted namespaces stay Terminating while their pods stop: wait for that (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let namespaces = self.shared.lock().store.list("", "namespaces", None);
            let terminating =
                namespaces.iter().any(|n| n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating"));
            if !terminating || std::time::Instant::now() > deadline {
                return namespaces
                    .iter()
                    .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str).map(String::from))
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kind`, `k3d` or `existing`.
    pub fn provider(&self) -> &'static str {
        self.shared.provider
    }

    /// A shipped scenario's YAML pointed at this simulation: its kubeconfig (an existing cluster)
    /// or ingress port, every upstream host it reaches mirrored here, and the collectors' settle
    /// waits (`timeouts.settle_scale`) scaled as the simulation's time is.
    pub fn point_scenario(&self, text: &str) -> String {
        let port = self.ingress_port();
        let mut text = text
            .replace("kubeconfig: ~/.kube/config", &format!("kubeconfig: {}", self.kubeconfig().display()))
            .replace("url: http://127.0.0.1:8080", &format!("url: http://127.0.0.1:{port}"))
            .replace("host_port: 8080", &format!("host_port: {port}"));
        if !text.contains("host_port:") {
            text = match text.find("\ningress:\n") {
                Some(i) => format!("{}  host_port: {port}\n{}", &text[..i + 10], &text[i + 10..]),
                None => format!("{text}ingress:\n  host_port: {port}\n"),
            };
        }
        let settle = format!("  settle_scale: {}\n", self.shared.scale);
        text = match text.find("timeouts:\n") {
            Some(i) => format!("{}{settle}{}", &text[..i + 10], &text[i + 10..]),
            None => format!("{text}timeouts:\n{settle}"),
        };
        let m = self.mirror();
        text.push_str("mirrors:\n");
        for host in [
            "raw.githubusercontent.com",
            "github.com",
            "quay.io",
            "registry.istio.io",
            "registry-1.docker.io",
            "registry.k8s.io",
            "ghcr.io",
            "helm.cilium.io",
            "istio-release.storage.googleapis.com",
            "prometheus-community.github.io",
            "grafana-community.github.io",
            "kiali.org",
        ] {
            text.push_str(&format!("  https://{host}/: {m}/{host}/\n"));
        }
        text
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.shared.api_up.send(false);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The state of a simulation that has nothing yet, its servers on `ports` (API server, mirror,
/// ingress, stand-in tools, scrape proxy; 0 where none listens).
fn shared(opts: &SimOptions, timings: Timings, ports: [u16; 5]) -> Arc<Shared> {
    let [api_port, mirror_port, ingress_port, ctl_port, scrape_proxy_port] = ports;
    Arc::new(Shared {
        state: Mutex::new(State {
            store: store::Store::new(),
            faults: opts.faults.clone(),
            cluster: None,
            releases: BTreeMap::new(),
            applied: BTreeSet::new(),
            removed: BTreeSet::new(),
            applies: 0,
            watch_requests: 0,
            calls: Vec::new(),
            traces: BTreeMap::new(),
            connections: BTreeMap::new(),
            pods: BTreeMap::new(),
            during_rollout: Vec::new(),
            ips: 0,
            xds: xds::Xds::default(),
            oidc: keycloak::Oidc::default(),
            draws: 0,
        }),
        scale: opts.scale,
        timings,
        provider: opts.provider,
        upstream: opts.upstream.clone(),
        helm: opts.helm.clone(),
        api_port,
        mirror_port,
        ingress_port,
        ctl_port,
        scrape_proxy_port,
        api_up: tokio::sync::watch::channel(true).0,
    })
}
