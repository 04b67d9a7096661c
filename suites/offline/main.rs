//! Offline tests: everything that can be proven without a cluster.

mod apiserver;
mod charts;
mod common;
mod controlplane;
mod faults;
mod fixtures;
mod images;
mod judges;
mod latency;
mod layers;
mod plans;
mod preflight;
mod processes;
mod prometheus;
mod rehearsal;
mod reports;
mod scenarios;
mod security;
#[path = "../sim/mod.rs"]
mod sim;
mod traffic;
mod verdict_rules;
mod workflows;
