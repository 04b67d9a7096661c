//! What a live run needs before it starts, checked so that a run never fails half-way through for
//! something it could have known at the start: a container engine that answers; kind, k3d and helm
//! at the versions the README names; a supported host architecture; kind's inotify limits; the URLs
//! in the scenario; `cluster.image_archive`; the chart repositories and registries the run reaches;
//! and for an existing cluster its kubeconfig, context, API server and the user's permissions for
//! what this scenario does there. Each problem is one line that says what is wrong and how to fix it.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use crate::{
    checks::image_architectures,
    cluster::runner::{CommandError, Runner},
    common::catalog,
    common::names::{BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS},
    common::util::first_line,
    formats::oci::ImageRef,
    plan::CommandSpec,
    plan::{self, Plan, RunContext, Step},
    scenario::{Architecture, Provider, Scenario},
};

/// Runs every preflight check; returns one line per problem (empty when all is well).
pub fn tool_problems(s: &Scenario, runner: &Runner) -> Vec<String> {
    let t = s.timeouts.preflight.0;
    // The plan says which repositories, kubeconfig and context the run will use; the preflight
    // reads them from there rather than knowing them twice.
    let plan = plan::build(s, &RunContext::for_plan());
    let mut problems = host_problems(s, runner, t);
    problems.extend(url_problems(s));
    problems.extend(image_archive_problem(s));
    let network = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
        rt.block_on(async {
            let (reach, cluster) =
                tokio::join!(reachability_problems(s, &plan, t), existing_cluster_problems(s, &plan, t));
            reach.into_iter().chain(cluster).collect::<Vec<_>>()
        })
    });
    match network {
        Ok(lines) => problems.extend(lines),
        Err(e) => problems.push(format!("preflight: cannot start the network checks: {e}")),
    }
    problems
}

/// The container engine, the tools, the architecture and (for kind) the inotify limits.
fn host_problems(s: &Scenario, runner: &Runner, t: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    let probe = |program: &str, args: &[&str]| runner.run(&CommandSpec::new(program, args.iter().copied(), t));
    if s.provider != Provider::Existing {
        let docker = probe("docker", &["info", "--format", "{{.ServerVersion}}"]);
        let podman = docker.is_err() && probe("podman", &["info", "--format", "{{.Version.Version}}"]).is_ok();
        if podman && s.provider == Provider::K3d {
            // k3d talks to the Docker API, and meshcheck makes the node mounts shared with
            // `docker exec` (providers::K3D_MOUNT_SCRIPT): Podman alone cannot do either.
            problems.push(
                "container engine: only Podman answers, and k3d needs the docker CLI (meshcheck runs `docker exec` on the \
                 k3d nodes). Install the docker CLI and point it at Podman's socket \
                 (DOCKER_HOST=unix:///run/podman/podman.sock, k3d docs: usage/advanced/podman), or use provider kind"
                    .to_string(),
            );
        }
        let engine_ok = docker.is_ok() || podman;
        if !engine_ok {
            let why = match docker {
                Err(CommandError::NotFound { .. }) => "docker is not installed".to_string(),
                Err(e) => format!("`docker info` failed: {}", first_line(&e.to_string())),
                Ok(_) => unreachable!("engine_ok"),
            };
            problems.push(format!(
                "container engine: {why}. Install Docker Engine (or Podman) and start it; `docker info` must answer"
            ));
        }
        match s.provider {
            Provider::Kind => {
                problems.extend(tool_problem(runner, Tool::Kind, t));
                problems.extend(inotify_problems(runner, t));
            }
            Provider::K3d => problems.extend(tool_problem(runner, Tool::K3d, t)),
            Provider::Existing => {}
        }
    }
    // helm installs Cilium, Istio and the observability stack; an existing cluster without
    // `existing.install` gets none of them (plan::build has no helm step then).
    if s.installs() {
        problems.extend(tool_problem(runner, Tool::Helm, t));
    }
    match (Architecture::host(), s.cluster.architecture) {
        (None, _) => problems.push(format!(
            "host architecture {} is not supported: kind and k3d publish node images for amd64 and arm64 only",
            std::env::consts::ARCH
        )),
        (Some(h), want) if s.provider != Provider::Existing && want != Architecture::Auto && want != h => problems.push(format!(
            "the scenario expects {} nodes but this host is {}: kind/k3d nodes run the host's architecture; use a matching runner or architecture: auto",
            want.as_str(),
            h.as_str()
        )),
        _ => {}
    }
    problems
}

/// A command-line tool the run drives, with the oldest release it works with (README,
/// "Prerequisites of a live run").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// kind ≥ 0.31 (its v0.31.0 release pins the default scenario's node image).
    Kind,
    /// k3d ≥ 5.6.
    K3d,
    /// helm ≥ 3.6.
    Helm,
}

/// A tool's version as it printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    /// Major, minor, patch; a version printed without a patch (helm built without its Makefile
    /// prints `v3.19`) has patch 0.
    pub core: (u64, u64, u64),
    /// Whether it carries a `-…` pre-release suffix: such a build precedes the release of the same
    /// core (SemVer 2.0.0 §11), so `v0.31.0-alpha` is not yet 0.31.0.
    pub pre_release: bool,
    /// The version as printed (`v0.31.0`), for messages.
    pub text: String,
}

impl ToolVersion {
    /// Parses `vMAJOR.MINOR[.PATCH][-PRERELEASE][+BUILD]`, the form all three tools print.
    fn parse(token: &str) -> Option<ToolVersion> {
        let rest = token.strip_prefix('v')?;
        let rest = rest.split_once('+').map_or(rest, |(v, _build)| v);
        let (core, pre_release) = match rest.split_once('-') {
            Some((core, pre)) => (core, !pre.is_empty()),
            None => (rest, false),
        };
        let numbers: Vec<u64> = core
            .split('.')
            .map(|p| (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten())
            .collect::<Option<_>>()?;
        let core = match numbers.as_slice() {
            [major, minor] => (*major, *minor, 0),
            [major, minor, patch] => (*major, *minor, *patch),
            _ => return None,
        };
        Some(ToolVersion { core, pre_release, text: token.to_string() })
    }

    /// Whether this is `minimum` (a release) or newer.
    pub fn at_least(&self, minimum: (u64, u64, u64)) -> bool {
        self.core > minimum || (self.core == minimum && !self.pre_release)
    }
}

impl Tool {
    /// The program name on PATH.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Kind => "kind",
            Tool::K3d => "k3d",
            Tool::Helm => "helm",
        }
    }

    fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Kind | Tool::K3d => &["version"],
            Tool::Helm => &["version", "--short"],
        }
    }

    /// The oldest release meshcheck works with (README, "Prerequisites of a live run").
    pub fn minimum(self) -> (u64, u64, u64) {
        match self {
            Tool::Kind => (0, 31, 0),
            Tool::K3d => (5, 6, 0),
            Tool::Helm => (3, 6, 0),
        }
    }

    fn install(self) -> &'static str {
        match self {
            Tool::Kind => "install kind v0.31+ from https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
            Tool::K3d => "install k3d v5.6+ from https://k3d.io/#installation",
            Tool::Helm => "install Helm 3.6+ from https://helm.sh/docs/intro/install/",
        }
    }

    /// What the version command of a current release prints.
    fn example(self) -> &'static str {
        match self {
            Tool::Kind => "kind v0.31.0 go1.25.5 linux/amd64",
            Tool::K3d => "k3d version v5.8.3",
            Tool::Helm => "v3.19.0+g3d8990f",
        }
    }

    /// Reads the version out of what the tool's version command printed; `None` for anything
    /// else, which is then a problem rather than a tool taken to be ready.
    ///
    /// - kind: `kind version` prints `"kind v" + Version() + " " + runtime.Version() + " " +
    ///   runtime.GOOS + "/" + runtime.GOARCH` (kubernetes-sigs/kind pkg/cmd/kind/version/version.go,
    ///   `DisplayVersion`, the same from v0.6.0 to v0.31.0 and main), e.g. `kind v0.31.0 go1.25.5
    ///   linux/amd64`; a pre-release adds `-alpha.N+<commit>`.
    /// - k3d: `k3d version` prints `k3d version %s\nk3s version %s (default)\n` (k3d-io/k3d
    ///   cmd/root.go `printVersion`, the same at v4.4.8, v5.6.0 and v5.8.3); the version is the
    ///   `git describe --tags` the Makefile links in, or `v5-dev` for a plain `go build`, which has
    ///   no version to compare.
    /// - helm: `helm version --short` prints `Version + "+g" + GitCommit[:7]`, or just the version
    ///   when built without a commit (helm/helm v3.19.0 cmd/helm/version.go `formatVersion`, the same
    ///   in v4 pkg/cmd/version.go), e.g. `v3.19.0+g3d8990f`; the Makefile links in the git tag,
    ///   a plain `go build` leaves internal/version's default `v3.19`. Helm 2 prints
    ///   `Client: v2.17.0+ga690bad` (v2.17.0 cmd/helm/version.go).
    pub fn parse_version(self, output: &str) -> Option<ToolVersion> {
        let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
        match self {
            Tool::Kind => {
                let mut words = line.split_whitespace();
                (words.next()? == "kind").then_some(())?;
                ToolVersion::parse(words.next()?)
            }
            Tool::K3d => ToolVersion::parse(line.strip_prefix("k3d version ")?.trim()),
            Tool::Helm => ToolVersion::parse(line.strip_prefix("Client: ").unwrap_or(line)),
        }
    }
}

/// Runs the tool's version command and judges what it printed.
fn tool_problem(runner: &Runner, tool: Tool, t: Duration) -> Option<String> {
    let program = tool.program();
    let spec = CommandSpec::new(program, tool.version_args().iter().copied(), t);
    let output = match runner.run(&spec) {
        Ok(output) => output,
        Err(e) => return Some(format!("{program}: {}. Fix: {}", short(&e), tool.install())),
    };
    let (major, minor, _) = tool.minimum();
    match tool.parse_version(&output) {
        None => {
            let printed = output
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map_or_else(|| "nothing".to_string(), |l| format!("`{}`", l.chars().take(80).collect::<String>()));
            Some(format!(
                "{program}: `{}` printed {printed}, not a version (a release prints e.g. `{}`). Fix: {}",
                spec.display(),
                tool.example(),
                tool.install()
            ))
        }
        Some(v) if !v.at_least(tool.minimum()) => Some(format!(
            "{program}: {} is older than the {major}.{minor} meshcheck needs. Fix: {}",
            v.text,
            tool.install()
        )),
        Some(_) => None,
    }
}

fn short(e: &CommandError) -> String {
    match e {
        CommandError::NotFound { program, .. } => format!("`{program}` is not on PATH"),
        other => first_line(&other.to_string()).to_string(),
    }
}

/// kind's documented inotify limits for multi-node clusters (field guide §1.4), read with
/// `sysctl -n` through the runner so that what preflight saw is in `commands/` like every other
/// probe (and a stand-in host can answer); `/proc/sys` when sysctl is not installed.
pub fn inotify_problems(runner: &Runner, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, min) in [("max_user_watches", 524_288u64), ("max_user_instances", 512)] {
        let key = format!("fs.inotify.{file}");
        let text = match runner.run(&CommandSpec::new("sysctl", ["-n", key.as_str()], timeout)) {
            Err(CommandError::NotFound { .. }) => std::fs::read_to_string(format!("/proc/sys/fs/inotify/{file}")).ok(),
            other => other.ok(),
        };
        if let Some(v) = text.and_then(|t| t.trim().parse::<u64>().ok())
            && v < min
        {
            problems.push(format!(
                "inotify: fs.inotify.{file} is {v}, kind needs at least {min} (pods fail with `too many open files`). Fix: sudo sysctl fs.inotify.{file}={min}"
            ));
        }
    }
    problems
}

/// The URLs a scenario states: both sides of every `mirrors` entry and `ingress.url`. Scenario
/// validation only checks their `http(s)://` prefix; a URL that does not parse would fail the
/// first request that uses it.
fn url_problems(s: &Scenario) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |field: String, url: &str| {
        if let Err(why) = http_url(url) {
            problems.push(format!(
                "scenario: {field} `{url}` is not a URL ({why}). Fix: write it as http(s)://HOST[:PORT]/PATH"
            ));
        }
    };
    for (from, to) in &s.mirrors {
        check("mirrors key".into(), from);
        check(format!("mirrors value for `{from}`"), to);
    }
    if let Some(url) = &s.ingress.url {
        check("ingress.url".into(), url);
    }
    problems
}

fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) if !host.is_empty() => Ok(url),
        ("http" | "https", _) => Err("no host".into()),
        (scheme, _) => Err(format!("scheme `{scheme}`, not http or https")),
    }
}

/// `cluster.image_archive` is loaded into the nodes right after a kind or k3d cluster is created
/// (plan::provision, from the working directory); an existing cluster never loads it.
fn image_archive_problem(s: &Scenario) -> Option<String> {
    let archive = s.cluster.image_archive.as_deref().filter(|_| s.provider != Provider::Existing)?;
    let shown = std::path::absolute(archive).unwrap_or_else(|_| Path::new(archive).to_path_buf());
    let why = match std::fs::metadata(archive) {
        Ok(m) if m.is_file() => return None,
        Ok(_) => "is not a file".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Some(format!(
        "cluster.image_archive: {} {why}. Fix: write it with `docker save -o {archive} $(meshcheck images --in-cluster)`, or remove the key",
        shown.display()
    ))
}

/// One HTTP endpoint the run reaches, and what counts as an answer.
struct Endpoint {
    /// What it is, for the problem line.
    what: String,
    /// The URL probed (after `mirrors`).
    url: String,
    /// How the run uses it, for the fix.
    fix: String,
    /// Which statuses are an answer.
    accept: fn(reqwest::StatusCode) -> bool,
}

/// The chart repositories of the plan's helm commands (`--repo`) and the registries of the images
/// the nodes pull, each probed once over HTTP(S) after the scenario's `mirrors`.
async fn reachability_problems(s: &Scenario, plan: &Plan, t: Duration) -> Vec<String> {
    let mut endpoints = Vec::new();
    // In plan order, each repository once (Istio's serves five charts, and the upgrade again).
    let mut repos: Vec<(&str, &str)> = Vec::new();
    for step in plan.phases.iter().flat_map(|p| &p.steps).map(|s| &s.step) {
        let Step::Command { command, .. } = step else { continue };
        if command.program != "helm" {
            continue;
        }
        // `upgrade [--install] RELEASE CHART …`
        let chart = command.args.iter().skip(1).filter(|a| *a != "--install").nth(1);
        let (Some(url), Some(chart)) = (command.flag("--repo"), chart) else { continue };
        if !repos.iter().any(|(_, u)| *u == url) {
            repos.push((chart.as_str(), url));
        }
    }
    for (chart, url) in repos {
        // `helm upgrade --repo` downloads `<url>/index.yaml` (helm v3.20.0 pkg/repo/chartrepo.go
        // `DownloadIndexFile` with `ResolveReferenceURL`, which adds the missing `/`) and fails
        // with "is not a valid chart repository or cannot be reached" unless it gets one. The URL
        // is already mirrored in the plan.
        endpoints.push(Endpoint {
            what: format!("chart repository of `{chart}` ({url})"),
            url: format!("{}/index.yaml", url.trim_end_matches('/')),
            fix: "allow HTTPS from this machine to it, or map it with the scenario's `mirrors`: helm reads its index.yaml".into(),
            accept: |status| status.is_success(),
        });
    }
    // The nodes of a kind/k3d cluster pull through this machine's container engine, and
    // image-architectures reads the indexes from here; an existing cluster's nodes pull from
    // wherever they are, which this machine cannot speak for.
    if s.provider != Provider::Existing || s.runs_check(catalog::IMAGE_ARCHITECTURES.name) {
        let mut registries: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for image in image_architectures::images(s).refs {
            if let Some(r) = ImageRef::parse(&image) {
                registries.entry(r.registry).or_default().push(image);
            }
        }
        for (registry, images) in registries {
            // The API version check of the OCI distribution spec (v1.1.1 spec.md, end-1
            // `GET /v2/`): 200, or 401 from a registry that wants a token first (Docker Hub).
            endpoints.push(Endpoint {
                what: format!("registry {registry}"),
                url: s.mirrored(&format!("https://{registry}/v2/")),
                fix: format!(
                    "allow HTTPS from this machine to it: {} of the run's images come from it (e.g. {})",
                    images.len(),
                    images[0]
                ),
                accept: |status| status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED,
            });
        }
    }
    if endpoints.is_empty() {
        return Vec::new();
    }
    let http = match reqwest::Client::builder().timeout(t).build() {
        Ok(c) => c,
        Err(e) => return vec![format!("preflight: cannot build an HTTP client: {e}")],
    };
    let probes = endpoints.iter().map(|e| probe(&http, e, t));
    futures::future::join_all(probes).await.into_iter().flatten().collect()
}

/// One problem line if `endpoint` does not answer as it should. A URL that does not parse (a bad
/// `mirrors` value) is left to [`url_problems`], which names the scenario field.
async fn probe(http: &reqwest::Client, endpoint: &Endpoint, t: Duration) -> Option<String> {
    let url = http_url(&endpoint.url).ok()?;
    let answer = http.get(url).send().await;
    tracing::debug!("preflight: GET {} → {:?}", endpoint.url, answer.as_ref().map(reqwest::Response::status));
    let why = match answer {
        Ok(r) if (endpoint.accept)(r.status()) => return None,
        Ok(r) => format!("HTTP {}", r.status()),
        Err(e) if e.is_timeout() => format!("no answer within {}s", t.as_secs()),
        Err(e) => innermost(&e),
    };
    Some(format!("{} does not answer: GET {}: {why}. Fix: {}", endpoint.what, endpoint.url, endpoint.fix))
}

/// The root cause of an error chain (`Connection refused`, `failed to lookup address`), which
/// the outer layers only wrap.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// What the run does on an existing cluster, as the API server authorizes it: the verbs on one
/// resource, and why the run needs them. Asked with SelfSubjectAccessReview (authorization.k8s.io/v1).
struct Access {
    verbs: &'static [&'static str],
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    namespace: Option<&'static str>,
    why: &'static str,
}

const fn access(
    verbs: &'static [&'static str],
    group: &'static str,
    resource: &'static str,
    namespace: Option<&'static str>,
    why: &'static str,
) -> Access {
    Access { verbs, group, resource, subresource: "", namespace, why }
}

const fn sub(
    verbs: &'static [&'static str],
    resource: &'static str,
    subresource: &'static str,
    namespace: &'static str,
    why: &'static str,
) -> Access {
    Access { verbs, group: "", resource, subresource, namespace: Some(namespace), why }
}

/// A server-side apply is a PATCH, and one that creates the object is authorized as `create` too
/// (kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go,
/// `createAuthorizerAttributes`): the run applies objects that do not exist yet.
const APPLY: &[&str] = &["create", "patch"];

/// exec and port-forward go over a WebSocket GET, authorized as `get`, and since Kubernetes 1.35
/// also as `create` (feature gate AuthorizePodWebsocketUpgradeCreatePermission, KEP-4006).
const CONNECT: &[&str] = &["get", "create"];

/// What this scenario's run does on an existing cluster (plan::build and the collectors), and so
/// what its user must be allowed. The run's own namespaces are created by the run, so no
/// RoleBinding exists in them: only cluster-wide grants count there, and one of the two stands
/// for both.
fn required_access(s: &Scenario) -> Vec<Access> {
    let mut out = vec![
        access(&["list", "watch"], "", "nodes", None, "the provision phase waits for every node to be Ready"),
        access(&["create"], "", "namespaces", None, "the run creates its own namespaces for its curl clients"),
        access(&["delete"], "", "namespaces", None, "cleanup deletes the namespaces the run created"),
        access(APPLY, "", "pods", Some(INSIDE_NS), "the run applies its curl clients into its own namespaces"),
        access(
            APPLY,
            "",
            "serviceaccounts",
            Some(INSIDE_NS),
            "the run applies the meshed curl client's ServiceAccount",
        ),
        access(&["list", "watch"], "", "pods", Some(INSIDE_NS), "the run waits for its curl clients to be Ready"),
    ];
    if s.installs() {
        out.extend([
            access(
                APPLY,
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "istio-base installs Istio's CRDs and the run applies the Gateway API CRDs",
            ),
            access(
                &["create"],
                "rbac.authorization.k8s.io",
                "clusterroles",
                None,
                "the istiod chart creates ClusterRoles (istio/istio manifests/charts/istio-control/istio-discovery/templates/clusterrole.yaml)",
            ),
            access(
                &["create"],
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                None,
                "the istiod chart binds its ClusterRoles (templates/clusterrolebinding.yaml)",
            ),
            access(
                &["create"],
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                None,
                "the istiod chart creates its injection webhook (templates/mutatingwebhook.yaml)",
            ),
            access(
                &["create"],
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                None,
                "the istiod chart creates its validation webhook (templates/validatingwebhookconfiguration.yaml)",
            ),
            // helm v3.19.0 pkg/action/action.go: the default storage driver ("secret") keeps each
            // release as a Secret in the release namespace.
            access(&["create"], "", "secrets", Some("istio-system"), "helm records each Istio release as a Secret there"),
            access(&["create"], "apps", "daemonsets", Some("istio-system"), "the istio-cni and ztunnel charts run DaemonSets"),
            access(APPLY, "apps", "deployments", Some(BOOKINFO_NS), "the run applies bookinfo into book-info"),
        ]);
    }
    let check = |name| s.runs_check(name);
    if check("cilium-prerequisites") {
        out.push(access(&["get"], "", "configmaps", Some("kube-system"), "cilium-prerequisites reads cilium-config"));
    }
    if check("gateway-binding") {
        out.push(access(&["list"], "", "pods", None, "gateway-binding lists the gateway pods of every namespace"));
        out.push(access(
            &["list"],
            "networking.istio.io",
            "gateways",
            Some(BOOKINFO_NS),
            "gateway-binding reads the Istio Gateways of book-info",
        ));
    }
    if check("mtls") || check("probes") {
        out.push(sub(CONNECT, "pods", "exec", OUTSIDE_NS, "mtls and probes run curl in the run's client pods"));
    }
    if check("mtls") || check("metrics") {
        out.push(sub(
            CONNECT,
            "pods",
            "portforward",
            "istio-system",
            "mtls and metrics read ztunnel's and istiod's admin ports",
        ));
    }
    if check("mtls") {
        out.push(access(
            &["create", "patch", "delete"],
            "security.istio.io",
            "peerauthentications",
            Some(BOOKINFO_NS),
            "mtls applies a STRICT PeerAuthentication to book-info and removes it",
        ));
    }
    if check("probes") {
        out.push(access(
            &["create", "patch", "delete"],
            "networking.k8s.io",
            "networkpolicies",
            Some(BOOKINFO_NS),
            "probes applies default-deny NetworkPolicies to book-info and removes them",
        ));
        out.push(access(&["list"], "", "events", Some(BOOKINFO_NS), "probes reads book-info's events"));
        if s.probes.negative_control {
            out.push(access(
                &["create", "patch", "delete"],
                "cilium.io",
                "ciliumclusterwidenetworkpolicies",
                None,
                "the probes negative control removes and restores the probe policy",
            ));
        }
    }
    if check("metrics") || check("probes") {
        out.push(sub(&["get"], "services", "proxy", "monitoring", "metrics and probes query Prometheus"));
    }
    if check("traces") {
        out.push(sub(&["get"], "services", "proxy", "tempo", "traces reads Tempo's trace API"));
    }
    if check("kiali") {
        out.push(sub(&["get"], "services", "proxy", "istio-system", "kiali reads Kiali's API"));
    }
    out
}

/// For `provider: existing`: the kubeconfig is a file, the context exists, the API server answers,
/// and the user may do what the run does there ([`required_access`]). Stops at the first of the
/// first three that fails: the later ones cannot be asked then.
async fn existing_cluster_problems(s: &Scenario, plan: &Plan, t: Duration) -> Vec<String> {
    if s.provider != Provider::Existing {
        return Vec::new();
    }
    let path = &plan.kubeconfig;
    let fix_path = "Fix: point existing.kubeconfig (or $KUBECONFIG) at the cluster's kubeconfig";
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return vec![format!("kubeconfig: {path} is not a file. {fix_path}")],
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![format!("kubeconfig: {path} does not exist. {fix_path}")];
        }
        Err(e) => return vec![format!("kubeconfig: cannot read {path}: {e}. {fix_path}")],
    }
    let kubeconfig = match kube::config::Kubeconfig::read_from(path) {
        Ok(k) => k,
        Err(e) => return vec![format!("kubeconfig: {path} is not a kubeconfig: {e}. {fix_path}")],
    };
    let names: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    let listed = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    let context = match plan.context.clone().or_else(|| kubeconfig.current_context.clone()).filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c.as_str()) => c,
        Some(c) => {
            return vec![format!(
                "kubeconfig: context `{c}` is not in {path} (it has: {listed}). Fix: set existing.context to one of them"
            )];
        }
        None => {
            return vec![format!(
                "kubeconfig: {path} has no current context and the scenario names none (it has: {listed}). Fix: set existing.context"
            )];
        }
    };
    let options = kube::config::KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let connected = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let server = config.cluster_url.to_string();
            kube::Client::try_from(config).map(|client| (client, server)).map_err(|e| e.to_string())
        });
    let (client, server) = match connected {
        Ok(c) => c,
        Err(e) => return vec![format!("kubeconfig: context `{context}` in {path} cannot be used: {e}. {fix_path}")],
    };
    let why = match tokio::time::timeout(t, client.apiserver_version()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(innermost(&e)),
        Err(_) => Some(format!("no answer within {}s", t.as_secs())),
    };
    if let Some(why) = why {
        return vec![format!(
            "cluster: the API server of context `{context}` ({server}) does not answer GET /version: {why}. \
             Fix: start the cluster, or make {server} reachable from this machine"
        )];
    }
    access_problems(&client, &context, &required_access(s), t).await
}

/// Asks the API server, once per verb, whether the kubeconfig's user may do each of `accesses`;
/// one line per access with a denied verb.
async fn access_problems(client: &kube::Client, context: &str, accesses: &[Access], t: Duration) -> Vec<String> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asks = accesses.iter().flat_map(|a| a.verbs.iter().map(move |verb| (a, *verb))).map(|(a, verb)| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(a.group.into()),
                    resource: Some(a.resource.into()),
                    subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                    namespace: a.namespace.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move {
            let answer = tokio::time::timeout(t, reviews.create(&PostParams::default(), &review)).await;
            (a, verb, answer)
        }
    });
    let mut denied: Vec<(&Access, Vec<&str>, String)> = Vec::new();
    for (a, verb, answer) in futures::future::join_all(asks).await {
        let status = match answer {
            Ok(Ok(r)) => r.status.unwrap_or_default(),
            Ok(Err(e)) => {
                return vec![format!(
                    "cluster: cannot ask the API server what context `{context}` may do (SelfSubjectAccessReview): {}. \
                     Fix: use a context whose user may create selfsubjectaccessreviews (every authenticated user may, by the \
                     system:basic-user ClusterRole)",
                    innermost(&e)
                )];
            }
            Err(_) => {
                return vec![format!(
                    "cluster: the API server did not answer a SelfSubjectAccessReview within {}s",
                    t.as_secs()
                )];
            }
        };
        if status.allowed {
            continue;
        }
        let said = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|r| !r.is_empty())
            .collect::<Vec<_>>();
        match denied.iter_mut().find(|(d, _, _)| std::ptr::eq(*d, a)) {
            Some((_, verbs, _)) => verbs.push(verb),
            None => denied.push((a, vec![verb], said.join("; "))),
        }
    }
    denied
        .into_iter()
        .map(|(a, verbs, said)| {
            let resource = match (a.group, a.subresource) {
                ("", "") => a.resource.to_string(),
                ("", sub) => format!("{}/{sub}", a.resource),
                (group, _) => format!("{}.{group}", a.resource),
            };
            let scope = a.namespace.map_or_else(|| "cluster-wide".to_string(), |ns| format!("in namespace {ns}"));
            let said = if said.is_empty() { String::new() } else { format!(" (the API server said: {said})") };
            format!(
                "access: context `{context}` may not {} {resource} {scope}, and {}{said}. Fix: grant it to the kubeconfig's \
                 user with a ClusterRole or Role and a binding, or use a context that may",
                verbs.join(", "),
                a.why
            )
        })
        .collect()
}
