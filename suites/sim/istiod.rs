//! istiod: its monitoring port (15014), its injection webhook (15017), and the waypoints its
//! gateway controller deploys.

use serde_json::{Value, json};

use super::{
    State,
    shapes::s,
    store::now,
    web::{HttpReply, HttpRequest},
};

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

/// istiod's injection webhook: a container whose image is `auto` (the gateway chart's, istio
/// 1.30.3 manifests/charts/gateway/templates/deployment.yaml) gets the proxy image of the
/// injector's values, `<global.hub>/<global.proxy.image>:<global.tag>[-<global.variant>]`
/// (istio-discovery files/gateway-injection-template.yaml). Without the injector's ConfigMap
/// the image stays `auto` and the kubelet can never pull it.
pub(super) fn inject_proxy_image(st: &State, spec: &mut Value) {
    let values: Option<Value> = st
        .store
        .iter("", "configmaps", None)
        .find(|c| s(c, "/metadata/name") == "istio-sidecar-injector")
        .and_then(|c| serde_json::from_str(s(c, "/data/values")).ok());
    let Some(values) = values else { return };
    let g = &values["global"];
    let variant = g["variant"].as_str().filter(|v| !v.is_empty()).map(|v| format!("-{v}")).unwrap_or_default();
    let image = format!(
        "{}/{}:{}{variant}",
        g["hub"].as_str().unwrap_or_default(),
        g.pointer("/proxy/image").and_then(Value::as_str).unwrap_or("proxyv2"),
        g["tag"].as_str().unwrap_or_default()
    );
    for c in spec.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
        if c["image"] == "auto" {
            c["image"] = json!(image);
        }
    }
}

/// istiod's webhook port: the chart's container port `https-webhooks`, behind its Service's 443
/// `https-webhook` (istio 1.30.3 manifests/charts/istio-control/istio-discovery/templates
/// deployment.yaml, service.yaml), served with istiod's own DNS certificate.
pub const WEBHOOK_PORT: u16 = 15017;

/// istiod's answer to the API server's call to `/inject` (istio 1.30.3 pkg/kube/inject/webhook.go
/// `serveInject`: 415 unless `Content-Type: application/json`, then an AdmissionReview whose
/// response is `allowed` with a JSONPatch, `inject`): the patch replaces each container image
/// [`inject_proxy_image`] rewrites. Other paths are not istiod's injector (its validation webhook
/// is not simulated), so they get the mux's 404.
pub fn inject(st: &State, req: &HttpRequest) -> HttpReply {
    use base64::Engine as _;
    let path = req.target.split('?').next().unwrap_or_default();
    if path != "/inject" && !path.starts_with("/inject/") {
        return HttpReply::new(404, "text/plain; charset=utf-8", "404 page not found\n");
    }
    if req.header("content-type") != Some("application/json") {
        return HttpReply::new(415, "text/plain; charset=utf-8", "invalid Content-Type, want `application/json`\n");
    }
    let Ok(review) = serde_json::from_slice::<Value>(&req.body) else {
        return HttpReply::new(400, "text/plain; charset=utf-8", "could not decode body\n");
    };
    let request = &review["request"];
    let mut spec = request.pointer("/object/spec").cloned().unwrap_or(json!({}));
    let before = spec.clone();
    inject_proxy_image(st, &mut spec);
    let patch: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(i, c)| before["containers"][i]["image"] != c["image"])
        .map(|(i, c)| json!({"op": "replace", "path": format!("/spec/containers/{i}/image"), "value": c["image"]}))
        .collect();
    let patch = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&patch).unwrap_or_default());
    let response = json!({
        "apiVersion": review["apiVersion"], "kind": "AdmissionReview",
        "response": {"uid": request["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch},
    });
    HttpReply::new(200, "application/json", serde_json::to_vec(&response).unwrap_or_default())
}
