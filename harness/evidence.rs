//! Evidence folders and verdicts.
//!
//! A judge sees only an [`Evidence`] folder, never a cluster, so `meshcheck judge` can reproduce every
//! verdict offline from a downloaded nightly artifact. A missing or unreadable file is never a pass:
//! it turns into an `error` verdict that names the file.

use std::{fmt, path::PathBuf};

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
}

impl From<EvidenceError> for Verdict {
    fn from(e: EvidenceError) -> Verdict {
        let file = match &e {
            EvidenceError::Missing(f) => f.clone(),
            EvidenceError::Malformed { file, .. } => file.clone(),
        };
        Verdict::error(e.to_string()).with_evidence([file])
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

    /// Absolute path of a relative evidence file.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Whether a file exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    /// Raw bytes of a file.
    pub fn read_bytes(&self, rel: &str) -> Result<Vec<u8>, EvidenceError> {
        std::fs::read(self.path(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => EvidenceError::Missing(rel.to_string()),
            _ => EvidenceError::Malformed { file: rel.to_string(), message: e.to_string() },
        })
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

    fn entries(&self, rel: &str, dirs: bool) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.path(rel))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir() == dirs).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Writes a file, creating its folder; the write is atomic (temp file, then rename).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.path(rel);
        crate::util::write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Writes a value as pretty JSON.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> std::io::Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        self.write(rel, &bytes)
    }
}
