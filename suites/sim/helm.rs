//! The real helm and the pinned charts under the simulation (issue 21): what the stand-in
//! `helm upgrade --install` puts in the simulated API server is what `helm template` of the pinned
//! chart renders with the run's own values files, never a hand-written guess of it.
//!
//! helm is the pinned release `.ci/build-go-tools helm` builds from its Go module (or
//! `$MESHCHECK_HELM`); the charts are those of `../shared/upstream/charts/` (PROVENANCE.md there),
//! or `$MESHCHECK_CHARTS` where `suites/fetch-charts` put them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use serde_json::Value;

/// The Kubernetes version charts are rendered for: the default kind node image is Kubernetes 1.35
/// (field guide §1.2), and `.Capabilities.KubeVersion` gates templates in the Istio charts.
pub const KUBE_VERSION: &str = "1.35.0";

/// Where the simulation finds helm and the charts.
#[derive(Debug, Clone)]
pub struct Helm {
    /// The helm binary.
    pub binary: PathBuf,
    /// The folder of pinned charts.
    pub charts: PathBuf,
}

/// A pinned chart to render, and the `--set` flags it needs besides the run's values.
#[derive(Debug, Clone)]
pub struct Chart {
    pub path: PathBuf,
    pub sets: Vec<String>,
}

/// The file or folder of a chart at a version, under the pinned charts.
type ChartFile = fn(&str, &str) -> String;

/// The chart repositories a run names with `--repo`, each as its project documents it (istio.io
/// docs/ambient/install/helm, docs.cilium.io k8s-install-helm, the prometheus-community and
/// grafana-community helm-charts READMEs, kiali.io's installation guide), and the file or folder
/// of a chart at a version under the pinned charts.
const REPOSITORIES: &[(&str, ChartFile)] = &[
    ("istio-release.storage.googleapis.com/charts", |chart, v| {
        // The Istio repository's chart `cni` is the folder `cni`; `base`, `istiod`, `ztunnel`,
        // `gateway` likewise (PROVENANCE.md: the chart sources at the release tag).
        format!("istio-{v}/{chart}")
    }),
    ("helm.cilium.io", |chart, v| format!("{chart}-{v}.tgz")),
    ("prometheus-community.github.io/helm-charts", |chart, v| format!("{chart}-{v}")),
    ("grafana-community.github.io/helm-charts", |chart, v| format!("{chart}-{v}")),
    ("kiali.org/helm-charts", |chart, v| format!("{chart}-{v}.tgz")),
];

impl Helm {
    /// The pinned chart `chart` at `version` of the repository at `repo` (scheme and trailing slash
    /// ignored); helm's own error when the repository or the version does not have it.
    pub fn chart(&self, repo: &str, chart: &str, version: &str) -> Result<Chart, String> {
        let at = repo.split_once("://").map_or(repo, |(_, rest)| rest).trim_end_matches('/');
        let Some((_, file)) = REPOSITORIES.iter().find(|(host, _)| *host == at) else {
            // helm v3.22.0 pkg/repo/chartrepo.go FindChartInRepoURL on a repository without it.
            return Err(format!("Error: chart \"{chart}\" version \"{version}\" not found in {repo} repository"));
        };
        let path = self.charts.join(file(chart, version));
        if !path.exists() {
            return Err(format!("Error: chart \"{chart}\" version \"{version}\" not found in {repo} repository"));
        }
        let mut chart = with_present_dependencies(&path);
        if at == "istio-release.storage.googleapis.com/charts" {
            chart.sets.extend(istio_release_images(chart_name_of(&path), version));
        }
        Ok(chart)
    }

    /// `helm template` of a chart with values files and `--set` flags, as the objects it renders
    /// (CRDs included: `helm install` installs a chart's `crds/` first). Renders are remembered by
    /// their inputs: a rehearsal installs the same charts with the same values many times.
    pub fn template(
        &self,
        chart: &Chart,
        release: &str,
        namespace: &str,
        values: &[PathBuf],
        sets: &[String],
    ) -> Result<Vec<Value>, String> {
        let mut args: Vec<String> = vec![
            "template".into(),
            release.into(),
            chart.path.display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--include-crds".into(),
            "--kube-version".into(),
            KUBE_VERSION.into(),
        ];
        let mut key = args.join("\0");
        for file in values {
            let text = std::fs::read_to_string(file).map_err(|e| format!("Error: open {}: {e}", file.display()))?;
            key.push_str(&text);
            args.extend(["--values".into(), file.display().to_string()]);
        }
        for set in chart.sets.iter().chain(sets) {
            key.push_str(set);
            args.extend(["--set".into(), set.clone()]);
        }
        static RENDERED: Mutex<BTreeMap<String, Result<Vec<Value>, String>>> = Mutex::new(BTreeMap::new());
        if let Some(done) = RENDERED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return done.clone();
        }
        let out = Command::new(&self.binary).args(&args).output().map_err(|e| format!("helm: {e}"))?;
        let rendered = if out.status.success() {
            let text = octal_as_yaml_1_1(&String::from_utf8_lossy(&out.stdout));
            let docs: Vec<Value> =
                serde_saphyr::from_str_multiple(&text).map_err(|e| format!("helm template {release}: {e}"))?;
            Ok(docs.into_iter().filter(|d| d.is_object()).collect())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
        };
        RENDERED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, rendered.clone());
        rendered
    }
}

/// The chart, or where a dependency it declares is absent from its `charts/` folder, a copy under
/// `target/` whose Chart.yaml leaves that dependency out, with the dependency's condition turned
/// off (helm refuses to render a chart with a missing dependency, even one its values turn off,
/// and the parent's templates read the subchart's values when its condition is on).
/// `../shared/upstream` holds kube-prometheus-stack 77.0.0 with only its `crds` subchart, although
/// PROVENANCE.md lists the others: what they render (kube-state-metrics, node-exporter, grafana)
/// is nothing the harness relies on.
fn with_present_dependencies(chart: &Path) -> Chart {
    static COPIES: Mutex<BTreeMap<PathBuf, Chart>> = Mutex::new(BTreeMap::new());
    let mut copies = COPIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(chart) = copies.get(chart) {
        return chart.clone();
    }
    let plain = Chart { path: chart.to_path_buf(), sets: Vec::new() };
    let Ok(text) = std::fs::read_to_string(chart.join("Chart.yaml")) else { return plain };
    let mut meta: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
    let present = |d: &Value| chart.join("charts").join(d["name"].as_str().unwrap_or_default()).is_dir();
    let deps = meta["dependencies"].as_array().cloned().unwrap_or_default();
    let missing: Vec<&Value> = deps.iter().filter(|d| !present(d)).collect();
    let made = if missing.is_empty() {
        plain
    } else {
        let sets = missing.iter().filter_map(|d| d["condition"].as_str()).map(|c| format!("{c}=false")).collect();
        meta["dependencies"] = Value::Array(deps.iter().filter(|d| present(d)).cloned().collect());
        // Built beside its final place and renamed into it, so that concurrent test processes
        // (nextest runs one per test) never see a half-written copy.
        let copies_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/charts-without-missing-dependencies");
        let copy = copies_dir.join(chart.file_name().unwrap_or_default());
        let chart_yaml = serde_json::to_string_pretty(&meta).expect("json");
        if std::fs::read_to_string(copy.join("Chart.yaml")).ok().as_deref() != Some(chart_yaml.as_str()) {
            let scratch = copies_dir.join(format!(
                ".{}-{}",
                chart.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&scratch);
            copy_dir(chart, &scratch).expect("copy of the chart under target/");
            // JSON is YAML: helm reads it as the Chart.yaml it is.
            std::fs::write(scratch.join("Chart.yaml"), &chart_yaml).expect("Chart.yaml of the copy");
            let _ = std::fs::remove_dir_all(&copy);
            if std::fs::rename(&scratch, &copy).is_err() {
                let _ = std::fs::remove_dir_all(&scratch);
            }
        }
        Chart { path: copy, sets }
    };
    copies.insert(chart.to_path_buf(), made.clone());
    made
}

/// Copies a folder tree (regular files and folders), as the chart copies and the benchmark's grown
/// run folders need.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Plain scalars with a leading zero (`defaultMode: 0400`) as helm's and the API server's YAML
/// reader takes them: sigs.k8s.io/yaml reads YAML 1.1 (go-yaml v2), where `0400` is octal 256;
/// serde_saphyr reads YAML 1.2, where it is not an integer. Rewritten to the decimal value.
fn octal_as_yaml_1_1(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let rewritten = line.split_once(": ").and_then(|(key, value)| {
            let digits = value.trim_end().strip_prefix('0')?;
            let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
            let value = u64::from_str_radix(digits, 8).ok().filter(|_| octal)?;
            Some(format!("{key}: {value}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn chart_name_of(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

/// What Istio's release tooling writes into the published charts and the chart sources here lack
/// (../shared/upstream/PROVENANCE.md, charts/istio-*): the image hub and tag. The hub is
/// `registry.istio.io/release` for 1.30 and `docker.io/istio` otherwise (istio/release-builder
/// release/build.sh `DOCKER_HUB`); ztunnel's chart reads top-level `hub`/`tag`, the others
/// `global.hub`/`global.tag`.
fn istio_release_images(chart: &str, version: &str) -> Vec<String> {
    let hub = if version.starts_with("1.30.") { "registry.istio.io/release" } else { "docker.io/istio" };
    let prefix = if chart == "ztunnel" { "" } else { "global." };
    vec![format!("{prefix}hub={hub}"), format!("{prefix}tag={version}")]
}
