//! Wire formats read from upstream components: Kubernetes JSON helpers ([`kjson`]), OCI image
//! references and indexes ([`oci`]), Prometheus text exposition ([`promtext`]), Tempo trace
//! bodies ([`tempo`]) and ztunnel's access log ([`ztunnel_log`]). Pure parsers, tested on real upstream outputs.
//!
//! May import: nothing of meshcheck (leaves).

pub mod kjson;
pub mod oci;
pub mod promtext;
pub mod tempo;
pub mod ztunnel_log;
