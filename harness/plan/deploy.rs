//! The deploy phase: bookinfo, the probe target and the test clients of the mTLS check.

use super::{
    Condition, Overlap, Source, Step, StepId,
    builder::{APPLIED, Builder, INTO_NAMESPACE, bookinfo_url},
    fixtures,
    graph::Graph,
    istio::Istio,
};
use crate::{
    common::{
        catalog::{self, Component, Stage},
        names::{AMBIENT, BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS, Phase, USE_WAYPOINT, WAYPOINT},
    },
    scenario::Scenario,
};

/// bookinfo, the probe target and the test clients. They need only their namespaces and ztunnel
/// up, so they are applied during the install; their rollouts are awaited in this phase.
pub(super) fn deploy(b: &Builder, g: &mut Graph, istio: &Istio) {
    let s = b.s;
    let t = s.timeouts.deploy.0;
    let ns = Some(BOOKINFO_NS);
    let release = s.versions.bookinfo();
    let early = Overlap {
        phase: Phase::Install,
        why: "bookinfo and the test clients need only ztunnel up: their images pull while the observability stack installs",
    };
    let captured = (
        istio.ztunnel,
        "ambient captures a pod when istio-cni and ztunnel run on its node: started after them, it is in the mesh from its first request",
    );
    let waypoint = catalog::any_reads(&s.checks, Component::Waypoint);
    let labels: &[(&str, &str)] = if waypoint { &[AMBIENT, USE_WAYPOINT] } else { &[AMBIENT] };
    let namespace = g.add_early(b.namespace(BOOKINFO_NS, labels), &[], early);
    let mut applies = Vec::new();
    for file in ["platform/kube/bookinfo.yaml", "platform/kube/bookinfo-versions.yaml"] {
        applies.push(g.add_early(bookinfo_apply(s, file), &[(namespace, INTO_NAMESPACE), captured], early));
    }
    g.add_early(
        bookinfo_apply(s, "networking/bookinfo-gateway.yaml"),
        &[
            (namespace, INTO_NAMESPACE),
            (istio.istiod, "an Istio Gateway is Istio config: istiod's validating webhook must answer"),
        ],
        early,
    );
    let hub = fixtures::istio_hub(release);
    let probe_target = g.add_early(
        b.fixture_apply("probe-target.yaml", ns, &[("BOOKINFO_HUB", hub)]),
        &[(namespace, INTO_NAMESPACE), captured],
        early,
    );
    mesh_clients(b, g, Some((early, captured)));
    for d in ["details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"] {
        g.add(b.wait("Deployment", ns, d, Condition::DeploymentAvailable, t), &[(applies[0], APPLIED)]);
    }
    g.add(b.wait("Deployment", ns, "probe-target", Condition::DeploymentAvailable, t), &[(probe_target, APPLIED)]);
    if waypoint {
        let gateway = g.add_early(
            b.fixture_apply("waypoint.yaml", ns, &[]),
            &[
                (namespace, INTO_NAMESPACE),
                (istio.istiod, "istiod's gateway controller deploys the waypoint from its Gateway"),
            ],
            early,
        );
        g.add(b.wait("Deployment", ns, WAYPOINT, Condition::DeploymentAvailable, t), &[(gateway, APPLIED)]);
    }
    g.checks(s, Stage::Deploy);
}

/// The apply of a bookinfo sample file into the bookinfo namespace.
fn bookinfo_apply(s: &Scenario, file: &str) -> Step {
    Step::Apply {
        source: Source::Url { url: bookinfo_url(s, file) },
        namespace: Some(BOOKINFO_NS.into()),
        objects: Vec::new(),
        dry_run_first: true,
    }
}

/// The test clients of the mTLS and L4 authorization checks, each in a namespace of the run's own. `early` lets
/// them start during the install, once `captured` (ztunnel up) has finished.
pub(super) fn mesh_clients(b: &Builder, g: &mut Graph, early: Option<(Overlap, (StepId, &'static str))>) {
    let add = |g: &mut Graph, step: Step, needs: &[(StepId, &'static str)]| match early {
        Some((overlap, _)) => g.add_early(step, needs, overlap),
        None => g.add(step, needs),
    };
    let outside = add(g, b.namespace(OUTSIDE_NS, &[]), &[]);
    let inside = add(g, b.namespace(INSIDE_NS, &[AMBIENT]), &[]);
    let mut needs = vec![(outside, INTO_NAMESPACE), (inside, INTO_NAMESPACE)];
    needs.extend(early.map(|(_, captured)| captured));
    let clients = add(g, b.fixture_apply("mesh-clients.yaml", None, &[]), &needs);
    let t = b.s.timeouts.deploy.0;
    g.add(b.wait("Pod", Some(OUTSIDE_NS), "curl-outside", Condition::PodReady, t), &[(clients, APPLIED)]);
    g.add(b.wait("Pod", Some(INSIDE_NS), "curl-inside", Condition::PodReady, t), &[(clients, APPLIED)]);
    g.add(b.wait("Pod", Some(INSIDE_NS), "curl-other", Condition::PodReady, t), &[(clients, APPLIED)]);
    if b.s.runs_check(catalog::LATENCY.name) {
        // The latency check's fortio server and client, the same in both namespaces.
        let fortio = add(g, b.fixture_apply("latency.yaml", None, &[]), &needs);
        for ns in [OUTSIDE_NS, INSIDE_NS] {
            for d in ["fortio-server", "fortio-client"] {
                g.add(b.wait("Deployment", Some(ns), d, Condition::DeploymentAvailable, t), &[(fortio, APPLIED)]);
            }
        }
    }
}
