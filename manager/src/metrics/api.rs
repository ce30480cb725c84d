//! API metrics: a tower layer for the daemon's gRPC servers that counts and times every call by
//! server, service, method and gRPC status code (`shoal_api_requests_total`,
//! `shoal_api_request_duration_seconds`).
//!
//! A call is over when its response body ends: a unary call's status comes in the trailers
//! after the message, and a streaming call (a worker's session, `logs --follow`) lasts as long
//! as its stream, so its duration is the stream's lifetime. A body dropped before its end is a
//! call the client cancelled. The status code is read from the `grpc-status` trailer (or
//! header, for an error answered without a body).
//!
//! Label values are bounded whatever a client sends: a path that is not a method of
//! `shoal.proto` is counted as service and method "unknown", so a stranger probing the cluster
//! port cannot create series at will.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

/// Every gRPC method Shoal serves, as "package.Service/Method", read from the proto file
/// itself so that the list cannot fall behind it.
fn known_methods() -> &'static HashSet<String> {
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS.get_or_init(|| methods_of(include_str!("../../../proto/shoal.proto")))
}

/// The methods a proto file declares ("package.Service/Method").
fn methods_of(proto: &str) -> HashSet<String> {
    let mut package = "";
    let mut service: Option<&str> = None;
    let mut out = HashSet::new();
    for line in proto.lines().map(str::trim) {
        if let Some(p) = line.strip_prefix("package ") {
            package = p.trim_end_matches(';').trim();
        } else if let Some(s) = line.strip_prefix("service ") {
            service = s.split_whitespace().next();
        } else if line.starts_with('}') {
            service = None;
        } else if let (Some(svc), Some(rpc)) = (service, line.strip_prefix("rpc ")) {
            if let Some(name) = rpc.split('(').next() {
                out.insert(format!("{package}.{svc}/{}", name.trim()));
            }
        }
    }
    out
}

/// "/shoal.v1.Control/ListServices" → ("shoal.v1.Control", "ListServices") when it is a known
/// method; ("unknown", "unknown") otherwise.
fn service_and_method(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) if known_methods().contains(trimmed) => {
            (service.to_string(), method.to_string())
        }
        _ => ("unknown".into(), "unknown".into()),
    }
}

/// Docker's and grpc-go's spelling of a status code ("OK", "NotFound", "Unavailable").
fn code_label(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    server: &'static str,
    service: String,
    method: String,
    code: String,
}

fn new_duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The API families; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<CallLabels, Counter>,
    durations: Family<CallLabels, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(new_duration_histogram),
        }
    }
}

impl ApiMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "shoal_api_requests",
            "gRPC calls this daemon served, by server, service, method and status code.",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "shoal_api_request_duration",
            "Duration of the gRPC calls this daemon served (a stream's whole lifetime).",
            Unit::Seconds,
            self.durations.clone(),
        );
    }
}

/// See the module documentation; made by [`super::NodeMetrics::api_layer`].
#[derive(Clone, Debug)]
pub struct ApiLayer {
    metrics: ApiMetrics,
    server: &'static str,
}

impl ApiLayer {
    pub(super) fn new(metrics: ApiMetrics, server: &'static str) -> Self {
        ApiLayer { metrics, server }
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            metrics: self.metrics.clone(),
            server: self.server,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiService<S> {
    inner: S,
    metrics: ApiMetrics,
    server: &'static str,
}

/// Records one call, once.
struct Call {
    metrics: ApiMetrics,
    server: &'static str,
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let labels = CallLabels {
            server: self.server,
            service: std::mem::take(&mut self.service),
            method: std::mem::take(&mut self.method),
            code: code_label(code),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .durations
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ApiService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = service_and_method(req.uri().path());
        let mut call = Call {
            metrics: self.metrics.clone(),
            server: self.server,
            service,
            method,
            started: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    let early = grpc_status(resp.headers());
                    Ok(resp.map(|body| MeteredBody {
                        inner: Box::pin(body),
                        call,
                        code: early,
                    }))
                }
                Err(e) => {
                    // The server could not answer at all (the transport failed).
                    call.finish(Code::Unavailable);
                    Err(e)
                }
            }
        })
    }
}

/// A response body that records its call when it ends (or is dropped).
pub struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    call: Call,
    /// The status once known (headers or trailers).
    code: Option<Code>,
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(Code::Internal),
            Poll::Ready(None) => {
                // A gRPC response without a status is broken: count it as such.
                let code = this.code.unwrap_or(Code::Unknown);
                this.call.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or the server shut down).
        let code = self.code.unwrap_or(Code::Cancelled);
        self.call.finish(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_proto_file() {
        let methods = known_methods();
        for m in [
            "shoal.v1.Control/ListServices",
            "shoal.v1.Dispatcher/ReportUsage",
            "shoal.v1.Daemon/Info",
            "shoal.v1.Raft/StreamSnapshot",
        ] {
            assert!(methods.contains(m), "{m} missing from {methods:?}");
        }
        assert_eq!(
            service_and_method("/shoal.v1.Control/ListServices"),
            ("shoal.v1.Control".into(), "ListServices".into())
        );
        assert_eq!(
            service_and_method("/shoal.v1.Control/NoSuchThing"),
            ("unknown".into(), "unknown".into())
        );
        assert_eq!(
            service_and_method("/etc/passwd"),
            ("unknown".into(), "unknown".into())
        );
        assert_eq!(code_label(Code::Ok), "OK");
        assert_eq!(code_label(Code::NotFound), "NotFound");
    }
}
