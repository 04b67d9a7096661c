//! istiod: its monitoring port (15014), and the waypoints its gateway controller deploys.

use serde_json::{Value, json};

use super::{State, shapes::s, store::now};

pub(super) fn istiod_metrics(st: &State) -> String {
    let version = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    let pods = st.store.list("", "pods", None).len();
    format!(
        "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\n\
         pilot_xds{{type=\"ads\",version=\"{version}\"}} 1\npilot_xds{{type=\"wds\",version=\"{version}\"}} 3\n\
         # HELP pilot_services Total services known to pilot.\n# TYPE pilot_services gauge\npilot_services {}\n\
         # HELP pilot_k8s_reg_events Events from k8s registry.\n# TYPE pilot_k8s_reg_events counter\n\
         pilot_k8s_reg_events{{event=\"add\",type=\"Pods\"}} {pods}\n\
         # HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"{version}\"}} 1\n",
        st.store.list("", "services", None).len()
    )
}

/// istiod's gateway deployment controller for waypoints: for each Gateway of class
/// `istio-waypoint`, the ServiceAccount, Deployment and Service of the waypoint template
/// (istio/istio@1.30.3 manifests/charts/istio-control/istio-discovery/files/waypoint.yaml: all
/// named after the Gateway, pods labelled `gateway.networking.k8s.io/gateway-name` and
/// `istio.io/dataplane-mode: none`, the proxy image, ports 15021 and 15008), and the Gateway's
/// status (pilot/pkg/config/kube/gateway/testdata/waypoint.status.yaml.golden): Accepted; its
/// listener accepted only as one HBONE listener on 15008; Programmed, with the Service's hostname
/// as its address, once the Service exists, else `AddressNotUsable`.
pub(super) fn waypoints(st: &mut State) {
    for mut gw in st.store.list("gateway.networking.k8s.io", "gateways", None) {
        if s(&gw, "/spec/gatewayClassName") != "istio-waypoint" {
            continue;
        }
        let (ns, name) = (s(&gw, "/metadata/namespace").to_string(), s(&gw, "/metadata/name").to_string());
        let selector = json!({ "gateway.networking.k8s.io/gateway-name": name });
        if st.store.get("apps", "deployments", &ns, &name).is_none() {
            let mut labels = selector.clone();
            labels["gateway.networking.k8s.io/gateway-class-name"] = json!("istio-waypoint");
            labels["istio.io/dataplane-mode"] = json!("none");
            labels["service.istio.io/canonical-name"] = json!(name);
            let pod_spec = json!({ "serviceAccountName": name });
            let mut d = super::bootstrap::workload(
                "Deployment",
                &ns,
                &name,
                1,
                &selector,
                "auto",
                &[15021, 15008],
                Some(pod_spec),
            );
            d["spec"]["template"]["metadata"]["labels"] = labels;
            st.store.put(
                "",
                "serviceaccounts",
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}),
            );
            st.store.put("apps", "deployments", d);
            st.store.put(
                "",
                "services",
                super::bootstrap::service(&ns, &name, &selector, &[("status-port", 15021), ("mesh", 15008)]),
            );
        }
        let listeners = gw.pointer("/spec/listeners").and_then(Value::as_array).cloned().unwrap_or_default();
        let hbone = listeners.len() == 1 && listeners[0]["port"] == 15008 && listeners[0]["protocol"] == "HBONE";
        let host = format!("{name}.{ns}.svc.cluster.local");
        let service = st.store.get("", "services", &ns, &name).is_some();
        let condition = |kind: &str, ok: bool, reason: &str, message: &str| json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message, "lastTransitionTime": now()});
        let programmed = if service {
            condition(
                "Programmed",
                true,
                "Programmed",
                &format!("Resource programmed, assigned to service(s) {host}:15008"),
            )
        } else {
            condition(
                "Programmed",
                false,
                "AddressNotUsable",
                &format!("Failed to assign to any requested addresses: hostname \"{host}\" not found"),
            )
        };
        let listener = if hbone {
            condition("Accepted", true, "Accepted", "No errors found")
        } else {
            condition(
                "Accepted",
                false,
                "UnsupportedProtocol",
                "Expected a single listener on port 15008 with protocol \"HBONE\"",
            )
        };
        let status = json!({
            "conditions": [condition("Accepted", true, "Accepted", "Resource accepted"), programmed],
            "addresses": if service { json!([{"type": "Hostname", "value": host}]) } else { json!([]) },
            "listeners": listeners.iter().map(|l| json!({"name": l["name"], "attachedRoutes": 0, "conditions": [listener]})).collect::<Vec<_>>(),
        });
        let same = |a: &Value, b: &Value| {
            a["addresses"] == b["addresses"]
                && a["conditions"].as_array().map(|c| c.iter().map(|c| (&c["type"], &c["status"])).collect::<Vec<_>>())
                    == b["conditions"]
                        .as_array()
                        .map(|c| c.iter().map(|c| (&c["type"], &c["status"])).collect::<Vec<_>>())
        };
        if !same(&gw["status"], &status) {
            gw["status"] = status;
            st.store.put("gateway.networking.k8s.io", "gateways", gw);
        }
    }
}
