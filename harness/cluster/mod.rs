//! The cluster side: everything that talks to a cluster or runs a tool. The Kubernetes API client
//! ([`live`]), external commands in their own process groups ([`runner`]), the wait conditions the
//! plan names, carried out ([`waits`]), the run's namespaces ([`namespaces`]), the traffic
//! generator ([`traffic`]), the service proxy to Prometheus, Tempo and Kiali ([`proxy`]), a browser for login flows ([`browser`]) and the lock that marks a run's cluster as in use ([`liveness`]). The plan says *what* (a [`crate::plan::CommandSpec`], a
//! [`crate::plan::Condition`]); this stage carries it out.
//!
//! May import: common, formats, redact, scenario, plan, evidence.

pub mod browser;
pub mod changes;
pub mod download;
pub mod live;
pub mod liveness;
pub mod namespaces;
pub mod owned;
pub mod proxy;
pub mod runner;
pub mod traffic;
pub mod waits;
