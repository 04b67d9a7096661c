//! Every node reports the architecture the scenario expects (amd64 or arm64 runners), is Ready,
//! and on a cluster meshcheck created there are as many nodes as the scenario asked for: a node
//! that never joined leaves fewer, each of them Ready.

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Verdict},
    formats::kjson,
    scenario::{Provider, Scenario},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::NODE_ARCHITECTURE, collect: Collector::Cluster(collect), judge };

const EXPECT: &str = "nodes/expect.json";
const NODES: &str = "cluster/nodes.json";

/// `nodes/expect.json`: the architecture every node must report, and how many nodes there must be.
/// The collector writes it, the judge reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// Kubernetes spelling (`amd64`, `arm64`), as a node's `status.nodeInfo.architecture` has it.
    pub architecture: String,
    /// Control planes plus workers, for a cluster meshcheck created; absent for an existing
    /// cluster (whose shape the scenario does not describe) and in folders from before the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
}

impl Expect {
    /// What a run of `scenario` expects of its nodes.
    pub fn of(scenario: &Scenario) -> Expect {
        let architecture = scenario.cluster.architecture.resolve().map(|a| a.as_str()).unwrap_or("unknown");
        // The cluster the plan creates (plan/providers.rs): kind's config lists the control planes
        // and workers, k3d gets servers and agents; the scenario allows one control plane.
        let nodes = match scenario.provider {
            Provider::Kind | Provider::K3d => Some(scenario.cluster.control_planes + scenario.cluster.workers),
            Provider::Existing => None,
        };
        Expect { architecture: architecture.to_string(), nodes }
    }
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let nodes = live.get_raw("/api/v1/nodes").await?;
        live.save(NODES, &nodes)?;
        live.save_json(EXPECT, &Expect::of(&live.scenario))
    })
}

/// Judges `nodes/expect.json` against `cluster/nodes.json`.
pub fn judge(ev: &Evidence) -> Verdict {
    let files = vec![EXPECT.to_string(), NODES.to_string()];
    let Expect { architecture: want, nodes: count } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if want.is_empty() {
        return Verdict::error(format!("{EXPECT} names no architecture")).with_evidence([EXPECT.to_string()]);
    }
    let nodes: Value = match ev.read_json(NODES) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let items = kjson::items(&nodes);
    if items.is_empty() {
        return Verdict::fail("the cluster reported no nodes").with_evidence(files);
    }
    let mut found = Findings::reading(files);
    match count {
        Some(n) if items.len() != n as usize => found.fail(format!(
            "the cluster has {} node(s), expected {n} (control planes plus workers of the scenario): {}",
            items.len(),
            items.iter().map(kjson::name).collect::<Vec<_>>().join(", ")
        )),
        Some(_) => {}
        None => found.note(format!("{EXPECT} gives no node count (an existing cluster, or an older run): not checked")),
    }
    for n in items {
        let arch = n.pointer("/status/nodeInfo/architecture").and_then(Value::as_str).unwrap_or("unknown");
        if arch != want {
            found.fail(format!("node {} reports architecture {arch}, expected {want}", kjson::name(n)));
        }
        if !kjson::condition_true(n, "Ready") {
            found.fail(format!("node {} is not Ready", kjson::name(n)));
        }
    }
    let pass = format!("all {} nodes are Ready and run {want}", items.len());
    let expected = count.map_or(items.len(), |c| c as usize);
    found.verdict(pass, |n| format!("{n} node finding(s): expected {expected} Ready {want} node(s)"))
}
