//! Names a run shares across layers: its namespaces, the labels that mark what it owns, and its
//! server-side-apply field manager. A leaf, so the plan, the live layer, the namespace owner and the
//! checks agree on one spelling without importing each other.

/// Label key whose value is the run id, on every namespace a run creates.
pub const RUN_LABEL: &str = "meshcheck.io/run";
/// Label every object meshcheck creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshcheck");
/// Field manager of every server-side apply meshcheck makes.
pub const FIELD_MANAGER: &str = "meshcheck";
/// Namespace of the plaintext client outside the mesh.
pub const OUTSIDE_NS: &str = "meshcheck-outside";
/// Ambient namespace of the meshed client.
pub const INSIDE_NS: &str = "meshcheck-inside";
/// The bookinfo namespace.
pub const BOOKINFO_NS: &str = "book-info";
/// The namespace label that enrols every pod of a namespace in ambient mode
/// (istio.io docs/ambient/usage/add-workloads: `istio.io/dataplane-mode=ambient`).
pub const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
