//! Every node reports the architecture the scenario expects (amd64 or arm64 runners).

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::NODE_ARCHITECTURE, collect: Collector::Cluster(collect), judge };

const EXPECT: &str = "nodes/expect.json";
const NODES: &str = "cluster/nodes.json";

/// `nodes/expect.json`: the architecture every node must report. The collector writes it, the
/// judge reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// Kubernetes spelling (`amd64`, `arm64`), as a node's `status.nodeInfo.architecture` has it.
    pub architecture: String,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let nodes = live.get_raw("/api/v1/nodes").await?;
        live.save(NODES, &nodes)?;
        let arch = live.scenario.cluster.architecture.resolve().map(|a| a.as_str()).unwrap_or("unknown");
        live.save_json(EXPECT, &Expect { architecture: arch.to_string() })
    })
}

/// Judges `nodes/expect.json` against `cluster/nodes.json`.
pub fn judge(ev: &Evidence) -> Verdict {
    let files = vec![EXPECT.to_string(), NODES.to_string()];
    let Expect { architecture: want } = match ev.read_json(EXPECT) {
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
    let mut problems = Vec::new();
    for n in items {
        let arch = n.pointer("/status/nodeInfo/architecture").and_then(Value::as_str).unwrap_or("unknown");
        if arch != want {
            problems.push(format!("node {} reports architecture {arch}, expected {want}", kjson::name(n)));
        }
        if !kjson::condition_true(n, "Ready") {
            problems.push(format!("node {} is not Ready", kjson::name(n)));
        }
    }
    let pass = format!("all {} nodes are Ready and run {want}", items.len());
    Verdict::from_findings(problems, Vec::new(), files, pass, |n| {
        format!("{n} of {} nodes do not match: expected Ready {want} nodes", items.len())
    })
}
