//! An existing cluster: its kubeconfig and context answer, and the access the run needs is
//! granted (a SelfSubjectAccessReview for each).

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

use super::network::innermost;
use crate::{
    cluster::live::kubeconfig_error,
    common::names::{BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS},
    plan::Plan,
    scenario::{Backend, Provider, Scenario},
};

/// What the run does on an existing cluster, as the API server authorizes it: the verbs on one
/// resource, and why the run needs them. Asked with SelfSubjectAccessReview (authorization.k8s.io/v1).
pub(super) struct Access {
    pub(super) verbs: &'static [&'static str],
    pub(super) group: &'static str,
    pub(super) resource: &'static str,
    pub(super) subresource: &'static str,
    pub(super) namespace: Option<std::borrow::Cow<'static, str>>,
    pub(super) why: &'static str,
}

pub(super) const fn access(
    verbs: &'static [&'static str],
    group: &'static str,
    resource: &'static str,
    namespace: Option<&'static str>,
    why: &'static str,
) -> Access {
    Access {
        verbs,
        group,
        resource,
        subresource: "",
        namespace: match namespace {
            Some(ns) => Some(std::borrow::Cow::Borrowed(ns)),
            None => None,
        },
        why,
    }
}

pub(super) const fn sub(
    verbs: &'static [&'static str],
    resource: &'static str,
    subresource: &'static str,
    namespace: &'static str,
    why: &'static str,
) -> Access {
    Access { verbs, group: "", resource, subresource, namespace: Some(std::borrow::Cow::Borrowed(namespace)), why }
}

/// A server-side apply is a PATCH, and one that creates the object is authorized as `create` too
/// (kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go,
/// `createAuthorizerAttributes`): the run applies objects that do not exist yet.
pub(super) const APPLY: &[&str] = &["create", "patch"];

/// exec and port-forward go over a WebSocket GET, authorized as `get`, and since Kubernetes 1.35
/// also as `create` (feature gate AuthorizePodWebsocketUpgradeCreatePermission, KEP-4006).
pub(super) const CONNECT: &[&str] = &["get", "create"];

/// What this scenario's run does on an existing cluster (plan::build and the collectors), and so
/// what its user must be allowed. The run's own namespaces are created by the run, so no
/// RoleBinding exists in them: only cluster-wide grants count there, and one of the two stands
/// for both.
pub(super) fn required_access(s: &Scenario) -> Vec<Access> {
    let mut out = vec![
        access(&["list", "watch"], "", "nodes", None, "the provision phase waits for every node to be Ready"),
        access(&["create"], "", "namespaces", None, "the run creates its own namespaces for its curl clients"),
        access(&["delete"], "", "namespaces", None, "cleanup deletes the namespaces the run created"),
        access(APPLY, "", "pods", Some(INSIDE_NS), "the run applies its curl clients into its own namespaces"),
        access(
            APPLY,
            "",
            "serviceaccounts",
            Some(INSIDE_NS),
            "the run applies the meshed curl client's ServiceAccount",
        ),
        access(&["list", "watch"], "", "pods", Some(INSIDE_NS), "the run waits for its curl clients to be Ready"),
    ];
    if s.installs() {
        out.extend([
            access(
                APPLY,
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "istio-base installs Istio's CRDs and the run applies the Gateway API CRDs",
            ),
            access(
                &["list", "delete"],
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
                "on an existing cluster cleanup deletes the CRDs the run brought, found by a list before its first install",
            ),
            access(
                &["create"],
                "rbac.authorization.k8s.io",
                "clusterroles",
                None,
                "the istiod chart creates ClusterRoles (istio/istio manifests/charts/istio-control/istio-discovery/templates/clusterrole.yaml)",
            ),
            access(
                &["create"],
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                None,
                "the istiod chart binds its ClusterRoles (templates/clusterrolebinding.yaml)",
            ),
            access(
                &["create"],
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                None,
                "the istiod chart creates its injection webhook (templates/mutatingwebhook.yaml)",
            ),
            access(
                &["create", "delete"],
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                None,
                "the istiod chart creates its validation webhook (templates/validatingwebhookconfiguration.yaml), helm uninstall deletes it",
            ),
            // helm v3.19.0 pkg/action/action.go: the default storage driver ("secret") keeps each
            // release as a Secret in the release namespace.
            access(
                &["create", "list", "delete"],
                "",
                "secrets",
                Some("istio-system"),
                "helm records each Istio release as a Secret there; the run looks for one before each install, helm uninstall deletes it",
            ),
            access(&["create"], "apps", "daemonsets", Some("istio-system"), "the istio-cni and ztunnel charts run DaemonSets"),
            access(APPLY, "apps", "deployments", Some(BOOKINFO_NS), "the run applies bookinfo into book-info"),
        ]);
    }
    let check = |name| s.runs_check(name);
    if check("cilium-prerequisites") {
        out.push(access(&["get"], "", "configmaps", Some("kube-system"), "cilium-prerequisites reads cilium-config"));
    }
    if check("gateway-binding") {
        out.push(access(&["list"], "", "pods", None, "gateway-binding lists the gateway pods of every namespace"));
        out.push(access(
            &["list"],
            "networking.istio.io",
            "gateways",
            Some(BOOKINFO_NS),
            "gateway-binding reads the Istio Gateways of book-info",
        ));
    }
    if check("mtls") || check("probes") {
        out.push(sub(CONNECT, "pods", "exec", OUTSIDE_NS, "mtls and probes run curl in the run's client pods"));
    }
    if check("mtls") || check("metrics") {
        out.push(sub(
            CONNECT,
            "pods",
            "portforward",
            "istio-system",
            "mtls and metrics read ztunnel's and istiod's admin ports",
        ));
    }
    if check("mtls") {
        out.push(access(
            &["create", "patch", "delete"],
            "security.istio.io",
            "peerauthentications",
            Some(BOOKINFO_NS),
            "mtls applies a STRICT PeerAuthentication to book-info and removes it",
        ));
    }
    if check("probes") {
        out.push(access(
            &["create", "patch", "delete"],
            "networking.k8s.io",
            "networkpolicies",
            Some(BOOKINFO_NS),
            "probes applies default-deny NetworkPolicies to book-info and removes them",
        ));
        out.push(access(&["list"], "", "events", Some(BOOKINFO_NS), "probes reads book-info's events"));
        if s.probes.negative_control {
            out.push(access(
                &["create", "patch", "delete"],
                "cilium.io",
                "ciliumclusterwidenetworkpolicies",
                None,
                "the probes negative control removes and restores the probe policy",
            ));
        }
    }
    if check("metrics") || check("probes") || check("footprint") {
        let mut proxy =
            sub(&["get"], "services", "proxy", "monitoring", "metrics, probes and footprint query Prometheus");
        proxy.namespace = Some(s.service(Backend::Prometheus).namespace.into());
        out.push(proxy);
    }
    if check("footprint") {
        for ns in ["istio-system", "istio-ingress"] {
            out.push(access(&["list"], "", "pods", Some(ns), "footprint reads the mesh's pods and their requests"));
        }
    }
    if check("latency") {
        out.push(access(
            APPLY,
            "apps",
            "deployments",
            Some(INSIDE_NS),
            "latency applies its fortio server and client into the run's own namespaces",
        ));
        out.push(access(APPLY, "", "services", Some(INSIDE_NS), "latency applies the fortio server's Service"));
        out.push(sub(CONNECT, "pods", "exec", INSIDE_NS, "latency runs fortio in the run's fortio clients"));
        out.push(sub(
            CONNECT,
            "pods",
            "portforward",
            "istio-system",
            "latency reads ztunnel's config dumps (whether the mesh captured its pods)",
        ));
    }
    if check("traces") || check("l7-traces") {
        let mut proxy = sub(&["get"], "services", "proxy", "tempo", "traces reads Tempo's trace API");
        proxy.namespace = Some(s.service(Backend::Tempo).namespace.into());
        out.push(proxy);
    }
    if check("kiali") && s.kiali.auth == crate::scenario::KialiAuth::Anonymous {
        let mut proxy = sub(&["get"], "services", "proxy", "istio-system", "kiali reads Kiali's API");
        proxy.namespace = Some(s.service(Backend::Kiali).namespace.into());
        out.push(proxy);
    }
    if check("kiali") && s.kiali.auth == crate::scenario::KialiAuth::Openid {
        out.push(access(&["get"], "", "secrets", Some("keycloak"), "kiali reads the Keycloak login the run created"));
        for ns in ["istio-system", "keycloak"] {
            out.push(access(
                &["get"],
                "",
                "services",
                Some(ns),
                "kiali's browser finds the pods behind Kiali and Keycloak",
            ));
            out.push(sub(
                CONNECT,
                "pods",
                "portforward",
                ns,
                "kiali's browser reaches Kiali and Keycloak over port-forwards",
            ));
        }
    }
    if check("health") {
        for ns in ["istio-system", "istio-ingress", "kube-system"] {
            out.push(access(&["list"], "", "pods", Some(ns), "health reads the restarts of Istio's and Cilium's pods"));
        }
        out.push(sub(
            &["get"],
            "pods",
            "log",
            "istio-system",
            "health counts error lines of ztunnel, istio-cni and istiod",
        ));
    }
    out
}

/// For `provider: existing`: the kubeconfig is a file, the context exists, the API server answers,
/// and the user may do what the run does there ([`required_access`]). Stops at the first of the
/// first three that fails: the later ones cannot be asked then.
pub(super) async fn existing_cluster_problems(s: &Scenario, plan: &Plan, t: Duration) -> Vec<String> {
    if s.provider != Provider::Existing {
        return Vec::new();
    }
    let path = &plan.kubeconfig;
    let fix_path = "Fix: point existing.kubeconfig (or $KUBECONFIG) at the cluster's kubeconfig";
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return vec![format!("kubeconfig: {path} is not a file. {fix_path}")],
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![format!("kubeconfig: {path} does not exist. {fix_path}")];
        }
        Err(e) => return vec![format!("kubeconfig: cannot read {path}: {e}. {fix_path}")],
    }
    let kubeconfig = match kube::config::Kubeconfig::read_from(path) {
        Ok(k) => k,
        Err(e) => return vec![format!("kubeconfig: {path} is not a kubeconfig: {}. {fix_path}", kubeconfig_error(&e))],
    };
    let names: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    let listed = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    let context = match plan.context.clone().or_else(|| kubeconfig.current_context.clone()).filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c.as_str()) => c,
        Some(c) => {
            return vec![format!(
                "kubeconfig: context `{c}` is not in {path} (it has: {listed}). Fix: set existing.context to one of them"
            )];
        }
        None => {
            return vec![format!(
                "kubeconfig: {path} has no current context and the scenario names none (it has: {listed}). Fix: set existing.context"
            )];
        }
    };
    let options = kube::config::KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let connected = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let server = match crate::cluster::live::proxy_note(&config) {
                Some(proxy) => format!("{} {proxy}", config.cluster_url),
                None => config.cluster_url.to_string(),
            };
            crate::cluster::live::client_for(config).map(|client| (client, server)).map_err(|e| e.to_string())
        });
    let (client, server) = match connected {
        Ok(c) => c,
        Err(e) => {
            return vec![format!(
                "kubeconfig: context `{context}` in {path} cannot be used: {}. {fix_path}",
                kubeconfig_error(&e)
            )];
        }
    };
    let why = match tokio::time::timeout(t, client.apiserver_version()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(innermost(&e)),
        Err(_) => Some(format!("no answer within {}s", t.as_secs())),
    };
    if let Some(why) = why {
        return vec![format!(
            "cluster: the API server of context `{context}` ({server}) does not answer GET /version: {why}. \
             Fix: start the cluster, or make it reachable from this machine (a proxy that cannot reach it: add its host to NO_PROXY)"
        )];
    }
    access_problems(&client, &context, &required_access(s), t).await
}

/// Asks the API server, once per verb, whether the kubeconfig's user may do each of `accesses`;
/// one line per access with a denied verb.
pub(super) async fn access_problems(
    client: &kube::Client,
    context: &str,
    accesses: &[Access],
    t: Duration,
) -> Vec<String> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asks = accesses.iter().flat_map(|a| a.verbs.iter().map(move |verb| (a, *verb))).map(|(a, verb)| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(a.group.into()),
                    resource: Some(a.resource.into()),
                    subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                    namespace: a.namespace.as_deref().map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move {
            let answer = tokio::time::timeout(t, reviews.create(&PostParams::default(), &review)).await;
            (a, verb, answer)
        }
    });
    let mut denied: Vec<(&Access, Vec<&str>, String)> = Vec::new();
    for (a, verb, answer) in futures::future::join_all(asks).await {
        let status = match answer {
            Ok(Ok(r)) => r.status.unwrap_or_default(),
            Ok(Err(e)) => {
                return vec![format!(
                    "cluster: cannot ask the API server what context `{context}` may do (SelfSubjectAccessReview): {}. \
                     Fix: use a context whose user may create selfsubjectaccessreviews (every authenticated user may, by the \
                     system:basic-user ClusterRole)",
                    innermost(&e)
                )];
            }
            Err(_) => {
                return vec![format!(
                    "cluster: the API server did not answer a SelfSubjectAccessReview within {}s",
                    t.as_secs()
                )];
            }
        };
        if status.allowed {
            continue;
        }
        let said = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|r| !r.is_empty())
            .collect::<Vec<_>>();
        match denied.iter_mut().find(|(d, _, _)| std::ptr::eq(*d, a)) {
            Some((_, verbs, _)) => verbs.push(verb),
            None => denied.push((a, vec![verb], said.join("; "))),
        }
    }
    denied
        .into_iter()
        .map(|(a, verbs, said)| {
            let resource = match (a.group, a.subresource) {
                ("", "") => a.resource.to_string(),
                ("", sub) => format!("{}/{sub}", a.resource),
                (group, _) => format!("{}.{group}", a.resource),
            };
            let scope = a.namespace.as_deref().map_or_else(|| "cluster-wide".to_string(), |ns| format!("in namespace {ns}"));
            let said = if said.is_empty() { String::new() } else { format!(" (the API server said: {said})") };
            format!(
                "access: context `{context}` may not {} {resource} {scope}, and {}{said}. Fix: grant it to the kubeconfig's \
                 user with a ClusterRole or Role and a binding, or use a context that may",
                verbs.join(", "),
                a.why
            )
        })
        .collect()
}
