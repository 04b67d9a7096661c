//! What runs in the pods of the real control plane: the simulation's programs
//! ([`crate::sim::Mirrored`]) on a copy of what kube-apiserver holds, answering the kubelet's
//! streaming calls that `kubelet-streams` passes on from the API server (start.sh's
//! `MESHCHECK_KUBELET_SOCKET`). The copy follows the API server type by type, by watches, as an
//! informer's cache does. istiod's injection webhook is answered too: the API server calls it over
//! TLS at the istiod Service's address, and istiod's webhook patcher ([`patch_ca_bundles`]) writes
//! the `caBundle` that call trusts.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, TypeMeta},
    discovery::{Discovery, verbs},
};

use crate::sim::{Faults, mirrored::Mirrored};

/// How often discovery is asked for types CRDs added since.
const REFRESH: Duration = Duration::from_millis(500);

/// The API groups whose objects the programs read: pods, Services, ConfigMaps and namespaces;
/// workloads; NetworkPolicies (the kubelet's probes under default-deny); Istio's, Cilium's, Gateway API's and the Prometheus Operator's resources.
const GROUPS: &[&str] = &[
    "",
    "apps",
    "networking.k8s.io",
    "security.istio.io",
    "networking.istio.io",
    "telemetry.istio.io",
    "gateway.networking.k8s.io",
    "cilium.io",
    "monitoring.coreos.com",
    "kiali.io",
];

/// Types no program reads that change all the time.
const SKIPPED: &[&str] = &["events", "leases", "componentstatuses"];

/// The programs, listening on their socket until dropped.
pub(super) struct Programs {
    dir: tempfile::TempDir,
    /// istiod's self-signed root, which its webhook patcher writes into the `caBundle`.
    istiod_root: Vec<u8>,
    mirrored: Arc<Mirrored>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ingress: std::net::SocketAddr,
    /// The mirror of upstream manifests and chart repositories ([`Mirrored::serve_mirror`]).
    mirror: std::net::SocketAddr,
}

impl Programs {
    /// Listens on a fresh socket (before the control plane starts: its kubelet-streams dials it
    /// on every call), or `None` without the upstream data the programs answer from.
    pub(super) fn listen() -> Option<Programs> {
        let options = crate::common::sim_options("existing", 1.0, Faults::default())?;
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join("programs.sock")).unwrap();
        let (istiod_root, istiod_tls) = istiod_certificates(dir.path());
        let mirrored = Arc::new(Mirrored::new(options, istiod_tls));
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let at = listener.local_addr().unwrap();
            (tokio::net::TcpListener::from_std(listener).unwrap(), at)
        };
        let ((gateway, ingress), (mirror, mirror_at)) = (bind(), bind());
        let tasks = vec![
            tokio::spawn(mirrored.clone().serve(listener)),
            tokio::spawn(mirrored.clone().serve_gateway(gateway)),
            tokio::spawn(mirrored.clone().serve_mirror(mirror)),
        ];
        Some(Programs { dir, istiod_root, mirrored, tasks, ingress, mirror: mirror_at })
    }

    /// Where the ingress gateway answers on this side, as a LoadBalancer's address would.
    pub(super) fn ingress_url(&self) -> String {
        format!("http://{}", self.ingress)
    }

    /// The ingress gateway's address on this side.
    pub(super) fn ingress(&self) -> std::net::SocketAddr {
        self.ingress
    }

    /// The mirror's address: `http://{mirror}/<host>/<path>` serves `https://<host>/<path>`.
    pub(super) fn mirror_at(&self) -> std::net::SocketAddr {
        self.mirror
    }

    /// The programs themselves.
    pub(super) fn mirrored(&self) -> &Mirrored {
        &self.mirrored
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.path().join("programs.sock")
    }

    /// Keeps the copy following the API server `client` talks to.
    pub(super) fn mirror(&mut self, client: Client) {
        self.tasks.push(tokio::spawn(follow(client, self.mirrored.clone())));
    }

    /// Starts the kubelet's probe loop on the API server `client` talks to ([`probe_pods`]).
    pub(super) fn probe(&mut self, client: Client) {
        self.tasks.push(tokio::spawn(probe_pods(client, self.mirrored.clone())));
    }

    /// Starts istiod's webhook patcher on the API server `client` talks to ([`patch_ca_bundles`]):
    /// apart from [`Programs::mirror`], so that a test can see the call refused before it.
    pub(super) fn patch_webhooks(&mut self, client: Client) {
        self.tasks.push(tokio::spawn(patch_ca_bundles(client, self.istiod_root.clone())));
    }
}

/// istiod's certificates as it makes them with no CA plugged in: a self-signed root, and a serving
/// certificate it signs for its Service's DNS names (istio 1.30.3 pilot/pkg/bootstrap
/// certcontroller.go `initDNSCertsIstiod`, `s.CA.GenKeyCert(s.dnsNames, ...)`; server.go
/// `getDNSNames`: `istiod.istio-system.svc`, `istiod-remote.istio-system.svc`,
/// `istio-pilot.istio-system.svc`). Made with openssl, as start.sh makes the control plane's;
/// the root's PEM and the webhook server's TLS.
fn istiod_certificates(dir: &std::path::Path) -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output();
        let out = out.unwrap_or_else(|e| panic!("openssl (the control plane's tier needs it): {e}"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"];
    openssl(
        &[&["req", "-x509"][..], &ec, &["-keyout", "root.key", "-out", "root.pem", "-subj", "/O=cluster.local"]]
            .concat(),
    );
    let sans = "subjectAltName=DNS:istiod.istio-system.svc,DNS:istiod-remote.istio-system.svc,DNS:istio-pilot.istio-system.svc";
    openssl(
        &[
            &["req", "-x509", "-CA", "root.pem", "-CAkey", "root.key"][..],
            &ec,
            &["-keyout", "istiod.key", "-out", "istiod.pem", "-subj", "/O=cluster.local"],
            &[
                "-addext",
                sans,
                "-addext",
                "extendedKeyUsage=serverAuth",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ],
        ]
        .concat(),
    );
    let chain: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(dir.join("istiod.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("istiod.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (std::fs::read(dir.join("root.pem")).unwrap(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// istiod's webhook patcher (istio 1.30.3 pkg/webhooks/webhookpatch.go
/// `patchMutatingWebhookConfig`): in every MutatingWebhookConfiguration of its revision (label
/// `istio.io/rev`, here `default`), each webhook whose name ends in `sidecar-injector.istio.io`
/// (pilot/pkg/bootstrap/sidecarinjector.go `webhookName`) gets istiod's root as its `caBundle`;
/// the configuration is updated when one differed, again whenever it changes (its informer).
/// The validation webhook's `caBundle` is another controller's, not simulated: it stays empty and,
/// its failurePolicy `Ignore`, the API server goes on without it.
async fn patch_ca_bundles(client: Client, root: Vec<u8>) {
    use futures::StreamExt;
    use k8s_openapi::{ByteString, api::admissionregistration::v1::MutatingWebhookConfiguration};
    use kube::runtime::{WatchStreamExt, watcher};
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let config = watcher::Config::default().labels("istio.io/rev=default");
    let mut changed = watcher::watcher(api.clone(), config).default_backoff().applied_objects().boxed();
    while let Some(next) = changed.next().await {
        let Ok(mut mwc) = next else { continue };
        let mut updated = false;
        for webhook in mwc.webhooks.iter_mut().flatten() {
            if webhook.name.ends_with("sidecar-injector.istio.io")
                && webhook.client_config.ca_bundle.as_ref().map(|b| &b.0) != Some(&root)
            {
                webhook.client_config.ca_bundle = Some(ByteString(root.clone()));
                updated = true;
            }
        }
        let name = mwc.metadata.name.clone().unwrap_or_default();
        if updated && let Err(e) = api.replace(&name, &Default::default(), &mwc).await {
            tracing::warn!("istiod's webhook patcher: {name}: {e}");
        }
    }
}

impl Drop for Programs {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watches every listable, watchable type of [`GROUPS`] that discovery shows, and the types
/// CRDs add later (discovery again every [`REFRESH`]): each type's copy follows its watch, as an
/// informer's cache does, so the programs see a change within milliseconds of the API server.
async fn follow(client: Client, mirrored: Arc<Mirrored>) {
    let mut watched = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if let Ok(discovery) = Discovery::new(client.clone()).filter(GROUPS).run_aggregated().await {
            for group in discovery.groups() {
                for (resource, capabilities) in group.recommended_resources() {
                    let listed =
                        capabilities.supports_operation(verbs::LIST) && capabilities.supports_operation(verbs::WATCH);
                    if !listed
                        || SKIPPED.contains(&resource.plural.as_str())
                        || !watched.insert(resource.plural.clone() + "." + &resource.group)
                    {
                        continue;
                    }
                    tasks.spawn(follow_type(client.clone(), mirrored.clone(), resource));
                }
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// One type's copy, kept by its watch (kube-runtime's watcher: list, then watch, relisting after
/// a 410 as an informer does).
async fn follow_type(client: Client, mirrored: Arc<Mirrored>, resource: ApiResource) {
    use futures::StreamExt;
    use kube::runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    // A watch's objects carry no apiVersion and kind when they come in a list; a get's do, and
    // the programs read them.
    let types = TypeMeta { api_version: resource.api_version.clone(), kind: resource.kind.clone() };
    let key = |o: &DynamicObject| {
        (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
    };
    let mut current = BTreeMap::new();
    let mut listing = BTreeMap::new();
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(mut o)) => {
                o.types = Some(types.clone());
                current.insert(key(&o), o);
            }
            Ok(Event::Delete(o)) => {
                current.remove(&key(&o));
            }
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(mut o)) => {
                o.types = Some(types.clone());
                listing.insert(key(&o), o);
                continue;
            }
            Ok(Event::InitDone) => current = std::mem::take(&mut listing),
            Err(_) => continue,
        }
        let items = current.values().map(|o| serde_json::to_value(o).unwrap()).collect();
        mirrored.replace(&resource.group, &resource.plural, items);
    }
}

/// The kubelet's probes, for the pods kwok runs: kwok's stages make a pod Ready once and never
/// probe it. Every second, each Running pod with a readiness or liveness probe is judged by the
/// Rust-only tier's kubelet rule on the copy ([`Mirrored::probes`]: from istio-cni's SNAT address
/// through Cilium's policies when the pod is captured); in real time, as the kubelet does
/// (kubernetes v1.35 pkg/kubelet/prober/worker.go: a result flips after `failureThreshold`
/// consecutive failures one `periodSeconds` apart). A readiness probe failing that long makes the
/// pod and its containers not Ready and records a Warning `Unhealthy` event each period; a
/// liveness probe restarts the container (`restartCount` + 1, a `Killing` event) and counts
/// again. Reaching again makes the pod Ready.
async fn probe_pods(client: Client, mirrored: Arc<Mirrored>) {
    use k8s_openapi::api::core::v1::{Event, Pod};
    use std::time::Instant;
    /// What the kubelet remembers of a pod's probes.
    #[derive(Default)]
    struct Worker {
        failing_since: Option<Instant>,
        unhealthy_at: Option<Instant>,
        restarts: i64,
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(list) = pods.list(&Default::default()).await else { continue };
        for pod in list.items {
            let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else { continue };
            let status = pod.status.clone().unwrap_or_default();
            if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(probes) = mirrored.probes(&ns, &name) else { continue };
            let worker = workers.entry(pod.metadata.uid.clone().unwrap_or_default()).or_default();
            let mut ready = true;
            let mut events = Vec::new();
            if probes.reach {
                worker.failing_since = None;
            } else {
                let failing = worker.failing_since.get_or_insert_with(Instant::now).elapsed();
                let ip = status.pod_ip.clone().unwrap_or_default();
                if let Some((period, threshold)) = probes.readiness
                    && failing >= Duration::from_secs(period * threshold)
                {
                    ready = false;
                    if worker.unhealthy_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(period)) {
                        worker.unhealthy_at = Some(Instant::now());
                        events.push(("Warning", "Unhealthy", format!("Readiness probe failed: Get \"http://{ip}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")));
                    }
                }
                if let Some((period, threshold)) = probes.liveness
                    && failing >= Duration::from_secs(period * threshold)
                {
                    worker.restarts += 1;
                    worker.failing_since = Some(Instant::now());
                    events.push(("Warning", "Unhealthy", format!("Liveness probe failed: Get \"http://{ip}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")));
                    events.push((
                        "Normal",
                        "Killing",
                        "Container failed liveness probe, will be restarted".to_string(),
                    ));
                }
            }
            let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
            for (type_, reason, message) in events {
                let event: Event = serde_json::from_value(serde_json::json!({
                    "metadata": {"generateName": format!("{name}."), "namespace": ns},
                    "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": pod.metadata.uid},
                    "type": type_, "reason": reason, "message": message, "count": 1,
                    "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet"},
                }))
                .unwrap();
                let _ = Api::<Event>::namespaced(client.clone(), &ns).create(&Default::default(), &event).await;
            }
            let flag = if ready { "True" } else { "False" };
            let mut conditions = status.conditions.clone().unwrap_or_default();
            let mut changed = false;
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady") {
                if c.status != flag {
                    c.status = flag.to_string();
                    c.last_transition_time = Some(now.clone());
                    changed = true;
                }
            }
            let mut containers = status.container_statuses.clone().unwrap_or_default();
            for c in &mut containers {
                changed |= c.ready != ready || i64::from(c.restart_count) != worker.restarts;
                c.ready = ready;
                c.restart_count = i32::try_from(worker.restarts).unwrap_or(i32::MAX);
            }
            if changed {
                let patch = serde_json::json!({"status": {"conditions": conditions, "containerStatuses": containers}});
                let _ = Api::<Pod>::namespaced(client.clone(), &ns)
                    .patch_status(&name, &Default::default(), &kube::api::Patch::Merge(patch))
                    .await;
            }
        }
    }
}

/// Why the tier has kubelet-streams: the same failing command through the API server's
/// `pods/exec`, once answered by kwok's own kubelet API (a `ClusterExec` running it locally) and
/// once by kubelet-streams (the simulation's curl). kwok's status has no exit code (only the
/// words of Go's `exit status 7`), where the kubelet's has the `ExitCode` cause meshcheck reads.
#[tokio::test]
async fn kwoks_own_exec_loses_the_exit_code_a_kubelet_sends() {
    let fails = ["sh", "-c", "exit 7"];
    let config = tempfile::tempdir().unwrap();
    let cluster_exec = "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata:\n  name: local\n\
                        spec:\n  selector:\n    matchNamespaces: [default]\n  execs:\n  - local: {}\n";
    std::fs::write(config.path().join("exec.yaml"), cluster_exec).unwrap();
    let kwok_config = config.path().join("exec.yaml").display().to_string();
    let Some(cp) = super::ControlPlane::start(&[("MESHCHECK_KWOK_CONFIG", &kwok_config)]) else { return };
    let (live, _dir) = cp.live().await;
    pod(&live, "default").await;
    let kwok = live.exec("default", "probe", &fails).await.unwrap();
    assert_eq!(kwok.exit_code, None, "kwok v0.8.0 sends no ExitCode cause: {kwok:?}");
    assert!(kwok.status.contains("Internal error") && kwok.status.contains("exit status 7"), "{kwok:?}");
    drop(cp);

    let Some(mut programs) = Programs::listen() else { return };
    let socket = programs.socket().display().to_string();
    let Some(cp) = super::ControlPlane::start(&[("MESHCHECK_KUBELET_SOCKET", &socket)]) else { return };
    programs.mirror(cp.client(None).await);
    let (live, _dir) = cp.live().await;
    pod(&live, "default").await;
    // The simulation's client image has curl only: a connection to a closed port is refused, 7.
    let curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:9/"];
    let kubelet = live.exec("default", "probe", &curl).await.unwrap();
    assert_eq!(kubelet.exit_code, Some(7), "kubelet-streams sends the ExitCode cause: {kubelet:?}");
    assert!(kubelet.status.contains("command terminated with non-zero exit code"), "{kubelet:?}");
}

/// A curl client pod `probe` in `ns`, once Running.
async fn pod(live: &meshcheck::cluster::live::Live, ns: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "curl", "image": "curlimages/curl:8.17.0"}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let since = std::time::Instant::now();
    while pods.get("probe").await.unwrap().status.and_then(|s| s.phase).as_deref() != Some("Running") {
        assert!(since.elapsed() < Duration::from_secs(30), "the pod never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// istiod's injection webhook on the real control plane: the API server calls it for a pod its
/// selectors match (`object.sidecar-injector.istio.io`: label `sidecar.istio.io/inject: "true"`
/// in a namespace without injection labels), at the istiod Service's address over TLS, which it
/// verifies against the webhook's `caBundle`. Until istiod's patcher has written its root there,
/// the create is refused (failurePolicy Fail) with the verification error: the call is made and
/// its certificate checked. After, the pod gets the proxy image the injector's values name, and a
/// pod no webhook selects keeps `auto`.
#[tokio::test]
async fn istiods_injection_webhook_is_called_over_tls_and_trusted_once_its_root_is_patched_in() {
    use k8s_openapi::api::core::v1::Pod;
    let Some((_, releases)) = crate::charts::rendered("ambient-kind") else { return };
    let Some(mut programs) = Programs::listen() else { return };
    let socket = programs.socket().display().to_string();
    let Some(cp) = super::ControlPlane::start(&[("MESHCHECK_KUBELET_SOCKET", &socket)]) else { return };
    programs.mirror(cp.client(None).await);
    let (live, _dir) = cp.live().await;
    super::run::install(&live, &["istio-base", "istiod"]).await;

    let istiod = releases.values().find(|r| r.name == "istiod").unwrap();
    let config =
        istiod.objects.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "istio-sidecar-injector");
    let values: serde_json::Value = serde_json::from_str(config.unwrap()["data"]["values"].as_str().unwrap()).unwrap();
    let g = &values["global"];
    // `<hub>/<proxy.image>:<tag>-<variant>` (istio-discovery files/gateway-injection-template.yaml;
    // `global.variant` is `distroless` under the ambient profile, files/profile-ambient.yaml).
    let proxy = format!(
        "{}/{}:{}-{}",
        g["hub"].as_str().unwrap(),
        g["proxy"]["image"].as_str().unwrap(),
        g["tag"].as_str().unwrap(),
        g["variant"].as_str().unwrap()
    );

    let pods: Api<Pod> = Api::namespaced(live.client.clone(), "default");
    let pod = |labels: serde_json::Value| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gateway", "labels": labels},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto"}]}
        }))
        .unwrap()
    };
    let selected = pod(serde_json::json!({"sidecar.istio.io/inject": "true"}));
    let dry_run = kube::api::PostParams { dry_run: true, ..Default::default() };
    let image = |p: Pod| p.spec.unwrap().containers[0].image.clone().unwrap_or_default();

    // Until the istiod pod serves (Ready in the copy, kubelet-streams on 443) the dial is refused;
    // then TLS fails on the root no one trusts yet.
    let untrusted = "tls: failed to verify certificate: x509: certificate signed by unknown authority";
    let since = std::time::Instant::now();
    let refusal = loop {
        match pods.create(&dry_run, &selected).await {
            Err(e) if e.to_string().contains(untrusted) => break e.to_string(),
            outcome => {
                let seen = outcome.map(image);
                assert!(since.elapsed() < Duration::from_secs(60), "never refused for its certificate: {seen:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(refusal.contains("failed calling webhook \"object.sidecar-injector.istio.io\""), "{refusal}");
    assert!(refusal.contains("https://istiod.istio-system.svc:443/inject"), "{refusal}");

    programs.patch_webhooks(cp.client(None).await);
    let since = std::time::Instant::now();
    loop {
        let outcome = pods.create(&dry_run, &selected).await.map(image);
        if outcome.as_deref().is_ok_and(|i| i == proxy) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "never injected with {proxy}: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let other = pods.create(&dry_run, &pod(serde_json::json!({}))).await.map(image);
    assert_eq!(other.unwrap(), "auto", "a pod no webhook selects is not injected");
}
