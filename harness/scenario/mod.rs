//! The scenario: one YAML file that says what a run provisions, installs, deploys and checks.
//!
//! Parsing is strict on purpose. A typo in a scenario (`socketlb`, `upgradeTo`) that were silently
//! ignored would make a release gate test something other than what its author believes, so unknown
//! keys are rejected with the allowed ones listed, every error names the field, the file, line and
//! column and what to write instead, and versions and images are validated before anything touches
//! a cluster.
//!
//! The rules live in one place: the JSON Schema generated from the types below (`meshcheck
//! schema`, for editors). The loader reads the file into a located YAML tree (`yaml`), checks the
//! tree against that same schema (`validate`), and only then builds the typed [`Scenario`]. The
//! only rules outside the schema compare two versions with each other (an upgrade must go forward
//! by at most one minor release), which JSON Schema cannot express.
//!
//! Files: `spec` (the parts of a scenario and their defaults), `span` (durations, releases),
//! `schema` (the JSON Schema), `yaml` (the located tree), `validate` (the tree against the schema),
//! `format` (formats of single values); this file the `Scenario` and its loader.

mod backend;
mod format;
mod gate;
mod schema;
mod span;
mod spec;
mod validate;
mod yaml;

pub use backend::{Backend, ServiceAt};
pub use gate::{CPU_NOISE_CORES, FootprintRules, GateOptions, LatencyRules, MEMORY_NOISE_BYTES};
pub use schema::json_schema;
use schema::{checks_schema, mirrors_schema, rules_between_fields};
pub use span::{Release, Span};
pub use spec::{
    AuthorizationOptions, ClusterSpec, DEFAULT_HOST_PORT, DEFAULT_STEP_MIN_SUCCESS, ExistingSpec, IngressSpec,
    KialiAuth, KialiOptions, ProbeOptions, StepRules, Timeouts, TrafficOptions, Versions,
};

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::{
    format::Format,
    validate::{ANNOTATION_KEYWORDS, WORDED_KEYWORDS},
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
    /// Settings of the L4 authorization check.
    #[serde(default)]
    pub authorization: AuthorizationOptions,
    /// Settings of the Kiali meshcheck installs: how people log in to it.
    #[serde(default)]
    pub kiali: KialiOptions,
    /// Settings of the traffic generator used during upgrades.
    #[serde(default)]
    pub traffic: TrafficOptions,
    /// The release gate's rules on numbers: what the footprint check measures and how much it may
    /// grow from the baseline pass to the candidate.
    #[serde(default)]
    pub gate: GateOptions,
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

/// Kubernetes minor versions each Istio minor officially supports (field guide §4.3).
const ISTIO_K8S_SUPPORT: &[(u64, u64, u64)] =
    &[(24, 28, 31), (25, 29, 32), (26, 29, 33), (27, 29, 33), (28, 29, 34), (29, 31, 35), (30, 32, 36)];

impl Scenario {
    /// Loads a scenario from a file. A missing file says which path was tried.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        use std::io::Read;
        let read_error = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ScenarioError::NotFound { tried: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()) }
            } else {
                ScenarioError::Read { path: path.to_path_buf(), source }
            }
        };
        // At most one byte past the limit is read: a huge file (or /dev/zero) costs nothing.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(yaml::MAX_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        let origin = path.display().to_string();
        if bytes.len() > yaml::MAX_BYTES {
            return Err(ScenarioError::Invalid {
                origin,
                line: 1,
                column: 1,
                field: None,
                message: format!(
                    "the file is larger than {} KiB; a scenario is a few dozen lines — is this the right file?",
                    yaml::MAX_BYTES / 1024
                ),
            });
        }
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
        validate::check(&root, text).map_err(|v| invalid(v.line, v.column, v.field, v.message))?;
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
        if let Some(existing) = scenario.existing.as_ref().filter(|e| e.install)
            && let Some((backend, value)) = Backend::ALL.into_iter().find_map(|b| Some((b, b.given(existing)?)))
        {
            let (line, column) = at(&["existing", backend.key()]);
            return Err(invalid(
                line,
                column,
                Some(backend.field().into()),
                format!(
                    "`{value}` names the cluster's own {}, but with `install: true` meshcheck installs and reads its own; remove one of the two",
                    backend.key()
                ),
            ));
        }
        if let Some((path, message)) = scenario.measuring_beyond_deadline() {
            let (line, column) = at(&path);
            return Err(invalid(line, column, Some(path.join(".")), message));
        }
        // The URL format checks the scheme and the characters; a URL must also parse (an unclosed
        // IPv6 bracket passes the format) or its first request would fail mid-run.
        let urls = scenario
            .mirrors
            .iter()
            .flat_map(|(from, to)| {
                [
                    (vec!["mirrors", from.as_str()], format!("mirrors.{from}"), from),
                    (vec!["mirrors", from.as_str()], format!("mirrors.{from}"), to),
                ]
            })
            .chain(scenario.ingress.url.iter().map(|u| (vec!["ingress", "url"], "ingress.url".to_string(), u)));
        for (path, field, url) in urls {
            if let Err(why) = http_url(url) {
                let (line, column) = at(&path);
                return Err(invalid(
                    line,
                    column,
                    Some(field),
                    format!("`{url}` is not a URL ({why}); write it as http(s)://HOST[:PORT]/PATH"),
                ));
            }
        }
        // A prefix that ends with `/` replaced by one that does not glues the rest of the URL onto
        // the last segment (`https://quay.io/v2/` → `https://mirror/quay.iov2/`).
        if let Some((prefix, replacement)) =
            scenario.mirrors.iter().find(|(prefix, replacement)| prefix.ends_with('/') && !replacement.ends_with('/'))
        {
            let (line, column) = at(&["mirrors", prefix]);
            return Err(invalid(
                line,
                column,
                Some(format!("mirrors.{prefix}")),
                format!(
                    "`{replacement}` lacks the trailing `/` of `{prefix}`: `{prefix}v2/` would become \
                     `{replacement}v2/`; write `{replacement}/`"
                ),
            ));
        }
        Ok(scenario)
    }

    /// Where the checks read `backend`: its `existing.*` field, else where meshcheck's guide puts it.
    pub fn service(&self, backend: Backend) -> ServiceAt {
        let given = self.existing.as_ref().and_then(|e| backend.given(e));
        given.and_then(ServiceAt::parse).unwrap_or_else(|| backend.default_at())
    }

    /// A measuring check whose own waits alone outlast `timeouts.check` (its collector's deadline)
    /// would be cut off every time: the field that makes it so, and what to do. footprint: two
    /// readings of `gate.footprint.window` and the 10 s warm-up; latency: two runs of
    /// `gate.latency.duration` per repetition.
    fn measuring_beyond_deadline(&self) -> Option<(Vec<&'static str>, String)> {
        let deadline = self.timeouts.check.0;
        let footprint = self.gate.footprint.window.0 * 2 + Duration::from_secs(10);
        let latency = self.gate.latency.duration.0 * (2 * self.gate.latency.repetitions);
        let over = |needs: Duration, what: &str| {
            format!(
                "{what} takes {}s, beyond timeouts.check ({}s) of its collector; shorten it or raise timeouts.check",
                needs.as_secs(),
                deadline.as_secs()
            )
        };
        if self.runs_check(catalog::FOOTPRINT.name) && footprint >= deadline {
            return Some((
                vec!["gate", "footprint", "window"],
                over(footprint, "two footprint readings and their warm-up"),
            ));
        }
        if self.runs_check(catalog::LATENCY.name) && latency >= deadline {
            return Some((vec!["gate", "latency", "duration"], over(latency, "two latency runs per repetition")));
        }
        None
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
    /// istio-cni and ztunnel at 1.x work with control plane 1.x and 1.x+1), and only of an Istio
    /// meshcheck installed.
    fn check_upgrade(&self) -> Result<(), String> {
        let v = &self.versions;
        let (Some(target), Some(istio)) = (v.upgrade_to.as_deref().and_then(Release::parse), Release::parse(&v.istio))
        else {
            return Ok(());
        };
        // SemVer precedence (semver.org §11): `1.30.3` is newer than `1.30.3-rc.1`.
        let precedence = |text: &str| semver::Version::parse(text).ok();
        let newer = match (v.upgrade_to.as_deref().and_then(precedence), precedence(&v.istio)) {
            (Some(t), Some(i)) => t > i,
            _ => target > istio,
        };
        if !newer {
            return Err(format!(
                "`{}` must be newer than versions.istio `{}`",
                v.upgrade_to.as_deref().unwrap_or_default(),
                v.istio
            ));
        }
        if target.minor > istio.minor + 1 {
            return Err(format!(
                "`{target}` skips a minor release; in-place ambient upgrades go one minor at a time from \
                 versions.istio `{istio}` (istio-cni and ztunnel at 1.x work with control plane 1.x and 1.x+1)"
            ));
        }
        // The target must support the nodes' Kubernetes as the starting release must (the schema
        // holds `versions.istio` to its window; this is the same rule for the release upgraded to).
        if let Some(k8s) = self.kubernetes_version()
            && let Some(&(_, lo, hi)) = ISTIO_K8S_SUPPORT.iter().find(|(minor, _, _)| *minor == target.minor)
            && !(lo..=hi).contains(&k8s.minor)
        {
            return Err(format!(
                "`{target}` does not support the nodes' Kubernetes 1.{}: Istio 1.{} supports Kubernetes 1.{lo} to 1.{hi} \
                 (field guide §4.3); pick a node image both releases support",
                k8s.minor, target.minor
            ));
        }
        // On an existing cluster meshcheck did not install, the Istio releases are the owner's:
        // an upgrade would rewrite them with meshcheck's values (issue 26).
        if self.provider == Provider::Existing && !self.installs() {
            return Err("an existing cluster's Istio is not meshcheck's to upgrade: with `existing.install: false` \
                        (the default) meshcheck installs nothing, and the upgrade would rewrite the owner's Helm \
                        releases with meshcheck's values. Upgrade it yourself between two runs and compare them \
                        (README, Release gates), or remove versions.upgrade_to"
                .into());
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

/// An http(s) URL with a host, parsed as the HTTP client will parse it (the `url` crate, WHATWG URL
/// rules).
pub fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) if !host.is_empty() => Ok(url),
        ("http" | "https", _) => Err("no host".into()),
        (scheme, _) => Err(format!("scheme `{scheme}`, not http or https")),
    }
}
