//! Known upstream issues (`fixtures/known-issues.yaml`, issue 25 item 7): a failure whose cause
//! upstream has already named is cited beside it in summary.md, with the upstream link, the
//! versions it affects and what to do. A citation never changes a verdict and never replaces the
//! failure's own text: a new failure that happens to look like a known one is still reported whole.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{RunRecord, TrialResult};
use crate::evidence::Outcome;

/// One signature.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KnownIssue {
    /// Short id.
    pub id: String,
    /// The upstream issue (or documentation) URL.
    pub issue: String,
    /// Its title.
    pub title: String,
    /// The check whose failure it explains.
    pub check: String,
    /// Texts the failure's reason and details must all contain (case-insensitive).
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Component (a key of run.json's `versions`) → SemVer range it affects.
    #[serde(default)]
    pub affects: BTreeMap<String, String>,
    /// What to do.
    pub advice: String,
    /// A failure text the signature must match (held by the offline tests).
    pub example: String,
}

/// The signatures shipped in `fixtures/known-issues.yaml` (or the fixtures override folder).
pub fn catalog() -> Result<Vec<KnownIssue>, String> {
    let text = crate::plan::fixtures::text("known-issues.yaml");
    let issues: Vec<KnownIssue> = serde_saphyr::from_str(&text).map_err(|e| format!("known-issues.yaml: {e}"))?;
    for i in &issues {
        for range in i.affects.values() {
            semver::VersionReq::parse(range).map_err(|e| format!("known-issues.yaml {}: `{range}`: {e}", i.id))?;
        }
    }
    Ok(issues)
}

/// Whether `text` (a failure's reason and details) has every text of `issue.matches`.
pub fn text_matches(issue: &KnownIssue, text: &str) -> bool {
    let text = text.to_lowercase();
    !issue.matches.is_empty() && issue.matches.iter().all(|m| text.contains(&m.to_lowercase()))
}

/// The version of `component` the trial ran against: after an upgrade (its `upgrade` and
/// `candidate` trials) Istio's is the one upgraded to.
fn version_for<'a>(record: &'a RunRecord, r: &TrialResult, component: &str) -> Option<&'a str> {
    let upgraded = component == "istio" && matches!(r.suite.as_str(), "upgrade" | "candidate");
    let key = if upgraded && record.versions.contains_key("istio_upgrade_to") { "istio_upgrade_to" } else { component };
    record.versions.get(key).map(String::as_str)
}

/// The signatures that explain trial `r` of `record`: it failed or errored, it is the
/// signature's check, its text matches, and every affected component's version is in range.
pub fn explaining<'a>(catalog: &'a [KnownIssue], record: &RunRecord, r: &TrialResult) -> Vec<&'a KnownIssue> {
    if !matches!(r.verdict.outcome, Outcome::Fail | Outcome::Error) {
        return Vec::new();
    }
    let text = format!("{}\n{}", r.verdict.reason, r.verdict.details.join("\n"));
    catalog
        .iter()
        .filter(|i| i.check == r.name && text_matches(i, &text))
        .filter(|i| {
            i.affects.iter().all(|(component, range)| {
                let version = version_for(record, r, component).map(|v| v.trim_start_matches('v'));
                let (Some(version), Ok(range)) = (version, semver::VersionReq::parse(range)) else { return false };
                semver::Version::parse(version).is_ok_and(|v| range.matches(&v))
            })
        })
        .collect()
}

/// The citation lines for trial `r`, for summary.md.
pub fn citations(record: &RunRecord, r: &TrialResult) -> String {
    let catalog = match catalog() {
        Ok(c) => c,
        Err(e) => return format!("\n(known issues not read: {e})\n"),
    };
    let mut out = String::new();
    for i in explaining(&catalog, record, r) {
        let affects: Vec<String> = i
            .affects
            .iter()
            .map(|(c, range)| format!("{c} {range} (this run: {})", version_for(record, r, c).unwrap_or("?")))
            .collect();
        out.push_str(&format!(
            "\n**Known issue** [{}]({}): {}. Affects {}. {}\n",
            i.id,
            i.issue,
            i.title,
            affects.join(", "),
            i.advice
        ));
    }
    out
}
