//! The scenario format's JSON Schema (what `meshcheck schema` prints and the loader validates
//! against): the derived schema plus the rules between fields that serde cannot say.

use std::sync::LazyLock;

use serde_json::json;

use super::{
    Format, ISTIO_K8S_SUPPORT, Scenario,
    span::Release,
    spec::{MAX_WORKERS, Versions},
};
use crate::common::catalog;

pub(super) fn checks_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = catalog::CATALOG.iter().map(|c| c.name).collect();
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "string", "enum": names },
        "minItems": 1,
        "uniqueItems": true,
    })
}

pub(super) fn mirrors_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let url = Format::Url.pattern();
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": url },
        "additionalProperties": { "type": "string", "pattern": url },
    })
}

/// The rules between fields, as JSON Schema conditionals (`if`/`then`). Each `then` carries a
/// `description`: the loader appends it to the message, editors show it on hover.
pub(super) fn rules_between_fields(schema: &mut schemars::Schema) {
    let provider_is =
        |names: &[&str]| json!({ "required": ["provider"], "properties": { "provider": { "enum": names } } });
    let created = provider_is(&["kind", "k3d"]);
    let node_image =
        |rule: serde_json::Value| json!({ "properties": { "cluster": { "properties": { "node_image": rule } } } });
    let mut rules = vec![
        json!({
            "if": provider_is(&["existing"]),
            "then": {
                "required": ["existing"],
                "properties": { "existing": { "type": "object" } },
                "description": "provider `existing` needs an `existing:` section (kubeconfig, context, install); \
                                `existing: {}` takes the defaults",
            },
        }),
        json!({
            "if": created,
            "then": {
                "properties": { "existing": false },
                "description": "`existing:` is only for provider `existing`; remove it or change the provider",
            },
        }),
        json!({
            "if": created,
            "then": {
                "required": ["cluster"],
                "properties": { "cluster": {
                    "required": ["node_image"],
                    "properties": { "node_image": { "type": "string" } },
                } },
                "description": "kind and k3d clusters need `cluster.node_image`, pinned to a release, e.g. \
                                kindest/node:v1.35.0@sha256:<digest> or rancher/k3s:v1.35.5-k3s1",
            },
        }),
        json!({ "if": provider_is(&["kind"]), "then": node_image(json!({ "pattern": Format::KindNodeImage.pattern() })) }),
        json!({ "if": provider_is(&["k3d"]), "then": node_image(json!({ "pattern": Format::K3sNodeImage.pattern() })) }),
        json!({
            "if": created,
            "then": {
                "properties": { "cluster": { "properties": { "control_planes": { "const": 1 } } } },
                "description": "meshcheck creates exactly one control-plane node (Cilium's k8sServiceHost names it)",
            },
        }),
        json!({
            "if": created,
            "then": {
                "properties": { "cluster": { "properties": { "workers": { "maximum": MAX_WORKERS } } } },
                "description": "that is more nodes than a CI runner holds",
            },
        }),
    ];
    let default_minor = Release::parse(&Versions::default().istio).map(|r| r.minor);
    for &(minor, lo, hi) in ISTIO_K8S_SUPPORT {
        let is_minor = json!({ "pattern": Format::IstioMinor(minor).pattern() });
        // Without `versions.istio` the default applies, so the default's window holds then too.
        let istio_is_minor = if default_minor == Some(minor) {
            json!({ "properties": { "versions": { "properties": { "istio": is_minor } } } })
        } else {
            json!({ "required": ["versions"], "properties": { "versions": { "required": ["istio"], "properties": { "istio": is_minor } } } })
        };
        rules.push(json!({
            "if": { "allOf": [created, istio_is_minor] },
            "then": {
                "properties": { "cluster": { "properties": { "node_image": { "pattern": Format::KubernetesMinors(lo, hi).pattern() } } } },
                "description": format!(
                    "outside what Istio 1.{minor} supports: Kubernetes 1.{lo} to 1.{hi} (field guide §4.3); \
                     pick a node image in that range"
                ),
            },
        }));
    }
    rules.push(json!({
        "if": { "required": ["checks"], "properties": { "checks": { "contains": { "const": "traffic-continuity" } } } },
        "then": {
            "required": ["versions"],
            "properties": { "versions": {
                "required": ["upgrade_to"],
                "properties": { "upgrade_to": { "type": "string" } },
            } },
            "description": "`traffic-continuity` measures traffic during an upgrade; set versions.upgrade_to",
        },
    }));
    rules.push(json!({
        "if": { "allOf": [
            provider_is(&["existing"]),
            { "required": ["checks"], "properties": { "checks": { "contains": { "enum": ["waypoint", "l7-policy", "l7-routing", "l7-traces"] } } } },
        ] },
        "then": {
            "required": ["existing"],
            "properties": { "existing": { "required": ["install"], "properties": { "install": { "const": true } } } },
            "description": "the waypoint checks (`waypoint`, `l7-*`) read the waypoint meshcheck deploys with the mesh; on \
                            an existing cluster set existing.install: true",
        },
    }));
    rules.push(json!({
        "if": { "allOf": [
            provider_is(&["existing"]),
            { "required": ["kiali"], "properties": { "kiali": { "required": ["auth"], "properties": { "auth": { "const": "openid" } } } } },
        ] },
        "then": {
            "required": ["existing"],
            "properties": { "existing": { "required": ["install"], "properties": { "install": { "const": true } } } },
            "description": "kiali.auth: openid logs in through the Keycloak and the Kiali meshcheck installs, with the \
                            credentials it generates; on an existing cluster set existing.install: true",
        },
    }));
    schema.insert("allOf".into(), rules.into());
}

/// The scenario format as JSON Schema, built once: the loader checks every file against it.
pub(super) static SCHEMA: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(Scenario)).expect("schema serializes"));

/// The JSON Schema of the scenario format, for editors (`meshcheck schema`). The loader checks
/// every scenario against this same document, so what an editor accepts, meshcheck accepts,
/// except an `upgrade_to` that is not newer than `istio` by at most one minor release.
pub fn json_schema() -> serde_json::Value {
    SCHEMA.clone()
}
