//! The run: executes a plan and owns every side effect on the cluster. The session's lifecycle, the
//! graph executor, each step, the checks' trials, and the cleanup that takes back what the run did.
//!
//! May import: every other stage (it is the top of the graph); nothing imports it but the entry
//! points (`harness/bin/meshcheck.rs`, `suites/conformance.rs`).

pub mod session;
