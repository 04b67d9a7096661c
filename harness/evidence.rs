//! Evidence folders and verdicts.
//!
//! A judge sees only an [`Evidence`] folder, never a cluster, so `meshcheck judge` can reproduce every
//! verdict offline from a downloaded nightly artifact. A missing or unreadable file is never a pass:
//! it turns into an `error` verdict that names the file.

use std::{
    fmt,
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The outcome of one check or step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The evidence shows what the install guide promises.
    Pass,
    /// The evidence contradicts it.
    Fail,
    /// Infrastructure broke, or evidence is missing or unreadable: nothing was judged.
    Error,
    /// Not run (an earlier phase failed, or the scenario does not ask for it).
    NotRun,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::NotRun => "not-run",
        })
    }
}

/// A judge's decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass, fail, error or not run.
    pub outcome: Outcome,
    /// One line: what was expected and what was seen.
    pub reason: String,
    /// Further detail, one finding per line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Evidence files the judge read, relative to the evidence folder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Verdict {
    /// A pass.
    pub fn pass(reason: impl Into<String>) -> Verdict {
        Verdict { outcome: Outcome::Pass, reason: reason.into(), details: Vec::new(), evidence: Vec::new() }
    }

    /// A fail.
    pub fn fail(reason: impl Into<String>) -> Verdict {
        Verdict { outcome: Outcome::Fail, reason: reason.into(), details: Vec::new(), evidence: Vec::new() }
    }

    /// An error (nothing could be judged).
    pub fn error(reason: impl Into<String>) -> Verdict {
        Verdict { outcome: Outcome::Error, reason: reason.into(), details: Vec::new(), evidence: Vec::new() }
    }

    /// Not run, with why.
    pub fn not_run(reason: impl Into<String>) -> Verdict {
        Verdict { outcome: Outcome::NotRun, reason: reason.into(), details: Vec::new(), evidence: Vec::new() }
    }

    /// The usual end of a judge: with no findings a pass whose details are `notes`; otherwise a
    /// fail whose reason `fail` writes from the number of findings and whose details are the
    /// findings. Either way the evidence files are attached.
    pub fn from_findings(
        findings: Vec<String>,
        notes: Vec<String>,
        evidence: Vec<String>,
        pass: impl Into<String>,
        fail: impl FnOnce(usize) -> String,
    ) -> Verdict {
        let verdict = if findings.is_empty() {
            Verdict::pass(pass).with_details(notes)
        } else {
            Verdict::fail(fail(findings.len())).with_details(findings)
        };
        verdict.with_evidence(evidence)
    }

    /// Adds detail lines.
    pub fn with_details(mut self, details: impl IntoIterator<Item = String>) -> Verdict {
        self.details.extend(details);
        self
    }

    /// Records which evidence files were read.
    pub fn with_evidence(mut self, files: impl IntoIterator<Item = String>) -> Verdict {
        self.evidence.extend(files);
        self
    }

    /// The reason and details as one paragraph, for JUnit messages and the terminal.
    pub fn explanation(&self) -> String {
        if self.details.is_empty() {
            self.reason.clone()
        } else {
            format!("{}\n  - {}", self.reason, self.details.join("\n  - "))
        }
    }
}

/// An edge of the service graph (from Kiali's graph API), by node names. It lives with the evidence
/// so that the kiali check produces it and the report draws it without importing each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEdge {
    /// Source workload (or app/service) name.
    pub source: String,
    /// Destination name.
    pub target: String,
    /// `isMTLS` percentage as Kiali reports it, or empty.
    pub mtls_percent: String,
}

/// Why evidence could not be read. Converts into an `error` verdict.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The file the judge needs is not there.
    #[error("needed evidence file {0} is missing")]
    Missing(String),
    /// The file is there but unreadable or malformed.
    #[error("evidence file {file} is unreadable: {message}")]
    Malformed {
        /// Relative path.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// Reading the file would leave the evidence folder, so it was not read.
    #[error("evidence file {file} refused: {why}")]
    Refused {
        /// Relative path, as asked for.
        file: String,
        /// Where it leads.
        why: Escape,
    },
    /// The evidence folder itself lies outside the run folder, so nothing in it was read.
    #[error("evidence folder {root} refused: {why}")]
    RootRefused {
        /// The folder, as the run record names it.
        root: String,
        /// Where it leads.
        why: Escape,
    },
}

/// How a path would leave the folder it must stay in. A downloaded run folder is input from
/// elsewhere: a `../` or a symlink in it must not make `judge` read, and quote in its reports,
/// files of the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Escape {
    /// Absolute, or climbing out with `..`.
    #[error("the path is absolute or climbs out with `..`")]
    NotBelow,
    /// A symlink on the way leads out.
    #[error("it resolves to {resolved}, outside {folder}")]
    Outside {
        /// Where the path really leads.
        resolved: PathBuf,
        /// The folder it had to stay in.
        folder: PathBuf,
    },
}

impl From<EvidenceError> for Verdict {
    fn from(e: EvidenceError) -> Verdict {
        let file = match &e {
            EvidenceError::Missing(f) => Some(f.clone()),
            EvidenceError::Malformed { file, .. } | EvidenceError::Refused { file, .. } => Some(file.clone()),
            EvidenceError::RootRefused { .. } => None,
        };
        Verdict::error(e.to_string()).with_evidence(file)
    }
}

/// The `evidence/` folder of a run.
#[derive(Debug, Clone)]
pub struct Evidence {
    root: PathBuf,
}

impl Evidence {
    /// Opens an evidence folder (it need not exist yet; reads then report missing files).
    pub fn new(root: impl Into<PathBuf>) -> Evidence {
        Evidence { root: root.into() }
    }

    /// Opens the evidence folder `rel` of the run folder `run_dir`, as a run record names it,
    /// refusing one that is absolute, climbs out with `..`, or resolves (through a symlink)
    /// outside the run folder. A folder that does not exist is accepted: its reads report
    /// missing files.
    pub fn within(run_dir: &Path, rel: &str) -> Result<Evidence, EvidenceError> {
        let refused = |why| EvidenceError::RootRefused { root: rel.to_string(), why };
        if !is_plain_relative(rel) {
            return Err(refused(Escape::NotBelow));
        }
        let root = run_dir.join(rel);
        if let (Ok(resolved), Ok(folder)) = (root.canonicalize(), run_dir.canonicalize())
            && !resolved.starts_with(&folder)
        {
            return Err(refused(Escape::Outside { resolved, folder }));
        }
        Ok(Evidence { root })
    }

    /// Absolute path of a relative evidence file.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Whether a file exists.
    pub fn exists(&self, rel: &str) -> bool {
        is_plain_relative(rel) && self.path(rel).is_file()
    }

    /// Where a file really is, checked to lie inside the evidence folder: `rel` must be a plain
    /// relative path, and once symlinks are resolved it must still be under the resolved folder.
    /// Every read goes through here, so a judge cannot be led out of the folder.
    fn resolve(&self, rel: &str) -> Result<PathBuf, EvidenceError> {
        let refused = |why| EvidenceError::Refused { file: rel.to_string(), why };
        if !is_plain_relative(rel) {
            return Err(refused(Escape::NotBelow));
        }
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => EvidenceError::Missing(rel.to_string()),
            _ => EvidenceError::Malformed { file: rel.to_string(), message: e.to_string() },
        };
        let folder = self.root.canonicalize().map_err(io)?;
        let resolved = self.path(rel).canonicalize().map_err(io)?;
        if resolved.starts_with(&folder) { Ok(resolved) } else { Err(refused(Escape::Outside { resolved, folder })) }
    }

    /// Raw bytes of a file.
    pub fn read_bytes(&self, rel: &str) -> Result<Vec<u8>, EvidenceError> {
        std::fs::read(self.resolve(rel)?)
            .map_err(|e| EvidenceError::Malformed { file: rel.to_string(), message: e.to_string() })
    }

    /// A text file.
    pub fn read_text(&self, rel: &str) -> Result<String, EvidenceError> {
        let bytes = self.read_bytes(rel)?;
        String::from_utf8(bytes).map_err(|e| EvidenceError::Malformed { file: rel.to_string(), message: e.to_string() })
    }

    /// A JSON file, deserialized.
    pub fn read_json<T: DeserializeOwned>(&self, rel: &str) -> Result<T, EvidenceError> {
        let bytes = self.read_bytes(rel)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EvidenceError::Malformed { file: rel.to_string(), message: e.to_string() })
    }

    /// Names of the sub-folders of a folder, sorted (e.g. the nodes under `ztunnel/`).
    pub fn subdirs(&self, rel: &str) -> Vec<String> {
        self.entries(rel, true)
    }

    /// Names of the files in a folder, sorted.
    pub fn files(&self, rel: &str) -> Vec<String> {
        self.entries(rel, false)
    }

    /// Lists names only; a symlink counts as what it leads to, so that reading through it is
    /// refused by name rather than the entry being silently left out.
    fn entries(&self, rel: &str, dirs: bool) -> Vec<String> {
        if !is_plain_relative(rel) {
            return Vec::new();
        }
        let mut out: Vec<String> = std::fs::read_dir(self.path(rel))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir() == dirs)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Writes a file, creating its folder; the write is atomic (temp file, then rename).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.path(rel);
        crate::common::util::write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Writes a value as pretty JSON.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> std::io::Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        self.write(rel, &bytes)
    }
}

/// Whether a path is relative and only goes down: no root, no drive prefix, no `..`. An empty
/// path (the folder itself) counts.
fn is_plain_relative(rel: &str) -> bool {
    Path::new(rel).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

static MANIFEST_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Records an applied object as `manifests/NNN-<kind>-<namespace>-<name>.yaml` (as JSON-compatible
/// YAML, redacted). A Secret's `data`/`stringData` values are replaced before it is serialized,
/// whatever its keys are called, so the record names the keys but holds none of the values.
pub fn record_manifest(
    run_dir: &Path,
    obj: &kube::api::DynamicObject,
    default_ns: Option<&str>,
) -> std::io::Result<()> {
    let n = MANIFEST_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let kind = obj.types.as_ref().map(|t| t.kind.to_lowercase()).unwrap_or_default();
    let ns = obj.metadata.namespace.as_deref().or(default_ns).unwrap_or("cluster");
    let name = obj.metadata.name.as_deref().unwrap_or("unnamed");
    let text =
        serde_json::to_string_pretty(&crate::redact::without_secret_values(obj)).map_err(std::io::Error::other)?;
    crate::common::util::write_atomic(
        &run_dir.join(format!("manifests/{n:03}-{kind}-{ns}-{name}.yaml")),
        crate::redact::redact(&text).as_bytes(),
    )
}
