//! Python bindings of the engine (`oprc_core::batcher::Engine`): `oaas_sdk._native.Engine`,
//! `Ticket`, `FailureLog`, and the completions of commits (one token map).
//! Thin: convert arguments once, release the GIL around every blocking call, map errors
//! to `oaas_sdk.errors`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::memory::PyMemoryStore;
use crate::object::commit::{self, Known, NativeWaiter};
use crate::object::future::CommitFuture;

use oprc_core::batcher::{Engine, EngineConfig, FailureLog, Outcome, Ticket};
use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::{StoredObject, WriteRecord};
use oprc_core::store::lmdb::{LmdbStore, DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE};
use oprc_core::store::redis::RedisStore;
use oprc_core::store::{AnyStore, StoreError};

pyo3::import_exception!(oaas_sdk.errors, StorageError);
pyo3::import_exception!(oaas_sdk.errors, ConflictError);

fn storage_err(e: StoreError) -> PyErr {
    StorageError::new_err(e.0)
}

fn outcome_err(o: &Outcome) -> Option<PyErr> {
    match o {
        Outcome::Written => None,
        Outcome::Conflict(m) => Some(ConflictError::new_err(m.clone())),
        Outcome::Storage(m) => Some(StorageError::new_err(m.clone())),
    }
}

// --- FailureLog --------------------------------------------------------------------

/// Failures of an engine that no caller is told of (see `Engine.failure_log`). Holds only
/// the log, not the engine: a thread blocked in `take` does not keep the engine alive.
#[pyclass(name = "FailureLog", module = "oaas_sdk._native", frozen)]
pub struct PyFailureLog(Arc<FailureLog>);

#[pymethods]
impl PyFailureLog {
    /// Block, with the GIL released, until failure lines are there and take them all;
    /// `[]` when `timeout` (seconds) passes first, `None` once the engine is closed and
    /// every line was taken.
    #[pyo3(signature = (timeout=None))]
    fn take(&self, py: Python<'_>, timeout: Option<f64>) -> Option<Vec<String>> {
        let log = Arc::clone(&self.0);
        // An infinite (or unrepresentable) timeout waits without one.
        let limit = timeout.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok());
        py.detach(move || log.take(limit))
    }

    /// Block, with the GIL released, until failure lines are there (`True`) or `timeout`
    /// (seconds) passes (`False`), without taking them; `None` once the engine is closed
    /// and every line was taken.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> Option<bool> {
        let log = Arc::clone(&self.0);
        let limit = timeout.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok());
        py.detach(move || log.wait(limit))
    }
}

// --- Ticket --------------------------------------------------------------------------

/// Completion of one commit submitted to the native engine.
#[pyclass(name = "Ticket", module = "oaas_sdk._native", frozen)]
pub struct PyTicket {
    ticket: Ticket,
}

#[pymethods]
impl PyTicket {
    /// Whether the commit has completed (written, refused or failed).
    fn done(&self) -> bool {
        self.ticket.outcome().is_some()
    }

    /// The commit's error (`ConflictError` or `StorageError`), or `None`.
    #[getter]
    fn error(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let o = self.ticket.outcome()?;
        outcome_err(&o).map(|e| e.into_value(py).into_any())
    }

    /// Block until done, with the GIL released; raise the commit's error.
    ///
    /// `timeout` in seconds; `TimeoutError` when it passes first.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = self.ticket.clone();
        let limit = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        match py.detach(move || t.wait(limit)) {
            None => Err(PyTimeoutError::new_err("commit did not complete in time")),
            Some(o) => outcome_err(&o).map_or(Ok(()), Err),
        }
    }
}

// --- Engine --------------------------------------------------------------------------

/// The object id of a Python call: an int in `[0, 2**64)` or a str (`TypeError` else).
/// Used as `#[pyo3(from_py_with = object_id)]`.
pub(crate) fn object_id(ob: &Bound<'_, PyAny>) -> PyResult<ObjectId> {
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(ObjectId::Str(s.to_str()?.to_owned()));
    }
    match ob.extract::<u64>() {
        Ok(n) => Ok(ObjectId::Num(n)),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "object_id must be an int in [0, 2**64) or a str, not {}",
            ob.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string())
        ))),
    }
}

/// The native engine over an LMDB, a Redis or a memory store: batcher, persister (group
/// commit), reads.
///
/// `path`: directory of the LMDB environment (created when missing; layout in
/// docs/format.md); with `redis=(prefix, name, retry_deadline_s, cluster, ca_file,
/// wait_replicas, wait_timeout_s)`
/// instead the URL of one Redis server (`redis[s]://[[user]:password@]host:port[/db]`, no
/// query) or, with `cluster`, the startup nodes of a Redis Cluster
/// (`redis[s]://[[user]:password@]host:port`, one per line), whose keys start with
/// `prefix`, named `name` in messages, retried for `retry_deadline_s` seconds while
/// unreachable; TLS verified against the CA certificates (PEM) in file `ca_file` (`None`:
/// the system's; oprc-core's `store::redis`); with `wait_replicas` > 0, `WAIT` for that
/// many replicas (at most `wait_timeout_s` seconds) after each batch.
///
/// `durability`: `"sync"` (a ticket completes once its batch is fsynced) or `"async"`
/// (once queued). `batch_max_entries` (count) and `batch_max_delay_ms` (ms)
/// close a batch. `map_size` / `max_map_size`: initial and largest LMDB map, in bytes.
/// `pending_max_bytes`: write throttling, a commit waits (GIL released) while more than
/// this many bytes of entry values are queued and unwritten (0: no bound).
/// With `memory=store` (a `MemoryStore`; `path` is ignored) the engine writes into that
/// store, in the committing thread (no persister): a commit's outcome is known when
/// `submit` or `commit_object` returns, whatever `durability` says.
/// Raises `StorageError` when the store cannot be opened.
#[pyclass(name = "Engine", module = "oaas_sdk._native", frozen)]
pub struct PyEngine {
    inner: RwLock<Option<Arc<Engine<AnyStore>>>>,
    name: String,
    durable: bool,
    /// Futures of durable `commit_object_future` commits, by token, until resolved.
    waiters: Mutex<WaiterMap>,
    /// Tokens of those commits: from 2^62 up, apart from the callers' own tokens.
    next_token: AtomicU64,
    /// The read end of the completion socket pair (`notify_fd`), made on first use. It
    /// lives as long as this object, so an event loop never watches a closed descriptor.
    #[cfg(unix)]
    notify: OnceLock<std::os::unix::net::UnixStream>,
}

/// The futures of `commit_object_future` commits by token (foldhash: two lookups per
/// commit on the event loop's thread).
type WaiterMap = HashMap<u64, NativeWaiter, foldhash::fast::RandomState>;

/// An error of a one-call commit, and what the native `commit_async` does with it.
pub(crate) enum Failed {
    /// Nothing was queued and the object is unchanged: the Python definition may redo
    /// the commit and report the error in its own words.
    Retry(PyErr),
    /// Reported as it is: the commit was queued and applying it failed (a malformed
    /// object), or a signal interrupted the write throttling (nothing queued).
    Final(PyErr),
}

impl Failed {
    pub(crate) fn into_err(self) -> PyErr {
        match self {
            Failed::Retry(e) | Failed::Final(e) => e,
        }
    }
}

/// Write throttling: wait, with the GIL released, while `engine` holds more unwritten
/// bytes than its bound (`Engine::begin_throttle`); signals are checked every 100 ms, so
/// Ctrl-C interrupts the wait (`KeyboardInterrupt`; nothing is queued then).
fn throttle(py: Python<'_>, engine: &Engine<AnyStore>) -> PyResult<()> {
    if !engine.over_pending_limit() {
        return Ok(());
    }
    engine.begin_throttle();
    while !py.detach(|| engine.wait_drained(Duration::from_millis(100))) {
        py.check_signals()?;
    }
    Ok(())
}

/// `asyncio.current_task(event_loop)`: the task running on that loop now, or `None`.
fn current_task<'py>(
    py: Python<'py>,
    event_loop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CURRENT_TASK
        .import(py, "asyncio", "current_task")?
        .call1((event_loop,))
}

/// First token of the commits whose futures this engine resolves itself.
const NATIVE_TOKENS: u64 = 1 << 62;

impl PyEngine {
    fn waiters(&self) -> std::sync::MutexGuard<'_, WaiterMap> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completions as Python sees them: `[(token, error or None), ...]` for the tokens
    /// of the caller's own waiters; the futures of `commit_object_future` commits are
    /// resolved here instead: at once when they belong to `here` (the loop running this
    /// call), else through their loop's `call_soon_threadsafe`.
    fn route<'py>(
        &self,
        py: Python<'py>,
        items: Vec<(u64, Outcome)>,
        here: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut mine = Vec::new();
        {
            let mut waiters = self.waiters();
            for (token, outcome) in items {
                match waiters.remove(&token) {
                    Some(w) => mine.push((w, outcome)),
                    None => {
                        let err = outcome_err(&outcome).map(|e| e.into_value(py).into_any());
                        out.append((token, err))?;
                    }
                }
            }
        } // unlocked: settling runs Python code, which may commit again
        if mine.is_empty() {
            return Ok(out);
        }
        // A loop's own callback with no task running (the reader of the completion
        // socket) runs the futures' callbacks (the tasks' wake-ups) directly. (Should the
        // check fail, they are scheduled instead: every future taken here must resolve.)
        let direct = here.is_some_and(|h| current_task(py, h).is_ok_and(|t| t.is_none()));
        // Every future of this loop is done before any callback runs (see
        // `CommitFuture::set_done`).
        let mut done = Vec::with_capacity(mine.len());
        for (w, outcome) in mine {
            let error = outcome_err(&outcome);
            if here.is_some_and(|h| h.is(w.event_loop.bind(py))) {
                if let (future, Some(callbacks)) = w.set_done(py, error) {
                    done.push((future, callbacks));
                }
            } else {
                w.settle_threadsafe(py, error);
            }
        }
        for (future, callbacks) in done {
            CommitFuture::run_callbacks(future.bind(py), callbacks, direct);
        }
        Ok(out)
    }

    /// `commit_object`: see there.
    /// `known`: the object's bookkeeping when the caller read it already.
    /// On the memory store (inline) the commit is written before this returns; when it
    /// is refused the object is undone as `OaasObject.commit_async` does after a failed
    /// submission (applied, then `_oaas_undo_entries`: old version and committed bytes, its
    /// fields dirty again) and the error is `Failed::Final`.
    pub(crate) fn commit_now<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        encoders: &Bound<'py, PyDict>,
        known: Option<Known<'py>>,
    ) -> Result<(), Failed> {
        let engine = self.engine().map_err(Failed::Retry)?;
        throttle(obj.py(), &engine).map_err(Failed::Final)?;
        let (record, p) = commit::prepare(obj, encoders, known).map_err(Failed::Retry)?;
        if p.is_empty() {
            return commit::settle(obj, p).map_err(Failed::Final);
        }
        let outcome = engine
            .submit_acknowledged(record)
            .map_err(|e| Failed::Retry(storage_err(e)))?;
        let Some(error) = outcome_err(&outcome) else {
            return commit::apply(obj, p).map_err(Failed::Final);
        };
        let undo = p.undo(obj).map_err(Failed::Final)?;
        commit::apply(obj, p).map_err(Failed::Final)?;
        undo.run(obj.py()).map_err(Failed::Final)?;
        Err(Failed::Final(error))
    }

    /// The blocking `commit()`'s one call (`commit_object_wait`): [`Self::commit_now`]
    /// when commits are acknowledged at submit; with `durability="sync"` the commit is
    /// queued with a ticket and applied, then waited for with the GIL released. When it
    /// fails the object is undone (`_oaas_undo_entries`: old version and committed bytes,
    /// its fields dirty again) and the error is `Failed::Final`.
    pub(crate) fn commit_wait<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        encoders: &Bound<'py, PyDict>,
        known: Option<Known<'py>>,
    ) -> Result<(), Failed> {
        if !self.durable {
            return self.commit_now(obj, encoders, known);
        }
        let py = obj.py();
        let engine = self.engine().map_err(Failed::Retry)?;
        throttle(py, &engine).map_err(Failed::Final)?;
        let (record, p) = commit::prepare(obj, encoders, known).map_err(Failed::Retry)?;
        if p.is_empty() {
            return commit::settle(obj, p).map_err(Failed::Final);
        }
        let undo = p.undo(obj).map_err(Failed::Retry)?;
        let ticket = engine
            .submit(record, 0)
            .map_err(|e| Failed::Retry(storage_err(e)))?;
        commit::apply(obj, p).map_err(Failed::Final)?;
        let outcome = py.detach(move || ticket.wait(None));
        match outcome.as_ref().and_then(outcome_err) {
            None => Ok(()),
            Some(error) => {
                undo.run(py).map_err(Failed::Final)?;
                Err(Failed::Final(error))
            }
        }
    }

    /// `commit_object_future`: see there. `None`: nothing changed (the object is
    /// settled, nothing queued).
    pub(crate) fn commit_future<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        encoders: &Bound<'py, PyDict>,
        event_loop: &Bound<'py, PyAny>,
        known: Option<Known<'py>>,
    ) -> Result<Option<Bound<'py, PyAny>>, Failed> {
        let py = obj.py();
        let engine = self.engine().map_err(Failed::Retry)?;
        throttle(py, &engine).map_err(Failed::Final)?;
        let (record, p) = commit::prepare(obj, encoders, known).map_err(Failed::Retry)?;
        if p.is_empty() {
            commit::settle(obj, p).map_err(Failed::Final)?;
            return Ok(None);
        }
        let future =
            Py::new(py, CommitFuture::new(event_loop.clone().unbind())).map_err(Failed::Retry)?;
        let undo = p.undo(obj).map_err(Failed::Retry)?;
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        // Registered before it is queued: another thread may take the completion first.
        self.waiters().insert(
            token,
            NativeWaiter {
                event_loop: event_loop.clone().unbind(),
                future: future.clone_ref(py),
                undo,
            },
        );
        if let Err(e) = engine.submit_token(record, token) {
            self.waiters().remove(&token);
            return Err(Failed::Retry(storage_err(e)));
        }
        commit::apply(obj, p).map_err(Failed::Final)?;
        Ok(Some(future.into_bound(py).into_any()))
    }

    /// Whether commits are acknowledged when written and that is later than when they
    /// are submitted (`durability="sync"`, not the memory store).
    pub(crate) fn durable(&self) -> bool {
        self.durable
    }

    fn engine(&self) -> PyResult<Arc<Engine<AnyStore>>> {
        match &*self.inner.read().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Ok(Arc::clone(e)),
            None => Err(StorageError::new_err(format!(
                "{}: the engine is closed",
                self.name
            ))),
        }
    }
}

/// `redis=(prefix, name, retry_deadline_s, cluster, ca_file, wait_replicas,
/// wait_timeout_s)` of [`PyEngine::new`].
type RedisSettings = (String, String, f64, bool, Option<PathBuf>, u32, f64);

#[pymethods]
impl PyEngine {
    #[new]
    #[allow(clippy::too_many_arguments)]
    // The engine's settings have no defaults here: they come from Python's configuration
    // (`OaasConfig`, via `oaas_sdk.config.ENGINE_DEFAULTS`), their one source.
    #[pyo3(signature = (path, *, durability, batch_max_entries, batch_max_delay_ms,
                        pending_max_bytes, map_size=DEFAULT_MAP_SIZE,
                        max_map_size=DEFAULT_MAX_MAP_SIZE, redis=None, memory=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        durability: &str,
        batch_max_entries: usize,
        batch_max_delay_ms: f64,
        pending_max_bytes: u64,
        map_size: usize,
        max_map_size: usize,
        redis: Option<RedisSettings>,
        memory: Option<PyRef<'_, PyMemoryStore>>,
    ) -> PyResult<Self> {
        let durable = match durability {
            "sync" => true,
            "async" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "durability must be 'sync' or 'async', not {other:?}"
                )))
            }
        };
        if !batch_max_delay_ms.is_finite() || batch_max_delay_ms < 0.0 {
            return Err(PyValueError::new_err("batch_max_delay_ms must be >= 0"));
        }
        let cfg = EngineConfig {
            durable,
            batch_max_entries: batch_max_entries.max(1),
            batch_max_delay: Duration::from_secs_f64(batch_max_delay_ms / 1000.0),
            pending_max_bytes,
        };
        let memory = memory.map(|m| Arc::clone(&m.0));
        let engine = py
            .detach(move || {
                if let Some(m) = memory {
                    return Engine::start(AnyStore::Memory(m), cfg);
                }
                let store = match redis {
                    Some((prefix, name, deadline_s, cluster, ca_file, wait_n, wait_s)) => {
                        let ca_pem = match ca_file {
                            Some(f) => Some(std::fs::read(&f).map_err(|e| {
                                StoreError(format!(
                                    "{name}: cannot read ssl_ca_certs {}: {e}",
                                    f.display()
                                ))
                            })?),
                            None => None,
                        };
                        let url = path.to_string_lossy();
                        let deadline = Duration::try_from_secs_f64(deadline_s.max(0.0))
                            .unwrap_or(Duration::MAX);
                        let wait = (wait_n > 0).then(|| {
                            let t = Duration::try_from_secs_f64(wait_s.max(0.001))
                                .unwrap_or(Duration::MAX);
                            (wait_n, t)
                        });
                        AnyStore::Redis(Box::new(RedisStore::open(
                            &url, cluster, &prefix, name, deadline, ca_pem, wait,
                        )?))
                    }
                    None => AnyStore::Lmdb(LmdbStore::open(
                        &path,
                        map_size,
                        max_map_size.max(map_size),
                    )?),
                };
                Engine::start(store, cfg)
            })
            .map_err(storage_err)?;
        let name = oprc_core::store::Store::name(engine.store()).to_owned();
        // Written at submit: acknowledged then, whatever the durability.
        let durable = durable && !engine.is_inline();
        Ok(PyEngine {
            inner: RwLock::new(Some(Arc::new(engine))),
            name,
            durable,
            waiters: Mutex::new(WaiterMap::default()),
            next_token: AtomicU64::new(NATIVE_TOKENS),
            #[cfg(unix)]
            notify: OnceLock::new(),
        })
    }

    /// Name of the store for messages, e.g. `"lmdb store at ./.oaas"`.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Queue one commit of object `(cls_id, partition_id, object_id)`.
    ///
    /// `expected_version`: the version the writer saw (0: must not exist); `entries`:
    /// field name -> codec bytes; `deletes`: entries to remove; `delete_object`: remove
    /// the object; `time_ms`: commit time, ms since the Unix epoch. Returns a `Ticket`;
    /// raises `StorageError` when the engine is closed.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (cls_id, partition_id, object_id, expected_version, entries, deletes=Vec::new(), delete_object=false, time_ms=0, token=0))]
    fn submit(
        &self,
        cls_id: String,
        partition_id: u32,
        #[pyo3(from_py_with = object_id)] object_id: ObjectId,
        expected_version: u64,
        entries: &Bound<'_, PyDict>,
        deletes: Vec<String>,
        delete_object: bool,
        time_ms: i64,
        token: u64,
    ) -> PyResult<PyTicket> {
        let engine = self.engine()?;
        throttle(entries.py(), &engine)?;
        let identity = Identity {
            cls_id,
            partition_id,
            object_id,
        };
        let mut record = WriteRecord::new(identity, expected_version, time_ms);
        let mut pairs = Vec::with_capacity(entries.len());
        for (k, v) in entries.iter() {
            pairs.push((k.cast_into::<PyString>()?, v.cast_into::<PyBytes>()?));
        }
        record.entries = commit::entries_of(&pairs)?;
        record.deletes = deletes;
        record.delete_object = delete_object;
        let ticket = engine.submit(record, token).map_err(storage_err)?;
        Ok(PyTicket { ticket })
    }

    /// Commit a committed object in one call: the native front end of
    /// `OaasObject.commit_async` (oaas_sdk/model/object.py, `_oaas_commit_native`).
    ///
    /// Reads the object's `ObjectState` (`obj._oaas_state`, see `state.rs`: `meta` with
    /// `cls_id`, `partition_id`, `object_id`; `version`; `dirty` and `live`, sets of field
    /// names; `committed`, `{name: bytes}`), encodes each dirty and each live field
    /// (`getattr(obj, name)`) with `encoders[name].encode` (the field's `FieldType`, whose
    /// `encode` is a native method: no Python frame runs), keeps a live field that was not
    /// assigned only when its bytes differ from the committed ones, and queues the commit
    /// (nothing when no field changed). Then, as `OaasObject._oaas_apply` does, on the
    /// state: the new bytes go into `committed`, `version` and `updated_ms` (ms since the
    /// Unix epoch) are set, the object leaves its runtime's dirty registry (`rt.dirty`),
    /// `stale[1]` takes the new version when it is a list, and the live fields are parked
    /// (`_oaas_settle`).
    ///
    /// With `durability="async"` the commit is acknowledged once queued; else see
    /// `commit_object_future`.
    ///
    /// Raises an encoding error unchanged, with the field's name as its `_oaas_field`
    /// attribute; `StorageError` when the engine is closed; `TypeError`/`AttributeError`
    /// when the object lacks its state. Nothing is queued or changed then.
    fn commit_object(&self, obj: &Bound<'_, PyAny>, encoders: &Bound<'_, PyDict>) -> PyResult<()> {
        self.commit_now(obj, encoders, None)
            .map_err(Failed::into_err)
    }

    /// `commit_object` of the blocking `commit()`: with `durability="async"` (or on the
    /// memory store) the same; with `"sync"` it returns once the commit's batch is
    /// written (fsynced), waiting with the GIL released, and raises the commit's
    /// `ConflictError` / `StorageError` after the object's changes are restored
    /// (`OaasObject._oaas_undo_entries`). Encoding errors as `commit_object`; nothing is
    /// queued then.
    fn commit_object_wait(
        &self,
        obj: &Bound<'_, PyAny>,
        encoders: &Bound<'_, PyDict>,
    ) -> PyResult<()> {
        self.commit_wait(obj, encoders, None)
            .map_err(Failed::into_err)
    }

    /// `commit_object` of a durable commit: returns a future of `event_loop` (made by
    /// its `create_future`) that resolves when the commit's batch is written (fsynced),
    /// or fails with the commit's `ConflictError` / `StorageError` after the object's
    /// changes are restored (`OaasObject._oaas_undo_entries`: old version, old committed
    /// bytes, the fields dirty again). The future is resolved by `take_ready(here)` on
    /// the loop watching `notify_fd` (or `take_completions` through
    /// `call_soon_threadsafe`). Errors as `commit_object`; nothing is queued then.
    fn commit_object_future<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        encoders: &Bound<'py, PyDict>,
        event_loop: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.commit_future(obj, encoders, event_loop, None)
            .map_err(Failed::into_err)
    }

    /// Block, with the GIL released, until commits submitted with a non-zero `token` have
    /// completed; return `[(token, error or None), ...]` (typically one batch), `[]` when
    /// `timeout` (seconds) passes first, `None` once the engine is closed and drained.
    /// The futures of `commit_object_future` commits are not listed: they are resolved
    /// through their loop's `call_soon_threadsafe`.
    #[pyo3(signature = (timeout=None))]
    fn take_completions<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Ok(engine) = self.engine() else {
            return Ok(None);
        };
        let limit = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let Some(items) = py.detach(move || engine.take_completions(limit)) else {
            return Ok(None);
        };
        let out = self.route(py, items, None)?;
        Ok(Some(out))
    }

    /// A file descriptor that becomes readable when commits submitted with a non-zero
    /// token complete: one end of a socket pair the persister writes one byte to, at most
    /// once per `take_ready`. Watch it with `loop.add_reader` and call `take_ready` there.
    /// Made on first call (both ends non-blocking) and kept open as long as this object
    /// lives. Raises `StorageError` when it cannot be made or the engine is closed,
    /// `NotImplementedError` off Unix (use `take_completions` there).
    #[cfg(not(unix))]
    fn notify_fd(&self) -> PyResult<i32> {
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "the completion socket needs Unix",
        ))
    }

    /// See the other `notify_fd`.
    #[cfg(unix)]
    fn notify_fd(&self) -> PyResult<i32> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        if let Some(r) = self.notify.get() {
            return Ok(r.as_raw_fd());
        }
        let engine = self.engine()?;
        let made = std::os::unix::net::UnixStream::pair().and_then(|(r, w)| {
            r.set_nonblocking(true)?;
            w.set_nonblocking(true)?;
            Ok((r, w))
        });
        let (reader, writer) = made.map_err(|e| {
            StorageError::new_err(format!("cannot make the completion socket pair: {e}"))
        })?;
        let installed = engine.set_notifier(Box::new(move || {
            // One byte. A full buffer (WouldBlock) already holds bytes that wake the
            // reader; any other failure means the reader is gone and nobody waits.
            let _ = (&writer).write(&[1]);
        }));
        if !installed || self.notify.set(reader).is_err() {
            return Err(StorageError::new_err(
                "the completion socket is already set up",
            ));
        }
        self.notify
            .get()
            .map(|r| r.as_raw_fd())
            .ok_or_else(|| StorageError::new_err("the completion socket is missing"))
    }

    /// The completions available now, `[(token, error or None), ...]`, without blocking;
    /// empties the completion socket (`notify_fd`) first. `[]` when closed. The futures of
    /// `commit_object_future` commits are resolved instead of listed: now when their loop
    /// is `here` (pass the loop running this call), else through their loop's
    /// `call_soon_threadsafe`.
    #[pyo3(signature = (here=None))]
    fn take_ready<'py>(
        &self,
        py: Python<'py>,
        here: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        #[cfg(unix)]
        if let Some(reader) = self.notify.get() {
            use std::io::Read;
            let mut buf = [0u8; 64];
            // Non-blocking: stops at WouldBlock (empty).
            while let Ok(n) = (&*reader).read(&mut buf) {
                if n < buf.len() {
                    break;
                }
            }
        }
        let Ok(engine) = self.engine() else {
            return Ok(PyList::empty(py));
        };
        self.route(py, engine.take_ready(), here)
    }

    /// The object as committed through this engine, or `None`: a tuple
    /// `(version, created_ms, updated_ms, {field: bytes})`. The store is read with the GIL
    /// released. Raises `StorageError` when the read fails.
    #[allow(clippy::type_complexity)]
    fn read<'py>(
        &self,
        py: Python<'py>,
        cls_id: String,
        partition_id: u32,
        #[pyo3(from_py_with = object_id)] object_id: ObjectId,
    ) -> PyResult<Option<(u64, i64, i64, Bound<'py, PyDict>)>> {
        let engine = self.engine()?;
        let identity = Identity {
            cls_id,
            partition_id,
            object_id,
        };
        let key = identity.object_key();
        let found = py
            .detach(|| engine.read(&key, &identity))
            .map_err(storage_err)?;
        found.map(|obj| stored_to_py(py, obj)).transpose()
    }

    /// Object keys (bytes, layout of docs/format.md) of stored objects starting with `prefix`.
    fn scan<'py>(&self, py: Python<'py>, prefix: Vec<u8>) -> PyResult<Bound<'py, PyList>> {
        let engine = self.engine()?;
        let keys = py
            .detach(|| oprc_core::store::Store::scan(engine.store(), &prefix))
            .map_err(storage_err)?;
        PyList::new(py, keys.iter().map(|k| PyBytes::new(py, k)))
    }

    /// Block (GIL released) until every commit submitted so far is written or failed.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let Ok(engine) = self.engine() else {
            return Ok(());
        };
        let t = engine.flush_ticket();
        let limit = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
        match py.detach(move || t.wait(limit)) {
            Some(_) => Ok(()),
            None => Err(PyTimeoutError::new_err("flush did not complete in time")),
        }
    }

    /// Write everything queued, stop the persister and close the store. Idempotent.
    /// Returns the completions nobody took yet, as `take_ready` with no loop (`[]` when
    /// none, or when already closed).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let taken = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(engine) = taken else {
            return Ok(PyList::empty(py));
        };
        let rest = py.detach(move || {
            engine.close();
            engine.take_ready()
        });
        self.route(py, rest, None)
    }

    /// The engine's failure log: the lines the `oaas_sdk` logger should get (a failed
    /// batch, a failed write-back). Raises `StorageError` when the engine is closed.
    fn failure_log(&self) -> PyResult<PyFailureLog> {
        Ok(PyFailureLog(self.engine()?.failure_log()))
    }

    /// Current LMDB map size in bytes (0 when closed).
    fn map_size(&self) -> usize {
        self.engine().map(|e| e.store().map_size()).unwrap_or(0)
    }

    /// Counters, as `oaas.stats()` reports them (see `oaas_sdk.engine.Engine.stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let ((st, depth), pending_bytes) = match self.engine() {
            Ok(e) => (e.stats(), e.pending_bytes()),
            Err(_) => Default::default(),
        };
        let mut lat: Vec<f64> = st.latencies_us.iter().copied().collect();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((p * lat.len() as f64) as usize).min(lat.len() - 1);
            (lat[i] * 10.0).round() / 10.0
        };
        d.set_item("commits", st.commits)?;
        d.set_item("failed_commits", st.failed_commits)?;
        d.set_item("entries_written", st.entries_written)?;
        d.set_item("bytes_written", st.bytes_written)?;
        d.set_item("batches", st.batches)?;
        let mean = if st.batches > 0 {
            st.records_in_batches as f64 / st.batches as f64
        } else {
            0.0
        };
        d.set_item("mean_batch_size", mean)?;
        d.set_item("persist_latency_p50_us", pct(0.50))?;
        d.set_item("persist_latency_p99_us", pct(0.99))?;
        d.set_item("queue_depth", depth)?;
        d.set_item("pending_bytes", pending_bytes)?;
        d.set_item("write_throttles", st.write_throttles)?;
        Ok(d)
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        // In a forked child the engine's thread and LMDB handles belong to the parent:
        // leave them alone (leak) rather than close or join them.
        let taken = self
            .inner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(engine) = taken {
            if !engine.is_owner() {
                std::mem::forget(engine);
            }
        }
    }
}

/// Register the engine's Python-facing items on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyTicket>()?;
    m.add_class::<PyFailureLog>()?;
    m.add_function(wrap_pyfunction!(crate::object::front::object_setattr, m)?)?;
    m.add_function(wrap_pyfunction!(
        crate::object::front::object_commit_async,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(crate::object::front::object_commit, m)?)?;
    crate::object::state::register(m)?;
    crate::object::future::register(m)
}

/// A stored object as Python sees it: `(version, created_ms, updated_ms, {entry name:
/// bytes})` (the native engine's and the native memory store's `read`).
pub(crate) fn stored_to_py(
    py: Python<'_>,
    obj: StoredObject,
) -> PyResult<(u64, i64, i64, Bound<'_, PyDict>)> {
    let d = PyDict::new(py);
    for (name, value) in obj.entries {
        d.set_item(name, PyBytes::new(py, &value))?;
    }
    Ok((
        obj.meta.version,
        obj.meta.created_ms,
        obj.meta.updated_ms,
        d,
    ))
}
