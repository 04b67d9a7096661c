//! Golden plans for every shipped scenario, and the orders they must follow.

use meshcheck::{
    plan::{self, RunContext, Step},
    providers,
    scenario::Scenario,
};

use crate::common::{golden, root};

fn plan_of(name: &str) -> plan::Plan {
    let s = Scenario::from_path(&root().join(format!("scenarios/{name}.yaml"))).unwrap();
    plan::build(&s, &RunContext::for_plan())
}

#[test]
fn golden_plans() {
    for name in ["ambient-kind", "ambient-k3d", "existing-cluster", "upgrade-gate"] {
        golden(&root().join(format!("suites/offline/golden/plan-{name}.txt")), &plan::render_text(&plan_of(name)));
    }
}

fn command_lines(p: &plan::Plan, phase: &str) -> Vec<String> {
    p.phases
        .iter()
        .filter(|ph| ph.name.as_str() == phase)
        .flat_map(|ph| ph.steps.iter())
        .filter_map(|s| match s {
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
        "istio-base istio/base",
        "istiod istio/istiod",
        "istio-cni istio/cni",
        "ztunnel istio/ztunnel",
        "istio-ingress istio/gateway",
    ];
    let idx: Vec<usize> = order.iter().map(|n| position(&lines, n)).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{order:?} out of order: {idx:?}");
    let install = &p.phases.iter().find(|ph| ph.name.as_str() == "install").unwrap().steps;
    let at = |f: &dyn Fn(&Step) -> bool| install.iter().position(f).unwrap();
    let crds =
        at(&|s| matches!(s, Step::Apply { source: plan::Source::Url { url }, .. } if url.contains("gateway-api")));
    let istiod =
        at(&|s| matches!(s, Step::Command { command, .. } if command.display().contains("istiod istio/istiod")));
    let base =
        at(&|s| matches!(s, Step::Command { command, .. } if command.display().contains("istio-base istio/base")));
    assert!(base < crds && crds < istiod, "the Gateway API CRDs come between base and istiod");
    // The gateway's Service ports come from bookinfo's Gateway, written before the gateway chart.
    let ports = at(&|s| {
        matches!(s, Step::GatewayPorts { gateway: plan::Source::Url { url }, node_port: 30080, .. }
        if url.ends_with("/samples/bookinfo/networking/bookinfo-gateway.yaml"))
    });
    let gateway = at(
        &|s| matches!(s, Step::Command { command, .. } if command.display().contains("istio-ingress istio/gateway")),
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
    let cleanup = &p.phases.iter().find(|ph| ph.name.as_str() == "cleanup").unwrap().steps;
    assert!(matches!(cleanup.as_slice(), [Step::DeleteOwnedNamespaces { run }] if run == "run-id"), "{cleanup:?}");
    // Every namespace the run uses is created through an ownership step, never by helm or a manifest.
    for ph in &p.phases {
        for step in &ph.steps {
            if let Step::Command { command, .. } = step {
                assert!(!command.args.iter().any(|a| a == "--create-namespace"), "{}", command.display());
            }
            if let Step::Apply { objects, .. } = step {
                assert!(!objects.iter().any(|o| o.starts_with("Namespace/")), "{objects:?}");
            }
        }
    }
}

#[test]
fn consecutive_waits_form_one_concurrent_batch() {
    let p = plan_of("ambient-kind");
    let provision = &p.phases.iter().find(|ph| ph.name.as_str() == "provision").unwrap().steps;
    let batches = plan::batches(provision);
    let waits: Vec<usize> = batches.iter().filter(|b| matches!(b[0], Step::Wait { .. })).map(Vec::len).collect();
    assert_eq!(waits, [5], "cilium, cilium-envoy, operator, nodes, coredns are awaited together");
    assert!(batches.iter().all(|b| b.len() == 1 || b.iter().all(|s| matches!(s, Step::Wait { .. }))));
    let steps = provision.iter().filter(|s| !matches!(s, Step::Check { .. })).count();
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), steps, "every step runs exactly once, in order");
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
    assert!(!p.kubeconfig.starts_with(&format!("{}/", p.run_dir)), "{}", p.kubeconfig);
}

#[test]
fn a_cached_image_archive_is_loaded_into_the_nodes_before_cilium() {
    for (name, load) in [
        ("ambient-kind", "kind load image-archive /cache/images.tar --name meshcheck-run-id"),
        ("ambient-k3d", "k3d image import /cache/images.tar --cluster meshcheck-run-id"),
    ] {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml")))
            .unwrap()
            .replace("cluster:\n", "cluster:\n  image_archive: /cache/images.tar\n");
        let s = Scenario::from_yaml(&text, name).unwrap();
        let p = plan::build(&s, &RunContext::for_plan());
        let lines = command_lines(&p, "provision");
        let created = lines.iter().position(|l| l.contains("create cluster") || l.contains("cluster create")).unwrap();
        assert!(position(&lines, load) > created, "{lines:#?}");
        assert!(position(&lines, load) < position(&lines, "cilium/cilium"), "{lines:#?}");
    }
    assert!(command_lines(&plan_of("ambient-kind"), "provision").iter().all(|l| !l.contains("image-archive")));
}
