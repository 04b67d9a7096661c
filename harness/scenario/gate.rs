//! The release gate's rules on numbers: how the footprint and latency checks measure, and how much
//! the candidate may differ from the baseline.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::span::Span;

/// The release gate's rules on numbers ([`Scenario::gate`](super::Scenario::gate)).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateOptions {
    /// The footprint check: CPU and memory of ztunnel, istio-cni, istiod and the gateway.
    #[serde(default)]
    pub footprint: FootprintRules,
    /// The latency check: what the mesh adds to a request, in the mesh against outside it.
    #[serde(default)]
    pub latency: LatencyRules,
}

/// How the latency check loads, and how much more the candidate's overhead may be.
///
/// Istio publishes what ambient adds at about 0.2 ms at p99 for the two ztunnel hops of a request
/// (istio.io docs/ops/deployment/performance-and-scalability, "Data plane latency", fortio at 1000
/// requests per second on bare metal). A kind or k3d node on a shared runner adds scheduler noise
/// of the same order, so the gate holds the candidate's overhead against the baseline's measured in
/// the same run, never an absolute figure.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyRules {
    /// How much more the candidate's p99 overhead (in the mesh minus outside it, median over the
    /// repetitions) may be than the baseline's, in milliseconds (default 1: five times the
    /// published overhead, the noise of a kind node).
    #[serde(default = "d_p99_overhead_ms")]
    #[schemars(range(min = 0, max = 10000))]
    pub p99_overhead_ms: f64,
    /// Requests per second fortio holds (default 100), 1 to 10000.
    #[serde(default = "d_latency_rate")]
    #[schemars(range(min = 1, max = 10000))]
    pub rate_per_second: u32,
    /// How long each load lasts (default 10s: 1000 requests at the default rate).
    #[serde(default = "d_latency_duration")]
    pub duration: Span,
    /// How many times each side is loaded, outside and inside in turn (default 5, 2 to 20): the
    /// spread of the repetitions is reported, and the overhead is the median of their differences.
    #[serde(default = "d_repetitions")]
    #[schemars(range(min = 2, max = 20))]
    pub repetitions: u32,
}

pub(super) fn d_p99_overhead_ms() -> f64 {
    1.0
}

pub(super) fn d_latency_rate() -> u32 {
    100
}

pub(super) fn d_latency_duration() -> Span {
    Span::secs(10)
}

pub(super) fn d_repetitions() -> u32 {
    5
}

impl Default for LatencyRules {
    fn default() -> Self {
        LatencyRules {
            p99_overhead_ms: d_p99_overhead_ms(),
            rate_per_second: d_latency_rate(),
            duration: d_latency_duration(),
            repetitions: d_repetitions(),
        }
    }
}

/// How the footprint check measures, and how much the candidate may exceed the baseline.
///
/// Istio publishes ztunnel at about 12 MB and 0.06 vCPU per 1000 requests per second
/// (istio.io docs/ops/deployment/performance-and-scalability, "Ztunnel" under "Data plane
/// performance"): small numbers, which a garbage collection or a noisy kind node on a shared
/// runner moves by several percent. So the gate holds a same-run ratio, candidate over baseline,
/// never an absolute figure, and a growth smaller than [`MEMORY_NOISE_BYTES`] or
/// [`CPU_NOISE_CORES`] is never a regression whatever its ratio.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FootprintRules {
    /// The largest candidate / baseline ratio of each component's CPU and memory, per pod, idle
    /// and under load (default 1.2: a fifth more).
    #[serde(default = "d_max_ratio")]
    #[schemars(range(min = 1, max = 100))]
    pub max_ratio: f64,
    /// How long each reading lasts, idle and under load (default 60s: six of kube-prometheus-stack's
    /// 10 s cAdvisor scrapes, so a reading's start and end each lag by at most a sixth of it).
    #[serde(default = "d_window")]
    pub window: Span,
}

/// A memory growth below this is noise, whatever its ratio: 4 MiB, a third of ztunnel's published
/// 12 MB, about what one garbage-collection cycle of istiod moves.
pub const MEMORY_NOISE_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

/// A CPU growth below this is noise, whatever its ratio: 10 millicores, a sixth of ztunnel's
/// published 0.06 vCPU at 1000 requests per second.
pub const CPU_NOISE_CORES: f64 = 0.010;

pub(super) fn d_max_ratio() -> f64 {
    1.2
}

pub(super) fn d_window() -> Span {
    Span::secs(60)
}

impl Default for FootprintRules {
    fn default() -> Self {
        FootprintRules { max_ratio: d_max_ratio(), window: d_window() }
    }
}
