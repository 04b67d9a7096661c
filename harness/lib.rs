//! meshcheck: an integration-test harness and conformance suite for Istio ambient mode on Cilium.
//!
//! Data flows one way: [`scenario`] → [`plan`] → steps executed by [`session`] (provision, install,
//! deploy, act) → evidence ([`evidence`]) → verdicts ([`checks`], pure judges) → reports ([`report`]).
//! Judges never touch a cluster, so `meshcheck judge <run folder>` reproduces every verdict offline.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checks;
pub mod evidence;
pub mod fixtures;
pub mod kjson;
pub mod live;
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
pub mod waits;

/// Exit code for bad input (scenario errors, bad arguments).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when a run was interrupted with Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
