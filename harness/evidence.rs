//! Evidence folders and verdicts.
//!
//! A judge sees only an [`Evidence`] folder, never a cluster, so `meshcheck judge` can reproduce every
//! verdict offline from a downloaded nightly artifact. A missing or unreadable file is never a pass
//! nor a fail: it turns into an `error` verdict that names the file, and so does any evidence that
//! leaves the question open ([`Findings`]). An evidence folder has the [`Format`] its run wrote.

use std::{
    fmt,
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

mod numbers;
pub use numbers::{Held, Measurement, NumberRules, Unit};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Numbers the judge computed from the evidence (a footprint, a latency), kept in run.json so
    /// that reports and `meshcheck compare` can set two passes or two runs side by side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
}

impl Verdict {
    /// A pass.
    pub fn pass(reason: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Pass,
            reason: reason.into(),
            details: Vec::new(),
            evidence: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// A fail.
    pub fn fail(reason: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Fail,
            reason: reason.into(),
            details: Vec::new(),
            evidence: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// An error (nothing could be judged).
    pub fn error(reason: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Error,
            reason: reason.into(),
            details: Vec::new(),
            evidence: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// Not run, with why.
    pub fn not_run(reason: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::NotRun,
            reason: reason.into(),
            details: Vec::new(),
            evidence: Vec::new(),
            measurements: Vec::new(),
        }
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

    /// Records the numbers the judge computed.
    pub fn with_measurements(mut self, measurements: impl IntoIterator<Item = Measurement>) -> Verdict {
        self.measurements.extend(measurements);
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

/// What a judge found, sorted by what it means for the verdict. One rule for every judge: a
/// finding that the evidence contradicts the install guide is a failure; a finding that leaves the
/// question open (a missing file, a baseline that failed, an exec that could not run, a curl exit
/// that proves nothing) is unjudged. Any unjudged finding makes the verdict an `error`: a release
/// gate must not read "regressed" when it could not tell.
#[derive(Debug, Default)]
pub struct Findings {
    failures: Vec<String>,
    unjudged: Vec<String>,
    notes: Vec<String>,
    evidence: Vec<String>,
}

impl Findings {
    /// No findings yet, having read `evidence`.
    pub fn reading(evidence: impl IntoIterator<Item = String>) -> Findings {
        Findings { evidence: evidence.into_iter().collect(), ..Findings::default() }
    }

    /// The evidence contradicts what the install guide promises.
    pub fn fail(&mut self, finding: impl Into<String>) {
        self.failures.push(finding.into());
    }

    /// Something this check needed could not be judged.
    pub fn unjudged(&mut self, finding: impl Into<String>) {
        self.unjudged.push(finding.into());
    }

    /// A needed file that could not be read: unjudged, naming the file.
    pub fn unreadable(&mut self, error: EvidenceError) {
        self.evidence.extend(error.file());
        self.unjudged.push(error.to_string());
    }

    /// Context for a pass (what was seen); a fail or an error shows its findings instead.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records an evidence file as read.
    pub fn read(&mut self, file: impl Into<String>) {
        self.evidence.push(file.into());
    }

    /// The verdict: `error` when anything was unjudged (its findings first, then any failures seen
    /// on the way), else `fail` when anything failed (the reason from `fail` and the count), else
    /// `pass` with the notes.
    pub fn verdict(self, pass: impl Into<String>, fail: impl FnOnce(usize) -> String) -> Verdict {
        let Findings { failures, unjudged, notes, evidence } = self;
        let failed = failures.iter().map(|f| format!("also failed: {f}"));
        let verdict = match unjudged.as_slice() {
            [] if failures.is_empty() => Verdict::pass(pass).with_details(notes),
            [] => Verdict::fail(fail(failures.len())).with_details(failures),
            [only] => Verdict::error(only.clone()).with_details(failed),
            [first, ..] => Verdict::error(format!("{} things could not be judged, first: {first}", unjudged.len()))
                .with_details(unjudged.iter().cloned().chain(failed)),
        };
        verdict.with_evidence(evidence)
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
    /// The file holds evidence that a later format added, and the folder is of an earlier one:
    /// the run that wrote it never gathered what this check now needs.
    #[error("format {folder}: no {file}, evidence of format {added}, which this run folder predates")]
    Predates {
        /// Relative path.
        file: String,
        /// The folder's format.
        folder: Format,
        /// The format that added the file.
        added: Format,
    },
    /// The run folder's `run.json` does not say which format its evidence is in.
    #[error("run.json of {run_dir}: {message}")]
    UnknownFormat {
        /// The run folder.
        run_dir: PathBuf,
        /// What is wrong with its `format`.
        message: String,
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

impl EvidenceError {
    /// The evidence file it is about, if it is about one.
    pub fn file(&self) -> Option<String> {
        match self {
            EvidenceError::Missing(file)
            | EvidenceError::Malformed { file, .. }
            | EvidenceError::Refused { file, .. }
            | EvidenceError::Predates { file, .. } => Some(file.clone()),
            EvidenceError::UnknownFormat { .. } | EvidenceError::RootRefused { .. } => None,
        }
    }
}

impl From<EvidenceError> for Verdict {
    fn from(e: EvidenceError) -> Verdict {
        let file = e.file();
        Verdict::error(e.to_string()).with_evidence(file)
    }
}

/// The format of an evidence folder, `format` in its run's `run.json`. A judge reads a folder by
/// its own format: evidence that a later format added is absent from an earlier folder, which is
/// an error naming the format ([`EvidenceError::Predates`]), never a pass nor a fail.
/// `reports/README.md` lists what each format changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// One shared `ztunnel/` folder; no STRICT baseline, no curl exit codes, no ztunnel pod list,
    /// no probe targets before the policy, no enforcement probe, no gateway Services.
    One,
    /// Each check keeps its own ztunnel evidence, and the evidence format 1 lacked.
    Two,
}

impl Format {
    /// The format this meshcheck writes (`crate::report::FORMAT` is its number in run.json; an
    /// offline test holds the two together).
    pub const CURRENT: Format = Format::Two;

    /// The format numbered `n` in run.json.
    pub fn numbered(n: u64) -> Option<Format> {
        match n {
            1 => Some(Format::One),
            2 => Some(Format::Two),
            _ => None,
        }
    }

    /// Its number in run.json.
    pub fn number(self) -> u32 {
        match self {
            Format::One => 1,
            Format::Two => 2,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The `evidence/` folder of a run.
#[derive(Debug, Clone)]
pub struct Evidence {
    root: PathBuf,
    format: Format,
}

impl Evidence {
    /// Opens an evidence folder that this meshcheck writes (or wrote), so of [`Format::CURRENT`]
    /// (it need not exist yet; reads then report missing files).
    pub fn new(root: impl Into<PathBuf>) -> Evidence {
        Evidence { root: root.into(), format: Format::CURRENT }
    }

    /// Opens the evidence folder `rel` of the run folder `run_dir`, as a run record names it, in
    /// the format its `run.json` names, refusing one that is absolute, climbs out with `..`, or
    /// resolves (through a symlink) outside the run folder. A folder that does not exist is
    /// accepted: its reads report missing files.
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
        Ok(Evidence { root, format: run_format(run_dir)? })
    }

    /// The format the folder was written in.
    pub fn format(&self) -> Format {
        self.format
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
        // Resolved inside the folder (links there are followed), then read as a regular file of
        // bounded size.
        crate::common::util::read_run_file(&self.resolve(rel)?, crate::common::util::RUN_FILE_MAX)
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

    /// A JSON file that format `added` introduced: in a folder of an earlier format its absence
    /// says so ([`EvidenceError::Predates`]) instead of only that it is missing.
    pub fn read_json_added<T: DeserializeOwned>(&self, rel: &str, added: Format) -> Result<T, EvidenceError> {
        self.read_json(rel).map_err(|e| match e {
            EvidenceError::Missing(file) if self.format < added => {
                EvidenceError::Predates { file, folder: self.format, added }
            }
            other => other,
        })
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

/// The evidence format `run.json` of `run_dir` names. The run record was read before (a
/// `judge` loads it first), so a run.json that cannot say is an error, not a guess.
fn run_format(run_dir: &Path) -> Result<Format, EvidenceError> {
    let unknown = |message: String| EvidenceError::UnknownFormat { run_dir: run_dir.to_path_buf(), message };
    let bytes = crate::common::util::read_run_file(&run_dir.join("run.json"), crate::common::util::RUN_FILE_MAX)
        .map_err(|e| unknown(e.to_string()))?;
    let record: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| unknown(e.to_string()))?;
    let number =
        record.get("format").and_then(serde_json::Value::as_u64).ok_or_else(|| unknown("no `format`".into()))?;
    Format::numbered(number)
        .ok_or_else(|| unknown(format!("format {number} is not one this meshcheck reads (1 to {})", Format::CURRENT)))
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
