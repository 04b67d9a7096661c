//! Namespace ownership against a mock API server (tower-test, the kube-rs ApiServerVerifier
//! pattern): a run creates only what is missing, never adopts an existing namespace, and cleanup
//! deletes only namespaces carrying both of the run's labels.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use meshcheck::namespaces::{self, Ensured};
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

#[tokio::test]
async fn cleanup_deletes_only_namespaces_with_both_run_labels() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, send) =
            expect(&mut handle, Method::GET, "/api/v1/namespaces?&labelSelector=meshcheck.io%2Frun%3D20261125-101500")
                .await;
        let ns = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}});
        send.send_response(reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {}, "items": [
                ns("meshcheck-outside", json!({"meshcheck.io/run": "20261125-101500", "app.kubernetes.io/managed-by": "meshcheck"})),
                // Someone copied our run label onto their namespace: not created by us, not deleted.
                ns("shop", json!({"meshcheck.io/run": "20261125-101500"})),
            ]}),
        ));
        let (_, send) = expect(&mut handle, Method::DELETE, "/api/v1/namespaces/meshcheck-outside?").await;
        send.send_response(reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshcheck-outside"}, "status": {"phase": "Terminating"}}),
        ));
        assert!(handle.next_request().await.is_none(), "nothing else may be deleted");
    });
    let deleted = namespaces::delete_owned(&client, "20261125-101500").await.unwrap();
    assert_eq!(deleted, ["meshcheck-outside"]);
    drop(client);
    server.await.unwrap();
}
