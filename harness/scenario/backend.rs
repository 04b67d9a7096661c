//! Where the parts of the observability stack the checks read are: meshcheck's guide's places, or
//! what an existing cluster's scenario says (`existing.prometheus`, `existing.tempo`, `existing.kiali`).

use super::ExistingSpec;
#[cfg(doc)]
use super::Format;

/// A part of the observability stack the checks read over the API server's service proxy, which
/// an existing cluster may keep elsewhere than meshcheck's guide does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Prometheus (metrics, probes, footprint).
    Prometheus,
    /// Tempo (traces, l7-traces).
    Tempo,
    /// Kiali (kiali).
    Kiali,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 3] = [Backend::Prometheus, Backend::Tempo, Backend::Kiali];

    /// Its key under `existing:`.
    pub fn key(self) -> &'static str {
        match self {
            Backend::Prometheus => "prometheus",
            Backend::Tempo => "tempo",
            Backend::Kiali => "kiali",
        }
    }

    /// What `existing:` says of it, if anything.
    pub fn given(self, e: &ExistingSpec) -> Option<&str> {
        match self {
            Backend::Prometheus => e.prometheus.as_deref(),
            Backend::Tempo => e.tempo.as_deref(),
            Backend::Kiali => e.kiali.as_deref(),
        }
    }

    /// The scenario field that says where it is.
    pub fn field(self) -> &'static str {
        match self {
            Backend::Prometheus => "existing.prometheus",
            Backend::Tempo => "existing.tempo",
            Backend::Kiali => "existing.kiali",
        }
    }

    /// Where meshcheck's guide puts it: kube-prometheus-stack with `fullnameOverride: prom`
    /// (values/kube-prometheus-stack.yaml, Service `<fullname>-prometheus` on 9090), the tempo
    /// chart as release `tempo` (its Service on 3200), the Kiali CR's defaults (`kiali` on 20001).
    pub fn default_at(self) -> ServiceAt {
        let at = |namespace: &str, name: &str, port| ServiceAt { namespace: namespace.into(), name: name.into(), port };
        match self {
            Backend::Prometheus => at("monitoring", "prom-prometheus", 9090),
            Backend::Tempo => at("tempo", "tempo", 3200),
            Backend::Kiali => at("istio-system", "kiali", 20001),
        }
    }
}

/// A Service and one of its ports (`namespace/service:port`, [`Format::ServiceRef`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAt {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The port.
    pub port: u16,
}

impl ServiceAt {
    /// `namespace/service:port`, as the schema's format has it.
    pub fn parse(text: &str) -> Option<ServiceAt> {
        let (namespace, rest) = text.split_once('/')?;
        let (name, port) = rest.rsplit_once(':')?;
        Some(ServiceAt { namespace: namespace.into(), name: name.into(), port: port.parse().ok()? })
    }
}

impl std::fmt::Display for ServiceAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}
