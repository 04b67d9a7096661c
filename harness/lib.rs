//! meshcheck: an integration-test harness and conformance suite for Istio ambient mode on Cilium.
//!
//! Data flows one way, and the folders say so: [`scenario`] (what the user asked for) → [`plan`]
//! (the steps as data) → [`run`] (executes the plan, owns every side effect) → [`cluster`] (the
//! API, the tools, the waits) → [`checks`] (collectors write [`evidence`], pure judges read it) →
//! [`report`] (run.json, JUnit, summary, compare). Judges never touch a cluster, so `meshcheck judge
//! <run folder>` reproduces every verdict offline. `ARCHITECTURE.md` draws the whole picture.
//!
//! The imports say the same. Layers, lowest first; a module imports only from layers below its own
//! (the offline test `layers` reads this list and fails on any import against it):
//!
//! 1. common, formats, redact: leaves (shared names, the check catalog, utilities; wire formats; the redaction engine)
//! 2. scenario: what the user asked for
//! 3. plan: the plan as data (steps, commands, wait conditions, embedded fixtures, provider configs)
//! 4. evidence: the evidence folder and verdicts
//! 5. cluster: the cluster API, external commands, waits, namespaces, traffic
//! 6. checks, report: collectors and judges; the run folder's reports
//! 7. preflight: what a run needs, read from its plan
//! 8. run: executes a plan and owns every side effect
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checks;
pub mod cluster;
pub mod common;
pub mod evidence;
pub mod formats;
pub mod plan;
pub mod preflight;
pub mod redact;
pub mod report;
pub mod run;
pub mod scenario;

/// Exit code when checks failed or errored, or a phase after preflight did not pass (`run`, `judge`),
/// or a check regressed (`compare`). Shown in the README section "Exit codes".
pub const EXIT_CHECKS_FAILED: u8 = 1;
/// Exit code for bad input (scenario errors, bad arguments, a run folder or JUnit file that cannot
/// be read).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when meshcheck could not run: preflight found missing pieces, the run folder could not
/// be written, or (`compare`) no check ran in the candidate, so there is nothing to gate on.
pub const EXIT_COULD_NOT_RUN: u8 = 3;
/// Exit code when a run was interrupted with Ctrl-C, SIGTERM or SIGHUP (128 + SIGINT, the shell's
/// convention).
pub const EXIT_INTERRUPTED: u8 = 130;
