//! The live layer against a mock API server (tower-test, the kube-rs ApiServerVerifier pattern):
//! namespace ownership (a run creates only what is missing, never adopts an existing namespace,
//! and cleanup deletes only namespaces carrying both of the run's labels), watch-based waits that
//! say what they last saw, the end-of-run cluster snapshot stored exactly as returned, and service
//! GETs that ask for a media type. Port-forward GETs run against the simulated cluster's WebSocket
//! port-forward.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use meshcheck::cluster::namespaces::{self, Ensured};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("namespaces \"{name}\" not found")})
}

/// Takes the next request, checks its method and path, and returns its JSON body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path_and_query: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
        .await
        .expect("the client made the request in time")
        .expect("a request");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().path_and_query().unwrap().as_str(), path_and_query);
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    (serde_json::from_slice(&bytes).unwrap_or(Value::Null), send)
}

#[tokio::test]
async fn a_missing_namespace_is_created_with_the_run_labels() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, "/api/v1/namespaces/meshcheck-inside").await;
        send.send_response(reply(StatusCode::NOT_FOUND, &not_found("meshcheck-inside")));
        let (body, send) = expect(&mut handle, Method::POST, "/api/v1/namespaces?&fieldManager=meshcheck").await;
        assert_eq!(body["metadata"]["labels"]["meshcheck.io/run"], "20261125-101500");
        assert_eq!(body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshcheck");
        assert_eq!(body["metadata"]["labels"]["istio.io/dataplane-mode"], "ambient");
        send.send_response(reply(StatusCode::CREATED, &body));
    });
    let labels = vec![("istio.io/dataplane-mode".to_string(), "ambient".to_string())];
    let got = namespaces::ensure(&client, "meshcheck-inside", &labels, "20261125-101500").await.unwrap();
    assert!(matches!(got, Ensured::Created(_)), "{got:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn an_existing_namespace_is_used_as_is_and_never_labelled() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, "/api/v1/namespaces/book-info").await;
        send.send_response(reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "book-info", "labels": {"team": "shop"}}}),
        ));
        // No create, no patch: the next thing the client does is go away.
        assert!(handle.next_request().await.is_none(), "ensure must not touch an existing namespace");
    });
    let got = namespaces::ensure(&client, "book-info", &[], "20261125-101500").await.unwrap();
    assert_eq!(got, Ensured::Existed);
    drop(client);
    server.await.unwrap();
}

/// A re-run on an existing cluster finds the earlier run's namespace still Terminating (issue 22,
/// item 5): nothing can be created in it (403), and it is not someone else's either. `ensure` waits
/// for it to go and creates it as this run's own.
#[tokio::test]
async fn a_namespace_still_terminating_is_awaited_then_created_as_the_runs_own() {
    let (client, mut handle) = mock();
    let terminating = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "meshcheck-inside", "resourceVersion": "41", "deletionTimestamp": "2026-12-03T09:00:00Z",
                     "labels": {"meshcheck.io/run": "20261203-085900", "app.kubernetes.io/managed-by": "meshcheck"}},
        "status": {"phase": "Terminating"}});
    let server = tokio::spawn(async move {
        let mut gone = false;
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let query = req.uri().query().unwrap_or_default().to_string();
            if method == Method::POST {
                let bytes = req.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(gone, "created before the old namespace was gone");
                assert_eq!(body["metadata"]["labels"]["meshcheck.io/run"], "20261203-091500");
                send.send_response(reply(StatusCode::CREATED, &body));
            } else if query.contains("watch=true") {
                // The namespace controller finishes: the watch sees it deleted.
                gone = true;
                let event = json!({"type": "DELETED", "object": terminating});
                send.send_response(reply(StatusCode::OK, &event));
            } else if path == "/api/v1/namespaces/meshcheck-inside" {
                if gone {
                    send.send_response(reply(StatusCode::NOT_FOUND, &not_found("meshcheck-inside")));
                } else {
                    send.send_response(reply(StatusCode::OK, &terminating));
                }
            } else {
                let items = if gone { json!([]) } else { json!([terminating]) };
                let list = json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "41"}, "items": items});
                send.send_response(reply(StatusCode::OK, &list));
            }
        }
    });
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        namespaces::ensure(&client, "meshcheck-inside", &[], "20261203-091500"),
    )
    .await
    .expect("ensure ends once the namespace is gone")
    .unwrap();
    assert!(matches!(got, Ensured::Created(_)), "a Terminating namespace is not someone else's: {got:?}");
    drop(client);
    server.abort();
}

/// Issue 26: cleanup deletes exactly the namespaces the run created, by name with their uid as a
/// precondition, and never lists by label: a namespace someone created with copied labels is never
/// asked for, one re-created under the same name (another uid) is refused by the precondition and
/// left, one already gone is skipped.
#[tokio::test]
async fn cleanup_deletes_exactly_the_namespaces_the_run_created_by_name_and_uid() {
    use meshcheck::cluster::namespaces::CreatedNamespace;
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (body, send) = expect(&mut handle, Method::DELETE, "/api/v1/namespaces/meshcheck-outside?").await;
        assert_eq!(body["preconditions"]["uid"], "uid-outside", "{body}");
        send.send_response(reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshcheck-outside"}, "status": {"phase": "Terminating"}}),
        ));
        let (body, send) = expect(&mut handle, Method::DELETE, "/api/v1/namespaces/meshcheck-inside?").await;
        assert_eq!(body["preconditions"]["uid"], "uid-inside", "{body}");
        send.send_response(reply(
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                    "message": "Precondition failed: UID in precondition: uid-inside, UID in object meta: uid-other"}),
        ));
        let (_, send) = expect(&mut handle, Method::DELETE, "/api/v1/namespaces/meshcheck-gone?").await;
        send.send_response(reply(StatusCode::NOT_FOUND, &not_found("meshcheck-gone")));
        assert!(handle.next_request().await.is_none(), "nothing else may be asked for or deleted");
    });
    let created = |name: &str, uid: &str| CreatedNamespace { name: name.into(), uid: uid.into() };
    let deleted = namespaces::delete_created(
        &client,
        &[
            created("meshcheck-outside", "uid-outside"),
            created("meshcheck-inside", "uid-inside"),
            created("meshcheck-gone", "uid-gone"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(deleted, [created("meshcheck-outside", "uid-outside")]);
    drop(client);
    server.await.unwrap();
}

fn deployment(available: i32) -> Value {
    rollout(1, 1, available)
}

/// istiod with `replicas` pods in total (old and new), `updated` of the new template, `available` available.
fn rollout(replicas: i32, updated: i32, available: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "istiod", "namespace": "istio-system", "resourceVersion": "7", "generation": 2},
           "spec": {"replicas": 1, "selector": {}, "template": {}},
           "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": updated, "availableReplicas": available,
                      "conditions": [{"type": "Available", "status": if available > 0 { "True" } else { "False" }}]}})
}

/// Serves list requests with the given deployment and holds watches open (no change ever comes).
fn serve_deployment(handle: Handle, available: i32) -> tokio::task::JoinHandle<()> {
    serve(handle, deployment(available))
}

fn serve(mut handle: Handle, deployment: Value) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let query = req.uri().query().unwrap_or_default().to_string();
            if query.contains("watch=true") {
                held.push(send);
                continue;
            }
            if req.uri().path().ends_with("/deployments/istiod") {
                send.send_response(reply(StatusCode::OK, &deployment));
                continue;
            }
            let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "7"},
                              "items": [deployment.clone()]});
            send.send_response(reply(StatusCode::OK, &list));
        }
    })
}

/// Serves istiod unavailable until its first watch has failed with 410 Gone (etcd compacted the
/// resource version: `too old resource version`, apimachinery's `NewResourceExpired`), available
/// after that when `recovers`. Later watches are held open.
fn serve_expiring_watch(mut handle: Handle, recovers: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut expired = false;
        while let Some((req, send)) = handle.next_request().await {
            let query = req.uri().query().unwrap_or_default().to_string();
            if query.contains("watch=true") {
                if expired {
                    held.push(send);
                } else {
                    expired = true;
                    let event = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": "too old resource version: 7 (9)"}});
                    send.send_response(reply(StatusCode::OK, &event));
                }
                continue;
            }
            let now = deployment(i32::from(expired && recovers));
            if req.uri().path().ends_with("/deployments/istiod") {
                send.send_response(reply(StatusCode::OK, &now));
            } else {
                let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
                                  "metadata": {"resourceVersion": "7"}, "items": [now]});
                send.send_response(reply(StatusCode::OK, &list));
            }
        }
    })
}

/// kube-runtime's watcher yields a 410 after compaction as an error and recovers on its next poll
/// (issue 22, item 4): the wait rides it out, counts it, and still ends at its deadline otherwise.
#[tokio::test]
async fn a_wait_rides_out_an_expired_watch_and_counts_it() {
    use meshcheck::{
        cluster::{live::LiveError, waits::wait_for},
        plan::Condition,
    };
    let t = std::time::Duration::from_secs(10);
    let (client, handle) = mock();
    let server = serve_expiring_watch(handle, true);
    let report = wait_for(&client, "Deployment", Some("istio-system"), "istiod", &Condition::DeploymentAvailable, t)
        .await
        .expect("one expired watch does not end a wait");
    assert_eq!(report.watch_errors, 1, "{report:?}");
    assert!(report.note().unwrap().contains("too old resource version"), "{report:?}");
    drop(client);
    server.abort();

    let (client, handle) = mock();
    let server = serve_expiring_watch(handle, false);
    let t = std::time::Duration::from_secs(2);
    let err = wait_for(&client, "Deployment", Some("istio-system"), "istiod", &Condition::DeploymentAvailable, t)
        .await
        .unwrap_err();
    assert!(matches!(err, LiveError::Timeout { .. }), "only the deadline ends the wait: {err}");
    assert!(err.to_string().contains("1 watch error(s) ridden out"), "{err}");
    server.abort();
}

#[tokio::test]
async fn a_wait_passes_on_a_ready_rollout_and_times_out_naming_what_it_last_saw() {
    use meshcheck::{
        cluster::{live::LiveError, waits::wait_for},
        plan::Condition,
    };
    let t = std::time::Duration::from_millis(800);
    let (client, handle) = mock();
    let server = serve_deployment(handle, 1);
    wait_for(&client, "Deployment", Some("istio-system"), "istiod", &Condition::DeploymentAvailable, t).await.unwrap();
    drop(client);
    server.abort();

    let (client, handle) = mock();
    let server = serve_deployment(handle, 0);
    let err = wait_for(&client, "Deployment", Some("istio-system"), "istiod", &Condition::DeploymentAvailable, t)
        .await
        .unwrap_err();
    let LiveError::Timeout { what, last_seen, .. } = &err else { panic!("expected a timeout, got {err}") };
    assert!(what.contains("istio-system/istiod"), "{what}");
    assert_eq!(last_seen, "replicas 1, current 1, updated 1, available 0");
    assert!(err.to_string().contains("last seen: replicas 1, current 1, updated 1, available 0"), "{err}");
    server.abort();

    // Mid-upgrade: the new pod is updated, the old one still available, two pods in all. "Updated and
    // available" alone passed here; `kubectl rollout status` waits until the old pod is gone.
    let (client, handle) = mock();
    let server = serve(handle, rollout(2, 1, 2));
    let err = wait_for(&client, "Deployment", Some("istio-system"), "istiod", &Condition::DeploymentAvailable, t)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("last seen: replicas 1, current 2, updated 1, available 2"), "{err}");
    server.abort();
}

#[test]
fn a_daemonset_rollout_is_done_only_when_the_current_revision_is_ready() {
    use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Pod};
    use meshcheck::cluster::waits::{daemonset_progress, revision_pods_progress};
    let ds = |generation: i64, observed: i64, updated: i32, available: i32, ready: i32| -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "ztunnel", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "ztunnel"}}, "template": {}},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "numberMisscheduled": 0, "numberReady": ready, "updatedNumberScheduled": updated,
                       "numberAvailable": available}}))
        .unwrap()
    };
    assert!(daemonset_progress(&ds(2, 2, 3, 3, 3)).done);
    // The old pods are Ready (numberReady 3) while the new ones start: not done.
    assert!(!daemonset_progress(&ds(2, 2, 1, 2, 3)).done);
    // The controller has not seen the new spec yet: its counts are about the old one.
    assert!(!daemonset_progress(&ds(3, 2, 3, 3, 3)).done);
    let pod = |ready: bool| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "ztunnel-x", "labels": {"controller-revision-hash": "new"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    };
    assert!(revision_pods_progress("new", 3, &[pod(true), pod(true), pod(true)]).done);
    let p = revision_pods_progress("new", 3, &[pod(true), pod(false), pod(true)]);
    assert!(!p.done && p.seen == "revision new: 2 of 3 pod(s) Ready", "{p:?}");
    assert!(!revision_pods_progress("new", 3, &[pod(true)]).done, "pods of the new revision still missing");
}

#[tokio::test]
async fn the_cluster_snapshot_keeps_api_responses_as_returned() {
    let (client, mut handle) = mock();
    let dir = tempfile::tempdir().unwrap();
    let evidence = meshcheck::evidence::Evidence::new(dir.path().join("evidence"));
    // A nodes.json a check already judged is never overwritten by the later snapshot.
    evidence.write("cluster/nodes.json", b"{\"judged\":true}").unwrap();
    let scenario = meshcheck::scenario::Scenario::embedded_default();
    let live = meshcheck::cluster::live::Live::new(client, scenario, dir.path().into(), evidence.clone()).unwrap();
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            assert_eq!(req.method(), Method::GET, "a snapshot only reads");
            assert_ne!(path, "/api/v1/nodes", "nodes.json exists already");
            let body = format!("{{\"kind\":\"List\",\"from\":\"{path}\"}}");
            send.send_response(Response::builder().status(200).body(Body::from(body.into_bytes())).unwrap());
        }
    });
    live.snapshot_cluster().await.unwrap();
    drop(live);
    server.await.unwrap();
    assert_eq!(evidence.read_text("cluster/nodes.json").unwrap(), "{\"judged\":true}");
    for ns in meshcheck::cluster::live::SNAPSHOT_NAMESPACES {
        let pods = evidence.read_text(&format!("cluster/pods-{ns}.json")).unwrap();
        assert_eq!(pods, format!("{{\"kind\":\"List\",\"from\":\"/api/v1/namespaces/{ns}/pods\"}}"));
        assert!(evidence.exists(&format!("cluster/events-{ns}.json")));
    }
}

#[tokio::test]
async fn a_service_get_asks_for_its_media_type_and_keeps_a_binary_body_as_sent() {
    let (client, mut handle) = mock();
    let dir = tempfile::tempdir().unwrap();
    let evidence = meshcheck::evidence::Evidence::new(dir.path().join("evidence"));
    let scenario = meshcheck::scenario::Scenario::embedded_default();
    let live = meshcheck::cluster::live::Live::new(client, scenario, dir.path().into(), evidence).unwrap();
    let path = "/api/v1/namespaces/tempo/services/http:tempo:3200/proxy/api/traces/ab";
    let server = tokio::spawn(async move {
        for (status, content_type, body) in
            [(200, "application/protobuf", &b"\xff\x00\x80"[..]), (404, "text/plain", b"trace not found")]
        {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.uri().path(), path);
            assert_eq!(req.headers()[http::header::ACCEPT], "application/protobuf");
            send.send_response(
                Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(Body::from(body.to_vec()))
                    .unwrap(),
            );
        }
    });
    let get = || live.service_get_as("tempo", "tempo", 3200, "/api/traces/ab", "application/protobuf");
    let got = get().await.unwrap();
    assert_eq!(
        got,
        meshcheck::cluster::live::Fetched {
            content_type: "application/protobuf".into(),
            body: b"\xff\x00\x80".to_vec()
        },
        "a body that is not UTF-8 comes back byte for byte"
    );
    let err = get().await.unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("trace not found") && err.contains(path), "{err}");
    drop(live);
    server.await.unwrap();
}

/// Running pods of `ns` matching `selector`, once there are some (the simulated controllers start
/// them within simulated seconds).
async fn running(live: &meshcheck::cluster::live::Live, ns: &str, selector: &str) -> Vec<String> {
    for _ in 0..600 {
        let pods = live.running_pods(ns, selector).await.unwrap();
        if !pods.is_empty() {
            return pods.into_iter().filter_map(|p| p.metadata.name).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no running pod in {ns} matching `{selector}`");
}

#[tokio::test]
async fn a_port_forward_get_speaks_http1_and_names_what_went_wrong() {
    use crate::sim::{Faults, Sim};
    let Some(options) = crate::common::sim_options("existing", 0.01, Faults::default()) else { return };
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    let ztunnel = running(&live, "istio-system", "app=ztunnel").await.remove(0);
    let dump = live.pod_get("istio-system", &ztunnel, 15000, "/config_dump").await.unwrap();
    let dump: Value = serde_json::from_slice(&dump).unwrap();
    // ztunnel 1.30's shape: a list of workloads sorted by uid, each with `capacity`, read by the
    // harness's reader (before, the simulation served the old map keyed by address).
    let workloads = dump["workloads"].as_array().expect("workloads is a list");
    let uids: Vec<&str> = workloads.iter().filter_map(|w| w["uid"].as_str()).collect();
    assert!(uids.is_sorted() && uids.len() == workloads.len(), "{uids:?}");
    assert!(workloads.iter().all(|w| w["capacity"] == 1), "{dump}");
    assert_eq!(meshcheck::checks::ztunnel::dump_workloads(&dump).len(), workloads.len());
    // A status other than 2xx is an error page, not evidence.
    let err = live.pod_get("istio-system", &ztunnel, 15000, "/no-such-path").await.unwrap_err().to_string();
    assert!(err.contains("HTTP 404") && err.contains("/no-such-path"), "{err}");
    // Nothing listens on the port: the port-forward's error channel says so.
    let tempo = running(&live, "tempo", "").await.remove(0);
    let err = live.pod_get("tempo", &tempo, 15000, "/config_dump").await.unwrap_err().to_string();
    assert!(err.contains("connection refused") && err.contains(&format!("tempo/{tempo}:15000")), "{err}");
}

/// Issue 22, item 8: the nodes-Ready wait of a cluster the run creates waits for as many nodes as it
/// asked for; two Ready nodes of three is not "every node Ready".
#[test]
fn the_nodes_wait_counts_control_planes_and_workers() {
    use k8s_openapi::api::core::v1::Node;
    use meshcheck::cluster::waits::nodes_progress;
    let node = |name: &str, ready: bool| -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    };
    let two = [node("cp", true), node("w1", true)];
    let p = nodes_progress(&two, Some(3));
    assert!(!p.done && p.seen == "2 of 3 nodes, not Ready: []", "{p:?}");
    assert!(nodes_progress(&[node("cp", true), node("w1", true), node("w2", true)], Some(3)).done);
    assert!(nodes_progress(&two, None).done, "an existing cluster: every node it has");
    assert!(!nodes_progress(&[node("cp", true), node("w1", false), node("w2", true)], Some(3)).done);
    assert!(!nodes_progress(&[], None).done, "no node at all is not Ready");
}

/// Tempo 2.10's two trace-by-id APIs as the simulation serves them: v2 answers an unknown id with
/// 200 and an empty trace, which the harness's reader takes as no spans; v1 answers 404 with an
/// empty body, which the service GET reports as an error.
#[tokio::test]
async fn tempo_answers_an_unknown_trace_by_its_api_version() {
    use crate::sim::{Faults, Sim};
    let Some(options) = crate::common::sim_options("existing", 0.01, Faults::default()) else { return };
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    running(&live, "tempo", "").await;
    let id = "0af7651916cd43dd8448eb211c80319c";
    let v2 = live.service_get_as("tempo", "tempo", 3200, &format!("api/v2/traces/{id}"), "application/json").await;
    let fetched = v2.expect("v2 answers 200 for an unknown id");
    assert_eq!(fetched.content_type, "application/json");
    let body: Value = serde_json::from_slice(&fetched.body).unwrap();
    assert_eq!(body["trace"], serde_json::json!({}), "{body}");
    assert!(meshcheck::formats::tempo::decode_json(&serde_json::to_vec(&body).unwrap()).unwrap().is_empty());
    // Control: a body of none of Tempo's shapes is still unreadable, not "no spans".
    assert!(meshcheck::formats::tempo::decode_json(br#"{"traces": []}"#).is_err());
    let v1 = live.service_get_as("tempo", "tempo", 3200, &format!("api/traces/{id}"), "application/json").await;
    assert!(v1.unwrap_err().to_string().contains("404"));
}

/// Issue 20, item 5: a span reaches Tempo at the proxy's next export, 5 s of cluster time after the
/// request (Envoy's OpenTelemetry flush interval), not at once: right after a traced request Tempo
/// knows no such trace (v1: 404), and after the interval it returns the gateway's span.
#[tokio::test]
async fn tempo_returns_a_trace_only_once_the_proxy_exported_its_span() {
    use crate::sim::{Faults, Sim};
    // 0.2: the 5 s export delay is 1 s of real time, long enough to look before it.
    let Some(options) = crate::common::sim_options("existing", 0.2, Faults::default()) else { return };
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    running(&live, "tempo", "").await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/productpage", sim.ingress_port());
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut served = false;
    for _ in 0..200 {
        let sent = http.get(&url).header("traceparent", format!("00-{id}-00f067aa0ba902b7-01")).send().await;
        if sent.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "the gateway never served productpage");
    let path = format!("api/traces/{id}");
    let get = || live.service_get_as("tempo", "tempo", 3200, &path, "application/protobuf");
    let early = get().await;
    assert!(
        early.as_ref().is_err_and(|e| e.to_string().contains("404")),
        "before the export: {:?}",
        early.map(|f| f.body.len())
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let late = get().await.expect("exported after the flush interval");
    let spans = meshcheck::formats::tempo::TraceFormat::of_v1_answer(&late.content_type).decode(&late.body).unwrap();
    assert!(spans.iter().any(|s| s.service == "istio-ingress.istio-ingress"), "{spans:?}");
}

/// Issue 26: the Gateway API bundle is not applied over a newer one already on the cluster. Against
/// the simulated existing cluster (which holds the pinned v1.5.1 bundle's CRDs, annotated as its
/// release file is), an older bundle is left out whole, with one line; a newer one is kept whole
/// (the control), and objects without the annotation always are.
#[tokio::test]
async fn an_older_gateway_api_bundle_is_not_applied_over_a_newer_one() {
    use crate::sim::{Faults, Sim};
    let Some(options) = crate::common::sim_options("existing", 0.01, Faults::default()) else { return };
    // The pinned charts' folder (`$MESHCHECK_CHARTS`, `../shared/upstream/charts` or
    // `target/charts`), not the upstream data, which holds only what the manifest lists.
    let bundle = options.helm.charts.join("gateway-api-v1.5.1/standard-install.yaml");
    let text = std::fs::read_to_string(&bundle).unwrap();
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    running(&live, "istio-system", "app=istiod").await;
    let present =
        text.lines().find_map(|l| l.trim().strip_prefix("gateway.networking.k8s.io/bundle-version: ")).unwrap();
    let with_version = |v: &str| {
        let mut objects = meshcheck::plan::fixtures::parse_manifests(&text.replace(present, v), "bundle").unwrap();
        objects.push(
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}}))
                .unwrap(),
        );
        objects
    };
    let older = with_version("v1.4.0");
    let (kept, skipped) = live.without_downgrades(&older, Some("default")).await.unwrap();
    assert_eq!(kept.len(), 1, "only the object without the annotation: {kept:?}");
    let expected = format!(
        "Gateway API v1.4.0 not applied: the cluster has {present}, newer ({} objects left as they are)",
        older.len() - 1
    );
    assert_eq!(skipped, [expected]);
    let newer = with_version("v1.6.0");
    let (kept, skipped) = live.without_downgrades(&newer, Some("default")).await.unwrap();
    assert_eq!((kept.len(), skipped.len()), (newer.len(), 0));
}

/// Issue 21: the simulated API server holds a server-side apply to its CRD's schema, as the real
/// one does whatever `fieldValidation` says (structured-merge-diff's typed conversion): a
/// ServiceMonitor endpoint with `scrapeInterval` (a field of the Prometheus CR, not of a monitor;
/// prometheus-operator v0.85.0's CRD as kube-prometheus-stack 77.0.0 installs it) is refused, naming
/// the field, on the dry run as on the apply; `interval` is accepted; a kind whose schema
/// preserves unknown fields takes anything.
#[tokio::test(flavor = "multi_thread")]
async fn an_apply_with_a_field_its_crd_does_not_declare_is_refused() {
    use crate::sim::{Faults, Sim};
    let Some(options) = crate::common::sim_options("existing", 0.01, Faults::default()) else { return };
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    let monitor = |field: &str| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "typo", "namespace": "monitoring"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "http", field: "15s"}]},
        }))
        .unwrap()
    };
    for dry_run_first in [true, false] {
        let refused =
            live.apply_objects(&[monitor("scrapeInterval")], None, dry_run_first).await.unwrap_err().to_string();
        assert!(refused.contains(".spec.endpoints[0].scrapeInterval: field not declared in schema"), "{refused}");
    }
    live.apply_objects(&[monitor("interval")], None, true).await.unwrap();
    let policy: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "anything-goes"}, "spec": {"whatever": {"deep": [1, 2]}},
    }))
    .unwrap();
    live.apply_objects(&[policy], None, false).await.unwrap();
}
