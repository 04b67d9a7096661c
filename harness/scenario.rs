//! The scenario: one YAML file that says what a run provisions, installs, deploys and checks.
//!
//! Parsing is strict on purpose. A typo in a scenario (`socketlb`, `upgradeTo`) that were silently
//! ignored would make a release gate test something other than what its author believes, so unknown
//! keys are rejected with the allowed ones listed, every error names the file, line and column, and
//! versions and images are validated before anything touches a cluster.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::catalog;

/// The default scenario, compiled into the binary so that `cargo test --test conformance` needs
/// no configuration. It is the same file as `scenarios/ambient-kind.yaml` (a test pins that).
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/ambient-kind.yaml");

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
    /// The YAML is malformed or does not match the scenario format.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// File path or embedded-scenario marker.
        origin: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong, including the allowed keys for an unknown key.
        message: String,
    },
    /// The YAML parsed but a value is not acceptable.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// File path or embedded-scenario marker.
        origin: String,
        /// Dotted path of the offending field.
        field: String,
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
pub struct Scenario {
    /// Short name; becomes part of cluster names and report titles.
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
    /// Pinned versions of everything the run installs.
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
    /// manifests it applies (bookinfo, the Gateway API CRDs) and the registry indexes
    /// image-architectures reads (`https://quay.io/` → `https://mirror.example/quay.io/`). For
    /// runners without internet access; the longest matching prefix wins. Charts and images
    /// pulled by helm and the nodes are configured in those tools, not here.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub mirrors: std::collections::BTreeMap<String, String>,
}

fn default_checks() -> Vec<String> {
    catalog::CATALOG.iter().filter(|c| c.default_on).map(|c| c.name.to_string()).collect()
}

fn checks_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let _ = generator;
    let names: Vec<&str> = catalog::CATALOG.iter().map(|c| c.name).collect();
    schemars::json_schema!({
        "type": "array",
        "items": { "enum": names },
        "uniqueItems": true,
        "description": "Check names; see `meshcheck plan` for what each does."
    })
}

/// Cluster shape for `kind` and `k3d`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Number of control-plane (kind) or server (k3d) nodes.
    #[serde(default = "one")]
    pub control_planes: u32,
    /// Number of worker (kind) or agent (k3d) nodes.
    #[serde(default = "two")]
    pub workers: u32,
    /// Expected node architecture; `auto` means the host's.
    #[serde(default)]
    pub architecture: Architecture,
    /// Node image: `kindest/node:vX.Y.Z[@sha256:…]` for kind, `rancher/k3s:vX.Y.Z-k3sN` for k3d.
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

/// Versions of everything the run installs. All are validated at load time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    /// Cilium Helm chart version, e.g. `1.19.6`.
    pub cilium: String,
    /// Istio release (charts and bookinfo), e.g. `1.30.3`.
    pub istio: String,
    /// Istio release to upgrade to for a release gate; must be newer than `istio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_to: Option<String>,
    /// Gateway API CRD bundle, e.g. `v1.5.1` (pin it to the Istio release, field guide §4.2).
    pub gateway_api: String,
    /// kube-prometheus-stack chart version.
    pub kube_prometheus_stack: String,
    /// Grafana Tempo (single binary) chart version.
    pub tempo: String,
    /// kiali-operator chart version.
    pub kiali: String,
    /// Istio release whose bookinfo sample is deployed; defaults to `istio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookinfo: Option<String>,
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
    pub host_port: u16,
    /// NodePort of the gateway's `http2` port (30000–32767).
    #[serde(default = "default_node_port")]
    pub node_port: u16,
    /// For `existing` clusters: the URL at which the ingress gateway answers, e.g.
    /// `http://192.0.2.10:80`. Defaults to `http://127.0.0.1:<host_port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// How many probe periods to wait under default-deny (at least 3).
    #[serde(default = "three")]
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
    /// Requests per second sent to productpage through the gateway.
    #[serde(default = "twenty")]
    pub rate_per_second: u32,
    /// How many requests may fail during the upgrade (default 200: ten seconds at 20 per second).
    #[serde(default = "d_failure_budget")]
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

    /// Parses `1h2m3s`-style text. Every number needs a unit; the total must be positive and at
    /// most [`Span::MAX`].
    pub fn parse(text: &str) -> Result<Span, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if t.ends_with("ms") {
            return Err(format!(
                "`{text}` is in milliseconds; durations here are whole seconds or more (e.g. 1s, 90s, 10m)"
            ));
        }
        let mut total = 0u64;
        let mut digits = String::new();
        for ch in t.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit = match ch {
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(format!("`{text}` is not a duration: unexpected `{ch}` (use e.g. 90s, 10m, 1h30m)")),
            };
            let n: u64 =
                digits.parse().map_err(|_| format!("`{text}` is not a duration: a number must come before `{ch}`"))?;
            total = total.saturating_add(n.saturating_mul(unit));
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(format!("`{text}` is not a duration: `{digits}` has no unit (s, m or h)"));
        }
        if total == 0 {
            return Err(format!("`{text}` is not a positive duration"));
        }
        if total > Span::MAX.0.as_secs() {
            return Err(format!("`{text}` is longer than the maximum of 168h (one week)"));
        }
        Ok(Span(Duration::from_secs(total)))
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
            "pattern": "^([0-9]+[hms])+$",
            "description": "A duration such as 90s, 10m or 1h30m."
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
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ScenarioError::NotFound { tried: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()) }
            } else {
                ScenarioError::Read { path: path.to_path_buf(), source }
            }
        })?;
        Scenario::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates scenario YAML; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ScenarioError::Parse { origin: origin.to_string(), line, column, message: first_line(&e.to_string()) }
        })?;
        scenario.validate(origin)?;
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

    /// Checks everything serde cannot: versions, images, counts, ports and cross-field rules.
    pub fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |field: &str, message: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        if self.name.is_empty()
            || self.name.len() > 30
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "name",
                format!(
                    "`{}` must be 1–30 characters of a-z, 0-9 and `-` (it becomes part of a cluster name)",
                    self.name
                ),
            ));
        }
        let v = &self.versions;
        let semver = |field: &str, value: &str| -> Result<Release, ScenarioError> {
            Release::parse(value)
                .ok_or_else(|| invalid(field, format!("`{value}` is not a release version like 1.30.3")))
        };
        for (field, value) in [
            ("versions.cilium", &v.cilium),
            ("versions.kube_prometheus_stack", &v.kube_prometheus_stack),
            ("versions.tempo", &v.tempo),
            ("versions.kiali", &v.kiali),
        ] {
            if value.starts_with('v') {
                return Err(invalid(field, format!("`{value}`: write chart versions without a `v` prefix")));
            }
            semver(field, value)?;
        }
        let istio = semver("versions.istio", &v.istio)?;
        if v.istio.starts_with('v') {
            return Err(invalid("versions.istio", format!("`{}`: Istio chart versions have no `v` prefix", v.istio)));
        }
        if istio.major != 1 || istio.minor < 24 {
            return Err(invalid(
                "versions.istio",
                format!("`{istio}`: ambient mode via Helm as documented needs Istio 1.24 or newer"),
            ));
        }
        if !v.gateway_api.starts_with('v') {
            return Err(invalid(
                "versions.gateway_api",
                format!("`{}`: Gateway API releases are tagged with a `v` prefix, e.g. v1.5.1", v.gateway_api),
            ));
        }
        semver("versions.gateway_api", &v.gateway_api)?;
        if let Some(b) = &v.bookinfo {
            semver("versions.bookinfo", b)?;
        }
        if let Some(up) = &v.upgrade_to {
            let target = semver("versions.upgrade_to", up)?;
            if target <= istio {
                return Err(invalid(
                    "versions.upgrade_to",
                    format!("`{target}` must be newer than versions.istio `{istio}`"),
                ));
            }
            if target.minor > istio.minor + 1 {
                return Err(invalid(
                    "versions.upgrade_to",
                    format!(
                        "`{target}` skips a minor release; in-place ambient upgrades support one minor at a time \
                         (istio-cni and ztunnel at 1.x work with control plane 1.x and 1.x+1)"
                    ),
                ));
            }
        }
        self.validate_cluster(origin)?;
        if self.provider == Provider::Existing && self.existing.is_none() {
            return Err(invalid(
                "existing",
                "provider `existing` needs an `existing:` section (kubeconfig, context, install)".into(),
            ));
        }
        if self.provider != Provider::Existing && self.existing.is_some() {
            return Err(invalid(
                "existing",
                format!("only allowed with provider `existing`, not `{}`", self.provider.as_str()),
            ));
        }
        if !(30000..=32767).contains(&self.ingress.node_port) {
            return Err(invalid(
                "ingress.node_port",
                format!("{} is outside the NodePort range 30000-32767", self.ingress.node_port),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.checks {
            if catalog::find(name).is_none() {
                let known: Vec<&str> = catalog::CATALOG.iter().map(|c| c.name).collect();
                return Err(invalid("checks", format!("unknown check `{name}`; known checks: {}", known.join(", "))));
            }
            if !seen.insert(name) {
                return Err(invalid("checks", format!("`{name}` is listed twice")));
            }
        }
        if self.checks.iter().any(|c| c == "traffic-continuity") && v.upgrade_to.is_none() {
            return Err(invalid(
                "checks",
                "`traffic-continuity` measures traffic during an upgrade; set versions.upgrade_to".into(),
            ));
        }
        for (from, to) in &self.mirrors {
            if ![from, to].iter().all(|u| u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid("mirrors", format!("`{from}` → `{to}`: both sides must be http(s) URL prefixes")));
            }
        }
        let scale = self.timeouts.settle_scale;
        if !(scale > 0.0 && scale <= 100.0) {
            return Err(invalid(
                "timeouts.settle_scale",
                format!("{scale} must be above 0 and at most 100 (1 is the tuned default)"),
            ));
        }
        if self.probes.periods < 3 {
            return Err(invalid(
                "probes.periods",
                format!("{} is below the minimum of 3 probe periods", self.probes.periods),
            ));
        }
        if self.traffic.rate_per_second == 0 || self.traffic.rate_per_second > 1000 {
            return Err(invalid(
                "traffic.rate_per_second",
                format!("{} must be between 1 and 1000", self.traffic.rate_per_second),
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self, origin: &str) -> Result<(), ScenarioError> {
        let invalid = |field: &str, message: String| ScenarioError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let c = &self.cluster;
        if self.provider == Provider::Existing {
            return Ok(());
        }
        if c.control_planes != 1 {
            return Err(invalid(
                "cluster.control_planes",
                format!(
                    "{}: meshcheck creates exactly one control-plane node (Cilium's k8sServiceHost names it)",
                    c.control_planes
                ),
            ));
        }
        if c.workers > 8 {
            return Err(invalid(
                "cluster.workers",
                format!("{} workers is more than a CI runner can hold (max 8)", c.workers),
            ));
        }
        let Some(image) = &c.node_image else {
            return Err(invalid(
                "cluster.node_image",
                format!(
                    "required for provider `{}`: pin the node image (and its digest for kind)",
                    self.provider.as_str()
                ),
            ));
        };
        let k8s = node_image_kubernetes(self.provider, image).map_err(|m| invalid("cluster.node_image", m))?;
        let istio = Release::parse(&self.versions.istio).expect("validated before");
        if let Some((_, lo, hi)) = ISTIO_K8S_SUPPORT.iter().find(|(m, _, _)| *m == istio.minor)
            && !(*lo..=*hi).contains(&k8s.minor)
        {
            return Err(invalid(
                "cluster.node_image",
                format!(
                    "Kubernetes {k8s} is outside what Istio 1.{} supports (1.{lo}–1.{hi}, field guide §4.3)",
                    istio.minor
                ),
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

/// Reads the Kubernetes version out of a node image reference and checks its form.
fn node_image_kubernetes(provider: Provider, image: &str) -> Result<Release, String> {
    let (repo, rest) = image.split_once(':').ok_or_else(|| format!("`{image}` has no tag"))?;
    let (tag, digest) = match rest.split_once('@') {
        Some((t, d)) => (t, Some(d)),
        None => (rest, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or_else(|| format!("`{d}` is not a sha256 digest"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(format!("`{d}` is not a sha256 digest of 64 lowercase hex digits"));
        }
    }
    match provider {
        Provider::Kind => {
            if repo != "kindest/node" && !repo.ends_with("/kindest/node") {
                return Err(format!("`{image}`: kind needs a kindest/node image"));
            }
            if digest.is_none() {
                return Err(format!(
                    "`{image}`: pin the kind node image by digest (`@sha256:…`); kind's docs require it"
                ));
            }
            Release::parse(tag).ok_or_else(|| format!("`{tag}` is not a Kubernetes version tag like v1.35.0"))
        }
        Provider::K3d => {
            if repo != "rancher/k3s" && !repo.ends_with("/rancher/k3s") {
                return Err(format!("`{image}`: k3d needs a rancher/k3s image"));
            }
            if tag.contains('+') {
                return Err(format!("`{tag}`: k3s image tags use `-k3sN`, not `+k3sN`"));
            }
            let (version, suffix) =
                tag.split_once("-k3s").ok_or_else(|| format!("`{tag}` is not a k3s tag like v1.35.5-k3s1"))?;
            if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{tag}` is not a k3s tag like v1.35.5-k3s1"));
            }
            Release::parse(version).ok_or_else(|| format!("`{tag}` is not a k3s tag like v1.35.5-k3s1"))
        }
        Provider::Existing => Err("existing clusters have no node image".into()),
    }
}

/// The JSON Schema of the scenario format, for editors (`meshcheck schema`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Scenario)).expect("schema serializes")
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}
