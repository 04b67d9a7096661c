//! The upgrade phase: the Istio chain again, in the documented in-place order, while the traffic
//! generator sends requests and labels them as sent before, during and after the upgrade.

use super::{Step, TrafficAction, builder::Builder, graph::Graph, istio::istio};
use crate::common::catalog::Stage;

/// Traffic starts, the Istio chain upgrades to `target`, traffic settles and stops; then the
/// upgrade's checks judge what the traffic saw.
pub(super) fn upgrade(b: &Builder, g: &mut Graph, target: &str) {
    let start = g.add(Step::Traffic { action: TrafficAction::Start }, &[]);
    let during = g.add(
        Step::Traffic { action: TrafficAction::During },
        &[(start, "traffic flows for `traffic.settle` before the upgrade begins")],
    );
    let upgraded = istio(b, g, target, true, &[(during, "what is sent from here on counts as during the upgrade")]);
    let after = g.add(
        Step::Traffic { action: TrafficAction::After },
        &[(upgraded.gateway, "the upgrade ends with the last rollout, the gateway's")],
    );
    g.add(
        Step::Traffic { action: TrafficAction::Stop },
        &[(after, "traffic flows for `traffic.settle` after the upgrade")],
    );
    g.checks(b.s, Stage::Upgrade);
}
