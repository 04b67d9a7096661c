//! The accept loop of the servers on the host.

use std::{convert::Infallible, sync::Arc};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{Shared, web::Body};

type Handler = fn(Arc<Shared>, Request<Incoming>) -> futures::future::BoxFuture<'static, Response<Body>>;

pub(super) async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    accept: fn(&Shared) -> bool,
    handler: Handler,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if !accept(&shared) {
            drop(stream);
            continue;
        }
        let s = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handler(s, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The mirror: upstream manifests and registry indexes.
