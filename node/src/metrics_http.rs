//! `shoal daemon --metrics-addr HOST:PORT`: the node's metrics ([`NodeMetrics`]) for Prometheus
//! at `http://HOST:PORT/metrics`, on plain HTTP/1.1.
//!
//! Plain HTTP because that is what a Prometheus scrape config speaks without extra setup, and
//! the metrics hold no secrets (IDs, names, counts). Bind it to an address only the monitoring
//! network reaches. The server is small on purpose: GET (or HEAD) of `/metrics` and `/`,
//! keep-alive, a header read timeout, and a cap on open connections, so a slow or greedy client
//! cannot hold the daemon's resources.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shoal_manager::metrics::{Format, NodeMetrics};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// Connections served at once; more wait in the kernel's accept queue. Prometheus uses one per
/// target, so this leaves room for several servers and a person with curl.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the metrics address, so a taken or invalid one stops the daemon at start.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-addr)"))
}

/// Serves until the returned task is aborted (which drops every connection with it).
pub fn spawn(listener: TcpListener, metrics: Arc<NodeMetrics>) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics at http://{addr}/metrics");
    }
    tokio::spawn(serve(listener, metrics))
}

async fn serve(listener: TcpListener, metrics: Arc<NodeMetrics>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            // Full: wait for one to finish before accepting more.
            connections.join_next().await;
            continue;
        }
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, most likely: pause rather than spin.
                warn!(error = %e, "metrics server cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The answer to one request.
fn respond(req: &Request<Incoming>, metrics: &NodeMetrics) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            match metrics.encode(format) {
                Ok(body) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    resp
                }
                Err(e) => {
                    warn!(error = %e, "encoding the metrics failed");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "encoding the metrics failed; see the daemon's log\n",
                    )
                }
            }
        }
        "/" => text(
            StatusCode::OK,
            "shoal daemon: Prometheus metrics are at /metrics\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: Prometheus metrics are at /metrics\n",
        ),
    }
}
