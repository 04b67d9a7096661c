//! The API server's service proxy: what the checks read from Prometheus, Tempo and Kiali, found
//! where the scenario says each is ([`Backend`]).

use super::live::{Fetched, Live, LiveError, http_status_error, kube_err};
use crate::scenario::Backend;

/// The API-server service-proxy path of `path` on port `port` of Service `ns/svc`.
fn service_proxy_path(ns: &str, svc: &str, port: u16, path: &str) -> String {
    format!("/api/v1/namespaces/{ns}/services/http:{svc}:{port}/proxy/{}", path.trim_start_matches('/'))
}

impl Live {
    /// GET through the API-server service proxy: `/api/v1/namespaces/{ns}/services/http:{svc}:{port}/proxy/{path}`.
    pub async fn service_get(&self, ns: &str, svc: &str, port: u16, path: &str) -> Result<Vec<u8>, LiveError> {
        self.get_raw(&service_proxy_path(ns, svc, port, path)).await
    }

    /// GET `path` of `backend` where the scenario says it is ([`crate::scenario::Scenario::service`]) through the
    /// service proxy, asking for `accept` (empty: anything). A Service that is not there says where
    /// meshcheck looked and which field points it elsewhere: a cluster set up by another guide
    /// names its services otherwise.
    pub async fn backend_get(&self, backend: Backend, path: &str, accept: &str) -> Result<Fetched, LiveError> {
        let at = self.scenario.service(backend);
        let got = if accept.is_empty() {
            self.service_get(&at.namespace, &at.name, at.port, path)
                .await
                .map(|body| Fetched { content_type: String::new(), body })
        } else {
            self.service_get_as(&at.namespace, &at.name, at.port, path, accept).await
        };
        let Err(error) = got else { return got };
        // Whatever went wrong, a Service that is not there is the cause to name: the proxy's own
        // answer for it differs by path (a Status from the API server, a body from the proxy).
        let path = format!("/api/v1/namespaces/{}/services/{}", at.namespace, at.name);
        match self.get_raw(&path).await {
            Err(LiveError::Kube { source: kube::Error::Api(status), .. }) if status.code == 404 => {
                Err(LiveError::NoService { what: error.to_string(), at: at.to_string(), field: backend.field() })
            }
            _ => Err(error),
        }
    }

    /// [`Live::backend_get`] of Prometheus, its body.
    pub async fn prometheus_get(&self, path: &str) -> Result<Vec<u8>, LiveError> {
        self.backend_get(Backend::Prometheus, path, "").await.map(|f| f.body)
    }

    /// GET through the API-server service proxy asking for `accept`. The body comes back as bytes
    /// (a protobuf body is not text) with the `Content-Type` the service answered, because a
    /// service may answer in another format than asked. A non-2xx answer is an error.
    pub async fn service_get_as(
        &self,
        ns: &str,
        svc: &str,
        port: u16,
        path: &str,
        accept: &str,
    ) -> Result<Fetched, LiveError> {
        let path = service_proxy_path(ns, svc, port, path);
        let what = format!("GET {path}");
        let req = http::Request::get(&path)
            .header(http::header::ACCEPT, accept)
            .body(kube::client::Body::from(Vec::new()))
            .expect("valid request");
        let res = self.client.send(req).await.map_err(kube_err(what.clone()))?;
        let status = res.status();
        let content_type =
            res.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = res.into_body().collect_bytes().await.map_err(kube_err(what.clone()))?.to_vec();
        if !status.is_success() {
            return Err(http_status_error(what, status, &body));
        }
        Ok(Fetched { content_type, body })
    }
}
