//! The parts of a scenario: cluster, existing cluster, versions, ingress, timeouts, probes and
//! traffic, each with its defaults.

use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Architecture, DEFAULT_SCENARIO, Format, span::Span};

/// Most worker nodes meshcheck creates: each one is a container on the CI runner, and more do not
/// fit one.
pub(super) const MAX_WORKERS: u32 = 8;

/// Cluster shape for `kind` and `k3d`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Number of control-plane (kind) or server (k3d) nodes; meshcheck creates exactly one.
    #[serde(default = "one")]
    #[schemars(range(max = u32::MAX))]
    pub control_planes: u32,
    /// Number of worker (kind) or agent (k3d) nodes, at most 8.
    #[serde(default = "two")]
    #[schemars(range(max = u32::MAX))]
    pub workers: u32,
    /// Expected node architecture; `auto` means the host's.
    #[serde(default)]
    pub architecture: Architecture,
    /// Node image, required for kind and k3d: `kindest/node:vX.Y.Z@sha256:<digest>` for kind,
    /// `rancher/k3s:vX.Y.Z-k3sN[@sha256:<digest>]` for k3d, optionally behind a registry prefix. Its
    /// Kubernetes version must be one the Istio release supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_image: Option<String>,
    /// A `docker save` archive of the images the run starts (`meshcheck images --in-cluster`),
    /// loaded into every node right after the cluster is created, so a CI cache replaces the
    /// pulls. Save single-platform images: importing multi-arch archives fails with Docker's
    /// containerd image store (field guide §1.3). Save each image by `name:tag`: a save of a
    /// digest reference keeps no name, so the node would pull it anyway; with an archive, Cilium's
    /// pods name its images by tag (the copy in the archive is the one pulled by digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_archive: Option<String>,
    /// A second archive, of the images only workloads run (`meshcheck images --in-cluster
    /// --workloads`; `image_archive` then holds `--every-node`): kind loads it into the worker
    /// nodes only, where those pods run (into every node when there is no worker); k3d into every
    /// node. Saves the disk of one copy per control-plane node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_image_archive: Option<String>,
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn two() -> u32 {
    2
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            control_planes: 1,
            workers: 2,
            architecture: Architecture::Auto,
            node_image: None,
            image_archive: None,
            workload_image_archive: None,
        }
    }
}

/// An existing cluster.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExistingSpec {
    /// Path of the kubeconfig; `~` is expanded. Defaults to `$KUBECONFIG`, then `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Context to use; defaults to the kubeconfig's current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Whether meshcheck may install Cilium-independent parts (mesh, observability, bookinfo).
    /// Without `install: true` it installs none of them: it adds only its two curl test clients, in
    /// namespaces it creates and labels as the run's own, and runs the checks against what is there.
    /// Either way cleanup deletes exactly the namespaces the run created, never one that existed;
    /// with `install: true` it first uninstalls the releases it installed and deletes by uid what
    /// it created outside those namespaces (the CRDs helm keeps among them).
    #[serde(default)]
    pub install: bool,
    /// Where the cluster's Prometheus answers, as `namespace/service:port`, when it was not set up
    /// by meshcheck's guide (default `monitoring/prom-prometheus:9090`, kube-prometheus-stack with
    /// `fullnameOverride: prom`; without it kube-prometheus-stack 77.0.0 names it
    /// `<fullname>-prometheus` on port 9090, the fullname being the release name when it contains
    /// `kube-prometheus-stack`, else `<release>-kube-prometheus-stack`, cut to 26 characters:
    /// templates/_helpers.tpl, templates/prometheus/service.yaml). The metrics, probes and
    /// footprint checks read it through the API server's service proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::ServiceRef.pattern()))]
    pub prometheus: Option<String>,
    /// Where the cluster's Tempo answers its HTTP API (default `tempo/tempo:3200`, the grafana
    /// tempo chart as release `tempo` in namespace `tempo`). The traces checks read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::ServiceRef.pattern()))]
    pub tempo: Option<String>,
    /// Where the cluster's Kiali answers (default `istio-system/kiali:20001`, the Kiali CR's
    /// `deployment.instance_name` and `server.port` defaults); its web root stays `/kiali`. The
    /// kiali check reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::ServiceRef.pattern()))]
    pub kiali: Option<String>,
}

/// Versions of everything the run installs. All are validated at load time; each one left out
/// takes the pin of the embedded default scenario (`scenarios/ambient-kind.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Versions {
    /// Cilium Helm chart version, e.g. `1.19.6`.
    #[schemars(regex(pattern = Format::ChartVersion.pattern()))]
    pub cilium: String,
    /// Istio release (charts and bookinfo), 1.24 or newer, e.g. `1.30.3`.
    #[schemars(regex(pattern = Format::IstioVersion.pattern()))]
    pub istio: String,
    /// Istio release to upgrade to for a release gate; newer than `istio` by at most one minor.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::IstioVersion.pattern()))]
    pub upgrade_to: Option<String>,
    /// Gateway API CRD bundle, e.g. `v1.5.1` (pin it to the Istio release, field guide §4.2).
    #[schemars(regex(pattern = Format::GatewayApiVersion.pattern()))]
    pub gateway_api: String,
    /// kube-prometheus-stack chart version.
    #[schemars(regex(pattern = Format::ChartVersion.pattern()))]
    pub kube_prometheus_stack: String,
    /// Grafana Tempo (single binary) chart version.
    #[schemars(regex(pattern = Format::ChartVersion.pattern()))]
    pub tempo: String,
    /// kiali-operator chart version.
    #[schemars(regex(pattern = Format::ChartVersion.pattern()))]
    pub kiali: String,
    /// Istio release whose bookinfo sample is deployed; defaults to `istio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::IstioVersion.pattern()))]
    pub bookinfo: Option<String>,
}

impl Default for Versions {
    /// The pins of the embedded default scenario: one file says which releases meshcheck runs by
    /// default, and a scenario that changes only Istio writes only `versions: {istio: …}`.
    fn default() -> Self {
        /// The pins exactly as the embedded file writes them; every one must be there.
        #[derive(Deserialize)]
        struct Pins {
            cilium: String,
            istio: String,
            gateway_api: String,
            kube_prometheus_stack: String,
            tempo: String,
            kiali: String,
        }
        #[derive(Deserialize)]
        struct Embedded {
            versions: Pins,
        }
        static PINS: LazyLock<Pins> = LazyLock::new(|| {
            serde_saphyr::from_str::<Embedded>(DEFAULT_SCENARIO)
                .expect("the embedded default scenario pins every version")
                .versions
        });
        Versions {
            cilium: PINS.cilium.clone(),
            istio: PINS.istio.clone(),
            upgrade_to: None,
            gateway_api: PINS.gateway_api.clone(),
            kube_prometheus_stack: PINS.kube_prometheus_stack.clone(),
            tempo: PINS.tempo.clone(),
            kiali: PINS.kiali.clone(),
            bookinfo: None,
        }
    }
}

impl Versions {
    /// The bookinfo release to deploy.
    pub fn bookinfo(&self) -> &str {
        self.bookinfo.as_deref().unwrap_or(&self.istio)
    }
}

/// Host access to the ingress gateway.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngressSpec {
    /// Port on 127.0.0.1 of the host that kind/k3d map to the gateway's NodePort. Unset, a kind or
    /// k3d run takes a free port when it starts, so that two runs of one scenario on one machine do
    /// not collide; an existing cluster's default `url` then uses 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub host_port: Option<u16>,
    /// NodePort of the gateway's `http2` port, in Kubernetes' default NodePort range 30000–32767
    /// (kubernetes.io docs/concepts/services-networking/service, "type: NodePort").
    #[serde(default = "default_node_port")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: u16,
    /// For `existing` clusters: the http(s) URL at which the ingress gateway answers, e.g.
    /// `http://192.0.2.10:80`. Defaults to `http://127.0.0.1:<host_port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = Format::Url.pattern()))]
    pub url: Option<String>,
}

/// The host port a plan shows, and an existing cluster's default URL uses, when the scenario
/// fixes none.
pub const DEFAULT_HOST_PORT: u16 = 8080;

pub(super) fn default_node_port() -> u16 {
    30080
}

impl Default for IngressSpec {
    fn default() -> Self {
        IngressSpec { host_port: None, node_port: default_node_port(), url: None }
    }
}

impl IngressSpec {
    /// Base URL of the ingress gateway as seen from the host.
    pub fn base_url(&self) -> String {
        self.url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{}", self.port()))
    }

    /// The host port: the scenario's, else [`DEFAULT_HOST_PORT`] (a run has chosen one by then).
    pub fn port(&self) -> u16 {
        self.host_port.unwrap_or(DEFAULT_HOST_PORT)
    }
}

/// Deadlines. Written as `300s`, `10m`, `1h` or `1m30s`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Creating the cluster and bringing Cilium up.
    #[serde(default = "d_provision")]
    pub provision: Span,
    /// One Helm release or manifest set, including its rollout wait.
    #[serde(default = "d_install")]
    pub install: Span,
    /// Bookinfo until every deployment is available.
    #[serde(default = "d_deploy")]
    pub deploy: Span,
    /// One check's collector.
    #[serde(default = "d_check")]
    pub check: Span,
    /// Preflight commands (`docker info`, `kind version`, …).
    #[serde(default = "d_preflight")]
    pub preflight: Span,
    /// Multiplier on the fixed waits that give a cluster time to settle before evidence is read:
    /// policy propagation (mtls), two scrape intervals (metrics), Kiali's graph window, the probe
    /// periods watched under default-deny (probes), Tempo's polling (traces), the pacing of warm-up
    /// requests and the upgrade's `after` phase. 1 is tuned for kind/k3d on a CI runner; raise it
    /// for a slow cluster. The rehearsals against the simulated cluster (suites/sim), whose
    /// clocks run faster, set it far below 1.
    #[serde(default = "d_settle_scale")]
    #[schemars(extend(
        "exclusiveMinimum" = 0,
        "maximum" = 100,
        // `.nan` is a number to YAML readers in Python and JavaScript, and NaN passes every
        // comparison of a validator that tests `x > max`; it does not pass this one. (The loader,
        // like serde_json, holds non-finite numbers as null and rejects them by type.)
        "not" = { "exclusiveMaximum": 0, "description": "NaN is not a number here" }
    ))]
    pub settle_scale: f64,
}

pub(super) fn d_provision() -> Span {
    Span::secs(900)
}

pub(super) fn d_install() -> Span {
    Span::secs(600)
}

pub(super) fn d_deploy() -> Span {
    Span::secs(600)
}

pub(super) fn d_check() -> Span {
    Span::secs(300)
}

pub(super) fn d_preflight() -> Span {
    Span::secs(20)
}

pub(super) fn d_settle_scale() -> f64 {
    1.0
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            provision: d_provision(),
            install: d_install(),
            deploy: d_deploy(),
            check: d_check(),
            preflight: d_preflight(),
            settle_scale: d_settle_scale(),
        }
    }
}

/// Settings of the `probes` check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeOptions {
    /// Run the negative control: remove the Cilium probe policy under default-deny and require
    /// that probes then fail. Proves the check can see the problem it guards against.
    #[serde(default)]
    pub negative_control: bool,
    /// How many probe periods to wait under default-deny, 3 to 100 (each one is a wait of the
    /// longest probe period in the namespace).
    #[serde(default = "three")]
    #[schemars(range(min = 3, max = 100))]
    pub periods: u32,
}

pub(super) fn three() -> u32 {
    3
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { negative_control: false, periods: 3 }
    }
}

/// Settings of the `l4-authorization` check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationOptions {
    /// How soon after the AuthorizationPolicy is applied ztunnel must refuse the client it does
    /// not allow (default 10s: istiod delays a push by at most `PILOT_DEBOUNCE_MAX`, 10 s,
    /// istio/istio@1.30.3 pilot/pkg/features/tuning.go). Scaled by `timeouts.settle_scale`.
    #[serde(default = "d_propagation_budget")]
    pub propagation_budget: Span,
}

pub(super) fn d_propagation_budget() -> Span {
    Span::secs(10)
}

impl Default for AuthorizationOptions {
    fn default() -> Self {
        AuthorizationOptions { propagation_budget: d_propagation_budget() }
    }
}

/// How Kiali authenticates the people who use it, as the guide offers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KialiAuth {
    /// No login (`auth.strategy: anonymous`): the kiali check reads the API through the API
    /// server's service proxy.
    #[default]
    Anonymous,
    /// OpenID Connect against a Keycloak meshcheck deploys in-cluster (`auth.strategy: openid`):
    /// the kiali check proves that an anonymous call is refused, then logs in through the
    /// authorization-code flow as a browser would and reads the graph with that session.
    Openid,
}

impl KialiAuth {
    /// The Kiali CR's `auth.strategy` value (kiali v2.29.0 config/config.go `AuthStrategyAnonymous`,
    /// `AuthStrategyOpenId`).
    pub fn strategy(self) -> &'static str {
        match self {
            KialiAuth::Anonymous => "anonymous",
            KialiAuth::Openid => "openid",
        }
    }
}

/// Settings of the Kiali meshcheck installs and checks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KialiOptions {
    /// `anonymous` (default) or `openid` (Keycloak in-cluster, the guide's optional configuration).
    #[serde(default)]
    pub auth: KialiAuth,
}

/// Settings of the traffic generator that runs during an upgrade.
///
/// Before and after the upgrade no request may fail. During it, istio.io's "Upgrade with Helm" for
/// ambient mode (docs/ambient/upgrade/helm) says an in-place ztunnel upgrade "will briefly disrupt
/// all ambient mesh traffic on the node", and the single-replica gateway restarts: the disruption is
/// measured and held against a budget whose defaults allow ten seconds of it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficOptions {
    /// Requests per second sent to productpage through the gateway, 1 to 1000.
    #[serde(default = "twenty")]
    #[schemars(range(min = 1, max = 1000))]
    pub rate_per_second: u32,
    /// How many requests may fail during the upgrade (default 200: ten seconds at 20 per second).
    #[serde(default = "d_failure_budget")]
    #[schemars(range(max = u64::MAX))]
    pub failure_budget: u64,
    /// The longest stretch of failing requests allowed during the upgrade (default 10s).
    #[serde(default = "d_max_outage")]
    pub max_outage: Span,
    /// Per-request timeout; a request slower than this counts as failed.
    #[serde(default = "d_request")]
    pub request_timeout: Span,
    /// How long traffic flows before the upgrade starts and after it ends (default 30s), so the
    /// baseline and the recovery both have data.
    #[serde(default = "d_settle")]
    pub settle: Span,
    /// The least share of its requests each step of the upgrade chain must answer, 0 to 1, by
    /// helm release. A step not named keeps its default ([`DEFAULT_STEP_MIN_SUCCESS`]).
    #[serde(default)]
    pub step_min_success: StepRules,
}

/// [`TrafficOptions::step_min_success`]: a share from 0 to 1 per upgrade step, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRules {
    /// `helm upgrade istio-base` and the CRDs (default 1).
    #[serde(rename = "istio-base", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub istio_base: Option<f64>,
    /// istiod's rollout (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub istiod: Option<f64>,
    /// istio-cni's DaemonSet rollout (default 1).
    #[serde(rename = "istio-cni", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub istio_cni: Option<f64>,
    /// ztunnel's DaemonSet rollout (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub ztunnel: Option<f64>,
    /// The gateway's rollout (no default: the whole upgrade's budget holds it).
    #[serde(rename = "istio-ingress", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub istio_ingress: Option<f64>,
}

/// The least share of requests each upgrade step answers unless the scenario says otherwise. The
/// gateway's step (one replica restarting) has none: the whole upgrade's budget holds it.
/// - `ztunnel`: 90 %, Istio's own bar for a ztunnel restart under traffic (istio/istio 1.30.3
///   tests/integration/ambient/baseline_test.go TestZtunnelRestart: `successThreshold = .9`, a
///   request every 50 ms, "TODO(istio#51952) make this 1.0"); istio.io docs/ambient/upgrade/helm:
///   an in-place ztunnel upgrade "may involve a short downtime".
/// - `istio-cni`: 100 %: the CNI node agent "is not part of the data plane or control plane"
///   (same docs), so its upgrade must not touch traffic of enrolled pods.
/// - `istio-base`, `istiod`: 100 %: CRDs and the control plane; ztunnel and the gateway keep
///   serving the configuration they hold while istiod restarts.
pub const DEFAULT_STEP_MIN_SUCCESS: &[(&str, f64)] =
    &[("istio-base", 1.0), ("istiod", 1.0), ("istio-cni", 1.0), ("ztunnel", 0.9)];

impl TrafficOptions {
    /// Each upgrade step's rule: the scenario's, else the default.
    pub fn step_rules(&self) -> std::collections::BTreeMap<String, f64> {
        let mut rules: std::collections::BTreeMap<String, f64> =
            DEFAULT_STEP_MIN_SUCCESS.iter().map(|(s, m)| (s.to_string(), *m)).collect();
        let r = &self.step_min_success;
        let given = [
            ("istio-base", r.istio_base),
            ("istiod", r.istiod),
            ("istio-cni", r.istio_cni),
            ("ztunnel", r.ztunnel),
            ("istio-ingress", r.istio_ingress),
        ];
        rules.extend(given.into_iter().filter_map(|(s, m)| m.map(|m| (s.to_string(), m))));
        rules
    }
}

pub(super) fn twenty() -> u32 {
    20
}

pub(super) fn d_failure_budget() -> u64 {
    200
}

pub(super) fn d_max_outage() -> Span {
    Span::secs(10)
}

pub(super) fn d_request() -> Span {
    Span::secs(5)
}

pub(super) fn d_settle() -> Span {
    Span::secs(30)
}

impl Default for TrafficOptions {
    fn default() -> Self {
        TrafficOptions {
            rate_per_second: twenty(),
            failure_budget: d_failure_budget(),
            max_outage: d_max_outage(),
            request_timeout: d_request(),
            settle: d_settle(),
            step_min_success: StepRules::default(),
        }
    }
}
