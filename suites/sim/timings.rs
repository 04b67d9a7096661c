//! How long things take in the simulated cluster, in cluster time (scaled by `SimOptions::scale`).
//!
//! [`Timings::rehearsal`] keeps the rehearsals quick: every pod starts in 5 s, a cluster is created in
//! 20 s, a helm command takes 2 s. [`Timings::upstream`] is what a live kind run on a CI runner
//! takes, for the critical-path benchmark; each figure names where it comes from. Where no upstream
//! source gives a figure, it is an estimate and says so, with its reasoning: the benchmark measures
//! how close the executor comes to the plan's critical path *for these durations*, so what matters
//! is their proportions (a long Cilium rollout, a short helm command, a slow Java image), not the
//! second.

use std::{collections::BTreeMap, time::Duration};

/// Durations of the simulated cluster's work.
#[derive(Debug, Clone)]
pub struct Timings {
    /// `kind create cluster` (three nodes) or `k3d cluster create`, until the API server answers.
    pub create_cluster: Duration,
    /// `helm upgrade --repo`: downloading the repository's index.yaml before the chart.
    pub repo_index: Duration,
    /// `kind load image-archive` / `k3d image import` of the run's cached images.
    pub image_load: Duration,
    /// `helm upgrade [--install]` of a release without `--wait`, by release; [`Timings::helm_default`]
    /// for the others. The chart's objects exist when it returns.
    pub helm: BTreeMap<&'static str, Duration>,
    /// A helm command not in [`Timings::helm`].
    pub helm_default: Duration,
    /// From a pod's scheduling on a Ready node (any node, for host-network pods) to Ready: image
    /// pull, start, readiness probe. By the workload that owns it (or the pod's name for a bare
    /// pod); [`Timings::pod_default`] for the others.
    pub pods: BTreeMap<&'static str, Duration>,
    /// A pod not in [`Timings::pods`].
    pub pod_default: Duration,
    /// From SIGTERM to exit for a program that does not drain (ztunnel and Istio's proxy do, by
    /// their own rules: `controllers::exits_after`); never past the pod's grace period.
    pub pod_exit: Duration,
    /// From a change of an AuthorizationPolicy or PeerAuthentication to ztunnel enforcing it.
    pub policy_push: Duration,
}

const fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

impl Timings {
    /// The rehearsals' durations: short and uniform.
    pub fn rehearsal() -> Timings {
        Timings {
            create_cluster: s(20),
            repo_index: Duration::ZERO,
            image_load: Duration::ZERO,
            helm: BTreeMap::new(),
            helm_default: s(2),
            pods: BTreeMap::new(),
            pod_default: s(5),
            pod_exit: s(1),
            policy_push: s(1),
        }
    }

    /// A live kind run on a GitHub-hosted runner (4 vCPUs, images pulled from their registries).
    ///
    /// | what | s | source |
    /// |---|---|---|
    /// | kind create, 1 control plane + 2 workers, `--wait 0s` | 90 | cilium/cilium#12279, a GitHub Actions log: node image 25 s, nodes 34 s, control plane 22 s, workers 33 s (114 s, with the node image pull); aws/eks-anywhere#4303: a one-node kind cluster in 39 s |
    /// | helm --repo index | 2 | estimate: one index.yaml download (prometheus-community's is several MB) |
    /// | image archive load | 60 | estimate: `docker save` of ~2 GB into three nodes' containerd (field guide §1.3) |
    /// | helm install without `--wait` | 5 | llm-d/llm-d-benchmark#1920: istiod's helm release without `wait` "returns in a few seconds" |
    /// | helm istio-base `--wait` | 8 | estimate: the helm install above plus the Istio CRDs becoming Established |
    /// | helm kube-prometheus-stack | 20 | estimate: ten large CRDs and some 150 objects, several times a small chart |
    /// | Cilium agent Ready | 60 | estimate: the cilium image (~200 MB) and its chain of init containers on each node |
    /// | cilium-envoy, cilium-operator Ready | 30 | estimate: smaller images, no init chain |
    /// | CoreDNS Ready | 10 | kind's node image holds the images a cluster boots with (kind.sigs.k8s.io docs/design/node-image: `/kind/images/*.tar`; docs/user/working-offline), so CoreDNS only starts once a node is Ready |
    /// | istiod Ready | 30 | istio/istio#22415: "takes 10s to spin up istiod" (readiness), plus pulling pilot |
    /// | istio-cni-node, ztunnel Ready | 20 | estimate: one small image each per node |
    /// | istio-ingress (gateway) Ready | 25 | estimate: the proxyv2 image (~100 MB) |
    /// | prometheus-operator Ready | 20 | estimate: a small Go operator image |
    /// | Prometheus Ready | 40 | estimate: the image, an empty TSDB, the operator's config reload |
    /// | Tempo Ready | 30 | estimate: one image, single binary mode |
    /// | kiali-operator Ready | 40 | estimate: the Ansible operator image (~250 MB) |
    /// | Kiali Ready | 30 | kiali/kiali-operator#637: the operator's initial reconciliation takes 12–16 s; then Kiali's pod starts |
    /// | bookinfo details, ratings Ready | 30 | estimate: small Ruby and Node.js images |
    /// | bookinfo productpage Ready | 40 | estimate: a Python image |
    /// | bookinfo reviews-v1/v2/v3 Ready | 60 | estimate: a WebSphere Liberty (Java) image, the largest of bookinfo |
    /// | probe target, curl clients Ready | 15 | estimate: small images |
    /// | waypoint Ready | 25 | estimate: the proxyv2 image, as the ingress gateway |
    /// | a program that does not drain exits after SIGTERM | 1 | estimate: the apps and servers here stop at once; ztunnel and Istio's proxy drain by their own rules |
    /// | a policy change reaches ztunnel | 1 | estimate: istiod's debounce waits 100 ms of quiet (`PILOT_DEBOUNCE_AFTER`, istio/istio@1.30.3 pilot/pkg/features/tuning.go), then one xDS push to every ztunnel |
    pub fn upstream() -> Timings {
        let pods = [
            ("cilium", s(60)),
            ("cilium-envoy", s(30)),
            ("cilium-operator", s(30)),
            ("coredns", s(10)),
            ("istiod", s(30)),
            ("istio-cni-node", s(20)),
            ("ztunnel", s(20)),
            ("istio-ingress", s(25)),
            ("prom-operator", s(20)),
            ("prometheus-prom-prometheus", s(40)),
            ("tempo", s(30)),
            ("kiali-operator", s(40)),
            ("kiali", s(30)),
            ("details-v1", s(30)),
            ("ratings-v1", s(30)),
            ("productpage-v1", s(40)),
            ("reviews-v1", s(60)),
            ("reviews-v2", s(60)),
            ("reviews-v3", s(60)),
            ("probe-target", s(15)),
            ("curl-outside", s(15)),
            ("curl-inside", s(15)),
            ("curl-other", s(15)),
            ("waypoint", s(25)),
        ];
        Timings {
            create_cluster: s(90),
            repo_index: s(2),
            image_load: s(60),
            helm: BTreeMap::from([("istio-base", s(8)), ("kps", s(20))]),
            helm_default: s(5),
            pods: pods.into_iter().collect(),
            pod_default: s(15),
            pod_exit: s(1),
            policy_push: s(1),
        }
    }

    /// How long a helm command for `release` takes.
    pub fn helm(&self, release: &str) -> Duration {
        self.helm.get(release).copied().unwrap_or(self.helm_default)
    }

    /// How long a pod of `workload` takes from scheduling to Ready.
    pub fn pod(&self, workload: &str) -> Duration {
        self.pods.get(workload).copied().unwrap_or(self.pod_default)
    }
}
