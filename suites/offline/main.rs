//! Offline tests: everything that can be proven without a cluster.

mod apiserver;
mod common;
mod faults;
mod fixtures;
mod images;
mod judges;
mod plans;
mod prometheus;
mod reports;
mod scenarios;
mod traffic;
mod workflows;
