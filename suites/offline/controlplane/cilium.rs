//! What Cilium's operator does on the real control plane that a run waits for: it registers
//! Cilium's CRDs when it starts (cilium v1.19.6 pkg/k8s/apis/cilium.io/client/register.go
//! `CreateCustomResourceDefinitions`, from the YAML it embeds). kwok runs no operator, so
//! [`CiliumOperator`] does that step on the real API server with those very files
//! (`.ci/build-go-tools cilium-crds` copies them from the module's source): meshcheck's
//! CiliumClusterwideNetworkPolicy then meets Cilium's real schema.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Pod, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, api::ListParams};

use super::ControlPlane;

/// The CRDs the operator registers with its defaults and meshcheck's values (pkg/k8s/synced/crd.go
/// `AllCiliumCRDResourceNames`: identities, pod IP pools, endpoints, nodes, both network policies,
/// CIDR groups and node configs; endpoint slices, egress gateway, local redirect, Envoy config and
/// BGP are off), as files under `cilium-crds/`.
const REGISTERED: &[&str] = &[
    "v2/ciliumidentities",
    "v2alpha1/ciliumpodippools",
    "v2/ciliumendpoints",
    "v2/ciliumnodes",
    "v2/ciliumnetworkpolicies",
    "v2/ciliumclusterwidenetworkpolicies",
    "v2/ciliumcidrgroups",
    "v2/ciliumnodeconfigs",
];

/// Cilium's operator, as far as its CRDs go: once one of its pods runs (the chart's label
/// `io.cilium/app: operator`), it creates each of [`REGISTERED`] that is not there yet.
pub(super) struct CiliumOperator {
    task: tokio::task::JoinHandle<()>,
}

impl CiliumOperator {
    pub(super) fn start(client: Client, tools: &std::path::Path) -> CiliumOperator {
        let crds: Vec<CustomResourceDefinition> = REGISTERED
            .iter()
            .map(|name| {
                let path = tools.join(format!("cilium-crds/{name}.yaml"));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                serde_saphyr::from_str(&text).unwrap()
            })
            .collect();
        CiliumOperator { task: tokio::spawn(register_when_running(client, crds)) }
    }
}

impl Drop for CiliumOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn register_when_running(client: Client, crds: Vec<CustomResourceDefinition>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let operator = ListParams::default().labels("io.cilium/app=operator");
    loop {
        let running = pods.list(&operator).await.map(|l| l.items).unwrap_or_default();
        if running.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in &crds {
        match api.create(&Default::default(), crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("cilium-operator: creating {:?}: {e}", crd.metadata.name),
        }
    }
}

/// Cilium's real CRDs on the real API server, registered as the operator does once its pod runs:
/// meshcheck's `allow-ambient-hostprobes` policy passes their schema and is kept as written.
/// Could-fail: the SNAT address written without its prefix length (`169.254.7.127`) is refused by
/// the schema's `format: cidr`, and the error names the field.
#[tokio::test]
async fn meshchecks_host_probe_policy_meets_the_schema_of_ciliums_own_crds() {
    if crate::charts::rendered("ambient-kind").is_none() {
        return;
    }
    let Some(tools) = crate::common::control_plane_tools() else { return };
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let (live, _dir) = cp.live().await;
    let _operator = CiliumOperator::start(cp.client(None).await, &tools);
    super::run::install(&live, &["cilium"]).await;
    let name = "ciliumclusterwidenetworkpolicies.cilium.io";
    super::crd_established(&live.client, name, Duration::from_secs(60)).await;

    let policy = meshcheck::plan::fixtures::manifest("cilium-allow-ambient-hostprobes.yaml").unwrap();
    live.apply_objects(&policy, None, true).await.unwrap();
    let stored =
        live.get_raw("/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies/allow-ambient-hostprobes").await.unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let written = serde_json::to_value(&policy[0]).unwrap();
    assert_eq!(stored["spec"], written["spec"], "the policy is kept as written: nothing pruned");

    let mut bare = written.clone();
    bare["metadata"]["name"] = serde_json::json!("allow-ambient-hostprobes-bare");
    bare["spec"]["ingress"][0]["fromCIDR"][0] = serde_json::json!("169.254.7.127");
    let bare: kube::api::DynamicObject = serde_json::from_value(bare).unwrap();
    let refused = live.apply_objects(&[bare], None, true).await.unwrap_err().to_string();
    assert!(refused.contains("fromCIDR") && refused.contains("cidr"), "{refused}");
}
