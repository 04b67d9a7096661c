//! Golden plans for every shipped scenario, and the orders they must follow.

use std::collections::BTreeSet;

use meshcheck::{
    common::names::Phase,
    plan::providers,
    plan::{self, PlannedStep, RunContext, Step, StepId},
    scenario::Scenario,
};

use crate::common::{golden, root};

fn plan_of(name: &str) -> plan::Plan {
    let s = Scenario::from_path(&root().join(format!("scenarios/{name}.yaml"))).unwrap();
    plan::build(&s, &RunContext::for_plan())
}

#[test]
fn golden_plans() {
    for name in
        ["ambient-kind", "ambient-k3d", "ambient-waypoint", "ambient-kiali-oidc", "existing-cluster", "upgrade-gate"]
    {
        golden(&root().join(format!("suites/offline/golden/plan-{name}.txt")), &plan::render_text(&plan_of(name)));
    }
}

fn command_lines(p: &plan::Plan, phase: &str) -> Vec<String> {
    p.phases
        .iter()
        .filter(|ph| ph.name.as_str() == phase)
        .flat_map(|ph| ph.steps.iter())
        .filter_map(|s| match &s.step {
            Step::Command { command, .. } => Some(command.display()),
            _ => None,
        })
        .collect()
}

fn position(lines: &[String], needle: &str) -> usize {
    lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no step with `{needle}` in {lines:#?}"))
}

#[test]
fn install_follows_the_documented_order() {
    let p = plan_of("ambient-kind");
    let lines = command_lines(&p, "install");
    // istio.io ambient/install/helm (Istio 1.30): base → Gateway API CRDs → istiod → cni → ztunnel → gateway.
    let order = [
        "istio-base base --repo",
        "istiod istiod --repo",
        "istio-cni cni --repo",
        "ztunnel ztunnel --repo",
        "istio-ingress gateway --repo",
    ];
    let idx: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{order:?} out of order: {idx:?}");
    let install: Vec<&Step> =
        p.phases.iter().find(|ph| ph.name.as_str() == "install").unwrap().steps.iter().map(|s| &s.step).collect();
    let at = |f: &dyn Fn(&Step) -> bool| install.iter().position(|s| f(s)).unwrap();
    let crds =
        at(&|s| matches!(s, Step::Apply { source: plan::Source::Url { url }, .. } if url.contains("gateway-api")));
    let istiod =
        at(&|s| matches!(s, Step::Command { command, .. } if command.display().contains("istiod istiod --repo")));
    let base =
        at(&|s| matches!(s, Step::Command { command, .. } if command.display().contains("istio-base base --repo")));
    assert!(base < crds && crds < istiod, "the Gateway API CRDs come between base and istiod");
    // The gateway's Service ports come from bookinfo's Gateway, written before the gateway chart.
    let ports = at(&|s| {
        matches!(s, Step::GatewayPorts { gateway: plan::Source::Url { url }, node_port: 30080, .. }
        if url.ends_with("/samples/bookinfo/networking/bookinfo-gateway.yaml"))
    });
    let gateway = at(
        &|s| matches!(s, Step::Command { command, .. } if command.display().contains("istio-ingress gateway --repo")),
    );
    assert!(ports < gateway);
    assert!(lines.iter().all(|l| !l.contains("global.platform")), "no platform preset with Cilium");
}

#[test]
fn upgrade_follows_the_documented_in_place_order_with_full_values() {
    let p = plan_of("upgrade-gate");
    let lines = command_lines(&p, "upgrade");
    let order =
        ["upgrade istio-base", "upgrade istiod", "upgrade istio-cni", "upgrade ztunnel", "upgrade istio-ingress"];
    let idx: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{order:?} out of order: {idx:?}");
    for l in lines.iter().filter(|l| l.starts_with("helm upgrade")) {
        assert!(
            l.contains("--version 1.30.3") && l.contains("--values"),
            "upgrade without target version or values: {l}"
        );
    }
    let names: Vec<&str> = p.phases.iter().map(|ph| ph.name.as_str()).collect();
    assert_eq!(names, ["preflight", "provision", "install", "deploy", "baseline", "upgrade", "candidate", "cleanup"]);
}

#[test]
fn existing_cluster_without_install_never_creates_installs_or_deletes() {
    let p = plan_of("existing-cluster");
    let all: Vec<String> = p.phases.iter().flat_map(|ph| command_lines(&p, ph.name.as_str())).collect();
    assert!(all.is_empty(), "{all:#?}");
    assert!(p.cluster_name.is_none());
}

#[test]
fn existing_cluster_cleanup_deletes_only_the_runs_own_namespaces() {
    let p = plan_of("existing-cluster");
    let cleanup: Vec<&Step> =
        p.phases.iter().find(|ph| ph.name.as_str() == "cleanup").unwrap().steps.iter().map(|s| &s.step).collect();
    assert!(matches!(cleanup.as_slice(), [Step::DeleteOwnedNamespaces { run }] if run == "run-id"), "{cleanup:?}");
    // Every namespace the run uses is created through an ownership step, never by helm or a manifest.
    for ph in &p.phases {
        for step in ph.steps.iter().map(|s| &s.step) {
            if let Step::Command { command, .. } = step {
                assert!(!command.args.iter().any(|a| a == "--create-namespace"), "{}", command.display());
            }
            if let Step::Apply { objects, .. } = step {
                assert!(!objects.iter().any(|o| o.starts_with("Namespace/")), "{objects:?}");
            }
        }
    }
}

/// The step whose command line or label contains `needle`.
fn step<'a>(p: &'a plan::Plan, needle: &str) -> &'a PlannedStep {
    p.steps()
        .map(|(_, s)| s)
        .find(|s| match &s.step {
            Step::Command { command, .. } => command.display().contains(needle) || s.step.label() == needle,
            other => other.label().contains(needle),
        })
        .unwrap_or_else(|| panic!("no step with `{needle}`"))
}

/// Every step `id` needs, directly or through others.
fn needed_by(p: &plan::Plan, id: StepId) -> BTreeSet<StepId> {
    let mut out = BTreeSet::new();
    let mut todo = vec![id];
    while let Some(at) = todo.pop() {
        let s = p.steps().find(|(_, s)| s.id == at).unwrap().1;
        for n in &s.needs {
            if out.insert(n.step) {
                todo.push(n.step);
            }
        }
    }
    out
}

fn needs_directly(s: &PlannedStep, on: &PlannedStep) -> bool {
    s.needs.iter().any(|n| n.step == on.id)
}

#[test]
fn every_plan_is_a_graph_in_plan_order_whose_early_steps_can_start_where_they_say() {
    for name in ["ambient-kind", "ambient-k3d", "existing-cluster", "upgrade-gate"] {
        let p = plan_of(name);
        let steps: Vec<(Phase, &PlannedStep)> = p.steps().collect();
        let ids: Vec<usize> = steps.iter().map(|(_, s)| s.id.0).collect();
        assert_eq!(ids, (1..=steps.len()).collect::<Vec<_>>(), "{name}: steps are numbered in plan order");
        let phase_of = |id: StepId| steps.iter().find(|(_, s)| s.id == id).unwrap();
        for (phase, s) in &steps {
            for n in &s.needs {
                assert!(n.step < s.id, "{name}: step {} needs the later step {}", s.id, n.step);
                assert!(!n.why.is_empty(), "{name}: step {} needs {} without a reason", s.id, n.step);
                if let Some(early) = s.starts_during {
                    // What it needs has ended by the time the earlier phase runs it.
                    let (np, ns) = phase_of(n.step);
                    assert!(
                        *np <= early.phase || plan::Plan::host_phase(*np, ns) == early.phase,
                        "{name}: step {} starts during {} but needs step {} of {np}",
                        s.id,
                        early.phase,
                        n.step
                    );
                }
            }
            if let Some(early) = s.starts_during {
                assert!(
                    early.phase < *phase,
                    "{name}: step {} starts during {}, not before its phase",
                    s.id,
                    early.phase
                );
                assert!(!matches!(s.step, Step::Check { .. } | Step::Wait { .. }), "{name}: only work starts early");
            }
        }
    }
}

#[test]
fn the_documented_istio_order_is_a_chain_in_the_graph() {
    let p = plan_of("ambient-kind");
    // istio.io ambient/install/helm: base → Gateway API CRDs → istiod → cni → ztunnel → gateway, each up
    // before the next.
    let chain = [
        "istio-base base --repo",
        "apply standard-install.yaml",
        "wait for CustomResourceDefinition gateways.gateway.networking.k8s.io",
        "istiod istiod --repo",
        "wait for Deployment istio-system/istiod",
        "istio-cni cni --repo",
        "wait for DaemonSet istio-system/istio-cni-node",
        "ztunnel ztunnel --repo",
        "wait for DaemonSet istio-system/ztunnel",
        "istio-ingress gateway --repo",
        "wait for Deployment istio-ingress/istio-ingress",
    ];
    for link in chain.windows(2) {
        assert!(
            needs_directly(step(&p, link[1]), step(&p, link[0])),
            "`{}` does not come after `{}`",
            link[1],
            link[0]
        );
    }
    let p = plan_of("upgrade-gate");
    let upgrade: Vec<&PlannedStep> = p.steps().filter(|(ph, _)| *ph == Phase::Upgrade).map(|(_, s)| s).collect();
    let find = |needle: &str| {
        *upgrade
            .iter()
            .find(|s| match &s.step {
                Step::Command { command, .. } => command.display().contains(needle),
                other => other.label().contains(needle),
            })
            .unwrap_or_else(|| panic!("no upgrade step `{needle}`"))
    };
    let chain = [
        "traffic during",
        "upgrade istio-base",
        "upgrade istiod",
        "wait for Deployment istio-system/istiod",
        "upgrade istio-cni",
        "wait for DaemonSet istio-system/istio-cni-node",
        "upgrade ztunnel",
        "wait for DaemonSet istio-system/ztunnel",
        "upgrade istio-ingress",
        "wait for Deployment istio-ingress/istio-ingress",
        "traffic after",
        "traffic stop",
    ];
    for link in chain.windows(2) {
        assert!(needs_directly(find(link[1]), find(link[0])), "`{}` does not come after `{}`", link[1], link[0]);
    }
}

#[test]
fn the_observability_stack_installs_beside_the_istio_chain_with_only_the_needs_it_has() {
    let p = plan_of("ambient-kind");
    let istiod = step(&p, "istiod istiod --repo");
    for chart in ["kps kube-prometheus-stack --repo", "tempo tempo --repo"] {
        let helm = step(&p, chart);
        assert!(!needed_by(&p, helm.id).contains(&istiod.id), "{chart} waits for the Istio chain");
    }
    // Issue 22, item 9: Kiali caches whether Istio's API and ztunnel exist from its first look, so
    // its operator starts once ztunnel is Ready.
    let ztunnel = step(&p, "wait for DaemonSet istio-system/ztunnel");
    assert!(needs_directly(step(&p, "kiali-operator kiali-operator --repo"), ztunnel), "Kiali after ztunnel");
    let kps = step(&p, "kps kube-prometheus-stack --repo");
    assert!(needs_directly(step(&p, "apply manifests/istio-monitors.yaml"), kps), "ServiceMonitor CRD first");
    let istiod_up = step(&p, "wait for Deployment istio-system/istiod");
    assert!(needs_directly(step(&p, "apply manifests/telemetry.yaml"), istiod_up), "Telemetry after istiod");
    // The Cilium chart ships no CRDs; its operator registers them: the policy waits for its CRD.
    let operator = step(&p, "wait for Deployment kube-system/cilium-operator");
    let crd = step(&p, "wait for CustomResourceDefinition ciliumclusterwidenetworkpolicies.cilium.io");
    assert!(needs_directly(crd, operator), "the CRD wait after the operator");
    assert!(needs_directly(step(&p, "apply manifests/cilium-allow-ambient-hostprobes.yaml"), crd));
}

/// Issue 22, item 1: no `helm repo add` (concurrent adds fight over one lock for 30 s, and an
/// install reads the repository file while an add rewrites it); each helm command names its
/// repository with `--repo`, the upstream URL through the scenario's mirrors.
#[test]
fn every_helm_release_names_its_repository_and_no_step_adds_one() {
    for name in ["ambient-kind", "ambient-k3d", "upgrade-gate"] {
        let p = plan_of(name);
        let helm: Vec<&Step> = p
            .phases
            .iter()
            .flat_map(|ph| &ph.steps)
            .map(|s| &s.step)
            .filter(|s| matches!(s, Step::Command { command, .. } if command.program == "helm"))
            .collect();
        assert!(!helm.is_empty());
        for s in helm {
            let Step::Command { command, .. } = s else { unreachable!() };
            assert_ne!(command.args.first().map(String::as_str), Some("repo"), "{}", command.display());
            let repo = command.flag("--repo").unwrap_or_else(|| panic!("no --repo: {}", command.display()));
            assert!(repo.starts_with("https://"), "{repo}");
        }
    }
}

#[test]
fn bookinfo_is_applied_during_the_install_once_ztunnel_is_up_and_awaited_in_deploy() {
    let p = plan_of("ambient-kind");
    let ztunnel = step(&p, "wait for DaemonSet istio-system/ztunnel");
    let bookinfo = step(&p, "apply bookinfo.yaml");
    assert_eq!(bookinfo.starts_during.map(|o| o.phase), Some(Phase::Install));
    assert!(needs_directly(bookinfo, ztunnel), "captured by ambient: after ztunnel");
    assert!(needs_directly(bookinfo, step(&p, "namespace book-info")));
    let productpage = step(&p, "wait for Deployment book-info/productpage-v1");
    assert!(productpage.starts_during.is_none() && needs_directly(productpage, bookinfo));
    // Nothing of the observability stack is in bookinfo's way.
    let kiali = step(&p, "wait for Deployment istio-system/kiali");
    assert!(!needed_by(&p, bookinfo.id).contains(&kiali.id));
    // An existing cluster's run installs nothing and starts nothing early.
    assert!(plan_of("existing-cluster").steps().all(|(_, s)| s.starts_during.is_none()));
}

#[test]
fn checks_that_change_the_mesh_run_alone_and_reading_checks_side_by_side() {
    for name in ["ambient-kind", "upgrade-gate"] {
        let p = plan_of(name);
        for phase in &p.phases {
            let checks: Vec<(&PlannedStep, meshcheck::common::catalog::Effect)> = phase
                .steps
                .iter()
                .filter_map(|s| match &s.step {
                    Step::Check { name, .. } => Some((s, meshcheck::common::catalog::find(name).unwrap().effect)),
                    _ => None,
                })
                .collect();
            for (i, (a, ea)) in checks.iter().enumerate() {
                for (b, eb) in &checks[i + 1..] {
                    let ordered = needed_by(&p, b.id).contains(&a.id);
                    let mutating = ea.runs_alone() || eb.runs_alone();
                    assert_eq!(ordered, mutating, "{name} {}: {} and {}", phase.name, a.step.label(), b.step.label());
                }
            }
        }
    }
}

#[test]
fn kind_config_disables_cni_and_kube_proxy_and_maps_the_gateway() {
    let s = Scenario::embedded_default();
    let cfg = providers::kind_config(&s, "meshcheck-x");
    golden(&root().join("suites/offline/golden/kind-config.yaml"), &cfg);
    assert!(cfg.contains("disableDefaultCNI: true") && cfg.contains("kubeProxyMode: \"none\""));
    assert_eq!(cfg.matches("role: worker").count(), 2);
}

#[test]
fn k3d_args_turn_off_everything_cilium_replaces() {
    let s = Scenario::from_path(&root().join("scenarios/ambient-k3d.yaml")).unwrap();
    let args = providers::k3d_create_args(&s, "meshcheck-x").join(" ");
    golden(&root().join("suites/offline/golden/k3d-args.txt"), &args);
    for flag in [
        "--flannel-backend=none@server:*",
        "--disable-network-policy@server:*",
        "--disable-kube-proxy@server:*",
        "--disable=traefik@server:*",
        "--kubeconfig-update-default=false",
    ] {
        assert!(args.contains(flag), "missing {flag}");
    }
}

#[test]
fn plan_json_round_trips_and_kubeconfig_stays_outside_the_run_folder() {
    let p = plan_of("ambient-kind");
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["phases"][0]["name"], "preflight");
    // The graph is in the JSON: each step's number, what it needs and why, what starts early.
    let istiod = v["phases"][2]["steps"].as_array().unwrap().iter().find(|s| s["name"] == "helm istiod").unwrap();
    assert_eq!(istiod["type"], "command");
    assert!(istiod["id"].as_u64().is_some() && istiod["needs"][0]["why"].as_str().is_some(), "{istiod:#}");
    let deploy = v["phases"][3]["steps"].as_array().unwrap();
    assert!(deploy.iter().any(|s| s["starts_during"]["phase"] == "install"));
    assert!(!p.kubeconfig.starts_with(&format!("{}/", p.run_dir)), "{}", p.kubeconfig);
}

#[test]
fn a_cached_image_archive_is_loaded_before_cilium_beside_what_does_not_need_it() {
    for (name, load) in [
        ("ambient-kind", "kind load image-archive /cache/images.tar --name meshcheck-run-id"),
        ("ambient-k3d", "k3d image import /cache/images.tar --cluster meshcheck-run-id"),
    ] {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml")))
            .unwrap()
            .replace("cluster:\n", "cluster:\n  image_archive: /cache/images.tar\n");
        let s = Scenario::from_yaml(&text, name).unwrap();
        let p = plan::build(&s, &RunContext::for_plan());
        let create = step(&p, if name == "ambient-kind" { "kind create cluster" } else { "k3d cluster create" });
        let load = step(&p, load);
        let cilium = step(&p, "cilium cilium --repo");
        assert!(needs_directly(load, create) && needs_directly(cilium, load), "after the cluster, before Cilium");
        // The rest of the provisioning overlaps the load.
        for other in ["cilium.yaml", "cilium-cluster.yaml"] {
            assert!(!needed_by(&p, step(&p, other).id).contains(&load.id), "{other} waits for the load");
        }
    }
    assert!(command_lines(&plan_of("ambient-kind"), "provision").iter().all(|l| !l.contains("image-archive")));
}

/// Issue 22, item 3: a workload archive goes into kind's worker nodes alone (kind v0.31.0 names
/// them `<cluster>-worker`, `<cluster>-worker2`; the control plane runs only what tolerates its
/// taint), into every node on k3d; and with an archive, Cilium's images are named by tag, the name
/// the archive keeps, where the chart would pin the index digest.
#[test]
fn a_workload_archive_goes_to_the_workers_and_archives_name_ciliums_images_by_tag() {
    for (name, load) in [
        (
            "ambient-kind",
            "kind load image-archive /cache/workloads.tar --name meshcheck-run-id --nodes meshcheck-run-id-worker,meshcheck-run-id-worker2",
        ),
        ("ambient-k3d", "k3d image import /cache/workloads.tar --cluster meshcheck-run-id"),
    ] {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml"))).unwrap();
        let cached = text.replace("cluster:\n", "cluster:\n  workload_image_archive: /cache/workloads.tar\n");
        let p = plan::build(&Scenario::from_yaml(&cached, name).unwrap(), &RunContext::for_plan());
        step(&p, load);
        let values = p
            .steps()
            .find_map(|(_, s)| match &s.step {
                plan::Step::WriteFile { path, content, .. } if path.ends_with("cilium-cluster.yaml") => {
                    Some(content.clone())
                }
                _ => None,
            })
            .unwrap();
        let values: serde_json::Value = serde_saphyr::from_str(&values).unwrap();
        for at in ["/image/useDigest", "/operator/image/useDigest", "/envoy/image/useDigest"] {
            assert_eq!(values.pointer(at), Some(&serde_json::json!(false)), "{name} {at}: {values}");
        }
        let plain = plan::build(&Scenario::from_yaml(&text, name).unwrap(), &RunContext::for_plan());
        let lines = command_lines(&plain, "provision");
        assert!(lines.iter().all(|l| !l.contains("image-archive") && !l.contains("image import")), "{lines:#?}");
    }
}

/// A `checks:` subset installs only the parts of the observability stack its checks read.
#[test]
fn a_checks_subset_installs_only_what_its_checks_read() {
    let releases = |checks: &[&str]| -> Vec<String> {
        let mut s = Scenario::from_path(&root().join("scenarios/ambient-kind.yaml")).unwrap();
        s.checks = checks.iter().map(|c| c.to_string()).collect();
        let p = plan::build(&s, &RunContext::for_plan());
        let labels: Vec<String> = p.steps().map(|(_, step)| step.step.label()).collect();
        [
            "helm kps",
            "helm tempo",
            "helm kiali-operator",
            "apply manifests/telemetry.yaml",
            "helm istiod",
            "apply bookinfo.yaml",
        ]
        .iter()
        .filter(|step| labels.iter().any(|l| l == *step))
        .map(|step| step.to_string())
        .collect()
    };
    assert_eq!(releases(&["mtls"]), ["helm istiod", "apply bookinfo.yaml"]);
    assert_eq!(
        releases(&["traces"]),
        ["helm tempo", "apply manifests/telemetry.yaml", "helm istiod", "apply bookinfo.yaml"]
    );
    assert_eq!(releases(&["probes"]), ["helm kps", "helm istiod", "apply bookinfo.yaml"]);
    assert_eq!(
        releases(&["kiali"]),
        ["helm kps", "helm kiali-operator", "helm istiod", "apply bookinfo.yaml"],
        "Kiali's graph comes from Prometheus"
    );
    assert_eq!(releases(&["metrics", "traces", "kiali", "probes", "mtls"]).len(), 6, "the default installs everything");
}

/// Issue 22 (smaller): the cluster name of a real run id stays under k3d's limit with room to spare.
#[test]
fn a_runs_cluster_name_fits_k3d_with_room_to_spare() {
    use meshcheck::plan::{K3D_CLUSTER_NAME_MAX, cluster_name};
    let id = meshcheck::run::new_run_id();
    let name = cluster_name(&id);
    assert!(name.starts_with("meshcheck-"), "gc finds clusters by their prefix: {name}");
    assert!(name.len() + 2 <= K3D_CLUSTER_NAME_MAX, "{name} ({} characters)", name.len());
    assert_eq!(cluster_name("20261203-091436-7E8394"), "meshcheck-261203-091436-7e8394");
}

/// Kiali behind OpenID: Keycloak and the Secret kiali are applied before the Kiali chart (Kiali
/// reads its client secret only at start), the credentials are named in the plan and never held by
/// it, the openid values are layered over the base values, and the anonymous scenario has none of it.
#[test]
fn kiali_openid_applies_keycloak_and_the_secret_before_the_kiali_chart() {
    let p = plan_of("ambient-kiali-oidc");
    let keycloak = step(&p, "apply manifests/keycloak.yaml");
    let chart = step(&p, "helm kiali-operator");
    assert!(needs_directly(chart, keycloak), "the Kiali chart must wait for the Secret kiali");
    assert!(needed_by(&p, keycloak.id).contains(&step(&p, "namespace keycloak").id));
    match &keycloak.step {
        Step::Apply { source: plan::Source::Fixture { secrets, vars, .. }, .. } => {
            assert_eq!(secrets, &["CLIENT_SECRET", "USER_PASSWORD"]);
            assert!(vars.is_empty(), "no credential is a plan value: {vars:?}");
        }
        other => panic!("{other:?}"),
    }
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("\"{{CLIENT_SECRET}}\""), "the plan holds no placeholder values");
    let Step::Command { command, .. } = &chart.step else { panic!() };
    let values: Vec<&str> =
        command.args.windows(2).filter(|w| w[0] == "--values").map(|w| w[1].rsplit('/').next().unwrap()).collect();
    assert_eq!(values, ["kiali-operator.yaml", "kiali-openid.yaml"], "openid is layered over the base values");
    let anonymous = plan_of("ambient-kind");
    assert!(anonymous.steps().all(|(_, s)| !s.step.label().contains("keycloak")));
    assert!(command_lines(&anonymous, "install").iter().all(|l| !l.contains("kiali-openid")));
}
