//! Every judge: a passing case, failing cases with the right explanation, and real upstream output.

use meshcheck::{checks, evidence::Outcome};
use serde_json::json;

use crate::common::{evidence, upstream_file};

pub(crate) fn judge(name: &str, files: &[(&str, &[u8])]) -> meshcheck::evidence::Verdict {
    let (_dir, ev) = evidence(files);
    (checks::find(name).unwrap().judge)(&ev)
}

pub(crate) fn node(arch: &str, ready: bool) -> serde_json::Value {
    json!({"metadata": {"name": format!("n-{arch}")}, "status": {"nodeInfo": {"architecture": arch},
           "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// Judges `files` with the check's `expect.json` replaced by each malformed variant (not JSON, no
/// fields, `null`, and the check's own `bad` ones): each must be an error verdict naming the file,
/// never a pass or a fail. The untouched `files` pass, so the error comes from expect.json alone.
fn assert_malformed_expect_is_an_error(check: &str, files: &[(&str, &[u8])], bad: &[&[u8]]) {
    let expect_file = files.iter().map(|(f, _)| *f).find(|f| f.ends_with("/expect.json")).expect("an expect.json");
    let v = judge(check, files);
    assert_eq!(v.outcome, Outcome::Pass, "{check} with a good {expect_file}: {}", v.explanation());
    let generic: [&[u8]; 3] = [b"not json", b"{}", b"null"];
    for malformed in generic.iter().chain(bad) {
        let mut with: Vec<(&str, &[u8])> = files.iter().copied().filter(|(f, _)| *f != expect_file).collect();
        with.push((expect_file, malformed));
        let v = judge(check, &with);
        let shown = String::from_utf8_lossy(malformed);
        assert_eq!(v.outcome, Outcome::Error, "{check} with {expect_file} `{shown}`: {}", v.explanation());
        assert!(v.reason.contains(expect_file), "{check} with `{shown}`: {}", v.reason);
    }
}

#[test]
fn missing_evidence_is_an_error_never_a_pass() {
    for def in checks::REGISTRY {
        let v = judge(def.info.name, &[]);
        assert_eq!(v.outcome, Outcome::Error, "{}: {}", def.info.name, v.reason);
    }
}

#[test]
fn the_registry_has_one_check_per_catalog_entry_in_the_same_order() {
    let registered: Vec<&str> = checks::REGISTRY.iter().map(|d| d.info.name).collect();
    assert_eq!(registered, meshcheck::common::catalog::names());
}

#[test]
fn only_checks_that_run_before_the_cluster_collect_from_the_scenario_alone() {
    use meshcheck::{checks::Collector, common::catalog::Stage};
    for def in checks::REGISTRY {
        let scenario_only = matches!(def.collect, Collector::Scenario(_));
        assert_eq!(scenario_only, def.info.stage == Stage::Preflight, "{}", def.info.name);
    }
}

#[test]
fn node_architecture() {
    let expect = br#"{"architecture":"arm64"}"#;
    let good = serde_json::to_vec(&json!({"items": [node("arm64", true), node("arm64", true)]})).unwrap();
    let bad = serde_json::to_vec(&json!({"items": [node("amd64", true), node("arm64", false)]})).unwrap();
    assert_eq!(
        judge("node-architecture", &[("nodes/expect.json", expect), ("cluster/nodes.json", &good)]).outcome,
        Outcome::Pass
    );
    let v = judge("node-architecture", &[("nodes/expect.json", expect), ("cluster/nodes.json", &bad)]);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.explanation().contains("architecture amd64, expected arm64") && v.explanation().contains("not Ready"));
}

#[test]
fn node_architecture_with_a_malformed_expect_is_an_error() {
    let good = serde_json::to_vec(&json!({"items": [node("arm64", true)]})).unwrap();
    assert_malformed_expect_is_an_error(
        "node-architecture",
        &[("nodes/expect.json", br#"{"architecture":"arm64"}"#), ("cluster/nodes.json", &good)],
        &[br#"{"architecture":64}"#, br#"{"architecture":""}"#, br#"{"arch":"arm64"}"#],
    );
}

#[test]
fn image_architectures_with_a_malformed_expect_is_an_error() {
    let Some(index) =
        upstream_file("observed/oci-image-index.amd64-arm64-with-attestations.regclient-testrepo-v1.json")
    else {
        return;
    };
    assert_malformed_expect_is_an_error(
        "image-architectures",
        &[
            ("images/expect.json", br#"{"architecture":"arm64","images":[{"image":"x/y:1","file":"images/manifest-00.json"}]}"#),
            ("images/manifest-00.json", &index),
        ],
        &[
            br#"{"images":[{"image":"x/y:1","file":"images/manifest-00.json"}]}"#,
            br#"{"architecture":"","images":[{"image":"x/y:1","file":"images/manifest-00.json"}]}"#,
            br#"{"architecture":"arm64","images":"x/y:1"}"#,
            // An image with neither the file of its manifest nor why there is none.
            br#"{"architecture":"arm64","images":[{"image":"x/y:1"}]}"#,
            br#"{"architecture":"arm64","images":[{"image":"x/y:1","file":"images/manifest-00.json"}],"unlisted":"tempo"}"#,
        ],
    );
}

#[test]
fn image_architectures_on_real_oci_indexes() {
    let Some(index) =
        upstream_file("observed/oci-image-index.amd64-arm64-with-attestations.regclient-testrepo-v1.json")
    else {
        return;
    };
    let Some(armv7) = upstream_file("observed/oci-image-index.amd64-arm64-armv7-armv6.regclient-testrepo-b1.json")
    else {
        return;
    };
    let expect = |arch: &str| {
        serde_json::to_vec(
            &json!({"architecture": arch, "images": [{"image": "x/y:1", "file": "images/manifest-00.json"}]}),
        )
        .unwrap()
    };
    let ok =
        judge("image-architectures", &[("images/expect.json", &expect("arm64")), ("images/manifest-00.json", &index)]);
    assert_eq!(ok.outcome, Outcome::Pass, "{}", ok.reason);
    let v =
        judge("image-architectures", &[("images/expect.json", &expect("s390x")), ("images/manifest-00.json", &armv7)]);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.explanation().contains("x/y:1 publishes no linux/s390x"), "{}", v.explanation());
    let unreadable =
        serde_json::to_vec(&json!({"architecture": "amd64", "images": [{"image": "x/y:1", "error": "HTTP 404"}]}))
            .unwrap();
    assert_eq!(judge("image-architectures", &[("images/expect.json", &unreadable)]).outcome, Outcome::Error);
    // A chart version without an image list is not a pass on the images that were listed.
    let unlisted = serde_json::to_vec(&json!({"architecture": "arm64", "unlisted": ["cilium 1.19.7"],
        "images": [{"image": "x/y:1", "file": "images/manifest-00.json"}]}))
    .unwrap();
    let v = judge("image-architectures", &[("images/expect.json", &unlisted), ("images/manifest-00.json", &index)]);
    assert!(
        v.outcome == Outcome::Error && v.explanation().contains("cilium 1.19.7: no pinned image list"),
        "{}",
        v.explanation()
    );
}

pub(crate) fn cilium_cm(overrides: &[(&str, &str)]) -> Vec<u8> {
    let mut data = json!({"bpf-lb-sock-hostns-only": "true", "cni-exclusive": "false", "enable-bpf-masquerade": "false",
                          "enable-host-legacy-routing": "true", "kube-proxy-replacement": "true"});
    for (k, v) in overrides {
        data[*k] = json!(v);
    }
    serde_json::to_vec(&json!({"kind": "ConfigMap", "data": data})).unwrap()
}

#[test]
fn cilium_prerequisites_name_each_trap() {
    assert_eq!(judge("cilium-prerequisites", &[("cilium/cilium-config.json", &cilium_cm(&[]))]).outcome, Outcome::Pass);
    for (key, value, hint) in [
        ("bpf-lb-sock-hostns-only", "false", "socketLB.hostNamespaceOnly=true"),
        ("cni-exclusive", "true", "cni.exclusive=false"),
        ("enable-bpf-masquerade", "true", "bpf.masquerade=false"),
        ("enable-host-legacy-routing", "false", "bpf.hostLegacyRouting=true"),
        ("enable-ztunnel", "true", "encryption.type=ztunnel"),
    ] {
        let v = judge("cilium-prerequisites", &[("cilium/cilium-config.json", &cilium_cm(&[(key, value)]))]);
        assert_eq!(v.outcome, Outcome::Fail, "{key}");
        assert!(v.explanation().contains(hint), "{key}: {}", v.explanation());
    }
}

/// The judge on the `cilium-config` the real Cilium 1.19.6 chart renders (the real helm, meshcheck's
/// values, then each trap set as a user would set it): it passes on meshcheck's values and names
/// the trap each `--set` springs. Cilium's own ztunnel encryption shows in the ConfigMap as
/// `enable-ztunnel: "true"` (chart templates/cilium-configmap.yaml#L756-L757).
#[test]
fn cilium_prerequisites_on_the_real_charts_config() {
    let Some(helm) = crate::common::helm() else { return };
    let chart = helm.chart("https://helm.cilium.io", "cilium", "1.19.6").unwrap();
    let values = crate::common::root().join("fixtures/values/cilium.yaml");
    let config = |sets: &[&str]| -> Vec<u8> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let objects = helm.template(&chart, "cilium", "kube-system", std::slice::from_ref(&values), &sets).unwrap();
        let cm = objects.into_iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "cilium-config");
        serde_json::to_vec(&cm.expect("the chart renders cilium-config")).unwrap()
    };
    let verdict = |sets: &[&str]| judge("cilium-prerequisites", &[("cilium/cilium-config.json", &config(sets))]);
    let v = verdict(&[]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    for (sets, hint) in [
        (&["encryption.enabled=true", "encryption.type=ztunnel"][..], "encryption.type=ztunnel"),
        (&["socketLB.hostNamespaceOnly=false"][..], "socketLB.hostNamespaceOnly=true"),
        (&["cni.exclusive=true"][..], "cni.exclusive=false"),
        // BPF host routing drops the probe replies under BPF masquerade even without kube-proxy
        // replacement.
        (
            &["kubeProxyReplacement=false", "bpf.masquerade=true", "bpf.hostLegacyRouting=false"][..],
            "bpf.hostLegacyRouting=true",
        ),
    ] {
        let v = verdict(sets);
        assert_eq!(v.outcome, Outcome::Fail, "{sets:?}");
        assert!(v.explanation().contains(hint), "{sets:?}: {}", v.explanation());
    }
}

/// A gateway pod `label`led, Ready or not, and the Service the chart renders with `target` for http2.
pub(crate) fn gateway_evidence(label: &str, ready: bool, target: u16) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let gws = serde_json::to_vec(
        &json!({"items": [{"metadata": {"name": "bookinfo-gateway"}, "spec": {"selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}]}),
    )
    .unwrap();
    let pods = serde_json::to_vec(&json!({"items": [{"metadata": {"name": "gw-1", "namespace": "istio-ingress", "labels": {"istio": label, "app": "istio-ingress"}},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                   "containerStatuses": [{"restartCount": if ready { 0 } else { 7 }}]}}]})).unwrap();
    let svcs =
        serde_json::to_vec(&json!({"items": [{"metadata": {"name": "istio-ingress", "namespace": "istio-ingress"},
        "spec": {"selector": {"app": "istio-ingress", "istio": label}, "ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15021},
            {"name": "http2", "port": 80, "targetPort": target, "nodePort": 30080},
            {"name": "https", "port": 443, "targetPort": 443}]}}]}))
        .unwrap();
    (gws, pods, svcs)
}

#[test]
fn gateway_binding_names_the_release_name_trap() {
    let case = |label: &str, ready: bool, target: u16| {
        let (g, p, s) = gateway_evidence(label, ready, target);
        judge(
            "gateway-binding",
            &[("gateway/gateways.json", &g), ("gateway/pods.json", &p), ("gateway/services-istio-ingress.json", &s)],
        )
    };
    let v = case("ingressgateway", true, 8080);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = case("ingress", true, 8080);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(
        v.explanation().contains("istio=ingress") && v.explanation().contains("labels.istio"),
        "{}",
        v.explanation()
    );
    // The chart's default http2 80 → 80 while bookinfo's Gateway listens on 8080 (istio/istio#45943).
    let v = case("ingressgateway", true, 80);
    assert_eq!(v.outcome, Outcome::Fail);
    let e = v.explanation();
    assert!(
        e.contains("server port 8080: the gateway pod listens on 8080")
            && e.contains("http2 80→80")
            && e.contains("#45943"),
        "{e}"
    );
    // A crash-looping gateway pod stays Running: not Ready is not served.
    let v = case("ingressgateway", false, 8080);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("none is Ready")
            && v.explanation().contains("restarts 7"),
        "{}",
        v.explanation()
    );
    // No Service in front of the pods: the namespace's Services were read, none selects them.
    let (g, p, _) = gateway_evidence("ingressgateway", true, 8080);
    let elsewhere = serde_json::to_vec(&json!({"items": [{"metadata": {"name": "other", "namespace": "istio-ingress"},
        "spec": {"selector": {"app": "other"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}]}))
    .unwrap();
    let v = judge(
        "gateway-binding",
        &[
            ("gateway/gateways.json", &g),
            ("gateway/pods.json", &p),
            ("gateway/services-istio-ingress.json", &elsewhere),
        ],
    );
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("no Service selects"), "{}", v.explanation());
    // Without the namespace's Services nothing says whether one selects them: an error naming the file.
    let v = judge("gateway-binding", &[("gateway/gateways.json", &g), ("gateway/pods.json", &p)]);
    assert!(
        v.outcome == Outcome::Error && v.reason.contains("gateway/services-istio-ingress.json"),
        "{}",
        v.explanation()
    );
    // The real 1.30.3 sample's Gateway against the chart's real default Service ports fails the same way.
    let Some(sample) = upstream_file("bookinfo/istio-1.30.3-networking-bookinfo-gateway.yaml") else { return };
    let objs = meshcheck::plan::fixtures::parse_manifests(std::str::from_utf8(&sample).unwrap(), "sample").unwrap();
    let gw = objs.iter().find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Gateway")).unwrap();
    let gws = serde_json::to_vec(&json!({"items": [serde_json::to_value(gw).unwrap()]})).unwrap();
    let (_, p, s) = gateway_evidence("ingressgateway", true, 80);
    let v = judge(
        "gateway-binding",
        &[("gateway/gateways.json", &gws), ("gateway/pods.json", &p), ("gateway/services-istio-ingress.json", &s)],
    );
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("listens on 8080"), "{}", v.explanation());
}

/// A Gateway with no gateway pod at all: when a Deployment's pod template carries the selected
/// labels, the verdict names it and why it has no pods (the `ReplicaFailure` the deployment
/// controller copies from its ReplicaSet) instead of the release-name hint; with no such
/// Deployment, or a run folder from before `gateway/deployments.json`, the hint stays.
#[test]
fn gateway_binding_names_a_gateway_deployment_whose_pods_are_refused() {
    let (g, _, _) = gateway_evidence("ingressgateway", true, 8080);
    let no_pods = serde_json::to_vec(&json!({"items": []})).unwrap();
    let deployment = |label: &str| {
        serde_json::to_vec(&json!({"items": [{"metadata": {"name": "istio-ingress", "namespace": "istio-ingress"},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"istio": label, "sidecar.istio.io/inject": "true"}}}},
            "status": {"conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "Internal error occurred: failed calling webhook \"object.sidecar-injector.istio.io\": connect: network is unreachable"}]}}]}))
        .unwrap()
    };
    let with = |d: &[u8]| {
        judge(
            "gateway-binding",
            &[("gateway/gateways.json", &g), ("gateway/pods.json", &no_pods), ("gateway/deployments.json", d)],
        )
    };
    let v = with(&deployment("ingressgateway"));
    let e = v.explanation();
    assert!(
        v.outcome == Outcome::Fail
            && e.contains("Deployment istio-ingress/istio-ingress makes such pods but has none (0 of 1 replicas)"),
        "{e}"
    );
    assert!(e.contains("ReplicaFailure: FailedCreate: Internal error occurred: failed calling webhook"), "{e}");
    assert!(!e.contains("labels.istio"), "not the label trap: {e}");
    let v = with(&deployment("ingress"));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("labels.istio"), "{}", v.explanation());
    let v = judge("gateway-binding", &[("gateway/gateways.json", &g), ("gateway/pods.json", &no_pods)]);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("labels.istio"), "{}", v.explanation());
}

pub(crate) const ZT_METRICS_OK: &str = "# TYPE istio_tcp_connections_opened counter\n\
istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"productpage-v1\",source_workload_namespace=\"book-info\",source_principal=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-productpage\",destination_workload=\"details-v1\",destination_workload_namespace=\"book-info\",destination_principal=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-details\",connection_security_policy=\"mutual_tls\",response_flags=\"UF,URX\"} 4\n\
# TYPE istio_tcp_connections_closed counter\nistio_tcp_connections_closed_total 1\n\
# TYPE istio_tcp_sent_bytes counter\nistio_tcp_sent_bytes_total 10\n\
# TYPE istio_tcp_received_bytes counter\nistio_tcp_received_bytes_total 10\n# EOF\n";

/// ztunnel 1.30.3's access log for bookinfo's three hops, both identities on each (mutual TLS).
pub(crate) fn access_log_ok() -> String {
    [("productpage", "details"), ("productpage", "reviews"), ("reviews", "ratings")]
        .iter()
        .map(|(from, to)| {
            format!(
                "2026-12-04T01:00:00.000000Z\tinfo\taccess\tconnection complete\tsrc.addr=10.244.1.12:60059 \
                 src.workload=\"{from}-v1-abc\" src.namespace=\"book-info\" src.identity=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-{from}\" \
                 dst.addr=10.244.1.10:15008 dst.hbone_addr=10.244.1.10:9080 dst.service=\"{to}.book-info.svc.cluster.local\" \
                 dst.workload=\"{to}-v1-abc\" dst.namespace=\"book-info\" dst.identity=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-{to}\" \
                 direction=\"inbound\" bytes_sent=175 bytes_recv=80 duration=\"1ms\"\n"
            )
        })
        .collect()
}

pub(crate) fn config_dump(protocol_of_details: &str) -> Vec<u8> {
    let w = |app: &str, proto: &str| json!({"name": format!("{app}-v1-abc"), "namespace": "book-info", "canonicalName": app, "protocol": proto});
    serde_json::to_vec(&json!({"workloads": [w("productpage", "HBONE"), w("details", protocol_of_details), w("ratings", "HBONE"), w("reviews", "HBONE")]})).unwrap()
}

/// The STRICT probe's record: the outside client before STRICT got 200; under STRICT the outside
/// client got `outside` with curl exit `exit`, the inside client `inside`.
pub(crate) fn strict(outside: &str, inside: &str) -> Vec<u8> {
    strict_exit(outside, if outside == "000" { 56 } else { 0 }, inside)
}

pub(crate) fn strict_exit(outside: &str, exit: i64, inside: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"results": [
        {"phase": "before", "client": "outside", "http_code": "200", "exit_code": 0, "target": "t"},
        {"phase": "strict", "client": "outside", "http_code": outside, "exit_code": exit, "target": "t"},
        {"phase": "strict", "client": "inside", "http_code": inside, "exit_code": if inside == "200" { 0 } else { 56 }, "target": "t"}]})).unwrap()
}

/// The mTLS judge holds book-info's own connections, and whole identities: a connection from
/// another namespace (the ingress gateway's, in plaintext to productpage) or a counter still at 0
/// proves and disproves nothing; a SPIFFE principal of another namespace is no book-info identity;
/// an access-log line from another namespace does not stand for a book-info hop; failed
/// connections are counted in a note; a STRICT record without its baseline, or with the inside
/// client answered but not 200, is not a pass.
#[test]
fn mtls_judges_book_infos_own_connections_and_whole_identities() {
    let expect = br#"{"namespace":"book-info","apps":["productpage","details","ratings","reviews"]}"#;
    let case = |metrics: &str, log: &str, strict: &[u8]| {
        judge(
            "mtls",
            &[
                ("mtls/expect.json", expect),
                ("mtls/ztunnel/n1/config_dump.json", &config_dump("HBONE")),
                ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
                ("mtls/ztunnel/n1/access.log", log.as_bytes()),
                ("mtls/strict.json", strict),
            ],
        )
    };
    let ok_strict = strict("000", "200");
    let sample = |src_ns: &str, principal: &str, policy: &str, value: u32| {
        format!(
            "istio_tcp_connections_opened_total{{reporter=\"destination\",source_workload=\"x\",source_workload_namespace=\"{src_ns}\",source_principal=\"{principal}\",destination_workload=\"productpage-v1\",destination_workload_namespace=\"book-info\",destination_principal=\"spiffe://cluster.local/ns/book-info/sa/bookinfo-productpage\",connection_security_policy=\"{policy}\"}} {value}\n"
        )
    };
    let with = |extra: &str| {
        ZT_METRICS_OK
            .replace("# TYPE istio_tcp_connections_closed", &format!("{extra}# TYPE istio_tcp_connections_closed"))
    };
    let v = case(&with(&sample("istio-ingress", "", "unknown", 3)), &access_log_ok(), &ok_strict);
    assert_eq!(v.outcome, Outcome::Pass, "another namespace's plaintext is not book-info's: {}", v.explanation());
    assert!(!v.explanation().contains("failed connection(s)"), "{}", v.explanation());
    let v = case(&with(&sample("book-info", "", "unknown", 0)), &access_log_ok(), &ok_strict);
    assert_eq!(v.outcome, Outcome::Pass, "a counter at 0 counts no connection: {}", v.explanation());
    let foreign = sample("book-info", "spiffe://cluster.local/ns/elsewhere/sa/x", "mutual_tls", 2);
    let v = case(&with(&foreign), &access_log_ok(), &ok_strict);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("source_principal=\"spiffe://cluster.local/ns/elsewhere/sa/x\""),
        "{}",
        v.explanation()
    );

    // productpage -> details seen only from another namespace's workload of the same name.
    let ok = access_log_ok();
    let (details, rest): (Vec<&str>, Vec<&str>) =
        ok.lines().partition(|l| l.contains("dst.workload=\"details-v1-abc\""));
    let elsewhere = details[0].replace("src.namespace=\"book-info\"", "src.namespace=\"elsewhere\"");
    let log = format!("{}\n{elsewhere}\n", rest.join("\n"));
    let v = case(ZT_METRICS_OK, &log, &ok_strict);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation()
                .contains("no ztunnel access-log line shows a connection productpage -> details in book-info"),
        "{}",
        v.explanation()
    );
    // One failed connection beside the completed ones: counted in a note, not a failure.
    let failed =
        details[0].replace("\tinfo\t", "\terror\t").replace(" duration=", " error=\"connection refused\" duration=");
    let v = case(ZT_METRICS_OK, &format!("{ok}{failed}\n"), &ok_strict);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.explanation().contains("productpage -> details: 1 failed connection(s) logged by ztunnel"),
        "{}",
        v.explanation()
    );

    let no_before = serde_json::to_vec(&json!({"results": [
        {"phase": "strict", "client": "outside", "http_code": "000", "exit_code": 56, "target": "t"},
        {"phase": "strict", "client": "inside", "http_code": "200", "exit_code": 0, "target": "t"}]}))
    .unwrap();
    let v = case(ZT_METRICS_OK, &ok, &no_before);
    assert!(v.outcome == Outcome::Error && v.reason.contains("has no baseline"), "{}", v.explanation());
    let v = case(ZT_METRICS_OK, &ok, &strict("000", "503"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("client inside the mesh got HTTP 503"),
        "{}",
        v.explanation()
    );
}

#[test]
fn mtls_needs_all_four_signals() {
    let expect = br#"{"namespace":"book-info","apps":["productpage","details","ratings","reviews"]}"#;
    let log = access_log_ok();
    let case = |dump: &[u8], metrics: &str, strict: &[u8]| {
        judge(
            "mtls",
            &[
                ("mtls/expect.json", expect),
                ("mtls/ztunnel/n1/config_dump.json", dump),
                ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
                ("mtls/ztunnel/n1/access.log", log.as_bytes()),
                ("mtls/strict.json", strict),
            ],
        )
    };
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &strict("000", "200"));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = case(&config_dump("TCP"), ZT_METRICS_OK, &strict("000", "200"));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("protocol TCP"), "{}", v.explanation());
    let plaintext = ZT_METRICS_OK.replace("mutual_tls", "unknown");
    let v = case(&config_dump("HBONE"), &plaintext, &strict("000", "200"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("connection_security_policy=\"unknown\""),
        "{}",
        v.explanation()
    );
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &strict("200", "200"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("outside the mesh still reached"),
        "{}",
        v.explanation()
    );
    // STRICT that also locks out the meshed client is a broken mesh, not a pass.
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &strict("000", "000"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("client inside the mesh got HTTP 000"),
        "{}",
        v.explanation()
    );
    // HTTP 000 is not a refusal by itself: DNS failure (6), a dead pod (7) or a timeout (28) say
    // nothing about mTLS, so nothing is judged (curl/curl@curl-8_17_0 docs/cmdline-opts/_EXITCODES.md).
    for (exit, meaning) in [(6, "could not resolve host"), (7, "failed to connect"), (28, "timed out")] {
        let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &strict_exit("000", exit, "200"));
        assert!(
            v.outcome == Outcome::Error
                && v.reason.contains(&format!("curl exit {exit}: {meaning}"))
                && v.reason.contains("proves nothing about mTLS"),
            "{}",
            v.explanation()
        );
    }
    // Another exit without an answer is no refusal by ztunnel: a failure.
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &strict_exit("000", 35, "200"));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("not a connection reset"), "{}", v.explanation());
    assert_eq!(case(&config_dump("HBONE"), ZT_METRICS_OK, &strict_exit("000", 52, "200")).outcome, Outcome::Pass);
    // Without a baseline (the outside client never got through before STRICT) a refusal proves nothing.
    let no_baseline = serde_json::to_vec(&json!({"results": [
        {"phase": "before", "client": "outside", "http_code": "000", "exit_code": 6, "target": "t"},
        {"phase": "strict", "client": "outside", "http_code": "000", "exit_code": 56, "target": "t"},
        {"phase": "strict", "client": "inside", "http_code": "200", "exit_code": 0, "target": "t"}]}))
    .unwrap();
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &no_baseline);
    assert!(v.outcome == Outcome::Error && v.reason.contains("the baseline failed"), "{}", v.explanation());
    // A waypoint in book-info speaks TCP by design: noted, not failed.
    let with_waypoint: serde_json::Value = {
        let mut d: serde_json::Value = serde_json::from_slice(&config_dump("HBONE")).unwrap();
        d["workloads"].as_array_mut().unwrap().push(
            json!({"name": "waypoint-abc", "namespace": "book-info", "canonicalName": "waypoint", "protocol": "TCP"}),
        );
        d
    };
    let v = case(&serde_json::to_vec(&with_waypoint).unwrap(), ZT_METRICS_OK, &strict("000", "200"));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.explanation().contains("waypoint") && v.explanation().contains("not one of the expected apps"),
        "{}",
        v.explanation()
    );
    let only_outside = serde_json::to_vec(&json!({"results": [
        {"phase": "before", "client": "outside", "http_code": "200", "exit_code": 0},
        {"phase": "strict", "client": "outside", "http_code": "000", "exit_code": 56}]}))
    .unwrap();
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &only_outside);
    assert!(v.outcome == Outcome::Error && v.reason.contains("no result for the inside client"), "{}", v.explanation());
    let exec_failed = serde_json::to_vec(&json!({"results": [
        {"phase": "before", "client": "outside", "http_code": "200", "exit_code": 0},
        {"phase": "strict", "client": "outside", "error": "pod curl-outside not found"},
        {"phase": "strict", "client": "inside", "http_code": "200", "exit_code": 0}]}))
    .unwrap();
    let v = case(&config_dump("HBONE"), ZT_METRICS_OK, &exec_failed);
    assert!(
        v.outcome == Outcome::Error && v.reason.contains("could not run: pod curl-outside not found"),
        "{}",
        v.explanation()
    );
    // No connection between book-info workloads at all: nothing proves mTLS.
    let v = case(&config_dump("HBONE"), "# EOF\n", &strict("000", "200"));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("no ztunnel metric shows a connection"));
    // A principal outside book-info (or no SPIFFE id) is not the bookinfo identity.
    let foreign = ZT_METRICS_OK.replace("spiffe://cluster.local/ns/book-info/sa/bookinfo-productpage", "");
    let v = case(&config_dump("HBONE"), &foreign, &strict("000", "200"));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("source_principal=\"\""), "{}", v.explanation());
}

#[test]
fn mtls_with_a_malformed_expect_is_an_error() {
    let (dump, strict, log) = (config_dump("HBONE"), strict("000", "200"), access_log_ok());
    assert_malformed_expect_is_an_error(
        "mtls",
        &[
            ("mtls/expect.json", br#"{"namespace":"book-info","apps":["productpage","details","ratings","reviews"]}"#),
            ("mtls/ztunnel/n1/config_dump.json", &dump),
            ("mtls/ztunnel/n1/metrics.prom", ZT_METRICS_OK.as_bytes()),
            ("mtls/ztunnel/n1/access.log", log.as_bytes()),
            ("mtls/strict.json", &strict),
        ],
        &[
            // Before expect.json was typed, these fell back to book-info and no apps: a pass.
            br#"{"apps":["productpage","details","ratings","reviews"]}"#,
            br#"{"namespace":"book-info","apps":[]}"#,
            br#"{"namespace":"book-info","apps":"productpage"}"#,
            br#"{"namespace":"book-info"}"#,
        ],
    );
}

#[test]
fn mtls_reads_real_ztunnel_config_dumps() {
    let Some(dump) = upstream_file("observed/ztunnel-config-dump.istioctl-testdata.json") else { return };
    let expect = br#"{"namespace":"bookinfo","apps":["productpage","details","ratings","reviews"]}"#;
    let metrics = ZT_METRICS_OK.replace("book-info", "bookinfo");
    // The access log names the dump's own pods, whose service accounts the dump gives.
    let log = access_log_ok()
        .replace("book-info", "bookinfo")
        .replace("productpage-v1-abc", "productpage-v1-675fc69cf-jscn2")
        .replace("details-v1-abc", "details-v1-698d88b-dqrbr")
        .replace("reviews-v1-abc", "reviews-v3-5b9bd44f4-7fff4")
        .replace("ratings-v1-abc", "ratings-v1-6484c4d9bb-mdxm5");
    // The real dump has every bookinfo app on HBONE and two waypoints in the namespace on TCP, as
    // waypoints are by design: they are listed, not failed (they made every such cluster fail before).
    let v = judge(
        "mtls",
        &[
            ("mtls/expect.json", expect),
            ("mtls/ztunnel/n1/config_dump.json", &dump),
            ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
            ("mtls/ztunnel/n1/access.log", log.as_bytes()),
            ("mtls/strict.json", &strict("000", "200")),
        ],
    );
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.explanation().contains("bookinfo-productpage-istio-waypoint") && v.explanation().contains("protocol TCP"),
        "{}",
        v.explanation()
    );
    // A logged identity that is not the pod's service account (as the dump gives it) proves nothing.
    let impostor = log.replace("sa/bookinfo-details", "sa/bookinfo-productpage");
    let v = judge(
        "mtls",
        &[
            ("mtls/expect.json", expect),
            ("mtls/ztunnel/n1/config_dump.json", &dump),
            ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
            ("mtls/ztunnel/n1/access.log", impostor.as_bytes()),
            ("mtls/strict.json", &strict("000", "200")),
        ],
    );
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("productpage -> details: 1 access-log line(s), none with both"),
        "{}",
        v.explanation()
    );
    // The same dump with an app's workload on TCP fails, naming it.
    let mut parsed: serde_json::Value = serde_json::from_slice(&dump).unwrap();
    // istioctl's test data keys workloads by address (ztunnel 1.30 itself writes a list).
    let workloads = parsed["workloads"].as_object_mut().unwrap();
    let details =
        workloads.values_mut().find(|w| w["namespace"] == "bookinfo" && w["canonicalName"] == "details").unwrap();
    details["protocol"] = json!("TCP");
    let v = judge(
        "mtls",
        &[
            ("mtls/expect.json", expect),
            ("mtls/ztunnel/n1/config_dump.json", &serde_json::to_vec(&parsed).unwrap()),
            ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
            ("mtls/ztunnel/n1/access.log", log.as_bytes()),
            ("mtls/strict.json", &strict("000", "200")),
        ],
    );
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("workload bookinfo/details-v1")
            && v.explanation().contains("protocol TCP"),
        "{}",
        v.explanation()
    );
}

/// The access-log signal on ztunnel's real lines (istio.io docs and ztunnel's README, in the three
/// shapes upstream prints: 1.30's tab-separated plain format, the same wrapped by the docs, and the
/// older tracing format with the fields on the next lines).
#[test]
fn mtls_reads_real_ztunnel_access_logs() {
    use meshcheck::formats::ztunnel_log;
    let files = [
        "observed/ztunnel-access-log.istio-docs-troubleshoot-ztunnel.txt",
        "observed/ztunnel-access-log.istio-docs-verify-mtls.wrapped.txt",
        "observed/ztunnel-access-log.readme-example.txt",
    ];
    let Some(logs) = files.iter().map(|f| upstream_file(f)).collect::<Option<Vec<_>>>() else { return };
    let logs: Vec<String> = logs.into_iter().map(|b| String::from_utf8(b).unwrap()).collect();
    let parsed: Vec<Vec<ztunnel_log::AccessEvent>> = logs.iter().map(|l| ztunnel_log::parse(l)).collect();
    assert_eq!(parsed.iter().map(Vec::len).collect::<Vec<_>>(), [6, 1, 1]);
    let troubleshoot = &parsed[0][0];
    assert_eq!(troubleshoot.level, "info");
    assert_eq!(troubleshoot.message, "connection complete");
    assert_eq!(troubleshoot.field("src.identity"), Some("spiffe://cluster.local/ns/default/sa/curl"));
    assert_eq!(troubleshoot.field("dst.addr"), Some("10.244.1.10:9080"));
    assert_eq!(troubleshoot.field("duration"), Some("1ms"));
    let wrapped = &parsed[1][0];
    assert_eq!(wrapped.field("src.identity"), Some("spiffe://cluster.local/ns/default/sa/sleep"));
    assert_eq!(wrapped.field("dst.identity"), Some("spiffe://cluster.local/ns/default/sa/bookinfo-details"));
    assert_eq!(wrapped.field("direction"), Some("outbound"));
    // The README's line has the source identity but no destination one.
    let readme = &parsed[2][0];
    assert_eq!((readme.level.as_str(), readme.field("dst.identity")), ("info", None));
    assert_eq!(readme.field("dst.service"), Some("echo.default.svc.cluster.local"));

    // Judged: the docs' sleep -> details hop carries both identities, each its pod's account.
    let dump = |app: &str, pod: &str, sa: &str| {
        serde_json::to_vec(&json!({"workloads": [
            {"name": pod, "namespace": "default", "canonicalName": app, "serviceAccount": sa, "protocol": "HBONE"}]}))
        .unwrap()
    };
    let metrics = ZT_METRICS_OK.replace("book-info", "default");
    let case = |expect: &str, dump: &[u8], log: &str| {
        judge(
            "mtls",
            &[
                ("mtls/expect.json", expect.as_bytes()),
                ("mtls/ztunnel/n1/config_dump.json", dump),
                ("mtls/ztunnel/n1/metrics.prom", metrics.as_bytes()),
                ("mtls/ztunnel/n1/access.log", log.as_bytes()),
                ("mtls/strict.json", &strict("000", "200")),
            ],
        )
    };
    let details = r#"{"namespace":"default","apps":["details"],"hops":[{"from":"sleep","to":"details"}]}"#;
    let v = case(details, &dump("details", "details-v1-857849f66-ft8wx", "bookinfo-details"), &logs[1]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(v.explanation().contains("sleep -> details (1)"), "{}", v.explanation());
    // The identity must be the pod's own service account, as the config dump gives it.
    let v = case(details, &dump("details", "details-v1-857849f66-ft8wx", "details-other"), &logs[1]);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("sleep -> details: 1 access-log line(s), none with both"),
        "{}",
        v.explanation()
    );
    // The README's shell -> echo line lacks dst.identity: not proven mutual TLS, and said so.
    let echo = r#"{"namespace":"default","apps":["echo"],"hops":[{"from":"shell","to":"echo"}]}"#;
    let v = case(echo, &dump("echo", "echo-v1-abc", "default"), &logs[2]);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("dst.identity=(absent)"), "{}", v.explanation());
    // A hop nobody logged is unproven: named.
    let v = case(details, &dump("details", "details-v1-857849f66-ft8wx", "bookinfo-details"), "");
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("no ztunnel access-log line shows a connection sleep -> details in default"),
        "{}",
        v.explanation()
    );
}

#[test]
fn mtls_names_the_hop_the_access_log_lacks() {
    let expect = br#"{"namespace":"book-info","apps":["productpage","details","ratings","reviews"]}"#;
    let case = |log: &str| {
        judge(
            "mtls",
            &[
                ("mtls/expect.json", expect),
                ("mtls/ztunnel/n1/config_dump.json", &config_dump("HBONE")),
                ("mtls/ztunnel/n1/metrics.prom", ZT_METRICS_OK.as_bytes()),
                ("mtls/ztunnel/n1/access.log", log.as_bytes()),
                ("mtls/strict.json", &strict("000", "200")),
            ],
        )
    };
    let ok = access_log_ok();
    let v = case(&ok);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    // The ratings hop logged as plaintext (ztunnel leaves both identities out): that hop is named.
    let plaintext: String = ok
        .lines()
        .map(|l| {
            if !l.contains("dst.workload=\"ratings") {
                return format!("{l}\n");
            }
            let drop = |l: &str, key: &str| {
                let start = l.find(key).unwrap();
                let end = start + l[start..].find("\" ").unwrap() + 2;
                format!("{}{}", &l[..start], &l[end..])
            };
            format!("{}\n", drop(&drop(l, "src.identity="), "dst.identity="))
        })
        .collect();
    let v = case(&plaintext);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("reviews -> ratings: 1 access-log line(s), none with both SPIFFE identities")
            && !v.explanation().contains("productpage -> details:"),
        "{}",
        v.explanation()
    );
    // A failed connection (level error) proves nothing, and a hop with only failures is not proven.
    let failed = ok.replace("\tinfo\taccess", "\terror\taccess").replace("\n", " error=\"connection refused\"\n");
    let v = case(&failed);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains(
                "reviews -> ratings: all 1 logged connection(s) failed (level error), e.g. error=connection refused"
            ),
        "{}",
        v.explanation()
    );
    // The log of another target (ztunnel's xds client) is not an access event.
    let v = case(&ok.replace("\taccess\t", "\txds::client\t"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("no ztunnel access-log line"),
        "{}",
        v.explanation()
    );
    // LOG_FORMAT=json lines read the same (istio/ztunnel@1.30.3 src/telemetry.rs IstioJsonFormat).
    let json_log: String = meshcheck::formats::ztunnel_log::parse(&ok)
        .iter()
        .map(|e| {
            let mut o = serde_json::Map::new();
            o.insert("level".into(), json!("info"));
            o.insert("time".into(), json!("2026-12-04T01:00:00.000000Z"));
            o.insert("scope".into(), json!("access"));
            o.insert("message".into(), json!("connection complete"));
            e.fields.iter().for_each(|(k, v)| {
                o.insert(k.clone(), json!(v));
            });
            format!("{}\n", serde_json::Value::Object(o))
        })
        .collect();
    assert_eq!(case(&json_log).outcome, Outcome::Pass);
}

#[test]
fn traces_on_real_tempo_shapes() {
    let Some(v1) = upstream_file("observed/tempo-trace-v1-batches.tempopb.json") else { return };
    let Some(v2) = upstream_file("observed/tempo-api-v2-traces-by-id.docs-example.json") else { return };
    assert!(!meshcheck::formats::tempo::decode_json(&v1).unwrap().is_empty());
    let spans = meshcheck::formats::tempo::decode_json(&v2).unwrap();
    assert_eq!(spans[0].trace_id.len(), 32);
    // A real trace without gateway spans fails, naming the services it has.
    let id = meshcheck::formats::tempo::normalize_id("5B8EFFF798038103D269B633813FC60C");
    let sent = serde_json::to_vec(&json!([{"trace_id": id, "status": "200"}])).unwrap();
    let expect = br#"{"tag_key":"meshcheck.run","tag_value":"conformance","gateway_service":"istio-ingress"}"#;
    let file = format!("traces/tempo/{id}.json");
    let v = judge("traces", &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&file, &v1)]);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(
        v.explanation().contains("no span from the gateway") && v.explanation().contains("my.service"),
        "{}",
        v.explanation()
    );
}

#[test]
fn traces_pass_on_tagged_gateway_protobuf_and_fail_when_missing() {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value::Value as V},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData},
    };
    use prost::Message;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(V::StringValue(v.into())) }),
        ..Default::default()
    };
    let id = [0xabu8; 16];
    let data = TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "istio-ingress.istio-ingress")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: id.to_vec(),
                    name: "productpage".into(),
                    attributes: vec![kv("meshcheck.run", "conformance")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let hex = meshcheck::formats::tempo::hex(&id);
    let other = "cd".repeat(16);
    let mut untagged = data.clone();
    untagged.resource_spans[0].scope_spans[0].spans[0].attributes = vec![kv("meshcheck.run", "something-else")];
    let mut foreign = data.clone();
    foreign.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![0xcd; 16];
    let sent = serde_json::to_vec(&json!([{"trace_id": hex, "status": "200"}])).unwrap();
    let expect = br#"{"tag_key":"meshcheck.run","tag_value":"conformance","gateway_service":"istio-ingress"}"#;
    let pb = data.encode_to_vec();
    let file = format!("traces/tempo/{hex}.pb");
    let v = judge("traces", &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&file, &pb)]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(v.reason.starts_with("1 of 1 traces arrived with tagged gateway spans"), "{}", v.reason);
    let sent2 =
        serde_json::to_vec(&json!([{"trace_id": hex, "status": "200"}, {"trace_id": other, "status": "503"}])).unwrap();
    let v = judge("traces", &[("traces/expect.json", expect), ("traces/sent.json", &sent2), (&file, &pb)]);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("never arrived"), "{}", v.explanation());
    let v = judge(
        "traces",
        &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&file, &untagged.encode_to_vec())],
    );
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("lack the Telemetry custom tag meshcheck.run=conformance"),
        "{}",
        v.explanation()
    );
    let v = judge(
        "traces",
        &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&file, &foreign.encode_to_vec())],
    );
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("none with trace id"), "{}", v.explanation());
    let v =
        judge("traces", &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&file, b"\xff\xff garbage")]);
    assert_eq!(v.outcome, Outcome::Error, "an undecodable Tempo body cannot be judged: {}", v.explanation());
    assert!(v.reason.contains("cannot be decoded"), "{}", v.reason);
    assert_eq!(
        judge("traces", &[("traces/expect.json", expect), ("traces/sent.json", b"[]")]).outcome,
        Outcome::Error,
        "sending nothing proves nothing"
    );
}

#[test]
fn traces_with_a_malformed_expect_is_an_error() {
    let id = "ab".repeat(16);
    let kv = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    // Tempo's v1 JSON, as run folders from before the collector asked for protobuf hold it.
    let trace = serde_json::to_vec(&json!({"batches": [{
        "resource": {"attributes": [kv("service.name", "istio-ingress.istio-ingress")]},
        "scopeSpans": [{"spans": [{"traceId": id, "name": "productpage", "attributes": [kv("meshcheck.run", "conformance")]}]}]}]}))
    .unwrap();
    let sent = serde_json::to_vec(&json!([{"trace_id": id, "status": "200"}])).unwrap();
    let file = format!("traces/tempo/{id}.json");
    assert_malformed_expect_is_an_error(
        "traces",
        &[
            (
                "traces/expect.json",
                br#"{"tag_key":"meshcheck.run","tag_value":"conformance","gateway_service":"istio-ingress"}"#,
            ),
            ("traces/sent.json", &sent),
            (&file, &trace),
        ],
        &[
            br#"{"tag_key":"meshcheck.run","tag_value":"conformance"}"#,
            br#"{"tag_key":"meshcheck.run","tag_value":true,"gateway_service":"istio-ingress"}"#,
        ],
    );
}

#[test]
fn traces_judge_the_protobuf_the_collector_stores_before_json() {
    let id = "ab".repeat(16);
    let sent = serde_json::to_vec(&json!([{"trace_id": id, "status": "200"}])).unwrap();
    let expect = br#"{"tag_key":"meshcheck.run","tag_value":"conformance","gateway_service":"istio-ingress"}"#;
    let pb = format!("traces/tempo/{id}.pb");
    let json_file = format!("traces/tempo/{id}.json");
    // With both present the judge reads the protobuf: here it is garbage, so the verdict is an error.
    let v = judge(
        "traces",
        &[("traces/expect.json", expect), ("traces/sent.json", &sent), (&pb, b"\xff\xff"), (&json_file, b"{}")],
    );
    assert!(v.outcome == Outcome::Error && v.reason.contains(&pb), "{}", v.explanation());
}

pub(crate) fn targets(ztunnel_health: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"status": "success", "data": {"activeTargets": [
        {"scrapePool": "serviceMonitor/monitoring/istiod/0", "scrapeUrl": "http://10.0.0.1:15014/metrics", "health": "up", "lastError": ""},
        {"scrapePool": "podMonitor/monitoring/ztunnel/0", "scrapeUrl": "http://10.0.0.2:15020/stats/prometheus", "health": ztunnel_health, "lastError": "connection refused"}]}})).unwrap()
}

/// A PodList of Running ztunnel pods: (name, node, IP).
pub(crate) fn ztunnel_pods(pods: &[(&str, &str, &str)]) -> Vec<u8> {
    serde_json::to_vec(&json!({"kind": "PodList", "items": pods.iter().map(|(name, node, ip)| json!({
        "metadata": {"name": name, "namespace": "istio-system", "labels": {"app": "ztunnel"}},
        "spec": {"nodeName": node}, "status": {"phase": "Running", "podIP": ip}})).collect::<Vec<_>>()}))
    .unwrap()
}

#[test]
fn metrics_judge() {
    let query_ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]}}"#;
    let query_empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let istiod = b"# TYPE pilot_xds_pushes counter\npilot_xds_pushes{type=\"cds\"} 3\n";
    let one_ztunnel = ztunnel_pods(&[("ztunnel-a", "n1", "10.0.0.2")]);
    let scrape_case = |t: &[u8], q: &[u8], ztunnel: &str, istiod: &[u8]| {
        judge(
            "metrics",
            &[
                ("metrics/targets.json", t),
                ("metrics/query-ztunnel-tcp.json", q),
                ("metrics/query-ztunnel-tcp.promql", b"q"),
                ("metrics/ztunnel-pods.json", &one_ztunnel),
                ("metrics/ztunnel/n1/metrics.prom", ztunnel.as_bytes()),
                ("metrics/istiod/istiod-1.prom", istiod),
            ],
        )
    };
    let case = |t: &[u8], q: &[u8]| scrape_case(t, q, ZT_METRICS_OK, istiod);
    let garbled = format!("{ZT_METRICS_OK}istio_tcp_sent_bytes_total{{reporter=\"source\" 12\n");
    let v = scrape_case(&targets("up"), query_ok, &garbled, istiod);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("1 unparsable line(s)"), "{}", v.explanation());
    let no_closed: String = ZT_METRICS_OK.lines().filter(|l| !l.contains("closed")).map(|l| format!("{l}\n")).collect();
    let v = scrape_case(&targets("up"), query_ok, &no_closed, istiod);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("missing families istio_tcp_connections_closed"),
        "{}",
        v.explanation()
    );
    let v = scrape_case(&targets("up"), query_ok, ZT_METRICS_OK, b"# TYPE go_goroutines gauge\ngo_goroutines 8\n");
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("no pilot_* metrics"), "{}", v.explanation());
    let failed = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
    assert_eq!(case(failed, query_ok).outcome, Outcome::Error, "a failed targets call is an error, not a verdict");
    let v = case(&targets("up"), query_ok);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = case(&targets("down"), query_ok);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("connection refused"), "{}", v.explanation());
    let v = case(&targets("up"), query_empty);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("returned no series"), "{}", v.explanation());
    // One up target is not "every ztunnel": three ztunnels, one scraped, names the other two nodes.
    let three = ztunnel_pods(&[
        ("ztunnel-a", "n1", "10.0.0.2"),
        ("ztunnel-b", "n2", "10.0.1.2"),
        ("ztunnel-c", "n3", "10.0.2.2"),
    ]);
    let v = judge(
        "metrics",
        &[
            ("metrics/targets.json", &targets("up")),
            ("metrics/query-ztunnel-tcp.json", query_ok),
            ("metrics/query-ztunnel-tcp.promql", b"q"),
            ("metrics/ztunnel-pods.json", &three),
            ("metrics/ztunnel/n1/metrics.prom", ZT_METRICS_OK.as_bytes()),
            ("metrics/istiod/istiod-1.prom", istiod),
        ],
    );
    let e = v.explanation();
    assert!(
        v.outcome == Outcome::Fail
            && e.contains("ztunnel on node n2 (pod ztunnel-b, IP 10.0.1.2) is not scraped")
            && e.contains("node n3"),
        "{e}"
    );
    assert!(!e.contains("node n1"), "{e}");
    // An unreadable istiod scrape cannot be judged.
    let v = scrape_case(&targets("up"), query_ok, ZT_METRICS_OK, b"\xff\xfe not utf-8");
    assert_eq!(v.outcome, Outcome::Error, "{}", v.explanation());
    let Some(real) = upstream_file("observed/prometheus-api-v1-targets-state-active.docs-example.json") else { return };
    let v = case(&real, query_ok);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("does not select it"), "{}", v.explanation());
}

/// A Prometheus no operator runs (Istio's addon) holds istiod and ztunnel in its `kubernetes-pods`
/// job, each target labelled with its pod: the judge tells them by that label in any pool. An
/// unlabelled target at a ztunnel's IP outside the PodMonitor's pool is nobody's (the negative
/// control), and istiod with no labelled target anywhere is not scraped.
#[test]
fn metrics_judge_tells_targets_by_their_pod_in_any_pool() {
    let query_ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]}}"#;
    let istiod = b"# TYPE pilot_xds_pushes counter\npilot_xds_pushes{type=\"cds\"} 3\n";
    let target = |pod: Option<&str>, url: &str, health: &str| {
        let mut t = json!({"scrapePool": "kubernetes-pods", "scrapeUrl": url, "health": health, "lastError": "refused",
                           "labels": {"job": "kubernetes-pods"}});
        if let Some(pod) = pod {
            t["labels"]["pod"] = json!(pod);
        }
        t
    };
    let case = |targets: Vec<serde_json::Value>| {
        let targets = serde_json::to_vec(&json!({"status": "success", "data": {"activeTargets": targets}})).unwrap();
        judge(
            "metrics",
            &[
                ("metrics/targets.json", &targets),
                ("metrics/query-ztunnel-tcp.json", query_ok),
                ("metrics/query-ztunnel-tcp.promql", b"q"),
                ("metrics/ztunnel-pods.json", &ztunnel_pods(&[("ztunnel-a", "n1", "10.0.0.2")])),
                ("metrics/ztunnel/n1/metrics.prom", ZT_METRICS_OK.as_bytes()),
                ("metrics/istiod/istiod-1.prom", istiod),
            ],
        )
    };
    let istiod_up = target(Some("istiod-1"), "http://10.0.0.1:15014/metrics", "up");
    let v = case(vec![istiod_up.clone(), target(Some("ztunnel-a"), "http://10.0.0.2:15020/metrics", "up")]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.explanation().contains(r#"istiod: 1 target(s) up (scrape pools {"kubernetes-pods"})"#),
        "{}",
        v.explanation()
    );
    let v = case(vec![istiod_up.clone(), target(Some("ztunnel-a"), "http://10.0.0.2:15020/metrics", "down")]);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("(pod ztunnel-a): target http://10.0.0.2:15020/metrics is down"),
        "{}",
        v.explanation()
    );
    let v = case(vec![istiod_up, target(None, "http://10.0.0.2:15020/metrics", "up")]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("(pod ztunnel-a, IP 10.0.0.2) is not scraped"),
        "{}",
        v.explanation()
    );
    let v = case(vec![
        target(Some("istiod-2"), "http://10.0.0.9:15014/metrics", "up"),
        target(Some("ztunnel-a"), "http://10.0.0.2:15020/metrics", "up"),
    ]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("no active target scrapes istiod"),
        "{}",
        v.explanation()
    );
}

#[test]
fn kiali_judge_on_real_graphs() {
    let status = br#"{"status":{"Kiali state":"running","Kiali version":"v2.29.0"},"externalServices":[]}"#;
    let Some(real) = upstream_file("observed/kiali-api-graph-ambient-workload.expected.json") else { return };
    let v = judge("kiali", &[("kiali/status.json", status), ("kiali/graph-book-info.json", &real)]);
    assert_eq!(v.outcome, Outcome::Fail, "the real sample lacks reviews→ratings: {}", v.explanation());
    assert!(v.explanation().contains("edges seen"));
    let node = |id: &str, w: &str| json!({"data": {"id": id, "workload": w}});
    let edge = |s: &str, t: &str| json!({"data": {"source": s, "target": t, "isMTLS": "100"}});
    let graph = serde_json::to_vec(&json!({"elements": {"nodes": [node("a", "productpage-v1"), node("b", "details-v1"), node("c", "reviews-v2"), node("d", "ratings-v1")],
        "edges": [edge("a", "b"), edge("a", "c"), edge("c", "d")]}})).unwrap();
    assert_eq!(
        judge("kiali", &[("kiali/status.json", status), ("kiali/graph-book-info.json", &graph)]).outcome,
        Outcome::Pass
    );
    // An edge needs both ends: reviews → details is neither reviews → ratings nor its stand-in.
    let astray = serde_json::to_vec(&json!({"elements": {"nodes": [node("a", "productpage-v1"), node("b", "details-v1"), node("c", "reviews-v2"), node("d", "ratings-v1")],
        "edges": [edge("a", "b"), edge("a", "c"), edge("c", "b")]}})).unwrap();
    let v = judge("kiali", &[("kiali/status.json", status), ("kiali/graph-book-info.json", &astray)]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("lacks the edge reviews → ratings"),
        "{}",
        v.explanation()
    );
    let down = br#"{"status":{"Kiali state":"starting"}}"#;
    assert_eq!(
        judge("kiali", &[("kiali/status.json", down), ("kiali/graph-book-info.json", &graph)]).outcome,
        Outcome::Fail
    );
    assert!(
        meshcheck::report::mermaid_graph(&meshcheck::checks::kiali::graph_edges(&graph).unwrap())
            .unwrap()
            .contains("productpage-v1")
    );
}

/// A recorded Kiali login that went through: anonymous refused, Kiali → Keycloak's form → posted
/// → back to Kiali with a code → session cookie.
fn kiali_login_ok() -> serde_json::Value {
    let kiali = meshcheck::checks::kiali_login::KIALI_URL;
    let issuer = meshcheck::checks::kiali_login::ISSUER;
    let auth = format!("{issuer}/protocol/openid-connect/auth?client_id=kiali&redirect_uri={kiali}&state=…");
    json!({
        "kiali_url": kiali, "issuer": issuer,
        "anonymous": [{"method": "GET", "url": format!("{kiali}/api/namespaces/graph?namespaces=book-info"), "status": 401}],
        "hops": [
            {"method": "GET", "url": format!("{kiali}/api/auth/openid_redirect"), "status": 302, "location": auth,
             "set_cookies": ["kiali-token-nonce-Kubernetes"]},
            {"method": "GET", "url": auth, "status": 200, "title": "Sign in to meshcheck"},
            {"method": "POST", "url": format!("{issuer}/login-actions/authenticate?session_code=…"), "status": 302,
             "location": format!("{kiali}?state=…&code=…")},
            {"method": "GET", "url": format!("{kiali}?state=…&code=…"), "status": 302, "location": format!("{kiali}/"),
             "set_cookies": ["kiali-token-Kubernetes"]},
            {"method": "GET", "url": format!("{kiali}/"), "status": 200, "title": "Kiali"}
        ],
        "session": true
    })
}

/// The kiali judge under `kiali.auth: openid`: passes on a login that went through and a good
/// graph, and fails on each way a login goes wrong, naming the step and its likely cause.
#[test]
fn kiali_judge_reads_the_login_and_names_where_it_stopped() {
    let status = br#"{"status":{"Kiali state":"running","Kiali version":"v2.29.0"},"externalServices":[]}"#;
    let node = |id: &str, w: &str| json!({"data": {"id": id, "workload": w}});
    let edge = |s: &str, t: &str| json!({"data": {"source": s, "target": t, "isMTLS": "100"}});
    let graph = serde_json::to_vec(&json!({"elements": {"nodes": [node("a", "productpage-v1"), node("b", "details-v1"), node("c", "reviews-v2"), node("d", "ratings-v1")],
        "edges": [edge("a", "b"), edge("a", "c"), edge("c", "d")]}})).unwrap();
    let run = |login: &serde_json::Value| {
        let login = serde_json::to_vec(login).unwrap();
        judge(
            "kiali",
            &[("kiali/login.json", &login), ("kiali/status.json", status), ("kiali/graph-book-info.json", &graph)],
        )
    };
    let ok = run(&kiali_login_ok());
    assert_eq!(ok.outcome, Outcome::Pass, "{}", ok.explanation());
    assert!(ok.reason.contains("after an OpenID login"), "{}", ok.reason);
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("anonymous served", Box::new(|l| l["anonymous"][0]["status"] = json!(200)), "Kiali serves without a login"),
        (
            "no redirect to Keycloak",
            Box::new(|l| {
                l["hops"][0]["status"] = json!(500);
                l["hops"][0]["location"] = serde_json::Value::Null;
                l["hops"][0]["error"] =
                    json!("Error fetching OpenID metadata: mismatch between the configured issuer_uri");
            }),
            "mismatch between the configured issuer_uri",
        ),
        (
            "redirect URI refused",
            Box::new(|l| {
                l["hops"][1]["status"] = json!(400);
                l["hops"][1]["title"] = json!("We are sorry...");
                l["hops"].as_array_mut().unwrap().truncate(2);
            }),
            "is the redirect URI",
        ),
        (
            "login refused",
            Box::new(|l| {
                l["hops"][2]["status"] = json!(200);
                l["hops"][2]["location"] = serde_json::Value::Null;
                l["hops"][2]["title"] = json!("Sign in to meshcheck");
                l["hops"].as_array_mut().unwrap().truncate(3);
                l["session"] = json!(false);
            }),
            "Keycloak did not accept the login",
        ),
        (
            "client secret refused",
            Box::new(|l| {
                l["hops"][3]["location"] = json!(format!(
                    "{}/?openid_error=request failed (HTTP response status = 401 Unauthorized)",
                    meshcheck::checks::kiali_login::KIALI_URL
                ));
                l["session"] = json!(false);
            }),
            "must hold the realm's client secret",
        ),
        ("no session", Box::new(|l| l["session"] = json!(false)), "Kiali set no session cookie"),
        (
            "redirected elsewhere",
            Box::new(|l| {
                l["hops"][0]["location"] =
                    json!(format!("{}/?openid_error=authentication failed", meshcheck::checks::kiali_login::KIALI_URL));
                l["hops"].as_array_mut().unwrap().truncate(1);
            }),
            "instead of sending the browser to Keycloak's authorization endpoint",
        ),
        (
            "back to Kiali without a code",
            Box::new(|l| {
                l["hops"][2]["location"] =
                    json!(format!("{}?error=access_denied", meshcheck::checks::kiali_login::KIALI_URL));
                l["hops"].as_array_mut().unwrap().truncate(3);
                l["session"] = json!(false);
            }),
            "Keycloak did not accept the login",
        ),
    ];
    for (what, edit, words) in cases {
        let mut login = kiali_login_ok();
        edit(&mut login);
        let v = run(&login);
        assert_eq!(v.outcome, Outcome::Fail, "{what}: {}", v.explanation());
        assert!(v.explanation().contains(words), "{what}: `{words}` not in {}", v.explanation());
    }
    let broken = judge("kiali", &[("kiali/login.json", b"{not json"), ("kiali/status.json", status)]);
    assert_eq!(broken.outcome, Outcome::Error, "{}", broken.explanation());
}

/// A probed book-info pod, captured by ambient (istio-cni's annotation, as istio/istio@1.30.3
/// cni/pkg/util/podutil.go reads it).
pub(crate) fn pod(name: &str, ready: bool, restarts: u64) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": "book-info", "annotations": {"ambient.istio.io/redirection": "enabled"}},
           "spec": {"containers": [{"name": "c", "readinessProbe": {"periodSeconds": 5}}]},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}], "containerStatuses": [{"restartCount": restarts}]}})
}

/// The enforcement probe: plaintext from outside to a book-info pod before and under default-deny.
pub(crate) fn enforcement(before: &str, during: &str) -> Vec<u8> {
    let exit = |c: &str| if c == "000" { 28 } else { 0 };
    serde_json::to_vec(&json!({"client": "meshcheck-outside/curl-outside", "target": "http://10.244.1.7:9080/",
        "before": {"http_code": before, "exit_code": exit(before)}, "during": {"http_code": during, "exit_code": exit(during)}})).unwrap()
}

#[test]
fn probes_judge() {
    let list = |pods: Vec<serde_json::Value>| serde_json::to_vec(&json!({"items": pods})).unwrap();
    let before = list(vec![pod("probe-target-1", true, 0)]);
    let ok_ns = list(vec![pod("x", true, 0)]);
    let no_events = br#"{"items":[]}"#.to_vec();
    let unhealthy = br#"{"items":[{"reason":"Unhealthy","message":"Readiness probe failed: context deadline exceeded","involvedObject":{"name":"probe-target-1"}}]}"#.to_vec();
    // A healthy run's evidence; each case changes some files (None removes one).
    let healthy: Vec<(&str, Vec<u8>)> = vec![
        ("probes/policy.json", br#"{"applied_at":"2026-01-01T00:00:00Z"}"#.to_vec()),
        ("probes/pods-before.json", before.clone()),
        ("probes/pods-after.json", before.clone()),
        ("probes/events-after.json", no_events.clone()),
        ("probes/collateral-pods-kube-system.json", ok_ns.clone()),
        ("probes/collateral-pods-monitoring.json", ok_ns.clone()),
        ("probes/collateral-pods-tempo.json", ok_ns.clone()),
        ("probes/targets-before.json", targets("up")),
        ("probes/targets-after.json", targets("up")),
        ("probes/enforcement.json", enforcement("200", "000")),
    ];
    let case = |changes: &[(&str, Option<Vec<u8>>)]| {
        let mut files = healthy.clone();
        for (name, content) in changes {
            files.retain(|(n, _)| n != name);
            files.extend(content.clone().map(|c| (*name, c)));
        }
        judge("probes", &files.iter().map(|(n, c)| (*n, c.as_slice())).collect::<Vec<_>>())
    };
    let v = case(&[]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());

    let v = case(&[
        ("probes/pods-after.json", Some(list(vec![pod("probe-target-1", false, 1)]))),
        ("probes/events-after.json", Some(unhealthy.clone())),
    ]);
    assert_eq!(v.outcome, Outcome::Fail);
    let e = v.explanation();
    assert!(e.contains("not Ready") && e.contains("restarted 1") && e.contains("Readiness probe failed"), "{e}");

    // Collateral damage outside book-info and a scrape target lost under the policy.
    let damage: [(&str, Option<Vec<u8>>); 2] = [
        ("probes/collateral-pods-kube-system.json", Some(list(vec![pod("coredns-1", false, 0)]))),
        ("probes/targets-after.json", Some(targets("down"))),
    ];
    let v = case(&damage);
    assert_eq!(v.outcome, Outcome::Fail);
    let e = v.explanation();
    assert!(e.contains("collateral: pod kube-system/coredns-1 is not Ready"), "{e}");
    assert!(
        e.contains("collateral: Prometheus target http://10.0.0.2:15020/stats/prometheus went from up to down"),
        "{e}"
    );
    // With a namespace's pods missing, the collateral check is incomplete: an error naming the
    // file, which still lists what failed on the way.
    let mut incomplete = damage.to_vec();
    incomplete.push(("probes/collateral-pods-tempo.json", None));
    let v = case(&incomplete);
    assert!(v.outcome == Outcome::Error && v.reason.contains("probes/collateral-pods-tempo.json"), "{}", v.reason);
    assert!(v.explanation().contains("also failed: collateral: pod kube-system/coredns-1"), "{}", v.explanation());

    // A target already down before the policy (kind's controller manager on 127.0.0.1) is not collateral.
    let v = case(&[
        ("probes/targets-before.json", Some(targets("down"))),
        ("probes/targets-after.json", Some(targets("down"))),
    ]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = case(&[("probes/targets-before.json", None)]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("probes/targets-before.json"), "{}", v.explanation());

    // Default-deny never proven: a cluster that enforces no NetworkPolicy lets plaintext through.
    let v = case(&[("probes/enforcement.json", Some(enforcement("200", "200")))]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("default-deny is not enforced"),
        "{}",
        v.explanation()
    );
    let v = case(&[("probes/enforcement.json", Some(enforcement("000", "000")))]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("the baseline failed"), "{}", v.explanation());
    let v = case(&[("probes/enforcement.json", None)]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("probes/enforcement.json"), "{}", v.explanation());

    // A pod replaced under the policy counts, even if its successor is Ready.
    let v = case(&[("probes/pods-after.json", Some(list(vec![pod("probe-target-2", true, 0)])))]);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("probe-target-1 disappeared"));

    // Negative control: without the Cilium policy probes must fail; if they still pass the check is blind.
    let v = case(&[
        ("probes/negative/pods-after.json", Some(before.clone())),
        ("probes/negative/events-after.json", Some(no_events.clone())),
    ]);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("negative control"), "{}", v.explanation());
    let v = case(&[
        ("probes/negative/pods-after.json", Some(list(vec![pod("probe-target-1", false, 0)]))),
        ("probes/negative/events-after.json", Some(unhealthy.clone())),
    ]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    // Either signal alone shows the probes failing without the policy: a pod not Ready, or an
    // Unhealthy event (a probe that fails fewer times than failureThreshold leaves the pod Ready).
    for (pods, events) in
        [(list(vec![pod("probe-target-1", false, 0)]), no_events.clone()), (before.clone(), unhealthy)]
    {
        let v = case(&[
            ("probes/negative/pods-after.json", Some(pods)),
            ("probes/negative/events-after.json", Some(events)),
        ]);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    }
    // The probe before the policy could not even run: unjudged, saying which probe.
    let not_run =
        serde_json::to_vec(&json!({"client": "meshcheck-outside/curl-outside", "target": "http://10.244.1.7:9080/",
        "before": {"error": "pod curl-outside not found"}, "during": {"http_code": "000", "exit_code": 28}}))
        .unwrap();
    let v = case(&[("probes/enforcement.json", Some(not_run))]);
    assert!(
        v.outcome == Outcome::Error && v.reason.contains("the probe to http://10.244.1.7:9080/ before default-deny: "),
        "{}",
        v.explanation()
    );

    // Pods already broken before the policy cannot be blamed on it.
    let sick = list(vec![pod("probe-target-1", false, 0)]);
    let v = case(&[("probes/pods-before.json", Some(sick.clone())), ("probes/pods-after.json", Some(sick))]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("not Ready before"), "{}", v.reason);

    // Nothing probed in book-info: default-deny would prove nothing.
    let unprobed = list(vec![
        json!({"metadata": {"name": "p", "namespace": "book-info"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}),
    ]);
    let v = case(&[("probes/pods-before.json", Some(unprobed.clone())), ("probes/pods-after.json", Some(unprobed))]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("prove nothing"), "{}", v.reason);
}

#[test]
fn traffic_continuity_judge() {
    // Requests 100 ms apart (10 per second), each (phase, status).
    let rec = |statuses: &[(&str, u16)], budget: u64| {
        serde_json::to_vec(&json!({"url": "u", "rate_per_second": 10, "failure_budget": budget, "max_outage_secs": 1.0,
            "requests": statuses.iter().enumerate()
            .map(|(i, (p, s))| json!({"at_ms": i * 100, "phase": p, "status": s, "latency_ms": 10.0 + i as f64})).collect::<Vec<_>>()})).unwrap()
    };
    let ok = rec(&[("before", 200), ("during", 200), ("after", 200)], 0);
    assert_eq!(judge("traffic-continuity", &[("upgrade/traffic.json", &ok)]).outcome, Outcome::Pass);
    // A brief disruption during the upgrade is measured and held against the budget.
    let blip = rec(&[("before", 200), ("during", 503), ("during", 0), ("during", 200), ("after", 200)], 5);
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &blip)]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.reason.contains("2 of 3 requests failed (budget 5), longest outage 0.2 s (budget 1.0 s)"),
        "{}",
        v.reason
    );
    let v = judge(
        "traffic-continuity",
        &[(
            "upgrade/traffic.json",
            &rec(&[("before", 200), ("during", 503), ("during", 0), ("during", 200), ("after", 200)], 1),
        )],
    );
    assert!(
        v.outcome == Outcome::Fail && v.reason.contains("2 of 3 requests failed during the upgrade, budget 1"),
        "{}",
        v.reason
    );
    assert!(v.explanation().contains("p99"));
    // An outage longer than allowed fails even within the request budget.
    let long: Vec<(&str, u16)> = std::iter::once(("before", 200))
        .chain(std::iter::repeat_n(("during", 0), 15))
        .chain([("during", 200), ("after", 200)])
        .collect();
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &rec(&long, 100))]);
    assert!(
        v.outcome == Outcome::Fail && v.reason.contains("longest outage during the upgrade was 1.5 s, budget 1.0 s"),
        "{}",
        v.reason
    );
    // An outage exactly at its budget is within it: 10 requests 100 ms apart failed, 1.0 s.
    let at_budget: Vec<(&str, u16)> = std::iter::once(("before", 200))
        .chain(std::iter::repeat_n(("during", 0), 10))
        .chain([("during", 200), ("after", 200)])
        .collect();
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &rec(&at_budget, 100))]);
    assert!(v.outcome == Outcome::Pass && v.reason.contains("longest outage 1.0 s (budget 1.0 s)"), "{}", v.reason);
    // Before and after are strict, whatever the budget.
    let v = judge(
        "traffic-continuity",
        &[("upgrade/traffic.json", &rec(&[("before", 503), ("during", 200), ("after", 200)], 100))],
    );
    assert!(
        v.outcome == Outcome::Fail && v.reason.contains("1 of 1 requests failed before the upgrade"),
        "{}",
        v.reason
    );
    let v = judge(
        "traffic-continuity",
        &[("upgrade/traffic.json", &rec(&[("before", 200), ("during", 200), ("after", 0)], 100))],
    );
    assert!(v.outcome == Outcome::Fail && v.reason.contains("failed after the upgrade"), "{}", v.reason);
    let none = rec(&[("before", 200)], 0);
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &none)]);
    assert!(v.outcome == Outcome::Error && v.reason.contains("during the upgrade, after the upgrade"), "{}", v.reason);
}

/// Issue 25, item 4: the upgrade's requests attributed to each step of the chain, each held to its
/// rule: ztunnel at least 90 % answered (Istio's TestZtunnelRestart), istio-cni, istiod and
/// istio-base every request; the gateway only to the whole upgrade's budget.
#[test]
fn traffic_continuity_holds_each_upgrade_step_to_its_rule() {
    // Requests 100 ms apart: `n` of each (step, status) in order, between one before and one after.
    let rec = |steps: &[(&str, u16, usize)]| {
        let mut requests = vec![json!({"at_ms": 0, "phase": "before", "status": 200, "latency_ms": 5.0})];
        for (step, status, n) in steps {
            for _ in 0..*n {
                let at = requests.len() * 100;
                requests
                    .push(json!({"at_ms": at, "phase": "during", "status": status, "latency_ms": 5.0, "step": step}));
            }
        }
        let at = requests.len() * 100;
        requests.push(json!({"at_ms": at, "phase": "after", "status": 200, "latency_ms": 5.0}));
        serde_json::to_vec(&json!({"url": "u", "rate_per_second": 10, "failure_budget": 100, "max_outage_secs": 30.0, "requests": requests})).unwrap()
    };
    let chain = |ztunnel_failed: usize, cni_failed: usize, gateway_failed: usize| {
        rec(&[
            ("istio-base", 200, 10),
            ("istiod", 200, 10),
            ("istio-cni", 200, 10 - cni_failed),
            ("istio-cni", 0, cni_failed),
            ("ztunnel", 200, 20 - ztunnel_failed),
            ("ztunnel", 0, ztunnel_failed),
            ("istio-ingress", 0, gateway_failed),
            ("istio-ingress", 200, 10),
        ])
    };
    let ok = judge("traffic-continuity", &[("upgrade/traffic.json", &chain(2, 0, 5))]);
    assert_eq!(ok.outcome, Outcome::Pass, "{}", ok.explanation());
    for line in [
        "step ztunnel: 20 requests, 2 failed (90.0 % answered, rule >= 90 %), longest outage 0.2 s",
        "step istio-ingress: 15 requests, 5 failed (66.7 % answered), longest outage 0.5 s",
    ] {
        assert!(ok.explanation().contains(line), "`{line}` not in {}", ok.explanation());
    }
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &chain(3, 0, 0))]);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.explanation());
    assert!(
        v.reason.contains("the ztunnel step answered 85.0 % of its 20 requests (3 failed), its rule is at least 90 %"),
        "{}",
        v.reason
    );
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &chain(0, 1, 0))]);
    assert!(v.outcome == Outcome::Fail && v.reason.contains("the istio-cni step answered 90.0 %"), "{}", v.reason);
    assert!(v.explanation().contains("(during, step istio-cni): status 0"), "{}", v.explanation());
    // The scenario's rules, recorded with the traffic, replace the defaults step by step.
    let with_rules = |bytes: Vec<u8>, rules: serde_json::Value| {
        let mut record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        record["step_min_success"] = rules;
        serde_json::to_vec(&record).unwrap()
    };
    let stricter =
        with_rules(chain(2, 0, 0), json!({"istio-base": 1.0, "istiod": 1.0, "istio-cni": 1.0, "ztunnel": 0.95}));
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &stricter)]);
    assert!(
        v.outcome == Outcome::Fail
            && v.reason
                .contains("the ztunnel step answered 90.0 % of its 20 requests (2 failed), its rule is at least 95 %"),
        "{}",
        v.reason
    );
    let lenient =
        with_rules(chain(0, 1, 0), json!({"istio-base": 1.0, "istiod": 1.0, "istio-cni": 0.5, "ztunnel": 0.9}));
    let v = judge("traffic-continuity", &[("upgrade/traffic.json", &lenient)]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(
        v.explanation().contains("step istio-cni: 10 requests, 1 failed (90.0 % answered, rule >= 50 %)"),
        "{}",
        v.explanation()
    );
    let stats = meshcheck::cluster::traffic::step_stats(&serde_json::from_slice(&chain(2, 0, 5)).unwrap());
    let order: Vec<&str> = stats.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(order, ["istio-base", "istiod", "istio-cni", "ztunnel", "istio-ingress"]);
}

/// Issue 25, item 5: the health sentinels. Healthy pods pass and their restarts and error lines
/// are counted; an OOM-killed or crash-looping container fails naming it; no pod at all is an error.
#[test]
fn health_judge_fails_on_oom_kills_and_crash_loops_and_counts_the_rest() {
    let container = |name: &str, restarts: u64, extra: serde_json::Value| {
        let mut c = json!({"name": name, "restartCount": restarts, "state": {"running": {}}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let list = |pods: Vec<(&str, serde_json::Value)>| {
        serde_json::to_vec(&json!({"kind": "PodList", "items": pods.into_iter().map(|(n, c)| json!({"metadata": {"name": n}, "status": {"phase": "Running", "containerStatuses": [c]}})).collect::<Vec<_>>()})).unwrap()
    };
    let logs = serde_json::to_vec(&json!([
        {"pod": "istio-system/ztunnel-a", "errors": 2, "lines": 100, "first": ["2026-12-04T00:00:00Z\terror\taccess\tconnection failed"]},
        {"pod": "istio-system/istiod-x", "errors": 0, "lines": 50, "first": []}
    ])).unwrap();
    let run = |istio: Vec<u8>, cilium: Vec<u8>| {
        judge(
            "health",
            &[
                ("health/pods-istio-system.json", &istio),
                ("health/pods-istio-ingress.json", &list(vec![])),
                ("health/pods-kube-system.json", &cilium),
                ("health/log-errors.json", &logs),
            ],
        )
    };
    let cilium = list(vec![(
        "cilium-abc",
        container("cilium-agent", 1, json!({"lastState": {"terminated": {"reason": "Error"}}})),
    )]);
    let ok = run(list(vec![("ztunnel-a", container("istio-proxy", 0, json!({})))]), cilium.clone());
    assert_eq!(ok.outcome, Outcome::Pass, "{}", ok.explanation());
    assert!(ok.reason.contains("2 Istio and Cilium pods, 1 restart(s), 2 error-level log line(s)"), "{}", ok.reason);
    // The counts travel with the verdict, so a release gate's passes are set side by side.
    let counts: Vec<(&str, f64)> = ok.measurements.iter().map(|m| (m.metric.as_str(), m.value)).collect();
    assert_eq!(counts, [("health.restarts", 1.0), ("health.log_errors", 2.0)]);
    assert!(
        ok.explanation().contains("kube-system/cilium-abc container cilium-agent restarted 1 time(s) (last: Error)")
    );
    assert!(ok.explanation().contains("connection failed"));
    // A container that never restarted, and a pod without an error line, are not noted.
    assert!(!ok.explanation().contains("restarted 0 time(s)"), "{}", ok.explanation());
    assert!(!ok.explanation().contains("istiod-x: 0 error-level"), "{}", ok.explanation());
    let oom = run(
        list(vec![(
            "ztunnel-a",
            container("istio-proxy", 1, json!({"lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}})),
        )]),
        cilium.clone(),
    );
    assert_eq!(oom.outcome, Outcome::Fail, "{}", oom.explanation());
    assert!(
        oom.explanation().contains("istio-system/ztunnel-a container istio-proxy was OOM-killed (restarts 1)"),
        "{}",
        oom.explanation()
    );
    let looping = run(
        list(vec![(
            "istiod-x",
            container(
                "discovery",
                7,
                json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"reason": "Error"}}}),
            ),
        )]),
        cilium,
    );
    assert!(
        looping.outcome == Outcome::Fail
            && looping.explanation().contains("is crash-looping (restarts 7, last exit: Error)"),
        "{}",
        looping.explanation()
    );
    let nothing = run(list(vec![]), list(vec![]));
    assert_eq!(nothing.outcome, Outcome::Error, "{}", nothing.explanation());
    // Log levels in the formats Istio's programs write.
    let text = "2026-12-04T00:00:00.1Z\terror\tads\tpush failed\n2026-12-04T00:00:00.2Z  ERROR ztunnel::proxy: reset\n\
                {\"level\":\"error\",\"msg\":\"x\"}\n2026-12-04T00:00:00.3Z\tinfo\tok\nerror without a time\n";
    let counted = meshcheck::checks::health::errors_in("ns/p", text);
    assert_eq!((counted.errors, counted.lines, counted.first.len()), (3, 5, 3), "{counted:?}");
}

#[test]
fn prometheus_parser_reads_the_real_exposition_sample() {
    let Some(text) = upstream_file("observed/prometheus-exposition-text.alltypes-237mfs.prom.txt") else { return };
    let scrape = meshcheck::formats::promtext::parse(&String::from_utf8_lossy(&text));
    assert!(scrape.samples.len() > 200, "{}", scrape.samples.len());
    assert!(scrape.bad_lines.is_empty(), "{:?}", &scrape.bad_lines[..scrape.bad_lines.len().min(3)]);
}

/// One attempt of the l4-authorization collector: `code` 000 is a reset (curl exit 56).
fn l4_attempt(phase: &str, client: &str, started_ms: u64, code: &str) -> serde_json::Value {
    let exit = if code == "000" { 56 } else { 0 };
    json!({"phase": phase, "client": client, "url": "http://details.book-info.svc.cluster.local:9080/details/0",
           "started_ms": started_ms, "ended_ms": started_ms + 100, "curl": {"http_code": code, "exit_code": exit}})
}

fn l4_judge(attempts: Vec<serde_json::Value>) -> meshcheck::evidence::Verdict {
    let results =
        json!({"policy": "AuthorizationPolicy book-info/meshcheck-l4-allow", "budget_ms": 1000, "attempts": attempts});
    judge("l4-authorization", &[("l4-authorization/results.json", &serde_json::to_vec(&results).unwrap())])
}

/// The healthy sequence: both served before; the other client refused at 300 ms while the allowed
/// one is served; the other served again once the policy is gone.
fn l4_healthy() -> Vec<serde_json::Value> {
    vec![
        l4_attempt("before", "curl-inside", 0, "200"),
        l4_attempt("before", "curl-other", 100, "200"),
        l4_attempt("policy", "curl-other", 0, "200"),
        l4_attempt("policy", "curl-other", 300, "000"),
        l4_attempt("policy", "curl-inside", 450, "200"),
        l4_attempt("policy", "curl-other", 600, "000"),
        l4_attempt("after", "curl-other", 0, "000"),
        l4_attempt("after", "curl-other", 300, "200"),
    ]
}

#[test]
fn l4_authorization_needs_a_baseline_a_timely_refusal_the_allowed_client_and_the_undo() {
    let v = l4_judge(l4_healthy());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(v.explanation().contains("between 0 and 400 ms after the apply (budget 1000 ms)"), "{}", v.explanation());
    let with = |i: usize, a: serde_json::Value| {
        let mut all = l4_healthy();
        all[i] = a;
        l4_judge(all)
    };
    // No baseline: a refusal proves nothing.
    let v = with(1, l4_attempt("before", "curl-other", 100, "000"));
    assert!(v.outcome == Outcome::Error && v.reason.contains("the baseline failed"), "{}", v.explanation());
    // The collector stops at a failed baseline: its attempts alone say so, and nothing else.
    let mut stopped = l4_healthy();
    stopped[1] = l4_attempt("before", "curl-other", 100, "000");
    stopped.truncate(2);
    let v = l4_judge(stopped);
    assert!(v.outcome == Outcome::Error && v.reason.contains("the baseline failed"), "{}", v.explanation());
    assert!(!v.explanation().contains("no attempt"), "the baseline alone: {}", v.explanation());
    // Never refused: the policy is not enforced.
    let mut never = l4_healthy();
    never[3] = l4_attempt("policy", "curl-other", 300, "200");
    never[5] = l4_attempt("policy", "curl-other", 600, "200");
    let v = l4_judge(never);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("curl-other was never refused"),
        "{}",
        v.explanation()
    );
    // Refused only after the budget: certainly late, since it was still served at 1200 ms.
    let mut late = l4_healthy();
    late[2] = l4_attempt("policy", "curl-other", 1200, "200");
    late[3] = l4_attempt("policy", "curl-other", 1500, "000");
    let v = l4_judge(late);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("between 1200 and 1600 ms")
            && v.explanation().contains("over budget"),
        "{}",
        v.explanation()
    );
    // The allowed identity refused too: a policy that locks out everyone is no pass.
    let v = with(4, l4_attempt("policy", "curl-inside", 450, "000"));
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("under the policy curl-inside got HTTP 000")
            && v.explanation().contains("whose principal the policy allows"),
        "{}",
        v.explanation()
    );
    // Served again with the policy in place: enforcement flapped.
    let v = with(5, l4_attempt("policy", "curl-other", 600, "200"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("served again at 600 ms with the policy still in place"),
        "{}",
        v.explanation()
    );
    // Still refused after the policy was deleted.
    let v = with(7, l4_attempt("after", "curl-other", 300, "000"));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("the policy was not taken back"),
        "{}",
        v.explanation()
    );
    // A timeout is no refusal by ztunnel: polled until the end, never refused.
    let mut timeout = l4_healthy();
    timeout[3] = l4_attempt("policy", "curl-other", 300, "000");
    timeout[3]["ended_ms"] = json!(10300);
    timeout[3]["curl"]["exit_code"] = json!(28);
    timeout[5] = timeout[3].clone();
    let v = l4_judge(timeout);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("timed out"), "{}", v.explanation());
}

/// A waypoint Gateway with the status istiod gives it (istio/istio@1.30.3
/// pilot/pkg/config/kube/gateway/testdata/waypoint.status.yaml.golden): Programmed with the
/// Service's hostname, or not, with `AddressNotUsable`.
fn waypoint_gateway(class: &str, programmed: bool) -> serde_json::Value {
    let (status, reason) = if programmed { ("True", "Programmed") } else { ("False", "AddressNotUsable") };
    json!({"metadata": {"name": "waypoint", "namespace": "book-info"},
           "spec": {"gatewayClassName": class, "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
           "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"},
                                     {"type": "Programmed", "status": status, "reason": reason,
                                      "message": if programmed { "" } else { "Failed to assign to any requested addresses: hostname \"waypoint.book-info.svc.domain.suffix\" not found" }}],
                      "addresses": if programmed { json!([{"type": "Hostname", "value": "waypoint.book-info.svc.cluster.local"}]) } else { json!([]) }}})
}

/// ztunnel 1.30.3's Services in a config dump, each with `waypoint` (or none).
fn waypoint_dump(waypoint_of: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let services: Vec<serde_json::Value> = ["details", "productpage", "ratings", "reviews"]
        .iter()
        .map(|svc| {
            let mut s = json!({"name": svc, "namespace": "book-info", "hostname": format!("{svc}.book-info.svc.cluster.local"), "vips": []});
            if let Some(d) = waypoint_of(svc) {
                s["waypoint"] = json!({"destination": d, "hboneMtlsPort": 15008});
            }
            s
        })
        .collect();
    serde_json::to_vec(&json!({"workloads": [], "services": services})).unwrap()
}

#[test]
fn waypoint_needs_a_programmed_gateway_a_ready_pod_and_every_service_routed_through_it() {
    let expect =
        br#"{"namespace":"book-info","gateway":"waypoint","services":["details","productpage","ratings","reviews"]}"#;
    let ours = |_: &str| Some("book-info/waypoint.book-info.svc.cluster.local".to_string());
    let ready = serde_json::to_vec(&json!({"items": [pod("waypoint-abc", true, 0)]})).unwrap();
    let case = |gw: serde_json::Value, pods: &[u8], dump: &[u8]| {
        let gws = serde_json::to_vec(&json!({"items": [gw]})).unwrap();
        judge(
            "waypoint",
            &[
                ("waypoint/expect.json", expect),
                ("waypoint/gateways.json", &gws),
                ("waypoint/pods.json", pods),
                ("waypoint/ztunnel/n1/config_dump.json", dump),
            ],
        )
    };
    let v = case(waypoint_gateway("istio-waypoint", true), &ready, &waypoint_dump(ours));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = case(waypoint_gateway("istio-waypoint", false), &ready, &waypoint_dump(ours));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("is not Programmed: AddressNotUsable"),
        "{}",
        v.explanation()
    );
    let v = case(waypoint_gateway("istio", true), &ready, &waypoint_dump(ours));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("has class `istio`"), "{}", v.explanation());
    let not_ready = serde_json::to_vec(&json!({"items": [pod("waypoint-abc", false, 0)]})).unwrap();
    let v = case(waypoint_gateway("istio-waypoint", true), &not_ready, &waypoint_dump(ours));
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("no Ready pod of waypoint"), "{}", v.explanation());
    // One Service skipping the waypoint is named; one sent to another waypoint too.
    let v = case(
        waypoint_gateway("istio-waypoint", true),
        &ready,
        &waypoint_dump(|s| match s {
            "ratings" => None,
            "reviews" => Some("book-info/other.book-info.svc.cluster.local".into()),
            _ => ours(s),
        }),
    );
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("ratings.book-info.svc.cluster.local has no waypoint")
            && v.explanation().contains("reviews.book-info.svc.cluster.local goes through waypoint book-info/other")
            && !v.explanation().contains("details.book-info"),
        "{}",
        v.explanation()
    );
    // An IP address in the Gateway's status is matched in ztunnel's `<network>/<ip>` form.
    let mut by_ip = waypoint_gateway("istio-waypoint", true);
    by_ip["status"]["addresses"] = json!([{"type": "IPAddress", "value": "10.96.65.117"}]);
    let v = case(by_ip, &ready, &waypoint_dump(|_| Some("/10.96.65.117".into())));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let gws = serde_json::to_vec(&json!({"items": [waypoint_gateway("istio-waypoint", true)]})).unwrap();
    assert_malformed_expect_is_an_error(
        "waypoint",
        &[
            ("waypoint/expect.json", expect),
            ("waypoint/gateways.json", &gws),
            ("waypoint/pods.json", &ready),
            ("waypoint/ztunnel/n1/config_dump.json", &waypoint_dump(ours)),
        ],
        &[
            br#"{"namespace":"book-info","gateway":"waypoint","services":[]}"#,
            br#"{"namespace":"book-info","services":["details"]}"#,
        ],
    );
    // No Gateway at all.
    let none = judge(
        "waypoint",
        &[
            ("waypoint/expect.json", expect),
            ("waypoint/gateways.json", br#"{"items":[]}"#),
            ("waypoint/pods.json", br#"{"items":[]}"#),
            ("waypoint/ztunnel/n1/config_dump.json", &waypoint_dump(ours)),
        ],
    );
    assert!(
        none.outcome == Outcome::Fail && none.explanation().contains("no Gateway book-info/waypoint"),
        "{}",
        none.explanation()
    );
}

fn l7_attempt(phase: &str, path: &str, started_ms: u64, code: &str, exit: i64) -> serde_json::Value {
    json!({"phase": phase, "client": "curl-inside", "url": format!("http://ratings.book-info.svc.cluster.local:9080{path}"),
           "started_ms": started_ms, "ended_ms": started_ms + 100, "curl": {"http_code": code, "exit_code": exit}})
}

fn l7_healthy() -> Vec<serde_json::Value> {
    vec![
        l7_attempt("before", "/ratings/0", 0, "200", 0),
        l7_attempt("before", "/health", 100, "200", 0),
        l7_attempt("policy", "/ratings/0", 0, "200", 0),
        l7_attempt("policy", "/ratings/0", 300, "403", 0),
        l7_attempt("policy", "/health", 450, "200", 0),
        l7_attempt("policy", "/ratings/0", 600, "403", 0),
        l7_attempt("after", "/ratings/0", 0, "403", 0),
        l7_attempt("after", "/ratings/0", 300, "200", 0),
    ]
}

fn l7_judge(attempts: Vec<serde_json::Value>) -> meshcheck::evidence::Verdict {
    let results =
        json!({"policy": "AuthorizationPolicy book-info/meshcheck-l7-deny", "budget_ms": 1000, "attempts": attempts});
    judge("l7-policy", &[("l7-policy/results.json", &serde_json::to_vec(&results).unwrap())])
}

#[test]
fn l7_policy_needs_a_403_from_the_waypoint_on_its_path_alone_and_the_undo() {
    let v = l7_judge(l7_healthy());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let with = |i: usize, a: serde_json::Value| {
        let mut all = l7_healthy();
        all[i] = a;
        l7_judge(all)
    };
    // A reset is ztunnel refusing: the L7 policy landed on ztunnel, and the verdict says so.
    let mut reset = l7_healthy();
    reset[3] = l7_attempt("policy", "/ratings/0", 300, "000", 56);
    reset[5] = l7_attempt("policy", "/ratings/0", 600, "000", 56);
    let v = l7_judge(reset);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("refused at the connection (curl exit 56), not with HTTP 403"),
        "{}",
        v.explanation()
    );
    // Refused, but not by the waypoint's RBAC filter: a 503 is no 403.
    let mut unavailable = l7_healthy();
    unavailable[3] = l7_attempt("policy", "/ratings/0", 300, "503", 0);
    unavailable[5] = l7_attempt("policy", "/ratings/0", 600, "503", 0);
    let v = l7_judge(unavailable);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("expected HTTP 403 from the waypoint"),
        "{}",
        v.explanation()
    );
    // The other path refused too: the policy is broader than its path.
    let v = with(4, l7_attempt("policy", "/health", 450, "403", 0));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("a path the policy does not name"),
        "{}",
        v.explanation()
    );
    // Never refused.
    let mut never = l7_healthy();
    never[3] = l7_attempt("policy", "/ratings/0", 300, "200", 0);
    never[5] = l7_attempt("policy", "/ratings/0", 600, "200", 0);
    let v = l7_judge(never);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("was never refused"), "{}", v.explanation());
    // Still 403 after the policy is gone.
    let v = with(7, l7_attempt("after", "/ratings/0", 300, "403", 0));
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("the policy was not taken back"),
        "{}",
        v.explanation()
    );
    // No baseline: the path was refused before the policy.
    let v = with(0, l7_attempt("before", "/ratings/0", 0, "403", 0));
    assert!(v.outcome == Outcome::Error && v.reason.contains("the baseline failed"), "{}", v.explanation());
    // Late: still served at 1200 ms against a 1000 ms budget.
    let mut late = l7_healthy();
    late[2] = l7_attempt("policy", "/ratings/0", 1200, "200", 0);
    late[3] = l7_attempt("policy", "/ratings/0", 1500, "403", 0);
    let v = l7_judge(late);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("over budget"), "{}", v.explanation());
}

/// The binomial test against values computed independently (Python, exact sums of `math.comb`
/// terms, the same minimum-likelihood rule as R's `binom.test`).
#[test]
fn binomial_two_sided_p_matches_known_values() {
    use meshcheck::common::stats::binomial_two_sided_p as p;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 + 1e-6 * b.abs();
    for (k, n, prob, expected) in [
        (0, 10, 0.5, 0.001953125),
        (20, 200, 0.1, 1.0),
        (35, 200, 0.1, 0.0012693433705207157),
        (6, 200, 0.1, 0.0003338802830739445),
        (34, 200, 0.1, 0.0020219360455171354),
        (5, 200, 0.1, 7.760018001408426e-05),
        (36, 200, 0.1, 0.0005358547428833895),
        (100, 200, 0.5, 1.0),
    ] {
        assert!(close(p(k, n, prob), expected), "p({k}, {n}, {prob}) = {} not {expected}", p(k, n, prob));
    }
    // Far tails stay finite and tiny, not NaN.
    let far = p(200, 200, 0.1);
    assert!(far > 0.0 && far < 1e-190, "{far}");
    assert_eq!(p(3, 2, 0.5), 0.0);
    assert_eq!((p(0, 5, 0.0), p(1, 5, 0.0)), (1.0, 0.0));
}

fn l7_routing_judge(before: &[&str], during: &[(&str, usize)], after: &[&str]) -> meshcheck::evidence::Verdict {
    let pods = |list: &[&str]| list.iter().map(|v| json!(format!("{v}-5b5d6494f4-qwjv4"))).collect::<Vec<_>>();
    let during: Vec<serde_json::Value> =
        during.iter().flat_map(|(v, n)| std::iter::repeat_n(json!(format!("{v}-5b5d6494f4-qwjv4")), *n)).collect();
    let results = json!({"route": "HTTPRoute book-info/reviews", "source": "s",
                         "weights": [["reviews-v1", 90], ["reviews-v2", 10]],
                         "before": pods(before), "during": during, "after": pods(after)});
    judge("l7-routing", &[("l7-routing/results.json", &serde_json::to_vec(&results).unwrap())])
}

#[test]
fn l7_routing_holds_each_backend_to_its_weight_by_an_exact_binomial_test() {
    let before = ["reviews-v1", "reviews-v3", "reviews-v2"];
    let v = l7_routing_judge(&before, &[("reviews-v1", 180), ("reviews-v2", 20)], &["reviews-v1", "reviews-v3"]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    // 34 of 200 is still 10 % by the test (p = 0.002); 36 is not (p = 0.0005).
    let v = l7_routing_judge(&before, &[("reviews-v1", 166), ("reviews-v2", 34)], &["reviews-v3"]);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = l7_routing_judge(&before, &[("reviews-v1", 164), ("reviews-v2", 36)], &["reviews-v3"]);
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains("reviews-v2: 36 of 200 (18.0 %), weight 10 of 100 (10.0 %), p = 0.0005"),
        "{}",
        v.explanation()
    );
    // A version outside the route answering: the route is not applied.
    let v = l7_routing_judge(&before, &[("reviews-v1", 170), ("reviews-v2", 20), ("reviews-v3", 10)], &["reviews-v3"]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("10 of 200 answer(s) came from versions outside it"),
        "{}",
        v.explanation()
    );
    // No version outside the route before it: nothing to prove.
    let v =
        l7_routing_judge(&["reviews-v1", "reviews-v2"], &[("reviews-v1", 180), ("reviews-v2", 20)], &["reviews-v3"]);
    assert!(
        v.outcome == Outcome::Error && v.reason.contains("a route keeping them out would prove nothing"),
        "{}",
        v.explanation()
    );
    // Requests answered by no pod: up to 5 % (10 of 200) are tolerated, 11 of 200 are not.
    let with_unanswered = |unanswered: usize, weights: serde_json::Value| {
        let pod = |v: &str| json!(format!("{v}-5b5d6494f4-qwjv4"));
        let mut during: Vec<serde_json::Value> = std::iter::repeat_n(pod("reviews-v1"), 171 - unanswered + 10)
            .chain(std::iter::repeat_n(pod("reviews-v2"), 19))
            .collect();
        during.extend(std::iter::repeat_n(serde_json::Value::Null, unanswered));
        let results = json!({"route": "HTTPRoute book-info/reviews", "source": "s", "weights": weights,
                             "before": [pod("reviews-v3")], "during": during, "after": [pod("reviews-v3")]});
        judge("l7-routing", &[("l7-routing/results.json", &serde_json::to_vec(&results).unwrap())])
    };
    let weights = json!([["reviews-v1", 90], ["reviews-v2", 10]]);
    let v = with_unanswered(10, weights.clone());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let v = with_unanswered(11, weights);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("11 of 200 request(s) under the route got no answer"),
        "{}",
        v.explanation()
    );
    // A route whose weights are all 0 sends nowhere: nothing to hold the answers to.
    let v = with_unanswered(0, json!([["reviews-v1", 0], ["reviews-v2", 0]]));
    assert!(v.outcome == Outcome::Error && v.reason.contains("no weighted backends"), "{}", v.explanation());
    // Still only the route's versions after it was deleted.
    let v = l7_routing_judge(&before, &[("reviews-v1", 180), ("reviews-v2", 20)], &["reviews-v1", "reviews-v1"]);
    assert!(
        v.outcome == Outcome::Fail && v.explanation().contains("the route was not taken back"),
        "{}",
        v.explanation()
    );
}

/// One trace as Tempo's v1 API returns it in protobuf, with one span per service name.
fn tempo_trace_pb(id: [u8; 16], services: &[&str]) -> Vec<u8> {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value::Value as V},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData},
    };
    use prost::Message;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(V::StringValue(v.into())) }),
        ..Default::default()
    };
    let resource_spans = services
        .iter()
        .map(|service| ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { trace_id: id.to_vec(), name: "call".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    TracesData { resource_spans }.encode_to_vec()
}

#[test]
fn l7_traces_need_spans_from_the_waypoint_in_every_trace() {
    let (a, b) = ([0xabu8; 16], [0xcdu8; 16]);
    let (ha, hb) = (meshcheck::formats::tempo::hex(&a), meshcheck::formats::tempo::hex(&b));
    let sent =
        serde_json::to_vec(&json!([{"trace_id": ha, "status": "200"}, {"trace_id": hb, "status": "200"}])).unwrap();
    let expect = br#"{"waypoint_service":"waypoint.book-info"}"#;
    let both = tempo_trace_pb(a, &["istio-ingress.istio-ingress", "waypoint.book-info"]);
    let gateway_only = tempo_trace_pb(b, &["istio-ingress.istio-ingress"]);
    let with_waypoint = tempo_trace_pb(b, &["istio-ingress.istio-ingress", "waypoint.book-info"]);
    let (fa, fb) = (format!("l7-traces/tempo/{ha}.pb"), format!("l7-traces/tempo/{hb}.pb"));
    let case = |second: Option<&[u8]>| {
        let mut files: Vec<(&str, &[u8])> =
            vec![("l7-traces/expect.json", expect), ("l7-traces/sent.json", &sent), (&fa, &both)];
        if let Some(t) = second {
            files.push((&fb, t));
        }
        judge("l7-traces", &files)
    };
    let v = case(Some(&with_waypoint));
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(v.reason.starts_with("2 of 2 traces have spans from the waypoint"), "{}", v.reason);
    // A request the gateway never answered leaves no trace to expect: not judged, not failed.
    let unanswered = serde_json::to_vec(
        &json!([{"trace_id": ha, "status": "200"}, {"trace_id": hb, "status": "error: curl exit 28"}]),
    )
    .unwrap();
    let v =
        judge("l7-traces", &[("l7-traces/expect.json", expect), ("l7-traces/sent.json", &unanswered), (&fa, &both)]);
    assert!(v.outcome == Outcome::Error && v.explanation().contains("so no trace was expected"), "{}", v.explanation());
    // The gateway's spans alone: the calls skipped the waypoint.
    let v = case(Some(&gateway_only));
    assert!(
        v.outcome == Outcome::Fail
            && v.explanation().contains(&format!("trace {hb}: no span from the waypoint (`waypoint.book-info`), only from {{\"istio-ingress.istio-ingress\"}}")),
        "{}",
        v.explanation()
    );
    let v = case(None);
    assert!(v.outcome == Outcome::Fail && v.explanation().contains("never arrived in Tempo"), "{}", v.explanation());
}

/// An instant-query answer in the shape of Prometheus's documented example
/// (observed/prometheus-api-v1-query-instant-vector.docs-example.json), one sample per
/// (namespace, pod, container).
fn instant_vector(samples: &[(&str, &str, &str, f64)]) -> Vec<u8> {
    let base: serde_json::Value = serde_json::from_slice(
        &upstream_file("observed/prometheus-api-v1-query-instant-vector.docs-example.json").unwrap(),
    )
    .unwrap();
    let template = base["data"]["result"][0].clone();
    let result: Vec<serde_json::Value> = samples
        .iter()
        .map(|(ns, pod, container, v)| {
            let mut r = template.clone();
            r["metric"] = json!({"namespace": ns, "pod": pod, "container": container});
            r["value"][1] = json!(v.to_string());
            r
        })
        .collect();
    let mut doc = base;
    doc["data"]["result"] = json!(result);
    serde_json::to_vec(&doc).unwrap()
}

/// The footprint's evidence of one pass: two ztunnels, istio-cni, istiod and a gateway, with a
/// working set of `ztunnel_mib` MiB per ztunnel, each reading 100 s long.
fn footprint_pass(prefix: &str, ztunnel_mib: f64) -> Vec<(String, Vec<u8>)> {
    const MIB: f64 = 1024.0 * 1024.0;
    let pod = |name: &str, labels: serde_json::Value, cpu: &str, mem: &str| {
        json!({"metadata": {"name": name, "namespace": "istio-system", "labels": labels},
               "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    };
    let system = json!({"items": [
        pod("ztunnel-a", json!({"app": "ztunnel"}), "200m", "512Mi"),
        pod("ztunnel-b", json!({"app": "ztunnel"}), "200m", "512Mi"),
        pod("istio-cni-node-a", json!({"k8s-app": "istio-cni-node"}), "100m", "100Mi"),
        pod("istiod-x", json!({"app": "istiod"}), "500m", "2Gi"),
    ]});
    let mut gateway = pod("istio-ingress-y", json!({"app": "istio-ingress"}), "100m", "128Mi");
    gateway["metadata"]["namespace"] = json!("istio-ingress");
    let ingress = json!({"items": [gateway]});
    let every = |f: &dyn Fn(&str) -> f64| -> Vec<u8> {
        let pods = [
            ("istio-system", "ztunnel-a"),
            ("istio-system", "ztunnel-b"),
            ("istio-system", "istio-cni-node-a"),
            ("istio-system", "istiod-x"),
            ("istio-ingress", "istio-ingress-y"),
        ];
        let mut samples: Vec<(&str, &str, &str, f64)> = pods.iter().map(|(ns, p)| (*ns, *p, "c", f(p))).collect();
        // The pod-level cgroup and the pause container: never counted.
        samples.push(("istio-system", "ztunnel-a", "", 1e12));
        samples.push(("istio-system", "ztunnel-a", "POD", 1e12));
        instant_vector(&samples)
    };
    let memory = |p: &str| if p.starts_with("ztunnel") { ztunnel_mib * MIB } else { 50.0 * MIB };
    // CPU counters: 100 s readings; ztunnel 1 s idle (10 mcore), 6 s under load (60 mcore).
    let readings = json!({"idle": {"started": 1000.0, "ended": 1100.0}, "load": {"started": 1200.0, "ended": 1300.0},
                          "rate_per_second": 20, "sent": 2000, "answered": 2000, "max_ratio": 1.2});
    let files = [
        ("pods-istio-system.json", serde_json::to_vec(&system).unwrap()),
        ("pods-istio-ingress.json", serde_json::to_vec(&ingress).unwrap()),
        ("readings.json", serde_json::to_vec(&readings).unwrap()),
        ("idle-cpu-start.json", every(&|_| 50.0)),
        ("idle-cpu-end.json", every(&|p| if p.starts_with("ztunnel") { 51.0 } else { 50.5 })),
        ("idle-memory.json", every(&memory)),
        ("load-cpu-start.json", every(&|_| 60.0)),
        ("load-cpu-end.json", every(&|p| if p.starts_with("ztunnel") { 66.0 } else { 60.5 })),
        ("load-memory.json", every(&memory)),
    ];
    files.into_iter().map(|(f, b)| (format!("footprint/{prefix}{f}"), b)).collect()
}

fn footprint_judge(files: &[(String, Vec<u8>)]) -> meshcheck::evidence::Verdict {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(f, b)| (f.as_str(), b.as_slice())).collect();
    judge("footprint", &refs)
}

#[test]
fn footprint_judge_computes_per_pod_numbers_and_holds_the_candidate_to_the_ratio() {
    use meshcheck::checks::footprint::quantity;
    const MIB: f64 = 1024.0 * 1024.0;
    // Quantities as the API server writes them (apimachinery resource/suffix.go).
    for (text, value) in [
        ("100m", 0.1),
        ("2", 2.0),
        ("0.5", 0.5),
        ("128Mi", 128.0 * MIB),
        ("1Gi", 1024.0 * MIB),
        ("1G", 1e9),
        ("512k", 512e3),
        ("1e3", 1000.0),
        ("250u", 250e-6),
    ] {
        assert_eq!(quantity(text), Some(value), "{text}");
    }
    assert_eq!(quantity("lots"), None);

    // One pass: the numbers by hand. ztunnel: (51 - 50) / 100 s = 10 mcore idle, 60 mcore under
    // load, 12 MiB; requests per pod and per node (two DaemonSets: 300 mcore, 612 MiB).
    let alone = footprint_pass("", 12.0);
    let v = footprint_judge(&alone);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    let m = |metric: &str| v.measurements.iter().find(|m| m.metric == metric).map(|m| m.value).unwrap();
    assert!((m("ztunnel.cpu.idle") - 0.010).abs() < 1e-9);
    assert!((m("ztunnel.cpu.load") - 0.060).abs() < 1e-9);
    assert!((m("istiod.cpu.load") - 0.005).abs() < 1e-9);
    assert_eq!(m("ztunnel.memory.load"), 12.0 * MIB, "the pod cgroup and pause series are not added");
    assert!((m("node.requests.cpu") - 0.3).abs() < 1e-9);
    assert_eq!(m("node.requests.memory"), 612.0 * MIB);
    assert!(!v.reason.contains("baseline"));

    // Half the load answered is still a load (the rule: fewer than half is not).
    let mut half = footprint_pass("", 12.0);
    let readings = json!({"idle": {"started": 1000.0, "ended": 1100.0}, "load": {"started": 1200.0, "ended": 1300.0},
                          "rate_per_second": 20, "sent": 2000, "answered": 1000, "max_ratio": 1.2});
    half.retain(|(f, _)| f != "footprint/readings.json");
    half.push(("footprint/readings.json".into(), serde_json::to_vec(&readings).unwrap()));
    let v = footprint_judge(&half);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());

    // A candidate within the rule: 14 MiB over 12 is 1.17.
    let mut within = footprint_pass("", 14.0);
    within.extend(footprint_pass("baseline/", 12.0));
    let v = footprint_judge(&within);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.explanation());
    assert!(v.reason.contains("within 1.2 of the baseline"), "{}", v.reason);

    // Over the ratio: 24 MiB over 12 is 2.00, named with both values and the rule.
    let mut doubled = footprint_pass("", 24.0);
    doubled.extend(footprint_pass("baseline/", 12.0));
    let v = footprint_judge(&doubled);
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(
        v.reason,
        "ztunnel.memory.idle per pod: 24.0 MiB in the candidate, 12.0 MiB in the baseline: ratio 2.00 over gate.footprint.max_ratio 1.2"
    );
    assert!(v.details.iter().any(|d| d.starts_with("ztunnel.memory.load per pod")));

    // Over the ratio but under the noise floor: 2 MiB over 1 MiB is 2.00, yet only 1 MiB more.
    let mut small = footprint_pass("", 2.0);
    small.extend(footprint_pass("baseline/", 1.0));
    assert_eq!(footprint_judge(&small).outcome, Outcome::Pass);

    // No cAdvisor series: the memory answer is empty, and the judge says where to look.
    let mut empty = footprint_pass("", 12.0);
    for (_, b) in empty.iter_mut().filter(|(f, _)| f.ends_with("load-memory.json")) {
        *b = instant_vector(&[]);
    }
    let v = footprint_judge(&empty);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.reason.contains("no cAdvisor CPU or memory series of the 2 ztunnel pod(s)"), "{}", v.reason);

    // A counter that went down (a restart) leaves that pod out of that reading, and says so.
    let mut restarted = footprint_pass("", 12.0);
    for (_, b) in restarted.iter_mut().filter(|(f, _)| f.ends_with("load-cpu-end.json")) {
        let mut doc: serde_json::Value = serde_json::from_slice(b).unwrap();
        doc["data"]["result"][0]["value"][1] = json!("1");
        *b = serde_json::to_vec(&doc).unwrap();
    }
    let v = footprint_judge(&restarted);
    assert!(
        v.details.iter().any(|d| d.starts_with("istio-system/ztunnel-a (load): its CPU counter went down")),
        "{:?}",
        v.details
    );

    // A load that was not served is not a load.
    let mut unserved = footprint_pass("", 12.0);
    for (_, b) in unserved.iter_mut().filter(|(f, _)| f.ends_with("readings.json")) {
        let mut doc: serde_json::Value = serde_json::from_slice(b).unwrap();
        doc["answered"] = json!(3);
        *b = serde_json::to_vec(&doc).unwrap();
    }
    assert!(footprint_judge(&unserved).reason.contains("the load was not served"));

    // Missing evidence is an error naming the file, never a pass.
    let v = footprint_judge(&alone[1..]);
    assert_eq!(v.outcome, Outcome::Error, "{}", v.explanation());
}
