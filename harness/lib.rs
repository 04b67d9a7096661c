//! meshcheck: an integration-test harness and conformance suite for Istio ambient mode on Cilium.
//!
//! Data flows one way: [`scenario`] → [`plan`] → steps executed by [`session`] (provision, install,
//! deploy, act) → evidence ([`evidence`]) → verdicts ([`checks`], pure judges) → reports ([`report`]).
//! Judges never touch a cluster, so `meshcheck judge <run folder>` reproduces every verdict offline.
//!
//! The imports say the same. Layers, lowest first; a module imports only from layers below its own
//! (the offline test `layers` reads this list and fails on any import against it):
//!
//! 1. util, names, catalog, kjson, oci, promtext, tempo: leaves (utilities, shared names, what each check is, wire formats)
//! 2. scenario, progress: what the user asked for; the console
//! 3. providers, fixtures, runner, evidence: cluster tools, embedded files, commands, the evidence folder
//! 4. live, report: the cluster API; the run folder's reports
//! 5. waits, namespaces, traffic: what is built on the cluster API
//! 6. plan, checks: the plan as data; collectors and judges
//! 7. preflight: what a run needs, read from its plan
//! 8. session: executes a plan and owns every side effect
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
pub mod checks;
pub mod evidence;
pub mod fixtures;
pub mod kjson;
pub mod live;
pub mod names;
pub mod namespaces;
pub mod oci;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod promtext;
pub mod providers;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod tempo;
pub mod traffic;
pub mod util;
pub mod waits;

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
