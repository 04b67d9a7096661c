//! The numbers a judge computes besides its verdict (a footprint, a latency), and the release gate's
//! rules on them: kept in run.json with the verdict, compared by the summary and `meshcheck compare`.

use serde::{Deserialize, Serialize};

/// The unit of a [`Measurement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Bytes (memory).
    Bytes,
    /// CPU cores (CPU seconds per second).
    Cores,
    /// Milliseconds (latency).
    Millis,
    /// A count (restarts, log lines).
    Count,
}

impl Unit {
    /// `value` in this unit, for people: MiB for bytes, millicores for cores.
    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Bytes => format!("{:.1} MiB", value / (1024.0 * 1024.0)),
            Unit::Cores => format!("{:.1} mcore", value * 1000.0),
            Unit::Millis => format!("{value:.2} ms"),
            Unit::Count => format!("{value:.0}"),
        }
    }
}

/// One number a judge computed, named so that the same number of two passes can be matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// A stable key: `<component>.<quantity>.<condition>` (`ztunnel.memory.load`).
    pub metric: String,
    /// Its unit.
    pub unit: Unit,
    /// Its value.
    pub value: f64,
    /// The samples it summarizes, in the order taken (the value of each repetition of which it is
    /// the median): the spread behind the number, and what the run's plot draws.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

impl Measurement {
    /// A number of its own (no samples behind it).
    pub fn new(metric: impl Into<String>, unit: Unit, value: f64) -> Measurement {
        Measurement { metric: metric.into(), unit, value, samples: Vec::new() }
    }
}

/// The release gate's rules on numbers ([`crate::scenario::GateOptions`]), as a run recorded them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberRules {
    /// `gate.footprint.max_ratio`.
    pub max_ratio: f64,
    /// `gate.latency.p99_overhead_ms`.
    pub p99_overhead_ms: f64,
}

/// How a candidate's number stands against the baseline's under [`NumberRules`].
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// candidate / baseline.
    pub ratio: f64,
    /// The rule it breaks, said with its setting (`over gate.footprint.max_ratio 1.2`), if any.
    pub broken: Option<String>,
}

impl NumberRules {
    /// The rules of a run's scenario (run.json's `scenario`), each defaulted when absent.
    pub fn of_scenario(scenario: &serde_json::Value) -> NumberRules {
        let get = |path: &str| scenario.pointer(path).and_then(serde_json::Value::as_f64);
        NumberRules {
            max_ratio: get("/gate/footprint/max_ratio")
                .unwrap_or_else(|| crate::scenario::FootprintRules::default().max_ratio),
            p99_overhead_ms: get("/gate/latency/p99_overhead_ms")
                .unwrap_or_else(|| crate::scenario::LatencyRules::default().p99_overhead_ms),
        }
    }

    /// Holds one number of the candidate against the baseline's. CPU and memory: the ratio, and a
    /// growth below the unit's noise floor ([`crate::scenario::MEMORY_NOISE_BYTES`],
    /// [`crate::scenario::CPU_NOISE_CORES`]) never breaks it, whatever its ratio (a garbage
    /// collection, a busy runner). The latency overhead at p99 (`….overhead.p99`): its growth in
    /// milliseconds. Requests, every other latency figure and the health sentinels' counts are
    /// shown, never held (the health check fails on an OOM kill or a crash loop itself).
    pub fn hold(&self, metric: &str, unit: Unit, baseline: f64, candidate: f64) -> Held {
        let ratio = if baseline > 0.0 { candidate / baseline } else { f64::INFINITY };
        let broken = match unit {
            _ if metric.contains(".requests.") => None,
            Unit::Bytes | Unit::Cores => {
                let noise = if unit == Unit::Bytes {
                    crate::scenario::MEMORY_NOISE_BYTES
                } else {
                    crate::scenario::CPU_NOISE_CORES
                };
                (ratio > self.max_ratio && candidate - baseline >= noise)
                    .then(|| format!("over gate.footprint.max_ratio {}", self.max_ratio))
            }
            Unit::Millis if metric.ends_with(".overhead.p99") => {
                (candidate - baseline > self.p99_overhead_ms).then(|| {
                    format!(
                        "{:.2} ms more, over gate.latency.p99_overhead_ms {}",
                        candidate - baseline,
                        self.p99_overhead_ms
                    )
                })
            }
            Unit::Millis | Unit::Count => None,
        };
        Held { ratio, broken }
    }
}
