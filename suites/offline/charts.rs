//! The real charts, rendered by a real helm with meshcheck's values (issue 21): every name, label,
//! port and selector the harness relies on (its waits, its collectors, the monitors it applies) is
//! held against the objects the pinned charts render, not against what meshcheck expects them to be.
//!
//! helm is the pinned release `.ci/build-go-tools helm` builds from its Go module (or
//! `$MESHCHECK_HELM`); the charts are the pinned ones in `../shared/upstream/charts/` (PROVENANCE.md
//! there), or `$MESHCHECK_CHARTS` where `suites/fetch-charts` put them (a clone without ../shared). Each helm command of the plan is rendered as `helm template` with the plan's own values
//! files, written by the plan's own steps, so a value the plan changes is a value this test sees.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use meshcheck::{
    plan::{self, CommandSpec, Condition, RunContext, Source, Step},
    scenario::Scenario,
};
use serde_json::Value;

use crate::{common::root, sim::helm::Helm};

/// One helm command of the plan, rendered.
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub objects: Vec<Value>,
}

/// Writes what the plan's own steps write (values files, the gateway's ports from bookinfo's
/// Gateway) into the run folder, so the helm commands find their values as in a run.
fn write_files(plan: &plan::Plan, upstream: &Path) {
    for step in plan.phases.iter().flat_map(|p| &p.steps).map(|s| &s.step) {
        match step {
            Step::WriteFile { path, content, .. } => {
                std::fs::create_dir_all(Path::new(path).parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            Step::GatewayPorts { gateway, node_port, path } => {
                let objects = match gateway {
                    Source::Url { url } => {
                        // …/istio/istio/<release>/samples/bookinfo/networking/bookinfo-gateway.yaml
                        let release = url.split("/istio/istio/").nth(1).and_then(|r| r.split('/').next()).unwrap();
                        let file = upstream.join(format!("bookinfo/istio-{release}-networking-bookinfo-gateway.yaml"));
                        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                        meshcheck::plan::fixtures::parse_manifests(&text, url).unwrap()
                    }
                    Source::Fixture { path, .. } => {
                        meshcheck::plan::fixtures::manifest(path.trim_start_matches("manifests/")).unwrap()
                    }
                };
                let ports = meshcheck::plan::providers::gateway_server_ports(&objects);
                std::fs::write(path, meshcheck::plan::providers::gateway_ports(*node_port, &ports)).unwrap();
            }
            _ => {}
        }
    }
}

/// `helm template` of one helm command of the plan, with its release, chart, namespace and values.
fn render(helm: &Helm, command: &CommandSpec) -> Release {
    // upgrade [--install] RELEASE CHART --repo URL --version V --namespace NS --values F…
    let positional: Vec<&String> = command.args.iter().skip(1).filter(|a| *a != "--install").take(2).collect();
    let (name, chart) = (positional[0].clone(), positional[1].as_str());
    let flag = |f: &str| command.flag(f).unwrap_or_else(|| panic!("{f} missing: {}", command.display())).to_string();
    let (repo, version, namespace) = (flag("--repo"), flag("--version"), flag("--namespace"));
    let chart = helm.chart(&repo, chart, &version).unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<PathBuf> =
        command.args.windows(2).filter(|w| w[0] == "--values").map(|w| PathBuf::from(&w[1])).collect();
    let objects =
        helm.template(&chart, &name, &namespace, &values, &[]).unwrap_or_else(|e| panic!("helm template {name}: {e}"));
    Release { name, namespace, objects }
}

/// Every helm command of a shipped scenario's plan, rendered, by plan step id.
pub fn rendered(scenario: &str) -> Option<(plan::Plan, BTreeMap<usize, Release>)> {
    let helm = crate::common::helm()?;
    let upstream = crate::common::upstream()?;
    let work = tempfile::tempdir().unwrap();
    let s = Scenario::from_path(&root().join(format!("scenarios/{scenario}.yaml"))).unwrap();
    let ctx = RunContext {
        run_id: "20261203-100000-abcdef".into(),
        run_dir: work.path().join("run").display().to_string(),
        private_dir: work.path().join("private").display().to_string(),
    };
    let plan = plan::build(&s, &ctx);
    write_files(&plan, &upstream);
    let mut releases = BTreeMap::new();
    for step in plan.phases.iter().flat_map(|p| &p.steps) {
        if let Step::Command { command, .. } = &step.step
            && command.program == "helm"
        {
            releases.insert(step.id.0, render(&helm, command));
        }
    }
    Some((plan, releases))
}

fn kind_of(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// An object's namespace: its own, else the release's (helm installs namespaced objects there).
fn namespace_of<'a>(o: &'a Value, release: &'a Release) -> &'a str {
    o["metadata"]["namespace"].as_str().unwrap_or(&release.namespace)
}

/// Whether `labels` has every pair of `match_labels` (a LabelSelector's `matchLabels`).
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match_labels.as_object().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The workloads operators create from a custom resource the charts render, and that resource:
/// prometheus-operator v0.85.0 names a Prometheus's StatefulSet `prometheus-<name>`
/// (pkg/prometheus/server/statefulset.go `prefixedName`); kiali-operator v2.29.0 names Kiali's
/// Deployment after the CR's `deployment.instance_name`, default `kiali` (kiali.io_kialis.yaml).
fn made_by_an_operator(kind: &str, name: &str) -> Option<(&'static str, String)> {
    match (kind, name) {
        ("StatefulSet", n) if n.starts_with("prometheus-") => {
            Some(("Prometheus", n["prometheus-".len()..].to_string()))
        }
        ("Deployment", "kiali") => Some(("Kiali", "kiali".into())),
        _ => None,
    }
}

/// Every rollout wait that follows a helm command awaits an object that command's chart renders,
/// or one an operator makes from a resource it renders: the wait would otherwise run into its
/// deadline on a real cluster.
#[test]
fn every_rollout_wait_awaits_what_its_chart_renders() {
    for scenario in ["ambient-kind", "ambient-k3d", "upgrade-gate"] {
        let Some((plan, releases)) = rendered(scenario) else { return };
        let mut checked = 0;
        for step in plan.phases.iter().flat_map(|p| &p.steps) {
            let Step::Wait { kind, namespace, name, condition, .. } = &step.step else { continue };
            if matches!(condition, Condition::NodesReady { .. } | Condition::CrdEstablished) {
                continue;
            }
            let Some(release) = step.needs.iter().find_map(|n| releases.get(&n.step.0)) else { continue };
            let ns = namespace.as_deref().unwrap_or("default");
            let (want_kind, want_name) = match made_by_an_operator(kind, name) {
                Some((cr, cr_name)) => (cr.to_string(), cr_name),
                None => (kind.clone(), name.clone()),
            };
            let found = releases.values().any(|r| {
                r.objects.iter().any(|o| kind_of(o) == want_kind && name_of(o) == want_name && namespace_of(o, r) == ns)
            });
            assert!(found, "{scenario}: `{kind} {ns}/{name}` (after helm {}) is rendered by no chart", release.name);
            checked += 1;
        }
        assert!(checked >= 8, "{scenario}: only {checked} rollout waits checked");
    }
}

/// The ServiceMonitor and PodMonitor meshcheck applies select what the charts render, by
/// prometheus-operator v0.85.0's rules: `namespaceSelector.matchNames`, `selector.matchLabels`
/// against a Service's labels (ServiceMonitor) or a pod template's (PodMonitor), and `port` as the
/// name of a Service port or a container port (pkg/prometheus/promcfg.go keeps targets by
/// `__meta_kubernetes_endpoint_port_name` / `__meta_kubernetes_pod_container_port_name`).
#[test]
fn the_monitors_select_a_service_and_pods_the_charts_render_with_the_named_port() {
    let Some((_, releases)) = rendered("ambient-kind") else { return };
    let monitors = meshcheck::plan::fixtures::manifest("istio-monitors.yaml").unwrap();
    assert_eq!(monitors.len(), 2);
    for m in monitors.iter().map(|m| serde_json::to_value(m).unwrap()) {
        let spec = &m["spec"];
        let namespaces: Vec<&str> =
            spec["namespaceSelector"]["matchNames"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let selector = &spec["selector"]["matchLabels"];
        let matched: Vec<(String, Vec<String>)> = releases
            .values()
            .flat_map(|r| r.objects.iter().map(move |o| (r, o)))
            .filter(|(r, o)| namespaces.contains(&namespace_of(o, r)))
            .filter_map(|(_, o)| match (kind_of(&m), kind_of(o)) {
                ("ServiceMonitor", "Service") if selects(selector, &o["metadata"]["labels"]) => {
                    let ports = o["spec"]["ports"].as_array().into_iter().flatten();
                    Some((name_of(o).to_string(), ports.filter_map(|p| p["name"].as_str().map(String::from)).collect()))
                }
                ("PodMonitor", "DaemonSet" | "Deployment")
                    if selects(selector, &o["spec"]["template"]["metadata"]["labels"]) =>
                {
                    let containers = o["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten();
                    let ports = containers.flat_map(|c| c["ports"].as_array().into_iter().flatten());
                    Some((name_of(o).to_string(), ports.filter_map(|p| p["name"].as_str().map(String::from)).collect()))
                }
                _ => None,
            })
            .collect();
        let endpoints = spec["endpoints"].as_array().or(spec["podMetricsEndpoints"].as_array()).unwrap();
        for e in endpoints {
            let port = e["port"].as_str().unwrap_or_else(|| panic!("{} selects its port by name", name_of(&m)));
            assert!(
                matched.iter().any(|(_, ports)| ports.iter().any(|p| p == port)),
                "{} {}: no rendered object in {namespaces:?} with labels {selector} declares port `{port}`: {matched:?}",
                kind_of(&m),
                name_of(&m)
            );
        }
    }
}

/// The Prometheus that kube-prometheus-stack renders selects meshcheck's monitors: its
/// `serviceMonitorSelector`/`podMonitorSelector` (empty = every monitor, `{release: <release>}`
/// when `*SelectorNilUsesHelmValues` is left true: templates/prometheus/prometheus.yaml of the 77.0.0
/// chart) and their namespace selectors.
#[test]
fn the_charts_prometheus_selects_meshchecks_monitors() {
    let Some((_, releases)) = rendered("ambient-kind") else { return };
    let prometheus = releases
        .values()
        .flat_map(|r| &r.objects)
        .find(|o| kind_of(o) == "Prometheus")
        .expect("kube-prometheus-stack renders a Prometheus");
    let monitors = meshcheck::plan::fixtures::manifest("istio-monitors.yaml").unwrap();
    for m in monitors.iter().map(|m| serde_json::to_value(m).unwrap()) {
        let field = if kind_of(&m) == "ServiceMonitor" { "serviceMonitorSelector" } else { "podMonitorSelector" };
        let selector = &prometheus["spec"][field];
        let labels = &m["metadata"]["labels"];
        let all = selector.as_object().is_some_and(|s| s.is_empty());
        assert!(all || selects(&selector["matchLabels"], labels), "{field} {selector} misses {}", name_of(&m));
        let ns_selector = &prometheus["spec"][field.replace("Selector", "NamespaceSelector")];
        assert!(
            ns_selector.as_object().is_some_and(|s| s.is_empty()),
            "{field}'s namespace selector {ns_selector} may leave out `monitoring`"
        );
    }
}

/// The Services the collectors read through the API server's service proxy exist with the port
/// they ask for: Prometheus (metrics, probes), Tempo (traces, and istiod's OTLP exporter).
#[test]
fn the_services_the_collectors_read_are_rendered_with_their_ports() {
    let Some((_, releases)) = rendered("ambient-kind") else { return };
    let port_of = |ns: &str, svc: &str, port: u64| {
        releases.values().any(|r| {
            r.objects.iter().any(|o| {
                kind_of(o) == "Service"
                    && name_of(o) == svc
                    && namespace_of(o, r) == ns
                    && o["spec"]["ports"].as_array().into_iter().flatten().any(|p| p["port"] == port)
            })
        })
    };
    // checks/metrics.rs and checks/probes.rs: monitoring/prom-prometheus:9090.
    assert!(port_of("monitoring", "prom-prometheus", 9090), "Prometheus's Service");
    // checks/traces.rs: tempo/tempo:3200; values/istiod.yaml's exporter: tempo.tempo:4317.
    assert!(port_of("tempo", "tempo", 3200), "Tempo's query port");
    assert!(port_of("tempo", "tempo", 4317), "Tempo's OTLP gRPC port");
    // A negative control: a port no chart renders.
    assert!(!port_of("monitoring", "prom-prometheus", 9091));
}

/// Whether a pod spec's tolerations tolerate kubeadm's `node-role.kubernetes.io/control-plane`
/// `NoSchedule` taint, by the scheduler's rule (k8s.io/api core/v1 toleration.go
/// `ToleratesTaint`: an empty key with `Exists` matches every key; an empty effect every effect;
/// `Exists` any value, `Equal` (the default) the taint's empty value).
fn tolerates_control_plane(pod_spec: &Value) -> bool {
    pod_spec["tolerations"].as_array().into_iter().flatten().any(|t| {
        let key = t["key"].as_str().unwrap_or_default();
        let effect = t["effect"].as_str().unwrap_or_default();
        let exists = t["operator"].as_str() == Some("Exists");
        (key.is_empty() && exists || key == "node-role.kubernetes.io/control-plane")
            && (effect.is_empty() || effect == "NoSchedule")
            && (exists || t["value"].as_str().unwrap_or_default().is_empty())
    })
}

/// Issue 22, item 3: the images meshcheck loads into every node (the control plane's included)
/// are exactly those of the rendered pods that tolerate the control plane's taint; the rest go to
/// the workers alone. An image no chart renders (what operators start: Prometheus, Kiali; bookinfo,
/// the clients, Keycloak) runs on workers alone: none of those pod specs tolerates the taint.
#[test]
fn the_images_for_every_node_are_those_of_pods_that_tolerate_the_control_plane() {
    use meshcheck::checks::image_architectures::{cluster_images, repository, runs_on_every_node};
    let Some((_, releases)) = rendered("ambient-kind") else { return };
    let mut tolerating: BTreeMap<String, bool> = BTreeMap::new();
    for o in releases.values().flat_map(|r| &r.objects) {
        let Some(spec) = o.pointer("/spec/template/spec").or_else(|| o.pointer("/spec/jobTemplate/spec/template/spec"))
        else {
            continue;
        };
        for c in ["containers", "initContainers"].iter().flat_map(|k| spec[*k].as_array().into_iter().flatten()) {
            let image = repository(c["image"].as_str().unwrap_or_default()).to_string();
            *tolerating.entry(image).or_default() |= tolerates_control_plane(spec);
        }
    }
    assert!(tolerating.len() >= 10, "the charts render pod templates: {tolerating:#?}");
    let s = Scenario::from_path(&root().join("scenarios/ambient-kind.yaml")).unwrap();
    // ../shared/upstream holds kube-prometheus-stack without its node-exporter and
    // kube-state-metrics subcharts (sim::helm::with_present_dependencies), so their pods are not
    // rendered here: node-exporter's tolerate every NoSchedule taint (prometheus-community
    // helm-charts charts/prometheus-node-exporter values.yaml `tolerations: [{effect: NoSchedule,
    // operator: Exists}]`), kube-state-metrics' none.
    let not_rendered_here =
        [("quay.io/prometheus/node-exporter", true), ("registry.k8s.io/kube-state-metrics/kube-state-metrics", false)];
    tolerating.extend(not_rendered_here.map(|(repo, tolerates)| (repo.to_string(), tolerates)));
    let mut wrong = Vec::new();
    for image in cluster_images(&s).refs {
        let rendered = tolerating.get(repository(&image)).copied().unwrap_or(false);
        if runs_on_every_node(&image) != rendered {
            wrong.push(format!(
                "{image}: meshcheck says every node {}, the charts' tolerations {rendered}",
                runs_on_every_node(&image)
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}\nrendered: {tolerating:#?}");
}
