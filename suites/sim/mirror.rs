//! The mirror of upstream manifests, chart repository indexes and registries that a scenario's
//! `mirrors` point at.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{
    Shared,
    web::{Body, respond},
};
use super::{host_servers::serve_http, shapes::observed};

/// Serves `/<host>/<path>` for the URLs a scenario's `mirrors` point here.
pub async fn serve_mirror(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, |_| true, |s, r| Box::pin(mirror(s, r))).await
}

pub(super) async fn mirror(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        ["raw.githubusercontent.com", "istio", "istio", release, "samples", "bookinfo", rest @ ..] => {
            let file = match rest.join("/").as_str() {
                "platform/kube/bookinfo.yaml" => "bookinfo",
                "platform/kube/bookinfo-versions.yaml" => "bookinfo-versions",
                "networking/bookinfo-gateway.yaml" => "networking-bookinfo-gateway",
                "gateway-api/route-reviews-90-10.yaml" => "gateway-api-route-reviews-90-10",
                _ => "",
            };
            match std::fs::read(shared.upstream.join(format!("bookinfo/istio-{release}-{file}.yaml"))) {
                Ok(b) if !file.is_empty() => respond(StatusCode::OK, "text/plain; charset=utf-8", b),
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "404: Not Found"),
            }
        }
        ["github.com", "kubernetes-sigs", "gateway-api", "releases", "download", version, "standard-install.yaml"] => {
            // The pinned release's bundle (../shared/upstream/charts/gateway-api-<version>/).
            match std::fs::read(shared.helm.charts.join(format!("gateway-api-{version}/standard-install.yaml"))) {
                Ok(bundle) => respond(StatusCode::OK, "application/octet-stream", bundle),
                Err(_) => respond(StatusCode::NOT_FOUND, "text/plain", "Not Found"),
            }
        }
        // A chart repository's index, which meshcheck's preflight reads as `helm repo add` would:
        // empty, because the stand-in helm renders charts from the simulation, not from a repository.
        [_host, .., "index.yaml"] => respond(StatusCode::OK, "application/x-yaml", "apiVersion: v1\nentries: {}\n"),
        // The registry API version check (OCI distribution spec end-1 `GET /v2/`); Docker Hub
        // answers 401 until it gets a token.
        [registry, "v2", ""] => {
            let status = if *registry == "registry-1.docker.io" { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
            respond(status, "application/json", "{}")
        }
        ["token"] => {
            respond(StatusCode::OK, "application/json", r#"{"token":"sim","access_token":"sim","expires_in":300}"#)
        }
        [registry, "v2", repo @ .., "manifests", _reference] => {
            let authorized = req.headers().get("authorization").is_some_and(|a| a.as_bytes().starts_with(b"Bearer "));
            if *registry == "registry-1.docker.io" && !authorized {
                let realm = format!("http://127.0.0.1:{}/token", shared.mirror_port);
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(
                        "www-authenticate",
                        format!(
                            "Bearer realm=\"{realm}\",service=\"registry.docker.io\",scope=\"repository:{}:pull\"",
                            repo.join("/")
                        ),
                    )
                    .header("content-type", "application/json")
                    .body(super::web::full(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    ))
                    .expect("response");
            }
            let index = observed(&shared, "oci-image-index.amd64-arm64-with-attestations.regclient-testrepo-v1.json");
            respond(
                StatusCode::OK,
                "application/vnd.oci.image.index.v1+json",
                serde_json::to_vec(&index).expect("json"),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found"),
    }
}

// ---------------------------------------------------------------------------------------------
// The ingress gateway on the host.
