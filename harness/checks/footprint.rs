//! The mesh's footprint: CPU and memory of ztunnel, istio-cni, istiod and the ingress gateway, per
//! pod, idle and under a fixed load, read from the cAdvisor series the cluster's Prometheus
//! scrapes, beside the requests each pod declares (what the scheduler reserves on every node for
//! the two DaemonSets). In a release gate's candidate pass the baseline pass's readings are copied
//! beside its own, and each number may grow by at most `gate.footprint.max_ratio`.
//!
//! Where the numbers come from: kube-prometheus-stack 77.0.0 scrapes every kubelet's
//! `/metrics/cadvisor` (values.yaml `kubelet.serviceMonitor.cAdvisor: true`, through the
//! `prom-kubelet` Service prometheus-operator v0.85.0 keeps in kube-system, pkg/kubelet/controller.go)
//! and labels those series `metrics_path="/metrics/cadvisor"` (`cAdvisorRelabelings`); its
//! `cAdvisorMetricRelabelings` keep `container_cpu_usage_seconds_total` and
//! `container_memory_working_set_bytes`. A reading is two instant queries of the CPU counter a
//! window apart, so the rate is the counter's growth over the window's wall time (the counter's
//! last scrape lags by at most one 10 s interval at each end), and one query of the working set at
//! the window's end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BASELINE_COPY, BoxFuture, CheckDef, Collector};
use crate::{
    cluster::{
        live::{Live, LiveError},
        traffic::{Budget, TrafficGenerator},
    },
    common::catalog,
    evidence::{Evidence, Measurement, NumberRules, Unit, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::FOOTPRINT, collect: Collector::Cluster(collect), judge };

const DIR: &str = "footprint";

/// The namespaces of the mesh's own pods (istio.io docs/ambient/install/helm: istiod, istio-cni and
/// ztunnel into istio-system, the ingress gateway into istio-ingress).
const NAMESPACES: &[&str] = &["istio-system", "istio-ingress"];

/// Per-container CPU counter and working set as kube-prometheus-stack keeps them from cAdvisor.
/// `max`, not `sum`: two kubelet Services in kube-system (a cluster's own kube-prometheus-stack
/// and this run's) both match the chart's kubelet ServiceMonitor, and each container's series
/// then comes twice ("to prevent counting container metrics twice", kube-prometheus-stack 77.0.0
/// README, "Kubelet Service").
pub const CPU_QUERY: &str =
    "max by (namespace, pod, container) (container_cpu_usage_seconds_total{metrics_path=\"/metrics/cadvisor\"})";
/// See [`CPU_QUERY`].
pub const MEMORY_QUERY: &str =
    "max by (namespace, pod, container) (container_memory_working_set_bytes{metrics_path=\"/metrics/cadvisor\"})";

/// The load reading starts this long after the load does, so that the counter's first sample is
/// already under load (one cAdvisor scrape interval of kube-prometheus-stack, 10 s).
const LOAD_WARMUP_SECS: u64 = 10;

/// A part of the mesh whose footprint is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// ztunnel, one per node.
    Ztunnel,
    /// The istio-cni node agent, one per node.
    IstioCni,
    /// The control plane.
    Istiod,
    /// The ingress gateway.
    Gateway,
}

impl Part {
    const ALL: [Part; 4] = [Part::Ztunnel, Part::IstioCni, Part::Istiod, Part::Gateway];

    /// The name in measurement keys and reports.
    pub fn name(self) -> &'static str {
        match self {
            Part::Ztunnel => "ztunnel",
            Part::IstioCni => "istio-cni",
            Part::Istiod => "istiod",
            Part::Gateway => "gateway",
        }
    }

    /// Which part a pod is: by the labels of the istio 1.30.3 charts (ztunnel/templates/daemonset.yaml
    /// `app: ztunnel`, cni/templates/daemonset.yaml `k8s-app: istio-cni-node`,
    /// istiod/templates/deployment.yaml `app: istiod`), the gateway by its namespace.
    fn of(pod: &Value) -> Option<Part> {
        if kjson::namespace(pod) == "istio-ingress" {
            return Some(Part::Gateway);
        }
        match (kjson::label(pod, "app"), kjson::label(pod, "k8s-app")) {
            (Some("ztunnel"), _) => Some(Part::Ztunnel),
            (_, Some("istio-cni-node")) => Some(Part::IstioCni),
            (Some("istiod"), _) => Some(Part::Istiod),
            _ => None,
        }
    }

    /// Whether every node runs one (a DaemonSet), so its requests are reserved on each node.
    fn per_node(self) -> bool {
        matches!(self, Part::Ztunnel | Part::IstioCni)
    }
}

/// One reading's wall-clock bounds, Unix seconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// When the first CPU query was sent.
    pub started: f64,
    /// When the last CPU query was sent.
    pub ended: f64,
}

/// How the readings were taken, and the rule they are held to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Readings {
    /// The idle reading.
    pub idle: Window,
    /// The reading under load.
    pub load: Window,
    /// Requests per second sent to productpage through the gateway during the load reading.
    pub rate_per_second: u32,
    /// Requests sent during the load.
    pub sent: usize,
    /// Of those, answered 200.
    pub answered: usize,
    /// `gate.footprint.max_ratio`.
    pub max_ratio: f64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

async fn query(live: &Live, promql: &str, file: &str) -> Result<(), LiveError> {
    let q = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
    let body = live.prometheus_get(&format!("api/v1/query?{q}")).await?;
    live.save(&format!("{DIR}/{file}"), &body)
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let s = &live.scenario;
        let window = s.settle(s.gate.footprint.window.0);
        for ns in NAMESPACES {
            let pods = live.get_raw(&format!("/api/v1/namespaces/{ns}/pods")).await?;
            live.save(&format!("{DIR}/pods-{ns}.json"), &pods)?;
        }
        let idle_start = unix_now();
        query(live, CPU_QUERY, "idle-cpu-start.json").await?;
        tokio::time::sleep(window).await;
        let idle = Window { started: idle_start, ended: unix_now() };
        query(live, CPU_QUERY, "idle-cpu-end.json").await?;
        query(live, MEMORY_QUERY, "idle-memory.json").await?;
        // No budget: the footprint check needs the load, not a verdict on it; what was answered
        // is recorded, and a load that mostly failed is a load that was not measured.
        let no_budget =
            Budget { failed_requests: 0, max_outage: std::time::Duration::ZERO, step_min_success: BTreeMap::new() };
        let url = format!("{}/productpage", s.ingress.base_url());
        let rate = s.traffic.rate_per_second;
        let generator = TrafficGenerator::start(&url, rate, s.traffic.request_timeout.0, no_budget, usize::MAX);
        tokio::time::sleep(s.settle(std::time::Duration::from_secs(LOAD_WARMUP_SECS))).await;
        let load_start = unix_now();
        query(live, CPU_QUERY, "load-cpu-start.json").await?;
        tokio::time::sleep(window).await;
        let load = Window { started: load_start, ended: unix_now() };
        query(live, CPU_QUERY, "load-cpu-end.json").await?;
        query(live, MEMORY_QUERY, "load-memory.json").await?;
        let record = generator.finish().await;
        let answered = record.requests.iter().filter(|r| r.status == 200).count();
        let readings = Readings {
            idle,
            load,
            rate_per_second: rate,
            sent: record.requests.len(),
            answered,
            max_ratio: s.gate.footprint.max_ratio,
        };
        live.save_json(&format!("{DIR}/readings.json"), &readings)?;
        super::copy_baseline(live, DIR)
    })
}

/// One part's numbers, per pod (the mean over its pods).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Pods of this part in the listing.
    pub pods: usize,
    /// Working set at the end of the idle reading, bytes.
    pub memory_idle: Option<f64>,
    /// Working set at the end of the load reading, bytes.
    pub memory_load: Option<f64>,
    /// CPU over the idle reading, cores.
    pub cpu_idle: Option<f64>,
    /// CPU over the load reading, cores.
    pub cpu_load: Option<f64>,
    /// CPU its containers request, cores.
    pub requests_cpu: f64,
    /// Memory its containers request, bytes.
    pub requests_memory: f64,
}

impl Usage {
    /// The numbers the gate compares: (key suffix, unit, value).
    fn compared(&self) -> [(&'static str, Unit, Option<f64>); 4] {
        [
            ("memory.idle", Unit::Bytes, self.memory_idle),
            ("memory.load", Unit::Bytes, self.memory_load),
            ("cpu.idle", Unit::Cores, self.cpu_idle),
            ("cpu.load", Unit::Cores, self.cpu_load),
        ]
    }
}

/// Everything one pass measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// How it was measured.
    pub readings: Readings,
    /// By part.
    pub parts: BTreeMap<Part, Usage>,
    /// Pods whose CPU counter went down within a reading (a restart): left out of that reading.
    pub restarted: Vec<String>,
}

impl Footprint {
    /// Every number, keyed `<part>.<quantity>.<condition>`, and what each node reserves.
    pub fn measurements(&self) -> Vec<Measurement> {
        let mut out = Vec::new();
        let m = |metric: String, unit, value| Measurement::new(metric, unit, value);
        for (part, u) in &self.parts {
            for (key, unit, value) in u.compared() {
                if let Some(v) = value {
                    out.push(m(format!("{}.{key}", part.name()), unit, v));
                }
            }
            out.push(m(format!("{}.requests.cpu", part.name()), Unit::Cores, u.requests_cpu));
            out.push(m(format!("{}.requests.memory", part.name()), Unit::Bytes, u.requests_memory));
        }
        let per_node: Vec<&Usage> = self.parts.iter().filter(|(p, _)| p.per_node()).map(|(_, u)| u).collect();
        out.push(m("node.requests.cpu".into(), Unit::Cores, per_node.iter().map(|u| u.requests_cpu).sum()));
        out.push(m("node.requests.memory".into(), Unit::Bytes, per_node.iter().map(|u| u.requests_memory).sum()));
        out
    }
}

/// A Kubernetes quantity (`100m`, `128Mi`, `1G`, `0.5`) as a number, by the suffixes of
/// apimachinery v0.35.4 pkg/api/resource/suffix.go (binary `Ki`…`Ei`, decimal `n`, `u`, `m`,
/// `k`, `M`…`E`); exponent forms (`1e3`) parse as plain numbers.
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = text.trim();
    if let Ok(v) = text.parse::<f64>() {
        return Some(v);
    }
    SUFFIXES.iter().find_map(|(suffix, factor)| text.strip_suffix(suffix)?.parse::<f64>().ok().map(|v| v * factor))
}

/// An instant-query answer as (namespace/pod) → the sum over its containers (the pod-level
/// cgroup, `container=""`, and the pause container, `POD`, left out).
fn by_pod(v: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in v.pointer("/data/result").and_then(Value::as_array).into_iter().flatten() {
        let label = |k: &str| r.pointer(&format!("/metric/{k}")).and_then(Value::as_str).unwrap_or_default();
        if label("container").is_empty() || label("container") == "POD" {
            continue;
        }
        let Some(value) = r.pointer("/value/1").and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(format!("{}/{}", label("namespace"), label("pod"))).or_default() += value;
    }
    out
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// One pass's footprint from its evidence (`prefix` is empty for this pass, `baseline/` for the
/// copy of the baseline's): the error verdict names the missing file.
pub fn measure(ev: &Evidence, prefix: &str) -> Result<Footprint, Verdict> {
    let file = |name: &str| format!("{DIR}/{prefix}{name}");
    let read = |name: &str| ev.read_json::<Value>(&file(name)).map_err(Verdict::from);
    let readings: Readings = ev.read_json(&file("readings.json")).map_err(Verdict::from)?;
    let mut pods: BTreeMap<String, Part> = BTreeMap::new();
    let mut parts: BTreeMap<Part, Usage> = BTreeMap::new();
    for ns in NAMESPACES {
        let list = read(&format!("pods-{ns}.json"))?;
        for pod in kjson::items(&list) {
            let Some(part) = Part::of(pod) else { continue };
            pods.insert(format!("{ns}/{}", kjson::name(pod)), part);
            let usage = parts.entry(part).or_default();
            usage.pods += 1;
            for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
                let request = |r: &str| c.pointer(&format!("/resources/requests/{r}")).and_then(Value::as_str);
                usage.requests_cpu += request("cpu").and_then(quantity).unwrap_or(0.0);
                usage.requests_memory += request("memory").and_then(quantity).unwrap_or(0.0);
            }
        }
    }
    for usage in parts.values_mut() {
        usage.requests_cpu /= usage.pods as f64;
        usage.requests_memory /= usage.pods as f64;
    }
    let mut restarted = Vec::new();
    for (condition, window) in [("idle", readings.idle), ("load", readings.load)] {
        let (start, end) = (
            by_pod(&read(&format!("{condition}-cpu-start.json"))?),
            by_pod(&read(&format!("{condition}-cpu-end.json"))?),
        );
        let memory = by_pod(&read(&format!("{condition}-memory.json"))?);
        let seconds = (window.ended - window.started).max(f64::EPSILON);
        for part in Part::ALL {
            let mine = |values: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
                values.iter().filter(|(p, _)| pods.get(*p) == Some(&part)).map(|(p, v)| (p.clone(), *v)).collect()
            };
            let mut cores = Vec::new();
            for (pod, before) in mine(&start) {
                match end.get(&pod) {
                    Some(after) if *after >= before => cores.push((after - before) / seconds),
                    Some(_) => restarted.push(format!("{pod} ({condition})")),
                    None => {}
                }
            }
            let bytes: Vec<f64> = mine(&memory).into_iter().map(|(_, v)| v).collect();
            let Some(usage) = parts.get_mut(&part) else { continue };
            let (cpu, mem) = if condition == "idle" {
                (&mut usage.cpu_idle, &mut usage.memory_idle)
            } else {
                (&mut usage.cpu_load, &mut usage.memory_load)
            };
            *cpu = mean(&cores);
            *mem = mean(&bytes);
        }
    }
    Ok(Footprint { readings, parts, restarted })
}

/// Where a candidate number breaks the rule, said with the metric, both values and the rule.
pub fn regressions(baseline: &Footprint, candidate: &Footprint, max_ratio: f64) -> Vec<String> {
    let rules = NumberRules { max_ratio, p99_overhead_ms: f64::INFINITY };
    let mut out = Vec::new();
    for (part, after) in &candidate.parts {
        let Some(before) = baseline.parts.get(part) else { continue };
        for ((key, unit, b), (_, _, a)) in before.compared().into_iter().zip(after.compared()) {
            let (Some(b), Some(a)) = (b, a) else { continue };
            let metric = format!("{}.{key}", part.name());
            let held = rules.hold(&metric, unit, b, a);
            if let Some(rule) = held.broken {
                out.push(format!(
                    "{metric} per pod: {} in the candidate, {} in the baseline: ratio {:.2} {rule}",
                    unit.show(a),
                    unit.show(b),
                    held.ratio
                ));
            }
        }
    }
    out
}

/// Judges one pass's footprint, and in a candidate pass the growth from the baseline.
pub fn judge(ev: &Evidence) -> Verdict {
    let files =
        vec![format!("{DIR}/readings.json"), format!("{DIR}/load-memory.json"), format!("{DIR}/load-cpu-end.json")];
    let own = match measure(ev, "") {
        Ok(f) => f,
        Err(v) => return v,
    };
    let mut problems = Vec::new();
    for part in Part::ALL {
        match own.parts.get(&part) {
            None => problems.push(format!("no {} pod in {}", part.name(), NAMESPACES.join(" or "))),
            Some(u) if u.memory_load.is_none() || u.cpu_load.is_none() => problems.push(format!(
                "Prometheus has no cAdvisor CPU or memory series of the {} {} pod(s): is the kubelet's /metrics/cadvisor scraped (kube-prometheus-stack `kubelet.serviceMonitor.cAdvisor`)?",
                u.pods,
                part.name()
            )),
            Some(_) => {}
        }
    }
    let r = &own.readings;
    let mut notes: Vec<String> =
        own.measurements().iter().map(|m| format!("{}: {}", m.metric, m.unit.show(m.value))).collect();
    notes.push(format!("load: {} of {} requests answered 200 at {} per second", r.answered, r.sent, r.rate_per_second));
    notes.extend(own.restarted.iter().map(|p| format!("{p}: its CPU counter went down (a restart), left out")));
    if r.sent == 0 || r.answered * 2 < r.sent {
        problems.push(format!(
            "the load was not served ({} of {} requests answered 200): the numbers under load are not of a load",
            r.answered, r.sent
        ));
    }
    let compared = ev.path(&format!("{DIR}/{BASELINE_COPY}/readings.json")).is_file();
    if compared && problems.is_empty() {
        match measure(ev, &format!("{BASELINE_COPY}/")) {
            Ok(baseline) => problems.extend(regressions(&baseline, &own, r.max_ratio)),
            Err(v) => return v,
        }
    }
    let measurements = own.measurements();
    let verdict = if problems.is_empty() {
        let against = if compared { format!(", each within {} of the baseline's", r.max_ratio) } else { String::new() };
        Verdict::pass(format!(
            "CPU and memory of ztunnel, istio-cni, istiod and the gateway, idle and under load{against}"
        ))
        .with_details(notes)
    } else {
        Verdict::fail(problems.first().cloned().unwrap_or_default())
            .with_details(problems.into_iter().skip(1).chain(notes))
    };
    verdict.with_evidence(files).with_measurements(measurements)
}
