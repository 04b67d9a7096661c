//! Prometheus, as prometheus-operator v0.85.0 configures it from the objects in the cluster: the
//! monitors its Prometheus custom resource selects, the targets each monitor's rules keep, their
//! scrape pool and `job` names, each target scraped for real from the simulated pod (up only when
//! the program there answers 200 on that port and path), and instant queries evaluated over
//! those scrapes. The rules, with their upstream lines, are in suites/sim/UPSTREAM-RULES.md §1-2.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    State,
    mesh::{Program, container_port, pod_ready, program},
    shapes::{container_flag, s},
    store::{label_selector_matches, match_labels, now},
};

/// Scrapes a pod's port and path: the program's answer, or `None` when nothing listens there.
pub(super) type Scraper<'a> = &'a dyn Fn(&Value, u16, &str) -> Option<(u16, Vec<u8>)>;

/// One scrape target, as the generated relabelings leave it.
struct Target {
    pool: String,
    labels: BTreeMap<String, String>,
    /// The pod, or the Node of a kubelet endpoint.
    pod: Value,
    /// Its address: the pod's IP, or the Endpoints address.
    address: String,
    port: u16,
    path: String,
    scheme: String,
    /// The endpoint's `metricRelabelings`, applied to each scraped sample.
    metric_relabelings: Value,
}

impl Target {
    fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host_port(), self.path)
    }

    /// What Prometheus dials.
    fn host_port(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// The `instance` label: what discovery or a rule set (the `node` role sets the node's name),
    /// else the address.
    fn instance(&self) -> String {
        self.labels.get("instance").cloned().unwrap_or_else(|| self.host_port())
    }
}

/// One relabelling rule of Prometheus v3.5.0 model/relabel/relabel.go, for the actions the
/// monitors and the scrape configs of this simulation and of prometheus-operator use: `replace`
/// (the default), `keep`, `drop`, `labelmap`, `hashmod` (the MD5 of the joined values, its last 8
/// bytes big-endian, modulo `modulus`). The source labels joined by `separator` (default `;`) are matched against
/// the anchored `regex` (default `(.*)`); `replace` writes `replacement` (default `$1`) with its
/// groups expanded to `targetLabel`, and writes nothing when the regex does not match; `labelmap`
/// copies each label whose name matches to the name `replacement` makes of it. Keys are read as
/// a monitor writes them (`sourceLabels`) or as a scrape config does (`source_labels`). Returns
/// whether the labels are kept.
fn relabel(rules: &Value, labels: &mut BTreeMap<String, String>) -> bool {
    for rule in rules.as_array().into_iter().flatten() {
        let key = |camel: &str, snake: &str| rule.get(camel).or_else(|| rule.get(snake)).cloned().unwrap_or_default();
        let sources: Vec<String> = key("sourceLabels", "source_labels")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
        let joined = sources
            .iter()
            .map(|l| labels.get(l).cloned().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(rule["separator"].as_str().unwrap_or(";"));
        // A scalar is the text it was written as: the addon's `regex: true` is the regex `true`
        // (Prometheus reads the field into a string; YAML alone would make it a boolean).
        let text = |v: &Value| match v {
            Value::String(t) => Some(t.clone()),
            Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
            _ => None,
        };
        let Ok(re) = regex::Regex::new(&format!("^(?:{})$", text(&rule["regex"]).as_deref().unwrap_or("(.*)"))) else {
            continue;
        };
        let replacement = text(&rule["replacement"]).unwrap_or_else(|| "$1".into());
        let replacement = replacement.as_str();
        match rule["action"].as_str().unwrap_or("replace").to_ascii_lowercase().as_str() {
            "drop" if re.is_match(&joined) => return false,
            "keep" if !re.is_match(&joined) => return false,
            "replace" => {
                let target = key("targetLabel", "target_label");
                let (Some(target), Some(caps)) = (target.as_str(), re.captures(&joined)) else { continue };
                let mut value = String::new();
                caps.expand(replacement, &mut value);
                if value.is_empty() {
                    labels.remove(target);
                } else {
                    labels.insert(target.to_string(), value);
                }
            }
            // prometheus-operator shards targets by it (promcfg.go `generateAddressShardingRelabelingRules`).
            "hashmod" => {
                use md5::Digest as _;
                let (Some(target), Some(modulus)) =
                    (key("targetLabel", "target_label").as_str().map(String::from), rule["modulus"].as_u64())
                else {
                    continue;
                };
                let hash = md5::Md5::digest(joined.as_bytes());
                let tail: [u8; 8] = hash[8..].try_into().expect("an MD5 sum is 16 bytes");
                labels.insert(target, (u64::from_be_bytes(tail) % modulus.max(1)).to_string());
            }
            "labelmap" => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter(|(name, _)| re.is_match(name))
                    .map(|(name, value)| (re.replace_all(name, replacement).into_owned(), value.clone()))
                    .collect();
                labels.extend(mapped);
            }
            _ => {}
        }
    }
    true
}

/// The Prometheus custom resource a Prometheus pod belongs to (prometheus-operator labels its
/// StatefulSet's pods `operator.prometheus.io/name: <name>`, pkg/prometheus/server/statefulset.go).
fn custom_resource(st: &State, pod: &Value) -> Option<Value> {
    let name = s(pod, "/metadata/labels/operator.prometheus.io~1name");
    st.store.get("monitoring.coreos.com", "prometheuses", s(pod, "/metadata/namespace"), name).cloned()
}

/// A monitor selector of the CR: null selects no monitor, `{}` every one
/// (pkg/prometheus/resource_selector.go#L152).
fn selects(selector: &Value, labels: &Value) -> bool {
    !selector.is_null() && label_selector_matches(selector, labels)
}

/// A monitor namespace selector of the CR: null means the CR's own namespace, else namespaces
/// whose labels match (resource_selector.go#L157-L169).
fn namespace_selected(st: &State, selector: &Value, own: &str, ns: &str) -> bool {
    if selector.is_null() {
        return ns == own;
    }
    let labels = st.store.get("", "namespaces", "", ns).and_then(|n| n.pointer("/metadata/labels").cloned());
    label_selector_matches(selector, &labels.unwrap_or(json!({})))
}

/// The monitors of one kind the CR selects, sorted by `<ns>/<name>` (promcfg.go#L2950-L2994),
/// without those whose TLS assets are missing ([`tls_assets_present`]).
fn monitors(st: &State, cr: &Value, plural: &str, field: &str) -> Vec<Value> {
    let own = s(cr, "/metadata/namespace");
    let selector = cr.pointer(&format!("/spec/{field}Selector")).cloned().unwrap_or(Value::Null);
    let ns_selector = cr.pointer(&format!("/spec/{field}NamespaceSelector")).cloned().unwrap_or(Value::Null);
    let mut out: Vec<Value> = st
        .store
        .list("monitoring.coreos.com", plural, None)
        .into_iter()
        .filter(|m| namespace_selected(st, &ns_selector, own, s(m, "/metadata/namespace")))
        .filter(|m| selects(&selector, m.pointer("/metadata/labels").unwrap_or(&json!({}))))
        .filter(|m| tls_assets_present(st, m))
        .collect();
    out.sort_by_key(|m| format!("{}/{}", s(m, "/metadata/namespace"), s(m, "/metadata/name")));
    out
}

/// Whether every Secret and ConfigMap key the monitor's endpoints name in their `tlsConfig` (`ca`,
/// `cert`, `keySecret`) exists in its namespace: the operator skips a monitor when one does not,
/// whatever `optional` says, and warns "skipping object" (resource_selector.go#L284, #L517
/// `AddTLSConfig`/`AddSafeTLSConfig`; pkg/assets/tls.go `addTLSAssets`, store.go `GetSecretKey`:
/// "key %q in secret %q not found"). Seen on the control-plane tier: kube-prometheus-stack's own
/// ServiceMonitor for the operator names the Secret its admission hook Job makes.
fn tls_assets_present(st: &State, monitor: &Value) -> bool {
    let ns = s(monitor, "/metadata/namespace");
    let endpoints = ["/spec/endpoints", "/spec/podMetricsEndpoints"]
        .into_iter()
        .filter_map(|p| monitor.pointer(p).and_then(Value::as_array))
        .flatten();
    let present = |plural: &str, selector: &Value| {
        let (Some(name), Some(key)) = (selector["name"].as_str(), selector["key"].as_str()) else { return false };
        st.store.get("", plural, ns, name).is_some_and(|o| o["data"].get(key).is_some())
    };
    endpoints.filter_map(|e| e.get("tlsConfig")).all(|tls| {
        ["ca", "cert"].iter().filter_map(|field| tls.get(*field)).chain(tls.get("keySecret")).all(|reference| {
            match (reference.get("secret"), reference.get("configMap")) {
                (Some(secret), _) => present("secrets", secret),
                (None, Some(map)) => present("configmaps", map),
                // `keySecret` is the selector itself.
                (None, None) if reference.get("name").is_some() => present("secrets", reference),
                (None, None) => true,
            }
        })
    })
}

/// The namespaces a monitor discovers in: `any: true` all, `matchNames` those, else its own
/// (promcfg.go#L2191-L2254).
fn discovery_namespaces(st: &State, monitor: &Value) -> Vec<String> {
    let sel = monitor.pointer("/spec/namespaceSelector").cloned().unwrap_or(json!({}));
    if sel["any"] == json!(true) {
        return st.store.list("", "namespaces", None).iter().map(|n| s(n, "/metadata/name").to_string()).collect();
    }
    let names: Vec<String> =
        sel["matchNames"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
    if names.is_empty() { vec![s(monitor, "/metadata/namespace").to_string()] } else { names }
}

/// A pod Prometheus discovers: it has an IP and has not finished (`filterRunning` drops
/// Failed/Succeeded, promcfg.go#L2080-L2086; the pod role lists no pod without an IP).
fn discoverable(p: &Value) -> bool {
    !s(p, "/status/podIP").is_empty() && !matches!(s(p, "/status/phase"), "Failed" | "Succeeded")
}

fn declared_ports(pod: &Value) -> Vec<(String, String, u16)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let container = c["name"].as_str().unwrap_or_default().to_string();
            c["ports"].as_array().cloned().unwrap_or_default().into_iter().filter_map(move |p| {
                let n = u16::try_from(p["containerPort"].as_u64()?).ok()?;
                Some((container.clone(), p["name"].as_str().unwrap_or_default().to_string(), n))
            })
        })
        .collect()
}

/// Whether a `targetPort` (name or number) names a container port.
fn target_port_matches(target: &Value, name: &str, number: u16) -> bool {
    match target {
        Value::String(t) => t == name || t.parse::<u16>().ok() == Some(number),
        Value::Number(n) => n.as_u64() == Some(u64::from(number)),
        _ => true,
    }
}

/// The targets of one ServiceMonitor endpoint (promcfg.go#L1879-L2053): Services selected by
/// label, their port named `port` (else any port whose target is `targetPort`), each pod behind it.
fn service_monitor_targets(st: &State, m: &Value, i: usize, e: &Value, out: &mut Vec<Target>) {
    let (mns, mname) = (s(m, "/metadata/namespace"), s(m, "/metadata/name"));
    let selector = m.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    for ns in discovery_namespaces(st, m) {
        for svc in st.store.list("", "services", Some(&ns)) {
            if !label_selector_matches(&selector, svc.pointer("/metadata/labels").unwrap_or(&json!({}))) {
                continue;
            }
            let Some(pod_selector) = svc.pointer("/spec/selector").cloned() else {
                endpoints_targets(st, m, i, e, &svc, out);
                continue;
            };
            let pods: Vec<Value> = st
                .store
                .list("", "pods", Some(&ns))
                .into_iter()
                .filter(|p| {
                    discoverable(p) && match_labels(&pod_selector, p.pointer("/metadata/labels").unwrap_or(&json!({})))
                })
                .collect();
            for sp in svc.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                let sp_name = sp["name"].as_str().unwrap_or_default();
                if e["port"].as_str().is_some_and(|port| port != sp_name) {
                    continue;
                }
                for pod in &pods {
                    let target = sp.get("targetPort").cloned().unwrap_or_else(|| sp["port"].clone());
                    let Some(number) = container_port(pod, &target) else { continue };
                    let container = declared_ports(pod).into_iter().find(|(_, _, n)| *n == number);
                    if e.get("port").is_none()
                        && let Some(t) = e.get("targetPort")
                        && !container.as_ref().is_some_and(|(_, name, n)| target_port_matches(t, name, *n))
                    {
                        continue;
                    }
                    // job = the Service name, or its label `jobLabel` when set (promcfg.go#L2014-L2029).
                    let job = job_label(m, &svc).unwrap_or(s(&svc, "/metadata/name"));
                    let mut labels = BTreeMap::from([
                        ("job".to_string(), job.to_string()),
                        ("namespace".into(), ns.clone()),
                        ("service".into(), s(&svc, "/metadata/name").to_string()),
                        ("pod".into(), s(pod, "/metadata/name").to_string()),
                        ("endpoint".into(), e["port"].as_str().unwrap_or(sp_name).to_string()),
                    ]);
                    if let Some((c, _, _)) = container {
                        labels.insert("container".into(), c);
                    }
                    out.push(Target {
                        pool: format!("serviceMonitor/{mns}/{mname}/{i}"),
                        labels,
                        pod: pod.clone(),
                        address: s(pod, "/status/podIP").to_string(),
                        port: number,
                        path: e["path"].as_str().unwrap_or("/metrics").to_string(),
                        scheme: e["scheme"].as_str().unwrap_or("http").to_string(),
                        metric_relabelings: e["metricRelabelings"].clone(),
                    });
                }
            }
        }
    }
}

/// The targets behind a Service without a selector (the kubelet Service prometheus-operator keeps,
/// [`super::kubelet`]): each address of its Endpoints, on the port the endpoint names. A Node
/// target gets the `node` label (promcfg.go#L1951-L1964); then the endpoint's `relabelings` run
/// with `__metrics_path__` set (kube-prometheus-stack copies it to `metrics_path` for cAdvisor).
fn endpoints_targets(st: &State, m: &Value, i: usize, e: &Value, svc: &Value, out: &mut Vec<Target>) {
    let (mns, mname, ns, name) =
        (s(m, "/metadata/namespace"), s(m, "/metadata/name"), s(svc, "/metadata/namespace"), s(svc, "/metadata/name"));
    let Some(endpoints) = st.store.get("", "endpoints", ns, name) else { return };
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let Some(port) =
            subset["ports"].as_array().into_iter().flatten().find(|p| e["port"].as_str() == p["name"].as_str())
        else {
            continue;
        };
        for address in subset["addresses"].as_array().into_iter().flatten() {
            let target_kind = address.pointer("/targetRef/kind").and_then(Value::as_str).unwrap_or_default();
            let target_name = address.pointer("/targetRef/name").and_then(Value::as_str).unwrap_or_default();
            let path = e["path"].as_str().unwrap_or("/metrics").to_string();
            let job = job_label(m, svc).unwrap_or(name);
            let mut labels = BTreeMap::from([
                ("job".to_string(), job.to_string()),
                ("namespace".into(), ns.to_string()),
                ("service".into(), name.to_string()),
                ("endpoint".into(), e["port"].as_str().unwrap_or_default().to_string()),
                ("__metrics_path__".into(), path.clone()),
            ]);
            if target_kind == "Node" {
                labels.insert("node".into(), target_name.to_string());
            }
            if !relabel(&e["relabelings"], &mut labels) {
                continue;
            }
            labels.retain(|k, _| !k.starts_with("__"));
            let object = match target_kind {
                "Node" => st.store.get("", "nodes", "", target_name).cloned().unwrap_or_default(),
                _ => Value::Null,
            };
            out.push(Target {
                pool: format!("serviceMonitor/{mns}/{mname}/{i}"),
                labels,
                pod: object,
                address: address["ip"].as_str().unwrap_or_default().to_string(),
                port: port["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                path,
                scheme: e["scheme"].as_str().unwrap_or("http").to_string(),
                metric_relabelings: e["metricRelabelings"].clone(),
            });
        }
    }
}

/// The targets of one PodMonitor endpoint (promcfg.go#L1362-L1512): pods selected by label, each
/// declared container port named `port` (or numbered `portNumber`, or matching `targetPort`). A
/// pod without declared ports passes no port rule.
fn pod_monitor_targets(st: &State, m: &Value, i: usize, e: &Value, out: &mut Vec<Target>) {
    let (mns, mname) = (s(m, "/metadata/namespace"), s(m, "/metadata/name"));
    let selector = m.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    for ns in discovery_namespaces(st, m) {
        for pod in st.store.list("", "pods", Some(&ns)) {
            if !discoverable(&pod)
                || !label_selector_matches(&selector, pod.pointer("/metadata/labels").unwrap_or(&json!({})))
            {
                continue;
            }
            for (container, name, number) in declared_ports(&pod) {
                let keep = if let Some(port) = e["port"].as_str() {
                    name == port
                } else if let Some(n) = e["portNumber"].as_u64() {
                    n == u64::from(number)
                } else if let Some(t) = e.get("targetPort") {
                    target_port_matches(t, &name, number)
                } else {
                    true
                };
                if !keep {
                    continue;
                }
                // job = `<ns>/<podmonitor>`, or the pod's label `jobLabel` (promcfg.go#L1476-L1487).
                let job = job_label(m, &pod).map_or_else(|| format!("{mns}/{mname}"), String::from);
                let labels = BTreeMap::from([
                    ("job".to_string(), job),
                    ("namespace".into(), ns.clone()),
                    ("pod".into(), s(&pod, "/metadata/name").to_string()),
                    ("container".into(), container),
                    ("endpoint".into(), e["port"].as_str().unwrap_or(&name).to_string()),
                ]);
                out.push(Target {
                    pool: format!("podMonitor/{mns}/{mname}/{i}"),
                    labels,
                    pod: pod.clone(),
                    address: s(&pod, "/status/podIP").to_string(),
                    port: number,
                    path: e["path"].as_str().unwrap_or("/metrics").to_string(),
                    scheme: e["scheme"].as_str().unwrap_or("http").to_string(),
                    metric_relabelings: e["metricRelabelings"].clone(),
                });
            }
        }
    }
}

/// Every target of the Prometheus a pod runs. What its configuration file says, when the pod has
/// one: the real prometheus-operator writes it on the control-plane tier, and Istio's addon
/// mounts its own. Else, for a pod of a Prometheus custom resource (the Rust-only tier, whose
/// operator writes no configuration), what prometheus-operator v0.85.0 would generate from the
/// monitors the CR selects: ServiceMonitors first, then PodMonitors (promcfg.go#L937-L945).
fn targets(st: &State, pod: &Value) -> Vec<Target> {
    match custom_resource(st, pod).filter(|_| config_file(st, pod).is_none()) {
        Some(cr) => operator_rule_targets(st, &cr),
        None => configured_targets(st, pod),
    }
}

/// The targets a Prometheus pod's configuration file gives, and those the Rust path of
/// prometheus-operator's rules gives for its custom resource, each as `pool address labels`,
/// sorted: on the control-plane tier the first is what the real operator wrote, and the second
/// must say the same.
pub(super) fn both_ways(st: &State, pod: &Value) -> (Vec<String>, Vec<String>) {
    let line = |t: &Target| format!("{} {} {:?}", t.pool, t.host_port(), t.labels);
    let mut configured: Vec<String> = configured_targets(st, pod).iter().map(line).collect();
    let by_rules = custom_resource(st, pod).map(|cr| operator_rule_targets(st, &cr)).unwrap_or_default();
    let mut by_rules: Vec<String> = by_rules.iter().map(line).collect();
    configured.sort();
    by_rules.sort();
    (configured, by_rules)
}

/// The targets prometheus-operator v0.85.0 would configure for a Prometheus custom resource:
/// ServiceMonitors first, then PodMonitors (promcfg.go#L937-L945).
fn operator_rule_targets(st: &State, cr: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    for m in monitors(st, cr, "servicemonitors", "serviceMonitor") {
        for (i, e) in m.pointer("/spec/endpoints").and_then(Value::as_array).into_iter().flatten().enumerate() {
            service_monitor_targets(st, &m, i, e, &mut out);
        }
    }
    for m in monitors(st, cr, "podmonitors", "podMonitor") {
        for (i, e) in m.pointer("/spec/podMetricsEndpoints").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            pod_monitor_targets(st, &m, i, e, &mut out);
        }
    }
    out
}

/// The scrape configuration a Prometheus pod runs with: the file its `--config.file` names,
/// either mounted there from a ConfigMap or Secret (Istio's addon, samples/addons/prometheus.yaml)
/// or written there by a config-reloader container of the pod (prometheus-operator v0.85.0
/// pkg/prometheus/server/statefulset.go: `--config-envsubst-file` into the shared `config-out`
/// emptyDir, from the operator's Secret mounted at `--config-file`).
fn config_file(st: &State, pod: &Value) -> Option<Value> {
    let (container, path) = containers(pod).find_map(|(c, _)| Some((c, container_flag(c, "--config.file")?)))?;
    let text = mounted_file(st, pod, container, path).or_else(|| reloaded_file(st, pod, path))?;
    serde_saphyr::from_str(&String::from_utf8_lossy(&text)).ok()
}

/// The pod's containers, then its init containers, each with whether it is one of the latter.
fn containers(pod: &Value) -> impl Iterator<Item = (&Value, bool)> {
    let list = |field: &str| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten();
    list("containers").map(|c| (c, false)).chain(list("initContainers").map(|c| (c, true)))
}

/// The bytes a container reads at `path` from a ConfigMap or Secret volume mounted at its folder.
fn mounted_file(st: &State, pod: &Value, container: &Value, path: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let (dir, file) = path.rsplit_once('/')?;
    let mount = container["volumeMounts"].as_array()?.iter().find(|m| m["mountPath"].as_str() == Some(dir))?;
    let volume = pod.pointer("/spec/volumes")?.as_array()?.iter().find(|v| v["name"] == mount["name"])?;
    let ns = s(pod, "/metadata/namespace");
    if let Some(name) = volume.pointer("/configMap/name").and_then(Value::as_str) {
        return Some(st.store.get("", "configmaps", ns, name)?["data"][file].as_str()?.as_bytes().to_vec());
    }
    let name = volume.pointer("/secret/secretName").and_then(Value::as_str)?;
    let data = st.store.get("", "secrets", ns, name)?["data"][file].as_str()?.to_string();
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

/// What a config-reloader container of the pod writes at `path`: its `--config-file` gunzipped
/// when it starts with gzip's magic bytes, then each `$(NAME)` replaced by the container's
/// environment variable; a reference to one it lacks writes nothing (thanos v0.39.2
/// pkg/reloader/reloader.go `normalize`, `expandEnv`: an error unless told to tolerate it).
fn reloaded_file(st: &State, pod: &Value, path: &str) -> Option<Vec<u8>> {
    let reloader =
        containers(pod).map(|(c, _)| c).find(|c| container_flag(c, "--config-envsubst-file") == Some(path))?;
    let mut text = mounted_file(st, pod, reloader, container_flag(reloader, "--config-file")?)?;
    if text.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(text.as_slice()), &mut plain).ok()?;
        text = plain;
    }
    let env = |name: &str| {
        let var = reloader["env"].as_array()?.iter().find(|e| e["name"] == name)?;
        match var.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
            Some(field) => Some(s(pod, &format!("/{}", field.replace('.', "/"))).to_string()),
            None => Some(var["value"].as_str().unwrap_or_default().to_string()),
        }
    };
    let reference = regex::Regex::new(r"\$\(([a-zA-Z_0-9]+)\)").expect("the reloader's pattern");
    let text = String::from_utf8(text).ok()?;
    let mut unset = false;
    let expanded = reference.replace_all(&text, |caps: &regex::Captures| {
        env(&caps[1]).unwrap_or_else(|| {
            unset = true;
            String::new()
        })
    });
    (!unset).then(|| expanded.into_owned().into_bytes())
}

/// Prometheus' label name for a Kubernetes label or annotation key: every character outside
/// `[a-zA-Z0-9_]` becomes `_` (prometheus v3.5.0 util/strutil `SanitizeLabelName`).
fn sanitized(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The meta labels every role makes of an object's name, labels and annotations: prometheus
/// v3.5.0 discovery/kubernetes/kubernetes.go `addObjectMetaLabels`.
fn add_object_meta_labels(l: &mut BTreeMap<String, String>, object: &Value, role: &str) {
    l.insert(format!("__meta_kubernetes_{role}_name"), s(object, "/metadata/name").to_string());
    for (kind, field) in [("label", "labels"), ("annotation", "annotations")] {
        for (k, v) in object.pointer(&format!("/metadata/{field}")).and_then(Value::as_object).into_iter().flatten() {
            l.insert(
                format!("__meta_kubernetes_{role}_{kind}_{}", sanitized(k)),
                v.as_str().unwrap_or_default().into(),
            );
            l.insert(format!("__meta_kubernetes_{role}_{kind}present_{}", sanitized(k)), "true".into());
        }
    }
}

/// What every role says of a pod it found (prometheus v3.5.0 discovery/kubernetes/pod.go
/// `podLabels`, kubernetes.go `addObjectMetaLabels`).
fn pod_labels(pod: &Value) -> BTreeMap<String, String> {
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let mut l = BTreeMap::from([
        ("__meta_kubernetes_pod_ip".to_string(), s(pod, "/status/podIP").to_string()),
        ("__meta_kubernetes_pod_ready".into(), ready.to_string()),
        ("__meta_kubernetes_pod_phase".into(), s(pod, "/status/phase").to_string()),
        ("__meta_kubernetes_pod_node_name".into(), s(pod, "/spec/nodeName").to_string()),
        ("__meta_kubernetes_pod_host_ip".into(), s(pod, "/status/hostIP").to_string()),
        ("__meta_kubernetes_pod_uid".into(), s(pod, "/metadata/uid").to_string()),
    ]);
    add_object_meta_labels(&mut l, pod, "pod");
    if let Some(owner) = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true)
    {
        l.insert("__meta_kubernetes_pod_controller_kind".into(), owner["kind"].as_str().unwrap_or_default().into());
        l.insert("__meta_kubernetes_pod_controller_name".into(), owner["name"].as_str().unwrap_or_default().into());
    }
    l
}

/// What a role says of the container (and its port) a target is: name, image, whether an init
/// container, and the port's number, name and protocol.
fn container_labels(l: &mut BTreeMap<String, String>, container: &Value, init: bool, port: Option<&Value>) {
    l.insert("__meta_kubernetes_pod_container_name".into(), container["name"].as_str().unwrap_or_default().into());
    l.insert("__meta_kubernetes_pod_container_image".into(), container["image"].as_str().unwrap_or_default().into());
    l.insert("__meta_kubernetes_pod_container_init".into(), init.to_string());
    if let Some(port) = port {
        l.insert(
            "__meta_kubernetes_pod_container_port_number".into(),
            port["containerPort"].as_u64().unwrap_or_default().to_string(),
        );
        l.insert("__meta_kubernetes_pod_container_port_name".into(), port["name"].as_str().unwrap_or_default().into());
        l.insert(
            "__meta_kubernetes_pod_container_port_protocol".into(),
            port["protocol"].as_str().unwrap_or("TCP").into(),
        );
    }
}

/// What the `pod` role of kubernetes_sd_configs says of one container port of a pod, or of a
/// container without ports (then `__address__` is the bare IP): prometheus v3.5.0
/// discovery/kubernetes/pod.go `buildPod`, `podLabels`, kubernetes.go `addObjectMetaLabels`.
fn pod_meta(pod: &Value, container: &Value, init: bool, port: Option<&Value>) -> BTreeMap<String, String> {
    let ip = s(pod, "/status/podIP");
    let mut l = pod_labels(pod);
    l.insert("__meta_kubernetes_namespace".into(), s(pod, "/metadata/namespace").to_string());
    container_labels(&mut l, container, init, port);
    let address = match port {
        Some(port) => format!("{ip}:{}", port["containerPort"].as_u64().unwrap_or_default()),
        None => ip.to_string(),
    };
    l.insert("__address__".into(), address);
    l
}

/// What the `endpoints` role of kubernetes_sd_configs says of one Endpoints object: a target per
/// address and port of each subset (ready ones, then not-ready ones), with the Service's and the
/// Endpoints' own meta labels, and for an address whose target is a pod the pod's labels and the
/// container declaring that port; then a target for every other declared port of those pods
/// (prometheus v3.5.0 discovery/kubernetes/endpoints.go `buildEndpoints`, `addServiceLabels`).
fn endpoints_meta(st: &State, endpoints: &Value) -> Vec<(Value, BTreeMap<String, String>)> {
    let ns = s(endpoints, "/metadata/namespace");
    let mut group = BTreeMap::from([("__meta_kubernetes_namespace".to_string(), ns.to_string())]);
    if let Some(svc) = st.store.get("", "services", ns, s(endpoints, "/metadata/name")) {
        add_object_meta_labels(&mut group, svc, "service");
    }
    add_object_meta_labels(&mut group, endpoints, "endpoints");
    let mut out = Vec::new();
    let mut seen: Vec<(Value, Vec<u64>)> = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        for port in subset["ports"].as_array().into_iter().flatten() {
            let number = port["port"].as_u64().unwrap_or_default();
            for (field, ready) in [("addresses", "true"), ("notReadyAddresses", "false")] {
                for address in subset[field].as_array().into_iter().flatten() {
                    let mut l = group.clone();
                    let ip = address["ip"].as_str().unwrap_or_default();
                    l.insert("__address__".into(), format!("{ip}:{number}"));
                    l.insert(
                        "__meta_kubernetes_endpoint_port_name".into(),
                        port["name"].as_str().unwrap_or_default().into(),
                    );
                    l.insert(
                        "__meta_kubernetes_endpoint_port_protocol".into(),
                        port["protocol"].as_str().unwrap_or("TCP").into(),
                    );
                    l.insert("__meta_kubernetes_endpoint_ready".into(), ready.into());
                    let (kind, name) = (s(address, "/targetRef/kind"), s(address, "/targetRef/name"));
                    if address.get("targetRef").is_some() {
                        l.insert("__meta_kubernetes_endpoint_address_target_kind".into(), kind.into());
                        l.insert("__meta_kubernetes_endpoint_address_target_name".into(), name.into());
                    }
                    if let Some(node) = address["nodeName"].as_str() {
                        l.insert("__meta_kubernetes_endpoint_node_name".into(), node.into());
                    }
                    if let Some(host) = address["hostname"].as_str().filter(|h| !h.is_empty()) {
                        l.insert("__meta_kubernetes_endpoint_hostname".into(), host.into());
                    }
                    let pod = (kind == "Pod")
                        .then(|| st.store.get("", "pods", s(address, "/targetRef/namespace"), name))
                        .flatten();
                    let Some(pod) = pod else {
                        let object = match kind {
                            "Node" => st.store.get("", "nodes", "", name).cloned().unwrap_or_default(),
                            _ => Value::Null,
                        };
                        out.push((object, l));
                        continue;
                    };
                    l.extend(pod_labels(pod));
                    let declared = containers(pod).find_map(|(c, init)| {
                        let ports = c["ports"].as_array()?;
                        Some((c, init, ports.iter().find(|p| p["containerPort"].as_u64() == Some(number))?))
                    });
                    if let Some((c, init, declared)) = declared {
                        container_labels(&mut l, c, init, Some(declared));
                        // The endpoint's protocol, not the container port's.
                        l.insert(
                            "__meta_kubernetes_pod_container_port_protocol".into(),
                            port["protocol"].as_str().unwrap_or("TCP").into(),
                        );
                    }
                    match seen.iter_mut().find(|(p, _)| p["metadata"]["uid"] == pod["metadata"]["uid"]) {
                        Some((_, ports)) => ports.push(number),
                        None => seen.push((pod.clone(), vec![number])),
                    }
                    out.push((pod.clone(), l));
                }
            }
        }
    }
    for (pod, served) in seen {
        let ip = s(&pod, "/status/podIP");
        if ip.is_empty() {
            continue;
        }
        for (c, init) in containers(&pod) {
            for port in c["ports"].as_array().into_iter().flatten() {
                let number = port["containerPort"].as_u64().unwrap_or_default();
                if served.contains(&number) {
                    continue;
                }
                let mut l = group.clone();
                l.extend(pod_labels(&pod));
                container_labels(&mut l, c, init, Some(port));
                l.insert("__address__".into(), format!("{ip}:{number}"));
                out.push((pod.clone(), l));
            }
        }
    }
    out
}

/// What the `node` role of kubernetes_sd_configs says of a Node: prometheus v3.5.0
/// discovery/kubernetes/node.go `buildNode`, `nodeLabels`, `nodeAddress` (the first InternalIP,
/// then InternalDNS, ExternalIP, ExternalDNS, Hostname) joined with the kubelet's port from
/// `status.daemonEndpoints.kubeletEndpoint.Port`, and `instance` set to the node's name. A node
/// without an address is no target.
fn node_meta(node: &Value) -> Option<BTreeMap<String, String>> {
    let addresses: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| (a["type"].as_str().unwrap_or_default(), a["address"].as_str().unwrap_or_default()))
        .collect();
    let first = |ty: &str| addresses.iter().find(|(t, _)| *t == ty).map(|(_, a)| *a);
    let address = ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "Hostname"].into_iter().find_map(first)?;
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(0);
    let mut l = BTreeMap::from([
        ("__meta_kubernetes_node_provider_id".to_string(), s(node, "/spec/providerID").to_string()),
        ("__address__".into(), format!("{address}:{port}")),
        ("instance".into(), s(node, "/metadata/name").to_string()),
    ]);
    // Each address type's first address.
    for (ty, a) in &addresses {
        l.entry(format!("__meta_kubernetes_node_address_{}", sanitized(ty))).or_insert_with(|| a.to_string());
    }
    add_object_meta_labels(&mut l, node, "node");
    Some(l)
}

/// What one `kubernetes_sd_configs` entry discovers, each label set with the object its target
/// scrapes: for the `pod` role one per container port (init containers' too) of each pod with
/// an IP in the listed namespaces (a container without ports gives the bare IP), for the
/// `endpoints` role what [`endpoints_meta`] says of each Endpoints object there, for the `node`
/// role one per Node. The `endpointslice`, `service` and `ingress` roles give none here: neither
/// the configurations meshcheck installs nor the ones prometheus-operator writes for them (its
/// default `serviceDiscoveryRole` is Endpoints, promcfg.go#L168-L171) use them.
fn discovered(st: &State, sd: &Value) -> Vec<(Value, BTreeMap<String, String>)> {
    let names: Vec<&str> = sd
        .pointer("/namespaces/names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let listed = |o: &&Value| names.is_empty() || names.contains(&s(o, "/metadata/namespace"));
    match sd["role"].as_str() {
        Some("node") => st.store.iter("", "nodes", None).filter_map(|n| Some((n.clone(), node_meta(n)?))).collect(),
        Some("endpoints") => {
            st.store.iter("", "endpoints", None).filter(listed).flat_map(|e| endpoints_meta(st, e)).collect()
        }
        Some("pod") => {
            let mut out = Vec::new();
            for p in st.store.iter("", "pods", None).filter(|p| !s(p, "/status/podIP").is_empty()).filter(listed) {
                for (c, init) in containers(p) {
                    match c["ports"].as_array() {
                        Some(ports) if !ports.is_empty() => {
                            out.extend(ports.iter().map(|port| (p.clone(), pod_meta(p, c, init, Some(port)))))
                        }
                        _ => out.push((p.clone(), pod_meta(p, c, init, None))),
                    }
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The targets of a Prometheus configured by its own file: what each scrape config's
/// `kubernetes_sd_configs` discover ([`discovered`]), its `relabel_configs`, then what prometheus
/// v3.5.0 scrape/target.go `PopulateLabels` does: `job`, `__metrics_path__` and `__scheme__` from
/// the config before the rules, `instance` from `__address__` unless discovery or a rule set it,
/// and every `__` label dropped after them; targets left with the same labels are one
/// (scrape/scrape.go `Sync`).
fn configured_targets(st: &State, pod: &Value) -> Vec<Target> {
    let Some(config) = config_file(st, pod) else { return Vec::new() };
    let mut out: Vec<Target> = Vec::new();
    for job in config["scrape_configs"].as_array().into_iter().flatten() {
        let pool = job["job_name"].as_str().unwrap_or_default();
        for sd in job["kubernetes_sd_configs"].as_array().into_iter().flatten() {
            for (object, mut labels) in discovered(st, sd) {
                labels.insert("job".into(), pool.to_string());
                labels.insert("__metrics_path__".into(), job["metrics_path"].as_str().unwrap_or("/metrics").into());
                labels.insert("__scheme__".into(), job["scheme"].as_str().unwrap_or("http").into());
                if !relabel(&job["relabel_configs"], &mut labels) {
                    continue;
                }
                // A target whose rules left no address is dropped (scrape/target.go
                // `PopulateLabels`: "no address").
                let Some(address) = labels.get("__address__").cloned() else { continue };
                let (host, port) = match address.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                    Some((h, Ok(port))) => (h.trim_matches(['[', ']']).to_string(), port),
                    _ => (address.clone(), 80),
                };
                let label = |k: &str, default: &str| labels.get(k).cloned().unwrap_or_else(|| default.into());
                let (path, scheme) = (label("__metrics_path__", "/metrics"), label("__scheme__", "http"));
                // An `instance` set by discovery or a rule is kept as set; without one it is the
                // address (scrape/target.go `PopulateLabels`; [`Target::instance`]).
                labels.retain(|k, _| !k.starts_with("__"));
                if out.iter().any(|t| t.pool == pool && t.labels == labels && t.address == host && t.port == port) {
                    continue;
                }
                out.push(Target {
                    pool: pool.to_string(),
                    labels,
                    pod: object,
                    address: host,
                    port,
                    path,
                    scheme,
                    metric_relabelings: job["metric_relabel_configs"].clone(),
                });
            }
        }
    }
    out
}

/// The value of the label a monitor's `spec.jobLabel` names on `target` (its Service or pod),
/// when both are set and the value is not empty.
fn job_label<'a>(monitor: &Value, target: &'a Value) -> Option<&'a str> {
    let label = monitor.pointer("/spec/jobLabel").and_then(Value::as_str)?;
    target
        .pointer(&format!("/metadata/labels/{}", label.replace('/', "~1")))
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
}

/// A target's scrape: the body when up, else Prometheus' `lastError`.
fn scrape(st: &State, t: &Target, scraper: Scraper) -> Result<Vec<u8>, String> {
    let refused = || format!("Get \"{}\": dial tcp {}: connect: connection refused", t.url(), t.host_port());
    if s(&t.pod, "/kind") == "Node" {
        // The kubelet serves HTTPS only on 10250 (a plain-HTTP client gets a 400 from Go's TLS
        // server); the chart's endpoint skips verification of its self-signed certificate.
        return match (t.port, t.scheme.as_str(), t.path.as_str()) {
            (super::kubelet::HTTPS_PORT, "https", "/metrics/cadvisor") => {
                Ok(super::kubelet::cadvisor(st, s(&t.pod, "/metadata/name")).into_bytes())
            }
            // The kubelet's own metrics and its probe metrics: families of no check's interest.
            (super::kubelet::HTTPS_PORT, "https", "/metrics" | "/metrics/probes") => {
                Ok(b"# TYPE kubelet_node_name gauge\nkubelet_node_name 1\n".to_vec())
            }
            (super::kubelet::HTTPS_PORT, "https", _) => Err("server returned HTTP status 404 Not Found".into()),
            (super::kubelet::HTTPS_PORT, _, _) => Err("server returned HTTP status 400 Bad Request".into()),
            _ => Err(refused()),
        };
    }
    if refuses_scrapes(st, &t.pod) {
        return Err(refused());
    }
    match scraper(&t.pod, t.port, &t.path) {
        None => Err(refused()),
        // What the simulation serves is plain HTTP; a TLS handshake with it fails.
        Some(_) if t.scheme != "http" => {
            Err(format!("Get \"{}\": http: server gave HTTP response to HTTPS client", t.url()))
        }
        Some((200, body)) => Ok(body),
        Some((code, _)) => Err(format!("server returned HTTP status {code} {}", reason(code))),
    }
}

/// Whether the fault `ztunnel_target_down` closes this pod to Prometheus: the first Ready ztunnel.
pub(super) fn refuses_scrapes(st: &State, pod: &Value) -> bool {
    st.faults.ztunnel_target_down
        && program(pod) == Program::Ztunnel
        && st
            .store
            .iter("", "pods", None)
            .find(|p| program(p) == Program::Ztunnel && pod_ready(p))
            .is_some_and(|p| p.pointer("/metadata/uid") == pod.pointer("/metadata/uid"))
}

fn reason(code: u16) -> &'static str {
    http::StatusCode::from_u16(code).ok().and_then(|c| c.canonical_reason()).unwrap_or("")
}

/// `/api/v1/targets`: every active target in the shape of the upstream example.
fn targets_api(st: &State, pod: &Value, template: &Value, scraper: Scraper) -> Value {
    let active: Vec<Value> = targets(st, pod)
        .iter()
        .map(|t| {
            let mut v = template.clone();
            let instance = t.instance();
            let mut labels: serde_json::Map<String, Value> =
                t.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            labels.insert("instance".into(), json!(instance));
            let health = scrape(st, t, scraper);
            v["labels"] = Value::Object(labels);
            v["discoveredLabels"] =
                json!({"__address__": t.host_port(), "__metrics_path__": t.path, "__scheme__": t.scheme, "job": t.pool});
            v["scrapePool"] = json!(t.pool);
            v["scrapeUrl"] = json!(t.url());
            v["globalUrl"] = json!(t.url());
            v["lastScrape"] = json!(now());
            v["scrapeInterval"] = json!("15s");
            v["health"] = json!(if health.is_ok() { "up" } else { "down" });
            v["lastError"] = json!(health.err().unwrap_or_default());
            v
        })
        .collect();
    json!({"status": "success", "data": {"activeTargets": active, "droppedTargets": [], "droppedTargetCounts": {}}})
}

/// The subset of PromQL the harness and Kiali send: an instant vector selector
/// `name{label="value",…}`, optionally under `sum by (labels) (…)` or `max by (labels) (…)`.
struct Query {
    by: Option<Vec<String>>,
    /// `max` rather than `sum` over each group.
    max: bool,
    name: String,
    matchers: Vec<(String, String)>,
}

fn parse_query(q: &str) -> Option<Query> {
    let q = q.trim();
    let max = q.starts_with("max by");
    let (by, inner) = match q.strip_prefix("sum by").or_else(|| q.strip_prefix("max by")) {
        Some(rest) => {
            let rest = rest.trim_start().strip_prefix('(')?;
            let (labels, rest) = rest.split_once(')')?;
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            (Some(labels.split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()), inner)
        }
        None => (None, q),
    };
    let (name, matchers) = match inner.split_once('{') {
        Some((name, rest)) => (name.trim(), rest.strip_suffix('}')?),
        None => (inner.trim(), ""),
    };
    let matchers = matchers
        .split(',')
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let (k, v) = m.split_once('=')?;
            Some((k.trim().to_string(), v.trim().strip_prefix('"')?.strip_suffix('"')?.to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    valid.then(|| Query { by, max, name: name.to_string(), matchers })
}

/// `/api/v1/query`: the query over the current scrape of every up target, target labels added.
fn query_api(st: &State, pod: &Value, query: &str, scraper: Scraper) -> (u16, Value) {
    let q = super::web::decode(query.split('&').find_map(|p| p.strip_prefix("query=")).unwrap_or_default());
    let Some(parsed) = parse_query(&q) else {
        // prometheus v3.5.0 web/api/v1/api.go: a parse error is 400 `bad_data`.
        return (
            400,
            json!({"status": "error", "errorType": "bad_data", "error": format!("invalid parameter \"query\": 1:1: parse error: unexpected input in {q:?}")}),
        );
    };
    let mut series: BTreeMap<Vec<(String, String)>, f64> = BTreeMap::new();
    for t in targets(st, pod) {
        let Ok(body) = scrape(st, &t, scraper) else { continue };
        for sample in meshcheck::formats::promtext::parse(&String::from_utf8_lossy(&body)).samples_named(&parsed.name) {
            let mut labels: BTreeMap<String, String> = sample.labels.clone();
            for (k, v) in &t.labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            labels.insert("instance".into(), t.instance());
            let mut with_name = labels.clone();
            with_name.insert("__name__".into(), sample.name.clone());
            if !relabel(&t.metric_relabelings, &mut with_name) {
                continue;
            }
            if !parsed.matchers.iter().all(|(k, v)| labels.get(k).map_or("", String::as_str) == v) {
                continue;
            }
            let key: Vec<(String, String)> = match &parsed.by {
                Some(by) => by.iter().map(|l| (l.clone(), labels.get(l).cloned().unwrap_or_default())).collect(),
                None => {
                    labels.insert("__name__".into(), parsed.name.clone());
                    labels.into_iter().collect()
                }
            };
            let entry = series.entry(key).or_insert(if parsed.max { f64::NEG_INFINITY } else { 0.0 });
            *entry = if parsed.max { entry.max(sample.value) } else { *entry + sample.value };
        }
    }
    let now = chrono::Utc::now().timestamp() as f64;
    let result: Vec<Value> = series
        .into_iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, Value> =
                labels.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k, json!(v))).collect();
            json!({"metric": metric, "value": [now, v.to_string()]})
        })
        .collect();
    (200, json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}

/// A configuration under which a real Prometheus scrapes what this one does, through the
/// simulation's forward proxy into the pods (`proxy_url`), every second:
/// - run by an operator: each scrape pool with its targets as the monitors' rules leave them
///   (static labels, with `__metrics_path__` and `__scheme__` per target, which `PopulateLabels`
///   takes before the config's own) and the endpoint's `metricRelabelings` in Prometheus' spelling;
/// - run by its own file: each scrape config as written, its `kubernetes_sd_configs` replaced by
///   the label sets they discover here, so the real Prometheus runs the file's `relabel_configs`
///   itself.
///
/// Only plain-HTTP jobs and targets: the proxy carries no TLS. The kubelet's HTTPS cAdvisor
/// endpoint is held against a real Prometheus in suites/offline/prometheus.rs instead.
pub(super) fn real_config(st: &State, pod: &Value, proxy_url: &str) -> Value {
    let jobs = match custom_resource(st, pod) {
        Some(_) => operator_jobs(st, pod, proxy_url),
        None => file_jobs(st, pod, proxy_url),
    };
    json!({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs})
}

fn operator_jobs(st: &State, pod: &Value, proxy_url: &str) -> Vec<Value> {
    let mut jobs: Vec<Value> = Vec::new();
    for t in targets(st, pod).into_iter().filter(|t| t.scheme == "http") {
        let mut labels: serde_json::Map<String, Value> = t.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        labels.insert("__metrics_path__".into(), json!(t.path));
        labels.insert("__scheme__".into(), json!(t.scheme));
        let target = json!({"targets": [t.host_port()], "labels": labels});
        match jobs.iter_mut().find(|j| j["job_name"] == t.pool.as_str()) {
            Some(job) => job["static_configs"].as_array_mut().expect("a list").push(target),
            None => jobs.push(json!({
                "job_name": t.pool,
                "proxy_url": proxy_url,
                "static_configs": [target],
                "metric_relabel_configs": in_prometheus_spelling(&t.metric_relabelings),
            })),
        }
    }
    jobs
}

/// Relabelings as a monitor writes them (`sourceLabels`, `targetLabel`) in the spelling of a
/// Prometheus config, as prometheus-operator v0.85.0 generates them (promcfg.go
/// `generateRelabelConfig`).
fn in_prometheus_spelling(rules: &Value) -> Value {
    let spelled = |(k, v): (&String, &Value)| {
        let key = match k.as_str() {
            "sourceLabels" => "source_labels",
            "targetLabel" => "target_label",
            other => other,
        };
        (key.to_string(), v.clone())
    };
    let rules = rules.as_array().into_iter().flatten().filter_map(Value::as_object);
    Value::Array(rules.map(|r| Value::Object(r.iter().map(spelled).collect())).collect())
}

fn file_jobs(st: &State, pod: &Value, proxy_url: &str) -> Vec<Value> {
    let Some(config) = config_file(st, pod) else { return Vec::new() };
    let jobs = config["scrape_configs"].as_array().into_iter().flatten();
    jobs.filter(|job| job["scheme"].as_str().unwrap_or("http") == "http")
        .filter_map(|job| {
            let found: Vec<Value> = job["kubernetes_sd_configs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|sd| discovered(st, sd))
                .map(|(_, mut labels)| {
                    let address = labels.remove("__address__").unwrap_or_default();
                    json!({"targets": [address], "labels": labels})
                })
                .collect();
            let mut job = job.as_object()?.clone();
            // Discovery, intervals and the in-cluster credentials are the simulation's to give.
            for key in ["kubernetes_sd_configs", "scrape_interval", "scrape_timeout", "bearer_token_file", "tls_config"]
            {
                job.remove(key);
            }
            job.insert("static_configs".into(), Value::Array(found));
            job.insert("proxy_url".into(), json!(proxy_url));
            Some(Value::Object(job))
        })
        .collect()
}

/// What a Prometheus pod answers on its web port.
pub(super) fn serve(
    st: &State,
    pod: &Value,
    template: &Value,
    route: &str,
    query: &str,
    scraper: Scraper,
) -> (u16, Value) {
    match route {
        "/api/v1/targets" => (200, targets_api(st, pod, template, scraper)),
        "/api/v1/query" => query_api(st, pod, query, scraper),
        _ => (404, Value::Null),
    }
}

/// The port Prometheus listens on: 9090 (prometheus-operator's `--web.listen-address`), named by
/// the CR's `portName` (default `web`).
pub(super) const PORT: u16 = 9090;
