//! The run folder (`reports/<run-id>/`, layout in `reports/README.md`) and what is written into it:
//! `run.json`, `junit.xml`, `summary.md`, recorded manifests. Reporting is kept apart from running:
//! every writer here takes a finished or partial [`RunRecord`], so a run that dies at any phase still
//! leaves a valid `junit.xml` and `summary.md`.
//!
//! Files: `record` (run.json and how a trial that did not pass is explained), `junit`,
//! `summary`, `gantt` (summary.md's diagrams), `compare` (two reports side by side), `plot`
//! (numbers.svg); the
//! others import only `record` (and `summary` the diagrams and the comparison for the gate table).
//! May import: common, evidence, and the command records of `cluster::runner`.

use std::path::{Path, PathBuf};

use crate::{common::util::write_atomic, evidence::ServiceEdge, redact::redact};

mod compare;
mod gantt;
mod junit;
pub mod known_issues;
mod plot;
mod record;
mod summary;

pub use compare::*;
pub use gantt::*;
pub use junit::*;
pub use plot::numbers_svg;
pub use record::*;
pub use summary::*;

/// The plot of a run's numbers, in the run folder ([`numbers_svg`]), linked from summary.md.
pub const NUMBERS_SVG: &str = "numbers.svg";

impl RunRecord {
    /// Writes `run.json`, `junit.xml`, `summary.md` and (when the run measured numbers)
    /// `numbers.svg` into the run folder, each atomically.
    /// `service_graph` is drawn in summary.md (empty: no graph section). When a trial failed,
    /// summary.md also quotes the commands that failed while it ran, read from `commands/`.
    pub fn write_all(&self, run_dir: &Path, service_graph: &[ServiceEdge]) -> Result<(), ReportError> {
        let io = |path: PathBuf| move |source| ReportError::Io { path, source };
        // Every text file of the report is redacted as a whole, last: what a verdict or the
        // scenario quotes (a mirror URL with credentials) is public once the folder is uploaded.
        let json = redact(
            &String::from_utf8(serde_json::to_vec_pretty(self).expect("run record serializes")).expect("JSON is UTF-8"),
        );
        write_atomic(&run_dir.join("run.json"), json.as_bytes()).map_err(io(run_dir.join("run.json")))?;
        let xml = junit(self)
            .to_string()
            .map(|x| redact(&crate::common::util::xml_chars(&strip_root_skipped(&x))))
            .map_err(|e| ReportError::Format { path: run_dir.join("junit.xml"), message: e.to_string() })?;
        write_atomic(&run_dir.join("junit.xml"), xml.as_bytes()).map_err(io(run_dir.join("junit.xml")))?;
        let commands = if self.results.iter().any(|r| did_not_pass(r.verdict.outcome)) {
            failed_commands(run_dir)
        } else {
            Vec::new()
        };
        if let Some(svg) = numbers_svg(self) {
            write_atomic(&run_dir.join(NUMBERS_SVG), svg.as_bytes()).map_err(io(run_dir.join(NUMBERS_SVG)))?;
        }
        let md = redact(&summary(self, service_graph, &commands));
        write_atomic(&run_dir.join("summary.md"), md.as_bytes()).map_err(io(run_dir.join("summary.md")))
    }
}

/// The JUnit 10 schema (Jenkins xunit) has no `skipped` attribute on `<testsuites>`; quick-junit
/// writes one. Dropping it from the root element keeps the file valid; each `<testsuite>` keeps its
/// own `skipped` count.
fn strip_root_skipped(xml: &str) -> String {
    let Some(start) = xml.find("<testsuites") else { return xml.to_string() };
    let end = start + xml[start..].find('>').unwrap_or(0);
    let head = &xml[start..end];
    let Some(attr) = head.find(" skipped=\"") else { return xml.to_string() };
    let attr_end = attr + 10 + head[attr + 10..].find('"').map(|i| i + 1).unwrap_or(0);
    format!("{}{}{}{}", &xml[..start], &head[..attr], &head[attr_end..], &xml[end..])
}
