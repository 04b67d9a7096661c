//! Wire formats read from upstream components: Kubernetes JSON helpers ([`kjson`]), OCI image
//! references and indexes ([`oci`]), Prometheus text exposition ([`promtext`]) and Tempo trace
//! bodies ([`tempo`]). Pure parsers, tested on real upstream outputs.
//!
//! May import: nothing of meshcheck (leaves).

pub mod kjson;
pub mod oci;
pub mod promtext;
pub mod tempo;
