//! Reads the live Cilium configuration and names every setting that breaks ambient (field guide §3
//! and §8): socket LB not limited to the host namespace, exclusive CNI, BPF masquerade, BPF host
//! routing, or Cilium's own ztunnel encryption switched on.

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Verdict},
};

/// Registration.
pub const CHECK: CheckDef =
    CheckDef { info: &catalog::CILIUM_PREREQUISITES, collect: Collector::Cluster(collect), judge };

const FILE: &str = "cilium/cilium-config.json";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let cm = live.get_raw("/api/v1/namespaces/kube-system/configmaps/cilium-config").await?;
        live.save(FILE, &cm)
    })
}

/// Judges the `cilium-config` ConfigMap.
pub fn judge(ev: &Evidence) -> Verdict {
    let cm: Value = match ev.read_json(FILE) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let Some(data) = cm.get("data").and_then(Value::as_object) else {
        return Verdict::error(format!("{FILE} has no `data`: not a cilium-config ConfigMap"))
            .with_evidence([FILE.to_string()]);
    };
    let get = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut found = Findings::reading([FILE.to_string()]);
    if get("bpf-lb-sock-hostns-only") != "true" {
        found.fail(format!(
            "bpf-lb-sock-hostns-only is `{}`: socket LB rewrites ClusterIPs inside pods before ztunnel sees them. Fix: Helm value socketLB.hostNamespaceOnly=true",
            get("bpf-lb-sock-hostns-only")
        ));
    }
    if get("cni-exclusive") != "false" {
        found.fail(format!(
            "cni-exclusive is `{}`: Cilium renames istio-cni's config to *.cilium_bak and ambient pods are never captured. Fix: cni.exclusive=false",
            get("cni-exclusive")
        ));
    }
    if get("enable-bpf-masquerade") == "true" {
        found.fail("enable-bpf-masquerade is `true`: unsupported with ambient, SNAT-ed probe replies are dropped. Fix: bpf.masquerade=false");
    }
    let kpr = get("kube-proxy-replacement") == "true";
    if get("enable-host-legacy-routing") != "true" && (kpr || get("enable-bpf-masquerade") == "true") {
        found.fail(format!(
            "enable-host-legacy-routing is `{}`: BPF host routing drops the SYN-ACK to 169.254.7.127 so probes fail (cilium#36022). Fix: bpf.hostLegacyRouting=true",
            get("enable-host-legacy-routing")
        ));
    }
    // `encryption.type=ztunnel` renders `enable-ztunnel: "true"` (cilium 1.19.6 chart
    // templates/cilium-configmap.yaml#L756-L757); there is no `encryption-type` key.
    if get("enable-ztunnel") == "true" {
        found.fail("Cilium's own ztunnel encryption is on: it competes with Istio's ztunnel for the same traffic. Fix: do not set encryption.type=ztunnel");
    }
    if !kpr {
        found.fail(format!(
            "kube-proxy-replacement is `{}`: the scenario's clusters run without kube-proxy. Fix: kubeProxyReplacement=true",
            get("kube-proxy-replacement")
        ));
    }
    let pass = "cilium-config: socket LB host-namespace only, CNI not exclusive, no BPF masquerade, legacy host routing, KPR on";
    found.verdict(pass, |n| format!("{n} Cilium setting(s) break Istio ambient"))
}
