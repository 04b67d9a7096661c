//! `fortio load` in a fortio pod: what fortio.org/fortio v1.68.2 prints with `-json -` (the shape
//! a test holds to the real program's output, suites/offline/latency.rs), its latencies computed
//! from where the request goes. A request to a Service reaches a Ready pod it selects (else every
//! request fails, as fortio reports a refused connection: code -1); each end the mesh captures adds
//! a ztunnel hop. The numbers are a model: a request outside the mesh takes 0.5 ms at the median,
//! a ztunnel hop 0.1 ms (Istio's published 0.2 ms at p99 for two hops is of that order,
//! istio.io docs/ops/deployment/performance-and-scalability), the tail grows by fixed factors,
//! and each run varies a little, so that repetitions have a spread.

use serde_json::{Value, json};

use super::{
    State,
    mesh::{captured, resolve_host},
    shapes::s,
};

/// The median of a request outside the mesh, ms.
const BASE_MS: f64 = 0.5;
/// What one ztunnel adds at the median, ms.
const HOP_MS: f64 = 0.1;
/// p75, p90, p99, p99.9 as multiples of the median.
const TAIL: [(f64, f64); 5] = [(50.0, 1.0), (75.0, 1.1), (90.0, 1.25), (99.0, 1.6), (99.9, 2.0)];

/// Whether a pod runs the fortio image (`fortio` is the only program in it: FROM scratch).
pub(super) fn runs_fortio(pod: &Value) -> bool {
    let image = s(pod, "/spec/containers/0/image");
    image.split('@').next().unwrap_or(image).rsplit('/').next().unwrap_or_default().starts_with("fortio:")
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// What one ztunnel on `node` adds, ms: the model's hop, and what [`super::Faults::ztunnel_adds_ms`]
/// adds for ztunnel pods of its version.
fn hop_ms(st: &State, node: &str) -> f64 {
    let extra = st.store.list("", "pods", Some("istio-system")).iter().find_map(|p| {
        let image = s(p, "/spec/containers/0/image");
        let is_ztunnel = image.rsplit('/').next().is_some_and(|r| r.starts_with("ztunnel:"));
        let (version, ms) = st.faults.ztunnel_adds_ms.as_ref()?;
        (is_ztunnel && s(p, "/spec/nodeName") == node && image.ends_with(&format!(":{version}"))).then_some(*ms)
    });
    HOP_MS + extra.unwrap_or(0.0)
}

/// `fortio load … -json - URL` in `pod`: its stdout and exit code.
pub(super) fn load(st: &mut State, client: &Value, args: &[String]) -> (String, i32) {
    let Some(url) = args.last().filter(|u| u.starts_with("http://")) else {
        return (String::new(), 1);
    };
    let n: u64 = flag(args, "-n").and_then(|v| v.parse().ok()).unwrap_or(0);
    let qps: f64 = flag(args, "-qps").and_then(|v| v.parse().ok()).unwrap_or(8.0);
    let connections: u64 = flag(args, "-c").and_then(|v| v.parse().ok()).unwrap_or(4);
    let resolution: f64 = flag(args, "-r").and_then(|v| v.parse().ok()).unwrap_or(0.001);
    let rest = url.trim_start_matches("http://");
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = authority.split_once(':').map_or((authority, 80), |(h, p)| (h, p.parse().unwrap_or(80)));
    st.draws += 1;
    // ±4 % from run to run, the same for every percentile of a run.
    let wobble = 1.0 + 0.02 * ((st.draws % 5) as f64 - 2.0);
    let (median_ms, codes) = match resolve_host(st, host, port) {
        Ok((server, _)) => {
            let mut ms = BASE_MS;
            for end in [client, &server] {
                if captured(st, end) {
                    ms += hop_ms(st, s(end, "/spec/nodeName"));
                }
            }
            (ms * wobble, json!({"200": n}))
        }
        Err(_) => (0.0, json!({"-1": n})),
    };
    (serde_json::to_string_pretty(&result(url, n, qps, connections, resolution, median_ms, &codes)).expect("json"), 0)
}

/// fortio's `-json` result of `n` requests whose median took `median_ms`.
pub fn result(url: &str, n: u64, qps: f64, connections: u64, resolution: f64, median_ms: f64, codes: &Value) -> Value {
    let seconds = |ms: f64| ms / 1000.0;
    let percentiles: Vec<Value> =
        TAIL.iter().map(|(p, f)| json!({"Percentile": p, "Value": seconds(median_ms * f)})).collect();
    let avg = seconds(median_ms * 1.1);
    let duration_ns = if qps > 0.0 { (n as f64 / qps * 1e9) as u64 } else { 0 };
    json!({
        "RunType": "HTTP",
        "Labels": format!("{} , fortio-client", url.trim_start_matches("http://")),
        "StartTime": chrono::Utc::now().to_rfc3339(),
        "RequestedQPS": format!("{qps}"),
        "RequestedDuration": format!("exactly {n} calls"),
        "ActualQPS": qps,
        "ActualDuration": duration_ns,
        "NumThreads": connections,
        "Version": "1.68.2",
        "DurationHistogram": {
            "Count": n, "Min": seconds(median_ms * 0.8), "Max": seconds(median_ms * 2.5),
            "Sum": avg * n as f64, "Avg": avg, "StdDev": seconds(median_ms * 0.2),
            "Data": [], "Percentiles": percentiles,
        },
        "ErrorsDurationHistogram": {"Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0, "Data": null},
        "Exactly": n,
        "RetCodes": codes,
        "URL": url,
        "NumConnections": connections,
        "Resolution": resolution,
    })
}
