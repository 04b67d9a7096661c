//! The metric check against a real Prometheus (Debian package `prometheus`, installed by `.ci/run`):
//! Prometheus scrapes a local endpoint that serves ztunnel- and istiod-format metrics under the
//! scrape-pool names the Prometheus Operator gives our monitors; the check's own collector reads its
//! HTTP API and the judge decides. The simulated Prometheus is held against the real one scraping
//! the same simulated pods (suites/sim/UPSTREAM-RULES.md §1.7). Without the binary the tests skip and
//! say so, unless `MESHCHECK_REQUIRE_PROMETHEUS=1` (set by `.ci/run`) makes its absence a failure.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use meshcheck::{
    checks::{
        BoxFuture,
        metrics::{self, PromApi},
    },
    cluster::live::LiveError,
    evidence::{Evidence, Outcome},
};
use serde_json::Value;

use crate::common::{http_response, http_server};

/// What ztunnel's `/stats/prometheus` serves (OpenMetrics text, as the prometheus-client crate writes it).
const ZTUNNEL: &str = "# HELP istio_tcp_connections_opened The total number of TCP connections opened.\n\
# TYPE istio_tcp_connections_opened counter\n\
istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"productpage-v1\",source_workload_namespace=\"book-info\",source_principal=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-productpage\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"book-info\",destination_principal=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-reviews\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"} 7\n\
# HELP istio_tcp_connections_closed The total number of TCP connections closed.\n\
# TYPE istio_tcp_connections_closed counter\n\
istio_tcp_connections_closed_total{reporter=\"destination\",source_workload=\"productpage-v1\",destination_workload=\"reviews-v2\",destination_workload_namespace=\"book-info\",connection_security_policy=\"mutual_tls\"} 7\n\
# HELP istio_tcp_sent_bytes The size of total bytes sent during response in case of a TCP connection.\n\
# TYPE istio_tcp_sent_bytes counter\n\
istio_tcp_sent_bytes_total{reporter=\"destination\",destination_workload_namespace=\"book-info\"} 5203\n\
# HELP istio_tcp_received_bytes The size of total bytes received during request in case of a TCP connection.\n\
# TYPE istio_tcp_received_bytes counter\n\
istio_tcp_received_bytes_total{reporter=\"destination\",destination_workload_namespace=\"book-info\"} 918\n\
# EOF\n";

/// What istiod's `http-monitoring` port serves (classic text format).
const ISTIOD: &str = "# HELP pilot_xds_pushes Pilot build and send errors for lds, rds, cds and eds.\n\
# TYPE pilot_xds_pushes counter\npilot_xds_pushes{type=\"cds\"} 3\npilot_xds_pushes{type=\"eds\"} 9\n";

/// Serves both endpoints on 127.0.0.1 until the test process ends.
fn serve_metrics() -> u16 {
    http_server(|request_line| {
        if request_line.contains(" /stats/prometheus ") {
            http_response("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", ZTUNNEL)
        } else {
            http_response("200 OK", "text/plain; version=0.0.4", ISTIOD)
        }
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running Prometheus, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PromApi for Prometheus {
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, LiveError>> {
        Box::pin(async move {
            let http_err =
                |e: reqwest::Error| LiveError::Http { what: format!("prometheus {path}"), message: e.to_string() };
            let resp = self.http.get(format!("{}/{path}", self.base)).send().await.map_err(http_err)?;
            Ok(resp.bytes().await.map_err(http_err)?.to_vec())
        })
    }
}

/// Starts Prometheus with scrape pools named as the operator names our monitors' pools.
fn start(dir: &Path, metrics_port: u16, extra_ztunnel_target: Option<u16>) -> Option<Prometheus> {
    // One static config per ztunnel, labelled with its pod as the PodMonitor's relabelling does,
    // so the judge can hold each running ztunnel against its own target.
    let mut ztunnel_targets = vec![format!("{{targets: ['127.0.0.1:{metrics_port}'], labels: {{pod: ztunnel-0}}}}")];
    ztunnel_targets
        .extend(extra_ztunnel_target.map(|p| format!("{{targets: ['127.0.0.1:{p}'], labels: {{pod: ztunnel-1}}}}")));
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
         scrape_configs:\n\
         - job_name: {istiod}0\n  metrics_path: /metrics\n  static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n\
         - job_name: {ztunnel}0\n  metrics_path: /stats/prometheus\n  static_configs: [{}]\n",
        ztunnel_targets.join(", "),
        istiod = metrics::ISTIOD_POOL,
        ztunnel = metrics::ZTUNNEL_POOL,
    );
    spawn(dir, &config)
}

/// The real Prometheus with `config`, or `None` (said) when it is not installed.
fn spawn(dir: &Path, config: &str) -> Option<Prometheus> {
    if Command::new("prometheus").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("MESHCHECK_REQUIRE_PROMETHEUS").is_none(),
            "MESHCHECK_REQUIRE_PROMETHEUS is set but `prometheus` is not on PATH (apt-get install prometheus)"
        );
        crate::common::tool_missing(
            "the real-Prometheus metric test",
            "`prometheus` on PATH",
            "apt-get install prometheus",
        );
        return None;
    }
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    Some(Prometheus { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() })
}

/// Polls until every target has been scraped at least once and the check's query has data.
async fn settle(prom: &Prometheus, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = format!("api/v1/query?query={}", "istio_tcp_connections_opened_total");
    loop {
        let targets: Value = prom
            .get("api/v1/targets?state=active")
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let active = targets.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
        let scraped = !active.is_empty() && active.iter().all(|t| t["health"] != "unknown");
        let series: Value =
            prom.get(&query).await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let has_data = series.pointer("/data/result").and_then(Value::as_array).is_some_and(|r| !r.is_empty());
        if scraped && has_data {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape within 60 s; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs the collector against `prom` and the judge on what it wrote, with the direct scrapes the
/// live collector takes through port-forwards taken here over plain HTTP.
async fn collect_and_judge(
    prom: &Prometheus,
    metrics_port: u16,
    ztunnels: usize,
    evidence_dir: &Path,
) -> meshcheck::evidence::Verdict {
    let ev = Evidence::new(evidence_dir);
    metrics::collect_prometheus(prom, &ev).await.unwrap();
    // The running ztunnels, as the live collector lists them from the API.
    let pods: Vec<Value> = (0..ztunnels)
        .map(|i| {
            serde_json::json!({"metadata": {"name": format!("ztunnel-{i}"), "namespace": "istio-system"},
                               "spec": {"nodeName": format!("node-{i}")}, "status": {"phase": "Running", "podIP": "127.0.0.1"}})
        })
        .collect();
    ev.write_json("metrics/ztunnel-pods.json", &serde_json::json!({"kind": "PodList", "items": pods})).unwrap();
    let direct = |path: &str| {
        let url = format!("http://127.0.0.1:{metrics_port}{path}");
        async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() }
    };
    ev.write("metrics/ztunnel/node-0/metrics.prom", &direct("/stats/prometheus").await).unwrap();
    ev.write("metrics/istiod/istiod-1.prom", &direct("/metrics").await).unwrap();
    metrics::judge(&ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_check_against_a_real_prometheus() {
    let metrics_port = serve_metrics();
    let dir = tempfile::tempdir().unwrap();
    let Some(prom) = start(dir.path(), metrics_port, None) else { return };
    settle(&prom, dir.path()).await;
    let v = collect_and_judge(&prom, metrics_port, 1, &dir.path().join("good")).await;
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let targets = std::fs::read_to_string(dir.path().join("good/metrics/targets.json")).unwrap();
    assert!(targets.contains("\"scrapePool\":\"podMonitor/monitoring/ztunnel/0\""), "stored as returned: {targets}");
    let promql = std::fs::read_to_string(dir.path().join("good/metrics/query-ztunnel-tcp.promql")).unwrap();
    assert_eq!(promql, metrics::ZTUNNEL_QUERY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_check_fails_when_a_real_prometheus_cannot_scrape_a_ztunnel() {
    let metrics_port = serve_metrics();
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let Some(prom) = start(dir.path(), metrics_port, Some(dead)) else { return };
    settle(&prom, dir.path()).await;
    let v = collect_and_judge(&prom, metrics_port, 2, &dir.path().join("bad")).await;
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation());
    let e = v.explanation();
    assert!(e.contains("ztunnel on node node-1 (pod ztunnel-1): target"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{dead}/stats/prometheus is down")), "{e}");
    assert!(!e.contains("node node-0"), "the scraped ztunnel is fine: {e}");
}

/// The pods the cAdvisor endpoint below reports: (namespace, pod, container, labels, cores, MiB).
const CADVISOR_PODS: &[(&str, &str, &str, &str, f64, f64)] = &[
    ("istio-system", "ztunnel-a", "istio-proxy", r#"{"app": "ztunnel"}"#, 0.050, 12.0),
    ("istio-system", "istio-cni-node-a", "install-cni", r#"{"k8s-app": "istio-cni-node"}"#, 0.010, 30.0),
    ("istio-system", "istiod-x", "discovery", r#"{"app": "istiod"}"#, 0.020, 60.0),
    ("istio-ingress", "istio-ingress-y", "istio-proxy", r#"{"app": "istio-ingress"}"#, 0.030, 40.0),
];

/// A kubelet's `/metrics/cadvisor` now: each container's CPU counter (its cores × the seconds
/// since `start`) and working set, its pod's cgroup (`container=""`) with the same figures, and a
/// family kube-prometheus-stack's relabelling drops.
fn cadvisor_text(start: Instant) -> String {
    let elapsed = start.elapsed().as_secs_f64() + 100.0;
    let mut cpu = String::from("# TYPE container_cpu_usage_seconds_total counter\n");
    let mut memory = String::from("# TYPE container_memory_working_set_bytes gauge\n");
    let mut load = String::from("# TYPE container_cpu_load_average_10s gauge\n");
    for (ns, pod, container, _, cores, mib) in CADVISOR_PODS {
        for (c, id) in [(*container, format!("/kubepods/{pod}/{container}")), ("", format!("/kubepods/{pod}"))] {
            let labels = format!("container=\"{c}\",id=\"{id}\",namespace=\"{ns}\",pod=\"{pod}\"");
            cpu.push_str(&format!("container_cpu_usage_seconds_total{{{labels}}} {}\n", cores * elapsed));
            memory.push_str(&format!("container_memory_working_set_bytes{{{labels}}} {}\n", mib * 1048576.0));
            load.push_str(&format!("container_cpu_load_average_10s{{{labels}}} 0\n"));
        }
    }
    cpu + &memory + &load
}

/// kube-prometheus-stack 77.0.0's cAdvisor endpoint of its kubelet ServiceMonitor, read from the
/// pinned chart's values.yaml (`kubelet.serviceMonitor.cAdvisorMetricRelabelings` and
/// `cAdvisorRelabelings`), as the Prometheus config prometheus-operator generates from it:
/// `honor_labels: true`, the relabelings with their keys in Prometheus's spelling.
fn kubelet_job(name: &str, port: u16) -> Option<String> {
    let values = crate::common::helm()?.charts.join("kube-prometheus-stack-77.0.0/values.yaml");
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(values).unwrap()).unwrap();
    let rules = |key: &str| -> Value {
        let list = values.pointer(&format!("/kubelet/serviceMonitor/{key}")).cloned().unwrap_or_default();
        fn snake(k: &str) -> &str {
            match k {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                other => other,
            }
        }
        let converted: Vec<Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let map: serde_json::Map<String, Value> =
                    r.as_object().unwrap().iter().map(|(k, v)| (snake(k).to_string(), v.clone())).collect();
                Value::Object(map)
            })
            .collect();
        Value::Array(converted)
    };
    Some(format!(
        "- job_name: {name}\n  honor_labels: true\n  metrics_path: /metrics/cadvisor\n  static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n  relabel_configs: {}\n  metric_relabel_configs: {}\n",
        rules("cAdvisorRelabelings"),
        rules("cAdvisorMetricRelabelings"),
    ))
}

/// The footprint check's queries against the real Prometheus scraping a kubelet's cAdvisor
/// endpoint through two kubelet Services at once (a cluster's own kube-prometheus-stack and the
/// run's, both matching the chart's ServiceMonitor: the trap the chart's README names), with the
/// chart's own relabelling rules: each container's working set comes out once (not doubled), its
/// CPU at the rate the endpoint grows it, the pod cgroups left out, and the family the chart drops
/// absent; the judge passes on those answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn footprint_queries_against_a_real_prometheus_count_each_container_once() {
    use meshcheck::checks::footprint;
    let start = Instant::now();
    let port = http_server(move |_| http_response("200 OK", "text/plain; version=0.0.4", &cadvisor_text(start)));
    let dir = tempfile::tempdir().unwrap();
    let (Some(ours), Some(theirs)) = (
        kubelet_job("serviceMonitor/monitoring/prom-kubelet/1", port),
        kubelet_job("serviceMonitor/monitoring/kube-prometheus-stack-kubelet/1", port),
    ) else {
        return;
    };
    let config = format!("global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n{ours}{theirs}");
    let Some(prom) = spawn(dir.path(), &config) else { return };
    let query = |promql: &str| {
        let q = form_urlencoded::Serializer::new(String::new()).append_pair("query", promql).finish();
        format!("api/v1/query?{q}")
    };
    // Both jobs scraped twice, so that a counter has moved.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value =
            serde_json::from_slice(&prom.get(&query("count(up == 1)")).await.unwrap_or_default()).unwrap_or_default();
        if v.pointer("/data/result/0/value/1").and_then(Value::as_str) == Some("2") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ev = Evidence::new(dir.path().join("evidence"));
    let unix = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut windows = Vec::new();
    for condition in ["idle", "load"] {
        let started = unix();
        ev.write(
            &format!("footprint/{condition}-cpu-start.json"),
            &prom.get(&query(footprint::CPU_QUERY)).await.unwrap(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        windows.push(serde_json::json!({"started": started, "ended": unix()}));
        ev.write(
            &format!("footprint/{condition}-cpu-end.json"),
            &prom.get(&query(footprint::CPU_QUERY)).await.unwrap(),
        )
        .unwrap();
        ev.write(
            &format!("footprint/{condition}-memory.json"),
            &prom.get(&query(footprint::MEMORY_QUERY)).await.unwrap(),
        )
        .unwrap();
    }
    let readings = serde_json::json!({"idle": windows[0], "load": windows[1], "rate_per_second": 20, "sent": 80,
                                      "answered": 80, "max_ratio": 1.2});
    ev.write_json("footprint/readings.json", &readings).unwrap();
    for ns in ["istio-system", "istio-ingress"] {
        let items: Vec<Value> = CADVISOR_PODS
            .iter()
            .filter(|p| p.0 == ns)
            .map(|(ns, pod, _, labels, _, _)| {
                serde_json::json!({"metadata": {"name": pod, "namespace": ns,
                                                "labels": serde_json::from_str::<Value>(labels).unwrap()}})
            })
            .collect();
        ev.write_json(&format!("footprint/pods-{ns}.json"), &serde_json::json!({"items": items})).unwrap();
    }
    let v = footprint::judge(&ev);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let m = |metric: &str| v.measurements.iter().find(|m| m.metric == metric).map(|m| m.value).unwrap();
    assert_eq!(m("ztunnel.memory.load"), 12.0 * 1048576.0, "once, though two jobs scrape it");
    assert_eq!(m("istiod.memory.idle"), 60.0 * 1048576.0);
    let cpu = m("ztunnel.cpu.load");
    // The counter's last sample lags the query by up to one 1 s scrape at each end of a 4 s window.
    assert!((0.025..0.075).contains(&cpu), "ztunnel at 50 mcore read as {cpu}");
    // What the chart's relabelling drops is not there.
    let dropped: Value =
        serde_json::from_slice(&prom.get(&query("container_cpu_load_average_10s")).await.unwrap()).unwrap();
    assert_eq!(dropped.pointer("/data/result"), Some(&serde_json::json!([])), "{dropped}");
}

/// A pod list of the simulated API server, or nothing while it does not answer.
async fn pods(sim: &crate::sim::Sim, ns: &str, selector: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/namespaces/{ns}/pods?labelSelector={selector}", sim.api_url());
    let list: Value = match reqwest::get(url).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    };
    list["items"].as_array().cloned().unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Each plain-HTTP active target as (scrape pool, labels, URL, health), sorted.
fn http_targets(answer: &Value) -> Vec<(String, std::collections::BTreeMap<String, String>, String, String)> {
    let active = answer.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out: Vec<_> = active
        .iter()
        .filter(|t| t["scrapeUrl"].as_str().is_some_and(|u| u.starts_with("http://")))
        .map(|t| {
            let labels = serde_json::from_value(t["labels"].clone()).unwrap_or_default();
            let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (text("scrapePool"), labels, text("scrapeUrl"), text("health"))
        })
        .collect();
    out.sort();
    out
}

/// A query's series as (labels, value), sorted.
fn series(answer: &Value) -> Vec<(std::collections::BTreeMap<String, String>, String)> {
    let result = answer.pointer("/data/result").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out: Vec<_> = result
        .iter()
        .map(|r| {
            let labels = serde_json::from_value(r["metric"].clone()).unwrap_or_default();
            (labels, r.pointer("/value/1").and_then(Value::as_str).unwrap_or_default().to_string())
        })
        .collect();
    out.sort();
    out
}

/// The simulated Prometheus of an existing cluster held against the real one (issue 20 item 1).
/// Once the mesh, the Prometheus at `service` (`<ns>/<name>:<port>`) and book-info are Ready and
/// book-info has carried traffic, the real Prometheus scrapes the simulated pods through the
/// simulation's forward proxy, from the configuration the simulation generates by its own rules
/// ([`crate::sim::Sim::real_prometheus_config`]). Both must then answer the same plain-HTTP
/// targets (scrape pool, labels, URL, health) and the same series for the metric check's query.
/// Then the metric check's own collectors read the simulated cluster, its Prometheus part the
/// real Prometheus, and the judge's verdict is returned.
async fn sim_and_real_prometheus_agree(
    faults: crate::sim::Faults,
    service: (&str, &str),
) -> Option<meshcheck::evidence::Verdict> {
    let refusing = faults.ztunnel_target_down;
    let options = crate::common::sim_options("existing", 0.01, faults)?;
    let sim = crate::sim::Sim::start(options);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (ns, selector) in [("istio-system", "app%3Dztunnel"), ("istio-system", "app%3Distiod"), ("book-info", "")] {
        loop {
            let found = pods(&sim, ns, selector).await;
            if !found.is_empty() && found.iter().all(ready) {
                break;
            }
            assert!(Instant::now() < deadline, "pods in {ns} ({selector}) not Ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let config = loop {
        if let Some(config) = sim.real_prometheus_config() {
            break config;
        }
        assert!(Instant::now() < deadline, "no Ready Prometheus pod within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let productpage = format!("http://127.0.0.1:{}/productpage", sim.ingress_port());
    let mut answered = 0;
    for _ in 0..20 {
        answered += usize::from(reqwest::get(&productpage).await.is_ok_and(|r| r.status() == 200));
    }
    assert_eq!(answered, 20, "book-info through the gateway");
    let dir = tempfile::tempdir().unwrap();
    let prom = spawn(dir.path(), &serde_json::to_string_pretty(&config).unwrap())?;
    // Every target scraped at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let real_targets = loop {
        let answer: Value = serde_json::from_slice(&prom.get("api/v1/targets?state=active").await.unwrap_or_default())
            .unwrap_or_default();
        let active = answer.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
        if !active.is_empty() && active.iter().all(|t| t["health"] != "unknown") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the real Prometheus did not scrape every target; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (ns, name) = service;
    let sim_get = |path: String| {
        let url = format!("{}/api/v1/namespaces/{ns}/services/{name}/proxy/{path}", sim.api_url());
        async move { reqwest::get(url).await.unwrap().json::<Value>().await.unwrap() }
    };
    let sim_targets = sim_get("api/v1/targets?state=active".into()).await;
    let (simulated, real) = (http_targets(&sim_targets), http_targets(&real_targets));
    assert!(
        real.iter().any(|t| t.1.get("pod").is_some_and(|p| p.starts_with("ztunnel-"))),
        "no ztunnel among the compared targets: {real:#?}"
    );
    assert_eq!(simulated, real, "the simulated Prometheus' targets (left) against the real one's (right)");
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("query", metrics::ZTUNNEL_QUERY).finish();
    let real_series: Value =
        serde_json::from_slice(&prom.get(&format!("api/v1/query?{query}")).await.unwrap()).unwrap();
    let sim_series = sim_get(format!("api/v1/query?{query}")).await;
    // With a ztunnel refusing, book-info's series may all be that ztunnel's.
    assert!(refusing || !series(&real_series).is_empty(), "{real_series}");
    assert_eq!(series(&sim_series), series(&real_series), "the check's query: simulated (left), real (right)");
    let (_, live, _guard) = crate::common::live_on(&sim).await;
    metrics::collect_prometheus(&prom, &live.evidence).await.unwrap();
    meshcheck::checks::ztunnel::collect(&live, "metrics", meshcheck::checks::ztunnel::Parts::All).await.unwrap();
    for pod in pods(&sim, "istio-system", "app%3Distiod").await {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap().to_string();
        let body = live.pod_get("istio-system", &name, 15014, "/metrics").await.unwrap();
        live.save(&format!("metrics/istiod/{name}.prom"), &body).unwrap();
    }
    Some(metrics::judge(&live.evidence))
}

/// Issue 20 item 1, on Istio's addon Prometheus: the real Prometheus runs the addon's own
/// `relabel_configs` on what the simulation discovers, and the simulation agrees with it; the
/// metric check passes on the real one's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_addon_prometheus_answers_as_the_real_one_scraping_the_same_pods() {
    let faults = crate::sim::Faults { istio_addon_prometheus: true, ..Default::default() };
    let Some(v) = sim_and_real_prometheus_agree(faults, ("istio-system", "prometheus:9090")).await else { return };
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
}

/// Issue 20 item 1, on an operator-run Prometheus (meshcheck's kube-prometheus-stack values, its
/// ServiceMonitor and PodMonitor) with the first ztunnel refusing its scrape: both mark that
/// target down and agree on every other, and the metric check fails on the real one's answers,
/// naming the ztunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_operator_prometheus_answers_as_the_real_one_when_a_ztunnel_refuses() {
    let faults = crate::sim::Faults { ztunnel_target_down: true, ..Default::default() };
    let Some(v) = sim_and_real_prometheus_agree(faults, ("monitoring", "prom-prometheus:9090")).await else {
        return;
    };
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation());
    assert!(v.explanation().contains(":15020/stats/prometheus is down"), "{}", v.explanation());
}
