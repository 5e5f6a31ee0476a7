//! The `oprc.OprcFunction` server: tonic over a bound TCP listener, one [`Invoker`] call
//! per request, plus `grpc.health.v1.Health`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::pb::oprc_function_server::{OprcFunction, OprcFunctionServer};
use crate::pb::{InvocationRequest, InvocationResponse, ObjectInvocationRequest};

/// The gRPC service name of the protocol.
pub const SERVICE: &str = "oprc.OprcFunction";

/// How long a stop waits for connections to close once no call runs any more.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much earlier than tonic's own timer the server's deadline fires (see
/// [`Deadline`]): more than the timer wheel's 1 ms resolution.
const DEADLINE_MARGIN: Duration = Duration::from_millis(2);

/// Which rpc a call came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `InvokeFn`: a class-level function, no object.
    Fn,
    /// `InvokeObj`: a method of one object.
    Obj,
}

/// One decoded call, as the [`Invoker`] gets it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `InvokeFn` or `InvokeObj`.
    pub kind: CallKind,
    /// Partition of the object (`InvokeObj`) or of the call.
    pub partition_id: u32,
    /// `"<package>.<ClassName>"`.
    pub cls_id: String,
    /// The function or method name.
    pub fn_id: String,
    /// Request options (protocol extensions such as `oaas-args`).
    pub options: HashMap<String, String>,
    /// The argument payload.
    pub payload: Bytes,
    /// `InvokeObj` only: field 7, else a non-zero field 2 (numeric ids of older platform
    /// versions) as its decimal string; `None` when neither is set or for `InvokeFn`.
    pub object_id: Option<String>,
}

impl Invocation {
    fn from_fn(r: InvocationRequest) -> Self {
        Invocation {
            kind: CallKind::Fn,
            partition_id: r.partition_id,
            cls_id: r.cls_id,
            fn_id: r.fn_id,
            options: r.options,
            payload: r.payload,
            object_id: None,
        }
    }

    fn from_obj(r: ObjectInvocationRequest) -> Self {
        let object_id = match r.object_id {
            Some(id) => Some(id),
            None if r.legacy_object_id != 0 => Some(r.legacy_object_id.to_string()),
            None => None,
        };
        Invocation {
            kind: CallKind::Obj,
            partition_id: r.partition_id,
            cls_id: r.cls_id,
            fn_id: r.fn_id,
            options: r.options,
            payload: r.payload,
            object_id,
        }
    }
}

/// What runs a call. The server calls [`Invoker::invoke`] once per request, on a tokio
/// worker, and sends what the future returns. Request and method errors are statuses
/// inside the [`InvocationResponse`] (`APP_ERROR`, `INVALID_REQUEST`, ...); an `Err` is
/// a failure of the invoker itself and ends the RPC with that gRPC status.
///
/// The future is dropped when the client goes away before it completes (cancellation):
/// an invoker whose work must not be cut short runs it elsewhere and awaits its result.
pub trait Invoker: Send + Sync + 'static {
    /// Run one call.
    fn invoke(
        &self,
        call: Invocation,
    ) -> impl Future<Output = Result<InvocationResponse, Status>> + Send + 'static;
}

/// Answers every call with `OKAY` and the request's payload: the benchmark's floor.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoInvoker;

impl Invoker for EchoInvoker {
    fn invoke(
        &self,
        call: Invocation,
    ) -> impl Future<Output = Result<InvocationResponse, Status>> + Send + 'static {
        std::future::ready(Ok(InvocationResponse {
            payload: Some(call.payload),
            status: 0,
            headers: HashMap::new(),
            invocation_id: String::new(),
        }))
    }
}

/// TLS of the server (rustls, ring provider): its certificate chain and private key, PEM,
/// and optionally the CA certificates (PEM) a client certificate must chain to (then
/// every client must present one).
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM (leaf first).
    pub cert_pem: Vec<u8>,
    /// The private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
    /// CA certificates that client certificates must chain to, PEM; `None`: clients
    /// are not asked for a certificate.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field(
                "client_ca_pem",
                &self.client_ca_pem.as_ref().map(|c| c.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request or response message (bytes); larger requests end with
    /// `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: usize,
    /// HTTP/2 streams (concurrent calls) per connection; `None`: h2's default.
    pub max_concurrent_streams: Option<u32>,
    /// Serve TLS (`None`: plaintext HTTP/2).
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: 16 << 20,
            max_concurrent_streams: None,
            tls: None,
        }
    }
}

struct Service<I> {
    invoker: Arc<I>,
    inflight: Arc<AtomicUsize>,
    /// Turns true when the grace period of a stop is over: calls still running end.
    cancel: watch::Receiver<bool>,
}

impl<I: Invoker> Service<I> {
    async fn run(&self, call: Invocation) -> Result<Response<InvocationResponse>, Status> {
        let _g = InflightGuard::new(&self.inflight);
        let mut cancel = self.cancel.clone();
        tokio::select! {
            r = self.invoker.invoke(call) => r.map(Response::new),
            _ = cancel.wait_for(|c| *c) => Err(Status::unavailable(
                "the server stopped before the call finished (grace period over)")),
        }
    }
}

/// Counts a call in flight while alive (also when the call is cancelled).
struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        InflightGuard(n.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl<I: Invoker> OprcFunction for Service<I> {
    async fn invoke_fn(
        &self,
        request: Request<InvocationRequest>,
    ) -> Result<Response<InvocationResponse>, Status> {
        self.run(Invocation::from_fn(request.into_inner())).await
    }

    async fn invoke_obj(
        &self,
        request: Request<ObjectInvocationRequest>,
    ) -> Result<Response<InvocationResponse>, Status> {
        self.run(Invocation::from_obj(request.into_inner())).await
    }
}

/// tonic ends a request over the decoding limit with `OUT_OF_RANGE`; gRPC servers
/// (grpcio, grpc-go, the Python server) say `RESOURCE_EXHAUSTED`, which clients expect.
/// The handlers never answer `OUT_OF_RANGE` themselves: invocation errors travel in the
/// response message.
/// The status travels in the headers (`grpc-message` percent-encoded) (trailers-only responses) or in the trailers.
fn resource_exhausted_for_oversized(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    fix_oversized_status(resp.headers_mut());
    resp.map(|b| tonic::body::Body::new(FixTrailers(b)))
}

fn fix_oversized_status(h: &mut http::HeaderMap) {
    let oversized = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message").is_some_and(|m| {
            contains(m.as_bytes(), b"too%20large") || contains(m.as_bytes(), b"too large")
        });
    if oversized {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A response body whose trailers go through [`fix_oversized_status`].
struct FixTrailers(tonic::body::Body);

impl http_body::Body for FixTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(t) = frame.trailers_mut() {
                    fix_oversized_status(t);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Answers `DEADLINE_EXCEEDED` when a call's deadline (`grpc-timeout`) passes, as gRPC
/// servers do (grpcio, grpc-go, the Python server). tonic's own deadline timer (outside
/// the layers a server can add) ends such a call with `CANCELLED` ("Timeout expired");
/// this one is set [`DEADLINE_MARGIN`] earlier, and tonic polls the service before its
/// timer, so the call ends here. The call's future is dropped as with tonic's timer
/// (the call is cancelled where it runs).
#[derive(Debug, Clone, Copy, Default)]
struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
struct Deadline<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, BoxFuture<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(timeout) = grpc_timeout(req.headers()) else {
            return futures_util::future::Either::Left(self.inner.call(req));
        };
        let sleep = tokio::time::sleep(timeout.saturating_sub(DEADLINE_MARGIN));
        let call = self.inner.call(req);
        futures_util::future::Either::Right(Box::pin(async move {
            tokio::select! {
                biased;
                r = call => r,
                _ = sleep => Ok(Status::deadline_exceeded("Deadline Exceeded").into_http()),
            }
        }))
    }
}

/// The `grpc-timeout` header's duration (gRPC over HTTP/2: at most 8 digits and a unit);
/// `None` when absent or malformed (tonic ignores it then too).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let s = headers.get("grpc-timeout")?.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (value, unit) = s.split_at(s.len() - 1);
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A server started by [`start`].
pub struct RunningServer {
    addr: SocketAddr,
    inflight: Arc<AtomicUsize>,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    cancel: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// The bound address (the port is the chosen one when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls being served now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A counter of calls in flight that stays valid after the server is moved.
    pub fn inflight_counter(&self) -> Arc<AtomicUsize> {
        self.inflight.clone()
    }

    /// Stop: the health service says `NOT_SERVING`, no new connections or calls are
    /// accepted (HTTP/2 GOAWAY), calls in flight get `grace` to finish (`None`: they are
    /// cancelled at once), then the listener and connections are closed. Returns whether
    /// every call in flight finished within the grace period.
    pub async fn stop(mut self, grace: Option<Duration>) -> bool {
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status(SERVICE, ServingStatus::NotServing)
            .await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let finished = match grace {
            Some(g) if !g.is_zero() => tokio::time::timeout(g, &mut self.task).await.is_ok(),
            _ => self.inflight() == 0,
        };
        if !finished {
            // calls still running end with UNAVAILABLE; the connections then close
            let _ = self.cancel.send(true);
            if tokio::time::timeout(CLOSE_TIMEOUT, &mut self.task)
                .await
                .is_err()
            {
                self.task.abort();
                let _ = (&mut self.task).await;
            }
        } else if !self.task.is_finished() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut self.task).await;
            self.task.abort();
        }
        finished
    }
}

/// Bind `addr` (with `SO_REUSEADDR`, so a restarted server gets its port back at once)
/// and serve `invoker` on it. Must be called within a tokio runtime. Errors: the address
/// cannot be bound; a TLS certificate, key or CA that does not parse (kind
/// `InvalidInput`, checked before binding).
pub async fn start<I: Invoker>(
    addr: SocketAddr,
    invoker: I,
    cfg: ServerConfig,
) -> io::Result<RunningServer> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &cfg.tls {
        let mut tc = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
        );
        if let Some(ca) = &tls.client_ca_pem {
            tc = tc.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(tc).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TLS certificate or key: {}", error_chain(&e)),
            )
        })?;
    }
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let local = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let inflight = Arc::new(AtomicUsize::new(0));
    let (cancel, cancel_rx) = watch::channel(false);
    let svc = OprcFunctionServer::new(Service {
        invoker: Arc::new(invoker),
        inflight: inflight.clone(),
        cancel: cancel_rx,
    })
    .max_decoding_message_size(cfg.max_message_bytes)
    .max_encoding_message_size(cfg.max_message_bytes);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let (tx, rx) = oneshot::channel::<()>();
    let router = builder
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .layer(tower::util::MapResponseLayer::new(
            resource_exhausted_for_oversized,
        ))
        .layer(DeadlineLayer)
        .add_service(svc)
        .add_service(health_svc);
    let task = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr: local,
        inflight,
        health,
        shutdown: Some(tx),
        cancel,
        task,
    })
}
