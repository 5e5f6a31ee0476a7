//! The native server of the OaaS invocation protocol (`oprc.OprcFunction`): the
//! pure-Rust server of the `oprc-rpc` crate (tonic, tokio) with an [`Invoker`] that hands
//! each call to Python once.
//!
//! The server's I/O (HTTP/2, protobuf decoding and encoding, limits, health, shutdown)
//! runs on a tokio runtime of its own and never takes the GIL. A call is queued here and
//! the Python event loop is woken through a socket it watches (`loop.add_reader` on
//! [`NativeServer::wake_fd`]; one wake-up per batch, written without the GIL). On that
//! loop, [`NativeServer::drain`] passes each queued call to the Python `entry` callable
//! (`oaas_sdk.rpc.native_server`), which runs the dispatch and calls the [`Completer`]
//! with the response fields; the response is encoded in Rust.
//!
//! Answers go back in batches too: a [`Completer`] queues its answer, and a replier task
//! on the runtime hands the queued answers to their calls when the Python side flushes
//! ([`NativeServer::flush`], at the end of the loop's turn) or [`FLUSH_AT`] answers are
//! queued. Waking a tokio worker from the loop's thread (a futex or eventfd write, and the
//! runtime's queue lock) once per answer cost the loop more than the dispatch itself.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use oprc_rpc::pb::InvocationResponse;
use oprc_rpc::{CallKind, Invocation, Invoker, RunningServer, ServerConfig, TlsConfig};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tokio::sync::{oneshot, Notify};
use tonic::Status;

/// Components this module provides natively, reported by `build_info()`.
pub const COMPONENTS: &[&str] = &["rpc_server"];

/// The tokio runtime of the native servers (created on first use; its worker threads
/// never hold the GIL while serving).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let threads = rpc_threads()?;
    let _ = THREADS.set(threads);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("oaas-rpc")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the RPC runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

/// The worker threads the runtime was built with.
static THREADS: OnceLock<usize> = OnceLock::new();

/// Worker threads of the runtime: `OAAS_RPC_THREADS` when set (1 to 64), else
/// [`DEFAULT_THREADS`].
fn rpc_threads() -> PyResult<usize> {
    match std::env::var("OAAS_RPC_THREADS") {
        Err(_) => Ok(DEFAULT_THREADS),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(PyValueError::new_err(format!(
                "OAAS_RPC_THREADS must be a number of threads from 1 to 64, not {v:?}"
            ))),
        },
    }
}

/// The server's I/O threads by default. The Python side (one event loop thread) is the
/// limit of a served call, so more I/O threads only compete with it for cores.
pub const DEFAULT_THREADS: usize = 2;

type Reply = Result<InvocationResponse, Status>;

/// Queued answers are handed to their calls at once when this many wait (else when the
/// Python side flushes at the end of its loop's turn): tokio encodes and sends the first
/// answers while the loop runs the next calls.
pub const FLUSH_AT: usize = 16;

struct Pending {
    id: u64,
    call: Invocation,
    reply: oneshot::Sender<Reply>,
}

/// What the I/O side and the Python loop share.
struct Bridge {
    queue: Mutex<Vec<Pending>>,
    /// Calls whose client went away (or whose deadline passed, or whose stop's grace
    /// period ended) before they were answered, by id.
    gone: Mutex<Vec<u64>>,
    next_id: AtomicU64,
    /// A wake-up byte is written and not yet drained.
    scheduled: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    /// Answers queued by [`Completer`]s, not yet handed to their calls.
    out: Mutex<Vec<(oneshot::Sender<Reply>, Reply)>>,
    /// Wakes the replier task (which hands the queued answers to their calls).
    out_notify: Arc<Notify>,
    /// The server object is gone: the replier task ends.
    closed: AtomicBool,
}

impl Bridge {
    /// Queue an answer; returns how many are queued now.
    fn queue_reply(&self, tx: oneshot::Sender<Reply>, r: Reply) -> usize {
        let mut q = match self.out.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        q.push((tx, r));
        q.len()
    }

    /// Have the replier task hand the queued answers to their calls (one wake-up of a
    /// tokio worker for the batch).
    fn flush(&self) {
        let pending = match self.out.lock() {
            Ok(q) => !q.is_empty(),
            Err(poisoned) => !poisoned.into_inner().is_empty(),
        };
        if pending {
            self.out_notify.notify_one();
        }
    }

    fn take_out(&self) -> Vec<(oneshot::Sender<Reply>, Reply)> {
        match self.out.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn push(&self, p: Pending) {
        match self.queue.lock() {
            Ok(mut q) => q.push(p),
            Err(poisoned) => poisoned.into_inner().push(p),
        }
        self.wake();
    }

    fn push_gone(&self, id: u64) {
        match self.gone.lock() {
            Ok(mut q) => q.push(id),
            Err(poisoned) => poisoned.into_inner().push(id),
        }
        self.wake();
    }

    fn wake(&self) {
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a wake-up is pending already.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    fn take(&self) -> (Vec<Pending>, Vec<u64>) {
        // Consume the wake-up bytes first, then clear the flag, then take the queues: an
        // item queued after the clear writes a new byte (served by the next drain), one
        // queued before it is in the queues taken here.
        let mut buf = [0u8; 256];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        self.scheduled.store(false, Ordering::SeqCst);
        let calls = match self.queue.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let gone = match self.gone.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        (calls, gone)
    }
}

/// Reports a call to the Python side as gone when its future is dropped before the
/// answer came (tonic drops it when the client resets the stream, the deadline passes,
/// or a stop's grace period ends): a call still running there is cancelled.
struct GoneOnDrop {
    bridge: Arc<Bridge>,
    id: u64,
    armed: bool,
}

impl GoneOnDrop {
    /// The call was answered: nothing to report. (A method, not a field assignment in
    /// the future: an `async move` block would capture just the copied field and drop
    /// the guard when `invoke` returns.)
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.bridge.push_gone(self.id);
        }
    }
}

#[derive(Clone)]
struct PyInvoker {
    bridge: Arc<Bridge>,
}

impl Invoker for PyInvoker {
    fn invoke(&self, call: Invocation) -> impl Future<Output = Reply> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let id = self.bridge.next_id.fetch_add(1, Ordering::Relaxed);
        self.bridge.push(Pending {
            id,
            call,
            reply: tx,
        });
        let mut guard = GoneOnDrop {
            bridge: self.bridge.clone(),
            id,
            armed: true,
        };
        async move {
            let r = rx.await;
            guard.disarm();
            r.unwrap_or_else(|_| {
                Err(Status::unavailable(
                    "the server stopped before the call was run",
                ))
            })
        }
    }
}

/// Completes one call: `done(status, payload, headers, invocation_id)` answers with the
/// response (`payload` bytes or None, `headers` a dict of str); `done.fail(message)` ends
/// the RPC with gRPC status INTERNAL. Later calls do nothing (the client may be gone).
///
/// The answer is queued: both return True when it is the first one queued since the
/// last flush, and the caller must then have `NativeServer.flush()` called soon (at the
/// end of the event loop's turn: `loop.call_soon(server.flush)`); [`FLUSH_AT`] queued
/// answers are sent without waiting for it.
#[pyclass(frozen, module = "oaas_sdk._native")]
pub struct Completer {
    id: u64,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    bridge: Arc<Bridge>,
}

impl Completer {
    fn send(&self, r: Reply) -> bool {
        let tx = match self.reply.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(tx) = tx else { return false };
        if tx.is_closed() {
            return false; // the caller is gone: nobody to answer
        }
        let queued = self.bridge.queue_reply(tx, r);
        if queued >= FLUSH_AT {
            self.bridge.out_notify.notify_one();
        }
        queued == 1
    }
}

#[pymethods]
impl Completer {
    /// The call's id (unique per server), as `NativeServer.drain` reports it when the
    /// call's client is gone.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Whether the caller no longer waits for the answer (gone, deadline passed).
    #[getter]
    fn closed(&self) -> bool {
        match self.reply.lock() {
            Ok(g) => g.as_ref().is_none_or(|tx| tx.is_closed()),
            Err(p) => p.into_inner().as_ref().is_none_or(|tx| tx.is_closed()),
        }
    }

    #[pyo3(signature = (status, payload, headers, invocation_id))]
    fn __call__(
        &self,
        status: i32,
        payload: Option<&[u8]>,
        headers: HashMap<String, String>,
        invocation_id: String,
    ) -> bool {
        self.send(Ok(InvocationResponse {
            payload: payload.map(Bytes::copy_from_slice),
            status,
            headers,
            invocation_id,
        }))
    }

    fn fail(&self, message: String) -> bool {
        self.send(Err(Status::internal(message)))
    }
}

/// A running native `oprc.OprcFunction` server.
///
/// `NativeServer(host, port, max_message_bytes, entry, tls_cert=None, tls_key=None,
/// tls_client_ca=None)` binds and serves at once (port 0: any free port, see `port`);
/// with `tls_cert` and `tls_key` (PEM bytes: certificate chain, private key) it serves
/// TLS (rustls), and with `tls_client_ca` (PEM bytes) it requires client certificates
/// signed by those CAs. Raises `OSError` when the address cannot be bound, `ValueError`
/// for a malformed host or a certificate/key that does not parse. Calls wait until the owning event loop drains them:
/// watch `wake_fd` with `loop.add_reader(fd, server.drain)`. `entry(is_obj, cls_id,
/// fn_id, object_id, partition_id, payload, options, done)` is called on that loop once
/// per call (`object_id` str or None, `payload` bytes, `options` dict) and must
/// eventually call `done` (a `Completer`) and then, when `done` returns True, `flush`.
#[pyclass(frozen, module = "oaas_sdk._native")]
pub struct NativeServer {
    bridge: Arc<Bridge>,
    entry: Py<PyAny>,
    port: u16,
    inflight: Arc<AtomicUsize>,
    server: Mutex<Option<RunningServer>>,
    /// Set once stopped: whether every call in flight completed in time.
    stopped: Arc<Stopped>,
}

/// The outcome of [`NativeServer::stop`], handed from the tokio task that stops the
/// server to a thread waiting in [`NativeServer::wait_stopped`]. No Python is touched on
/// the tokio side: a tokio thread attaching to the interpreter to report it could still be
/// releasing its thread state when the interpreter finalizes (a fatal `PyGILState_Release`
/// error at exit, seen after `stop_server()` right before a process ended).
#[derive(Default)]
struct Stopped {
    finished: Mutex<Option<bool>>,
    cond: std::sync::Condvar,
}

impl Stopped {
    fn set(&self, finished: bool) {
        let mut g = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(finished);
        self.cond.notify_all();
    }
}

#[pymethods]
impl NativeServer {
    #[new]
    #[pyo3(signature = (host, port, max_message_bytes, entry, tls_cert=None, tls_key=None,
                        tls_client_ca=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        max_message_bytes: usize,
        entry: Py<PyAny>,
        tls_cert: Option<Vec<u8>>,
        tls_key: Option<Vec<u8>>,
        tls_client_ca: Option<Vec<u8>>,
    ) -> PyResult<Self> {
        let tls = match (tls_cert, tls_key) {
            (Some(cert_pem), Some(key_pem)) => Some(TlsConfig {
                cert_pem,
                key_pem,
                client_ca_pem: tls_client_ca,
            }),
            (None, None) if tls_client_ca.is_none() => None,
            _ => {
                return Err(PyValueError::new_err(
                    "TLS needs both a certificate and its key (tls_cert, tls_key)",
                ))
            }
        };
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|e| PyValueError::new_err(format!("host {host:?}: {e}")))?;
        let addr = SocketAddr::new(ip, port);
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let bridge = Arc::new(Bridge {
            queue: Mutex::new(Vec::new()),
            gone: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            scheduled: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            out: Mutex::new(Vec::new()),
            out_notify: Arc::new(Notify::new()),
            closed: AtomicBool::new(false),
        });
        let rt = runtime()?;
        spawn_replier(rt, &bridge);
        let invoker = PyInvoker {
            bridge: bridge.clone(),
        };
        let cfg = ServerConfig {
            max_message_bytes,
            max_concurrent_streams: None,
            tls,
        };
        let server = py
            .detach(|| rt.block_on(oprc_rpc::start(addr, invoker, cfg)))
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
                _ => PyOSError::new_err(format!("cannot bind {addr}: {e}")),
            })?;
        Ok(NativeServer {
            bridge,
            entry,
            port: server.local_addr().port(),
            inflight: server.inflight_counter(),
            server: Mutex::new(Some(server)),
            stopped: Arc::default(),
        })
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// The I/O (tokio worker) threads serving every native server of this process
    /// (`OAAS_RPC_THREADS` when the first one started).
    #[getter]
    fn io_threads(&self) -> usize {
        THREADS.get().copied().unwrap_or(DEFAULT_THREADS)
    }

    /// Calls being served now (decoded, not yet answered).
    #[getter]
    fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// A file descriptor that turns readable when calls are queued (for
    /// `loop.add_reader`); valid until the server is dropped.
    #[getter]
    fn wake_fd(&self) -> i32 {
        self.bridge.wake_rx.as_raw_fd()
    }

    /// Hand the answers `Completer`s queued to their calls (one wake-up of the I/O
    /// threads for the batch). Cheap when nothing is queued.
    fn flush(&self) {
        self.bridge.flush();
    }

    /// Pass the queued calls to `entry` (on the event loop's thread); returns the ids
    /// (`Completer.id`) of calls passed on earlier whose client has gone since (gone,
    /// deadline passed, or a stop's grace period over): the caller cancels those still
    /// running. A call whose client is already gone is skipped (it never runs). An
    /// exception raised by `entry` fails that call (INTERNAL) and is raised after the
    /// others are passed on.
    fn drain(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        let (items, gone) = self.bridge.take();
        let entry = self.entry.bind(py);
        let mut first_err: Option<PyErr> = None;
        for p in items {
            if p.reply.is_closed() {
                continue;
            }
            let c = p.call;
            let options = PyDict::new(py);
            for (k, v) in &c.options {
                options.set_item(k, v)?;
            }
            let done = Py::new(
                py,
                Completer {
                    id: p.id,
                    reply: Mutex::new(Some(p.reply)),
                    bridge: self.bridge.clone(),
                },
            )?;
            let r = entry.call1((
                c.kind == CallKind::Obj,
                c.cls_id,
                c.fn_id,
                c.object_id,
                c.partition_id,
                PyBytes::new(py, &c.payload),
                options,
                done.clone_ref(py),
            ));
            if let Err(e) = r {
                done.get().fail(format!("internal error: {e}"));
                first_err.get_or_insert(e);
            }
        }
        // calls that completed at once (eager tasks) leave with this batch
        self.bridge.flush();
        match first_err {
            Some(e) => Err(e),
            None => Ok(gone),
        }
    }

    /// Stop serving: no new calls, calls in flight get `grace` seconds (None or 0: they
    /// end at once with UNAVAILABLE), then the port is released. Returns immediately;
    /// [`NativeServer::wait_stopped`] waits for the end. A second stop changes nothing.
    /// `ValueError` for a negative or non-finite `grace`.
    #[pyo3(signature = (grace))]
    fn stop(&self, grace: Option<f64>) -> PyResult<()> {
        let grace = match grace {
            Some(g) if !(g >= 0.0 && g.is_finite()) => {
                return Err(PyValueError::new_err(format!(
                    "grace must be a finite number of seconds >= 0, not {g}"
                )))
            }
            Some(g) => Some(Duration::from_secs_f64(g)),
            None => None,
        };
        let server = match self.server.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        self.bridge.flush();
        let rt = runtime()?;
        let Some(server) = server else {
            return Ok(());
        };
        let stopped = self.stopped.clone();
        rt.spawn(async move {
            let finished = server.stop(grace).await;
            stopped.set(finished);
        });
        Ok(())
    }

    /// Wait, without the GIL, until the server stopped by [`NativeServer::stop`] has
    /// stopped: `True` when every call in flight completed in time, `False` when some were
    /// ended with UNAVAILABLE; `None` when `timeout` seconds (None: no limit) passed first
    /// or the server was never stopped. Run it on a thread of its own (the server's loop
    /// must keep running the calls in flight).
    #[pyo3(signature = (timeout=None))]
    fn wait_stopped(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<bool>> {
        let limit = match timeout {
            Some(t) if !(t >= 0.0 && t.is_finite()) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a finite number of seconds >= 0, not {t}"
                )))
            }
            Some(t) => Some(std::time::Instant::now() + Duration::from_secs_f64(t)),
            None => None,
        };
        let stopped = self.stopped.clone();
        let never_started = self.server.lock().map(|g| g.is_some()).unwrap_or(false);
        if never_started {
            return Ok(None);
        }
        Ok(py.detach(move || {
            let mut g = stopped.finished.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(f) = *g {
                    return Some(f);
                }
                match limit {
                    None => g = stopped.cond.wait(g).unwrap_or_else(|p| p.into_inner()),
                    Some(at) => {
                        let left = at.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            return None;
                        }
                        g = stopped
                            .cond
                            .wait_timeout(g, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
        }))
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        // the replier task ends (answers still queued are dropped with the bridge: their
        // calls end with UNAVAILABLE)
        self.bridge.closed.store(true, Ordering::SeqCst);
        self.bridge.out_notify.notify_one();
    }
}

/// The task that hands queued answers to their calls, on a tokio worker (so waking the
/// calls' tasks needs no cross-thread wake-up each). It holds the bridge weakly and ends
/// when the server object is dropped.
fn spawn_replier(rt: &tokio::runtime::Runtime, bridge: &Arc<Bridge>) {
    let weak = Arc::downgrade(bridge);
    let notify = bridge.out_notify.clone();
    rt.spawn(async move {
        loop {
            notify.notified().await;
            let Some(b) = weak.upgrade() else { break };
            if b.closed.load(Ordering::SeqCst) {
                break;
            }
            let batch = b.take_out();
            drop(b);
            for (tx, r) in batch {
                let _ = tx.send(r);
            }
        }
    });
}

/// Add the RPC classes to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeServer>()?;
    m.add_class::<Completer>()?;
    Ok(())
}
