//! The scenario: one YAML file that says what a run provisions, installs, deploys and checks.
//!
//! Parsing is strict on purpose. A typo in a scenario (`socketlb`, `upgradeTo`) that were silently
//! ignored would make a release gate test something other than what its author believes, so unknown
//! keys are rejected with the allowed ones listed, every error names the field, the file, line and
//! column and what to write instead, and versions and images are validated before anything touches
//! a cluster.
//!
//! The rules live in one place: the JSON Schema generated from the types below (`meshcheck
//! schema`, for editors). The loader reads the file into a located YAML tree ([`yaml`]), checks the
//! tree against that same schema ([`validate`]), and only then builds the typed [`Scenario`]. The
//! only rules outside the schema compare two versions with each other (an upgrade must go forward
//! by at most one minor release), which JSON Schema cannot express.

mod format;
mod validate;
mod yaml;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

pub use self::{
    format::Format,
    validate::{ANNOTATION_KEYWORDS, ENFORCED_KEYWORDS},
};
use crate::common::catalog;

/// The default scenario, compiled into the binary so that `cargo test --test conformance` needs
/// no configuration. It is the same file as `scenarios/ambient-kind.yaml` (a test pins that).
pub const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/ambient-kind.yaml");

/// Where the embedded default scenario says it came from, in error messages and reports.
pub const DEFAULT_ORIGIN: &str = "<embedded scenarios/ambient-kind.yaml>";

/// Environment variable that selects a scenario file for the conformance suite.
pub const SCENARIO_ENV: &str = "MESHCHECK_SCENARIO";

/// Why a scenario could not be used. Every variant maps to exit code 2 (bad input).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file does not exist.
    #[error("scenario file not found: tried {tried}")]
    NotFound {
        /// The path that was tried, made absolute where possible.
        tried: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario: bad YAML, an unknown or missing field, a value out of
    /// range. The message says what to write instead.
    #[error("{origin}:{line}:{column}: {}{message}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Invalid {
        /// File path or embedded-scenario marker.
        origin: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// Dotted path of the offending field (`cluster.workers`), if the problem has one.
        field: Option<String>,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// Which kind of cluster a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// A throw-away kind cluster (Docker or Podman).
    Kind,
    /// A throw-away k3d cluster (k3s in Docker).
    K3d,
    /// A cluster that already exists, reached through a kubeconfig; never created or deleted.
    Existing,
}

impl Provider {
    /// The lowercase name used in scenarios, cluster names and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Kind => "kind",
            Provider::K3d => "k3d",
            Provider::Existing => "existing",
        }
    }
}

/// CPU architecture of the cluster nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The architecture of the host that runs meshcheck.
    #[default]
    Auto,
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

impl Architecture {
    /// The architecture of this host in Kubernetes/OCI spelling, if it is one kind and k3d support.
    pub fn host() -> Option<Architecture> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Architecture::Amd64),
            "aarch64" => Some(Architecture::Arm64),
            _ => None,
        }
    }

    /// Resolves `auto` to the host architecture.
    pub fn resolve(self) -> Option<Architecture> {
        match self {
            Architecture::Auto => Architecture::host(),
            other => Some(other),
        }
    }

    /// Kubernetes/OCI spelling (`amd64`, `arm64`), or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Auto => "auto",
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = rules_between_fields)]
pub struct Scenario {
    /// Short name; becomes part of cluster names and report titles. 1–30 characters of a-z, 0-9, `-`.
    #[schemars(regex(pattern = Format::Name.pattern()))]
    pub name: String,
    /// What this scenario is for.
    #[serde(default)]
    pub description: String,
    /// Which kind of cluster to use.
    pub provider: Provider,
    /// Shape of a cluster that meshcheck creates (ignored for `existing`, except `architecture`).
    #[serde(default)]
    pub cluster: ClusterSpec,
    /// How to reach a cluster that already exists. Required for `provider: existing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingSpec>,
    /// Pinned versions of everything the run installs. Each defaults to the embedded default
    /// scenario's pin, so a scenario names only what it changes.
    #[serde(default)]
    pub versions: Versions,
    /// How traffic reaches the ingress gateway from the host.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// Which checks run, by name. Defaults to every registered check.
    #[serde(default = "default_checks")]
    #[schemars(schema_with = "checks_schema")]
    pub checks: Vec<String>,
    /// Deadlines of the phases, waits and commands.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Settings of the probes-under-default-deny check.
    #[serde(default)]
    pub probes: ProbeOptions,
    /// Settings of the traffic generator used during upgrades.
    #[serde(default)]
    pub traffic: TrafficOptions,
    /// URL prefix → replacement prefix, for every URL the run fetches itself: the upstream
    /// manifests it applies (bookinfo, the Gateway API CRDs), the chart repositories it adds to
    /// helm, and the registry indexes image-architectures reads (`https://quay.io/` →
    /// `https://mirror.example/quay.io/`). For runners without internet access; the longest
    /// matching prefix wins. Images the nodes pull are configured in the container runtime, not here.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(schema_with = "mirrors_schema")]
    pub mirrors: std::collections::BTreeMap<String, String>,
}

fn default_checks() -> Vec<String> {
    catalog::CATALOG.iter().filter(|c| c.default_on).map(|c| c.name.to_string()).collect()
}

fn checks_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = catalog::CATALOG.iter().map(|c| c.name).collect();
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "string", "enum": names },
        "minItems": 1,
        "uniqueItems": true,
    })
}

fn mirrors_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let url = Format::Url.pattern();
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": url },
        "additionalProperties": { "type": "string", "pattern": url },
    })
}

/// The rules between fields, as JSON Schema conditionals (`if`/`then`). Each `then` carries a
/// `description`: the loader appends it to the message, editors show it on hover.
fn rules_between_fields(schema: &mut schemars::Schema) {
    let provider_is =
        |names: &[&str]| json!({ "required": ["provider"], "properties": { "provider": { "enum": names } } });
    let created = provider_is(&["kind", "k3d"]);
    let node_image =
        |rule: serde_json::Value| json!({ "properties": { "cluster": { "properties": { "node_image": rule } } } });
    let mut rules = vec![
        json!({
            "if": provider_is(&["existing"]),
            "then": {
                "required": ["existing"],
                "properties": { "existing": { "type": "object" } },
                "description": "provider `existing` needs an `existing:` section (kubeconfig, context, install); \
                                `existing: {}` takes the defaults",
            },
        }),
        json!({
            "if": created,
            "then": {
                "properties": { "existing": false },
                "description": "`existing:` is only for provider `existing`; remove it or change the provider",
            },
        }),
        json!({
            "if": created,
            "then": {
                "required": ["cluster"],
                "properties": { "cluster": {
                    "required": ["node_image"],
                    "properties": { "node_image": { "type": "string" } },
                } },
                "description": "kind and k3d clusters need `cluster.node_image`, pinned to a release, e.g. \
                                kindest/node:v1.35.0@sha256:<digest> or rancher/k3s:v1.35.5-k3s1",
            },
        }),
        json!({ "if": provider_is(&["kind"]), "then": node_image(json!({ "pattern": Format::KindNodeImage.pattern() })) }),
        json!({ "if": provider_is(&["k3d"]), "then": node_image(json!({ "pattern": Format::K3sNodeImage.pattern() })) }),
        json!({
            "if": created,
            "then": {
                "properties": { "cluster": { "properties": { "control_planes": { "const": 1 } } } },
                "description": "meshcheck creates exactly one control-plane node (Cilium's k8sServiceHost names it)",
            },
        }),
        json!({
            "if": created,
            "then": {
                "properties": { "cluster": { "properties": { "workers": { "maximum": MAX_WORKERS } } } },
                "description": "that is more nodes than a CI runner holds",
            },
        }),
    ];
    let default_minor = Release::parse(&Versions::default().istio).map(|r| r.minor);
    for &(minor, lo, hi) in ISTIO_K8S_SUPPORT {
        let is_minor = json!({ "pattern": Format::IstioMinor(minor).pattern() });
        // Without `versions.istio` the default applies, so the default's window holds then too.
        let istio_is_minor = if default_minor == Some(minor) {
            json!({ "properties": { "versions": { "properties": { "istio": is_minor } } } })
        } else {
            json!({ "required": ["versions"], "properties": { "versions": { "required": ["istio"], "properties": { "istio": is_minor } } } })
        };
        rules.push(json!({
            "if": { "allOf": [created, istio_is_minor] },
            "then": {
                "properties": { "cluster": { "properties": { "node_image": { "pattern": Format::KubernetesMinors(lo, hi).pattern() } } } },
                "description": format!(
                    "outside what Istio 1.{minor} supports: Kubernetes 1.{lo} to 1.{hi} (field guide §4.3); \
                     pick a node image in that range"
                ),
            },
        }));
    }
    rules.push(json!({
        "if": { "required": ["checks"], "properties": { "checks": { "contains": { "const": "traffic-continuity" } } } },
        "then": {
            "required": ["versions"],
            "properties": { "versions": {
                "required": ["upgrade_to"],
                "properties": { "upgrade_to": { "type": "string" } },
            } },
            "description": "`traffic-continuity` measures traffic during an upgrade; set versions.upgrade_to",
        },
    }));
    schema.insert("allOf".into(), rules.into());
}

/// Most worker nodes meshcheck creates: each one is a container on the CI runner, and more do not
/// fit one.
const MAX_WORKERS: u32 = 8;

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
    /// containerd image store (field guide §1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_archive: Option<String>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
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
    /// Either way cleanup deletes exactly the namespaces the run created, never one that existed.
    #[serde(default)]
    pub install: bool,
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
    /// Port on 127.0.0.1 of the host that kind/k3d map to the gateway's NodePort.
    #[serde(default = "default_host_port")]
    #[schemars(range(min = 1))]
    pub host_port: u16,
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

fn default_host_port() -> u16 {
    8080
}
fn default_node_port() -> u16 {
    30080
}

impl Default for IngressSpec {
    fn default() -> Self {
        IngressSpec { host_port: default_host_port(), node_port: default_node_port(), url: None }
    }
}

impl IngressSpec {
    /// Base URL of the ingress gateway as seen from the host.
    pub fn base_url(&self) -> String {
        self.url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{}", self.host_port))
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

fn d_provision() -> Span {
    Span::secs(900)
}
fn d_install() -> Span {
    Span::secs(600)
}
fn d_deploy() -> Span {
    Span::secs(600)
}
fn d_check() -> Span {
    Span::secs(300)
}
fn d_preflight() -> Span {
    Span::secs(20)
}
fn d_settle_scale() -> f64 {
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

fn three() -> u32 {
    3
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { negative_control: false, periods: 3 }
    }
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
}

fn twenty() -> u32 {
    20
}
fn d_failure_budget() -> u64 {
    200
}
fn d_max_outage() -> Span {
    Span::secs(10)
}
fn d_request() -> Span {
    Span::secs(5)
}
fn d_settle() -> Span {
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
        }
    }
}

/// A duration written the way Helm and kubectl write them (`90s`, `10m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// A span of whole seconds.
    pub const fn secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    /// The longest span a scenario may give: a week. Longer ones are typos, and adding them to
    /// instants or multiplying them overflowed (a panic in `plan` and after `cluster create`).
    pub const MAX: Span = Span::secs(7 * 24 * 3600);

    /// Parses `1h2m3s`-style text: hours, minutes and seconds in that order, each at most once,
    /// positive and at most [`Span::MAX`]; the error says how to write it instead.
    pub fn parse(text: &str) -> Result<Span, String> {
        format::check_duration(text).map(|secs| Span(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Span {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": Format::Duration.pattern(),
            "description": "A duration such as 90s, 10m or 1h30m: hours, minutes, seconds in that order, at most 168h."
        })
    }
}

/// A release version `X.Y.Z` (optionally with a `v` prefix and a pre-release suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Release {
    /// Parses `1.30.3`, `v1.5.1` or `1.31.0-rc.1` (the suffix is ignored for ordering).
    pub fn parse(text: &str) -> Option<Release> {
        let core = text.strip_prefix('v').unwrap_or(text);
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let parse = |p: Option<&str>| -> Option<u64> {
            let p = p?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            p.parse().ok()
        };
        let r = Release { major: parse(parts.next())?, minor: parse(parts.next())?, patch: parse(parts.next())? };
        parts.next().is_none().then_some(r)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Kubernetes minor versions each Istio minor officially supports (field guide §4.3).
const ISTIO_K8S_SUPPORT: &[(u64, u64, u64)] =
    &[(24, 28, 31), (25, 29, 32), (26, 29, 33), (27, 29, 33), (28, 29, 34), (29, 31, 35), (30, 32, 36)];

impl Scenario {
    /// Loads a scenario from a file. A missing file says which path was tried.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ScenarioError::NotFound { tried: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()) }
            } else {
                ScenarioError::Read { path: path.to_path_buf(), source }
            }
        })?;
        let origin = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() as u64 + 1;
            let byte = e.as_bytes()[valid.len()];
            ScenarioError::Invalid {
                origin: origin.clone(),
                line,
                column,
                field: None,
                message: format!("the file is not UTF-8 text (byte 0x{byte:02x} here); save it as UTF-8"),
            }
        })?;
        Scenario::from_yaml(&text, &origin)
    }

    /// Parses and validates scenario YAML; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |line, column, field, message| ScenarioError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            field,
            message,
        };
        let root = yaml::parse(text).map_err(|e| invalid(e.line, e.column, e.field, e.message))?;
        validate::Validator::new(&SCHEMA, text)
            .check(&root)
            .map_err(|v| invalid(v.line, v.column, v.field, v.message))?;
        let at = |path: &[&str]| locate(&root, text, path).unwrap_or((root.line, root.column));
        // The schema accepted the file, so this conversion only fails if the types and their
        // schema disagree; the corpus tests in suites/offline/scenarios.rs keep them in step.
        let scenario: Scenario = serde_json::from_value(root.to_json(text)).map_err(|e| {
            let (line, column) = at(&[]);
            invalid(line, column, None, format!("the scenario does not fit meshcheck's types ({e})"))
        })?;
        scenario.check_upgrade().map_err(|message| {
            let (line, column) = at(&["versions", "upgrade_to"]);
            invalid(line, column, Some("versions.upgrade_to".into()), message)
        })?;
        Ok(scenario)
    }

    /// The embedded default scenario.
    pub fn embedded_default() -> Scenario {
        Scenario::from_yaml(DEFAULT_SCENARIO, DEFAULT_ORIGIN).expect("the embedded default scenario is valid")
    }

    /// The scenario chosen by `MESHCHECK_SCENARIO`, or the embedded default.
    pub fn from_env() -> Result<Scenario, ScenarioError> {
        match std::env::var_os(SCENARIO_ENV) {
            Some(p) if !p.is_empty() => Scenario::from_path(Path::new(&p)),
            _ => Ok(Scenario::embedded_default()),
        }
    }

    /// The rules JSON Schema cannot express because they compare two fields' values: an upgrade
    /// goes to a newer Istio, by at most one minor release (istio.io docs/ambient/upgrade/helm:
    /// istio-cni and ztunnel at 1.x work with control plane 1.x and 1.x+1).
    fn check_upgrade(&self) -> Result<(), String> {
        let v = &self.versions;
        let (Some(target), Some(istio)) = (v.upgrade_to.as_deref().and_then(Release::parse), Release::parse(&v.istio))
        else {
            return Ok(());
        };
        if target <= istio {
            return Err(format!("`{target}` must be newer than versions.istio `{istio}`"));
        }
        if target.minor > istio.minor + 1 {
            return Err(format!(
                "`{target}` skips a minor release; in-place ambient upgrades go one minor at a time from \
                 versions.istio `{istio}` (istio-cni and ztunnel at 1.x work with control plane 1.x and 1.x+1)"
            ));
        }
        Ok(())
    }

    /// The Kubernetes release the node image runs, when meshcheck creates the cluster.
    pub fn kubernetes_version(&self) -> Option<Release> {
        node_image_kubernetes(self.provider, self.cluster.node_image.as_deref()?).ok()
    }

    /// The scenario as YAML-equivalent JSON, for `run.json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("scenario serializes")
    }

    /// `url` with the longest matching `mirrors` prefix replaced.
    pub fn mirrored(&self, url: &str) -> String {
        self.mirrors
            .iter()
            .filter(|(from, _)| url.starts_with(from.as_str()))
            .max_by_key(|(from, _)| from.len())
            .map(|(from, to)| format!("{to}{}", &url[from.len()..]))
            .unwrap_or_else(|| url.to_string())
    }

    /// A fixed settle wait scaled by `timeouts.settle_scale`.
    pub fn settle(&self, wait: Duration) -> Duration {
        wait.mul_f64(self.timeouts.settle_scale)
    }

    /// Whether a check is enabled in this scenario.
    pub fn runs_check(&self, name: &str) -> bool {
        self.checks.iter().any(|c| c == name)
    }

    /// Whether meshcheck installs the mesh and the sample (always, except `existing` without `install`).
    pub fn installs(&self) -> bool {
        match &self.existing {
            Some(e) => e.install,
            None => true,
        }
    }
}

/// The Kubernetes release of a node image the schema accepted for `provider`.
fn node_image_kubernetes(provider: Provider, image: &str) -> Result<Release, String> {
    let format = match provider {
        Provider::Kind => Format::KindNodeImage,
        Provider::K3d => Format::K3sNodeImage,
        Provider::Existing => return Err("existing clusters have no node image".into()),
    };
    format.check(image)?;
    let reference = image.split('@').next().unwrap_or(image);
    let tag = reference.rsplit_once(':').map_or(reference, |(_, tag)| tag);
    Release::parse(tag.split("-k3s").next().unwrap_or(tag))
        .ok_or_else(|| format!("`{tag}` names no Kubernetes release"))
}

/// Where the value at `path` was written.
fn locate(root: &yaml::Node, text: &str, path: &[&str]) -> Option<(u64, u64)> {
    let mut node = root;
    for key in path {
        let yaml::Value::Map(entries) = &node.value else { return None };
        node = &entries.iter().find(|(k, _)| k.key_text(text).as_deref() == Some(key))?.1;
    }
    Some((node.line, node.column))
}

/// The scenario format as JSON Schema, built once: the loader checks every file against it.
static SCHEMA: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(Scenario)).expect("schema serializes"));

/// The JSON Schema of the scenario format, for editors (`meshcheck schema`). The loader checks
/// every scenario against this same document, so what an editor accepts, meshcheck accepts,
/// except an `upgrade_to` that is not newer than `istio` by at most one minor release.
pub fn json_schema() -> serde_json::Value {
    SCHEMA.clone()
}
