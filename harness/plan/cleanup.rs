//! The cleanup phase: delete the cluster the run created, or on an existing cluster the
//! namespaces the run created.

use super::{
    CommandSpec, Step,
    builder::{Builder, command},
    graph::Graph,
};
use crate::scenario::Provider;

/// The one cleanup step: `kind`/`k3d` deletes the whole cluster; on an existing cluster, only the
/// namespaces labelled as this run's own go.
pub(super) fn cleanup(b: &Builder, g: &mut Graph) {
    let t = std::time::Duration::from_secs(300);
    let step = match (&b.cluster, b.s.provider) {
        (Some(c), Provider::Kind) => {
            command("delete kind cluster", CommandSpec::new("kind", ["delete", "cluster", "--name", c], t))
        }
        (Some(c), Provider::K3d) => command("delete k3d cluster", CommandSpec::new("k3d", ["cluster", "delete", c], t)),
        _ => Step::DeleteOwnedNamespaces { run: b.run_label() },
    };
    g.add(step, &[]);
}
